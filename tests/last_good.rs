//! A bad edit must not become an outage: the last deployment that loaded is kept in the state folder, a start
//! with broken files serves it (loudly), and `/readyz` and the metrics say when the files on disk are not
//! what serves.

mod common;

use std::time::{Duration, Instant};

use common::{TempDeployment, TestServer};
use http::StatusCode;

const PHONE: &str = "/SEP001122334455.cnf.xml";

async fn readyz(server: &TestServer) -> (StatusCode, String) {
    let r = server.admin_client().get("/readyz", None).await;
    (r.status, r.text())
}

#[tokio::test]
async fn a_start_with_broken_files_serves_the_last_deployment_that_loaded() {
    let d = TempDeployment::new();
    let first = TestServer::with_config(d.config()).await;
    let token = first.token("device:SEP001122334455");
    let before = first.client().get(PHONE, Some(&token)).await;
    assert_eq!(before.status, StatusCode::OK);
    let (status, text) = readyz(&first).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with("ready\n"), "{text}");
    first.shutdown().await;
    assert!(d.path("example/state/deployments/last-good").exists(), "the start kept what it loaded");

    // A bad edit, then a restart (as a package upgrade does).
    d.append("example/inventory.toml", "\n[devices.SEP0011223344AA]\nmodel = \"Cisco 8851\"\nprofile = \"nope\"\n");
    let mut server = TestServer::with_config(d.config()).await;
    let r = server.client().get(PHONE, Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK, "the phone still gets its file");
    assert_eq!(r.body, before.body, "the last good deployment's file");

    let (status, text) = readyz(&server).await;
    assert_eq!(status, StatusCode::OK, "still ready: it serves, and every node reads the same files");
    assert!(text.starts_with("ready, degraded: files\n"), "{text}");
    assert!(text.contains("unknown profile \"nope\""), "the first error is named: {text}");
    assert!(text.contains("serving the last deployment that loaded (saved at"), "{text}");
    let m = server.metrics().await;
    assert_eq!((m.get("sipcfg_files_loaded"), m.get("sipcfg_serving_last_good")), (0.0, 1.0));

    // Fixed on disk: the file watch loads the files, and the degraded state ends.
    server.watch_files();
    d.edit("example/inventory.toml", "profile = \"nope\"", "profile = \"Cisco 8851 - Encrypted OAuth\"");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !readyz(&server).await.1.starts_with("ready\n") {
        assert!(Instant::now() < deadline, "the fixed files were never loaded: {}", readyz(&server).await.1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = server.metrics().await;
    assert_eq!((m.get("sipcfg_files_loaded"), m.get("sipcfg_serving_last_good")), (1.0, 0.0));
    assert_eq!(
        server.client().get("/SEP0011223344AA.cnf.xml", Some(&server.token("device:SEP0011223344AA"))).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_refused_reload_shows_in_readyz_and_the_metrics_until_the_files_load() {
    let d = TempDeployment::new();
    let server = TestServer::with_config(d.config()).await;
    d.append("example/inventory.toml", "\n[devices.SEP0011223344AA]\nmodel = \"Cisco 9999\"\n");
    assert!(!server.reload_logged().await, "the reload is refused");
    let (status, text) = readyz(&server).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.starts_with("ready, degraded: files\n"), "{text}");
    assert!(text.contains("serving the deployment in force (generation 1)"), "{text}");
    assert_eq!(server.metrics().await.get("sipcfg_files_loaded"), 0.0);

    d.edit("example/inventory.toml", "\n[devices.SEP0011223344AA]\nmodel = \"Cisco 9999\"\n", "\n");
    assert!(server.reload_logged().await);
    assert!(readyz(&server).await.1.starts_with("ready\n"));
    assert_eq!(server.metrics().await.get("sipcfg_files_loaded"), 1.0);
}

#[test]
fn without_a_last_good_deployment_a_start_with_broken_files_fails_with_their_errors() {
    let d = TempDeployment::new();
    d.append("example/inventory.toml", "\n[devices.SEP0011223344AA]\nmodel = \"Cisco 8851\"\nprofile = \"nope\"\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--config"])
        .arg(d.path("example/sipcfg.toml"))
        .env_remove("SIPCFG_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown profile \"nope\""), "{err}");
}
