//! Observe mode (`[observe]`): for a pilot with real phones, what a client sends and how it speaks TLS, logged
//! once per subject and client address under the `sipcfg::observe` target. Nothing public says exactly what
//! a Cisco phone sends on 6971 (headers, User-Agent, TLS version and ALPN, whether it presents its MIC or
//! LSC); one line per phone answers that.
//!
//! A line holds the request line, every header (credentials redacted, below), the answer's status, and the
//! connection's TLS facts: what the client offered in its ClientHello (ALPN protocols, cipher suites,
//! signature schemes, groups, server name) and what was negotiated (version, cipher suite, ALPN, full or
//! resumed handshake, the client certificate if one was asked for and presented). A TLS handshake that fails
//! is logged too, once per address, with what the client offered.
//!
//! **No credential is ever logged.** `Authorization` and `Proxy-Authorization` become their scheme and
//! length (`Bearer <redacted, 812 bytes>`); headers whose name speaks of a credential (`Cookie`, anything with
//! `auth`, `token`, `key`, `code`, `secret`, `session`, `password`) only their length; in every other value,
//! the request's own bearer token and anything shaped like a JWT are replaced by their length; the query
//! string keeps its parameter names, never their values.
//!
//! Off (the default), none of this runs: a connection takes the usual handshake, a request one branch.
//! "Once" is remembered in a set bounded by `observe.max_pairs`; past it nothing more is logged until a
//! restart (a warning says so).

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::{HeaderMap, Method, Request, Uri, Version};
use rustls::server::{Acceptor, ClientHello, ServerConnection};
use rustls::{CipherSuite, HandshakeKind, NamedGroup, ProtocolVersion, SignatureScheme};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use crate::app::channel::Channel;
use crate::config::ObserveConfig;
use crate::provision::subject::Subject;
use crate::util::encoding::hex;

/// Longest header value (or query parameter name) logged as it is; longer ones are cut.
const VALUE_MAX: usize = 512;
/// Words that mark a header name as carrying a credential: its value is never shown, only its length.
const SECRET_NAMES: [&str; 9] = ["auth", "token", "cookie", "key", "code", "secret", "session", "password", "passwd"];

/// What observe mode remembers: which (subject, client address) pairs were logged.
pub struct Observer {
    seen: Mutex<HashSet<(IpAddr, String)>>,
    max_pairs: usize,
    /// The bound was reached (and said so once).
    full: AtomicBool,
    /// Whether the phone listener asks for a client certificate.
    asks_certificate: bool,
}

impl Observer {
    /// The observer of `[observe]`, or `None` when observe mode is off.
    pub fn from_config(config: &ObserveConfig) -> Option<Arc<Observer>> {
        config.enabled.then(|| {
            Arc::new(Observer {
                seen: Mutex::new(HashSet::new()),
                max_pairs: config.max_pairs,
                full: AtomicBool::new(false),
                asks_certificate: config.request_client_certificate,
            })
        })
    }

    /// Whether `who` at `ip` is seen for the first time (and is now remembered).
    fn first_time(&self, ip: IpAddr, who: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (ip, who.to_owned());
        if seen.contains(&key) {
            return false;
        }
        if seen.len() >= self.max_pairs {
            if !self.full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    target: "sipcfg::observe",
                    max_pairs = self.max_pairs,
                    "observe mode has logged observe.max_pairs subjects and addresses: no more are logged until a \
                     restart"
                );
            }
            return false;
        }
        seen.insert(key);
        true
    }

    /// The TLS handshake of a connection being observed: the ClientHello is read first, so that what the
    /// client offered is known even when the handshake then fails (which is logged once per address).
    pub async fn accept(
        &self,
        config: Arc<rustls::ServerConfig>,
        tcp: TcpStream,
        peer: SocketAddr,
        channel: Channel,
    ) -> std::io::Result<(TlsStream<TcpStream>, TlsFacts)> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), tcp).await?;
        let offered = Offered::of(&start.client_hello());
        match start.into_stream(config).await {
            Ok(stream) => {
                // The edge listener always asks (mutual TLS); the phone port when configured to.
                let asked = channel == Channel::Edge || self.asks_certificate;
                let facts = TlsFacts::of(stream.get_ref().1, offered, asked);
                Ok((stream, facts))
            }
            Err(e) => {
                if self.first_time(peer.ip(), "tls-handshake-failed") {
                    let offered = offered.text();
                    tracing::info!(
                        target: "sipcfg::observe",
                        %peer,
                        channel = channel.as_str(),
                        error = %e,
                        offered_sni = offered.sni,
                        offered_alpn = offered.alpn,
                        offered_cipher_suites = offered.suites,
                        offered_signature_schemes = offered.schemes,
                        offered_groups = offered.groups,
                        "observe: TLS handshake failed (the first from this address)"
                    );
                }
                Err(e)
            }
        }
    }

    /// After a request was answered: logs it if its subject (`-` without a valid token) is new at this
    /// address.
    pub fn request(
        &self,
        peer: SocketAddr,
        channel: Channel,
        tls: Option<&TlsFacts>,
        head: &RequestHead,
        subject: Option<&Subject>,
        status: u16,
    ) {
        let who = subject.map_or_else(|| "-".to_owned(), ToString::to_string);
        if !self.first_time(peer.ip(), &who) {
            return;
        }
        let tls = tls.map_or_else(TlsText::plain, TlsFacts::text);
        tracing::info!(
            target: "sipcfg::observe",
            %peer,
            channel = channel.as_str(),
            subject = %who,
            status,
            request = %head.request_line(),
            headers = %head.headers(),
            tls_version = tls.version,
            tls_cipher_suite = tls.suite,
            tls_alpn = tls.alpn,
            tls_sni = tls.offered.sni,
            tls_handshake = tls.handshake,
            tls_client_certificate = tls.certificate,
            offered_alpn = tls.offered.alpn,
            offered_cipher_suites = tls.offered.suites,
            offered_signature_schemes = tls.offered.schemes,
            offered_groups = tls.offered.groups,
            "observe: a client seen for the first time with this subject"
        );
    }
}

/// What a ClientHello offered.
struct Offered {
    sni: Option<String>,
    alpn: Option<Vec<Vec<u8>>>,
    suites: Vec<CipherSuite>,
    schemes: Vec<SignatureScheme>,
    groups: Option<Vec<NamedGroup>>,
}

impl Offered {
    fn of(hello: &ClientHello<'_>) -> Offered {
        Offered {
            sni: hello.server_name().map(str::to_owned),
            alpn: hello.alpn().map(|protocols| protocols.map(<[u8]>::to_vec).collect()),
            suites: hello.cipher_suites().to_vec(),
            schemes: hello.signature_schemes().to_vec(),
            groups: hello.named_groups().map(<[NamedGroup]>::to_vec),
        }
    }

    fn text(&self) -> OfferedText {
        OfferedText {
            sni: self.sni.as_deref().map_or_else(|| "none".to_owned(), |s| printable(s.as_bytes())),
            alpn: match &self.alpn {
                None => "none".into(),
                Some(protocols) => protocols.iter().map(|p| printable(p)).collect::<Vec<_>>().join(","),
            },
            suites: names(&self.suites),
            schemes: names(&self.schemes),
            groups: names(self.groups.as_deref().unwrap_or(&[])),
        }
    }
}

/// [`Offered`] as the log line writes it.
#[derive(Default)]
struct OfferedText {
    sni: String,
    alpn: String,
    suites: String,
    schemes: String,
    groups: String,
}

/// [`TlsFacts`] as the log line writes it.
struct TlsText {
    version: String,
    suite: String,
    alpn: String,
    handshake: &'static str,
    certificate: String,
    offered: OfferedText,
}

impl TlsText {
    /// The legacy listener's connections.
    fn plain() -> TlsText {
        TlsText {
            version: "none (plain HTTP)".into(),
            suite: String::new(),
            alpn: String::new(),
            handshake: "",
            certificate: String::new(),
            offered: OfferedText::default(),
        }
    }
}

/// A connection's TLS facts, taken once after its handshake (observe mode only).
pub struct TlsFacts {
    version: Option<ProtocolVersion>,
    suite: Option<CipherSuite>,
    alpn: Option<Vec<u8>>,
    kind: Option<HandshakeKind>,
    /// `None`: not asked for. Otherwise the chain presented (empty: none).
    certificates: Option<Vec<CertificateDer<'static>>>,
    offered: Offered,
}

impl TlsFacts {
    fn of(conn: &ServerConnection, offered: Offered, asked: bool) -> TlsFacts {
        TlsFacts {
            version: conn.protocol_version(),
            suite: conn.negotiated_cipher_suite().map(|s| s.suite()),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            kind: conn.handshake_kind(),
            certificates: asked
                .then(|| conn.peer_certificates().map(<[CertificateDer<'static>]>::to_vec).unwrap_or_default()),
            offered,
        }
    }

    fn text(&self) -> TlsText {
        TlsText {
            version: debug_or_none(self.version),
            suite: debug_or_none(self.suite),
            alpn: self.alpn.as_deref().map_or_else(|| "none".to_owned(), printable),
            handshake: handshake(self.kind),
            certificate: self.certificate(),
            offered: self.offered.text(),
        }
    }

    /// The client certificate: not asked for, none presented, or its subject, issuer, serial, end of
    /// validity and SHA-256 (the issuer tells a MIC, from Cisco's manufacturing CA, from an LSC, from CAPF).
    fn certificate(&self) -> String {
        let Some(chain) = &self.certificates else { return "not requested".into() };
        let Some(leaf) = chain.first() else { return "none presented".into() };
        let sha256 = hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf).as_ref());
        match x509_parser::parse_x509_certificate(leaf) {
            Ok((_, cert)) => format!(
                "subject=\"{}\" issuer=\"{}\" serial={} not_after={} sha256={sha256} chain={}",
                cert.subject(),
                cert.issuer(),
                cert.raw_serial_as_string(),
                cert.validity().not_after,
                chain.len()
            ),
            Err(e) => format!("unparsable ({e}) sha256={sha256} chain={}", chain.len()),
        }
    }
}

/// What observe mode keeps of a request until its answer: the request line and headers.
pub struct RequestHead {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl RequestHead {
    pub fn of<B>(req: &Request<B>) -> RequestHead {
        RequestHead {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    /// `GET /SEP001122334455.cnf.xml HTTP/1.1`, the query's values replaced by their length.
    fn request_line(&self) -> String {
        let mut line =
            format!("{} {}", printable(self.method.as_str().as_bytes()), super::phone::loggable(self.uri.path()));
        if let Some(query) = self.uri.query() {
            line.push('?');
            line.push_str(&redacted_query(query));
        }
        let _ = write!(line, " {:?}", self.version);
        line
    }

    /// Every header as `[["name","value"],…]` (JSON), in the order received, credentials redacted. HTTP/2's
    /// `:authority` comes first.
    fn headers(&self) -> String {
        let bearer = self
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| credential(v.as_bytes()).map(|(_, c)| c))
            .filter(|c| c.len() >= 8);
        let mut pairs: Vec<(String, String)> = Vec::with_capacity(self.headers.len() + 1);
        if let Some(authority) = self.uri.authority() {
            pairs.push((":authority".into(), printable(authority.as_str().as_bytes())));
        }
        for (name, value) in &self.headers {
            pairs.push((name.as_str().to_owned(), redacted_value(name.as_str(), value.as_bytes(), bearer)));
        }
        serde_json::to_string(&pairs).unwrap_or_default()
    }
}

/// `(scheme, credential)` of an `Authorization`-style value (`Bearer eyJ…`).
fn credential(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let start = rest.iter().position(|&b| b != b' ').unwrap_or(rest.len());
    Some((scheme, &rest[start..]))
}

fn length(n: usize) -> String {
    format!("<redacted, {n} bytes>")
}

/// A header's value as observe mode logs it (module documentation: the rules).
fn redacted_value(name: &str, value: &[u8], bearer: Option<&[u8]>) -> String {
    if name == "authorization" || name == "proxy-authorization" {
        return match credential(value) {
            Some((scheme, secret))
                if !scheme.is_empty() && scheme.len() <= 32 && scheme.iter().all(u8::is_ascii_alphanumeric) =>
            {
                format!("{} {}", printable(scheme), length(secret.len()))
            }
            _ => length(value.len()),
        };
    }
    if SECRET_NAMES.iter().any(|word| name.contains(word)) {
        return length(value.len());
    }
    printable(&without_secrets(value, bearer))
}

/// `value` with the request's bearer token and every JWT-shaped run (`eyJ` and base64url with a dot: a
/// JWT's header always starts so) replaced by their length.
fn without_secrets(value: &[u8], bearer: Option<&[u8]>) -> Vec<u8> {
    let base64url = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'=' | b'+' | b'/');
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let rest = &value[i..];
        if let Some(token) = bearer.filter(|t| rest.starts_with(t)) {
            out.extend_from_slice(length(token.len()).as_bytes());
            i += token.len();
        } else if rest.starts_with(b"eyJ") {
            let run = rest.iter().take_while(|&&b| base64url(b)).count();
            if rest[..run].contains(&b'.') {
                out.extend_from_slice(length(run).as_bytes());
            } else {
                out.extend_from_slice(&rest[..run]);
            }
            i += run;
        } else {
            out.push(value[i]);
            i += 1;
        }
    }
    out
}

/// `a=<redacted, 5 bytes>&b`: names kept when they look like names, values never.
fn redacted_query(query: &str) -> String {
    let name_like =
        |n: &str| n.len() <= 32 && n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    query
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((name, value)) if name_like(name) => format!("{name}={}", length(value.len())),
            None if name_like(part) && !part.starts_with("eyJ") => part.to_owned(),
            _ => length(part.len()),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Printable text: invalid UTF-8 replaced, control characters escaped, at most [`VALUE_MAX`] characters.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s = String::with_capacity(text.len().min(VALUE_MAX));
    for c in text.chars().take(VALUE_MAX) {
        match c.is_control() {
            true => s.extend(c.escape_default()),
            false => s.push(c),
        }
    }
    if text.chars().count() > VALUE_MAX {
        s.push('…');
    }
    s
}

fn names<T: std::fmt::Debug>(items: &[T]) -> String {
    items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(",")
}

fn debug_or_none<T: std::fmt::Debug>(value: Option<T>) -> String {
    value.map_or_else(|| "none".to_owned(), |v| format!("{v:?}"))
}

fn handshake(kind: Option<HandshakeKind>) -> &'static str {
    match kind {
        Some(HandshakeKind::Full) => "full",
        Some(HandshakeKind::FullWithHelloRetryRequest) => "full, after a HelloRetryRequest",
        Some(HandshakeKind::Resumed) => "resumed",
        None => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_credential_survives_in_a_header_value() {
        let jwt = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJkZXZpY2U6U0VQMDAxMTIyMzM0NDU1In0.c2lnbmF0dXJl";
        let bearer = format!("Bearer {jwt}");
        assert_eq!(
            redacted_value("authorization", bearer.as_bytes(), None),
            format!("Bearer <redacted, {} bytes>", jwt.len())
        );
        assert_eq!(redacted_value("proxy-authorization", b"Basic dXNlcjpwYXNz", None), "Basic <redacted, 12 bytes>");
        assert_eq!(redacted_value("authorization", b"opaque-secret", None), "<redacted, 13 bytes>", "no scheme");
        for name in ["cookie", "x-auth-token", "x-api-key", "x-activation-code", "x-session-id"] {
            assert_eq!(redacted_value(name, b"1234567890123456", None), "<redacted, 16 bytes>", "{name}");
        }
        // A JWT anywhere else, whether or not it is this request's token.
        let other = format!("token={jwt}; v=2");
        assert_eq!(
            redacted_value("x-debug", other.as_bytes(), None),
            format!("token=<redacted, {} bytes>; v=2", jwt.len())
        );
        // This request's token, whatever its shape.
        let opaque = b"0123456789abcdefOPAQUE";
        assert_eq!(redacted_value("x-copy", b"a 0123456789abcdefOPAQUE b", Some(opaque)), "a <redacted, 22 bytes> b");
        // What phones are expected to send stays readable.
        for (name, value) in [
            ("user-agent", "Cisco-CP8851/14.2.1 (SEP001122334455)"),
            ("if-none-match", "\"4f2a9c0e1b7d3a5f6e8c0b2a4d6f8e1c\""),
            ("host", "cucm-tftp.example.com:6971"),
            ("accept-encoding", "gzip"),
            ("keep-alive", "timeout=5"),
        ] {
            assert_eq!(redacted_value(name, value.as_bytes(), None), value);
        }
        assert_eq!(redacted_value("user-agent", b"a\x01b\xff", None), "a\\u{1}b\u{fffd}");
    }

    #[test]
    fn query_values_are_never_shown() {
        assert_eq!(redacted_query("access_token=abc&v=1"), "access_token=<redacted, 3 bytes>&v=<redacted, 1 bytes>");
        assert_eq!(redacted_query("debug&eyJhbGciOi.x.y"), "debug&<redacted, 14 bytes>");
        assert_eq!(redacted_query("a%20b=1"), "<redacted, 7 bytes>");
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let config = ObserveConfig { enabled: true, max_pairs: 2, request_client_certificate: false };
        let observer = Observer::from_config(&config).expect("on");
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(observer.first_time(a, "device:SEP001122334455"));
        assert!(!observer.first_time(a, "device:SEP001122334455"), "once per subject and address");
        assert!(observer.first_time(b, "device:SEP001122334455"), "another address");
        assert!(!observer.first_time(a, "-"), "beyond max_pairs nothing more is logged");
        assert!(!observer.first_time(b, "device:SEP001122334455"));
        assert!(Observer::from_config(&ObserveConfig::default()).is_none(), "off by default");
    }
}
