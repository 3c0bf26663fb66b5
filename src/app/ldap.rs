//! Users from the directory (`[ldap]`): end users synchronised from LDAP or Active Directory, as CUCM's LDAP
//! directory sync does. A sync reads the directory (one bind, one subtree search), compares it with the
//! inventory's users and writes the difference where the inventory lives (its file or the shared store):
//!
//! - a directory user not in the inventory is added, marked `source = "ldap"`;
//! - a synchronised user whose directory entry changed is updated (and enabled again if it was disabled);
//! - a synchronised user gone from the directory (or out of the filter) is disabled while it owns devices
//!   (its devices keep their owner; its tokens open nothing) and removed once it owns none; either way its
//!   tokens are revoked;
//! - a user made by hand (no `source`) is never changed, disabled or removed by a sync, even when the
//!   directory has a user of the same id (add `source = "ldap"` to hand it over to the directory).
//!
//! A sync that fails (server unreachable, bind refused, bad filter) changes nothing. So does a directory that
//! returns no user at all while the inventory has synchronised users: that is taken for a mistake (a wrong
//! base DN or filter), not for everyone having left.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use crate::app::site::{Site, SiteError};
use crate::auth::service::TokenService;
use crate::config::{Config, LdapConfig};
use crate::provision::edit::Edits;
use crate::provision::inventory::{Inventory, SOURCE_LDAP, UserDoc};
use crate::provision::subject::Subject;
use crate::util::stop::Stop;
use crate::util::time::{Time, unix_now};

/// The log target of directory syncs.
pub const LOG: &str = "sipcfg::ldap";

#[derive(Debug, thiserror::Error)]
pub enum LdapSyncError {
    #[error("{url}: cannot read the bind password file {path}: {source}")]
    PasswordFile { url: String, path: std::path::PathBuf, source: std::io::Error },
    #[error("{url}: TLS setup: {message}")]
    Tls { url: String, message: String },
    #[error("{url}: cannot connect (within {secs} s): {message}")]
    Connect { url: String, secs: u64, message: String },
    #[error("{url}: bind as {dn:?} refused: {message}")]
    Bind { url: String, dn: String, message: String },
    #[error("{url}: search of {base:?} with filter {filter} failed: {message}")]
    Search { url: String, base: String, filter: String, message: String },
    #[error(
        "{url}: the search of {base:?} with filter {filter} returned no user, but the inventory has {synced} from \
         the directory: taken for a mistake (base_dn or filter), nothing is changed"
    )]
    Empty { url: String, base: String, filter: String, synced: usize },
    #[error("nothing written: {0}")]
    Write(#[from] SiteError),
}

/// A user as the directory has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub id: String,
    pub dn: String,
    pub doc: UserDoc,
}

/// Reads the users of the directory: binds (as `bind_dn`, or anonymously), searches `base_dn` (subtree) with
/// `filter`. Each step is bounded by `timeout_secs`. Entries without the user-id attribute are skipped (and
/// logged); the first of entries with the same id is kept.
pub async fn read_directory(l: &LdapConfig) -> Result<Vec<DirectoryUser>, LdapSyncError> {
    let url = l.url.clone();
    let timeout = l.timeout();
    let password = match &l.bind_password_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| LdapSyncError::PasswordFile {
                url: url.clone(),
                path: path.clone(),
                source,
            })?;
            text.lines().next().unwrap_or("").to_owned()
        }
        None => String::new(),
    };
    let mut settings = LdapConnSettings::new().set_conn_timeout(timeout).set_starttls(l.starttls);
    if l.url.to_ascii_lowercase().starts_with("ldaps://") || l.starttls {
        settings = settings.set_config(Arc::new(tls_config(l)?));
    }
    let connect_error = |message: String| LdapSyncError::Connect { url: url.clone(), secs: l.timeout_secs, message };
    // The connection (TCP, then TLS or StartTLS) in one bound, whatever the library bounds itself.
    let (conn, mut ldap) = tokio::time::timeout(timeout, LdapConnAsync::with_settings(settings, &l.url))
        .await
        .map_err(|_| connect_error("timed out".into()))?
        .map_err(|e| connect_error(e.to_string()))?;
    ldap3::drive!(conn);
    let dn = l.bind_dn.clone().unwrap_or_default();
    let bound = ldap.with_timeout(timeout).simple_bind(&dn, &password).await.and_then(|r| r.success());
    if let Err(e) = bound {
        let hint = match &e {
            ldap3::LdapError::LdapResult { result } if result.rc == 49 => {
                " (wrong DN or password: check ldap.bind_dn and the password in ldap.bind_password_file)"
            }
            _ => "",
        };
        return Err(LdapSyncError::Bind {
            url,
            dn: if dn.is_empty() { "(anonymous)".into() } else { dn },
            message: format!("{e}{hint}"),
        });
    }
    let a = &l.attributes;
    let wanted: Vec<&str> = [&a.user_id, &a.name, &a.mail, &a.telephone, &a.department]
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(String::as_str)
        .collect();
    let found = ldap
        .with_timeout(timeout)
        .search(&l.base_dn, Scope::Subtree, &l.filter, wanted)
        .await
        .and_then(|r| r.success());
    let _ = ldap.unbind().await;
    let (entries, _) = found.map_err(|e| LdapSyncError::Search {
        url: url.clone(),
        base: l.base_dn.clone(),
        filter: l.filter.clone(),
        message: e.to_string(),
    })?;
    let mut users: BTreeMap<String, DirectoryUser> = BTreeMap::new();
    for entry in entries {
        let entry = SearchEntry::construct(entry);
        let attrs: HashMap<String, Vec<String>> =
            entry.attrs.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        let first = |name: &str| -> String {
            if name.is_empty() {
                return String::new();
            }
            attrs
                .get(&name.to_ascii_lowercase())
                .and_then(|v| v.first())
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let id = first(&a.user_id);
        if id.is_empty() {
            tracing::warn!(target: LOG, dn = entry.dn, attribute = a.user_id, "directory entry without a user id: skipped");
            continue;
        }
        let name = first(&a.name);
        let mut doc = UserDoc::new(if name.is_empty() { id.clone() } else { name }, first(&a.department));
        doc.mail = first(&a.mail);
        doc.telephone = first(&a.telephone);
        doc.source = SOURCE_LDAP.into();
        if let Some(other) = users.get(&id) {
            tracing::warn!(target: LOG, id, dn = entry.dn, kept = other.dn, "two directory entries with one user id: the first is kept");
            continue;
        }
        users.insert(id.clone(), DirectoryUser { id, dn: entry.dn, doc });
    }
    Ok(users.into_values().collect())
}

/// The rustls client configuration for the directory: aws-lc-rs, the CAs of `ca_file` or else the system's.
fn tls_config(l: &LdapConfig) -> Result<rustls::ClientConfig, LdapSyncError> {
    let tls = |message: String| LdapSyncError::Tls { url: l.url.clone(), message };
    let mut roots = rustls::RootCertStore::empty();
    match &l.ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| tls(format!("ldap.ca_file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(tls(format!("ldap.ca_file {}: no certificate in it", path.display())));
            }
            for c in certs {
                roots.add(c).map_err(|e| tls(format!("ldap.ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// What a sync changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// Directory users read.
    pub read: usize,
    pub added: Vec<String>,
    pub updated: Vec<String>,
    /// Gone from the directory, kept (disabled) because they own devices.
    pub disabled: Vec<String>,
    /// Gone from the directory, owning nothing: removed.
    pub removed: Vec<String>,
    /// Directory users whose id is a user made by hand: left as they are.
    pub skipped: Vec<String>,
    pub edits: Edits,
}

impl SyncPlan {
    pub fn is_empty(&self) -> bool {
        self.edits.is_empty()
    }
    /// Users whose tokens the sync revokes: the disabled and the removed.
    pub fn revoked(&self) -> impl Iterator<Item = &String> {
        self.disabled.iter().chain(&self.removed)
    }
    /// One line for the log and the audit trail.
    pub fn summary(&self) -> String {
        format!(
            "{} in the directory: {} added, {} updated, {} disabled, {} removed",
            self.read,
            self.added.len(),
            self.updated.len(),
            self.disabled.len(),
            self.removed.len()
        )
    }
    /// One line per change (`add jdoe "John Doe"`), for `sipcfg ldap sync`.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let docs: HashMap<&str, &UserDoc> =
            self.edits.users.iter().filter_map(|(id, d)| d.as_ref().map(|d| (id.as_str(), d))).collect();
        let name = |id: &str| docs.get(id).map(|d| format!(" {:?}", d.name)).unwrap_or_default();
        out.extend(self.added.iter().map(|id| format!("add     {id}{}", name(id))));
        out.extend(self.updated.iter().map(|id| format!("update  {id}{}", name(id))));
        out.extend(self.disabled.iter().map(|id| format!("disable {id} (gone from the directory; owns devices)")));
        out.extend(self.removed.iter().map(|id| format!("remove  {id} (gone from the directory; owns no device)")));
        out.extend(self.skipped.iter().map(|id| format!("skip    {id} (a user made by hand has this id)")));
        out
    }
}

/// Compares the directory with the inventory's users.
pub fn plan(l: &LdapConfig, inventory: &Inventory, directory: &[DirectoryUser]) -> Result<SyncPlan, LdapSyncError> {
    let synced: Vec<&str> =
        inventory.users.values().filter(|u| u.source == SOURCE_LDAP).map(|u| u.id.as_str()).collect();
    if directory.is_empty() && !synced.is_empty() {
        return Err(LdapSyncError::Empty {
            url: l.url.clone(),
            base: l.base_dn.clone(),
            filter: l.filter.clone(),
            synced: synced.len(),
        });
    }
    let mut plan = SyncPlan { read: directory.len(), ..SyncPlan::default() };
    let in_directory: HashMap<&str, &DirectoryUser> = directory.iter().map(|d| (d.id.as_str(), d)).collect();
    for d in directory {
        match inventory.users.get(&d.id) {
            None => {
                plan.added.push(d.id.clone());
                plan.edits.users.push((d.id.clone(), Some(d.doc.clone())));
            }
            Some(u) if u.source != SOURCE_LDAP => plan.skipped.push(d.id.clone()),
            Some(u) if u.doc != d.doc => {
                plan.updated.push(d.id.clone());
                plan.edits.users.push((d.id.clone(), Some(d.doc.clone())));
            }
            Some(_) => {}
        }
    }
    let mut owners: HashMap<&str, usize> = HashMap::new();
    for device in inventory.devices.values() {
        if let Some(o) = &device.owner {
            *owners.entry(o.as_str()).or_default() += 1;
        }
    }
    for id in synced {
        if in_directory.contains_key(id) {
            continue;
        }
        let user = &inventory.users[id];
        if owners.contains_key(id) {
            if user.enabled {
                plan.disabled.push(id.to_owned());
                plan.edits.users.push((id.to_owned(), Some(UserDoc { enabled: false, ..user.doc.clone() })));
            }
        } else {
            plan.removed.push(id.to_owned());
            plan.edits.users.push((id.to_owned(), None));
        }
    }
    Ok(plan)
}

/// Writes `plan` where the inventory lives (checked as a whole inventory first) and revokes the tokens of
/// the users it disables or removes (when there is a token service). Returns the subjects whose revocation
/// failed, each with its error.
pub async fn apply(
    site: &Site,
    config: &Config,
    plan: &SyncPlan,
    actor: &str,
    tokens: Option<&TokenService>,
) -> Result<Vec<String>, LdapSyncError> {
    if plan.is_empty() {
        return Ok(Vec::new());
    }
    site.edit_inventory(config, &plan.edits, actor, |_, _| Ok(())).await?;
    let mut failed = Vec::new();
    if let Some(service) = tokens {
        let now = unix_now() as Time;
        for id in plan.revoked() {
            if let Err(e) = service.revoke_subject(&Subject::User(id.clone()), now).await {
                failed.push(format!("user:{id}: {e}"));
            }
        }
    }
    Ok(failed)
}

/// The scheduled sync of a running server: once at start (in the background: the server serves meanwhile),
/// then every `interval_minutes`, until `stop`. Nothing when `[ldap]` is absent or `interval_minutes` is 0.
/// A failed sync is logged and changes nothing; the next one tries again.
pub async fn scheduled(app: Arc<crate::app::App>, mut stop: Stop) {
    let Some(l) = app.config().ldap.clone() else { return };
    if l.interval_minutes == 0 {
        return;
    }
    let every = Duration::from_secs(l.interval_minutes * 60);
    loop {
        let sync = sync_in_server(&app, &l);
        tokio::select! {
            () = stop.stopped() => return,
            () = sync => {}
        }
        tokio::select! {
            () = stop.stopped() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn sync_in_server(app: &crate::app::App, l: &LdapConfig) {
    let config = app.config();
    let actor = format!("ldap:{}", l.host());
    let outcome = async {
        let directory = read_directory(l).await?;
        let inventory = app.site().inventory(config).await?;
        let plan = plan(l, &inventory, &directory)?;
        let failed = apply(app.site(), config, &plan, &actor, app.token_service().map(|s| &**s)).await?;
        Ok::<_, LdapSyncError>((plan, failed))
    }
    .await;
    match outcome {
        Ok((plan, failed)) => {
            for f in &failed {
                tracing::error!(target: LOG, "the user is disabled or removed, but its tokens could not be revoked: {f}");
            }
            if plan.is_empty() {
                tracing::info!(target: LOG, url = l.url, read = plan.read, "directory sync: nothing to change");
                return;
            }
            tracing::info!(target: LOG, url = l.url, "directory sync: {}", plan.summary());
            if let Some(store) = app.accounts() {
                let event = crate::auth::accounts::AuditEvent {
                    at: unix_now() as Time,
                    actor: actor.clone(),
                    address: crate::app::site::host(),
                    action: "ldap.sync".into(),
                    target: l.url.clone(),
                    detail: plan.summary(),
                };
                if let Err(e) = store.audit(&event).await {
                    tracing::warn!(target: LOG, error = %e, "the sync is made, but it could not be recorded in the audit trail");
                }
            }
        }
        Err(e) => tracing::error!(target: LOG, "directory sync failed; the users stay as they are: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ldap() -> LdapConfig {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/example/sipcfg.toml")).unwrap()
            + "\n[ldap]\nurl = \"ldap://127.0.0.1:1\"\ninsecure = true\nbase_dn = \"dc=example,dc=test\"\n";
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/example/sipcfg.toml"));
        Config::parse(path, &text).unwrap().ldap.unwrap()
    }

    fn dir(id: &str, name: &str) -> DirectoryUser {
        let mut doc = UserDoc::new(name, "");
        doc.source = SOURCE_LDAP.into();
        DirectoryUser { id: id.into(), dn: format!("uid={id}"), doc }
    }

    #[test]
    fn a_plan_adds_updates_disables_removes_and_leaves_hand_made_users() {
        let l = ldap();
        let mut inventory =
            Inventory::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/example/inventory.toml")))
                .unwrap();
        // A user who owns devices and one who owns none come from the directory.
        let owner = inventory.devices.values().find_map(|d| d.owner.clone()).unwrap();
        let free = "gone".to_owned();
        let mut u = inventory.users[owner.as_str()].clone();
        u.doc.source = SOURCE_LDAP.into();
        inventory.users.insert(owner.clone(), u.clone());
        inventory
            .users
            .insert(free.clone(), crate::provision::inventory::User { id: free.clone(), doc: u.doc.clone() });
        let hand_made = inventory.users.keys().find(|id| **id != owner && **id != free).unwrap().clone();
        let p = plan(&l, &inventory, &[dir("newbie", "New Bie"), dir(&hand_made, "Other")]).unwrap();
        assert_eq!(p.added, vec!["newbie"]);
        assert_eq!(p.skipped, vec![hand_made.clone()]);
        assert_eq!(p.disabled, vec![owner.clone()]);
        assert_eq!(p.removed, vec![free.clone()]);
        assert_eq!(p.revoked().count(), 2);
        let disabled = p.edits.users.iter().find(|(id, _)| *id == owner).unwrap().1.clone().unwrap();
        assert!(!disabled.enabled && disabled.source == SOURCE_LDAP);
        // The same user with a new name: updated.
        let renamed = dir(&owner, "Renamed");
        let p = plan(&l, &inventory, &[renamed]).unwrap();
        assert_eq!(p.updated, vec![owner.clone()]);
        assert!(p.disabled.is_empty());
        // An empty directory is taken for a mistake.
        let e = plan(&l, &inventory, &[]).unwrap_err();
        assert!(e.to_string().contains("returned no user"), "{e}");
    }

    /// The new fields are left out at their defaults: existing inventory files and the shared store's JSON
    /// documents of users stay byte-identical.
    #[test]
    fn a_user_made_by_hand_serialises_as_before() {
        let u = UserDoc::new("John Smith", "Sales");
        assert_eq!(serde_json::to_string(&u).unwrap(), r#"{"name":"John Smith","department":"Sales"}"#);
        assert_eq!(toml::to_string(&u).unwrap(), "name = \"John Smith\"\ndepartment = \"Sales\"\n");
        let back: UserDoc = serde_json::from_str(r#"{"name":"x"}"#).unwrap();
        assert!(back.enabled && back.source.is_empty() && back.mail.is_empty());
        let off = UserDoc { enabled: false, source: SOURCE_LDAP.into(), ..u };
        let json = serde_json::to_string(&off).unwrap();
        assert!(json.contains(r#""source":"ldap","enabled":false"#), "{json}");
        assert_eq!(serde_json::from_str::<UserDoc>(&json).unwrap(), off);
    }

    #[test]
    fn the_url_host() {
        let mut l = ldap();
        for (url, host) in
            [("ldaps://dc1.example.com:636/", "dc1.example.com"), ("ldap://[::1]:389", "::1"), ("ldaps://h", "h")]
        {
            l.url = url.into();
            assert_eq!(l.host(), host);
        }
    }
}
