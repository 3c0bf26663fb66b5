//! Health: what `/healthz` and `/readyz` report, and the certificate expiry warnings. No HTTP here.
//!
//! Ready means: a deployment (inventory, templates) is loaded, every certificate of the server's chain is
//! valid now and for longer than `admin.cert_unready_days`, and the server is not draining (SIGTERM).
//! Expiry warnings are logged from `admin.cert_warn_days` ahead for the server chain, the edge client CA and
//! the Phone-Edge-Trust CAs: at start, at each reload and every `admin.cert_check_hours`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::app::App;
use crate::config::{AdminConfig, Config};
use crate::trust::{TrustCert, rfc3339_utc};

const DAY: i64 = 86_400;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// The chain presented on the phone port (and to edge proxies): its expiry makes the server unready.
    Server,
    /// The CA that edge proxies' client certificates must chain to.
    EdgeClientCa,
    /// A CA published to phones in `caconfig.json` and the configuration files.
    PhoneEdgeTrust,
}

impl CertRole {
    pub const ALL: [CertRole; 3] = [CertRole::Server, CertRole::EdgeClientCa, CertRole::PhoneEdgeTrust];

    /// Label for metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            CertRole::Server => "server",
            CertRole::EdgeClientCa => "edge-client-ca",
            CertRole::PhoneEdgeTrust => "phone-edge-trust",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            CertRole::Server => "server certificate",
            CertRole::EdgeClientCa => "edge client CA",
            CertRole::PhoneEdgeTrust => "Phone-Edge-Trust CA",
        }
    }
}

/// One certificate in force and its validity (unix seconds).
#[derive(Debug, Clone)]
pub struct CertValidity {
    pub role: CertRole,
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
}

/// The certificates in force, and the files whose certificates could not be read for the check.
#[derive(Debug, Clone, Default)]
pub struct Certificates {
    pub certs: Vec<CertValidity>,
    pub problems: Vec<(CertRole, String)>,
}

impl Certificates {
    /// Reads the certificates `config` names (server chain, edge client CA) and takes the Phone-Edge-Trust
    /// ones from the loaded store.
    pub fn of(config: &Config, phone_edge_trust: &[TrustCert]) -> Certificates {
        let mut out = Certificates::default();
        out.read(CertRole::Server, &config.tls.certificate);
        if let Some(edge) = &config.edge {
            out.read(CertRole::EdgeClientCa, &edge.client_ca);
        }
        out.certs.extend(phone_edge_trust.iter().map(|c| CertValidity {
            role: CertRole::PhoneEdgeTrust,
            subject: c.subject.clone(),
            not_before: c.not_before,
            not_after: c.not_after,
        }));
        out
    }

    fn read(&mut self, role: CertRole, path: &Path) {
        let ders = match CertificateDer::pem_file_iter(path) {
            Ok(iter) => iter.collect::<Result<Vec<_>, _>>(),
            Err(e) => {
                self.problems.push((role, format!("{}: cannot read: {e}", path.display())));
                return;
            }
        };
        let ders = match ders {
            Ok(d) if !d.is_empty() => d,
            Ok(_) => return self.problems.push((role, format!("{}: no certificate", path.display()))),
            Err(e) => return self.problems.push((role, format!("{}: bad PEM: {e}", path.display()))),
        };
        for der in ders {
            match x509_parser::parse_x509_certificate(&der) {
                Ok((_, cert)) => self.certs.push(CertValidity {
                    role,
                    subject: cert.subject().to_string(),
                    not_before: cert.validity().not_before.timestamp(),
                    not_after: cert.validity().not_after.timestamp(),
                }),
                Err(e) => self.problems.push((role, format!("{}: unparsable certificate: {e}", path.display()))),
            }
        }
    }

    /// The earliest `notAfter` per role, for metrics.
    pub fn earliest_expiry(&self) -> Vec<(&'static str, i64)> {
        CertRole::ALL
            .iter()
            .filter_map(|&role| {
                let earliest = self.certs.iter().filter(|c| c.role == role).map(|c| c.not_after).min()?;
                Some((role.as_str(), earliest))
            })
            .collect()
    }

    /// Certificates that have expired or end within `warn_days`, soonest first, as log lines.
    pub fn warnings(&self, now: i64, warn_days: u32) -> Vec<(bool, String)> {
        let mut soon: Vec<&CertValidity> =
            self.certs.iter().filter(|c| c.not_after - now < i64::from(warn_days) * DAY).collect();
        soon.sort_by_key(|c| c.not_after);
        soon.into_iter()
            .map(|c| {
                let expired = c.not_after <= now;
                let when = if expired {
                    format!("expired at {}", rfc3339_utc(c.not_after))
                } else {
                    format!("expires at {} (in {})", rfc3339_utc(c.not_after), left(c.not_after - now))
                };
                (expired, format!("{} {} {when}", c.role.describe(), c.subject))
            })
            .collect()
    }
}

/// A duration ahead, for people: days, or hours under two days.
fn left(secs: i64) -> String {
    if secs >= 2 * DAY { format!("{} days", secs / DAY) } else { format!("{} h", (secs / 3600).max(0)) }
}

/// What readiness needs besides the deployment: whether the server is draining, and the certificates in
/// force.
#[derive(Debug, Default)]
pub struct Health {
    draining: AtomicBool,
    certificates: ArcSwap<Certificates>,
}

impl Health {
    /// From now on `/readyz` answers 503: shutdown began, open requests are finishing.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn set_certificates(&self, certificates: Certificates) {
        self.certificates.store(Arc::new(certificates));
    }

    pub fn certificates(&self) -> Arc<Certificates> {
        self.certificates.load_full()
    }
}

/// One readiness check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The outcome of every readiness check.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<Check>,
}

impl Readiness {
    /// `ready`, or `not ready: certificate, draining`, then one line per check.
    pub fn text(&self) -> String {
        let mut out = if self.ready {
            "ready\n".to_owned()
        } else {
            let failed: Vec<&str> = self.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
            format!("not ready: {}\n", failed.join(", "))
        };
        for c in &self.checks {
            out.push_str(&format!("{}: {} ({})\n", c.name, if c.ok { "ok" } else { "FAILED" }, c.detail));
        }
        out
    }
}

/// Evaluates readiness now. Cheap: no file is read (certificates are read at start and at each reload).
pub fn readiness(app: &App, now: i64) -> Readiness {
    let deployment = app.provisioner.current();
    let inventory = Check {
        name: "inventory",
        ok: true,
        detail: format!(
            "generation {}: {} devices, {} users, {} profiles",
            deployment.generation,
            deployment.inventory.devices.len(),
            deployment.inventory.users.len(),
            deployment.inventory.profiles.len()
        ),
    };
    let certificate = certificate_check(&app.health.certificates(), &app.live.load().admin, now);
    let draining = app.health.is_draining();
    let draining = Check {
        name: "draining",
        ok: !draining,
        detail: if draining { "shutdown began: open requests are finishing".into() } else { "no".into() },
    };
    let checks = vec![inventory, certificate, draining];
    Readiness { ready: checks.iter().all(|c| c.ok), checks }
}

/// The server certificate chain: valid now, and for longer than `cert_unready_days`.
fn certificate_check(certs: &Certificates, admin: &AdminConfig, now: i64) -> Check {
    let fail = |detail: String| Check { name: "certificate", ok: false, detail };
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
        detail: format!(
            "server certificate {} valid until {} (in {})",
            first.subject,
            rfc3339_utc(first.not_after),
            left(first.not_after - now)
        ),
    }
}

/// Logs a warning per certificate that expires within `admin.cert_warn_days` (an error once expired), and
/// every certificate file that could not be read for the check.
pub fn log_certificate_warnings(app: &App) {
    let certs = app.health.certificates();
    let warn_days = app.live.load().admin.cert_warn_days;
    for (expired, line) in certs.warnings(crate::token::unix_now() as i64, warn_days) {
        if expired {
            tracing::error!("certificate expired: {line}");
        } else {
            tracing::warn!(warn_days, "certificate expires soon: {line}");
        }
    }
    for (role, problem) in &certs.problems {
        tracing::warn!("{} not checked for expiry: {problem}", role.describe());
    }
}

/// Logs the expiry warnings at once and then every `admin.cert_check_hours` until `stop` turns true.
pub async fn watch_certificates(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        log_certificate_warnings(&app);
        let every = app.live.load().admin.cert_check_interval();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(every) => {}
        }
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
