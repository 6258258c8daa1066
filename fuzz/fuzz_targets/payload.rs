//! Fuzzes the QR payload parser: any byte string must yield a card or an
//! error, never a panic, and an accepted card must carry a valid student
//! number. Covers every format, `ATT1` (HMAC) and `ATT2` (Ed25519) included,
//! under every policy. Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run payload` (see README).
#![no_main]

use attendance::domain::payload::{self, CardFormat, CardSigningKey, Keyring, PayloadPolicy};
use attendance::domain::record::StudentNumber;
use libfuzzer_sys::fuzz_target;

/// The same test key as the unit tests' "e1"; the seed corpus holds a card it signed.
const E1_SEED: &[u8; 32] = b"attendance-fuzz-ed25519-seed-e1!";

fuzz_target!(|data: &[u8]| {
    let mut keys = Keyring::new();
    let _ = keys.insert("k1", b"0123456789abcdef0123456789abcdef".to_vec());
    if let Ok(e1) = CardSigningKey::from_seed(E1_SEED) {
        let _ = keys.insert_public("e1", &e1.public_key());
    }
    for accept_unsigned in [true, false] {
        for accept_hmac in [true, false] {
            let policy = PayloadPolicy {
                accept_unsigned,
                accept_hmac,
            };
            if let Ok(card) = payload::parse(data, &keys, policy) {
                assert!(StudentNumber::parse(card.student_number.as_str()).is_ok());
                if !accept_unsigned {
                    assert!(card.key_id.is_some(), "only signed cards pass a signed-only policy");
                }
                if !accept_hmac {
                    assert_ne!(card.format, CardFormat::Signed, "HMAC refused by policy");
                }
            }
        }
    }
});
