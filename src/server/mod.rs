//! The listeners: accept → TLS handshake (bounded in time) → HTTP/1.1 or HTTP/2 by ALPN → [`http::handle`].
//!
//! | listener | channel | what it serves |
//! |---|---|---|
//! | `server.listen` (6971) | HTTPS | everything, to bearer tokens |
//! | `legacy.listen` (6970), optional | plain HTTP | common files and non-OAuth devices' files, never a token |
//! | `edge.listen`, optional | mutual TLS | as HTTPS, for admitted edge proxies, the phone's token still required |
//! | `admin.listen` (9971, loopback), on by default | plain HTTP | `/metrics`, `/healthz`, `/readyz` ([`admin`]) |
//!
//! [`run`] takes already bound listeners and a shutdown future, so tests bind `127.0.0.1:0` and run the
//! real server.

pub mod admin;
pub mod edge;
pub mod http;
pub mod limits;
pub mod oauth;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::metrics::HandshakeFailure;

/// How a request arrived; decides what may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// TLS on the phone port: bearer token required.
    Https,
    /// Plain HTTP (legacy port): tokens refused, only what needs no token.
    Legacy,
    /// Mutual TLS from an admitted edge proxy: bearer token required.
    Edge,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Https => "https",
            Channel::Legacy => "http",
            Channel::Edge => "edge",
        }
    }
}

/// The bound listeners of one server.
pub struct Listeners {
    pub https: TcpListener,
    pub legacy: Option<TcpListener>,
    pub edge: Option<TcpListener>,
    /// The admin listener (metrics, health); it keeps answering while the others drain.
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener the configuration asks for.
    pub async fn bind(config: &crate::config::Config) -> Result<Listeners, String> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))
        };
        Ok(Listeners {
            https: bind(config.server.listen).await?,
            legacy: match &config.legacy {
                Some(l) => Some(bind(l.listen).await?),
                None => None,
            },
            edge: match &config.edge {
                Some(e) => Some(bind(e.listen).await?),
                None => None,
            },
            admin: match config.admin.enabled {
                true => {
                    let addr = config.admin.listen;
                    if !addr.ip().is_loopback() {
                        tracing::warn!(
                            address = %addr,
                            "the admin listener is not on a loopback address and has no authentication: anyone \
                             who reaches it reads the metrics; restrict it with a firewall or use 127.0.0.1"
                        );
                    }
                    Some(bind(addr).await?)
                }
                false => None,
            },
        })
    }

    /// Only the HTTPS listener.
    pub fn https(listener: TcpListener) -> Listeners {
        Listeners { https: listener, legacy: None, edge: None, admin: None }
    }
}

/// Serves every listener until `shutdown` completes, then lets open requests finish for the configured
/// grace period. From the moment `shutdown` completes, `/readyz` answers 503; the admin listener keeps
/// answering until the open requests are done.
pub async fn run(listeners: Listeners, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let (admin_stop, admin_stopped) = watch::channel(false);
    let admin = listeners.admin.map(|l| tokio::spawn(admin::run(l, app.clone(), admin_stopped)));
    let settings = app.config.server.clone();
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout())
        .max_buf_size(settings.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(settings.h2_max_pending_reset_streams)
        .max_local_error_reset_streams(settings.h2_max_local_error_reset_streams)
        .max_header_list_size(settings.max_header_bytes as u32);
    let builder = Arc::new(builder);
    let (stop, stopped) = watch::channel(false);

    let ctx = AcceptContext { app: &app, builder: &builder, graceful: &graceful, limit: &limit, stopped };
    let https = ctx.accept_loop(listeners.https, Channel::Https);
    let legacy = async {
        if let Some(l) = listeners.legacy {
            ctx.accept_loop(l, Channel::Legacy).await;
        }
    };
    let edge = async {
        if let Some(l) = listeners.edge {
            ctx.accept_loop(l, Channel::Edge).await;
        }
    };
    let trigger = async {
        shutdown.await;
        app.health.start_draining();
        let _ = stop.send(true);
    };
    tokio::join!(https, legacy, edge, trigger);
    tracing::info!("stopped accepting; waiting for open requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(settings.shutdown_grace()) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
    let _ = admin_stop.send(true);
    if let Some(admin) = admin {
        let _ = admin.await;
    }
}

struct AcceptContext<'a> {
    app: &'a Arc<App>,
    builder: &'a Arc<auto::Builder<TokioExecutor>>,
    graceful: &'a GracefulShutdown,
    limit: &'a Arc<Semaphore>,
    stopped: watch::Receiver<bool>,
}

impl AcceptContext<'_> {
    async fn accept_loop(&self, listener: TcpListener, channel: Channel) {
        let mut stopped = self.stopped.clone();
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        tokio::pin!(stop);
        loop {
            // Wait for a connection slot first: above the limit, clients queue in the kernel's backlog.
            let permit = tokio::select! {
                permit = self.limit.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
                () = &mut stop => break,
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
                () = &mut stop => break,
            };
            let app = self.app.clone();
            let builder = self.builder.clone();
            let watcher = self.graceful.watcher();
            let open = app.metrics.connection(channel);
            tokio::spawn(async move {
                serve_connection(tcp, peer, channel, app, &builder, watcher).await;
                drop(open);
                drop(permit);
            });
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    channel: Channel,
    app: Arc<App>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match channel {
        Channel::Legacy => return serve_http(tcp, peer, channel, app, builder, watcher).await,
        Channel::Https => app.tls.load().config.clone(),
        Channel::Edge => match app.edge_tls.load_full() {
            Some(t) => t,
            None => return,
        },
    };
    let handshake = tokio::time::timeout(app.config.server.tls_handshake_timeout(), TlsAcceptor::from(tls).accept(tcp));
    match handshake.await {
        Ok(Ok(stream)) => {
            app.metrics.handshake(channel, Ok(()));
            serve_http(stream, peer, channel, app, builder, watcher).await
        }
        Ok(Err(e)) => {
            app.metrics.handshake(channel, Err(HandshakeFailure::Error));
            tracing::debug!(%peer, channel = channel.as_str(), error = %e, "TLS handshake failed")
        }
        Err(_) => {
            app.metrics.handshake(channel, Err(HandshakeFailure::Timeout));
            tracing::debug!(%peer, channel = channel.as_str(), "TLS handshake timed out")
        }
    }
}

async fn serve_http<I>(
    io: I,
    peer: SocketAddr,
    channel: Channel,
    app: Arc<App>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = limits::IdleTimeout::new(io, app.config.server.idle_timeout());
    let service_app = app.clone();
    let memo = Arc::new(http::MemoSlot::default());
    let service = service_fn(move |req| {
        let (app, memo) = (service_app.clone(), memo.clone());
        async move { Ok::<_, std::convert::Infallible>(http::handle(&app, peer, channel, req, &memo).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        // A request hyper refused before it reached the handler (431, 400) still gets its access line.
        http::refused_by_hyper(&app, peer, channel, e.as_ref());
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
