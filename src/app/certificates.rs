//! The certificates in force, read when a deployment loads (at start and at each reload): the server's
//! chain, what the edge listener trusts (`edge.client_ca` and the Tomcat-trust store) and the
//! Phone-Edge-Trust store, with their validity. Readiness, the expiry metrics and the expiry warnings read
//! them; nothing here reads a file on a request's path.

use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::config::Config;
use crate::provision::trust::TrustCert;
use crate::util::time::rfc3339_utc;

pub(crate) const DAY: i64 = 86_400;

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// The chain presented on the phone port (and to edge proxies): its expiry makes the server unready.
    Server,
    /// What edge proxies' client certificates must chain to: `edge.client_ca` and the Tomcat-trust store.
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
    /// Reads the certificates `config` names (server chain, `edge.client_ca`) and takes the Phone-Edge-Trust
    /// and Tomcat-trust ones from the loaded stores.
    pub fn of(config: &Config, phone_edge_trust: &[TrustCert], tomcat_trust: &[TrustCert]) -> Certificates {
        let mut out = Certificates::default();
        out.read(CertRole::Server, &config.tls.certificate);
        if let Some(client_ca) = config.edge.as_ref().and_then(|e| e.client_ca.as_ref()) {
            out.read(CertRole::EdgeClientCa, client_ca);
        }
        let stored = |role: CertRole| {
            move |c: &TrustCert| CertValidity {
                role,
                subject: c.subject.clone(),
                not_before: c.not_before,
                not_after: c.not_after,
            }
        };
        out.certs.extend(tomcat_trust.iter().map(stored(CertRole::EdgeClientCa)));
        out.certs.extend(phone_edge_trust.iter().map(stored(CertRole::PhoneEdgeTrust)));
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
pub fn left(secs: i64) -> String {
    if secs >= 2 * DAY { format!("{} days", secs / DAY) } else { format!("{} h", (secs / 3600).max(0)) }
}
