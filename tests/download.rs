//! A phone downloads its own configuration file: status, headers, content, validators, HEAD, HTTP/2.

mod common;

use common::TestServer;
use http::StatusCode;

const PHONE: &str = "/SEP001122334455.cnf.xml";

#[tokio::test]
async fn a_phone_downloads_its_own_config() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    let r = server.client().get(PHONE, Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/xml; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
    assert_eq!(r.header("cache-control"), Some("private, no-cache"));
    let etag = r.header("etag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"), "strong ETag: {etag}");
    let xml = r.text();
    for needle in [
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
        "<device>",
        "<deviceProtocol>SIP</deviceProtocol>",
        "<deviceSecurityMode>3</deviceSecurityMode>",
        "<transportLayerProtocol>3</transportLayerProtocol>",
        "<sipOAuthMode>1</sipOAuthMode>",
        "<sipOAuthPort>5090</sipOAuthPort>",
        "<sipMRAOAuthPort>5091</sipMRAOAuthPort>",
        "<securedSipPort>5061</securedSipPort>",
        "<line button=\"1\" lineIndex=\"1\">",
        "<name>1001</name>",
        "<displayName>John Smith</displayName>",
        "<featureLabel>1001 John</featureLabel>",
        "<loadInformation>sip88xx.14-3-1-0001-63</loadInformation>",
        "<processNodeName>cucm-pub.example.test</processNodeName>",
        "<processNodeName>cucm-sub1.example.test</processNodeName>",
    ] {
        assert!(xml.contains(needle), "missing {needle} in\n{xml}");
    }
    assert!(!xml.contains("<processNodeName>cucm-pub<"), "phones register to the address, not the node's name");
    sipcfg::provision::xml::check_well_formed(&xml).unwrap();
    // Under OAuth the file carries no digest credentials.
    assert!(!xml.contains("<authPassword>"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_non_oauth_phone_gets_no_oauth_elements() {
    let server = TestServer::start().await;
    let token = server.token("device:SEPAABBCCDDEEFF");
    let r = server.client().get("/SEPAABBCCDDEEFF.cnf.xml", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    let xml = r.text();
    assert!(xml.contains("<deviceSecurityMode>1</deviceSecurityMode>"), "{xml}");
    assert!(xml.contains("<transportLayerProtocol>4</transportLayerProtocol>"), "{xml}");
    for absent in ["sipOAuthMode", "sipOAuthPort", "sipMRAOAuthPort"] {
        assert!(!xml.contains(absent), "{absent} in a non-OAuth config");
    }
}

#[tokio::test]
async fn a_jabber_client_downloads_its_csf_config() {
    let server = TestServer::start().await;
    let token = server.token("device:CSFJSMITH");
    let r = server.client().get("/CSFJSMITH.cnf.xml", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    let xml = r.text();
    assert!(xml.contains("<sipOAuthMode>1</sipOAuthMode>"));
    assert!(xml.contains("<userId>jsmith</userId>"));
    assert!(!xml.contains("<loadInformation>"), "Jabber has no firmware load");
}

#[tokio::test]
async fn the_device_part_of_a_name_is_case_insensitive() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    let upper = server.client().get(PHONE, Some(&token)).await;
    let lower = server.client().get("/sep001122334455.cnf.xml", Some(&token)).await;
    assert_eq!(lower.status, StatusCode::OK);
    assert_eq!(lower.body, upper.body);
    assert_eq!(lower.header("etag"), upper.header("etag"));
    // The suffix is not: phones always send it in lower case.
    let r = server.client().get("/SEP001122334455.CNF.XML", Some(&token)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn etag_round_trip_answers_304() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    let auth = format!("Bearer {token}");
    let first = server.client().get(PHONE, Some(&token)).await;
    let etag = first.header("etag").unwrap().to_owned();
    assert_eq!(first.header("x-content-type-options"), Some("nosniff"));

    let again = server.client().send("GET", PHONE, &[("authorization", &auth), ("if-none-match", &etag)]).await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(again.header("cache-control"), Some("private, no-cache"));
    // RFC 9110 §15.4.5: no representation metadata beyond the validators and caching fields.
    assert_eq!(again.header("content-type"), None);
    assert_eq!(again.header("x-content-type-options"), None);

    // Over one kept connection, the 304s keep carrying the file's tag.
    let mut conn = server.client().connect().await.unwrap();
    for _ in 0..3 {
        let r = conn.send("GET", PHONE, &[("authorization", &auth), ("if-none-match", &etag)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    let weak = format!("W/{etag}");
    let r = conn.send("GET", PHONE, &[("authorization", &auth), ("if-none-match", &weak)]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED, "weak comparison");

    for list in [format!("\"nope\", {etag}"), format!("\"nope\",\t{etag} \t"), format!("\"nope\" ,W/{etag}")] {
        let r = server.client().send("GET", PHONE, &[("authorization", &auth), ("if-none-match", &list)]).await;
        assert_eq!(r.status, StatusCode::NOT_MODIFIED, "{list}");
    }
    let r = server.client().send("GET", PHONE, &[("authorization", &auth), ("if-none-match", "*")]).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);

    let r = server.client().send("GET", PHONE, &[("authorization", &auth), ("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, first.body);

    // A validator never replaces the token.
    let r = server.client().send("GET", PHONE, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn head_has_the_headers_of_get_and_no_body() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    let auth = format!("Bearer {token}");
    let get = server.client().get(PHONE, Some(&token)).await;
    for client in [server.client(), server.h2_client()] {
        let head = client.send("HEAD", PHONE, &[("authorization", &auth)]).await;
        assert_eq!(head.status, StatusCode::OK);
        assert!(head.body.is_empty());
        assert_eq!(head.header("content-length"), Some(get.body.len().to_string().as_str()));
        assert_eq!(head.header("etag"), get.header("etag"));
        assert_eq!(head.header("content-type"), get.header("content-type"));
    }
    let head = server.client().send("HEAD", PHONE, &[]).await;
    assert_eq!(head.status, StatusCode::UNAUTHORIZED);
    assert!(head.body.is_empty());
}

#[tokio::test]
async fn http2_serves_the_same_file() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    let h1 = server.client().get(PHONE, Some(&token)).await;
    let h2 = server.h2_client().get(PHONE, Some(&token)).await;
    assert_eq!(h1.version, http::Version::HTTP_11);
    assert_eq!(h2.version, http::Version::HTTP_2);
    assert_eq!(h2.status, StatusCode::OK);
    assert_eq!(h2.body, h1.body);
    assert_eq!(h2.header("etag"), h1.header("etag"));
    let r = server.h2_client().get(PHONE, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn other_methods_get_405_with_allow() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    let auth = format!("Bearer {token}");
    for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        for client in [server.client(), server.h2_client()] {
            let r = client.send(method, PHONE, &[("authorization", &auth)]).await;
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(r.header("allow"), Some("GET, HEAD"), "{method}");
        }
    }
}

#[tokio::test]
async fn names_outside_the_grammar_are_404() {
    let server = TestServer::start().await;
    let token = server.token("device:SEP001122334455");
    for path in [
        "/",
        "/SEP001122334455.cnf",
        "/SEP00112233445.cnf.xml",
        "/SEP001122334455.cnf.xml/",
        "/x/SEP001122334455.cnf.xml",
        "/..%2FSEP001122334455.cnf.xml",
        "/SEP001122334455%00.cnf.xml",
        "/ITLFile.tlv",
        "/etc/passwd",
    ] {
        let r = server.client().get(path, Some(&token)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    // Unauthenticated callers learn nothing, not even which names exist.
    let r = server.client().get("/ITLFile.tlv", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}
