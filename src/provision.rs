//! The provisioning pipeline, without any HTTP: name → authorize → cache or render. The server layer calls
//! [`Provisioner::fetch`] (HTTPS, authenticated subject) or [`Provisioner::fetch_legacy`] (plain HTTP).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

use crate::authorize::{self, Refusal};
use crate::cache::{FileCache, RenderedFile};
use crate::config::Config;
use crate::filename::{self, FileRequest, NameError};
use crate::files::{FileError, FileRoot};
use crate::inventory::{Inventory, InventoryErrors};
use crate::render::{RenderError, TemplateErrors, Templates};
use crate::token::{Subject, unix_now};
use crate::trust::{self, TrustCert, TrustError, TrustStore};

pub const XML_CONTENT_TYPE: &str = "application/xml; charset=utf-8";

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
        Some(dir) => TrustStore::new(dir.clone()).load(unix_now() as i64).map_err(|e| errors.push(e.into())).ok(),
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

/// What [`Provisioner::prerender`] did.
#[derive(Debug, Default, Clone)]
pub struct Prerendered {
    pub generation: u64,
    pub rendered: usize,
    /// Devices whose configuration did not render (each is reported when a phone asks for it).
    pub failed: usize,
    pub elapsed: std::time::Duration,
    pub outcome: PrerenderOutcome,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum PrerenderOutcome {
    /// Every enabled device is in the cache.
    #[default]
    Complete,
    /// A newer deployment came into force first; its own pre-render takes over.
    Superseded,
    /// The cache reached nine-tenths of `cache.max_bytes`.
    CacheFull,
}

/// Why a file was not served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("not found: {0}")]
    NotFound(NotFound),
    #[error("forbidden: {0}")]
    Forbidden(Refusal),
    #[error("render failed: {0}")]
    Render(Arc<RenderError>),
    #[error("common file: {0}")]
    File(Arc<FileError>),
}

/// Why a name has no file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotFound {
    #[error("{0}")]
    Name(NameError),
    #[error("TFTP encrypted configuration files are not served (not supported with SIP OAuth)")]
    EncryptedConfig,
    #[error("no such common file")]
    NoCommonFile,
}

impl FetchError {
    /// Label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::NotFound(NotFound::Name(_)) => "unknown-file",
            FetchError::NotFound(NotFound::EncryptedConfig) => "encrypted-config",
            FetchError::NotFound(NotFound::NoCommonFile) => "no-common-file",
            FetchError::Forbidden(r) => r.reason(),
            FetchError::Render(_) => "render-error",
            FetchError::File(e) => match **e {
                FileError::NotFound(_) => "no-common-file",
                FileError::OutsideRoot(_) => "outside-root",
                FileError::TooLarge(..) => "file-too-large",
                FileError::Io(..) => "file-io",
            },
        }
    }
}

/// The last device configuration one connection fetched ([`Provisioner::fetch_remembering`]). It holds
/// one rendered file for as long as the connection lives, outside the cache's byte bound.
#[derive(Default)]
pub struct FetchMemo {
    last: Option<LastFetch>,
}

struct LastFetch {
    subject: Subject,
    path: Box<str>,
    generation: u64,
    file: Arc<RenderedFile>,
}

pub struct Provisioner {
    deployment: ArcSwap<Deployment>,
    generations: AtomicU64,
    cache: FileCache,
    /// The generation in force, for whoever waits for the next one.
    in_force: tokio::sync::watch::Sender<u64>,
}

impl Provisioner {
    pub fn new(loaded: Loaded, cache_bytes: u64) -> Provisioner {
        Provisioner {
            deployment: ArcSwap::from_pointee(deployment(1, loaded)),
            generations: AtomicU64::new(1),
            cache: FileCache::new(cache_bytes),
            in_force: tokio::sync::watch::Sender::new(1),
        }
    }

    /// The deployment in force.
    pub fn current(&self) -> Arc<Deployment> {
        self.deployment.load_full()
    }

    /// Puts a new deployment in force. Requests already running finish with the old one; the cache never
    /// answers for the old one again.
    pub fn replace(&self, loaded: Loaded) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        self.deployment.store(Arc::new(deployment(generation, loaded)));
        self.cache.clear();
        self.in_force.send_replace(generation);
        generation
    }

    /// Follows the generation in force: `changed()` wakes when a new deployment replaces the current one.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.in_force.subscribe()
    }

    pub fn cache(&self) -> &FileCache {
        &self.cache
    }

    /// Renders every enabled device's configuration of the deployment in force into the cache, so that a
    /// boot storm finds them there. Stops early when a newer deployment comes into force or when the cache
    /// is nine-tenths full (rendering more would only evict what was just rendered).
    pub async fn prerender(&self) -> Prerendered {
        let deployment = self.current();
        let started = std::time::Instant::now();
        let mut done = Prerendered { generation: deployment.generation, ..Prerendered::default() };
        let limit = self.cache.max_bytes() / 10 * 9;
        for (i, device) in deployment.inventory.devices.values().filter(|d| d.enabled).enumerate() {
            if i % 64 == 0 {
                // Requests first: this is background work.
                tokio::task::yield_now().await;
                if self.generations.load(Ordering::SeqCst) != deployment.generation {
                    done.outcome = PrerenderOutcome::Superseded;
                    break;
                }
                if self.cache.weighted_size() >= limit {
                    done.outcome = PrerenderOutcome::CacheFull;
                    break;
                }
            }
            match self.device_config(&deployment, device).await {
                Ok(_) => done.rendered += 1,
                Err(_) => done.failed += 1,
            }
        }
        done.elapsed = started.elapsed();
        done
    }

    /// The file named `path` (the request path without its leading `/`), if `subject` may have it. This
    /// is the HTTPS (6971) path: every caller here holds a verified token.
    pub async fn fetch(&self, subject: &Subject, path: &str) -> Result<Arc<RenderedFile>, FetchError> {
        self.fetch_in(subject, path, None).await
    }

    /// [`fetch`](Self::fetch) for one connection: a repeat of the device configuration it fetched last,
    /// for the same subject and in the same deployment, is answered from `memo` without the name parse,
    /// the authorization and the cache lookup (all three depend only on the subject, the path and the
    /// deployment). Every other request goes the full way; a successful device configuration is
    /// remembered. Shared files are never remembered: common files can change on disk without a reload.
    pub async fn fetch_remembering(
        &self,
        subject: &Subject,
        path: &str,
        memo: &mut FetchMemo,
    ) -> Result<Arc<RenderedFile>, FetchError> {
        if let Some(last) = &memo.last
            && last.generation == self.deployment.load().generation
            && *last.path == *path
            && last.subject == *subject
        {
            self.cache.count_hit();
            return Ok(last.file.clone());
        }
        memo.last = None;
        self.fetch_in(subject, path, Some(memo)).await
    }

    /// The full way: name, authorization, cache; a device configuration is remembered in `memo` if given.
    async fn fetch_in(
        &self,
        subject: &Subject,
        path: &str,
        memo: Option<&mut FetchMemo>,
    ) -> Result<Arc<RenderedFile>, FetchError> {
        let request = filename::parse_request_path(path).map_err(|e| FetchError::NotFound(NotFound::Name(e)))?;
        let deployment = self.current();
        match request {
            FileRequest::DeviceConfig(name) => {
                let device =
                    authorize::device_config(&deployment.inventory, subject, &name).map_err(FetchError::Forbidden)?;
                let file = self.device_config(&deployment, device).await?;
                if let Some(memo) = memo {
                    memo.last = Some(LastFetch {
                        subject: subject.clone(),
                        path: path.into(),
                        generation: deployment.generation,
                        file: file.clone(),
                    });
                }
                Ok(file)
            }
            other => self.shared_file(&deployment, other).await,
        }
    }

    /// The plain-HTTP (legacy 6970) path: no token. Common files, `XMLDefault.cnf.xml`, `caconfig.json`,
    /// and the configurations of enabled devices whose profile has OAuth off. Every other configuration
    /// gets the same refusal, so the answer does not tell whether a device exists.
    pub async fn fetch_legacy(&self, path: &str) -> Result<Arc<RenderedFile>, FetchError> {
        let request = filename::parse_request_path(path).map_err(|e| FetchError::NotFound(NotFound::Name(e)))?;
        let deployment = self.current();
        match request {
            FileRequest::DeviceConfig(name) => {
                let device =
                    authorize::legacy_device_config(&deployment.inventory, &name).map_err(FetchError::Forbidden)?;
                self.device_config(&deployment, device).await
            }
            other => self.shared_file(&deployment, other).await,
        }
    }

    async fn device_config(
        &self,
        deployment: &Deployment,
        device: &crate::inventory::Device,
    ) -> Result<Arc<RenderedFile>, FetchError> {
        let render = async {
            let xml = deployment.templates.render(&deployment.inventory, device, &deployment.phone_edge_trust)?;
            let file = match deployment.dictionaries.get(device.phone_type.id) {
                Some(slot) => {
                    let dictionary = slot.get_or_init(|| Arc::from(xml.as_bytes()));
                    RenderedFile::packed(xml.as_bytes(), XML_CONTENT_TYPE, dictionary)
                }
                None => RenderedFile::new(xml, XML_CONTENT_TYPE),
            };
            Ok::<_, RenderError>(Arc::new(file))
        };
        self.cache.get_or_render(deployment.generation, device.name.as_str(), render).await.map_err(FetchError::Render)
    }

    /// Files that are the same for every caller of a channel.
    async fn shared_file(
        &self,
        deployment: &Deployment,
        request: FileRequest,
    ) -> Result<Arc<RenderedFile>, FetchError> {
        match request {
            FileRequest::DeviceConfig(_) => Err(FetchError::NotFound(NotFound::NoCommonFile)),
            FileRequest::EncryptedConfig(_) => Err(FetchError::NotFound(NotFound::EncryptedConfig)),
            FileRequest::CaConfig => Ok(deployment.caconfig.clone()),
            FileRequest::DefaultConfig => {
                let render = async {
                    let xml =
                        deployment.templates.render_default(&deployment.inventory, &deployment.phone_edge_trust)?;
                    Ok::<_, RenderError>(Arc::new(RenderedFile::new(xml, XML_CONTENT_TYPE)))
                };
                self.cache
                    .get_or_render(deployment.generation, filename::DEFAULT_CONFIG, render)
                    .await
                    .map_err(FetchError::Render)
            }
            FileRequest::Common(name) => match &deployment.files {
                None => Err(FetchError::NotFound(NotFound::NoCommonFile)),
                Some(root) => root.read(&name).await.map(Arc::new).map_err(|e| FetchError::File(Arc::new(e))),
            },
        }
    }
}

fn deployment(generation: u64, loaded: Loaded) -> Deployment {
    let caconfig = Arc::new(RenderedFile::new(trust::caconfig_json(&loaded.phone_edge_trust), "application/json"));
    Deployment {
        generation,
        inventory: loaded.inventory,
        templates: loaded.templates,
        phone_edge_trust: loaded.phone_edge_trust,
        caconfig,
        files: loaded.files,
        dictionaries: crate::model::PHONE_TYPES.iter().map(|t| (t.id, OnceLock::new())).collect(),
    }
}
