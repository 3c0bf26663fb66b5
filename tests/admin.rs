//! The admin listener: `/metrics` moves as phones are served, `/healthz`, `/readyz` (ready when serving,
//! 503 while draining and when the server certificate is about to expire), and its address never a phone
//! port. Also: every request yields exactly one access line.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Metrics, TempDeployment, TestServer};
use http::StatusCode;
use rustls_pki_types::ServerName;
use sipcfg::config::{Config, ConfigError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PHONE: &str = "/SEP001122334455.cnf.xml";
const OTHER_PHONE: &str = "/SEP001122334466.cnf.xml";
const GRANT: &str = "urn:sipcfg:grant-type:activation-code";

/// Scrapes until `series` reaches `want` (connections are counted when the server notices a close).
async fn until(server: &TestServer, series: &str, want: f64) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = server.metrics().await;
        if m.get(series) == want || Instant::now() > deadline {
            assert_eq!(m.get(series), want, "{series}");
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Scrapes until the cache counters stop moving (a background pre-render may still be filling the cache).
async fn quiet_cache(server: &TestServer) -> Metrics {
    let mut last = server.metrics().await;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = server.metrics().await;
        let key = |m: &Metrics| (m.get("sipcfg_cache_misses_total"), m.get("sipcfg_cache_hits_total"));
        if key(&now) == key(&last) {
            return now;
        }
        last = now;
    }
    panic!("the cache counters never settled");
}

fn delta(before: &Metrics, after: &Metrics, series: &str) -> f64 {
    after.get(series) - before.get(series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_requests_are_answered() {
    let server = TestServer::start().await;
    let client = server.client();
    let token = server.token("device:SEP001122334455");
    let before = server.metrics().await;
    assert!(before.has("# HELP sipcfg_http_requests_total"), "{}", before.0);

    assert_eq!(client.get(PHONE, Some(&token)).await.status, StatusCode::OK);
    assert_eq!(client.get(PHONE, Some(&token)).await.status, StatusCode::OK);
    assert_eq!(client.get(OTHER_PHONE, Some(&token)).await.status, StatusCode::FORBIDDEN);
    assert_eq!(client.get(PHONE, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(client.get(PHONE, Some("not.a.token")).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(client.get("/RingList.xml", Some(&token)).await.status, StatusCode::OK);
    assert_eq!(server.legacy_client().get("/RingList.xml", None).await.status, StatusCode::OK);
    assert_eq!(client.get("/.well-known/jwks.json", None).await.status, StatusCode::OK);
    let after = server.metrics().await;

    let requests = |listener: &str, kind: &str, code: u16| {
        format!("sipcfg_http_requests_total{{listener=\"{listener}\",kind=\"{kind}\",code=\"{code}\"}}")
    };
    for (series, want) in [
        (requests("https", "device-config", 200), 2.0),
        (requests("https", "device-config", 403), 1.0),
        (requests("https", "device-config", 401), 2.0),
        (requests("https", "common", 200), 1.0),
        (requests("http", "common", 200), 1.0),
        (requests("https", "jwks", 200), 1.0),
        ("sipcfg_refusals_total{reason=\"not-own\"}".into(), 1.0),
        ("sipcfg_refusals_total{reason=\"no-token\"}".into(), 1.0),
        ("sipcfg_refusals_total{reason=\"token-malformed\"}".into(), 1.0),
        // One connection, hence one handshake, per request on the TLS listener; none on plain HTTP.
        ("sipcfg_tls_handshakes_total{listener=\"https\"}".into(), 7.0),
        ("sipcfg_tls_handshakes_total{listener=\"http\"}".into(), 0.0),
    ] {
        assert_eq!(delta(&before, &after, &series), want, "{series}\n{}", after.0);
    }
    assert!(after.get("sipcfg_inventory_devices") > 10.0);
    assert!(after.get("sipcfg_inventory_users") >= 1.0);
    assert!(after.get("sipcfg_inventory_profiles") >= 1.0);
    assert!(after.get("sipcfg_cache_entries") >= 1.0);
    assert!(after.get("sipcfg_cache_size_bytes") > 1000.0);
    assert!(after.get("sipcfg_render_duration_seconds_count") >= 1.0);
    assert_eq!(after.get("sipcfg_ready"), 1.0);
    assert!(after.get("sipcfg_certificate_expiry_timestamp_seconds{certificate=\"server\"}") > common::now() as f64);
    assert!(
        after.get("sipcfg_certificate_expiry_timestamp_seconds{certificate=\"phone-edge-trust\"}") > 0.0,
        "the example has a Phone-Edge-Trust CA"
    );
    assert!(after.has("sipcfg_build_info{version="));
    // Every answered request is timed, by listener and kind.
    let timed = after.get("sipcfg_http_request_duration_seconds_count{listener=\"https\",kind=\"device-config\"}");
    assert!(timed >= 1.0, "{}", after.0);
    assert_eq!(
        after.get("sipcfg_http_request_duration_seconds_bucket{listener=\"https\",kind=\"device-config\",le=\"+Inf\"}"),
        timed
    );
    assert!(after.get("sipcfg_http_request_duration_seconds_sum{listener=\"https\",kind=\"device-config\"}") > 0.0);
    // The standard process metrics, as every exporter names them.
    assert!(after.get("process_resident_memory_bytes") > 1e6);
    assert!(after.get("process_open_fds") >= 1.0 && after.get("process_max_fds") >= after.get("process_open_fds"));
    assert!(after.has("process_cpu_seconds_total "));
    for line in after.0.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("sipcfg_") || line.starts_with("process_"), "{line}");
        assert!(!line.contains("SEP0011") && !line.contains("/"), "a device name or path became a label: {line}");
    }

    // The cache: the first XMLDefault is rendered, the second is a hit; a file already rendered is a hit.
    let before = quiet_cache(&server).await;
    for _ in 0..2 {
        assert_eq!(client.get("/XMLDefault.cnf.xml", Some(&token)).await.status, StatusCode::OK);
    }
    assert_eq!(client.get(PHONE, Some(&token)).await.status, StatusCode::OK);
    let after = server.metrics().await;
    assert_eq!(delta(&before, &after, "sipcfg_cache_misses_total"), 1.0, "{}", after.0);
    assert_eq!(delta(&before, &after, "sipcfg_cache_hits_total"), 2.0, "{}", after.0);
    assert_eq!(delta(&before, &after, "sipcfg_render_duration_seconds_count"), 1.0);

    // A handshake that fails: plain HTTP sent to the TLS port.
    let before = after;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let _ = tcp.read(&mut [0u8; 64]).await;
    let after = until(
        &server,
        "sipcfg_tls_handshake_failures_total{listener=\"https\",reason=\"error\"}",
        before.get("sipcfg_tls_handshake_failures_total{listener=\"https\",reason=\"error\"}") + 1.0,
    )
    .await;
    assert_eq!(delta(&before, &after, "sipcfg_tls_handshakes_total{listener=\"https\"}"), 0.0);

    // Open connections: one held open is counted until it closes.
    drop(tcp);
    until(&server, "sipcfg_open_connections{listener=\"https\"}", 0.0).await;
    let mut held = client.connect().await.unwrap();
    until(&server, "sipcfg_open_connections{listener=\"https\"}", 1.0).await;
    let auth = format!("Bearer {token}");
    assert_eq!(held.send("GET", PHONE, &[("authorization", auth.as_str())]).await.status, StatusCode::OK);
    drop(held);
    until(&server, "sipcfg_open_connections{listener=\"https\"}", 0.0).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_service_and_reload_metrics() {
    let d = TempDeployment::new();
    let server = TestServer::with_config(d.config()).await;
    let client = server.client();
    let service = server.app.token_service().cloned().unwrap();
    let device = sipcfg::provision::filename::DeviceName::parse_canonical("SEP001122334455").unwrap();
    let (_, code) = service.create_activation_code(&device, common::now(), 86_400).await.unwrap();
    let before = server.metrics().await;

    let r = client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let tokens: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let again = client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    let r = client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let tokens: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let r = client.post_form("/oauth/token", &[("grant_type", "password")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = client.post_form("/oauth/revoke", &[("token", tokens["refresh_token"].as_str().unwrap())]).await;
    assert_eq!(r.status, StatusCode::OK);
    let after = server.metrics().await;
    for (series, want) in [
        ("sipcfg_token_grants_total{grant_type=\"activation_code\",outcome=\"issued\"}", 1.0),
        ("sipcfg_token_grants_total{grant_type=\"activation_code\",outcome=\"refused\"}", 1.0),
        ("sipcfg_token_grants_total{grant_type=\"refresh_token\",outcome=\"issued\"}", 1.0),
        ("sipcfg_token_grants_total{grant_type=\"other\",outcome=\"refused\"}", 1.0),
        ("sipcfg_activation_codes_redeemed_total", 1.0),
        ("sipcfg_token_refreshes_total", 1.0),
        ("sipcfg_token_revocations_total", 1.0),
        ("sipcfg_http_requests_total{listener=\"https\",kind=\"oauth-token\",code=\"200\"}", 2.0),
        ("sipcfg_http_requests_total{listener=\"https\",kind=\"oauth-token\",code=\"400\"}", 2.0),
        ("sipcfg_http_requests_total{listener=\"https\",kind=\"oauth-revoke\",code=\"200\"}", 1.0),
        ("sipcfg_refusals_total{reason=\"invalid_grant\"}", 1.0),
    ] {
        assert_eq!(delta(&before, &after, series), want, "{series}\n{}", after.0);
    }

    // Reloads: a good one and a refused one.
    let generation = after.get("sipcfg_deployment_generation");
    d.edit("example/inventory.toml", "display_name = \"John Smith\"", "display_name = \"John Smith 2\"");
    assert!(server.reload_logged().await);
    d.append("example/inventory.toml", "\n[devices.BROKEN\n");
    assert!(!server.reload_logged().await);
    let reloaded = server.metrics().await;
    assert_eq!(delta(&after, &reloaded, "sipcfg_reloads_total{outcome=\"success\"}"), 1.0);
    assert_eq!(delta(&after, &reloaded, "sipcfg_reloads_total{outcome=\"failure\"}"), 1.0);
    assert_eq!(reloaded.get("sipcfg_deployment_generation"), generation + 1.0);
    let last = reloaded.get("sipcfg_reload_last_success_timestamp_seconds");
    assert!((last - common::now() as f64).abs() < 60.0, "{last}");
    server.shutdown().await;
}

#[tokio::test]
async fn healthz_readyz_and_the_rest() {
    let server = TestServer::start().await;
    let admin = server.admin_client();
    let r = admin.get("/healthz", None).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "ok\n"));
    let r = admin.get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.text().starts_with("ready\n"), "{}", r.text());
    assert!(r.text().contains("certificate: ok (server certificate"), "{}", r.text());
    let r = admin.send("GET", "/readyz", &[("accept", "application/json")]).await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(json["ready"], true);
    let names: Vec<&str> = json["checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["inventory", "certificate", "draining", "files"]);
    assert_eq!(json["degraded"], false);
    let r = admin.get("/metrics", None).await;
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let r = admin.get("/SEP001122334455.cnf.xml", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "the admin listener serves no phone file");
    let r = admin.send("POST", "/metrics", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = admin.send("HEAD", "/readyz", &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    // The phone port does not answer the admin paths.
    let r = server.client().get("/metrics", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_at_once_while_open_requests_drain() {
    let d = TempDeployment::new();
    let size = 8 * 1024 * 1024;
    std::fs::write(d.path("example/files/sip88xx.bin"), vec![0x5au8; size]).unwrap();
    let mut server = TestServer::with_config(d.config()).await;
    let admin = server.admin_client();
    assert_eq!(admin.get("/readyz", None).await.status, StatusCode::OK);

    // A slow download holds its connection open through the shutdown.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(common::tls_client_config(b"http/1.1")));
    let mut download = tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let token = server.token("device:SEP001122334455");
    let request = format!("GET /sip88xx.bin HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
    download.write_all(request.as_bytes()).await.unwrap();
    let mut got = vec![0u8; 64 * 1024];
    let n = download.read(&mut got).await.unwrap();
    assert!(String::from_utf8_lossy(&got[..n]).starts_with("HTTP/1.1 200"));
    let mut received = n;

    server.begin_shutdown();
    let r = admin.get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert!(r.text().starts_with("not ready: draining\n"), "{}", r.text());
    assert_eq!(admin.get("/healthz", None).await.status, StatusCode::OK, "alive while draining");
    let m = server.metrics().await;
    assert_eq!((m.get("sipcfg_ready"), m.get("sipcfg_draining")), (0.0, 1.0));
    assert!(!server.is_finished(), "the download is still open");

    // Polled while the download goes on, readiness stays 503; then the download completes.
    let mut polls = 0;
    loop {
        match download.read(&mut got).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
        if polls < 20 {
            assert_eq!(admin.get("/readyz", None).await.status, StatusCode::SERVICE_UNAVAILABLE);
            polls += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert!(received > size, "the in-flight download was cut short: {received} bytes");
    assert!(polls >= 5, "readiness was polled during the drain only {polls} times");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.is_finished() {
        assert!(Instant::now() < deadline, "the server did not finish draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Once drained, the admin listener is closed too.
    assert!(admin.connect().await.is_err(), "the admin listener outlived the server");
    server.shutdown().await;
}

/// A server certificate for localhost issued by the example CA, valid from an hour ago for `hours` hours.
fn short_lived_cert(d: &TempDeployment, hours: i64) {
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(d.path("certs-example/ca-key.pem")).unwrap()).unwrap();
    let ca_pem = std::fs::read_to_string(d.path("certs-example/ca.pem")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "sipcfg short-lived");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::hours(hours);
    std::fs::write(d.path("certs-example/server.pem"), params.signed_by(&key, &issuer).unwrap().pem()).unwrap();
    std::fs::write(d.path("certs-example/server-key.pem"), key.serialize_pem()).unwrap();
}

#[tokio::test]
async fn a_server_certificate_about_to_expire_makes_readyz_503() {
    let d = TempDeployment::new();
    short_lived_cert(&d, 3);
    let server = TestServer::with_config(d.config()).await;
    // Phones are still served: the certificate is valid.
    let token = server.token("device:SEP001122334455");
    assert_eq!(server.client().get(PHONE, Some(&token)).await.status, StatusCode::OK);
    let r = server.admin_client().get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let text = r.text();
    assert!(text.starts_with("not ready: certificate\n"), "{text}");
    assert!(text.contains("server certificate CN=sipcfg short-lived expires at"), "{text}");
    assert!(text.contains("(in 2 h), within") || text.contains("(in 3 h), within"), "{text}");
    assert!(text.contains("within admin.cert_unready_days = 1"), "{text}");
    let m = server.metrics().await;
    let expiry = m.get("sipcfg_certificate_expiry_timestamp_seconds{certificate=\"server\"}");
    assert!((expiry - (common::now() + 3 * 3600) as f64).abs() < 120.0, "{expiry}");
    assert_eq!(m.get("sipcfg_ready"), 0.0);
    server.shutdown().await;

    // With cert_unready_days = 0, the same certificate is ready until it expires.
    let text = std::fs::read_to_string(d.path("example/sipcfg.toml")).unwrap();
    std::fs::write(d.path("example/sipcfg.toml"), text.replace("cert_unready_days = 1", "cert_unready_days = 0"))
        .unwrap();
    let server = TestServer::with_config(d.config()).await;
    let r = server.admin_client().get("/readyz", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    server.shutdown().await;
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    let d = common::repo().join("example/sipcfg.toml");
    Config::parse(&d, text)
}

fn with_admin(admin: &str) -> String {
    let example = std::fs::read_to_string(common::repo().join("example/sipcfg.toml")).unwrap();
    let start = example.find("[admin]").expect("the example has an [admin] section");
    let end = example[start + 1..].find("\n[").map_or(example.len(), |i| start + 1 + i);
    format!("{}[admin]\n{admin}\n{}", &example[..start], &example[end..])
}

#[test]
fn the_admin_address_is_never_a_phone_port() {
    let refused = |admin: &str, clash: &str| {
        let err = parse(&with_admin(admin)).expect_err(admin).to_string();
        assert!(err.contains("admin.listen") && err.contains(clash), "{admin}: {err}");
    };
    refused("listen = \"[::]:6971\"", "server.listen");
    refused("listen = \"127.0.0.1:6971\"", "server.listen"); // the phone port listens on every address
    refused("listen = \"0.0.0.0:6970\"", "legacy.listen");
    assert!(parse(&with_admin("enabled = false\nlisten = \"[::]:6971\"")).is_ok(), "off: its address is unused");
    assert!(parse(&with_admin("listen = \"127.0.0.1:9999\"")).is_ok());
    let config = parse(&with_admin("")).unwrap();
    assert!(config.admin.enabled);
    assert_eq!(config.admin.listen.to_string(), "127.0.0.1:9971");
    assert_eq!((config.admin.cert_warn_days, config.admin.cert_unready_days), (30, 1));
    for bad in ["cert_warn_days = 0", "cert_warn_days = 366", "cert_unready_days = 31", "cert_check_hours = 0"] {
        let err = parse(&with_admin(bad)).expect_err(bad).to_string();
        assert!(err.contains(&format!("admin.{}", bad.split(' ').next().unwrap())), "{bad}: {err}");
    }

    // `serve --listen` onto the admin address is refused before anything is bound.
    let out = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["serve", "--listen", "127.0.0.1:9971", "--config"])
        .arg(common::repo().join("example/sipcfg.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.listen") && stderr.contains("server.listen"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_yields_exactly_one_access_line() {
    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "listen = \"[::]:6970\"", "listen = \"127.0.0.1:0\"");
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (addr, admin) = (free(), free());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["serve", "--listen", &addr.to_string(), "--admin-listen", &admin.to_string(), "--config"])
        .arg(d.path("example/sipcfg.toml"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = common::Client::tls_to(addr);
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.connect().await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = TestServer::start().await.token("device:SEP001122334455");
    let auth = format!("Bearer {token}");
    let mut expected = vec![];
    let mut expect = |status: StatusCode, got: StatusCode| {
        assert_eq!(got, status);
        expected.push(status.as_u16());
    };
    expect(StatusCode::OK, client.get(PHONE, Some(&token)).await.status);
    expect(StatusCode::FORBIDDEN, client.get(OTHER_PHONE, Some(&token)).await.status);
    expect(StatusCode::UNAUTHORIZED, client.get(PHONE, None).await.status);
    expect(StatusCode::NOT_FOUND, client.get("/nothing-here.txt", Some(&token)).await.status);
    expect(
        StatusCode::METHOD_NOT_ALLOWED,
        client.send("DELETE", PHONE, &[("authorization", auth.as_str())]).await.status,
    );
    expect(StatusCode::OK, client.get("/.well-known/jwks.json", None).await.status);
    // Three requests on one kept-alive connection: three lines.
    let mut conn = client.connect().await.unwrap();
    for _ in 0..3 {
        expect(StatusCode::OK, conn.send("GET", PHONE, &[("authorization", auth.as_str())]).await.status);
    }
    drop(conn);
    // A head over server.max_header_bytes: hyper answers 431 itself; it is logged all the same.
    let huge = "x".repeat(20 * 1024);
    let r = client.connect().await.unwrap().try_send("GET", PHONE, &[("x-filler", huge.as_str())]).await;
    expect(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, r.map(|r| r.status).unwrap_or(StatusCode::OK));
    // An HTTP/2 stream reset while the handler waits for the rest of its body: its one line says 400
    // (the reset reached the handler as a broken body) or 499 (hyper dropped the handler first).
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(common::tls_client_config(b"h2")));
    let stream = tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let (h2_client, h2_conn) = h2::client::handshake(stream).await.unwrap();
    let h2_conn = tokio::spawn(h2_conn);
    let mut h2_client = h2_client.ready().await.unwrap();
    let post = http::Request::builder()
        .method("POST")
        .uri("https://localhost/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", "100")
        .body(())
        .unwrap();
    let (_response, mut body) = h2_client.send_request(post, false).unwrap();
    body.send_data(bytes::Bytes::from_static(b"grant_type="), false).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    body.send_reset(h2::Reason::CANCEL);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(h2_client);
    h2_conn.abort();
    // The admin listener's requests are not phone requests: no access line.
    let admin_client = common::Client::plain_to(admin);
    assert_eq!(admin_client.get("/metrics", None).await.status, StatusCode::OK);
    assert_eq!(admin_client.get("/readyz", None).await.status, StatusCode::OK);

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let audit = std::fs::read_to_string(d.path("example/state/audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (reset, lines): (Vec<_>, Vec<_>) = lines.into_iter().partition(|l| l["fields"]["path"] == "/oauth/token");
    assert_eq!(reset.len(), 1, "{audit}");
    assert_eq!(reset[0]["fields"]["method"], "POST");
    let reason = reset[0]["fields"]["reason"].as_str();
    assert!(matches!(reason, Some("bad-body" | "client-gone")), "{audit}");
    let mut statuses: Vec<u16> = lines.iter().map(|l| l["fields"]["status"].as_u64().unwrap() as u16).collect();
    statuses.sort_unstable();
    expected.sort_unstable();
    assert_eq!(statuses, expected, "{audit}");
    assert!(!audit.contains(&token), "a token reached the audit log");
    let too_large = lines.iter().find(|l| l["fields"]["status"] == 431).unwrap();
    assert_eq!(too_large["fields"]["reason"], "header-too-large");
    assert!(too_large["fields"]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
}

/// A request body that never arrives.
struct Stalled;

impl http_body::Body for Stalled {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn a_request_dropped_before_its_answer_is_counted_as_client_gone() {
    use sipcfg::app::channel::Channel;
    use sipcfg::ops::metrics::FileKind;
    let server = TestServer::start().await;
    let request = http::Request::builder()
        .method("POST")
        .uri("/oauth/token")
        .header("host", "localhost")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Stalled)
        .unwrap();
    let conn = sipcfg::server::phone::Connection::default();
    let peer = "127.0.0.1:40000".parse().unwrap();
    // What hyper does when the client resets the stream while the handler waits: drops the handler.
    let handler = sipcfg::server::phone::handle(&server.app, &server.monitor, peer, Channel::Https, request, &conn);
    assert!(tokio::time::timeout(Duration::from_millis(100), handler).await.is_err(), "the body never came");
    assert_eq!(server.monitor.metrics.requests(Channel::Https, FileKind::OauthToken, 499), 1);
    let metrics = server.metrics().await;
    assert_eq!(metrics.get("sipcfg_refusals_total{reason=\"client-gone\"}"), 1.0);
}
