//! Everything a running server holds, built from a [`Config`]: the provisioning pipeline, the token
//! verifier and the TLS configuration. Used by `sipcfg serve` and by the tests.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::provision::{self, LoadError, Provisioner};
use crate::server::tls::{self, TlsError};
use crate::token::{KeyError, Verifier};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Load(Vec<LoadError>),
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

pub struct App {
    pub config: Config,
    pub provisioner: Provisioner,
    pub verifier: ArcSwap<Verifier>,
    pub tls: Arc<rustls::ServerConfig>,
}

impl App {
    pub fn from_config(config: Config) -> Result<App, StartupError> {
        let (inventory, templates) =
            provision::load(&config.inventory.file, &config.inventory.templates).map_err(StartupError::Load)?;
        let verifier = Verifier::from_config(&config.auth)?;
        let tls = tls::server_config(&config.tls)?;
        Ok(App {
            provisioner: Provisioner::new(inventory, templates, config.cache.max_bytes),
            verifier: ArcSwap::from_pointee(verifier),
            tls: Arc::new(tls),
            config,
        })
    }
}
