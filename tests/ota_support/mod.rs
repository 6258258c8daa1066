//! Test support for the update agent against a real HTTP peer: a small DDI
//! server written from the hawkBit DDI spec (what goosebit lacks: cancel,
//! maintenance windows, sha256, real action ids), a fake kiosk, and a
//! driver that runs the real agent with `HttpDdi` + `HttpFetcher` and RAUC's
//! `FakeInstaller`.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attendance::domain::schedule::{Schedule, ScheduleConfig};
use attendance::ota::OtaConfig;
use attendance::ota::agent::{Agent, Kiosk, Settings};
use attendance::ota::ddi::{Auth, HttpDdi};
use attendance::ota::machine::BootFacts;
use attendance::ota::policy::KioskFacts;
use attendance::ota::rauc::FakeInstaller;
use attendance::ota::system::HttpFetcher;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const TENANT: &str = "T";
pub const DEVICE: &str = "kiosk-07";

#[derive(Default)]
pub struct MockState {
    /// The open deployment (without the link, added per request).
    pub deployment: Option<Value>,
    pub cancel: Option<String>,
    pub bundle: Vec<u8>,
    /// The next download sends only this many bytes, then closes.
    pub cut_after: Option<usize>,
    /// Pause between 16 KiB chunks of a download.
    pub chunk_delay: Duration,
    pub download_status: Option<u16>,
    /// Statuses the next polls answer with (e.g. 429).
    pub poll_errors: VecDeque<u16>,
    pub feedback: Vec<Value>,
    pub cancel_feedback: Vec<Value>,
    pub configs: Vec<Value>,
    pub ranges: Vec<Option<String>>,
    pub auth_headers: Vec<Option<String>>,
    pub polls: u32,
}

#[derive(Clone)]
pub struct MockDdi {
    pub state: Arc<Mutex<MockState>>,
    pub url: String,
}

impl MockDdi {
    pub async fn start() -> MockDdi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(MockState::default()));
        let s = state.clone();
        let base = url.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, base) = (s.clone(), base.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, s, base).await;
                });
            }
        });
        MockDdi { state, url }
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut MockState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Offers `bundle` as action `id` with the given DDI fields.
    pub fn offer(
        &self,
        id: &str,
        version: &str,
        bundle: &[u8],
        hashes: Value,
        window: Option<&str>,
    ) {
        let url = format!("{}/dl/{id}", self.url);
        let mut deployment = json!({
            "download": "forced", "update": "forced",
            "chunks": [{"part": "os", "version": version, "name": "kiosk",
                "artifacts": [{"filename": "kiosk.raucb", "hashes": hashes, "size": bundle.len(),
                    "_links": {"download-http": {"href": url}}}]}]
        });
        if let Some(w) = window {
            deployment["maintenanceWindow"] = json!(w);
            if w == "unavailable" {
                deployment["update"] = json!("skip");
            }
        }
        self.with(|s| {
            s.bundle = bundle.to_vec();
            s.deployment = Some(json!({"id": id, "deployment": deployment}));
        });
    }

    pub fn finals(&self) -> Vec<Value> {
        self.with(|s| {
            s.feedback
                .iter()
                .filter(|f| f["status"]["execution"] == "closed")
                .cloned()
                .collect()
        })
    }
}

struct Request {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

async fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut tmp).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

async fn respond(stream: &mut TcpStream, status: u16, extra: &str, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

async fn serve(mut stream: TcpStream, state: Arc<Mutex<MockState>>, base: String) -> Option<()> {
    let req = read_request(&mut stream).await?;
    let prefix = format!("/{TENANT}/controller/v1/{DEVICE}");
    let path = req.path.split('?').next().unwrap_or("").to_string();
    let json_body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    if let Some(id) = path.strip_prefix("/dl/") {
        let _ = id;
        return download(&mut stream, &req, &state).await;
    }
    let Some(rest) = path.strip_prefix(&prefix) else {
        respond(&mut stream, 404, "", b"{}").await;
        return Some(());
    };
    let (status, body) = {
        let mut s = state.lock().unwrap();
        s.auth_headers
            .push(req.headers.get("authorization").cloned());
        match (req.method.as_str(), rest) {
            ("GET", "") => {
                s.polls += 1;
                if let Some(code) = s.poll_errors.pop_front() {
                    (code, json!({}))
                } else {
                    let mut links = serde_json::Map::new();
                    if s.configs.is_empty() {
                        links.insert(
                            "configData".into(),
                            json!({"href": format!("{base}{prefix}/configData")}),
                        );
                    }
                    if let Some(c) = &s.cancel {
                        links.insert(
                            "cancelAction".into(),
                            json!({"href": format!("{base}{prefix}/cancelAction/{c}")}),
                        );
                    } else if let Some(d) = &s.deployment {
                        let id = d["id"].as_str().unwrap_or("0");
                        links.insert(
                            "deploymentBase".into(),
                            json!({"href": format!("{base}{prefix}/deploymentBase/{id}?c=-1")}),
                        );
                    }
                    (
                        200,
                        json!({"config": {"polling": {"sleep": "00:00:30"}}, "_links": links}),
                    )
                }
            }
            ("PUT", "/configData") => {
                s.configs.push(json_body);
                (200, json!({}))
            }
            ("GET", r) if r.starts_with("/deploymentBase/") => match &s.deployment {
                Some(d) => (200, d.clone()),
                None => (404, json!({})),
            },
            ("GET", r) if r.starts_with("/cancelAction/") => {
                let id = r.trim_start_matches("/cancelAction/").to_string();
                (200, json!({"id": id, "cancelAction": {"stopId": id}}))
            }
            ("POST", r) if r.starts_with("/cancelAction/") && r.ends_with("/feedback") => {
                if json_body["status"]["execution"] == "closed" {
                    s.cancel = None;
                    s.deployment = None;
                } else {
                    s.cancel = None;
                }
                s.cancel_feedback.push(json_body);
                (200, json!({}))
            }
            ("POST", r) if r.starts_with("/deploymentBase/") && r.ends_with("/feedback") => {
                if json_body["status"]["execution"] == "closed" {
                    s.deployment = None;
                }
                s.feedback.push(json_body);
                (200, json!({}))
            }
            _ => (404, json!({})),
        }
    };
    respond(&mut stream, status, "", body.to_string().as_bytes()).await;
    Some(())
}

async fn download(
    stream: &mut TcpStream,
    req: &Request,
    state: &Arc<Mutex<MockState>>,
) -> Option<()> {
    let (bundle, cut, delay, status) = {
        let mut s = state.lock().unwrap();
        s.ranges.push(req.headers.get("range").cloned());
        s.auth_headers
            .push(req.headers.get("authorization").cloned());
        (
            s.bundle.clone(),
            s.cut_after.take(),
            s.chunk_delay,
            s.download_status,
        )
    };
    if let Some(code) = status {
        respond(stream, code, "", b"{}").await;
        return Some(());
    }
    let start = req
        .headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
        .unwrap_or(0)
        .min(bundle.len());
    let part = &bundle[start..];
    let head = if req.headers.contains_key("range") {
        format!(
            "HTTP/1.1 206 Partial\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\nConnection: close\r\n\r\n",
            part.len(),
            bundle.len().saturating_sub(1),
            bundle.len()
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            part.len()
        )
    };
    stream.write_all(head.as_bytes()).await.ok()?;
    let limit = cut.unwrap_or(part.len()).min(part.len());
    for chunk in part[..limit].chunks(16 * 1024) {
        stream.write_all(chunk).await.ok()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    let _ = stream.shutdown().await;
    Some(())
}

pub struct TestKiosk {
    pub facts: Mutex<KioskFacts>,
    pub healthy: Mutex<bool>,
    pub reboots: Mutex<u32>,
}

impl Default for TestKiosk {
    fn default() -> Self {
        TestKiosk {
            facts: Mutex::new(KioskFacts::default()),
            healthy: Mutex::new(true),
            reboots: Mutex::new(0),
        }
    }
}

impl Kiosk for TestKiosk {
    async fn facts(&self) -> Option<KioskFacts> {
        Some(self.facts.lock().unwrap().clone())
    }
    async fn healthy(&self) -> bool {
        *self.healthy.lock().unwrap()
    }
    async fn reboot(&self) -> Result<(), String> {
        *self.reboots.lock().unwrap() += 1;
        Ok(())
    }
}

pub type RealAgent = Agent<HttpDdi, FakeInstaller, TestKiosk, HttpFetcher>;

/// The real DDI client and fetcher against `server_url`, RAUC faked.
pub fn agent(
    server_url: &str,
    tenant: &str,
    dir: &Path,
    slot: &str,
    boot_id: &str,
    ota: OtaConfig,
) -> RealAgent {
    let auth = Auth::Target("test-token".into());
    let ddi = HttpDdi::new(
        server_url,
        tenant,
        DEVICE,
        auth.clone(),
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .unwrap();
    let fetcher = HttpFetcher::new(server_url, &auth, Duration::from_secs(5)).unwrap();
    let settings = Settings {
        ota,
        schedule: Schedule::from_config(&ScheduleConfig::default(), "schedule").unwrap(),
        device_id: DEVICE.into(),
        dir: dir.join("ota"),
        floor_mb: 0,
        attributes: BTreeMap::new(),
    };
    let mut a = Agent::new(
        ddi,
        FakeInstaller::new(slot),
        TestKiosk::default(),
        fetcher,
        settings,
        BootFacts {
            boot_id: boot_id.into(),
            slot: slot.into(),
        },
    );
    // 22:00 in Manila on a Wednesday: inside the default install window.
    a.now = std::rc::Rc::new(|| {
        DateTime::parse_from_rfc3339("2026-03-04T22:00:00+08:00")
            .unwrap()
            .with_timezone(&Utc)
    });
    a
}

pub fn quick_config() -> OtaConfig {
    OtaConfig {
        enabled: true,
        disk_margin_mb: 1,
        health_deadline_s: 30,
        ..Default::default()
    }
}

/// Polls and lets background jobs run until `done` holds or `limit` passes.
pub async fn run_until(
    a: &mut RealAgent,
    limit: Duration,
    mut done: impl FnMut(&RealAgent) -> bool,
) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        a.poll_once().await;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            a.drain_jobs().await;
            if done(a) {
                return true;
            }
        }
    }
    done(a)
}

pub fn local<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f);
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

pub fn sha1_hex(b: &[u8]) -> String {
    use sha1::Digest;
    hex::encode(sha1::Sha1::digest(b))
}
