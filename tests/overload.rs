//! Past capacity, gracefully (issue 17.2): `server.max_in_flight` bounds TLS handshakes in progress and
//! requests being served. Past it a new connection is reset before its handshake, and a request on an
//! established connection gets 503 with `Retry-After` without its token being looked at; once the work in
//! flight ends, service is whole again.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::TestServer;
use common::phone::within;
use http::StatusCode;
use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const FILE: &str = "/SEP001122334455.cnf.xml";

/// A TLS connection that sends the head of a token request and only part of its body: its request holds a
/// slot of the bound while the handler waits for the rest.
async fn slow_request(addr: std::net::SocketAddr) -> impl Drop {
    let tls = tokio_rustls::TlsConnector::from(Arc::new(common::tls_client_config(b"http/1.1")));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut stream = tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    stream
        .write_all(
            b"POST /oauth/token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 100\r\n\r\ngrant_type",
        )
        .await
        .unwrap();
    stream.flush().await.unwrap();
    Holder(Some(Box::new(stream)))
}

/// A TCP connection that starts a TLS handshake (the first 5 bytes of a ClientHello's record, announcing
/// 512 bytes) and never finishes it: it holds a handshake slot until the handshake timeout or its close.
async fn stalled_handshake(addr: std::net::SocketAddr) -> impl Drop {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).await.unwrap();
    Holder(Some(Box::new(tcp)))
}

struct Holder(Option<Box<dyn Send>>);

impl Drop for Holder {
    fn drop(&mut self) {
        self.0.take();
    }
}

async fn in_flight(server: &TestServer) -> f64 {
    server.metrics().await.get("sipcfg_in_flight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_bound_requests_get_503_and_new_connections_are_reset_until_the_work_ends() {
    let mut config = common::example_config();
    config.server.max_in_flight = Some(2);
    config.server.tls_handshake_timeout_secs = 5;
    let server = TestServer::with_config(config).await;
    let token = server.token("device:SEP001122334455");
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str())];

    // A phone connected while the server had room.
    let mut phone = server.client().connect().await.unwrap();
    assert_eq!(phone.send("GET", FILE, &headers).await.status, StatusCode::OK);
    assert_eq!(in_flight(&server).await, 0.0);

    // Fill the bound: one request waiting for its body, one handshake waiting for its ClientHello's rest.
    let request = slow_request(server.addr).await;
    let handshake = stalled_handshake(server.addr).await;
    let full =
        within(Duration::from_secs(5), Duration::from_millis(20), || async { in_flight(&server).await == 2.0 }).await;
    assert!(full.is_some(), "two units of work in flight:\n{}", server.metrics().await.0);

    // The kept connection's request is refused before any work, and told when to come back.
    let r = phone.send("GET", FILE, &headers).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    let retry: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=3).contains(&retry), "Retry-After {retry}");
    // A request without any token is refused the same way: nothing of it is looked at.
    assert_eq!(phone.send("GET", FILE, &[]).await.status, StatusCode::SERVICE_UNAVAILABLE);

    // A new connection is reset before its handshake.
    let refused = server.client().connect().await;
    assert!(refused.is_err(), "a new connection past the bound must not get a handshake");

    let m = server.metrics().await;
    assert_eq!(m.get("sipcfg_in_flight_limit"), 2.0);
    assert_eq!(m.get("sipcfg_in_flight_handshakes"), 1.0);
    assert_eq!(m.get("sipcfg_shed_total{reason=\"in-flight-at-bound\"}"), 2.0);
    assert!(m.get("sipcfg_shed_total{reason=\"handshakes-at-bound\"}") >= 1.0, "{}", m.0);
    assert_eq!(m.get("sipcfg_http_requests_total{listener=\"https\",kind=\"device-config\",code=\"503\"}"), 2.0);

    // The work in flight ends (the clients go away): full service again, on the kept connection and on new
    // ones, without waiting for any timeout.
    drop(request);
    drop(handshake);
    let back =
        within(Duration::from_secs(2), Duration::from_millis(20), || async { in_flight(&server).await == 0.0 }).await;
    assert!(back.is_some(), "the slots come back once their clients are gone:\n{}", server.metrics().await.0);
    assert_eq!(phone.send("GET", FILE, &headers).await.status, StatusCode::OK);
    assert_eq!(server.client().get(FILE, Some(&token)).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_take_at_most_three_quarters_of_the_bound_so_connected_phones_keep_being_served() {
    let mut config = common::example_config();
    config.server.max_in_flight = Some(4);
    config.server.tls_handshake_timeout_secs = 1;
    let server = TestServer::with_config(config).await;
    let token = server.token("device:SEP001122334455");
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str())];
    let mut phone = server.client().connect().await.unwrap();

    // Three stalled handshakes hold the handshakes' share (3 of 4); a fourth new connection is reset.
    let holders = [
        stalled_handshake(server.addr).await,
        stalled_handshake(server.addr).await,
        stalled_handshake(server.addr).await,
    ];
    let full = within(Duration::from_secs(5), Duration::from_millis(20), || async {
        server.metrics().await.get("sipcfg_in_flight_handshakes") == 3.0
    })
    .await;
    assert!(full.is_some(), "{}", server.metrics().await.0);
    assert!(server.client().connect().await.is_err(), "the handshakes' share is full");
    // The quarter kept for requests serves the phone already connected.
    assert_eq!(phone.send("GET", FILE, &headers).await.status, StatusCode::OK);

    // The handshake timeout frees the stalled handshakes' slots even while their clients stay.
    let freed = within(Duration::from_secs(3), Duration::from_millis(50), || async {
        server.metrics().await.get("sipcfg_in_flight_handshakes") == 0.0
    })
    .await;
    assert!(freed.is_some(), "{}", server.metrics().await.0);
    assert_eq!(server.client().get(FILE, Some(&token)).await.status, StatusCode::OK);
    drop(holders);
}

/// The example's configuration `text` with `key = value` added to its `[server]` section, written to `file`
/// and loaded.
fn with_server_key(
    file: &std::path::Path,
    text: &str,
    key: &str,
    value: &str,
) -> Result<sipcfg::config::Config, String> {
    let edited = text.replacen("[server]\n", &format!("[server]\n{key} = {value}\n"), 1);
    assert_ne!(edited, text, "the example has a [server] section");
    std::fs::write(file, &edited).unwrap();
    sipcfg::config::Config::load(file).map_err(|e| e.to_string())
}

#[test]
fn max_in_flight_out_of_range_is_refused_naming_the_key() {
    let d = common::TempDeployment::new();
    let file = d.path("example/sipcfg.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let with = |value: &str| with_server_key(&file, &text, "max_in_flight", value);
    let err = with("0").unwrap_err();
    assert!(err.contains("server.max_in_flight"), "{err}");
    let config = with("3000").unwrap();
    assert_eq!(config.server.max_in_flight(), 3000);
    let default = sipcfg::config::ServerConfig::default();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert_eq!(default.max_in_flight(), sipcfg::config::DEFAULT_IN_FLIGHT_PER_CPU * cpus);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_say_nothing_hold_no_share_of_the_bound() {
    let mut config = common::example_config();
    config.server.max_in_flight = Some(2);
    config.server.tls_handshake_timeout_secs = 5;
    let server = TestServer::with_config(config).await;
    let token = server.token("device:SEP001122334455");
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(in_flight(&server).await, 0.0, "{}", server.metrics().await.0);
    assert_eq!(server.client().get(FILE, Some(&token)).await.status, StatusCode::OK);
    drop(silent);
}

/// `server.worker_threads = 1` runs tokio's single-threaded scheduler: phones are served over HTTP/1.1 and
/// HTTP/2 at once (the listener's sweeper thread and the blocking pool hand work to that one thread), and
/// SIGTERM still stops it cleanly. Out of range, the key is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_serves_both_protocols_and_stops() {
    let d = common::TempDeployment::new();
    let file = d.path("example/sipcfg.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let with = |value: &str| with_server_key(&file, &text, "worker_threads", value);
    let err = with("0").unwrap_err();
    assert!(err.contains("server.worker_threads"), "{err}");
    let config = with("1").unwrap();
    assert_eq!(config.server.worker_threads(), 1);
    let signer = sipcfg::auth::signer::Signer::from_config(&config.auth).unwrap();
    let token = signer.mint(&common::subject_of("device:SEP001122334455"), 600).unwrap();

    let served = common::ServeProcess::start(&file, "info").await;
    let h2 = common::Client::tls_with(served.addr, common::tls_client_config(b"h2"), true);
    let fetches: Vec<_> = (0..40)
        .map(|i| {
            let (client, token) = (if i % 2 == 0 { served.client() } else { h2.clone() }, token.clone());
            tokio::spawn(async move { client.get(FILE, Some(&token)).await.status })
        })
        .collect();
    for f in fetches {
        assert_eq!(f.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(served.client().get(FILE, None).await.status, StatusCode::UNAUTHORIZED);
    let metrics = served.metrics().await;
    assert!(metrics.0.contains("sipcfg_http_requests_total"), "{}", metrics.0);
    served.stop();
}
