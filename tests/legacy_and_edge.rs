//! The plain-HTTP legacy port (CUCM's 6970) and the mutual-TLS listener for edge proxies (Expressway-C).

mod common;

use std::sync::Arc;

use common::{TempDeployment, TestServer, repo};
use http::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sipcfg::config::{EdgeConfig, EdgeProxy};

#[tokio::test]
async fn the_legacy_port_serves_common_files_and_non_oauth_devices_only() {
    let server = TestServer::start().await;
    let legacy = server.legacy_client();

    let r = legacy.get("/dialplan.xml", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("DIALTEMPLATE"));
    let r = legacy.get("/SEPAABBCCDDEEFF.cnf.xml", None).await;
    assert_eq!(r.status, StatusCode::OK, "the non-OAuth 7821");
    assert!(r.text().contains("<deviceSecurityMode>1</deviceSecurityMode>"));
    assert_eq!(legacy.get("/XMLDefault.cnf.xml", None).await.status, StatusCode::OK);
    assert_eq!(legacy.get("/caconfig.json", None).await.status, StatusCode::OK);

    // OAuth devices: 403 with a reason, and the same answer for devices that do not exist or are disabled.
    let oauth = legacy.get("/SEP001122334455.cnf.xml", None).await;
    assert_eq!(oauth.status, StatusCode::FORBIDDEN);
    assert!(oauth.text().contains("only over HTTPS (port 6971)"), "{}", oauth.text());
    assert!(!oauth.text().contains("<device"));
    for other in ["/SEP00112233AAAA.cnf.xml", "/SEP0011223344FF.cnf.xml", "/CSFJSMITH.cnf.xml.sgn"] {
        let r = legacy.get(other, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{other}");
        assert_eq!(r.body, oauth.body, "{other}");
    }
    assert_eq!(legacy.get("/SEPAABBCCDDEEFF.cnf.xml.enc.sgn", None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_bearer_token_over_plain_http_is_never_accepted() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    for path in ["/SEP001122334455.cnf.xml", "/SEPAABBCCDDEEFF.cnf.xml", "/dialplan.xml"] {
        let r = server.legacy_client().get(path, Some(&token)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(r.text().contains("never accepted over plain HTTP"));
    }
}

#[tokio::test]
async fn the_legacy_port_is_off_unless_configured() {
    let mut config = common::example_config();
    config.legacy = None;
    let server = TestServer::with_config(config).await;
    assert!(server.legacy_addr.is_none());
}

/// A test PKI: a CA for edge proxies, a proxy certificate it issued, a stranger from the same CA, and a
/// proxy-named certificate from another CA; `ca` issues more.
struct EdgePki {
    ca_pem: String,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    proxy: (String, String),
    stranger: (String, String),
    rogue: (String, String),
}

fn issue(ca: &rcgen::Issuer<'_, rcgen::KeyPair>, name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    (params.signed_by(&key, ca).unwrap().pem(), key.serialize_pem())
}

/// A client certificate whose only name is an IP address SAN (no subject CN).
fn issue_ip_only(ca: &rcgen::Issuer<'_, rcgen::KeyPair>, ip: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip.parse().unwrap())];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    (params.signed_by(&key, ca).unwrap().pem(), key.serialize_pem())
}

/// A client certificate whose only name is the subject CN `cn` (no subject alternative name).
fn issue_cn_only(ca: &rcgen::Issuer<'_, rcgen::KeyPair>, cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    (params.signed_by(&key, ca).unwrap().pem(), key.serialize_pem())
}

/// An Expressway-C's self-signed client certificate for `name`.
fn self_signed(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.extended_key_usages =
        vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn new_ca(name: &str) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), rcgen::Issuer::new(params, key))
}

fn edge_pki() -> EdgePki {
    let (ca_pem, ca) = new_ca("Test Tomcat-trust CA");
    let (_, other_ca) = new_ca("Rogue CA");
    EdgePki {
        ca_pem,
        proxy: issue(&ca, "expc1.example.test"),
        stranger: issue(&ca, "laptop.example.test"),
        rogue: issue(&other_ca, "expc1.example.test"),
        ca,
    }
}

fn client_with_cert(identity: Option<&(String, String)>) -> rustls::ClientConfig {
    let base = common::tls_client_config(b"http/1.1");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(repo().join("certs-example/ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = base.alpn_protocols;
    config
}

async fn edge_server(d: &TempDeployment, pki: &EdgePki) -> TestServer {
    let proxy = EdgeProxy {
        host: "expc1.example.test".into(),
        description: "Expressway-C".into(),
        subject_names: vec!["expc1.example.test".into()],
    };
    edge_server_for(d, pki, vec![proxy]).await
}

/// The example deployment with an edge listener admitting `proxies` whose certificates chain to the PKI's CA
/// (`edge.client_ca`).
async fn edge_server_for(d: &TempDeployment, pki: &EdgePki, proxies: Vec<EdgeProxy>) -> TestServer {
    let ca = d.path("tomcat-trust.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let mut config = d.config();
    config.edge = Some(EdgeConfig { listen: "127.0.0.1:0".parse().unwrap(), client_ca: Some(ca), proxies });
    TestServer::with_config(config).await
}

/// Whether the edge listener admits a proxy with this client certificate: its handshake and a request with
/// the phone's token succeed.
async fn admitted(server: &TestServer, identity: &(String, String)) -> bool {
    let token = server.token("device:SEP001122334455");
    let client = server.edge_client(client_with_cert(Some(identity)));
    let outcome = match client.connect().await {
        Err(e) => Err(e),
        Ok(mut conn) => {
            let auth = format!("Bearer {token}");
            conn.try_send("GET", "/SEP001122334455.cnf.xml", &[("authorization", &auth)]).await
        }
    };
    match outcome {
        Ok(r) => {
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            true
        }
        Err(_) => false,
    }
}

/// Waits (up to 10 s) for the running server's file watch to make `admitted` what `want` says.
async fn eventually_admitted(server: &TestServer, identity: &(String, String), want: bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while admitted(server, identity).await != want {
        assert!(std::time::Instant::now() < deadline, "still {}admitted after 10 s", if want { "not " } else { "" });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn proxy(host: &str, subject_names: &[&str]) -> EdgeProxy {
    EdgeProxy {
        host: host.into(),
        description: String::new(),
        subject_names: subject_names.iter().map(|n| (*n).to_owned()).collect(),
    }
}

#[tokio::test]
async fn a_proxy_given_by_ip_address_is_matched_by_an_ip_address_san_only() {
    let d = TempDeployment::new();
    let pki = edge_pki();
    let by_ip = issue_ip_only(&pki.ca, "192.0.2.7");
    let by_ipv6 = issue_ip_only(&pki.ca, "2001:db8::7");
    let cn_only = issue_cn_only(&pki.ca, "192.0.2.7");

    let server =
        edge_server_for(&d, &pki, vec![proxy("192.0.2.7", &[]), proxy("expc6.example.test", &["[2001:db8::7]"])]).await;
    assert!(admitted(&server, &by_ip).await, "an IP address SAN matches the proxy's host");
    assert!(admitted(&server, &by_ipv6).await, "an IPv6 subject name in brackets matches the IP address SAN");
    assert!(!admitted(&server, &cn_only).await, "an IP address in the CN is no IP address SAN");
    assert!(!admitted(&server, &pki.proxy).await, "a name that is no proxy's");

    let proxies =
        vec![proxy("192.0.2.8", &[]), proxy("expc6.example.test", &["2001:db8::8"]), proxy("expc1.example.test", &[])];
    let other = edge_server_for(&d, &pki, proxies).await;
    assert!(!admitted(&other, &by_ip).await, "another IP address is refused");
    assert!(!admitted(&other, &by_ipv6).await, "another IPv6 address is refused");
    assert!(admitted(&other, &pki.proxy).await, "DNS names still match");
}

#[tokio::test]
async fn an_admitted_proxy_still_needs_the_phones_token() {
    let d = TempDeployment::new();
    let pki = edge_pki();
    let server = edge_server(&d, &pki).await;
    let proxy = server.edge_client(client_with_cert(Some(&pki.proxy)));
    let token = server.token("device:SEP001122334455");
    let r = proxy.get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("<sipOAuthMode>1</sipOAuthMode>"));
    let r = proxy.get("/SEP001122334455.cnf.xml", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = proxy.get("/SEP001122334466.cnf.xml", Some(&token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn only_configured_proxies_with_trusted_certificates_are_admitted() {
    let d = TempDeployment::new();
    let pki = edge_pki();
    let server = edge_server(&d, &pki).await;
    let token = server.token("device:SEP001122334455");
    let auth = format!("Bearer {token}");
    for (what, identity) in [
        ("no client certificate", None),
        ("a name that is no proxy", Some(&pki.stranger)),
        ("another CA", Some(&pki.rogue)),
    ] {
        let client = server.edge_client(client_with_cert(identity));
        let outcome = match client.connect().await {
            Err(e) => Err(e),
            Ok(mut conn) => conn.try_send("GET", "/SEP001122334455.cnf.xml", &[("authorization", &auth)]).await,
        };
        assert!(outcome.is_err(), "{what}: admitted with {:?}", outcome.map(|r| r.status));
    }
    assert!(admitted(&server, &pki.proxy).await);
    // The phone port does not ask for client certificates at all.
    assert_eq!(server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn sessions_are_never_resumed_across_the_edge_and_phone_listeners() {
    let d = TempDeployment::new();
    let pki = edge_pki();
    let server = edge_server(&d, &pki).await;
    let token = server.token("device:SEP001122334455");
    // One client configuration (one resumption store) for both listeners, same server name.
    let shared = Arc::new(client_with_cert(Some(&pki.proxy)));
    let handshake = |addr: std::net::SocketAddr| {
        let shared = shared.clone();
        let token = token.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(shared).connect(name, tcp).await.unwrap();
            // Complete one request so TLS 1.3 tickets arrive and the server has verified everything.
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let req = format!(
                "GET /SEP001122334455.cnf.xml HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
            );
            tls.write_all(req.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let _ = tls.read_to_end(&mut out).await;
            let kind = tls.get_ref().1.handshake_kind();
            (kind, String::from_utf8_lossy(&out).lines().next().unwrap_or("").to_owned())
        }
    };
    let phone_port = server.addr;
    let edge_port = server.edge_addr.unwrap();
    let (first, status) = handshake(phone_port).await;
    assert_eq!(first, Some(rustls::HandshakeKind::Full));
    assert!(status.contains("200"), "{status}");
    let (resumed, _) = handshake(phone_port).await;
    assert_eq!(resumed, Some(rustls::HandshakeKind::Resumed), "resumption works on one listener");
    let (edge, status) = handshake(edge_port).await;
    assert_eq!(edge, Some(rustls::HandshakeKind::Full), "a phone-port session is not resumed on the edge listener");
    assert!(status.contains("200"), "{status}");
    let (edge_again, _) = handshake(edge_port).await;
    assert_eq!(edge_again, Some(rustls::HandshakeKind::Resumed), "resumption works on the edge listener too");
}

/// The example configuration with its `[edge]` section switched on, on `edge_listen`, and the legacy
/// listener on `legacy_listen`.
fn example_with_listeners(legacy_listen: &str, edge_listen: &str) -> String {
    let example = std::fs::read_to_string(repo().join("example/sipcfg.toml")).unwrap();
    let mut text = example.replace("listen = \"[::]:6970\"", &format!("listen = \"{legacy_listen}\""));
    for line in ["[edge]", "client_ca = ", "[[edge.proxies]]", "host = ", "description = \"Expressway", "subject_names"]
    {
        text = text.replace(&format!("# {line}"), line);
    }
    text.replace("# listen = \"[::]:6972\"", &format!("listen = \"{edge_listen}\""))
}

#[test]
fn phone_listeners_never_share_a_port_even_on_a_wildcard_address() {
    let parse = |text: &str| sipcfg::config::Config::parse(&repo().join("example/sipcfg.toml"), text);
    let refused = |legacy: &str, edge: &str, key: &str, clash: &str| {
        let err = parse(&example_with_listeners(legacy, edge)).expect_err(key).to_string();
        assert!(err.contains(key) && err.contains(clash), "legacy {legacy}, edge {edge}: {err}");
    };
    // The phone port listens on [::]:6971, every address: a specific address on its port clashes.
    refused("[::]:6970", "127.0.0.1:6971", "edge.listen", "server.listen");
    refused("0.0.0.0:6971", "[::]:6972", "legacy.listen", "server.listen");
    refused("0.0.0.0:6972", "[::]:6972", "legacy.listen", "edge.listen");
    refused("127.0.0.1:6972", "0.0.0.0:6972", "legacy.listen", "edge.listen");
    let config = parse(&example_with_listeners("[::]:6970", "[::]:6972")).expect("distinct ports");
    assert_eq!(config.edge.map(|e| e.listen.port()), Some(6972));
    // Two specific addresses on one port do not clash, and port 0 (any free port) never does.
    assert!(parse(&example_with_listeners("127.0.0.1:6972", "127.0.0.2:6972")).is_ok());
    assert!(parse(&example_with_listeners("127.0.0.1:0", "127.0.0.1:0")).is_ok());
}

fn activation_code(d: &TempDeployment, device: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["activation-code", "create", "--device", device, "--config"])
        .arg(d.path("example/sipcfg.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn through_an_edge_proxy_only_devices_allowed_mra_activation_redeem_their_code() {
    const GRANT: &str = "urn:sipcfg:grant-type:activation-code";
    let d = TempDeployment::new();
    // SEP001122334466 may onboard through MRA; SEP001122334455 (the example's default) may not.
    d.edit(
        "example/inventory.toml",
        "[devices.SEP001122334466]\n",
        "[devices.SEP001122334466]\nallow_activation_code_via_mra = true\nmra_service_domain = \"mra.example.test\"\n",
    );
    let pki = edge_pki();
    let server = edge_server(&d, &pki).await;
    let proxy = server.edge_client(client_with_cert(Some(&pki.proxy)));

    let code = activation_code(&d, "SEP001122334455");
    let r = proxy.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(
        r.text().contains("invalid_grant") && r.text().contains("unknown, used, revoked or expired"),
        "{}",
        r.text()
    );
    // Refused through the edge, the code is not spent: on the phone port it onboards the phone.
    let r = server.client().post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let code = activation_code(&d, "SEP001122334466");
    let r = proxy.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let token: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let access = token["access_token"].as_str().unwrap();
    assert_eq!(proxy.get("/SEP001122334466.cnf.xml", Some(access)).await.status, StatusCode::OK);
    // Single use, wherever it is presented next.
    let r = server.client().post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
}

fn sipcfg(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sipcfg")).args(args).arg("--config").arg(config).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn tomcat_trust_with_client_ca_admits_proxies_and_cert_changes_reach_the_running_server() {
    let d = TempDeployment::new();
    let config = d.path("example/sipcfg.toml");
    // edge.client_ca trusts one CA, the Tomcat-trust store (managed with `sipcfg cert`) another.
    let (client_ca_pem, client_ca) = new_ca("Client-CA file CA");
    std::fs::write(d.path("client-ca.pem"), &client_ca_pem).unwrap();
    d.edit(
        "example/sipcfg.toml",
        "phone_edge_trust = \"phone-edge-trust\"",
        "phone_edge_trust = \"phone-edge-trust\"\ntomcat_trust = \"tomcat-trust\"",
    );
    d.append(
        "example/sipcfg.toml",
        "\n[edge]\nlisten = \"127.0.0.1:0\"\nclient_ca = \"../client-ca.pem\"\n\
         [[edge.proxies]]\nhost = \"expc1.example.test\"\ndescription = \"Expressway-C, site 1\"\n\
         [[edge.proxies]]\nhost = \"expc2.example.test\"\n\
         [[edge.proxies]]\nhost = \"192.0.2.7\"\ndescription = \"by address\"\n",
    );
    let pki = edge_pki();
    std::fs::write(d.path("tomcat-ca.pem"), &pki.ca_pem).unwrap();
    let out = sipcfg(&config, &["cert", "add", "--purpose", "tomcat-trust", d.path("tomcat-ca.pem").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("added: "), "{}", text(&out.stdout));
    let out = sipcfg(&config, &["cert", "list", "--purpose", "tomcat-trust"]);
    assert!(text(&out.stdout).contains("CN=Test Tomcat-trust CA") && text(&out.stdout).contains("1 of 256"));
    let out = sipcfg(&config, &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let mut server = TestServer::with_config(d.config()).await;
    server.watch_files();
    let from_client_ca = issue(&client_ca, "expc1.example.test");
    assert!(admitted(&server, &from_client_ca).await, "a proxy whose CA is in edge.client_ca");
    assert!(admitted(&server, &pki.proxy).await, "a proxy whose CA is in Tomcat-trust");
    assert!(!admitted(&server, &pki.rogue).await, "a proxy whose CA is in neither");

    // A self-signed Expressway-C certificate, added to Tomcat-trust: the running server admits it.
    let own = self_signed("expc2.example.test");
    assert!(!admitted(&server, &own).await);
    std::fs::write(d.path("expc2.pem"), &own.0).unwrap();
    let out = sipcfg(&config, &["cert", "add", "--purpose", "tomcat-trust", d.path("expc2.pem").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("(self-signed, not a CA)"), "{}", text(&out.stdout));
    eventually_admitted(&server, &own, true).await;

    // The Tomcat-trust CA removed: its proxies are refused; edge.client_ca's are not.
    let sha = text(&out.stdout).split_whitespace().nth(1).unwrap().to_owned();
    let listed = text(&sipcfg(&config, &["cert", "list", "--purpose", "tomcat-trust"]).stdout);
    let ca_sha =
        listed.lines().find(|l| l.contains("Test Tomcat-trust CA")).unwrap().split_whitespace().next().unwrap();
    assert_ne!(ca_sha, sha);
    let out = sipcfg(&config, &["cert", "remove", "--purpose", "tomcat-trust", &ca_sha[..12]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    eventually_admitted(&server, &pki.proxy, false).await;
    assert!(admitted(&server, &from_client_ca).await);
    assert!(admitted(&server, &own).await);

    // `sipcfg edge list`: every proxy, its names, where they must be in the certificate, what it chains to.
    let out = sipcfg(&config, &["edge", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    for line in [
        "proxy expc1.example.test (Expressway-C, site 1)\n  subject name expc1.example.test (the host): matched by DNS name SAN or subject CN\n",
        "proxy expc2.example.test\n",
        "proxy 192.0.2.7 (by address)\n  subject name 192.0.2.7 (the host): matched by IP address SAN\n",
        "3 proxies on the edge listener 127.0.0.1:0",
    ] {
        assert!(listing.contains(line), "missing {line:?} in:\n{listing}");
    }
    let tomcat = d.path("example/tomcat-trust").display().to_string();
    assert!(listing.contains(&format!("the Tomcat-trust store {tomcat} (1 certificate)")), "{listing}");
    assert!(listing.contains("or edge.client_ca "), "{listing}");
}

#[test]
fn the_edge_listener_needs_tomcat_trust_or_a_client_ca() {
    let path = repo().join("example/sipcfg.toml");
    let text = example_with_listeners("[::]:6970", "[::]:6972").replace("client_ca = \"expressway-ca.pem\"", "");
    let err = sipcfg::config::Config::parse(&path, &text).expect_err("no CA for proxies").to_string();
    assert!(err.contains("edge.client_ca") && err.contains("[trust] tomcat_trust"), "{err}");
    let with_store = text.replacen("[trust]", "[trust]\ntomcat_trust = \"tomcat-trust\"", 1);
    let config = sipcfg::config::Config::parse(&path, &with_store).expect("Tomcat-trust alone is enough");
    assert_eq!(config.trust.tomcat_trust, Some(repo().join("example/tomcat-trust")));
    assert_eq!(config.edge.and_then(|e| e.client_ca), None);
}
