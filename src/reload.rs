//! Reloading without a restart: the inventory, templates and Phone-Edge-Trust store are watched (a cheap
//! poll of sizes, modification times and inodes) and reloaded when they change or on SIGHUP. A new
//! deployment that does not load is refused with its errors logged, and the last good one keeps serving.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::app::App;
use crate::provision::{self, LoadError};

/// Loads the deployment again and puts it in force if it loads; returns the new generation.
pub fn reload(app: &App) -> Result<u64, Vec<LoadError>> {
    let fingerprint = fingerprint(&app.sources.watched());
    let loaded = provision::load(&app.sources);
    // Even a refused deployment was seen: it is not retried until the files change again.
    app.loaded_fingerprint.store(fingerprint, Ordering::SeqCst);
    Ok(app.provisioner.replace(loaded?))
}

/// Logs the outcome of a reload.
pub fn reload_logged(app: &App, why: &str) -> bool {
    match reload(app) {
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
    }
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

/// Watches the deployment's files every `every`, and SIGHUP, until `stop` turns true.
pub async fn watch(app: Arc<App>, every: Duration, mut stop: watch::Receiver<bool>) {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    let paths = app.sources.watched();
    let fp = |paths: Vec<PathBuf>| async move {
        tokio::task::spawn_blocking(move || fingerprint(&paths)).await.unwrap_or(0)
    };
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let why = tokio::select! {
            () = &mut stopped => return,
            _ = hangup => "SIGHUP",
            () = tokio::time::sleep(every) => {
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
        let app = app.clone();
        let _ = tokio::task::spawn_blocking(move || reload_logged(&app, why)).await;
    }
}
