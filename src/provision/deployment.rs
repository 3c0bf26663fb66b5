//! A deployment: the inventory, templates, Phone-Edge-Trust certificates and common files, loaded and
//! checked together from the files the configuration names, and put in force as one ([`Deployment`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::config::Config;
use crate::provision::cache::RenderedFile;
use crate::provision::filename::DeviceName;
use crate::provision::files::FileRoot;
use crate::provision::inventory::{
    Device, DeviceDoc, Inventory, InventoryDoc, InventoryError, InventoryErrors, User, UserDoc,
};
use crate::provision::model::{PHONE_TYPES, PhoneType};
use crate::provision::render::{TemplateErrors, Templates};
use crate::provision::rules;
use crate::provision::trust::{self, Purpose, ServerNotTrusted, TrustCert, TrustError, TrustStore};
use crate::util::time::unix_now;

/// Where a deployment's parts are read from (from the configuration).
#[derive(Debug, Clone)]
pub struct Sources {
    pub inventory: PathBuf,
    pub templates: PathBuf,
    pub templates_override: Option<PathBuf>,
    pub phone_edge_trust: Option<PathBuf>,
    pub files: Option<PathBuf>,
    pub max_file_bytes: u64,
}

impl Sources {
    pub fn from_config(config: &Config) -> Sources {
        Sources {
            inventory: config.inventory.file.clone(),
            templates: config.inventory.templates.clone(),
            templates_override: config.inventory.templates_override.clone(),
            phone_edge_trust: config.trust.phone_edge_trust.clone(),
            files: config.files.root.clone(),
            max_file_bytes: config.files.max_file_bytes,
        }
    }

    /// Every file and folder whose change means a new deployment.
    pub fn watched(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.inventory.clone(), self.templates.clone()];
        paths.extend(self.templates_override.iter().cloned());
        paths.extend(self.phone_edge_trust.iter().cloned());
        paths
    }
}

/// The parts of a deployment, loaded and checked, not yet in force.
pub struct Loaded {
    pub inventory: Inventory,
    pub templates: Templates,
    pub phone_edge_trust: Vec<TrustCert>,
    pub files: Option<FileRoot>,
}

/// The inventory, templates and certificates in force, with the generation that keys the cache.
///
/// Everything but the inventory is shared (`Arc`) between a deployment and the one an incremental change
/// makes from it ([`Deployment::with_changes`]); the inventory's users and devices are persistent maps, so a
/// change to one device shares the others.
pub struct Deployment {
    /// The cache's namespace: a new one for each full load, the same across incremental changes.
    pub generation: u64,
    /// A new one for every deployment put in force, full or incremental: what a connection's memo of its
    /// last file is checked against.
    pub version: u64,
    pub inventory: Inventory,
    pub templates: Arc<Templates>,
    pub phone_edge_trust: Arc<Vec<TrustCert>>,
    /// `caconfig.json`, made once per deployment.
    pub caconfig: Arc<RenderedFile>,
    pub files: Option<Arc<FileRoot>>,
    /// Per device, how many times it changed since the full load: part of its cache key, so that its old
    /// file is never served once it changed (absent: 0).
    revisions: imbl::HashMap<DeviceName, u64>,
    /// Per phone type, the first configuration rendered for it in this generation: cached configurations
    /// of that type are packed against it (see [`RenderedFile::packed`]).
    dictionaries: Arc<HashMap<&'static str, OnceLock<Arc<[u8]>>>>,
}

/// A change to the inventory of a deployment in force, made by another node or command (the shared store):
/// a device or a user put (`Some`) or removed (`None`). Anything else (cluster, profiles, certificates,
/// templates) is a full load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryChange {
    Device(DeviceName, Option<DeviceDoc>),
    User(String, Option<UserDoc>),
}

/// Why a deployment could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Inventory(#[from] InventoryErrors),
    #[error("{0}")]
    Templates(#[from] TemplateErrors),
    #[error("Phone-Edge-Trust: {0}")]
    Trust(#[from] TrustError),
    #[error("{0}")]
    Untrusted(#[from] Box<ServerNotTrusted>),
    #[error("{path}: file root: {message}")]
    Files { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
    /// The shared store could not be read (unreachable): not a problem of the deployment itself.
    #[error("{0}")]
    Store(String),
}

/// A deployment's inventory and certificate stores as the shared store holds them: the inventory's
/// documents, and each certificate's PEM with where it is (named in errors). Templates and common files are
/// not in it: every node has its own copy of those.
#[derive(Debug, Clone)]
pub struct StoredDeployment {
    pub inventory: InventoryDoc,
    pub phone_edge_trust: Vec<(PathBuf, String)>,
    pub tomcat_trust: Vec<(PathBuf, String)>,
}

/// Where a deployment's inventory and certificate stores are read from.
#[derive(Debug, Clone, Copy)]
pub enum Held<'a> {
    /// The files the configuration names (one node).
    Files,
    /// The shared store's copy, read in one snapshot; `origin` (its URL) names it in errors.
    Stored { origin: &'a Path, deployment: &'a StoredDeployment },
}

impl Held<'_> {
    /// The deployment: inventory and Phone-Edge-Trust from where they are held, templates and common files
    /// from the files `sources` names.
    pub fn load(self, sources: &Sources) -> Result<Loaded, Vec<LoadError>> {
        match self {
            Held::Files => load(sources),
            Held::Stored { origin, deployment } => load_stored(sources, origin, deployment),
        }
    }

    /// The Tomcat-trust certificates (the folder `dir` for files), and where they are, for messages.
    pub fn tomcat_trust(self, dir: Option<&Path>, now: i64) -> Result<(Vec<TrustCert>, Option<PathBuf>), TrustError> {
        match self {
            Held::Files => match dir {
                Some(dir) => Ok((TrustStore::new(Purpose::TomcatTrust, dir).load(now)?, Some(dir.to_owned()))),
                None => Ok((Vec::new(), None)),
            },
            Held::Stored { origin, deployment } => {
                let location = origin.join("tomcat-trust");
                let certs = trust::load_stored(Purpose::TomcatTrust, &location, &deployment.tomcat_trust, now)?;
                Ok((certs.into_iter().map(|(_, c)| c).collect(), Some(location)))
            }
        }
    }
}

/// Loads every part from the files `sources` names, reporting the problems of all of them.
pub fn load(sources: &Sources) -> Result<Loaded, Vec<LoadError>> {
    let inventory = Inventory::load(&sources.inventory).map_err(LoadError::from);
    let phone_edge_trust = match &sources.phone_edge_trust {
        Some(dir) => {
            TrustStore::new(Purpose::PhoneEdgeTrust, dir.clone()).load(unix_now() as i64).map_err(LoadError::from)
        }
        None => Ok(Vec::new()),
    };
    load_with(sources, inventory, phone_edge_trust)
}

/// Loads a deployment whose inventory and Phone-Edge-Trust come from the shared store (`origin` names it
/// in errors); templates and common files from the files `sources` names.
pub fn load_stored(sources: &Sources, origin: &Path, stored: &StoredDeployment) -> Result<Loaded, Vec<LoadError>> {
    let inventory = Inventory::from_doc(origin, stored.inventory.clone()).map_err(LoadError::from);
    let phone_edge_trust = trust::load_stored(
        Purpose::PhoneEdgeTrust,
        &origin.join("phone-edge-trust"),
        &stored.phone_edge_trust,
        unix_now() as i64,
    )
    .map(|certs| certs.into_iter().map(|(_, c)| c).collect())
    .map_err(LoadError::from);
    load_with(sources, inventory, phone_edge_trust)
}

fn load_with(
    sources: &Sources,
    inventory: Result<Inventory, LoadError>,
    phone_edge_trust: Result<Vec<TrustCert>, LoadError>,
) -> Result<Loaded, Vec<LoadError>> {
    let mut errors = Vec::new();
    let inventory = inventory.map_err(|e| errors.push(e)).ok();
    let templates = Templates::load(&sources.templates, sources.templates_override.as_deref())
        .map_err(|e| errors.push(e.into()))
        .ok();
    let phone_edge_trust = phone_edge_trust.map_err(|e| errors.push(e)).ok();
    let files = match &sources.files {
        Some(dir) => FileRoot::open(dir, sources.max_file_bytes)
            .map(Some)
            .map_err(|e| errors.push(LoadError::Files { path: dir.clone(), message: e.to_string() }))
            .ok(),
        None => Some(None),
    };
    match (inventory, templates, phone_edge_trust, files) {
        (Some(inventory), Some(templates), Some(phone_edge_trust), Some(files)) if errors.is_empty() => {
            Ok(Loaded { inventory, templates, phone_edge_trust, files })
        }
        _ => Err(errors),
    }
}

impl Deployment {
    /// Puts `loaded` in force as generation `generation` (and `version`).
    pub fn new(generation: u64, version: u64, loaded: Loaded) -> Deployment {
        let caconfig = Arc::new(RenderedFile::new(trust::caconfig_json(&loaded.phone_edge_trust), "application/json"));
        Deployment {
            generation,
            version,
            inventory: loaded.inventory,
            templates: Arc::new(loaded.templates),
            phone_edge_trust: Arc::new(loaded.phone_edge_trust),
            caconfig,
            files: loaded.files.map(Arc::new),
            revisions: imbl::HashMap::new(),
            dictionaries: Arc::new(PHONE_TYPES.iter().map(|t| (t.id, OnceLock::new())).collect()),
        }
    }

    /// This deployment with `changes` applied, as `version`: the same generation (cache entries of the
    /// devices that did not change stay valid), the changed devices with a new revision. Each change is
    /// checked as a load would check it; on the first that breaks a rule, nothing is applied. Returns the
    /// deployment and the devices whose file changed (to drop from the cache).
    pub fn with_changes(
        &self,
        version: u64,
        changes: &[InventoryChange],
    ) -> Result<(Deployment, Vec<(DeviceName, u64)>), InventoryErrors> {
        let mut inventory = self.inventory.clone();
        let mut revisions = self.revisions.clone();
        let mut stale = Vec::new();
        let refused = |entry: String, message: String| {
            InventoryErrors(vec![InventoryError { file: inventory_origin(&self.inventory), entry, message }])
        };
        let mut bump = |name: &DeviceName, revisions: &mut imbl::HashMap<DeviceName, u64>| {
            let old = revisions.get(name).copied().unwrap_or(0);
            revisions.insert(name.clone(), old + 1);
            stale.push((name.clone(), old));
        };
        for change in changes {
            match change {
                InventoryChange::Device(name, Some(doc)) => {
                    let pools = &inventory.pools.device_pools;
                    let device =
                        Device::from_doc(name.clone(), doc.clone(), &inventory.profiles, &inventory.users, pools)
                            .map_err(|problems| refused(format!("device {:?}", name.as_str()), problems.join("; ")))?;
                    inventory.devices.insert(name.clone(), Arc::new(device));
                    bump(name, &mut revisions);
                }
                InventoryChange::Device(name, None) => {
                    if inventory.devices.remove(name).is_some() {
                        bump(name, &mut revisions);
                    }
                }
                InventoryChange::User(id, doc) => {
                    let owned: Vec<DeviceName> = inventory
                        .devices
                        .values()
                        .filter(|d| d.owner.as_deref() == Some(id.as_str()))
                        .map(|d| d.name.clone())
                        .collect();
                    match doc {
                        Some(doc) => {
                            if !rules::valid_user_id(id) {
                                return Err(refused(format!("user {id:?}"), rules::USER_ID_RULE.into()));
                            }
                            inventory.users.insert(id.clone(), User { id: id.clone(), doc: doc.clone() });
                        }
                        None if !owned.is_empty() => {
                            return Err(refused(
                                format!("user {id:?}"),
                                format!("still owns {} device(s), e.g. {}", owned.len(), owned[0]),
                            ));
                        }
                        None => {
                            inventory.users.remove(id);
                        }
                    }
                    // Their files carry the owner's name.
                    for name in &owned {
                        bump(name, &mut revisions);
                    }
                }
            }
        }
        let deployment = Deployment {
            generation: self.generation,
            version,
            inventory,
            templates: self.templates.clone(),
            phone_edge_trust: self.phone_edge_trust.clone(),
            caconfig: self.caconfig.clone(),
            files: self.files.clone(),
            revisions,
            dictionaries: self.dictionaries.clone(),
        };
        Ok((deployment, stale))
    }

    /// How many times `name` changed since the full load (part of its cache key).
    pub fn revision(&self, name: &DeviceName) -> u64 {
        self.revisions.get(name).copied().unwrap_or(0)
    }

    /// The dictionary configurations of `phone_type` are packed against: the first one rendered in this
    /// deployment (`first`, when there is none yet).
    pub fn dictionary(&self, phone_type: &PhoneType, first: &str) -> Option<&Arc<[u8]>> {
        self.dictionaries.get(phone_type.id).map(|slot| slot.get_or_init(|| Arc::from(first.as_bytes())))
    }
}

/// Where an inventory came from, for the errors of a change to it.
fn inventory_origin(inventory: &Inventory) -> PathBuf {
    inventory.file.clone()
}
