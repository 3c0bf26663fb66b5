//! `sipcfg-load`: a load client for boot-storm and keep-alive benchmarks (issue 6).
//!
//! Simulates N phones with N distinct device names and N distinct bearer tokens (`--tokens FILE`, one
//! `NAME TOKEN` per line, written by `sipcfg-load --mint N --config FILE --out FILE`).
//!
//! - `--mode storm`: each phone opens a NEW TLS 1.3 connection (X25519 only, no session resumption, ALPN
//!   http/1.1), does one `GET /<NAME>.cnf.xml` with its own token and closes. C phones at a time.
//! - `--mode keepalive`: C kept connections; each fetches its phone's file once, then re-checks it in a loop
//!   with `If-None-Match: <etag>` (expecting 304).
//! - `--mode open --schedule RATE:SECS,...`: an open-loop boot storm (issue 17.2): new phones ARRIVE at a fixed
//!   rate whatever the server answers, phase after phase (e.g. `15000:15,2500:10`: 3x capacity, then half);
//!   each arrival is one phone as in storm. At most `--max-outstanding` phones are in progress at once (an
//!   arrival past that is counted as skipped, so the client stays bounded), each for at most `--timeout`
//!   seconds. It reports, per second and per phase, arrivals, 200/304, 503, other statuses, errors (reset,
//!   refused, timed out), the p50/p99 latency of the accepted (200/304) from their arrival, and after each
//!   phase that follows a heavier one, how long after its start the last refused phone arrived (recovery).
//!
//! It reports answered/s, p50/p99/max latency, status counts, errors and its own CPU time (utime+stime from
//! /proc/self/stat), and, with `--server-pids`, the server's CPU time per answered request over exactly the
//! measured window.
//!
//! HTTP/1.1 is hyper's client connection (`hyper::client::conn::http1`) over the tokio-rustls stream, one per
//! TLS connection, writing header names in title case (`Host`, `Authorization`, `If-None-Match`) as phones do.
//! Each worker drives its own connection rather than spawning a task for it. `--mint` is the only use of the
//! sipcfg library (src/library.rs). A workspace member outside the product: `cargo build --release -p
//! sipcfg-load`.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::header::{AUTHORIZATION, CONNECTION, ETAG, HOST, IF_NONE_MATCH};
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

mod fleet;
mod library;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Suites {
    All,
    Aes128,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Storm,
    Keepalive,
    /// Open loop: arrivals at fixed rates (--schedule).
    Open,
    /// Phones that onboard, boot, refresh and reboot in waves (fleet.rs).
    Fleet,
}

#[derive(Parser, Debug)]
#[command(name = "sipcfg-load", about = "Boot-storm and keep-alive load client for sipcfg (and nginx, for comparison)")]
struct Args {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:16971")]
    addr: String,
    /// TLS server name (SNI, and the name verified unless --insecure).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    #[arg(long, value_enum, default_value = "storm")]
    mode: Mode,
    /// Number of distinct phones (first N lines of --tokens; default: all of them).
    #[arg(long)]
    phones: Option<usize>,
    /// Phones in flight at once (storm) or kept connections (keepalive).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Run for this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Stop after this many requests (storm default without --duration: one per phone).
    #[arg(long)]
    requests: Option<u64>,
    /// Start the C workers evenly over this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    ramp: f64,
    /// Pace requests at this rate (per second, all workers together); default: as fast as possible.
    #[arg(long, value_name = "PER_SEC")]
    rate: Option<f64>,
    /// Skip certificate verification (benchmark mode).
    #[arg(long)]
    insecure: bool,
    /// CA to trust when not --insecure.
    #[arg(long, default_value = "certs-example/ca.pem")]
    ca: PathBuf,
    /// Tokens file: one `NAME TOKEN` per line.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// Label for the report (e.g. "sipcfg", "nginx").
    #[arg(long, default_value = "")]
    label: String,
    /// PIDs of the server's processes: their utime+stime over the measured window is reported per answer.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Client runtime threads (1 = current-thread runtime, best when the client is pinned to one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Keep-alive: never send `If-None-Match`, so that every answer is a full 200 with the file.
    #[arg(long)]
    full: bool,
    /// TLS 1.3 suites offered: `all` in rustls's order (AES-256-GCM-SHA384 first, as h2load and OpenSSL), or
    /// only `aes128` (TLS_AES_128_GCM_SHA256), so that a server that follows the client's order (the floor)
    /// runs the same suite as one that prefers its own (sipcfg).
    #[arg(long, value_enum, default_value_t = Suites::All)]
    suites: Suites,
    /// Open loop: phases of `RATE:SECS` (arrivals per second, seconds), comma-separated.
    #[arg(long, value_name = "RATE:SECS,...")]
    schedule: Option<String>,
    /// Open loop: phones in progress at most; arrivals past it are skipped (counted).
    #[arg(long, default_value_t = 4000)]
    max_outstanding: usize,
    /// Open loop: a phone not answered within this many seconds counts as timed out.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    timeout: f64,
    /// Mint N device tokens instead of loading: for the first N devices of the inventory named by --config.
    #[arg(long, value_name = "N")]
    mint: Option<usize>,
    /// sipcfg configuration for --mint.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output of --mint (default: standard output).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Token lifetime for --mint.
    #[arg(long, default_value_t = 86_400)]
    ttl: u64,
    #[command(flatten)]
    fleet: fleet::FleetArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = if args.mint.is_some() {
        mint(&args)
    } else if args.mode == Mode::Fleet {
        fleet::run(&args)
    } else {
        run(args)
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sipcfg-load: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Minting

fn mint(args: &Args) -> Result<(), String> {
    let n = args.mint.unwrap_or(0);
    let path = args.config.as_ref().ok_or("--mint needs --config FILE")?;
    let deployment = library::Deployment::load(path, n)?;
    let names = &deployment.names;
    if names.len() < n {
        eprintln!("note: the inventory has only {} enabled devices; minting that many", names.len());
    }
    let now = library::now();
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get()).min(8);
    let chunk = names.len().div_ceil(threads).max(1);
    let t1 = Instant::now();
    let parts: Vec<Result<String, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = names
            .chunks(chunk)
            .map(|part| {
                let deployment = &deployment;
                s.spawn(move || {
                    let mut out = String::with_capacity(part.len() * 400);
                    for name in part {
                        let token = deployment.mint(name, now, args.ttl)?;
                        out.push_str(name);
                        out.push(' ');
                        out.push_str(&token);
                        out.push('\n');
                    }
                    Ok(out)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("minting thread panicked".into()))).collect()
    });
    let mut all = String::new();
    for p in parts {
        all.push_str(&p?);
    }
    match &args.out {
        Some(f) => std::fs::write(f, all).map_err(|e| format!("{}: {e}", f.display()))?,
        None => std::io::stdout().write_all(all.as_bytes()).map_err(|e| e.to_string())?,
    }
    eprintln!(
        "minted {} tokens in {:.2} s ({threads} threads); inventory of {} devices loaded in {:.3} s",
        names.len(),
        t1.elapsed().as_secs_f64(),
        deployment.devices,
        deployment.load_time.as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// TLS

#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config(args: &Args) -> Result<ClientConfig, String> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // As phones and h2load: X25519 only (no post-quantum hybrid, which costs the server more).
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    if args.suites == Suites::Aes128 {
        provider.cipher_suites.retain(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?;
    let mut config = if args.insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify(provider))).with_no_client_auth()
    } else {
        use rustls::pki_types::pem::PemObject;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(&args.ca).map_err(|e| format!("{}: {e}", args.ca.display()))? {
            roots.add(c.map_err(|e| format!("{}: {e}", args.ca.display()))?).map_err(|e| e.to_string())?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

// ---------------------------------------------------------------------------------------------------------
// HTTP/1.1: hyper's client connection over the TLS stream

type Io = TokioIo<TlsStream<TcpStream>>;

/// What a run keeps of an answer.
struct Answer {
    status: u16,
    etag: Option<HeaderValue>,
    /// The server said `Connection: close`.
    close: bool,
}

/// One phone's request, prepared once: its path and its `Authorization` header.
struct Target {
    uri: Uri,
    authorization: HeaderValue,
}

impl Target {
    fn new(name: &str, token: &str) -> Result<Target, String> {
        let uri = format!("/{name}.cnf.xml").parse().map_err(|e| format!("request: {name}: {e}"))?;
        let authorization = HeaderValue::try_from(format!("Bearer {token}")).map_err(|e| format!("request: {e}"))?;
        Ok(Target { uri, authorization })
    }
}

fn http_error(e: hyper::Error) -> String {
    match std::error::Error::source(&e) {
        Some(cause) => format!("http: {e}: {cause}"),
        None => format!("http: {e}"),
    }
}

/// One HTTP/1.1 connection. The worker that owns it drives it too (no task per connection), so that all of
/// a phone's work stays in its worker as with a phone's single thread.
struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    /// hyper's connection future, which owns the TLS stream and does the I/O when polled; None once it
    /// has finished (the connection is closed).
    driver: Option<http1::Connection<Io, Empty<Bytes>>>,
}

impl Conn {
    /// A new TCP connection, a full TLS handshake, then HTTP/1.1 on it.
    async fn open(sh: &Shared) -> Result<Conn, String> {
        let tcp = TcpStream::connect(&sh.addr).await.map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let tls = sh.connector.connect(sh.server_name.clone(), tcp).await.map_err(|e| format!("tls: {e}"))?;
        let (sender, driver) = sh.http.handshake(TokioIo::new(tls)).await.map_err(http_error)?;
        Ok(Conn { sender, driver: Some(driver) })
    }

    /// Sends `req` and reads its whole answer, driving the connection meanwhile.
    async fn fetch(&mut self, req: Request<Empty<Bytes>>) -> Result<Answer, String> {
        let Conn { sender, driver } = self;
        let mut exchange = pin!(async move {
            sender.ready().await.map_err(http_error)?;
            let res = sender.send_request(req).await.map_err(http_error)?;
            let answer = Answer {
                status: res.status().as_u16(),
                etag: res.headers().get(ETAG).cloned(),
                close: res.headers().get_all(CONNECTION).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"close")),
            };
            let mut body = res.into_body();
            while let Some(frame) = body.frame().await {
                frame.map_err(http_error)?;
            }
            Ok(answer)
        });
        std::future::poll_fn(|cx| {
            if let Some(d) = driver
                && Pin::new(d).poll(cx).is_ready()
            {
                // The connection is over (closed after the answer, or failed). Dropping hyper's side of it
                // ends whatever the exchange still waits for: it gets the answer already read, or an error.
                *driver = None;
            }
            exchange.as_mut().poll(cx)
        })
        .await
    }

    /// Closes the connection politely (close_notify, then FIN), as a phone would; does not wait for the
    /// server's close_notify.
    async fn close(self) {
        drop(self.sender);
        if let Some(driver) = self.driver {
            let _ = driver.await;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The run

#[derive(Default)]
struct Stats {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.latencies_us.extend(o.latencies_us);
        for (k, v) in o.statuses {
            *self.statuses.entry(k).or_default() += v;
        }
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
    fn error(&mut self, e: String) {
        // Group errors by their kind, not by their details.
        let key: String = e.chars().take(60).collect();
        *self.errors.entry(key).or_default() += 1;
    }
}

struct Shared {
    phones: Vec<(String, String)>,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    /// HTTP/1.1 connection settings.
    http: http1::Builder,
    addr: String,
    host: HeaderValue,
    next: AtomicU64,
    limit: u64,
    deadline: Option<Instant>,
    start: Instant,
    rate: Option<f64>,
    stop: AtomicBool,
    /// Keep-alive without `If-None-Match` (`--full`).
    full: bool,
}

impl Shared {
    /// `GET /<NAME>.cnf.xml` with the phone's bearer token; `If-None-Match` to revalidate, and `Connection:
    /// close` for a phone that fetches once.
    fn request(&self, target: &Target, etag: Option<&HeaderValue>, close: bool) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = target.uri.clone();
        let headers = req.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(AUTHORIZATION, target.authorization.clone());
        if let Some(etag) = etag {
            headers.insert(IF_NONE_MATCH, etag.clone());
        }
        if close {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        req
    }

    /// The next request's index, or None when the run is over. With --rate, waits for its slot.
    async fn take(&self) -> Option<u64> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if i >= self.limit {
            return None;
        }
        if let Some(r) = self.rate {
            let at = self.start + Duration::from_secs_f64(i as f64 / r);
            if self.deadline.is_some_and(|d| at >= d) {
                return None;
            }
            tokio::time::sleep_until(at.into()).await;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.stop.store(true, Ordering::Relaxed);
            return None;
        }
        Some(i)
    }
}

async fn storm_worker(sh: Arc<Shared>, delay: Duration) -> Stats {
    tokio::time::sleep(delay).await;
    let mut st = Stats::default();
    while let Some(i) = sh.take().await {
        let (name, token) = &sh.phones[(i % sh.phones.len() as u64) as usize];
        let t0 = Instant::now();
        let result = async {
            let target = Target::new(name, token)?;
            let mut conn = Conn::open(&sh).await?;
            let answer = conn.fetch(sh.request(&target, None, true)).await?;
            conn.close().await;
            Ok::<_, String>(answer.status)
        }
        .await;
        match result {
            Ok(status) => {
                st.latencies_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                *st.statuses.entry(status).or_default() += 1;
            }
            Err(e) => st.error(e),
        }
    }
    st
}

async fn keepalive_worker(sh: Arc<Shared>, phone: usize, delay: Duration) -> Stats {
    tokio::time::sleep(delay).await;
    let mut st = Stats::default();
    let (name, token) = &sh.phones[phone % sh.phones.len()];
    let target = Target::new(name, token);
    let mut conn: Option<Conn> = None;
    let mut etag: Option<HeaderValue> = None;
    while sh.take().await.is_some() {
        let t0 = Instant::now();
        let result = async {
            let target = target.as_ref().map_err(String::clone)?;
            if conn.is_none() {
                conn = Some(Conn::open(&sh).await?);
            }
            let answer = conn.as_mut().expect("connected").fetch(sh.request(target, etag.as_ref(), false)).await?;
            if answer.close {
                conn = None;
            }
            if answer.status == 200 && !sh.full {
                etag = answer.etag;
            }
            Ok::<_, String>(answer.status)
        }
        .await;
        match result {
            Ok(status) => {
                st.latencies_us.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                *st.statuses.entry(status).or_default() += 1;
            }
            Err(e) => {
                conn = None;
                st.error(e)
            }
        }
    }
    st
}

/// utime+stime of a process (all its threads), in microseconds. Clock ticks are 100 Hz on Linux (USER_HZ).
fn cpu_us(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // After ")": state is field 3, utime 14, stime 15 → indexes 11 and 12.
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10_000)
}

fn servers_cpu_us(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|p| cpu_us(&p.to_string())).sum()
}

fn load_tokens(path: &PathBuf, n: Option<usize>) -> Result<Vec<(String, String)>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some((a, b)) = line.trim().split_once(' ') {
            out.push((a.to_owned(), b.trim().to_owned()));
            if n.is_some_and(|n| out.len() >= n) {
                break;
            }
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no `NAME TOKEN` lines", path.display()));
    }
    if let Some(n) = n
        && out.len() < n
    {
        eprintln!("note: {} has {} phones, fewer than --phones {n}; they are reused", path.display(), out.len());
    }
    Ok(out)
}

fn run(args: Args) -> Result<(), String> {
    let tokens = args.tokens.as_ref().ok_or("give --tokens FILE (or --mint N --config FILE)")?;
    let phones = load_tokens(tokens, args.phones)?;
    let config = client_config(&args)?;
    let server_name = ServerName::try_from(args.server_name.clone()).map_err(|e| e.to_string())?;
    let host = HeaderValue::try_from(&args.server_name).map_err(|e| format!("--server-name: {e}"))?;
    let mut http = http1::Builder::new();
    // Header names in title case, as phones write them: the same request bytes as the earlier hand-written
    // client sent, so that the servers' work per request stays comparable with earlier runs.
    http.title_case_headers(true);
    let limit = match (args.requests, args.duration, args.mode) {
        (Some(m), _, _) => m,
        (None, Some(_), _) => u64::MAX,
        (None, None, Mode::Storm) => phones.len() as u64,
        (None, None, Mode::Keepalive | Mode::Fleet) => return Err("keepalive needs --duration or --requests".into()),
        (None, None, Mode::Open) => u64::MAX,
    };
    let schedule = match (args.mode, &args.schedule) {
        (Mode::Open, Some(s)) => parse_schedule(s)?,
        (Mode::Open, None) => return Err("open needs --schedule RATE:SECS,...".into()),
        _ => Vec::new(),
    };
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    }
    .map_err(|e| e.to_string())?;
    let c = args.concurrency.max(1);
    runtime.block_on(async move {
        let start = Instant::now();
        let sh = Arc::new(Shared {
            phones,
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            http,
            host,
            addr: args.addr.clone(),
            next: AtomicU64::new(0),
            limit,
            deadline: args.duration.map(|d| start + Duration::from_secs_f64(d)),
            start,
            rate: args.rate,
            stop: AtomicBool::new(false),
            full: args.full,
        });
        if args.mode == Mode::Open {
            let own0 = cpu_us("self").unwrap_or(0);
            let records = open_loop(sh, &schedule, args.max_outstanding, Duration::from_secs_f64(args.timeout)).await;
            let own = cpu_us("self").unwrap_or(0).saturating_sub(own0);
            open_report(&args, &schedule, &records);
            let wall = start.elapsed().as_secs_f64();
            println!(
                "client CPU {:.2} s over {wall:.1} s ({:.0}% of one core{})",
                own as f64 / 1e6,
                own as f64 / 1e4 / wall,
                if own as f64 / 1e4 / wall > 90.0 { ": THE CLIENT IS LIKELY THE BOTTLENECK" } else { "" }
            );
            return Ok(());
        }
        let own0 = cpu_us("self").unwrap_or(0);
        let srv0 = servers_cpu_us(&args.server_pids);
        let mut tasks = Vec::with_capacity(c);
        for k in 0..c {
            let delay = Duration::from_secs_f64(args.ramp * k as f64 / c as f64);
            let sh = sh.clone();
            tasks.push(match args.mode {
                Mode::Storm => tokio::spawn(storm_worker(sh, delay)),
                Mode::Keepalive | Mode::Open | Mode::Fleet => tokio::spawn(keepalive_worker(sh, k, delay)),
            });
        }
        let mut stats = Stats::default();
        for t in tasks {
            stats.merge(t.await.map_err(|e| e.to_string())?);
        }
        let wall = start.elapsed().as_secs_f64();
        let own = cpu_us("self").unwrap_or(0).saturating_sub(own0);
        let srv = match (srv0, servers_cpu_us(&args.server_pids)) {
            (Some(a), Some(b)) if !args.server_pids.is_empty() => Some(b.saturating_sub(a)),
            _ => None,
        };
        report(&args, &stats, wall, own, srv);
        Ok::<_, String>(())
    })
}

fn report(args: &Args, st: &Stats, wall: f64, own_cpu_us: u64, server_cpu_us: Option<u64>) {
    let mut lat = st.latencies_us.clone();
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i] as f64 / 1000.0
    };
    let answered = lat.len() as u64;
    let ok: u64 = st.statuses.iter().filter(|(s, _)| matches!(**s, 200 | 304)).map(|(_, n)| n).sum();
    let errors: u64 = st.errors.values().sum();
    let rate = answered as f64 / wall;
    let client_cpu_pct = own_cpu_us as f64 / 1e4 / wall;
    let server_per = server_cpu_us.map(|s| if answered > 0 { s as f64 / answered as f64 } else { 0.0 });
    let mode = match args.mode {
        Mode::Storm => "storm",
        Mode::Keepalive => "keepalive",
        Mode::Open => "open",
        Mode::Fleet => "fleet",
    };
    if args.json {
        let v = serde_json::json!({
            "label": args.label,
            "mode": mode,
            "addr": args.addr,
            "concurrency": args.concurrency,
            "rate_target": args.rate,
            "wall_s": wall,
            "answered": answered,
            "ok": ok,
            "answered_per_s": rate,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": lat.last().map_or(0.0, |v| *v as f64 / 1000.0),
            "status": st.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "errors": errors,
            "error_kinds": st.errors,
            "client_cpu_us": own_cpu_us,
            "client_cpu_pct": client_cpu_pct,
            "server_cpu_us": server_cpu_us,
            "server_cpu_us_per_answer": server_per,
        });
        println!("{v}");
        return;
    }
    let label = if args.label.is_empty() { String::new() } else { format!(" [{}]", args.label) };
    println!("sipcfg-load{label}: {mode} against {}, concurrency {}", args.addr, args.concurrency);
    println!("  wall time        {wall:>10.2} s");
    println!("  answered         {answered:>10}  ({ok} with 200/304)");
    println!("  answered/s       {rate:>10.0}");
    println!("  latency p50      {:>10.2} ms", pct(0.50));
    println!("  latency p99      {:>10.2} ms", pct(0.99));
    println!("  latency max      {:>10.2} ms", lat.last().map_or(0.0, |v| *v as f64 / 1000.0));
    let statuses: Vec<String> = st.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("  status           {}", statuses.join(", "));
    println!("  errors           {errors:>10}");
    for (k, v) in &st.errors {
        println!("    {v:>8}  {k}");
    }
    println!(
        "  client CPU       {:>10.2} s  ({client_cpu_pct:.0}% of one core{})",
        own_cpu_us as f64 / 1e6,
        if client_cpu_pct > 90.0 { ": THE CLIENT IS LIKELY THE BOTTLENECK" } else { "" }
    );
    if let (Some(s), Some(per)) = (server_cpu_us, server_per) {
        println!(
            "  server CPU       {:>10.2} s  ({:.0}% of one core), {per:.1} µs per answer",
            s as f64 / 1e6,
            s as f64 / 1e4 / wall
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Open loop

/// `RATE:SECS,...` → phases.
fn parse_schedule(s: &str) -> Result<Vec<(f64, f64)>, String> {
    s.split(',')
        .map(|p| {
            let (r, d) = p.trim().split_once(':').ok_or_else(|| format!("--schedule: {p:?} is not RATE:SECS"))?;
            let r: f64 = r.parse().map_err(|_| format!("--schedule: bad rate {r:?}"))?;
            let d: f64 = d.parse().map_err(|_| format!("--schedule: bad duration {d:?}"))?;
            if !(r >= 0.0 && d > 0.0) {
                return Err(format!("--schedule: {p:?}: the rate must be ≥ 0 and the duration > 0"));
            }
            Ok((r, d))
        })
        .collect()
}

/// What became of one arrival.
#[derive(Clone, Copy)]
enum Outcome {
    Status(u16),
    /// Refused or reset before an answer (connect or TLS failed).
    Refused,
    /// Failed after the handshake (HTTP error).
    Failed,
    TimedOut,
    /// Not sent: --max-outstanding phones were in progress.
    Skipped,
}

struct Record {
    /// Arrival, since the start of the run.
    at: Duration,
    outcome: Outcome,
    latency: Duration,
}

/// One phone: new connection, one GET, close.
async fn one_phone(sh: &Shared, i: u64) -> Result<u16, String> {
    let (name, token) = &sh.phones[(i % sh.phones.len() as u64) as usize];
    let target = Target::new(name, token)?;
    let tcp = TcpStream::connect(&sh.addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let tls = sh.connector.connect(sh.server_name.clone(), tcp).await.map_err(|e| format!("tls: {e}"))?;
    let (sender, driver) = sh.http.handshake(TokioIo::new(tls)).await.map_err(http_error)?;
    let mut conn = Conn { sender, driver: Some(driver) };
    let answer = conn.fetch(sh.request(&target, None, true)).await?;
    conn.close().await;
    Ok(answer.status)
}

async fn open_loop(sh: Arc<Shared>, schedule: &[(f64, f64)], max: usize, timeout: Duration) -> Vec<Record> {
    let records = Arc::new(std::sync::Mutex::new(Vec::<Record>::new()));
    let outstanding = Arc::new(AtomicU64::new(0));
    let start = sh.start;
    let mut phase_start = Duration::ZERO;
    let mut next: u64 = 0;
    for &(rate, secs) in schedule {
        let phase_end = phase_start + Duration::from_secs_f64(secs);
        let mut due_sent: u64 = 0;
        loop {
            let now = start.elapsed();
            let into = now.min(phase_end).saturating_sub(phase_start);
            let due = (into.as_secs_f64() * rate) as u64;
            while due_sent < due {
                due_sent += 1;
                // The arrival's own time, not when the pacer got to it.
                let at = phase_start + Duration::from_secs_f64(due_sent as f64 / rate);
                if outstanding.load(Ordering::Relaxed) >= max as u64 {
                    let r = Record { at, outcome: Outcome::Skipped, latency: Duration::ZERO };
                    records.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(r);
                    continue;
                }
                outstanding.fetch_add(1, Ordering::Relaxed);
                let (sh, records, outstanding) = (sh.clone(), records.clone(), outstanding.clone());
                let i = next;
                next += 1;
                tokio::spawn(async move {
                    let outcome = match tokio::time::timeout(timeout, one_phone(&sh, i)).await {
                        Ok(Ok(status)) => Outcome::Status(status),
                        Ok(Err(e)) if e.starts_with("connect") || e.starts_with("tls") => Outcome::Refused,
                        Ok(Err(_)) => Outcome::Failed,
                        Err(_) => Outcome::TimedOut,
                    };
                    let latency = sh.start.elapsed().saturating_sub(at);
                    records.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Record {
                        at,
                        outcome,
                        latency,
                    });
                    outstanding.fetch_sub(1, Ordering::Relaxed);
                });
            }
            if now >= phase_end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        phase_start = phase_end;
    }
    // Let the last phones finish (each is bounded by the timeout).
    let deadline = Instant::now() + timeout + Duration::from_secs(1);
    while outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut out = std::mem::take(&mut *records.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    out.sort_by_key(|r| r.at);
    out
}

/// Counts and accepted latencies of a set of arrivals.
#[derive(Default)]
struct Tally {
    arrivals: u64,
    ok: u64,
    unavailable: u64,
    other_status: u64,
    refused: u64,
    failed: u64,
    timed_out: u64,
    skipped: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Tally {
    fn of<'a>(records: impl Iterator<Item = &'a Record>) -> Tally {
        let mut t = Tally::default();
        let mut lat: Vec<Duration> = Vec::new();
        for r in records {
            t.arrivals += 1;
            match r.outcome {
                Outcome::Status(200 | 304) => {
                    t.ok += 1;
                    lat.push(r.latency);
                }
                Outcome::Status(503) => t.unavailable += 1,
                Outcome::Status(_) => t.other_status += 1,
                Outcome::Refused => t.refused += 1,
                Outcome::Failed => t.failed += 1,
                Outcome::TimedOut => t.timed_out += 1,
                Outcome::Skipped => t.skipped += 1,
            }
        }
        lat.sort_unstable();
        let pct = |p: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
            lat[i].as_secs_f64() * 1000.0
        };
        t.p50_ms = pct(0.50);
        t.p99_ms = pct(0.99);
        t.max_ms = lat.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        t
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "arrivals": self.arrivals, "ok": self.ok, "503": self.unavailable, "other_status": self.other_status,
            "refused": self.refused, "failed": self.failed, "timed_out": self.timed_out, "skipped": self.skipped,
            "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms,
        })
    }

    fn row(&self, label: &str) -> String {
        format!(
            "{label:>12} {:>8} {:>8} {:>7} {:>6} {:>8} {:>6} {:>6} {:>7} {:>9.1} {:>9.1}",
            self.arrivals,
            self.ok,
            self.unavailable,
            self.other_status,
            self.refused,
            self.failed,
            self.timed_out,
            self.skipped,
            self.p50_ms,
            self.p99_ms
        )
    }
}

fn open_report(args: &Args, schedule: &[(f64, f64)], records: &[Record]) {
    let header = format!(
        "{:>12} {:>8} {:>8} {:>7} {:>6} {:>8} {:>6} {:>6} {:>7} {:>9} {:>9}",
        "", "arrivals", "200/304", "503", "other", "refused", "failed", "t/out", "skipped", "p50 ms", "p99 ms"
    );
    let total: f64 = schedule.iter().map(|p| p.1).sum();
    println!(
        "sipcfg-load{}: open loop against {}",
        if args.label.is_empty() { String::new() } else { format!(" [{}]", args.label) },
        args.addr
    );
    println!("per second (by arrival):\n{header}");
    for s in 0..total.ceil() as u64 {
        let (a, b) = (Duration::from_secs(s), Duration::from_secs(s + 1));
        let t = Tally::of(records.iter().filter(|r| r.at >= a && r.at < b));
        println!("{}", t.row(&format!("{s}-{}s", s + 1)));
    }
    println!("per phase:\n{header}");
    let mut phases = Vec::new();
    let mut from = Duration::ZERO;
    let mut previous_rate: Option<f64> = None;
    for &(rate, secs) in schedule {
        let to = from + Duration::from_secs_f64(secs);
        let t = Tally::of(records.iter().filter(|r| r.at >= from && r.at < to));
        println!("{}", t.row(&format!("{rate}/s")));
        // After a heavier phase: how long after this phase began the last phone not served arrived.
        let recovery_ms = previous_rate.filter(|&p| p > rate).map(|_| {
            records
                .iter()
                .filter(|r| r.at >= from && r.at < to && !matches!(r.outcome, Outcome::Status(200 | 304)))
                .map(|r| (r.at - from).as_secs_f64() * 1000.0)
                .fold(0.0, f64::max)
        });
        if let Some(ms) = recovery_ms {
            println!("{:>12} the last phone not served arrived {ms:.0} ms after the load fell", "");
        }
        phases.push(serde_json::json!({"rate": rate, "secs": secs, "tally": t.json(), "recovery_ms": recovery_ms}));
        previous_rate = Some(rate);
        from = to;
    }
    if args.json {
        println!("{}", serde_json::json!({"label": args.label, "mode": "open", "phases": phases}));
    }
}
