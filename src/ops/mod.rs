//! The process around the server: what an operator watches and does. Reload on file changes and SIGHUP,
//! the token-state watch, readiness and certificate expiry, Prometheus metrics, signals and systemd.
//!
//! | module | what |
//! |---|---|
//! | [`audit`] | the audit log's file: its writer thread, back-pressure, rotation |
//! | [`reload`] | the file watch and SIGHUP → [`App::reload`]; the token-state watch and purge |
//! | [`store_watch`] | a cluster node following the shared store: notifications, resyncs, reachability |
//! | [`health`] | readiness (`/readyz`), certificate expiry warnings |
//! | [`metrics`] | the counters and the Prometheus exposition (`/metrics`) |
//! | [`inflight`] | the bound on work in flight (`server.max_in_flight`): handshakes and requests |
//! | [`signals`] | SIGTERM, SIGINT and SIGHUP, registered before the server announces itself |
//! | [`systemd`] | `sd_notify` (READY, RELOADING, STOPPING, STATUS) and the watchdog |

pub mod audit;
pub mod health;
pub mod inflight;
pub mod metrics;
pub mod process;
pub mod reload;
pub mod signals;
pub mod store_watch;
pub mod systemd;

use std::sync::Arc;

use crate::app::{App, OnDisk, StoreState};
use crate::auth::service::TokenService;
use crate::ops::health::Health;
use crate::ops::inflight::InFlight;
use crate::ops::metrics::{Metrics, Snapshot};
use crate::provision::Provisioner;
use crate::util::time::{Time, unix_now};

/// What a node's observers share: the counters, readiness with its draining latch, and what the state
/// gauges are read from. The server counts into it; the admin listener reports from it. Cheap to clone.
#[derive(Clone)]
pub struct Monitor {
    pub metrics: Arc<Metrics>,
    pub health: Health,
    /// The bound on work in flight that the phone-facing listeners share (`server.max_in_flight`).
    pub in_flight: Arc<InFlight>,
    provisioner: Arc<Provisioner>,
    tokens: Option<Arc<TokenService>>,
}

impl Monitor {
    /// The monitor of `app`; the rendered-file cache reports its hits, renders and evictions to it.
    pub fn of(app: &App) -> Monitor {
        let metrics = Arc::new(Metrics::new());
        app.provisioner().cache().set_observer(metrics.clone());
        let in_flight = Arc::new(InFlight::new(app.config().server.max_in_flight()));
        metrics.attach_in_flight(in_flight.clone());
        Monitor {
            metrics,
            in_flight,
            health: Health::new(app.provisioner().clone(), app.status().clone()),
            provisioner: app.provisioner().clone(),
            tokens: app.token_service().cloned(),
        }
    }

    /// The state gauges, read now.
    pub async fn snapshot(&self) -> Snapshot {
        let (cache_entries, cache_bytes) = self.provisioner.cache().usage();
        let deployment = self.provisioner.current();
        let readiness = self.health.readiness(unix_now() as Time);
        let on_disk = self.health.on_disk();
        let store = self.health.store();
        Snapshot {
            cache_entries,
            cache_bytes,
            devices: deployment.inventory.devices.len(),
            users: deployment.inventory.users.len(),
            profiles: deployment.inventory.profiles.len(),
            generation: deployment.generation,
            certificate_expiry: self.health.certificates().earliest_expiry(),
            ready: readiness.ready,
            draining: self.health.is_draining(),
            files_loaded: matches!(*on_disk, OnDisk::Loaded),
            serving_last_good: matches!(*on_disk, OnDisk::Broken { last_good: true, .. }),
            revocations: self.tokens.as_ref().map_or(0, |s| s.revocations_seen()),
            store_shared: !matches!(*store, StoreState::NotShared),
            store_up: !matches!(*store, StoreState::Down { .. }),
            store_applied: match *store {
                StoreState::Up { applied, .. } | StoreState::Down { applied, .. } => applied,
                StoreState::NotShared => 0,
            },
        }
    }

    /// The Prometheus text exposition of every metric.
    pub async fn encode(&self) -> String {
        self.metrics.encode(&self.snapshot().await)
    }
}
