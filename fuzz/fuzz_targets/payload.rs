//! Fuzzes the QR payload parser: any byte string must yield a card or an
//! error, never a panic, and an accepted card must carry a valid student
//! number. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run payload` (see README).
#![no_main]

use attendance::domain::payload::{self, Keyring, PayloadPolicy};
use attendance::domain::record::StudentNumber;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut keys = Keyring::new();
    let _ = keys.insert("k1", b"0123456789abcdef0123456789abcdef".to_vec());
    for accept_unsigned in [true, false] {
        if let Ok(card) = payload::parse(data, &keys, PayloadPolicy { accept_unsigned }) {
            assert!(StudentNumber::parse(card.student_number.as_str()).is_ok());
            if !accept_unsigned {
                assert!(card.key_id.is_some(), "only signed cards pass a signed-only policy");
            }
        }
    }
});
