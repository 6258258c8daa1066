//! HTTP clients for PostgREST and Supabase Storage.
//!
//! One `reqwest::Client` per service, each with its own connect, read and
//! total timeouts and at most one idle pooled connection: the engine makes
//! one request at a time, so a dead cloud can never pile up connections.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode};

use super::config::{ServiceTimeouts, SyncConfig};
use super::queue::{CloudStudent, RosterCursor, WIRE_COLUMNS, WireRow};

/// Server error bodies kept in reasons and logs are cut to this.
const MAX_REASON: usize = 500;
/// Largest response body read (roster pages; errors).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Why a request failed, as the engine needs to act on it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// Network, timeout, 5xx, 429, 401/403, 404...: try again later.
    #[error("{0}")]
    Transient(String),
    /// The server refused the content as invalid (400, 409, 413, 422):
    /// retrying the same rows will fail the same way.
    #[error("HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("sync.base_url {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("secret {name}: {message}")]
    Secret { name: String, message: String },
    #[error("HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// The keys a kiosk presents. `Debug` does not print them.
#[derive(Clone)]
pub struct Credentials {
    pub api_key: String,
    pub device_jwt: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

impl Credentials {
    /// Reads both keys from the secrets directory.
    pub fn from_secrets(
        secrets: &crate::config::Secrets,
        cfg: &SyncConfig,
    ) -> Result<Self, ClientError> {
        let get = |name: &str| {
            secrets
                .get(name)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| ClientError::Secret {
                    name: name.to_string(),
                    message: "missing or empty in the secrets directory".into(),
                })
        };
        Ok(Credentials {
            api_key: get(&cfg.api_key_secret)?,
            device_jwt: get(&cfg.device_jwt_secret)?,
        })
    }
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    if s.len() <= MAX_REASON {
        return s.to_string();
    }
    let mut end = MAX_REASON;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn build(t: &ServiceTimeouts, creds: &Credentials) -> Result<Client, ClientError> {
    let mut headers = HeaderMap::new();
    let bad = |name: &str| ClientError::Secret {
        name: name.into(),
        message: "contains characters not allowed in an HTTP header".into(),
    };
    let mut key = HeaderValue::from_str(&creds.api_key).map_err(|_| bad("api key"))?;
    key.set_sensitive(true);
    headers.insert("apikey", key);
    let mut auth = HeaderValue::from_str(&format!("Bearer {}", creds.device_jwt))
        .map_err(|_| bad("device jwt"))?;
    auth.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, auth);
    Client::builder()
        .default_headers(headers)
        .connect_timeout(Duration::from_millis(t.connect_timeout_ms))
        .read_timeout(Duration::from_millis(t.read_timeout_ms))
        .timeout(Duration::from_millis(t.request_timeout_ms))
        .pool_max_idle_per_host(1)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("attendance-kiosk/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(ClientError::Build)
}

/// The cloud as the engine sees it.
#[derive(Debug, Clone)]
pub struct Cloud {
    rest: Client,
    storage: Client,
    rest_base: String,
    storage_base: String,
}

fn classify_reqwest(e: reqwest::Error) -> CallError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    // reqwest's Display does not include secrets (headers are not printed).
    CallError::Transient(truncate(&format!("{kind}: {e}")))
}

async fn read_limited(resp: reqwest::Response) -> Result<Vec<u8>, CallError> {
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(classify_reqwest)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(CallError::Transient(format!(
                "response larger than {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn check(resp: reqwest::Response) -> Result<Vec<u8>, CallError> {
    let status = resp.status();
    let body = read_limited(resp).await?;
    if status.is_success() {
        return Ok(body);
    }
    let text = truncate(&String::from_utf8_lossy(&body));
    // PostgREST names the PostgreSQL error: classes 22 (data exception) and
    // 23 (integrity constraint) are about the rows; anything else with a
    // code (PGRSTxxx, 42xxx: missing column, no privilege...) is about the
    // server or our setup, and must not get good rows quarantined.
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("code").and_then(|c| c.as_str()).map(str::to_string));
    let row_level = match &code {
        Some(c) => c.starts_with("22") || c.starts_with("23"),
        None => true,
    };
    Err(match status {
        StatusCode::PAYLOAD_TOO_LARGE => CallError::Rejected {
            status: status.as_u16(),
            message: text,
        },
        StatusCode::BAD_REQUEST | StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY
            if row_level =>
        {
            CallError::Rejected {
                status: status.as_u16(),
                message: text,
            }
        }
        _ => CallError::Transient(format!("HTTP {}: {text}", status.as_u16())),
    })
}

impl Cloud {
    pub fn new(cfg: &SyncConfig, creds: &Credentials) -> Result<Self, ClientError> {
        let base = cfg.base_url.trim_end_matches('/');
        reqwest::Url::parse(base).map_err(|e| ClientError::Url {
            url: cfg.base_url.clone(),
            message: e.to_string(),
        })?;
        Ok(Cloud {
            rest: build(&cfg.rest, creds)?,
            storage: build(&cfg.storage, creds)?,
            rest_base: format!("{base}{}", cfg.rest_path),
            storage_base: format!("{base}{}", cfg.storage_path),
        })
    }

    /// Bulk upsert keyed by `id`: a retry of rows already stored updates
    /// them in place, so it can never duplicate.
    pub async fn upsert_attendance(&self, rows: &[&WireRow]) -> Result<(), CallError> {
        let body = serde_json::to_vec(rows)
            .map_err(|e| CallError::Transient(format!("cannot encode rows: {e}")))?;
        let resp = self
            .rest
            .post(format!("{}/attendance", self.rest_base))
            .query(&[("on_conflict", "id"), ("columns", WIRE_COLUMNS)])
            .header("Prefer", "resolution=merge-duplicates,return=minimal")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(classify_reqwest)?;
        check(resp).await.map(|_| ())
    }

    /// One page of students changed after `after`, oldest first.
    pub async fn roster_page(
        &self,
        after: Option<&RosterCursor>,
        limit: usize,
    ) -> Result<Vec<CloudStudent>, CallError> {
        let mut q: Vec<(&str, String)> = vec![
            (
                "select",
                "student_number,full_name,grade,section,guardian_phone,active,updated_at".into(),
            ),
            ("order", "updated_at.asc,student_number.asc".into()),
            ("limit", limit.to_string()),
        ];
        if let Some(c) = after {
            // Keyset pagination: (updated_at, student_number) > cursor.
            q.push((
                "or",
                format!(
                    "(updated_at.gt.\"{u}\",and(updated_at.eq.\"{u}\",student_number.gt.\"{s}\"))",
                    u = c.updated_at,
                    s = c.student_number
                ),
            ));
        }
        let resp = self
            .rest
            .get(format!("{}/students", self.rest_base))
            .query(&q)
            .send()
            .await
            .map_err(classify_reqwest)?;
        let body = check(resp).await.map_err(|e| match e {
            // A refused roster query is not a row problem: retry later.
            CallError::Rejected { status, message } => {
                CallError::Transient(format!("HTTP {status}: {message}"))
            }
            e => e,
        })?;
        serde_json::from_slice(&body)
            .map_err(|e| CallError::Transient(format!("roster page is not valid JSON: {e}")))
    }

    /// Uploads (or overwrites) one object in Storage.
    pub async fn upload_object(
        &self,
        bucket: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(), CallError> {
        let resp = self
            .storage
            .post(format!("{}/object/{bucket}/{path}", self.storage_base))
            .header("x-upsert", "true")
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header("cache-control", "max-age=3600")
            .body(body)
            .send()
            .await
            .map_err(classify_reqwest)?;
        check(resp).await.map(|_| ())
    }
}
