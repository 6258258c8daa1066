//! Card key files for the school office: `attendance cards keygen` and the
//! Ed25519 side of `attendance cards sign`.
//!
//! Invariants: a private key file is created with mode 0600 and never
//! overwritten (losing it means reprinting every card); a private key file
//! readable by group or others is refused when signing; key bytes never
//! appear in errors or logs. The signing itself is pure and lives in
//! [`crate::domain::payload`].

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;

use crate::domain::payload::{CardSigningKey, ED25519_KEY_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum CardsError {
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
    #[error("{file}: already exists; refusing to overwrite a key (move it away first)")]
    Exists { file: PathBuf },
    #[error("key id {0:?} must be 1..=16 characters of letters, digits, '_' or '-'")]
    KeyId(String),
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

fn file_err(file: &Path, message: impl Into<String>) -> CardsError {
    CardsError::File {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

/// The files `keygen` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    /// `<key id>.secret`: the private key, for the office only.
    pub secret: PathBuf,
    /// `<key id>.pub`: the public key, for every kiosk's `qr-keys/`.
    pub public: PathBuf,
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 16
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Creates `path` with mode 0600, failing if it exists.
fn write_new_0600(path: &Path, text: &str) -> Result<(), CardsError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CardsError::Exists {
                    file: path.to_path_buf(),
                }
            } else {
                file_err(path, e.to_string())
            }
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| file_err(path, e.to_string()))
}

/// Generates a key pair and writes `<out>/<key id>.secret` and
/// `<out>/<key id>.pub` (hex, mode 0600 both: the kiosks' loader wants
/// every file in `qr-keys/` that way). Neither file is overwritten.
pub fn keygen(key_id: &str, out: &Path) -> Result<KeyFiles, CardsError> {
    let mut seed = [0u8; ED25519_KEY_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| CardsError::Random(e.to_string()))?;
    keygen_from_seed(key_id, out, &seed)
}

fn keygen_from_seed(key_id: &str, out: &Path, seed: &[u8]) -> Result<KeyFiles, CardsError> {
    if !valid_key_id(key_id) {
        return Err(CardsError::KeyId(key_id.to_string()));
    }
    let key = CardSigningKey::from_seed(seed).map_err(|m| file_err(out, m))?;
    let files = KeyFiles {
        secret: out.join(format!("{key_id}.secret")),
        public: out.join(format!("{key_id}.pub")),
    };
    for f in [&files.secret, &files.public] {
        if f.exists() {
            return Err(CardsError::Exists { file: f.clone() });
        }
    }
    fs::create_dir_all(out).map_err(|e| file_err(out, e.to_string()))?;
    write_new_0600(&files.secret, &format!("{}\n", hex::encode(key.seed())))?;
    if let Err(e) = write_new_0600(
        &files.public,
        &format!("{}\n", hex::encode(key.public_key())),
    ) {
        // Without its public half the new secret is useless; do not leave it behind.
        let _ = fs::remove_file(&files.secret);
        return Err(e);
    }
    Ok(files)
}

/// 32 bytes from hex or base64 text.
fn decode_32(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    let bytes = if text.len() == 2 * ED25519_KEY_BYTES {
        hex::decode(text).ok()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .ok()?
    };
    (bytes.len() == ED25519_KEY_BYTES).then_some(bytes)
}

/// Reads the office's private key for signing. When a `<stem>.pub` lies
/// beside it, the two must belong together (a mixed-up pair would print
/// cards no kiosk accepts).
pub fn load_signing_key(path: &Path) -> Result<CardSigningKey, CardsError> {
    if path.extension().is_some_and(|e| e == "pub") {
        return Err(file_err(
            path,
            "is a public key; sign with the private <key id>.secret",
        ));
    }
    let meta = fs::metadata(path).map_err(|e| file_err(path, e.to_string()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(file_err(
            path,
            format!(
                "mode is {:o}; a private key must not be readable by group or others (chmod 600)",
                mode & 0o777
            ),
        ));
    }
    if meta.len() > 1024 {
        return Err(file_err(path, "is too large for a key file"));
    }
    let text = fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))?;
    let seed = decode_32(&text).ok_or_else(|| {
        file_err(
            path,
            "must hold a 32-byte Ed25519 private key as hex or base64",
        )
    })?;
    let key = CardSigningKey::from_seed(&seed).map_err(|m| file_err(path, m))?;
    let public = path.with_extension("pub");
    if let Ok(text) = fs::read_to_string(&public)
        && decode_32(&text).as_deref() != Some(&key.public_key()[..])
    {
        return Err(file_err(
            &public,
            format!("does not match the private key {}", path.display()),
        ));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::payload::{self, Keyring, PayloadPolicy};
    use crate::domain::record::StudentNumber;

    #[test]
    fn keygen_writes_a_0600_pair_that_signs_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("office");
        let files = keygen("s2026", &out).unwrap();
        for f in [&files.secret, &files.public] {
            let mode = fs::metadata(f).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", f.display());
        }
        let key = load_signing_key(&files.secret).unwrap();
        let card =
            payload::sign_ed25519("s2026", &key, &StudentNumber::parse("2024-0001").unwrap())
                .unwrap();
        let mut kr = Keyring::new();
        let public = decode_32(&fs::read_to_string(&files.public).unwrap()).unwrap();
        kr.insert_public("s2026", &public).unwrap();
        assert!(payload::parse(card.as_bytes(), &kr, PayloadPolicy::default()).is_ok());
        // The secret is not in the public file.
        let secret_text = fs::read_to_string(&files.secret).unwrap();
        assert!(
            !fs::read_to_string(&files.public)
                .unwrap()
                .contains(secret_text.trim())
        );
        // Never overwritten.
        assert!(matches!(
            keygen("s2026", &out),
            Err(CardsError::Exists { .. })
        ));
        assert!(matches!(keygen("bad id", &out), Err(CardsError::KeyId(_))));
        // Two key generations differ.
        let other = keygen("s2027", &out).unwrap();
        assert_ne!(fs::read_to_string(&other.secret).unwrap(), secret_text);
    }

    #[test]
    fn signing_key_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let files = keygen_from_seed("k", dir.path(), &[3u8; 32]).unwrap();
        assert!(
            load_signing_key(&files.public)
                .unwrap_err()
                .to_string()
                .contains("public key")
        );
        fs::set_permissions(&files.secret, fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_signing_key(&files.secret).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        fs::set_permissions(&files.secret, fs::Permissions::from_mode(0o600)).unwrap();
        // A public key of another pair beside it.
        let other = CardSigningKey::from_seed(&[4u8; 32]).unwrap();
        fs::write(&files.public, hex::encode(other.public_key())).unwrap();
        let e = load_signing_key(&files.secret).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        fs::remove_file(&files.public).unwrap();
        assert!(load_signing_key(&files.secret).is_ok());
        // Base64 is accepted, garbage is not, and the error shows no key bytes.
        fs::write(
            &files.secret,
            base64::engine::general_purpose::STANDARD.encode([3u8; 32]),
        )
        .unwrap();
        assert_eq!(load_signing_key(&files.secret).unwrap().seed(), [3u8; 32]);
        fs::write(&files.secret, "0303").unwrap();
        let e = load_signing_key(&files.secret).unwrap_err().to_string();
        assert!(e.contains("32-byte") && !e.contains("0303"), "{e}");
    }
}
