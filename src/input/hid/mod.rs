//! USB HID (keyboard-emulating) QR scanner through evdev.
//!
//! The device is found by its by-id path or by (part of) its name, grabbed
//! exclusively so the typed payloads do not reach a console, and read on the
//! runtime through evdev's async event stream. A payload ends at Enter; a
//! half-typed payload is dropped after `timeout_ms`. When the scanner is
//! unplugged the reader logs it and looks for the device again with backoff,
//! so a replugged scanner works without a restart.

pub mod keymap;

use std::path::{Path, PathBuf};
use std::time::Duration;

use evdev::{Device, EventSummary};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{BoxFuture, RawScan, ScanSink, ScanSource, SourceError, SourceKind};
use keymap::{KeyDecoder, KeyOutcome};

fn default_timeout_ms() -> u64 {
    300
}
fn default_max_len() -> usize {
    512
}
fn default_reconnect_max_s() -> u64 {
    10
}

/// `hid_scanner` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HidScannerConfig {
    #[serde(default)]
    pub enabled: bool,
    /// Stable path such as `/dev/input/by-id/usb-XXXX-event-kbd`.
    #[serde(default)]
    pub device_path: Option<PathBuf>,
    /// Case-insensitive part of the device name (`evtest` shows it).
    #[serde(default)]
    pub device_name: Option<String>,
    /// A payload whose next key does not come within this time is dropped.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Longest accepted payload (characters).
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Upper bound of the reconnect backoff.
    #[serde(default = "default_reconnect_max_s")]
    pub reconnect_max_s: u64,
}

impl Default for HidScannerConfig {
    fn default() -> Self {
        HidScannerConfig {
            enabled: false,
            device_path: None,
            device_name: None,
            timeout_ms: default_timeout_ms(),
            max_len: default_max_len(),
            reconnect_max_s: default_reconnect_max_s(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HidConfigError {
    #[error("hid_scanner: set device_path or device_name when enabled")]
    NoDevice,
    #[error("hid_scanner.device_name: must not be empty")]
    EmptyName,
    #[error("hid_scanner.timeout_ms: {0} is outside 20..=10000")]
    Timeout(u64),
    #[error("hid_scanner.max_len: {0} is outside 1..=4096")]
    MaxLen(usize),
    #[error("hid_scanner.reconnect_max_s: {0} is outside 1..=600")]
    Reconnect(u64),
}

impl HidScannerConfig {
    pub fn validate(&self) -> Result<(), HidConfigError> {
        if self.enabled && self.device_path.is_none() && self.device_name.is_none() {
            return Err(HidConfigError::NoDevice);
        }
        if self
            .device_name
            .as_deref()
            .is_some_and(|n| n.trim().is_empty())
        {
            return Err(HidConfigError::EmptyName);
        }
        if !(20..=10_000).contains(&self.timeout_ms) {
            return Err(HidConfigError::Timeout(self.timeout_ms));
        }
        if !(1..=4096).contains(&self.max_len) {
            return Err(HidConfigError::MaxLen(self.max_len));
        }
        if !(1..=600).contains(&self.reconnect_max_s) {
            return Err(HidConfigError::Reconnect(self.reconnect_max_s));
        }
        Ok(())
    }
}

/// Finds the scanner: the configured path if it exists, else the first
/// `/dev/input/event*` whose name contains `device_name`.
pub fn find_device(cfg: &HidScannerConfig, input_dir: &Path) -> Option<(PathBuf, Device)> {
    if let Some(p) = &cfg.device_path {
        return Device::open(p).ok().map(|d| (p.clone(), d));
    }
    let want = cfg.device_name.as_deref()?.to_lowercase();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(input_dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("event"))
        })
        .collect();
    entries.sort();
    entries.into_iter().find_map(|p| {
        let d = Device::open(&p).ok()?;
        d.name()
            .is_some_and(|n| n.to_lowercase().contains(&want))
            .then_some((p, d))
    })
}

/// The evdev scanner source.
pub struct HidScanner {
    cfg: HidScannerConfig,
    name: String,
}

impl HidScanner {
    pub fn new(cfg: HidScannerConfig) -> Self {
        HidScanner {
            cfg,
            name: "hid_scanner".into(),
        }
    }
}

enum Session {
    Shutdown,
    Lost,
}

async fn read_session(
    device: Device,
    path: &Path,
    dec: &mut KeyDecoder,
    sink: &ScanSink,
    shutdown: &CancellationToken,
) -> Session {
    let mut stream = match device.into_event_stream() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(target: "hid", path = %path.display(), error = %e, "cannot stream scanner events");
            return Session::Lost;
        }
    };
    loop {
        let deadline = dec.deadline();
        let expire = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Session::Shutdown,
            _ = expire => {
                if let Some(n) = dec.expire(std::time::Instant::now()) {
                    tracing::warn!(target: "hid", chars = n, "half-read scanner payload timed out; dropped");
                }
            }
            ev = stream.next_event() => match ev {
                Err(e) => {
                    tracing::warn!(target: "hid", path = %path.display(), error = %e, "scanner lost (unplugged?)");
                    return Session::Lost;
                }
                Ok(ev) => {
                    if let EventSummary::Key(_, key, value) = ev.destructure() {
                        match dec.key(key, value, std::time::Instant::now()) {
                            KeyOutcome::Payload(text) => {
                                // Payload content is never logged (it is a credential).
                                tracing::debug!(target: "hid", len = text.len(), "scanner payload");
                                let scan = RawScan::now(text.into_bytes(), SourceKind::HidScanner);
                                tokio::select! {
                                    _ = shutdown.cancelled() => return Session::Shutdown,
                                    r = sink.send(scan) => if r.is_err() {
                                        return Session::Shutdown;
                                    }
                                }
                            }
                            KeyOutcome::Overflow => {
                                tracing::warn!(target: "hid", "scanner payload longer than max_len; dropped");
                            }
                            KeyOutcome::Unmapped(code) => {
                                tracing::debug!(target: "hid", code, "unmapped key ignored");
                            }
                            KeyOutcome::Pending => {}
                        }
                    }
                }
            }
        }
    }
}

impl ScanSource for HidScanner {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(
        self: Box<Self>,
        sink: ScanSink,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(async move {
            if let Err(e) = self.cfg.validate() {
                return Err(SourceError::Failed {
                    source_name: self.name.clone(),
                    message: e.to_string(),
                });
            }
            let mut dec =
                KeyDecoder::new(Duration::from_millis(self.cfg.timeout_ms), self.cfg.max_len);
            let max_backoff = Duration::from_secs(self.cfg.reconnect_max_s);
            let mut backoff = Duration::from_millis(250);
            let mut warned_missing = false;
            loop {
                let cfg = self.cfg.clone();
                let found =
                    tokio::task::spawn_blocking(move || find_device(&cfg, Path::new("/dev/input")))
                        .await
                        .ok()
                        .flatten();
                match found {
                    Some((path, mut device)) => {
                        if let Err(e) = device.grab() {
                            tracing::warn!(target: "hid", path = %path.display(), error = %e,
                                "cannot grab the scanner exclusively; its keys may reach a console");
                        }
                        tracing::info!(target: "hid", path = %path.display(),
                            name = device.name().unwrap_or("?"), "scanner connected");
                        warned_missing = false;
                        backoff = Duration::from_millis(250);
                        dec.reset();
                        match read_session(device, &path, &mut dec, &sink, &shutdown).await {
                            Session::Shutdown => return Ok(()),
                            Session::Lost => dec.reset(),
                        }
                    }
                    None => {
                        if !warned_missing {
                            tracing::warn!(target: "hid", path = ?self.cfg.device_path,
                                name = ?self.cfg.device_name, "scanner not found; will keep looking");
                            warned_missing = true;
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c: HidScannerConfig = serde_json::from_str("{}").expect("defaults");
        assert_eq!(c, HidScannerConfig::default());
        c.validate().expect("disabled default is valid");
        let c: HidScannerConfig = serde_json::from_str(r#"{"enabled": true}"#).expect("parse");
        assert_eq!(c.validate(), Err(HidConfigError::NoDevice));
        let c: HidScannerConfig =
            serde_json::from_str(r#"{"enabled": true, "device_name": "scanner", "timeout_ms": 5}"#)
                .expect("parse");
        assert!(
            c.validate()
                .expect_err("timeout")
                .to_string()
                .starts_with("hid_scanner.timeout_ms")
        );
        assert!(serde_json::from_str::<HidScannerConfig>(r#"{"device": "x"}"#).is_err());
    }

    #[test]
    fn find_device_by_name_skips_non_event_nodes_and_missing_dirs() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("mouse0"), b"").expect("write");
        std::fs::write(dir.path().join("event0"), b"not a device").expect("write");
        let cfg = HidScannerConfig {
            enabled: true,
            device_name: Some("scanner".into()),
            ..Default::default()
        };
        assert!(find_device(&cfg, dir.path()).is_none());
        assert!(find_device(&cfg, &dir.path().join("missing")).is_none());
        let cfg = HidScannerConfig {
            enabled: true,
            device_path: Some(dir.path().join("by-id-missing")),
            ..Default::default()
        };
        assert!(find_device(&cfg, dir.path()).is_none());
    }

    #[tokio::test]
    async fn source_keeps_looking_and_stops_on_shutdown() {
        let cfg = HidScannerConfig {
            enabled: true,
            device_path: Some("/nonexistent/by-id/scanner".into()),
            ..Default::default()
        };
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        let token = CancellationToken::new();
        let task = tokio::spawn(Box::new(HidScanner::new(cfg)).run(tx, token.clone()));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(!task.is_finished(), "a missing scanner is not fatal");
        token.cancel();
        let r = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("stops promptly")
            .expect("join");
        assert!(r.is_ok());
    }
}
