//! A deployment: the inventory, templates, Phone-Edge-Trust certificates and common files, loaded and
//! checked together from the files the configuration names, and put in force as one ([`Deployment`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::config::Config;
use crate::provision::cache::RenderedFile;
use crate::provision::files::FileRoot;
use crate::provision::inventory::{Inventory, InventoryErrors};
use crate::provision::model::{PHONE_TYPES, PhoneType};
use crate::provision::render::{TemplateErrors, Templates};
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
pub struct Deployment {
    pub generation: u64,
    pub inventory: Inventory,
    pub templates: Templates,
    pub phone_edge_trust: Vec<TrustCert>,
    /// `caconfig.json`, made once per deployment.
    pub caconfig: Arc<RenderedFile>,
    pub files: Option<FileRoot>,
    /// Per phone type, the first configuration rendered for it in this deployment: cached configurations
    /// of that type are packed against it (see [`RenderedFile::packed`]).
    dictionaries: HashMap<&'static str, OnceLock<Arc<[u8]>>>,
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
}

/// Loads every part, reporting the problems of all of them.
pub fn load(sources: &Sources) -> Result<Loaded, Vec<LoadError>> {
    let mut errors = Vec::new();
    let inventory = Inventory::load(&sources.inventory).map_err(|e| errors.push(e.into())).ok();
    let templates = Templates::load(&sources.templates, sources.templates_override.as_deref())
        .map_err(|e| errors.push(e.into()))
        .ok();
    let phone_edge_trust = match &sources.phone_edge_trust {
        Some(dir) => TrustStore::new(Purpose::PhoneEdgeTrust, dir.clone())
            .load(unix_now() as i64)
            .map_err(|e| errors.push(e.into()))
            .ok(),
        None => Some(Vec::new()),
    };
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
    /// Puts `loaded` in force as generation `generation`.
    pub fn new(generation: u64, loaded: Loaded) -> Deployment {
        let caconfig = Arc::new(RenderedFile::new(trust::caconfig_json(&loaded.phone_edge_trust), "application/json"));
        Deployment {
            generation,
            inventory: loaded.inventory,
            templates: loaded.templates,
            phone_edge_trust: loaded.phone_edge_trust,
            caconfig,
            files: loaded.files,
            dictionaries: PHONE_TYPES.iter().map(|t| (t.id, OnceLock::new())).collect(),
        }
    }

    /// The dictionary configurations of `phone_type` are packed against: the first one rendered in this
    /// deployment (`first`, when there is none yet).
    pub fn dictionary(&self, phone_type: &PhoneType, first: &str) -> Option<&Arc<[u8]>> {
        self.dictionaries.get(phone_type.id).map(|slot| slot.get_or_init(|| Arc::from(first.as_bytes())))
    }
}
