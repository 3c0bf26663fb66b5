//! The shared store on a real PostgreSQL (started in a temporary folder): `store init` and `store export`,
//! nodes serving from it, changes made through one reaching the others, tokens across nodes, and what a
//! node does while PostgreSQL is down.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pg::Postgres;
use common::{ServeProcess, TempDeployment};
use http::StatusCode;
use sipcfg::auth::store::{AuthStore, NewRefreshToken, Rotation};
use sipcfg::config::StoreConfig;
use sipcfg::store::kek::Kek;
use sipcfg::store::postgres::PgStore;

const PHONE: &str = "/SEP001122334455.cnf.xml";
const GRANT: &str = "urn:sipcfg:grant-type:activation-code";

/// A deployment (a copy of the example) whose configuration names the shared store `pg` (database `db`).
fn clustered(pg: &Postgres, db: &str) -> TempDeployment {
    let d = TempDeployment::new();
    let url = format!("{}/{db}", pg.url().rsplit_once('/').unwrap().0);
    d.append(
        "example/sipcfg.toml",
        &format!(
            "\n[store]\nurl = \"{url}\"\npassword_file = \"{}\"\nkey_file = \"store.key\"\nresync_secs = 2\n",
            pg.password_file().display()
        ),
    );
    d
}

fn sipcfg(d: &TempDeployment, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .arg("-c")
        .arg(d.path("example/sipcfg.toml"))
        .args(args)
        .env_remove("SIPCFG_STORE_URL")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}

fn json(r: &common::Resp) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// A new database `name` owned by the test role.
fn database(pg: &Postgres, name: &str) {
    pg.psql(&format!("CREATE DATABASE {name} OWNER sipcfg"));
}

async fn serve(d: &TempDeployment) -> ServeProcess {
    ServeProcess::start(&d.path("example/sipcfg.toml"), "info").await
}

/// Polls `f` every 20 ms until it is true or `limit` passed; returns how long it took.
async fn within<F: std::future::Future<Output = bool>>(limit: Duration, mut f: impl FnMut() -> F) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f().await {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn code_for(d: &TempDeployment, device: &str) -> String {
    let out = sipcfg(d, &["activation-code", "create", "--device", device]);
    ok(&out);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn init_moves_the_deployment_in_once_and_export_gives_it_back_unchanged() {
    let pg = Postgres::start();
    database(&pg, "one");
    database(&pg, "two");
    let d = clustered(&pg, "one");
    // An activation code made before the move, in the embedded state database: it moves in too.
    let before = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["-c", &d.path("example/sipcfg.toml").display().to_string()])
        .args(["activation-code", "create", "--device", "SEP001122334455"])
        .env("SIPCFG_STORE_URL", "")
        .output()
        .unwrap();
    // With [store] in the file the command uses the store, which has no schema yet: it says what to run.
    let text = String::from_utf8_lossy(&before.stderr).into_owned();
    assert!(!before.status.success() && text.contains("sipcfg store init"), "{text}");

    let first = ok(&sipcfg(&d, &["store", "init"]));
    assert!(first.contains("created the key-encryption key"), "{first}");
    assert!(first.contains("schema created (version "), "{first}");
    assert!(first.contains("moved in from"), "{first}");
    let key = d.path("example/store.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let again = ok(&sipcfg(&d, &["store", "init"]));
    assert!(again.contains("schema is up to date") && again.contains("already holds a deployment"), "{again}");
    assert!(ok(&sipcfg(&d, &["check"])).contains("from postgres://"), "check reads the store");
    // The token service's first use makes its signing key, in the store; the code goes through the round trip.
    code_for(&d, "SEP001122334455");

    // Export, check the export as a deployment of files, move it into a second database, export again.
    let out1 = tempfile::tempdir().unwrap();
    let dir1 = out1.path().join("export");
    ok(&sipcfg(&d, &["store", "export", dir1.to_str().unwrap()]));
    let checked = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["-c", dir1.join("sipcfg.toml").to_str().unwrap(), "check"])
        .env_remove("SIPCFG_STORE_URL")
        .output()
        .unwrap();
    ok(&checked);
    let e = TempDeployment { dir: out1 };
    let url2 = format!("{}/two", pg.url().rsplit_once('/').unwrap().0);
    std::fs::copy(&key, e.path("export/store.key")).unwrap();
    e.append(
        "export/sipcfg.toml",
        &format!("\n[store]\nurl = \"{url2}\"\npassword_file = \"{}\"\n", pg.password_file().display()),
    );
    let moved = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["-c", e.path("export/sipcfg.toml").to_str().unwrap(), "store", "init"])
        .output()
        .unwrap();
    ok(&moved);
    let out2 = tempfile::tempdir().unwrap();
    let dir2 = out2.path().join("export");
    let exported = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["-c", e.path("export/sipcfg.toml").to_str().unwrap(), "store", "export", dir2.to_str().unwrap()])
        .output()
        .unwrap();
    ok(&exported);
    // The round trip changes nothing: the same inventory and certificates, byte for byte.
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(read(&dir1.join("inventory.toml")), read(&dir2.join("inventory.toml")));
    for store in ["phone-edge-trust", "tomcat-trust"] {
        let names = |d: &Path| {
            let mut n: Vec<_> = std::fs::read_dir(d.join(store)).unwrap().map(|e| e.unwrap().file_name()).collect();
            n.sort();
            n
        };
        assert_eq!(names(&dir1), names(&dir2));
        for n in names(&dir1) {
            assert_eq!(read(&dir1.join(store).join(&n)), read(&dir2.join(store).join(&n)));
        }
    }
    // And the same token state (the signing keys decrypted and encrypted again with the same key).
    let dump = |p: &Path| sipcfg::store::sqlite::SqliteStore::open(&p.join("state.db")).unwrap().dump().unwrap();
    assert_eq!(dump(&dir1), dump(&dir2));
    // The inventory served is the example's: every device renders the same from the store and from files.
    let render = |args: &[&str], out: &Path| {
        ok(&Command::new(env!("CARGO_BIN_EXE_sipcfg"))
            .args(args)
            .args(["render", "--all", "--out", out.to_str().unwrap()])
            .env_remove("SIPCFG_STORE_URL")
            .output()
            .unwrap());
    };
    let from_store = tempfile::tempdir().unwrap();
    let from_files = tempfile::tempdir().unwrap();
    render(&["-c", d.path("example/sipcfg.toml").to_str().unwrap()], from_store.path());
    render(&["-c", common::repo().join("example/sipcfg.toml").to_str().unwrap()], from_files.path());
    let mut files: Vec<_> = std::fs::read_dir(from_files.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    files.sort();
    assert!(files.len() > 10);
    for f in files {
        assert_eq!(read(&from_store.path().join(&f)), read(&from_files.path().join(&f)), "{f:?}");
    }
    // The signing keys' private parts are not in the database in the clear.
    let rows = pg.psql_in("one", "SELECT encode(private_key, 'escape') FROM signing_keys");
    assert!(!rows.is_empty() && !rows.contains("PRIVATE KEY"), "{rows}");
}

#[test]
fn device_pools_share_the_cluster_document_and_survive_a_cluster_setting() {
    let pg = Postgres::start();
    database(&pg, "pools");
    let d = TempDeployment::new();
    let config = d.path("example/two-sites/sipcfg.toml");
    let url = format!("{}/pools", pg.url().rsplit_once('/').unwrap().0);
    d.append(
        "example/two-sites/sipcfg.toml",
        &format!(
            "\n[store]\nurl = \"{url}\"\npassword_file = \"{}\"\nkey_file = \"store.key\"\n",
            pg.password_file().display()
        ),
    );
    let run = |args: &[&str]| {
        ok(&Command::new(env!("CARGO_BIN_EXE_sipcfg"))
            .arg("-c")
            .arg(&config)
            .args(args)
            .env_remove("SIPCFG_STORE_URL")
            .output()
            .unwrap())
    };
    let files = common::repo().join("example/two-sites/sipcfg.toml");
    let from_files = |file: &str| {
        ok(&Command::new(env!("CARGO_BIN_EXE_sipcfg")).arg("-c").arg(&files).args(["render", file]).output().unwrap())
    };
    run(&["store", "init"]);
    let stored = pg.psql_in("pools", "SELECT doc->'device_pools'->'DP Paris'->>'cm_group' FROM cluster");
    assert!(stored.contains("CMG Paris"), "{stored}");
    for file in ["SEP00CC11228851.cnf.xml", "SEP00DD11228851.cnf.xml", "CSFMDUPONT.cnf.xml"] {
        assert_eq!(run(&["render", file]), from_files(file), "{file} renders the same from the store");
    }

    // A cluster setting writes the cluster's document again: the pools and groups stay in it.
    run(&["cluster", "set", "--sip-oauth-port", "5095"]);
    let chicago = run(&["render", "SEP00DD11228851.cnf.xml"]);
    assert!(chicago.contains("<processNodeName>cucm-sub2.chicago.example.test</processNodeName>"), "{chicago}");
    assert!(chicago.contains("<timeZone>Central Standard/Daylight Time</timeZone>"), "{chicago}");
    let paris = run(&["render", "SEP00CC11228851.cnf.xml"]);
    assert!(paris.contains("<sipOAuthPort>5095</sipOAuthPort>"), "the new cluster port: {paris}");

    // And an export gives them back as the inventory file writes them.
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("export");
    run(&["store", "export", dir.to_str().unwrap()]);
    let exported = std::fs::read_to_string(dir.join("inventory.toml")).unwrap();
    for needle in ["[device_pools.\"DP Chicago\"]", "[cm_groups.\"CMG Paris\"]", "[date_time_groups.Chicago]"] {
        assert!(exported.contains(needle), "missing {needle} in:\n{exported}");
    }
    assert!(exported.contains("pool = \"DP Paris\""), "{exported}");
    // Service URLs and buttons travel through the store and back.
    assert!(exported.contains("idle_timeout = 600") && exported.contains("key_expansion_modules = 1"), "{exported}");

    // An import into the store creates the owners it is asked to, in the same change as the devices.
    let csv = out.path().join("new.csv");
    std::fs::write(
        &csv,
        "DEVICE NAME,DEVICE TYPE,DEVICE SECURITY PROFILE,DEVICE POOL,OWNER USER ID,DIRECTORY NUMBER 1,\
         BUSY LAMP FIELD DESTINATION 1\n\
         SEP00EE11228851,Cisco 8851,Cisco 8851 - Encrypted OAuth,DP Paris,pnew,2101,2001\n",
    )
    .unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .arg("-c")
        .arg(&config)
        .args(["import", csv.to_str().unwrap()])
        .env_remove("SIPCFG_STORE_URL")
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    run(&["import", "--create-users", csv.to_str().unwrap()]);
    let user = pg.psql_in("pools", "SELECT doc->>'name' FROM users WHERE id = 'pnew'");
    assert!(user.contains("pnew"), "{user}");
    let new = run(&["render", "SEP00EE11228851.cnf.xml"]);
    assert!(new.contains("<speedDialNumber>2001</speedDialNumber>"), "{new}");
    assert!(new.contains("<idleURL>https://intranet.paris.example.test/phone-idle</idleURL>"), "{new}");
}

#[tokio::test]
async fn two_nodes_share_tokens_and_changes_and_ride_out_an_outage() {
    let pg = Postgres::start();
    database(&pg, "shared");
    let d = clustered(&pg, "shared");
    ok(&sipcfg(&d, &["store", "init"]));
    let a = serve(&d).await;
    let b = serve(&d).await;

    // Onboard on A, refresh on B, download from both.
    let code = code_for(&d, "SEP001122334455");
    let r = a.client().post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let refresh = json(&r)["refresh_token"].as_str().unwrap().to_owned();
    let r = b.client().post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let t = json(&r);
    let access = t["access_token"].as_str().unwrap().to_owned();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(a.client().get(PHONE, Some(&access)).await.status, StatusCode::OK);
    assert_eq!(b.client().get(PHONE, Some(&access)).await.status, StatusCode::OK);

    // A device edit (an import) reaches both nodes' files.
    let csv = d.path("edit.csv");
    std::fs::write(
        &csv,
        "DEVICE NAME,DEVICE TYPE,DEVICE SECURITY PROFILE,DIRECTORY NUMBER 1,LINE TEXT LABEL 1\n\
         SEP001122334455,Cisco 8851,Cisco 8851 - Encrypted OAuth,1001,Edited in the store\n",
    )
    .unwrap();
    ok(&sipcfg(&d, &["import", "--update", csv.to_str().unwrap()]));
    for node in [&a, &b] {
        let seen = within(Duration::from_secs(2), || async {
            node.client().get(PHONE, Some(&access)).await.text().contains("Edited in the store")
        })
        .await;
        assert!(seen.is_some(), "the edit did not reach {}", node.addr);
    }

    // PostgreSQL stops: downloads go on, grants answer 503 with Retry-After, /readyz says why.
    pg.stop();
    let r = a.client().post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(json(&r)["error"], "temporarily_unavailable");
    assert_eq!(a.client().get(PHONE, Some(&access)).await.status, StatusCode::OK);
    assert_eq!(b.client().get(PHONE, Some(&access)).await.status, StatusCode::OK);
    let degraded = within(Duration::from_secs(10), || async {
        let r = common::Client::plain_to(a.admin).get("/readyz", None).await;
        r.status == StatusCode::OK && r.text().contains("degraded: store")
    })
    .await;
    assert!(degraded.is_some(), "{}", common::Client::plain_to(a.admin).get("/readyz", None).await.text());
    assert_eq!(a.metrics().await.get("sipcfg_store_up"), 0.0);

    // Back: grants work again within 10 s, and the refresh token was not lost.
    pg.start_again();
    let back = within(Duration::from_secs(10), || async {
        let r =
            a.client().post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
        r.status == StatusCode::OK
    })
    .await;
    assert!(back.is_some(), "grants did not come back:\n{}", a.log());
    assert_eq!(a.metrics().await.get("sipcfg_store_up"), 1.0);

    // A revocation from the command line is in force on both before the command returns.
    let out = sipcfg(&d, &["token", "revoke", "--device", "SEP001122334455"]);
    let text = ok(&out);
    assert!(text.contains("every running server"), "{text}");
    assert_eq!(a.client().get(PHONE, Some(&access)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(b.client().get(PHONE, Some(&access)).await.status, StatusCode::UNAUTHORIZED);
    a.stop();
    b.stop();
}

#[tokio::test]
async fn a_node_started_while_the_store_is_down_says_so_and_starts_when_it_is_back() {
    let pg = Postgres::start();
    database(&pg, "late");
    let d = clustered(&pg, "late");
    ok(&sipcfg(&d, &["store", "init"]));
    pg.stop();
    let config = d.path("example/sipcfg.toml");
    let starting = tokio::spawn(async move { ServeProcess::start(&config, "info").await });
    let log = d.path("example/sipcfg.stderr.log");
    let said = within(Duration::from_secs(20), || async {
        std::fs::read_to_string(&log).unwrap_or_default().contains("the shared store is unreachable")
    })
    .await;
    assert!(said.is_some(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    pg.start_again();
    let node = starting.await.unwrap();
    let ready = common::Client::plain_to(node.admin).get("/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    node.stop();
}

#[tokio::test]
async fn racing_rotations_have_one_winner_and_a_family_never_has_two_live_tokens() {
    let pg = Postgres::start();
    database(&pg, "race");
    let d = clustered(&pg, "race");
    ok(&sipcfg(&d, &["store", "init"]));
    let key = Kek::load(&d.path("example/store.key")).unwrap();
    let config = StoreConfig {
        url: format!("{}/race", pg.url().rsplit_once('/').unwrap().0),
        password_file: Some(pg.password_file()),
        key_file: d.path("example/store.key"),
        max_connections: 10,
        connect_timeout_secs: 5,
        resync_secs: 5,
    };
    // Two "nodes": two pools.
    let stores: Vec<Arc<PgStore>> =
        (0..2).map(|_| Arc::new(PgStore::open(&config, Some(Kek::load(key.path()).unwrap())).unwrap())).collect();
    let digest = |a: u8, b: u8| {
        let mut d = [0u8; 32];
        d[0] = a;
        d[1] = b;
        d
    };
    let token = |d: [u8; 32]| NewRefreshToken {
        digest: d,
        family: "f".into(),
        subject: "device:SEP001122334455".into(),
        issued: 100,
        expires: i64::MAX / 2,
    };
    for grace in [0, 30] {
        for round in 0..10u8 {
            let first = digest(round, 0);
            let code = digest(200 + round, grace as u8);
            let id = format!("race-{grace}-{round}");
            stores[0].add_activation_code(&id, &code, "SEP001122334455", 100, i64::MAX / 2).await.unwrap();
            stores[0].redeem_activation_code(&code, 100, &token(first)).await.unwrap().unwrap();
            let tasks: Vec<_> = (1..=8u8)
                .map(|t| {
                    let store = stores[usize::from(t % 2)].clone();
                    let next = token(digest(round, t));
                    tokio::spawn(async move { store.rotate_refresh_token(&first, 200, &next, grace).await.unwrap() })
                })
                .collect();
            let mut outcomes = Vec::new();
            for t in tasks {
                outcomes.push(t.await.unwrap());
            }
            let rotated = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated { .. })).count();
            assert_eq!(rotated, 1, "grace {grace} round {round}: {outcomes:?}");
            let live = pg.psql_in(
                "race",
                "SELECT family, count(*) FROM refresh_tokens WHERE state = 'active' GROUP BY family HAVING count(*) > 1",
            );
            assert!(live.trim().is_empty(), "two live tokens in a family: {live}");
            pg.psql_in("race", "DELETE FROM refresh_tokens");
        }
    }
}

#[tokio::test]
async fn cluster_settings_certificates_and_key_rotations_reach_every_node() {
    let pg = Postgres::start();
    database(&pg, "admin");
    let d = clustered(&pg, "admin");
    ok(&sipcfg(&d, &["store", "init"]));
    let a = serve(&d).await;
    let b = serve(&d).await;
    let code = code_for(&d, "SEP001122334455");
    let r = a.client().post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let access = json(&r)["access_token"].as_str().unwrap().to_owned();

    // A cluster setting is a full reload on every node: the new port is in both nodes' files.
    let out = ok(&sipcfg(&d, &["cluster", "set", "--sip-oauth-port", "5095"]));
    assert!(out.contains("5095"), "{out}");
    for node in [&a, &b] {
        let seen = within(Duration::from_secs(2), || async {
            node.client().get(PHONE, Some(&access)).await.text().contains("<sipOAuthPort>5095</sipOAuthPort>")
        })
        .await;
        assert!(seen.is_some(), "the setting did not reach {}:\n{}", node.addr, node.log());
    }
    // A change that breaks a rule is refused before anything is written, naming the rule.
    let refused = sipcfg(&d, &["cluster", "set", "--sip-oauth-port", "5060"]);
    assert!(!refused.status.success(), "the SIP port cannot be the OAuth port");
    assert!(ok(&sipcfg(&d, &["cluster", "show"])).contains("5095"));

    // The certificate stores are in the store: add to Tomcat-trust, list, remove.
    let ca = common::repo().join("certs-example/ca.pem");
    let added = ok(&sipcfg(&d, &["cert", "add", "--purpose", "tomcat-trust", ca.to_str().unwrap()]));
    assert!(added.contains("added: "), "{added}");
    let listed = ok(&sipcfg(&d, &["cert", "list", "--purpose", "tomcat-trust"]));
    assert!(listed.contains("1 of "), "{listed}");
    let sha = listed.split_whitespace().next().unwrap().to_owned();
    let again = sipcfg(&d, &["cert", "add", "--purpose", "tomcat-trust", ca.to_str().unwrap()]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("already"));
    ok(&sipcfg(&d, &["cert", "remove", "--purpose", "tomcat-trust", &sha[..12]]));
    assert!(ok(&sipcfg(&d, &["cert", "list", "--purpose", "tomcat-trust"])).contains("0 of "));

    // A key rotation: tokens signed with the new key by one node verify on the other.
    let rotated = ok(&sipcfg(&d, &["keys", "rotate"]));
    let kid = rotated.split_whitespace().nth(3).unwrap().trim_end_matches(';').to_owned();
    for node in [&a, &b] {
        let jwks = within(Duration::from_secs(2), || async {
            node.client().get("/.well-known/jwks.json", None).await.text().contains(&kid)
        })
        .await;
        assert!(jwks.is_some(), "{} does not publish {kid}", node.addr);
    }
    let code = code_for(&d, "SEP001122334455");
    let r = b.client().post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    let fresh = json(&r)["access_token"].as_str().unwrap().to_owned();
    let header = fresh.split('.').next().unwrap();
    use base64::Engine;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap();
    assert!(String::from_utf8_lossy(&header).contains(&kid), "signed with the new key");
    assert_eq!(a.client().get(PHONE, Some(&fresh)).await.status, StatusCode::OK);
    // The token issued before the rotation still verifies (its key retires when its last token expired).
    assert_eq!(a.client().get(PHONE, Some(&access)).await.status, StatusCode::OK);
    a.stop();
    b.stop();
}

/// The console's state in the shared store: accounts, sessions, API tokens, the audit trail, each phone's
/// last download (the newest wins, whichever node wrote it), refresh-token families and a placeholder's
/// code retargeted once.
#[tokio::test]
async fn accounts_downloads_and_families_are_shared_by_every_node() {
    use sipcfg::auth::accounts::{Account, AccountStore, AuditEvent, Download, Role};
    let pg = Postgres::start();
    database(&pg, "console");
    let d = clustered(&pg, "console");
    ok(&sipcfg(&d, &["store", "init"]));
    let config = StoreConfig {
        url: format!("{}/console", pg.url().rsplit_once('/').unwrap().0),
        password_file: Some(pg.password_file()),
        key_file: d.path("example/store.key"),
        max_connections: 10,
        connect_timeout_secs: 5,
        resync_secs: 5,
    };
    let nodes: Vec<PgStore> = (0..2)
        .map(|_| PgStore::open(&config, Some(Kek::load(&d.path("example/store.key")).unwrap())).unwrap())
        .collect();
    let (a, b) = (&nodes[0], &nodes[1]);
    let alice = Account { name: "alice".into(), role: Role::Admin, created: 100 };
    assert!(a.add_account(&alice, "$argon2id$h").await.unwrap());
    assert!(!b.add_account(&alice, "$argon2id$h").await.unwrap(), "one name, once, across nodes");
    a.add_session(&[7; 32], "alice", "c", 100, 1000).await.unwrap();
    assert_eq!(b.session(&[7; 32], 500).await.unwrap().unwrap().account, alice, "a session works on every node");
    assert_eq!(b.session(&[7; 32], 1000).await.unwrap(), None);
    a.add_api_token(&[8; 32], "alice", 100).await.unwrap();
    assert_eq!(b.api_token_account(&[8; 32]).await.unwrap(), Some(alice.clone()));
    let event = |at| AuditEvent {
        at,
        actor: "admin:alice".into(),
        address: "192.0.2.9".into(),
        action: "device.delete".into(),
        target: "SEP001122334455".into(),
        detail: String::new(),
    };
    a.audit(&event(1)).await.unwrap();
    b.audit(&event(2)).await.unwrap();
    let trail = a.audit_trail(None, 10).await.unwrap();
    let ours: Vec<i64> = trail.iter().filter(|e| e.event.action == "device.delete").map(|e| e.event.at).collect();
    assert_eq!(ours, vec![2, 1], "newest first, from either node");
    assert_eq!(trail.last().map(|e| e.event.action.as_str()), Some("store.init"), "the command is in the trail too");

    let download = |at, status| Download {
        at,
        address: "192.0.2.1".parse().unwrap(),
        file: "SEP001122334455.cnf.xml".into(),
        status,
        user_agent: "Cisco-CP8851".into(),
    };
    let s = "device:SEP001122334455".to_owned();
    a.record_downloads(&[(s.clone(), download(200, 200)), ("user:jsmith".into(), download(150, 304))]).await.unwrap();
    b.record_downloads(&[(s.clone(), download(180, 403))]).await.unwrap();
    assert_eq!(b.last_download(&s).await.unwrap(), Some(download(200, 200)), "an older record never replaces a newer");
    let seen = a.downloads_seen().await.unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[&s], 200);
    assert!(a.remove_account("alice").await.unwrap());
    assert_eq!(b.api_token_account(&[8; 32]).await.unwrap(), None, "its tokens went with it");

    // Families, and a placeholder's code taken by exactly one phone.
    let code = [9; 32];
    a.add_activation_code("p1", &code, "BAT00000000A1B2", 100, i64::MAX / 2).await.unwrap();
    assert!(a.retarget_activation_code(&code, "BAT00000000A1B2", "SEP0A1B2C3D4E5F", 200).await.unwrap());
    assert!(!b.retarget_activation_code(&code, "BAT00000000A1B2", "SEP0A1B2C3D4E5E", 200).await.unwrap());
    let first =
        NewRefreshToken { digest: [10; 32], family: "f1".into(), subject: String::new(), issued: 200, expires: 10_000 };
    assert_eq!(b.redeem_activation_code(&code, 200, &first).await.unwrap().as_deref(), Some("SEP0A1B2C3D4E5F"));
    let families = a.families(Some("device:SEP0A1B2C3D4E5F"), 300).await.unwrap();
    assert_eq!(families.len(), 1);
    assert_eq!((families[0].state, families[0].created), ("live", 200));
    a.revoke_subject("device:SEP0A1B2C3D4E5F", 400, 10_000).await.unwrap();
    assert_eq!(b.families(None, 500).await.unwrap()[0].state, "revoked");
}
