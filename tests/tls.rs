//! The phone listener's TLS policy as a client sees it: the suite the server picks, and resumption on or off.

mod common;

use std::sync::Arc;

use common::{TempDeployment, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One TLS connection with one request; the handshake kind and suite, and the status line.
async fn fetch(
    client: Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    token: &str,
) -> (Option<rustls::HandshakeKind>, Option<rustls::CipherSuite>, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.unwrap();
    let req = format!(
        "GET /SEP001122334455.cnf.xml HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    let conn = tls.get_ref().1;
    let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
    (conn.handshake_kind(), suite, String::from_utf8_lossy(&out).lines().next().unwrap_or("").to_owned())
}

#[tokio::test]
async fn the_server_picks_aes_128_gcm_sha256_whatever_the_client_prefers() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    // rustls clients, like OpenSSL's, list AES-256-GCM-SHA384 first.
    let client = Arc::new(common::tls_client_config(b"http/1.1"));
    let (_, suite, status) = fetch(client, server.addr, &token).await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
}

#[tokio::test]
async fn sessions_resume_by_default_and_never_when_resumption_is_off() {
    let d = TempDeployment::new();
    let server = TestServer::with_config(d.config()).await;
    let token = server.token("device:SEP001122334455");
    let client = Arc::new(common::tls_client_config(b"http/1.1"));
    let (first, _, status) = fetch(client.clone(), server.addr, &token).await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(first, Some(rustls::HandshakeKind::Full));
    let (second, _, _) = fetch(client, server.addr, &token).await;
    assert_eq!(second, Some(rustls::HandshakeKind::Resumed), "one ticket is enough for the next connection");
    server.shutdown().await;

    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "[tls]\n", "[tls]\nresumption = false\n");
    let server = TestServer::with_config(d.config()).await;
    let client = Arc::new(common::tls_client_config(b"http/1.1"));
    for _ in 0..2 {
        let (kind, _, status) = fetch(client.clone(), server.addr, &token).await;
        assert!(status.contains("200"), "{status}");
        assert_eq!(kind, Some(rustls::HandshakeKind::Full), "resumption = false: every connection is a full handshake");
    }
}

#[test]
fn a_session_cache_of_zero_entries_is_refused() {
    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "[tls]\n", "[tls]\nsession_cache_entries = 0\n");
    let err = sipcfg::config::Config::load(&d.path("example/sipcfg.toml")).unwrap_err().to_string();
    assert!(err.contains("tls.session_cache_entries"), "{err}");
}
