//! Scan-to-ack latency while the background jobs run (issue 11, point 4):
//! idle, during a 100,000-row roster apply, during a 50,000-record backlog
//! drain, and with 200,000 old records in the database. The jobs are the
//! real sync engine against the in-memory cloud twin, so what competes with
//! the scans on the database thread is exactly what the daemon sends it.
//!
//! `cargo bench --bench scan_load` (release profile; writes its section of
//! BENCHMARKS.md). Scans arrive every 10 ms through the real pipeline
//! (parse, rules, one transaction with an fsync).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[path = "report.rs"]
mod report;

use attendance::app::health::Health;
use attendance::app::pipeline::{Pipeline, ScanReport};
use attendance::clock::SimulatedClock;
use attendance::domain::payload::{Keyring, PayloadPolicy};
use attendance::domain::record::StudentNumber;
use attendance::domain::schedule::{Schedule, ScheduleConfig};
use attendance::feedback::LogFeedback;
use attendance::input::{RawScan, SourceKind};
use attendance::store::event::RecordEvents;
use attendance::store::{AttendanceRecord, Store, StoreHandle, StudentRow};
use attendance::sync::twin::TwinCloud;
use attendance::sync::{Credentials, SyncConfig, SyncEngine, SyncMetrics, SyncSetup};
use tokio_util::sync::CancellationToken;

const STUDENTS: usize = 20_000;
const ROSTER_ROWS: usize = 100_000;
const BACKLOG: usize = 50_000;
const OLD_RECORDS: usize = 200_000;
const IDLE_SCANS: usize = 500;
const INTERVAL: Duration = Duration::from_millis(10);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Figure {
    label: &'static str,
    n: usize,
    p50: f64,
    p99: f64,
    max: f64,
}

fn figure(label: &'static str, mut ms: Vec<f64>) -> Figure {
    ms.sort_by(f64::total_cmp);
    Figure {
        label,
        n: ms.len(),
        p50: percentile(&ms, 0.5),
        p99: percentile(&ms, 0.99),
        max: ms[ms.len() - 1],
    }
}

struct Bench {
    pipeline: Pipeline,
    next_student: usize,
}

impl Bench {
    /// Scans new students every INTERVAL until `done()` (at least `min`).
    async fn scans_until(&mut self, min: usize, done: impl Fn() -> bool) -> Vec<f64> {
        let mut ms = Vec::new();
        let mut tick = tokio::time::interval(INTERVAL);
        while ms.len() < min || !done() {
            tick.tick().await;
            assert!(self.next_student < STUDENTS, "out of bench students");
            let raw = RawScan::now(format!("B-{:05}", self.next_student), SourceKind::Replay);
            self.next_student += 1;
            let t = Instant::now();
            let report = self.pipeline.process(raw).await;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(matches!(report, ScanReport::Recorded { .. }), "{report:?}");
        }
        ms
    }
}

fn engine(
    store: &StoreHandle,
    twin: Arc<TwinCloud>,
    roster: bool,
    dir: &std::path::Path,
) -> (SyncEngine<Arc<TwinCloud>>, Arc<SyncMetrics>) {
    let mut cfg = SyncConfig {
        enabled: true,
        base_url: "https://twin.invalid".into(),
        batch_size: 200,
        poll_interval_ms: 50,
        ..SyncConfig::default()
    };
    cfg.roster.enabled = roster;
    cfg.roster.page_size = 1000;
    cfg.roster.max_rows = 1_000_000;
    cfg.photos.enabled = false;
    cfg.retention.keep_synced_days = 0;
    let metrics = Arc::new(SyncMetrics::default());
    let e = SyncEngine::with_cloud(
        SyncSetup {
            config: cfg,
            device_id: "bench".into(),
            photos_dir: dir.join("photos"),
            store: store.clone(),
            credentials: Credentials {
                api_key: String::new(),
                device_jwt: String::new(),
            },
            metrics: metrics.clone(),
            events: None,
        },
        twin,
    );
    (e, metrics)
}

fn record(i: usize, date: &str) -> AttendanceRecord {
    let t = format!("{date}T07:{:02}:{:02}.000Z", (i / 60) % 60, i % 60);
    AttendanceRecord {
        id: uuid::Uuid::new_v4(),
        student_number: format!("O-{i:06}"),
        school_date: date.parse().unwrap(),
        session: "morning".into(),
        time_in: Some(t.clone()),
        time_out: None,
        status: "present".into(),
        device_id: "bench".into(),
        photo_path: None,
        clock_synced: true,
        source: "replay".into(),
        created_at: t.clone(),
        updated_at: t,
    }
}

fn main() {
    let work = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-scan-load");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let dir = tempfile::tempdir_in(&work).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let figures = rt.block_on(async {
        let sched = Schedule::from_config(&ScheduleConfig::default(), "schedule").unwrap();
        let mut store = Store::open(
            &dir.path().join("db/a.sqlite3"),
            "bench",
            sched,
            chrono::Duration::minutes(5),
            Duration::from_secs(5),
        )
        .unwrap();
        let roster: Vec<StudentRow> = (0..STUDENTS)
            .map(|i| StudentRow::bare(StudentNumber::parse(&format!("B-{i:05}")).unwrap()))
            .collect();
        store.import_students(&roster).unwrap();
        let (handle, closed) = StoreHandle::spawn(store, 256).unwrap();
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-23T06:45:00+08:00")
            .unwrap()
            .to_utc();
        let mut b = Bench {
            pipeline: Pipeline {
                store: handle.clone(),
                keyring: Keyring::new(),
                policy: PayloadPolicy::default(),
                clock: Arc::new(SimulatedClock::new(start, 1)),
                feedback: Arc::new(LogFeedback),
                health: Arc::new(Health::new(Duration::from_secs(10))),
                events: Arc::new(RecordEvents::default()),
            },
            next_student: 0,
        };
        let mut figures = Vec::new();

        // 1. idle
        figures.push(figure("idle", b.scans_until(IDLE_SCANS, || true).await));

        // 2. during a 100,000-row roster apply (cloud twin -> engine -> store)
        let twin = Arc::new(TwinCloud::new());
        twin.put_students((0..ROSTER_ROWS).map(|i| {
            serde_json::json!({
                "student_number": format!("R-{i:06}"), "full_name": format!("Roster Student {i}"),
                "grade": "7", "section": "A", "guardian_phone": format!("+63917{i:07}"),
                "active": true, "updated_at": format!("2026-11-01T00:00:{:02}.{:06}+00:00", i / 1_000_000, i % 1_000_000)
            })
        }));
        let (e, m) = engine(&handle, twin.clone(), true, dir.path());
        let stop = CancellationToken::new();
        let task = tokio::spawn(e.run(stop.clone()));
        let m2 = m.clone();
        let roster_ms = b
            .scans_until(0, move || {
                m2.roster_rows.load(Ordering::Relaxed) >= ROSTER_ROWS as u64
            })
            .await;
        stop.cancel();
        task.await.unwrap().unwrap();
        assert_eq!(m.roster_rows.load(Ordering::Relaxed), ROSTER_ROWS as u64);
        figures.push(figure("during a 100,000-row roster apply", roster_ms));

        // 3. during a 50,000-record backlog drain
        for chunk in (0..BACKLOG).collect::<Vec<_>>().chunks(5000) {
            let recs: Vec<_> = chunk.iter().map(|&i| record(i, "2026-11-20")).collect();
            handle.call(move |s| s.insert_records(&recs)).await.unwrap().unwrap();
        }
        let twin = Arc::new(TwinCloud::new());
        let (e, m) = engine(&handle, twin.clone(), false, dir.path());
        let stop = CancellationToken::new();
        let task = tokio::spawn(e.run(stop.clone()));
        let m2 = m.clone();
        let drain_ms = b
            .scans_until(0, move || m2.sent.load(Ordering::Relaxed) >= BACKLOG as u64)
            .await;
        stop.cancel();
        task.await.unwrap().unwrap();
        assert!(twin.stored_ids().len() >= BACKLOG);
        figures.push(figure("during a 50,000-record backlog drain", drain_ms));

        // 4. with 200,000 old (synced) records in the database
        for chunk in (0..OLD_RECORDS).collect::<Vec<_>>().chunks(10_000) {
            let recs: Vec<_> = chunk
                .iter()
                .map(|&i| record(i, if i % 2 == 0 { "2025-09-15" } else { "2026-02-10" }))
                .collect();
            handle
                .call(move |s| {
                    s.insert_records(&recs)?;
                    let mut after = 0;
                    loop {
                        let rows = s.outbox_rows_after(after, 5000)?;
                        let Some(last) = rows.last() else { break };
                        after = last.seq;
                        let acked: Vec<_> = rows
                            .iter()
                            .filter_map(|r| Some((uuid::Uuid::parse_str(&r.record_id).ok()?, vec![r.seq])))
                            .collect();
                        s.acknowledge_outbox(&acked)?;
                    }
                    Ok::<_, attendance::store::StoreError>(())
                })
                .await
                .unwrap()
                .unwrap();
        }
        let n = handle.call(|s| s.record_count()).await.unwrap().unwrap();
        assert!(n >= OLD_RECORDS as i64);
        figures.push(figure(
            "with 200,000 old records in the database",
            b.scans_until(IDLE_SCANS, || true).await,
        ));
        drop(b);
        drop(handle);
        closed.wait().await;
        figures
    });

    let idle = figures[0].p99;
    let mut rows = String::new();
    for f in &figures {
        rows.push_str(&format!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}x | {} |\n",
            f.label,
            f.n,
            f.p50,
            f.p99,
            f.max,
            f.p99 / idle,
            if f.p99 < 20.0 && f.p99 <= 1.5 * idle {
                "met"
            } else {
                "MISSED"
            }
        ));
    }
    let section = format!(
        "## Scan path under background load\n\n\
Command: `cargo bench --bench scan_load` (release profile; writes this section).  \n\
One scan every {interval} ms through the real pipeline (fsync per commit) while the real sync engine runs \
against the in-memory cloud twin (`src/sync/twin.rs`). Target: p99 < 20 ms and within 1.5x of idle.  \n\
Machine: {cores} CPUs, database on the repository's disk.\n\n\
| case | scans | p50 | p99 | max | p99 / idle p99 | target |\n|---|---|---|---|---|---|---|\n{rows}",
        interval = INTERVAL.as_millis(),
        cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    );
    print!("{section}");
    report::write_section("scan_load", &section);
}
