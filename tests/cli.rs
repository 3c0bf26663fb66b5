//! The command line: check, render, token, and serve's defaults, run as an administrator would.

mod common;

use std::process::{Command, Output};

use common::{TempDeployment, TestServer, repo};

fn sipcfg(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipcfg")).args(args).current_dir(repo()).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_passes_on_the_example_deployment() {
    let out = sipcfg(&["check"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok, 21 device configurations rendered"), "{}", text(&out.stdout));
}

#[test]
fn the_two_site_example_checks_and_renders_each_site_with_its_pool() {
    let config = "example/two-sites/sipcfg.toml";
    let out = sipcfg(&["check", "-c", config]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok, 5 device configurations rendered"), "{}", text(&out.stdout));

    let render = |file: &str| {
        let out = sipcfg(&["render", "-c", config, file]);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let nodes = |xml: &str| -> Vec<String> {
        xml.split("<processNodeName>").skip(1).map(|s| s.split('<').next().unwrap().to_owned()).collect()
    };
    let paris = render("SEP00CC11228851.cnf.xml");
    let chicago = render("SEP00DD11228851.cnf.xml");
    assert_eq!(nodes(&paris), ["cucm-sub1.paris.example.test", "cucm-pub.paris.example.test"]);
    assert_eq!(nodes(&chicago), ["cucm-sub2.chicago.example.test", "cucm-sub1.paris.example.test"]);
    assert!(paris.contains("<timeZone>Central Europe Standard/Daylight Time</timeZone>"), "{paris}");
    assert!(paris.contains("<dateTemplate>D.M.Y</dateTemplate>") && paris.contains("<networkLocale>France<"));
    assert!(chicago.contains("<timeZone>Central Standard/Daylight Time</timeZone>"), "{chicago}");
    assert!(chicago.contains("<dateTemplate>M/D/Ya</dateTemplate>"), "{chicago}");
    assert!(chicago.contains("<sipOAuthPort>5092</sipOAuthPort>"), "the Chicago node's own OAuth port: {chicago}");
    let jabber = render("CSFMDUPONT.cnf.xml");
    assert!(jabber.contains("<timeZone>Greenwich Standard Time</timeZone>"), "no pool: the cluster's: {jabber}");
    // Service URLs: the cluster's, and Paris's idle page; buttons and the module.
    assert!(paris.contains("<idleURL>https://intranet.paris.example.test/phone-idle</idleURL>"), "{paris}");
    assert!(paris.contains("<directoryURL>https://directory.example.test/xmldirectory</directoryURL>"));
    assert!(chicago.contains("<idleURL></idleURL>") && chicago.contains("<servicesURL>https://services.example.test/"));
    assert_eq!(chicago.matches("<featureID>21</featureID>").count(), 5, "{chicago}");
    assert!(chicago.contains("<deviceType>Cisco 8800 Key Expansion Module</deviceType>"), "{chicago}");
    assert!(!jabber.contains("URL>"), "Jabber files carry no service URL: {jabber}");
    let reception = render("SEP00CC11227821.cnf.xml");
    assert!(reception.contains("<line button=\"2\">") && reception.contains("<featureLabel>Marie</featureLabel>"));
}

#[test]
fn check_reports_every_error_with_file_and_entry() {
    let d = TempDeployment::new();
    d.edit(
        "example/inventory.toml",
        "owner = \"adoe\"\ndescription = \"Lobby phone\"",
        "owner = \"nobody\"\ndescription = \"Lobby phone\"",
    );
    d.edit(
        "example/inventory.toml",
        "profile = \"Cisco 8841 - Encrypted OAuth\"\nowner = \"adoe\"",
        "profile = \"Cisco 8851 - Encrypted OAuth\"\nowner = \"adoe\"",
    );
    d.append(
        "example/inventory.toml",
        "\n[devices.SEP00112233445Z]\nmodel = \"Cisco 8851\"\nprofile = \"Cisco 8851 - Encrypted OAuth\"\n",
    );
    let config = d.path("example/sipcfg.toml");
    let out = sipcfg(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let inventory = d.path("example/inventory.toml").display().to_string();
    for needle in [
        format!("{inventory}: device \"SEPAABBCCDDEEFF\": unknown owner user \"nobody\""),
        format!(
            "{inventory}: device \"SEP001122334466\": profile \"Cisco 8851 - Encrypted OAuth\" belongs to phone type \"Cisco 8851\", not to \"Cisco 8841\""
        ),
        format!("{inventory}: device \"SEP00112233445Z\": a SEP device name is SEP followed by the MAC address"),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
}

#[test]
fn check_reports_a_device_that_cannot_render() {
    let d = TempDeployment::new();
    d.edit("example/inventory.toml", "display_name = \"Lobby\"", "display_name = \"Lob\\u0007by\"");
    let out = sipcfg(&["check", "--config", d.path("example/sipcfg.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("device SEPAABBCCDDEEFF") && err.contains("U+0007"), "{err}");
}

#[test]
fn check_reports_a_broken_template_with_its_file_and_line() {
    let d = TempDeployment::new();
    std::fs::write(
        d.path("templates/models/cisco-7821.xml.j2"),
        "{% extends \"base.xml.j2\" %}\n{% block vendor_config %}{{ device.name }\n",
    )
    .unwrap();
    let out = sipcfg(&["check", "--config", d.path("example/sipcfg.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("cisco-7821.xml.j2: line 2"), "{err}");
}

#[test]
fn check_refuses_a_config_with_an_unknown_key() {
    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "[cache]", "[cache]\nmax_byte = 5");
    let out = sipcfg(&["check", "--config", d.path("example/sipcfg.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("sipcfg.toml: line") && err.contains("max_byte"), "{err}");
}

#[test]
fn render_prints_what_the_device_would_receive() {
    let out = sipcfg(&["render", "SEP001122334455.cnf.xml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let xml = text(&out.stdout);
    sipcfg::provision::xml::check_well_formed(&xml).unwrap();
    assert!(xml.contains("<sipOAuthMode>1</sipOAuthMode>"));
    let out = sipcfg(&["render", "SEP999999999999.cnf.xml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no device SEP999999999999"));
}

#[tokio::test]
async fn token_prints_only_a_token_that_the_server_accepts() {
    let out = sipcfg(&["token", "--device", "SEP001122334455", "--ttl", "120"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let token = stdout.trim_end();
    assert_eq!(stdout.lines().count(), 1);
    assert_eq!(token.split('.').count(), 3);
    let server = TestServer::start().await;
    let r = server.client().get("/SEP001122334455.cnf.xml", Some(token)).await;
    assert_eq!(r.status, http::StatusCode::OK);

    let out = sipcfg(&["token", "--user", "jsmith"]);
    assert!(out.status.success());
    let r = server.client().get("/CSFJSMITH.cnf.xml", Some(text(&out.stdout).trim_end())).await;
    assert_eq!(r.status, http::StatusCode::OK);
}

#[test]
fn token_refuses_clearly() {
    let out = sipcfg(&["token", "--device", "SEP999999999999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).is_empty());
    assert!(text(&out.stderr).contains("no such device"));

    let d = TempDeployment::new();
    let config = std::fs::read_to_string(d.path("example/sipcfg.toml")).unwrap();
    let without_signing = config.split("[auth.signing]").next().unwrap().to_owned()
        + "[inventory]\nfile = \"inventory.toml\"\ntemplates = \"../templates\"\n";
    std::fs::write(d.path("example/sipcfg.toml"), without_signing).unwrap();
    let out =
        sipcfg(&["token", "--config", d.path("example/sipcfg.toml").to_str().unwrap(), "--device", "SEP001122334455"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).is_empty());
    assert!(text(&out.stderr).contains("no signing key is configured"), "{}", text(&out.stderr));
}

#[test]
fn serve_without_config_outside_the_repository_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .arg("serve")
        .env_remove("SIPCFG_CONFIG")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    // Outside a source checkout, an installed sipcfg looks for /etc/sipcfg/sipcfg.toml (absent here).
    for needle in ["no configuration: /etc/sipcfg/sipcfg.toml does not exist", "-c FILE", "SIPCFG_CONFIG=FILE"] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
}

#[test]
fn the_configuration_goes_before_or_after_the_command_or_in_sipcfg_config() {
    let d = TempDeployment::new();
    let config = d.path("example/sipcfg.toml");
    let config = config.to_str().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |args: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipcfg"));
        cmd.args(args).current_dir(elsewhere.path()).env_remove("SIPCFG_CONFIG");
        if let Some(v) = env {
            cmd.env("SIPCFG_CONFIG", v);
        }
        cmd.output().unwrap()
    };
    for out in [
        run(&["-c", config, "check"], None),
        run(&["check", "--config", config], None),
        run(&["check"], Some(config)),
        run(&["cluster", "show", "-c", config], None),
    ] {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    // -c wins over SIPCFG_CONFIG.
    let out = run(&["-c", config, "check"], Some("/nonexistent/sipcfg.toml"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&["check"], Some("/nonexistent/sipcfg.toml"));
    assert!(text(&out.stderr).contains("/nonexistent/sipcfg.toml: cannot read"), "{}", text(&out.stderr));
}

#[test]
fn serve_warns_about_example_keys_and_listens_on_the_given_address() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["serve", "--admin-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0"])
        .current_dir(repo())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    while let Some(Ok(line)) = lines.next() {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("serving configuration files") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.contains("EXAMPLE KEYS IN USE"), "{seen}");
    assert!(seen.contains("127.0.0.1:"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_downloads_and_refusals_but_never_a_token() {
    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "listen = \"[::]:6970\"", "listen = \"127.0.0.1:0\"");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["serve", "--admin-listen", "127.0.0.1:0", "--listen", &addr.to_string(), "--config"])
        .arg(d.path("example/sipcfg.toml"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = common::Client::tls_to(addr);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while client.connect().await.is_err() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let token = TestServer::start().await.token("device:SEP001122334455");
    assert_eq!(client.get("/SEP001122334455.cnf.xml", Some(&token)).await.status, http::StatusCode::OK);
    assert_eq!(client.get("/SEP001122334466.cnf.xml", Some(&token)).await.status, http::StatusCode::FORBIDDEN);
    assert_eq!(client.get("/SEP001122334455.cnf.xml", Some("bad.to.ken")).await.status, http::StatusCode::UNAUTHORIZED);
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    let audit = std::fs::read_to_string(d.path("example/state/audit.log")).unwrap();
    assert!(!audit.contains(&token) && !audit.contains("bad.to.ken"), "a token reached the audit log");
    let lines: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let find = |status: u64| {
        lines.iter().find(|l| l["fields"]["status"] == status).unwrap_or_else(|| panic!("no {status} in {audit}"))
    };
    let ok = find(200);
    assert_eq!(ok["fields"]["path"], "/SEP001122334455.cnf.xml");
    assert_eq!(ok["fields"]["subject"], "device:SEP001122334455");
    assert!(ok["fields"]["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(ok["timestamp"].is_string());
    assert_eq!(find(403)["fields"]["reason"], "not-own");
    assert_eq!(find(401)["fields"]["reason"], "token-malformed");
}

/// A reload keeps `--listen` and `--admin-listen` (no false "changed" warning), and names every
/// restart-only setting the file changed, while the rest of the reload is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_command_line_listeners_and_names_restart_only_changes() {
    use std::io::{BufRead, BufReader};
    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "listen = \"[::]:6970\"", "listen = \"127.0.0.1:0\"");
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["serve", "--admin-listen", "127.0.0.1:0", "--listen", &addr.to_string(), "--config"])
        .arg(d.path("example/sipcfg.toml"))
        .env("SIPCFG_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A failed assertion must not leave the server running (and the test waiting for it).
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
    let _guard = KillOnDrop(child.id());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Lines up to one containing `want`; panics after 20 s.
    let until = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(want) => return seen,
                Ok(line) => seen.push(line),
                Err(_) => panic!("no {want:?} in {seen:#?}"),
            }
        }
    };
    until("serving configuration files");
    let hup = || assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());

    // Nothing changed in the file: the listeners given on the command line are not "changed".
    hup();
    let seen = until("reloaded");
    assert!(!seen.iter().any(|l| l.contains("only a restart applies")), "{seen:#?}");

    // A restart-only setting and an applied one change together: the warning names the first, the
    // reload goes through, and the server still answers on the command line's address.
    d.edit("example/sipcfg.toml", "[cache]", "[cache]\nprerender = false");
    d.edit("example/inventory.toml", "label = \"1001 John\"", "label = \"1001 Johnny\"");
    hup();
    let seen = until("reloaded");
    let warning = seen.iter().find(|l| l.contains("only a restart applies")).unwrap_or_else(|| panic!("{seen:#?}"));
    assert!(warning.contains("[cache]") && !warning.contains("[server]") && !warning.contains("[admin]"), "{warning}");
    // (The file watch may have reloaded once between the two edits: wait for the second change too.)
    let token = TestServer::start().await.token("device:SEP001122334455");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = common::Client::tls_to(addr).get("/SEP001122334455.cnf.xml", Some(&token)).await;
        if r.text().contains("1001 Johnny") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the inventory change was not applied");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
