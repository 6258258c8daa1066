//! The HTTP listener: `/ping` and `/health` for probes and the image tests.
//!
//! Hostile-client limits: at most `max_connections` served at once (the rest
//! wait in the backlog), one request per connection, and the whole request
//! must arrive within `request_timeout_ms` or the connection is dropped. Only
//! GET and HEAD are served; request bodies are never read.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::app::health::{Health, Level};

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http listener {addr}: {err}")]
    Bind {
        addr: String,
        #[source]
        err: std::io::Error,
    },
}

/// What the handlers can see.
pub struct HttpState {
    pub health: Arc<Health>,
    pub device_id: String,
    pub version: &'static str,
    /// Cloud sync status, when sync is enabled. An offline cloud is reported
    /// here but never makes the kiosk unhealthy: it still records scans.
    pub sync: Option<Arc<crate::sync::SyncMetrics>>,
}

pub async fn bind(addr: &str) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|err| HttpError::Bind {
            addr: addr.into(),
            err,
        })
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<HttpState>,
    max_connections: usize,
    request_timeout: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            p = slots.clone().acquire_owned() => p?,
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req, peer)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(request_timeout)
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(request_timeout * 2, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "http connection error"),
                Err(_) => tracing::debug!(%peer, "http connection timed out"),
            }
        });
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

fn handle(state: &HttpState, req: Request<Incoming>, _peer: SocketAddr) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        );
        r.headers_mut()
            .insert("allow", HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/ping" => respond(StatusCode::OK, "text/plain", "pong\n"),
        "/health" => {
            let report = state.health.report();
            let code = if report.status == Level::Unhealthy {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            let body = serde_json::json!({
                "status": report.status,
                "device_id": state.device_id,
                "version": state.version,
                "detail": report,
                "sync": state.sync.as_ref().map(|m| m.status()),
            });
            respond(code, "application/json", body.to_string())
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}
