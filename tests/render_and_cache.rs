//! Rendering safety (escaping, malformed output never served) and the cache (single render, byte bound,
//! never stale).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{TempDeployment, TestServer};
use http::StatusCode;
use sipcfg::provision::cache::{FileCache, RenderedFile};
use sipcfg::provision::filename::DeviceName;

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
    sipcfg::provision::xml::check_well_formed(&xml).unwrap();
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
    let loaded = sipcfg::provision::deployment::load(&sipcfg::provision::deployment::Sources::from_config(&config))
        .expect("new inventory loads");
    server.app.provisioner().replace(loaded);

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
                    .get_or_render(1, device.as_str(), 0, async {
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
        .get_or_render(2, device.as_str(), 0, async {
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
            .get_or_render(1, name.as_str(), 0, async move {
                Ok::<_, std::convert::Infallible>(Arc::new(RenderedFile::new(body, "application/xml")))
            })
            .await
            .unwrap();
    }
    let (entries, bytes) = cache.usage();
    assert!(bytes <= bound, "{bytes} bytes cached, bound {bound}");
    assert!(entries > 0 && entries < 100, "{entries} entries");
}

/// Waits until the cache holds at least `entries` files (the pre-render runs in the background).
async fn wait_for_cache(server: &TestServer, entries: u64) -> u64 {
    for _ in 0..200 {
        let (n, _) = server.app.provisioner().cache().usage();
        if n >= entries {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("the cache never reached {entries} entries");
}

#[tokio::test]
async fn every_enabled_device_is_prerendered_at_start_and_again_after_a_reload() {
    let d = TempDeployment::new();
    let server = TestServer::with_config(d.config()).await;
    let current = server.app.provisioner().current();
    let enabled = current.inventory.devices.values().filter(|dev| dev.enabled).count() as u64;
    assert!(enabled >= 20, "the example has {enabled} enabled devices");
    drop(current);
    assert_eq!(wait_for_cache(&server, enabled).await, enabled, "only enabled devices are pre-rendered");

    // What a phone gets from the pre-rendered (packed) cache is exactly what the renderer makes.
    let token = server.token("device:SEP001122334455");
    let served = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert_eq!(served.status, StatusCode::OK);
    let deployment = server.app.provisioner().current();
    let name = DeviceName::parse_canonical("SEP001122334455").unwrap();
    let device = &deployment.inventory.devices[&name];
    let rendered = deployment.templates.render(&deployment.inventory, device, &deployment.phone_edge_trust).unwrap();
    assert_eq!(served.text(), rendered);
    drop(deployment);

    // A new deployment empties the cache; the pre-render fills it again, with the new content.
    d.edit("example/inventory.toml", "display_name = \"John Smith\"", "display_name = \"John Q. Smith\"");
    let loaded =
        sipcfg::provision::deployment::load(&sipcfg::provision::deployment::Sources::from_config(&d.config())).unwrap();
    server.app.provisioner().replace(loaded);
    wait_for_cache(&server, enabled).await;
    let after = server.client().get("/SEP001122334455.cnf.xml", Some(&token)).await;
    assert!(after.text().contains("<displayName>John Q. Smith</displayName>"));
}

#[tokio::test]
async fn prerender_can_be_turned_off() {
    let d = TempDeployment::new();
    let mut config = d.config();
    config.cache.prerender = false;
    let server = TestServer::with_config(config).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(server.app.provisioner().cache().usage().0, 0);
}

#[test]
fn a_file_packed_against_a_similar_one_is_small_and_unpacks_to_itself() {
    let a =
        "<device><name>SEP001122334455</name><line>1000</line>".to_owned() + &"<x>same</x>".repeat(300) + "</device>";
    let b = a.replace("SEP001122334455", "SEP00AABBCCDDEE").replace("1000", "2000");
    let dictionary: Arc<[u8]> = Arc::from(a.as_bytes());
    let packed = RenderedFile::packed(b.as_bytes(), "application/xml", &dictionary);
    assert_eq!(packed.len(), b.len());
    assert!(packed.stored_bytes() < b.len() / 20, "{} bytes stored for {}", packed.stored_bytes(), b.len());
    assert_eq!(packed.body().unwrap(), b.as_bytes());
    assert_eq!(packed.etag, RenderedFile::new(b.clone(), "application/xml").etag, "the ETag is the content's");

    // Content that packing cannot shrink is kept as it is.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let kept = RenderedFile::packed(&noise, "application/octet-stream", &dictionary);
    assert_eq!(kept.stored_bytes(), noise.len());
    assert_eq!(kept.body().unwrap(), noise);
}

/// A change to one device or user, as the shared store delivers it: that device's file changes at once, the
/// others stay cached, a kept connection's memo sees it, and a change that breaks a rule is refused whole.
#[tokio::test]
async fn one_device_changes_without_a_reload_and_the_others_stay_cached() {
    use sipcfg::provision::deployment::InventoryChange;
    let server = TestServer::start().await;
    let provisioner = server.app.provisioner().clone();
    let token = server.token("user:jsmith");
    let client = server.client();
    let mut conn = client.connect().await.unwrap();
    let auth = format!("Bearer {token}");
    let phone = conn.send("GET", "/SEP001122334455.cnf.xml", &[("authorization", &auth)]).await;
    assert!(phone.text().contains("<displayName>John Smith</displayName>"));
    let csf = client.get("/CSFJSMITH.cnf.xml", Some(&token)).await;
    let before = server.metrics().await;
    let generation = provisioner.current().generation;

    let name = DeviceName::parse_canonical("SEP001122334455").unwrap();
    let mut doc = provisioner.current().inventory.device(&name).unwrap().to_doc();
    doc.lines[0].display_name = "John Changed".into();
    let changed = provisioner.apply(&[InventoryChange::Device(name.clone(), Some(doc.clone()))]).await.unwrap();
    assert_eq!(changed, vec![name.clone()]);
    assert_eq!(provisioner.current().generation, generation, "no full load");

    // The kept connection (its memo) and a new one get the new file; the other device comes from the cache.
    let r = conn.send("GET", "/SEP001122334455.cnf.xml", &[("authorization", &auth)]).await;
    assert!(r.text().contains("<displayName>John Changed</displayName>"), "{}", r.text());
    assert_ne!(r.header("etag"), phone.header("etag"));
    let again = client.get("/CSFJSMITH.cnf.xml", Some(&token)).await;
    assert_eq!(again.header("etag"), csf.header("etag"));
    let after = server.metrics().await;
    let misses = |m: &common::Metrics| m.get("sipcfg_cache_misses_total");
    assert_eq!(misses(&after) - misses(&before), 1.0, "only the changed device was rendered again");

    // A user's change re-renders the devices it owns (their files carry its name).
    let user = provisioner.current().inventory.users.get("jsmith").unwrap().doc.clone();
    let renamed = sipcfg::provision::inventory::UserDoc { name: "John Q. Smith".into(), ..user };
    let changed = provisioner.apply(&[InventoryChange::User("jsmith".into(), Some(renamed))]).await.unwrap();
    assert!(changed.contains(&DeviceName::parse_canonical("CSFJSMITH").unwrap()), "{changed:?}");
    let r = client.get("/CSFJSMITH.cnf.xml", Some(&token)).await;
    assert!(r.text().contains("John Q. Smith"), "{}", r.text());

    // A change that breaks a rule is refused, and nothing of it is applied.
    let mut bad = doc.clone();
    bad.profile = "no such profile".into();
    let other = DeviceName::parse_canonical("SEP001122334466").unwrap();
    let other_doc = provisioner.current().inventory.device(&other).unwrap().to_doc();
    let mut other_changed = other_doc.clone();
    other_changed.description = "changed".into();
    let refused = provisioner
        .apply(&[
            InventoryChange::Device(other.clone(), Some(other_changed)),
            InventoryChange::Device(name.clone(), Some(bad)),
        ])
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("unknown profile \"no such profile\""), "{refused}");
    assert_eq!(provisioner.current().inventory.device(&other).unwrap().to_doc(), other_doc);

    // A device removed is refused to its own token at once, as if it never existed.
    provisioner.apply(&[InventoryChange::Device(name.clone(), None)]).await.unwrap();
    let r = client.get("/SEP001122334455.cnf.xml", Some(&server.token("device:SEP001122334455"))).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}
