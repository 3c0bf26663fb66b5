//! A cluster node following the shared store ([`watch_store`]): it listens for change notifications
//! (`LISTEN sipcfg`) and reads the change log on each one, after every reconnection (notifications sent while
//! it was disconnected are lost) and every `[store] resync_secs` in any case, through [`App::sync_store`].
//! While the store is unreachable it probes it every second: downloads go on from memory, token grants
//! answer 503 at once, `/readyz` says why, and the node takes everything in as soon as it is back. It also
//! reports itself (for `sipcfg token revoke`, `sipcfg store status`) and purges expired token state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::auth::service::NODE_REPORT_SECS;
use crate::auth::store::StoreError;
use crate::ops::Monitor;
use crate::ops::reload::LOG;
use crate::store::postgres::Listener;
use crate::util::stop::Stop;
use crate::util::time::{Time, unix_now};

/// How often an unreachable store is tried again.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// While the store stays unreachable, the error is logged again this often.
const DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

/// Follows the shared store until `stop` (nothing to do without one).
pub async fn watch_store(app: Arc<App>, monitor: Monitor, mut stop: Stop) {
    let Some(store) = app.site().shared().cloned() else { return };
    let resync = app.config().store.as_ref().map_or(Duration::from_secs(5), |s| s.resync());
    let purge_every = app.config().state.as_ref().map_or(3600, |s| s.purge_interval_secs) as Time;
    let mut listener: Option<Listener> = None;
    let mut down: Option<(Instant, Instant)> = None;
    let mut reported: Option<(u64, Time)> = None;
    let mut purged: Time = 0;
    loop {
        let outcome = follow(&app, &monitor, &store, &mut listener).await;
        match (&outcome, down) {
            (Ok(()), Some((since, _))) => {
                tracing::info!(
                    target: LOG,
                    store = store.origin(),
                    after_secs = since.elapsed().as_secs(),
                    applied = app.applied(),
                    "the shared store is reachable again; its changes are in force"
                );
                down = None;
            }
            (Ok(()), None) => {}
            (Err(e), None) => {
                monitor.metrics.store_unreachable();
                tracing::error!(
                    target: LOG,
                    store = store.origin(),
                    error = %e,
                    "the shared store is unreachable: downloads go on from memory, token grants answer 503 until it \
                     is back (retrying every second)"
                );
                down = Some((Instant::now(), Instant::now()));
            }
            (Err(e), Some((since, logged))) if logged.elapsed() >= DOWN_LOG_EVERY => {
                tracing::warn!(
                    target: LOG,
                    store = store.origin(),
                    error = %e,
                    for_secs = since.elapsed().as_secs(),
                    "the shared store is still unreachable"
                );
                down = Some((since, Instant::now()));
            }
            (Err(_), Some(_)) => {}
        }
        if outcome.is_ok() {
            housekeeping(&app, &mut reported, &mut purged, purge_every).await;
        }
        let wait = if outcome.is_ok() && listener.is_some() { resync } else { PROBE_EVERY };
        tokio::select! {
            () = stop.stopped() => return,
            notified = next(&mut listener) => match notified {
                Ok(Some(_)) => {}
                Ok(None) => tracing::info!(target: LOG, "change notifications reconnected; reading the change log"),
                Err(e) => {
                    tracing::debug!(target: LOG, error = %e, "change notifications lost");
                    listener = None;
                }
            },
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One look: reach the store if it was down, (re)subscribe to notifications, then read the change log and
/// put what changed in force.
async fn follow(
    app: &App,
    monitor: &Monitor,
    store: &crate::store::postgres::PgStore,
    listener: &mut Option<Listener>,
) -> Result<(), StoreError> {
    let now = unix_now() as Time;
    if store.is_down() {
        app.probe_store(now).await?;
    }
    if listener.is_none() {
        // Subscribe before reading the log: a change committed in between is then both read and notified,
        // never neither. A store that cannot be subscribed to is down for /readyz and the metrics too, as
        // when reading the log fails: the caller logs it as unreachable.
        match store.listen().await {
            Ok(l) => *listener = Some(l),
            Err(e) => {
                app.store_down(&e, now);
                return Err(e);
            }
        }
    }
    let synced = match app.sync_store(now).await {
        Ok(synced) => synced,
        Err(e) => {
            // A connection that died without an error would keep the listener silent: start over.
            *listener = None;
            return Err(e);
        }
    };
    if let Some(lag) = synced.lag_secs {
        monitor.metrics.store_lag(lag);
    }
    if synced.tokens {
        tracing::info!(target: LOG, change = synced.latest, "token service keys or revocations changed; now in force");
    }
    if !synced.devices.is_empty() {
        let names: Vec<&str> = synced.devices.iter().take(5).map(|d| d.as_str()).collect();
        tracing::info!(
            target: LOG,
            change = synced.latest,
            devices = synced.devices.len(),
            first = names.join(","),
            "devices changed in the shared store; their files re-render"
        );
    }
    if let Some(done) = &synced.reloaded {
        monitor.metrics.reload(true);
        monitor.health.log_certificate_warnings();
        tracing::info!(
            target: LOG,
            why = "shared store changed",
            generation = done.generation,
            devices = done.devices,
            change = synced.latest,
            "reloaded"
        );
    }
    for line in &synced.refused {
        monitor.metrics.reload(false);
        tracing::error!(target: LOG, "reload refused, the previous deployment keeps serving: {line}");
    }
    Ok(())
}

/// The next notification, or never without a listener.
async fn next(listener: &mut Option<Listener>) -> Result<Option<u64>, StoreError> {
    match listener {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

/// Reports this node when its applied change moved or every [`NODE_REPORT_SECS`], and purges expired token
/// state every `purge_every` seconds.
async fn housekeeping(app: &App, reported: &mut Option<(u64, Time)>, purged: &mut Time, purge_every: Time) {
    let now = unix_now() as Time;
    let applied = app.applied();
    let due = reported.is_none_or(|(was, at)| was != applied || now - at >= NODE_REPORT_SECS);
    if due {
        match app.report_node(now).await {
            Ok(()) => *reported = Some((applied, now)),
            Err(e) => tracing::warn!(target: LOG, error = %e, "could not report this node to the shared store"),
        }
    }
    if let Some(service) = app.token_service()
        && (*purged == 0 || now - *purged >= purge_every)
    {
        match service.store().purge(now).await {
            Ok(n) => tracing::debug!(target: LOG, rows = n, "expired token state purged"),
            Err(e) => tracing::warn!(target: LOG, error = %e, "purge failed"),
        }
        *purged = now;
    }
}
