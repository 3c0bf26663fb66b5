//! Health: what `/healthz` and `/readyz` report, and the certificate expiry warnings. No HTTP here.
//!
//! Ready means: a deployment (inventory, templates) is loaded, every certificate of the server's chain is
//! valid now and for longer than `admin.cert_unready_days`, and the server is not draining (SIGTERM).
//! Expiry warnings are logged from `admin.cert_warn_days` ahead for the server chain, the edge client CA and
//! the Phone-Edge-Trust CAs: at start, at each reload and every `admin.cert_check_hours`.
//!
//! [`Health`] is a small handle: the deployment in force, the certificates and thresholds in force (both
//! replaced by the [`App`](crate::app::App) at each reload), and the draining latch the server sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::app::certificates::{CertRole, CertValidity, Certificates, DAY, left};
use crate::app::{OnDisk, Status, StoreState};
use crate::config::AdminConfig;
use crate::provision::Provisioner;
use crate::util::stop::Stop;
use crate::util::time::{Time, rfc3339_utc, unix_now};

/// The log target of certificate warnings, kept from before the modules moved (operators filter on it).
pub const LOG: &str = "sipcfg::health";

/// What readiness is judged on. Cheap to clone; every clone shares the draining latch.
#[derive(Clone)]
pub struct Health(Arc<Inner>);

struct Inner {
    draining: AtomicBool,
    provisioner: Arc<Provisioner>,
    status: Arc<Status>,
}

impl Health {
    pub fn new(provisioner: Arc<Provisioner>, status: Arc<Status>) -> Health {
        Health(Arc::new(Inner { draining: AtomicBool::new(false), provisioner, status }))
    }

    /// From now on `/readyz` answers 503: shutdown began, open requests are finishing.
    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }

    /// Whether the files on disk are what serves.
    pub fn on_disk(&self) -> Arc<OnDisk> {
        self.0.status.on_disk()
    }

    /// The shared store's reachability as the node last saw it.
    pub fn store(&self) -> Arc<StoreState> {
        self.0.status.store()
    }

    /// The certificates in force.
    pub fn certificates(&self) -> Arc<Certificates> {
        self.0.status.certificates()
    }

    /// Evaluates readiness now. Cheap: no file is read (certificates are read at start and at each reload).
    pub fn readiness(&self, now: Time) -> Readiness {
        let deployment = self.0.provisioner.current();
        let inventory = Check {
            name: "inventory",
            ok: true,
            required: true,
            detail: format!(
                "generation {}: {} devices, {} users, {} profiles",
                deployment.generation,
                deployment.inventory.devices.len(),
                deployment.inventory.users.len(),
                deployment.inventory.profiles.len()
            ),
        };
        let certificate = certificate_check(&self.certificates(), &self.0.status.admin(), now);
        let draining = self.is_draining();
        let draining = Check {
            name: "draining",
            ok: !draining,
            required: true,
            detail: if draining { "shutdown began: open requests are finishing".into() } else { "no".into() },
        };
        let files = files_check(&self.0.status.on_disk());
        let mut checks = vec![inventory, certificate, draining, files];
        checks.extend(store_check(&self.0.status.store(), now));
        Readiness::of(checks)
    }

    /// Logs a warning per certificate that expires within `admin.cert_warn_days` (an error once expired),
    /// and every certificate file that could not be read for the check.
    pub fn log_certificate_warnings(&self) {
        let certs = self.certificates();
        let warn_days = self.0.status.admin().cert_warn_days;
        for (expired, line) in certs.warnings(unix_now() as Time, warn_days) {
            if expired {
                tracing::error!(target: LOG, "certificate expired: {line}");
            } else {
                tracing::warn!(target: LOG, warn_days, "certificate expires soon: {line}");
            }
        }
        for (role, problem) in &certs.problems {
            tracing::warn!(target: LOG, "{} not checked for expiry: {problem}", role.describe());
        }
    }

    /// Logs the expiry warnings at once and then every `admin.cert_check_hours` until `stop`.
    pub async fn watch_certificates(self, mut stop: Stop) {
        loop {
            self.log_certificate_warnings();
            let every = self.0.status.admin().cert_check_interval();
            tokio::select! {
                () = stop.stopped() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// One readiness check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// A failed check that is not required leaves the node ready, but degraded: it still serves, and taking
    /// it out of a balancer would not help (every node reads the same files).
    pub required: bool,
    pub detail: String,
}

/// The outcome of every readiness check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Ready, but a check that is not required failed (the files on disk do not load).
    pub degraded: bool,
    pub checks: Vec<Check>,
}

impl Readiness {
    fn of(checks: Vec<Check>) -> Readiness {
        let ready = checks.iter().all(|c| c.ok || !c.required);
        let degraded = ready && checks.iter().any(|c| !c.ok);
        Readiness { ready, degraded, checks }
    }

    /// `ready`, `ready, degraded: files` or `not ready: certificate, draining`, then one line per check.
    pub fn text(&self) -> String {
        let failed: Vec<&str> = self.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
        let mut out = if !self.ready {
            format!("not ready: {}\n", failed.join(", "))
        } else if self.degraded {
            format!("ready, degraded: {}\n", failed.join(", "))
        } else {
            "ready\n".to_owned()
        };
        for c in &self.checks {
            let state = match (c.ok, c.required) {
                (true, _) => "ok",
                (false, true) => "FAILED",
                (false, false) => "DEGRADED",
            };
            out.push_str(&format!("{}: {state} ({})\n", c.name, c.detail));
        }
        out
    }
}

/// The files on disk: what serves is what they say, or they do not load and something older serves.
fn files_check(on_disk: &OnDisk) -> Check {
    match on_disk {
        OnDisk::Loaded => Check { name: "files", ok: true, required: false, detail: "the files on disk serve".into() },
        OnDisk::Broken { since, errors, serving, .. } => Check {
            name: "files",
            ok: false,
            required: false,
            detail: format!(
                "the files on disk do not load since {} ({} error(s), first: {}); serving {serving}; `sipcfg check` \
                 lists every problem",
                rfc3339_utc(*since),
                errors.len(),
                errors.first().map_or("?", String::as_str)
            ),
        },
    }
}

/// The shared store, when there is one: unreachable leaves the node ready but degraded (it serves downloads
/// from memory; every node reads the same store, so taking this one out of a balancer would not help).
fn store_check(store: &StoreState, now: Time) -> Option<Check> {
    let detail = match store {
        StoreState::NotShared => return None,
        StoreState::Up { applied, lag_secs } => {
            format!("reachable; change {applied} in force (last change took {lag_secs:.3} s to arrive)")
        }
        StoreState::Down { since, error, applied } => format!(
            "unreachable for {} s (since {}): {error}; downloads go on from memory (change {applied}), token grants \
             answer 503 until it is back",
            now - since,
            rfc3339_utc(*since)
        ),
    };
    Some(Check { name: "store", ok: matches!(store, StoreState::Up { .. }), required: false, detail })
}

/// The server certificate chain: valid now, and for longer than `cert_unready_days`.
fn certificate_check(certs: &Certificates, admin: &AdminConfig, now: Time) -> Check {
    let fail = |detail: String| Check { name: "certificate", ok: false, required: true, detail };
    if let Some((_, problem)) = certs.problems.iter().find(|(role, _)| *role == CertRole::Server) {
        return fail(format!("server certificate: {problem}"));
    }
    let server: Vec<&CertValidity> = certs.certs.iter().filter(|c| c.role == CertRole::Server).collect();
    if let Some(c) = server.iter().find(|c| c.not_before > now) {
        return fail(format!("server certificate {} is not valid before {}", c.subject, rfc3339_utc(c.not_before)));
    }
    let Some(first) = server.iter().min_by_key(|c| c.not_after) else {
        return fail("no server certificate".into());
    };
    let margin = i64::from(admin.cert_unready_days) * DAY;
    if first.not_after <= now {
        return fail(format!("server certificate {} expired at {}", first.subject, rfc3339_utc(first.not_after)));
    }
    if first.not_after - now <= margin {
        return fail(format!(
            "server certificate {} expires at {} (in {}), within admin.cert_unready_days = {}",
            first.subject,
            rfc3339_utc(first.not_after),
            left(first.not_after - now),
            admin.cert_unready_days
        ));
    }
    Check {
        name: "certificate",
        ok: true,
        required: true,
        detail: format!(
            "server certificate {} valid until {} (in {})",
            first.subject,
            rfc3339_utc(first.not_after),
            left(first.not_after - now)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(role: CertRole, not_before: i64, not_after: i64) -> CertValidity {
        CertValidity { role, subject: "CN=test".into(), not_before, not_after }
    }

    #[test]
    fn the_server_chain_decides_the_certificate_check() {
        let admin = AdminConfig::default();
        let now = 1_000_000_000;
        let of = |certs: Vec<CertValidity>| Certificates { certs, problems: Vec::new() };
        let ok = of(vec![cert(CertRole::Server, now - DAY, now + 40 * DAY)]);
        assert!(certificate_check(&ok, &admin, now).ok);
        let soon = of(vec![cert(CertRole::Server, now - DAY, now + 40 * DAY), cert(CertRole::Server, 0, now + 3600)]);
        let check = certificate_check(&soon, &admin, now);
        assert!(!check.ok);
        assert!(check.detail.contains("in 1 h") && check.detail.contains("cert_unready_days"), "{}", check.detail);
        let expired = of(vec![cert(CertRole::Server, 0, now - 1)]);
        assert!(certificate_check(&expired, &admin, now).detail.contains("expired at"));
        let future = of(vec![cert(CertRole::Server, now + 10, now + 400 * DAY)]);
        assert!(certificate_check(&future, &admin, now).detail.contains("not valid before"));
        // Other roles only warn.
        let trust = of(vec![cert(CertRole::Server, 0, now + 400 * DAY), cert(CertRole::PhoneEdgeTrust, 0, now + 5)]);
        assert!(certificate_check(&trust, &admin, now).ok);
        let warnings = trust.warnings(now, 30);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].1.starts_with("Phone-Edge-Trust CA CN=test expires at"), "{:?}", warnings);
        assert_eq!(trust.earliest_expiry(), vec![("server", now + 400 * DAY), ("phone-edge-trust", now + 5)]);
    }
}
