//! No personal data in any daemon output (issue 11, point 7): the real
//! daemon, at debug level, in both log formats, with sync on against a fake
//! cloud whose roster carries names and phone numbers (one phone of the
//! wrong JSON type), whose upsert answers 500 with those in its body, and a
//! malformed JSON card carrying a name and a phone number. Everything the
//! daemon writes (stdout and stderr) must contain none of them.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

const SECRETS_IN_DATA: &[&str] = &[
    "Juan",
    "Dela Cruz",
    "Maria",
    "Santos",
    "Ana Reyes",
    "9171234567",
    "9179876543",
    "9175550000",
];

fn roster() -> String {
    serde_json::json!([
        {"student_number": "PRIV-0001", "full_name": "Juan Dela Cruz", "grade": "7", "section": "A",
         "guardian_phone": "+639171234567", "active": true, "updated_at": "2026-11-01T00:00:00+00:00"},
        {"student_number": "PRIV-0002", "full_name": "Maria Clara Santos", "grade": "7", "section": "A",
         "guardian_phone": 639179876543u64, "active": true, "updated_at": "2026-11-01T00:00:01+00:00"}
    ])
    .to_string()
}

/// A cloud that serves the roster and refuses every upsert with a 500 whose
/// body names a student and a phone number.
fn fake_cloud() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let upserts = Arc::new(AtomicUsize::new(0));
    let u2 = upserts.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Headers, then the body by Content-Length.
            let (head, mut body_len) = loop {
                let Ok(n) = s.read(&mut chunk) else {
                    break (String::new(), 0);
                };
                if n == 0 {
                    break (String::new(), 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    break (head, (i + 4 + len).saturating_sub(buf.len()));
                }
            };
            while body_len > 0 {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body_len = body_len.saturating_sub(n),
                }
            }
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let (status, body) = if path.starts_with("/students") {
                if path.contains("or=") {
                    (200, "[]".to_string())
                } else {
                    (200, roster())
                }
            } else if path.starts_with("/attendance") {
                u2.fetch_add(1, Ordering::SeqCst);
                (
                    500,
                    serde_json::json!({"code": "XX000", "message": "internal error",
                        "details": "row (Juan Dela Cruz, +639171234567, Ana Reyes +639175550000)", "hint": null})
                    .to_string(),
                )
            } else {
                (404, "{}".to_string())
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, upserts)
}

fn run_once(format: &str) {
    let (cloud, upserts) = fake_cloud();
    let k = Kiosk::with_config(serde_json::json!({
        "log": {"format": format, "level": "debug"},
        "sync": {
            "enabled": true,
            "base_url": format!("http://127.0.0.1:{cloud}"),
            "lab": true,
            "rest_path": "",
            "poll_interval_ms": 50,
            "backoff": {"initial_ms": 50, "max_ms": 200},
            "roster": {"interval_s": 1},
            "photos": {"enabled": false}
        }
    }));
    let secrets = k.data.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    for (name, value) in [
        ("supabase-api-key", "test-anon-key"),
        ("supabase-device-jwt", "test.device.jwt"),
    ] {
        let p = secrets.join(name);
        std::fs::write(&p, value).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let out_path = k.dir.path().join("daemon.out");
    let err_path = k.dir.path().join("daemon.err");
    let mut child = k
        .cmd()
        .args(["run", "--simulated-clock", MORNING])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let output = || {
        format!(
            "{}{}",
            std::fs::read_to_string(&out_path).unwrap_or_default(),
            std::fs::read_to_string(&err_path).unwrap_or_default()
        )
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "{format}: timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("the roster from the cloud", &|| {
        output().contains("roster updated from the cloud")
    });
    let scan = |payload: &str| {
        k.cmd()
            .args(["scan", payload])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    assert!(
        scan("PRIV-0001").success(),
        "{format}: the roster student records"
    );
    // A malformed JSON card carrying a name and a phone number.
    assert!(!scan(r#"{"student_number": "Juan Dela Cruz", "phone": "+639171234567""#).success());
    wait("the cloud's 500 answers", &|| {
        upserts.load(Ordering::SeqCst) >= 2
    });
    wait("the failure in the log", &|| {
        output().contains("attendance sync failed")
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let all = output();
    assert!(all.contains("scan_rejected"), "{format}: {all}");
    for s in SECRETS_IN_DATA {
        assert!(
            !all.contains(s),
            "{format}: daemon output contains {s:?}:\n{all}"
        );
    }
    assert!(!all.contains("test.device.jwt") && !all.contains("test-anon-key"));
}

#[test]
fn no_names_phones_or_card_payloads_in_any_log_format() {
    for format in ["human", "json"] {
        run_once(format);
    }
}
