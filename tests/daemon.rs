//! The real binary: lifecycle, HTTP, CLI and bad input.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::*;

fn scan(k: &Kiosk, payload: &str) -> serde_json::Value {
    let out = k.cmd().args(["scan", payload]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "scan output: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn records_scans_and_serves_health_then_stops_cleanly() {
    let k = Kiosk::new();
    k.import("S", 5);
    let d = k.spawn(&[]);
    d.wait_ready();

    assert_eq!(get(d.port(), "/ping"), (200, "pong\n".into()));
    let (code, body) = get(d.port(), "/health");
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["device_id"], "test-kiosk");

    let r = scan(&k, "S-0001");
    assert_eq!(r["outcome"], "recorded", "{r}");
    assert_eq!(r["kind"], "login");
    assert_eq!(r["status"], "present");
    let dup = scan(&k, "S-0001");
    assert_eq!(dup["outcome"], "duplicate", "{dup}");
    let unknown = scan(&k, "NOBODY");
    assert_eq!(unknown["reason_code"], "unknown_student", "{unknown}");
    let bad = scan(&k, "{\"student_number\":");
    assert_eq!(bad["reason_code"], "invalid_payload", "{bad}");

    // The acknowledgement event came with the record id, and names a correlation id.
    let line = d.wait_for("scan_recorded", Duration::from_secs(5), |l| {
        event(l).as_deref() == Some("scan_recorded")
    });
    assert_eq!(
        field(&line, "record_id").unwrap(),
        r["record_id"].as_str().unwrap()
    );
    assert!(json(&line).unwrap()["span"]["cid"].is_string(), "{line}");
    d.wait_for("scan_rejected", Duration::from_secs(5), |l| {
        event(l).as_deref() == Some("scan_rejected")
            && field(l, "reason_code").as_deref() == Some("unknown_student")
    });

    let (status, lines) = d.terminate();
    assert!(status.success(), "{}", lines.join("\n"));
    assert!(
        lines
            .iter()
            .any(|l| event(l).as_deref() == Some("stopped cleanly"))
    );
    // Checkpointed at shutdown: the WAL is empty.
    let wal = k.data.join("db/attendance.sqlite3-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);

    // Export sees the record, with a CSV header.
    let out = k
        .cmd()
        .args(["export", "--from", "2026-11-23", "--to", "2026-11-23"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.starts_with("id,student_number,school_date"), "{csv}");
    assert!(csv.contains(r["record_id"].as_str().unwrap()));
    assert_eq!(csv.lines().count(), 2);
}

#[test]
fn hostile_http_requests_get_clear_answers() {
    let k = Kiosk::new();
    let d = k.spawn(&[]);
    d.wait_ready();
    assert_eq!(
        http(
            d.port(),
            "POST /health HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc"
        )
        .0,
        405
    );
    assert_eq!(get(d.port(), "/../../etc/passwd").0, 404);
    assert_eq!(http(d.port(), "NOT-HTTP\r\n\r\n").0, 400);
    // Oversized headers are refused, not buffered without bound.
    let huge = format!(
        "GET /ping HTTP/1.0\r\nX-A: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port())).unwrap();
    let _ = std::io::Write::write_all(&mut s, huge.as_bytes());
    // A client that connects and says nothing does not block others.
    let _idle = std::net::TcpStream::connect(("127.0.0.1", d.port())).unwrap();
    assert_eq!(get(d.port(), "/ping").0, 200);
    let (status, lines) = d.terminate();
    assert!(status.success(), "{status:?}\n{}", lines.join("\n"));
}

#[test]
fn notifies_systemd_ready_and_feeds_the_watchdog() {
    let k = Kiosk::new();
    let sock_path = k.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // systemd sets WATCHDOG_PID to the service's pid; `exec` keeps the shell's.
    let mut sh = std::process::Command::new("sh");
    sh.envs(
        k.cmd()
            .get_envs()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
    )
    .env("NOTIFY_SOCKET", &sock_path)
    .env("WATCHDOG_USEC", "400000")
    .args([
        "-c",
        "WATCHDOG_PID=$$ exec \"$0\" run --simulated-clock \"$1\"",
        BIN,
        MORNING,
    ]);
    let d = Running::start(sh);
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !(seen.contains("READY=1") && seen.contains("WATCHDOG=1")) {
        assert!(
            std::time::Instant::now() < deadline,
            "notifications so far: {seen}"
        );
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|_| panic!("notifications so far: {seen}"));
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        seen.push('\n');
    }
    assert!(seen.find("READY=1") < seen.find("WATCHDOG=1"), "{seen}");
    let (status, _) = d.terminate();
    assert!(status.success());
}

#[test]
fn a_second_daemon_on_the_same_folder_is_refused() {
    let k = Kiosk::new();
    let first = k.spawn(&[]);
    first.wait_ready();
    let out = k.cmd().args(["run"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("in use by another daemon")
            && err.contains(&format!("pid {}", first.child.id())),
        "{err}"
    );
    // The first one is unaffected.
    assert_eq!(get(first.port(), "/ping").0, 200);
}

#[test]
fn corrupt_config_names_file_and_key() {
    let k = Kiosk::new();
    std::fs::write(&k.config, r#"{"scan": {"cooldown_seconds": "soon"}}"#).unwrap();
    let out = k.cmd().args(["check-config"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("device.json") && err.contains("scan.cooldown_seconds"),
        "{err}"
    );

    // A daemon whose device layer is broken (a power cut mid-write, a bad
    // edit) keeps recording on the image's layer and says so in /health.
    let system = k.dir.path().join("no-system.json");
    let sys_cfg = serde_json::json!({
        "device_id": "test-kiosk",
        "data_dir": k.data,
        "http": {"listen": "127.0.0.1:0"},
        "log": {"format": "json"},
    });
    std::fs::write(&system, sys_cfg.to_string()).unwrap();
    std::fs::write(&k.config, "{}").unwrap();
    k.import("S", 1);
    std::fs::write(&k.config, "").unwrap();
    let d = k.spawn(&[]);
    d.wait_ready();
    let (code, body) = get(d.port(), "/health");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("degraded")
            && body.contains("device config ignored")
            && body.contains("device.json"),
        "{body}"
    );
    // The CLI stays strict (it names the broken file); with the file mended it
    // reaches the daemon, which kept recording all along.
    std::fs::write(&k.config, "{}").unwrap();
    let r = scan(&k, "S-0000");
    assert_eq!(r["outcome"], "recorded", "{r}");
}

#[test]
fn check_config_redacts_secrets() {
    let k = Kiosk::new();
    let secrets = k.data.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let f = secrets.join("supabase-api-key");
    std::fs::write(&f, "sb-secret-value-123").unwrap();
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = k.cmd().args(["check-config"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("supabase-api-key") && text.contains("<redacted>"),
        "{text}"
    );
    assert!(!text.contains("sb-secret-value-123"));
}

#[test]
fn unreadable_data_folder_is_a_clear_error() {
    let k = Kiosk::new();
    let file = k.dir.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let out = k
        .cmd()
        .args(["run", "--data-dir"])
        .arg(file.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plain-file/data") && err.contains("cannot create"),
        "{err}"
    );
}

#[test]
fn a_database_that_is_not_sqlite_is_kept_aside_and_recording_continues() {
    let k = Kiosk::new();
    std::fs::create_dir_all(k.db().parent().unwrap()).unwrap();
    std::fs::write(
        k.db(),
        b"garbage that is certainly not an SQLite database file ".repeat(200),
    )
    .unwrap();
    let d = k.spawn(&[]);
    d.wait_ready();
    let (code, body) = get(d.port(), "/health");
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["status"], "degraded", "{body}");
    assert!(body.contains("kept at"), "{body}");
    let aside: Vec<_> = std::fs::read_dir(k.data.join("db"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".unusable-"))
        .collect();
    assert_eq!(aside.len(), 1, "the unusable file is kept, not deleted");
    assert!(
        std::fs::read(aside[0].path())
            .unwrap()
            .starts_with(b"garbage")
    );
    drop(d);
    k.import("S", 2);
    let d = k.spawn(&[]);
    d.wait_ready();
    assert_eq!(scan(&k, "S-0000")["outcome"], "recorded");
}

#[test]
fn roster_import_is_all_or_nothing_and_names_the_line() {
    let k = Kiosk::new();
    let csv = k.dir.path().join("bad.csv");
    std::fs::write(&csv, "student_number,full_name\nA-1,Ok\nbad number!,Nope\n").unwrap();
    let out = k
        .cmd()
        .args(["students", "import"])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3"), "{err}");
    k.import("S", 3);
    let out = k.cmd().args(["students", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains("S-0002") && !list.contains("A-1"), "{list}");
    assert!(!list.contains("+63917"), "phone numbers are not listed");
}

/// Full disk: a small tmpfs as the data partition (needs root to mount).
#[test]
fn full_disk_never_loses_an_acknowledged_scan() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED full_disk test: needs root to mount a size-limited tmpfs (CI runs as root)"
        );
        return;
    }
    let k = Kiosk::new();
    std::fs::create_dir_all(&k.data).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "attendance-test"])
        .arg(&k.data)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a tmpfs failed");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _guard = Unmount(k.data.clone());
    k.import("F", 3000);
    let d = k.spawn(&[]);
    d.wait_ready();
    // Fill the rest of the partition.
    let filler = k.data.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);

    let mut recorded = Vec::new();
    let mut failed = 0;
    for i in 0..3000 {
        let r = scan(&k, &format!("F-{i:04}"));
        match r["outcome"].as_str() {
            Some("recorded") => recorded.push(r["record_id"].as_str().unwrap().to_string()),
            Some("rejected") => {
                assert_eq!(r["reason_code"], "unavailable", "{r}");
                failed += 1;
                if failed >= 3 {
                    break;
                }
            }
            other => panic!("{other:?} {r}"),
        }
    }
    assert!(
        failed >= 3,
        "the disk never filled up ({} recorded)",
        recorded.len()
    );
    let (code, body) = get(d.port(), "/health");
    assert_eq!(code, 503, "a kiosk that cannot write says so: {body}");
    assert!(body.contains("full"), "{body}");

    // Space comes back: recording resumes without a restart.
    std::fs::remove_file(&filler).unwrap();
    let r = scan(&k, "F-2999");
    assert_eq!(r["outcome"], "recorded", "{r}");
    recorded.push(r["record_id"].as_str().unwrap().to_string());
    assert_eq!(get(d.port(), "/health").0, 200);
    let (status, _) = d.terminate();
    assert!(status.success());

    let db = k.open_db();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    for id in &recorded {
        let n: i64 = db
            .query_row("SELECT count(*) FROM attendance WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1, "acknowledged record {id}");
    }
}

#[test]
fn health_command_and_demo_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut demo = std::process::Command::new(BIN);
    demo.args(["demo", "--seconds", "12", "--speed", "120", "--http"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--dir")
        .arg(dir.path().join("demo"))
        .env("RUST_LOG", "info");
    let d = Running::start(demo);
    d.wait_for("scan_recorded", Duration::from_secs(20), |l| {
        l.contains("scan_recorded")
    });
    let out = std::process::Command::new(BIN)
        .args(["health", "--wait", "10", "--url"])
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (st, lines) = d.wait_exit(Duration::from_secs(30));
    assert!(st.success(), "{}", lines.join("\n"));
    let text = lines.join("\n");
    assert!(text.contains("scan_duplicate"), "{text}");
    assert!(text.contains("unknown_student"), "{text}");
    // Nothing listens any more: the health command fails.
    let out = std::process::Command::new(BIN)
        .args(["health", "--url"])
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_stray_secret_file_is_refused_alone_and_the_daemon_keeps_recording() {
    use std::os::unix::fs::PermissionsExt;
    let k = Kiosk::new();
    let secrets = k.data.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    let readme = secrets.join("README");
    std::fs::write(&readme, "notes for the technician").unwrap();
    std::fs::set_permissions(&readme, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = k.spawn(&[]);
    d.wait_ready();
    let (code, body) = get(d.port(), "/health");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("degraded") && body.contains("README") && body.contains("chmod 600"),
        "{body}"
    );
    assert!(!body.contains("notes for the technician"));
    // More than one import chunk (5000 rows) through the running daemon.
    k.import("S", 12_000);
    for sn in ["S-0000", "S-11999"] {
        let r = scan(&k, sn);
        assert_eq!(r["outcome"], "recorded", "{r}");
    }
    let (st, lines) = d.terminate();
    assert!(st.success(), "{}", lines.join("\n"));
}

#[test]
fn quarantined_rows_are_listed_retried_and_discarded_from_the_cli() {
    use attendance::domain::schedule::{Schedule, ScheduleConfig};
    use attendance::store::outbox::QuarantineItem;
    use attendance::store::{AttendanceRecord, Store};
    let k = Kiosk::new();
    k.import("S", 1);
    // Three records whose outbox rows the cloud refused (the library's own
    // store operations, as the sync engine would do it).
    let seqs: Vec<i64> = {
        let sched = Schedule::from_config(&ScheduleConfig::default(), "schedule").unwrap();
        let mut store = Store::open(
            &k.db(),
            "test-kiosk",
            sched,
            chrono::Duration::minutes(5),
            Duration::from_secs(5),
        )
        .unwrap();
        let recs: Vec<AttendanceRecord> = (0..3)
            .map(|i| {
                let t = format!("2026-11-20T07:00:0{i}.000Z");
                AttendanceRecord {
                    id: uuid::Uuid::new_v4(),
                    student_number: "S-0000".into(),
                    school_date: "2026-11-20".parse().unwrap(),
                    session: format!("s{i}"),
                    time_in: Some(t.clone()),
                    time_out: None,
                    status: "present".into(),
                    device_id: "test-kiosk".into(),
                    photo_path: None,
                    clock_synced: true,
                    source: "replay".into(),
                    created_at: t.clone(),
                    updated_at: t,
                }
            })
            .collect();
        store.insert_records(&recs).unwrap();
        let seqs: Vec<i64> = store
            .outbox_rows_after(0, 10)
            .unwrap()
            .iter()
            .map(|r| r.seq)
            .collect();
        assert_eq!(seqs.len(), 3);
        store
            .quarantine_outbox(&[QuarantineItem {
                seqs: seqs.clone(),
                reason: "pgrst_22P02".into(),
                http_status: Some(400),
            }])
            .unwrap();
        seqs
    };
    let cli = |args: &[&str]| -> serde_json::Value {
        let out = k
            .cmd()
            .args(["sync", "quarantine"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // No daemon: the CLI opens the store itself.
    let list = cli(&["list"]);
    assert_eq!(list["depth"], 3, "{list}");
    assert_eq!(list["quarantined"][0]["reason"], "pgrst_22P02", "{list}");
    // Through the running daemon's control socket.
    let d = k.spawn(&[]);
    d.wait_ready();
    let r = cli(&["retry", &seqs[0].to_string()]);
    assert_eq!(r["retried"]["done"], 1, "{r}");
    let r = cli(&["discard", "--all"]);
    assert_eq!(r["discarded"]["done"], 2, "{r}");
    assert_eq!(cli(&["list"])["depth"], 0);
    let (st, lines) = d.terminate();
    assert!(st.success(), "{}", lines.join("\n"));
    let conn = k.open_db();
    let outbox: i64 = conn
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(outbox, 1, "the retried record is queued again");
}
