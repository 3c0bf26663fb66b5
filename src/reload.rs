//! Reloading without a restart: the configuration file, the TLS certificate and key, the token
//! verification keys, the inventory, templates and Phone-Edge-Trust store are watched (a cheap poll of
//! sizes, modification times and inodes) and reloaded together when any changes, or on SIGHUP. A new set
//! that does not load completely is refused with its errors logged, and the last good one keeps serving.
//! Listener addresses, limits and the other restart-only settings are bound at start: a reload that
//! changes them logs which, and they take effect at the next restart.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::App;
use crate::config::Config;
use crate::health::Certificates;
use crate::provision::{self, LoadError, Sources};
use crate::token::Verifier;

/// Every file whose change means a reload.
pub fn watched(config: &Config) -> Vec<PathBuf> {
    let mut paths = vec![config.path.clone(), config.tls.certificate.clone(), config.tls.private_key.clone()];
    paths.extend(config.auth.keys.iter().map(|k| k.public_key.clone()));
    paths.extend(config.auth.jwks.iter().cloned());
    paths.extend(config.auth.signing.iter().map(|s| s.private_key.clone()));
    paths.extend(config.edge.iter().map(|e| e.client_ca.clone()));
    paths.extend(Sources::from_config(config).watched());
    paths
}

/// Reads the configuration and everything it names again and puts it all in force at once if all of it
/// loads; returns the new deployment generation. Counted in the metrics either way.
pub fn reload(app: &App) -> Result<u64, Vec<LoadError>> {
    let outcome = reload_all(app);
    app.metrics.reload(outcome.is_ok());
    outcome
}

fn reload_all(app: &App) -> Result<u64, Vec<LoadError>> {
    let fingerprint = fingerprint(&watched(&app.live.load()));
    let result = load_all(app);
    // Even a refused set was seen: it is not retried until the files change again.
    app.loaded_fingerprint.store(fingerprint, Ordering::SeqCst);
    let (config, verifier, tls, edge_tls, sources, loaded) = result?;
    let changed = app.live.load().restart_only_changes(&config);
    if !changed.is_empty() {
        tracing::warn!(
            settings = changed.join("; "),
            "settings changed in the configuration that only a restart applies: they take effect at the next restart"
        );
    }
    app.tls.store(Arc::new(tls));
    app.edge_tls.store(edge_tls.map(Arc::new));
    app.verifier.store(Arc::new(verifier));
    app.sources.store(Arc::new(sources));
    let certificates = Certificates::of(&config, &loaded.phone_edge_trust);
    app.live.store(Arc::new(config));
    let generation = app.provisioner.replace(loaded);
    app.health.set_certificates(certificates);
    Ok(generation)
}

type Reloaded =
    (Config, Verifier, crate::server::tls::PhoneTls, Option<rustls::ServerConfig>, Sources, provision::Loaded);

fn load_all(app: &App) -> Result<Reloaded, Vec<LoadError>> {
    let one = |message: String| vec![LoadError::Config(message)];
    let mut config = Config::load(&app.config.path).map_err(|e| one(e.to_string()))?;
    config.apply_overrides(app.config.overrides);
    let tls = crate::server::tls::PhoneTls::new(&config.tls, Some(&app.tls.load())).map_err(|e| one(e.to_string()))?;
    let edge_tls = match &config.edge {
        Some(e) => Some(crate::server::edge::server_config(&config.tls, e).map_err(|e| one(e.to_string()))?),
        None => None,
    };
    let sources = Sources::from_config(&config);
    let loaded = provision::load(&sources)?;
    let verifier = match &app.token_service {
        Some(service) => service.set_auth(&config.auth, crate::token::unix_now() as i64).map_err(one)?,
        None => Verifier::from_config(&config.auth).map_err(|e| one(e.to_string()))?,
    };
    Ok((config, verifier, tls, edge_tls, sources, loaded))
}

/// Logs the outcome of a reload.
pub fn reload_logged(app: &App, why: &str) -> bool {
    let ok = match reload(app) {
        Ok(generation) => {
            let devices = app.provisioner.current().inventory.devices.len();
            tracing::info!(why, generation, devices, "reloaded");
            true
        }
        Err(errors) => {
            for e in &errors {
                for line in e.to_string().lines() {
                    tracing::error!(why, "reload refused, the previous deployment keeps serving: {line}");
                }
            }
            false
        }
    };
    crate::health::log_certificate_warnings(app);
    ok
}

/// The one-line status systemd shows (`systemctl status`): what is served, and whether the last reload was
/// refused.
pub fn status_line(app: &App, last_reload_ok: bool) -> String {
    let devices = app.provisioner.current().inventory.devices.len();
    let mut line = format!("serving {devices} devices on {}", app.config.server.listen);
    if !last_reload_ok {
        line.push_str("; the last reload was refused (see the log), the previous deployment serves");
    }
    line
}

/// A digest of the metadata of every file under `paths`: changes when any file is written, added,
/// removed or replaced.
pub fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for p in paths {
        hash_tree(p, &mut hasher);
    }
    hasher.finish()
}

fn hash_tree(path: &Path, hasher: &mut DefaultHasher) {
    path.hash(hasher);
    let Ok(meta) = std::fs::metadata(path) else {
        0xdead_u32.hash(hasher);
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else { return };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for c in children {
            hash_tree(&c, hasher);
        }
        return;
    }
    meta.len().hash(hasher);
    meta.modified().ok().hash(hasher);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.ino().hash(hasher);
        meta.ctime_nsec().hash(hasher);
    }
}

/// SIGHUP, registered by the caller before it announces that it serves: a SIGHUP that arrives between
/// the announcement (log line, `READY=1`) and the first poll of [`watch`] must reload, not kill the
/// process (the default action).
#[cfg(unix)]
pub type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub type Hangup = Option<()>;

/// Registers the SIGHUP handler now (see [`Hangup`]); `None` if the OS refused.
pub fn hangup() -> Hangup {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// Watches the deployment's files every `every`, and SIGHUP, until `stop` turns true.
pub async fn watch(app: Arc<App>, every: Duration, mut hup: Hangup, mut stop: watch::Receiver<bool>) {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    let fp = |paths: Vec<PathBuf>| async move {
        tokio::task::spawn_blocking(move || fingerprint(&paths)).await.unwrap_or(0)
    };
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = {
            let _ = &mut hup;
            std::future::pending::<Option<()>>()
        };
        let why = tokio::select! {
            () = &mut stopped => return,
            _ = hangup => "SIGHUP",
            () = tokio::time::sleep(every) => {
                let paths = watched(&app.live.load());
                let now = fp(paths.clone()).await;
                if now == app.loaded_fingerprint.load(Ordering::SeqCst) {
                    continue;
                }
                // Let a writer finish: reload once the files have stayed the same for a moment.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if fp(paths.clone()).await != now {
                    continue;
                }
                "files changed"
            }
        };
        // systemd: RELOADING=1 ... READY=1 around every reload, taken or refused (the previous deployment
        // keeps serving, so the service is ready either way).
        if let Err(e) = crate::systemd::notify_reloading() {
            tracing::warn!(error = %e, "systemd notification (RELOADING=1) failed");
        }
        let reloading = app.clone();
        let ok = tokio::task::spawn_blocking(move || reload_logged(&reloading, why)).await.unwrap_or(false);
        if let Err(e) = crate::systemd::notify_ready_status(&status_line(&app, ok)) {
            tracing::warn!(error = %e, "systemd notification (READY=1) failed");
        }
    }
}

/// Keeps the token service's in-memory view (signing keys, revocations) in step with its database,
/// whichever process changed it (`sipcfg token revoke`, `sipcfg keys rotate`), and purges expired state.
pub async fn watch_state(app: Arc<App>, every: Duration, mut stop: watch::Receiver<bool>) {
    let Some(service) = app.token_service.clone() else { return };
    let purge_every = app.config.state.as_ref().map_or(3600, |s| s.purge_interval_secs) as i64;
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    let mut last_purge = 0i64;
    loop {
        tokio::select! {
            () = &mut stopped => return,
            () = tokio::time::sleep(every) => {}
        }
        let (app, service) = (app.clone(), service.clone());
        let _ = tokio::task::spawn_blocking(move || {
            let now = crate::token::unix_now() as i64;
            match service.sync(now) {
                Ok(Some(verifier)) => {
                    app.verifier.store(Arc::new(verifier));
                    tracing::info!("token service keys or revocations changed; now in force");
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "token service state could not be read"),
            }
            if now - last_purge >= purge_every {
                match service.store().purge(now) {
                    Ok(n) => tracing::debug!(rows = n, "expired token state purged"),
                    Err(e) => tracing::error!(error = %e, "purge failed"),
                }
                last_purge = now;
            }
            last_purge
        })
        .await
        .map(|p| last_purge = p);
    }
}

/// Starts the background tasks of a running server (file watch, token state); stop them with the sender.
pub fn spawn_background(app: &Arc<App>, hangup: Hangup) -> (watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>) {
    let (stop, stopped) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(watch(app.clone(), app.config.server.reload_poll(), hangup, stopped.clone())),
        tokio::spawn(watch_state(app.clone(), Duration::from_secs(1), stopped.clone())),
        tokio::spawn(crate::health::watch_certificates(app.clone(), stopped)),
    ];
    (stop, tasks)
}
