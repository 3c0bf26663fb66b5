//! SIP OAuth as CUCM defines it: every phone type, the cluster switch and ports (applied without a
//! restart), rendered OAuth values, Phone-Edge-Trust, file names, common files.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Resp, TempDeployment, TestServer, repo};
use http::StatusCode;
use sipcfg::provision::model::PHONE_TYPES;

fn sipcfg(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipcfg")).args(args).arg("--config").arg(config).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn every_oauth_phone_type_has_a_device_that_renders_and_downloads() {
    let server = TestServer::start().await;
    let deployment = server.app.provisioner().current();
    for phone_type in PHONE_TYPES {
        let device = deployment
            .inventory
            .devices
            .values()
            .find(|d| d.phone_type.name == phone_type.name && d.enabled)
            .unwrap_or_else(|| panic!("no enabled example device of type {}", phone_type.name));
        let token = server.token(&format!("device:{}", device.name));
        let r = server.client().get(&format!("/{}.cnf.xml", device.name), Some(&token)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", device.name);
        sipcfg::provision::xml::check_well_formed(&r.text()).unwrap();
        let template = deployment.templates.template_for(phone_type);
        assert_ne!(template, "base.xml.j2", "{} falls back to the bare base template", phone_type.name);
    }
}

#[tokio::test]
async fn templates_fall_back_from_model_to_family_to_base_and_an_override_wins() {
    let d = TempDeployment::new();
    let override_dir = d.path("templates-local");
    std::fs::create_dir_all(override_dir.join("models")).unwrap();
    std::fs::write(
        override_dir.join("models/cisco-7821.xml.j2"),
        "{% extends \"families/cisco-78xx.xml.j2\" %}{% block extra %}  <siteOverride>lobby</siteOverride>\n{% endblock %}",
    )
    .unwrap();
    let model_8841 = d.path("templates/models/cisco-8841.xml.j2");
    let _ = std::fs::remove_file(&model_8841);
    let mut config = d.config();
    config.inventory.templates_override = Some(override_dir);
    let server = TestServer::with_config(config).await;
    let deployment = server.app.provisioner().current();
    let by_id = |id: &str| PHONE_TYPES.iter().find(|t| t.id == id).unwrap();
    assert_eq!(deployment.templates.template_for(by_id("cisco-7821")), "models/cisco-7821.xml.j2");
    assert!(deployment.templates.origin("models/cisco-7821.xml.j2").unwrap().starts_with(d.path("templates-local")));
    assert_eq!(deployment.templates.template_for(by_id("cisco-8841")), "families/cisco-88xx.xml.j2");
    assert_eq!(deployment.templates.template_for(by_id("cisco-8851")), "models/cisco-8851.xml.j2");

    let lobby = server.client().get("/SEPAABBCCDDEEFF.cnf.xml", Some(&server.token("user:adoe"))).await;
    assert!(lobby.text().contains("<siteOverride>lobby</siteOverride>"));
    let desk = server.client().get("/SEP001122334455.cnf.xml", Some(&server.token("user:jsmith"))).await;
    assert!(!desk.text().contains("siteOverride"));
    assert!(desk.text().contains("<loadInformation>sip88xx"), "the shipped 8851 template still applies");

    // Without model and family templates a phone renders from the base.
    std::fs::remove_dir_all(d.path("templates/families")).unwrap();
    std::fs::remove_dir_all(d.path("templates/models")).unwrap();
    let templates = sipcfg::provision::render::Templates::load(&d.path("templates"), None).unwrap();
    assert_eq!(templates.template_for(by_id("cisco-8861")), "base.xml.j2");
}

#[test]
fn profile_rules_are_enforced_when_the_inventory_loads() {
    let d = TempDeployment::new();
    d.append(
        "example/inventory.toml",
        r#"
[profiles."auth-tcp"]
phone_type = "Cisco 8811"
security_mode = "authenticated"
transport = "tcp"

[profiles."oauth-digest"]
phone_type = "Cisco 8811"
security_mode = "encrypted"
transport = "tls"
oauth = true
digest_authentication = true
tftp_encrypted_config = true

[profiles."oauth-nonsecure"]
phone_type = "Cisco 8811"
security_mode = "non-secure"
transport = "udp"
oauth = true

[profiles."unknown-type"]
phone_type = "Cisco 9971"
security_mode = "non-secure"
transport = "tcp"

[devices.SEP0000000000AA]
model = "Cisco 9971"
profile = "auth-tcp"

[devices.SEP0000000000AB]
model = "Cisco 8841"
profile = "auth-tcp"

[profiles."nonsecure-encrypted-config"]
phone_type = "Cisco 7821"
security_mode = "non-secure"
transport = "tcp"
tftp_encrypted_config = true

[profiles."Cisco 8811 - TLS"]
phone_type = "Cisco 8811"
security_mode = "encrypted"
transport = "tls"

[devices.SEP0000000000AC]
model = "Cisco 8811"
profile = "Cisco 8811 - TLS"
allow_activation_code_via_mra = true
mra_service_domain = "mra.example.test"
"#,
    );
    let out = sipcfg(&d.path("example/sipcfg.toml"), &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    for needle in [
        "profile \"auth-tcp\": device security mode authenticated and encrypted force transport TLS",
        "profile \"oauth-digest\": OAuth authentication cannot be combined with digest authentication",
        "profile \"oauth-digest\": OAuth authentication cannot be combined with TFTP encrypted config",
        "profile \"oauth-nonsecure\": OAuth authentication needs device security mode encrypted",
        "profile \"oauth-nonsecure\": OAuth authentication needs transport TLS",
        "profile \"unknown-type\": unknown phone type \"Cisco 9971\"",
        "device \"SEP0000000000AA\": unknown model \"Cisco 9971\"",
        "device \"SEP0000000000AB\": profile \"auth-tcp\" belongs to phone type \"Cisco 8811\", not to \"Cisco 8841\"",
        "profile \"nonsecure-encrypted-config\": tftp_encrypted_config: sipcfg never serves TFTP-encrypted files",
        "device \"SEP0000000000AC\": allow_activation_code_via_mra needs a profile with OAuth, and profile \
         \"Cisco 8811 - TLS\" has oauth = false",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
}

/// Polls `check` on a kept-alive connection until it holds, for at most 10 s.
async fn eventually(conn: &mut common::Conn, path: &str, auth: &str, check: impl Fn(&Resp) -> bool) -> Resp {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = conn.send("GET", path, &[("authorization", auth)]).await;
        if check(&r) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_cluster_switch_applies_without_a_restart_or_a_dropped_connection() {
    let d = TempDeployment::new();
    let mut server = TestServer::with_config(d.config()).await;
    server.watch_files();
    let config = d.path("example/sipcfg.toml");
    let auth = format!("Bearer {}", server.token("device:SEP001122334455"));
    let path = "/SEP001122334455.cnf.xml";
    let mut conn = server.client().connect().await.unwrap();
    let before = conn.send("GET", path, &[("authorization", &auth)]).await;
    assert!(before.text().contains("<sipOAuthMode>1</sipOAuthMode>"));

    let out = sipcfg(&config, &["sip-oauth-mode", "status"]);
    assert_eq!(text(&out.stdout).trim(), "SIP OAuth mode is enabled");
    let out = sipcfg(&config, &["sip-oauth-mode", "disable"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let inventory = std::fs::read_to_string(d.path("example/inventory.toml")).unwrap();
    assert!(inventory.contains("sip_oauth_mode = false"));
    assert!(inventory.contains("# Phone security profiles."), "comments are kept");

    let after = eventually(&mut conn, path, &auth, |r| !r.text().contains("sipOAuthMode")).await;
    assert_eq!(after.status, StatusCode::OK, "downloads still need and accept the token");
    for absent in ["sipOAuthMode", "sipOAuthPort", "phoneEdgeTrust"] {
        assert!(!after.text().contains(absent), "{absent} while the cluster mode is disabled");
    }
    let r = conn.send("GET", path, &[]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "disabled mode never opens downloads to everyone");

    assert!(sipcfg(&config, &["sip-oauth-mode", "enable"]).status.success());
    let out = sipcfg(&config, &["cluster", "set", "--sip-oauth-port", "5190", "--refresh-login-flow", "on"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("SIP phone OAuth port: 5190"));
    assert!(text(&out.stdout).contains("OAuth with refresh login flow: enabled"));
    let again = eventually(&mut conn, path, &auth, |r| r.text().contains("<sipOAuthPort>5190</sipOAuthPort>")).await;
    assert!(again.text().contains("<sipOAuthMode>1</sipOAuthMode>"));
    assert!(again.text().contains("<sipOAuthPort>5190</sipOAuthPort>"), "{}", again.text());
}

#[test]
fn cluster_ports_are_validated_and_a_refused_change_writes_nothing() {
    let d = TempDeployment::new();
    let config = d.path("example/sipcfg.toml");
    let before = std::fs::read(d.path("example/inventory.toml")).unwrap();
    let out = sipcfg(&config, &["cluster", "set", "--sip-oauth-port", "80"]);
    assert_eq!(out.status.code(), Some(2), "clap refuses a port outside 1024-49151");
    let out = sipcfg(&config, &["cluster", "set", "--sip-oauth-port", "5091"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("sip_oauth_port and sip_mra_oauth_port must differ"), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(d.path("example/inventory.toml")).unwrap(), before, "nothing written");
    let leftovers: Vec<_> = std::fs::read_dir(d.path("example"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let out = sipcfg(&config, &["cluster", "show"]);
    assert!(text(&out.stdout).contains("SIP MRA OAuth port: 5091"));
}

#[tokio::test]
async fn oauth_devices_carry_the_phone_edge_trust_and_a_profile_change_shows_at_once() {
    let d = TempDeployment::new();
    let mut server = TestServer::with_config(d.config()).await;
    server.watch_files();
    let ca_sha = {
        let c = sipcfg::provision::trust::parse_ca_pem(
            &std::fs::read(repo().join("certs-example/ca.pem")).unwrap(),
            &repo().join("certs-example/ca.pem"),
            sipcfg::util::time::unix_now() as i64,
        )
        .unwrap();
        c.sha256
    };
    let oauth = server.client().get("/SEP001122334455.cnf.xml", Some(&server.token("user:jsmith"))).await;
    assert!(oauth.text().contains(&format!("<certificate sha256=\"{ca_sha}\"")), "{}", oauth.text());
    assert!(oauth.text().contains("<deviceSecurityMode>3</deviceSecurityMode>"));
    let plain = server.client().get("/SEPAABBCCDDEEFF.cnf.xml", Some(&server.token("user:adoe"))).await;
    assert!(!plain.text().contains("phoneEdgeTrust"));

    // Give adoe's 8841 a non-OAuth profile of its type: its next download shows it.
    d.append(
        "example/inventory.toml",
        "\n[profiles.\"Cisco 8841 - Non-Secure\"]\nphone_type = \"Cisco 8841\"\nsecurity_mode = \"non-secure\"\ntransport = \"udp\"\n",
    );
    d.edit(
        "example/inventory.toml",
        "profile = \"Cisco 8841 - Encrypted OAuth\"\nowner = \"adoe\"",
        "profile = \"Cisco 8841 - Non-Secure\"\nowner = \"adoe\"",
    );
    let auth = format!("Bearer {}", server.token("user:adoe"));
    let mut conn = server.client().connect().await.unwrap();
    let r = eventually(&mut conn, "/SEP001122334466.cnf.xml", &auth, |r| {
        r.text().contains("<deviceSecurityMode>1</deviceSecurityMode>")
    })
    .await;
    assert!(r.text().contains("<transportLayerProtocol>2</transportLayerProtocol>"), "{}", r.text());
    assert!(!r.text().contains("sipOAuthMode"));
}

/// The `<callManager>` of the member at `priority` in a rendered file.
fn call_manager(xml: &str, priority: usize) -> &str {
    let start =
        xml.find(&format!("<member priority=\"{priority}\">")).unwrap_or_else(|| panic!("no member {priority}"));
    let end = start + xml[start..].find("</member>").unwrap();
    &xml[start..end]
}

#[tokio::test]
async fn each_call_manager_carries_its_own_oauth_ports_in_device_files_and_xmldefault() {
    // The example's cucm-sub1 sets 5092/5093; cucm-pub has the cluster's 5090/5091.
    let server = TestServer::start().await;
    let token = server.token("user:jsmith");
    for path in ["/SEP001122334455.cnf.xml", "/CSFJSMITH.cnf.xml", "/XMLDefault.cnf.xml"] {
        let r = server.client().get(path, Some(&token)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        let xml = r.text();
        let (publisher, sub) = (call_manager(&xml, 0), call_manager(&xml, 1));
        for needle in [
            "<sipOAuthPort>5090</sipOAuthPort>",
            "<sipMRAOAuthPort>5091</sipMRAOAuthPort>",
            "<processNodeName>cucm-pub.example.test</processNodeName>",
        ] {
            assert!(publisher.contains(needle), "{path}: missing {needle} in\n{publisher}");
        }
        for needle in [
            "<sipOAuthPort>5092</sipOAuthPort>",
            "<sipMRAOAuthPort>5093</sipMRAOAuthPort>",
            "<processNodeName>cucm-sub1.example.test</processNodeName>",
            "<sipPort>5060</sipPort>",
            "<securedSipPort>5061</securedSipPort>",
        ] {
            assert!(sub.contains(needle), "{path}: missing {needle} in\n{sub}");
        }
    }
    // The line port of an OAuth device stays the cluster's.
    let r = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert!(r.text().contains("<port>5090</port>"), "{}", r.text());
}

#[test]
fn cluster_show_names_the_nodes_with_their_own_ports_and_a_clashing_default_is_refused() {
    let d = TempDeployment::new();
    let config = d.path("example/sipcfg.toml");
    let out = sipcfg(&config, &["cluster", "show"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("SIP phone OAuth port: 5090\nSIP MRA OAuth port: 5091\n"), "{shown}");
    assert!(
        shown.contains(
            "  call manager \"cucm-sub1\" (cucm-sub1.example.test): SIP phone OAuth port 5092 (its own), \
             SIP MRA OAuth port 5093 (its own)\n"
        ),
        "{shown}"
    );
    assert!(!shown.contains("\"cucm-pub\""), "a node on the cluster's ports gets no line: {shown}");

    // cucm-sub1 keeps its own phone port and takes the cluster's MRA port: a default equal to its phone
    // port is refused, naming the node and the keys, and nothing is written.
    d.edit("example/inventory.toml", ", sip_mra_oauth_port = 5093", "");
    let before = std::fs::read(d.path("example/inventory.toml")).unwrap();
    let out = sipcfg(&config, &["cluster", "show"]);
    assert!(text(&out.stdout).contains("SIP MRA OAuth port 5091 (the cluster's)"), "{}", text(&out.stdout));
    let out = sipcfg(&config, &["cluster", "set", "--sip-mra-oauth-port", "5092"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "call manager \"cucm-sub1\": sip_oauth_port (its own) and sip_mra_oauth_port (the cluster's) are both \
             5092: they must differ"
        ),
        "{err}"
    );
    let out = sipcfg(&config, &["cluster", "set", "--sip-oauth-port", "5061"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cluster: sip_oauth_port 5061 is also secured_sip_port"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(d.path("example/inventory.toml")).unwrap(), before, "nothing written");
}

#[tokio::test]
async fn jabber_files_carry_no_phone_edge_trust_and_phones_still_do() {
    let server = TestServer::start().await;
    let token = server.token("user:jsmith");
    let phone = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert!(phone.text().contains("<phoneEdgeTrust>\n    <certificate sha256="), "{}", phone.text());
    for jabber in ["CSFJSMITH", "BOTJSMITH", "TCTJSMITH", "TABJSMITH"] {
        let r = server.client().get(&format!("/{jabber}.cnf.xml"), Some(&token)).await;
        assert_eq!(r.status, StatusCode::OK, "{jabber}");
        let xml = r.text();
        assert!(xml.contains("<sipOAuthMode>1</sipOAuthMode>"), "{jabber} is an OAuth client:\n{xml}");
        assert!(!xml.contains("phoneEdgeTrust"), "{jabber} carries the Phone-Edge-Trust element:\n{xml}");
        assert!(!xml.contains("<certificate"), "{jabber}");
    }
}

#[tokio::test]
async fn signed_names_encrypted_names_and_xmldefault() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    let plain = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    let signed = server.client().get("/SEP001122334455.cnf.xml.sgn", Some(&token)).await;
    assert_eq!(signed.status, StatusCode::OK);
    assert_eq!(signed.body, plain.body, ".sgn answers with the unsigned file");
    assert_eq!(signed.header("etag"), plain.header("etag"));
    let lower = server.client().get("/sep001122334455.cnf.xml.sgn", Some(&token)).await;
    assert_eq!(lower.body, plain.body);

    let enc = server.client().get("/SEP001122334455.cnf.xml.enc.sgn", Some(&token)).await;
    assert_eq!(enc.status, StatusCode::NOT_FOUND);
    assert!(enc.text().contains("not supported with SIP OAuth"));
    // Another device's signed file is as forbidden as its plain one.
    let r = server.client().get("/SEP001122334466.cnf.xml.sgn", Some(&token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    let default = server.client().get("/XMLDefault.cnf.xml", Some(&token)).await;
    assert_eq!(default.status, StatusCode::OK);
    let xml = default.text();
    sipcfg::provision::xml::check_well_formed(&xml).unwrap();
    assert!(xml.contains("<processNodeName>cucm-pub.example.test</processNodeName>"), "{xml}");
    assert!(!xml.contains("<processNodeName>cucm-pub<"), "phones register to the address, not the node's name");
    assert!(xml.contains("<sipOAuthPort>5090</sipOAuthPort>"));
    assert!(!xml.contains("<line"), "no device data in XMLDefault");
    assert_eq!(server.client().get("/XMLDefault.cnf.xml", None).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn common_files_need_a_token_on_6971_and_never_leave_the_root() {
    let d = TempDeployment::new();
    std::fs::write(d.dir.path().join("secret.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(d.dir.path().join("secret.txt"), d.path("example/files/escape.txt")).unwrap();
    std::os::unix::fs::symlink(d.path("example/files/dialplan.xml"), d.path("example/files/alias.xml")).unwrap();
    let server = TestServer::with_config(d.config()).await;
    let token = server.token("device:SEP001122334455");
    let r = server.client().get("/dialplan.xml", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/xml; charset=utf-8"));
    assert!(r.text().contains("DIALTEMPLATE"));
    let etag = r.header("etag").unwrap().to_owned();
    let auth = format!("Bearer {token}");
    let again =
        server.client().send("GET", "/dialplan.xml", &[("authorization", &auth), ("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);

    assert_eq!(server.client().get("/dialplan.xml", None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.client().get("/alias.xml", Some(&token)).await.status, StatusCode::OK, "links inside the root");
    for outside in ["/escape.txt", "/..%2Fsecret.txt", "/%2E%2E", "/missing.xml", "/.hidden"] {
        let r = server.client().get(outside, Some(&token)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{outside}");
        assert!(!r.text().contains("outside"));
    }
}

#[tokio::test]
async fn caconfig_json_publishes_the_phone_edge_trust_set() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    let r = server.client().get("/caconfig.json", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    let certs = json["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1);
    assert!(certs[0]["subject"].as_str().unwrap().contains("Phone-Edge-Trust Root CA"));
    assert_eq!(server.client().get("/caconfig.json", None).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn cert_commands_manage_the_phone_edge_trust_store() {
    let d = TempDeployment::new();
    let config = d.path("example/sipcfg.toml");
    let mut server = TestServer::with_config(d.config()).await;
    server.watch_files();
    let out = sipcfg(&config, &["cert", "list"]);
    assert!(text(&out.stdout).contains("1 of 16 certificates"), "{}", text(&out.stdout));

    // Not PEM, not a CA: clear refusals.
    std::fs::write(d.path("junk.pem"), "hello").unwrap();
    let out = sipcfg(&config, &["cert", "add", "--purpose", "phone-edge-trust", d.path("junk.pem").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).to_lowercase().contains("pem"), "{}", text(&out.stderr));
    let leaf = d.path("certs-example/server.pem");
    let out = sipcfg(&config, &["cert", "add", "--purpose", "phone-edge-trust", leaf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a CA"), "{}", text(&out.stderr));

    // Fifteen more CAs fill the store; the seventeenth is refused.
    let mut shas = Vec::new();
    for i in 0..16 {
        let pem = rcgen_ca(&format!("Test CA {i}"));
        let file = d.path(&format!("ca{i}.pem"));
        std::fs::write(&file, pem).unwrap();
        let out = sipcfg(&config, &["cert", "add", "--purpose", "phone-edge-trust", file.to_str().unwrap()]);
        if i < 15 {
            assert!(out.status.success(), "{i}: {}", text(&out.stderr));
            shas.push(text(&out.stdout).split_whitespace().nth(1).unwrap().to_owned());
        } else {
            assert_eq!(out.status.code(), Some(1), "the 17th certificate is refused");
            assert!(text(&out.stderr).contains("16"), "{}", text(&out.stderr));
        }
    }
    let out = sipcfg(&config, &["cert", "list"]);
    assert!(text(&out.stdout).contains("16 of 16 certificates"));

    // The running server publishes the new set.
    let token = server.token("device:SEP001122334455");
    let auth = format!("Bearer {token}");
    let mut conn = server.client().connect().await.unwrap();
    let r = eventually(&mut conn, "/caconfig.json", &auth, |r| r.text().matches("\"sha256\"").count() == 16).await;
    assert_eq!(r.text().matches("\"sha256\"").count(), 16);

    let out = sipcfg(&config, &["cert", "remove", &shas[0][..12]]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = sipcfg(&config, &["cert", "list"]);
    assert!(text(&out.stdout).contains("15 of 16 certificates"));
}

fn rcgen_ca(name: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[test]
fn the_cluster_switch_comes_last_in_cucms_order() {
    let d = TempDeployment::new();
    let config = d.path("example/sipcfg.toml");
    let inventory = d.path("example/inventory.toml");
    let run = |args: &[&str]| sipcfg(&config, args);

    // The flow cannot be turned off under the switch: no phone could get or refresh a token.
    let out = run(&["cluster", "set", "--refresh-login-flow", "off"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("Disable SIP OAuth mode first"), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&inventory).unwrap().contains("refresh_login_flow = true"), "nothing written");

    // Switch off, flow off: the switch refuses to come on, and says which step is missing and how to do it.
    assert!(run(&["sip-oauth-mode", "disable"]).status.success());
    assert!(run(&["cluster", "set", "--refresh-login-flow", "off"]).status.success());
    let out = run(&["sip-oauth-mode", "enable"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("step 3 of docs/sip-oauth-task-flow.md, tokens") && err.contains("--refresh-login-flow on"),
        "{err}"
    );
    assert_eq!(text(&run(&["sip-oauth-mode", "status"]).stdout).trim(), "SIP OAuth mode is disabled");

    // An empty Phone-Edge-Trust store is step 2.
    for entry in std::fs::read_dir(d.path("example/phone-edge-trust")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    assert!(run(&["cluster", "set", "--refresh-login-flow", "on"]).status.success());
    let out = run(&["sip-oauth-mode", "enable"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("step 2 of docs/sip-oauth-task-flow.md, Phone-Edge-Trust"),
        "{}",
        text(&out.stderr)
    );

    // With both done, it comes on.
    let ca = d.path("certs-example/ca.pem");
    assert!(run(&["cert", "add", "--purpose", "phone-edge-trust", ca.to_str().unwrap()]).status.success());
    let out = run(&["sip-oauth-mode", "enable"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&run(&["sip-oauth-mode", "status"]).stdout).trim(), "SIP OAuth mode is enabled");
}

#[test]
fn a_new_deployment_starts_with_sip_oauth_mode_off_and_check_names_what_the_switch_lacks() {
    let d = TempDeployment::new();
    // The key absent: off, as in a new CUCM cluster.
    d.edit("example/inventory.toml", "sip_oauth_mode = true", "");
    let config = d.path("example/sipcfg.toml");
    assert_eq!(text(&sipcfg(&config, &["sip-oauth-mode", "status"]).stdout).trim(), "SIP OAuth mode is disabled");
    let out = sipcfg(&config, &["render", "SEP001122334455.cnf.xml"]);
    assert!(!text(&out.stdout).contains("sipOAuthMode"), "{}", text(&out.stdout));

    // Switched on by hand with the flow off: check warns, naming the step and the fix.
    d.edit("example/inventory.toml", "refresh_login_flow = true", "refresh_login_flow = false\nsip_oauth_mode = true");
    let out = sipcfg(&config, &["check"]);
    assert!(out.status.success(), "a warning, not an error: {}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: SIP OAuth mode is enabled, but step 3 of docs/sip-oauth-task-flow.md, tokens"),
        "{err}"
    );
}
