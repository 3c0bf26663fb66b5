//! The provisioning pipeline, without any HTTP: name → authorize → cache or render. The server layer calls
//! [`Provisioner::fetch`] (HTTPS, authenticated subject) or [`Provisioner::fetch_legacy`] (plain HTTP).
//!
//! | module | stage |
//! |---|---|
//! | [`filename`] | the file-name grammar: what a request asks for |
//! | [`subject`], [`authorize`] | who asks, and whether they may have it |
//! | [`deployment`] | the inventory, templates, trust store and common files in force, loaded together |
//! | [`inventory`], [`rules`], [`model`] | devices, users, profiles, cluster settings; their rules; phone types |
//! | [`render`], [`xml`] | a device's file from the templates, checked well-formed |
//! | [`cache`] | rendered files, bounded by bytes, one render per miss |
//! | [`files`], [`trust`] | common files; the Phone-Edge-Trust store and `caconfig.json` |
//! | [`import`], [`settings`], [`export`] | changes an administrator makes: BAT import, cluster settings; `render --all` |
//! | [`snapshot`] | the last deployment that loaded, kept on disk for a start with broken files |

pub mod authorize;
pub mod cache;
pub mod chunked;
pub mod deployment;
pub mod edit;
pub mod export;
pub mod filename;
pub mod files;
pub mod import;
pub mod inventory;
pub mod model;
pub mod render;
pub mod rules;
pub mod settings;
pub mod snapshot;
pub mod subject;
pub mod trust;
pub mod xml;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::provision::authorize::Refusal;
use crate::provision::cache::{FileCache, RenderedFile};
use crate::provision::deployment::{Deployment, InventoryChange, Loaded};
use crate::provision::filename::{DeviceName, FileRequest, NameError};
use crate::provision::files::FileError;
use crate::provision::inventory::{Device, InventoryErrors};
use crate::provision::render::RenderError;
use crate::provision::subject::Subject;

/// The media type of every configuration file.
pub const XML_CONTENT_TYPE: &str = "application/xml; charset=utf-8";

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
    /// The [`Deployment::version`] it was fetched in: any change since (full or incremental) drops it.
    version: u64,
    file: Arc<RenderedFile>,
}

pub struct Provisioner {
    deployment: ArcSwap<Deployment>,
    generations: AtomicU64,
    versions: AtomicU64,
    /// One change at a time (a full load or an incremental one): each builds on the deployment in force.
    changing: std::sync::Mutex<()>,
    cache: FileCache,
    /// The generation in force, for whoever waits for the next one.
    in_force: tokio::sync::watch::Sender<u64>,
}

impl Provisioner {
    pub fn new(loaded: Loaded, cache_bytes: u64) -> Provisioner {
        Provisioner {
            deployment: ArcSwap::from_pointee(Deployment::new(1, 1, loaded)),
            generations: AtomicU64::new(1),
            versions: AtomicU64::new(1),
            changing: std::sync::Mutex::new(()),
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
        let _one = self.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        let version = self.versions.fetch_add(1, Ordering::SeqCst) + 1;
        self.deployment.store(Arc::new(Deployment::new(generation, version, loaded)));
        self.cache.clear();
        self.in_force.send_replace(generation);
        generation
    }

    /// Applies changes to single devices and users to the deployment in force, without a full load: the
    /// files of the devices that did not change stay cached (with 100,000 devices, one device's edit costs a
    /// few map operations, not a reload). Checked as a load would check them; refused as a whole otherwise.
    /// Returns the devices whose file changed.
    pub async fn apply(&self, changes: &[InventoryChange]) -> Result<Vec<DeviceName>, InventoryErrors> {
        let (generation, stale) = {
            let _one = self.changing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let current = self.current();
            let version = self.versions.fetch_add(1, Ordering::SeqCst) + 1;
            let (next, stale) = current.with_changes(version, changes)?;
            self.deployment.store(Arc::new(next));
            (current.generation, stale)
        };
        for (name, revision) in &stale {
            self.cache.forget(generation, name.as_str(), *revision);
        }
        Ok(stale.into_iter().map(|(name, _)| name).collect())
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
            && last.version == self.deployment.load().version
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
                        version: deployment.version,
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

    async fn device_config(&self, deployment: &Deployment, device: &Device) -> Result<Arc<RenderedFile>, FetchError> {
        let render = async {
            let xml = deployment.templates.render(&deployment.inventory, device, &deployment.phone_edge_trust)?;
            let file = match deployment.dictionary(device.phone_type, &xml) {
                Some(dictionary) => RenderedFile::packed(xml.as_bytes(), XML_CONTENT_TYPE, dictionary),
                None => RenderedFile::new(xml, XML_CONTENT_TYPE),
            };
            Ok::<_, RenderError>(Arc::new(file))
        };
        let revision = deployment.revision(&device.name);
        self.cache
            .get_or_render(deployment.generation, device.name.as_str(), revision, render)
            .await
            .map_err(FetchError::Render)
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
                    .get_or_render(deployment.generation, filename::DEFAULT_CONFIG, 0, render)
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
