//! Everything a running server holds, built from a [`Config`]: the provisioning pipeline, the token
//! verifier and the TLS configurations. Used by `sipcfg serve` and by the tests.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::Config;
use crate::provision::{self, LoadError, Provisioner, Sources};
use crate::server::edge;
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
    pub sources: Sources,
    pub provisioner: Provisioner,
    pub verifier: ArcSwap<Verifier>,
    /// The phone port's TLS configuration; swapped on reload, taken per connection.
    pub tls: ArcSwap<rustls::ServerConfig>,
    /// The edge-proxy listener's own TLS configuration (separate session cache), if configured.
    pub edge_tls: ArcSwapOption<rustls::ServerConfig>,
    /// Fingerprint of the watched files, taken just before the deployment in force was read: a change
    /// made while it was loading is still seen by the file watch.
    pub loaded_fingerprint: AtomicU64,
}

impl App {
    pub fn from_config(config: Config) -> Result<App, StartupError> {
        let sources = Sources::from_config(&config);
        let fingerprint = crate::reload::fingerprint(&sources.watched());
        let loaded = provision::load(&sources).map_err(StartupError::Load)?;
        let verifier = Verifier::from_config(&config.auth)?;
        let tls = tls::server_config(&config.tls)?;
        let edge_tls = match &config.edge {
            Some(e) => Some(Arc::new(edge::server_config(&config.tls, e)?)),
            None => None,
        };
        Ok(App {
            provisioner: Provisioner::new(loaded, config.cache.max_bytes),
            verifier: ArcSwap::from_pointee(verifier),
            tls: ArcSwap::from_pointee(tls),
            edge_tls: ArcSwapOption::new(edge_tls),
            loaded_fingerprint: AtomicU64::new(fingerprint),
            sources,
            config,
        })
    }
}
