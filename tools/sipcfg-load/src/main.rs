//! `sipcfg-load`: a load client for boot-storm and keep-alive benchmarks (issue 6).
//!
//! Simulates N phones with N distinct device names and N distinct bearer tokens (`--tokens FILE`, one
//! `NAME TOKEN` per line, written by `sipcfg-load --mint N --config FILE --out FILE`).
//!
//! - `--mode storm`: each phone opens a NEW TLS 1.3 connection (X25519 only, no session resumption, ALPN
//!   http/1.1), does one `GET /<NAME>.cnf.xml` with its own token and closes. C phones at a time.
//! - `--mode keepalive`: C kept connections; each fetches its phone's file once, then re-checks it in a loop
//!   with `If-None-Match: <etag>` (expecting 304).
//!
//! It reports answered/s, p50/p99/max latency, status counts, errors and its own CPU time (utime+stime from
//! /proc/self/stat), and, with `--server-pids`, the server's CPU time per answered request over exactly the
//! measured window. HTTP/1.1 is spoken by hand (no hyper client in the main dependencies); it understands
//! Content-Length and chunked bodies, which is all sipcfg and nginx send.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

mod library;

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Storm,
    Keepalive,
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
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = if args.mint.is_some() { mint(&args) } else { run(args) };
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
// HTTP/1.1 by hand

struct Response {
    status: u16,
    etag: Option<String>,
    close: bool,
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

/// Reads one response from `s`; `buf` keeps bytes read past it (pipelining is not used, but be safe).
async fn read_response<S: AsyncReadExt + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Result<Response, String> {
    let mut tmp = [0u8; 16384];
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > 65536 {
            return Err("response header too large".into());
        }
        let n = s.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before the response".into());
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "non-UTF-8 response header")?.to_owned();
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let (mut length, mut chunked, mut etag, mut close) = (None, false, None, false);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else { continue };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = v.parse::<usize>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("etag") {
            etag = Some(v.to_owned());
        } else if k.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        }
    }
    let no_body = status == 304 || status == 204 || (100..200).contains(&status);
    if no_body {
    } else if chunked {
        loop {
            let line_end = loop {
                if let Some(p) = find(buf, b"\r\n") {
                    break p;
                }
                let n = s.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("connection closed in a chunked body".into());
                }
                buf.extend_from_slice(&tmp[..n]);
            };
            let size_txt = std::str::from_utf8(&buf[..line_end]).unwrap_or("").split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_txt, 16).map_err(|_| "bad chunk size")?;
            let need = line_end + 2 + size + 2;
            while buf.len() < need {
                let n = s.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("connection closed in a chunk".into());
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            buf.drain(..need);
            if size == 0 {
                break; // trailers are not used by either server
            }
        }
    } else if let Some(len) = length {
        while buf.len() < len {
            let n = s.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed in the body".into());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        buf.drain(..len);
    } else {
        // Body until close.
        loop {
            let n = s.read(&mut tmp).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
        }
        buf.clear();
        close = true;
    }
    Ok(Response { status, etag, close })
}

fn request(name: &str, host: &str, token: &str, etag: Option<&str>, close: bool) -> Vec<u8> {
    let mut r = format!("GET /{name}.cnf.xml HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n");
    if let Some(e) = etag {
        r.push_str("If-None-Match: ");
        r.push_str(e);
        r.push_str("\r\n");
    }
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
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
    addr: String,
    host: String,
    next: AtomicU64,
    limit: u64,
    deadline: Option<Instant>,
    start: Instant,
    rate: Option<f64>,
    stop: AtomicBool,
}

impl Shared {
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

async fn connect(sh: &Shared) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(&sh.addr).await.map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    sh.connector.connect(sh.server_name.clone(), tcp).await.map_err(|e| format!("tls: {e}"))
}

async fn storm_worker(sh: Arc<Shared>, delay: Duration) -> Stats {
    tokio::time::sleep(delay).await;
    let mut st = Stats::default();
    let mut buf = Vec::with_capacity(16384);
    while let Some(i) = sh.take().await {
        let (name, token) = &sh.phones[(i % sh.phones.len() as u64) as usize];
        let t0 = Instant::now();
        let result = async {
            let mut tls = connect(&sh).await?;
            tls.write_all(&request(name, &sh.host, token, None, true)).await.map_err(|e| format!("write: {e}"))?;
            buf.clear();
            let r = read_response(&mut tls, &mut buf).await?;
            // Close politely (close_notify), as a phone would; do not wait for the server's.
            let _ = tls.shutdown().await;
            Ok::<_, String>(r.status)
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
    let mut buf = Vec::with_capacity(16384);
    let (name, token) = &sh.phones[phone % sh.phones.len()];
    let mut conn = None;
    let mut etag: Option<String> = None;
    while sh.take().await.is_some() {
        let t0 = Instant::now();
        let result = async {
            if conn.is_none() {
                conn = Some(connect(&sh).await?);
                buf.clear();
            }
            let tls = conn.as_mut().expect("connected");
            let req = request(name, &sh.host, token, etag.as_deref(), false);
            tls.write_all(&req).await.map_err(|e| format!("write: {e}"))?;
            let r = read_response(tls, &mut buf).await?;
            if r.close {
                conn = None;
            }
            if r.status == 200 {
                etag = r.etag.clone();
            }
            Ok::<_, String>(r.status)
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
    let limit = match (args.requests, args.duration, args.mode) {
        (Some(m), _, _) => m,
        (None, Some(_), _) => u64::MAX,
        (None, None, Mode::Storm) => phones.len() as u64,
        (None, None, Mode::Keepalive) => return Err("keepalive needs --duration or --requests".into()),
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
            host: args.server_name.clone(),
            addr: args.addr.clone(),
            next: AtomicU64::new(0),
            limit,
            deadline: args.duration.map(|d| start + Duration::from_secs_f64(d)),
            start,
            rate: args.rate,
            stop: AtomicBool::new(false),
        });
        let own0 = cpu_us("self").unwrap_or(0);
        let srv0 = servers_cpu_us(&args.server_pids);
        let mut tasks = Vec::with_capacity(c);
        for k in 0..c {
            let delay = Duration::from_secs_f64(args.ramp * k as f64 / c as f64);
            let sh = sh.clone();
            tasks.push(match args.mode {
                Mode::Storm => tokio::spawn(storm_worker(sh, delay)),
                Mode::Keepalive => tokio::spawn(keepalive_worker(sh, k, delay)),
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
