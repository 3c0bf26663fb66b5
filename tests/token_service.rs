//! The refresh login flow: activation codes, the token endpoint with rotation and reuse detection,
//! revocation (CLI and RFC 7009), keys (JWKS, rotate, regen), abuse limits.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Resp, TempDeployment, TestServer};
use http::StatusCode;
use serde_json::Value;

const GRANT: &str = "urn:sipcfg:grant-type:activation-code";
const PHONE: &str = "/SEP001122334455.cnf.xml";

fn sipcfg(d: &TempDeployment, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(args)
        .arg("--config")
        .arg(d.path("example/sipcfg.toml"))
        .output()
        .unwrap()
}

/// A command run while a server of the deployment runs in this test's runtime: `token revoke` waits for
/// the running server to apply the revocation, so the runtime must keep serving meanwhile.
async fn sipcfg_while_serving(d: &TempDeployment, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(args)
        .arg("--config")
        .arg(d.path("example/sipcfg.toml"))
        .output()
        .await
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json(r: &Resp) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

fn code_for(d: &TempDeployment, device: &str) -> String {
    let out = sipcfg(d, &["activation-code", "create", "--device", device]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let code = text(&out.stdout).trim().to_owned();
    assert_eq!(code.len(), 16, "{code}");
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    code
}

async fn started(d: &TempDeployment) -> TestServer {
    let mut server = TestServer::with_config(d.config()).await;
    server.watch_files();
    server
}

fn assert_grant_error(r: &Resp, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(json(r)["error"], code, "{}", r.text());
}

/// Polls until a download with `token` gets `status` (the server picks up CLI changes within ~100 ms).
async fn until_status(server: &TestServer, token: &str, status: StatusCode) -> StatusCode {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = server.client().get(PHONE, Some(token)).await.status;
        if got == status || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_phone_onboards_downloads_refreshes_and_is_revoked() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let code = code_for(&d, "SEP001122334455");
    let client = server.client();

    // Redeem the activation code.
    let r = client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let t = json(&r);
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 3600);
    assert_eq!(t["refresh_token_expires_in"], 60 * 86_400);
    let access = t["access_token"].as_str().unwrap().to_owned();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();

    // Download with the access token; it opens nothing else.
    assert_eq!(client.get(PHONE, Some(&access)).await.status, StatusCode::OK);
    assert_eq!(client.get("/SEP001122334466.cnf.xml", Some(&access)).await.status, StatusCode::FORBIDDEN);

    // The code is single use.
    let again = client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_grant_error(&again, StatusCode::BAD_REQUEST, "invalid_grant");

    // Refresh: a new access token and a new refresh token (rotation).
    let r = client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let t2 = json(&r);
    let access2 = t2["access_token"].as_str().unwrap().to_owned();
    let refresh2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh2, refresh);
    assert_eq!(client.get(PHONE, Some(&access2)).await.status, StatusCode::OK);

    // Revoked from the command line: the access token is refused from then on, before it expires.
    let out = sipcfg_while_serving(&d, &["token", "revoke", "--device", "SEP001122334455"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(until_status(&server, &access2, StatusCode::UNAUTHORIZED).await, StatusCode::UNAUTHORIZED);
    let r = client.get(PHONE, Some(&access2)).await;
    assert!(r.header("www-authenticate").unwrap().contains("invalid_token"));
    let r = client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh2)]).await;
    assert_grant_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");

    // A new activation code onboards the device again, at once (even within the second of the revocation).
    let code = code_for(&d, "SEP001122334455");
    let r = client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    let fresh = json(&r)["access_token"].as_str().unwrap().to_owned();
    assert_eq!(client.get(PHONE, Some(&fresh)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_rotated_refresh_token_presented_again_revokes_its_family() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let client = server.client();
    let code = code_for(&d, "CSFJSMITH");
    let t = json(&client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await);
    let first = t["refresh_token"].as_str().unwrap().to_owned();
    let t =
        json(&client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &first)]).await);
    let second = t["refresh_token"].as_str().unwrap().to_owned();
    // The phone uses its new token, so the first one is spent for good.
    let t =
        json(&client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &second)]).await);
    let third = t["refresh_token"].as_str().unwrap().to_owned();
    // Replay of the first token (a thief, or a duplicate), even within the reuse grace window: refused, and
    // the live one dies with it.
    let r = client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &first)]).await;
    assert_grant_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
    assert!(json(&r)["error_description"].as_str().unwrap().contains("family"));
    let r = client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &third)]).await;
    assert_grant_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn a_phone_that_lost_the_answer_to_its_refresh_retries_within_the_grace_window() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let client = server.client();
    let refresh = |token: String| {
        let client = client.clone();
        async move { client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &token)]).await }
    };
    let code = code_for(&d, "SEP001122334455");
    let t = json(&client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await);
    let first = t["refresh_token"].as_str().unwrap().to_owned();
    // The answer to this refresh never reaches the phone...
    let lost = json(&refresh(first.clone()).await)["refresh_token"].as_str().unwrap().to_owned();
    // ...so it presents the same token again: a valid answer, and the family lives on.
    let r = refresh(first.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let retried = json(&r);
    let access = retried["access_token"].as_str().unwrap().to_owned();
    assert_eq!(client.get(PHONE, Some(&access)).await.status, StatusCode::OK);
    let next = retried["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh(next).await.status, StatusCode::OK, "the retried token refreshes");
    // The answer that was lost is superseded: refused, without harm to the family.
    assert_grant_error(&refresh(lost).await, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn without_a_grace_window_the_first_replay_revokes_the_family() {
    let d = TempDeployment::new();
    d.edit("example/sipcfg.toml", "purge_interval_secs = 3600", "purge_interval_secs = 3600\nreuse_grace_secs = 0");
    let server = started(&d).await;
    let client = server.client();
    let code = code_for(&d, "SEP001122334455");
    let t = json(&client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await);
    let first = t["refresh_token"].as_str().unwrap().to_owned();
    let t =
        json(&client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &first)]).await);
    let second = t["refresh_token"].as_str().unwrap().to_owned();
    let r = client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &first)]).await;
    assert_grant_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
    let r = client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &second)]).await;
    assert_grant_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test]
async fn rfc7009_revocation_kills_refresh_and_access_tokens() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let client = server.client();
    let code = code_for(&d, "SEP001122334466");
    let t = json(&client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await);
    let access = t["access_token"].as_str().unwrap().to_owned();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    let r = client.post_form("/oauth/revoke", &[("token", &refresh), ("token_type_hint", "refresh_token")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(client.get("/SEP001122334466.cnf.xml", Some(&access)).await.status, StatusCode::UNAUTHORIZED);
    let r = client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_grant_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
    // Unknown tokens are no error (RFC 7009 §2.2).
    assert_eq!(client.post_form("/oauth/revoke", &[("token", "nonsense")]).await.status, StatusCode::OK);
    // Revoking by access token works too.
    let code = code_for(&d, "SEPAABBCCDDEEFF");
    let t = json(&client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await);
    let access = t["access_token"].as_str().unwrap().to_owned();
    assert_eq!(client.get("/SEPAABBCCDDEEFF.cnf.xml", Some(&access)).await.status, StatusCode::OK);
    assert_eq!(client.post_form("/oauth/revoke", &[("token", &access)]).await.status, StatusCode::OK);
    assert_eq!(client.get("/SEPAABBCCDDEEFF.cnf.xml", Some(&access)).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_token_endpoint_speaks_rfc6749_errors() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let client = server.client();
    type Case<'a> = (Vec<(&'a str, &'a str)>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (vec![], StatusCode::BAD_REQUEST, "invalid_request"),
        (vec![("grant_type", "password"), ("username", "x")], StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        (vec![("grant_type", GRANT)], StatusCode::BAD_REQUEST, "invalid_request"),
        (vec![("grant_type", GRANT), ("code", "1234")], StatusCode::BAD_REQUEST, "invalid_grant"),
        (vec![("grant_type", GRANT), ("code", "0000000000000000")], StatusCode::BAD_REQUEST, "invalid_grant"),
        (vec![("grant_type", "refresh_token")], StatusCode::BAD_REQUEST, "invalid_request"),
        (vec![("grant_type", "refresh_token"), ("refresh_token", "forged")], StatusCode::BAD_REQUEST, "invalid_grant"),
        (
            vec![("grant_type", "refresh_token"), ("grant_type", "refresh_token")],
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (fields, status, error) in cases {
        let r = client.post_form("/oauth/token", &fields).await;
        assert_grant_error(&r, status, error);
    }
    let mut conn = client.connect().await.unwrap();
    let r = conn.request("POST", "/oauth/token", &[("content-type", "application/json")], "{}".into()).await.unwrap();
    assert_grant_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = client.send("GET", "/oauth/token", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("POST"));
    // The endpoint is on the secure listeners only.
    let r = server.legacy_client().post_form("/oauth/token", &[("grant_type", GRANT), ("code", "1")]).await;
    assert_ne!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn the_endpoint_works_only_while_the_refresh_login_flow_is_enabled() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let code = code_for(&d, "SEP001122334455");
    // In CUCM's order: the cluster switch goes off before the refresh login flow can.
    assert!(sipcfg(&d, &["sip-oauth-mode", "disable"]).status.success());
    let out = sipcfg(&d, &["cluster", "set", "--refresh-login-flow", "off"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.app.provisioner().current().inventory.cluster.refresh_login_flow && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = server.client().post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_grant_error(&r, StatusCode::BAD_REQUEST, "unsupported_grant_type");
    // Access token lifetime follows the cluster setting.
    assert!(
        sipcfg(&d, &["cluster", "set", "--refresh-login-flow", "on", "--access-token-minutes", "5"]).status.success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.app.provisioner().current().inventory.cluster.access_token_minutes != 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = server.client().post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::OK, "the code was not spent by the refused attempt: {}", r.text());
    assert_eq!(json(&r)["expires_in"], 300);
}

#[tokio::test]
async fn failed_grants_are_rate_limited_without_slowing_honest_phones() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let client = server.client();
    let bad = [("grant_type", GRANT), ("code", "9999999999999999")];
    for _ in 0..9 {
        assert_grant_error(&client.post_form("/oauth/token", &bad).await, StatusCode::BAD_REQUEST, "invalid_grant");
    }
    // Successes do not count.
    for device in ["SEP001122334455", "SEP001122334466", "CSFJSMITH"] {
        let code = code_for(&d, device);
        let r = client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_grant_error(&client.post_form("/oauth/token", &bad).await, StatusCode::BAD_REQUEST, "invalid_grant");
    let r = client.post_form("/oauth/token", &bad).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // While limited, even a good code waits: the address is over its budget.
    let code = code_for(&d, "SEPAABBCCDDEEFF");
    let r = client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    // Downloads are not affected.
    assert_eq!(client.get(PHONE, Some(&server.token("user:jsmith"))).await.status, StatusCode::OK);
}

#[tokio::test]
async fn jwks_rotation_and_regen() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let client = server.client();
    let r = client.get("/.well-known/jwks.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let keys = json(&r)["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["alg"], "ES256");
    assert!(keys[0].get("d").is_none(), "no private part");
    let old_kid = keys[0]["kid"].as_str().unwrap().to_owned();

    let code = code_for(&d, "SEP001122334455");
    let t = json(&client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await);
    let old_access = t["access_token"].as_str().unwrap().to_owned();
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();

    // Rotate: two keys published, old tokens still verify, new tokens are signed with the new key.
    let out = sipcfg(&d, &["keys", "rotate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut keys = Vec::new();
    while Instant::now() < deadline {
        keys = json(&client.get("/.well-known/jwks.json", None).await)["keys"].as_array().unwrap().clone();
        if keys.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(keys.len(), 2);
    assert_eq!(client.get(PHONE, Some(&old_access)).await.status, StatusCode::OK);
    let t =
        json(&client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await);
    let new_access = t["access_token"].as_str().unwrap().to_owned();
    let header = jsonwebtoken::decode_header(&new_access).unwrap();
    assert_ne!(header.kid.as_deref(), Some(old_kid.as_str()));
    assert_eq!(client.get(PHONE, Some(&new_access)).await.status, StatusCode::OK);
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();

    // Regen: every token is invalid at once.
    assert_eq!(sipcfg(&d, &["keys", "regen"]).status.code(), Some(1), "needs --yes");
    assert!(sipcfg(&d, &["keys", "regen", "--yes"]).status.success());
    assert_eq!(until_status(&server, &new_access, StatusCode::UNAUTHORIZED).await, StatusCode::UNAUTHORIZED);
    assert_eq!(client.get(PHONE, Some(&old_access)).await.status, StatusCode::UNAUTHORIZED);
    let r = client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_grant_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
    // Tokens from the configured signing key (`sipcfg token`) are not the token service's: unaffected.
    assert_eq!(client.get(PHONE, Some(&server.token("device:SEP001122334455"))).await.status, StatusCode::OK);
}

#[test]
fn activation_codes_are_listed_without_the_code_and_can_be_revoked() {
    let d = TempDeployment::new();
    let code = code_for(&d, "SEP001122334455");
    let out = sipcfg(&d, &["activation-code", "list"]);
    let listing = text(&out.stdout);
    assert!(listing.contains("SEP001122334455") && listing.contains("usable"), "{listing}");
    assert!(!listing.contains(&code), "the code itself is never shown again");
    let id = listing.split_whitespace().next().unwrap().to_owned();
    let out = sipcfg(&d, &["activation-code", "revoke", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&sipcfg(&d, &["activation-code", "list"]).stdout).contains("revoked"));
    assert_eq!(sipcfg(&d, &["activation-code", "revoke", &id]).status.code(), Some(1));
    assert_eq!(sipcfg(&d, &["activation-code", "create", "--device", "SEP999999999999"]).status.code(), Some(1));
    // Nothing secret in the database: neither the code nor a refresh token appears in it.
    let db = std::fs::read(d.path("example/state/sipcfg.db")).unwrap();
    assert!(!db.windows(code.len()).any(|w| w == code.as_bytes()));
}

/// Polls over one kept connection until a download with `token` gets `status`.
async fn until_status_on(conn: &mut common::Conn, token: &str, status: StatusCode) -> StatusCode {
    let auth = format!("Bearer {token}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = conn.send("GET", PHONE, &[("authorization", &auth)]).await.status;
        if got == status || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A kept connection remembers the token it verified last (issue 6); revocation and `keys regen` must
/// still reach it, on that same connection.
#[tokio::test]
async fn a_kept_connection_sees_revocation_and_regen() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let client = server.client();
    let token = |code: String| {
        let client = client.clone();
        async move {
            let r = client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
            json(&r)["access_token"].as_str().unwrap().to_owned()
        }
    };

    let access = token(code_for(&d, "SEP001122334455")).await;
    let mut conn = client.connect().await.unwrap();
    let auth = format!("Bearer {access}");
    for _ in 0..3 {
        assert_eq!(conn.send("GET", PHONE, &[("authorization", &auth)]).await.status, StatusCode::OK);
    }
    assert!(sipcfg_while_serving(&d, &["token", "revoke", "--device", "SEP001122334455"]).await.status.success());
    assert_eq!(until_status_on(&mut conn, &access, StatusCode::UNAUTHORIZED).await, StatusCode::UNAUTHORIZED);

    let access = token(code_for(&d, "SEP001122334455")).await;
    let mut conn = client.connect().await.unwrap();
    let auth = format!("Bearer {access}");
    for _ in 0..3 {
        assert_eq!(conn.send("GET", PHONE, &[("authorization", &auth)]).await.status, StatusCode::OK);
    }
    assert!(sipcfg(&d, &["keys", "regen", "--yes"]).status.success());
    assert_eq!(until_status_on(&mut conn, &access, StatusCode::UNAUTHORIZED).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_server_counts_revocations_made_from_the_command_line() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let revocations = || async { server.metrics().await.get("sipcfg_token_revocations_total") };
    assert_eq!(revocations().await, 0.0);
    let out = sipcfg_while_serving(&d, &["token", "revoke", "--device", "SEP001122334455"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while revocations().await < 1.0 {
        assert!(Instant::now() < deadline, "the command line's revocation was never counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = sipcfg_while_serving(&d, &["token", "revoke", "--user", "jsmith"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    while revocations().await < 2.0 {
        assert!(Instant::now() < deadline, "the second revocation was never counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Another server on the same state counts from its own start: the revocations already there are not new.
    let other = started(&d).await;
    assert_eq!(other.metrics().await.get("sipcfg_token_revocations_total"), 0.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(revocations().await, 2.0, "counted once each");
}

#[test]
fn a_code_for_a_disabled_device_comes_with_a_note() {
    let d = TempDeployment::new();
    let out = sipcfg(&d, &["activation-code", "create", "--device", "SEP0011223344FF"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("SEP0011223344FF is disabled"), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim().len(), 16, "the code is still printed alone on standard output");
    let out = sipcfg(&d, &["activation-code", "create", "--device", "SEP001122334455"]);
    assert!(!text(&out.stderr).contains("note:"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn token_revoke_returns_once_the_running_server_refuses_the_token() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let client = server.client();
    let code = code_for(&d, "SEP001122334455");
    let r = client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    let access = json(&r)["access_token"].as_str().unwrap().to_owned();
    let mut conn = client.connect().await.unwrap();
    let auth = format!("Bearer {access}");
    assert_eq!(conn.send("GET", PHONE, &[("authorization", &auth)]).await.status, StatusCode::OK);
    // Wait for the server to report itself to the token store (it does within a poll of starting).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let out = sipcfg_while_serving(&d, &["token", "revoke", "--device", "SEP001122334455"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("refused by every running server"), "{}", text(&out.stdout));
    // No polling: in force the moment the command returned, on a kept connection (its token memo) too.
    assert_eq!(conn.send("GET", PHONE, &[("authorization", &auth)]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(client.get(PHONE, Some(&access)).await.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn token_revoke_without_a_running_server_says_so() {
    let d = TempDeployment::new();
    let out = sipcfg(&d, &["token", "revoke", "--device", "SEP001122334455"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no server is running"), "{}", text(&out.stdout));
}

/// A device removed from the inventory by hand still holds its family and its outstanding codes until
/// `token revoke` retires them, which it does although the device is gone.
#[tokio::test]
async fn token_revoke_reaches_a_device_removed_by_hand() {
    let d = TempDeployment::new();
    let server = started(&d).await;
    let client = server.client();
    let code = code_for(&d, "SEP001122334455");
    let spare = code_for(&d, "SEP001122334455");
    let t = json(&client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await);
    let refresh = t["refresh_token"].as_str().unwrap().to_owned();
    // The device goes from the file, by hand.
    let inventory = std::fs::read_to_string(d.path("example/inventory.toml")).unwrap();
    let start = inventory.find("[devices.SEP001122334455]").unwrap();
    let end = inventory[start + 1..].find("\n[").map_or(inventory.len(), |i| start + 1 + i);
    std::fs::write(d.path("example/inventory.toml"), format!("{}{}", &inventory[..start], &inventory[end..])).unwrap();

    let out = sipcfg_while_serving(&d, &["token", "revoke", "--device", "SEP001122334455"]).await;
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("is not in"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("retired 1 outstanding activation code"), "{}", text(&out.stderr));
    let r = client.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_grant_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
    let r = client.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &spare)]).await;
    assert_grant_error(&r, StatusCode::BAD_REQUEST, "invalid_grant");
    // A name the store never heard of is still refused.
    let out = sipcfg_while_serving(&d, &["token", "revoke", "--device", "SEP0000000000AA"]).await;
    assert!(!out.status.success() && text(&out.stderr).contains("no such device"), "{}", text(&out.stderr));
}
