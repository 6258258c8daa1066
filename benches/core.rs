//! Core daemon figures: scan-to-durable-acknowledgement latency, idle RSS,
//! stripped binary size, start-to-READY. Writes its section of BENCHMARKS.md.
//!
//! `cargo bench --bench core` (release profile). The latency is measured
//! in-process through the real pipeline (parse, rules, one SQLite transaction
//! with synchronous=FULL, i.e. an fsync per scan) on the repository's disk;
//! the rest run the release binary.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
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
use attendance::store::{Store, StoreHandle, StudentRow};

const BIN: &str = env!("CARGO_BIN_EXE_attendance");
const SCANS: usize = 2000;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn latency(dir: &Path) -> (f64, f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sched = Schedule::from_config(&ScheduleConfig::default(), "schedule").unwrap();
        let mut store = Store::open(
            &dir.join("db/a.sqlite3"),
            "bench",
            sched,
            chrono::Duration::minutes(5),
            Duration::from_secs(5),
        )
        .unwrap();
        let roster: Vec<StudentRow> = (0..SCANS)
            .map(|i| StudentRow::bare(StudentNumber::parse(&format!("B-{i:05}")).unwrap()))
            .collect();
        store.import_students(&roster).unwrap();
        let (handle, closed) = StoreHandle::spawn(store, 64).unwrap();
        let start = chrono::DateTime::parse_from_rfc3339("2026-11-23T06:45:00+08:00")
            .unwrap()
            .to_utc();
        let pipeline = Pipeline {
            store: handle.clone(),
            keyring: Keyring::new(),
            policy: PayloadPolicy::default(),
            clock: Arc::new(SimulatedClock::new(start, 1)),
            feedback: Arc::new(LogFeedback),
            health: Arc::new(Health::new(Duration::from_secs(10))),
            events: Arc::new(attendance::store::event::RecordEvents::default()),
        };
        let mut ms = Vec::with_capacity(SCANS);
        for i in 0..SCANS {
            let raw = RawScan::now(format!("B-{i:05}"), SourceKind::Replay);
            let t = Instant::now();
            let report = pipeline.process(raw).await;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(matches!(report, ScanReport::Recorded { .. }), "{report:?}");
        }
        drop(pipeline);
        drop(handle);
        closed.wait().await;
        ms.sort_by(f64::total_cmp);
        (
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms[ms.len() - 1],
        )
    })
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let cfg = serde_json::json!({
        "data_dir": dir.join("data"),
        "http": {"listen": "127.0.0.1:0"},
        "log": {"level": "warn"},
    });
    let p = dir.join("device.json");
    std::fs::write(&p, cfg.to_string()).unwrap();
    p
}

fn spawn(dir: &Path, notify: &Path) -> std::process::Child {
    Command::new(BIN)
        .args(["run", "--system-config", "/nonexistent", "--device-config"])
        .arg(write_config(dir))
        .env("NOTIFY_SOCKET", notify)
        .env_remove("WATCHDOG_USEC")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_ready(sock: &UnixDatagram) {
    let mut buf = [0u8; 1024];
    loop {
        let n = sock.recv(&mut buf).expect("READY=1 within the timeout");
        if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
            return;
        }
    }
}

fn start_to_ready_and_rss(dir: &Path) -> (f64, f64, u64) {
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut times = Vec::new();
    let mut rss_kib = 0;
    for run in 0..11 {
        let t = Instant::now();
        let mut child = spawn(dir, &sock_path);
        wait_ready(&sock);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if run == 10 {
            std::thread::sleep(Duration::from_secs(5));
            let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
            rss_kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap();
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().unwrap();
    }
    // The first start creates and migrates the database; report it apart.
    let first = times.remove(0);
    times.sort_by(f64::total_cmp);
    (first, percentile(&times, 0.5), rss_kib)
}

fn stripped_size(dir: &Path) -> u64 {
    let copy = dir.join("attendance.stripped");
    std::fs::copy(BIN, &copy).unwrap();
    let st = Command::new("strip")
        .arg(&copy)
        .status()
        .expect("strip (binutils) is installed");
    assert!(st.success());
    std::fs::metadata(&copy).unwrap().len()
}

fn main() {
    // `cargo bench` passes --bench; nothing else is expected.
    let work = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-core");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let dir = tempfile::tempdir_in(&work).unwrap();

    let (p50, p99, max) = latency(dir.path());
    let (first_ready, ready_p50, rss_kib) = start_to_ready_and_rss(dir.path());
    let size = stripped_size(dir.path());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();

    let section = format!(
        "## Core daemon\n\n\
Command: `cargo bench --bench core` (release profile; writes this section).  \n\
Machine: {cpu}, {cores} CPUs, database on the repository's disk (ext4 on virtio).\n\n\
| figure | value | target |\n|---|---|---|\n\
| scan-to-durable-ack latency, median ({SCANS} scans, fsync per commit) | {p50:.2} ms | |\n\
| scan-to-durable-ack latency, p99 | {p99:.2} ms | < 20 ms |\n\
| scan-to-durable-ack latency, max | {max:.2} ms | |\n\
| idle RSS (release binary, 5 s after READY) | {rss:.1} MiB | < 20 MiB |\n\
| stripped release binary | {size_mb:.1} MiB | |\n\
| start to READY=1 (existing database, median of 10) | {ready_p50:.0} ms | < 300 ms |\n\
| start to READY=1 (first start: creates and migrates the database) | {first_ready:.0} ms | |\n",
        cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        rss = rss_kib as f64 / 1024.0,
        size_mb = size as f64 / (1024.0 * 1024.0),
    );
    print!("{section}");
    report::write_section("core", &section);
}
