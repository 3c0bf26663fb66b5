//! Phone-Edge-Trust must hold the issuer of the server certificate (issue 13.2): while OAuth devices exist,
//! `sipcfg check`, `serve` and a reload refuse a store that the `[tls]` chain does not lead to, verified
//! cryptographically; `sipcfg cert add` takes a self-signed server certificate and a chain file.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TempDeployment, TestServer, repo};
use http::StatusCode;
use sipcfg::provision::trust::parse_pem_certs;

fn sipcfg(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipcfg")).args(args).arg("--config").arg(config).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The example store's only file: the example CA, which issued the example server certificate.
const EXAMPLE_CA_FILE: &str = "example/phone-edge-trust/d55ef38f6de9b3f1.pem";

type Issuer = rcgen::Issuer<'static, rcgen::KeyPair>;

fn ca(dn: &[(rcgen::DnType, &str)], parent: Option<&Issuer>) -> (String, Issuer) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    for (kind, value) in dn {
        params.distinguished_name.push(kind.clone(), *value);
    }
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let pem = match parent {
        Some(parent) => params.signed_by(&key, parent).unwrap().pem(),
        None => params.self_signed(&key).unwrap().pem(),
    };
    (pem, rcgen::Issuer::new(params, key))
}

fn named_ca(cn: &str, parent: Option<&Issuer>) -> (String, Issuer) {
    ca(&[(rcgen::DnType::CommonName, cn)], parent)
}

/// A server certificate for localhost (certificate, key), issued by `issuer` or self-signed.
fn server_cert(issuer: Option<&Issuer>) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    (cert.pem(), key.serialize_pem())
}

/// Replaces the deployment's `[tls]` certificate file and key.
fn write_server(d: &TempDeployment, chain_pem: &str, key_pem: &str) {
    std::fs::write(d.path("certs-example/server.pem"), chain_pem).unwrap();
    std::fs::write(d.path("certs-example/server-key.pem"), key_pem).unwrap();
}

fn write(d: &TempDeployment, name: &str, pem: &str) -> String {
    let path = d.path(name);
    std::fs::write(&path, pem).unwrap();
    path.to_str().unwrap().to_owned()
}

fn sha256_of(pem: &str) -> String {
    parse_pem_certs(pem.as_bytes(), Path::new("cert.pem")).unwrap().remove(0).sha256
}

/// `sipcfg serve` on free ports, which must exit by itself (a start refused); its output.
fn serve_must_exit(config: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("serve started instead of refusing: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn check_refuses_a_store_without_the_servers_issuer_while_oauth_devices_exist() {
    let d = TempDeployment::new();
    let config = d.path("example/sipcfg.toml");
    std::fs::remove_file(d.path(EXAMPLE_CA_FILE)).unwrap();

    let out = sipcfg(&config, &["check"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    let store = d.path("example/phone-edge-trust").display().to_string();
    for needle in [
        format!("{}: Phone-Edge-Trust does not hold the issuer", d.config().tls.certificate.display()),
        "\"O=sipcfg example, CN=localhost\"".into(),
        format!("the store {store} is empty"),
        "enabled device(s) with an OAuth profile (BOTJSMITH, CSFJSMITH, SEP001122334455, …)".into(),
        "fail TLS on port 6971".into(),
        "add the CA that issued it (\"O=sipcfg example, CN=sipcfg Example Phone-Edge-Trust Root CA\")".into(),
        "`sipcfg cert add --purpose phone-edge-trust <the issuing CA>.pem`".into(),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }

    // An unrelated CA: `cert add` takes it but warns, and check names what the store holds.
    let (unrelated, _) = named_ca("Unrelated Root", None);
    let out =
        sipcfg(&config, &["cert", "add", "--purpose", "phone-edge-trust", &write(&d, "unrelated.pem", &unrelated)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning: ") && text(&out.stderr).contains("does not hold the issuer"));
    let out = sipcfg(&config, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("the store {store} holds \"CN=Unrelated Root\"")),
        "{}",
        text(&out.stderr)
    );

    // A CA with the example CA's very name but another key: names prove nothing, signatures do.
    let (impostor, _) = ca(
        &[
            (rcgen::DnType::OrganizationName, "sipcfg example"),
            (rcgen::DnType::CommonName, "sipcfg Example Phone-Edge-Trust Root CA"),
        ],
        None,
    );
    let impostor_file = write(&d, "impostor.pem", &impostor);
    assert!(sipcfg(&config, &["cert", "add", "--purpose", "phone-edge-trust", &impostor_file]).status.success());
    let out = sipcfg(&config, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("the signature does not verify"), "{}", text(&out.stderr));

    // The cluster's SIP OAuth mode does not matter: devices with an OAuth profile download only on 6971.
    d.edit("example/inventory.toml", "sip_oauth_mode = true", "sip_oauth_mode = false");
    assert_eq!(sipcfg(&config, &["check"]).status.code(), Some(1));

    // Without any enabled device whose profile enables OAuth, the store is not checked.
    let inventory = d.path("example/inventory.toml");
    // (MRA activation needs an OAuth profile: it goes too.)
    let no_oauth = std::fs::read_to_string(&inventory)
        .unwrap()
        .replace("oauth = true", "oauth = false")
        .replace("allow_activation_code_via_mra = true", "allow_activation_code_via_mra = false");
    std::fs::write(&inventory, no_oauth).unwrap();
    let out = sipcfg(&config, &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // OAuth devices again, with the CA that issued the server certificate: the check passes, `cert add` is quiet.
    std::fs::copy(repo().join("example/inventory.toml"), &inventory).unwrap();
    let example_ca = repo().join("certs-example/ca.pem");
    let out = sipcfg(&config, &["cert", "add", "--purpose", "phone-edge-trust", example_ca.to_str().unwrap()]);
    assert!(out.status.success() && !text(&out.stderr).contains("warning"), "{}", text(&out.stderr));
    let out = sipcfg(&config, &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[tokio::test]
async fn serve_refuses_to_start_and_a_reload_keeps_the_store_in_force() {
    let d = TempDeployment::new();
    let config = d.path("example/sipcfg.toml");
    let server = TestServer::with_config(d.config()).await;

    // The example CA replaced by an unrelated one, as by mistake.
    let (unrelated, _) = named_ca("Unrelated Root", None);
    let out =
        sipcfg(&config, &["cert", "add", "--purpose", "phone-edge-trust", &write(&d, "unrelated.pem", &unrelated)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sipcfg(&config, &["cert", "remove", "--purpose", "phone-edge-trust", "d55ef38f"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("a running server refuses the change"), "{}", text(&out.stderr));

    let errors = server.app.reload().await.expect_err("the reload is refused");
    let message: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let message = message.join("\n");
    assert!(message.contains("Phone-Edge-Trust does not hold the issuer"), "{message}");
    assert!(message.contains("holds \"CN=Unrelated Root\"") && message.contains("sipcfg cert add"), "{message}");
    assert!(!server.reload_logged().await, "counted and logged as refused");

    // The previous deployment keeps serving: the phones still get the CA that issued the server certificate.
    let token = server.token("device:SEP001122334455");
    let r = server.client().get("/caconfig.json", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text().contains("sipcfg Example Phone-Edge-Trust Root CA") && !r.text().contains("Unrelated"),
        "{}",
        r.text()
    );
    let r = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert!(r.text().contains("<certificate sha256=\"d55ef38f"), "{}", r.text());

    // A start without a last good deployment to fall back on (tests/last_good.rs shows the fallback) is
    // refused with the same message.
    std::fs::remove_dir_all(d.path("example/state/deployments")).unwrap();
    let out = serve_must_exit(&config);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("Phone-Edge-Trust does not hold the issuer") && err.contains("Unrelated Root"), "{err}");
}

#[tokio::test]
async fn a_self_signed_server_certificate_is_its_own_phone_edge_trust() {
    let d = TempDeployment::new();
    let config = d.path("example/sipcfg.toml");
    let (cert, key) = server_cert(None);
    write_server(&d, &cert, &key);
    let server_file = d.config().tls.certificate;

    let out = sipcfg(&config, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let fix = format!(
        "To fix it, add the server certificate itself, which is self-signed: `sipcfg cert add --purpose \
         phone-edge-trust {}`",
        server_file.display()
    );
    assert!(err.contains(&fix) && err.contains("it is self-signed, and the store does not hold it"), "{err}");

    // Another self-signed certificate is not the server's: refused.
    let (other, _) = server_cert(None);
    let out = sipcfg(&config, &["cert", "add", "--purpose", "phone-edge-trust", &write(&d, "other.pem", &other)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("only when it is the server's own"), "{}", text(&out.stderr));

    let out = sipcfg(&config, &["cert", "add", "--purpose", "phone-edge-trust", server_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("added: ") && text(&out.stdout).contains("(self-signed, not a CA)"));
    let out = sipcfg(&config, &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A phone that trusts what Phone-Edge-Trust holds connects, and finds the certificate in its file.
    let server = TestServer::with_config(d.config()).await;
    let phone = server.client_with(common::tls_client_config_trusting(&cert, b"http/1.1"));
    let r = phone.get("/SEP001122334455.cnf.xml", Some(&server.token("device:SEP001122334455"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains(&format!("<certificate sha256=\"{}\"", sha256_of(&cert))), "{}", r.text());
}

#[tokio::test]
async fn a_chain_file_adds_its_cas_and_a_server_behind_an_intermediate_is_trusted() {
    let d = TempDeployment::new();
    let config = d.path("example/sipcfg.toml");
    let (root_pem, root) = named_ca("Site Root CA", None);
    let (inter_pem, inter) = named_ca("Site Issuing CA", Some(&root));
    let (leaf, key) = server_cert(Some(&inter));
    write_server(&d, &format!("{leaf}{inter_pem}"), &key);
    std::fs::remove_file(d.path(EXAMPLE_CA_FILE)).unwrap();

    // The chain as a CA sends it: the server certificate, the intermediate, the root.
    let chain = write(&d, "chain.pem", &format!("{leaf}{inter_pem}{root_pem}"));
    let out = sipcfg(&config, &["cert", "add", "--purpose", "phone-edge-trust", &chain]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("added: ").count(), 2, "{stdout}");
    assert!(stdout.contains("CN=Site Root CA") && stdout.contains("CN=Site Issuing CA"), "{stdout}");
    let skipped = stdout.lines().find(|l| l.starts_with("skipped: ")).expect("the leaf is skipped");
    assert!(skipped.contains("CN=localhost") && skipped.contains("it is the server certificate"), "{skipped}");
    assert!(text(&sipcfg(&config, &["cert", "list"]).stdout).contains("2 of 16 certificates"));
    let out = sipcfg(&config, &["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // The store holds the root only: the [tls] file must then hold the intermediate, as phones need it.
    let out = sipcfg(&config, &["cert", "remove", "--purpose", "phone-edge-trust", &sha256_of(&inter_pem)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    write_server(&d, &leaf, &key);
    let out = sipcfg(&config, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("neither the store nor the certificate file"), "{}", text(&out.stderr));
    write_server(&d, &format!("{leaf}{inter_pem}"), &key);
    assert!(sipcfg(&config, &["check"]).status.success());

    // A phone that trusts the root downloads its file.
    let server = TestServer::with_config(d.config()).await;
    let phone = server.client_with(common::tls_client_config_trusting(&root_pem, b"http/1.1"));
    let r = phone.get("/SEP001122334455.cnf.xml", Some(&server.token("device:SEP001122334455"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains(&format!("<certificate sha256=\"{}\"", sha256_of(&root_pem))), "{}", r.text());
}
