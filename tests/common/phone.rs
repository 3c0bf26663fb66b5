//! A simulated phone for the cluster tests (issue 14): it onboards with an activation code, refreshes and
//! downloads its file over HTTPS, one fresh connection per request as a booting phone makes them, and it
//! rides out a server that dies as a phone does: it is given one address (a balancer) or several (DHCP
//! option 150, in the order the phone tries them); a request that fails at the transport level (refused
//! connection, connection closed before the answer) or that a server answers 5xx is tried again a few
//! times, on the next address of its list, with a short pause once the list has been gone through.
//!
//! Every refresh token a phone received in a 200 answer is kept (`acknowledged`): the cluster tests check
//! that none of them is lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::StatusCode;

use super::{Client, Resp};

/// The activation-code grant's type.
pub const ACTIVATION_CODE_GRANT: &str = "urn:sipcfg:grant-type:activation-code";

/// How many times a request is made at most (the first attempt and its retries).
pub const ATTEMPTS: usize = 8;
/// The pause before a retry once every address of the list failed.
pub const PAUSE: Duration = Duration::from_millis(150);
/// One attempt (connection, TLS handshake, request and answer) is given up after this long: longer than a
/// node waits for the shared store before it answers 503 (`[store] connect_timeout_secs`, 5 s by default),
/// so that what the node answers is seen.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters shared by the phones of a test.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests made again after a failed attempt.
    pub retries: AtomicUsize,
    /// Attempts that failed at the transport level (refused, reset, closed before the answer, timed out).
    pub transport_errors: AtomicUsize,
    /// Attempts answered with a 5xx status.
    pub server_errors: AtomicUsize,
    /// Attempts that went to another address of the phone's list than the one before (option 150).
    pub failovers: AtomicUsize,
    /// Requests answered (whatever the status), after their retries.
    pub answered: AtomicUsize,
    /// The most attempts one request needed.
    pub most_attempts: AtomicUsize,
}

impl Counters {
    pub fn get(counter: &AtomicUsize) -> usize {
        counter.load(Ordering::SeqCst)
    }
}

/// A request's outcome after its retries: the last answer, or why no attempt was answered.
#[derive(Debug)]
pub struct Outcome {
    pub answer: Result<Resp, String>,
    /// Whether an attempt before the last one failed at the transport level after it may have reached a
    /// server: its answer may have been lost (the server may have done what it asked).
    pub maybe_lost: bool,
}

pub struct Phone {
    /// The device this phone is, e.g. SEP00CC00000001.
    pub device: String,
    servers: Vec<Client>,
    counters: Arc<Counters>,
    pub access: Option<String>,
    pub refresh: Option<String>,
    /// Every refresh token received in a 200 answer, in order.
    pub acknowledged: Vec<String>,
    /// What happened, for failure messages.
    pub history: Vec<String>,
    started: Instant,
}

impl Phone {
    /// A phone for `device` that tries `addrs` in this order (TLS, trusting the example CA).
    pub fn new(device: &str, addrs: &[SocketAddr], counters: Arc<Counters>) -> Phone {
        assert!(!addrs.is_empty());
        Phone {
            device: device.to_owned(),
            servers: addrs.iter().map(|a| Client::tls_to(*a)).collect(),
            counters,
            access: None,
            refresh: None,
            acknowledged: Vec::new(),
            history: Vec::new(),
            started: Instant::now(),
        }
    }

    /// The path of this phone's configuration file.
    pub fn file(&self) -> String {
        format!("/{}.cnf.xml", self.device)
    }

    fn note(&mut self, what: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.history.push(format!("{at:7.3}s {what}"));
    }

    /// The phone's story so far, for a panic message.
    pub fn story(&self) -> String {
        format!("{}:\n  {}", self.device, self.history.join("\n  "))
    }

    /// One request with the phone's retries: each request starts at the first address of the list; an
    /// attempt that fails at the transport level moves to the next address, a 5xx answer is tried again
    /// too; after a full round of the list the phone pauses [`PAUSE`].
    pub async fn request(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Outcome {
        let mut at = 0;
        let mut maybe_lost = false;
        let mut last: Result<Resp, String> = Err("no attempt".into());
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                self.counters.retries.fetch_add(1, Ordering::SeqCst);
            }
            let server = self.servers[at].clone();
            let result = tokio::time::timeout(ATTEMPT_TIMEOUT, attempt_once(&server, method, path, headers, body))
                .await
                .unwrap_or_else(|_| Err(Attempt::Lost("timed out".into())));
            let retry = match result {
                Ok(resp) if resp.status.is_server_error() => {
                    self.counters.server_errors.fetch_add(1, Ordering::SeqCst);
                    self.note(format!("{method} {path} via {}: {} (retrying)", server.addr, resp.status));
                    last = Ok(resp);
                    true
                }
                Ok(resp) => {
                    self.counters.answered.fetch_add(1, Ordering::SeqCst);
                    self.counters.most_attempts.fetch_max(attempt + 1, Ordering::SeqCst);
                    return Outcome { answer: Ok(resp), maybe_lost };
                }
                Err(failure) => {
                    self.counters.transport_errors.fetch_add(1, Ordering::SeqCst);
                    let why = match failure {
                        Attempt::Unsent(why) => why,
                        Attempt::Lost(why) => {
                            maybe_lost = true;
                            why
                        }
                    };
                    self.note(format!("{method} {path} via {}: {why} (retrying)", server.addr));
                    last = Err(why);
                    true
                }
            };
            if retry {
                let next = (at + 1) % self.servers.len();
                if next != at {
                    self.counters.failovers.fetch_add(1, Ordering::SeqCst);
                }
                if next == 0 {
                    tokio::time::sleep(PAUSE).await;
                }
                at = next;
            }
        }
        Outcome { answer: last, maybe_lost }
    }

    /// A form POST to the token endpoint, with retries.
    async fn grant(&mut self, fields: &[(&str, &str)]) -> Outcome {
        let body: String = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", v.replace('%', "%25").replace('&', "%26").replace('+', "%2B")))
            .collect::<Vec<_>>()
            .join("&");
        self.request("POST", "/oauth/token", &[("content-type", "application/x-www-form-urlencoded")], &body).await
    }

    /// Takes the tokens of a 200 answer of the token endpoint.
    fn take_tokens(&mut self, r: &Resp) {
        let t: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()));
        let access = t["access_token"].as_str().expect("an access token").to_owned();
        let refresh = t["refresh_token"].as_str().expect("a refresh token").to_owned();
        self.access = Some(access);
        self.acknowledged.push(refresh.clone());
        self.refresh = Some(refresh);
    }

    /// Onboards with an activation code (a new token family). Err with the phone's story if it could not;
    /// `Err(Onboard::AnswerLost)` when the code was spent by an attempt whose answer never came back.
    pub async fn onboard(&mut self, code: &str) -> Result<(), Onboard> {
        let outcome = self.grant(&[("grant_type", ACTIVATION_CODE_GRANT), ("code", code)]).await;
        match outcome.answer {
            Ok(r) if r.status == StatusCode::OK => {
                self.take_tokens(&r);
                self.note(format!("onboarded, refresh token #{}", self.acknowledged.len()));
                Ok(())
            }
            Ok(r)
                if r.status == StatusCode::BAD_REQUEST && outcome.maybe_lost && r.text().contains("invalid_grant") =>
            {
                self.note(format!("onboarding: the code was spent by an attempt whose answer was lost: {}", r.text()));
                Err(Onboard::AnswerLost)
            }
            Ok(r) => Err(Onboard::Failed(format!("onboarding answered {}: {}\n{}", r.status, r.text(), self.story()))),
            Err(e) => Err(Onboard::Failed(format!("onboarding failed: {e}\n{}", self.story()))),
        }
    }

    /// Refreshes with the last refresh token received; Err with the phone's story if it was refused.
    pub async fn refresh(&mut self) -> Result<(), String> {
        let token = self.refresh.clone().expect("onboarded first");
        let outcome = self.grant(&[("grant_type", "refresh_token"), ("refresh_token", &token)]).await;
        match outcome.answer {
            Ok(r) if r.status == StatusCode::OK => {
                self.take_tokens(&r);
                self.note(format!(
                    "refreshed{}, refresh token #{}",
                    if outcome.maybe_lost { " (after a lost answer)" } else { "" },
                    self.acknowledged.len()
                ));
                Ok(())
            }
            Ok(r) => Err(format!(
                "the refresh token acknowledged last (#{}) was refused: {} {}\n{}",
                self.acknowledged.len(),
                r.status,
                r.text(),
                self.story()
            )),
            Err(e) => Err(format!("refresh failed: {e}\n{}", self.story())),
        }
    }

    /// One refresh attempt at `addr`, without retry (to see what a server answers); a 200 answer's tokens
    /// are taken. Err if no answer came.
    pub async fn refresh_once(&mut self, addr: SocketAddr) -> Result<Resp, String> {
        let token = self.refresh.clone().expect("onboarded first");
        let body = format!("grant_type=refresh_token&refresh_token={token}");
        let headers = [("content-type", "application/x-www-form-urlencoded")];
        let r = once(addr, "POST", "/oauth/token", &headers, &body).await?;
        if r.status == StatusCode::OK {
            self.take_tokens(&r);
            self.note(format!("refreshed at {addr} (one attempt), refresh token #{}", self.acknowledged.len()));
        } else {
            self.note(format!("refresh at {addr} (one attempt): {}", r.status));
        }
        Ok(r)
    }

    /// One download attempt at `addr` with the phone's access token, without retry.
    pub async fn download_once(&self, addr: SocketAddr) -> Result<Resp, String> {
        let auth = format!("Bearer {}", self.access.as_deref().expect("onboarded first"));
        once(addr, "GET", &self.file(), &[("authorization", &auth)], "").await
    }

    /// Downloads the phone's file with its access token; the answer must be 200. Returns the body.
    pub async fn download(&mut self) -> Result<String, String> {
        let auth = format!("Bearer {}", self.access.as_deref().expect("onboarded first"));
        let path = self.file();
        let outcome = self.request("GET", &path, &[("authorization", &auth)], "").await;
        match outcome.answer {
            Ok(r) if r.status == StatusCode::OK => Ok(r.text()),
            Ok(r) => Err(format!("download answered {}: {}\n{}", r.status, r.text(), self.story())),
            Err(e) => Err(format!("download failed: {e}\n{}", self.story())),
        }
    }
}

/// Why a phone did not onboard.
#[derive(Debug)]
pub enum Onboard {
    /// An attempt spent the code and its answer was lost (the server died before answering); the retry
    /// is refused, as activation codes are single use.
    AnswerLost,
    Failed(String),
}

/// Why one attempt got no answer.
enum Attempt {
    /// Nothing reached a server (refused connection, failed handshake).
    Unsent(String),
    /// The request may have reached a server, which may have acted on it.
    Lost(String),
}

async fn attempt_once(
    server: &Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Resp, Attempt> {
    let mut conn = server.connect().await.map_err(Attempt::Unsent)?;
    conn.request(method, path, headers, Bytes::from(body.to_owned())).await.map_err(Attempt::Lost)
}

/// One request to `addr` (TLS, trusting the example CA) on a fresh connection, without retry.
pub async fn once(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Resp, String> {
    let client = Client::tls_to(addr);
    let attempt = attempt_once(&client, method, path, headers, body);
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(Attempt::Unsent(e) | Attempt::Lost(e))) => Err(e),
        Err(_) => Err("timed out".into()),
    }
}

/// Polls `f` every `every` until it is true or `limit` passed; returns how long it took.
pub async fn within<F: std::future::Future<Output = bool>>(
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> F,
) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Minimum, median and maximum of `values` (not empty), in milliseconds.
pub fn min_median_max(values: &[Duration]) -> (f64, f64, f64) {
    let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let median = if ms.len() % 2 == 1 { ms[ms.len() / 2] } else { (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) / 2.0 };
    (ms[0], median, ms[ms.len() - 1])
}
