//! Cluster settings changed from the command line (CUCM's `utils sipOAuth-mode`, the "OAuth with Refresh
//! Login Flow" enterprise parameter, the SIP OAuth ports). They live in the inventory's `[cluster]` table,
//! which is edited in place (comments and layout kept), checked as a whole inventory before it is written,
//! and written atomically. A running server picks the change up by its file watch.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, value};

use crate::provision::inventory::{Cluster, Inventory, InventoryErrors};
use crate::util::fsutil::atomic_write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterChange {
    SipOAuthMode(bool),
    RefreshLoginFlow(bool),
    SipOAuthPort(u16),
    SipMraOAuthPort(u16),
    AccessTokenMinutes(u32),
    RefreshTokenDays(u32),
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: cannot read or write: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: has no [cluster] table")]
    NoCluster { path: PathBuf },
    #[error("the change was not written, the inventory would be invalid:\n{0}")]
    Invalid(InventoryErrors),
}

/// Applies `changes` to the inventory at `path` and returns the cluster as it now is.
pub fn apply(path: &Path, changes: &[ClusterChange]) -> Result<Cluster, SettingsError> {
    let io = |source| SettingsError::Io { path: path.to_owned(), source };
    let text = std::fs::read_to_string(path).map_err(io)?;
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| SettingsError::Syntax { path: path.to_owned(), message: e.to_string() })?;
    let cluster = doc
        .get_mut("cluster")
        .and_then(|c| c.as_table_mut())
        .ok_or_else(|| SettingsError::NoCluster { path: path.to_owned() })?;
    for change in changes {
        match *change {
            ClusterChange::SipOAuthMode(on) => cluster["sip_oauth_mode"] = value(on),
            ClusterChange::RefreshLoginFlow(on) => cluster["refresh_login_flow"] = value(on),
            ClusterChange::SipOAuthPort(p) => cluster["sip_oauth_port"] = value(i64::from(p)),
            ClusterChange::SipMraOAuthPort(p) => cluster["sip_mra_oauth_port"] = value(i64::from(p)),
            ClusterChange::AccessTokenMinutes(m) => cluster["access_token_minutes"] = value(i64::from(m)),
            ClusterChange::RefreshTokenDays(d) => cluster["refresh_token_days"] = value(i64::from(d)),
        }
    }
    let new_text = doc.to_string();
    let inventory = Inventory::parse(path, &new_text).map_err(SettingsError::Invalid)?;
    if new_text != text {
        atomic_write(path, new_text.as_bytes()).map_err(io)?;
    }
    Ok(inventory.cluster)
}

/// `changes` applied to the settings of `cluster` (for a store that holds documents; check the result as a
/// whole inventory before writing it).
pub fn apply_to(cluster: &mut Cluster, changes: &[ClusterChange]) {
    for change in changes {
        match *change {
            ClusterChange::SipOAuthMode(on) => cluster.sip_oauth_mode = on,
            ClusterChange::RefreshLoginFlow(on) => cluster.refresh_login_flow = on,
            ClusterChange::SipOAuthPort(p) => cluster.sip_oauth_port = p,
            ClusterChange::SipMraOAuthPort(p) => cluster.sip_mra_oauth_port = p,
            ClusterChange::AccessTokenMinutes(m) => cluster.access_token_minutes = m,
            ClusterChange::RefreshTokenDays(d) => cluster.refresh_token_days = d,
        }
    }
}

/// The cluster settings as an administrator reads them. The OAuth ports are the cluster's, which every call
/// manager uses unless it sets its own: such a node gets a line with the ports in force on it.
pub fn describe(cluster: &Cluster) -> String {
    let on = |b: bool| if b { "enabled" } else { "disabled" };
    let mut text = format!(
        "SIP OAuth mode: {}\nOAuth with refresh login flow: {}\nSIP phone OAuth port: {}\nSIP MRA OAuth port: {}\n",
        on(cluster.sip_oauth_mode),
        on(cluster.refresh_login_flow),
        cluster.sip_oauth_port,
        cluster.sip_mra_oauth_port,
    );
    for cm in cluster.call_managers.iter().filter(|cm| cm.overrides_oauth_ports()) {
        let ports = cm.oauth_ports(cluster);
        let whose = |own: Option<u16>| if own.is_some() { "its own" } else { "the cluster's" };
        text.push_str(&format!(
            "  call manager {:?} ({}): SIP phone OAuth port {} ({}), SIP MRA OAuth port {} ({})\n",
            cm.label(),
            cm.address,
            ports.sip,
            whose(cm.sip_oauth_port),
            ports.mra,
            whose(cm.sip_mra_oauth_port),
        ));
    }
    text.push_str(&format!(
        "Access token expiry: {} minutes\nRefresh token expiry: {} days\n",
        cluster.access_token_minutes, cluster.refresh_token_days
    ));
    text
}
