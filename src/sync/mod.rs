//! Cloud sync: drains the outbox into Supabase (PostgREST), pulls the
//! roster, uploads evidence photos to Supabase Storage, prunes old synced
//! records.
//!
//! Shape (what the seeds' failures ask for):
//! - one task, one request at a time per service, one batch in memory: a
//!   dead or hanging cloud costs one socket and a sleeping task, never a
//!   pile of threads or connections (`client` keeps one idle connection);
//! - the cloud is behind [`CloudApi`]: the real client and an in-memory
//!   twin ([`twin::TwinCloud`]) answer alike, so the engine's logic has
//!   unit tests (`tests.rs`);
//! - every request has connect, read and total timeouts from config, and
//!   shutdown cancels an in-flight request at once;
//! - each endpoint (attendance upsert, roster, storage) has its own circuit
//!   breaker and exponential backoff with jitter ([`breaker`]);
//! - the scan path never waits on the network: the engine only sends the
//!   database thread short, bounded jobs (read a batch, one transaction to
//!   acknowledge, one roster chunk, one prune chunk), queued behind scans;
//! - trust ([`postgrest`]): rows are quarantined only when PostgREST's own
//!   JSON error names a row-level cause, isolated by bisection; rows are
//!   marked synced only when the answer lists their ids; anything else is
//!   an infrastructure error (back off, keep the rows);
//! - the engine survives its own errors: a local database error is logged,
//!   counted, shown in `/health` (through [`SyncMetrics`]) and backed off;
//!   only the database thread being gone ends it;
//! - it wakes on the pipeline's `Recorded` event and otherwise polls; a
//!   lagged subscription is just a wake-up, the outbox is the durable copy;
//! - logs carry codes and lengths, never a body, a name or a phone number.

pub mod breaker;
pub mod client;
pub mod cloud;
pub mod config;
pub mod postgrest;
pub mod queue;
pub mod twin;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use breaker::{BreakerState, Endpoint};
pub use client::{ClientError, Cloud, Credentials};
pub use cloud::{CloudApi, Reply, Transport};
pub use config::SyncConfig;

use crate::store::event::{RecordEvents, Recorded};
use crate::store::outbox::QuarantineItem;
use crate::store::roster::{EXPIRE_CHUNK, ROSTER_CHUNK, RosterCursor};
use crate::store::{AttendanceRecord, StoreError, StoreHandle};
use postgrest::{RosterVerdict, UploadVerdict, UpsertVerdict};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync setup: {0}")]
    Setup(#[from] ClientError),
    #[error("sync: local database: {0}")]
    Store(#[from] StoreError),
}

impl SyncError {
    /// The database thread is gone: the daemon is stopping or broken, and
    /// only then does the engine end with an error.
    pub fn is_store_gone(&self) -> bool {
        matches!(self, SyncError::Store(StoreError::TaskGone))
    }
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
    /// Rows sent whose storage the answer did not prove (kept queued).
    pub unconfirmed: AtomicU64,
    /// Outbox rows waiting, as of the engine's last look.
    pub queue_depth: AtomicI64,
    /// Items in the quarantine, as of the engine's last look.
    pub quarantine_depth: AtomicI64,
    pub roster_rows: AtomicU64,
    pub photos_uploaded: AtomicU64,
    /// Old synced records deleted locally.
    pub pruned: AtomicU64,
    /// Local database errors the engine survived.
    pub local_errors: AtomicU64,
    online: AtomicBool,
    /// Unix milliseconds of the last successful request, 0 = never.
    last_success_ms: AtomicI64,
    breakers: Mutex<BTreeMap<&'static str, BreakerState>>,
    last_error: Mutex<Option<String>>,
    /// The current local database problem (cleared by the next good turn).
    local_error: Mutex<Option<String>>,
    /// Why the last roster pull was refused (cleared by a good pull).
    roster_error: Mutex<Option<String>>,
    /// Roster rows skipped, by reason.
    roster_skipped: Mutex<BTreeMap<&'static str, u64>>,
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
    pub unconfirmed: u64,
    pub queue_depth: i64,
    pub quarantine_depth: i64,
    pub roster_rows: u64,
    pub photos_uploaded: u64,
    pub pruned: u64,
    pub local_errors: u64,
    pub breakers: BTreeMap<String, BreakerState>,
    pub last_error: Option<String>,
    pub local_error: Option<String>,
    pub roster_error: Option<String>,
    pub roster_skipped: BTreeMap<String, u64>,
}

fn locked<T: Clone>(m: &Mutex<T>) -> T {
    m.lock()
        .map(|g| g.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

fn set<T>(m: &Mutex<T>, v: T) {
    match m.lock() {
        Ok(mut g) => *g = v,
        Err(p) => *p.into_inner() = v,
    }
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
            unconfirmed: self.unconfirmed.load(Ordering::Relaxed),
            queue_depth: self.queue_depth.load(Ordering::Relaxed),
            quarantine_depth: self.quarantine_depth.load(Ordering::Relaxed),
            roster_rows: self.roster_rows.load(Ordering::Relaxed),
            photos_uploaded: self.photos_uploaded.load(Ordering::Relaxed),
            pruned: self.pruned.load(Ordering::Relaxed),
            local_errors: self.local_errors.load(Ordering::Relaxed),
            breakers: locked(&self.breakers)
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            last_error: locked(&self.last_error),
            local_error: locked(&self.local_error),
            roster_error: locked(&self.roster_error),
            roster_skipped: locked(&self.roster_skipped)
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// The local database problem the engine is backing off from, if any.
    pub fn local_error(&self) -> Option<String> {
        locked(&self.local_error)
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
        set(&self.last_error, Some(format!("{}: {error}", ep.name)));
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
    /// The pipeline's `Recorded` events: a wake-up when a scan commits.
    pub events: Option<Arc<RecordEvents>>,
}

enum Step {
    /// Did something; go again without sleeping.
    Progress,
    /// Nothing to do or not allowed yet; sleep at most this long.
    Idle(Duration),
}

/// Outcome of sending one batch.
#[derive(Debug, Default)]
struct Sent {
    acked: Vec<usize>,
    /// (index, HTTP status, SQLSTATE)
    rejected: Vec<(usize, u16, String)>,
    failure: Option<String>,
    /// Ranges not acknowledged because of the failure.
    untried: Vec<Range<usize>>,
}

pub struct SyncEngine<C: CloudApi = Cloud> {
    cfg: SyncConfig,
    device_id: String,
    photos_dir: PathBuf,
    store: StoreHandle,
    cloud: C,
    metrics: Arc<SyncMetrics>,
    events: Option<broadcast::Receiver<Recorded>>,
    rest: Endpoint,
    roster: Endpoint,
    storage: Endpoint,
    next_roster: Instant,
    /// A roster pull is under way (pages left): no interval wait between pages.
    roster_pulling: bool,
    next_photos: Instant,
    next_prune: Instant,
    /// The batch after the one in flight, read while it was being sent.
    prefetched: Option<queue::Batch>,
    /// Acknowledged items whose local transaction runs beside the next send.
    pending_ack: Option<PendingAck>,
}

type PendingAck = Vec<(Uuid, Vec<i64>)>;

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

/// Resolves on the next `Recorded` event (or a lag, which means the same:
/// look at the outbox); never when there is no subscription.
async fn next_event(rx: &mut Option<broadcast::Receiver<Recorded>>) {
    match rx {
        Some(r) => match r.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => {
                *rx = None;
            }
        },
        None => std::future::pending().await,
    }
}

/// Delay after `n` consecutive local database errors: 1 s doubling to 60 s.
fn local_backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

impl SyncEngine<Cloud> {
    pub fn new(s: SyncSetup) -> Result<Self, SyncError> {
        let cloud = Cloud::new(&s.config, &s.credentials)?;
        Ok(SyncEngine::with_cloud(s, cloud))
    }
}

impl<C: CloudApi> SyncEngine<C> {
    /// An engine on any cloud (the twin in tests); `s.credentials` unused.
    pub fn with_cloud(s: SyncSetup, cloud: C) -> Self {
        let ep = |name| Endpoint::new(name, s.config.breaker.clone(), s.config.backoff.clone());
        let now = Instant::now();
        let engine = SyncEngine {
            rest: ep("attendance"),
            roster: ep("roster"),
            storage: ep("storage"),
            events: s.events.as_ref().map(|e| e.subscribe()),
            cfg: s.config,
            device_id: s.device_id,
            photos_dir: s.photos_dir,
            store: s.store,
            cloud,
            metrics: s.metrics,
            next_roster: now,
            roster_pulling: false,
            next_photos: now,
            next_prune: now,
            prefetched: None,
            pending_ack: None,
        };
        for e in [&engine.rest, &engine.roster, &engine.storage] {
            engine.metrics.breaker(e);
        }
        engine
    }

    /// The loop. Returns `Ok` on shutdown, `Err` only when the database
    /// thread is gone. Any other local error is survived: logged, counted,
    /// reported and backed off; the rows stay queued.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), SyncError> {
        tracing::info!(
            device_id = %self.device_id,
            batch_size = self.cfg.batch_size,
            "cloud sync started"
        );
        let poll = Duration::from_millis(self.cfg.poll_interval_ms);
        let mut local_failures = 0u32;
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let wait = match self.turn(&shutdown, poll).await {
                Ok(None) => {
                    local_failures = 0;
                    set(&self.metrics.local_error, None);
                    tokio::task::yield_now().await;
                    continue;
                }
                Ok(Some(wait)) => {
                    if local_failures > 0 {
                        tracing::info!("sync: local database works again");
                    }
                    local_failures = 0;
                    set(&self.metrics.local_error, None);
                    wait
                }
                Err(e) if e.is_store_gone() => return Err(e),
                Err(e) => {
                    local_failures += 1;
                    self.metrics.local_errors.fetch_add(1, Ordering::Relaxed);
                    set(&self.metrics.local_error, Some(e.to_string()));
                    // What was in flight is dropped; the outbox still has it.
                    self.prefetched = None;
                    self.pending_ack = None;
                    let d = local_backoff(local_failures);
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64,
                        "sync: local database error; backing off, records stay queued");
                    if or_shutdown(&shutdown, tokio::time::sleep(d))
                        .await
                        .is_none()
                    {
                        break;
                    }
                    continue;
                }
            };
            let events = &mut self.events;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
                _ = next_event(events) => {}
            }
        }
        if let Err(e) = self.flush_ack().await {
            tracing::warn!(error = %e, "sync: final acknowledgement not written; the rows will be sent again");
        }
        tracing::info!("cloud sync stopped");
        Ok(())
    }

    /// One turn over every endpoint: `None` when something progressed,
    /// else how long to sleep.
    async fn turn(
        &mut self,
        shutdown: &CancellationToken,
        poll: Duration,
    ) -> Result<Option<Duration>, SyncError> {
        let mut wait = poll;
        let mut progressed = false;
        let mut note = |s: Step| match s {
            Step::Progress => progressed = true,
            Step::Idle(d) => wait = wait.min(d),
        };
        note(self.attendance_step(shutdown).await?);
        if self.cfg.roster.enabled {
            note(self.roster_step(shutdown).await?);
        }
        if self.cfg.photos.enabled {
            note(self.photo_step(shutdown).await?);
        }
        note(self.prune_step().await?);
        Ok((!progressed).then_some(wait))
    }

    async fn refresh_depth(&self) -> Result<(), SyncError> {
        let (d, q) = self
            .store
            .call(|s| Ok::<_, StoreError>((s.outbox_depth()?, s.quarantine_depth()?)))
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
        let Some(acked) = pending else {
            return Ok(());
        };
        let n = acked.len();
        store.call(move |s| s.acknowledge_outbox(&acked)).await??;
        metrics.sent.fetch_add(n as u64, Ordering::Relaxed);
        tracing::debug!(records = n, "records synced");
        Ok(())
    }

    async fn flush_ack(&mut self) -> Result<(), SyncError> {
        Self::ack(&self.store, &self.metrics, self.pending_ack.take()).await
    }

    async fn read_batch(
        store: &StoreHandle,
        after: i64,
        limit: usize,
        device: String,
    ) -> Result<(queue::Batch, i64), SyncError> {
        let (rows, depth) = store
            .call(move |s| {
                Ok::<_, StoreError>((s.outbox_rows_after(after, limit)?, s.outbox_depth()?))
            })
            .await??;
        Ok((queue::fold_batch(rows, &device), depth))
    }

    /// Moves outbox items that failed local validation to the quarantine.
    async fn quarantine_invalid(&self, invalid: &[(i64, &'static str)]) -> Result<(), SyncError> {
        if invalid.is_empty() {
            return Ok(());
        }
        for (seq, reason) in invalid {
            tracing::warn!(seq, reason, "outbox item invalid: quarantined");
        }
        let items: Vec<QuarantineItem> = invalid
            .iter()
            .map(|(seq, reason)| QuarantineItem {
                seqs: vec![*seq],
                reason: format!("invalid:{reason}"),
                http_status: None,
            })
            .collect();
        let n = self
            .store
            .call(move |s| s.quarantine_outbox(&items))
            .await??;
        self.metrics
            .quarantined
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Sends one batch of the outbox, if the endpoint allows.
    ///
    /// Pipelined: while batch N is on the wire, the database thread commits
    /// the acknowledgement of batch N-1 and reads batch N+1. Nothing is
    /// marked synced before the cloud proved it holds it; a failure
    /// discards the read-ahead batch (its rows are still in the outbox).
    async fn attendance_step(&mut self, shutdown: &CancellationToken) -> Result<Step, SyncError> {
        if let Err(d) = self.rest.ready(Instant::now()) {
            self.prefetched = None;
            self.flush_ack().await?;
            self.refresh_depth().await?;
            return Ok(Step::Idle(d));
        }
        let (limit, device) = (self.cfg.batch_size, self.device_id.clone());
        let batch = match self.prefetched.take() {
            Some(b) if !b.items.is_empty() || !b.invalid.is_empty() => b,
            _ => {
                self.flush_ack().await?;
                self.refresh_depth().await?;
                if self.metrics.queue_depth.load(Ordering::Relaxed) == 0 {
                    return Ok(Step::Idle(Duration::MAX));
                }
                Self::read_batch(&self.store, 0, limit, device.clone())
                    .await?
                    .0
            }
        };
        self.quarantine_invalid(&batch.invalid).await?;
        if batch.items.is_empty() {
            return Ok(if batch.invalid.is_empty() {
                Step::Idle(Duration::MAX)
            } else {
                Step::Progress
            });
        }
        let ack_prev = Self::ack(&self.store, &self.metrics, self.pending_ack.take());
        let read_ahead = Self::read_batch(&self.store, batch.last_seq, limit, device);
        let (sent, acked_prev, next) = tokio::join!(
            self.send_bisecting(&batch.items, shutdown),
            ack_prev,
            read_ahead
        );
        acked_prev?;
        let (next, depth) = next?;
        self.metrics.queue_depth.store(depth, Ordering::Relaxed);
        let Some(sent) = sent else {
            return Ok(Step::Idle(Duration::ZERO)); // shutting down
        };
        let items = batch.items;
        let acked: PendingAck = sent
            .acked
            .iter()
            .map(|&i| (items[i].row.id, items[i].seqs.clone()))
            .collect();
        if sent.failure.is_none() && sent.rejected.is_empty() {
            // The common case: everything proven stored. Commit it beside
            // the next send.
            self.pending_ack = Some(acked);
            self.prefetched = Some(next);
            self.rest.on_success();
            self.metrics.success(&self.rest);
            return Ok(Step::Progress);
        }
        if !acked.is_empty() {
            Self::ack(&self.store, &self.metrics, Some(acked)).await?;
        }
        if !sent.rejected.is_empty() {
            for (i, status, code) in &sent.rejected {
                tracing::warn!(
                    record_id = %items[*i].row.id,
                    status,
                    code = %code,
                    "cloud refused a record as invalid: quarantined"
                );
            }
            let q: Vec<QuarantineItem> = sent
                .rejected
                .iter()
                .map(|(i, status, code)| QuarantineItem {
                    seqs: items[*i].seqs.clone(),
                    reason: format!("rejected:{code}"),
                    http_status: Some(*status),
                })
                .collect();
            let n = self.store.call(move |s| s.quarantine_outbox(&q)).await??;
            self.metrics
                .quarantined
                .fetch_add(n as u64, Ordering::Relaxed);
        }
        match sent.failure {
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
                    "attendance sync failed; records stay queued"
                );
                let seqs: Vec<i64> = sent
                    .untried
                    .iter()
                    .flat_map(|r| items[r.clone()].iter().flat_map(|i| i.seqs.clone()))
                    .collect();
                self.store
                    .call(move |s| s.note_outbox_failure(&seqs, &err))
                    .await??;
                Ok(if sent.acked.is_empty() && sent.rejected.is_empty() {
                    Step::Idle(d)
                } else {
                    Step::Progress
                })
            }
        }
    }

    /// Sends `items`; a request PostgREST refuses for a row-level cause
    /// (or that is too large) is split in halves until the refused rows are
    /// isolated. Stops at the first failure that proves nothing. `None` on
    /// shutdown.
    async fn send_bisecting(
        &self,
        items: &[queue::BatchItem],
        shutdown: &CancellationToken,
    ) -> Option<Sent> {
        let mut out = Sent::default();
        let mut stack: Vec<Range<usize>> = Vec::with_capacity(16);
        stack.push(0..items.len());
        while let Some(r) = stack.pop() {
            let rows: Vec<&AttendanceRecord> = items[r.clone()].iter().map(|i| &i.row).collect();
            let body = match serde_json::to_vec(&rows) {
                Ok(b) => b,
                Err(_) => {
                    out.failure = Some("cannot encode rows".into());
                    out.untried.push(r);
                    out.untried.append(&mut stack);
                    break;
                }
            };
            self.metrics.requests.fetch_add(1, Ordering::Relaxed);
            let verdict = match or_shutdown(shutdown, self.cloud.upsert_attendance(body)).await? {
                Ok(reply) => postgrest::classify_upsert(&reply),
                Err(t) => UpsertVerdict::Infrastructure(t.to_string()),
            };
            match verdict {
                UpsertVerdict::Stored(ids) => {
                    let (shown, missing): (Vec<usize>, Vec<usize>) =
                        r.clone().partition(|&i| ids.contains(&items[i].row.id));
                    out.acked.extend(shown);
                    if !missing.is_empty() {
                        self.metrics
                            .unconfirmed
                            .fetch_add(missing.len() as u64, Ordering::Relaxed);
                        out.failure = Some(format!(
                            "the answer did not show {} of {} rows sent",
                            missing.len(),
                            r.len()
                        ));
                        out.untried.extend(missing.into_iter().map(|i| i..i + 1));
                        out.untried.append(&mut stack);
                        break;
                    }
                }
                UpsertVerdict::RowRejected { status, code } if r.len() == 1 => {
                    out.rejected.push((r.start, status, code))
                }
                UpsertVerdict::RowRejected { .. } => {
                    let mid = r.start + r.len() / 2;
                    stack.push(mid..r.end);
                    stack.push(r.start..mid);
                }
                UpsertVerdict::TooLarge if r.len() > 1 => {
                    let mid = r.start + r.len() / 2;
                    stack.push(mid..r.end);
                    stack.push(r.start..mid);
                }
                UpsertVerdict::TooLarge => {
                    out.failure = Some("HTTP 413 for a single row".into());
                    out.untried.push(r);
                    out.untried.append(&mut stack);
                    break;
                }
                UpsertVerdict::Infrastructure(why) => {
                    out.failure = Some(why);
                    out.untried.push(r);
                    out.untried.append(&mut stack);
                    break;
                }
            }
        }
        Some(out)
    }

    /// Pulls one page of the students changed since the cursor, when due,
    /// and applies it in chunks (one short transaction each).
    async fn roster_step(&mut self, shutdown: &CancellationToken) -> Result<Step, SyncError> {
        let now = Instant::now();
        if !self.roster_pulling && now < self.next_roster {
            return Ok(Step::Idle(self.next_roster - now));
        }
        if !self.roster_pulling {
            self.expire_phones().await?;
        }
        if let Err(d) = self.roster.ready(now) {
            return Ok(Step::Idle(d));
        }
        let cursor: Option<RosterCursor> = self.store.call(|s| s.roster_cursor()).await??;
        let page_size = self.cfg.roster.page_size;
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let query = postgrest::roster_query(cursor.as_ref(), page_size);
        let verdict = match or_shutdown(shutdown, self.cloud.get_students(query)).await {
            None => return Ok(Step::Idle(Duration::ZERO)),
            Some(Ok(reply)) => postgrest::classify_roster(&reply),
            Some(Err(t)) => RosterVerdict::Infrastructure(t.to_string()),
        };
        let rows = match verdict {
            RosterVerdict::Page(rows) => rows,
            RosterVerdict::Refused(why) => {
                // Retrying the same query at once would be refused the same
                // way: report it and try again at the next interval.
                self.metrics.failure(&self.roster, &why);
                set(&self.metrics.roster_error, Some(why.clone()));
                self.roster_pulling = false;
                let interval = Duration::from_secs(self.cfg.roster.interval_s);
                self.next_roster = Instant::now() + interval;
                tracing::error!(error = %why, retry_in_s = interval.as_secs(),
                    "roster pull refused by the cloud; the roster is not updating");
                return Ok(Step::Idle(interval));
            }
            RosterVerdict::Infrastructure(why) => {
                let d = self.roster.on_failure(Instant::now());
                self.metrics.failure(&self.roster, &why);
                tracing::warn!(error = %why, retry_in_ms = d.as_millis() as u64, "roster pull failed");
                return Ok(Step::Idle(d));
            }
        };
        let n = rows.len();
        let complete = n < page_size;
        let page = queue::check_roster_page(rows);
        if !page.skipped.is_empty() {
            if let Ok(mut m) = self.metrics.roster_skipped.lock() {
                for (k, v) in &page.skipped {
                    *m.entry(k).or_default() += v;
                }
            }
            tracing::warn!(skipped = ?page.skipped, "roster rows from the cloud skipped");
        }
        if page.items.is_empty() && !complete {
            let why = "a full roster page without a usable cursor".to_string();
            self.metrics.failure(&self.roster, &why);
            set(&self.metrics.roster_error, Some(why.clone()));
            self.roster_pulling = false;
            self.next_roster = Instant::now() + Duration::from_secs(self.cfg.roster.interval_s);
            tracing::error!(error = %why, "roster pull stopped");
            return Ok(Step::Idle(Duration::MAX));
        }
        let mut written = 0;
        let chunks: Vec<Vec<_>> = page.items.chunks(ROSTER_CHUNK).map(<[_]>::to_vec).collect();
        let last = chunks.len();
        if last == 0 {
            self.store
                .call(move |s| s.apply_roster_chunk(&[], complete))
                .await??;
        }
        for (i, chunk) in chunks.into_iter().enumerate() {
            let done = complete && i + 1 == last;
            written += self
                .store
                .call(move |s| s.apply_roster_chunk(&chunk, done))
                .await??;
        }
        self.roster.on_success();
        self.metrics.success(&self.roster);
        set(&self.metrics.roster_error, None);
        self.metrics
            .roster_rows
            .fetch_add(written as u64, Ordering::Relaxed);
        if written > 0 {
            tracing::info!(students = written, "roster updated from the cloud");
        }
        self.roster_pulling = !complete;
        if complete {
            self.next_roster = Instant::now() + Duration::from_secs(self.cfg.roster.interval_s);
        }
        Ok(Step::Progress)
    }

    /// Erases cached phone numbers after a long time without a roster pull,
    /// one chunk per database job.
    async fn expire_phones(&self) -> Result<(), SyncError> {
        let days = self.cfg.roster.phone_retention_days;
        let mut erased = 0;
        loop {
            let n = self
                .store
                .call(move |s| s.expire_phones_chunk(days, Utc::now()))
                .await??;
            erased += n;
            if n < EXPIRE_CHUNK {
                break;
            }
        }
        if erased > 0 {
            tracing::warn!(
                students = erased,
                days,
                "roster not refreshed for too long: cached guardian phone numbers erased"
            );
        }
        Ok(())
    }

    /// Deletes one chunk of old synced records, when due.
    async fn prune_step(&mut self) -> Result<Step, SyncError> {
        let days = self.cfg.retention.keep_synced_days;
        let now = Instant::now();
        if days == 0 || now < self.next_prune {
            return Ok(Step::Idle(
                self.next_prune
                    .saturating_duration_since(now)
                    .max(Duration::from_secs(1)),
            ));
        }
        let before = Utc::now().date_naive() - chrono::Duration::days(i64::from(days));
        let n = self.store.call(move |s| s.prune_synced(before)).await??;
        self.metrics.pruned.fetch_add(n as u64, Ordering::Relaxed);
        if n >= crate::store::photos::PRUNE_CHUNK {
            return Ok(Step::Progress);
        }
        if n > 0 {
            tracing::info!(records = n, "old synced records pruned");
        }
        self.next_prune = Instant::now() + Duration::from_secs(self.cfg.retention.interval_s);
        Ok(Step::Idle(Duration::MAX))
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
        let pending = self.store.call(|s| s.pending_photos(PER_TURN)).await??;
        let mut progressed = false;
        for p in pending {
            let path = self.resolve_photo(&p.local_path);
            let id = p.record_id;
            let data = match tokio::fs::metadata(&path).await {
                Ok(m) if m.len() > self.cfg.photos.max_bytes => Err("above sync.photos.max_bytes"),
                Ok(_) => tokio::fs::read(&path)
                    .await
                    .map_err(|_| "cannot read the file"),
                Err(_) => Err("cannot read the file"),
            };
            let data = match data {
                Ok(d) => d,
                Err(why) => {
                    tracing::warn!(record_id = %id, reason = why, "photo will not be uploaded");
                    self.store.call(move |s| s.photo_unavailable(id)).await??;
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
            let verdict = match r {
                None => return Ok(Step::Idle(Duration::ZERO)),
                Some(Ok(reply)) => postgrest::classify_upload(&reply),
                Some(Err(t)) => UploadVerdict::Infrastructure(t.to_string()),
            };
            match verdict {
                UploadVerdict::Stored => {
                    self.storage.on_success();
                    self.metrics.success(&self.storage);
                    self.metrics.photos_uploaded.fetch_add(1, Ordering::Relaxed);
                    self.store
                        .call(move |s| s.photo_uploaded(id, &remote))
                        .await??;
                    progressed = true;
                }
                UploadVerdict::Refused(why) => {
                    tracing::warn!(record_id = %id, reason = %why, "Storage refused a photo; it will not be uploaded");
                    self.store.call(move |s| s.photo_unavailable(id)).await??;
                    progressed = true;
                }
                UploadVerdict::Infrastructure(e) => {
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
            .call(move |s| s.photos_to_delete(days, today, 64))
            .await??;
        for (id, p) in old {
            let path = self.resolve_photo(&p);
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(record_id = %id, error = %e.kind(), "cannot delete an uploaded photo");
                    continue;
                }
            }
            self.store
                .call(move |s| s.photo_local_deleted(id))
                .await??;
        }
        if progressed {
            return Ok(Step::Progress);
        }
        self.next_photos = Instant::now() + Duration::from_millis(self.cfg.poll_interval_ms);
        Ok(Step::Idle(Duration::MAX))
    }
}
