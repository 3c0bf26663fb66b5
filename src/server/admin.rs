//! The admin listener: plain HTTP/1.1 for monitoring, on a loopback address by default (`admin.listen`,
//! 127.0.0.1:9971) and never on a port phones use (checked at configuration load). It has no
//! authentication, so it serves nothing secret:
//!
//! | path | answer |
//! |---|---|
//! | `GET /metrics` | every metric, Prometheus text exposition format 0.0.4 ([`crate::ops::metrics`]) |
//! | `GET /healthz` | 200 `ok` while the process runs (draining included) |
//! | `GET /readyz` | 200 when ready, else 503; the body names each check ([`crate::ops::health`]); JSON when asked with `Accept: application/json` |
//!
//! Other paths are 404, other methods than GET (and HEAD) 405. It keeps answering while the phone listeners
//! drain after SIGTERM, so a load balancer sees `/readyz` turn 503 at once, and stops after them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::ops::Monitor;
use crate::server::accept_loop;
use crate::server::limits::IdleTimeout;
use crate::server::response::{Body, allow, head_only, text};
use crate::util::stop::Stop;
use crate::util::time::unix_now;

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

/// Serves the admin listener until `stop`. It reads what `monitor` reports and never changes anything.
pub async fn run(listener: TcpListener, monitor: Monitor, stop: Stop) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, "serving /metrics, /healthz and /readyz over plain HTTP");
    }
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_HEAD_BYTES);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    accept_loop(listener, limit, stop, "admin", |tcp, peer, permit| {
        let monitor = monitor.clone();
        let service = service_fn(move |req| {
            let monitor = monitor.clone();
            async move { Ok::<_, std::convert::Infallible>(answer(&monitor, peer, &req).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(IdleTimeout::new(tcp, IDLE_TIMEOUT)), service);
        let watched = graceful.watch(conn);
        Some(async move {
            if let Err(e) = watched.await {
                tracing::debug!(%peer, error = %e, "admin connection ended with an error");
            }
            drop(permit);
        })
    })
    .await;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(STOP_GRACE) => {}
    }
}

/// The answer to one admin request (logged at debug level: scrapes would drown the access log).
pub async fn answer<B>(monitor: &Monitor, peer: SocketAddr, req: &Request<B>) -> Response<Body> {
    let path = req.uri().path();
    let head = req.method() == Method::HEAD;
    let response = if req.method() != Method::GET && !head {
        allow(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into()), "GET, HEAD")
    } else {
        match path {
            "/metrics" => {
                let mut r = text(StatusCode::OK, monitor.encode().await);
                r.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(crate::ops::metrics::CONTENT_TYPE));
                r
            }
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" => readyz(monitor, req),
            _ => {
                text(StatusCode::NOT_FOUND, "not found: the admin listener serves /metrics, /healthz, /readyz\n".into())
            }
        }
    };
    tracing::debug!(target: "sipcfg::admin", %peer, method = %req.method(), path, status = response.status().as_u16());
    if head { head_only(response) } else { response }
}

fn readyz<B>(monitor: &Monitor, req: &Request<B>) -> Response<Body> {
    let readiness = monitor.health.readiness(unix_now() as i64);
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
