//! Everything a running server holds, built from a [`Config`]: the provisioning pipeline, the token
//! verifier and the TLS configurations. Used by `sipcfg serve` and by the tests.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::Config;
use crate::health::{Certificates, Health};
use crate::metrics::Metrics;
use crate::provision::{self, LoadError, Provisioner, Sources};
use crate::server::edge;
use crate::server::tls::{self, TlsError};
use crate::state::sqlite::SqliteStore;
use crate::token::{KeyError, Verifier};
use crate::token_service::{FailureLimiter, TokenService};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Load(Vec<LoadError>),
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("token service: {0}")]
    State(String),
}

pub struct App {
    /// The configuration the server started with (listener addresses and limits come from it).
    pub config: Config,
    /// The configuration in force: reloaded with everything else (keys, certificates, deployment).
    pub live: ArcSwap<Config>,
    pub sources: ArcSwap<Sources>,
    pub provisioner: Arc<Provisioner>,
    pub verifier: ArcSwap<Verifier>,
    /// The phone port's TLS configuration; swapped on reload, taken per connection.
    pub tls: ArcSwap<tls::PhoneTls>,
    /// The edge-proxy listener's own TLS configuration (separate session cache), if configured.
    pub edge_tls: ArcSwapOption<rustls::ServerConfig>,
    /// Fingerprint of the watched files, taken just before the deployment in force was read: a change
    /// made while it was loading is still seen by the file watch.
    pub loaded_fingerprint: AtomicU64,
    /// The refresh login flow's token service, when `[state]` is configured.
    pub token_service: Option<Arc<TokenService>>,
    /// Failed token grants per client address.
    pub grant_limiter: FailureLimiter,
    /// Failed authentications on the file server per client address.
    pub auth_limiter: FailureLimiter,
    /// What `/metrics` reports.
    pub metrics: Arc<Metrics>,
    /// What `/readyz` reports besides the deployment: draining, certificates in force.
    pub health: Health,
}

impl App {
    pub fn from_config(config: Config) -> Result<App, StartupError> {
        let app = App::build(config)?;
        app.provisioner.cache().set_observer(app.metrics.clone());
        let deployment = app.provisioner.current();
        app.health.set_certificates(Certificates::of(&app.config, &deployment.phone_edge_trust));
        drop(deployment);
        Ok(app)
    }

    fn build(config: Config) -> Result<App, StartupError> {
        let sources = Sources::from_config(&config);
        let fingerprint = crate::reload::fingerprint(&crate::reload::watched(&config));
        let loaded = provision::load(&sources).map_err(StartupError::Load)?;
        let mut verifier = Verifier::from_config(&config.auth)?;
        let now = crate::token::unix_now() as i64;
        let token_service = match &config.state {
            Some(s) => {
                let store = SqliteStore::open(&s.database).map_err(|e| StartupError::State(e.to_string()))?;
                let service = TokenService::open(Arc::new(store), &config.auth, now).map_err(StartupError::State)?;
                if let Some(v) = service.sync(now).map_err(StartupError::State)? {
                    verifier = v;
                }
                Some(Arc::new(service))
            }
            None => None,
        };
        let grant_limiter = match &config.state {
            Some(s) => FailureLimiter::new(s.max_failed_grants, s.failed_grant_window_secs),
            None => FailureLimiter::new(10, 60),
        };
        let tls = tls::PhoneTls::new(&config.tls, None)?;
        let edge_tls = match &config.edge {
            Some(e) => Some(Arc::new(edge::server_config(&config.tls, e)?)),
            None => None,
        };
        let provisioner = Arc::new(Provisioner::new(loaded, config.cache.max_bytes));
        if config.cache.prerender
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(prerender_each_generation(provisioner.clone()));
        }
        Ok(App {
            provisioner,
            verifier: ArcSwap::from_pointee(verifier),
            tls: ArcSwap::from_pointee(tls),
            edge_tls: ArcSwapOption::new(edge_tls),
            loaded_fingerprint: AtomicU64::new(fingerprint),
            token_service,
            grant_limiter,
            auth_limiter: FailureLimiter::new(config.server.max_failed_auth, config.server.failed_auth_window_secs),
            sources: ArcSwap::from_pointee(sources),
            live: ArcSwap::from_pointee(config.clone()),
            config,
            metrics: Arc::new(Metrics::new()),
            health: Health::default(),
        })
    }
}

/// Pre-renders the deployment in force, and again after every reload, for as long as the provisioner lives.
async fn prerender_each_generation(provisioner: Arc<Provisioner>) {
    use crate::provision::PrerenderOutcome;
    let mut in_force = provisioner.subscribe();
    loop {
        in_force.borrow_and_update();
        let done = provisioner.prerender().await;
        let (entries, held) = provisioner.cache().usage().await;
        let secs = done.elapsed.as_secs_f64();
        match done.outcome {
            PrerenderOutcome::Complete => tracing::info!(
                generation = done.generation,
                rendered = done.rendered,
                failed = done.failed,
                secs,
                entries,
                held,
                "pre-rendered every enabled device's configuration"
            ),
            PrerenderOutcome::Superseded => tracing::info!(
                generation = done.generation,
                rendered = done.rendered,
                "pre-render stopped: a newer deployment is in force"
            ),
            PrerenderOutcome::CacheFull => tracing::warn!(
                generation = done.generation,
                rendered = done.rendered,
                held,
                max = provisioner.cache().max_bytes(),
                "pre-render stopped: the cache is nine-tenths full; raise cache.max_bytes to hold every configuration"
            ),
        }
        if done.failed > 0 {
            tracing::warn!(failed = done.failed, "some configurations do not render: `sipcfg check` names them");
        }
        if in_force.changed().await.is_err() {
            return;
        }
    }
}
