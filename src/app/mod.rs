//! Everything a running node holds, built from a [`Config`]: the provisioning pipeline, the token verifier
//! and token service, the TLS configurations, the certificates in force. [`App`] is the only owner of what a
//! reload swaps: [`App::reload`] reads everything again and puts it in force at once, or nothing;
//! [`App::sync_tokens`] follows the token service's keys and revocations. Used by `sipcfg serve` and by the
//! tests.
//!
//! | module | what |
//! |---|---|
//! | [`channel`] | how a request arrived (HTTPS, plain HTTP, edge proxy) and what each channel may get |
//! | [`certificates`] | the certificates in force and their validity |
//! | [`watched`] | the files a node was loaded from, and their fingerprint |
//! | [`check`] | `sipcfg check`: everything a start would load, every device rendered |

pub mod certificates;
pub mod channel;
pub mod check;
pub mod watched;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption, Guard};

use crate::app::certificates::Certificates;
use crate::auth::limiter::FailureLimiter;
use crate::auth::service::{ServiceError, TokenService};
use crate::auth::store::NodeReport;
use crate::auth::store::sqlite::SqliteStore;
use crate::auth::token::Verifier;
use crate::config::{AdminConfig, Config};
use crate::provision::deployment::{self, LoadError, Loaded, Sources};
use crate::provision::{PrerenderOutcome, Provisioner};
use crate::tls::{PhoneTls, TlsError, edge};
use crate::util::time::{Time, unix_now};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Load(Vec<LoadError>),
    #[error("{0}")]
    Key(#[from] crate::auth::keys::KeyError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("token service: {0}")]
    State(String),
}

/// What observers (readiness, metrics, certificate expiry warnings) read about what is in force. The
/// [`App`] replaces its parts at each reload; observers only read.
#[derive(Debug, Default)]
pub struct Status {
    certificates: ArcSwap<Certificates>,
    admin: ArcSwap<AdminConfig>,
}

impl Status {
    /// The certificates in force, as read when the deployment in force was loaded.
    pub fn certificates(&self) -> Arc<Certificates> {
        self.certificates.load_full()
    }

    /// The `[admin]` settings in force (expiry thresholds).
    pub fn admin(&self) -> Arc<AdminConfig> {
        self.admin.load_full()
    }
}

/// A node: everything it serves with, and what a reload replaces.
pub struct App {
    /// The configuration the node started with (listener addresses and the other restart-only settings).
    config: Config,
    /// The configuration in force: reloaded with everything else (keys, certificates, deployment).
    live: ArcSwap<Config>,
    provisioner: Arc<Provisioner>,
    verifier: ArcSwap<Verifier>,
    /// The phone port's TLS configuration; swapped on reload, taken per connection.
    tls: ArcSwap<PhoneTls>,
    /// The edge-proxy listener's own TLS configuration (separate session cache), if configured.
    edge_tls: ArcSwapOption<rustls::ServerConfig>,
    status: Arc<Status>,
    /// Fingerprint of the watched files, taken just before the deployment in force was read: a change made
    /// while it was loading is still seen by the file watch.
    loaded_fingerprint: AtomicU64,
    /// The refresh login flow's token service, when `[state]` is configured.
    token_service: Option<Arc<TokenService>>,
    /// Failed token grants per client address.
    grant_limiter: FailureLimiter,
    /// Failed authentications on the file server per client address.
    auth_limiter: FailureLimiter,
    /// One reload at a time (SIGHUP and the file watch may ask at once).
    reloading: Mutex<()>,
    /// Who this node is, in the token store's list of running nodes.
    node: NodeReport,
}

/// Everything a reload reads, loaded and checked, not yet in force.
type Candidate = (Config, Verifier, PhoneTls, Option<rustls::ServerConfig>, Loaded);

/// What [`App::reload`] put in force.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The new deployment generation.
    pub generation: u64,
    /// Devices in the new deployment.
    pub devices: usize,
}

impl App {
    pub fn from_config(config: Config) -> Result<App, StartupError> {
        let sources = Sources::from_config(&config);
        let fingerprint = watched::fingerprint(&watched::files(&config));
        let loaded = deployment::load(&sources).map_err(StartupError::Load)?;
        let mut verifier = Verifier::from_config(&config.auth)?;
        let now = unix_now() as Time;
        let token_service = match &config.state {
            Some(s) => {
                let store = SqliteStore::open(&s.database).map_err(|e| StartupError::State(e.to_string()))?;
                let service = TokenService::open(Arc::new(store), &config.auth, now)
                    .map_err(|e| StartupError::State(e.to_string()))?;
                if let Some(v) = service.sync(now).map_err(|e| StartupError::State(e.to_string()))? {
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
        let observe = &config.observe;
        let tls = PhoneTls::new(&config.tls, observe.enabled && observe.request_client_certificate, None)?;
        let edge_tls = match &config.edge {
            Some(e) => Some(Arc::new(edge::server_config(&config.tls, e)?)),
            None => None,
        };
        let status = Status::default();
        status.certificates.store(Arc::new(Certificates::of(&config, &loaded.phone_edge_trust)));
        status.admin.store(Arc::new(config.admin.clone()));
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
            status: Arc::new(status),
            loaded_fingerprint: AtomicU64::new(fingerprint),
            token_service,
            grant_limiter,
            auth_limiter: FailureLimiter::new(config.server.max_failed_auth, config.server.failed_auth_window_secs),
            live: ArcSwap::from_pointee(config.clone()),
            node: NodeReport {
                id: crate::util::random::random_id().map_err(|e| StartupError::State(e.to_string()))?,
                name: node_name(&config),
                started: now,
                seen: now,
                applied: 0,
            },
            config,
            reloading: Mutex::new(()),
        })
    }

    /// The configuration the node started with: listener addresses, limits and the other restart-only
    /// settings come from it.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The configuration in force (the last one a reload took).
    pub fn live(&self) -> Arc<Config> {
        self.live.load_full()
    }

    pub fn provisioner(&self) -> &Arc<Provisioner> {
        &self.provisioner
    }

    /// The token verifier in force (configured keys and the token service's own).
    pub fn verifier(&self) -> Guard<Arc<Verifier>> {
        self.verifier.load()
    }

    /// The phone listener's TLS configuration in force.
    pub fn phone_tls(&self) -> Arc<rustls::ServerConfig> {
        self.tls.load().config.clone()
    }

    /// The edge listener's TLS configuration in force; `None` once `[edge]` was removed by a reload.
    pub fn edge_tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.edge_tls.load_full()
    }

    /// What observers read about what is in force.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    pub fn token_service(&self) -> Option<&Arc<TokenService>> {
        self.token_service.as_ref()
    }

    pub fn grant_limiter(&self) -> &FailureLimiter {
        &self.grant_limiter
    }

    pub fn auth_limiter(&self) -> &FailureLimiter {
        &self.auth_limiter
    }

    /// The fingerprint of the watched files when the deployment in force was read (or last refused).
    pub fn loaded_fingerprint(&self) -> u64 {
        self.loaded_fingerprint.load(Ordering::SeqCst)
    }

    /// Reads the configuration and everything it names again and puts it all in force at once if all of it
    /// loads. Settings that only a restart applies are logged when they changed.
    pub fn reload(&self) -> Result<Reloaded, Vec<LoadError>> {
        let _one = self.reloading.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let fingerprint = watched::fingerprint(&watched::files(&self.live()));
        let result = self.load_all();
        // Even a refused set was seen: it is not retried until the files change again.
        self.loaded_fingerprint.store(fingerprint, Ordering::SeqCst);
        let (config, verifier, tls, edge_tls, loaded) = result?;
        let changed = self.live().restart_only_changes(&config);
        if !changed.is_empty() {
            tracing::warn!(
                settings = changed.join("; "),
                "settings changed in the configuration that only a restart applies: they take effect at the next \
                 restart"
            );
        }
        let certificates = Certificates::of(&config, &loaded.phone_edge_trust);
        let devices = loaded.inventory.devices.len();
        self.tls.store(Arc::new(tls));
        self.edge_tls.store(edge_tls.map(Arc::new));
        self.verifier.store(Arc::new(verifier));
        self.status.admin.store(Arc::new(config.admin.clone()));
        self.live.store(Arc::new(config));
        let generation = self.provisioner.replace(loaded);
        self.status.certificates.store(Arc::new(certificates));
        Ok(Reloaded { generation, devices })
    }

    fn load_all(&self) -> Result<Candidate, Vec<LoadError>> {
        let one = |message: String| vec![LoadError::Config(message)];
        let mut config = Config::load(&self.config.path).map_err(|e| one(e.to_string()))?;
        config.apply_overrides(self.config.overrides);
        // [observe] is restart-only: the handshake keeps asking (or not) for a client certificate as at start.
        let observe = &self.config.observe;
        let ask = observe.enabled && observe.request_client_certificate;
        let tls = PhoneTls::new(&config.tls, ask, Some(&self.tls.load())).map_err(|e| one(e.to_string()))?;
        let edge_tls = match &config.edge {
            Some(e) => Some(edge::server_config(&config.tls, e).map_err(|e| one(e.to_string()))?),
            None => None,
        };
        let loaded = deployment::load(&Sources::from_config(&config))?;
        let verifier = match &self.token_service {
            Some(service) => service.set_auth(&config.auth, unix_now() as Time).map_err(|e| one(e.to_string()))?,
            None => Verifier::from_config(&config.auth).map_err(|e| one(e.to_string()))?,
        };
        Ok((config, verifier, tls, edge_tls, loaded))
    }

    /// Tells the token store that this node is running and has applied its changes up to what the view in
    /// force was built from; `sipcfg token revoke` waits for every running node this way.
    pub fn report_node(&self, now: Time) -> Result<(), ServiceError> {
        let Some(service) = &self.token_service else { return Ok(()) };
        let Some(applied) = service.applied_change() else { return Ok(()) };
        let report = NodeReport { seen: now, applied, ..self.node.clone() };
        service.store().report_node(&report)?;
        Ok(())
    }

    /// Takes in what changed in the token service's store since the last look (revocations, keys; from this
    /// node or another process such as `sipcfg token revoke`): a new verifier goes in force when the keys
    /// changed. Returns whether anything changed.
    pub fn sync_tokens(&self, now: Time) -> Result<bool, ServiceError> {
        let Some(service) = &self.token_service else { return Ok(false) };
        match service.sync(now)? {
            Some(verifier) => {
                self.verifier.store(Arc::new(verifier));
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// `host:port` of the phone listener, as a person recognises a node.
fn node_name(config: &Config) -> String {
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    format!("{host}:{}", config.server.listen.port())
}

/// Pre-renders the deployment in force, and again after every reload, for as long as the provisioner lives.
async fn prerender_each_generation(provisioner: Arc<Provisioner>) {
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
