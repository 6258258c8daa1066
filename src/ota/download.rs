//! Bundle download to /data: one connection, HTTP Range resume across
//! restarts and power cuts, an optional rate cap, bounded disk use, and the
//! digest check (sha256 when given, else sha1, else md5).
//!
//! Invariants:
//! - The partial file's length is the resume point. After a power cut its
//!   tail may not be on disk as the length claims, so a resume first drops
//!   back to the last multiple of `REWIND` and fetches that again; the
//!   digest check decides in the end.
//! - The file is fsynced every `SYNC_EVERY` bytes and at the end, and free
//!   space is checked then: the download stops (a failure, not a retry)
//!   before /data drops below the store's floor.
//! - A 4xx other than 408/409/429 is permanent (reported, never looped); a
//!   server that ignores Range restarts the file from zero.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::Digest;

use super::machine::Hashes;

const REWIND: u64 = 64 * 1024;
const SYNC_EVERY: u64 = 8 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    Transport(String),
    #[error("{path}: {err}")]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error(
        "the data partition would drop below its floor ({free_mb} MiB free, {floor_mb} MiB kept)"
    )]
    DiskFloor { free_mb: u64, floor_mb: u64 },
    #[error("the server sent more than the announced {size} bytes")]
    TooLong { size: u64 },
    #[error("the server's Content-Range does not start at {expected}")]
    BadRange { expected: u64 },
}

impl DownloadError {
    /// Asking again will not help: report the failure.
    pub fn permanent(&self) -> bool {
        match self {
            DownloadError::Status(s) => {
                (400..500).contains(s) && !matches!(s, 408 | 409 | 416 | 429)
            }
            DownloadError::DiskFloor { .. } | DownloadError::TooLong { .. } => true,
            DownloadError::Io { err, .. } => err.raw_os_error() == Some(libc::ENOSPC),
            DownloadError::Transport(_) | DownloadError::BadRange { .. } => false,
        }
    }
}

/// Where the bundle goes and what bounds the download.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub size: u64,
    /// Free space (MiB) that must stay on the partition: `store.min_free_mb`.
    pub floor_mb: u64,
    /// Bytes per second; 0 = no cap.
    pub rate_limit: u64,
}

/// MiB still needed on disk for the rest of the bundle plus the margin.
pub fn need_mb(size: u64, have: u64, margin_mb: u64) -> u64 {
    size.saturating_sub(have).div_ceil(MIB) + margin_mb
}

/// Bytes already on disk for this bundle (0 when there is no file).
pub fn have(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> DownloadError + '_ {
    move |err| DownloadError::Io {
        path: path.to_path_buf(),
        err,
    }
}

/// Where to resume: the partial length, rewound to a `REWIND` boundary; a
/// file longer than the bundle starts over.
pub fn resume_point(len: u64, size: u64) -> u64 {
    if len > size {
        0
    } else if len == size {
        size
    } else {
        len - len % REWIND
    }
}

/// Free MiB on the file system holding `dir` (None: cannot tell).
pub fn free_mb(dir: &Path) -> Option<u64> {
    crate::app::free_mb(dir)
}

/// Downloads `url` into `target.path`, resuming, calling `progress` with the
/// bytes on disk. `auth` is sent only to the server's own origin.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    target: &Target,
    mut progress: impl FnMut(u64),
) -> Result<(), DownloadError> {
    let path = &target.path;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(path))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    let mut at = resume_point(len, target.size);
    file.set_len(at).map_err(io(path))?;
    if at == target.size {
        progress(at);
        return Ok(());
    }
    let mut rb = client.get(url);
    if at > 0 {
        rb = rb.header(reqwest::header::RANGE, format!("bytes={at}-"));
    }
    if let Some(a) = auth {
        rb = rb.header(reqwest::header::AUTHORIZATION, a);
    }
    let mut resp = rb
        .send()
        .await
        .map_err(|e| DownloadError::Transport(super::ddi::transport("download", &e).to_string()))?;
    let status = resp.status().as_u16();
    match status {
        206 => {
            let start = resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(at) {
                file.set_len(0).map_err(io(path))?;
                return Err(DownloadError::BadRange { expected: at });
            }
        }
        200 => {
            // The server ignored the Range: start over.
            at = 0;
            file.set_len(0).map_err(io(path))?;
        }
        416 => {
            // Our file does not fit the server's: start over next time.
            file.set_len(0).map_err(io(path))?;
            return Err(DownloadError::Status(416));
        }
        s => return Err(DownloadError::Status(s)),
    }
    file.seek(SeekFrom::Start(at)).map_err(io(path))?;
    let started = Instant::now();
    let mut fetched: u64 = 0;
    let mut unsynced: u64 = 0;
    progress(at);
    loop {
        let chunk = resp.chunk().await.map_err(|e| {
            DownloadError::Transport(super::ddi::transport("download", &e).to_string())
        });
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                let _ = file.sync_all();
                return Err(e);
            }
        };
        if at + chunk.len() as u64 > target.size {
            file.set_len(0).map_err(io(path))?;
            return Err(DownloadError::TooLong { size: target.size });
        }
        file.write_all(&chunk).map_err(io(path))?;
        at += chunk.len() as u64;
        fetched += chunk.len() as u64;
        unsynced += chunk.len() as u64;
        if unsynced >= SYNC_EVERY {
            file.sync_all().map_err(io(path))?;
            unsynced = 0;
            check_floor(path, target.floor_mb)?;
        }
        progress(at);
        if target.rate_limit > 0 {
            let due = Duration::from_secs_f64(fetched as f64 / target.rate_limit as f64);
            let spent = started.elapsed();
            if due > spent {
                tokio::time::sleep(due - spent).await;
            }
        }
    }
    file.sync_all().map_err(io(path))?;
    if at < target.size {
        return Err(DownloadError::Transport(format!(
            "connection ended after {at} of {} bytes",
            target.size
        )));
    }
    Ok(())
}

fn check_floor(path: &Path, floor_mb: u64) -> Result<(), DownloadError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    match free_mb(dir) {
        Some(free) if free < floor_mb => Err(DownloadError::DiskFloor {
            free_mb: free,
            floor_mb,
        }),
        _ => Ok(()),
    }
}

/// Checks the file against the strongest digest given. `Ok(None)`: it
/// matches; `Ok(Some(algorithm))`: it does not.
pub fn verify(path: &Path, hashes: &Hashes) -> Result<Option<&'static str>, DownloadError> {
    fn digest<D: Digest>(path: &Path) -> Result<String, DownloadError> {
        let mut f = std::fs::File::open(path).map_err(io(path))?;
        let mut h = D::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = f.read(&mut buf).map_err(io(path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    }
    let (algorithm, expected, actual) = if let Some(e) = &hashes.sha256 {
        ("sha256", e, digest::<sha2::Sha256>(path)?)
    } else if let Some(e) = &hashes.sha1 {
        ("sha1", e, digest::<sha1::Sha1>(path)?)
    } else if let Some(e) = &hashes.md5 {
        ("md5", e, digest::<md5::Md5>(path)?)
    } else {
        return Ok(Some("digest"));
    };
    Ok(if actual.eq_ignore_ascii_case(expected) {
        None
    } else {
        Some(algorithm)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_rewinds_to_a_boundary_and_restarts_oversized_files() {
        assert_eq!(resume_point(0, 1000), 0);
        assert_eq!(resume_point(REWIND + 5, 10 * REWIND), REWIND);
        assert_eq!(resume_point(10 * REWIND, 10 * REWIND), 10 * REWIND);
        assert_eq!(resume_point(11 * REWIND, 10 * REWIND), 0);
    }

    #[test]
    fn space_needed_counts_only_what_is_missing() {
        assert_eq!(need_mb(100 * MIB, 0, 32), 132);
        assert_eq!(need_mb(100 * MIB, 60 * MIB, 32), 72);
        assert_eq!(need_mb(100 * MIB + 1, 0, 0), 101);
        assert_eq!(need_mb(10, 10, 5), 5);
    }

    #[test]
    fn the_strongest_given_digest_decides() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b");
        std::fs::write(&p, b"hello world").unwrap();
        let sha256 = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";
        let sha1 = "2aae6c35c94fcfb415dbe95f408b9ce91ee846ed";
        let md5 = "5eb63bbbe01eeed093cb22bb8f5acdc3";
        let h = |a: Option<&str>, b: Option<&str>, c: Option<&str>| Hashes {
            sha256: a.map(String::from),
            sha1: b.map(String::from),
            md5: c.map(String::from),
        };
        assert_eq!(verify(&p, &h(Some(sha256), None, None)).unwrap(), None);
        assert_eq!(verify(&p, &h(None, Some(sha1), None)).unwrap(), None);
        assert_eq!(verify(&p, &h(None, None, Some(md5))).unwrap(), None);
        // sha256 wins over a (wrong) sha1 and md5; a wrong sha256 fails.
        assert_eq!(
            verify(&p, &h(Some(sha256), Some(md5), Some(sha1))).unwrap(),
            None
        );
        assert_eq!(
            verify(&p, &h(Some(&"0".repeat(64)), Some(sha1), Some(md5))).unwrap(),
            Some("sha256")
        );
        assert_eq!(
            verify(&p, &h(None, Some(&"0".repeat(40)), None)).unwrap(),
            Some("sha1")
        );
        assert_eq!(
            verify(&p, &h(None, None, Some(&"0".repeat(32)))).unwrap(),
            Some("md5")
        );
    }

    #[test]
    fn which_errors_are_permanent() {
        assert!(DownloadError::Status(404).permanent());
        assert!(DownloadError::Status(403).permanent());
        assert!(!DownloadError::Status(503).permanent());
        assert!(!DownloadError::Status(429).permanent());
        assert!(!DownloadError::Transport("reset".into()).permanent());
        assert!(
            DownloadError::DiskFloor {
                free_mb: 1,
                floor_mb: 64
            }
            .permanent()
        );
        let enospc = DownloadError::Io {
            path: "x".into(),
            err: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert!(enospc.permanent());
    }
}
