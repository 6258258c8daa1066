//! The control socket: how the CLI talks to a running daemon.
//!
//! A Unix socket in the data directory, mode 0600 (root and the daemon's user
//! only). One JSON request line, one JSON response line. Writes from the CLI
//! (`scan`, `students import`) go through here while the daemon runs, so the
//! daemon's database thread stays the only writer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as TokioBufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::pipeline::ScanWithReply;
use crate::input::{RawScan, SourceKind};
use crate::store::{StoreHandle, StudentRow};

/// A request line is at most this long (a roster of ~20,000 students).
const MAX_REQUEST_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    Scan {
        payload: String,
    },
    ImportStudents {
        students: Vec<StudentRow>,
    },
    Status,
    /// The sync quarantine: list (at most `limit`), retry or discard
    /// (`seqs`: these rows; none: up to 1000).
    QuarantineList {
        limit: usize,
    },
    QuarantineRetry {
        seqs: Option<Vec<i64>>,
    },
    QuarantineDiscard {
        seqs: Option<Vec<i64>>,
    },
}

/// Runs a quarantine request on a store (the daemon's, or the CLI's own
/// when no daemon runs).
pub fn quarantine_op(
    store: &mut crate::store::Store,
    req: &ControlRequest,
) -> Result<serde_json::Value, crate::store::StoreError> {
    Ok(match req {
        ControlRequest::QuarantineList { limit } => {
            serde_json::json!({"quarantined": store.quarantined(*limit)?, "depth": store.quarantine_depth()?})
        }
        ControlRequest::QuarantineRetry { seqs } => {
            serde_json::json!({"retried": store.retry_quarantined(seqs.as_deref())?})
        }
        ControlRequest::QuarantineDiscard { seqs } => {
            serde_json::json!({"discarded": store.discard_quarantined(seqs.as_deref())?})
        }
        _ => serde_json::json!({"error": "not a quarantine request"}),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {err}")]
    Io {
        path: String,
        #[source]
        err: std::io::Error,
    },
    #[error("control socket {path}: bad response: {message}")]
    Protocol { path: String, message: String },
}

pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |err| ControlError::Io {
        path: path.display().to_string(),
        err,
    };
    // We hold the data-directory lock, so a socket file left here is stale.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

pub async fn serve(
    listener: UnixListener,
    scans: mpsc::Sender<ScanWithReply>,
    store: StoreHandle,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (scans, store, health) = (scans.clone(), store.clone(), health.clone());
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader =
                TokioBufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST_BYTES));
            let read =
                tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut line)).await;
            let response = match read {
                Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(&line) {
                    Ok(req) => handle(req, &scans, &store, &health).await,
                    Err(e) => serde_json::json!({"error": format!("bad request: {e}")}),
                },
                Ok(Err(e)) => serde_json::json!({"error": format!("read failed: {e}")}),
                Err(_) => serde_json::json!({"error": "request timed out"}),
            };
            let mut out = response.to_string();
            out.push('\n');
            let _ = write.write_all(out.as_bytes()).await;
        });
    }
}

async fn handle(
    req: ControlRequest,
    scans: &mpsc::Sender<ScanWithReply>,
    store: &StoreHandle,
    health: &Health,
) -> serde_json::Value {
    match req {
        ControlRequest::Scan { payload } => {
            let (tx, rx) = oneshot::channel();
            if scans
                .send((RawScan::now(payload.into_bytes(), SourceKind::Control), tx))
                .await
                .is_err()
            {
                return serde_json::json!({"error": "daemon is shutting down"});
            }
            match rx.await {
                Ok(report) => serde_json::to_value(report).unwrap_or_default(),
                Err(_) => serde_json::json!({"error": "daemon is shutting down"}),
            }
        }
        ControlRequest::ImportStudents { students } => {
            match store
                .call(move |s| s.import_students(&students))
                .await
                .and_then(|r| r)
            {
                Ok(summary) => serde_json::json!({"imported": summary}),
                Err(e) => serde_json::json!({"error": e.to_string()}),
            }
        }
        ControlRequest::Status => serde_json::to_value(health.report()).unwrap_or_default(),
        req @ (ControlRequest::QuarantineList { .. }
        | ControlRequest::QuarantineRetry { .. }
        | ControlRequest::QuarantineDiscard { .. }) => {
            match store
                .call(move |s| quarantine_op(s, &req))
                .await
                .and_then(|r| r)
            {
                Ok(v) => v,
                Err(e) => serde_json::json!({"error": e.to_string()}),
            }
        }
    }
}

/// Sends one request to a running daemon (blocking; for the CLI).
/// `Ok(None)` when no daemon listens on the socket.
pub fn request(
    path: &Path,
    req: &ControlRequest,
) -> Result<Option<serde_json::Value>, ControlError> {
    let name = path.display().to_string();
    let io = |err| ControlError::Io {
        path: name.clone(),
        err,
    };
    let mut stream = match StdUnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io(e)),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(|e| ControlError::Protocol {
        path: name.clone(),
        message: e.to_string(),
    })?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut resp = String::new();
    BufReader::new(stream).read_line(&mut resp).map_err(io)?;
    let value: serde_json::Value =
        serde_json::from_str(&resp).map_err(|e| ControlError::Protocol {
            path: name.clone(),
            message: e.to_string(),
        })?;
    Ok(Some(value))
}
