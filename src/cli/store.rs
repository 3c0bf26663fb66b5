//! `sipcfg store`: the shared store of a cluster. `init` creates or upgrades the schema and, when the store
//! is empty, moves in the deployment the configuration's files describe (inventory, certificate stores, the
//! token state of `[state]`); `export` writes it back as files; `status` shows the nodes following it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use toml_edit::{DocumentMut, value};

use crate::app::site::Site;
use crate::auth::store::{AuthStore, TokenState};
use crate::cli::{ConfigArg, block_on, join, load_config};
use crate::config::{Config, StoreConfig};
use crate::provision::deployment::{self, Sources};
use crate::provision::inventory::Inventory;
use crate::provision::trust::{self, Purpose, TrustCert, TrustStore};
use crate::store::kek::Kek;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::util::fsutil::atomic_write;
use crate::util::time::{Time, rfc3339_utc, unix_now};

#[derive(Subcommand, Debug)]
pub enum StoreAction {
    /// Create or upgrade the schema (safe to run twice, and while nodes run); when the store holds no
    /// deployment yet, move in the one the configuration's files describe: the inventory, the Phone-Edge-Trust
    /// and Tomcat-trust folders, and the token state of [state] (codes, refresh tokens, revocations, signing
    /// keys). Creates [store] key_file when it does not exist.
    Init,
    /// Write the shared store's deployment as files into DIR (new or empty): inventory.toml,
    /// phone-edge-trust/, tomcat-trust/, state.db (the token state) and sipcfg.toml, the configuration
    /// without [store] and pointing at them, which `sipcfg check`, `serve` and `store init` accept.
    Export {
        /// The folder to write into (created; it must be empty).
        dir: PathBuf,
    },
    /// The store, its schema, its last change, and each node that reported in the last day with the last
    /// change it applied.
    Status,
}

pub(crate) fn store(arg: &ConfigArg, action: StoreAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let store_config = config.store.clone().ok_or_else(|| {
        format!(
            "{}: no shared store is configured: add a [store] section with url = \"postgres://USER@HOST/DATABASE\" \
             (or set SIPCFG_STORE_URL); docs/cluster.md",
            config.path.display()
        )
    })?;
    block_on(async move {
        match action {
            StoreAction::Init => init(&config, &store_config).await,
            StoreAction::Export { dir } => export(&config, &store_config, &dir).await,
            StoreAction::Status => status(&store_config).await,
        }
    })?
}

async fn init(config: &Config, store_config: &StoreConfig) -> Result<ExitCode, String> {
    let kek = if store_config.key_file.exists() {
        Kek::load(&store_config.key_file).map_err(|e| e.to_string())?
    } else {
        let kek = Kek::create(&store_config.key_file).map_err(|e| e.to_string())?;
        println!(
            "created the key-encryption key {} (mode 600): copy it to every node of the cluster; without it a node \
             cannot use the signing keys",
            store_config.key_file.display()
        );
        kek
    };
    let store = PgStore::open(store_config, Some(kek)).map_err(|e| e.to_string())?;
    let migrated = store.migrate().await.map_err(|e| e.to_string())?;
    match migrated.from {
        0 => println!("{}: schema created (version {})", store.origin(), migrated.to),
        v if v == migrated.to => println!("{}: schema is up to date (version {v})", store.origin()),
        v => println!("{}: schema upgraded from version {v} to {}", store.origin(), migrated.to),
    }
    if store.has_deployment().await.map_err(|e| e.to_string())? {
        let snapshot = store.snapshot().await.map_err(|e| e.to_string())?;
        println!(
            "{}: already holds a deployment ({} devices); nothing moved in. Change it with sipcfg's commands, or \
             `sipcfg store export DIR` to see it as files",
            store.origin(),
            snapshot.deployment.inventory.devices.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    // What moves in must load as a node would load it: every problem is named before anything is written.
    let sources = Sources::from_config(config);
    let loaded = deployment::load(&sources).map_err(|errors| {
        format!(
            "nothing moved in: the deployment's files do not load (`sipcfg check` lists every problem):\n{}",
            join(errors)
        )
    })?;
    let now = unix_now() as Time;
    let tomcat = match &config.trust.tomcat_trust {
        Some(dir) => TrustStore::new(Purpose::TomcatTrust, dir.clone()).load(now).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let tokens = match &config.state {
        Some(state) if state.database.exists() => {
            let sqlite = SqliteStore::open(&state.database).map_err(|e| e.to_string())?;
            Some((state.database.clone(), sqlite.dump().map_err(|e| e.to_string())?))
        }
        _ => None,
    };
    let stored = deployment::StoredDeployment {
        inventory: loaded.inventory.doc(),
        phone_edge_trust: Vec::new(),
        tomcat_trust: Vec::new(),
    };
    let moved = store
        .move_in(
            &stored,
            &loaded.phone_edge_trust,
            &tomcat,
            tokens.as_ref().map(|(_, t)| t),
            &crate::app::site::actor(),
        )
        .await
        .map_err(|e| e.to_string())?;
    if !moved {
        println!("{}: another `store init` moved a deployment in first; nothing moved in", store.origin());
        return Ok(ExitCode::SUCCESS);
    }
    let inventory = &loaded.inventory;
    println!(
        "moved in from {}: {} devices, {} users, {} profiles, {} call managers; {} Phone-Edge-Trust and {} \
         Tomcat-trust certificate(s)",
        config.inventory.file.display(),
        inventory.devices.len(),
        inventory.users.len(),
        inventory.profiles.len(),
        inventory.cluster.call_managers.len(),
        loaded.phone_edge_trust.len(),
        tomcat.len()
    );
    match &tokens {
        Some((path, state)) => println!("moved in from {}: {}", path.display(), state.describe()),
        None => println!("no token state to move in ([state] database absent): the first node creates a signing key"),
    }
    println!(
        "from now on the nodes with this [store] serve the store's deployment; {} and the certificate folders are \
         no longer read (keep them as a record, or remove them)",
        config.inventory.file.display()
    );
    let detail = format!(
        "moved in from {}: {} devices, {} users; token state {}",
        config.inventory.file.display(),
        inventory.devices.len(),
        inventory.users.len(),
        if tokens.is_some() { "moved in" } else { "absent" }
    );
    let origin = store.origin().to_owned();
    Site::Shared(Arc::new(store)).audit_cli(config, "store.init", &origin, &detail).await;
    Ok(ExitCode::SUCCESS)
}

async fn export(config: &Config, store_config: &StoreConfig, dir: &Path) -> Result<ExitCode, String> {
    if dir.exists() && std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.next().is_some() {
        return Err(format!("{}: not empty; export into a new or empty folder", dir.display()));
    }
    let kek = Kek::load(&store_config.key_file).map_err(|e| e.to_string())?;
    let store = PgStore::open(store_config, Some(kek)).map_err(|e| e.to_string())?;
    store.check_schema().await.map_err(|e| e.to_string())?;
    let snapshot = store.snapshot().await.map_err(|e| e.to_string())?;
    let tokens = store.token_state().await.map_err(|e| e.to_string())?;
    let origin = store.origin_path();
    let inventory = Inventory::from_doc(&origin, snapshot.deployment.inventory.clone()).map_err(|e| e.to_string())?;
    let now = unix_now() as Time;
    let certs = |purpose: Purpose, pems| -> Result<Vec<TrustCert>, String> {
        let location = origin.join(match purpose {
            Purpose::PhoneEdgeTrust => "phone-edge-trust",
            Purpose::TomcatTrust => "tomcat-trust",
        });
        let loaded = trust::load_stored(purpose, &location, pems, now).map_err(|e| e.to_string())?;
        Ok(loaded.into_iter().map(|(_, c)| c).collect())
    };
    let phone_edge = certs(Purpose::PhoneEdgeTrust, &snapshot.deployment.phone_edge_trust)?;
    let tomcat = certs(Purpose::TomcatTrust, &snapshot.deployment.tomcat_trust)?;
    let dir = dir.to_owned();
    let config = config.clone();
    let written =
        tokio::task::spawn_blocking(move || write_export(&config, &dir, &inventory, &phone_edge, &tomcat, &tokens))
            .await
            .map_err(|e| format!("export: {e}"))??;
    println!("{written}");
    Ok(ExitCode::SUCCESS)
}

/// Writes the exported deployment into `dir`; returns what it wrote, for people.
fn write_export(
    config: &Config,
    dir: &Path,
    inventory: &Inventory,
    phone_edge: &[TrustCert],
    tomcat: &[TrustCert],
    tokens: &TokenState,
) -> Result<String, String> {
    let io = |path: &Path, e: std::io::Error| format!("{}: {e}", path.display());
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let inventory_text = format!(
        "# A sipcfg inventory, as `sipcfg store export` writes it from the shared store (docs/inventory.md).\n\n{}",
        toml::to_string(&inventory.to_doc()).map_err(|e| format!("the inventory cannot be written as TOML: {e}"))?
    );
    let inventory_file = dir.join("inventory.toml");
    atomic_write(&inventory_file, inventory_text.as_bytes()).map_err(|e| io(&inventory_file, e))?;
    for (name, certs) in [("phone-edge-trust", phone_edge), ("tomcat-trust", tomcat)] {
        let folder = dir.join(name);
        std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
        for c in certs {
            let file = folder.join(c.file_name());
            atomic_write(&file, c.pem.as_bytes()).map_err(|e| io(&file, e))?;
        }
    }
    let state_file = dir.join("state.db");
    let sqlite = SqliteStore::open(&state_file).map_err(|e| e.to_string())?;
    sqlite.restore(tokens).map_err(|e| e.to_string())?;
    drop(sqlite);
    let config_file = dir.join("sipcfg.toml");
    let config_text = exported_config(config)?;
    atomic_write(&config_file, config_text.as_bytes()).map_err(|e| io(&config_file, e))?;
    Ok(format!(
        "wrote {}: inventory.toml ({} devices), phone-edge-trust/ ({}), tomcat-trust/ ({}), state.db ({}), \
         sipcfg.toml (the configuration without [store], pointing at them: `sipcfg check -c {}` checks it)",
        dir.display(),
        inventory.devices.len(),
        phone_edge.len(),
        tomcat.len(),
        tokens.describe(),
        config_file.display()
    ))
}

/// The configuration file, without `[store]` and with the deployment's keys pointing at the exported files;
/// every other path made absolute (they were relative to the original file's folder).
fn exported_config(config: &Config) -> Result<String, String> {
    let text = std::fs::read_to_string(&config.path).map_err(|e| format!("{}: {e}", config.path.display()))?;
    let mut doc: DocumentMut = text.parse().map_err(|e| format!("{}: {e}", config.path.display()))?;
    let path = |p: &Path| value(p.display().to_string());
    doc.remove("store");
    doc["inventory"]["file"] = value("inventory.toml");
    doc["inventory"]["templates"] = path(&config.inventory.templates);
    if let Some(t) = &config.inventory.templates_override {
        doc["inventory"]["templates_override"] = path(t);
    }
    doc["tls"]["certificate"] = path(&config.tls.certificate);
    doc["tls"]["private_key"] = path(&config.tls.private_key);
    if let Some(signing) = &config.auth.signing {
        doc["auth"]["signing"]["private_key"] = path(&signing.private_key);
    }
    if let Some(jwks) = &config.auth.jwks {
        doc["auth"]["jwks"] = path(jwks);
    }
    if let Some(keys) = doc["auth"].get_mut("keys").and_then(|k| k.as_array_of_tables_mut()) {
        for (table, key) in keys.iter_mut().zip(&config.auth.keys) {
            table["public_key"] = path(&key.public_key);
        }
    }
    if let Some(root) = &config.files.root {
        doc["files"]["root"] = path(root);
    }
    if let Some(ca) = config.edge.as_ref().and_then(|e| e.client_ca.as_ref()) {
        doc["edge"]["client_ca"] = path(ca);
    }
    if let Some(audit) = &config.log.audit_file {
        doc["log"]["audit_file"] = path(audit);
    }
    doc["trust"]["phone_edge_trust"] = value("phone-edge-trust");
    doc["trust"]["tomcat_trust"] = value("tomcat-trust");
    doc["state"]["database"] = value("state.db");
    Ok(format!(
        "# Exported by `sipcfg store export` from {}: the deployment as files, without [store].\n{}",
        config.path.display(),
        doc
    ))
}

async fn status(store_config: &StoreConfig) -> Result<ExitCode, String> {
    let kek = Kek::load(&store_config.key_file).ok();
    let store = PgStore::open(store_config, kek).map_err(|e| e.to_string())?;
    let version = store.schema_version().await.map_err(|e| e.to_string())?;
    println!("store: {}", store.origin());
    println!("schema: version {version}");
    store.check_schema().await.map_err(|e| e.to_string())?;
    let latest = store.probe().await.map_err(|e| e.to_string())?;
    println!("last change: {latest}");
    if store.has_deployment().await.map_err(|e| e.to_string())? {
        let snapshot = store.snapshot().await.map_err(|e| e.to_string())?;
        let inventory = &snapshot.deployment.inventory;
        println!(
            "deployment: {} devices, {} users, {} profiles, {} Phone-Edge-Trust and {} Tomcat-trust certificate(s)",
            inventory.devices.len(),
            inventory.users.len(),
            inventory.profiles.len(),
            snapshot.deployment.phone_edge_trust.len(),
            snapshot.deployment.tomcat_trust.len()
        );
    } else {
        println!("deployment: none yet (`sipcfg store init` moves one in)");
    }
    let now = unix_now() as Time;
    let nodes = store.nodes().await.map_err(|e| e.to_string())?;
    if nodes.is_empty() {
        println!("nodes: none reported in the last day");
    }
    for n in &nodes {
        let state = if now - n.seen <= crate::auth::service::NODE_ALIVE_SECS { "running" } else { "silent" };
        println!(
            "node {}  {state}  seen {}s ago  started {}  applied token change {}",
            n.name,
            now - n.seen,
            rfc3339_utc(n.started),
            n.applied
        );
    }
    Ok(ExitCode::SUCCESS)
}
