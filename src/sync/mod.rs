//! Cloud sync: drains the outbox into Supabase (PostgREST), pulls the
//! roster, uploads evidence photos to Supabase Storage.
//!
//! Shape (what the seeds' failures ask for):
//! - one task, one request at a time per service, one batch in memory: a
//!   dead or hanging cloud costs one socket and a sleeping task, never a
//!   pile of threads or connections (`client` keeps one idle connection);
//! - every request has connect, read and total timeouts from config, and
//!   shutdown cancels an in-flight request at once;
//! - each endpoint (attendance upsert, roster, storage) has its own circuit
//!   breaker and exponential backoff with jitter ([`breaker`]);
//! - the scan path never waits on the network: the engine only sends the
//!   database thread short, bounded jobs (read a batch, one transaction to
//!   acknowledge), queued behind scans like any other job;
//! - outbox items are validated when read into a batch ([`queue::validate`])
//!   and again by the server; an invalid item is quarantined with its
//!   reason, a batch the server refuses is bisected so only the bad rows
//!   are quarantined and the rest go through;
//! - a batch is a bulk upsert keyed by the record id, so a retry after a
//!   lost response updates rows in place instead of duplicating them, and
//!   the rows are marked synced in the same local transaction that removes
//!   them from the outbox.

pub mod breaker;
pub mod client;
pub mod config;
pub mod queue;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use breaker::{BreakerState, Endpoint};
pub use client::{CallError, ClientError, Cloud, Credentials};
pub use config::SyncConfig;

use crate::store::{StoreError, StoreHandle};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync setup: {0}")]
    Setup(#[from] ClientError),
    #[error("sync: local database: {0}")]
    Store(#[from] StoreError),
    #[error("sync: local database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// Counters and state for /health and the metrics endpoint. Cheap to read
/// from any thread.
#[derive(Debug, Default)]
pub struct SyncMetrics {
    /// Records acknowledged by the cloud.
    pub sent: AtomicU64,
    /// Failed requests (any endpoint).
    pub failed: AtomicU64,
    /// Outbox items moved to the quarantine.
    pub quarantined: AtomicU64,
    /// HTTP requests made (any endpoint).
    pub requests: AtomicU64,
    /// Outbox rows waiting, as of the engine's last look.
    pub queue_depth: AtomicI64,
    /// Items in the quarantine, as of the engine's last look.
    pub quarantine_depth: AtomicI64,
    pub roster_rows: AtomicU64,
    pub photos_uploaded: AtomicU64,
    online: AtomicBool,
    /// Unix milliseconds of the last successful request, 0 = never.
    last_success_ms: AtomicI64,
    breakers: Mutex<BTreeMap<&'static str, BreakerState>>,
    last_error: Mutex<Option<String>>,
}

/// A point-in-time copy of [`SyncMetrics`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SyncStatus {
    pub online: bool,
    pub last_success: Option<String>,
    pub sent: u64,
    pub failed: u64,
    pub quarantined: u64,
    pub requests: u64,
    pub queue_depth: i64,
    pub quarantine_depth: i64,
    pub roster_rows: u64,
    pub photos_uploaded: u64,
    pub breakers: BTreeMap<String, BreakerState>,
    pub last_error: Option<String>,
}

impl SyncMetrics {
    pub fn status(&self) -> SyncStatus {
        let ms = self.last_success_ms.load(Ordering::Relaxed);
        SyncStatus {
            online: self.online.load(Ordering::Relaxed),
            last_success: (ms > 0)
                .then(|| chrono::DateTime::<Utc>::from_timestamp_millis(ms))
                .flatten()
                .map(crate::store::timestamp),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            quarantined: self.quarantined.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
            quarantine_depth: self.quarantine_depth.load(Ordering::Relaxed),
            roster_rows: self.roster_rows.load(Ordering::Relaxed),
            photos_uploaded: self.photos_uploaded.load(Ordering::Relaxed),
            breakers: self
                .breakers
                .lock()
                .map(|b| b.iter().map(|(k, v)| (k.to_string(), *v)).collect())
                .unwrap_or_default(),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    fn success(&self, ep: &Endpoint) {
        self.online.store(true, Ordering::Relaxed);
        self.last_success_ms
            .store(Utc::now().timestamp_millis(), Ordering::Relaxed);
        self.breaker(ep);
    }

    fn failure(&self, ep: &Endpoint, error: &str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.online.store(false, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(format!("{}: {error}", ep.name));
        }
        self.breaker(ep);
    }

    fn breaker(&self, ep: &Endpoint) {
        if let Ok(mut b) = self.breakers.lock() {
            b.insert(ep.name, ep.state());
        }
    }
}

/// Everything the engine needs.
pub struct SyncSetup {
    pub config: SyncConfig,
    pub device_id: String,
    /// Relative photo paths in the database are under this directory.
    pub photos_dir: PathBuf,
    pub store: StoreHandle,
    pub credentials: Credentials,
    pub metrics: Arc<SyncMetrics>,
}

/// Starts the engine from the daemon's config and secrets and runs it until
/// `shutdown`. With `sync.enabled = false` it returns at once with `Ok`.
pub async fn run_sync(
    config: &crate::config::Config,
    secrets: &crate::config::Secrets,
    store: StoreHandle,
    metrics: Arc<SyncMetrics>,
    shutdown: CancellationToken,
) -> Result<(), SyncError> {
    if !config.sync.enabled {
        tracing::info!("cloud sync disabled (sync.enabled = false)");
        return Ok(());
    }
    let credentials = Credentials::from_secrets(secrets, &config.sync)?;
    let engine = SyncEngine::new(SyncSetup {
        config: config.sync.clone(),
        device_id: config.device_id.clone(),
        photos_dir: config.photos_dir(),
        store,
        credentials,
        metrics,
    })?;
    engine.run(shutdown).await
}

enum Step {
    /// Did something; go again without sleeping.
    Progress,
    /// Nothing to do or not allowed yet; sleep at most this long.
    Idle(Duration),
}

/// Outcome of sending one batch.
struct Sent {
    acked: Vec<usize>,
    rejected: Vec<(usize, String, u16)>,
    transient: Option<String>,
    /// Ranges not attempted because of the transient failure.
    untried: Vec<Range<usize>>,
}

pub struct SyncEngine {
    cfg: SyncConfig,
    device_id: String,
    photos_dir: PathBuf,
    store: StoreHandle,
    cloud: Cloud,
    metrics: Arc<SyncMetrics>,
    rest: Endpoint,
    roster: Endpoint,
    storage: Endpoint,
    next_roster: Instant,
    next_photos: Instant,
    /// The batch after the one in flight, read while it was being sent.
    prefetched: Option<queue::Batch>,
    /// Acknowledged items whose local transaction runs beside the next send.
    pending_ack: Option<PendingAck>,
}

type PendingAck = (Arc<Vec<queue::BatchItem>>, Vec<usize>);

/// Runs `fut` unless shutdown comes first.
async fn or_shutdown<T>(
    shutdown: &CancellationToken,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        _ = shutdown.cancelled() => None,
        r = fut => Some(r),
    }
}

impl SyncEngine {
    pub fn new(s: SyncSetup) -> Result<Self, SyncError> {
        let cloud = Cloud::new(&s.config, &s.credentials)?;
        let ep = |name| Endpoint::new(name, s.config.breaker.clone(), s.config.backoff.clone());
        let engine = SyncEngine {
            rest: ep("attendance"),
            roster: ep("roster"),
            storage: ep("storage"),
            cfg: s.config,
            device_id: s.device_id,
            photos_dir: s.photos_dir,
            store: s.store,
            cloud,
            metrics: s.metrics,
            next_roster: Instant::now(),
            next_photos: Instant::now(),
            prefetched: None,
            pending_ack: None,
        };
        for e in [&engine.rest, &engine.roster, &engine.storage] {
            engine.metrics.breaker(e);
        }
        Ok(engine)
    }

    /// The loop. Returns `Ok` on shutdown, `Err` only when the local
    /// database is gone (the daemon is stopping or broken).
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SyncError> {
        tracing::info!(
            device_id = %self.device_id,
            batch_size = self.cfg.batch_size,
            "cloud sync started"
        );
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let mut wait = poll;
            let mut progressed = false;
            match self.attendance_step(&shutdown).await? {
                Step::Progress => progressed = true,
                Step::Idle(d) => wait = wait.min(d),
            }
            if self.cfg.roster.enabled {
                match self.roster_step(&shutdown).await? {
                    Step::Progress => progressed = true,
                    Step::Idle(d) => wait = wait.min(d),
                }
            }
            if self.cfg.photos.enabled {
                match self.photo_step(&shutdown).await? {
                    Step::Progress => progressed = true,
                    Step::Idle(d) => wait = wait.min(d),
                }
            }
            if progressed {
                tokio::task::yield_now().await;
                continue;
            }
            if or_shutdown(
                &shutdown,
                tokio::time::sleep(wait.max(Duration::from_millis(5))),
            )
            .await
            .is_none()
            {
                break;
            }
        }
        self.flush_ack().await?;
        tracing::info!("cloud sync stopped");
        Ok(())
    }

    async fn refresh_depth(&self) -> Result<(), SyncError> {
        let (d, q) = self
            .store
            .call(|s| {
                let c = s.connection();
                Ok::<_, rusqlite::Error>((queue::outbox_depth(c)?, queue::quarantine_depth(c)?))
            })
            .await??;
        self.metrics.queue_depth.store(d, Ordering::Relaxed);
        self.metrics.quarantine_depth.store(q, Ordering::Relaxed);
        Ok(())
    }

    /// Commits acknowledged items locally: deletes their outbox rows and
    /// marks the records synced, in one transaction.
    async fn ack(
        store: &StoreHandle,
        metrics: &SyncMetrics,
        pending: Option<PendingAck>,
    ) -> Result<(), SyncError> {
        let Some((its, idx)) = pending else {
            return Ok(());
        };
        let n = idx.len();
        store
            .call(move |s| {
                let refs: Vec<_> = idx.iter().map(|&i| &its[i]).collect();
                queue::acknowledge(s.connection_mut(), &refs)
            })
            .await??;
        metrics.sent.fetch_add(n as u64, Ordering::Relaxed);
        tracing::debug!(records = n, "records synced");
        Ok(())
    }

    async fn flush_ack(&mut self) -> Result<(), SyncError> {
        Self::ack(&self.store, &self.metrics, self.pending_ack.take()).await
    }

    /// Sends one batch of the outbox, if the endpoint allows.
    ///
    /// Pipelined: while batch N is on the wire, the database thread commits
    /// the acknowledgement of batch N-1 and reads batch N+1. Nothing is
    /// marked synced before the cloud acknowledged it; a failure discards
    /// the read-ahead batch (its rows are still in the outbox).
    async fn attendance_step(&mut self, shutdown: &CancellationToken) -> Result<Step, SyncError> {
        if let Err(d) = self.rest.ready(Instant::now()) {
            self.prefetched = None;
            self.flush_ack().await?;
            self.refresh_depth().await?;
            return Ok(Step::Idle(d));
        }
        let (limit, device) = (self.cfg.batch_size, self.device_id.clone());
        let batch = match self.prefetched.take() {
            Some(b) if !b.items.is_empty() => b,
            _ => {
                self.flush_ack().await?;
                self.refresh_depth().await?;
                if self.metrics.queue_depth.load(Ordering::Relaxed) == 0 {
                    return Ok(Step::Idle(Duration::MAX));
                }
                let device = device.clone();
                let b = self
                    .store
                    .call(move |s| queue::load_batch(s.connection_mut(), limit, &device))
                    .await??;
                self.count_quarantined(&b);
                b
            }
        };
        if batch.items.is_empty() {
            return Ok(if batch.quarantined > 0 {
                Step::Progress
            } else {
                Step::Idle(Duration::MAX)
            });
        }
        let last_seq = batch
            .items
            .iter()
            .flat_map(|i| i.seqs.iter().copied())
            .max()
            .unwrap_or(0);
        let ack_prev = Self::ack(&self.store, &self.metrics, self.pending_ack.take());
        let read_ahead = self.store.call(move |s| {
            let b = queue::load_batch_after(s.connection_mut(), last_seq, limit, &device)?;
            Ok::<_, rusqlite::Error>((b, queue::outbox_depth(s.connection())?))
        });
        let (sent, acked_prev, next) = tokio::join!(
            self.send_bisecting(&batch.items, shutdown),
            ack_prev,
            read_ahead
        );
        acked_prev?;
        let (next, depth) = next??;
        self.count_quarantined(&next);
        self.metrics.queue_depth.store(depth, Ordering::Relaxed);
        let Some(sent) = sent else {
            return Ok(Step::Idle(Duration::ZERO)); // shutting down
        };
        let items = Arc::new(batch.items);
        if sent.transient.is_none() && sent.rejected.is_empty() {
            // The common case: everything acknowledged. Commit it beside
            // the next send.
            self.pending_ack = Some((items, sent.acked));
            self.prefetched = Some(next);
            self.rest.on_success();
            self.metrics.success(&self.rest);
            return Ok(Step::Progress);
        }
        if !sent.acked.is_empty() {
            Self::ack(
                &self.store,
                &self.metrics,
                Some((items.clone(), sent.acked.clone())),
            )
            .await?;
        }
        if !sent.rejected.is_empty() {
            for (i, reason, status) in &sent.rejected {
                tracing::warn!(
                    record_id = %items[*i].row.id,
                    status,
                    reason = %reason,
                    "cloud refused a record as invalid: quarantined"
                );
            }
            let (its, rej) = (items.clone(), sent.rejected.clone());
            let n = self
                .store
                .call(move |s| {
                    let refs: Vec<_> = rej
                        .iter()
                        .map(|(i, r, st)| (&its[*i], r.clone(), *st))
                        .collect();
                    queue::quarantine(s.connection_mut(), &refs)
                })
                .await??;
            self.metrics
                .quarantined
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        match sent.transient {
            None => {
                self.rest.on_success();
                self.metrics.success(&self.rest);
                Ok(Step::Progress)
            }
            Some(err) => {
                let d = self.rest.on_failure(Instant::now());
                self.metrics.failure(&self.rest, &err);
                tracing::warn!(
                    error = %err,
                    retry_in_ms = d.as_millis() as u64,
                    breaker = self.rest.state().as_str(),
                    "attendance sync failed"
                );
                let seqs: Vec<i64> = sent
                    .untried
                    .iter()
                    .flat_map(|r| items[r.clone()].iter().flat_map(|i| i.seqs.clone()))
                    .collect();
                self.store
                    .call(move |s| queue::note_failure(s.connection_mut(), &seqs, &err))
                    .await??;
                Ok(if sent.acked.is_empty() && sent.rejected.is_empty() {
                    Step::Idle(d)
                } else {
                    Step::Progress
                })
            }
        }
    }

    fn count_quarantined(&self, b: &queue::Batch) {
        if b.quarantined > 0 {
            self.metrics
                .quarantined
                .fetch_add(b.quarantined as u64, Ordering::Relaxed);
        }
    }

    /// Sends `items`; a refused request is split in halves until the
    /// refused rows are isolated. Stops at the first transient failure.
    /// `None` on shutdown.
    async fn send_bisecting(
        &self,
        items: &[queue::BatchItem],
        shutdown: &CancellationToken,
    ) -> Option<Sent> {
        let mut out = Sent {
            acked: Vec::new(),
            rejected: Vec::new(),
            transient: None,
            untried: Vec::new(),
        };
        let mut stack: Vec<Range<usize>> = Vec::with_capacity(16);
        stack.push(0..items.len());
        while let Some(r) = stack.pop() {
            let rows: Vec<_> = items[r.clone()].iter().map(|i| &i.row).collect();
            self.metrics.requests.fetch_add(1, Ordering::Relaxed);
            match or_shutdown(shutdown, self.cloud.upsert_attendance(&rows)).await? {
                Ok(()) => out.acked.extend(r),
                Err(CallError::Rejected { status, message }) if r.len() == 1 => {
                    out.rejected.push((r.start, message, status))
                }
                Err(CallError::Rejected { .. }) => {
                    let mid = r.start + r.len() / 2;
                    stack.push(mid..r.end);
                    stack.push(r.start..mid);
                }
                Err(CallError::Transient(m)) => {
                    out.transient = Some(m);
                    out.untried.push(r);
                    out.untried.append(&mut stack);
                    break;
                }
            }
        }
        Some(out)
    }

    /// Pulls the students changed since the last pull, when due.
    async fn roster_step(&mut self, shutdown: &CancellationToken) -> Result<Step, SyncError> {
        let now = Instant::now();
        if now < self.next_roster {
            return Ok(Step::Idle(self.next_roster - now));
        }
        let days = self.cfg.roster.phone_retention_days;
        let erased = self
            .store
            .call(move |s| queue::expire_phones(s.connection_mut(), days, Utc::now()))
            .await??;
        if erased > 0 {
            tracing::warn!(
                students = erased,
                days,
                "roster not refreshed for too long: cached guardian phone numbers erased"
            );
        }
        if let Err(d) = self.roster.ready(now) {
            return Ok(Step::Idle(d));
        }
        let start = self
            .store
            .call(|s| queue::roster_cursor(s.connection()))
            .await??;
        let mut cursor = start.clone();
        let mut rows: Vec<queue::CloudStudent> = Vec::new();
        let page_size = self.cfg.roster.page_size;
        let failure = loop {
            self.metrics.requests.fetch_add(1, Ordering::Relaxed);
            let page =
                match or_shutdown(shutdown, self.cloud.roster_page(cursor.as_ref(), page_size))
                    .await
                {
                    None => return Ok(Step::Idle(Duration::ZERO)),
                    Some(Ok(p)) => p,
                    Some(Err(e)) => break Some(e.to_string()),
                };
            let n = page.len();
            if let Some(last) = page.last() {
                cursor = Some(queue::RosterCursor {
                    updated_at: last.updated_at.clone(),
                    student_number: last.student_number.clone(),
                });
            }
            rows.extend(page);
            if rows.len() > self.cfg.roster.max_rows {
                break Some(format!(
                    "roster has more than sync.roster.max_rows ({}) changed rows",
                    self.cfg.roster.max_rows
                ));
            }
            if n < page_size {
                break None;
            }
        };
        if let Some(err) = failure {
            let d = self.roster.on_failure(Instant::now());
            self.metrics.failure(&self.roster, &err);
            tracing::warn!(error = %err, retry_in_ms = d.as_millis() as u64, "roster pull failed");
            return Ok(Step::Idle(d));
        }
        let n = rows.len();
        let applied = self
            .store
            .call(move |s| queue::apply_roster(s.connection_mut(), &rows, cursor.as_ref()))
            .await??;
        self.roster.on_success();
        self.metrics.success(&self.roster);
        self.metrics
            .roster_rows
            .fetch_add(applied.upserted as u64, Ordering::Relaxed);
        if n > 0 {
            tracing::info!(
                students = applied.upserted,
                skipped = applied.skipped,
                "roster updated from the cloud"
            );
        }
        self.next_roster = Instant::now() + Duration::from_secs(self.cfg.roster.interval_s);
        Ok(Step::Progress)
    }

    fn resolve_photo(&self, p: &str) -> PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.photos_dir.join(path)
        }
    }

    /// Uploads a few pending photos and applies the local retention.
    async fn photo_step(&mut self, shutdown: &CancellationToken) -> Result<Step, SyncError> {
        const PER_TURN: usize = 4;
        let now = Instant::now();
        if now < self.next_photos {
            return Ok(Step::Idle(self.next_photos - now));
        }
        if let Err(d) = self.storage.ready(Instant::now()) {
            return Ok(Step::Idle(d));
        }
        let pending = self
            .store
            .call(|s| queue::pending_photos(s.connection(), PER_TURN))
            .await??;
        let mut progressed = false;
        for p in pending {
            let path = self.resolve_photo(&p.local_path);
            let id = p.record_id;
            let data = match tokio::fs::metadata(&path).await {
                Ok(m) if m.len() > self.cfg.photos.max_bytes => {
                    Err(format!("{} bytes, above sync.photos.max_bytes", m.len()))
                }
                Ok(_) => tokio::fs::read(&path)
                    .await
                    .map_err(|e| format!("cannot read {}: {e}", path.display())),
                Err(e) => Err(format!("cannot read {}: {e}", path.display())),
            };
            let data = match data {
                Ok(d) => d,
                Err(why) => {
                    self.store
                        .call(move |s| queue::photo_unavailable(s.connection_mut(), id, &why))
                        .await??;
                    progressed = true;
                    continue;
                }
            };
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .unwrap_or_default();
            let (ext, ctype) = match ext.as_str() {
                "png" => ("png", "image/png"),
                _ => ("jpg", "image/jpeg"),
            };
            let remote = format!("{}/{}/{}.{ext}", self.device_id, p.school_date, id);
            self.metrics.requests.fetch_add(1, Ordering::Relaxed);
            let r = or_shutdown(
                shutdown,
                self.cloud
                    .upload_object(&self.cfg.photos.bucket, &remote, ctype, data),
            )
            .await;
            match r {
                None => return Ok(Step::Idle(Duration::ZERO)),
                Some(Ok(())) => {
                    self.storage.on_success();
                    self.metrics.success(&self.storage);
                    self.metrics.photos_uploaded.fetch_add(1, Ordering::Relaxed);
                    self.store
                        .call(move |s| queue::photo_uploaded(s.connection_mut(), id, &remote))
                        .await??;
                    progressed = true;
                }
                Some(Err(CallError::Rejected { status, message })) => {
                    let why = format!("Storage refused it: HTTP {status}: {message}");
                    self.store
                        .call(move |s| queue::photo_unavailable(s.connection_mut(), id, &why))
                        .await??;
                    progressed = true;
                }
                Some(Err(CallError::Transient(e))) => {
                    let d = self.storage.on_failure(Instant::now());
                    self.metrics.failure(&self.storage, &e);
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "photo upload failed");
                    return Ok(Step::Idle(d));
                }
            }
        }
        // Retention: local copies of uploaded photos past their time.
        let days = self.cfg.photos.retention_days;
        let today = Utc::now().date_naive();
        let old = self
            .store
            .call(move |s| queue::photos_to_delete(s.connection(), days, today, 64))
            .await??;
        for (id, p) in old {
            let path = self.resolve_photo(&p);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete an uploaded photo");
                    continue;
                }
            }
            self.store
                .call(move |s| queue::photo_local_deleted(s.connection(), id))
                .await??;
        }
        if progressed {
            return Ok(Step::Progress);
        }
        self.next_photos = Instant::now() + Duration::from_millis(self.cfg.poll_interval_ms);
        Ok(Step::Idle(Duration::MAX))
    }
}
