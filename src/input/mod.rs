//! Scan sources: where raw QR payloads come from.
//!
//! Every source (camera, USB HID scanner, replay) implements [`ScanSource`]
//! and pushes [`RawScan`]s into a bounded channel owned by the scan pipeline.
//! A source never waits on the database or the network: when the pipeline is
//! busy the channel fills and the source decides what to drop (a camera drops
//! frames, a replay source waits).

pub mod camera;
pub mod decode;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod hid;
pub mod replay;

use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A boxed, sendable future; sources and tasks are stored behind trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which kind of input produced a scan; logged and stored with the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Camera,
    HidScanner,
    Replay,
    /// Injected with `attendance scan <payload>` through the control socket.
    Control,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Camera => "camera",
            SourceKind::HidScanner => "hid_scanner",
            SourceKind::Replay => "replay",
            SourceKind::Control => "control",
        }
    }
}

/// One undecoded-or-decoded payload as it left the source.
#[derive(Debug, Clone)]
pub struct RawScan {
    /// The payload bytes (QR content or scanner text, without the final Enter).
    pub payload: Vec<u8>,
    pub source: SourceKind,
    /// Wall-clock time the code was seen; the rules use this, not the time of
    /// the database write, so a queue never turns "present" into "late".
    pub seen_at: DateTime<Utc>,
}

impl RawScan {
    pub fn now(payload: impl Into<Vec<u8>>, source: SourceKind) -> Self {
        RawScan {
            payload: payload.into(),
            source,
            seen_at: Utc::now(),
        }
    }
}

/// The pipeline's end of a source: a bounded sender.
pub type ScanSink = mpsc::Sender<RawScan>;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("scan source {source_name}: {message}")]
    Failed {
        source_name: String,
        message: String,
    },
    #[error("scan source {source_name}: reading {path}: {err}")]
    Io {
        source_name: String,
        path: String,
        #[source]
        err: std::io::Error,
    },
}

/// A producer of scans. `run` returns when `shutdown` is cancelled (Ok) or when
/// the source fails for good (Err); the daemon treats a source that returns
/// an error as a dead task.
pub trait ScanSource: Send {
    fn name(&self) -> &str;
    fn run(
        self: Box<Self>,
        sink: ScanSink,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), SourceError>>;
}
