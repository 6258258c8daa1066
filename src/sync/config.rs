//! `sync.*` configuration keys.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncConfig {
    /// Off by default: a kiosk without a cloud records offline forever.
    pub enabled: bool,
    /// The Supabase project URL, e.g. `https://abcd.supabase.co`.
    pub base_url: String,
    /// A lab setup (a local PostgREST): only then is a plain `http://`
    /// `base_url` accepted.
    pub lab: bool,
    /// Path of PostgREST under `base_url` (Supabase: `/rest/v1`).
    pub rest_path: String,
    /// Path of Storage under `base_url` (Supabase: `/storage/v1`).
    pub storage_path: String,
    /// Names of the files in `<data_dir>/secrets/` holding the keys.
    pub api_key_secret: String,
    pub device_jwt_secret: String,
    /// Outbox rows per bulk upsert.
    pub batch_size: usize,
    /// Pause between checks of an empty outbox.
    pub poll_interval_ms: u64,
    pub rest: ServiceTimeouts,
    pub storage: ServiceTimeouts,
    pub breaker: BreakerConfig,
    pub backoff: BackoffConfig,
    pub roster: RosterConfig,
    pub photos: PhotoConfig,
    pub retention: RetentionConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Synced records whose school date is older than this many days are
    /// deleted locally (the cloud holds them; 0 = keep forever).
    pub keep_synced_days: u32,
    /// Time between pruning passes.
    pub interval_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            keep_synced_days: 400,
            interval_s: 3600,
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            enabled: false,
            base_url: String::new(),
            lab: false,
            rest_path: "/rest/v1".into(),
            storage_path: "/storage/v1".into(),
            api_key_secret: "supabase-api-key".into(),
            device_jwt_secret: "supabase-device-jwt".into(),
            batch_size: 200,
            poll_interval_ms: 2000,
            rest: ServiceTimeouts {
                connect_timeout_ms: 5000,
                read_timeout_ms: 15_000,
                request_timeout_ms: 30_000,
            },
            storage: ServiceTimeouts {
                connect_timeout_ms: 5000,
                read_timeout_ms: 30_000,
                request_timeout_ms: 60_000,
            },
            breaker: BreakerConfig::default(),
            backoff: BackoffConfig::default(),
            roster: RosterConfig::default(),
            photos: PhotoConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

/// Timeouts of one cloud service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceTimeouts {
    /// TCP + TLS connection establishment.
    pub connect_timeout_ms: u64,
    /// Longest silence while waiting for response bytes.
    pub read_timeout_ms: u64,
    /// The whole request, first byte to last.
    pub request_timeout_ms: u64,
}

impl Default for ServiceTimeouts {
    fn default() -> Self {
        SyncConfig::default().rest
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker of an endpoint.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before one probe (half-open).
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            open_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Delay after the first failure; doubles per failure, with jitter.
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial_ms: 1000,
            max_ms: 120_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RosterConfig {
    pub enabled: bool,
    /// Time between incremental pulls.
    pub interval_s: u64,
    /// Rows per page.
    pub page_size: usize,
    /// A pull bringing more rows than this is refused (bounded memory).
    pub max_rows: usize,
    /// Privacy: when no pull has succeeded for this many days, the guardian
    /// phone numbers cached on the kiosk are erased (0 = keep).
    pub phone_retention_days: u32,
}

impl Default for RosterConfig {
    fn default() -> Self {
        RosterConfig {
            enabled: true,
            interval_s: 900,
            page_size: 1000,
            max_rows: 100_000,
            phone_retention_days: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhotoConfig {
    pub enabled: bool,
    pub bucket: String,
    /// Larger photos are not uploaded (and reported).
    pub max_bytes: u64,
    /// Privacy: an uploaded photo's local copy is deleted this many days
    /// after its school date (0 = right after upload).
    pub retention_days: u32,
}

impl Default for PhotoConfig {
    fn default() -> Self {
        PhotoConfig {
            enabled: true,
            bucket: "attendance-photos".into(),
            max_bytes: 4 * 1024 * 1024,
            retention_days: 7,
        }
    }
}

fn check_timeouts(prefix: &str, t: &ServiceTimeouts) -> Result<(), (String, String)> {
    let key = |k: &str| format!("{prefix}.{k}");
    if !(100..=120_000).contains(&t.connect_timeout_ms) {
        return Err((
            key("connect_timeout_ms"),
            "must be between 100 and 120000".into(),
        ));
    }
    if !(100..=600_000).contains(&t.read_timeout_ms) {
        return Err((
            key("read_timeout_ms"),
            "must be between 100 and 600000".into(),
        ));
    }
    if !(100..=600_000).contains(&t.request_timeout_ms) {
        return Err((
            key("request_timeout_ms"),
            "must be between 100 and 600000".into(),
        ));
    }
    if t.request_timeout_ms < t.connect_timeout_ms {
        return Err((
            key("request_timeout_ms"),
            "must not be shorter than connect_timeout_ms".into(),
        ));
    }
    Ok(())
}

fn check_path(key: &str, p: &str) -> Result<(), (String, String)> {
    if !(p.is_empty() || (p.starts_with('/') && !p.ends_with('/'))) {
        return Err((
            key.into(),
            "must be empty or start with '/' and not end with '/'".into(),
        ));
    }
    Ok(())
}

fn check_secret_name(key: &str, n: &str) -> Result<(), (String, String)> {
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !n.starts_with('.');
    if !ok {
        return Err((
            key.into(),
            "must be a file name of letters, digits, '-', '_' or '.'".into(),
        ));
    }
    Ok(())
}

impl SyncConfig {
    /// Returns (key, message) of the first problem; keys start with `sync.`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("sync.{k}"), m.to_string()));
        if self.enabled || !self.base_url.is_empty() {
            match reqwest::Url::parse(&self.base_url) {
                Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
                Ok(u) if u.scheme() == "http" && u.host().is_some() => {
                    if !self.lab {
                        return bad(
                            "base_url",
                            "plain http:// is refused (keys and records would travel in clear); use https://, or set sync.lab = true for a lab server",
                        );
                    }
                }
                _ => {
                    return bad(
                        "base_url",
                        "must be an http(s) URL such as https://abcd.supabase.co (required when sync.enabled is true)",
                    );
                }
            }
        }
        check_path("sync.rest_path", &self.rest_path)?;
        check_path("sync.storage_path", &self.storage_path)?;
        check_secret_name("sync.api_key_secret", &self.api_key_secret)?;
        check_secret_name("sync.device_jwt_secret", &self.device_jwt_secret)?;
        if !(1..=1000).contains(&self.batch_size) {
            return bad("batch_size", "must be between 1 and 1000");
        }
        if !(10..=3_600_000).contains(&self.poll_interval_ms) {
            return bad("poll_interval_ms", "must be between 10 and 3600000");
        }
        check_timeouts("sync.rest", &self.rest)?;
        check_timeouts("sync.storage", &self.storage)?;
        if !(1..=1000).contains(&self.breaker.failure_threshold) {
            return bad("breaker.failure_threshold", "must be between 1 and 1000");
        }
        if !(10..=3_600_000).contains(&self.breaker.open_ms) {
            return bad("breaker.open_ms", "must be between 10 and 3600000");
        }
        if !(1..=600_000).contains(&self.backoff.initial_ms) {
            return bad("backoff.initial_ms", "must be between 1 and 600000");
        }
        if self.backoff.max_ms < self.backoff.initial_ms || self.backoff.max_ms > 3_600_000 {
            return bad(
                "backoff.max_ms",
                "must be at least backoff.initial_ms and at most 3600000",
            );
        }
        if !(1..=86_400 * 7).contains(&self.roster.interval_s) {
            return bad("roster.interval_s", "must be between 1 and 604800");
        }
        if !(1..=10_000).contains(&self.roster.page_size) {
            return bad("roster.page_size", "must be between 1 and 10000");
        }
        if !(1..=1_000_000).contains(&self.roster.max_rows) {
            return bad("roster.max_rows", "must be between 1 and 1000000");
        }
        if self.roster.phone_retention_days > 3650 {
            return bad("roster.phone_retention_days", "must be at most 3650");
        }
        let b = &self.photos.bucket;
        if b.is_empty()
            || b.len() > 63
            || !b.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            })
        {
            return bad(
                "photos.bucket",
                "must be 1..=63 characters of lowercase letters, digits, '-', '_' or '.'",
            );
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.photos.max_bytes) {
            return bad("photos.max_bytes", "must be between 1024 and 67108864");
        }
        if self.photos.retention_days > 3650 {
            return bad("photos.retention_days", "must be at most 3650");
        }
        if self.retention.keep_synced_days > 36_500 {
            return bad("retention.keep_synced_days", "must be at most 36500");
        }
        if !(1..=86_400 * 7).contains(&self.retention.interval_s) {
            return bad("retention.interval_s", "must be between 1 and 604800");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_keys_are_named() {
        SyncConfig::default().validate().unwrap();
        let c = SyncConfig {
            enabled: true,
            ..SyncConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "sync.base_url");
        let mut c = SyncConfig {
            enabled: true,
            base_url: "https://x.supabase.co".into(),
            ..SyncConfig::default()
        };
        c.validate().unwrap();
        c.batch_size = 0;
        assert_eq!(c.validate().unwrap_err().0, "sync.batch_size");
        c.batch_size = 10;
        c.rest.connect_timeout_ms = 50;
        assert_eq!(c.validate().unwrap_err().0, "sync.rest.connect_timeout_ms");
        c.rest.connect_timeout_ms = 1000;
        c.backoff.max_ms = 1;
        assert_eq!(c.validate().unwrap_err().0, "sync.backoff.max_ms");
        c.backoff.max_ms = 10_000;
        c.api_key_secret = "../etc/passwd".into();
        assert_eq!(c.validate().unwrap_err().0, "sync.api_key_secret");
    }

    #[test]
    fn plain_http_needs_the_lab_key() {
        let mut c = SyncConfig {
            enabled: true,
            base_url: "http://127.0.0.1:3000".into(),
            ..SyncConfig::default()
        };
        let (key, msg) = c.validate().unwrap_err();
        assert_eq!(key, "sync.base_url");
        assert!(msg.contains("sync.lab"), "{msg}");
        c.lab = true;
        c.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_json::from_str::<SyncConfig>(r#"{"batchsize": 5}"#).unwrap_err();
        assert!(e.to_string().contains("batchsize"), "{e}");
        let c: SyncConfig = serde_json::from_str(r#"{"rest": {"read_timeout_ms": 500}}"#).unwrap();
        assert_eq!(c.rest.read_timeout_ms, 500);
        assert_eq!(c.rest.connect_timeout_ms, 5000);
    }
}
