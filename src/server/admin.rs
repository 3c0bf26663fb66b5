//! The admin listener: plain HTTP/1.1 for monitoring, on a loopback address by default (`admin.listen`,
//! 127.0.0.1:9971) and never on a port phones use (checked at configuration load). It has no
//! authentication, so it serves nothing secret:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | every metric, Prometheus text exposition format 0.0.4 ([`crate::metrics`]) |
//! | `GET /healthz` | 200 `ok` while the process runs (draining included) |
//! | `GET /readyz` | 200 when ready, else 503; the body names each check ([`crate::health`]); JSON when asked with `Accept: application/json` |
//!
//! Other paths are 404, other methods than GET (and HEAD) 405. It keeps answering while the phone listeners
//! drain after SIGTERM, so a load balancer sees `/readyz` turn 503 at once, and stops after them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::app::App;
use crate::metrics::Snapshot;
use crate::server::http::Body;
use crate::server::limits::IdleTimeout;

/// Connections the admin listener serves at once; more wait in the kernel's backlog (a scraper or two and
/// a probe need a handful).
pub const MAX_CONNECTIONS: usize = 16;
/// Time to send a request head, and idle time before a connection is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest request head.
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// After the phone listeners drained, time given to admin requests still running.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Serves the admin listener until `stop` turns true.
pub async fn run(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, "serving /metrics, /healthz and /readyz over plain HTTP");
    }
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_HEAD_BYTES);
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            () = &mut stopped => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopped => break,
        };
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, std::convert::Infallible>(answer(&app, peer, &req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(IdleTimeout::new(tcp, IDLE_TIMEOUT)), service);
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(STOP_GRACE) => {}
    }
}

/// The answer to one admin request (logged at debug level: scrapes would drown the access log).
pub async fn answer<B>(app: &App, peer: SocketAddr, req: &Request<B>) -> Response<Body> {
    let path = req.uri().path();
    let head = req.method() == Method::HEAD;
    let response = if req.method() != Method::GET && !head {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into());
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        r
    } else {
        match path {
            "/metrics" => {
                let mut r = text(StatusCode::OK, app.metrics.encode(&snapshot(app).await));
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::metrics::CONTENT_TYPE));
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => readyz(app, req),
            _ => {
                text(StatusCode::NOT_FOUND, "not found: the admin listener serves /metrics, /healthz, /readyz\n".into())
            }
        }
    };
    tracing::debug!(target: "sipcfg::admin", %peer, method = %req.method(), path, status = response.status().as_u16());
    if head {
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::default());
    }
    response
}

fn readyz<B>(app: &App, req: &Request<B>) -> Response<Body> {
    let readiness = crate::health::readiness(app, crate::token::unix_now() as i64);
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let json = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.split(';').next().is_some_and(|t| t.trim() == "application/json")));
    if json {
        let body = serde_json::to_string(&readiness).unwrap_or_default() + "\n";
        let mut r = text(status, body);
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r
    } else {
        text(status, readiness.text())
    }
}

/// The state gauges, read now.
async fn snapshot(app: &App) -> Snapshot {
    let (cache_entries, cache_bytes) = app.provisioner.cache().usage().await;
    let deployment = app.provisioner.current();
    let ready = crate::health::readiness(app, crate::token::unix_now() as i64).ready;
    Snapshot {
        cache_entries,
        cache_bytes,
        devices: deployment.inventory.devices.len(),
        users: deployment.inventory.users.len(),
        profiles: deployment.inventory.profiles.len(),
        generation: deployment.generation,
        certificate_expiry: app.health.certificates().earliest_expiry(),
        ready,
        draining: app.health.is_draining(),
        revocations: app.token_service.as_ref().map_or(0, |s| s.revocations_seen()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let len = body.len();
    let mut r = Response::new(Body::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    r
}
