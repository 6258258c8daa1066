//! hawkBit Direct Device Integration (DDI) v1: the messages, their parsing
//! into the state machine's types (pure), and the HTTP client behind the
//! [`Ddi`] trait (the test twin is `tests/ota` mock server and the in-crate
//! `MockDdi` in `agent.rs` tests).
//!
//! Tolerant of what servers differ in: goosebit sends only `sha1` and no
//! `maintenanceWindow`; hawkBit sends `sha1`, `md5` and `sha256`. Any subset
//! of hashes is accepted, at least one is required. Server text (bodies,
//! error messages) is never logged or echoed: only a status code and length.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::machine::{Artifact, Execution, Feedback, Finished, Handling, Hashes, Offer};

#[derive(Debug, thiserror::Error)]
pub enum DdiError {
    /// The server answered with an error status.
    #[error("{what}: HTTP {status}")]
    Status {
        what: &'static str,
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("{what}: {kind}")]
    Transport { what: &'static str, kind: String },
    #[error("{what}: unexpected reply ({len} bytes): {problem}")]
    Reply {
        what: &'static str,
        len: usize,
        problem: String,
    },
    #[error("{what}: {message}")]
    Refused { what: &'static str, message: String },
}

impl DdiError {
    /// 409, 429 and 5xx: the server is busy or broken; ask again later.
    pub fn back_off(&self) -> bool {
        match self {
            DdiError::Status { status, .. } => *status == 409 || *status == 429 || *status >= 500,
            DdiError::Transport { .. } => true,
            _ => false,
        }
    }

    /// A 4xx other than 409/429: asking again will not help.
    pub fn permanent(&self) -> bool {
        match self {
            DdiError::Status { status, .. } => (400..500).contains(status) && !self.back_off(),
            DdiError::Reply { .. } | DdiError::Refused { .. } => true,
            DdiError::Transport { .. } => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DdiError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What a poll of the controller base resource says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PollReply {
    /// `config.polling.sleep`.
    pub sleep: Option<Duration>,
    pub config_data: Option<String>,
    pub deployment: Option<String>,
    pub cancel: Option<String>,
}

/// `HH:MM:SS` as DDI writes durations.
pub fn parse_sleep(s: &str) -> Option<Duration> {
    let mut parts = s.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let (h, m, sec): (u64, u64, u64) = (h.parse().ok()?, m.parse().ok()?, sec.parse().ok()?);
    if m >= 60 || sec >= 60 {
        return None;
    }
    Some(Duration::from_secs(h * 3600 + m * 60 + sec))
}

fn href(v: &Value, name: &str) -> Option<String> {
    v.get("_links")?
        .get(name)?
        .get("href")?
        .as_str()
        .map(str::to_string)
}

fn reply_err(what: &'static str, len: usize, problem: impl Into<String>) -> DdiError {
    DdiError::Reply {
        what,
        len,
        problem: problem.into(),
    }
}

pub fn parse_poll(body: &[u8]) -> Result<PollReply, DdiError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| reply_err("poll", body.len(), "not JSON"))?;
    if !v.is_object() {
        return Err(reply_err("poll", body.len(), "not a JSON object"));
    }
    let sleep = v
        .pointer("/config/polling/sleep")
        .and_then(Value::as_str)
        .and_then(parse_sleep);
    Ok(PollReply {
        sleep,
        config_data: href(&v, "configData"),
        deployment: href(&v, "deploymentBase"),
        cancel: href(&v, "cancelAction"),
    })
}

fn handling(v: Option<&Value>) -> Result<Handling, String> {
    match v.and_then(Value::as_str) {
        Some("skip") => Ok(Handling::Skip),
        Some("attempt") => Ok(Handling::Attempt),
        Some("forced") => Ok(Handling::Forced),
        Some(_) => Err("unknown download/update handling".into()),
        None => Err("download/update handling missing".into()),
    }
}

fn hex_of_len(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The deployment: one chunk with one artifact (a RAUC bundle).
pub fn parse_deployment(body: &[u8]) -> Result<Offer, DdiError> {
    let len = body.len();
    let bad = |p: &str| reply_err("deploymentBase", len, p);
    let v: Value = serde_json::from_slice(body).map_err(|_| bad("not JSON"))?;
    let action_id = match v.get("id") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(bad("action id missing")),
    };
    let d = v
        .get("deployment")
        .ok_or_else(|| bad("deployment missing"))?;
    let download = handling(d.get("download")).map_err(|e| bad(&e))?;
    let update = handling(d.get("update")).map_err(|e| bad(&e))?;
    let server_window_open = match d.get("maintenanceWindow").and_then(Value::as_str) {
        None | Some("available") => true,
        Some("unavailable") => false,
        Some(_) => return Err(bad("unknown maintenanceWindow")),
    };
    let chunks = d
        .get("chunks")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("chunks missing"))?;
    let [chunk] = chunks.as_slice() else {
        return Err(bad(&format!(
            "{} chunks; expected one RAUC bundle",
            chunks.len()
        )));
    };
    let artifacts = chunk
        .get("artifacts")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("artifacts missing"))?;
    let [a] = artifacts.as_slice() else {
        return Err(bad(&format!(
            "{} artifacts; expected one RAUC bundle",
            artifacts.len()
        )));
    };
    let version = chunk
        .get("version")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .ok_or_else(|| bad("chunk version missing"))?
        .to_string();
    let filename = a
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or("bundle.raucb")
        .to_string();
    let size = a
        .get("size")
        .and_then(Value::as_u64)
        .filter(|s| *s > 0)
        .ok_or_else(|| bad("artifact size missing"))?;
    let h = a.get("hashes");
    let get = |k: &str, n: usize| -> Result<Option<String>, DdiError> {
        match h.and_then(|h| h.get(k)).and_then(Value::as_str) {
            None => Ok(None),
            Some(s) if hex_of_len(s, n) => Ok(Some(s.to_ascii_lowercase())),
            Some(_) => Err(bad(&format!("{k} is not {n} hex digits"))),
        }
    };
    let hashes = Hashes {
        sha256: get("sha256", 64)?,
        sha1: get("sha1", 40)?,
        md5: get("md5", 32)?,
    };
    if hashes.sha256.is_none() && hashes.sha1.is_none() && hashes.md5.is_none() {
        return Err(bad("artifact has no sha256, sha1 or md5"));
    }
    let url = href(a, "download")
        .or_else(|| href(a, "download-http"))
        .ok_or_else(|| bad("artifact download link missing"))?;
    Ok(Offer {
        action_id,
        version,
        download,
        update,
        server_window_open,
        artifact: Artifact {
            filename,
            size,
            hashes,
            url,
        },
    })
}

/// `cancelAction`: the id of the action to stop.
pub fn parse_cancel(body: &[u8]) -> Result<String, DdiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| reply_err("cancelAction", body.len(), "not JSON"))?;
    match v.pointer("/cancelAction/stopId").or_else(|| v.get("id")) {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 64 => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(reply_err("cancelAction", body.len(), "stopId missing")),
    }
}

#[derive(Serialize)]
struct WireProgress {
    cnt: u64,
    of: u64,
}

#[derive(Serialize)]
struct WireResult {
    finished: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<WireProgress>,
}

#[derive(Serialize)]
struct WireStatus<'a> {
    execution: &'static str,
    result: WireResult,
    details: &'a [String],
}

#[derive(Serialize)]
struct WireFeedback<'a> {
    id: &'a str,
    status: WireStatus<'a>,
}

fn finished_str(f: Finished) -> &'static str {
    match f {
        Finished::Success => "success",
        Finished::Failure => "failure",
        Finished::None => "none",
    }
}

/// The JSON body of a deployment feedback.
pub fn feedback_body(fb: &Feedback) -> Value {
    let execution = match fb.execution {
        Execution::Proceeding => "proceeding",
        Execution::Downloaded => "downloaded",
        Execution::Closed => "closed",
    };
    serde_json::to_value(WireFeedback {
        id: &fb.action_id,
        status: WireStatus {
            execution,
            result: WireResult {
                finished: finished_str(fb.finished),
                progress: fb.progress.map(|(cnt, of)| WireProgress { cnt, of }),
            },
            details: &fb.details,
        },
    })
    .unwrap_or(Value::Null)
}

/// The JSON body confirming (`closed/success`) or rejecting a cancel.
pub fn cancel_feedback_body(stop_id: &str, accepted: bool, details: &str) -> Value {
    let details = [details.to_string()];
    serde_json::to_value(WireFeedback {
        id: stop_id,
        status: WireStatus {
            execution: if accepted { "closed" } else { "rejected" },
            result: WireResult {
                finished: if accepted { "success" } else { "failure" },
                progress: None,
            },
            details: &details,
        },
    })
    .unwrap_or(Value::Null)
}

/// `PUT configData` body (merge).
pub fn config_data_body(attributes: &BTreeMap<String, String>) -> Value {
    serde_json::json!({ "mode": "merge", "data": attributes })
}

/// The device side of DDI. Every call is one request.
#[allow(async_fn_in_trait)]
pub trait Ddi {
    async fn poll(&self) -> Result<PollReply, DdiError>;
    async fn put_config(
        &self,
        href: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<(), DdiError>;
    async fn deployment(&self, href: &str) -> Result<Offer, DdiError>;
    async fn cancel_action(&self, href: &str) -> Result<String, DdiError>;
    async fn feedback(&self, fb: &Feedback) -> Result<(), DdiError>;
    async fn cancel_feedback(
        &self,
        stop_id: &str,
        accepted: bool,
        details: &str,
    ) -> Result<(), DdiError>;
}

/// How the device proves who it is.
#[derive(Clone)]
pub enum Auth {
    Target(String),
    Gateway(String),
    None,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::Target(_) => "TargetToken(redacted)",
            Auth::Gateway(_) => "GatewayToken(redacted)",
            Auth::None => "None",
        })
    }
}

impl Auth {
    pub fn header(&self) -> Option<String> {
        match self {
            Auth::Target(t) => Some(format!("TargetToken {t}")),
            Auth::Gateway(t) => Some(format!("GatewayToken {t}")),
            Auth::None => None,
        }
    }
}

/// Replies larger than this are refused (a deployment is a few KiB).
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// The real DDI client (reqwest, rustls).
#[derive(Clone, Debug)]
pub struct HttpDdi {
    client: reqwest::Client,
    /// `{server}/{tenant}/controller/v1/{controllerId}`
    base: String,
    auth: Auth,
}

pub fn transport(what: &'static str, e: &reqwest::Error) -> DdiError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "reply broken off"
    } else if e.is_redirect() {
        "too many redirects"
    } else {
        "request failed"
    };
    DdiError::Transport {
        what,
        kind: kind.into(),
    }
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

impl HttpDdi {
    pub fn new(
        server_url: &str,
        tenant: &str,
        controller_id: &str,
        auth: Auth,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, DdiError> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .user_agent(concat!("attendance-ota/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| transport("client", &e))?;
        Ok(HttpDdi {
            client,
            base: format!(
                "{}/{tenant}/controller/v1/{controller_id}",
                server_url.trim_end_matches('/')
            ),
            auth,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.client.request(method, url).header(
            reqwest::header::ACCEPT,
            "application/hal+json, application/json",
        );
        match self.auth.header() {
            Some(h) => r.header(reqwest::header::AUTHORIZATION, h),
            None => r,
        }
    }

    async fn send(
        &self,
        what: &'static str,
        rb: reqwest::RequestBuilder,
    ) -> Result<Vec<u8>, DdiError> {
        let resp = rb.send().await.map_err(|e| transport(what, &e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(DdiError::Status {
                what,
                status: status.as_u16(),
                retry_after: retry_after(&resp),
            });
        }
        if resp.content_length().unwrap_or(0) > MAX_REPLY_BYTES as u64 {
            return Err(reply_err(what, MAX_REPLY_BYTES, "too large"));
        }
        let body = resp.bytes().await.map_err(|e| transport(what, &e))?;
        if body.len() > MAX_REPLY_BYTES {
            return Err(reply_err(what, body.len(), "too large"));
        }
        Ok(body.to_vec())
    }

    /// Links from the server must point at the same server (a token is
    /// sent with them).
    fn same_origin(&self, what: &'static str, href: &str) -> Result<(), DdiError> {
        let origin = |u: &str| {
            reqwest::Url::parse(u).ok().map(|u| {
                (
                    u.scheme().to_string(),
                    u.host_str().map(str::to_string),
                    u.port_or_known_default(),
                )
            })
        };
        if origin(href).is_some() && origin(href) == origin(&self.base) {
            Ok(())
        } else {
            Err(DdiError::Refused {
                what,
                message: "link points at another server".into(),
            })
        }
    }
}

impl Ddi for HttpDdi {
    async fn poll(&self) -> Result<PollReply, DdiError> {
        let body = self
            .send("poll", self.req(reqwest::Method::GET, &self.base))
            .await?;
        parse_poll(&body)
    }

    async fn put_config(
        &self,
        href: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<(), DdiError> {
        self.same_origin("configData", href)?;
        self.send(
            "configData",
            self.req(reqwest::Method::PUT, href)
                .json(&config_data_body(attributes)),
        )
        .await
        .map(|_| ())
    }

    async fn deployment(&self, href: &str) -> Result<Offer, DdiError> {
        self.same_origin("deploymentBase", href)?;
        let body = self
            .send("deploymentBase", self.req(reqwest::Method::GET, href))
            .await?;
        parse_deployment(&body)
    }

    async fn cancel_action(&self, href: &str) -> Result<String, DdiError> {
        self.same_origin("cancelAction", href)?;
        let body = self
            .send("cancelAction", self.req(reqwest::Method::GET, href))
            .await?;
        parse_cancel(&body)
    }

    async fn feedback(&self, fb: &Feedback) -> Result<(), DdiError> {
        let url = format!("{}/deploymentBase/{}/feedback", self.base, fb.action_id);
        self.send(
            "feedback",
            self.req(reqwest::Method::POST, &url)
                .json(&feedback_body(fb)),
        )
        .await
        .map(|_| ())
    }

    async fn cancel_feedback(
        &self,
        stop_id: &str,
        accepted: bool,
        details: &str,
    ) -> Result<(), DdiError> {
        let url = format!("{}/cancelAction/{stop_id}/feedback", self.base);
        self.send(
            "cancel feedback",
            self.req(reqwest::Method::POST, &url)
                .json(&cancel_feedback_body(stop_id, accepted, details)),
        )
        .await
        .map(|_| ())
    }
}

/// Poll interval: the server's sleep (or the default), spread by up to
/// `jitter_percent` either way so a fleet does not poll in lockstep.
pub fn poll_interval(sleep: Duration, jitter_percent: u32, unit_random: f64) -> Duration {
    let spread = sleep.as_secs_f64() * f64::from(jitter_percent) / 100.0;
    let offset = spread * (unit_random.clamp(0.0, 1.0) * 2.0 - 1.0);
    Duration::from_secs_f64((sleep.as_secs_f64() + offset).max(1.0))
}

/// Exponential back-off after `failures` consecutive failures, at most 30 min;
/// a server's `Retry-After` wins when it is longer.
pub fn backoff(failures: u32, retry_after: Option<Duration>) -> Duration {
    let exp = Duration::from_secs(10u64.saturating_mul(1u64 << failures.min(8)));
    let d = exp.min(Duration::from_secs(30 * 60));
    match retry_after {
        Some(r) if r > d => r,
        _ => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAWKBIT_DEPLOYMENT: &str = r#"{
      "id": "8",
      "deployment": {
        "download": "forced", "update": "attempt", "maintenanceWindow": "unavailable",
        "chunks": [{
          "part": "os", "version": "2.1.0", "name": "kiosk",
          "artifacts": [{
            "filename": "kiosk-2.1.0.raucb",
            "hashes": {
              "sha1": "2d86c2a659e364e9abba49ea6ffcd53dd5559f05",
              "md5": "0d1b08c34858921bc7c662b228acb7ba",
              "sha256": "a03b221c6c6eae7122ca51695d456d5222e524889136394944b2f9763b483615"
            },
            "size": 11,
            "_links": {
              "download": {"href": "https://hb.example/DEFAULT/controller/v1/k1/softwaremodules/1/artifacts/a"},
              "download-http": {"href": "http://hb.example/DEFAULT/controller/v1/k1/softwaremodules/1/artifacts/a"}
            }
          }]
        }]
      }
    }"#;

    // goosebit 0.2.12: numeric-looking string id, sha1 only, no window.
    const GOOSEBIT_DEPLOYMENT: &str = r#"{"id":"3","deployment":{"download":"forced","update":"forced",
      "chunks":[{"part":"os","version":"2.0","name":"b.raucb","artifacts":[{"filename":"b.raucb",
      "hashes":{"sha1":"2D86C2A659E364E9ABBA49EA6FFCD53DD5559F05"},"size":5,
      "_links":{"download":{"href":"http://127.0.0.1:1/DEFAULT/controller/v1/k1/download"}}}]}]}}"#;

    #[test]
    fn polling_replies_parse() {
        let r = parse_poll(
            br#"{"config":{"polling":{"sleep":"00:05:00"}},"_links":{
              "deploymentBase":{"href":"http://s/d/1?c=x"},
              "configData":{"href":"http://s/c"},
              "cancelAction":{"href":"http://s/x/2"}}}"#,
        )
        .unwrap();
        assert_eq!(r.sleep, Some(Duration::from_secs(300)));
        assert_eq!(r.deployment.as_deref(), Some("http://s/d/1?c=x"));
        assert_eq!(r.config_data.as_deref(), Some("http://s/c"));
        assert_eq!(r.cancel.as_deref(), Some("http://s/x/2"));
        let empty =
            parse_poll(br#"{"config":{"polling":{"sleep":"01:00:00"}},"_links":{}}"#).unwrap();
        assert_eq!(empty.sleep, Some(Duration::from_secs(3600)));
        assert!(empty.deployment.is_none());
        let e = parse_poll(b"<html>secret page</html>")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret"), "server text is not echoed: {e}");
    }

    #[test]
    fn sleep_durations() {
        assert_eq!(parse_sleep("00:00:10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_sleep("12:00:00"), Some(Duration::from_secs(43200)));
        for bad in ["", "10", "00:61:00", "a:b:c", "00:00:00:00"] {
            assert_eq!(parse_sleep(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_hawkbit_deployment_with_all_hashes_and_a_closed_window() {
        let o = parse_deployment(HAWKBIT_DEPLOYMENT.as_bytes()).unwrap();
        assert_eq!(o.action_id, "8");
        assert_eq!(o.version, "2.1.0");
        assert_eq!(
            (o.download, o.update),
            (Handling::Forced, Handling::Attempt)
        );
        assert!(!o.server_window_open);
        assert!(!o.installable());
        assert!(o.artifact.hashes.sha256.is_some() && o.artifact.hashes.md5.is_some());
        assert!(
            o.artifact.url.starts_with("https://"),
            "https link preferred"
        );
    }

    #[test]
    fn a_goosebit_deployment_with_sha1_only() {
        let o = parse_deployment(GOOSEBIT_DEPLOYMENT.as_bytes()).unwrap();
        assert_eq!(o.action_id, "3");
        assert!(o.server_window_open);
        assert!(o.forced());
        assert_eq!(
            o.artifact.hashes,
            Hashes {
                sha1: Some("2d86c2a659e364e9abba49ea6ffcd53dd5559f05".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn deployments_that_cannot_be_a_bundle_are_refused() {
        let no_hash =
            GOOSEBIT_DEPLOYMENT.replace(r#""sha1":"2D86C2A659E364E9ABBA49EA6FFCD53DD5559F05""#, "");
        assert!(
            parse_deployment(no_hash.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("no sha256")
        );
        let bad_hash = GOOSEBIT_DEPLOYMENT.replace("2D86C2A6", "zz");
        assert!(parse_deployment(bad_hash.as_bytes()).is_err());
        let two =
            GOOSEBIT_DEPLOYMENT.replace(r#""artifacts":[{"#, r#""artifacts":[{"filename":"x"},{"#);
        assert!(
            parse_deployment(two.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("2 artifacts")
        );
        let weird = GOOSEBIT_DEPLOYMENT.replace(r#""update":"forced""#, r#""update":"later""#);
        assert!(parse_deployment(weird.as_bytes()).is_err());
    }

    #[test]
    fn cancel_replies_parse() {
        assert_eq!(
            parse_cancel(br#"{"id":"11","cancelAction":{"stopId":"8"}}"#).unwrap(),
            "8"
        );
        assert!(parse_cancel(b"{}").is_err());
    }

    #[test]
    fn feedback_bodies_follow_the_spec() {
        let fb = Feedback {
            action_id: "8".into(),
            execution: Execution::Proceeding,
            finished: Finished::None,
            progress: Some((3, 10)),
            details: vec!["downloading".into()],
        };
        assert_eq!(
            feedback_body(&fb),
            serde_json::json!({"id":"8","status":{"execution":"proceeding",
                "result":{"finished":"none","progress":{"cnt":3,"of":10}},"details":["downloading"]}})
        );
        let v = cancel_feedback_body("8", false, "RAUC is writing");
        assert_eq!(v["status"]["execution"], "rejected");
        let v = cancel_feedback_body("8", true, "ok");
        assert_eq!(v["status"]["execution"], "closed");
        assert_eq!(v["status"]["result"]["finished"], "success");
        let mut attrs = BTreeMap::new();
        attrs.insert("sw_version".to_string(), "1.0".to_string());
        assert_eq!(
            config_data_body(&attrs),
            serde_json::json!({"mode":"merge","data":{"sw_version":"1.0"}})
        );
    }

    #[test]
    fn which_errors_back_off_and_which_are_final() {
        let st = |status| DdiError::Status {
            what: "x",
            status,
            retry_after: None,
        };
        for s in [409, 429, 500, 503] {
            assert!(st(s).back_off() && !st(s).permanent(), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 416] {
            assert!(!st(s).back_off() && st(s).permanent(), "{s}");
        }
    }

    #[test]
    fn intervals_jitter_and_back_off() {
        let s = Duration::from_secs(100);
        assert_eq!(poll_interval(s, 10, 0.5), s);
        assert_eq!(poll_interval(s, 10, 0.0), Duration::from_secs(90));
        assert_eq!(poll_interval(s, 10, 1.0), Duration::from_secs(110));
        assert_eq!(backoff(0, None), Duration::from_secs(10));
        assert_eq!(backoff(2, None), Duration::from_secs(40));
        assert_eq!(backoff(30, None), Duration::from_secs(1800));
        assert_eq!(
            backoff(0, Some(Duration::from_secs(120))),
            Duration::from_secs(120)
        );
    }

    #[test]
    fn tokens_are_not_in_debug_output() {
        let a = Auth::Target("s3cr3t".into());
        assert!(!format!("{a:?}").contains("s3cr3t"));
        assert_eq!(a.header().unwrap(), "TargetToken s3cr3t");
    }
}
