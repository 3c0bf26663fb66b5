//! `sipcfg cert`: the certificate stores.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::cli::{ConfigArg, load_config};
use crate::provision::trust::{self, TrustCert, TrustStore};
use crate::util::time::{Time, rfc3339_utc, unix_now};

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The CA that issued the server's certificate on 6971, published to phones (at most 16).
    PhoneEdgeTrust,
}

#[derive(Subcommand, Debug)]
pub enum CertAction {
    /// Add a CA certificate (one PEM certificate, a CA, currently valid).
    Add {
        /// The store: phone-edge-trust.
        #[arg(long, value_enum)]
        purpose: Purpose,
        /// The PEM file of the certificate.
        file: PathBuf,
    },
    /// List the certificates of a store.
    List {
        /// The store: phone-edge-trust.
        #[arg(long, value_enum, default_value = "phone-edge-trust")]
        purpose: Purpose,
    },
    /// Remove a certificate by its SHA-256 (or a unique prefix of 8+ hex digits).
    Remove {
        /// The store: phone-edge-trust.
        #[arg(long, value_enum, default_value = "phone-edge-trust")]
        purpose: Purpose,
        /// The certificate's SHA-256 as `cert list` shows it (or a unique prefix of 8+ hex digits), or its
        /// file name in the store.
        id: String,
    },
}

pub(crate) fn cert(arg: &ConfigArg, action: CertAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let store = |purpose: Purpose| match purpose {
        Purpose::PhoneEdgeTrust => config
            .trust
            .phone_edge_trust
            .clone()
            .map(TrustStore::new)
            .ok_or_else(|| format!("{}: no [trust] phone_edge_trust folder is configured", config.path.display())),
    };
    let now = unix_now() as Time;
    let show = |c: &TrustCert| {
        let state = if c.is_expired(now) { "  EXPIRED" } else { "" };
        println!("{}  {}  (until {}){state}", c.sha256, c.subject, rfc3339_utc(c.not_after));
    };
    match action {
        CertAction::Add { purpose, file } => {
            let c = store(purpose)?.add(&file, now).map_err(|e| e.to_string())?;
            print!("added: ");
            show(&c);
        }
        CertAction::List { purpose } => {
            let certs = store(purpose)?.load(now).map_err(|e| e.to_string())?;
            for c in &certs {
                show(c);
            }
            println!("{} of {} certificates", certs.len(), trust::MAX_PHONE_EDGE_TRUST);
        }
        CertAction::Remove { purpose, id } => {
            let c = store(purpose)?.remove(&id).map_err(|e| e.to_string())?;
            print!("removed: ");
            show(&c);
        }
    }
    Ok(ExitCode::SUCCESS)
}
