//! `--mode fleet`: a phone fleet, not only a storm (issue 17, point 3).
//!
//! Each simulated phone behaves as a phone of the refresh login flow does:
//!
//! 1. **onboard**: a new TLS connection, `POST /oauth/token` with its activation code
//!    (`grant_type=urn:sipcfg:grant-type:activation-code&code=…&device_name=SEP…`), which answers an access
//!    token and a refresh token;
//! 2. **boot**: a new TLS connection (kept alive for the boot), `GET XMLDefault.cnf.xml`, its own
//!    `SEP….cnf.xml` and the common files of `--files`, each with `Authorization: Bearer`; every `GET` is a
//!    **download**;
//! 3. **refresh**: at `--refresh-fraction` of the access token's lifetime (or every `--refresh-every`
//!    seconds), a new connection and `POST /oauth/token` with `grant_type=refresh_token`; refresh tokens
//!    rotate, so the phone keeps the newest pair;
//! 4. **reboot**: every `--wave-every` seconds a wave reboots `--wave-percent` of the onboarded fleet (the
//!    next ones in turn); a reboot is a boot whose downloads carry `If-None-Match` for the files the phone
//!    holds an ETag of. A wave's time is from its start until its last phone has finished.
//!
//! The phones come from a CSV of activation codes as the console's bulk creation writes it
//! (`POST /api/v1/activation-codes/bulk` with `Accept: text/csv`: `device,owner,code,expires`), or any CSV
//! whose first two columns are the device name and the code. At most `--concurrency` operations (an
//! onboarding, a boot, a refresh) are in flight at once; `--onboard-rate` paces the onboarding.
//!
//! Each phase reports its count, its successes, its errors by kind (`HTTP <status>`, `connect`, `tls`,
//! `timeout`, `http`, `bad answer`) and the latency of its successes (p50, p90, p99, max); `--json` prints
//! one JSON object instead of the table.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONNECTION, CONTENT_TYPE, ETAG, HOST, IF_NONE_MATCH, USER_AGENT};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio_rustls::TlsConnector;

use crate::{Args, cpu_us, servers_cpu_us};

/// The options of `--mode fleet` (flattened into the client's arguments).
#[derive(clap::Args, Debug)]
pub struct FleetArgs {
    /// fleet: CSV of activation codes, `device,owner,code,expires` as bulk creation writes it (or NAME,CODE).
    #[arg(long, value_name = "FILE")]
    codes: Option<PathBuf>,
    /// fleet: common files each boot downloads after XMLDefault.cnf.xml and the phone's own file.
    #[arg(long, value_delimiter = ',', default_value = "RingList.xml,dialplan.xml")]
    files: Vec<String>,
    /// fleet: refresh when this fraction of the access token's lifetime (expires_in) has passed.
    #[arg(long, default_value_t = 0.8)]
    refresh_fraction: f64,
    /// fleet: refresh every SECS instead, whatever the token's lifetime.
    #[arg(long, value_name = "SECS")]
    refresh_every: Option<f64>,
    /// fleet: a reboot wave every SECS after the first onboarding (0: no waves).
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    wave_every: f64,
    /// fleet: share of the onboarded fleet each wave reboots, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    wave_percent: f64,
    /// fleet: onboard at most this many phones per second (default: as fast as --concurrency allows).
    #[arg(long, value_name = "PER_SEC")]
    onboard_rate: Option<f64>,
    /// fleet: time limit of a connection, a TLS handshake or one request.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    request_timeout: f64,
}

/// The run's duration when `--duration` is not given.
const DEFAULT_SECS: f64 = 60.0;
/// How long a phone waits before trying again after a failed grant (a 503's or 429's Retry-After if longer).
const RETRY_SECS: u64 = 5;
/// A rebooting phone whose access token ends within this margin refreshes it first.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------------------
// Input

/// Parses a CSV of activation codes: with a header naming `device` and `code` columns (the bulk creation's
/// `device,owner,code,expires`), those columns; without one, the first two. Quoted fields are read as
/// RFC 4180 says (a quote doubled inside quotes); blank lines are skipped.
pub fn parse_codes(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut rows = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, first)) = rows.next() else { return Err("no rows".into()) };
    let head = csv_fields(first);
    let col = |name: &str| head.iter().position(|h| h.trim().eq_ignore_ascii_case(name));
    let (dev, code, header) = match (col("device"), col("code")) {
        (Some(d), Some(c)) => (d, c, true),
        _ => (0, 1, false),
    };
    let mut out = Vec::new();
    let all = (!header).then_some((0, first)).into_iter().chain(rows);
    for (i, line) in all {
        let f = csv_fields(line);
        match (f.get(dev).map(|s| s.trim()), f.get(code).map(|s| s.trim())) {
            (Some(d), Some(_)) if !d.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) => {
                return Err(format!("line {}: {d:?} is not a device name", i + 1));
            }
            (Some(d), Some(c)) if !d.is_empty() && !c.is_empty() => out.push((d.to_owned(), c.to_owned())),
            _ => return Err(format!("line {}: no device name and code", i + 1)),
        }
    }
    if out.is_empty() {
        return Err("no codes".into());
    }
    Ok(out)
}

fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

fn load_codes(path: &Path, n: Option<usize>) -> Result<Vec<(String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut codes = parse_codes(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(n) = n {
        codes.truncate(n);
    }
    Ok(codes)
}

// ---------------------------------------------------------------------------------------------------------
// Statistics

/// Why an exchange failed, by kind (the report groups errors by it).
#[derive(Debug)]
enum Fail {
    /// An answer other than the phase's success (200, or 304 for a download).
    Status(u16, Option<Duration>),
    Connect(String),
    Tls(String),
    Timeout(&'static str),
    Http(String),
    /// A grant's answer that is not the JSON of RFC 6749 §5.1.
    Answer(String),
}

impl Fail {
    fn kind(&self) -> String {
        match self {
            Fail::Status(s, _) => format!("HTTP {s}"),
            Fail::Connect(_) => "connect".into(),
            Fail::Tls(_) => "tls".into(),
            Fail::Timeout(what) => format!("timeout ({what})"),
            Fail::Http(_) => "http".into(),
            Fail::Answer(_) => "bad answer".into(),
        }
    }
    fn detail(&self) -> String {
        match self {
            Fail::Status(s, _) => format!("status {s}"),
            Fail::Timeout(what) => format!("no {what} within the time limit"),
            Fail::Connect(d) | Fail::Tls(d) | Fail::Http(d) | Fail::Answer(d) => d.clone(),
        }
    }
}

#[derive(Default)]
struct Phase {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    /// The first error of each kind, in full, for the human report.
    examples: BTreeMap<String, String>,
}

impl Phase {
    fn ok(&mut self, took: Duration, status: u16) {
        self.latencies_us.push(took.as_micros().min(u128::from(u32::MAX)) as u32);
        *self.statuses.entry(status).or_default() += 1;
    }
    fn fail(&mut self, f: &Fail) {
        if let Fail::Status(s, _) = f {
            *self.statuses.entry(*s).or_default() += 1;
        }
        let kind = f.kind();
        self.examples.entry(kind.clone()).or_insert_with(|| f.detail());
        *self.errors.entry(kind).or_default() += 1;
    }
}

const PHASES: [&str; 6] = ["onboard", "boot", "download", "refresh", "reboot", "reboot-wave"];

#[derive(Default)]
struct Stats {
    phases: BTreeMap<&'static str, Phase>,
}

impl Stats {
    fn phase(&mut self, name: &'static str) -> &mut Phase {
        self.phases.entry(name).or_default()
    }
}

/// The p-quantile of sorted latencies (microseconds), in milliseconds: the smallest value with at least
/// p of them at or below it; 0 for none.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 * p).ceil() as usize).clamp(1, sorted_us.len()) - 1;
    f64::from(sorted_us[i]) / 1000.0
}

// ---------------------------------------------------------------------------------------------------------
// HTTP/1.1 over TLS: one connection, its driver in a task

struct Reply {
    status: u16,
    etag: Option<HeaderValue>,
    close: bool,
    retry_after: Option<Duration>,
    body: Bytes,
}

struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Conn {
    async fn open(sh: &Shared) -> Result<Conn, Fail> {
        let t = sh.timeout;
        let tcp = tokio::time::timeout(t, TcpStream::connect(&sh.addr))
            .await
            .map_err(|_| Fail::Timeout("connection"))?
            .map_err(|e| Fail::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(t, sh.connector.connect(sh.server_name.clone(), tcp))
            .await
            .map_err(|_| Fail::Timeout("TLS handshake"))?
            .map_err(|e| Fail::Tls(e.to_string()))?;
        let (sender, conn) =
            sh.http.handshake(TokioIo::new(tls)).await.map_err(|e| Fail::Http(crate::http_error(e)))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, driver })
    }

    async fn send(&mut self, req: Request<Full<Bytes>>, timeout: Duration) -> Result<Reply, Fail> {
        let exchange = async {
            self.sender.ready().await.map_err(|e| Fail::Http(crate::http_error(e)))?;
            let res = self.sender.send_request(req).await.map_err(|e| Fail::Http(crate::http_error(e)))?;
            let h = res.headers();
            let etag = h.get(ETAG).cloned();
            let close = h.get_all(CONNECTION).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let retry_after = h
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let status = res.status().as_u16();
            let body = res.into_body().collect().await.map_err(|e| Fail::Http(crate::http_error(e)))?.to_bytes();
            Ok(Reply { status, etag, close, retry_after, body })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| Fail::Timeout("answer"))?
    }

    /// Closes politely (close_notify, FIN) once hyper has written everything.
    async fn close(self) {
        drop(self.sender);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.driver).await;
    }

    fn abort(self) {
        self.driver.abort();
    }
}

// ---------------------------------------------------------------------------------------------------------
// The fleet

struct Shared {
    addr: String,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    http: http1::Builder,
    host: HeaderValue,
    timeout: Duration,
    files: Vec<String>,
    refresh_fraction: f64,
    refresh_every: Option<Duration>,
    onboard_rate: Option<f64>,
    start: Instant,
    deadline: Instant,
    permits: Semaphore,
    stats: Mutex<Stats>,
    phones: Vec<PhoneSlot>,
}

/// What the wave scheduler shares with a phone: whether it can reboot, and the wave that reboots it.
#[derive(Default)]
struct PhoneSlot {
    booted: AtomicBool,
    wave: Mutex<Option<Arc<Wave>>>,
    wake: Notify,
}

struct Wave {
    start: Instant,
    remaining: AtomicUsize,
}

impl Shared {
    fn record(&self, phase: &'static str, r: Result<(Duration, u16), &Fail>) {
        let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok((took, status)) => st.phase(phase).ok(took, status),
            Err(f) => st.phase(phase).fail(f),
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        etag: Option<&HeaderValue>,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.method_mut() = method;
        // Device names are checked when the CSV is read (parse_codes), file names in run.
        *req.uri_mut() = path.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
        let h = req.headers_mut();
        h.insert(HOST, self.host.clone());
        h.insert(USER_AGENT, HeaderValue::from_static("Cisco-CP8851/14.2.1 sipcfg-load-fleet"));
        if let Some(b) = bearer
            && let Ok(v) = HeaderValue::try_from(format!("Bearer {b}"))
        {
            h.insert(AUTHORIZATION, v);
        }
        if let Some(e) = etag {
            h.insert(IF_NONE_MATCH, e.clone());
        }
        req
    }

    fn grant_request(&self, form: String) -> Request<Full<Bytes>> {
        let mut req = self.request(Method::POST, "/oauth/token", None, None);
        req.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        *req.body_mut() = Full::new(Bytes::from(form));
        req
    }

    fn over(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

struct Tokens {
    access: String,
    refresh: String,
    /// When the phone should refresh.
    refresh_at: Instant,
    /// When the access token ends.
    expires: Instant,
}

/// Reads a token answer (RFC 6749 §5.1).
fn tokens_of(sh: &Shared, body: &[u8], asked: Instant) -> Result<Tokens, Fail> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| Fail::Answer(format!("not JSON: {e}")))?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
    let access = field("access_token").ok_or_else(|| Fail::Answer("no access_token".into()))?;
    let refresh = field("refresh_token").ok_or_else(|| Fail::Answer("no refresh_token".into()))?;
    let life = v.get("expires_in").and_then(|x| x.as_u64()).ok_or_else(|| Fail::Answer("no expires_in".into()))?;
    let life = Duration::from_secs(life);
    let after = sh.refresh_every.unwrap_or_else(|| life.mul_f64(sh.refresh_fraction.clamp(0.05, 1.0)));
    Ok(Tokens { access, refresh, refresh_at: asked + after, expires: asked + life })
}

/// One grant on a new connection: the latency covers the connection, the handshake and the exchange.
async fn grant(sh: &Shared, form: String) -> Result<(Tokens, Duration), Fail> {
    let t0 = Instant::now();
    let mut conn = Conn::open(sh).await?;
    let reply = match conn.send(sh.grant_request(form), sh.timeout).await {
        Ok(r) => r,
        Err(e) => {
            conn.abort();
            return Err(e);
        }
    };
    conn.close().await;
    if reply.status != 200 {
        return Err(Fail::Status(reply.status, reply.retry_after));
    }
    let tokens = tokens_of(sh, &reply.body, t0)?;
    Ok((tokens, t0.elapsed()))
}

struct Phone {
    index: usize,
    name: String,
    code: String,
    tokens: Option<Tokens>,
    etags: HashMap<String, HeaderValue>,
}

impl Phone {
    /// Redeems the activation code, trying again after a transient failure until the run ends. False if
    /// the phone could not onboard.
    async fn onboard(&mut self, sh: &Shared) -> bool {
        while !sh.over() {
            let form = format!(
                "grant_type=urn%3Asipcfg%3Agrant-type%3Aactivation-code&code={}&device_name={}",
                form_encode(&self.code),
                form_encode(&self.name)
            );
            let result = {
                let _permit = sh.permits.acquire().await;
                grant(sh, form).await
            };
            match result {
                Ok((tokens, took)) => {
                    sh.record("onboard", Ok((took, 200)));
                    self.tokens = Some(tokens);
                    return true;
                }
                Err(f) => {
                    sh.record("onboard", Err(&f));
                    // A code refused is spent or unknown: trying again would only count as abuse.
                    if matches!(f, Fail::Status(400 | 401 | 403, _)) {
                        return false;
                    }
                    retry_pause(sh, &f).await;
                }
            }
        }
        false
    }

    /// The refresh grant; the presented refresh token is spent, so the new pair replaces the old.
    async fn refresh(&mut self, sh: &Shared) -> Result<(), Fail> {
        let Some(t) = &self.tokens else { return Err(Fail::Answer("no tokens".into())) };
        let form = format!("grant_type=refresh_token&refresh_token={}", form_encode(&t.refresh));
        let result = {
            let _permit = sh.permits.acquire().await;
            grant(sh, form).await
        };
        match result {
            Ok((tokens, took)) => {
                sh.record("refresh", Ok((took, 200)));
                self.tokens = Some(tokens);
                Ok(())
            }
            Err(f) => {
                sh.record("refresh", Err(&f));
                Err(f)
            }
        }
    }

    /// A boot: a new connection kept alive for XMLDefault.cnf.xml, the phone's file and the common files,
    /// each with its bearer token and, when the phone has its ETag, If-None-Match. Records each download;
    /// answers the boot's time, or its first failure.
    async fn boot(&mut self, sh: &Shared) -> Result<Duration, Fail> {
        let Some(access) = self.tokens.as_ref().map(|t| t.access.clone()) else {
            return Err(Fail::Answer("no tokens".into()));
        };
        let _permit = sh.permits.acquire().await;
        let t0 = Instant::now();
        let mut files = Vec::with_capacity(2 + sh.files.len());
        files.push("XMLDefault.cnf.xml".to_owned());
        files.push(format!("{}.cnf.xml", self.name));
        files.extend(sh.files.iter().cloned());
        let mut conn: Option<Conn> = None;
        let mut first_fail = None;
        for file in files {
            let d0 = Instant::now();
            if conn.is_none() {
                match Conn::open(sh).await {
                    Ok(c) => conn = Some(c),
                    Err(f) => {
                        sh.record("download", Err(&f));
                        first_fail.get_or_insert(f);
                        break;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { break };
            let req = sh.request(Method::GET, &format!("/{file}"), Some(&access), self.etags.get(&file));
            match c.send(req, sh.timeout).await {
                Ok(reply) => {
                    if reply.close
                        && let Some(c) = conn.take()
                    {
                        c.close().await;
                    }
                    match reply.status {
                        200 | 304 => {
                            sh.record("download", Ok((d0.elapsed(), reply.status)));
                            if let (200, Some(e)) = (reply.status, reply.etag) {
                                self.etags.insert(file, e);
                            }
                        }
                        s => {
                            let f = Fail::Status(s, reply.retry_after);
                            sh.record("download", Err(&f));
                            first_fail.get_or_insert(f);
                        }
                    }
                }
                Err(f) => {
                    sh.record("download", Err(&f));
                    if let Some(c) = conn.take() {
                        c.abort();
                    }
                    first_fail.get_or_insert(f);
                }
            }
        }
        if let Some(c) = conn {
            c.close().await;
        }
        match first_fail {
            Some(f) => Err(f),
            None => Ok(t0.elapsed()),
        }
    }
}

/// Form-encodes a value (RFC 3986 unreserved characters kept, everything else %XX).
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn retry_pause(sh: &Shared, f: &Fail) {
    let mut wait = Duration::from_secs(RETRY_SECS);
    if let Fail::Status(_, Some(after)) = f {
        wait = wait.max(*after);
    }
    tokio::time::sleep_until((Instant::now() + wait).min(sh.deadline).into()).await;
}

async fn phone_life(sh: Arc<Shared>, mut phone: Phone) {
    if let Some(rate) = sh.onboard_rate {
        let at = sh.start + Duration::from_secs_f64(phone.index as f64 / rate.max(0.001));
        tokio::time::sleep_until(at.min(sh.deadline).into()).await;
    }
    if !phone.onboard(&sh).await {
        return;
    }
    // The first boot, tried again (after a pause) until it works or the run ends.
    while !sh.over() {
        match phone.boot(&sh).await {
            Ok(took) => {
                sh.record("boot", Ok((took, 200)));
                break;
            }
            Err(f) => {
                sh.record("boot", Err(&f));
                retry_pause(&sh, &f).await;
            }
        }
    }
    let slot = &sh.phones[phone.index];
    slot.booted.store(true, Ordering::Relaxed);
    loop {
        let Some(refresh_at) = phone.tokens.as_ref().map(|t| t.refresh_at) else { return };
        tokio::select! {
            _ = tokio::time::sleep_until(refresh_at.min(sh.deadline).into()) => {
                if sh.over() {
                    return;
                }
                if let Err(f) = phone.refresh(&sh).await {
                    if matches!(f, Fail::Status(400 | 401, _)) {
                        // invalid_grant: the family is gone; the phone needs a new activation code.
                        return;
                    }
                    // Transient: try again shortly (keeping the unspent refresh token).
                    if let Some(t) = phone.tokens.as_mut() {
                        t.refresh_at = Instant::now() + Duration::from_secs(RETRY_SECS);
                    }
                }
            }
            _ = slot.wake.notified() => {
                let wave = slot.wave.lock().unwrap_or_else(|e| e.into_inner()).take();
                let t0 = Instant::now();
                // A phone that boots with an access token about to end refreshes it first.
                let fresh = phone.tokens.as_ref().is_some_and(|t| t.expires > Instant::now() + EXPIRY_MARGIN);
                let result = if fresh { Ok(()) } else { phone.refresh(&sh).await };
                let result = match result {
                    Ok(()) => phone.boot(&sh).await.map(|_| t0.elapsed()),
                    Err(f) => Err(f),
                };
                sh.record("reboot", result.as_ref().map(|d| (*d, 200)));
                if let Some(w) = wave
                    && w.remaining.fetch_sub(1, Ordering::AcqRel) == 1
                {
                    sh.record("reboot-wave", Ok((w.start.elapsed(), 200)));
                }
            }
        }
    }
}

/// Every `every`, wakes the next `share` of the phones that have booted, in turn through the fleet.
async fn waves(sh: Arc<Shared>, every: Duration, share: f64) {
    let n = sh.phones.len();
    let per_wave = ((n as f64 * share / 100.0).round() as usize).clamp(1, n);
    let mut cursor = 0usize;
    let mut next = sh.start + every;
    while next < sh.deadline {
        tokio::time::sleep_until(next.into()).await;
        next += every;
        let mut chosen = Vec::with_capacity(per_wave);
        for _ in 0..n {
            if chosen.len() == per_wave {
                break;
            }
            let i = cursor % n;
            cursor += 1;
            if sh.phones[i].booted.load(Ordering::Relaxed) {
                chosen.push(i);
            }
        }
        if chosen.is_empty() {
            continue;
        }
        let wave = Arc::new(Wave { start: Instant::now(), remaining: AtomicUsize::new(chosen.len()) });
        for i in chosen {
            let slot = &sh.phones[i];
            let previous = slot.wave.lock().unwrap_or_else(|e| e.into_inner()).replace(wave.clone());
            // A phone still in the previous wave's reboot: that wave is no longer waiting for it.
            if let Some(p) = previous
                && p.remaining.fetch_sub(1, Ordering::AcqRel) == 1
            {
                sh.record("reboot-wave", Ok((p.start.elapsed(), 200)));
            }
            slot.wake.notify_one();
        }
    }
}

pub fn run(args: &Args) -> Result<(), String> {
    let f = &args.fleet;
    let path =
        f.codes.as_ref().ok_or("--mode fleet needs --codes FILE (a CSV of device names and activation codes)")?;
    let codes = load_codes(path, args.phones)?;
    let config = crate::client_config(args)?;
    let server_name = ServerName::try_from(args.server_name.clone()).map_err(|e| e.to_string())?;
    let host = HeaderValue::try_from(&args.server_name).map_err(|e| format!("--server-name: {e}"))?;
    let mut http = http1::Builder::new();
    http.title_case_headers(true);
    if !(f.request_timeout > 0.0 && f.refresh_fraction > 0.0 && f.wave_percent >= 0.0) {
        return Err("--request-timeout, --refresh-fraction must be positive, --wave-percent not negative".into());
    }
    if let Some(bad) = f.files.iter().find(|n| !n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))) {
        return Err(format!("--files: {bad:?} is not a file name"));
    }
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(DEFAULT_SECS).max(0.0));
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()
    }
    .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let start = Instant::now();
        let n = codes.len();
        let sh = Arc::new(Shared {
            addr: args.addr.clone(),
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            http,
            host,
            timeout: Duration::from_secs_f64(f.request_timeout),
            files: f.files.iter().filter(|s| !s.is_empty()).cloned().collect(),
            refresh_fraction: f.refresh_fraction,
            refresh_every: f.refresh_every.filter(|s| *s > 0.0).map(Duration::from_secs_f64),
            onboard_rate: f.onboard_rate.filter(|r| *r > 0.0),
            start,
            deadline: start + duration,
            permits: Semaphore::new(args.concurrency.max(1)),
            stats: Mutex::new(Stats::default()),
            phones: (0..n).map(|_| PhoneSlot::default()).collect(),
        });
        let own0 = cpu_us("self").unwrap_or(0);
        let srv0 = servers_cpu_us(&args.server_pids);
        let waver = (f.wave_every > 0.0 && f.wave_percent > 0.0)
            .then(|| tokio::spawn(waves(sh.clone(), Duration::from_secs_f64(f.wave_every), f.wave_percent)));
        let tasks: Vec<_> = codes
            .into_iter()
            .enumerate()
            .map(|(index, (name, code))| {
                let phone = Phone { index, name, code, tokens: None, etags: HashMap::new() };
                tokio::spawn(phone_life(sh.clone(), phone))
            })
            .collect();
        for t in tasks {
            t.await.map_err(|e| e.to_string())?;
        }
        if let Some(w) = waver {
            w.abort();
        }
        let wall = start.elapsed().as_secs_f64();
        let own = cpu_us("self").unwrap_or(0).saturating_sub(own0);
        let srv = match (srv0, servers_cpu_us(&args.server_pids)) {
            (Some(a), Some(b)) if !args.server_pids.is_empty() => Some(b.saturating_sub(a)),
            _ => None,
        };
        let stats = std::mem::take(&mut *sh.stats.lock().unwrap_or_else(|e| e.into_inner()));
        report(args, n, &stats, wall, own, srv);
        Ok::<_, String>(())
    })
}

fn report(args: &Args, phones: usize, st: &Stats, wall: f64, own_cpu_us: u64, server_cpu_us: Option<u64>) {
    let empty = Phase::default();
    let rows: Vec<(&str, serde_json::Value)> = PHASES
        .iter()
        .map(|name| {
            let p = st.phases.get(name).unwrap_or(&empty);
            let mut lat = p.latencies_us.clone();
            lat.sort_unstable();
            let errors: u64 = p.errors.values().sum();
            let v = serde_json::json!({
                "count": lat.len() as u64 + errors,
                "ok": lat.len(),
                "errors": errors,
                "error_kinds": p.errors,
                "first_errors": p.examples,
                "status": p.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
                "p50_ms": percentile_ms(&lat, 0.50),
                "p90_ms": percentile_ms(&lat, 0.90),
                "p99_ms": percentile_ms(&lat, 0.99),
                "max_ms": lat.last().map_or(0.0, |v| f64::from(*v) / 1000.0),
            });
            (*name, v)
        })
        .collect();
    if args.json {
        let v = serde_json::json!({
            "label": args.label,
            "mode": "fleet",
            "addr": args.addr,
            "phones": phones,
            "concurrency": args.concurrency,
            "wall_s": wall,
            "phases": rows.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect::<serde_json::Map<_, _>>(),
            "client_cpu_us": own_cpu_us,
            "server_cpu_us": server_cpu_us,
        });
        println!("{v}");
        return;
    }
    let label = if args.label.is_empty() { String::new() } else { format!(" [{}]", args.label) };
    println!(
        "sipcfg-load{label}: fleet of {phones} phones against {}, concurrency {}, {wall:.1} s",
        args.addr, args.concurrency
    );
    println!(
        "  {:<12} {:>8} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "phase", "count", "ok", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for (name, v) in &rows {
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        let ms = |k: &str| v[k].as_f64().unwrap_or(0.0);
        println!(
            "  {name:<12} {:>8} {:>8} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            n("count"),
            n("ok"),
            n("errors"),
            ms("p50_ms"),
            ms("p90_ms"),
            ms("p99_ms"),
            ms("max_ms")
        );
    }
    for name in PHASES {
        let Some(p) = st.phases.get(name) else { continue };
        for (kind, count) in &p.errors {
            let example = p.examples.get(kind).map_or("", String::as_str);
            println!("    {name}: {count} × {kind}  (first: {example})");
        }
        if name == "download" {
            let s: Vec<String> = p.statuses.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            println!("    download statuses: {}", s.join(", "));
        }
    }
    println!("  client CPU {:.2} s ({:.0}% of one core)", own_cpu_us as f64 / 1e6, own_cpu_us as f64 / 1e4 / wall);
    if let Some(s) = server_cpu_us {
        println!("  server CPU {:.2} s ({:.0}% of one core)", s as f64 / 1e6, s as f64 / 1e4 / wall);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_from_bulk_csv_and_bare_pairs() {
        let bulk = "device,owner,code,expires\r\nSEP00BE00000000,u000000,1234567890123456,2026-12-07T00:00:00Z\r\n\
                    SEP00BE00000001,\"'=x, y\",6543210987654321,2026-12-07T00:00:00Z\r\n";
        assert_eq!(
            parse_codes(bulk).unwrap(),
            vec![
                ("SEP00BE00000000".into(), "1234567890123456".into()),
                ("SEP00BE00000001".into(), "6543210987654321".into())
            ]
        );
        assert_eq!(parse_codes("SEPA,1111\n\nSEPB,2222\n").unwrap().len(), 2);
        assert!(parse_codes("device,owner,code\nSEPA,u1\n").is_err());
        assert!(parse_codes("").is_err());
        assert!(parse_codes("SEP A/..,1111\n").is_err());
        assert_eq!(csv_fields(r#"a,"b ""q"", c",d"#), vec!["a", r#"b "q", c"#, "d"]);
    }

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), 50.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&v, 1.0), 100.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
        assert_eq!(percentile_ms(&[7000], 0.01), 7.0);
    }

    #[test]
    fn form_encoding() {
        assert_eq!(form_encode("ab-_.~09"), "ab-_.~09");
        assert_eq!(form_encode("a b+/="), "a%20b%2B%2F%3D");
    }
}
