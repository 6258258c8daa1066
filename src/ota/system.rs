//! The real adapters around the agent: the kiosk (the daemon's control
//! socket, its store read-only, systemd over D-Bus for the ordered reboot),
//! the bundle fetcher, and the wiring of `attendance ota run`.
//!
//! The reboot goes through systemd's D-Bus API (zbus, already used for
//! RAUC) rather than running `systemctl`: the daemon's stop job is awaited
//! and its result checked (`JobRemoved` result `done`) before the reboot is
//! queued, with no child process and no output to parse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::agent::{Agent, Fetcher, Kiosk, Settings};
use super::ddi::{Auth, HttpDdi};
use super::download::{self, DownloadError, Target};
use super::machine::BootFacts;
use super::policy::KioskFacts;
use super::rauc::{DbusInstaller, Installer};
use crate::app::control::{self, ControlRequest};
use crate::config::Config;
use crate::domain::schedule::Schedule;
use crate::secrets::Secrets;
use crate::store::ReadOnlyStore;

pub const DAEMON_UNIT: &str = "attendance.service";

#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    #[error("ota is not enabled (ota.enabled is false)")]
    Disabled,
    #[error("secret {0}: {1}")]
    Secret(String, String),
    #[error(transparent)]
    Ddi(#[from] super::ddi::DdiError),
    #[error(transparent)]
    Rauc(#[from] super::rauc::RaucError),
    #[error("boot id: {0}")]
    BootId(std::io::Error),
}

/// The kiosk as the agent sees it.
pub struct SystemKiosk {
    pub control_socket: PathBuf,
    pub db_path: PathBuf,
}

impl Kiosk for SystemKiosk {
    async fn facts(&self) -> Option<KioskFacts> {
        let db = self.db_path.clone();
        tokio::task::spawn_blocking(move || {
            let f = ReadOnlyStore::open(&db).and_then(|s| s.quiet_facts());
            match f {
                Ok(f) => Some(KioskFacts {
                    last_scan: f.last_scan,
                    outbox_depth: f.outbox_depth,
                    outbox_oldest: f.outbox_oldest,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "store unreadable; policy goes without it");
                    None
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    async fn healthy(&self) -> bool {
        let path = self.control_socket.clone();
        tokio::task::spawn_blocking(move || daemon_healthy(&path))
            .await
            .unwrap_or(false)
    }

    async fn reboot(&self) -> Result<(), String> {
        ordered_reboot().await
    }
}

/// Healthy: the daemon answers `Status` on its control socket with a
/// status other than `unhealthy` (a degraded kiosk still records scans).
pub fn daemon_healthy(socket: &Path) -> bool {
    match control::request(socket, &ControlRequest::Status) {
        Ok(Some(v)) => matches!(
            v.get("status").and_then(|s| s.as_str()),
            Some("ok") | Some("degraded")
        ),
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(error = %e, "control socket");
            false
        }
    }
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait SystemdManager {
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<zbus::zvariant::OwnedObjectPath>;
    fn subscribe(&self) -> zbus::Result<()>;
    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: zbus::zvariant::ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// Stops the daemon (its ordered shutdown commits and checkpoints the
/// database), then queues the reboot.
pub async fn ordered_reboot() -> Result<(), String> {
    let e = |e: zbus::Error| {
        let mut t = e.to_string();
        t.truncate(200);
        t
    };
    let conn = zbus::Connection::system().await.map_err(e)?;
    let m = SystemdManagerProxy::new(&conn).await.map_err(e)?;
    m.subscribe().await.map_err(e)?;
    let mut removed = m.receive_job_removed().await.map_err(e)?;
    let job = m.stop_unit(DAEMON_UNIT, "replace").await.map_err(e)?;
    let wait = async {
        while let Some(sig) = removed.next().await {
            if let Ok(a) = sig.args()
                && a.job.as_str() == job.as_str()
            {
                return Some(a.result.to_string());
            }
        }
        None
    };
    // The unit's TimeoutStopSec is 15 s.
    match tokio::time::timeout(Duration::from_secs(30), wait).await {
        Ok(Some(r)) if r == "done" => {}
        Ok(Some(r)) => {
            tracing::warn!(result = %r, "daemon stop job did not finish cleanly; rebooting anyway")
        }
        _ => tracing::warn!("daemon stop job not confirmed within 30 s; rebooting anyway"),
    }
    m.start_unit("reboot.target", "replace-irreversibly")
        .await
        .map_err(e)?;
    Ok(())
}

/// The bundle fetcher: one connection at a time, token only to the server.
pub struct HttpFetcher {
    client: reqwest::Client,
    server_origin: Option<(String, Option<String>, Option<u16>)>,
    auth: Option<String>,
}

fn origin(u: &str) -> Option<(String, Option<String>, Option<u16>)> {
    let u = reqwest::Url::parse(u).ok()?;
    Some((
        u.scheme().to_string(),
        u.host_str().map(str::to_string),
        u.port_or_known_default(),
    ))
}

impl HttpFetcher {
    pub fn new(
        server_url: &str,
        auth: &Auth,
        connect_timeout: Duration,
    ) -> Result<Self, SystemError> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            // No total timeout (a bundle takes minutes); a stalled stream ends.
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1)
            .user_agent(concat!("attendance-ota/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| super::ddi::transport("download client", &e))?;
        Ok(HttpFetcher {
            client,
            server_origin: origin(server_url),
            auth: auth.header(),
        })
    }
}

impl Fetcher for HttpFetcher {
    async fn fetch(
        &self,
        url: &str,
        target: &Target,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), DownloadError> {
        let auth = if origin(url).is_some() && origin(url) == self.server_origin {
            self.auth.as_deref()
        } else {
            None
        };
        download::fetch(&self.client, url, auth, target, progress).await
    }
}

/// The token from the secrets directory: target token first, else gateway.
pub fn auth_from_secrets(config: &Config) -> Result<Auth, SystemError> {
    let secrets = Secrets::load(&config.secrets_dir())
        .map_err(|e| SystemError::Secret("secrets".into(), e.to_string()))?;
    if let Some(t) = secrets
        .get(&config.ota.target_token_secret)
        .filter(|t| !t.is_empty())
    {
        return Ok(Auth::Target(t.to_string()));
    }
    if let Some(t) = secrets
        .get(&config.ota.gateway_token_secret)
        .filter(|t| !t.is_empty())
    {
        return Ok(Auth::Gateway(t.to_string()));
    }
    Ok(Auth::None)
}

pub fn boot_id() -> Result<String, SystemError> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .map_err(SystemError::BootId)
}

/// `KEY=value` lines of the image's release file (version, compatible).
pub fn release_attributes(path: &Path) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                match k.trim() {
                    "VERSION" => {
                        a.insert("sw_version".into(), v.trim().to_string());
                    }
                    "COMPATIBLE" => {
                        a.insert("hw_boardname".into(), v.trim().to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    if let Ok(serial) = std::fs::read_to_string("/sys/class/dmi/id/product_serial")
        .or_else(|_| std::fs::read_to_string("/proc/device-tree/serial-number"))
    {
        let s: String = serial
            .trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        if !s.is_empty() {
            a.insert("serial".into(), s);
        }
    }
    a
}

/// `attendance ota run`: the agent until SIGTERM.
pub async fn run(config: Config, schedule: Schedule) -> anyhow::Result<()> {
    if !config.ota.enabled {
        return Err(SystemError::Disabled.into());
    }
    let auth = auth_from_secrets(&config)?;
    let controller = config.ota.controller_id(&config.device_id).to_string();
    let ddi = HttpDdi::new(
        &config.ota.server_url,
        &config.ota.tenant,
        &controller,
        auth.clone(),
        Duration::from_millis(config.ota.connect_timeout_ms),
        Duration::from_millis(config.ota.request_timeout_ms),
    )?;
    let fetcher = HttpFetcher::new(
        &config.ota.server_url,
        &auth,
        Duration::from_millis(config.ota.connect_timeout_ms),
    )?;
    let rauc = DbusInstaller::connect(ota_dir(&config).join("proven")).await?;
    let boot = BootFacts {
        boot_id: boot_id()?,
        slot: rauc.boot_slot().await?,
    };
    let kiosk = SystemKiosk {
        control_socket: config.control_socket(),
        db_path: config.db_path(),
    };
    let settings = Settings {
        ota: config.ota.clone(),
        schedule,
        device_id: config.device_id.clone(),
        dir: ota_dir(&config),
        floor_mb: config.store.min_free_mb,
        attributes: release_attributes(Path::new("/etc/kiosk-release")),
    };
    tracing::info!(server = %config.ota.server_url, controller = %controller, auth = ?auth, "ota agent");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::task::spawn_local(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        stop.cancel();
    });
    let mut agent = Agent::new(ddi, rauc, kiosk, fetcher, settings, boot);
    agent.run(shutdown).await;
    Ok(())
}

/// Where the agent keeps its state and the bundle: beside the daemon's data
/// directory (`/data/ota` on the device), outside the daemon's sandbox.
pub fn ota_dir(config: &Config) -> PathBuf {
    match config.data_dir.parent() {
        Some(p) if p != Path::new("/") && p != Path::new("") => p.join("ota"),
        _ => config.data_dir.join("ota"),
    }
}
