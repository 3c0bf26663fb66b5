//! One request on a phone-facing listener: method → bearer token → [`Provisioner::fetch`]
//! (crate::provision::Provisioner::fetch) → response with validators; the token service's paths go to
//! [`crate::server::oauth`]. Status codes follow RFC 6750 (401 and `WWW-Authenticate: Bearer`) and RFC
//! 9110 (405 with `Allow`, 304 for a matching `If-None-Match`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use crate::app::App;
use crate::app::activity::Download;
use crate::app::channel::Channel;
use crate::auth::token::{TokenError, TokenMemo};
use crate::ops::Monitor;
use crate::ops::metrics::FileKind;
use crate::provision::cache::RenderedFile;
use crate::provision::files::FileError;
use crate::provision::subject::Subject;
use crate::provision::{FetchError, FetchMemo, NotFound};
use crate::server::observe::{Observer, RequestHead, TlsFacts};
use crate::server::response::{Body, allow, head_only, plain};
use crate::server::{oauth, route};

const REALM: &str = "sipcfg";
const LOG_PATH_MAX: usize = 128;

/// Why a request was refused before reaching the provisioner.
enum AuthFailure {
    /// No `Authorization: Bearer` at all (RFC 6750 §3.1: no error code).
    Missing,
    /// More than one `Authorization` header.
    Duplicate,
    /// A token was sent but is not acceptable.
    Invalid(TokenError),
}

/// What one connection remembers between its requests: the last token it verified and the last device
/// configuration it fetched, so that a phone re-checking its file over a kept connection costs a byte
/// comparison instead of a token hash, two map lookups and an authorization. A request takes the memo out
/// of the slot and puts it back when it is done; concurrent HTTP/2 streams find the slot empty and go the
/// full way.
#[derive(Default)]
pub struct ConnectionMemo {
    token: TokenMemo,
    fetch: FetchMemo,
    /// The `ETag` header value of the last file served, and that file.
    etag: Option<(Arc<RenderedFile>, HeaderValue)>,
    /// The last download this connection recorded in the node's activity: a repeat within the same second
    /// records nothing new (the activity keeps one download per subject, to the second), so it skips the
    /// activity's lock and hash.
    recorded: Option<Recorded>,
    /// The last `Host` value found well-formed on this connection: a client sends the same one each time.
    host: KnownHost,
}

/// A well-formed `Host` value (at most 255 bytes), kept in the memo itself: remembering the first request's
/// costs no allocation, which a boot-storm phone (one request per connection) would pay for nothing.
struct KnownHost {
    len: usize,
    bytes: [u8; 255],
}

impl Default for KnownHost {
    fn default() -> Self {
        KnownHost { len: 0, bytes: [0; 255] }
    }
}

impl KnownHost {
    fn is(&self, host: &[u8]) -> bool {
        self.len > 0 && self.bytes.get(..self.len) == Some(host)
    }

    fn remember(&mut self, host: &[u8]) {
        if let Some(slot) = self.bytes.get_mut(..host.len()) {
            slot.copy_from_slice(host);
            self.len = host.len();
        }
    }
}

/// A download recorded in the node's activity, with the kind of its file (for the metrics' label): a phone
/// revalidating over its kept connection asks for the same file again, and its kind is not worked out again.
struct Recorded {
    at: crate::util::time::Time,
    status: u16,
    subject: Subject,
    file: Box<str>,
    kind: FileKind,
}

impl ConnectionMemo {
    /// The kind of `path` if it is the file of the last download recorded.
    fn kind_of(&self, path: &str) -> Option<FileKind> {
        let last = self.recorded.as_ref()?;
        (path.strip_prefix('/') == Some(&*last.file)).then_some(last.kind)
    }
}

/// Boxed, so that taking the memo out and putting it back moves a pointer.
pub type MemoSlot = std::sync::Mutex<Option<Box<ConnectionMemo>>>;

/// What a connection holds for its requests: the memo, and in observe mode the observer with the
/// connection's TLS facts.
#[derive(Default)]
pub struct Connection {
    pub memo: MemoSlot,
    pub observed: Option<(Arc<Observer>, Option<TlsFacts>)>,
}

pub async fn handle<B>(
    app: &App,
    monitor: &Monitor,
    peer: SocketAddr,
    channel: Channel,
    req: Request<B>,
    conn: &Connection,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The clock is read once for the duration histogram; the path is copied only for an access line that
    // will be written.
    let started = Instant::now();
    let logged = tracing::enabled!(target: "sipcfg::access", tracing::Level::INFO)
        .then(|| (started, req.method().clone(), loggable(req.uri().path())));
    let observed = conn.observed.as_ref().map(|(observer, tls)| (observer, tls, RequestHead::of(&req)));
    let slot = &conn.memo;
    let mut memo = match channel {
        Channel::Https | Channel::Edge => Some(slot.lock().ok().and_then(|mut m| m.take()).unwrap_or_default()),
        Channel::Legacy => None,
    };
    let path = req.uri().path();
    let kind = memo.as_deref().and_then(|m| m.kind_of(path)).unwrap_or_else(|| route::kind_of(path));
    let unanswered = Unanswered { monitor, peer, channel, kind, line: Some(logged) };
    let (response, subject, reason) = match (check_target(&req, memo.as_deref_mut().map(|m| &mut m.host)), channel) {
        (Err((status, why)), _) => (plain(status, why), None, "bad-request-target"),
        (Ok(()), Channel::Https | Channel::Edge) if route::is_oauth_path(req.uri().path()) => {
            // Boxed: the token service's future (store transactions) is many times the size of a download's,
            // and every request's future would otherwise be as large, copied on each request.
            Box::pin(oauth::handle(app, &monitor.metrics, peer, channel, req)).await
        }
        (Ok(()), Channel::Https | Channel::Edge) => {
            answer(app, peer, &req, memo.get_or_insert_with(Box::default), kind).await
        }
        (Ok(()), Channel::Legacy) => answer_legacy(app, &req).await,
    };
    if let Some(memo) = memo
        && let Ok(mut m) = slot.lock()
    {
        *m = Some(memo);
    }
    let logged = unanswered.answered();
    let status = response.status().as_u16();
    monitor.metrics.request(channel, kind, status, reason);
    monitor.metrics.request_took(channel, kind, started.elapsed());
    if let Some((observer, tls, head)) = observed {
        observer.request(peer, channel, tls.as_ref(), &head, subject.as_ref(), status);
    }
    if let Some((started, method, path)) = logged {
        let subject = subject.as_ref().map(ToString::to_string).unwrap_or_default();
        access_line(peer, channel, method.as_str(), &path, status, &subject, reason, started.elapsed());
    }
    response
}

/// A request shed past the in-flight bound (`server.max_in_flight`): 503 with `Retry-After`, before any work.
/// Counted in `sipcfg_http_requests_total` (code 503) and `sipcfg_shed_total`; no access line, which under
/// overload would only add to the work.
pub fn overloaded<B>(monitor: &Monitor, channel: Channel, req: &Request<B>, retry_after_secs: u8) -> Response<Body> {
    const RETRY: [&str; 4] = ["0", "1", "2", "3"];
    let retry = RETRY.get(usize::from(retry_after_secs)).copied().unwrap_or("3");
    monitor.metrics.request(channel, route::kind_of(req.uri().path()), 503, "");
    let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "overloaded: retry later\n");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(retry));
    if req.method() == Method::HEAD { head_only(r) } else { r }
}

/// The one `sipcfg::access` event: a request's access line (and audit record).
#[allow(clippy::too_many_arguments)]
fn access_line(
    peer: SocketAddr,
    channel: Channel,
    method: &str,
    path: &str,
    status: u16,
    subject: &str,
    reason: &str,
    took: std::time::Duration,
) {
    tracing::info!(
        target: "sipcfg::access",
        %peer,
        channel = channel.as_str(),
        method = %method,
        path = %path,
        status,
        subject,
        reason,
        micros = took.as_micros() as u64,
    );
}

/// The access line's request fields: when it started, method, loggable path.
type Line = (Instant, Method, String);

/// Status logged for a request whose answer was never sent (nginx's "client closed request").
const CLIENT_GONE: u16 = 499;

/// Counts and logs a request that [`handle`] never answered: its future was dropped because the client
/// reset the HTTP/2 stream or closed the connection while the handler waited (for a request body, say).
struct Unanswered<'a> {
    monitor: &'a Monitor,
    peer: SocketAddr,
    channel: Channel,
    kind: FileKind,
    /// `Some` until answered; inside, the access line's fields if it is written.
    line: Option<Option<Line>>,
}

impl Unanswered<'_> {
    fn answered(mut self) -> Option<Line> {
        self.line.take().flatten()
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let Some(line) = self.line.take() else { return };
        self.monitor.metrics.request(self.channel, self.kind, CLIENT_GONE, "client-gone");
        if let Some((started, method, path)) = line {
            let took = started.elapsed();
            access_line(self.peer, self.channel, method.as_str(), &path, CLIENT_GONE, "", "client-gone", took);
        }
    }
}

/// A request that hyper answered itself, before [`handle`] saw it: HTTP/1.1 heads over
/// `server.max_header_bytes` (431), URIs over hyper's limit (414) and unparsable heads (400). It gets its
/// access line and is counted like any other; a connection that timed out sending its head (no answer is
/// sent) is only counted as a refusal.
pub fn refused_by_hyper(
    monitor: &Monitor,
    peer: SocketAddr,
    channel: Channel,
    error: &(dyn std::error::Error + Send + Sync + 'static),
) {
    let Some(e) = error.downcast_ref::<hyper::Error>() else { return };
    if e.is_timeout() {
        monitor.metrics.refusal("header-timeout");
        return;
    }
    if !e.is_parse() || e.is_parse_version_h2() {
        return;
    }
    let (status, reason) = if e.is_parse_too_large() && e.to_string().contains("URI") {
        (StatusCode::URI_TOO_LONG, "uri-too-long")
    } else if e.is_parse_too_large() {
        (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "header-too-large")
    } else {
        (StatusCode::BAD_REQUEST, "malformed-request")
    };
    let status = status.as_u16();
    monitor.metrics.request(channel, FileKind::Other, status, reason);
    access_line(peer, channel, "", "", status, "", reason, std::time::Duration::ZERO);
}

/// `Some(is_head)` for GET and HEAD, `None` for every other method.
fn method<B>(req: &Request<B>) -> Option<bool> {
    match *req.method() {
        Method::GET => Some(false),
        Method::HEAD => Some(true),
        _ => None,
    }
}

/// 405 with the methods that are allowed.
fn method_not_allowed() -> (Response<Body>, Option<Subject>, &'static str) {
    (allow(plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"), "GET, HEAD"), None, "method")
}

/// Request targets and `Host` headers a file server accepts: origin-form (`/name`) only in HTTP/1.x, one
/// well-formed `Host` (required in HTTP/1.1). Everything else is 400 before anything is looked up.
/// `known_host` is the connection's last `Host` found well-formed (updated here): the same bytes again
/// are not checked again.
fn check_target<B>(req: &Request<B>, known_host: Option<&mut KnownHost>) -> Result<(), (StatusCode, &'static str)> {
    let uri = req.uri();
    let h2 = req.version() == http::Version::HTTP_2;
    if !h2 && (uri.scheme().is_some() || uri.authority().is_some()) {
        return Err((StatusCode::BAD_REQUEST, "absolute-form request targets are for proxies; send /<file name>\n"));
    }
    if !uri.path().starts_with('/') {
        return Err((StatusCode::BAD_REQUEST, "the request target must be /<file name>\n"));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err((StatusCode::BAD_REQUEST, "more than one Host header\n")),
        (None, None) if req.version() == http::Version::HTTP_11 => {
            return Err((StatusCode::BAD_REQUEST, "HTTP/1.1 requires a Host header\n"));
        }
        (Some(h), None) => {
            let h = h.as_bytes();
            if known_host.as_deref().is_some_and(|known| known.is(h)) {
                return Ok(());
            }
            if !valid_host(h) {
                return Err((StatusCode::BAD_REQUEST, "bad Host header\n"));
            }
            if let Some(known) = known_host {
                known.remember(h);
            }
        }
        _ => {}
    }
    Ok(())
}

/// `host[:port]`: a registered name, IPv4 address or bracketed IPv6 address (RFC 9110 §7.2), at most 255 bytes.
fn valid_host(h: &[u8]) -> bool {
    if h.is_empty() || h.len() > 255 {
        return false;
    }
    let (host, port) = if h[0] == b'[' {
        let Some(end) = h.iter().position(|&b| b == b']') else { return false };
        let inner = &h[1..end];
        if inner.is_empty() || !inner.iter().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.')) {
            return false;
        }
        (&h[..=end], &h[end + 1..])
    } else {
        match h.iter().position(|&b| b == b':') {
            Some(i) => (&h[..i], &h[i..]),
            None => (h, &h[h.len()..]),
        }
    };
    let host_ok = host.first() == Some(&b'[')
        || (!host.is_empty() && host.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
    let port_ok = port.is_empty()
        || (port.len() >= 2 && port.len() <= 6 && port[0] == b':' && port[1..].iter().all(u8::is_ascii_digit));
    host_ok && port_ok
}

async fn answer<B>(
    app: &App,
    peer: SocketAddr,
    req: &Request<B>,
    memo: &mut ConnectionMemo,
    kind: FileKind,
) -> (Response<Body>, Option<Subject>, &'static str) {
    let Some(head) = method(req) else { return method_not_allowed() };
    let now = crate::util::time::unix_now() as i64;
    if let Some(wait) = app.auth_limiter().check(peer.ip(), now) {
        let mut r = plain(StatusCode::TOO_MANY_REQUESTS, "too many failed authentications from this address\n");
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return (r, None, "rate-limited");
    }
    let subject = match authenticate(app, req.headers(), now as u64, &mut memo.token) {
        Ok(s) => s,
        Err(AuthFailure::Missing) => return (challenge(None), None, "no-token"),
        Err(AuthFailure::Duplicate) => {
            let mut r = plain(StatusCode::BAD_REQUEST, "more than one Authorization header\n");
            let v = HeaderValue::from_static("Bearer realm=\"sipcfg\", error=\"invalid_request\"");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            return (r, None, "duplicate-authorization");
        }
        Err(AuthFailure::Invalid(e)) => {
            app.auth_limiter().failed(peer.ip(), now);
            return (challenge(Some(&e)), None, e.reason());
        }
    };
    let name = req.uri().path().strip_prefix('/').unwrap_or("");
    let result = app.provisioner().fetch_remembering(&subject, name, &mut memo.fetch).await;
    let response = match &result {
        Ok(file) => serve(file, req.headers(), head, &mut memo.etag),
        Err(FetchError::Forbidden(_)) => {
            // Probing other devices' files with a valid token counts as a failure too.
            app.auth_limiter().failed(peer.ip(), now);
            let mut r = plain(StatusCode::FORBIDDEN, "this token does not open this file\n");
            let v = HeaderValue::from_static("Bearer realm=\"sipcfg\", error=\"insufficient_scope\"");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            r
        }
        Err(e) => failure(e),
    };
    let reason = result.as_ref().err().map_or("", FetchError::reason);
    let status = response.status().as_u16();
    let repeat = matches!(&memo.recorded, Some(r) if r.at == now && r.status == status && r.subject == subject && *r.file == *name);
    if !repeat {
        memo.recorded = Some(Recorded { at: now, status, subject: subject.clone(), file: name.into(), kind });
        record(app, &subject, (now, status, peer, name), req);
    }
    (if head { head_only(response) } else { response }, Some(subject), reason)
}

/// Records a download in the node's activity (the console's "last download" of each device).
fn record<B>(app: &App, subject: &Subject, (now, status, peer, name): (i64, u16, SocketAddr, &str), req: &Request<B>) {
    app.activity().downloaded(subject, (now, status, peer.ip(), name), || Download {
        at: now,
        address: peer.ip(),
        file: loggable(name),
        status,
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(200).collect())
            .unwrap_or_default(),
    });
}

/// The plain-HTTP channel: a bearer token here is refused outright (it crossed the network in clear).
async fn answer_legacy<B>(app: &App, req: &Request<B>) -> (Response<Body>, Option<Subject>, &'static str) {
    let Some(head) = method(req) else { return method_not_allowed() };
    if req.headers().contains_key(header::AUTHORIZATION) {
        let r = plain(
            StatusCode::BAD_REQUEST,
            "credentials are never accepted over plain HTTP: use HTTPS on port 6971 (and treat this token as exposed)\n",
        );
        return (if head { head_only(r) } else { r }, None, "token-over-http");
    }
    let name = req.uri().path().strip_prefix('/').unwrap_or("");
    let result = app.provisioner().fetch_legacy(name).await;
    let response = match &result {
        Ok(file) => serve(file, req.headers(), head, &mut None),
        Err(FetchError::Forbidden(_)) => plain(
            StatusCode::FORBIDDEN,
            "this file is served only over HTTPS (port 6971) to the device's OAuth token\n",
        ),
        Err(e) => failure(e),
    };
    let reason = result.as_ref().err().map_or("", FetchError::reason);
    (if head { head_only(response) } else { response }, None, reason)
}

/// Answers for the failures that are the same on every channel.
fn failure(e: &FetchError) -> Response<Body> {
    match e {
        FetchError::NotFound(NotFound::EncryptedConfig) => plain(
            StatusCode::NOT_FOUND,
            "encrypted configuration files are not served: TFTP encryption is not supported with SIP OAuth\n",
        ),
        FetchError::NotFound(_) | FetchError::Forbidden(_) => plain(StatusCode::NOT_FOUND, "not found\n"),
        FetchError::File(f) => match **f {
            FileError::NotFound(_) => plain(StatusCode::NOT_FOUND, "not found\n"),
            FileError::OutsideRoot(_) => {
                tracing::warn!(error = %f, "common file refused: a link leads out of the file root");
                plain(StatusCode::NOT_FOUND, "not found\n")
            }
            FileError::TooLarge(..) | FileError::Io(..) => {
                tracing::error!(error = %f, "common file could not be served");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "the file could not be read\n")
            }
        },
        FetchError::Render(e) => {
            tracing::error!(error = %e, "rendering failed; the phone gets a 500");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "the configuration could not be rendered\n")
        }
    }
}

/// Reads the bearer token from the one `Authorization` header (never from the URL) and verifies it, or finds
/// it in the connection's memo (the same bytes, verified by the verifier still in force, not expired).
/// Revocation is checked either way.
fn authenticate(app: &App, headers: &HeaderMap, now: u64, memo: &mut TokenMemo) -> Result<Subject, AuthFailure> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthFailure::Missing)?;
    if values.next().is_some() {
        return Err(AuthFailure::Duplicate);
    }
    let verifier = app.verifier();
    // The memo first, on the raw bytes: bytes equal to a token this connection verified need no other check.
    let remembered = bearer_token(value.as_bytes()).and_then(|t| memo.get(&verifier, t, now)).cloned();
    let verified = match remembered {
        Some(v) => v,
        None => {
            let value = value.to_str().map_err(|_| AuthFailure::Invalid(TokenError::Malformed))?;
            let token = bearer_token(value.as_bytes()).ok_or(AuthFailure::Missing)?;
            if token.is_empty() || !all_token68(token) {
                return Err(AuthFailure::Invalid(TokenError::Malformed));
            }
            let token = std::str::from_utf8(token).map_err(|_| AuthFailure::Invalid(TokenError::Malformed))?;
            memo.verify(&verifier, token, now).map_err(AuthFailure::Invalid)?.clone()
        }
    };
    if app.token_service().is_some_and(|s| s.is_revoked(&verified)) {
        return Err(AuthFailure::Invalid(TokenError::Revoked));
    }
    Ok(verified.subject)
}

/// The token of a `Bearer <token>` credential (scheme case-insensitive, spaces before the token skipped),
/// or `None` for another scheme.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = (&value[..space], &value[space + 1..]);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    Some(&rest[start..])
}

/// RFC 6750 `b64token` characters.
const TOKEN68: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=');
        b += 1;
    }
    table
};

/// Whether every byte is a `b64token` character. Branch-free (a short-circuiting scan of a 700-byte RS256
/// token was 10% of a keep-alive revalidation's CPU).
fn all_token68(token: &[u8]) -> bool {
    token.iter().fold(true, |ok, &b| ok & TOKEN68[usize::from(b)])
}

/// 401 with the RFC 6750 challenge.
fn challenge(error: Option<&TokenError>) -> Response<Body> {
    let value = match error {
        None => format!("Bearer realm=\"{REALM}\""),
        Some(e) => {
            let description =
                if *e == TokenError::Expired { "the access token expired" } else { "the access token is invalid" };
            format!("Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{description}\"")
        }
    };
    let mut r = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

/// The answer for a file: 200 with the body, or 304 when `If-None-Match` names its entity tag. `etag` is the
/// connection's last `ETag` value, reused while the file is the same.
fn serve(
    file: &Arc<RenderedFile>,
    request: &HeaderMap,
    head: bool,
    etag: &mut Option<(Arc<RenderedFile>, HeaderValue)>,
) -> Response<Body> {
    let not_modified = if_none_match(request, &file.etag);
    let body = if not_modified || head {
        Body::default()
    } else {
        match file.body() {
            Ok(b) => Body::new(b),
            Err(e) => {
                tracing::error!(error = %e, "cannot serve a cached file");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n");
            }
        }
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    match etag {
        Some((last, value)) if Arc::ptr_eq(last, file) => {
            h.insert(header::ETAG, value.clone());
        }
        _ => {
            if let Ok(value) = HeaderValue::from_str(&file.etag) {
                h.insert(header::ETAG, value.clone());
                *etag = Some((file.clone(), value));
            }
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    if not_modified {
        // RFC 9110 §15.4.5: a 304 carries the validators and caching fields, not the representation's others.
        *r.status_mut() = StatusCode::NOT_MODIFIED;
    } else {
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(file.content_type));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(file.len()));
    }
    r
}

/// RFC 9110 §13.1.2: weak comparison; `*` matches any current representation. A phone sends back the tag it
/// was given, so that exact value is checked first.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    // Whitespace around a tag is HTTP's OWS (spaces and tabs): ASCII, trimmed without decoding characters
    // (a `str::trim` of the file's own tag on every answer, asked or not, was 0.4 µs of a storm phone).
    fn strip(t: &str) -> &str {
        let t = t.trim_ascii();
        t.strip_prefix("W/").unwrap_or(t)
    }
    headers.get_all(header::IF_NONE_MATCH).iter().any(|v| {
        v.as_bytes() == etag.as_bytes()
            || v.to_str().is_ok_and(|v| {
                let ours = strip(etag);
                v.split(',').any(|t| {
                    let t = t.trim_ascii();
                    t == "*" || strip(t) == ours
                })
            })
    })
}

/// Bytes `char::escape_default` leaves as they are: printable ASCII but the backslash and the quotes.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c >= 0x20 && c <= 0x7e && c != b'\\' && c != b'\'' && c != b'"';
        b += 1;
    }
    table
};

/// The request path as it may appear in a log line: printable ASCII, bounded.
pub(super) fn loggable(path: &str) -> String {
    // Phones ask for plain names: one branch-free pass and a copy (escaping char by char cost 2,100
    // instructions a request whenever access lines are written).
    if path.len() <= LOG_PATH_MAX && path.bytes().fold(true, |plain, b| plain & PLAIN[usize::from(b)]) {
        return path.to_owned();
    }
    let mut s: String = path.chars().take(LOG_PATH_MAX).flat_map(char::escape_default).collect();
    if path.chars().count() > LOG_PATH_MAX {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::{LOG_PATH_MAX, loggable};

    /// The copy taken for plain paths is what escaping them gives.
    #[test]
    fn a_plain_path_is_logged_as_escaping_would_log_it() {
        let escaped = |p: &str| {
            let mut s: String = p.chars().take(LOG_PATH_MAX).flat_map(char::escape_default).collect();
            if p.chars().count() > LOG_PATH_MAX {
                s.push('…');
            }
            s
        };
        let long = format!("/{}", "a".repeat(LOG_PATH_MAX));
        for path in ["/SEP001122334455.cnf.xml", "/a b", "/a\\b", "/a\"b'c", "/\u{e9}t\u{e9}", "/\u{1}\n", &long, ""] {
            assert_eq!(loggable(path), escaped(path), "{path:?}");
        }
    }
}
