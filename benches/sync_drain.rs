//! Drains a backlog of attendance records into a real PostgREST 12 +
//! PostgreSQL with the shipped migrations: bulk upserts (the engine's
//! batches) against one record per request (the seeds' approach), in one
//! run, and writes the figures to the sync section of BENCHMARKS.md.
//!
//! Run through tests/cloud/bench.sh, which installs the stack and sets
//! ATTENDANCE_CLOUD_TESTS, ATTENDANCE_PG_BIN and ATTENDANCE_POSTGREST.
//! `SYNC_BENCH_RECORDS` overrides the backlog size (default 50000).

#[path = "../tests/sync_common/mod.rs"]
mod sync_common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sync_common::*;

struct Run {
    label: String,
    batch: usize,
    records: usize,
    secs: f64,
    requests: u64,
}

async fn drain(stack: &Stack, records: usize, batch: usize) -> Run {
    stack.sql("TRUNCATE attendance CASCADE");
    let local = local();
    let recs: Vec<_> = (0..records)
        .map(|i| record(i, DEVICE, "2026-11-23"))
        .collect();
    local
        .handle
        .call(move |s| insert_records(s, &recs))
        .await
        .unwrap();
    let mut cfg = sync_config(&stack.rest_url(), "");
    cfg.batch_size = batch;
    cfg.rest.read_timeout_ms = 30_000;
    cfg.rest.request_timeout_ms = 60_000;
    let started = Instant::now();
    let run = start_engine(cfg, &local, device_jwt(DEVICE));
    while run.metrics.sent.load(Ordering::Relaxed) < records as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "drain did not finish in 30 minutes"
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let st = run.metrics.status();
    run.stop().await;
    assert_eq!(st.failed, 0, "{st:?}");
    assert_eq!(
        stack.count("SELECT count(*) FROM attendance"),
        records as i64,
        "the cloud holds every record once"
    );
    assert_eq!(
        local_count(&local.handle, "SELECT count(*) FROM outbox").await,
        0
    );
    Run {
        label: if batch == 1 {
            "one record per request".into()
        } else {
            format!("batched, {batch} per request")
        },
        batch,
        records,
        secs,
        requests: st.requests,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn tool_version(cmd: &str, arg: &str) -> String {
    std::process::Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[path = "report.rs"]
mod report;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and `cargo test --benches`
    }
    if !stack_enabled("sync_drain benchmark") {
        return;
    }
    let records: usize = std::env::var("SYNC_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let load_before = loadavg();
    let runs = rt.block_on(async {
        let stack = Stack::start();
        let mut runs = Vec::new();
        for batch in [500, 1] {
            let r = drain(&stack, records, batch).await;
            println!(
                "{:<28} {:>7} records in {:>8.2} s = {:>9.0} records/s ({} requests)",
                r.label,
                r.records,
                r.secs,
                r.records as f64 / r.secs,
                r.requests
            );
            runs.push(r);
        }
        runs
    });
    let load_after = loadavg();
    let rate = |r: &Run| r.records as f64 / r.secs;
    let ratio = rate(&runs[0]) / rate(&runs[1]);
    println!("ratio batched / one-per-request: {ratio:.1}x");

    let pg = std::env::var("ATTENDANCE_PG_BIN").unwrap_or_default();
    let mut md = String::new();
    md.push_str("## Cloud sync: draining a backlog into PostgREST\n\n");
    md.push_str(
        "Command: `tests/cloud/bench.sh` (installs PostgreSQL and PostgREST like \
         tests/cloud/run.sh, then `cargo bench --bench sync_drain`).\n\n",
    );
    md.push_str(&format!(
        "Setup: {records} attendance records in the kiosk's outbox (SQLite, WAL, \
         synchronous=FULL), drained by the sync engine over HTTP/1.1 into a local PostgREST \
         ({}) in front of PostgreSQL ({}; fsync off, test cluster) with the shipped migrations, \
         RLS and triggers active, as device `{DEVICE}` with a signed JWT. Same machine, \
         same run, {} CPU cores shared with other work. Time runs from engine start until \
         the cloud acknowledged every record (each acknowledgement is a local transaction \
         that deletes the outbox rows and marks the records synced).\n\n",
        tool_version(
            &std::env::var("ATTENDANCE_POSTGREST").unwrap_or_default(),
            "--version"
        ),
        tool_version(&format!("{pg}/postgres"), "--version"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
    ));
    md.push_str(&format!(
        "Machine load (/proc/loadavg) at start: {load_before}; at end: {load_after}.\n\n"
    ));
    md.push_str(
        "| mode | records | seconds | records/s | HTTP requests |\n|---|---:|---:|---:|---:|\n",
    );
    for r in &runs {
        md.push_str(&format!(
            "| {} (batch_size {}) | {} | {:.2} | {:.0} | {} |\n",
            r.label,
            r.batch,
            r.records,
            r.secs,
            rate(r),
            r.requests
        ));
    }
    md.push_str(&format!(
        "\nBatched is **{ratio:.1}×** the one-record-per-request rate \
         (targets: at least 5,000 records/s batched and at least 20×).\n"
    ));
    report::write_section("sync", &md);
}
