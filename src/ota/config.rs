//! `ota.*` configuration keys: settings, kept apart from the agent's
//! persisted state (`state.rs`), which is facts about one update.

use serde::{Deserialize, Serialize};

use crate::domain::schedule::ClockTime;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtaConfig {
    /// Off by default: a device without a server marks good as before and
    /// never polls.
    pub enabled: bool,
    /// The DDI server, e.g. `https://hawkbit.district.example` or a goosebit.
    pub server_url: String,
    /// hawkBit tenant (goosebit: `DEFAULT`).
    pub tenant: String,
    /// The controller id; empty means the device id.
    pub controller_id: String,
    /// Name of the file in `<data_dir>/secrets/` holding the target token.
    pub target_token_secret: String,
    /// Name of the file holding a gateway token (used when there is no
    /// target token).
    pub gateway_token_secret: String,
    /// Local install window (time of day in `schedule.timezone`); installs
    /// and reboots happen only inside it unless the server forces them.
    /// `start == end` means all day.
    pub window: InstallWindow,
    /// Install only when no scan was recorded for this many minutes.
    pub quiet_minutes: u32,
    /// Install only when the sync outbox is empty, or its oldest row is
    /// older than this (one dead cloud must not block security updates).
    pub max_outbox_age_minutes: u32,
    /// Download rate cap in KiB/s; 0 = no cap.
    pub rate_limit_kib_s: u64,
    /// Extra free space kept beyond the bundle and `store.min_free_mb`.
    pub disk_margin_mb: u64,
    /// After the reboot into a new slot, the daemon must be healthy within this.
    pub health_deadline_s: u64,
    /// Poll interval used until the server names one.
    pub default_poll_s: u64,
    /// Random spread added to every poll interval, as a percentage.
    pub poll_jitter_percent: u32,
    /// Timeouts of one DDI request (not of a whole download).
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InstallWindow {
    pub start: ClockTime,
    pub end: ClockTime,
}

impl Default for InstallWindow {
    fn default() -> Self {
        // After school and before the morning login window.
        InstallWindow {
            start: ClockTime::hm(19, 0),
            end: ClockTime::hm(5, 0),
        }
    }
}

impl Default for OtaConfig {
    fn default() -> Self {
        OtaConfig {
            enabled: false,
            server_url: String::new(),
            tenant: "DEFAULT".into(),
            controller_id: String::new(),
            target_token_secret: "ota-target-token".into(),
            gateway_token_secret: "ota-gateway-token".into(),
            window: InstallWindow::default(),
            quiet_minutes: 10,
            max_outbox_age_minutes: 24 * 60,
            rate_limit_kib_s: 0,
            disk_margin_mb: 32,
            health_deadline_s: 300,
            default_poll_s: 300,
            poll_jitter_percent: 10,
            connect_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
        }
    }
}

fn id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl OtaConfig {
    /// Checks what types cannot; returns (key, message) of the first problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("ota.{k}"), m.to_string()));
        if self.enabled {
            match reqwest::Url::parse(&self.server_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return bad(
                        "server_url",
                        "must be an http(s) URL when ota.enabled is true",
                    );
                }
            }
        }
        if !id_ok(&self.tenant) {
            return bad(
                "tenant",
                "must be 1..=64 characters of letters, digits, '-', '_' or '.'",
            );
        }
        if !self.controller_id.is_empty() && !id_ok(&self.controller_id) {
            return bad(
                "controller_id",
                "must be empty (the device id) or 1..=64 characters of letters, digits, '-', '_' or '.'",
            );
        }
        for (k, v) in [
            ("target_token_secret", &self.target_token_secret),
            ("gateway_token_secret", &self.gateway_token_secret),
        ] {
            if v.is_empty() || v.contains('/') || v.starts_with('.') {
                return bad(k, "must be a file name in the secrets directory");
            }
        }
        if self.quiet_minutes > 24 * 60 {
            return bad("quiet_minutes", "must be at most 1440");
        }
        if !(1..=30 * 24 * 60).contains(&self.max_outbox_age_minutes) {
            return bad("max_outbox_age_minutes", "must be between 1 and 43200");
        }
        if !(30..=3600).contains(&self.health_deadline_s) {
            return bad("health_deadline_s", "must be between 30 and 3600");
        }
        if !(10..=86_400).contains(&self.default_poll_s) {
            return bad("default_poll_s", "must be between 10 and 86400");
        }
        if self.poll_jitter_percent > 50 {
            return bad("poll_jitter_percent", "must be at most 50");
        }
        if !(100..=120_000).contains(&self.connect_timeout_ms) {
            return bad("connect_timeout_ms", "must be between 100 and 120000");
        }
        if !(1000..=600_000).contains(&self.request_timeout_ms) {
            return bad("request_timeout_ms", "must be between 1000 and 600000");
        }
        Ok(())
    }

    /// The controller id the server knows this device by.
    pub fn controller_id<'a>(&'a self, device_id: &'a str) -> &'a str {
        if self.controller_id.is_empty() {
            device_id
        } else {
            &self.controller_id
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_disabled() {
        let c = OtaConfig::default();
        assert!(!c.enabled);
        c.validate().unwrap();
        assert_eq!(c.controller_id("kiosk-07"), "kiosk-07");
    }

    #[test]
    fn errors_name_the_key() {
        let c = OtaConfig {
            enabled: true,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "ota.server_url");
        let c = OtaConfig {
            enabled: true,
            server_url: "ftp://x".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "ota.server_url");
        let c = OtaConfig {
            controller_id: "a b".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "ota.controller_id");
        let c = OtaConfig {
            target_token_secret: "../etc/shadow".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "ota.target_token_secret");
        let c = OtaConfig {
            health_deadline_s: 1,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "ota.health_deadline_s");
        let c = OtaConfig {
            controller_id: "gate-a".into(),
            ..Default::default()
        };
        assert_eq!(c.controller_id("kiosk-07"), "gate-a");
    }
}
