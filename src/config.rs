//! Typed configuration, read in layers and validated at start.
//!
//! Layers, later wins: built-in defaults, the image's
//! `/etc/attendance/config.json` (read-only root), the device's
//! `/data/config/attendance.json`. A missing file is an empty layer; a file
//! that exists but cannot be read or parsed is an error naming the file and
//! the key. Every key has a default, so an empty `{}` is a valid device file.
//!
//! Secrets never live in these files: they are files under
//! `<data_dir>/secrets/` with mode 0600 (see [`crate::secrets::Secrets`]), so the effective
//! config can be printed and logged as it is.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::schedule::{Schedule, ScheduleConfig};

pub const SYSTEM_CONFIG: &str = "/etc/attendance/config.json";
pub const DEVICE_CONFIG: &str = "/data/config/attendance.json";
pub const DEFAULT_DATA_DIR: &str = "/data/attendance";
/// Config files larger than this are refused: a config is a few KiB.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {err}")]
    Read {
        file: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("{file}: is {size} bytes, the limit for a config file is {MAX_CONFIG_BYTES}")]
    TooLarge { file: PathBuf, size: u64 },
    #[error("{file}: not valid JSON: {err}")]
    Syntax {
        file: PathBuf,
        #[source]
        err: serde_json::Error,
    },
    #[error("{file}: key `{key}`: {message}")]
    Key {
        file: String,
        key: String,
        message: String,
    },
    #[error("secret {file}: {message}")]
    Secret { file: PathBuf, message: String },
}

impl ConfigError {
    /// The config file the error is in, when it is one file's fault.
    pub fn file(&self) -> Option<String> {
        match self {
            ConfigError::Read { file, .. }
            | ConfigError::TooLarge { file, .. }
            | ConfigError::Syntax { file, .. } => Some(file.display().to_string()),
            ConfigError::Key { file, .. } => Some(file.clone()),
            ConfigError::Secret { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identifies this kiosk in records and in the cloud.
    pub device_id: String,
    /// Where the database, photos, secrets and backups live.
    pub data_dir: PathBuf,
    pub schedule: ScheduleConfig,
    pub scan: ScanConfig,
    pub sources: SourcesConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub store: StoreConfig,
    pub lifecycle: LifecycleConfig,
    /// Cloud sync (owned by src/sync/).
    pub sync: crate::sync::SyncConfig,
    /// QR decoder chain for camera frames.
    pub decoder: crate::input::decode::DecoderConfig,
    /// V4L2 camera (or its demo twin).
    pub camera: crate::input::camera::CameraConfig,
    /// USB HID QR scanner.
    pub hid_scanner: crate::input::hid::HidScannerConfig,
    /// Face photos as evidence.
    pub evidence: crate::evidence::EvidenceConfig,
    /// LEDs and buzzer (LED-class devices).
    pub leds: crate::feedback::leds::LedsConfig,
    /// Fleet updates (owned by src/ota/).
    pub ota: crate::ota::OtaConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            device_id: "kiosk-01".into(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            schedule: ScheduleConfig::default(),
            scan: ScanConfig::default(),
            sources: SourcesConfig::default(),
            http: HttpConfig::default(),
            log: LogConfig::default(),
            store: StoreConfig::default(),
            lifecycle: LifecycleConfig::default(),
            sync: crate::sync::SyncConfig::default(),
            decoder: Default::default(),
            camera: Default::default(),
            hid_scanner: Default::default(),
            evidence: Default::default(),
            leds: Default::default(),
            ota: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// A repeat of the same action within this many seconds is a duplicate.
    pub cooldown_seconds: u32,
    /// Accept plain and JSON cards; when false only signed cards are valid.
    pub accept_unsigned: bool,
    /// Accept HMAC-signed `ATT1` cards. A school whose cards are all
    /// Ed25519-signed (`ATT2`) sets this false, so HMAC keys left on a
    /// kiosk (or stolen from one) mint nothing it accepts.
    pub accept_hmac: bool,
    /// Scans waiting for the pipeline; sources drop or wait when full.
    pub queue_capacity: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        ScanConfig {
            cooldown_seconds: 300,
            accept_unsigned: true,
            accept_hmac: true,
            queue_capacity: 64,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    pub replay: ReplayConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplayConfig {
    pub enabled: bool,
    /// A file with one payload per line; `#` starts a comment line.
    pub file: Option<PathBuf>,
    /// Pause between payloads.
    pub interval_ms: u64,
    /// Start again at the end of the file.
    pub repeat: bool,
}

impl Default for ReplayConfig {
    fn default() -> Self {
        ReplayConfig {
            enabled: false,
            file: None,
            interval_ms: 1000,
            repeat: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub enabled: bool,
    pub listen: String,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// A request (headers and body) must arrive within this time.
    pub request_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: "0.0.0.0:8080".into(),
            max_connections: 32,
            request_timeout_ms: 5000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. "info" or "info,attendance::store=debug".
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// How long a reader or writer waits for a lock held by another process.
    pub busy_timeout_ms: u64,
    /// Below this much free space on the data partition, health reports
    /// degraded (scans are still recorded while SQLite can write).
    pub min_free_mb: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            busy_timeout_ms: 5000,
            min_free_mb: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// The ordered shutdown must finish within this time.
    pub shutdown_timeout_ms: u64,
    /// A task that has not shown progress for this long makes the daemon
    /// unhealthy and stops the systemd watchdog from being fed.
    pub liveness_timeout_ms: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            shutdown_timeout_ms: 10_000,
            liveness_timeout_ms: 10_000,
        }
    }
}

/// Where the layers come from.
#[derive(Debug, Clone)]
pub struct ConfigPaths {
    pub system: PathBuf,
    pub device: PathBuf,
}

impl Default for ConfigPaths {
    fn default() -> Self {
        ConfigPaths {
            system: PathBuf::from(SYSTEM_CONFIG),
            device: PathBuf::from(DEVICE_CONFIG),
        }
    }
}

/// A loaded and validated config with the schedule ready for the rules.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub schedule: Schedule,
    /// The files that contributed, in order.
    pub sources: Vec<PathBuf>,
}

/// Reads one layer: `Ok(None)` when the file does not exist.
fn read_layer(path: &Path) -> Result<Option<Value>, ConfigError> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(ConfigError::Read {
                file: path.into(),
                err,
            });
        }
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            file: path.into(),
            size: meta.len(),
        });
    }
    let text = fs::read(path).map_err(|err| ConfigError::Read {
        file: path.into(),
        err,
    })?;
    let value: Value = serde_json::from_slice(&text).map_err(|err| ConfigError::Syntax {
        file: path.into(),
        err,
    })?;
    if !value.is_object() {
        return Err(ConfigError::Key {
            file: path.display().to_string(),
            key: "(top level)".into(),
            message: "must be a JSON object".into(),
        });
    }
    // Type-check this layer alone so an error names the file it is in.
    deserialize(value.clone(), &path.display().to_string())?;
    Ok(Some(value))
}

fn deserialize(value: Value, file: &str) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize::<_, Config>(value).map_err(|e| ConfigError::Key {
        file: file.to_string(),
        key: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// Objects merge key by key; anything else (arrays included) replaces.
fn merge(base: &mut Value, layer: Value) {
    match (base, layer) {
        (Value::Object(b), Value::Object(l)) => {
            for (k, v) in l {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, l) => *b = l,
    }
}

/// Whether a layer sets the key at a dotted path like `schedule.sessions[0].name`.
fn layer_sets(layer: &Value, key: &str) -> bool {
    let mut cur = layer;
    for part in key.split('.') {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        cur = match cur.get(name) {
            Some(v) => v,
            None => return false,
        };
        if let Some(i) = index {
            cur = match cur.get(i) {
                Some(v) => v,
                None => return true,
            };
        }
    }
    true
}

/// Loads, merges and validates the layers; `data_dir` overrides the key.
pub fn load(paths: &ConfigPaths, data_dir: Option<&Path>) -> Result<Loaded, ConfigError> {
    let mut merged = serde_json::to_value(Config::default()).map_err(|e| ConfigError::Key {
        file: "(defaults)".into(),
        key: "(top level)".into(),
        message: e.to_string(),
    })?;
    let mut layers: Vec<(PathBuf, Value)> = Vec::new();
    for path in [&paths.system, &paths.device] {
        if let Some(v) = read_layer(path)? {
            layers.push((path.clone(), v));
        }
    }
    for (_, v) in &layers {
        merge(&mut merged, v.clone());
    }
    let mut config = deserialize(merged, "(merged config)")?;
    if let Some(d) = data_dir {
        config.data_dir = d.to_path_buf();
    }
    let schedule = config.validate().map_err(|(key, message)| {
        // Name the last layer that set the offending key.
        let file = layers
            .iter()
            .rev()
            .find(|(_, v)| layer_sets(v, &key))
            .map(|(p, _)| p.display().to_string())
            .unwrap_or_else(|| "(built-in defaults)".into());
        ConfigError::Key { file, key, message }
    })?;
    Ok(Loaded {
        config,
        schedule,
        sources: layers.into_iter().map(|(p, _)| p).collect(),
    })
}

impl Config {
    /// Checks what types cannot; returns (key, message) of the first problem.
    pub fn validate(&self) -> Result<Schedule, (String, String)> {
        let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
        let id_ok = !self.device_id.is_empty()
            && self.device_id.len() <= 64
            && self
                .device_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !id_ok {
            return bad(
                "device_id",
                "must be 1..=64 characters of letters, digits, '-', '_' or '.'",
            );
        }
        if !self.data_dir.is_absolute() {
            return bad("data_dir", "must be an absolute path");
        }
        // sockaddr_un holds 108 bytes including the NUL; a deeper data_dir
        // would only fail later, when the control socket is bound.
        if self.control_socket().as_os_str().len() > 107 {
            return bad(
                "data_dir",
                "is too long: <data_dir>/control.sock must fit in 107 bytes (a Unix socket path)",
            );
        }
        if self.scan.cooldown_seconds > 3600 {
            return bad("scan.cooldown_seconds", "must be at most 3600");
        }
        if !(1..=10_000).contains(&self.scan.queue_capacity) {
            return bad("scan.queue_capacity", "must be between 1 and 10000");
        }
        if self.sources.replay.enabled && self.sources.replay.file.is_none() {
            return bad(
                "sources.replay.file",
                "is required when sources.replay.enabled is true",
            );
        }
        if self.http.listen.parse::<SocketAddr>().is_err() {
            return bad(
                "http.listen",
                "must be an address:port such as 0.0.0.0:8080",
            );
        }
        if !(1..=1024).contains(&self.http.max_connections) {
            return bad("http.max_connections", "must be between 1 and 1024");
        }
        if !(100..=60_000).contains(&self.http.request_timeout_ms) {
            return bad("http.request_timeout_ms", "must be between 100 and 60000");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return bad(
                "log.level",
                "is not a valid filter (e.g. \"info\" or \"info,attendance=debug\")",
            );
        }
        if !(100..=120_000).contains(&self.store.busy_timeout_ms) {
            return bad("store.busy_timeout_ms", "must be between 100 and 120000");
        }
        if !(1000..=120_000).contains(&self.lifecycle.shutdown_timeout_ms) {
            return bad(
                "lifecycle.shutdown_timeout_ms",
                "must be between 1000 and 120000",
            );
        }
        if !(1000..=600_000).contains(&self.lifecycle.liveness_timeout_ms) {
            return bad(
                "lifecycle.liveness_timeout_ms",
                "must be between 1000 and 600000",
            );
        }
        self.sync.validate()?;
        self.ota.validate()?;
        // The inputs' errors start with their key path: "camera.width: ...".
        self.inputs().validate().map_err(|e| {
            let text = e.to_string();
            match text.split_once(": ") {
                Some((key, message)) if !key.contains(' ') => {
                    (key.to_string(), message.to_string())
                }
                _ => ("inputs".to_string(), text),
            }
        })?;
        Schedule::from_config(&self.schedule, "schedule").map_err(|e| (e.key, e.message))
    }

    /// The config sections owned by the inputs area, for its wiring.
    pub fn inputs(&self) -> crate::input::camera::wiring::InputsSettings<'_> {
        crate::input::camera::wiring::InputsSettings {
            camera: &self.camera,
            decoder: &self.decoder,
            hid_scanner: &self.hid_scanner,
            evidence: &self.evidence,
            leds: &self.leds,
        }
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("db").join("attendance.sqlite3")
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.data_dir.join("secrets")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.data_dir.join("daemon.lock")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }

    pub fn photos_dir(&self) -> PathBuf {
        self.data_dir.join("photos")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(dir: &Path) -> ConfigPaths {
        ConfigPaths {
            system: dir.join("system.json"),
            device: dir.join("device.json"),
        }
    }

    #[test]
    fn defaults_are_valid_and_missing_files_are_empty_layers() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(&paths(dir.path()), None).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert!(loaded.sources.is_empty());
    }

    #[test]
    fn layers_merge_device_over_system() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::write(
            &p.system,
            r#"{"device_id":"gate-a","scan":{"cooldown_seconds":60}}"#,
        )
        .unwrap();
        fs::write(&p.device, r#"{"scan":{"accept_unsigned":false}}"#).unwrap();
        let c = load(&p, Some(Path::new("/tmp/x"))).unwrap().config;
        assert_eq!(c.device_id, "gate-a");
        assert_eq!(c.scan.cooldown_seconds, 60);
        assert!(!c.scan.accept_unsigned);
        assert_eq!(c.scan.queue_capacity, 64);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn type_errors_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::write(&p.device, r#"{"scan":{"cooldown_seconds":"five"}}"#).unwrap();
        let e = load(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("device.json") && e.contains("scan.cooldown_seconds"),
            "{e}"
        );

        fs::write(&p.device, r#"{"scan":{"coldown_seconds":5}}"#).unwrap();
        let e = load(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("device.json") && e.contains("coldown_seconds"),
            "{e}"
        );
    }

    #[test]
    fn semantic_errors_name_the_layer_that_set_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::write(&p.system, r#"{"http":{"listen":"nonsense"}}"#).unwrap();
        fs::write(&p.device, r#"{"device_id":"ok"}"#).unwrap();
        let e = load(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("system.json") && e.contains("http.listen"),
            "{e}"
        );

        fs::write(&p.device, r#"{"schedule":{"timezone":"Nowhere/Land"}}"#).unwrap();
        fs::write(&p.system, "{}").unwrap();
        let e = load(&p, None).unwrap_err().to_string();
        assert!(
            e.contains("device.json") && e.contains("schedule.timezone"),
            "{e}"
        );
    }

    #[test]
    fn corrupt_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(dir.path());
        fs::write(&p.device, "{\"device_id\": ").unwrap();
        let e = load(&p, None).unwrap_err();
        assert!(matches!(e, ConfigError::Syntax { .. }));
        assert!(e.to_string().contains("device.json"));
        fs::write(&p.device, "[1]").unwrap();
        assert!(
            load(&p, None)
                .unwrap_err()
                .to_string()
                .contains("JSON object")
        );
        fs::write(&p.device, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            load(&p, None).unwrap_err(),
            ConfigError::Syntax { .. }
        ));
    }

    #[test]
    #[allow(clippy::field_reassign_with_default)]
    fn validation_rules() {
        let mut c = Config::default();
        c.device_id = "has space".into();
        assert_eq!(c.validate().unwrap_err().0, "device_id");
        let mut c = Config::default();
        c.data_dir = "relative".into();
        assert_eq!(c.validate().unwrap_err().0, "data_dir");
        let mut c = Config::default();
        c.data_dir = PathBuf::from(format!("/{}", "d".repeat(100)));
        assert_eq!(c.validate().unwrap_err().0, "data_dir");
        let mut c = Config::default();
        c.sources.replay.enabled = true;
        assert_eq!(c.validate().unwrap_err().0, "sources.replay.file");
        let mut c = Config::default();
        c.log.level = "info,[".into();
        assert_eq!(c.validate().unwrap_err().0, "log.level");
    }
}
