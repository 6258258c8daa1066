//! Harness for tests that run the real `attendance` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_attendance");
/// Monday morning at the school, inside the default login window.
pub const MORNING: &str = "2026-11-23T07:00:00+08:00";

mod port;
#[allow(unused_imports)] // not every test binary needs it
pub use port::free_port;

/// A kiosk's folders and config, with no daemon running.
pub struct Kiosk {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub config: PathBuf,
}

impl Kiosk {
    pub fn new() -> Self {
        Self::with_config(serde_json::json!({}))
    }

    /// `extra` is merged over the test defaults.
    pub fn with_config(extra: serde_json::Value) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Port 0: the daemon picks a free port and logs it (no races between tests).
        let mut cfg = serde_json::json!({
            "device_id": "test-kiosk",
            "data_dir": data,
            "http": {"listen": "127.0.0.1:0"},
            "log": {"format": "json", "level": "info"},
        });
        merge(&mut cfg, extra);
        let config = dir.path().join("device.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
        Kiosk { dir, data, config }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env(
            "ATTENDANCE_SYSTEM_CONFIG",
            self.dir.path().join("no-system.json"),
        )
        .env("ATTENDANCE_DEVICE_CONFIG", &self.config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("RUST_LOG");
        c
    }

    pub fn db(&self) -> PathBuf {
        self.data.join("db/attendance.sqlite3")
    }

    /// Imports students `prefix-0000..count` through the CLI.
    pub fn import(&self, prefix: &str, count: usize) {
        let csv = self.dir.path().join(format!("{prefix}.csv"));
        let mut text =
            String::from("student_number,full_name,grade,section,guardian_phone,active\n");
        for i in 0..count {
            text.push_str(&format!(
                "{prefix}-{i:04},Student {i},7,A,+63917{i:07},true\n"
            ));
        }
        std::fs::write(&csv, text).unwrap();
        let out = self
            .cmd()
            .args(["students", "import"])
            .arg(&csv)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn spawn(&self, extra: &[&str]) -> Running {
        let mut c = self.cmd();
        c.args(["run", "--simulated-clock", MORNING]).args(extra);
        Running::start(c)
    }

    pub fn open_db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.db()).unwrap()
    }
}

fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(b), serde_json::Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

type Lines = Arc<(Mutex<Vec<String>>, Condvar)>;

/// A running daemon whose stderr (JSON logs) is collected line by line.
pub struct Running {
    pub child: Child,
    lines: Lines,
}

impl Running {
    pub fn start(mut c: Command) -> Self {
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines: Lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (m, cv) = &*l2;
                m.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        Running { child, lines }
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.0.lock().unwrap().clone()
    }

    /// Waits until some stderr line satisfies `pred`.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.lines;
        let mut guard = m.lock().unwrap();
        loop {
            if let Some(l) = guard.iter().find(|l| pred(l)) {
                return l.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "timed out waiting for {what}; stderr so far:\n{}",
                    guard.join("\n")
                );
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    pub fn wait_ready(&self) {
        self.wait_for("ready", Duration::from_secs(20), |l| {
            event(l).as_deref() == Some("ready")
        });
    }

    /// The HTTP port the daemon logged when it became ready.
    pub fn port(&self) -> u16 {
        let line = self.wait_for("ready", Duration::from_secs(20), |l| {
            event(l).as_deref() == Some("ready")
        });
        field(&line, "http")
            .and_then(|a| a.rsplit(':').next()?.parse().ok())
            .expect("ready line names the HTTP address")
    }

    /// Record ids of every `scan_recorded` event seen so far.
    pub fn recorded_ids(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter(|l| event(l).as_deref() == Some("scan_recorded"))
            .filter_map(|l| field(l, "record_id"))
            .collect()
    }

    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(self) -> (ExitStatus, Vec<String>) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.exit_within(Duration::from_secs(20), "did not stop on SIGTERM")
    }

    pub fn wait_exit(self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        self.exit_within(timeout, "did not exit")
    }

    /// Waits for the daemon to exit; on timeout kills it and panics with
    /// `what` and its log.
    fn exit_within(mut self, timeout: Duration, what: &str) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                return (st, self.lines());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon {what}:\n{}", self.lines().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn json(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str(line).ok()
}

/// The `message` of a JSON log line (tracing's field for the event name).
pub fn event(line: &str) -> Option<String> {
    json(line)?
        .get("fields")?
        .get("message")?
        .as_str()
        .map(String::from)
}

pub fn field(line: &str, name: &str) -> Option<String> {
    let v = json(line)?;
    let f = v.get("fields")?.get(name)?;
    Some(
        f.as_str()
            .map(String::from)
            .unwrap_or_else(|| f.to_string()),
    )
}

/// A raw HTTP/1.0 exchange; returns (status, body).
pub fn http(port: u16, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

pub fn get(port: u16, path: &str) -> (u16, String) {
    http(port, &format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n"))
}

pub fn wait_file(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
