//! Crash safety of the token service: SIGKILL the real server in the middle of a refresh storm, restart
//! it, and check that no committed refresh token was lost and no family ever has two live tokens.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TempDeployment;
use http::StatusCode;
use tokio::sync::Mutex;

const GRANT: &str = "urn:sipcfg:grant-type:activation-code";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn serve(d: &TempDeployment, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["serve", "--admin-listen", "127.0.0.1:0", "--listen", &format!("127.0.0.1:{port}"), "--config"])
        .arg(d.path("example/sipcfg.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn client(port: u16) -> common::Client {
    common::Client::tls_to(format!("127.0.0.1:{port}").parse().unwrap())
}

async fn wait_ready(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if client(port).connect().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on {port} did not start");
}

fn digest(token: &str) -> Vec<u8> {
    sipcfg::auth::digest(token.as_bytes()).to_vec()
}

/// What one phone of the storm knows when the server dies.
#[derive(Default)]
struct Phone {
    /// Every refresh token the server answered with (committed and delivered).
    acknowledged: Vec<String>,
    /// The token of a request whose answer never came (the server died while answering).
    in_flight: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_refresh_storm_loses_nothing_and_never_forks_a_family() {
    let d = TempDeployment::new();
    // Only the HTTPS listener, on a port of this test.
    d.edit("example/sipcfg.toml", "listen = \"[::]:6970\"", "listen = \"127.0.0.1:0\"");
    let devices: Vec<String> = {
        let deployment = sipcfg::provision::inventory::Inventory::load(&d.path("example/inventory.toml")).unwrap();
        let mut names: Vec<String> =
            deployment.devices.values().filter(|x| x.enabled).map(|x| x.name.to_string()).collect();
        names.sort();
        names.truncate(16);
        names
    };
    let port = free_port();
    let mut server = serve(&d, port);
    wait_ready(port).await;

    // Onboard every phone.
    let mut phones = Vec::new();
    for device in &devices {
        let out = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
            .args(["activation-code", "create", "--device", device, "--config"])
            .arg(d.path("example/sipcfg.toml"))
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let r = client(port).post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let token = body["refresh_token"].as_str().unwrap().to_owned();
        phones.push(Arc::new(Mutex::new(Phone { acknowledged: vec![token], in_flight: None })));
    }

    // The storm: every phone refreshes as fast as it can, over kept-alive connections.
    let storm: Vec<_> = phones
        .iter()
        .map(|phone| {
            let phone = phone.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = client(port).connect().await else { return };
                loop {
                    let current = phone.lock().await.acknowledged.last().cloned().unwrap();
                    phone.lock().await.in_flight = Some(current.clone());
                    let body = format!("grant_type=refresh_token&refresh_token={current}");
                    let answer = conn
                        .request(
                            "POST",
                            "/oauth/token",
                            &[("content-type", "application/x-www-form-urlencoded")],
                            body.into(),
                        )
                        .await;
                    let Ok(r) = answer else { return };
                    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
                    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                    let mut p = phone.lock().await;
                    p.acknowledged.push(v["refresh_token"].as_str().unwrap().to_owned());
                    p.in_flight = None;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    for t in storm {
        let _ = t.await;
    }
    let rotations: usize = {
        let mut n = 0;
        for p in &phones {
            n += p.lock().await.acknowledged.len() - 1;
        }
        n
    };
    assert!(rotations > 50, "the storm was too small to mean anything: {rotations} rotations");

    // The database as the crash left it.
    let db = rusqlite::Connection::open(d.path("example/state/sipcfg.db")).unwrap();
    let mut forks = db
        .prepare(
            "SELECT family, COUNT(*) FROM refresh_tokens WHERE state = 'active' GROUP BY family HAVING COUNT(*) > 1",
        )
        .unwrap();
    let forked: Vec<String> = forks.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
    assert!(forked.is_empty(), "families with two live tokens: {forked:?}");
    let stored: HashSet<Vec<u8>> = db
        .prepare("SELECT digest FROM refresh_tokens")
        .unwrap()
        .query_map([], |row| row.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();

    // Restart, and check every phone against what it was told.
    let port = free_port();
    let mut server = serve(&d, port);
    wait_ready(port).await;
    let mut resumed = 0;
    for p in &phones {
        let p = p.lock().await;
        for t in &p.acknowledged {
            assert!(stored.contains(&digest(t)), "an acknowledged refresh token is missing from the database");
        }
        let last = p.acknowledged.last().unwrap();
        let live: Vec<(Vec<u8>, Option<Vec<u8>>)> = db
            .prepare("SELECT digest, parent FROM refresh_tokens WHERE state = 'active' AND family = (SELECT family FROM refresh_tokens WHERE digest = ?1)")
            .unwrap()
            .query_map([digest(last)], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(live.len(), 1, "each family has exactly one live token");
        if live[0].0 == digest(last) {
            // The phone's last token is the live one: it refreshes on the restarted server.
            let r = client(port)
                .post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", last)])
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            resumed += 1;
        } else {
            // Only possible when the answer to the phone's last request was lost with the server: the
            // rotation committed, and the live token is its child.
            assert_eq!(p.in_flight.as_deref(), Some(last.as_str()), "the live token moved past what the phone knows");
            assert_eq!(
                live[0].1.as_deref(),
                Some(digest(last).as_slice()),
                "the live token is the child of the last acknowledged one"
            );
        }
    }
    assert!(resumed > 0);
    server.kill().unwrap();
    server.wait().unwrap();
    eprintln!("{rotations} rotations before SIGKILL; {resumed}/{} phones resumed with their last token", phones.len());
}
