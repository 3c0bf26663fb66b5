//! Reloading without a restart: the files a node was loaded from are watched (a cheap poll of sizes,
//! modification times and inodes, [`crate::app::watched`]) and reloaded together when any changes, or on
//! SIGHUP, through [`App::reload`]: a new set that does not load completely is refused with its errors
//! logged, and the last good one keeps serving. Listener addresses, limits and the other restart-only
//! settings are bound at start: a reload that changes them logs which.
//!
//! Beside it, the token-state watch keeps the token service's view (keys, revocations) in step with its
//! database, whichever process changed it, and purges expired state.

use std::sync::Arc;
use std::time::Duration;

use crate::app::{App, watched};
use crate::auth::service::{NODE_REPORT_SECS, TokenService};
use crate::ops::Monitor;
use crate::ops::metrics::Metrics;
use crate::ops::signals::{Hangup, next_hangup};
use crate::ops::systemd;
use crate::util::stop::{Stop, StopHandle, stop_signal};
use crate::util::time::{Time, unix_now};

/// The log target of reloads, kept from before the modules moved so that operators' `SIPCFG_LOG` filters
/// keep matching.
pub const LOG: &str = "sipcfg::reload";

/// How often the token-state watch looks at the token service's database (a read of its change counter):
/// a revocation made by another process is in force here within this time.
pub const STATE_POLL: Duration = Duration::from_millis(250);

/// Reloads, counts the outcome in `metrics` and logs it (and the certificate warnings of what is in force).
/// Returns whether the reload was taken.
pub async fn reload_logged(app: &App, monitor: &Monitor, why: &str) -> bool {
    let ok = reload_counted(app, &monitor.metrics, why).await;
    monitor.health.log_certificate_warnings();
    ok
}

async fn reload_counted(app: &App, metrics: &Metrics, why: &str) -> bool {
    let outcome = app.reload().await;
    metrics.reload(outcome.is_ok());
    match outcome {
        Ok(done) => {
            tracing::info!(target: LOG, why, generation = done.generation, devices = done.devices, "reloaded");
            true
        }
        Err(errors) => {
            for e in &errors {
                for line in e.to_string().lines() {
                    tracing::error!(target: LOG, why, "reload refused, the previous deployment keeps serving: {line}");
                }
            }
            false
        }
    }
}

/// The one-line status systemd shows (`systemctl status`): what is served, and whether the last reload was
/// refused.
pub fn status_line(app: &App, last_reload_ok: bool) -> String {
    let devices = app.provisioner().current().inventory.devices.len();
    let mut line = format!("serving {devices} devices on {}", app.config().server.listen);
    if !last_reload_ok {
        line.push_str("; the last reload was refused (see the log), the previous deployment serves");
    }
    line
}

/// Watches the node's files every `every`, and SIGHUP, until `stop`.
pub async fn watch(app: Arc<App>, monitor: Monitor, every: Duration, mut hup: Hangup, mut stop: Stop) {
    let fingerprint = |app: &Arc<App>| {
        let paths = watched::files(&app.live());
        async move { tokio::task::spawn_blocking(move || watched::fingerprint(&paths)).await.unwrap_or(0) }
    };
    loop {
        let why = tokio::select! {
            () = stop.stopped() => return,
            () = next_hangup(&mut hup) => "SIGHUP",
            () = tokio::time::sleep(every) => {
                let now = fingerprint(&app).await;
                if now == app.loaded_fingerprint() {
                    continue;
                }
                // Let a writer finish: reload once the files have stayed the same for a moment.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if fingerprint(&app).await != now {
                    continue;
                }
                "files changed"
            }
        };
        // systemd: RELOADING=1 ... READY=1 around every reload, taken or refused (the previous deployment
        // keeps serving, so the service is ready either way).
        if let Err(e) = systemd::notify_reloading() {
            tracing::warn!(target: LOG, error = %e, "systemd notification (RELOADING=1) failed");
        }
        let ok = reload_logged(&app, &monitor, why).await;
        if let Err(e) = systemd::notify_ready_status(&status_line(&app, ok)) {
            tracing::warn!(target: LOG, error = %e, "systemd notification (READY=1) failed");
        }
    }
}

/// How often each phone's last download is written to the store.
pub const DOWNLOADS_EVERY: Duration = Duration::from_secs(5);

/// Writes the downloads this node served since the last time to the store ([`crate::app::activity`]),
/// every `every` and once more when stopped, so that every node's console shows them.
pub async fn save_downloads(app: Arc<App>, every: Duration, mut stop: Stop) {
    let Some(store) = app.accounts().cloned() else { return };
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            () = stop.stopped() => true,
            () = tokio::time::sleep(every) => false,
        };
        let batch = app.activity().take_unsaved();
        if !batch.is_empty() {
            match store.record_downloads(&batch).await {
                Ok(()) => failing = false,
                Err(e) => {
                    if !failing {
                        tracing::warn!(target: LOG, error = %e, "phones' last downloads not written to the store; trying again");
                    }
                    failing = true;
                    app.activity().unsaved_again(&batch);
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Keeps the token service's in-memory view (signing keys, revocations) in step with its database,
/// whichever process changed it (`sipcfg token revoke`, `sipcfg keys rotate`), and purges expired state
/// every `[state] purge_interval_secs`.
pub async fn watch_state(app: Arc<App>, every: Duration, mut stop: Stop) {
    let Some(service) = app.token_service().cloned() else { return };
    let purge_every = app.config().state.as_ref().map_or(3600, |s| s.purge_interval_secs) as Time;
    let mut last = Looked::default();
    loop {
        last = look_at_state(&app, &service, last, purge_every).await;
        tokio::select! {
            () = stop.stopped() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// What the token-state watch did last.
#[derive(Debug, Clone, Copy, Default)]
struct Looked {
    /// The change counter this node last reported as applied, and when it reported.
    reported: Option<(u64, Time)>,
    /// When expired state was last purged (0: never).
    purged: Time,
}

async fn look_at_state(app: &App, service: &TokenService, mut last: Looked, purge_every: Time) -> Looked {
    let now = unix_now() as Time;
    match app.sync_tokens(now).await {
        Ok(true) => tracing::info!(target: LOG, "token service keys or revocations changed; now in force"),
        Ok(false) => {}
        Err(e) => tracing::error!(target: LOG, error = %e, "token service state could not be read"),
    }
    let applied = service.applied_change();
    let due = match (last.reported, applied) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some((was, at)), Some(now_applied)) => was != now_applied || now - at >= NODE_REPORT_SECS,
    };
    if due && let Some(applied) = applied {
        match app.report_node(now).await {
            Ok(()) => last.reported = Some((applied, now)),
            Err(e) => tracing::warn!(target: LOG, error = %e, "could not report this node to the token store"),
        }
    }
    if last.purged == 0 || now - last.purged >= purge_every {
        match service.store().purge(now).await {
            Ok(n) => tracing::debug!(target: LOG, rows = n, "expired token state purged"),
            Err(e) => tracing::error!(target: LOG, error = %e, "purge failed"),
        }
        last.purged = now;
    }
    last
}

/// Starts the background tasks of a running node (file watch, token-state watch, certificate checks, the
/// directory sync, the systemd watchdog); [`StopHandle::stop`] ends them.
pub fn spawn_background(
    app: &Arc<App>,
    monitor: &Monitor,
    hangup: Hangup,
) -> (StopHandle, Vec<tokio::task::JoinHandle<()>>) {
    let (handle, stop) = stop_signal();
    let every = app.config().server.reload_poll();
    // A cluster node follows the shared store (its notifications carry token changes too); a single node
    // polls its state database.
    let state = if app.site().shared().is_some() {
        tokio::spawn(crate::ops::store_watch::watch_store(app.clone(), monitor.clone(), stop.clone()))
    } else {
        tokio::spawn(watch_state(app.clone(), STATE_POLL, stop.clone()))
    };
    let tasks = vec![
        tokio::spawn(watch(app.clone(), monitor.clone(), every, hangup, stop.clone())),
        state,
        tokio::spawn(save_downloads(app.clone(), DOWNLOADS_EVERY, stop.clone())),
        tokio::spawn(monitor.health.clone().watch_certificates(stop.clone())),
        // Users from the directory: a first sync at start, in the background (phones are served meanwhile).
        tokio::spawn(crate::app::ldap::scheduled(app.clone(), stop.clone())),
        tokio::spawn(systemd::watchdog(stop)),
    ];
    (handle, tasks)
}
