//! `sipcfg check`: everything a start would load (keys, certificates, inventory, templates, trust stores),
//! every device rendered, whether Phone-Edge-Trust holds the issuer of the server certificate, and the
//! certificates' validity; every problem reported, not only the first.

use crate::app::certificates::Certificates;
use crate::app::{check_server_trusted, edge_tls};
use crate::auth::signer::Signer;
use crate::auth::token::Verifier;
use crate::config::Config;
use crate::provision::deployment::{Held, Sources};
use crate::provision::inventory::Inventory;
use crate::provision::trust::{self, Purpose, ServerChain, TrustStore};
use crate::tls;
use crate::util::time::{Time, unix_now};

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct Report {
    /// Device configurations that rendered.
    pub rendered: usize,
    /// Problems that would stop a start or a reload, or a phone from getting its file.
    pub errors: Vec<String>,
    /// Problems to fix soon (certificates ending within `admin.cert_warn_days`).
    pub warnings: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks the deployment `config` describes, its inventory and certificate stores as `held`.
pub fn check(config: &Config, held: Held<'_>) -> Report {
    let mut report = Report::default();
    let errors = &mut report.errors;
    if let Err(e) = Verifier::from_config(&config.auth) {
        errors.push(e.to_string());
    }
    if config.auth.signing.is_some()
        && let Err(e) = Signer::from_config(&config.auth)
    {
        errors.push(e.to_string());
    }
    if let Err(e) = tls::server_config(&config.tls) {
        errors.push(e.to_string());
    }
    let now = unix_now() as Time;
    let tomcat_trust = match edge_tls(config, held, now) {
        Ok((_, certs)) => certs,
        Err(e) => {
            errors.push(e.to_string());
            Vec::new()
        }
    };
    if config.edge.is_none()
        && config.store.is_none()
        && let Some(dir) = &config.trust.tomcat_trust
    {
        report.warnings.push(format!(
            "{}: trust.tomcat_trust is set, but without an [edge] section no listener uses it",
            dir.display()
        ));
    }
    let loaded = match held.load(&Sources::from_config(config)) {
        Ok(loaded) => loaded,
        Err(load_errors) => {
            errors
                .extend(load_errors.iter().flat_map(|e| e.to_string().lines().map(str::to_owned).collect::<Vec<_>>()));
            return report;
        }
    };
    // Only when the chain reads: otherwise the [tls] error above says why.
    if let Ok(chain) = tls::load_certificates(&config.tls.certificate)
        && let Err(e) = check_server_trusted(config, &chain, &loaded, now)
    {
        errors.push(e.to_string());
    }
    let (inventory, templates, trust) = (&loaded.inventory, &loaded.templates, &loaded.phone_edge_trust);
    let templates_dir = config.inventory.templates.display();
    for name in inventory.device_names_sorted() {
        match templates.render(inventory, &inventory.devices[name], trust) {
            Ok(_) => report.rendered += 1,
            Err(e) => errors.push(format!("{templates_dir}: {e}")),
        }
    }
    if let Err(e) = templates.render_default(inventory, trust) {
        errors.push(format!("{templates_dir}: {e}"));
    }
    if inventory.cluster.sip_oauth_mode {
        let missing = crate::app::oauth_order::before_the_switch(config, inventory, trust);
        let steps = missing.blocking.iter().chain(&missing.advice);
        report.warnings.extend(steps.map(|step| format!("SIP OAuth mode is enabled, but {step}")));
    }
    for c in trust.iter().filter(|c| c.is_expired(now)) {
        errors.push(format!("Phone-Edge-Trust certificate {} ({}) has expired", c.sha256, c.subject));
    }
    // The server chain and the edge client CA: expired is an error, expiring soon a warning.
    let certificates = Certificates::of(config, &[], &tomcat_trust);
    for (expired, line) in certificates.warnings(now, config.admin.cert_warn_days) {
        if expired {
            errors.push(format!("certificate expired: {line}"));
        } else {
            report.warnings.push(format!("certificate expires soon: {line}"));
        }
    }
    for c in trust.iter().filter(|c| !c.is_expired(now)) {
        let days = (c.not_after - now) / 86_400;
        if days < i64::from(config.admin.cert_warn_days) {
            report
                .warnings
                .push(format!("Phone-Edge-Trust certificate {} ({}) expires in {days} days", c.sha256, c.subject));
        }
    }
    report
}

/// Whether Phone-Edge-Trust lacks the issuer of the server certificate while OAuth devices exist, read now
/// from where the deployment is `held` (for `sipcfg cert add|remove`, which cannot know what else the change
/// needs). `None` when it holds it, or when something does not load: `sipcfg check` reports that.
pub fn phone_edge_trust_problem(config: &Config, held: Held<'_>) -> Option<String> {
    let now = unix_now() as Time;
    let chain = tls::load_certificates(&config.tls.certificate).ok()?;
    let (inventory, store, dir) = match held {
        Held::Files => {
            let inventory = Inventory::load(&config.inventory.file).ok()?;
            let dir = config.trust.phone_edge_trust.clone();
            let store = match &dir {
                Some(dir) => TrustStore::new(Purpose::PhoneEdgeTrust, dir).load(now).ok()?,
                None => Vec::new(),
            };
            (inventory, store, dir)
        }
        Held::Stored { origin, deployment } => {
            let inventory = Inventory::from_doc(origin, deployment.inventory.clone()).ok()?;
            let location = origin.join("phone-edge-trust");
            let store =
                trust::load_stored(Purpose::PhoneEdgeTrust, &location, &deployment.phone_edge_trust, now).ok()?;
            (inventory, store.into_iter().map(|(_, c)| c).collect(), Some(location))
        }
    };
    let server = ServerChain { file: &config.tls.certificate, certs: &chain };
    trust::check_phone_edge_trust(&config.path, server, dir.as_deref(), &store, &inventory, now)
        .err()
        .map(|e| e.to_string())
}
