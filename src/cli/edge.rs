//! `sipcfg edge`: the Expressway-C proxies admitted on the edge listener (CUCM's Device > Expressway-C).

use std::process::ExitCode;

use clap::Subcommand;

use crate::cli::{ConfigArg, load_config};
use crate::config::{Config, EdgeConfig};
use crate::provision::trust::{Purpose, TrustStore};
use crate::util::time::{Time, unix_now};

#[derive(Subcommand, Debug)]
pub enum EdgeAction {
    /// List the configured Expressway-C proxies and the names their client certificates must carry.
    ///
    /// For each proxy: host, description, and each subject name with where a certificate must carry it (a
    /// DNS name as a DNS SAN or the subject CN, an IP address as an IP address SAN); then what the
    /// certificates must chain to (the Tomcat-trust store, edge.client_ca).
    List,
}

pub(crate) fn edge(arg: &ConfigArg, action: EdgeAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    match action {
        EdgeAction::List => match &config.edge {
            Some(edge) => print!("{}", list(&config, edge)),
            None => println!(
                "{}: no [edge] section: the edge listener is off and no Expressway-C is admitted",
                config.path.display()
            ),
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// What `edge list` prints.
fn list(config: &Config, edge: &EdgeConfig) -> String {
    let mut out = String::new();
    for proxy in &edge.proxies {
        let description =
            if proxy.description.is_empty() { String::new() } else { format!(" ({})", proxy.description) };
        out.push_str(&format!("proxy {}{description}\n", proxy.host));
        let from_host = if proxy.subject_names.is_empty() { " (the host)" } else { "" };
        for (name, how) in proxy.names().zip(proxy.match_names()) {
            out.push_str(&format!("  subject name {name}{from_host}: matched by {}\n", how.matched_by()));
        }
    }
    let mut trusted = Vec::new();
    if let Some(dir) = &config.trust.tomcat_trust {
        let held = match TrustStore::new(Purpose::TomcatTrust, dir.clone()).load(unix_now() as Time) {
            Ok(certs) => plural(certs.len(), "certificate"),
            Err(e) => format!("cannot be read: {e}"),
        };
        trusted.push(format!("the Tomcat-trust store {} ({held})", dir.display()));
    }
    if let Some(file) = &edge.client_ca {
        trusted.push(format!("edge.client_ca {}", file.display()));
    }
    out.push_str(&format!(
        "{} on the edge listener {}; their client certificates must chain to {}\n",
        plural(edge.proxies.len(), "proxy"),
        edge.listen,
        trusted.join(" or ")
    ));
    out
}

/// `1 proxy`, `3 proxies`, `2 certificates`.
fn plural(n: usize, one: &str) -> String {
    match (n, one.strip_suffix('y')) {
        (1, _) => format!("1 {one}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {one}s"),
    }
}
