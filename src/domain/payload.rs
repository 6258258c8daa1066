//! QR payload parsing and verification.
//!
//! Three card formats are understood:
//! - plain: the student number itself, e.g. `2024-0001`;
//! - JSON: an object with `student_number` (or the predecessor's
//!   `student_id`), a string or a non-negative integer;
//! - signed: `ATT1:<key id>:<student number>:<signature>`, where the
//!   signature is the unpadded base64url HMAC-SHA256, under the key named by
//!   the key id, of everything before the last `:`.
//!
//! Unsigned formats are accepted only when the policy allows them. Parsing is
//! total: any byte string yields a card or a [`PayloadError`], never a panic
//! (fuzzed by `fuzz/fuzz_targets/payload.rs`).

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::record::{StudentNumber, StudentNumberError};

/// Longer payloads are rejected before any parsing: a student card never
/// needs more, and it bounds the work a hostile code can cause.
pub const MAX_PAYLOAD_BYTES: usize = 512;
pub const SIGNED_PREFIX: &str = "ATT1";
const KEY_ID_MAX_LEN: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CardFormat {
    Plain,
    Json,
    Signed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub student_number: StudentNumber,
    pub format: CardFormat,
    /// The key that verified a signed card.
    pub key_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("empty payload")]
    Empty,
    #[error("payload is {len} bytes, the limit is {MAX_PAYLOAD_BYTES}")]
    TooLong { len: usize },
    #[error("payload is not valid UTF-8")]
    NotUtf8,
    #[error("invalid student number: {0}")]
    StudentNumber(#[from] StudentNumberError),
    #[error("malformed JSON payload: {0}")]
    MalformedJson(String),
    #[error("JSON payload has no student_number")]
    MissingStudentNumber,
    #[error("malformed signed payload: {0}")]
    MalformedSigned(&'static str),
    #[error("signed with unknown key id {0:?}")]
    UnknownKey(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("unsigned cards are not accepted on this kiosk")]
    UnsignedNotAllowed,
}

impl PayloadError {
    /// A stable machine-readable code, used in events and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            PayloadError::Empty => "empty",
            PayloadError::TooLong { .. } => "too_long",
            PayloadError::NotUtf8 => "not_utf8",
            PayloadError::StudentNumber(_) => "invalid_student_number",
            PayloadError::MalformedJson(_) => "malformed_json",
            PayloadError::MissingStudentNumber => "missing_student_number",
            PayloadError::MalformedSigned(_) => "malformed_signed",
            PayloadError::UnknownKey(_) => "unknown_key",
            PayloadError::BadSignature => "bad_signature",
            PayloadError::UnsignedNotAllowed => "unsigned_not_allowed",
        }
    }
}

/// HMAC keys for signed cards, by key id. Debug output never shows key bytes.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: HashMap<String, Vec<u8>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

impl Keyring {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key; the id must be 1..=16 characters of `[A-Za-z0-9_-]` and
    /// the key at least 16 bytes.
    pub fn insert(&mut self, key_id: &str, key: Vec<u8>) -> Result<(), String> {
        if !valid_key_id(key_id) {
            return Err(format!(
                "key id {key_id:?} must be 1..={KEY_ID_MAX_LEN} characters of letters, digits, '_' or '-'"
            ));
        }
        if key.len() < 16 {
            return Err(format!(
                "key {key_id:?} is {} bytes; at least 16 are required",
                key.len()
            ));
        }
        self.keys.insert(key_id.to_string(), key);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn get(&self, key_id: &str) -> Option<&[u8]> {
        self.keys.get(key_id).map(Vec::as_slice)
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= KEY_ID_MAX_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadPolicy {
    pub accept_unsigned: bool,
}

/// Parses and verifies one payload.
pub fn parse(raw: &[u8], keyring: &Keyring, policy: PayloadPolicy) -> Result<Card, PayloadError> {
    if raw.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLong { len: raw.len() });
    }
    let text = std::str::from_utf8(raw).map_err(|_| PayloadError::NotUtf8)?;
    // Scanners append CR/LF or spaces; QR codes sometimes carry a BOM.
    let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if text.is_empty() {
        return Err(PayloadError::Empty);
    }
    let card = if text.starts_with('{') {
        parse_json(text)?
    } else if let Some(rest) = text
        .strip_prefix(SIGNED_PREFIX)
        .and_then(|r| r.strip_prefix(':'))
    {
        return parse_signed(text, rest, keyring);
    } else {
        Card {
            student_number: StudentNumber::parse(text)?,
            format: CardFormat::Plain,
            key_id: None,
        }
    };
    if !policy.accept_unsigned {
        return Err(PayloadError::UnsignedNotAllowed);
    }
    Ok(card)
}

fn parse_json(text: &str) -> Result<Card, PayloadError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| PayloadError::MalformedJson(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| PayloadError::MalformedJson("not an object".into()))?;
    let field = obj
        .get("student_number")
        .or_else(|| obj.get("student_id"))
        .ok_or(PayloadError::MissingStudentNumber)?;
    let number = match field {
        serde_json::Value::String(s) => StudentNumber::parse(s)?,
        serde_json::Value::Number(n) if n.is_u64() => StudentNumber::parse(&n.to_string())?,
        _ => {
            return Err(PayloadError::MalformedJson(
                "student_number must be a string or a non-negative integer".into(),
            ));
        }
    };
    Ok(Card {
        student_number: number,
        format: CardFormat::Json,
        key_id: None,
    })
}

/// `whole` is the full trimmed payload, `rest` what follows `ATT1:`.
fn parse_signed(whole: &str, rest: &str, keyring: &Keyring) -> Result<Card, PayloadError> {
    let (signed_part, signature) = whole
        .rsplit_once(':')
        .ok_or(PayloadError::MalformedSigned("missing signature"))?;
    let mut fields = rest.split(':');
    let (Some(key_id), Some(number), Some(_sig), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(PayloadError::MalformedSigned(
            "expected ATT1:<key id>:<student number>:<signature>",
        ));
    };
    if !valid_key_id(key_id) {
        return Err(PayloadError::MalformedSigned("invalid key id"));
    }
    let student_number = StudentNumber::parse(number)?;
    let sig = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| PayloadError::MalformedSigned("signature is not base64url"))?;
    let key = keyring
        .get(key_id)
        .ok_or_else(|| PayloadError::UnknownKey(key_id.to_string()))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| PayloadError::BadSignature)?;
    mac.update(signed_part.as_bytes());
    // verify_slice compares in constant time and rejects truncated tags.
    mac.verify_slice(&sig)
        .map_err(|_| PayloadError::BadSignature)?;
    Ok(Card {
        student_number,
        format: CardFormat::Signed,
        key_id: Some(key_id.to_string()),
    })
}

/// Produces a signed card payload; used by the `cards sign` tooling and tests.
pub fn sign(key_id: &str, key: &[u8], student: &StudentNumber) -> Result<String, String> {
    if !valid_key_id(key_id) {
        return Err(format!("invalid key id {key_id:?}"));
    }
    let signed_part = format!("{SIGNED_PREFIX}:{key_id}:{student}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    mac.update(signed_part.as_bytes());
    let tag = mac.finalize().into_bytes();
    Ok(format!("{signed_part}:{}", URL_SAFE_NO_PAD.encode(tag)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN: PayloadPolicy = PayloadPolicy {
        accept_unsigned: true,
    };
    const SIGNED_ONLY: PayloadPolicy = PayloadPolicy {
        accept_unsigned: false,
    };

    fn keyring() -> Keyring {
        let mut k = Keyring::new();
        k.insert("k1", b"0123456789abcdef0123456789abcdef".to_vec())
            .unwrap();
        k
    }

    fn sn(s: &str) -> StudentNumber {
        StudentNumber::parse(s).unwrap()
    }

    #[test]
    fn plain_numbers() {
        let c = parse(b"2024-0001\r\n", &keyring(), OPEN).unwrap();
        assert_eq!(c.student_number, sn("2024-0001"));
        assert_eq!(c.format, CardFormat::Plain);
        assert_eq!(parse(b"  \n", &keyring(), OPEN), Err(PayloadError::Empty));
        assert_eq!(parse(b"", &keyring(), OPEN), Err(PayloadError::Empty));
        assert!(matches!(
            parse(b"hello world", &keyring(), OPEN),
            Err(PayloadError::StudentNumber(_))
        ));
    }

    #[test]
    fn json_cards() {
        let c = parse(br#"{"student_number":"S-1","name":"x"}"#, &keyring(), OPEN).unwrap();
        assert_eq!((c.student_number, c.format), (sn("S-1"), CardFormat::Json));
        let c = parse(br#"{"student_id": 20240001}"#, &keyring(), OPEN).unwrap();
        assert_eq!(c.student_number, sn("20240001"));
        assert_eq!(
            parse(br#"{"name":"x"}"#, &keyring(), OPEN),
            Err(PayloadError::MissingStudentNumber)
        );
        assert!(matches!(
            parse(br#"{"student_number": -1}"#, &keyring(), OPEN),
            Err(PayloadError::MalformedJson(_))
        ));
        assert!(matches!(
            parse(br#"{"student_number": "1""#, &keyring(), OPEN),
            Err(PayloadError::MalformedJson(_))
        ));
        assert!(matches!(
            parse(b"[1,2]", &keyring(), OPEN),
            Err(PayloadError::StudentNumber(_))
        ));
    }

    #[test]
    fn signed_cards_verify() {
        let kr = keyring();
        let payload = sign("k1", b"0123456789abcdef0123456789abcdef", &sn("2024-0007")).unwrap();
        let c = parse(payload.as_bytes(), &kr, SIGNED_ONLY).unwrap();
        assert_eq!(c.student_number, sn("2024-0007"));
        assert_eq!(c.format, CardFormat::Signed);
        assert_eq!(c.key_id.as_deref(), Some("k1"));
    }

    #[test]
    fn tampered_or_foreign_signatures_fail() {
        let kr = keyring();
        let good = sign("k1", b"0123456789abcdef0123456789abcdef", &sn("2024-0007")).unwrap();
        // Another student number under the same signature.
        let forged = good.replace("2024-0007", "2024-0008");
        assert_eq!(
            parse(forged.as_bytes(), &kr, OPEN),
            Err(PayloadError::BadSignature)
        );
        // Truncated signature.
        let truncated = &good[..good.len() - 3]; // 40 base64 characters: 30 valid bytes
        assert_eq!(
            parse(truncated.as_bytes(), &kr, OPEN),
            Err(PayloadError::BadSignature)
        );
        // Signed with a different key under a known id.
        let other = sign("k1", b"ffffffffffffffffffffffffffffffff", &sn("2024-0007")).unwrap();
        assert_eq!(
            parse(other.as_bytes(), &kr, OPEN),
            Err(PayloadError::BadSignature)
        );
        // Unknown key id.
        let unknown = sign("k9", b"0123456789abcdef0123456789abcdef", &sn("1")).unwrap();
        assert_eq!(
            parse(unknown.as_bytes(), &kr, OPEN),
            Err(PayloadError::UnknownKey("k9".into()))
        );
        assert!(matches!(
            parse(b"ATT1:k1:123", &kr, OPEN),
            Err(PayloadError::MalformedSigned(_))
        ));
        assert!(matches!(
            parse(b"ATT1:k1:1:2:3", &kr, OPEN),
            Err(PayloadError::MalformedSigned(_))
        ));
        assert!(matches!(
            parse(b"ATT1:k1:123:!!!", &kr, OPEN),
            Err(PayloadError::MalformedSigned(_))
        ));
    }

    #[test]
    fn policy_refuses_unsigned() {
        assert_eq!(
            parse(b"2024-0001", &keyring(), SIGNED_ONLY),
            Err(PayloadError::UnsignedNotAllowed)
        );
        assert_eq!(
            parse(br#"{"student_number":"1"}"#, &keyring(), SIGNED_ONLY),
            Err(PayloadError::UnsignedNotAllowed)
        );
    }

    #[test]
    fn hostile_inputs_are_rejected_not_panicking() {
        let kr = keyring();
        let long = vec![b'1'; MAX_PAYLOAD_BYTES + 1];
        assert_eq!(
            parse(&long, &kr, OPEN),
            Err(PayloadError::TooLong {
                len: MAX_PAYLOAD_BYTES + 1
            })
        );
        assert_eq!(
            parse(&[0xff, 0xfe, 0x00], &kr, OPEN),
            Err(PayloadError::NotUtf8)
        );
        let deep = "[".repeat(400);
        assert!(parse(format!("{{\"a\":{deep}").as_bytes(), &kr, OPEN).is_err());
        assert!(parse("ATT1:::".as_bytes(), &kr, OPEN).is_err());
        assert!(parse("ATT1:".as_bytes(), &kr, OPEN).is_err());
        assert!(parse("\u{feff}123".as_bytes(), &kr, OPEN).is_ok());
    }

    /// Replays the fuzzer's seed corpus (and anything it found and was kept).
    #[test]
    fn fuzz_corpus_replays_without_panics() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/payload");
        let kr = keyring();
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            for policy in [OPEN, SIGNED_ONLY] {
                if let Ok(card) = parse(&data, &kr, policy) {
                    assert!(StudentNumber::parse(card.student_number.as_str()).is_ok());
                }
            }
            n += 1;
        }
        assert!(n >= 8, "seed corpus present");
        let signed = std::fs::read(format!("{dir}/signed")).unwrap();
        assert_eq!(
            parse(&signed, &kr, SIGNED_ONLY).unwrap().format,
            CardFormat::Signed
        );
    }

    #[test]
    fn keyring_rejects_weak_keys_and_hides_bytes() {
        let mut k = Keyring::new();
        assert!(k.insert("k1", b"short".to_vec()).is_err());
        assert!(k.insert("bad id", vec![0; 32]).is_err());
        k.insert("k2", b"super-secret-key-material".to_vec())
            .unwrap();
        let dbg = format!("{k:?}");
        assert!(dbg.contains("k2") && !dbg.contains("super-secret"));
    }
}
