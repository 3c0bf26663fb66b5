//! Benchmarks of the server's hot path, one stage at a time, on the example deployment:
//!
//! - `token_verify/<ALG>/signature`: [`Verifier::verify`] of a valid token never seen before (ES256, RS256,
//!   PS256, EdDSA): decode, signature, claims.
//! - `token_verify/<ALG>/cached`: the same token again, from the verified-token cache (SHA-256 and a lookup).
//! - `token_verify/connection_memo`: the same token again on the same connection ([`TokenMemo`]).
//! - `filename/parse`: [`parse_request_path`] on a phone name, a Jabber name and a refused traversal.
//! - `render/<device>`: [`Templates::render`] of one device, well-formedness check included.
//! - `xml/check_well_formed`: [`check_well_formed`] alone, on a rendered configuration.
//! - `fetch/cache_hit`: [`Provisioner::fetch`] of a file already in the cache.
//! - `fetch/cache_miss_render`: [`Provisioner::fetch`] of a file not in the cache (authorize, render,
//!   digest, insert); the untimed set-up puts a new deployment in force every [`MISS_DEVICES`] fetches.
//!
//! - `inventory_change/one_device_of_100k`: [`Provisioner::apply`] of one device's edit to a deployment of
//!   100,000 devices (what a cluster node does when the shared store announces it).
//! - `inventory_change/full_load_of_100k`: what the same edit would cost as a full load: the whole inventory
//!   checked again ([`Inventory::from_doc`]) and put in force ([`Provisioner::replace`]), file reading and
//!   TOML parsing not included.
//!
//! No network, TLS or HTTP is involved. Run with `cargo bench --bench hot_path` (append
//! `-- <filter>`, e.g. `-- fetch/`, to run some of them).

use std::cell::Cell;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::{EncodingKey, Header};
use sipcfg::auth::token::{TokenMemo, Verifier};
use sipcfg::config::{Algorithm, AuthConfig, Config, VerifyKeyConfig};
use sipcfg::provision::Provisioner;
use sipcfg::provision::deployment::{self, Loaded, Sources};
use sipcfg::provision::filename::{DeviceName, parse_request_path};
use sipcfg::provision::inventory::{Device, Inventory};
use sipcfg::provision::subject::Subject;
use sipcfg::provision::xml::check_well_formed;
use sipcfg::util::time::unix_now;

/// Cache bound of the benchmarked provisioner.
const CACHE_BYTES: u64 = 64 << 20;
/// Never-fetched devices available to `fetch/cache_miss_render` per deployment generation.
const MISS_DEVICES: u64 = 1024;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn example_config() -> Config {
    Config::load(&repo().join("example/sipcfg.toml")).expect("example config loads")
}

fn example_deployment(config: &Config) -> Loaded {
    deployment::load(&Sources::from_config(config)).expect("example deployment loads")
}

fn device_name(name: &str) -> DeviceName {
    DeviceName::parse_canonical(name).expect("canonical device name")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// A token the example configuration accepts, signed with `key_pem`.
fn mint(alg: Algorithm, kid: &str, key_pem: &Path) -> String {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let pem = std::fs::read(key_pem).expect("signing key readable");
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    }
    .expect("signing key parses");
    let mut header = Header::new(alg.to_jwt());
    header.kid = Some(kid.to_owned());
    let now = unix_now();
    let claims = serde_json::json!({
        "iss": "https://sipcfg.example.test",
        "aud": "sipcfg",
        "sub": "device:SEP001122334455",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    });
    jsonwebtoken::encode(&header, &claims, &key).expect("token signs")
}

fn token_verify(c: &mut Criterion) {
    let base = example_config().auth;
    let cases = [
        (Algorithm::ES256, "certs-example/token-signing-pub.pem", "certs-example/token-signing-key.pem"),
        (Algorithm::RS256, "tests/fixtures/keys/rsa-pub.pem", "tests/fixtures/keys/rsa-key.pem"),
        (Algorithm::PS256, "tests/fixtures/keys/rsa-pub.pem", "tests/fixtures/keys/rsa-key.pem"),
        (Algorithm::EdDSA, "tests/fixtures/keys/ed25519-pub.pem", "tests/fixtures/keys/ed25519-key.pem"),
    ];
    let mut group = c.benchmark_group("token_verify");
    for (alg, public, private) in cases {
        let kid = format!("bench-{alg:?}");
        let auth = AuthConfig {
            algorithms: vec![alg],
            keys: vec![VerifyKeyConfig { kid: Some(kid.clone()), algorithm: alg, public_key: repo().join(public) }],
            ..base.clone()
        };
        let verifier = Verifier::from_config(&auth).expect("verifier builds");
        let token = mint(alg, &kid, &repo().join(private));
        assert_eq!(verifier.verify(&token), Ok(Subject::Device(device_name("SEP001122334455"))), "{alg:?}");
        // The full check (decode, signature, claims, then into the verified-token cache): a fresh verifier
        // for every iteration, built outside the timing, so that nothing is remembered. The routine hands the
        // verifier back, so that dropping it (and its cache's tables) is not timed either.
        group.bench_function(format!("{alg:?}/signature"), |b| {
            b.iter_batched(
                || Verifier::from_config(&auth).expect("verifier builds"),
                |fresh| {
                    black_box(fresh.verify(black_box(&token)).is_ok());
                    fresh
                },
                BatchSize::PerIteration,
            )
        });
        // A token seen before, from any connection: SHA-256 of the token and the verified-token cache.
        group.bench_function(format!("{alg:?}/cached"), |b| b.iter(|| verifier.verify(black_box(&token))));
    }
    // The same token again on the same connection (TokenMemo): a byte comparison.
    let verifier = Arc::new(Verifier::from_config(&base).expect("verifier builds"));
    let token = mint(Algorithm::ES256, "example-es256-1", &repo().join("certs-example/token-signing-key.pem"));
    let mut memo = TokenMemo::default();
    let now = unix_now();
    memo.verify(&verifier, &token, now).expect("the example token verifies");
    group.bench_function("connection_memo", |b| {
        b.iter(|| memo.get(&verifier, black_box(token.as_bytes()), now).cloned())
    });
    group.finish();
}

fn filename_parse(c: &mut Criterion) {
    let names = ["SEP001122334455.cnf.xml", "csfjsmith.cnf.xml", "..%2F..%2Fetc%2Fpasswd"];
    assert!(parse_request_path(names[0]).is_ok());
    assert!(parse_request_path(names[1]).is_ok());
    assert!(parse_request_path(names[2]).is_err());
    c.bench_function("filename/parse", |b| {
        b.iter(|| {
            for name in names {
                let _ = black_box(parse_request_path(black_box(name)));
            }
        })
    });
}

fn render(c: &mut Criterion) {
    let Loaded { inventory, templates, phone_edge_trust: trust, .. } = example_deployment(&example_config());
    let mut group = c.benchmark_group("render");
    for name in ["SEP001122334455", "CSFJSMITH"] {
        let device = inventory.device(&device_name(name)).expect("device in the example inventory");
        templates.render(&inventory, device, &trust).expect("example device renders");
        group.bench_function(name, |b| b.iter(|| templates.render(black_box(&inventory), black_box(device), &trust)));
    }
    group.finish();
}

fn xml(c: &mut Criterion) {
    let Loaded { inventory, templates, phone_edge_trust: trust, .. } = example_deployment(&example_config());
    let device = inventory.device(&device_name("SEP001122334455")).expect("device in the example inventory");
    let doc = templates.render(&inventory, device, &trust).expect("example device renders");
    assert_eq!(check_well_formed(&doc), Ok(()));
    c.bench_function("xml/check_well_formed", |b| b.iter(|| check_well_formed(black_box(&doc))));
}

/// The example inventory plus [`MISS_DEVICES`] copies of SEP001122334455 under new names, with a device
/// subject and request path for each copy.
fn with_copies(inventory: &Inventory) -> (Inventory, Vec<(Subject, String)>) {
    let mut inventory = inventory.clone();
    let template = inventory.device(&device_name("SEP001122334455")).expect("device in the example inventory").clone();
    let mut requests = Vec::new();
    for i in 0..MISS_DEVICES {
        let name = device_name(&format!("SEP{:012X}", 0xBE00_0000_0000 + i));
        requests.push((Subject::Device(name.clone()), format!("{name}.cnf.xml")));
        let previous = inventory.devices.insert(name.clone(), std::sync::Arc::new(Device { name, ..template.clone() }));
        assert!(previous.is_none(), "copy names clash with the example inventory");
    }
    (inventory, requests)
}

fn fetch(c: &mut Criterion) {
    let config = example_config();
    let rt = runtime();
    let mut group = c.benchmark_group("fetch");

    let provisioner = Provisioner::new(example_deployment(&config), CACHE_BYTES);
    let subject = Subject::Device(device_name("SEP001122334455"));
    let path = "SEP001122334455.cnf.xml";
    rt.block_on(provisioner.fetch(&subject, path)).expect("warm-up fetch");
    group.bench_function("cache_hit", |b| {
        b.to_async(&rt).iter(|| provisioner.fetch(black_box(&subject), black_box(path)))
    });

    // Every fetch asks for a device not yet fetched in the generation in force; when all have been, a new
    // deployment (same content, next generation) goes in force, outside the timed part.
    let mut loaded = example_deployment(&config);
    let (inventory, requests) = with_copies(&loaded.inventory);
    loaded.inventory = inventory.clone();
    let provisioner = Provisioner::new(loaded, CACHE_BYTES);
    let next = Cell::new(0);
    group.bench_function("cache_miss_render", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (provisioner, inventory, requests, next, config) =
                (&provisioner, &inventory, &requests, &next, &config);
            async move {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    if next.get() == requests.len() {
                        let mut fresh = example_deployment(config);
                        fresh.inventory = inventory.clone();
                        provisioner.replace(fresh);
                        next.set(0);
                    }
                    let batch = &requests[next.get()..requests.len().min(next.get() + left as usize)];
                    let start = Instant::now();
                    for (subject, path) in batch {
                        let file = provisioner.fetch(black_box(subject), black_box(path)).await;
                        assert!(black_box(file).is_ok(), "{path} fetches");
                    }
                    total += start.elapsed();
                    next.set(next.get() + batch.len());
                    left -= batch.len() as u64;
                }
                total
            }
        })
    });
    group.finish();
}

/// Devices of the `inventory_change` benchmarks.
const LARGE: u64 = 100_000;

fn inventory_change(c: &mut Criterion) {
    use sipcfg::provision::deployment::InventoryChange;
    let config = example_config();
    let rt = runtime();
    let mut group = c.benchmark_group("inventory_change");
    let mut loaded = example_deployment(&config);
    let template = loaded.inventory.device(&device_name("SEP001122334455")).expect("device").clone();
    for i in 0..LARGE {
        let name = device_name(&format!("SEP{:012X}", 0xA000_0000_0000 + i));
        loaded.inventory.devices.insert(name.clone(), Arc::new(Device { name, ..template.clone() }));
    }
    let doc = loaded.inventory.doc();
    let provisioner = Provisioner::new(loaded, CACHE_BYTES);
    let name = device_name("SEPA00000000007");
    let mut edited = template.to_doc();
    let label = Cell::new(0u64);
    group.bench_function("one_device_of_100k", |b| {
        b.to_async(&rt).iter(|| {
            label.set(label.get() + 1);
            edited.lines[0].label = format!("edit {}", label.get());
            let change = [InventoryChange::Device(name.clone(), Some(edited.clone()))];
            let provisioner = &provisioner;
            async move { provisioner.apply(black_box(&change)).await.expect("the edit applies") }
        })
    });
    group.sample_size(10);
    group.bench_function("full_load_of_100k", |b| {
        b.iter_batched(
            || (doc.clone(), example_deployment(&config)),
            |(doc, mut fresh)| {
                fresh.inventory = Inventory::from_doc(Path::new("bench"), doc).expect("inventory checks");
                provisioner.replace(fresh)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, token_verify, filename_parse, render, xml, fetch, inventory_change);
criterion_main!(benches);
