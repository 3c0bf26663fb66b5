//! The management API (`/api/v1`, JSON) and the web console (server-rendered pages), on their own HTTPS
//! listener (`[console] listen`, 127.0.0.1:8443 by default) with the server's certificate.
//!
//! Who asks: an API token (`Authorization: Bearer sipcfg_…`, `sipcfg admin token`) or a console session (a
//! `__Host-sipcfg_session` cookie: HttpOnly, Secure, SameSite=Strict, ending `session_minutes` after the
//! login). Every form and every state-changing request made with a session carries the session's CSRF token
//! (a `csrf` form field or an `X-CSRF-Token` header); requests with an API token need none (no browser
//! sends one by itself). Failed logins are limited per client address and per account name (429).
//!
//! What it does is in [`crate::app::manage`]; here only HTTP: routes ([`api`], [`pages`]), authentication,
//! bodies, RFC 9457 problem documents.

pub mod api;
pub mod pages;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as HttpBody;
use http_body_util::{BodyExt, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::app::manage::{Caller, ManageError};
use crate::auth::accounts::{self, Account, AccountStore};
use crate::auth::limiter::FailureLimiter;
use crate::auth::{Digest, digest};
use crate::config::ConsoleConfig;
use crate::server::accept_loop;
use crate::server::limits::IdleTimeout;
use crate::server::response::{Body, with_body};
use crate::util::stop::Stop;
use crate::util::time::{Time, unix_now};

/// The session cookie (`__Host-`: Secure, path `/`, no domain: set by this origin only).
pub const SESSION_COOKIE: &str = "__Host-sipcfg_session";
/// The prefix of session secrets (not of API tokens: each is accepted where it belongs only).
const SESSION_PREFIX: &str = "s_";
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What every console request is served with.
pub struct Console {
    pub app: Arc<App>,
    pub settings: ConsoleConfig,
    pub accounts: Arc<dyn AccountStore>,
    /// Failed logins per client address.
    by_address: FailureLimiter,
    /// Failed logins per account name (a spread-out guess of one password).
    by_account: FailureLimiter<String>,
    /// Password checks running at once.
    verifying: Semaphore,
}

/// Password checks (argon2id, 19 MiB each) that run at once; more logins wait their turn.
pub const VERIFYING: usize = 2;

/// Who is asking, and how.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub account: Account,
    /// The session's CSRF token, when asked with a session (`None`: an API token).
    pub csrf: Option<String>,
    pub peer: SocketAddr,
}

impl Authenticated {
    pub fn caller(&self) -> Caller {
        Caller { name: self.account.name.clone(), role: self.account.role, address: self.peer.ip().to_string() }
    }
}

/// Serves the console listener until `stop`.
pub async fn run(listener: TcpListener, app: Arc<App>, stop: Stop) {
    let Some(settings) = app.config().console.clone() else { return };
    let Some(accounts) = app.accounts().cloned() else {
        tracing::error!("the console has no store for its accounts ([state] or [store]); it is off");
        return;
    };
    if let Ok(addr) = listener.local_addr()
        && !addr.ip().is_loopback()
    {
        tracing::warn!(
            address = %addr,
            "the console listens beyond this machine: restrict who reaches it (firewall, VPN); see docs/security.md"
        );
    }
    if let Some(why) = app.site().inventory_not_writable(app.config()) {
        tracing::warn!(
            "the console and the API cannot change devices or users here: the inventory's folder is not writable \
             ({why}); codes, tokens and reading work (docs/console.md, Limits)"
        );
    }
    match accounts.accounts().await {
        Ok(a) if a.is_empty() => tracing::warn!(
            "no administrator account yet: create one with `sipcfg admin add NAME --role admin` to log in to the console"
        ),
        _ => {}
    }
    // Made now, not at the first login for an unknown name (which would then take twice as long).
    let _ = accounts::dummy_hash();
    let window = i64::from(settings.login_window_secs);
    let console = Arc::new(Console {
        by_address: FailureLimiter::new(settings.login_failures, window),
        by_account: FailureLimiter::new(settings.login_failures, window),
        verifying: Semaphore::new(VERIFYING),
        settings,
        accounts,
        app,
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_HEAD_BYTES);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(64).max_header_list_size(MAX_HEAD_BYTES as u32);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(console.settings.max_connections));
    accept_loop(listener, limit, stop, "console", |tcp, peer, permit| {
        let console = console.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        Some(async move {
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(console.app.phone_tls());
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "console TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "console TLS handshake timed out"),
            };
            let service = service_fn(move |req| {
                let console = console.clone();
                async move { Ok::<_, std::convert::Infallible>(console.handle(peer, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(IdleTimeout::new(tls, IDLE_TIMEOUT)), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, error = %e, "console connection ended with an error");
            }
            drop(permit);
        })
    })
    .await;
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(2)) => {}
    }
}

/// A request as the routes see it: head, whole body, who asks.
pub struct Req {
    pub method: Method,
    pub path: String,
    /// The path's segments, each percent-decoded once (a profile name has spaces, a user id may have `@`).
    pub segments: Vec<String>,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
}

impl Req {
    /// The form fields of a form-encoded body.
    pub fn form(&self) -> HashMap<String, String> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// Every value of a repeated form field, in order.
    pub fn form_all(&self, key: &str) -> Vec<String> {
        form_urlencoded::parse(&self.body).filter(|(k, _)| k == key).map(|(_, v)| v.into_owned()).collect()
    }

    fn cookie(&self, name: &str) -> Option<String> {
        self.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|v| {
            v.split(';').filter_map(|c| c.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v.to_owned())
        })
    }
}

impl Console {
    async fn handle<B>(self: Arc<Self>, peer: SocketAddr, req: Request<B>) -> Response<Body>
    where
        B: HttpBody<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, self.settings.max_body_bytes).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return problem(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request body too large",
                    &format!("the body exceeds console.max_body_bytes ({} bytes)", self.settings.max_body_bytes),
                );
            }
        };
        let query =
            parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
        let path = parts.uri.path().to_owned();
        let segments: Result<Vec<String>, _> = path
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_encoding::percent_decode_str(s).decode_utf8().map(|d| d.into_owned()))
            .collect();
        let Ok(segments) = segments else {
            let mut r = problem(StatusCode::BAD_REQUEST, "Bad request", "the path is not percent-encoded UTF-8");
            secure_headers(r.headers_mut());
            return r;
        };
        let req = Req { method: parts.method, path, segments, query, headers: parts.headers, body, peer };
        let mut response = if req.path.starts_with("/api/") {
            api::handle(&self, &req).await
        } else {
            pages::handle(&self, &req).await
        };
        secure_headers(response.headers_mut());
        response
    }

    /// Who asks: an API token (`Authorization: Bearer`) or a session cookie. `None` if neither is valid.
    pub async fn authenticate(&self, req: &Req) -> Result<Option<Authenticated>, ManageError> {
        if let Some(value) = req.headers.get(header::AUTHORIZATION) {
            let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
            let Some(token) = token.filter(|t| t.starts_with(accounts::API_TOKEN_PREFIX)) else { return Ok(None) };
            let account = self.accounts.api_token_account(&digest(token.as_bytes())).await?;
            return Ok(account.map(|account| Authenticated { account, csrf: None, peer: req.peer }));
        }
        let Some(secret) = req.cookie(SESSION_COOKIE).filter(|s| s.starts_with(SESSION_PREFIX)) else {
            return Ok(None);
        };
        let session = self.accounts.session(&digest(secret.as_bytes()), now()).await?;
        Ok(session.map(|s| Authenticated { account: s.account, csrf: Some(s.csrf), peer: req.peer }))
    }

    /// Whether a state-changing request made with a session carries its CSRF token, and comes from this
    /// origin when the browser says where it comes from.
    pub fn csrf_ok(&self, who: &Authenticated, req: &Req, form: Option<&HashMap<String, String>>) -> bool {
        let Some(expected) = &who.csrf else { return true };
        if let Some(site) = req.headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
            && !matches!(site, "same-origin" | "none")
        {
            return false;
        }
        let given = req
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| form.and_then(|f| f.get("csrf").cloned()));
        given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()))
    }

    /// Checks a login; on success opens a session and returns its cookie value. `Err` is the answer to give.
    ///
    /// Each attempt counts as a failure before its password is checked (and is taken back if right), so that
    /// parallel guesses meet the limit as serial ones do; at most [`VERIFYING`] checks run at once, which
    /// bounds the memory and CPU that argon2id spends on whoever floods the form.
    pub async fn login(&self, req: &Req, name: &str, password: &str) -> Result<(String, Account), LoginRefusal> {
        let now = now();
        let ip = req.peer.ip();
        let key = name.to_lowercase();
        if let Some(wait) = self.by_address.check(ip, now).or_else(|| self.by_account.check(key.clone(), now)) {
            tracing::warn!(target: "sipcfg::admin", address = %ip, account = name, "login refused: too many failures");
            return Err(LoginRefusal::TooMany(wait));
        }
        self.by_address.failed(ip, now);
        self.by_account.failed(key.clone(), now);
        let stored = self.accounts.account(name).await.map_err(|e| LoginRefusal::Store(e.to_string()))?;
        let hash = stored.as_ref().map_or_else(|| accounts::dummy_hash().to_owned(), |s| s.password_hash.clone());
        let password = password.to_owned();
        let ok = {
            let _turn = self.verifying.acquire().await.map_err(|e| LoginRefusal::Store(e.to_string()))?;
            // argon2id costs tens of milliseconds: off the runtime's workers.
            tokio::task::spawn_blocking(move || accounts::verify_password(&password, &hash)).await.unwrap_or(false)
        };
        match stored {
            Some(stored) if ok => {
                self.by_address.forgive(&ip);
                self.by_account.forgive(&key);
                let (secret, d) =
                    accounts::new_secret(SESSION_PREFIX).map_err(|e| LoginRefusal::Store(e.to_string()))?;
                let (csrf, _) = accounts::new_secret("").map_err(|e| LoginRefusal::Store(e.to_string()))?;
                self.accounts
                    .add_session(&d, &stored.account.name, &csrf, now, now + self.settings.session_secs())
                    .await
                    .map_err(|e| LoginRefusal::Store(e.to_string()))?;
                tracing::info!(target: "sipcfg::admin", address = %ip, account = name, "login");
                Ok((secret, stored.account))
            }
            _ => {
                tracing::warn!(target: "sipcfg::admin", address = %ip, account = name, "login failed");
                Err(LoginRefusal::Wrong)
            }
        }
    }

    pub async fn logout(&self, req: &Req) {
        if let Some(secret) = req.cookie(SESSION_COOKIE) {
            let d: Digest = digest(secret.as_bytes());
            if let Err(e) = self.accounts.remove_session(&d).await {
                tracing::warn!(error = %e, "the session could not be removed");
            }
        }
    }

    /// The `Set-Cookie` value of a new session.
    pub fn session_cookie(&self, secret: &str) -> String {
        format!(
            "{SESSION_COOKIE}={secret}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
            self.settings.session_secs()
        )
    }
}

/// Why a login was refused.
#[derive(Debug)]
pub enum LoginRefusal {
    /// Unknown account or wrong password (never said which).
    Wrong,
    TooMany(u64),
    Store(String),
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn expired_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

fn now() -> Time {
    unix_now() as Time
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Headers on every console answer: no caching, no framing, no sniffing, no referrer, and scripts, styles
/// and images from this origin only. No HSTS: it would bind every port of the host name, and the listener is
/// HTTPS only anyway.
fn secure_headers(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
}

/// An RFC 9457 problem document.
pub fn problem(status: StatusCode, title: &str, detail: &str) -> Response<Body> {
    problem_with(status, title, detail, &[])
}

/// An RFC 9457 problem document with a list of the problems found (`errors`).
pub fn problem_with(status: StatusCode, title: &str, detail: &str, errors: &[String]) -> Response<Body> {
    let mut doc = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    if !errors.is_empty() {
        doc["errors"] = serde_json::json!(errors);
    }
    with_body(status, Bytes::from(doc.to_string()), "application/problem+json")
}

/// The problem document of a failed operation.
pub fn problem_of(e: &ManageError) -> Response<Body> {
    let (status, title) = status_of(e);
    match e {
        ManageError::Invalid(errors) => {
            problem_with(status, title, "the change would make the inventory invalid; nothing was written", errors)
        }
        ManageError::Internal(detail) => {
            tracing::error!(error = %detail, "console request failed");
            problem(status, title, "the server failed; its log says why")
        }
        other => {
            let mut r = problem(status, title, &other.to_string());
            if matches!(other, ManageError::Unavailable(_)) {
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            r
        }
    }
}

pub fn status_of(e: &ManageError) -> (StatusCode, &'static str) {
    match e {
        ManageError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found"),
        ManageError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Bad request"),
        ManageError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "Invalid change"),
        ManageError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
        ManageError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
        ManageError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Store unavailable"),
        ManageError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
