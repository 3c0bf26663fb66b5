//! Rendering safety (escaping, malformed output never served) and the cache (single render, byte bound,
//! never stale).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TempDeployment, TestServer};
use http::StatusCode;
use sipcfg::cache::{FileCache, RenderedFile};
use sipcfg::filename::DeviceName;

#[tokio::test]
async fn values_are_escaped_into_well_formed_xml() {
    let d = TempDeployment::new();
    d.edit(
        "example/inventory.toml",
        "{ dn = \"1001\", display_name = \"John Smith\", label = \"1001 John\" }",
        r#"{ dn = "1001", display_name = "Smith & Sons <\"sales\"> 'east'", label = "</label><evil/>" }"#,
    );
    let server = TestServer::with_config(d.config()).await;
    let token = server.token("device:SEP001122334455");
    let r = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK);
    let xml = r.text();
    sipcfg::render::check_well_formed(&xml).unwrap();
    assert!(
        xml.contains("<displayName>Smith &amp; Sons &lt;&quot;sales&quot;&gt; &apos;east&apos;</displayName>"),
        "{xml}"
    );
    assert!(xml.contains("<featureLabel>&lt;/label&gt;&lt;evil/&gt;</featureLabel>"), "{xml}");
    assert!(!xml.contains("<evil/>"));
}

#[tokio::test]
async fn a_value_xml_cannot_hold_is_a_500_never_a_broken_file() {
    let d = TempDeployment::new();
    d.edit("example/inventory.toml", "display_name = \"John Smith\"", "display_name = \"John\\u0001Smith\"");
    let server = TestServer::with_config(d.config()).await;
    let token = server.token("user:jsmith");
    let r = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!r.text().contains("<device"), "no part of the file is served");
    assert!(r.header("etag").is_none());
    // Errors are not cached, and the rest of the deployment is served as usual.
    let again = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert_eq!(again.status, StatusCode::INTERNAL_SERVER_ERROR);
    let other = server.client().get("/CSFJSMITH.cnf.xml", Some(&token)).await;
    assert_eq!(other.status, StatusCode::OK);
}

#[tokio::test]
async fn a_template_producing_malformed_xml_is_a_500() {
    let d = TempDeployment::new();
    std::fs::write(
        d.path("templates/models/cisco-8841.xml.j2"),
        "{% extends \"families/cisco-88xx.xml.j2\" %}{% block extra %}<unclosed>{% endblock %}",
    )
    .unwrap();
    let server = TestServer::with_config(d.config()).await;
    let r = server.client().get("/SEP001122334466.cnf.xml", Some(&server.token("user:adoe"))).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    let r = server.client().get("/SEPAABBCCDDEEFF.cnf.xml", Some(&server.token("user:adoe"))).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn the_cache_never_answers_with_a_config_older_than_the_inventory() {
    let d = TempDeployment::new();
    let server = TestServer::with_config(d.config()).await;
    let token = server.token("device:SEP001122334455");
    let before = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert!(before.text().contains("<displayName>John Smith</displayName>"));
    let old_etag = before.header("etag").unwrap().to_owned();

    d.edit("example/inventory.toml", "display_name = \"John Smith\"", "display_name = \"John Q. Smith\"");
    let config = d.config();
    let loaded =
        sipcfg::provision::load(&sipcfg::provision::Sources::from_config(&config)).expect("new inventory loads");
    server.app.provisioner.replace(loaded);

    let auth = format!("Bearer {token}");
    let after = server
        .client()
        .send("GET", "/SEP001122334455.cnf.xml", &[("authorization", &auth), ("if-none-match", &old_etag)])
        .await;
    assert_eq!(after.status, StatusCode::OK, "the old ETag no longer matches");
    assert!(after.text().contains("<displayName>John Q. Smith</displayName>"));
    assert_ne!(after.header("etag"), Some(old_etag.as_str()));
}

#[tokio::test]
async fn concurrent_misses_render_once() {
    let cache = FileCache::new(16 * 1024 * 1024);
    let renders = Arc::new(AtomicUsize::new(0));
    let device = DeviceName::parse_canonical("SEP001122334455").unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let cache = cache.clone();
            let renders = renders.clone();
            let device = device.clone();
            tokio::spawn(async move {
                cache
                    .get_or_render(1, device.as_str(), async {
                        renders.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        Ok::<_, std::convert::Infallible>(Arc::new(RenderedFile::new("<device/>", "application/xml")))
                    })
                    .await
                    .unwrap()
                    .etag
                    .clone()
            })
        })
        .collect();
    let mut etags = Vec::new();
    for t in tasks {
        etags.push(t.await.unwrap());
    }
    assert_eq!(renders.load(Ordering::SeqCst), 1);
    assert!(etags.windows(2).all(|w| w[0] == w[1]));
    // A new generation is a new key: it renders again.
    cache
        .get_or_render(2, device.as_str(), async {
            renders.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(Arc::new(RenderedFile::new("<device/>", "application/xml")))
        })
        .await
        .unwrap();
    assert_eq!(renders.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_cache_is_bounded_by_bytes() {
    let bound = 1024 * 1024;
    let cache = FileCache::new(bound);
    let body = "x".repeat(64 * 1024);
    for i in 0..100u64 {
        let name = DeviceName::parse_canonical(&format!("SEP{i:012X}")).unwrap();
        let body = body.clone();
        cache
            .get_or_render(1, name.as_str(), async move {
                Ok::<_, std::convert::Infallible>(Arc::new(RenderedFile::new(body, "application/xml")))
            })
            .await
            .unwrap();
    }
    let (entries, bytes) = cache.usage().await;
    assert!(bytes <= bound, "{bytes} bytes cached, bound {bound}");
    assert!(entries > 0 && entries < 100, "{entries} entries");
}
