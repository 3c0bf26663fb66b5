//! Hostile requests against the real server: a table of raw requests (paths, headers, methods, tokens)
//! each with its expected answer, then TLS and HTTP/2 abuse, slowloris and idle floods, and the
//! failed-authentication limit. Nothing here may crash the server or stop an honest phone.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestServer, example_signing_key, good_claims, now, repo, sign};
use http::StatusCode;
use jsonwebtoken::Algorithm;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a hostile request must get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Status(u16),
    /// Any 4xx (the exact code is the HTTP parser's choice, e.g. 400 or 414), or the connection closed
    /// without an answer.
    ClientError,
}

async fn hostile_server() -> TestServer {
    let mut config = common::example_config();
    config.server.tls_handshake_timeout_secs = 1;
    config.server.header_read_timeout_secs = 1;
    config.server.idle_timeout_secs = 2;
    // The table sends many bad tokens from one address: the failed-auth limit is tested on its own.
    config.server.max_failed_auth = 1_000_000;
    TestServer::with_config(config).await
}

fn tls() -> tokio_rustls::TlsConnector {
    tokio_rustls::TlsConnector::from(Arc::new(common::tls_client_config(b"http/1.1")))
}

/// Sends raw bytes over TLS and returns the status of the first answer, or None if the connection closed
/// without one.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let mut stream = tls().connect(ServerName::try_from("localhost").unwrap(), tcp).await.ok()?;
    stream.write_all(request).await.ok()?;
    let mut out = Vec::new();
    // Generous: a loaded machine (CI beside a build) can take seconds for a debug build's first handshake.
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let line = String::from_utf8_lossy(&out);
    let status = line.strip_prefix("HTTP/1.1 ").or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    status.get(..3)?.parse().ok()
}

fn b64(json: &serde_json::Value) -> String {
    sipcfg::util::encoding::base64url(json.to_string().as_bytes())
}

/// Tokens crafted by an attacker.
fn attacker_tokens(valid: &str) -> Vec<(&'static str, String, u16)> {
    let sub = "device:SEP001122334455";
    let key = example_signing_key();
    let kid = Some("example-es256-1");
    let other = repo().join("tests/fixtures/keys/other-es256-key.pem");
    let with = |field: &str, value: serde_json::Value| {
        let mut c = good_claims(sub);
        c[field] = value;
        sign(Algorithm::ES256, &key, kid, &c)
    };
    let attacker_header = |extra: serde_json::Value| {
        // Signed with the attacker's key; the header points at that key in some way.
        let mut h = serde_json::json!({"alg": "ES256", "typ": "JWT"});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        let signed = sign(Algorithm::ES256, &other, None, &good_claims(sub));
        let sig = signed.rsplit('.').next().unwrap().to_owned();
        format!("{}.{}.{sig}", b64(&h), b64(&good_claims(sub)))
    };
    let (head, payload, sig) = {
        let mut parts = valid.split('.');
        (parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned())
    };
    let _ = (&head, &sig);
    let crit = {
        let h = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "example-es256-1", "crit": ["exp"]});
        format!("{}.{payload}.{sig}", b64(&h))
    };
    vec![
        ("alg none", format!("{}.{}.", b64(&serde_json::json!({"alg": "none"})), b64(&good_claims(sub))), 401),
        (
            "alg None spelled oddly",
            format!("{}.{}.", b64(&serde_json::json!({"alg": "nOnE"})), b64(&good_claims(sub))),
            401,
        ),
        ("jku to the attacker's keys", attacker_header(serde_json::json!({"jku": "https://evil.example/jwks"})), 401),
        (
            "x5u to the attacker's certificate",
            attacker_header(serde_json::json!({"x5u": "https://evil.example/c.pem"})),
            401,
        ),
        (
            "embedded jwk",
            attacker_header(serde_json::json!({"jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}})),
            401,
        ),
        ("kid path traversal", attacker_header(serde_json::json!({"kid": "../../../../dev/null"})), 401),
        ("kid SQL", attacker_header(serde_json::json!({"kid": "' OR 1=1 --"})), 401),
        ("unknown kid", sign(Algorithm::ES256, &key, Some("nope"), &good_claims(sub)), 401),
        ("crit extension", crit, 401),
        ("exp as string", with("exp", serde_json::json!("2099-01-01")), 401),
        ("nbf as string", with("nbf", serde_json::json!("now")), 401),
        ("iat as string", with("iat", serde_json::json!("now")), 401),
        ("exp as float far future", with("exp", serde_json::json!(1e300)), 401),
        ("expired beyond the leeway", with("exp", serde_json::json!(now() - 3600)), 401),
        ("not yet valid", with("nbf", serde_json::json!(now() + 3600)), 401),
        ("aud as array without ours", with("aud", serde_json::json!(["a", "b"])), 401),
        ("sub of another kind", with("sub", serde_json::json!("admin:root")), 401),
        ("sub with control characters", with("sub", serde_json::json!("user:\u{1}root")), 401),
        ("signature stripped", format!("{head}.{payload}."), 401),
        ("two dots only", "..".to_owned(), 401),
        ("not base64", "%%%.%%%.%%%".to_owned(), 401),
    ]
}

#[tokio::test]
async fn a_table_of_hostile_requests_gets_clean_answers() {
    let server = hostile_server().await;
    let token = server.token("device:SEP001122334455");
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
    };
    let with_headers =
        |headers: &str| format!("GET /SEP001122334455.cnf.xml HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
    let auth = format!("Authorization: Bearer {token}\r\n");
    let host = "Host: localhost\r\n";
    let big = "A".repeat(20_000);
    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_name = format!("/{}", "S".repeat(5000));
    let long_method = format!("{} / HTTP/1.1\r\nHost: localhost\r\n\r\n", "G".repeat(2000));

    use Expect::*;
    let mut cases: Vec<(String, String, Expect)> = vec![
        // Paths and names.
        ("dot-dot".into(), get("/../etc/passwd"), Status(404)),
        ("encoded dot-dot and slash".into(), get("/..%2f..%2fetc%2fpasswd"), Status(404)),
        ("encoded dots".into(), get("/%2e%2e/%2e%2e/etc/passwd"), Status(404)),
        ("double-encoded".into(), get("/%252e%252e%252fetc"), Status(404)),
        ("NUL".into(), get("/SEP001122334455.cnf.xml%00"), Status(404)),
        ("NUL before an extension".into(), get("/SEP001122334455.cnf.xml%00.png"), Status(404)),
        ("encoded unreserved is the same name".into(), get("/SEP001122334455%2Ecnf.xml"), Status(200)),
        ("trailing slash".into(), get("/SEP001122334455.cnf.xml/"), Status(404)),
        ("double slash".into(), get("//SEP001122334455.cnf.xml"), Status(404)),
        ("backslash".into(), get("/..\\..\\windows\\win.ini"), ClientError),
        ("encoded backslash".into(), get("/..%5c..%5cwindows"), Status(404)),
        ("over-long name".into(), get(&long_name), ClientError),
        ("overlong UTF-8 dot".into(), get("/%c0%ae%c0%ae/etc"), Status(404)),
        ("invalid percent byte".into(), get("/%ff"), Status(404)),
        ("lone percent".into(), get("/%"), Status(404)),
        ("bad hex".into(), get("/%zz"), Status(404)),
        ("matrix parameter".into(), get("/dialplan.xml;jsessionid=1"), Status(404)),
        ("hidden file".into(), get("/.hidden"), Status(404)),
        ("dot-dot inside a name".into(), get("/a..b"), Status(404)),
        ("absolute file path".into(), get("/etc/passwd"), Status(404)),
        ("proc".into(), get("/proc/self/environ"), Status(404)),
        (
            "raw UTF-8".into(),
            format!("GET /SEP\u{e9}.cnf.xml HTTP/1.1\r\n{host}{auth}Connection: close\r\n\r\n"),
            ClientError,
        ),
        ("too many MAC digits".into(), get("/SEP0011223344556677.cnf.xml"), Status(404)),
        ("upper-case suffix".into(), get("/SEP001122334455.CNF.XML"), Status(404)),
        ("lower-case MAC".into(), get("/sep001122334455.cnf.xml"), Status(200)),
        ("signed name".into(), get("/SEP001122334455.cnf.xml.sgn"), Status(200)),
        ("encrypted name".into(), get("/SEP001122334455.cnf.xml.enc.sgn"), Status(404)),
        ("another device".into(), get("/SEP001122334466.cnf.xml"), Status(403)),
        ("a device that does not exist".into(), get("/SEPFFFFFFFFFFFF.cnf.xml"), Status(403)),
        ("common file".into(), get("/dialplan.xml"), Status(200)),
        (
            "token in the query only".into(),
            format!("GET /SEP001122334455.cnf.xml?access_token={token} HTTP/1.1\r\n{host}Connection: close\r\n\r\n"),
            Status(401),
        ),
        ("space in the target".into(), format!("GET /SEP 1.cnf.xml HTTP/1.1\r\n{host}{auth}\r\n"), ClientError),
        // Request targets and Host.
        (
            "absolute-form https".into(),
            format!("GET https://localhost/SEP001122334455.cnf.xml HTTP/1.1\r\n{host}{auth}Connection: close\r\n\r\n"),
            Status(400),
        ),
        (
            "absolute-form http".into(),
            format!("GET http://localhost/SEP001122334455.cnf.xml HTTP/1.1\r\n{host}{auth}Connection: close\r\n\r\n"),
            Status(400),
        ),
        ("asterisk-form".into(), format!("OPTIONS * HTTP/1.1\r\n{host}Connection: close\r\n\r\n"), Status(400)),
        (
            "authority-form CONNECT".into(),
            format!("CONNECT localhost:443 HTTP/1.1\r\n{host}Connection: close\r\n\r\n"),
            ClientError,
        ),
        ("no Host in HTTP/1.1".into(), with_headers(&auth), Status(400)),
        ("two Host headers".into(), with_headers(&format!("{host}Host: evil\r\n{auth}")), Status(400)),
        ("empty Host".into(), with_headers(&format!("Host: \r\n{auth}")), Status(400)),
        ("Host with a bad port".into(), with_headers(&format!("Host: localhost:99999999\r\n{auth}")), Status(400)),
        ("Host with a path".into(), with_headers(&format!("Host: localhost/x\r\n{auth}")), Status(400)),
        ("Host with a space".into(), with_headers(&format!("Host: local host\r\n{auth}")), Status(400)),
        ("IPv6 Host".into(), with_headers(&format!("Host: [::1]:6971\r\n{auth}")), Status(200)),
        ("HTTP/1.0 without Host".into(), format!("GET /SEP001122334455.cnf.xml HTTP/1.0\r\n{auth}\r\n"), Status(200)),
        // Authorization.
        ("two Authorization headers".into(), with_headers(&format!("{host}{auth}{auth}")), Status(400)),
        ("Bearer without a token".into(), with_headers(&format!("{host}Authorization: Bearer\r\n")), Status(401)),
        ("Bearer with blanks".into(), with_headers(&format!("{host}Authorization: Bearer    \r\n")), Status(401)),
        ("scheme in lower case".into(), with_headers(&format!("{host}Authorization: bearer {token}\r\n")), Status(200)),
        ("Basic".into(), with_headers(&format!("{host}Authorization: Basic YWRtaW46YWRtaW4=\r\n")), Status(401)),
        (
            "trailing garbage after the token".into(),
            with_headers(&format!("{host}Authorization: Bearer {token} x\r\n")),
            Status(401),
        ),
        ("token in a cookie".into(), with_headers(&format!("{host}Cookie: access_token={token}\r\n")), Status(401)),
        ("token in another header".into(), with_headers(&format!("{host}X-Auth-Token: {token}\r\n")), Status(401)),
        (
            "8 KiB token".into(),
            with_headers(&format!("{host}Authorization: Bearer {}\r\n", "a".repeat(9000))),
            Status(401),
        ),
        // Header abuse.
        ("20 KB header".into(), with_headers(&format!("{host}{auth}X-Big: {big}\r\n")), Status(431)),
        ("200 headers".into(), with_headers(&format!("{host}{auth}{many_headers}")), Status(431)),
        ("bad header name".into(), with_headers(&format!("{host}{auth}Bad Header: x\r\n")), Status(400)),
        ("obsolete line folding".into(), with_headers(&format!("{host}{auth}X-Fold: a\r\n b\r\n")), ClientError),
        ("NUL in a header value".into(), with_headers(&format!("{host}{auth}X-Nul: a\0b\r\n")), ClientError),
        // hyper frames such a request by Transfer-Encoding alone and ignores Content-Length (RFC 9112 §6.1),
        // so no two parsers can disagree on where it ends.
        (
            "Content-Length and Transfer-Encoding".into(),
            format!(
                "GET /SEP001122334455.cnf.xml HTTP/1.1\r\n{host}{auth}Content-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
            ),
            Status(200),
        ),
        (
            "two different Content-Lengths".into(),
            with_headers(&format!("{host}{auth}Content-Length: 1\r\nContent-Length: 2\r\n")),
            ClientError,
        ),
        ("negative Content-Length".into(), with_headers(&format!("{host}{auth}Content-Length: -1\r\n")), ClientError),
        (
            "bad chunk".into(),
            format!(
                "POST /oauth/token HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\nzz\r\n"
            ),
            ClientError,
        ),
        ("Expect 100-continue".into(), with_headers(&format!("{host}{auth}Expect: 100-continue\r\n")), Status(200)),
        ("Range".into(), with_headers(&format!("{host}{auth}Range: bytes=0-10\r\n")), Status(200)),
        (
            "huge If-None-Match".into(),
            with_headers(&format!("{host}{auth}If-None-Match: {}\r\n", "\"x\", ".repeat(1000))),
            Status(200),
        ),
        // Methods and versions.
        (
            "POST".into(),
            format!(
                "POST /SEP001122334455.cnf.xml HTTP/1.1\r\n{host}{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            Status(405),
        ),
        (
            "PUT".into(),
            format!(
                "PUT /SEP001122334455.cnf.xml HTTP/1.1\r\n{host}{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            Status(405),
        ),
        (
            "DELETE".into(),
            format!("DELETE /SEP001122334455.cnf.xml HTTP/1.1\r\n{host}{auth}Connection: close\r\n\r\n"),
            Status(405),
        ),
        (
            "TRACE".into(),
            format!("TRACE /SEP001122334455.cnf.xml HTTP/1.1\r\n{host}{auth}Connection: close\r\n\r\n"),
            Status(405),
        ),
        ("PROPFIND".into(), format!("PROPFIND / HTTP/1.1\r\n{host}{auth}Connection: close\r\n\r\n"), Status(405)),
        (
            "method in lower case".into(),
            format!("get /SEP001122334455.cnf.xml HTTP/1.1\r\n{host}{auth}Connection: close\r\n\r\n"),
            Status(405),
        ),
        ("2000-character method".into(), long_method, ClientError),
        ("HTTP/1.2".into(), format!("GET /SEP001122334455.cnf.xml HTTP/1.2\r\n{host}{auth}\r\n"), ClientError),
        ("HTTP/2.0 on an HTTP/1 connection".into(), format!("GET / HTTP/2.0\r\n{host}\r\n"), ClientError),
        ("HTTP/0.9".into(), "GET /SEP001122334455.cnf.xml\r\n\r\n".into(), ClientError),
        ("garbage request line".into(), "\u{1}\u{2}\u{3} nonsense\r\n\r\n".into(), ClientError),
        (
            "token endpoint with a JSON body".into(),
            format!(
                "POST /oauth/token HTTP/1.1\r\n{host}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            ),
            Status(400),
        ),
        (
            "token endpoint with a 100 KB body".into(),
            format!(
                "POST /oauth/token HTTP/1.1\r\n{host}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n{}",
                "a".repeat(100_000)
            ),
            Status(400),
        ),
    ];
    for (name, t, status) in attacker_tokens(&token) {
        cases.push((
            format!("token: {name}"),
            with_headers(&format!("{host}Authorization: Bearer {t}\r\n")),
            Status(status),
        ));
    }
    assert!(cases.len() >= 80, "{} cases", cases.len());

    let mut failures = Vec::new();
    for (name, request, expect) in &cases {
        let got = raw(server.addr, request.as_bytes()).await;
        let ok = match (expect, got) {
            (Status(want), Some(s)) => *want == s,
            (ClientError, Some(s)) => (400..500).contains(&s),
            (ClientError, None) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    // And the server still serves an honest phone.
    assert_eq!(server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await.status, StatusCode::OK);
    eprintln!("{} hostile requests answered as expected", cases.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_abuse_is_refused_without_harm() {
    let server = hostile_server().await;
    let addr = server.addr;
    // Plain HTTP, garbage and nothing at all on the TLS port: closed, no HTTP answer.
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0][..],
        &[0u8; 512][..],
        &[][..],
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the server closed the connection (handshake timeout at most)");
        assert!(!String::from_utf8_lossy(&out).contains("HTTP/1.1 200"));
    }
    // TLS below 1.2 and an unknown ALPN protocol are refused at the handshake.
    let s_client = |args: &'static [&'static str]| {
        let addr = addr.to_string();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("timeout")
                .args(["10", "openssl", "s_client", "-connect", &addr, "-servername", "localhost"])
                .args(["-CAfile", repo().join("certs-example/ca.pem").to_str().unwrap()])
                .args(args)
                .stdin(std::process::Stdio::null())
                .output()
                .unwrap();
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        })
    };
    // The same tool does complete a TLS 1.3 handshake, so a refusal below is the server's.
    let ok = s_client(&["-tls1_3"]).await.unwrap();
    assert!(ok.contains("Verify return code: 0 (ok)") && !ok.contains("Cipher is (NONE)"), "{ok}");
    for args in [
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"][..],
        &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"][..],
        &["-alpn", "spdy/3.1", "-tls1_3"][..],
    ] {
        let out = s_client(args).await.unwrap();
        assert!(out.contains("Cipher is (NONE)") || out.contains("alert"), "{args:?} was accepted:\n{out}");
    }
    let token = server.token("device:SEP001122334455");
    assert_eq!(server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn http2_rapid_reset_and_stream_floods_do_not_stop_honest_phones() {
    let server = hostile_server().await;
    let token = server.token("device:SEP001122334455");
    let connect = || async {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(common::tls_client_config(b"h2")));
        let stream = tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        let (client, conn) = h2::client::handshake(stream).await.unwrap();
        let conn = tokio::spawn(conn);
        (client, conn)
    };
    let request = || {
        http::Request::builder()
            .uri("https://localhost/SEP001122334455.cnf.xml")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
    };

    // Rapid reset (CVE-2023-44487): open streams and cancel them at once, many times.
    let (client, conn) = connect().await;
    let mut client = client.ready().await.unwrap();
    let mut sent = 0;
    let started = Instant::now();
    while sent < 5000 && started.elapsed() < Duration::from_secs(10) {
        match client.send_request(request(), true) {
            Ok((response, _)) => {
                drop(response);
                sent += 1;
            }
            Err(_) => break,
        }
        match client.ready().await {
            Ok(c) => client = c,
            Err(_) => break,
        }
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(closed.is_ok(), "the server ends an abusive connection (GOAWAY) after {sent} resets");

    // A client that opens more streams than the server allows, before even reading its SETTINGS, gets
    // refused streams and then loses the connection ("too many internal resets")...
    let (mut client, conn) = connect().await;
    let mut responses = Vec::new();
    for _ in 0..300 {
        client = client.ready().await.unwrap();
        let (response, _) = client.send_request(request(), true).unwrap();
        responses.push(response);
    }
    for r in responses {
        let _ = r.await;
    }
    assert!(tokio::time::timeout(Duration::from_secs(10), conn).await.is_ok(), "the flooding connection is closed");

    // ...while one that respects the limit (it has read the SETTINGS) gets every stream answered.
    let (mut client, _conn) = connect().await;
    client = client.ready().await.unwrap();
    let (first, _) = client.send_request(request(), true).unwrap();
    assert_eq!(first.await.unwrap().status(), StatusCode::OK);
    let mut responses = Vec::new();
    for _ in 0..300 {
        client = client.ready().await.unwrap();
        let (response, _) = client.send_request(request(), true).unwrap();
        responses.push(response);
    }
    let mut ok = 0;
    let mut errors = Vec::new();
    for r in responses {
        match r.await {
            Ok(r) if r.status() == StatusCode::OK => ok += 1,
            Ok(r) => errors.push(format!("{}", r.status())),
            Err(e) => errors.push(e.to_string()),
        }
    }
    errors.dedup();
    eprintln!("h2 flood: {ok} ok, errors {errors:?}");
    assert_eq!(ok, 300, "{ok} of 300 streams answered");

    // A header list over the limit is refused, not served.
    let (client, _conn) = connect().await;
    let mut client = client.ready().await.unwrap();
    let big = http::Request::builder()
        .uri("https://localhost/SEP001122334455.cnf.xml")
        .header("authorization", format!("Bearer {token}"))
        .header("x-big", "a".repeat(40_000))
        .body(())
        .unwrap();
    let answer = match client.send_request(big, true) {
        Ok((r, _)) => r.await.map(|r| r.status()).ok(),
        Err(_) => None,
    };
    assert_ne!(answer, Some(StatusCode::OK));

    assert_eq!(server.h2_client().get("/SEP001122334455.cnf.xml", Some(&token)).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_a_thousand_idle_connections_cannot_stop_an_honest_phone() {
    let server = hostile_server().await;
    let token = server.token("device:SEP001122334455");
    let mut idle = Vec::new();
    // 1,000 connections that never complete a TLS handshake.
    for _ in 0..1000 {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // 50 slowloris clients: TLS done, then request headers one byte at a time.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let mut s = tls().connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
        slow.push(tokio::spawn(async move {
            for b in b"GET /SEP001122334455.cnf.xml HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".iter().cycle().take(200) {
                if s.write_all(&[*b]).await.is_err() {
                    return true; // the server cut us off
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        }));
    }
    // An honest phone, meanwhile, downloads at once, repeatedly.
    for _ in 0..10 {
        let started = Instant::now();
        let r = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(2), "an honest download took {:?}", started.elapsed());
    }
    let mut cut = 0;
    for s in slow {
        if s.await.unwrap() {
            cut += 1;
        }
    }
    assert_eq!(cut, 50, "every slowloris client is cut off by the header timeout");
    // The idle connections were closed by the handshake timeout.
    let mut closed = 0;
    for mut c in idle {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 1000);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let server = hostile_server().await;
    let token = server.token("device:SEP001122334455");
    let auth = format!("Bearer {token}");
    let mut conn = server.client().connect().await.unwrap();
    assert_eq!(conn.send("GET", "/SEP001122334455.cnf.xml", &[("authorization", &auth)]).await.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_secs(3)).await; // idle_timeout_secs = 2
    assert!(conn.try_send("GET", "/SEP001122334455.cnf.xml", &[("authorization", &auth)]).await.is_err());
}

#[tokio::test]
async fn failed_authentication_is_rate_limited_per_address() {
    let mut config = common::example_config();
    config.server.max_failed_auth = 5;
    let server = TestServer::with_config(config).await;
    let good = server.token("device:SEP001122334455");
    // Honest downloads never count.
    for _ in 0..20 {
        assert_eq!(server.client().get("/SEP001122334455.cnf.xml", Some(&good)).await.status, StatusCode::OK);
    }
    for _ in 0..5 {
        assert_eq!(
            server.client().get("/SEP001122334455.cnf.xml", Some("x.y.z")).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let r = server.client().get("/SEP001122334455.cnf.xml", Some("x.y.z")).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_max_connections_clients_wait_and_are_served_once_a_slot_frees() {
    let mut config = common::example_config();
    config.server.max_connections = 5;
    config.server.tls_handshake_timeout_secs = 1;
    let server = TestServer::with_config(config).await;
    let token = server.token("device:SEP001122334455");
    // Five connections that never handshake hold every slot until the handshake timeout drops them.
    let mut holders = Vec::new();
    for _ in 0..5 {
        holders.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let r = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK, "the sixth client waited in the backlog and was then served");
    assert!(started.elapsed() >= Duration::from_millis(500), "it did wait for a slot: {:?}", started.elapsed());
    drop(holders);
}
