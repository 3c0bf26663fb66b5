//! The provisioning pipeline, without any HTTP: name → authorize → cache or render. The server layer calls
//! [`Provisioner::fetch`] with an authenticated subject and the requested name.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::authorize::{self, Refusal};
use crate::cache::{FileCache, RenderedFile};
use crate::filename::{self, FileRequest, NameError};
use crate::inventory::{Inventory, InventoryErrors};
use crate::render::{RenderError, TemplateErrors, Templates};
use crate::token::Subject;

pub const XML_CONTENT_TYPE: &str = "application/xml; charset=utf-8";

/// The inventory and templates in force, with the generation that keys the cache.
pub struct Deployment {
    pub generation: u64,
    pub inventory: Inventory,
    pub templates: Templates,
}

/// Why a deployment could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Inventory(#[from] InventoryErrors),
    #[error("{0}")]
    Templates(#[from] TemplateErrors),
}

/// Loads the inventory and the templates, reporting the problems of both.
pub fn load(inventory: &Path, templates: &Path) -> Result<(Inventory, Templates), Vec<LoadError>> {
    let inv = Inventory::load(inventory);
    let tpl = Templates::load(templates);
    match (inv, tpl) {
        (Ok(i), Ok(t)) => Ok((i, t)),
        (i, t) => Err(i.err().map(LoadError::from).into_iter().chain(t.err().map(LoadError::from)).collect()),
    }
}

/// Why a file was not served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("not found: {0}")]
    NotFound(NameError),
    #[error("forbidden: {0}")]
    Forbidden(Refusal),
    #[error("render failed: {0}")]
    Render(Arc<RenderError>),
}

impl FetchError {
    /// Label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::NotFound(_) => "unknown-file",
            FetchError::Forbidden(r) => r.reason(),
            FetchError::Render(_) => "render-error",
        }
    }
}

pub struct Provisioner {
    deployment: ArcSwap<Deployment>,
    generations: AtomicU64,
    cache: FileCache,
}

impl Provisioner {
    pub fn new(inventory: Inventory, templates: Templates, cache_bytes: u64) -> Provisioner {
        Provisioner {
            deployment: ArcSwap::from_pointee(Deployment { generation: 1, inventory, templates }),
            generations: AtomicU64::new(1),
            cache: FileCache::new(cache_bytes),
        }
    }

    /// The deployment in force.
    pub fn current(&self) -> Arc<Deployment> {
        self.deployment.load_full()
    }

    /// Puts a new inventory and template set in force. Requests already running finish with the old one;
    /// the cache never answers for the old one again.
    pub fn replace(&self, inventory: Inventory, templates: Templates) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::SeqCst) + 1;
        self.deployment.store(Arc::new(Deployment { generation, inventory, templates }));
        self.cache.clear();
        generation
    }

    pub fn cache(&self) -> &FileCache {
        &self.cache
    }

    /// The file named `path` (the request path without its leading `/`), if `subject` may have it.
    pub async fn fetch(&self, subject: &Subject, path: &str) -> Result<Arc<RenderedFile>, FetchError> {
        let request = filename::parse_request_path(path).map_err(FetchError::NotFound)?;
        let deployment = self.current();
        match request {
            FileRequest::DeviceConfig(name) => {
                let device =
                    authorize::device_config(&deployment.inventory, subject, &name).map_err(FetchError::Forbidden)?;
                let render = async {
                    let xml = deployment.templates.render(&deployment.inventory, device)?;
                    Ok::<_, RenderError>(Arc::new(RenderedFile::new(xml, XML_CONTENT_TYPE)))
                };
                self.cache.get_or_render(deployment.generation, &name, render).await.map_err(FetchError::Render)
            }
        }
    }
}
