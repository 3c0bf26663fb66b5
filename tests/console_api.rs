//! The management API over real TLS, as automation would use it: API tokens, devices, activation codes
//! redeemed at /oauth/token, status, deletion that retires codes and tokens, read-only accounts, the audit
//! trail, RFC 9457 problems, and the OpenAPI document checked against the routes.

mod common;

use bytes::Bytes;
use common::{Client, Resp, TempDeployment, TestServer};
use http::StatusCode;
use serde_json::{Value, json};
use sipcfg::auth::accounts::{API_TOKEN_PREFIX, Account, Role, hash_password, new_secret};

const GRANT: &str = "urn:sipcfg:grant-type:activation-code";

struct Api {
    client: Client,
    token: String,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        let mut conn = self.client.connect().await.expect("connects");
        conn.request(method, path, &headers, body).await.expect("answered")
    }
}

fn json_of(r: &Resp) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// A server on a copy of the example deployment (the API writes its inventory), with an operator and a
/// read-only account, each with an API token.
async fn setup() -> (TempDeployment, TestServer, Api, Api) {
    let d = TempDeployment::new();
    let server = TestServer::with_config(d.config()).await;
    let (alice, rita) = accounts(&server).await;
    (d, server, alice, rita)
}

/// An operator (alice) and a read-only account (rita) on `server`, each with an API token.
async fn accounts(server: &TestServer) -> (Api, Api) {
    let accounts = server.app.accounts().expect("the example has a store for accounts").clone();
    let mut apis = Vec::new();
    for (name, role) in [("alice", Role::Operator), ("rita", Role::ReadOnly)] {
        let account = Account { name: name.into(), role, created: common::now() };
        assert!(accounts.add_account(&account, &hash_password("correct horse battery").unwrap()).await.unwrap());
        let (token, digest) = new_secret(API_TOKEN_PREFIX).unwrap();
        accounts.add_api_token(&digest, name, common::now()).await.unwrap();
        apis.push(Api { client: Client::tls_to(server.console_addr.expect("console listener")), token });
    }
    let rita = apis.pop().unwrap();
    let alice = apis.pop().unwrap();
    (alice, rita)
}

#[tokio::test]
async fn without_a_token_every_route_is_401_and_the_openapi_document_lists_every_route() {
    let (_d, server, alice, _) = setup().await;
    let anonymous = Client::tls_to(server.console_addr.unwrap());
    let r = anonymous.get("/api/v1/devices", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(json_of(&r)["status"], 401);
    let r = anonymous.get("/api/v1/devices/SEP001122334455", Some("sipcfg_not-a-token")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "an unknown token learns nothing of the device");
    // A phone's access token is not an API token.
    let phone = server.token("device:SEP001122334455");
    assert_eq!(anonymous.get("/api/v1/devices", Some(&phone)).await.status, StatusCode::UNAUTHORIZED);

    let r = anonymous.get("/api/v1/openapi.json", None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = json_of(&r);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut routes: Vec<(String, String)> =
        sipcfg::server::console::api::ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    routes.sort();
    assert_eq!(documented, routes, "the OpenAPI document and the routes differ");
    // And each documented route answers something other than "no such route".
    for (method, path) in &routes {
        let path = path.replace("{name}", "SEP001122334455").replace("{id}", "jsmith");
        let r = alice.call(method, &path, None).await;
        let no_route = r.status == StatusCode::NOT_FOUND && r.text().contains("no such route");
        assert!(!no_route && r.status != StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {} {}", r.status, r.text());
    }
}

#[tokio::test]
async fn devices_are_listed_searched_created_changed_and_refused_with_problems() {
    let (d, _server, alice, rita) = setup().await;
    let r = alice.call("GET", "/api/v1/devices?limit=2", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let page = json_of(&r);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["next_offset"], 2);
    let total = page["total"].as_u64().unwrap();
    assert!(total >= 3);
    let r = alice.call("GET", "/api/v1/devices?q=lobby", None).await;
    let page = json_of(&r);
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["items"][0]["name"], "SEPAABBCCDDEEFF");
    let r = alice.call("GET", "/api/v1/devices?q=john%20smith&limit=500", None).await;
    let page = json_of(&r);
    let owners: Vec<&str> =
        page["items"].as_array().unwrap().iter().map(|d| d["owner"].as_str().unwrap_or("")).collect();
    assert!(owners.len() >= 3 && owners.iter().all(|o| *o == "jsmith"), "the owner's name matches: {page}");
    assert_eq!(alice.call("GET", "/api/v1/devices?status=bogus", None).await.status, StatusCode::BAD_REQUEST);

    // Create.
    let new = json!({"name": "SEP0A0B0C0D0E0F", "model": "Cisco 8851", "profile": "Cisco 8851 - Encrypted OAuth",
                     "owner": "bwong", "description": "Bob's desk", "lines": [{"dn": "1200"}]});
    let r = alice.call("POST", "/api/v1/devices", Some(new.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("location"), Some("/api/v1/devices/SEP0A0B0C0D0E0F"));
    let inventory = std::fs::read_to_string(d.path("example/inventory.toml")).unwrap();
    assert!(inventory.contains("[devices.SEP0A0B0C0D0E0F]") && inventory.contains("Bob's desk"), "written to the file");
    assert_eq!(alice.call("POST", "/api/v1/devices", Some(new)).await.status, StatusCode::CONFLICT);
    let r = alice.call("GET", "/api/v1/devices/SEP0A0B0C0D0E0F/config", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("1200"), "served at once: {}", r.text());

    // A change that breaks a rule is refused, every problem named, nothing written.
    let bad = json!({"model": "Cisco 8851", "profile": "No such profile", "owner": "nobody"});
    let r = alice.call("PUT", "/api/v1/devices/SEP0A0B0C0D0E0F", Some(bad)).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    let problem = json_of(&r);
    let errors = problem["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e.as_str().unwrap().contains("No such profile")), "{problem}");
    assert!(errors.iter().any(|e| e.as_str().unwrap().contains("nobody")), "{problem}");
    assert_eq!(std::fs::read_to_string(d.path("example/inventory.toml")).unwrap(), inventory, "nothing written");
    let r =
        alice.call("PUT", "/api/v1/devices/SEP0A0B0C0D0E0F", Some(json!({"model": "Cisco 8851", "bogus": 1}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "unknown fields are refused: {}", r.text());

    // Buttons, modules and service URLs go in with a PUT and come back with a GET, so that a client that
    // reads a device, changes one key and puts it back loses nothing.
    let buttons = json!({"model": "Cisco 8851", "profile": "Cisco 8851 - Encrypted OAuth", "owner": "bwong",
                         "description": "Bob's desk", "lines": [{"dn": "1200"}],
                         "speed_dials": [{"number": "1000", "label": "Reception"}],
                         "blf_speed_dials": [{"destination": "1001"}], "key_expansion_modules": 1,
                         "services": {"directory": "https://dir.example.test/bob"}});
    let r = alice.call("PUT", "/api/v1/devices/SEP0A0B0C0D0E0F", Some(buttons)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let got = json_of(&alice.call("GET", "/api/v1/devices/SEP0A0B0C0D0E0F", None).await);
    assert_eq!(got["speed_dials"][0]["label"], "Reception", "{got}");
    assert_eq!(got["blf_speed_dials"][0]["destination"], "1001", "{got}");
    assert_eq!(got["key_expansion_modules"], 1, "{got}");
    assert_eq!(got["services"]["directory"], "https://dir.example.test/bob", "{got}");
    let xml = alice.call("GET", "/api/v1/devices/SEP0A0B0C0D0E0F/config", None).await.text();
    assert!(xml.contains("<featureID>21</featureID>") && xml.contains("https://dir.example.test/bob"), "{xml}");
    // What the phone type refuses is refused here too, naming the key.
    let too_many =
        json!({"model": "Cisco 8851", "profile": "Cisco 8851 - Encrypted OAuth", "key_expansion_modules": 3});
    let r = alice.call("PUT", "/api/v1/devices/SEP0A0B0C0D0E0F", Some(too_many)).await;
    assert!(r.status.is_client_error() && r.text().contains("takes at most 2"), "{} {}", r.status, r.text());
    let inventory = std::fs::read_to_string(d.path("example/inventory.toml")).unwrap();
    assert!(
        inventory.contains("[devices.SEP0A0B0C0D0E0F]\nmodel = \"Cisco 8851\"")
            && inventory.contains("lines = [{ dn = \"1200\" }]")
            && inventory.contains("services = { directory = \"https://dir.example.test/bob\" }")
            && !inventory.contains("[[devices."),
        "the device's keys stay in its table: {inventory}"
    );

    // Disable, enable.
    let r = alice.call("POST", "/api/v1/devices/SEP0A0B0C0D0E0F/disable", None).await;
    assert_eq!(json_of(&r)["status"], "disabled");
    let r = alice.call("POST", "/api/v1/devices/SEP0A0B0C0D0E0F/enable", None).await;
    assert_eq!(json_of(&r)["enabled"], true);

    // The read-only account reads but changes nothing.
    assert_eq!(rita.call("GET", "/api/v1/devices/SEP0A0B0C0D0E0F", None).await.status, StatusCode::OK);
    for (method, path) in [
        ("DELETE", "/api/v1/devices/SEP0A0B0C0D0E0F"),
        ("POST", "/api/v1/devices/SEP0A0B0C0D0E0F/disable"),
        ("POST", "/api/v1/devices/SEP0A0B0C0D0E0F/activation-codes"),
        ("POST", "/api/v1/devices/SEP0A0B0C0D0E0F/tokens/revoke"),
    ] {
        let r = rita.call(method, path, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}: {}", r.text());
    }
    assert_eq!(rita.call("GET", "/api/v1/accounts", None).await.status, StatusCode::FORBIDDEN);

    // Users.
    let r = alice.call("PUT", "/api/v1/users/fnew", Some(json!({"name": "Fay New"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = alice.call("DELETE", "/api/v1/users/bwong", None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "a user who owns a device stays: {}", r.text());
}

#[tokio::test]
async fn a_code_from_the_api_onboards_the_phone_and_deleting_the_device_retires_everything() {
    let (_d, server, alice, _) = setup().await;
    let phone = server.client();
    let r =
        alice.call("POST", "/api/v1/devices/SEP001122334455/activation-codes", Some(json!({"valid_days": 2}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let created = json_of(&r);
    let code = created["code"].as_str().unwrap().to_owned();
    assert!(created["qr_svg"].as_str().unwrap().contains("<svg"), "the QR code comes with it");
    let expires = created["expires"].as_i64().unwrap();
    assert!((expires - common::now() - 2 * 86_400).abs() < 10);
    let status = json_of(&alice.call("GET", "/api/v1/devices/SEP001122334455/status", None).await);
    assert_eq!(status["status"], "code-outstanding", "{status}");
    assert!(status["last_download"].is_null());

    // The phone redeems it and downloads its file.
    let r = phone.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let tokens = json_of(&r);
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let r = phone
        .send(
            "GET",
            "/SEP001122334455.cnf.xml",
            &[("authorization", &format!("Bearer {access}")), ("user-agent", "Cisco-CP8851/14.2")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let status = json_of(&alice.call("GET", "/api/v1/devices/SEP001122334455/status", None).await);
    assert_eq!(status["status"], "onboarded", "{status}");
    assert_eq!(status["last_download"]["file"], "SEP001122334455.cnf.xml");
    assert_eq!(status["last_download"]["status"], 200);
    assert_eq!(status["last_download"]["user_agent"], "Cisco-CP8851/14.2");
    assert_eq!(status["last_download"]["address"], "127.0.0.1");
    assert!(status["last_grant"].is_i64());
    let families = json_of(&alice.call("GET", "/api/v1/devices/SEP001122334455/tokens", None).await);
    assert_eq!(families.as_array().unwrap().len(), 1);
    assert_eq!(families[0]["state"], "live");
    let summary = json_of(&alice.call("GET", "/api/v1/summary", None).await);
    assert_eq!(summary["by_status"]["onboarded"], 1, "{summary}");

    // A second code, outstanding, then the device is deleted: the code and the family die with it.
    let code2 = json_of(&alice.call("POST", "/api/v1/devices/SEP001122334455/activation-codes", None).await)["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = alice.call("DELETE", "/api/v1/devices/SEP001122334455", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(alice.call("GET", "/api/v1/devices/SEP001122334455", None).await.status, StatusCode::NOT_FOUND);
    let r = phone.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code2)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a deleted device's code is retired: {}", r.text());
    let r = phone.post_form("/oauth/token", &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "a deleted device's family is revoked: {}", r.text());
    let r = phone.send("GET", "/SEP001122334455.cnf.xml", &[("authorization", &format!("Bearer {access}"))]).await;
    assert_ne!(r.status, StatusCode::OK, "its access token opens nothing");

    // Every change is in the audit trail: who, from where, what.
    let audit = json_of(&alice.call("GET", "/api/v1/audit", None).await);
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["device.delete", "activation-code.create", "activation-code.create"], "{audit}");
    assert_eq!(audit[0]["actor"], "admin:alice");
    assert_eq!(audit[0]["address"], "127.0.0.1");
    assert!(!audit.to_string().contains(&code2), "no code in the audit trail");
}

#[tokio::test]
async fn bulk_codes_come_as_csv_for_a_mail_merge_and_cluster_settings_change() {
    let (_d, _server, alice, _) = setup().await;
    let auth = format!("Bearer {}", alice.token);
    let mut conn = alice.client.connect().await.unwrap();
    let body = json!({"devices": ["SEP001122334455", "CSFJSMITH", "SEPAABBCCDDEEFF"], "valid_days": 3}).to_string();
    let r = conn
        .request(
            "POST",
            "/api/v1/activation-codes/bulk",
            &[("authorization", &auth), ("content-type", "application/json"), ("accept", "text/csv")],
            Bytes::from(body),
        )
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("text/csv; charset=utf-8"));
    let csv = r.text();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "device,owner,code,expires");
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[1].starts_with("SEP001122334455,jsmith,") && lines[1].ends_with('Z'), "{csv}");
    let listed = json_of(&alice.call("GET", "/api/v1/activation-codes", None).await);
    assert_eq!(listed["total"], 3);
    assert!(!listed.to_string().contains(lines[1].split(',').nth(2).unwrap()), "lists never show a code");
    let id = listed["items"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        alice.call("DELETE", &format!("/api/v1/activation-codes/{id}"), None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        alice.call("DELETE", &format!("/api/v1/activation-codes/{id}"), None).await.status,
        StatusCode::NOT_FOUND
    );
    // One unknown device: nothing is created.
    let r = alice
        .call("POST", "/api/v1/activation-codes/bulk", Some(json!({"devices": ["SEP001122334455", "SEPFFFFFFFFFFFF"]})))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json_of(&alice.call("GET", "/api/v1/activation-codes", None).await)["total"], 3);

    let r = alice.call("PATCH", "/api/v1/cluster", Some(json!({"refresh_login_flow": false}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(json_of(&r)["refresh_login_flow"], false);
    let r = alice.call("PATCH", "/api/v1/cluster", Some(json!({"sip_oauth_mode": "yes"}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_placeholder_device_takes_the_name_of_the_phone_that_redeems_its_code() {
    let (d, server, alice, _) = setup().await;
    let phone = server.client();
    let placeholder = json!({"name": "BAT00000000A1B2", "model": "Cisco 8851", "profile": "Cisco 8851 - Encrypted OAuth",
                             "owner": "cgarcia", "description": "new hire", "lines": [{"dn": "1300"}]});
    let r = alice.call("POST", "/api/v1/devices", Some(placeholder)).await;
    assert_eq!(r.status, StatusCode::CREATED, "a device without its MAC: {}", r.text());
    let r = alice.call("POST", "/api/v1/devices/BAT00000000A1B2/activation-codes", None).await;
    let code = json_of(&r)["code"].as_str().unwrap().to_owned();

    // The phone must name itself, with a SEP name.
    let r = phone.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&r)["error"], "invalid_request", "{}", r.text());
    let r =
        phone.post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code), ("device_name", "CSFNOPE")]).await;
    assert_eq!(json_of(&r)["error"], "invalid_request", "{}", r.text());
    // A name that is taken gets the answer of an unknown code, and the code stays usable.
    let r = phone
        .post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code), ("device_name", "SEP001122334455")])
        .await;
    assert_eq!(json_of(&r)["error"], "invalid_grant", "{}", r.text());

    let r = phone
        .post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code), ("device_name", "sep0a1b2c3d4e5f")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let access = json_of(&r)["access_token"].as_str().unwrap().to_owned();
    assert_eq!(alice.call("GET", "/api/v1/devices/BAT00000000A1B2", None).await.status, StatusCode::NOT_FOUND);
    let device = json_of(&alice.call("GET", "/api/v1/devices/SEP0A1B2C3D4E5F", None).await);
    assert_eq!(device["owner"], "cgarcia", "{device}");
    assert_eq!(device["status"], "onboarded", "{device}");
    let inventory = std::fs::read_to_string(d.path("example/inventory.toml")).unwrap();
    assert!(inventory.contains("[devices.SEP0A1B2C3D4E5F]") && !inventory.contains("BAT00000000A1B2"), "{inventory}");
    let r = phone.send("GET", "/SEP0A1B2C3D4E5F.cnf.xml", &[("authorization", &format!("Bearer {access}"))]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text().contains("1300"));
    let audit = json_of(&alice.call("GET", "/api/v1/audit", None).await);
    assert_eq!(audit[0]["action"], "device.adopt", "{audit}");
    assert_eq!(audit[0]["actor"], "phone:SEP0A1B2C3D4E5F");

    // An ordinary code presented by a phone that names another device is an unknown code.
    let code = json_of(&alice.call("POST", "/api/v1/devices/SEP001122334455/activation-codes", None).await)["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = phone
        .post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code), ("device_name", "SEPAABBCCDDEEFF")])
        .await;
    assert_eq!(json_of(&r)["error"], "invalid_grant", "{}", r.text());
    let r = phone
        .post_form("/oauth/token", &[("grant_type", GRANT), ("code", &code), ("device_name", "SEP001122334455")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "the code stayed usable: {}", r.text());
}

#[tokio::test]
async fn failed_logins_are_limited_even_in_parallel_and_a_session_cookie_is_locked_down() {
    let (_d, server, _, _) = setup().await;
    let console = Client::tls_to(server.console_addr.unwrap());
    let login = |password: &'static str| {
        let console = console.clone();
        async move { console.post_form("/login", &[("name", "alice"), ("password", password)]).await }
    };
    let r = login("correct horse battery").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text());
    let cookie = r.header("set-cookie").unwrap().to_owned();
    assert!(cookie.starts_with("__Host-sipcfg_session=s_"), "{cookie}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    // Ten guesses at once: no more than the limit (5) are checked, the others are refused unchecked.
    let guesses: Vec<_> = (0..10).map(|_| tokio::spawn(login("wrong guess"))).collect();
    let mut statuses = Vec::new();
    for g in guesses {
        statuses.push(g.await.unwrap().status);
    }
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert!(checked <= 5 && checked + refused == 10, "{statuses:?}");
    let r = login("correct horse battery").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "the right password waits too");
    assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0 && s <= 300)));
}

#[tokio::test]
async fn profiles_and_phone_edge_trust_change_through_the_api() {
    let (_d, _server, alice, rita) = setup().await;
    // Profiles.
    let profile = json!({"phone_type": "Cisco 8851", "security_mode": "encrypted", "transport": "tls", "oauth": true,
                         "description": "8851, second site"});
    let r = alice.call("PUT", "/api/v1/profiles/Cisco%208851%20-%20Site%20B", Some(profile.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = rita.call("PUT", "/api/v1/profiles/Cisco%208851%20-%20Site%20C", Some(profile)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = alice.call("DELETE", "/api/v1/profiles/Cisco%208851%20-%20Encrypted%20OAuth", None).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "a profile in use stays: {}", r.text());
    assert!(r.text().contains("SEP001122334455"), "names the devices that use it: {}", r.text());
    let r = alice.call("DELETE", "/api/v1/profiles/Cisco%208851%20-%20Site%20B", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());

    // Phone-Edge-Trust: a new CA is added, listed, removed; the server's own issuer is already there.
    let send_pem = |pem: String| {
        let auth = format!("Bearer {}", alice.token);
        let client = alice.client.clone();
        async move {
            let mut conn = client.connect().await.unwrap();
            let headers = [("authorization", auth.as_str()), ("content-type", "application/pem-certificate-chain")];
            conn.request("POST", "/api/v1/phone-edge-trust", &headers, Bytes::from(pem)).await.unwrap()
        }
    };
    let example_ca = std::fs::read_to_string(common::repo().join("certs-example/ca.pem")).unwrap();
    let r = send_pem(example_ca).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("is already in the Phone-Edge-Trust store"), "{}", r.text());
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "Site B Root CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&key).unwrap();
    let r = send_pem(ca.pem()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let change = json_of(&r);
    assert!(change["warning"].is_null(), "{change}");
    let sha = change["added"][0]["sha256"].as_str().unwrap().to_owned();
    let listed = json_of(&alice.call("GET", "/api/v1/phone-edge-trust", None).await);
    assert!(listed.as_array().unwrap().iter().any(|c| c["sha256"] == sha.as_str()), "{listed}");
    let r = send_pem("not a certificate".into()).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(!r.text().contains("sipcfg-upload"), "the temporary file is not named: {}", r.text());
    let r = alice.call("DELETE", &format!("/api/v1/phone-edge-trust/{sha}"), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(json_of(&r)["present"][0]["sha256"], sha.as_str());
    assert_eq!(
        alice.call("DELETE", &format!("/api/v1/phone-edge-trust/{sha}"), None).await.status,
        StatusCode::NOT_FOUND
    );
    let audit = json_of(&alice.call("GET", "/api/v1/audit", None).await);
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["cert.remove", "cert.add", "profile.delete", "profile.create"], "{audit}");
}

/// Device pools, CM groups and date/time groups through the API, as a CUCM administrator builds a site: the
/// groups, then the pool, then a device moved into it, whose file then carries the site's call managers and
/// time. Refusals name what is wrong; removals wait until nothing uses the entry.
#[tokio::test]
async fn device_pools_and_their_groups_change_through_the_api_and_reach_the_phone() {
    let (d, server, alice, rita) = setup().await;
    let inventory = || std::fs::read_to_string(d.path("example/inventory.toml")).unwrap();
    let errors = |r: &Resp| json_of(r)["errors"].to_string();

    // A CM group naming a call manager the cluster does not have: the inventory's own message.
    let r = alice
        .call("PUT", "/api/v1/cm-groups/CMG%20Paris", Some(json!({"call_managers": ["cucm-sub1", "cucm-nope"]})))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(errors(&r).contains(r#"cm group \"CMG Paris\": unknown call manager \"cucm-nope\""#), "{}", r.text());
    let r = alice
        .call("PUT", "/api/v1/cm-groups/CMG%20Paris", Some(json!({"call_managers": ["cucm-sub1", "cucm-pub"]})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(json_of(&r)["device_pools"], json!([]));
    let paris_time = json!({"time_zone": "Central Standard/Daylight Time", "date_format": "M/D/Y",
                            "time_format": "12-hour", "ntp_servers": ["ntp.paris.example.test"]});
    let r = alice.call("PUT", "/api/v1/date-time-groups/Paris", Some(paris_time)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    // A pool naming an unknown CM group, an unknown key, a name CUCM would refuse.
    let r = alice.call("PUT", "/api/v1/device-pools/DP%20Paris", Some(json!({"cm_group": "CMG Pariss"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(errors(&r).contains(r#"device pool \"DP Paris\": unknown cm_group \"CMG Pariss\""#), "{}", r.text());
    let r = alice.call("PUT", "/api/v1/device-pools/DP%20Paris", Some(json!({"cm_groupe": "CMG Paris"}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = alice.call("PUT", "/api/v1/device-pools/a%2Fb", Some(json!({}))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(!inventory().contains("device_pools"), "nothing written:\n{}", inventory());

    let pool = json!({"cm_group": "CMG Paris", "date_time_group": "Paris", "user_locale": "French_France",
                      "description": "Paris office"});
    let r = alice.call("PUT", "/api/v1/device-pools/DP%20Paris", Some(pool.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(json_of(&r)["devices"], 0);
    let r = alice.call("PUT", "/api/v1/device-pools/DP%20Paris", Some(pool.clone())).await;
    assert_eq!(r.status, StatusCode::OK, "replaced: {}", r.text());
    let r = alice.call("PUT", "/api/v1/device-pools/dp%20paris", Some(pool)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "one name whatever its letter case: {}", r.text());
    let detail = json_of(&r)["detail"].to_string();
    assert!(detail.contains(r#"a device pool named \"DP Paris\" exists"#), "{detail}");
    let text = inventory();
    assert!(text.starts_with("# Example inventory"), "the file's comments are kept");
    assert!(text.contains("[device_pools.\"DP Paris\"]\ncm_group = \"CMG Paris\""), "{text}");
    assert!(text.contains("[cm_groups.\"CMG Paris\"]\ncall_managers = [\"cucm-sub1\", \"cucm-pub\"]"), "{text}");

    // The read-only account reads, and changes nothing.
    let r = rita.call("GET", "/api/v1/device-pools", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(json_of(&r)[0]["name"], "DP Paris");
    for (method, path, body) in [
        ("PUT", "/api/v1/device-pools/DP%20Lyon", Some(json!({}))),
        ("DELETE", "/api/v1/device-pools/DP%20Paris", None),
        ("PUT", "/api/v1/cm-groups/CMG%20Lyon", Some(json!({"call_managers": ["cucm-pub"]}))),
        ("DELETE", "/api/v1/date-time-groups/Paris", None),
    ] {
        let r = rita.call(method, path, body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{method} {path}: {}", r.text());
    }

    // A device moves into the pool: the phone's file has the site's call managers, in the group's order,
    // and the site's time.
    let device = json_of(&alice.call("GET", "/api/v1/devices/SEP001122334455", None).await);
    let mut doc = serde_json::Map::new();
    for key in ["model", "profile", "owner", "description", "lines", "enabled"] {
        doc.insert(key.into(), device[key].clone());
    }
    doc.insert("pool".into(), json!("DP Paris"));
    let r = alice.call("PUT", "/api/v1/devices/SEP001122334455", Some(Value::Object(doc.clone()))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let access = server.token("device:SEP001122334455");
    let r = server.client().get("/SEP001122334455.cnf.xml", Some(&access)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let xml = r.text();
    assert!(xml.contains("<timeZone>Central Standard/Daylight Time</timeZone>"), "{xml}");
    assert!(xml.contains("<dateTemplate>M/D/Ya</dateTemplate>") && xml.contains("ntp.paris.example.test"), "{xml}");
    let (sub1, publisher) = (xml.find("cucm-sub1.example.test"), xml.find("cucm-pub.example.test"));
    assert!(sub1.is_some() && publisher.is_some() && sub1 < publisher, "the group's primary first: {xml}");
    assert!(xml.contains("French_France"), "{xml}");
    assert_eq!(json_of(&alice.call("GET", "/api/v1/device-pools/DP%20Paris", None).await)["devices"], 1);
    let group = json_of(&alice.call("GET", "/api/v1/cm-groups/CMG%20Paris", None).await);
    assert_eq!(group["device_pools"], json!(["DP Paris"]), "{group}");

    // Nothing in use goes.
    let r = alice.call("DELETE", "/api/v1/device-pools/DP%20Paris", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    let detail = json_of(&r)["detail"].as_str().unwrap().to_owned();
    assert_eq!(
        detail,
        "device pool \"DP Paris\" is used by 1 device (SEP001122334455): move it to another pool (or to none) first"
    );
    let r = alice.call("DELETE", "/api/v1/cm-groups/CMG%20Paris", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("used by 1 device pool (\\\"DP Paris\\\")"), "{}", r.text());
    assert_eq!(alice.call("DELETE", "/api/v1/device-pools/DP%20Pari", None).await.status, StatusCode::NOT_FOUND);
    let r = alice.call("GET", "/api/v1/date-time-groups/paris", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.text().contains("did you mean \\\"Paris\\\"?"), "{}", r.text());

    // Moved out, then everything can go.
    doc.remove("pool");
    let r = alice.call("PUT", "/api/v1/devices/SEP001122334455", Some(Value::Object(doc))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for path in ["/api/v1/device-pools/DP%20Paris", "/api/v1/cm-groups/CMG%20Paris", "/api/v1/date-time-groups/Paris"] {
        let r = alice.call("DELETE", path, None).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{path}: {}", r.text());
    }
    assert_eq!(json_of(&alice.call("GET", "/api/v1/cm-groups", None).await), json!([]));
    assert!(!inventory().contains("Paris"), "{}", inventory());

    let audit = json_of(&alice.call("GET", "/api/v1/audit", None).await);
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "date-time-group.delete",
            "cm-group.delete",
            "device-pool.delete",
            "device.update",
            "device.update",
            "device-pool.update",
            "device-pool.create",
            "date-time-group.create",
            "cm-group.create"
        ],
        "{audit}"
    );
    let created = &audit[6];
    assert_eq!((created["target"].as_str(), created["actor"].as_str()), (Some("DP Paris"), Some("admin:alice")));
    assert!(created["detail"].as_str().unwrap().contains("cm_group = \"CMG Paris\""), "{audit}");
}

/// The same in a cluster: the pools are in the shared store's cluster document, and a change made through
/// the API is in force on the node that answered when the answer comes.
#[tokio::test]
async fn device_pools_change_through_the_api_in_a_cluster() {
    let pg = common::pg::Postgres::start();
    pg.psql("CREATE DATABASE pools OWNER sipcfg");
    let d = TempDeployment::new();
    let url = format!("{}/pools", pg.url().rsplit_once('/').unwrap().0);
    d.append(
        "example/sipcfg.toml",
        &format!(
            "\n[store]\nurl = \"{url}\"\npassword_file = \"{}\"\nkey_file = \"store.key\"\n",
            pg.password_file().display()
        ),
    );
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_sipcfg"))
        .args(["store", "init", "-c"])
        .arg(d.path("example/sipcfg.toml"))
        .env_remove("SIPCFG_STORE_URL")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let file = std::fs::read_to_string(d.path("example/inventory.toml")).unwrap();
    let server = TestServer::with_config(d.config()).await;
    let (alice, rita) = accounts(&server).await;

    let r = alice.call("PUT", "/api/v1/cm-groups/CMG%20Lab", Some(json!({"call_managers": ["cucm-sub1"]}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = alice.call("PUT", "/api/v1/date-time-groups/Lab", Some(json!({"time_zone": "Tokyo Standard Time"}))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let r = alice.call("PUT", "/api/v1/device-pools/DP%20Lab", Some(json!({"cm_group": "CMG Lbb"}))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text());
    assert!(r.text().contains("did you mean"), "{}", r.text());
    let pool = json!({"cm_group": "CMG Lab", "date_time_group": "Lab"});
    assert_eq!(
        rita.call("PUT", "/api/v1/device-pools/DP%20Lab", Some(pool.clone())).await.status,
        StatusCode::FORBIDDEN
    );
    let r = alice.call("PUT", "/api/v1/device-pools/DP%20Lab", Some(pool)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());

    let device = json_of(&alice.call("GET", "/api/v1/devices/SEP001122334455", None).await);
    let mut doc = serde_json::Map::new();
    for key in ["model", "profile", "owner", "description", "lines", "enabled"] {
        doc.insert(key.into(), device[key].clone());
    }
    doc.insert("pool".into(), json!("DP Lab"));
    let r = alice.call("PUT", "/api/v1/devices/SEP001122334455", Some(Value::Object(doc))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = alice.call("GET", "/api/v1/devices/SEP001122334455/config", None).await;
    assert!(r.text().contains("<timeZone>Tokyo Standard Time</timeZone>"), "in force at once: {}", r.text());
    let r = alice.call("DELETE", "/api/v1/device-pools/DP%20Lab", None).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
    assert!(r.text().contains("SEP001122334455"), "{}", r.text());
    assert_eq!(std::fs::read_to_string(d.path("example/inventory.toml")).unwrap(), file, "the file is not the store");
    let audit = json_of(&alice.call("GET", "/api/v1/audit?limit=3", None).await);
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["device.update", "device-pool.create", "date-time-group.create"], "{audit}");
}
