//! HTTP clients for PostgREST and Supabase Storage.
//!
//! One `reqwest::Client` per service, each with its own connect, read and
//! total timeouts and at most one idle pooled connection: the engine makes
//! one request at a time, so a dead cloud can never pile up connections.

use std::time::Duration;

use reqwest::Client;
use reqwest::header::{HeaderMap, HeaderValue};

use super::cloud::{CloudApi, Reply, Transport};
use super::config::{ServiceTimeouts, SyncConfig};
use crate::store::WIRE_COLUMNS;

/// Largest response body read (roster pages; errors).
const MAX_BODY: usize = 16 * 1024 * 1024;

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
        secrets: &crate::secrets::Secrets,
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

/// The real cloud: PostgREST and Supabase Storage over HTTPS.
#[derive(Debug, Clone)]
pub struct Cloud {
    rest: Client,
    storage: Client,
    rest_base: String,
    storage_base: String,
}

/// Only the kind of failure: reqwest's text may carry the URL and more.
fn transport(e: &reqwest::Error) -> Transport {
    Transport(if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "response cut short"
    } else {
        "request failed"
    })
}

async fn read_reply(resp: reqwest::Response) -> Result<Reply, Transport> {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut resp = resp;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(Transport("response too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

impl Cloud {
    pub fn new(cfg: &SyncConfig, creds: &Credentials) -> Result<Self, ClientError> {
        let base = cfg.base_url.trim_end_matches('/');
        let url = reqwest::Url::parse(base).map_err(|e| ClientError::Url {
            url: cfg.base_url.clone(),
            message: e.to_string(),
        })?;
        if url.scheme() != "https" && !cfg.lab {
            return Err(ClientError::Url {
                url: cfg.base_url.clone(),
                message: "plain http is refused outside a lab (sync.lab = true)".into(),
            });
        }
        Ok(Cloud {
            rest: build(&cfg.rest, creds)?,
            storage: build(&cfg.storage, creds)?,
            rest_base: format!("{base}{}", cfg.rest_path),
            storage_base: format!("{base}{}", cfg.storage_path),
        })
    }
}

impl CloudApi for Cloud {
    /// Bulk upsert keyed by `id`: a retry of rows already stored updates
    /// them in place, so it can never duplicate. The answer lists the ids
    /// the cloud holds.
    async fn upsert_attendance(&self, body: Vec<u8>) -> Result<Reply, Transport> {
        let resp = self
            .rest
            .post(format!("{}/attendance", self.rest_base))
            .query(&[
                ("on_conflict", "id"),
                ("columns", WIRE_COLUMNS),
                ("select", "id"),
            ])
            .header(
                "Prefer",
                "resolution=merge-duplicates,return=representation",
            )
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        read_reply(resp).await
    }

    async fn get_students(&self, query: Vec<(&'static str, String)>) -> Result<Reply, Transport> {
        let resp = self
            .rest
            .get(format!("{}/students", self.rest_base))
            .query(&query)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| transport(&e))?;
        read_reply(resp).await
    }

    async fn upload_object(
        &self,
        bucket: &str,
        path: &str,
        content_type: &'static str,
        body: Vec<u8>,
    ) -> Result<Reply, Transport> {
        let resp = self
            .storage
            .post(format!("{}/object/{bucket}/{path}", self.storage_base))
            .header("x-upsert", "true")
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .header("cache-control", "max-age=3600")
            .body(body)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        read_reply(resp).await
    }
}
