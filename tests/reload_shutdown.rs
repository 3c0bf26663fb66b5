//! Reload under load (no request fails, a broken deployment is refused, a new certificate takes effect)
//! and shutdown under load (SIGTERM lets in-flight downloads finish, then exit 0).

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{TempDeployment, TestServer};
use http::StatusCode;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server certificate for localhost issued by the example CA (its key is in certs-example/).
fn new_server_cert(d: &TempDeployment) -> (String, String) {
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(d.path("certs-example/ca-key.pem")).unwrap()).unwrap();
    let ca_pem = std::fs::read_to_string(d.path("certs-example/ca.pem")).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost reloaded");
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    (params.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
}

/// The certificate the server presents to a new connection.
async fn presented_certificate(addr: std::net::SocketAddr) -> Vec<u8> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(common::tls_client_config(b"http/1.1")));
    let stream = tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request() {
    let d = TempDeployment::new();
    let mut server = TestServer::with_config(d.config()).await;
    server.watch_files();
    let token = server.token("user:jsmith");
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for i in 0..4 {
        let (client, token, stop, served, failed) =
            (server.client(), token.clone(), stop.clone(), served.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let path = if i % 2 == 0 { "/SEP001122334455.cnf.xml" } else { "/CSFJSMITH.cnf.xml" };
            let auth = format!("Bearer {token}");
            // Half the clients keep their connection, half reconnect every time (as booting phones do).
            let mut kept = if i < 2 { client.connect().await.ok() } else { None };
            while !stop.load(Ordering::Relaxed) {
                let r = match &mut kept {
                    Some(conn) => conn.try_send("GET", path, &[("authorization", &auth)]).await,
                    None => Ok(client.send("GET", path, &[("authorization", &auth)]).await),
                };
                match r {
                    Ok(r) if r.status == StatusCode::OK && r.text().contains("</device>") => {
                        served.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let before_cert = presented_certificate(server.addr).await;
    let generation = || server.app.provisioner().current().generation;
    let wait_for = |want: u64| {
        let app = server.app.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while app.provisioner().current().generation < want && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            app.provisioner().current().generation
        }
    };

    // Ten inventory changes, each picked up while the load runs.
    let mut names = vec!["John Smith".to_owned()];
    for i in 0..10 {
        let next = format!("John Smith {i}");
        d.edit(
            "example/inventory.toml",
            &format!("display_name = \"{}\"", names.last().unwrap()),
            &format!("display_name = \"{next}\""),
        );
        names.push(next);
        let want = generation() + 1;
        assert!(wait_for(want).await >= want, "reload {i} was not picked up");
    }
    // A broken inventory is refused and the last good one keeps serving.
    let good_generation = generation();
    d.append("example/inventory.toml", "\n[devices.BROKEN\n");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(generation(), good_generation, "a broken inventory was put in force");
    let r = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert!(r.text().contains("John Smith 9"), "the last good inventory serves");
    d.edit("example/inventory.toml", "\n[devices.BROKEN\n", "\n");
    assert!(wait_for(good_generation + 1).await > good_generation);

    // A new certificate (same key file paths): new connections get it, no restart.
    let (cert, key) = new_server_cert(&d);
    let (cert_path, key_path) = (d.path("certs-example/server.pem"), d.path("certs-example/server-key.pem"));
    sipcfg::util::fsutil::atomic_write(&key_path, key.as_bytes()).unwrap();
    sipcfg::util::fsutil::atomic_write(&cert_path, cert.as_bytes()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after_cert = presented_certificate(server.addr).await;
    while after_cert == before_cert && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        after_cert = presented_certificate(server.addr).await;
    }
    assert_ne!(after_cert, before_cert, "the new certificate is presented to new connections");

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (served, failed) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("reload under load: {served} requests served, {failed} failed, 12 reloads and a certificate change");
    assert_eq!(failed, 0);
    assert!(served > 100, "{served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_downloads_finish_and_exits_0() {
    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "listen = \"[::]:6970\"", "listen = \"127.0.0.1:0\"");
    // A firmware-sized file, so downloads are still running when SIGTERM arrives.
    let size = 8 * 1024 * 1024;
    std::fs::write(d.path("example/files/sip88xx.bin"), vec![0x5au8; size]).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["serve", "--admin-listen", "127.0.0.1:0", "--listen", &addr.to_string(), "--config"])
        .arg(d.path("example/sipcfg.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = TestServer::start().await.token("device:SEP001122334455");

    // Eight slow downloads: each reads 64 KiB every 20 ms (about 2.5 s for the file).
    let mut downloads = Vec::new();
    for _ in 0..8 {
        let token = token.clone();
        downloads.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(Arc::new(common::tls_client_config(b"http/1.1")));
            let mut s = tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
            let req = format!("GET /sip88xx.bin HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |p| p + 4);
            (
                String::from_utf8_lossy(&got[..head_end.min(got.len())]).lines().next().unwrap_or("").to_owned(),
                got.len() - head_end,
            )
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    // New connections are refused once the listener is closed: promptly, while the downloads still run
    // (polled, not after a fixed pause: on a loaded machine the signal's handling can take a few hundred ms).
    let refused_by = Instant::now() + Duration::from_secs(2);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < refused_by, "still accepting 2 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut complete = 0;
    for d in downloads {
        let (status, body) = d.await.unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, size, "an in-flight download was cut short");
        complete += 1;
    }
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "sipcfg exits 0 after a graceful shutdown");
    eprintln!("shutdown under load: {complete}/8 in-flight downloads of {size} bytes completed after SIGTERM; exit 0");
}

/// One connection with one request (reading to the end, so that the session ticket is taken in): how the
/// handshake went.
async fn handshake_kind(
    client: &Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    token: &str,
) -> rustls::HandshakeKind {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client.clone())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let req = format!(
        "GET /SEP001122334455.cnf.xml HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    assert!(out.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&out));
    tls.get_ref().1.handshake_kind().expect("the handshake finished")
}

#[tokio::test]
async fn sessions_outlive_a_reload_but_not_a_new_certificate() {
    use rustls::HandshakeKind::{Full, Resumed};
    let d = TempDeployment::new();
    let server = TestServer::with_config(d.config()).await;
    let token = server.token("device:SEP001122334455");
    let client = Arc::new(common::tls_client_config(b"http/1.1"));
    assert_eq!(handshake_kind(&client, server.addr, &token).await, Full);
    assert_eq!(handshake_kind(&client, server.addr, &token).await, Resumed);

    // An inventory change: a new TLS configuration, the same certificate, the same sessions.
    d.edit("example/inventory.toml", "label = \"1001 John\"", "label = \"1001 Johnny\"");
    let before = server.app.provisioner().current().generation;
    assert!(server.app.reload().await.map(|r| r.generation).expect("the reload succeeds") > before);
    assert_eq!(handshake_kind(&client, server.addr, &token).await, Resumed, "the session cache survived the reload");

    // A new certificate: no session made under the old one is resumed.
    let (cert, key) = new_server_cert(&d);
    sipcfg::util::fsutil::atomic_write(&d.path("certs-example/server-key.pem"), key.as_bytes()).unwrap();
    sipcfg::util::fsutil::atomic_write(&d.path("certs-example/server.pem"), cert.as_bytes()).unwrap();
    server.app.reload().await.map(|r| r.generation).expect("the reload succeeds");
    assert_eq!(handshake_kind(&client, server.addr, &token).await, Full, "a session outlived its certificate");
    assert_eq!(handshake_kind(&client, server.addr, &token).await, Resumed, "and resumption goes on with the new one");

    // Fewer cache entries: a new cache.
    d.edit("example/sipcfg.toml", "[tls]\n", "[tls]\nsession_cache_entries = 64\n");
    server.app.reload().await.map(|r| r.generation).expect("the reload succeeds");
    assert_eq!(handshake_kind(&client, server.addr, &token).await, Full);
}
