//! Shared harness for the sync integration tests: a real PostgreSQL and a
//! real PostgREST started in a temporary directory on free ports, a local
//! store with a backlog, and a controllable TCP proxy / fake server.
//!
//! The stack tests run when `ATTENDANCE_CLOUD_TESTS=1` (set by
//! tests/cloud/run.sh, which installs PostgreSQL and PostgREST). Then a
//! missing binary is a test FAILURE. Without the variable they print a loud
//! SKIPPED line and return.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attendance::domain::schedule::{Schedule, ScheduleConfig};
use attendance::store::{AttendanceRecord, Store, StoreHandle};
use attendance::sync::{Credentials, SyncConfig, SyncEngine, SyncMetrics, SyncSetup};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-secret-for-postgrest-at-least-32-chars!";
pub const DEVICE: &str = "kiosk-01";
pub const OTHER_DEVICE: &str = "kiosk-02";

/// True when the stack tests are enabled; prints a loud skip otherwise.
pub fn stack_enabled(test: &str) -> bool {
    if std::env::var("ATTENDANCE_CLOUD_TESTS").as_deref() == Ok("1") {
        return true;
    }
    // Straight to the stderr handle: the test harness captures eprintln!,
    // and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: needs PostgreSQL + PostgREST; run tests/cloud/run.sh (sets ATTENDANCE_CLOUD_TESTS=1) ***\n"
    );
    false
}

#[path = "../common/port.rs"]
mod port;
#[allow(unused_imports)] // not every test binary needs it
pub use port::free_port;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL tool, as `postgres` when we are root (initdb refuses root).
fn pg_tool(bin: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

pub fn sign_jwt(claims: serde_json::Value) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let head = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64(claims.to_string().as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_SECRET.as_bytes()).unwrap();
    mac.update(format!("{head}.{body}").as_bytes());
    let sig = b64(&mac.finalize().into_bytes());
    format!("{head}.{body}.{sig}")
}

pub fn device_jwt(device: &str) -> String {
    sign_jwt(serde_json::json!({"role": "kiosk_device", "device_id": device, "exp": 4102444800u64}))
}

/// PostgreSQL + PostgREST with the shipped migrations applied.
pub struct Stack {
    _dir: tempfile::TempDir,
    data: PathBuf,
    pg_bin: PathBuf,
    pub pg_port: u16,
    pub rest_port: u16,
    postgrest: Child,
}

impl Stack {
    pub fn start() -> Stack {
        let pg_bin = PathBuf::from(
            std::env::var("ATTENDANCE_PG_BIN")
                .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()),
        );
        let postgrest_bin = PathBuf::from(std::env::var("ATTENDANCE_POSTGREST").expect(
            "ATTENDANCE_POSTGREST must name the PostgREST binary (tests/cloud/run.sh sets it)",
        ));
        assert!(
            pg_bin.join("initdb").exists(),
            "PostgreSQL not found in {} (ATTENDANCE_PG_BIN)",
            pg_bin.display()
        );
        assert!(
            postgrest_bin.exists(),
            "PostgREST not found at {}",
            postgrest_bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let st = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown of the cluster directory failed");
        }
        let data = dir.path().join("data");
        let out = pg_tool(
            &pg_bin.join("initdb"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg_port = free_port();
        let opts = format!(
            "-p {pg_port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=40 -c shared_buffers=32MB",
            dir.path().display()
        );
        let log = dir.path().join("pg.log");
        let out = pg_tool(
            &pg_bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let mut stack = Stack {
            _dir: dir,
            data,
            pg_bin,
            pg_port,
            rest_port: 0,
            postgrest: Command::new("true").spawn().unwrap(),
        };
        stack.sql("CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD 'authpw'; CREATE ROLE web_anon NOLOGIN; GRANT web_anon TO authenticator;");
        let mut files: Vec<PathBuf> = std::fs::read_dir(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("cloud/supabase/migrations"),
        )
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
        files.sort();
        assert!(!files.is_empty());
        for f in &files {
            stack.sql_file(f);
        }
        // Apply twice: the migrations promise to be idempotent.
        for f in &files {
            stack.sql_file(f);
        }
        stack.sql(
            "INSERT INTO schools (school_id, name) VALUES ('sch-1', 'One'), ('sch-2', 'Two');
             INSERT INTO devices (device_id, school_id) VALUES ('kiosk-01', 'sch-1'), ('kiosk-02', 'sch-2');",
        );
        let rest_port = free_port();
        let conf = stack._dir.path().join("postgrest.conf");
        std::fs::write(
            &conf,
            format!(
                "db-uri = \"postgres://authenticator:authpw@127.0.0.1:{pg_port}/postgres\"\n\
                 db-schemas = \"public\"\ndb-anon-role = \"web_anon\"\n\
                 jwt-secret = \"{JWT_SECRET}\"\nserver-host = \"127.0.0.1\"\nserver-port = {rest_port}\n\
                 db-pool = 4\nlog-level = \"crit\"\n"
            ),
        )
        .unwrap();
        let child = Command::new(&postgrest_bin)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stack._dir.path().join("postgrest.log")).unwrap())
            .spawn()
            .unwrap();
        stack.postgrest = child;
        stack.rest_port = rest_port;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = http_get(rest_port, "/", None) {
                break;
            }
            assert!(Instant::now() < deadline, "PostgREST did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        stack
    }

    pub fn rest_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest_port)
    }

    fn psql(&self, extra: &[&str]) -> String {
        let out = Command::new(self.pg_bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.pg_port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-qAtX"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn sql(&self, sql: &str) -> String {
        self.psql(&["-c", sql])
    }

    pub fn sql_file(&self, f: &Path) {
        self.psql(&["-f", f.to_str().unwrap()]);
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.sql(sql).trim().parse().unwrap()
    }

    pub fn cloud_ids(&self) -> BTreeSet<String> {
        self.sql("SELECT id FROM attendance ORDER BY id")
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.postgrest.kill();
        let _ = self.postgrest.wait();
        let _ = pg_tool(
            &self.pg_bin.join("pg_ctl"),
            &[
                "-D",
                self.data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

/// A minimal blocking HTTP/1.1 GET for readiness checks.
pub fn http_get(port: u16, path: &str, bearer: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = bearer
        .map(|b| format!("Authorization: Bearer {b}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// A local store in a temporary data directory.
pub struct Local {
    pub dir: tempfile::TempDir,
    pub handle: StoreHandle,
}

pub fn open_store(dir: &Path) -> Store {
    let schedule = Schedule::from_config(&ScheduleConfig::default(), "schedule").unwrap();
    Store::open(
        &dir.join("db/attendance.sqlite3"),
        DEVICE,
        schedule,
        chrono::Duration::seconds(300),
        Duration::from_secs(5),
    )
    .unwrap()
}

pub fn local() -> Local {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let (handle, _closed) = StoreHandle::spawn(store, 256).unwrap();
    Local { dir, handle }
}

/// A record as the store would write it (same struct, same serialisation).
pub fn record(i: usize, device: &str, date: &str) -> AttendanceRecord {
    let t = format!("{date}T07:{:02}:{:02}.000Z", (i / 60) % 60, i % 60);
    AttendanceRecord {
        id: Uuid::new_v4(),
        student_number: format!("S{i:06}"),
        school_date: date.parse().unwrap(),
        session: "morning".into(),
        time_in: Some(t.clone()),
        time_out: None,
        status: "present".into(),
        device_id: device.into(),
        photo_path: None,
        clock_synced: true,
        source: "replay".into(),
        created_at: t.clone(),
        updated_at: t,
    }
}

/// Writes records and their outbox rows as the store's scan path does
/// (through the store's own operation).
pub fn insert_records(store: &mut Store, recs: &[AttendanceRecord]) {
    store.insert_records(recs).unwrap();
}

pub fn sync_config(base_url: &str, rest_path: &str) -> SyncConfig {
    let mut c = SyncConfig {
        enabled: true,
        base_url: base_url.into(),
        rest_path: rest_path.into(),
        // The test servers speak plain http on 127.0.0.1.
        lab: true,
        batch_size: 100,
        poll_interval_ms: 50,
        ..SyncConfig::default()
    };
    c.rest.connect_timeout_ms = 300;
    c.rest.read_timeout_ms = 700;
    c.rest.request_timeout_ms = 2000;
    c.storage = c.rest.clone();
    c.breaker.failure_threshold = 2;
    c.breaker.open_ms = 300;
    c.backoff.initial_ms = 50;
    c.backoff.max_ms = 400;
    c.roster.enabled = false;
    c.photos.enabled = false;
    c
}

pub struct Running {
    pub metrics: Arc<SyncMetrics>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), attendance::sync::SyncError>>,
}

impl Running {
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("engine did not stop within 5 s of shutdown")
            .unwrap()
            .unwrap();
    }
}

pub fn start_engine(cfg: SyncConfig, local: &Local, device_jwt: String) -> Running {
    let metrics = Arc::new(SyncMetrics::default());
    let shutdown = CancellationToken::new();
    let engine = SyncEngine::new(SyncSetup {
        config: cfg,
        device_id: DEVICE.into(),
        photos_dir: local.dir.path().join("photos"),
        store: local.handle.clone(),
        credentials: Credentials {
            api_key: "test-anon-key".into(),
            device_jwt,
        },
        metrics: metrics.clone(),
        events: None,
    })
    .unwrap();
    let task = tokio::spawn(engine.run(shutdown.clone()));
    Running {
        metrics,
        shutdown,
        task,
    }
}

/// Waits until `f` is true, polling; panics with `what` after `secs`.
pub async fn wait_for(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn local_query<T: Send + 'static>(
    h: &StoreHandle,
    sql: &'static str,
    f: fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    // Tests read through their own read-only connection (WAL lets it run
    // beside the store's writer); only the store writes.
    let path = h.call(|s| s.path().to_path_buf()).await.unwrap();
    tokio::task::spawn_blocking(move || {
        let c = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let mut st = c.prepare(sql).unwrap();
        st.query_map([], f)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    })
    .await
    .unwrap()
}

pub async fn local_count(h: &StoreHandle, sql: &'static str) -> i64 {
    local_query(h, sql, |r| r.get(0)).await[0]
}

pub async fn synced_ids(h: &StoreHandle) -> BTreeSet<String> {
    local_query(
        h,
        "SELECT id FROM attendance WHERE synced_at IS NOT NULL",
        |r| r.get(0),
    )
    .await
    .into_iter()
    .collect()
}

// ------------------------------------------------------------------ proxy

/// What the controllable server does with the next connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward to the upstream and return its answer.
    Forward,
    /// Forward, let the upstream commit, then drop the response.
    DropResponse,
    /// Accept and never answer.
    Hang,
    /// Answer 500 without forwarding.
    Error500,
    /// Wait this many ms, then forward.
    Slow(u64),
    /// Flapping: three requests answered 500, the fourth forwarded, and so on.
    Flap,
}

/// A small HTTP/1.1 proxy in front of PostgREST whose behaviour the test
/// sets, counting the client connections open at once (a connection the
/// client has closed no longer counts, even if the proxy is still busy
/// with its request).
pub struct Proxy {
    pub addr: SocketAddr,
    pub mode: Arc<Mutex<Mode>>,
    pub requests: Arc<AtomicUsize>,
    pub open_now: Arc<AtomicUsize>,
    pub open_max: Arc<AtomicUsize>,
}

pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one request (Content-Length bodies only, as reqwest sends them).
pub fn read_request(s: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let first = lines.next()?;
    let mut parts = first.split(' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut byte).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&byte[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

pub fn respond(s: &mut TcpStream, status: u16, body: &str) {
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn forward(req: &Request, upstream: u16) -> std::io::Result<Vec<u8>> {
    let mut u = TcpStream::connect(("127.0.0.1", upstream))?;
    u.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        if !k.eq_ignore_ascii_case("connection") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    u.write_all(head.as_bytes())?;
    u.write_all(&req.body)?;
    let mut out = Vec::new();
    u.read_to_end(&mut out)?;
    // Make the client close too: one request per connection.
    if let Some(p) = out.windows(2).position(|w| w == b"\r\n") {
        out.splice(p + 2..p + 2, b"Connection: close\r\n".iter().copied());
    }
    Ok(out)
}

impl Proxy {
    /// Listens on `port` (0 = any) and forwards to `upstream`.
    pub fn start(port: u16, upstream: u16, mode: Mode) -> Proxy {
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let addr = l.local_addr().unwrap();
        let p = Proxy {
            addr,
            mode: Arc::new(Mutex::new(mode)),
            requests: Arc::new(AtomicUsize::new(0)),
            open_now: Arc::new(AtomicUsize::new(0)),
            open_max: Arc::new(AtomicUsize::new(0)),
        };
        let (mode, requests, open_now, open_max) = (
            p.mode.clone(),
            p.requests.clone(),
            p.open_now.clone(),
            p.open_max.clone(),
        );
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut s) = conn else { continue };
                let (mode, requests, open_now, open_max) = (
                    mode.clone(),
                    requests.clone(),
                    open_now.clone(),
                    open_max.clone(),
                );
                std::thread::spawn(move || {
                    let n = open_now.fetch_add(1, Ordering::SeqCst) + 1;
                    open_max.fetch_max(n, Ordering::SeqCst);
                    let mut counted = true;
                    if let Some(req) = read_request(&mut s) {
                        let k = requests.fetch_add(1, Ordering::SeqCst);
                        let m = *mode.lock().unwrap();
                        match m {
                            Mode::Forward => {
                                if let Ok(r) = forward(&req, upstream) {
                                    let _ = s.write_all(&r);
                                }
                            }
                            Mode::DropResponse => {
                                let _ = forward(&req, upstream);
                            }
                            Mode::Hang => {
                                // Hold the socket until the client gives up.
                                let mut b = [0u8; 64];
                                while matches!(s.read(&mut b), Ok(n) if n > 0) {}
                            }
                            Mode::Error500 => respond(&mut s, 500, r#"{"message":"boom"}"#),
                            Mode::Slow(ms) => {
                                // Wait, noticing whether the client gives up
                                // (EOF): then its connection no longer counts
                                // as open, but the request still reaches the
                                // upstream late, as with a real slow server.
                                let deadline = Instant::now() + Duration::from_millis(ms);
                                let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
                                let mut b = [0u8; 64];
                                while Instant::now() < deadline {
                                    if let Ok(0) = s.read(&mut b) {
                                        if counted {
                                            open_now.fetch_sub(1, Ordering::SeqCst);
                                            counted = false;
                                        }
                                        std::thread::sleep(
                                            deadline.saturating_duration_since(Instant::now()),
                                        );
                                        break;
                                    }
                                }
                                if let Ok(r) = forward(&req, upstream)
                                    && counted
                                {
                                    let _ = s.write_all(&r);
                                }
                            }
                            Mode::Flap => {
                                if k % 4 != 3 {
                                    respond(&mut s, 500, r#"{"message":"flap"}"#)
                                } else if let Ok(r) = forward(&req, upstream) {
                                    let _ = s.write_all(&r);
                                }
                            }
                        }
                    }
                    if counted {
                        open_now.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        p
    }

    pub fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}
