//! HTTP, and only HTTP: the listeners, one accept loop, the TLS handshake, and the handlers.
//!
//! | listener | channel | what it serves |
//! |---|---|---|
//! | `server.listen` (6971) | HTTPS | everything, to bearer tokens ([`phone`], [`oauth`]) |
//! | `legacy.listen` (6970), optional | plain HTTP | common files and non-OAuth devices' files, never a token |
//! | `edge.listen`, optional | mutual TLS | as HTTPS, for admitted edge proxies, the phone's token still required |
//! | `admin.listen` (9971, loopback), on by default | plain HTTP | `/metrics`, `/healthz`, `/readyz` ([`admin`]) |
//! | `console.listen` (8443, loopback), with `[console]` | HTTPS | the management API and the web console ([`console`]) |
//!
//! A connection's path: [`accept_loop`] (a connection slot, then accept) → its first bytes → a handshake
//! slot of the in-flight bound (else reset: [`crate::ops::inflight`]) → TLS handshake (bounded in time) →
//! idle timeout ([`limits`]) → HTTP/1.1 or HTTP/2 by ALPN → a request slot (else 503) → a handler →
//! [`response`].
//!
//! [`run`] takes already bound listeners and a shutdown future, so tests bind `127.0.0.1:0` and run the
//! real server.

pub mod admin;
pub mod console;
pub mod limits;
pub mod oauth;
pub mod observe;
pub mod phone;
pub mod response;
pub mod route;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::app::channel::Channel;
use crate::config::Config;
use crate::ops::Monitor;
use crate::ops::metrics::HandshakeFailure;
use crate::util::stop::{Stop, stop_signal};

/// The bound listeners of one server.
pub struct Listeners {
    pub https: TcpListener,
    pub legacy: Option<TcpListener>,
    pub edge: Option<TcpListener>,
    /// The admin listener (metrics, health); it keeps answering while the others drain.
    pub admin: Option<TcpListener>,
    /// The management API and the web console (HTTPS).
    pub console: Option<TcpListener>,
}

impl Listeners {
    /// Binds every listener the configuration asks for.
    pub async fn bind(config: &Config) -> Result<Listeners, String> {
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
            console: match &config.console {
                Some(c) => Some(bind(c.listen).await?),
                None => None,
            },
        })
    }

    /// Only the HTTPS listener.
    pub fn https(listener: TcpListener) -> Listeners {
        Listeners { https: listener, legacy: None, edge: None, admin: None, console: None }
    }
}

/// Serves every listener until `shutdown` completes, then lets open requests finish for the configured
/// grace period. From the moment `shutdown` completes, `/readyz` answers 503; the admin listener keeps
/// answering until the open requests are done.
pub async fn run(listeners: Listeners, app: Arc<App>, monitor: Monitor, shutdown: impl Future<Output = ()>) {
    let (admin_stop, admin_stopped) = stop_signal();
    let admin = listeners.admin.map(|l| tokio::spawn(admin::run(l, monitor.clone(), admin_stopped)));
    let settings = app.config().server.clone();
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
    let observer = observe::Observer::from_config(&app.config().observe);
    let node = Arc::new(Node { app: app.clone(), monitor: monitor.clone(), builder, observer });
    let (stop, stopped) = stop_signal();
    let console = listeners.console.map(|l| tokio::spawn(console::run(l, app.clone(), stopped.clone())));

    let serve = |listener: TcpListener, channel: Channel| {
        let node = node.clone();
        let graceful = &graceful;
        let accepting =
            accept_loop(listener, limit.clone(), stopped.clone(), channel.as_str(), move |tcp, peer, permit| {
                // While handshakes hold their whole share of the in-flight bound, a new TLS connection is reset
                // right here in the accept loop: no task is spawned to wait for its ClientHello behind the
                // handshakes.
                let tcp = match channel != Channel::Legacy && node.monitor.in_flight.handshakes_full() {
                    true => {
                        node.monitor.in_flight.shed_connection();
                        let _ = tcp.set_zero_linger();
                        None
                    }
                    false => Some(tcp),
                };
                let node = node.clone();
                let watcher = graceful.watcher();
                async move {
                    let Some(tcp) = tcp else { return };
                    let open = node.monitor.metrics.connection(channel);
                    node.serve_connection(tcp, peer, channel, watcher).await;
                    drop(open);
                    drop(permit);
                }
            });
        // Within tokio's cooperative budget (128 accepts a turn): measured at 7,900 arrivals/s on one core,
        // an unconstrained loop resetting connections kept the handshakes from running (served phones fell
        // from about 2,000/s to 1,400/s). Between its turns the kernel's accept queue can still overflow
        // (BENCHMARKS.md, "Past capacity").
        accepting
    };
    let https = serve(listeners.https, Channel::Https);
    let legacy = async {
        if let Some(l) = listeners.legacy {
            serve(l, Channel::Legacy).await;
        }
    };
    let edge = async {
        if let Some(l) = listeners.edge {
            serve(l, Channel::Edge).await;
        }
    };
    let trigger = async {
        shutdown.await;
        monitor.health.start_draining();
        stop.stop();
    };
    tokio::join!(https, legacy, edge, trigger);
    tracing::info!("stopped accepting; waiting for open requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(settings.shutdown_grace()) => tracing::warn!("shutdown grace period over; closing remaining connections"),
    }
    if let Some(console) = console {
        let _ = console.await;
    }
    admin_stop.stop();
    if let Some(admin) = admin {
        let _ = admin.await;
    }
}

/// Accepts connections on `listener` until `stop`, each served by `serve` in a task of its own that holds
/// one of `limit`'s slots. A slot is taken before `accept`: above the limit, clients wait in the kernel's
/// backlog instead of exhausting memory or descriptors.
pub async fn accept_loop<S, F>(listener: TcpListener, limit: Arc<Semaphore>, mut stop: Stop, what: &str, serve: S)
where
    S: Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            () = stop.stopped() => break,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off briefly instead of spinning.
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.stopped() => break,
        };
        tokio::spawn(serve(tcp, peer, permit));
    }
}

/// What every phone-facing connection is served with (one `Arc` clone per request).
struct Node {
    app: Arc<App>,
    monitor: Monitor,
    builder: auto::Builder<TokioExecutor>,
    /// Observe mode (`[observe]`); `None` when off.
    observer: Option<Arc<observe::Observer>>,
}

impl Node {
    async fn serve_connection(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, channel: Channel, watcher: Watcher) {
        let _ = tcp.set_nodelay(true);
        let tls = match channel {
            Channel::Legacy => {
                let conn = self.connection(None);
                return self.serve_http(tcp, peer, channel, watcher, conn).await;
            }
            Channel::Https => self.app.phone_tls(),
            Channel::Edge => match self.app.edge_tls() {
                Some(t) => t,
                None => return,
            },
        };
        let deadline = tokio::time::Instant::now() + self.app.config().server.tls_handshake_timeout();
        let metrics = &self.monitor.metrics;
        // The client's first bytes (its ClientHello) before a share of the in-flight bound: a connection that
        // says nothing holds only its connection slot, until the handshake timeout.
        // (A peek, not `readable()`: readiness may be reported before any byte has come.)
        let mut first = [0u8; 1];
        match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                metrics.handshake(channel, Err(HandshakeFailure::Error));
                return tracing::debug!(%peer, channel = channel.as_str(), error = %e, "connection failed");
            }
            Err(_) => {
                metrics.handshake(channel, Err(HandshakeFailure::Timeout));
                return tracing::debug!(%peer, channel = channel.as_str(), "TLS handshake timed out");
            }
        }
        // Past the handshakes' share of the bound, the connection is reset before any TLS work: no handshake
        // spent, and no TIME_WAIT kept for it (counted as sipcfg_shed_total{reason="handshakes-at-bound"}).
        let Some(slot) = self.monitor.in_flight.handshake() else {
            let _ = tcp.set_zero_linger();
            return tracing::debug!(%peer, channel = channel.as_str(), "in-flight bound reached: connection shed");
        };
        let handshake = async {
            match &self.observer {
                None => TlsAcceptor::from(tls).accept(tcp).await.map(|stream| (stream, None)),
                Some(observer) => {
                    let (stream, facts) = Box::pin(observer.accept(tls, tcp, peer, channel)).await?;
                    Ok((stream, Some(facts)))
                }
            }
        };
        let shaken = tokio::time::timeout_at(deadline, handshake).await;
        drop(slot);
        match shaken {
            Ok(Ok((stream, facts))) => {
                metrics.handshake(channel, Ok(()));
                let conn = self.connection(facts);
                self.serve_http(stream, peer, channel, watcher, conn).await
            }
            Ok(Err(e)) => {
                metrics.handshake(channel, Err(HandshakeFailure::Error));
                tracing::debug!(%peer, channel = channel.as_str(), error = %e, "TLS handshake failed")
            }
            Err(_) => {
                metrics.handshake(channel, Err(HandshakeFailure::Timeout));
                tracing::debug!(%peer, channel = channel.as_str(), "TLS handshake timed out")
            }
        }
    }

    /// What a new connection holds for its requests: an empty memo, and in observe mode the observer with
    /// the connection's TLS facts.
    fn connection(&self, tls: Option<observe::TlsFacts>) -> phone::Connection {
        phone::Connection { memo: phone::MemoSlot::default(), observed: self.observer.clone().map(|o| (o, tls)) }
    }

    async fn serve_http<I>(
        self: Arc<Self>,
        io: I,
        peer: SocketAddr,
        channel: Channel,
        watcher: Watcher,
        conn: phone::Connection,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = limits::IdleTimeout::new(io, self.app.config().server.idle_timeout());
        let node = self.clone();
        let conn = Arc::new(conn);
        let service = service_fn(move |req| {
            let (node, conn) = (node.clone(), conn.clone());
            async move {
                // One slot of the in-flight bound while the request is served; past the bound, 503 before
                // any work (no token looked at, nothing rendered).
                let response = match node.monitor.in_flight.request() {
                    Ok(_slot) => phone::handle(&node.app, &node.monitor, peer, channel, req, &conn).await,
                    Err(retry_after) => phone::overloaded(&node.monitor, channel, &req, retry_after),
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        if let Err(e) = watcher.watch(conn).await {
            // A request hyper refused before it reached the handler (431, 400) still gets its access line.
            phone::refused_by_hyper(&self.monitor, peer, channel, e.as_ref());
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
