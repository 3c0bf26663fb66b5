//! Where a deployment and its token state live ([`Site`]): files and an embedded SQLite database (one node),
//! or the shared store (a cluster, `[store]`). The commands that read or change them (`import`, `cluster
//! set`, `sip-oauth-mode`, `cert`, `activation-code`, `token revoke`, `keys`, `check`) go through it, so that
//! each works against either. Every change is checked against the whole inventory before it is written; in
//! the shared store it is written only if the inventory did not change meanwhile (else it is checked again).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::auth::accounts::{AccountStore, AuditEvent};
use crate::auth::store::{AuthStore, StoreError};
use crate::config::Config;
use crate::provision::deployment::{Held, StoredDeployment};
use crate::provision::edit::{EditError, Edits};
use crate::provision::import::{self, ImportError, ImportReport, Options};
use crate::provision::inventory::{Cluster, Inventory, InventoryErrors};
use crate::provision::settings::{self, ClusterChange, SettingsError};
use crate::provision::trust::{self, Added, Purpose, TrustCert, TrustError, TrustStore};
use crate::store::kek::{Kek, KekError};
use crate::store::postgres::{CONFLICT, Edit, PgStore, Snapshot};
use crate::store::sqlite::{SqliteAuthStore, SqliteStore};
use crate::util::progress::Progress;
use crate::util::time::Time;

/// How many times a change to the shared store is checked again when the inventory changed meanwhile.
const ATTEMPTS: usize = 3;

/// Where the deployment and the token state live.
#[derive(Clone)]
pub enum Site {
    /// The files the configuration names, and `[state]`'s SQLite database.
    Files,
    /// The shared store.
    Shared(Arc<PgStore>),
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Kek(#[from] KekError),
    #[error("{0}")]
    Inventory(#[from] InventoryErrors),
    #[error("{0}")]
    Trust(#[from] TrustError),
    #[error("{0}")]
    Settings(#[from] SettingsError),
    #[error("{0}")]
    Import(#[from] ImportError),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Edit(#[from] EditError),
    /// The inventory file (or its folder) cannot be written by this process: nothing was written.
    #[error(
        "cannot write {path}: {source}; nothing was written. The server must be able to write the inventory's \
         file and folder to change it (the packaged service cannot write /etc/sipcfg: see docs/console.md, Limits)"
    )]
    NotWritable { path: PathBuf, source: std::io::Error },
    /// The inventory file changed between the read and the write of an edit: nothing was written.
    #[error("{0} changed while the change was being checked; nothing was written: try again")]
    Changed(PathBuf),
}

impl Site {
    /// The site `config` describes. The shared store's key-encryption key is read now: a node or command
    /// without it could not use the signing keys.
    pub fn open(config: &Config) -> Result<Site, SiteError> {
        match &config.store {
            None => Ok(Site::Files),
            Some(store) => {
                let kek = Kek::load(&store.key_file)?;
                Ok(Site::Shared(Arc::new(PgStore::open(store, Some(kek))?)))
            }
        }
    }

    pub fn shared(&self) -> Option<&Arc<PgStore>> {
        match self {
            Site::Files => None,
            Site::Shared(store) => Some(store),
        }
    }

    /// Where the inventory is, for messages: its file, or the shared store's URL.
    pub fn inventory_location(&self, config: &Config) -> String {
        match self {
            Site::Files => config.inventory.file.display().to_string(),
            Site::Shared(store) => store.origin().to_owned(),
        }
    }

    /// The inventory, checked.
    pub async fn inventory(&self, config: &Config) -> Result<Inventory, SiteError> {
        match self {
            Site::Files => Ok(Inventory::load(&config.inventory.file)?),
            Site::Shared(store) => {
                let snapshot = store.snapshot().await?;
                Ok(Inventory::from_doc(&store.origin_path(), snapshot.deployment.inventory)?)
            }
        }
    }

    /// The shared store's deployment in one snapshot, or `None` for files.
    pub async fn snapshot(&self) -> Result<Option<Snapshot>, SiteError> {
        match self {
            Site::Files => Ok(None),
            Site::Shared(store) => Ok(Some(store.snapshot().await?)),
        }
    }

    /// Runs `f` with where the deployment is held (reading the shared store's snapshot first).
    pub async fn with_held<T>(&self, f: impl FnOnce(Held<'_>) -> T) -> Result<T, SiteError> {
        match self {
            Site::Files => Ok(f(Held::Files)),
            Site::Shared(store) => {
                let snapshot = store.snapshot().await?;
                let origin = store.origin_path();
                Ok(f(Held::Stored { origin: &origin, deployment: &snapshot.deployment }))
            }
        }
    }

    /// The certificates of a store, each with where it is, and where the store is. The folder of a
    /// certificate store that is not configured is an error that says which key to set.
    pub async fn certificates(
        &self,
        config: &Config,
        purpose: Purpose,
        now: Time,
    ) -> Result<(Vec<(PathBuf, TrustCert)>, PathBuf), SiteError> {
        match self {
            Site::Files => {
                let dir = folder_of(config, purpose)?;
                let certs = TrustStore::new(purpose, dir.clone()).load(now)?;
                // Files are named after their certificate: where each is, for messages.
                Ok((certs.into_iter().map(|c| (dir.join(c.file_name()), c)).collect(), dir))
            }
            Site::Shared(store) => {
                let location = store.origin_path().join(purpose_dir(purpose));
                let pems = store.trust_certs(purpose).await?;
                Ok((trust::load_stored(purpose, &location, &pems, now)?, location))
            }
        }
    }

    /// The token service's store: `[state]`'s SQLite database, or the shared store. `None` when neither is
    /// configured.
    pub fn auth_store(&self, config: &Config) -> Result<Option<Arc<dyn AuthStore>>, SiteError> {
        match self {
            Site::Shared(store) => Ok(Some(store.clone())),
            Site::Files => match &config.state {
                Some(state) => Ok(Some(Arc::new(SqliteAuthStore::new(SqliteStore::open(&state.database)?)))),
                None => Ok(None),
            },
        }
    }

    /// Why this process could not change the inventory, if it could not: its file's folder is not writable
    /// (read-only file system, permissions). Always `None` with the shared store.
    pub fn inventory_not_writable(&self, config: &Config) -> Option<String> {
        let Site::Files = self else { return None };
        let dir = config.inventory.file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let probe = dir.join(format!(".sipcfg-write-check-{}", std::process::id()));
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                None
            }
            Err(e) => Some(format!("{}: {e}", dir.display())),
        }
    }

    /// Where administrators' accounts, sessions and the audit trail live: `[state]`'s SQLite database, or
    /// the shared store. `None` when neither is configured.
    pub fn account_store(&self, config: &Config) -> Result<Option<Arc<dyn AccountStore>>, SiteError> {
        match self {
            Site::Shared(store) => Ok(Some(store.clone())),
            Site::Files => match &config.state {
                Some(state) => Ok(Some(Arc::new(SqliteAuthStore::new(SqliteStore::open(&state.database)?)))),
                None => Ok(None),
            },
        }
    }

    /// Records a change made by a command in the audit trail (when there is a store to keep it in). A
    /// failure to record is reported, never fatal: the change is already made.
    pub async fn audit_cli(&self, config: &Config, action: &str, target: &str, detail: &str) {
        let store = match self.account_store(config) {
            Ok(Some(store)) => store,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, action, target, "the change is made, but the audit trail cannot be opened");
                return;
            }
        };
        let event = AuditEvent {
            at: crate::util::time::unix_now() as Time,
            actor: actor(),
            address: host(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
        };
        if let Err(e) = store.audit(&event).await {
            tracing::warn!(error = %e, action, target, "the change is made, but it could not be recorded in the audit trail");
        }
    }

    /// Puts or removes devices, users, profiles and pools, checked as a whole inventory (and by `check`, given the inventory
    /// before and after) before anything is written. Returns the inventory as it now is.
    pub async fn edit_inventory(
        &self,
        config: &Config,
        edits: &Edits,
        actor: &str,
        check: impl Fn(&Inventory, &Inventory) -> Result<(), SiteError>,
    ) -> Result<Inventory, SiteError> {
        match self {
            Site::Files => {
                let path = &config.inventory.file;
                let read = || {
                    std::fs::read_to_string(path)
                        .map_err(|source| SiteError::Import(ImportError::Read { path: path.clone(), source }))
                };
                let text = read()?;
                let before = Inventory::parse(path, &text)?;
                let new_text = edits.apply_to_toml(path, &text)?;
                let after = Inventory::parse(path, &new_text)?;
                check(&before, &after)?;
                if read()? != text {
                    return Err(SiteError::Changed(path.clone()));
                }
                crate::util::fsutil::atomic_write(path, new_text.as_bytes())
                    .map_err(|source| SiteError::NotWritable { path: path.clone(), source })?;
                Ok(after)
            }
            Site::Shared(store) => {
                retry(|| async {
                    let snapshot = store.snapshot().await?;
                    let before = Inventory::from_doc(&store.origin_path(), snapshot.deployment.inventory.clone())?;
                    let mut doc = snapshot.deployment.inventory;
                    edits.apply_to(&mut doc);
                    let after = Inventory::from_doc(&store.origin_path(), doc)?;
                    check(&before, &after)?;
                    let mut changes: Vec<Edit> =
                        edits.profiles.iter().map(|(n, p)| Edit::Profile(n.clone(), p.clone())).collect();
                    changes.extend(edits.users.iter().map(|(id, u)| Edit::User(id.clone(), u.clone())));
                    if !edits.devices.is_empty() {
                        changes.push(Edit::Devices(edits.devices.clone()));
                    }
                    if edits.touches_pools() {
                        // The pools share the cluster's document: written whole, as checked.
                        changes.push(Edit::Cluster(Box::new(after.cluster.clone()), Box::new(after.pools.clone())));
                    }
                    store.edit(&changes, Some(snapshot.version), actor).await?;
                    Ok(after)
                })
                .await
            }
        }
    }

    /// Applies cluster setting changes, checked as a whole inventory; returns the cluster as it now is.
    pub async fn set_cluster(&self, config: &Config, changes: &[ClusterChange]) -> Result<Cluster, SiteError> {
        match self {
            Site::Files => Ok(settings::apply(&config.inventory.file, changes)?),
            Site::Shared(store) => {
                retry(|| async {
                    let snapshot = store.snapshot().await?;
                    let mut doc = snapshot.deployment.inventory;
                    settings::apply_to(&mut doc.cluster, changes);
                    let inventory = Inventory::from_doc(&store.origin_path(), doc)
                        .map_err(|e| SiteError::Settings(SettingsError::Invalid(e)))?;
                    // The pools share the cluster's document: written back as they were read.
                    let edit = Edit::Cluster(Box::new(inventory.cluster.clone()), Box::new(inventory.pools.clone()));
                    store.edit(&[edit], Some(snapshot.version), &actor()).await?;
                    Ok(inventory.cluster)
                })
                .await
            }
        }
    }

    /// Imports a CUCM BAT export (`sipcfg import`).
    pub async fn import(
        &self,
        config: &Config,
        csv_path: &Path,
        options: Options,
        progress: &mut (dyn Progress + Send),
    ) -> Result<ImportReport, SiteError> {
        let csv = std::fs::read(csv_path).map_err(|source| ImportError::Read { path: csv_path.to_owned(), source })?;
        self.import_bytes(config, &csv, options, progress, &actor()).await
    }

    /// Imports a CUCM BAT export given as the file's bytes (the console's upload), as `actor`.
    pub async fn import_bytes(
        &self,
        config: &Config,
        csv: &[u8],
        options: Options,
        progress: &mut (dyn Progress + Send),
        actor: &str,
    ) -> Result<ImportReport, SiteError> {
        match self {
            Site::Files => Ok(import::import_bytes(&config.inventory.file, csv, options, progress)?),
            Site::Shared(store) => {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let snapshot = store.snapshot().await?;
                    let inventory = Inventory::from_doc(&store.origin_path(), snapshot.deployment.inventory)
                        .map_err(ImportError::Inventory)?;
                    let plan = import::plan(&inventory, csv, options, progress)?;
                    let devices = import::apply_docs(&inventory, &plan)?;
                    // Owners first: the store checks each device against the users it holds.
                    let mut edits: Vec<Edit> = plan.new_users().map(|(id, doc)| Edit::User(id, Some(doc))).collect();
                    let mut report = plan.report;
                    if options.dry_run || devices.is_empty() {
                        return Ok(report);
                    }
                    edits.push(Edit::Devices(
                        devices.into_iter().map(|(n, d)| (n.as_str().to_owned(), Some(d))).collect(),
                    ));
                    match store.edit(&edits, Some(snapshot.version), actor).await {
                        Ok(_) => {
                            report.written = true;
                            return Ok(report);
                        }
                        Err(e) if is_conflict(&e) && attempt < ATTEMPTS => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// Adds the certificates of `pem_file` that a store takes ([`TrustStore::add`]).
    pub async fn add_certificates(
        &self,
        config: &Config,
        purpose: Purpose,
        pem_file: &Path,
        now: Time,
        server_leaf: Option<&[u8]>,
    ) -> Result<Added, SiteError> {
        match self {
            Site::Files => Ok(TrustStore::new(purpose, folder_of(config, purpose)?).add(pem_file, now, server_leaf)?),
            Site::Shared(store) => {
                retry(|| async {
                    let snapshot = store.snapshot().await?;
                    let (entries, location) = stored_certs(store, &snapshot.deployment, purpose, now)?;
                    let added = trust::plan_add(purpose, &location, &entries, pem_file, now, server_leaf)?;
                    let edit = Edit::AddCerts(purpose, added.added.clone());
                    store.edit(&[edit], Some(snapshot.version), &actor()).await?;
                    Ok(added)
                })
                .await
            }
        }
    }

    /// Removes one certificate of a store, named as `sipcfg cert remove` takes it.
    pub async fn remove_certificate(
        &self,
        config: &Config,
        purpose: Purpose,
        id: &str,
    ) -> Result<TrustCert, SiteError> {
        match self {
            Site::Files => Ok(TrustStore::new(purpose, folder_of(config, purpose)?).remove(id)?),
            Site::Shared(store) => {
                let now = crate::util::time::unix_now() as Time;
                retry(|| async {
                    let snapshot = store.snapshot().await?;
                    let (entries, location) = stored_certs(store, &snapshot.deployment, purpose, now)?;
                    let (_, cert) = trust::find_by_id(purpose, &location, &entries, id)?;
                    let edit = Edit::RemoveCert(purpose, cert.sha256.clone());
                    store.edit(&[edit], Some(snapshot.version), &actor()).await?;
                    Ok(cert.clone())
                })
                .await
            }
        }
    }
}

/// The certificates of `purpose` in a snapshot of the shared store, parsed, and where the store is.
fn stored_certs(
    store: &PgStore,
    deployment: &StoredDeployment,
    purpose: Purpose,
    now: Time,
) -> Result<(Vec<(PathBuf, TrustCert)>, PathBuf), SiteError> {
    let location = store.origin_path().join(purpose_dir(purpose));
    let pems = match purpose {
        Purpose::PhoneEdgeTrust => &deployment.phone_edge_trust,
        Purpose::TomcatTrust => &deployment.tomcat_trust,
    };
    Ok((trust::load_stored(purpose, &location, pems, now)?, location))
}

fn purpose_dir(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::PhoneEdgeTrust => "phone-edge-trust",
        Purpose::TomcatTrust => "tomcat-trust",
    }
}

/// The folder of a certificate store, or the error that says which key to set.
fn folder_of(config: &Config, purpose: Purpose) -> Result<PathBuf, SiteError> {
    let dir = match purpose {
        Purpose::PhoneEdgeTrust => config.trust.phone_edge_trust.clone(),
        Purpose::TomcatTrust => config.trust.tomcat_trust.clone(),
    };
    dir.ok_or_else(|| {
        SiteError::Config(format!(
            "{}: no {} folder is configured: set it under [trust] (e.g. {} = \"{}\")",
            config.path.display(),
            purpose.key(),
            purpose.key().trim_start_matches("trust."),
            purpose.option()
        ))
    })
}

fn is_conflict(e: &StoreError) -> bool {
    matches!(e, StoreError::Shared { message, .. } if message == CONFLICT)
}

/// Runs a read-check-write of the shared store again when the inventory changed between its read and its
/// write, up to [`ATTEMPTS`] times.
async fn retry<T, F, Fut>(mut attempt: F) -> Result<T, SiteError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SiteError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(SiteError::Store(e)) if is_conflict(&e) && tries < ATTEMPTS => continue,
            other => return other,
        }
    }
}

/// Who makes a change from this process, for the change log: the user and the host.
pub fn actor() -> String {
    let user = std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "?".into());
    format!("cli:{user}@{}", host())
}

/// This machine's name.
pub fn host() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}
