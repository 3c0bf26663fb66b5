//! Observe mode (`[observe]`), for a pilot with real phones: one `sipcfg::observe` line per subject and
//! client address, with the request line, the headers (no credential, wherever it was put) and the TLS facts;
//! a failed handshake once per address; nothing at all when it is off (the default). The server runs as a
//! process (the log is per process) and is spoken to over TLS as phones would.

mod common;

use std::sync::Arc;

use common::{Client, ServeProcess, TempDeployment};
use http::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What a Cisco 8851 might say it is; the test only checks that it is logged as sent.
const USER_AGENT: &str = "Cisco-CP8851/14.2.1";

/// The example deployment, logging JSON, with `observe` as its `[observe]` section (none if empty).
fn deployment(observe: &str) -> TempDeployment {
    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "listen = \"[::]:6970\"", "listen = \"127.0.0.1:0\"");
    d.edit("example/sipcfg.toml", "format = \"text\"", "format = \"json\"");
    if !observe.is_empty() {
        d.append("example/sipcfg.toml", &format!("\n[observe]\n{observe}\n"));
    }
    d
}

fn token(subject: &str) -> String {
    common::sign(
        jsonwebtoken::Algorithm::ES256,
        &common::example_signing_key(),
        Some("example-es256-1"),
        &common::good_claims(subject),
    )
}

/// The `sipcfg::observe` lines of a JSON log about requests (those with a subject), or about failed TLS
/// handshakes.
fn observed(log: &str, requests: bool) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "sipcfg::observe" && v["fields"]["subject"].is_string() == requests)
        .collect()
}

/// A phone's certificate as a manufacturer CA would issue it (MIC-like: the device name as CN).
fn phone_certificate(device: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(rcgen::DnType::CommonName, "Test Manufacturing CA SHA2");
    ca.distinguished_name.push(rcgen::DnType::OrganizationName, "Cisco");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(rcgen::DnType::CommonName, device);
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (cert.der().clone(), PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap())
}

/// A client trusting the example CA, offering `alpn`, with an optional certificate.
fn client_config(
    alpn: &[u8],
    certificate: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(common::repo().join("certs-example/ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match certificate {
        Some((cert, key)) => builder.with_client_auth_cert(vec![cert], key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// The values of one header in an observe line (its `headers` field: `[["name","value"],…]`).
fn header(line: &serde_json::Value, name: &str) -> Vec<String> {
    let pairs: Vec<(String, String)> = serde_json::from_str(line["fields"]["headers"].as_str().unwrap()).unwrap();
    pairs.into_iter().filter(|(n, _)| n == name).map(|(_, v)| v).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subject_and_address_is_logged_once_with_headers_and_tls_facts_and_never_a_token() {
    let d = deployment("enabled = true\nrequest_client_certificate = true");
    let served = ServeProcess::start(&d.path("example/sipcfg.toml"), "warn,sipcfg::observe=info").await;
    let (phone, other) = (token("device:SEP001122334455"), token("device:SEP001122334466"));
    let bearer = format!("Bearer {phone}");

    // Before it has a token (subject "-"), then with it on the same connection, the token also in a header
    // of no known meaning and in the query string, where no log may show it either.
    let mut conn = served.client().connect().await.unwrap();
    let r = conn.send("GET", "/SEP001122334455.cnf.xml", &[("user-agent", USER_AGENT)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let copied = format!("copy of {phone}");
    let headers = [
        ("user-agent", USER_AGENT),
        ("authorization", bearer.as_str()),
        ("x-debug", copied.as_str()),
        ("if-none-match", "\"0123\""),
    ];
    let r = conn.send("GET", &format!("/SEP001122334455.cnf.xml?access_token={phone}&v=1"), &headers).await;
    assert_eq!(r.status, StatusCode::OK);
    // The same phone again on a new connection: already seen.
    assert_eq!(served.client().get("/SEP001122334455.cnf.xml", Some(&phone)).await.status, StatusCode::OK);
    // Another phone, over HTTP/2, presenting its certificate.
    let h2 = Client::tls_with(served.addr, client_config(b"h2", Some(phone_certificate("SEP001122334466"))), true);
    assert_eq!(h2.get("/SEP001122334466.cnf.xml", Some(&other)).await.status, StatusCode::OK);
    // A client whose only ALPN protocol the server does not speak: the handshake fails, and is logged once.
    let odd = Client::tls_with(served.addr, client_config(b"spdy/1", None), false);
    assert!(odd.connect().await.is_err());
    assert!(odd.connect().await.is_err());
    let log = served.stop();

    assert!(!log.contains(&phone) && !log.contains(&other), "a token reached the log:\n{log}");
    let lines = observed(&log, true);
    let by = |who: &str| {
        let found: Vec<_> = lines.iter().filter(|l| l["fields"]["subject"] == who).collect();
        assert_eq!(found.len(), 1, "one line for {who}:\n{log}");
        found[0]
    };
    assert_eq!(lines.len(), 3, "{log}");

    let first = by("-");
    let f = &first["fields"];
    assert_eq!(f["request"], "GET /SEP001122334455.cnf.xml HTTP/1.1");
    assert_eq!(f["status"], 401);
    assert_eq!(header(first, "user-agent"), [USER_AGENT]);
    assert_eq!(header(first, "host"), ["localhost"]);
    assert!(f["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(f["tls_version"], "TLSv1_3");
    assert_eq!(f["tls_cipher_suite"], "TLS13_AES_128_GCM_SHA256");
    assert_eq!(f["tls_alpn"], "http/1.1");
    assert_eq!(f["tls_sni"], "localhost");
    assert_eq!(f["tls_handshake"], "full");
    assert_eq!(f["tls_client_certificate"], "none presented");
    assert_eq!(f["offered_alpn"], "http/1.1");
    assert!(f["offered_cipher_suites"].as_str().unwrap().contains("TLS13_AES_256_GCM_SHA384"), "{f}");
    assert!(f["offered_signature_schemes"].as_str().unwrap().contains("ECDSA_NISTP256_SHA256"), "{f}");
    assert!(f["offered_groups"].as_str().unwrap().contains("X25519"), "{f}");

    let with_token = by("device:SEP001122334455");
    let f = &with_token["fields"];
    let length = phone.len();
    assert_eq!(
        f["request"].as_str().unwrap(),
        format!("GET /SEP001122334455.cnf.xml?access_token=<redacted, {length} bytes>&v=<redacted, 1 bytes> HTTP/1.1")
    );
    assert_eq!(f["status"], 200);
    assert_eq!(header(with_token, "authorization"), [format!("Bearer <redacted, {length} bytes>")]);
    assert_eq!(header(with_token, "x-debug"), [format!("copy of <redacted, {length} bytes>")]);
    assert_eq!(header(with_token, "if-none-match"), ["\"0123\""]);

    let h2_line = by("device:SEP001122334466");
    let f = &h2_line["fields"];
    assert_eq!(f["request"], "GET /SEP001122334466.cnf.xml HTTP/2.0");
    assert_eq!(header(h2_line, ":authority"), ["localhost"]);
    assert_eq!(f["tls_alpn"], "h2");
    let certificate = f["tls_client_certificate"].as_str().unwrap();
    assert!(certificate.starts_with("subject=\"CN=SEP001122334466\" issuer=\""), "{certificate}");
    assert!(certificate.contains("CN=Test Manufacturing CA SHA2") && certificate.contains("sha256="), "{certificate}");

    let failed = observed(&log, false);
    assert_eq!(failed.len(), 1, "two failed handshakes from one address, one line:\n{log}");
    let f = &failed[0]["fields"];
    assert_eq!(f["message"], "observe: TLS handshake failed (the first from this address)");
    assert_eq!(f["offered_alpn"], "spdy/1");
    assert_eq!(f["offered_sni"], "localhost");
    assert!(f["error"].as_str().unwrap().contains("protocol"), "{f}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_by_default_and_no_client_certificate_unless_asked_for() {
    let d = deployment("");
    let served = ServeProcess::start(&d.path("example/sipcfg.toml"), "warn,sipcfg::observe=info").await;
    assert_eq!(served.client().get("/SEP001122334455.cnf.xml", None).await.status, StatusCode::UNAUTHORIZED);
    let log = served.stop();
    assert!(log.lines().all(|l| !l.contains("sipcfg::observe")), "observe mode is off by default:\n{log}");

    let d = deployment("enabled = true");
    let served = ServeProcess::start(&d.path("example/sipcfg.toml"), "warn,sipcfg::observe=info").await;
    let with_certificate =
        Client::tls_with(served.addr, client_config(b"http/1.1", Some(phone_certificate("SEP001122334455"))), false);
    assert_eq!(with_certificate.get("/SEP001122334455.cnf.xml", None).await.status, StatusCode::UNAUTHORIZED);
    let log = served.stop();
    let lines = observed(&log, true);
    assert_eq!(lines.len(), 1, "{log}");
    assert_eq!(lines[0]["fields"]["tls_client_certificate"], "not requested");
}

/// Every key has a default (off); a bound outside its range or an unknown key is refused, named.
#[test]
fn the_section_has_defaults_and_checked_values() {
    let example = std::fs::read_to_string(common::repo().join("example/sipcfg.toml")).unwrap();
    let parse = |observe: &str| {
        let text = format!("{example}\n[observe]\n{observe}\n");
        sipcfg::config::Config::parse(std::path::Path::new("/etc/sipcfg/sipcfg.toml"), &text)
    };
    let defaults = parse("").unwrap().observe;
    assert!(!defaults.enabled && !defaults.request_client_certificate);
    assert_eq!(defaults.max_pairs, 4096);
    let err = parse("max_pairs = 0").unwrap_err().to_string();
    assert!(err.contains("observe.max_pairs") && err.contains("1-1000000"), "{err}");
    let err = parse("enable = true").unwrap_err().to_string();
    assert!(err.contains("unknown field `enable`"), "{err}");
}
