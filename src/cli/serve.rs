//! `sipcfg serve`: the node, until SIGTERM.

use std::process::ExitCode;
use std::sync::Arc;

use crate::app::App;
use crate::cli::{ConfigArg, load_config, logging};
use crate::config::{Config, Overrides};
use crate::ops::{Monitor, reload, signals, systemd};
use crate::server::{self, Listeners};

pub(crate) fn serve(arg: &ConfigArg, overrides: Overrides) -> Result<ExitCode, String> {
    let mut config = load_config(arg)?;
    config.apply_overrides(overrides);
    config.check_listeners().map_err(|e| e.to_string())?;
    // Kept until `serve` returns, after the runtime: its drop writes the audit lines still buffered.
    let audit = logging::init_logging_with(&config.log)?;
    let audit_stats = audit.as_ref().map(|a| a.stats.clone());
    let examples = config.example_key_files();
    if !examples.is_empty() {
        let files: Vec<_> = examples.iter().map(|p| p.display().to_string()).collect();
        tracing::warn!(
            "EXAMPLE KEYS IN USE ({}): they are public, anyone can mint tokens and impersonate this server. \
             Generate your own keys before serving real phones (docs/operations.md).",
            files.join(", ")
        );
    }
    // One worker: tokio's single-threaded scheduler, which does not pay for work stealing (its atomics,
    // queues and wake-ups), ~5% of a boot-storm phone on one core (BENCHMARKS.md). More: the work-stealing
    // scheduler with that many workers.
    let runtime = match config.server.worker_threads() {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    }
    .enable_all()
    .build()
    .map_err(|e| format!("cannot start the runtime: {e}"))?;
    // The node runs as a task of the runtime, not on the thread that blocks on it: the accept loops then run
    // on a worker beside the connections they spawn, with no hand-off to another thread per accepted batch.
    let node = runtime.spawn(async move {
        // Signal handlers before anything is announced: a SIGHUP or SIGTERM sent as soon as the server says
        // it serves (log line, READY=1) must reload or stop it, not meet the default action.
        let hangup = signals::hangup();
        let mut shutdown = Box::pin(signals::shutdown());
        let Some(app) = start(config, &mut shutdown).await? else { return Ok(()) };
        let app = Arc::new(app);
        let monitor = Monitor::of(&app);
        if let Some(stats) = audit_stats {
            monitor.metrics.attach_audit(stats);
        }
        let listeners = Listeners::bind(app.config()).await?;
        let deployment = app.provisioner().current();
        let addr = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(
            address = addr(&listeners.https),
            devices = deployment.inventory.devices.len(),
            sip_oauth_mode = deployment.inventory.cluster.sip_oauth_mode,
            "serving configuration files over HTTPS"
        );
        if let Some(l) = &listeners.legacy {
            tracing::info!(address = addr(l), "serving non-OAuth devices and common files over plain HTTP");
        }
        if let Some(l) = &listeners.console {
            tracing::info!(address = addr(l), "serving the management API and the web console over HTTPS");
        }
        if let Some(l) = &listeners.edge {
            tracing::info!(address = addr(l), "serving edge proxies over mutual TLS");
        }
        drop(deployment);
        let (stop, tasks) = reload::spawn_background(&app, &monitor, hangup);
        // Every listener is bound and the first deployment loaded: phones can be served.
        if let Err(e) = systemd::notify_ready_status(&reload::status_line(&app, true)) {
            tracing::warn!(error = %e, "systemd notification (READY=1) failed");
        }
        let shutdown = async {
            shutdown.as_mut().await;
            if let Err(e) = systemd::notify_stopping() {
                tracing::warn!(error = %e, "systemd notification (STOPPING=1) failed");
            }
        };
        server::run(listeners, app, monitor, shutdown).await;
        stop.stop();
        for t in tasks {
            let _ = t.await;
        }
        Ok::<_, String>(())
    });
    runtime.block_on(node).map_err(|e| format!("the server stopped unexpectedly: {e}"))??;
    drop(runtime);
    drop(audit);
    Ok(ExitCode::SUCCESS)
}

/// Builds the node. While the shared store is unreachable it cannot (it holds the deployment and the keys):
/// it says so and tries again, backing off from 1 to 30 s, until it can or SIGTERM comes (then `None`). The
/// listeners are not bound meanwhile, so balancers and phones go to the other nodes.
async fn start(
    config: Config,
    shutdown: &mut std::pin::Pin<Box<impl std::future::Future<Output = ()>>>,
) -> Result<Option<App>, String> {
    let mut wait = std::time::Duration::from_secs(1);
    let first = std::time::Instant::now();
    loop {
        match App::from_config(config.clone()).await {
            Ok(app) => {
                if first.elapsed() >= std::time::Duration::from_secs(1) {
                    tracing::info!(after_secs = first.elapsed().as_secs(), "the shared store is reachable: starting");
                }
                return Ok(Some(app));
            }
            Err(e) if e.is_unavailable() => {
                // Under systemd (Type=notify), a start that waits for the store would be killed after
                // TimeoutStartSec and, after a few restarts, given up: ask for more time while retrying.
                let extend = (wait + std::time::Duration::from_secs(30)).as_micros();
                if let Err(e) = crate::ops::systemd::notify(&format!(
                    "EXTEND_TIMEOUT_USEC={extend}\nSTATUS=waiting for the shared store (retrying)"
                )) {
                    tracing::debug!(error = %e, "systemd notification (EXTEND_TIMEOUT_USEC) failed");
                }
                tracing::error!(
                    error = %e,
                    retry_secs = wait.as_secs(),
                    "cannot start: the shared store is unreachable (it holds the deployment and the token keys); \
                     retrying. The other nodes serve meanwhile"
                );
                tokio::select! {
                    () = shutdown.as_mut() => return Ok(None),
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
