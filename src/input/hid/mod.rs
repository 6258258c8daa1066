//! USB HID (keyboard-emulating) QR scanner through evdev.
//!
//! The device is found by its by-id path, by (part of) its name, or with
//! `device = "auto"` by [`detect`] (a known scanner vendor, a scanner's
//! name, or the only USB keyboard); it is grabbed
//! exclusively so the typed payloads do not reach a console, and read on the
//! runtime through evdev's async event stream. A payload ends at Enter; a
//! half-typed payload is dropped after `timeout_ms`. When the scanner is
//! unplugged the reader logs it and looks for the device again with backoff,
//! so a replugged scanner works without a restart.

pub mod detect;
pub mod keymap;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
/// How often `device = "auto"` looks for a scanner while none is connected:
/// a few sysfs reads, so often enough that a plugged-in scanner works at once.
const AUTO_POLL: Duration = Duration::from_secs(2);

/// `hid_scanner` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HidScannerConfig {
    #[serde(default)]
    pub enabled: bool,
    /// `"auto"` (see [`detect`]) or a path such as
    /// `/dev/input/by-id/usb-XXXX-event-kbd`. `device_path` and
    /// `device_name`, when set, take precedence.
    #[serde(default)]
    pub device: Option<String>,
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
    /// USB vendor ids (4 hex digits) that `device = "auto"` takes for a
    /// scanner even beside other keyboards.
    #[serde(default = "detect::default_known_vendor_ids")]
    pub known_vendor_ids: Vec<String>,
}

impl Default for HidScannerConfig {
    fn default() -> Self {
        HidScannerConfig {
            enabled: false,
            device: None,
            device_path: None,
            device_name: None,
            timeout_ms: default_timeout_ms(),
            max_len: default_max_len(),
            reconnect_max_s: default_reconnect_max_s(),
            known_vendor_ids: detect::default_known_vendor_ids(),
        }
    }
}

/// Which device the reader looks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Path(PathBuf),
    Name(String),
    Auto,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HidConfigError {
    #[error(
        "hid_scanner: set device (\"auto\" or a path), device_path or device_name when enabled"
    )]
    NoDevice,
    #[error("hid_scanner.device: {0:?} must be \"auto\" or an absolute path")]
    BadDevice(String),
    #[error(
        "hid_scanner.known_vendor_ids: {0:?} is not a USB vendor id (4 hex digits, e.g. \"0c2e\")"
    )]
    VendorId(String),
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
        if let Some(d) = &self.device
            && d != detect::AUTO
            && !Path::new(d).is_absolute()
        {
            return Err(HidConfigError::BadDevice(d.clone()));
        }
        if self.enabled && self.target().is_none() {
            return Err(HidConfigError::NoDevice);
        }
        if let Some(v) = self
            .known_vendor_ids
            .iter()
            .find(|v| detect::parse_vendor_id(v).is_none())
        {
            return Err(HidConfigError::VendorId(v.clone()));
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

impl HidScannerConfig {
    /// `device_path`, then `device_name`, then `device` (so a device layer
    /// naming its scanner overrides the image's `"auto"`).
    pub fn target(&self) -> Option<Target> {
        if let Some(p) = &self.device_path {
            return Some(Target::Path(p.clone()));
        }
        if let Some(n) = &self.device_name {
            return Some(Target::Name(n.clone()));
        }
        match self.device.as_deref() {
            Some(detect::AUTO) => Some(Target::Auto),
            Some(p) => Some(Target::Path(PathBuf::from(p))),
            None => None,
        }
    }

    fn known_vendors(&self) -> Vec<u16> {
        self.known_vendor_ids
            .iter()
            .filter_map(|v| detect::parse_vendor_id(v))
            .collect()
    }
}

/// The result of one search for the scanner.
pub enum Found {
    Device(PathBuf, Box<Device>),
    /// Nothing to open; the text says why (for the log and health).
    Missing(String),
}

/// Finds the scanner for `cfg`: the configured path if it exists, the first
/// `/dev/input/event*` whose name contains `device_name`, or the device
/// [`detect::choose`] picks among those `devices` lists.
pub fn find(cfg: &HidScannerConfig, input_dir: &Path, devices: &dyn detect::InputDevices) -> Found {
    match cfg.target() {
        Some(Target::Auto) => match detect::choose(&devices.devices(), &cfg.known_vendors()) {
            detect::Choice::Found(d, reason) => match Device::open(&d.event) {
                Ok(dev) => {
                    tracing::info!(target: "hid", path = %d.event.display(), name = %d.name,
                        vendor = format!("{:04x}", d.vendor), ?reason, "scanner detected");
                    Found::Device(d.event, Box::new(dev))
                }
                Err(e) => Found::Missing(format!("{}: {e}", d.event.display())),
            },
            detect::Choice::None => Found::Missing("no USB keyboard-mode scanner connected".into()),
            detect::Choice::Ambiguous(n) => Found::Missing(format!(
                "{n} USB keyboards and none is a known scanner; set hid_scanner.device_path or known_vendor_ids"
            )),
        },
        _ => match find_device(cfg, input_dir) {
            Some((p, d)) => Found::Device(p, Box::new(d)),
            None => Found::Missing("configured scanner not found".into()),
        },
    }
}

/// Finds the scanner by path or name: the configured path if it exists,
/// else the first `/dev/input/event*` whose name contains `device_name`.
pub fn find_device(cfg: &HidScannerConfig, input_dir: &Path) -> Option<(PathBuf, Device)> {
    let want = match cfg.target()? {
        Target::Path(p) => return Device::open(&p).ok().map(|d| (p, d)),
        Target::Name(n) => n.to_lowercase(),
        Target::Auto => return None,
    };
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

/// Whether the scanner is connected, for /health.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ScannerState {
    Searching,
    Connected { device: String },
    Absent { reason: String },
}

/// Shared, cheap-to-read scanner state.
#[derive(Debug, Clone)]
pub struct ScannerStatus(Arc<Mutex<ScannerState>>);

impl ScannerStatus {
    fn new() -> Self {
        ScannerStatus(Arc::new(Mutex::new(ScannerState::Searching)))
    }

    fn set(&self, state: ScannerState) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    pub fn get(&self) -> ScannerState {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The evdev scanner source.
pub struct HidScanner {
    cfg: HidScannerConfig,
    name: String,
    devices: Arc<dyn detect::InputDevices>,
    status: ScannerStatus,
}

impl HidScanner {
    pub fn new(cfg: HidScannerConfig) -> Self {
        Self::with_devices(cfg, Arc::new(detect::SysfsInputDevices::default()))
    }

    /// With another device lister for `device = "auto"` (tests).
    pub fn with_devices(cfg: HidScannerConfig, devices: Arc<dyn detect::InputDevices>) -> Self {
        HidScanner {
            cfg,
            name: "hid_scanner".into(),
            devices,
            status: ScannerStatus::new(),
        }
    }

    pub fn status(&self) -> ScannerStatus {
        self.status.clone()
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
            let auto = self.cfg.target() == Some(Target::Auto);
            loop {
                let (cfg, devices) = (self.cfg.clone(), self.devices.clone());
                let found = tokio::task::spawn_blocking(move || {
                    find(&cfg, Path::new("/dev/input"), devices.as_ref())
                })
                .await
                .unwrap_or_else(|e| Found::Missing(format!("search task failed: {e}")));
                match found {
                    Found::Device(path, mut device) => {
                        if let Err(e) = device.grab() {
                            tracing::warn!(target: "hid", path = %path.display(), error = %e,
                                "cannot grab the scanner exclusively; its keys may reach a console");
                        }
                        tracing::info!(target: "hid", path = %path.display(),
                            name = device.name().unwrap_or("?"), "scanner connected");
                        warned_missing = false;
                        backoff = Duration::from_millis(250);
                        dec.reset();
                        self.status.set(ScannerState::Connected {
                            device: path.display().to_string(),
                        });
                        let session =
                            read_session(*device, &path, &mut dec, &sink, &shutdown).await;
                        self.status.set(ScannerState::Searching);
                        match session {
                            Session::Shutdown => return Ok(()),
                            Session::Lost => dec.reset(),
                        }
                    }
                    Found::Missing(reason) => {
                        if !warned_missing {
                            tracing::warn!(target: "hid", target_device = ?self.cfg.target(),
                                %reason, "scanner not found; will keep looking");
                            warned_missing = true;
                        }
                        self.status.set(ScannerState::Absent { reason });
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
                if auto {
                    // Detection is cheap: notice a plugged-in scanner quickly.
                    backoff = backoff.min(AUTO_POLL);
                }
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
        assert!(serde_json::from_str::<HidScannerConfig>(r#"{"devise": "x"}"#).is_err());
        // "auto" and absolute paths are devices; anything else names the key.
        let c: HidScannerConfig =
            serde_json::from_str(r#"{"enabled": true, "device": "auto"}"#).expect("parse");
        c.validate().expect("auto is valid");
        assert_eq!(c.target(), Some(Target::Auto));
        let c: HidScannerConfig =
            serde_json::from_str(r#"{"enabled": true, "device": "event3"}"#).expect("parse");
        assert_eq!(
            c.validate(),
            Err(HidConfigError::BadDevice("event3".into()))
        );
        assert!(
            HidConfigError::BadDevice("x".into())
                .to_string()
                .starts_with("hid_scanner.device:")
        );
        let c: HidScannerConfig = serde_json::from_str(
            r#"{"enabled": true, "device": "auto", "known_vendor_ids": ["0c2e", "honeywell"]}"#,
        )
        .expect("parse");
        assert_eq!(
            c.validate(),
            Err(HidConfigError::VendorId("honeywell".into()))
        );
        // A device layer's device_path or device_name overrides "auto".
        let c: HidScannerConfig =
            serde_json::from_str(r#"{"device": "auto", "device_name": "QEMU"}"#).expect("parse");
        assert_eq!(c.target(), Some(Target::Name("QEMU".into())));
        let c: HidScannerConfig =
            serde_json::from_str(r#"{"device": "/dev/input/by-id/x"}"#).expect("parse");
        assert_eq!(c.target(), Some(Target::Path("/dev/input/by-id/x".into())));
        assert_eq!(HidScannerConfig::default().known_vendor_ids.len(), 6);
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

    #[tokio::test]
    async fn auto_reports_absent_and_keeps_looking() {
        // A tree with only a PS/2 keyboard and a mouse: no scanner.
        let tree = crate::input::fixtures::materialize("no-usb-keyboard.tree");
        let devices = detect::SysfsInputDevices {
            class_dir: tree.path().join("class/input"),
            dev_dir: tree.path().join("dev/input"),
            word_bits: 64,
        };
        let cfg = HidScannerConfig {
            enabled: true,
            device: Some("auto".into()),
            ..Default::default()
        };
        let scanner = HidScanner::with_devices(cfg, Arc::new(devices));
        let status = scanner.status();
        assert_eq!(status.get(), ScannerState::Searching);
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        let token = CancellationToken::new();
        let task = tokio::spawn(Box::new(scanner).run(tx, token.clone()));
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while !matches!(status.get(), ScannerState::Absent { .. }) {
            assert!(std::time::Instant::now() < end, "{:?}", status.get());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ScannerState::Absent { reason } = status.get() else {
            unreachable!()
        };
        assert!(reason.contains("no USB keyboard"), "{reason}");
        assert!(!task.is_finished(), "an absent scanner is not fatal");
        token.cancel();
        let r = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("stops promptly")
            .expect("join");
        assert!(r.is_ok());
    }

    #[test]
    fn auto_tries_the_detected_node() {
        // The QEMU tree: the usb-kbd is chosen; its node does not exist here,
        // so the search reports the path it tried.
        let tree = crate::input::fixtures::materialize("qemu-usb-kbd.tree");
        let devices = detect::SysfsInputDevices {
            class_dir: tree.path().join("class/input"),
            dev_dir: tree.path().join("dev/input"),
            word_bits: 64,
        };
        let cfg = HidScannerConfig {
            enabled: true,
            device: Some("auto".into()),
            ..Default::default()
        };
        match find(&cfg, Path::new("/nonexistent"), &devices) {
            Found::Missing(reason) => assert!(reason.contains("dev/input/event1"), "{reason}"),
            Found::Device(p, _) => panic!("opened {}", p.display()),
        }
    }
}
