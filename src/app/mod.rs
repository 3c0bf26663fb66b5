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
//! | [`oauth_order`] | CUCM's SIP OAuth task flow: what is missing before the cluster switch |
//! | [`pools`] | device pools, CM groups and date/time groups changed one at a time (the API and the commands) |

pub mod activity;
pub mod certificates;
pub mod channel;
pub mod check;
pub mod ldap;
pub mod manage;
pub mod oauth_order;
pub mod pools;
pub mod site;
pub mod watched;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption, Guard};

use crate::app::certificates::Certificates;
use crate::app::site::Site;
use crate::auth::limiter::FailureLimiter;
use crate::auth::service::{ServiceError, TokenService};
use crate::auth::store::NodeReport;
use crate::auth::store::StoreError;
use crate::auth::token::Verifier;
use crate::config::{AdminConfig, Config};
use crate::provision::deployment::{Held, InventoryChange, LoadError, Loaded, Sources};
use crate::provision::filename::DeviceName;
use crate::provision::snapshot::Snapshots;
use crate::provision::trust::{self, ServerChain, ServerNotTrusted, TrustCert, TrustError};
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
    #[error("{0}")]
    Edge(#[from] EdgeError),
    #[error("token service: {0}")]
    State(String),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Site(String),
}

impl StartupError {
    /// Whether the start failed because the shared store could not be reached (worth retrying).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StartupError::Store(e) if e.is_unavailable())
    }
}

/// Why the edge listener's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("Tomcat-trust: {0}")]
    Trust(#[from] TrustError),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

/// The edge listener's TLS configuration when `[edge]` is configured, with the Tomcat-trust certificates it
/// trusts (besides `edge.client_ca`), read from where the deployment is `held`. The store is read only for
/// an edge listener.
pub fn edge_tls(
    config: &Config,
    held: Held<'_>,
    now: Time,
) -> Result<(Option<rustls::ServerConfig>, Vec<TrustCert>), EdgeError> {
    let Some(edge) = &config.edge else { return Ok((None, Vec::new())) };
    let (certs, location) = held.tomcat_trust(config.trust.tomcat_trust.as_deref(), now)?;
    let ders: Vec<rustls_pki_types::CertificateDer<'static>> =
        certs.iter().map(|c| rustls_pki_types::CertificateDer::from(c.der.clone())).collect();
    let store = location.as_deref().map(|dir| edge::TomcatTrust { dir, certs: &ders });
    let server = edge::server_config(&config.tls, edge, store)?;
    Ok((Some(server), certs))
}

/// Phone-Edge-Trust must hold the issuer of the server certificate (`chain`, the `[tls]` file) while OAuth
/// devices exist ([`trust::check_phone_edge_trust`]): `serve`, a reload and `sipcfg check` refuse otherwise.
pub fn check_server_trusted(
    config: &Config,
    chain: &[rustls_pki_types::CertificateDer<'_>],
    loaded: &Loaded,
    now: Time,
) -> Result<(), Box<ServerNotTrusted>> {
    trust::check_phone_edge_trust(
        &config.path,
        ServerChain { file: &config.tls.certificate, certs: chain },
        config.trust.phone_edge_trust.as_deref(),
        &loaded.phone_edge_trust,
        &loaded.inventory,
        now,
    )
}

/// What observers (readiness, metrics, certificate expiry warnings) read about what is in force. The
/// [`App`] replaces its parts at each reload; observers only read.
#[derive(Debug, Default)]
pub struct Status {
    certificates: ArcSwap<Certificates>,
    admin: ArcSwap<AdminConfig>,
    on_disk: ArcSwap<OnDisk>,
    store: ArcSwap<StoreState>,
}

/// Whether the shared store is reachable, and how far this node has followed it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum StoreState {
    /// No shared store: files and the embedded database.
    #[default]
    NotShared,
    /// Reachable at the last look.
    Up {
        /// The last change number applied here.
        applied: u64,
        /// How long the last change took from its commit to being in force here (seconds).
        lag_secs: f64,
    },
    /// Not reachable since `since`: downloads go on from memory, token grants answer 503.
    Down { since: Time, error: String, applied: u64 },
}

/// Whether what serves is what the files on disk say.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum OnDisk {
    /// The files loaded: they are what serves.
    #[default]
    Loaded,
    /// The files do not load. What serves instead: the deployment a reload left in force, or the last
    /// deployment that loaded, kept in the state folder (`last_good`).
    Broken { since: Time, errors: Vec<String>, serving: String, last_good: bool },
}

impl Status {
    /// Whether the files on disk are what serves.
    pub fn on_disk(&self) -> Arc<OnDisk> {
        self.on_disk.load_full()
    }

    /// The certificates in force, as read when the deployment in force was loaded.
    pub fn certificates(&self) -> Arc<Certificates> {
        self.certificates.load_full()
    }

    /// The `[admin]` settings in force (expiry thresholds).
    pub fn admin(&self) -> Arc<AdminConfig> {
        self.admin.load_full()
    }

    /// The shared store's reachability, as the node last saw it.
    pub fn store(&self) -> Arc<StoreState> {
        self.store.load_full()
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
    reloading: tokio::sync::Mutex<()>,
    /// Who this node is, in the token store's list of running nodes.
    node: NodeReport,
    /// Where the last deployment that loaded is kept, with `[state]` (files only).
    snapshots: Option<Snapshots>,
    /// Where the deployment and the token state live.
    site: Site,
    /// The shared store's last change number that is in force here (0 with files).
    applied: AtomicU64,
    /// Each phone's last download on this node.
    activity: activity::Activity,
    /// Administrators, sessions and the audit trail, when there is a store for them.
    accounts: Option<Arc<dyn crate::auth::accounts::AccountStore>>,
}

/// Everything a reload reads, loaded and checked, not yet in force: the configuration, the token verifier, the
/// phone port's TLS, the edge listener's TLS and its Tomcat-trust certificates, the deployment.
type Candidate = (Config, Verifier, PhoneTls, Option<rustls::ServerConfig>, Vec<TrustCert>, Loaded, u64);

/// What [`App::reload`] put in force.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The new deployment generation.
    pub generation: u64,
    /// Devices in the new deployment.
    pub devices: usize,
}

impl App {
    pub async fn from_config(config: Config) -> Result<App, StartupError> {
        let site = Site::open(&config).map_err(|e| match e {
            site::SiteError::Store(e) => StartupError::Store(e),
            other => StartupError::Site(other.to_string()),
        })?;
        let sources = Sources::from_config(&config);
        let fingerprint = watched::fingerprint(&watched::files(&config));
        let snapshots = if site.shared().is_some() { None } else { snapshots_of(&config) };
        let now = unix_now() as Time;
        let observe = &config.observe;
        let tls = PhoneTls::new(&config.tls, observe.enabled && observe.request_client_certificate, None)?;
        // What loads, and whose Phone-Edge-Trust holds the server chain's issuer (else phones fail on 6971).
        let load_checked = |held: Held<'_>, sources: &Sources| -> Result<Loaded, Vec<LoadError>> {
            let loaded = held.load(sources)?;
            check_server_trusted(&config, tls.chain(), &loaded, now).map_err(|e| vec![LoadError::Untrusted(e)])?;
            Ok(loaded)
        };
        let (loaded, on_disk, applied, edge) = match &site {
            Site::Files => {
                let (loaded, on_disk) = match load_checked(Held::Files, &sources) {
                    Ok(loaded) => {
                        save_last_good(snapshots.as_ref(), &sources, 1, now);
                        (loaded, OnDisk::Loaded)
                    }
                    Err(errors) => start_from_last_good(snapshots.as_ref(), &sources, errors, now, |s| {
                        load_checked(Held::Files, s)
                    })?,
                };
                (loaded, on_disk, 0, edge_tls(&config, Held::Files, now)?)
            }
            Site::Shared(store) => {
                store.check_schema().await?;
                let snapshot = store.snapshot().await?;
                let origin = store.origin_path();
                let held = Held::Stored { origin: &origin, deployment: &snapshot.deployment };
                let loaded = load_checked(held, &sources).map_err(StartupError::Load)?;
                (loaded, OnDisk::Loaded, snapshot.seq, edge_tls(&config, held, now)?)
            }
        };
        let (edge_tls, tomcat_trust) = edge;
        let mut verifier = Verifier::from_config(&config.auth)?;
        let auth_store = site.auth_store(&config).map_err(|e| StartupError::State(e.to_string()))?;
        let token_service = match auth_store {
            Some(store) => {
                let grace =
                    config.state.as_ref().map_or(crate::config::DEFAULT_REUSE_GRACE_SECS, |s| s.reuse_grace_secs);
                let service =
                    TokenService::open(store, &config.auth, grace as Time, now).await.map_err(service_error)?;
                if let Some(v) = service.sync(now).await.map_err(service_error)? {
                    verifier = v;
                }
                Some(Arc::new(service))
            }
            None => None,
        };
        let accounts = site.account_store(&config).map_err(|e| StartupError::State(e.to_string()))?;
        let grant_limiter = match &config.state {
            Some(s) => FailureLimiter::new(s.max_failed_grants, s.failed_grant_window_secs),
            None => FailureLimiter::new(10, 60),
        };
        warn_missing_steps(&config, &loaded);
        let status = Status::default();
        if site.shared().is_some() {
            status.store.store(Arc::new(StoreState::Up { applied, lag_secs: 0.0 }));
        }
        status.certificates.store(Arc::new(Certificates::of(&config, &loaded.phone_edge_trust, &tomcat_trust)));
        status.admin.store(Arc::new(config.admin.clone()));
        status.on_disk.store(Arc::new(on_disk));
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
            edge_tls: ArcSwapOption::new(edge_tls.map(Arc::new)),
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
            reloading: tokio::sync::Mutex::new(()),
            snapshots,
            site,
            applied: AtomicU64::new(applied),
            activity: activity::Activity::default(),
            accounts,
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
    pub async fn reload(&self) -> Result<Reloaded, Vec<LoadError>> {
        let _one = self.reloading.lock().await;
        self.reload_locked().await
    }

    async fn reload_locked(&self) -> Result<Reloaded, Vec<LoadError>> {
        let paths = watched::files(&self.live());
        let fingerprint = blocking(move || watched::fingerprint(&paths)).await;
        let result = self.load_all().await;
        // Even a refused set was seen: it is not retried until the files change again.
        self.loaded_fingerprint.store(fingerprint, Ordering::SeqCst);
        let (config, verifier, tls, edge_tls, tomcat_trust, loaded, applied) = match result {
            Ok(candidate) => candidate,
            Err(errors) => {
                // An unreachable store is the store check's to report, not a problem of the files.
                if !errors.iter().all(|e| matches!(e, LoadError::Store(_))) {
                    self.files_broken(&errors);
                }
                return Err(errors);
            }
        };
        let changed = self.live().restart_only_changes(&config);
        if !changed.is_empty() {
            tracing::warn!(
                settings = changed.join("; "),
                "settings changed in the configuration that only a restart applies: they take effect at the next \
                 restart"
            );
        }
        warn_missing_steps(&config, &loaded);
        let certificates = Certificates::of(&config, &loaded.phone_edge_trust, &tomcat_trust);
        let devices = loaded.inventory.devices.len();
        self.tls.store(Arc::new(tls));
        self.edge_tls.store(edge_tls.map(Arc::new));
        self.verifier.store(Arc::new(verifier));
        self.status.admin.store(Arc::new(config.admin.clone()));
        let sources = Sources::from_config(&config);
        self.live.store(Arc::new(config));
        let generation = self.provisioner.replace(loaded);
        if self.site.shared().is_some() {
            self.applied.fetch_max(applied, Ordering::SeqCst);
        }
        self.status.certificates.store(Arc::new(certificates));
        self.status.on_disk.store(Arc::new(OnDisk::Loaded));
        let snapshots = self.snapshots.clone();
        blocking(move || save_last_good(snapshots.as_ref(), &sources, generation, unix_now() as Time)).await;
        Ok(Reloaded { generation, devices })
    }

    /// A reload was refused: the deployment in force keeps serving, and the files on disk are broken until
    /// one loads (the start's fallback, if that is what serves, stays named).
    fn files_broken(&self, errors: &[LoadError]) {
        let now = unix_now() as Time;
        let errors: Vec<String> =
            errors.iter().flat_map(|e| e.to_string().lines().map(str::to_owned).collect::<Vec<_>>()).collect();
        let previous = self.status.on_disk();
        let (since, serving, last_good) = match &*previous {
            OnDisk::Broken { since, serving, last_good, .. } => (*since, serving.clone(), *last_good),
            OnDisk::Loaded => {
                let generation = self.provisioner.current().generation;
                (
                    now,
                    format!("the deployment in force (generation {generation}), loaded before the files broke"),
                    false,
                )
            }
        };
        self.status.on_disk.store(Arc::new(OnDisk::Broken { since, errors, serving, last_good }));
    }

    /// Everything a reload reads: the shared store's snapshot (with one), then the files (on the blocking
    /// pool: a large inventory takes a while to parse), then the verifier.
    async fn load_all(&self) -> Result<Candidate, Vec<LoadError>> {
        let one = |message: String| vec![LoadError::Config(message)];
        let (path, overrides, previous_tls) = (self.config.path.clone(), self.config.overrides, self.tls.load_full());
        // [observe] is restart-only: the handshake keeps asking (or not) for a client certificate as at start.
        let ask = self.config.observe.enabled && self.config.observe.request_client_certificate;
        let now = unix_now() as Time;
        let stored = match self.site.shared() {
            Some(store) => {
                let snapshot = store.snapshot().await.map_err(|e| {
                    self.store_down(&e, now);
                    vec![LoadError::Store(e.to_string())]
                })?;
                Some((store.origin_path(), snapshot))
            }
            None => None,
        };
        let files = blocking(move || {
            let mut config = Config::load(&path).map_err(|e| one(e.to_string()))?;
            config.apply_overrides(overrides);
            let held = match &stored {
                Some((origin, snapshot)) => Held::Stored { origin, deployment: &snapshot.deployment },
                None => Held::Files,
            };
            let tls = PhoneTls::new(&config.tls, ask, Some(&previous_tls)).map_err(|e| one(e.to_string()))?;
            let (edge_tls, tomcat_trust) = edge_tls(&config, held, now).map_err(|e| one(e.to_string()))?;
            let loaded = held.load(&Sources::from_config(&config))?;
            check_server_trusted(&config, tls.chain(), &loaded, now).map_err(|e| vec![LoadError::Untrusted(e)])?;
            let applied = stored.as_ref().map_or(0, |(_, snapshot)| snapshot.seq);
            Ok::<_, Vec<LoadError>>((config, tls, edge_tls, tomcat_trust, loaded, applied))
        })
        .await?;
        let (config, tls, edge_tls, tomcat_trust, loaded, applied) = files;
        let verifier = match &self.token_service {
            Some(service) => service.set_auth(&config.auth, now).await.map_err(|e| one(e.to_string()))?,
            None => Verifier::from_config(&config.auth).map_err(|e| one(e.to_string()))?,
        };
        Ok((config, verifier, tls, edge_tls, tomcat_trust, loaded, applied))
    }

    /// Where the deployment and the token state live.
    /// Administrators, sessions and the audit trail (`[state]` or `[store]`).
    pub fn accounts(&self) -> Option<&Arc<dyn crate::auth::accounts::AccountStore>> {
        self.accounts.as_ref()
    }

    /// Each phone's last download on this node.
    pub fn activity(&self) -> &activity::Activity {
        &self.activity
    }

    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The shared store's last change number in force here (0 with files).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Takes in what changed in the shared store since the last look: a device or a user alone (its file
    /// re-renders; the others stay cached), anything else by a full reload; keys and revocations through the
    /// token service. Nothing to do with files.
    pub async fn sync_store(&self, now: Time) -> Result<Synced, StoreError> {
        let Some(store) = self.site.shared() else { return Ok(Synced::default()) };
        let _one = self.reloading.lock().await;
        let applied = self.applied();
        let set = match store.changes_since(applied).await {
            Ok(set) => set,
            Err(e) => {
                self.store_down(&e, now);
                return Err(e);
            }
        };
        let mut synced = Synced { latest: set.latest, ..Synced::default() };
        if set.is_empty() {
            self.applied.fetch_max(set.latest, Ordering::SeqCst);
            self.store_up(None);
            return Ok(synced);
        }
        if set.tokens
            && let Some(service) = &self.token_service
        {
            match service.sync(now).await {
                Ok(Some(verifier)) => {
                    self.verifier.store(Arc::new(verifier));
                    synced.tokens = true;
                }
                Ok(None) => {}
                Err(ServiceError::Store(e)) => {
                    self.store_down(&e, now);
                    return Err(e);
                }
                Err(e) => tracing::error!(error = %e, "token service keys or revocations could not be taken in"),
            }
        }
        let mut full = set.full;
        if !full && (!set.devices.is_empty() || !set.users.is_empty()) {
            let changes = inventory_changes(&set);
            match self.provisioner.apply(&changes).await {
                Ok(stale) => synced.devices = stale,
                Err(errors) => {
                    tracing::warn!(error = %errors, "a change from the shared store does not apply alone; reloading");
                    full = true;
                }
            }
        }
        if full {
            match self.reload_locked().await {
                Ok(done) => synced.reloaded = Some(done),
                Err(errors) => {
                    synced.refused = errors.iter().map(ToString::to_string).collect();
                }
            }
        }
        self.applied.fetch_max(set.latest, Ordering::SeqCst);
        let lag = set.oldest_ms.map(|at| (unix_now_ms() - at).max(0) as f64 / 1000.0);
        self.store_up(lag);
        synced.lag_secs = lag;
        Ok(synced)
    }

    /// Reaches the shared store whatever the last attempt said (while it is down, its other calls fail at
    /// once); its state in [`Status`] follows.
    pub async fn probe_store(&self, now: Time) -> Result<(), StoreError> {
        let Some(store) = self.site.shared() else { return Ok(()) };
        match store.probe().await {
            Ok(_) => {
                self.store_up(None);
                Ok(())
            }
            Err(e) => {
                self.store_down(&e, now);
                Err(e)
            }
        }
    }

    fn store_up(&self, lag: Option<f64>) {
        let applied = self.applied();
        let lag_secs = match (lag, &*self.status.store()) {
            (Some(lag), _) => lag,
            (None, StoreState::Up { lag_secs, .. }) => *lag_secs,
            (None, _) => 0.0,
        };
        self.status.store.store(Arc::new(StoreState::Up { applied, lag_secs }));
    }

    pub(crate) fn store_down(&self, e: &StoreError, now: Time) {
        let since = match &*self.status.store() {
            StoreState::Down { since, .. } => *since,
            _ => now,
        };
        let applied = self.applied();
        self.status.store.store(Arc::new(StoreState::Down { since, error: e.to_string(), applied }));
    }

    /// Tells the token store that this node is running and has applied its changes up to what the view in
    /// force was built from; `sipcfg token revoke` waits for every running node this way.
    pub async fn report_node(&self, now: Time) -> Result<(), ServiceError> {
        let Some(service) = &self.token_service else { return Ok(()) };
        // With a shared store, the change number followed (it orders token changes with the others).
        let applied = match self.site.shared() {
            Some(_) => self.applied(),
            None => match service.applied_change() {
                Some(applied) => applied,
                None => return Ok(()),
            },
        };
        let report = NodeReport { seen: now, applied, ..self.node.clone() };
        service.store().report_node(&report).await?;
        Ok(())
    }

    /// Takes in what changed in the token service's store since the last look (revocations, keys; from this
    /// node or another process such as `sipcfg token revoke`): a new verifier goes in force when the keys
    /// changed. Returns whether anything changed.
    pub async fn sync_tokens(&self, now: Time) -> Result<bool, ServiceError> {
        let Some(service) = &self.token_service else { return Ok(false) };
        match service.sync(now).await? {
            Some(verifier) => {
                self.verifier.store(Arc::new(verifier));
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// What [`App::sync_store`] took in.
#[derive(Debug, Default)]
pub struct Synced {
    /// The store's last change number, now applied.
    pub latest: u64,
    /// Keys changed: a new verifier is in force.
    pub tokens: bool,
    /// Devices whose file changed (a device or user change applied alone).
    pub devices: Vec<DeviceName>,
    /// A full reload was put in force.
    pub reloaded: Option<Reloaded>,
    /// A full reload was refused (the deployment in force keeps serving): why.
    pub refused: Vec<String>,
    /// From the oldest change of the set's commit to now, when it is in force (seconds).
    pub lag_secs: Option<f64>,
}

/// The devices and users of a change set, as changes to the deployment in force.
fn inventory_changes(set: &crate::store::postgres::ChangeSet) -> Vec<InventoryChange> {
    let mut changes = Vec::with_capacity(set.devices.len() + set.users.len());
    // Users first: a device put in the same change may name a new owner.
    for (id, doc) in &set.users {
        if doc.is_some() {
            changes.push(InventoryChange::User(id.clone(), doc.clone()));
        }
    }
    for (name, doc) in &set.devices {
        match DeviceName::parse_canonical(name) {
            Ok(name) => changes.push(InventoryChange::Device(name, doc.clone())),
            Err(e) => tracing::warn!(device = %name, error = %e, "the shared store holds a device name sipcfg refuses"),
        }
    }
    // Removed users last: their devices were moved or removed first.
    for (id, doc) in &set.users {
        if doc.is_none() {
            changes.push(InventoryChange::User(id.clone(), None));
        }
    }
    changes
}

fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A token-service error at start: the store's own when it is one (an unreachable store is retried).
fn service_error(e: ServiceError) -> StartupError {
    match e {
        ServiceError::Store(e) => StartupError::Store(e),
        other => StartupError::State(other.to_string()),
    }
}

/// Runs `f` on tokio's blocking pool (file reads, parsing, copies) and returns its result.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        // Only if `f` panicked: let the panic go on, as if `f` had run here.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The snapshot folder of `config`: `last-good/` beside the state database, when there is one.
fn snapshots_of(config: &Config) -> Option<Snapshots> {
    let database = &config.state.as_ref()?.database;
    let dir = database.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    Some(Snapshots::new(dir.join("deployments")))
}

/// Keeps what just loaded from `sources` as the last good deployment. A failure only costs the fallback:
/// it is logged, never fatal.
fn save_last_good(snapshots: Option<&Snapshots>, sources: &Sources, generation: u64, now: Time) {
    let Some(snapshots) = snapshots else { return };
    let fingerprint = watched::fingerprint(&sources.watched());
    match snapshots.save(sources, generation, fingerprint, now) {
        Ok(true) => tracing::debug!(dir = %snapshots.dir().display(), generation, "last good deployment kept"),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            dir = %snapshots.dir().display(),
            error = %e,
            "the deployment that just loaded could not be kept as the last good one: a start with broken files \
             will fail instead of serving it"
        ),
    }
}

/// The files do not load at start: the last deployment that loaded serves instead, loudly; without one, the
/// start fails with the files' errors.
fn start_from_last_good(
    snapshots: Option<&Snapshots>,
    sources: &Sources,
    errors: Vec<LoadError>,
    now: Time,
    load: impl Fn(&Sources) -> Result<Loaded, Vec<LoadError>>,
) -> Result<(Loaded, OnDisk), StartupError> {
    let Some((about, kept)) = snapshots.and_then(|s| s.last_good(sources)) else {
        return Err(StartupError::Load(errors));
    };
    let loaded = match load(&kept) {
        Ok(loaded) => loaded,
        Err(kept_errors) => {
            tracing::error!(
                "the last good deployment ({}) does not load either: {}",
                about.describe(),
                kept_errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            );
            return Err(StartupError::Load(errors));
        }
    };
    let lines: Vec<String> =
        errors.iter().flat_map(|e| e.to_string().lines().map(str::to_owned).collect::<Vec<_>>()).collect();
    for line in &lines {
        tracing::error!("the deployment's files do not load: {line}");
    }
    let serving = format!("the last deployment that loaded ({})", about.describe());
    tracing::error!(
        "STARTED FROM THE LAST GOOD DEPLOYMENT: {serving}, because the files on disk do not load (above). Fix them \
         (`sipcfg check` lists every problem): the file watch loads them as soon as they do"
    );
    Ok((loaded, OnDisk::Broken { since: now, errors: lines, serving, last_good: true }))
}

/// Logs what is missing before the cluster switch while it is on (CUCM's task flow order).
fn warn_missing_steps(config: &Config, loaded: &Loaded) {
    if !loaded.inventory.cluster.sip_oauth_mode {
        return;
    }
    let missing = oauth_order::before_the_switch(config, &loaded.inventory, &loaded.phone_edge_trust);
    for step in missing.blocking.iter().chain(&missing.advice) {
        tracing::warn!("SIP OAuth mode is enabled, but {step}");
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
        let (entries, held) = provisioner.cache().usage();
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
