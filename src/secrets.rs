//! Secrets: files under `<data_dir>/secrets/`, never config values.
//!
//! Each is a file of mode 0600 (or stricter); a file readable by group or
//! others is refused, because the data partition may be read by anyone who
//! pulls the SD card, but not by other users on a running device. The CLI
//! loads strictly (any bad file is an error naming it); the daemon loads
//! leniently: a bad file is refused alone and reported, the rest is used, so
//! a stray `README` never stops the kiosk from recording.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::domain::payload::Keyring;

/// A secret file that cannot be used, named by its path (never its content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("secret {file}: {message}")]
pub struct SecretError {
    pub file: PathBuf,
    pub message: String,
}

/// Secrets read from `<data_dir>/secrets/`. Each is a file of mode 0600 (or
/// stricter); a file readable by group or others is refused, because the
/// data partition may be read by anyone who pulls the SD card, but not by
/// other users on a running device.
#[derive(Default)]
pub struct Secrets {
    /// Files refused by a lenient load (reported in health).
    refused: Vec<SecretError>,
    /// QR signing keys from `secrets/qr-keys/<key id>.key` (hex or base64).
    pub qr_keys: Keyring,
    /// Other named secrets (`secrets/<name>`), e.g. the cloud API key.
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("qr_keys", &self.qr_keys)
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn read_secret_file(path: &Path) -> Result<String, SecretError> {
    let meta = fs::metadata(path).map_err(|e| SecretError {
        file: path.into(),
        message: e.to_string(),
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(SecretError {
            file: path.into(),
            message: format!(
                "mode is {:o}; secrets must not be readable by group or others (chmod 600)",
                meta.permissions().mode() & 0o777
            ),
        });
    }
    if meta.len() > 64 * 1024 {
        return Err(SecretError {
            file: path.into(),
            message: "larger than 64 KiB".into(),
        });
    }
    let text = fs::read_to_string(path).map_err(|e| SecretError {
        file: path.into(),
        message: e.to_string(),
    })?;
    Ok(text.trim().to_string())
}

fn decode_key(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    if let Ok(b) = hex::decode(text) {
        return Some(b);
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
        .ok()
}

impl Secrets {
    /// Loads every secret; a missing directory means no secrets; any
    /// unusable file is an error (the CLI).
    pub fn load(dir: &Path) -> Result<Self, SecretError> {
        Self::load_mode(dir, false)
    }

    /// Loads every usable secret; an unusable file is refused alone and
    /// listed in [`Secrets::refused`] (the daemon). Only an unreadable
    /// directory is an error.
    pub fn load_lenient(dir: &Path) -> Result<Self, SecretError> {
        Self::load_mode(dir, true)
    }

    /// Files a lenient load refused.
    pub fn refused(&self) -> &[SecretError] {
        &self.refused
    }

    fn load_mode(dir: &Path, lenient: bool) -> Result<Self, SecretError> {
        let mut secrets = Secrets::default();
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(secrets),
            Err(e) => {
                return Err(SecretError {
                    file: dir.into(),
                    message: e.to_string(),
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(|e| SecretError {
                file: dir.into(),
                message: e.to_string(),
            })?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                if name == "qr-keys" {
                    secrets.load_qr_keys(&path, lenient)?;
                }
                continue;
            }
            match read_secret_file(&path) {
                Ok(value) => {
                    secrets.values.insert(name, value);
                }
                Err(e) if lenient => secrets.refused.push(e),
                Err(e) => return Err(e),
            }
        }
        Ok(secrets)
    }

    fn load_qr_keys(&mut self, dir: &Path, lenient: bool) -> Result<(), SecretError> {
        let entries = fs::read_dir(dir).map_err(|e| SecretError {
            file: dir.into(),
            message: e.to_string(),
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            // `<id>.key`: an HMAC key for ATT1 cards; `<id>.pub`: an Ed25519
            // public key for ATT2 cards. A public key is no secret, but one
            // 0600 rule covers the whole directory (provisioning writes both).
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let (key_id, public) = match (name.strip_suffix(".key"), name.strip_suffix(".pub")) {
                (Some(id), _) => (id, false),
                (None, Some(id)) => (id, true),
                (None, None) => continue,
            };
            let loaded = read_secret_file(&path).and_then(|text| {
                let invalid = |message: String| SecretError {
                    file: path.clone(),
                    message,
                };
                if public {
                    let key = decode_key(&text).ok_or_else(|| {
                        invalid("Ed25519 public key must be 32 bytes as hex or base64".into())
                    })?;
                    self.qr_keys.insert_public(key_id, &key).map_err(invalid)
                } else {
                    let key = decode_key(&text)
                        .ok_or_else(|| invalid("key must be hex or base64".into()))?;
                    self.qr_keys.insert(key_id, key).map_err(invalid)
                }
            });
            match loaded {
                Ok(()) => {}
                Err(e) if lenient => self.refused.push(e),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Names only, for `check-config`.
    pub fn names(&self) -> Vec<String> {
        self.values.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_need_strict_modes() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("secrets");
        std::fs::create_dir_all(s.join("qr-keys")).unwrap();
        let key = s.join("qr-keys/k1.key");
        std::fs::write(
            &key,
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
        )
        .unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secrets::load(&s).unwrap_err().to_string();
        assert!(e.contains("k1.key") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let api = s.join("supabase-api-key");
        std::fs::write(&api, "top-secret-token\n").unwrap();
        std::fs::set_permissions(&api, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = Secrets::load(&s).unwrap();
        assert_eq!(loaded.qr_keys.len(), 1);
        assert_eq!(loaded.get("supabase-api-key"), Some("top-secret-token"));
        assert!(!format!("{loaded:?}").contains("top-secret"));

        std::fs::write(&key, "not a key!").unwrap();
        assert!(
            Secrets::load(&s)
                .unwrap_err()
                .to_string()
                .contains("hex or base64")
        );
        assert!(
            Secrets::load(&dir.path().join("none"))
                .unwrap()
                .names()
                .is_empty()
        );
    }

    #[test]
    fn a_stray_file_is_refused_alone_in_a_lenient_load() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("secrets");
        std::fs::create_dir_all(&s).unwrap();
        let readme = s.join("README");
        std::fs::write(&readme, "notes").unwrap();
        std::fs::set_permissions(&readme, std::fs::Permissions::from_mode(0o644)).unwrap();
        let api = s.join("supabase-api-key");
        std::fs::write(&api, "k").unwrap();
        std::fs::set_permissions(&api, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Secrets::load(&s).is_err(), "the CLI stays strict");
        let l = Secrets::load_lenient(&s).unwrap();
        assert_eq!(l.get("supabase-api-key"), Some("k"));
        assert_eq!(l.refused().len(), 1);
        assert!(l.refused()[0].file.ends_with("README"));
        assert!(l.refused()[0].to_string().contains("chmod 600"));
    }

    #[test]
    fn ed25519_public_keys_load_beside_hmac_keys() {
        use crate::domain::payload::{self, CardSigningKey, PayloadPolicy};
        use crate::domain::record::StudentNumber;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("secrets");
        std::fs::create_dir_all(s.join("qr-keys")).unwrap();
        let office = CardSigningKey::from_seed(&[5u8; 32]).unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = s.join("qr-keys").join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("k1.key", &"ab".repeat(32), 0o600);
        // base64 for one, hex for the other
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(office.public_key());
        write("e1.pub", &format!("{b64}\n"), 0o600);
        write("e2.pub", &hex::encode(office.public_key()), 0o600);
        let loaded = Secrets::load(&s).unwrap();
        assert_eq!((loaded.qr_keys.len(), loaded.qr_keys.public_len()), (3, 2));
        let card =
            payload::sign_ed25519("e1", &office, &StudentNumber::parse("7").unwrap()).unwrap();
        let policy = PayloadPolicy {
            accept_unsigned: false,
            accept_hmac: false,
        };
        assert!(payload::parse(card.as_bytes(), &loaded.qr_keys, policy).is_ok());

        write("e2.pub", &hex::encode(office.public_key()), 0o640);
        let e = Secrets::load(&s).unwrap_err().to_string();
        assert!(e.contains("e2.pub") && e.contains("chmod 600"), "{e}");
        write("e2.pub", &"ab".repeat(16), 0o600);
        let e = Secrets::load(&s).unwrap_err().to_string();
        assert!(e.contains("e2.pub") && e.contains("16 bytes"), "{e}");
        write("e2.pub", "not a key!", 0o600);
        let e = Secrets::load(&s).unwrap_err().to_string();
        assert!(e.contains("e2.pub") && e.contains("hex or base64"), "{e}");
    }
}
