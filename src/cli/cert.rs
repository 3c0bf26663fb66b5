//! `sipcfg cert`: the certificate stores (Phone-Edge-Trust, Tomcat-trust).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::app::check;
use crate::app::site::Site;
use crate::cli::{ConfigArg, block_on, load_config, open_site};
use crate::config::Config;
use crate::provision::trust::{self, CertKind, TrustCert};
use crate::tls;
use crate::util::time::{Time, rfc3339_utc, unix_now};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// What phones validate the server with on 6971, published to them (at most 16): the CA that issued the
    /// server certificate, or the server certificate itself when it is self-signed ([trust] phone_edge_trust).
    PhoneEdgeTrust,
    /// What the edge listener validates Expressway-C client certificates with: the CA that issued them, or
    /// an Expressway-C's self-signed certificate ([trust] tomcat_trust).
    TomcatTrust,
}

impl Purpose {
    fn store(self) -> trust::Purpose {
        match self {
            Purpose::PhoneEdgeTrust => trust::Purpose::PhoneEdgeTrust,
            Purpose::TomcatTrust => trust::Purpose::TomcatTrust,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum CertAction {
    /// Add the certificates of a PEM file: a CA, a self-signed certificate, or a chain.
    ///
    /// A CA goes in as it is. A self-signed certificate that is not a CA goes into phone-edge-trust only when
    /// it is the server's own ([tls] certificate), into tomcat-trust as an Expressway-C's own. Of a chain,
    /// each CA goes into a file of its own and the other certificates are skipped, each with the reason.
    /// Every certificate added must be valid now; nothing is written if the store would hold too many.
    Add {
        /// The store: phone-edge-trust or tomcat-trust.
        #[arg(long, value_enum)]
        purpose: Purpose,
        /// The PEM file: one certificate, or a chain.
        file: PathBuf,
    },
    /// List the certificates of a store.
    List {
        /// The store: phone-edge-trust or tomcat-trust.
        #[arg(long, value_enum, default_value = "phone-edge-trust")]
        purpose: Purpose,
    },
    /// Remove a certificate by its SHA-256 (or a unique prefix of 8+ hex digits).
    Remove {
        /// The store: phone-edge-trust or tomcat-trust.
        #[arg(long, value_enum, default_value = "phone-edge-trust")]
        purpose: Purpose,
        /// The certificate's SHA-256 as `cert list` shows it (or a unique prefix of 8+ hex digits), or its
        /// file name in the store.
        id: String,
    },
}

pub(crate) fn cert(arg: &ConfigArg, action: CertAction) -> Result<ExitCode, String> {
    block_on(cert_async(arg, action))?
}

async fn cert_async(arg: &ConfigArg, action: CertAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let site = open_site(&config)?;
    let now = unix_now() as Time;
    let show = |c: &TrustCert| {
        let state = if c.is_expired(now) { "  EXPIRED" } else { "" };
        let kind = if c.kind == CertKind::SelfSigned { "  (self-signed, not a CA)" } else { "" };
        println!("{}  {}  (until {}){kind}{state}", c.sha256, c.subject, rfc3339_utc(c.not_after));
    };
    match action {
        CertAction::Add { purpose, file } => {
            // The server's own certificate, which Phone-Edge-Trust takes when it is self-signed.
            let server_leaf = tls::load_certificates(&config.tls.certificate).ok().and_then(|c| c.into_iter().next());
            let outcome = site
                .add_certificates(&config, purpose.store(), &file, now, server_leaf.as_ref().map(|c| c.as_ref()))
                .await
                .map_err(|e| e.to_string())?;
            for c in &outcome.added {
                print!("added: ");
                show(c);
            }
            for c in &outcome.added {
                let detail = format!("{} (from {})", c.subject, file.display());
                site.audit_cli(&config, "cert.add", &target(purpose, c), &detail).await;
            }
            for (c, existing) in &outcome.present {
                println!("already present: {}  {}  ({})", c.sha256, c.subject, existing.display());
            }
            for (c, why) in &outcome.skipped {
                println!("skipped: {}  {}: {why}", c.sha256, c.subject);
            }
            warn_if_untrusted(&config, &site, purpose).await;
        }
        CertAction::List { purpose } => {
            let (certs, _) = site.certificates(&config, purpose.store(), now).await.map_err(|e| e.to_string())?;
            for (_, c) in &certs {
                show(c);
            }
            println!("{} of {} certificates", certs.len(), purpose.store().max());
        }
        CertAction::Remove { purpose, id } => {
            let c = site.remove_certificate(&config, purpose.store(), &id).await.map_err(|e| e.to_string())?;
            site.audit_cli(&config, "cert.remove", &target(purpose, &c), &c.subject).await;
            print!("removed: ");
            show(&c);
            warn_if_untrusted(&config, &site, purpose).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a certificate change is done to, for the audit trail: the store and the certificate's SHA-256.
fn target(purpose: Purpose, cert: &TrustCert) -> String {
    format!("{} {}", purpose.store().option(), cert.sha256)
}

/// After a change to Phone-Edge-Trust: says so when the store still does not hold the issuer of the server
/// certificate while OAuth devices exist, since a running server then refuses the reload.
async fn warn_if_untrusted(config: &Config, site: &Site, purpose: Purpose) {
    if purpose != Purpose::PhoneEdgeTrust {
        return;
    }
    if let Ok(Some(problem)) = site.with_held(|held| check::phone_edge_trust_problem(config, held)).await {
        eprintln!("warning: {problem}; until it does, a running server refuses the change and `sipcfg check` fails");
    }
}
