//! Fault tests: the cloud (real PostgREST + PostgreSQL) behind a small TCP
//! proxy the test controls: refused, hanging, slow, answering 500,
//! flapping. While the fault lasts the kiosk keeps recording scans, the
//! engine holds at most a couple of connections, memory stays bounded and
//! the breaker opens; after recovery the cloud holds exactly the records
//! the kiosk saw acknowledged, i.e. all of them. Run by tests/cloud/run.sh
//! with --test-threads=1 (memory figures are per process).

mod sync_common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use attendance::domain::record::StudentNumber;
use attendance::input::SourceKind;
use attendance::store::{ScanOutcome, ScanRequest, StudentRow};
use attendance::sync::BreakerState;
use sync_common::*;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Refused,
    Proxy(Mode),
}

const SCANS: usize = 1000;

async fn scenario(fault: Fault, expect_open: bool) {
    let stack = Stack::start();
    let local = local();
    // A backlog from before the outage, and a roster for live scans.
    let recs: Vec<_> = (0..500).map(|i| record(i, DEVICE, "2026-11-20")).collect();
    let backlog = recs.clone();
    local
        .handle
        .call(move |s| {
            insert_records(s, &backlog);
            let roster: Vec<StudentRow> = (0..SCANS)
                .map(|i| StudentRow::bare(StudentNumber::parse(&format!("L{i:05}")).unwrap()))
                .collect();
            s.import_students(&roster).unwrap();
        })
        .await
        .unwrap();

    let port = free_port();
    let proxy = match fault {
        Fault::Refused => None, // nothing listens on `port` yet
        Fault::Proxy(m) => Some(Proxy::start(port, stack.rest_port, m)),
    };
    let url = format!("http://127.0.0.1:{port}");
    let run = start_engine(sync_config(&url, ""), &local, device_jwt(DEVICE));
    let rss_before = rss_kib();

    // Scans at full speed while the cloud is broken.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..SCANS {
        let t = Instant::now();
        let out = local
            .handle
            .call(move |s| {
                s.record_scan(&ScanRequest {
                    student_number: StudentNumber::parse(&format!("L{i:05}")).unwrap(),
                    // Monday 2026-11-23 07:10 in Asia/Manila (default schedule).
                    seen_at: "2026-11-22T23:10:00Z".parse().unwrap(),
                    source: SourceKind::Replay,
                    clock_synced: true,
                })
            })
            .await
            .unwrap()
            .unwrap();
        slowest = slowest.max(t.elapsed());
        assert!(matches!(out, ScanOutcome::Recorded { .. }), "{out:?}");
    }
    let scanning = started.elapsed();
    // A scan never waits for the network: none took anywhere near a
    // network timeout (connect 300 ms, read 700 ms, request 2 s).
    assert!(
        slowest < Duration::from_millis(1000),
        "{fault:?}: slowest scan {slowest:?} (all {SCANS} in {scanning:?})"
    );

    if expect_open {
        let m = run.metrics.clone();
        wait_for(30, "breaker open", async || {
            m.status().breakers.get("attendance") == Some(&BreakerState::Open)
        })
        .await;
        let st = run.metrics.status();
        assert!(!st.online, "{st:?}");
        assert!(st.failed >= 2, "{st:?}");
        // Let the outage last a few breaker periods.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let rss_grew_kib = rss_kib().saturating_sub(rss_before);
    assert!(
        rss_grew_kib < 64 * 1024,
        "{fault:?}: RSS grew by {rss_grew_kib} KiB during the outage"
    );

    // Recovery.
    let proxy = match proxy {
        Some(p) => {
            p.set(Mode::Forward);
            p
        }
        None => Proxy::start(port, stack.rest_port, Mode::Forward),
    };
    let h = local.handle.clone();
    wait_for(90, "outbox drained after recovery", async || {
        local_count(&h, "SELECT count(*) FROM outbox").await == 0
    })
    .await;
    // Read after the engine stopped: every counter update has landed.
    let metrics = run.metrics.clone();
    run.stop().await;
    let st = metrics.status();
    assert!(st.online, "{st:?}");
    assert_eq!(st.breakers.get("attendance"), Some(&BreakerState::Closed));
    assert!(
        proxy.open_max.load(Ordering::SeqCst) <= 2,
        "{fault:?}: {} connections open at once",
        proxy.open_max.load(Ordering::SeqCst)
    );

    let all: BTreeSet<String> =
        local_query(&local.handle, "SELECT id FROM attendance", |r| r.get(0))
            .await
            .into_iter()
            .collect();
    assert_eq!(all.len(), 500 + SCANS);
    assert_eq!(
        synced_ids(&local.handle).await,
        all,
        "everything acknowledged"
    );
    assert_eq!(
        stack.cloud_ids(),
        all,
        "the cloud holds exactly the acknowledged records"
    );
    assert_eq!(
        stack.count("SELECT count(*) FROM attendance"),
        (500 + SCANS) as i64
    );
    for r in recs.iter().take(3) {
        assert!(all.contains(&r.id.to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_refusing_connections() {
    if stack_enabled("cloud_refusing_connections") {
        scenario(Fault::Refused, true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_hanging() {
    if stack_enabled("cloud_hanging") {
        scenario(Fault::Proxy(Mode::Hang), true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_answering_500() {
    if stack_enabled("cloud_answering_500") {
        scenario(Fault::Proxy(Mode::Error500), true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_flapping() {
    if stack_enabled("cloud_flapping") {
        scenario(Fault::Proxy(Mode::Flap), true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_slow_but_within_timeouts() {
    if stack_enabled("cloud_slow_but_within_timeouts") {
        // 400 ms per request (read timeout 700 ms): slow, not failing.
        scenario(Fault::Proxy(Mode::Slow(400)), false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_slower_than_the_read_timeout() {
    if stack_enabled("cloud_slower_than_the_read_timeout") {
        // 1.5 s per request: the read timeout (700 ms) fires, the upstream
        // may still commit afterwards; the upsert makes the retry harmless.
        scenario(Fault::Proxy(Mode::Slow(1500)), true).await;
    }
}
