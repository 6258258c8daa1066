//! End to end: the real `attendance run` daemon with `sync.enabled`, against
//! a real PostgREST + PostgreSQL. The roster comes from the cloud (nothing
//! is imported locally), scans injected through the control socket reach
//! the cloud, and SIGTERM still stops the daemon cleanly with sync running.
//! Run by tests/cloud/run.sh.

mod sync_common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sync_common::*;

const BIN: &str = env!("CARGO_BIN_EXE_attendance");

fn wait(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn daemon_pulls_the_roster_and_syncs_scans() {
    if !stack_enabled("daemon_pulls_the_roster_and_syncs_scans") {
        return;
    }
    let stack = Stack::start();
    stack.sql(
        "INSERT INTO students (school_id, student_number, full_name, guardian_phone)
           SELECT 'sch-1', 'D-' || lpad(g::text, 4, '0'), 'Student ' || g, '+63917' || lpad(g::text, 7, '0')
           FROM generate_series(1, 5) g;",
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secrets = data.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    for (name, value) in [
        ("supabase-api-key", "test-anon-key".to_string()),
        ("supabase-device-jwt", device_jwt(DEVICE)),
    ] {
        let p = secrets.join(name);
        std::fs::write(&p, value).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let port = free_port();
    let cfg = serde_json::json!({
        "device_id": DEVICE,
        "data_dir": data,
        "http": {"listen": format!("127.0.0.1:{port}")},
        "log": {"format": "json", "level": "info"},
        "sync": {
            "enabled": true,
            "base_url": stack.rest_url(),
            "lab": true,
            "rest_path": "",
            "poll_interval_ms": 100,
            "roster": {"interval_s": 1}
        }
    });
    let device_cfg = dir.path().join("device.json");
    std::fs::write(&device_cfg, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let cmd = || {
        let mut c = Command::new(BIN);
        c.env("ATTENDANCE_SYSTEM_CONFIG", dir.path().join("none.json"))
            .env("ATTENDANCE_DEVICE_CONFIG", &device_cfg)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("RUST_LOG");
        c
    };
    let check = cmd().arg("check-config").output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let mut child = cmd()
        // Monday 07:10 in Asia/Manila: inside the morning login window.
        .args(["run", "--simulated-clock", "2026-11-23T07:10:00+08:00"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let l2 = lines.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines() {
            let Ok(l) = l else { break };
            l2.lock().unwrap().push(l);
        }
    });
    let logs = || lines.lock().unwrap().join("\n");

    // The roster arrives from the cloud.
    let db = data.join("db/attendance.sqlite3");
    wait(60, "roster pulled by the daemon", || {
        rusqlite::Connection::open(&db)
            .and_then(|c| c.query_row("SELECT count(*) FROM students", [], |r| r.get::<_, i64>(0)))
            .is_ok_and(|n| n == 5)
    });

    let mut ids = Vec::new();
    for sn in ["D-0001", "D-0002", "D-0003"] {
        let out = cmd().args(["scan", sn]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "scan {sn}: {} {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                logs()
            )
        });
        assert_eq!(v["outcome"], "recorded", "{v}\n{}", logs());
        ids.push(v["record_id"].as_str().unwrap().to_string());
    }
    wait(60, "scans in the cloud", || {
        stack.count("SELECT count(*) FROM attendance") == 3
    });
    let cloud = stack.cloud_ids();
    for id in &ids {
        assert!(cloud.contains(id), "{id} not in the cloud");
    }
    assert_eq!(
        stack
            .sql("SELECT DISTINCT device_id || '/' || school_id FROM attendance")
            .trim(),
        "kiosk-01/sch-1"
    );

    // SIGTERM: ordered shutdown with the sync task running.
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "daemon did not stop\n{}", logs());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{}", logs());
    let all = logs();
    assert!(all.contains("cloud sync started"), "{all}");
    assert!(all.contains("cloud sync stopped"), "{all}");
    assert!(all.contains("stopped cleanly"), "{all}");
    // Secrets never reach the logs.
    assert!(!all.contains(&device_jwt(DEVICE)));
    assert!(!all.contains("+63917"));
}
