//! Authentication (RFC 6750 bearer tokens) and authorization (whose file is it).

mod common;

use common::{TestServer, example_signing_key, good_claims, now, repo, sign};
use http::StatusCode;
use jsonwebtoken::Algorithm;
use serde_json::json;
use sipcfg::config::{Algorithm as Alg, Config, VerifyKeyConfig};

const PHONE: &str = "/SEP001122334455.cnf.xml";

fn challenge(r: &common::Resp) -> &str {
    r.header("www-authenticate").unwrap_or("")
}

async fn status_with(server: &TestServer, token: &str) -> (StatusCode, String) {
    let r = server.client().get(PHONE, Some(token)).await;
    (r.status, challenge(&r).to_owned())
}

#[tokio::test]
async fn no_token_is_401_with_a_bearer_challenge() {
    let server = TestServer::start().await;
    let r = server.client().get(PHONE, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&r), "Bearer realm=\"sipcfg\"");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    // Other schemes are no bearer token either.
    let r = server.client().send("GET", PHONE, &[("authorization", "Basic dXNlcjpwYXNz")]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&r), "Bearer realm=\"sipcfg\"");
}

#[tokio::test]
async fn a_token_in_the_query_string_is_never_read() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    for path in [format!("{PHONE}?access_token={token}"), format!("{PHONE}?token={token}")] {
        let r = server.client().get(&path, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(challenge(&r), "Bearer realm=\"sipcfg\"");
    }
}

#[tokio::test]
async fn bad_tokens_are_401_invalid_token() {
    let server = TestServer::start().await;
    let key = example_signing_key();
    let kid = Some("example-es256-1");
    let other_key = repo().join("tests/fixtures/keys/other-es256-key.pem");
    let sub = "device:SEP001122334455";
    let with = |field: &str, value: serde_json::Value| {
        let mut c = good_claims(sub);
        c[field] = value;
        c
    };
    let without = |field: &str| {
        let mut c = good_claims(sub);
        c.as_object_mut().unwrap().remove(field);
        c
    };
    let none_token = {
        use base64_url as b;
        format!("{}.{}.", b(br#"{"alg":"none","typ":"JWT"}"#), b(good_claims(sub).to_string().as_bytes()))
    };
    let cases: Vec<(&str, String)> = vec![
        ("expired", sign(Algorithm::ES256, &key, kid, &with("exp", json!(now() - 120)))),
        ("not yet valid", sign(Algorithm::ES256, &key, kid, &with("nbf", json!(now() + 600)))),
        ("wrong issuer", sign(Algorithm::ES256, &key, kid, &with("iss", json!("https://evil.example")))),
        ("wrong audience", sign(Algorithm::ES256, &key, kid, &with("aud", json!("someone-else")))),
        ("wrong key", sign(Algorithm::ES256, &other_key, kid, &good_claims(sub))),
        ("wrong key, no kid", sign(Algorithm::ES256, &other_key, None, &good_claims(sub))),
        ("unknown kid", sign(Algorithm::ES256, &key, Some("nope"), &good_claims(sub))),
        ("alg none", none_token),
        ("no exp", sign(Algorithm::ES256, &key, kid, &without("exp"))),
        ("no iss", sign(Algorithm::ES256, &key, kid, &without("iss"))),
        ("no aud", sign(Algorithm::ES256, &key, kid, &without("aud"))),
        ("no sub", sign(Algorithm::ES256, &key, kid, &without("sub"))),
        ("exp as string", sign(Algorithm::ES256, &key, kid, &with("exp", json!("tomorrow")))),
        ("subject without kind", sign(Algorithm::ES256, &key, kid, &with("sub", json!("SEP001122334455")))),
        ("subject of a bad device name", sign(Algorithm::ES256, &key, kid, &with("sub", json!("device:../x")))),
        ("garbage", "not.a.jwt".to_owned()),
        ("tampered", {
            let t = server.token(sub);
            let (head, sig) = t.rsplit_once('.').unwrap();
            let flipped = if sig.starts_with('A') { "B" } else { "A" };
            format!("{head}.{flipped}{}", &sig[1..])
        }),
        ("too large", format!("{}.{}.{}", "a".repeat(4000), "b".repeat(4000), "c".repeat(300))),
    ];
    for (what, token) in cases {
        let (status, challenge) = status_with(&server, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert!(challenge.starts_with("Bearer realm=\"sipcfg\", error=\"invalid_token\""), "{what}: {challenge}");
    }
    // The expired one says so; none says more than "invalid".
    let (_, c) = status_with(&server, &sign(Algorithm::ES256, &key, kid, &with("exp", json!(now() - 120)))).await;
    assert!(c.contains("expired"), "{c}");

    // Within the configured leeway (30 s), a just-expired token still works.
    let (status, _) = status_with(&server, &sign(Algorithm::ES256, &key, kid, &with("exp", json!(now() - 5)))).await;
    assert_eq!(status, StatusCode::OK);
}

fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn an_hmac_token_made_with_the_public_key_is_refused() {
    // The classic algorithm-confusion attack: HS256 keyed with the server's public key.
    let server = TestServer::start().await;
    let public = std::fs::read(repo().join("certs-example/token-signing-pub.pem")).unwrap();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("example-es256-1".into());
    let token = jsonwebtoken::encode(
        &header,
        &good_claims("device:SEP001122334455"),
        &jsonwebtoken::EncodingKey::from_secret(&public),
    )
    .unwrap();
    let (status, c) = status_with(&server, &token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(c.contains("invalid_token"));
}

#[tokio::test]
async fn duplicate_authorization_headers_are_400() {
    let server = TestServer::start().await;
    let auth = format!("Bearer {}", server.token("device:SEP001122334455"));
    let r = server.client().send("GET", PHONE, &[("authorization", &auth), ("authorization", &auth)]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(challenge(&r).contains("invalid_request"));
}

#[tokio::test]
async fn another_devices_file_is_403_whether_it_exists_or_not() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    let exists = server.client().get("/SEP001122334466.cnf.xml", Some(&token)).await;
    let missing = server.client().get("/SEP00112233AAAA.cnf.xml", Some(&token)).await;
    let jabber_missing = server.client().get("/CSFNOBODY.cnf.xml", Some(&token)).await;
    for r in [&exists, &missing, &jabber_missing] {
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.body, exists.body);
        assert_eq!(r.header("www-authenticate"), exists.header("www-authenticate"));
        assert_eq!(r.header("content-length"), exists.header("content-length"));
    }
    // A token for a device that is not in the inventory opens nothing.
    let ghost = server.token("device:SEP00112233AAAA");
    let r = server.client().get("/SEP00112233AAAA.cnf.xml", Some(&ghost)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body, exists.body);
}

#[tokio::test]
async fn a_disabled_device_is_403() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP0011223344FF");
    let r = server.client().get("/SEP0011223344FF.cnf.xml", Some(&token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let user = server.token("user:jsmith");
    let r = server.client().get("/SEP0011223344FF.cnf.xml", Some(&user)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_user_token_opens_the_devices_the_user_owns() {
    let server = TestServer::start().await;
    let jsmith = server.token("user:jsmith");
    for own in ["/SEP001122334455.cnf.xml", "/CSFJSMITH.cnf.xml"] {
        let r = server.client().get(own, Some(&jsmith)).await;
        assert_eq!(r.status, StatusCode::OK, "{own}");
    }
    for other in ["/SEP001122334466.cnf.xml", "/SEPAABBCCDDEEFF.cnf.xml", "/SEP00112233AAAA.cnf.xml"] {
        let r = server.client().get(other, Some(&jsmith)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{other}");
    }
    let stranger = server.token("user:nobody");
    let r = server.client().get(PHONE, Some(&stranger)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

fn config_with_key(alg: Alg, public: &str) -> Config {
    let mut config = common::example_config();
    config.auth.algorithms = vec![alg];
    config.auth.keys =
        vec![VerifyKeyConfig { kid: Some("k1".into()), algorithm: alg, public_key: repo().join(public) }];
    config.auth.signing = None;
    config
}

#[tokio::test]
async fn rs256_ps256_and_eddsa_keys_are_supported() {
    let cases = [
        (Alg::RS256, Algorithm::RS256, "tests/fixtures/keys/rsa-pub.pem", "tests/fixtures/keys/rsa-key.pem"),
        (Alg::PS256, Algorithm::PS256, "tests/fixtures/keys/rsa-pub.pem", "tests/fixtures/keys/rsa-key.pem"),
        (Alg::EdDSA, Algorithm::EdDSA, "tests/fixtures/keys/ed25519-pub.pem", "tests/fixtures/keys/ed25519-key.pem"),
    ];
    for (alg, jwt_alg, public, private) in cases {
        let server = TestServer::with_config(config_with_key(alg, public)).await;
        let token = sign(jwt_alg, &repo().join(private), Some("k1"), &good_claims("device:SEP001122334455"));
        let r = server.client().get(PHONE, Some(&token)).await;
        assert_eq!(r.status, StatusCode::OK, "{alg:?}");
        // The same key with another algorithm of its family is refused: the config pins the algorithm.
        if alg == Alg::RS256 {
            let ps = sign(Algorithm::PS256, &repo().join(private), Some("k1"), &good_claims("device:SEP001122334455"));
            let r = server.client().get(PHONE, Some(&ps)).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        }
        // And the example ES256 tokens are no longer accepted.
        let es = sign(Algorithm::ES256, &example_signing_key(), Some("k1"), &good_claims("device:SEP001122334455"));
        assert_eq!(server.client().get(PHONE, Some(&es)).await.status, StatusCode::UNAUTHORIZED);
        server.shutdown().await;
    }
}

/// A JWKS file in `dir` holding the public half of `key`, for `alg`, named `kid`.
fn write_jwks(dir: &std::path::Path, key: &jsonwebtoken::EncodingKey, alg: Algorithm, kid: &str) -> std::path::PathBuf {
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(key, alg).unwrap();
    jwk.common.key_id = Some(kid.into());
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, serde_json::to_vec(&json!({ "keys": [jwk] })).unwrap()).unwrap();
    jwks
}

#[tokio::test]
async fn keys_can_come_from_a_jwks_file() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let dir = tempfile::tempdir().unwrap();
    let pem = std::fs::read(example_signing_key()).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
    let jwks = write_jwks(dir.path(), &key, Algorithm::ES256, "from-jwks");

    let mut config = common::example_config();
    config.auth.keys.clear();
    config.auth.jwks = Some(jwks);
    let server = TestServer::with_config(config).await;
    let token = sign(Algorithm::ES256, &example_signing_key(), Some("from-jwks"), &good_claims("user:jsmith"));
    assert_eq!(server.client().get(PHONE, Some(&token)).await.status, StatusCode::OK);
    let token = sign(Algorithm::ES256, &example_signing_key(), Some("example-es256-1"), &good_claims("user:jsmith"));
    assert_eq!(server.client().get(PHONE, Some(&token)).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn each_bad_token_is_refused_for_its_own_reason() {
    use sipcfg::auth::token::TokenError as E;
    let server = TestServer::start().await;
    let verifier = server.app.verifier();
    let key = example_signing_key();
    let kid = Some("example-es256-1");
    let sub = "device:SEP001122334455";
    let with = |field: &str, value: serde_json::Value| {
        let mut c = good_claims(sub);
        c[field] = value;
        sign(Algorithm::ES256, &key, kid, &c)
    };
    let without = |field: &str| {
        let mut c = good_claims(sub);
        c.as_object_mut().unwrap().remove(field);
        sign(Algorithm::ES256, &key, kid, &c)
    };
    let other = repo().join("tests/fixtures/keys/other-es256-key.pem");
    let cases = [
        (with("exp", json!(now() - 120)), E::Expired),
        (with("nbf", json!(now() + 600)), E::NotYetValid),
        (with("iss", json!("x")), E::WrongIssuer),
        (with("aud", json!("x")), E::WrongAudience),
        (with("sub", json!("SEP001122334455")), E::BadSubject),
        // A claim of the wrong JSON type is malformed claims.
        (with("exp", json!("soon")), E::BadClaims),
        (without("exp"), E::MissingClaim("exp".into())),
        (without("sub"), E::MissingClaim("sub".into())),
        (sign(Algorithm::ES256, &other, kid, &good_claims(sub)), E::BadSignature),
        (sign(Algorithm::ES256, &key, Some("nope"), &good_claims(sub)), E::UnknownKey),
        ("x.y.z".to_owned(), E::Malformed),
    ];
    for (token, expected) in cases {
        assert_eq!(verifier.verify(&token), Err(expected.clone()), "{expected:?}");
    }
    let ok = verifier.verify(&server.token(sub)).unwrap();
    assert_eq!(ok.to_string(), sub);
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let mut config = common::example_config();
    config.auth.leeway_secs = 0;
    let verifier = sipcfg::auth::token::Verifier::from_config(&config.auth).unwrap();
    let signer = sipcfg::auth::signer::Signer::from_config(&config.auth).unwrap();
    let token = signer.mint(&common::subject_of("device:SEP001122334455"), 1).unwrap();
    assert!(verifier.verify(&token).is_ok());
    assert!(verifier.verify(&token).is_ok(), "verified again (from the cache)");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(verifier.verify(&token), Err(sipcfg::auth::token::TokenError::Expired));
}

async fn send(conn: &mut common::Conn, path: &str, token: String, etag: Option<String>) -> common::Resp {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(e) = &etag {
        headers.push(("if-none-match", e.as_str()));
    }
    conn.send("GET", path, &headers).await
}

/// A kept connection remembers the last token it verified and the file it fetched (issue 6): a phone
/// re-checking costs a byte comparison. Each of these must still be seen on that same connection: another
/// token, a forged one, the file of another device, an expired token, a reload that changes the file, and
/// a reload that takes the device from its owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_remembers_nothing_it_should_not() {
    let d = common::TempDeployment::new();
    d.edit("example/sipcfg.toml", "leeway_secs = 30", "leeway_secs = 0"); // reloads read the file again
    let mut server = TestServer::with_config(d.config()).await;
    server.watch_files();
    let phone = "/SEP001122334455.cnf.xml";
    let mut conn = server.client().connect().await.unwrap();

    // The same token and file again and again: 200, then 304s.
    let user = server.token("user:jsmith");
    let first = send(&mut conn, phone, user.clone(), None).await;
    assert_eq!(first.status, StatusCode::OK);
    let etag = first.header("etag").unwrap().to_owned();
    for _ in 0..3 {
        let r = send(&mut conn, phone, user.clone(), Some(etag.clone())).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    }
    // The same subject, another file it may open; then a file it may not.
    let jabber = send(&mut conn, "/CSFJSMITH.cnf.xml", user.clone(), None).await;
    assert_eq!(jabber.status, StatusCode::OK);
    assert_ne!(jabber.header("etag"), Some(etag.as_str()), "each file its own tag on one connection");
    assert_eq!(send(&mut conn, "/SEPAABBCCDDEEFF.cnf.xml", user.clone(), None).await.status, StatusCode::FORBIDDEN);
    // Another token on the same connection is verified for itself: a device token for another device, a
    // forged token (the remembered one with its signature changed), then the remembered one again.
    let other = server.token("device:SEP0011223344FF");
    assert_eq!(send(&mut conn, phone, other, None).await.status, StatusCode::FORBIDDEN);
    let mut forged = user.clone().into_bytes();
    let i = forged.len() - 10; // inside the signature, a whole 6 bits of it
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(send(&mut conn, phone, forged, None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&mut conn, phone, user.clone(), Some(etag.clone())).await.status, StatusCode::NOT_MODIFIED);

    // A reload that changes the file: the same connection gets the new file, with a new ETag.
    d.edit("example/inventory.toml", "label = \"1001 John\"", "label = \"1001 Johnny\"");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let changed = loop {
        let r = send(&mut conn, phone, user.clone(), Some(etag.clone())).await;
        if r.status != StatusCode::NOT_MODIFIED || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(changed.status, StatusCode::OK);
    assert!(changed.text().contains("1001 Johnny"));
    assert_ne!(changed.header("etag"), Some(etag.as_str()));

    // A reload that gives the phone to another owner: the user's token no longer opens it.
    d.edit(
        "example/inventory.toml",
        "owner = \"jsmith\"\ndescription = \"John Smith - desk\"",
        "owner = \"adoe\"\ndescription = \"John Smith - desk\"",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = send(&mut conn, phone, user.clone(), None).await;
        if r.status == StatusCode::FORBIDDEN {
            break;
        }
        assert_eq!(r.status, StatusCode::OK);
        assert!(std::time::Instant::now() < deadline, "the owner change never reached the kept connection");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A token that expires while the connection is kept (leeway 0): refused once `exp` has passed.
    let signer = sipcfg::auth::signer::Signer::from_config(&server.app.config().auth).unwrap();
    let short = signer.mint(&common::subject_of("device:SEP001122334455"), 1).unwrap();
    assert_eq!(send(&mut conn, phone, short.clone(), None).await.status, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = send(&mut conn, phone, short, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").unwrap().contains("expired"), "{:?}", r.header("www-authenticate"));
}

/// sipcfg verifies a token itself (its key parsed once, its claims read in one pass) where it called
/// jsonwebtoken's `decode` before: each verdict, on every claim of the wrong form, value or absence, is the
/// one `decode` with the validation sipcfg gave it would reach.
#[test]
fn the_claims_are_judged_as_jsonwebtoken_judges_them() {
    use jsonwebtoken::errors::ErrorKind as K;
    use sipcfg::auth::token::{TokenError as E, Verifier};
    let config = common::example_config();
    let verifier = Verifier::from_config(&config.auth).unwrap();
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(&std::fs::read(example_signing_key()).unwrap()).unwrap();
    let public = std::fs::read(repo().join("certs-example/token-signing-pub.pem")).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_ec_pem(&public).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.set_issuer(&[&config.auth.issuer]);
    validation.set_audience(&[&config.auth.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = config.auth.leeway_secs;
    #[derive(serde::Deserialize)]
    struct Theirs {
        sub: Option<String>,
        #[allow(dead_code)]
        iat: Option<u64>,
        #[allow(dead_code)]
        exp: Option<u64>,
    }
    let theirs = |token: &str| -> Result<String, E> {
        match jsonwebtoken::decode::<Theirs>(token, &decoding, &validation) {
            Ok(data) => {
                let sub = data.claims.sub.ok_or_else(|| E::MissingClaim("sub".into()))?;
                sipcfg::provision::subject::Subject::parse(&sub).map(|s| s.to_string()).ok_or(E::BadSubject)
            }
            Err(e) => Err(match e.kind() {
                K::InvalidSignature => E::BadSignature,
                K::ExpiredSignature => E::Expired,
                K::ImmatureSignature => E::NotYetValid,
                K::InvalidIssuer => E::WrongIssuer,
                K::InvalidAudience => E::WrongAudience,
                K::MissingRequiredClaim(c) => E::MissingClaim(c.clone()),
                K::InvalidAlgorithm => E::AlgorithmNotAllowed,
                K::Json(_) | K::InvalidClaimFormat(_) => E::BadClaims,
                _ => E::Malformed,
            }),
        }
    };

    let n = now();
    let (iss, aud) = (config.auth.issuer.clone(), config.auth.audience.clone());
    let base: Vec<(&str, String)> = vec![
        ("iss", format!("{iss:?}")),
        ("aud", format!("{aud:?}")),
        ("sub", r#""device:SEP001122334455""#.into()),
        ("iat", n.to_string()),
        ("nbf", n.to_string()),
        ("exp", (n + 600).to_string()),
    ];
    let object = |field: &str, value: Option<&str>| {
        let members: Vec<String> = base
            .iter()
            .filter_map(|(k, v)| match (*k == field, value) {
                (false, _) => Some(format!("{k:?}:{v}")),
                (true, Some(value)) => Some(format!("{k:?}:{value}")),
                (true, None) => None,
            })
            .collect();
        format!("{{{}}}", members.join(","))
    };
    let leeway = config.auth.leeway_secs as i64;
    let (past, within, future) = ((n - leeway - 120).to_string(), (n - leeway / 2).to_string(), (n + 600).to_string());
    let mut payloads = vec![object("", None)];
    let forms: &[(&str, &[&str])] = &[
        ("exp", &[&past, &within, "0", "18446744073709551615", "1e12", "-5", "null", r#""tomorrow""#, "[]", "{}"]),
        ("nbf", &[&future, &within, &past, "null", r#""now""#, "1.5e9", "1e30", "-1", "[1]", "true"]),
        ("iat", &[r#""then""#, "1.5e9", "-1", "null"]),
        (
            "sub",
            &[
                "7",
                "null",
                r#""SEP001122334455""#,
                r#""device:../x""#,
                r#""user:jsmith""#,
                r#""device:SEP00112233445\u0035""#,
            ],
        ),
    ];
    let names = |right: &str| {
        let escaped = format!("{right:?}").replacen('s', r"\u0073", 1);
        vec![
            r#""somebody-else""#.to_owned(),
            format!(r#"["x",{right:?}]"#),
            r#"["x","y"]"#.to_owned(),
            "[]".to_owned(),
            "7".to_owned(),
            "null".to_owned(),
            r#"{"a":1}"#.to_owned(),
            escaped,
        ]
    };
    for (field, values) in forms {
        payloads.push(object(field, None));
        payloads.extend(values.iter().map(|v| object(field, Some(v))));
    }
    for (field, right) in [("iss", &iss), ("aud", &aud)] {
        payloads.push(object(field, None));
        payloads.extend(names(right).iter().map(|v| object(field, Some(v))));
    }
    let good = object("", None);
    payloads.extend([
        good.replacen('{', &format!(r#"{{"exp":{},"#, n + 60), 1), // `exp` twice
        good.replacen('{', r#"{"extra":{"deep":[1,{"x":null}]},"#, 1),
        "[]".into(),
        "null".into(),
        r#""x""#.into(),
        "{".into(),
        "not json".into(),
    ]);
    let b64 = |bytes: &[u8]| base64_url(bytes);
    let header = b64(br#"{"alg":"ES256","kid":"example-es256-1","typ":"JWT"}"#);
    let mut refused = 0;
    for payload in &payloads {
        let signed = format!("{header}.{}", b64(payload.as_bytes()));
        let signature = jsonwebtoken::crypto::sign(signed.as_bytes(), &signing, Algorithm::ES256).unwrap();
        let token = format!("{signed}.{signature}");
        let ours = verifier.verify(&token).map(|s| s.to_string());
        assert_eq!(ours, theirs(&token), "{payload}");
        refused += usize::from(ours.is_err());
    }
    assert!(refused > 40 && refused < payloads.len() - 5, "{refused} of {}", payloads.len());
}

/// The boundaries of `exp` and `nbf` with the leeway, at a given instant.
#[test]
fn exp_and_nbf_hold_to_the_second_with_the_leeway() {
    use sipcfg::auth::token::{TokenError as E, Verifier};
    let config = common::example_config();
    let verifier = Verifier::from_config(&config.auth).unwrap();
    let leeway = config.auth.leeway_secs;
    let at = 2_000_000_000u64;
    let token = |exp: u64, nbf: u64| {
        let mut c = good_claims("device:SEP001122334455");
        c["exp"] = json!(exp);
        c["nbf"] = json!(nbf);
        sign(Algorithm::ES256, &example_signing_key(), Some("example-es256-1"), &c)
    };
    let check = |exp, nbf| verifier.verify_until(&token(exp, nbf), at).map(|(_, until)| until);
    assert_eq!(check(at - leeway, at), Ok(at), "the last second of the leeway");
    assert_eq!(check(at - leeway - 1, at), Err(E::Expired));
    assert_eq!(check(at + 10, at + leeway), Ok(at + 10 + leeway));
    assert_eq!(check(at + 10, at + leeway + 1), Err(E::NotYetValid));
}

/// A JWKS RSA key comes as a modulus and an exponent; sipcfg encodes it as DER to parse it once.
#[tokio::test]
async fn an_rsa_key_from_a_jwks_verifies_and_pins_its_algorithm() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let dir = tempfile::tempdir().unwrap();
    let private = repo().join("tests/fixtures/keys/rsa-key.pem");
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(&private).unwrap()).unwrap();
    let jwks = write_jwks(dir.path(), &key, Algorithm::RS256, "rsa-jwks");
    let mut config = common::example_config();
    config.auth.keys.clear();
    config.auth.algorithms = vec![Alg::RS256];
    config.auth.signing = None;
    config.auth.jwks = Some(jwks);
    let verifier = sipcfg::auth::token::Verifier::from_config(&config.auth).unwrap();
    let claims = good_claims("user:jsmith");
    let token = sign(Algorithm::RS256, &private, Some("rsa-jwks"), &claims);
    assert_eq!(verifier.verify(&token).map(|s| s.to_string()), Ok("user:jsmith".to_owned()));
    let other = repo().join("tests/fixtures/keys/other-es256-key.pem");
    let (head, _) = token.rsplit_once('.').unwrap();
    let es = sign(Algorithm::ES256, &other, Some("rsa-jwks"), &claims);
    let (_, wrong) = es.rsplit_once('.').unwrap();
    use sipcfg::auth::token::TokenError as E;
    assert_eq!(verifier.verify(&format!("{head}.{wrong}")), Err(E::BadSignature));
    let ps = sign(Algorithm::PS256, &private, Some("rsa-jwks"), &claims);
    assert_eq!(verifier.verify(&ps), Err(E::AlgorithmNotAllowed));
}
