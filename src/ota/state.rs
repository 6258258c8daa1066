//! The agent's persisted state: one JSON file on /data, replaced atomically
//! (write a temporary file, fsync it, rename it over the old one, fsync the
//! directory), so a power cut leaves either the old or the new state,
//! never a torn one. Settings live in the config (`ota.*`), not here.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::machine::State;

/// Larger than any real state (an offer is a few hundred bytes).
const MAX_STATE_BYTES: u64 = 256 * 1024;
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("ota state {path}: {err}")]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("ota state {path}: unreadable ({reason}); moved aside to {aside}")]
    Corrupt {
        path: PathBuf,
        reason: String,
        aside: PathBuf,
    },
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    #[serde(flatten)]
    state: State,
}

#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> Self {
        StateFile {
            path: dir.join("state.json"),
        }
    }

    /// A file at exactly `path` (for `write_text`).
    pub fn at(path: &Path) -> Self {
        StateFile {
            path: path.to_path_buf(),
        }
    }

    /// Replaces the file's content atomically (temp, fsync, rename, fsync dir).
    pub fn write_text(&self, text: &str) -> Result<(), StateError> {
        self.replace(text.as_bytes())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, err: std::io::Error) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            err,
        }
    }

    /// The saved state; `Idle` when there is none. A file that cannot be
    /// parsed is moved aside (kept for a person) and reported.
    pub fn load(&self) -> Result<State, StateError> {
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::Idle),
            Err(e) => return Err(self.io(e)),
        };
        let reason = if meta.len() > MAX_STATE_BYTES {
            format!("{} bytes", meta.len())
        } else {
            let text = fs::read(&self.path).map_err(|e| self.io(e))?;
            match serde_json::from_slice::<OnDisk>(&text) {
                Ok(d) if d.format == FORMAT => return Ok(d.state),
                Ok(d) => format!("format {}", d.format),
                Err(e) => format!("JSON error at line {} column {}", e.line(), e.column()),
            }
        };
        let aside = self.path.with_extension("json.unreadable");
        fs::rename(&self.path, &aside).map_err(|e| self.io(e))?;
        Err(StateError::Corrupt {
            path: self.path.clone(),
            reason,
            aside,
        })
    }

    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let body = serde_json::to_vec_pretty(&OnDisk {
            format: FORMAT,
            state: state.clone(),
        })
        .map_err(|e| self.io(std::io::Error::other(e)))?;
        self.replace(&body)
    }

    fn replace(&self, body: &[u8]) -> Result<(), StateError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp"));
        {
            let mut f = fs::File::create(&tmp).map_err(|e| self.io(e))?;
            f.write_all(body).map_err(|e| self.io(e))?;
            f.sync_all().map_err(|e| self.io(e))?;
        }
        fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ota::machine::{Execution, Feedback, Finished};

    #[test]
    fn missing_is_idle_and_saved_states_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(&dir.path().join("ota"));
        assert_eq!(f.load().unwrap(), State::Idle);
        let s = State::Reporting {
            report: Feedback {
                action_id: "3".into(),
                execution: Execution::Closed,
                finished: Finished::Failure,
                progress: None,
                details: vec!["x".into()],
            },
        };
        f.save(&s).unwrap();
        assert_eq!(f.load().unwrap(), s);
        f.save(&State::Idle).unwrap();
        assert_eq!(f.load().unwrap(), State::Idle);
        assert!(!dir.path().join("ota/.state.json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_moved_aside_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        fs::write(f.path(), b"{\"format\":1,\"state\":\"nonsense\"}").unwrap();
        let e = f.load().unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
        assert!(dir.path().join("state.json.unreadable").exists());
        assert_eq!(f.load().unwrap(), State::Idle);
    }
}
