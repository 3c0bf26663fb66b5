//! The HTTPS listener: accept → TLS handshake (bounded in time) → HTTP/1.1 or HTTP/2 by ALPN → [`http::handle`].
//!
//! [`run`] takes an already bound listener and a shutdown future, so tests bind `127.0.0.1:0` and run the
//! real server.

pub mod http;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::app::App;

/// Serves `listener` until `shutdown` completes, then lets open requests finish for the configured grace
/// period.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let settings = app.config.server.clone();
    let acceptor = TlsAcceptor::from(app.tls.clone());
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(settings.header_read_timeout());
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(100);
    let builder = Arc::new(builder);

    tokio::pin!(shutdown);
    loop {
        // Wait for a connection slot first: above the limit, clients queue in the kernel's backlog.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            serve_connection(tcp, peer, app, acceptor, &builder, watcher).await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("stopped accepting; waiting for open requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(settings.shutdown_grace()) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    acceptor: TlsAcceptor,
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = tokio::time::timeout(app.config.server.tls_handshake_timeout(), acceptor.accept(tcp)).await;
    let stream = match handshake {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let service = service_fn(move |req| {
        let app = app.clone();
        async move { Ok::<_, std::convert::Infallible>(http::handle(&app, peer, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
