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

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::app::channel::Channel;
use crate::config::Config;
use crate::ops::Monitor;
use crate::ops::inflight::{HandshakeSlot, InFlight};
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
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout())
        .max_buf_size(settings.max_header_bytes);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(settings.h2_max_pending_reset_streams)
        .max_local_error_reset_streams(settings.h2_max_local_error_reset_streams)
        .max_header_list_size(settings.max_header_bytes as u32);
    let observer = observe::Observer::from_config(&app.config().observe);
    let node = Arc::new(Node { app: app.clone(), monitor: monitor.clone(), http1, http2, observer });
    let (stop, stopped) = stop_signal();
    let console = listeners.console.map(|l| tokio::spawn(console::run(l, app.clone(), stopped.clone())));

    let graceful = Arc::new(graceful);
    let handle = tokio::runtime::Handle::current();
    let mut sweepers = Vec::new();
    let mut serve = |listener: TcpListener, channel: Channel| {
        // TCP_NODELAY once on the listening socket: Linux copies it to every connection accepted from it,
        // which spares a setsockopt per connection (a boot-storm phone's only use of the connection is one
        // answer). Where it is not inherited, each connection still sets it (`serve_connection`).
        let nodelay_inherited =
            socket2::SockRef::from(&listener).set_tcp_nodelay(true).is_ok() && cfg!(target_os = "linux");
        // What becomes of a new connection, wherever it was accepted (the accept loop, or the sweeper).
        let admit = {
            let (node, graceful) = (node.clone(), graceful.clone());
            Arc::new(move |tcp: TcpStream, peer: SocketAddr, permit: OwnedSemaphorePermit| {
                let slot = match channel {
                    Channel::Legacy => None,
                    Channel::Https | Channel::Edge => node.admit(&tcp)?,
                };
                let node = node.clone();
                let watcher = graceful.watcher();
                let queued = std::time::Instant::now();
                Some(async move {
                    // How long this task waited for a worker: the handshakes' share follows it (ops/inflight.rs).
                    if channel != Channel::Legacy {
                        node.monitor.in_flight.waited(queued.elapsed());
                    }
                    let open = node.monitor.metrics.connection(channel);
                    // Boxed: the connection's future is 7 KB (handshake, then HTTP); unboxed, this task's
                    // future was as large, and was copied whole from here into the runtime's task, several
                    // times per connection (~2 µs of `memmove` per boot-storm phone).
                    Box::pin(node.serve_connection(tcp, peer, channel, watcher, slot, nodelay_inherited)).await;
                    drop(open);
                    drop(permit);
                })
            })
        };
        if channel != Channel::Legacy {
            let sweeper =
                Sweeper { limit: limit.clone(), stop: stopped.clone(), handle: handle.clone(), admit: admit.clone() };
            sweepers.extend(sweeper.spawn(&listener, &node.monitor.in_flight, channel.as_str()));
        }
        // Within tokio's cooperative budget (128 accepts a turn): measured at 7,900 arrivals/s on one core,
        // an unconstrained loop resetting connections kept the handshakes from running (served phones fell
        // from about 2,000/s to 1,400/s). Past capacity the sweeper keeps the accept queue (see `Sweeper`).
        accept_loop(listener, limit.clone(), stopped.clone(), channel.as_str(), move |tcp, peer, permit| {
            admit(tcp, peer, permit)
        })
    };
    let https = serve(listeners.https, Channel::Https);
    let legacy = listeners.legacy.map(|l| serve(l, Channel::Legacy));
    let edge = listeners.edge.map(|l| serve(l, Channel::Edge));
    let legacy = async {
        if let Some(accepting) = legacy {
            accepting.await;
        }
    };
    let edge = async {
        if let Some(accepting) = edge {
            accepting.await;
        }
    };
    let trigger = async {
        shutdown.await;
        monitor.health.start_draining();
        stop.stop();
    };
    tokio::join!(https, legacy, edge, trigger);
    let swept = tokio::task::spawn_blocking(move || sweepers.into_iter().for_each(|s| drop(s.join())));
    let _ = swept.await;
    // The accept loops and the sweepers have returned, and with them their handles on `graceful`.
    let all_closed = async {
        match Arc::try_unwrap(graceful) {
            Ok(graceful) => graceful.shutdown().await,
            Err(_) => std::future::pending().await,
        }
    };
    tracing::info!("stopped accepting; waiting for open requests");
    tokio::select! {
        () = all_closed => tracing::info!("all connections closed"),
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

/// Accepts connections on `listener` until `stop`, each served by the future `serve` returns (none: the
/// connection was shed) in a task of its own that holds one of `limit`'s slots. A slot is taken before
/// `accept`: above the limit, clients wait in the kernel's backlog instead of exhausting memory or descriptors.
pub async fn accept_loop<S, F>(listener: TcpListener, limit: Arc<Semaphore>, mut stop: Stop, what: &str, serve: S)
where
    S: Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Option<F>,
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
        if let Some(served) = serve(tcp, peer, permit) {
            tokio::spawn(served);
        }
    }
}

/// How often a sleeping sweeper looks at the stop signal.
const SWEEPER_STOP_POLL: Duration = Duration::from_millis(100);
/// A sweeper's pause when the accept queue is empty.
const SWEEP_PAUSE: Duration = Duration::from_millis(1);
/// How long a sweeper keeps the accept queue after the in-flight bound was last found reached.
const SWEEP_LINGER: Duration = Duration::from_millis(250);

/// What a connection becomes once accepted: its serving future, or `None` when it was shed.
type Admit<F> = Arc<dyn Fn(TcpStream, SocketAddr, OwnedSemaphorePermit) -> Option<F> + Send + Sync>;

/// The accept queue's keeper past capacity: a thread per TLS listener that sleeps until the in-flight bound
/// sheds a connection, then accepts everything the kernel queues, every millisecond, until the bound has not
/// been reached for [`SWEEP_LINGER`]: a connection is reset while handshakes are at their bound, handed to
/// the runtime otherwise (as the accept loop would).
///
/// Why: past capacity the accept loop is one task among the handshakes, polled once per round of them
/// (60 ms and more with an RSA certificate), then 128 accepts at most. Meanwhile the kernel's accept queue
/// overflowed, SYNs and final ACKs were dropped, and phones were served only after one or more SYN
/// retransmissions (1 s, 3 s, 7 s): accepted phones' p99 was 0.5-1.4 s at three times capacity, up to 9 s
/// with an RSA certificate (BENCHMARKS.md, "Past capacity"). The kernel wakes the sweeper whatever the
/// workers do. A thread that accepted every connection at all times would cost ~45 µs per phone in a boot
/// storm below the bound (two context switches per phone, measured), so the sweeper works only while the
/// bound is being reached.
struct Sweeper<F> {
    limit: Arc<Semaphore>,
    stop: Stop,
    handle: tokio::runtime::Handle,
    admit: Admit<F>,
}

impl<F: Future<Output = ()> + Send + 'static> Sweeper<F> {
    fn spawn(
        self,
        listener: &TcpListener,
        in_flight: &Arc<InFlight>,
        what: &'static str,
    ) -> Option<std::thread::JoinHandle<()>> {
        use std::os::fd::AsFd;
        // A second descriptor of the same (non-blocking) listening socket.
        let queue = match listener.as_fd().try_clone_to_owned() {
            Ok(fd) => std::net::TcpListener::from(fd),
            Err(e) => {
                tracing::warn!(listener = what, error = %e, "no sweeper for this listener: cannot share its socket");
                return None;
            }
        };
        let bound = in_flight.clone();
        let sweeper = std::thread::Builder::new().name(format!("sipcfg-sweep-{what}")).spawn(move || {
            self.run(&queue, &bound);
        });
        match sweeper {
            Ok(handle) => {
                in_flight.add_sweeper(handle.thread().clone());
                Some(handle)
            }
            Err(e) => {
                tracing::warn!(listener = what, error = %e, "no sweeper for this listener: cannot start its thread");
                None
            }
        }
    }

    fn run(&self, queue: &std::net::TcpListener, in_flight: &InFlight) {
        while !self.stop.is_stopped() {
            std::thread::park_timeout(SWEEPER_STOP_POLL);
            if !in_flight.sweep_wanted() {
                continue;
            }
            let mut reached = std::time::Instant::now();
            while reached.elapsed() < SWEEP_LINGER && !self.stop.is_stopped() {
                if in_flight.handshakes_full() {
                    reached = std::time::Instant::now();
                }
                match queue.accept() {
                    Ok((tcp, peer)) => self.take(tcp, peer, in_flight),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(SWEEP_PAUSE),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // Out of descriptors and the like: the accept loop says so; back off.
                    Err(_) => std::thread::sleep(SWEEPER_STOP_POLL),
                }
            }
            in_flight.sweep_done();
        }
    }

    /// A connection the sweeper accepted: reset while handshakes are at their bound (or every connection slot
    /// is taken), served otherwise.
    fn take(&self, tcp: std::net::TcpStream, peer: SocketAddr, in_flight: &InFlight) {
        let permit = match in_flight.handshakes_full() {
            true => None,
            false => self.limit.clone().try_acquire_owned().ok(),
        };
        let Some(permit) = permit else {
            in_flight.shed_connection();
            let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
            return;
        };
        let _runtime = self.handle.enter();
        if tcp.set_nonblocking(true).is_err() {
            return;
        }
        let Ok(tcp) = TcpStream::from_std(tcp) else { return };
        if let Some(served) = (self.admit)(tcp, peer, permit) {
            self.handle.spawn(served);
        }
    }
}

/// What every phone-facing connection is served with (one `Arc` clone per request).
struct Node {
    app: Arc<App>,
    monitor: Monitor,
    /// HTTP/1.1: the legacy listener, and TLS connections that did not choose `h2` by ALPN.
    http1: http1::Builder,
    /// HTTP/2: TLS connections that chose `h2` by ALPN (RFC 9113 §3.2: over TLS, only by ALPN).
    http2: http2::Builder<TokioExecutor>,
    /// Observe mode (`[observe]`); `None` when off.
    observer: Option<Arc<observe::Observer>>,
}

impl Node {
    /// Admission of a new TLS connection: `Some(Some(slot))` when its first bytes (the ClientHello) have come
    /// and a handshake slot of the in-flight bound is free; `Some(None)` when nothing has come yet (it waits
    /// for its first bytes holding only its connection slot: a connection that never speaks holds no share of
    /// the bound); `None` when it is shed: reset at once, counted in
    /// `sipcfg_shed_total{reason="handshakes-at-bound"}`.
    fn admit(&self, tcp: &TcpStream) -> Option<Option<HandshakeSlot>> {
        let in_flight = &self.monitor.in_flight;
        // A peek without waiting (the socket is non-blocking): the ClientHello has usually come with the
        // connection.
        let spoke = match socket2::SockRef::from(tcp).peek(&mut [std::mem::MaybeUninit::new(0u8)]) {
            Ok(n) => n > 0,
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
        };
        let admitted = match spoke {
            true => in_flight.handshake().map(Some),
            false if in_flight.handshakes_full() => {
                in_flight.shed_connection();
                None
            }
            false => Some(None),
        };
        if admitted.is_none() {
            let _ = tcp.set_zero_linger();
        }
        admitted
    }

    async fn serve_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        channel: Channel,
        watcher: Watcher,
        admitted: Option<HandshakeSlot>,
        nodelay_inherited: bool,
    ) {
        if !nodelay_inherited {
            let _ = tcp.set_nodelay(true);
        }
        let tls = match channel {
            Channel::Legacy => {
                let conn = self.connection(None);
                return self.serve_http(tcp, peer, channel, watcher, conn, false).await;
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
        let slot = match admitted {
            Some(slot) => slot,
            None => match self.first_bytes(&tcp, peer, channel, deadline).await {
                Some(slot) => slot,
                None => return,
            },
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
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                self.serve_http(stream, peer, channel, watcher, conn, h2).await
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

    /// Waits (until `deadline`) for a connection's first bytes, then takes a handshake slot of the in-flight
    /// bound: `None` when the connection failed, timed out or was shed (reset, counted).
    async fn first_bytes(
        &self,
        tcp: &TcpStream,
        peer: SocketAddr,
        channel: Channel,
        deadline: tokio::time::Instant,
    ) -> Option<HandshakeSlot> {
        let metrics = &self.monitor.metrics;
        // A peek, not `readable()`: readiness may be reported before any byte has come.
        match tokio::time::timeout_at(deadline, tcp.peek(&mut [0u8; 1])).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                metrics.handshake(channel, Err(HandshakeFailure::Error));
                tracing::debug!(%peer, channel = channel.as_str(), error = %e, "connection failed");
                return None;
            }
            Err(_) => {
                metrics.handshake(channel, Err(HandshakeFailure::Timeout));
                tracing::debug!(%peer, channel = channel.as_str(), "TLS handshake timed out");
                return None;
            }
        }
        // Past the handshakes' share of the bound, the connection is reset before any TLS work: no handshake
        // spent, and no TIME_WAIT kept for it (counted as sipcfg_shed_total{reason="handshakes-at-bound"}).
        let slot = self.monitor.in_flight.handshake();
        if slot.is_none() {
            let _ = tcp.set_zero_linger();
            tracing::debug!(%peer, channel = channel.as_str(), "in-flight bound reached: connection shed");
        }
        slot
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
        h2: bool,
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
        // The protocol is known before the first byte (ALPN, or the listener): no sniffing of a preface.
        let served = match h2 {
            false => watcher.watch(self.http1.serve_connection(TokioIo::new(io), service)).await,
            true => watcher.watch(self.http2.serve_connection(TokioIo::new(io), service)).await,
        };
        if let Err(e) = served {
            // A request hyper refused before it reached the handler (431, 400) still gets its access line.
            phone::refused_by_hyper(&self.monitor, peer, channel, &e);
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
