//! Wiring and lifecycle of the daemon.
//!
//! Start: data directory -> lock -> secrets -> store (migrated) -> tasks ->
//! READY=1. Tasks are watched: if any of them ends, the daemon shuts down and
//! exits non-zero so systemd restarts it.
//!
//! Shutdown (SIGTERM/SIGINT or a dead task), in this order, within
//! `lifecycle.shutdown_timeout_ms`: stop intake (sources, control socket,
//! HTTP); let the pipeline finish what is queued; close the store (final WAL
//! checkpoint). Anything still running at the deadline is abandoned; SQLite's
//! WAL makes that safe, only slower at the next start.

pub mod control;
pub mod health;
pub mod pipeline;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Loaded;
use crate::domain::payload::PayloadPolicy;
use crate::feedback::{FanoutFeedback, Feedback, LogFeedback};
use crate::input::ScanSource;
use crate::input::replay::ReplaySource;
use crate::secrets::Secrets;
use crate::store::{DataDirLock, Store, StoreError, StoreHandle, schema::SchemaError};
use health::{Beat, Health, Level};
use pipeline::Pipeline;
use tasks::{Ended, WatchedTasks};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything `run` needs besides the config.
pub struct RunOptions {
    pub loaded: Loaded,
    pub clock: Arc<dyn Clock>,
    /// Sources built by the caller (demo, tests) in addition to the configured ones.
    pub extra_sources: Vec<Box<dyn ScanSource>>,
    pub feedback: Option<Arc<dyn Feedback>>,
    /// Called once the daemon is ready, with the HTTP address it listens on.
    pub on_ready: Option<Box<dyn FnOnce(Option<std::net::SocketAddr>) + Send>>,
    /// Set when the device's config layer was unusable and the daemon runs on
    /// the image's config instead; reported as degraded health.
    pub config_problem: Option<String>,
}

fn notify(state: &[sd_notify::NotifyState<'_>]) {
    // Not under systemd (NOTIFY_SOCKET unset) this is a no-op.
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Opens the store; an unreadable or foreign database file is moved aside
/// (kept, never deleted) and a new one created, so the kiosk keeps recording.
fn open_store(loaded: &Loaded, health: &Health) -> anyhow::Result<Store> {
    let path = loaded.config.db_path();
    let open = || store_from_config(loaded);
    match open() {
        Ok(s) => Ok(s),
        Err(e) if is_unusable_file(&e) => {
            let aside = aside_name(&path);
            tracing::error!(error = %e, kept_at = %aside.display(), "database file is unusable; moving it aside and starting a new one");
            for suffix in ["", "-wal", "-shm"] {
                let from = PathBuf::from(format!("{}{suffix}", path.display()));
                if from.exists() {
                    let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                    std::fs::rename(&from, &to)
                        .with_context(|| format!("moving {} aside", from.display()))?;
                }
            }
            let store =
                open().context("creating a new database after moving the unusable one aside")?;
            health.set(
                "database",
                Level::Degraded,
                format!(
                    "the previous database was unusable ({e}); kept at {}",
                    aside.display()
                ),
            );
            Ok(store)
        }
        Err(e) => Err(e.into()),
    }
}

fn store_from_config(loaded: &Loaded) -> Result<Store, StoreError> {
    let cfg = &loaded.config;
    Store::open(
        &cfg.db_path(),
        &cfg.device_id,
        loaded.schedule.clone(),
        chrono::Duration::seconds(i64::from(cfg.scan.cooldown_seconds)),
        Duration::from_millis(cfg.store.busy_timeout_ms),
    )
}

/// Opens the store with no daemon running (CLI writes, demo seeding),
/// holding the data-directory lock so that none starts meanwhile.
pub fn open_store_exclusive(loaded: &Loaded) -> anyhow::Result<(DataDirLock, Store)> {
    let dir = &loaded.config.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("data directory {}: cannot create", dir.display()))?;
    let lock = DataDirLock::acquire(&loaded.config.lock_path())?;
    Ok((lock, store_from_config(loaded)?))
}

fn is_unusable_file(e: &StoreError) -> bool {
    match e {
        StoreError::Schema {
            err: SchemaError::ForeignDatabase { .. },
            ..
        } => true,
        StoreError::Schema {
            err: SchemaError::Sqlite(rusqlite::Error::SqliteFailure(f, _)),
            ..
        }
        | StoreError::Open {
            err: rusqlite::Error::SqliteFailure(f, _),
            ..
        } => {
            matches!(
                f.code,
                rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
            )
        }
        _ => false,
    }
}

/// A name for the unusable database that no earlier file has: nanosecond
/// time plus a counter, checked for the file and its `-wal`/`-shm`
/// companions, so moving aside never replaces what an earlier start kept.
fn aside_name(path: &Path) -> PathBuf {
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.9fZ");
    (0u32..)
        .map(|n| {
            let suffix = if n == 0 {
                String::new()
            } else {
                format!("-{n}")
            };
            PathBuf::from(format!("{}.unusable-{stamp}{suffix}", path.display()))
        })
        .find(|p| {
            ["", "-wal", "-shm"]
                .iter()
                .all(|s| !Path::new(&format!("{}{s}", p.display())).exists())
        })
        .unwrap_or_else(|| PathBuf::from(format!("{}.unusable-{stamp}-last", path.display())))
}

/// Free space on the file system holding `dir`, in MiB.
pub fn free_mb(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into a zeroed struct we own; the path is a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64) / (1024 * 1024))
}

/// Proves the database works (liveness), watches free space, updates STATUS=.
async fn monitor_store(
    store: StoreHandle,
    health: Arc<Health>,
    data_dir: PathBuf,
    min_free_mb: u64,
    tz: chrono_tz::Tz,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match tokio::time::timeout(Duration::from_secs(5), store.call(|s| s.ping())).await {
            Ok(Ok(Ok(()))) => health.beat(Beat::Store),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "database ping failed"),
            Ok(Err(_)) => anyhow::bail!("database thread has stopped"),
            Err(_) => tracing::warn!("database ping timed out"),
        }
        if n.is_multiple_of(10) {
            match free_mb(&data_dir) {
                Some(free) if free < min_free_mb => health.set(
                    "disk",
                    Level::Degraded,
                    format!("{free} MiB free on the data partition, below {min_free_mb} MiB"),
                ),
                Some(_) => health.clear("disk"),
                None => health.set(
                    "disk",
                    Level::Degraded,
                    "cannot read free space of the data partition",
                ),
            }
            let today = Utc::now().with_timezone(&tz).date_naive();
            if let Ok(Ok(stats)) = store.call(move |s| s.stats(today)).await {
                let report = health.report();
                notify(&[sd_notify::NotifyState::Status(&format!(
                    "{:?}: {} records today, {} students, {} waiting to sync",
                    report.status, stats.records_today, stats.students, stats.outbox_depth
                ))]);
            }
        }
        n += 1;
    }
}

/// Mirrors the camera's and the scanner's state into health: a camera that
/// is down degrades the kiosk (the USB scanner may still work) but never
/// makes it unhealthy; an absent input is reported, not a fault.
async fn watch_inputs(
    cam: Option<crate::input::camera::CameraHealth>,
    hid: Option<crate::input::hid::ScannerStatus>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    use crate::app::health::Presence;
    use crate::input::camera::CameraState;
    use crate::input::hid::ScannerState;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        if let Some(cam) = &cam {
            let state = cam.status().state;
            let (presence, detail) = match &state {
                CameraState::Starting => (Presence::Starting, "starting"),
                CameraState::Absent => (Presence::Absent, "no camera connected"),
                CameraState::Ok => (Presence::Present, "ok"),
                CameraState::Degraded { .. } | CameraState::Stopped => {
                    (Presence::Present, "degraded")
                }
            };
            health.set_input("camera", presence, detail);
            match state {
                CameraState::Ok | CameraState::Starting | CameraState::Absent => {
                    health.clear("camera")
                }
                CameraState::Degraded { reason } => health.set("camera", Level::Degraded, reason),
                CameraState::Stopped => health.set("camera", Level::Degraded, "camera stopped"),
            }
        }
        if let Some(hid) = &hid {
            match hid.get() {
                ScannerState::Searching => health.set_input("hid_scanner", Presence::Starting, ""),
                ScannerState::Connected { device } => {
                    health.set_input("hid_scanner", Presence::Present, device)
                }
                ScannerState::Absent { reason } => {
                    health.set_input("hid_scanner", Presence::Absent, reason)
                }
            }
        }
    }
}

/// Mirrors a local database problem of the sync engine into health: the
/// kiosk still records, so `degraded`, cleared once sync works again.
async fn watch_sync(
    metrics: Arc<crate::sync::SyncMetrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match metrics.local_error() {
            Some(e) => health.set(
                "sync",
                Level::Degraded,
                format!("sync is backing off after a local database error: {e}"),
            ),
            None => health.clear("sync"),
        }
    }
}

/// Feeds the systemd watchdog only while the device demonstrably works.
async fn feed_watchdog(health: Arc<Health>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        shutdown.cancelled().await;
        return Ok(());
    }
    let period = Duration::from_micros(usec / 2);
    tracing::info!(
        period_ms = period.as_millis() as u64,
        "feeding the systemd watchdog"
    );
    let mut starving = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(period) => {}
        }
        if health.alive() {
            notify(&[sd_notify::NotifyState::Watchdog]);
            starving = false;
        } else if !starving {
            tracing::error!(report = ?health.report(), "liveness lost; no longer feeding the watchdog");
            starving = true;
        }
    }
}

/// SIGTERM/SIGINT handlers, installed first thing so that a stop request
/// during start-up is not lost (or fatal, with the default disposition).
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Runs the daemon until a signal (Ok) or a task failure (Err).
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let mut stop_signals = StopSignals::install()?;
    let RunOptions {
        loaded,
        clock,
        extra_sources,
        feedback,
        on_ready,
        config_problem,
    } = opts;
    let cfg = loaded.config.clone();
    let data_dir = cfg.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("data directory {}: cannot create", data_dir.display()))?;
    let _lock = DataDirLock::acquire(&cfg.lock_path())?;
    // A stray or badly-permissioned file is refused alone (reported in
    // health below); only an unreadable secrets directory stops the start.
    let secrets = Secrets::load_lenient(&cfg.secrets_dir())?;
    tracing::info!(
        device_id = %cfg.device_id,
        data_dir = %data_dir.display(),
        config_files = ?loaded.sources,
        qr_keys = secrets.qr_keys.len(),
        qr_public_keys = secrets.qr_keys.public_len(),
        version = VERSION,
        "starting"
    );

    let health = Arc::new(Health::new(Duration::from_millis(
        cfg.lifecycle.liveness_timeout_ms,
    )));
    if let Some(problem) = config_problem {
        health.set("config", Level::Degraded, problem);
    }
    for refused in secrets.refused() {
        tracing::error!(error = %refused, "secret file refused; the daemon runs without it");
        let name = refused
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        health.set(
            &format!("secret {name}"),
            Level::Degraded,
            refused.to_string(),
        );
    }
    let store = open_store(&loaded, &health)?;
    let (store, store_closed) = StoreHandle::spawn(store, 256)?;
    health.beat(Beat::Store);
    // Committed scans, for the followers (photos, sync; later SMS, alerts).
    let events = Arc::new(crate::store::event::RecordEvents::default());
    if !clock.is_synchronized() {
        tracing::warn!("system clock is not synchronised; records will be flagged until it is");
    }

    let intake = CancellationToken::new();
    let core = CancellationToken::new();
    let (scan_tx, scan_rx) = mpsc::channel(cfg.scan.queue_capacity);
    let (reply_tx, reply_rx) = mpsc::channel(16);

    let mut sources: Vec<Box<dyn ScanSource>> = extra_sources;
    let replay = &cfg.sources.replay;
    if let (true, Some(file)) = (replay.enabled, &replay.file) {
        sources.push(Box::new(ReplaySource::from_file(
            file,
            Duration::from_millis(replay.interval_ms),
            replay.repeat,
        )?));
    }

    let mut intake_tasks = WatchedTasks::new();
    let mut core_tasks = WatchedTasks::new();

    // --- kiosk inputs: camera, HID scanner, LEDs, photos (owned by src/input, src/evidence) ---
    let inputs = {
        let tz = loaded.schedule.tz;
        let today_clock = clock.clone();
        let today: Arc<dyn Fn() -> chrono::NaiveDate + Send + Sync> =
            Arc::new(move || today_clock.now().with_timezone(&tz).date_naive());
        // The record holds the rules' time of the scan, which is the source's
        // time seen through the clock (identity except for the simulated one).
        let attach_clock = clock.clone();
        let attach: Box<dyn crate::evidence::PhotoLinker> = Box::new(
            crate::evidence::attach::RecordLinker::new(
                store.clone(),
                tokio::runtime::Handle::current(),
                &events,
                Box::new(move |t| attach_clock.map(t)),
                Duration::from_secs(5),
            )
            .with_health(health.clone()),
        );
        crate::input::camera::wiring::build(cfg.inputs(), &data_dir, Some(attach), Some(today))?
    };
    let crate::input::camera::wiring::KioskInputs {
        sources: input_sources,
        feedback: led_feedback,
        camera_health,
        hid_status,
        photo_worker,
    } = inputs;
    sources.extend(input_sources);
    let feedback: Arc<dyn Feedback> = {
        let base = feedback.unwrap_or_else(|| Arc::new(LogFeedback));
        match led_feedback {
            Some(leds) => Arc::new(FanoutFeedback(vec![base, leds])),
            None => base,
        }
    };
    if camera_health.is_some() || hid_status.is_some() {
        core_tasks.spawn(
            "inputs-health",
            watch_inputs(camera_health, hid_status, health.clone(), core.clone()),
        );
    }
    // --- end kiosk inputs ---

    let pipeline = Pipeline {
        store: store.clone(),
        keyring: secrets.qr_keys.clone(),
        policy: PayloadPolicy {
            accept_unsigned: cfg.scan.accept_unsigned,
            accept_hmac: cfg.scan.accept_hmac,
        },
        clock: clock.clone(),
        feedback,
        health: health.clone(),
        events: events.clone(),
    };
    core_tasks.spawn("pipeline", pipeline.run(scan_rx, reply_rx, core.clone()));
    core_tasks.spawn(
        "store-monitor",
        monitor_store(
            store.clone(),
            health.clone(),
            data_dir.clone(),
            cfg.store.min_free_mb,
            loaded.schedule.tz,
            core.clone(),
        ),
    );
    core_tasks.spawn("watchdog", feed_watchdog(health.clone(), core.clone()));

    // --- cloud sync (owned by src/sync/) ---
    // A missing key disables sync (logged) but never stops scans.
    let sync_metrics = Arc::new(crate::sync::SyncMetrics::default());
    if cfg.sync.enabled {
        match crate::sync::Credentials::from_secrets(&secrets, &cfg.sync)
            .map_err(crate::sync::SyncError::from)
            .and_then(|credentials| {
                crate::sync::SyncEngine::new(crate::sync::SyncSetup {
                    config: cfg.sync.clone(),
                    device_id: cfg.device_id.clone(),
                    photos_dir: cfg.photos_dir(),
                    store: store.clone(),
                    credentials,
                    metrics: sync_metrics.clone(),
                    events: Some(events.clone()),
                })
            }) {
            Ok(engine) => {
                // The engine survives its own errors; it ends with one only
                // when the database thread is gone, which stops the daemon.
                let stop = core.clone();
                core_tasks.spawn("sync", async move {
                    engine.run(stop).await.map_err(anyhow::Error::from)
                });
                core_tasks.spawn(
                    "sync-health",
                    watch_sync(sync_metrics.clone(), health.clone(), core.clone()),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "cloud sync not started; records stay queued locally");
                health.set(
                    "sync",
                    Level::Degraded,
                    "cloud sync not configured correctly",
                );
            }
        }
    }
    // --- end cloud sync ---

    for source in sources {
        let name = source.name().to_string();
        let fut = source.run(scan_tx.clone(), intake.clone());
        intake_tasks.spawn(format!("source {name}"), async move {
            fut.await.map_err(anyhow::Error::from)
        });
    }
    drop(scan_tx);

    let control = control::bind(&cfg.control_socket())?;
    intake_tasks.spawn(
        "control",
        control::serve(
            control,
            reply_tx,
            store.clone(),
            health.clone(),
            intake.clone(),
        ),
    );

    let mut http_addr = None;
    if cfg.http.enabled {
        let listener = crate::http::bind(&cfg.http.listen).await?;
        http_addr = listener.local_addr().ok();
        let state = Arc::new(crate::http::HttpState {
            health: health.clone(),
            device_id: cfg.device_id.clone(),
            version: VERSION,
            sync: cfg.sync.enabled.then(|| sync_metrics.clone()),
        });
        intake_tasks.spawn(
            "http",
            crate::http::serve(
                listener,
                state,
                cfg.http.max_connections,
                Duration::from_millis(cfg.http.request_timeout_ms),
                intake.clone(),
            ),
        );
    }

    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("recording"),
    ]);
    tracing::info!(http = %http_addr.map(|a| a.to_string()).unwrap_or_default(), "ready");
    if let Some(f) = on_ready {
        f(http_addr);
    }

    let outcome: anyhow::Result<()> = tokio::select! {
        s = stop_signals.recv() => { tracing::info!(signal = s, "shutting down"); Ok(()) }
        e = intake_tasks.first_ended() => Err(ended_error(e)),
        e = core_tasks.first_ended() => Err(ended_error(e)),
    };
    if let Err(e) = &outcome {
        tracing::error!(error = %format!("{e:#}"), "a task ended; shutting down so systemd restarts the daemon");
    }
    notify(&[sd_notify::NotifyState::Stopping]);

    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(cfg.lifecycle.shutdown_timeout_ms);
    let ordered = async {
        intake.cancel();
        intake_tasks.join_all().await;
        core.cancel();
        core_tasks.join_all().await;
        if let Some(worker) = photo_worker {
            // Queued photos finish (and attach) before the store closes.
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
        drop(store);
        store_closed.wait().await;
    };
    if tokio::time::timeout_at(deadline, ordered).await.is_err() {
        tracing::error!(
            "shutdown did not finish in time; exiting anyway (the WAL keeps committed data)"
        );
    } else {
        tracing::info!("stopped cleanly");
    }
    outcome
}

fn ended_error(e: Ended) -> anyhow::Error {
    match e {
        Ended::Finished(name) => anyhow::anyhow!("task {name} stopped unexpectedly"),
        Ended::Failed(name, err) => err.context(format!("task {name} failed")),
        Ended::Panicked(msg) => anyhow::anyhow!("a task panicked: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_aside_names_never_replace_an_earlier_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = dir.path().join("attendance.sqlite3");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let a = aside_name(&db);
            assert!(!a.exists());
            std::fs::write(&a, b"kept").expect("write");
            assert!(seen.insert(a));
        }
        assert_eq!(seen.len(), 3);
    }
}
