//! What the management API and the web console do, without HTTP: list and change devices and users, create
//! and revoke activation codes, revoke tokens, report each device's status, read the audit trail. Every
//! change is checked as a whole inventory before it is written, put in force on this node at once (the
//! other nodes follow through the store), and audited with who made it and from where.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use crate::app::App;
use crate::app::activity::Download;
use crate::app::pools::{self, PoolEntry, PoolError};
use crate::app::site::SiteError;
use crate::auth::accounts::{AuditEntry, AuditEvent, Role};
use crate::auth::service::{GrantError, ServiceError, UNKNOWN_CODE};
use crate::auth::store::{ActivationCode, Family, StoreError};
use crate::provision::edit::Edits;
use crate::provision::filename::DeviceName;
use crate::provision::inventory::{
    BlfSpeedDial, Device, DeviceDoc, Inventory, Line, Profile, ProfileDoc, ServiceUrls, SpeedDial, User, UserDoc,
};
use crate::provision::model::Prefix;
use crate::provision::settings::ClusterChange;
use crate::provision::subject::Subject;
use crate::provision::trust::Purpose as TrustPurpose;
use crate::util::time::{Time, unix_now};

/// The longest page a list answers.
pub const MAX_PAGE: usize = 500;
/// A page's length when the caller does not say.
pub const DEFAULT_PAGE: usize = 50;
/// An activation code's validity when the caller does not say (as `sipcfg activation-code create`).
pub const DEFAULT_CODE_DAYS: u32 = 7;
/// The most codes one bulk request creates.
pub const MAX_BULK_CODES: usize = 5000;

/// Who asks, for permissions and the audit trail.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The account's name.
    pub name: String,
    pub role: Role,
    /// The client's address.
    pub address: String,
}

impl Caller {
    fn actor(&self) -> String {
        format!("admin:{}", self.name)
    }

    fn may_change(&self) -> Result<(), ManageError> {
        if self.role.can_change() {
            Ok(())
        } else {
            Err(ManageError::Forbidden(format!("the account {:?} is read-only: it cannot change anything", self.name)))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The change would make the inventory invalid: each problem, as `check` words it.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<SiteError> for ManageError {
    fn from(e: SiteError) -> ManageError {
        match e {
            SiteError::Inventory(errors) => ManageError::Invalid(
                errors
                    .0
                    .iter()
                    .map(|e| if e.entry.is_empty() { e.message.clone() } else { format!("{}: {}", e.entry, e.message) })
                    .collect(),
            ),
            SiteError::Store(e) => e.into(),
            SiteError::Changed(_) | SiteError::NotWritable { .. } => ManageError::Conflict(e.to_string()),
            SiteError::Settings(crate::provision::settings::SettingsError::Invalid(errors)) => {
                ManageError::Invalid(errors.0.iter().map(|e| format!("{}: {}", e.entry, e.message)).collect())
            }
            other => ManageError::Internal(other.to_string()),
        }
    }
}

impl From<PoolError> for ManageError {
    fn from(e: PoolError) -> ManageError {
        match e {
            PoolError::NotFound(m) => ManageError::NotFound(m),
            PoolError::InUse(m) | PoolError::Exists(m) => ManageError::Conflict(m),
            PoolError::BadName(m) => ManageError::BadRequest(m),
            PoolError::Site(e) => e.into(),
        }
    }
}

impl From<StoreError> for ManageError {
    fn from(e: StoreError) -> ManageError {
        if e.is_unavailable() {
            ManageError::Unavailable(e.to_string())
        } else if matches!(&e, StoreError::Shared { message, .. } if message == crate::store::postgres::CONFLICT) {
            ManageError::Conflict(e.to_string())
        } else {
            ManageError::Internal(e.to_string())
        }
    }
}

impl From<ServiceError> for ManageError {
    fn from(e: ServiceError) -> ManageError {
        match e {
            ServiceError::Store(e) => e.into(),
            other => ManageError::Internal(other.to_string()),
        }
    }
}

/// A device's state, as the console shows it and lists filter it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceStatus {
    /// Not enabled: gets no file.
    Disabled,
    /// A refresh-token family is live: the phone has onboarded.
    Onboarded,
    /// An activation code waits to be redeemed.
    CodeOutstanding,
    /// Neither onboarded nor given a code (and not downloaded here).
    New,
}

impl DeviceStatus {
    pub const ALL: [DeviceStatus; 4] =
        [DeviceStatus::Disabled, DeviceStatus::Onboarded, DeviceStatus::CodeOutstanding, DeviceStatus::New];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Disabled => "disabled",
            DeviceStatus::Onboarded => "onboarded",
            DeviceStatus::CodeOutstanding => "code-outstanding",
            DeviceStatus::New => "new",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceStatus> {
        DeviceStatus::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// A device as lists show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceSummary {
    pub name: String,
    pub model: String,
    pub profile: String,
    /// Its device pool; none: the cluster's settings.
    pub pool: Option<String>,
    pub owner: Option<String>,
    pub description: String,
    pub enabled: bool,
    pub status: DeviceStatus,
    /// When it last downloaded a file from any node (Unix seconds), if it did.
    pub last_download: Option<Time>,
}

/// A device with everything the console's device page shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub summary: DeviceSummary,
    pub owner_name: Option<String>,
    pub lines: Vec<Line>,
    /// Its buttons after the lines, and its key expansion modules (as `PUT` takes them).
    pub speed_dials: Vec<SpeedDial>,
    pub blf_speed_dials: Vec<BlfSpeedDial>,
    pub key_expansion_modules: usize,
    /// Its own phone service URLs (as `PUT` takes them); what its file carries is these, else its pool's,
    /// else the cluster's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceUrls>,
    pub allow_activation_code_via_mra: bool,
    pub mra_service_domain: String,
    /// Whether its profile uses OAuth (its file only to its token).
    pub oauth: bool,
    /// The file it downloads.
    pub file: String,
    /// A Jabber client: it signs in with its owner's tokens, so revoking them is how to shut it out.
    pub uses_owner_tokens: bool,
}

/// What `GET /api/v1/devices/{name}/status` answers.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceState {
    pub name: String,
    pub status: DeviceStatus,
    /// Its last download from any node (for a Jabber client, its owner's).
    pub last_download: Option<Download>,
    /// Its first grant (activation code) and last refresh: the newest family's creation and last change.
    pub last_grant: Option<Time>,
    pub last_refresh: Option<Time>,
    pub outstanding_codes: Vec<CodeView>,
    pub families: Vec<Family>,
}

/// An activation code as listed (never the code).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CodeView {
    pub id: String,
    pub device: String,
    pub created: Time,
    pub expires: Time,
    /// `usable`, `used`, `revoked` or `expired`.
    pub state: &'static str,
}

impl CodeView {
    fn of(c: &ActivationCode, now: Time) -> CodeView {
        CodeView {
            id: c.id.clone(),
            device: c.device.clone(),
            created: c.created,
            expires: c.expires,
            state: c.state(now),
        }
    }
}

/// A new activation code: shown once, with its QR code.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewCode {
    pub id: String,
    pub device: String,
    pub owner: Option<String>,
    pub code: String,
    pub expires: Time,
    /// The code as a QR code (SVG), for the phone's camera.
    pub qr_svg: String,
}

/// One page of a list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// How many match in all.
    pub total: usize,
    /// Where the next page starts (`offset`), if there is one.
    pub next_offset: Option<usize>,
}

/// How a list is asked for.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    /// Matches the name, owner (id or name), model or description, case-insensitively.
    pub search: Option<String>,
    pub status: Option<DeviceStatus>,
    pub offset: usize,
    pub limit: Option<usize>,
}

/// Counts for the dashboard.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub devices: usize,
    pub by_status: HashMap<&'static str, usize>,
    /// Enabled devices no node has seen downloading.
    pub never_downloaded: usize,
    /// Enabled devices whose last download is older than `stale_days`.
    pub not_seen: usize,
    pub stale_days: u32,
    pub users: usize,
    pub sip_oauth_mode: bool,
    pub refresh_login_flow: bool,
}

/// A device pool, a CM group or a date/time group as the API shows it: its name, its keys as the inventory
/// stores them, and what uses it (so that a removal's refusal comes as no surprise).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PoolView<T> {
    pub name: String,
    #[serde(flatten)]
    pub doc: T,
    /// A device pool: how many devices name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<usize>,
    /// A CM group or a date/time group: the device pools that name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_pools: Option<Vec<String>>,
}

impl<T: PoolEntry> PoolView<T> {
    fn of(inventory: &Inventory, name: &str, doc: &T) -> PoolView<T> {
        let users = pools::users_of(inventory, T::KIND, name);
        let (devices, device_pools) = match T::KIND {
            pools::PoolKind::DevicePool => (Some(users.len()), None),
            _ => (None, Some(users)),
        };
        PoolView { name: name.to_owned(), doc: doc.clone(), devices, device_pools }
    }
}

/// A device as the API takes it: the inventory's fields (`model` and `profile` required).
pub type DeviceInput = DeviceDoc;

/// The management operations of a node.
pub struct Manager<'a> {
    app: &'a App,
}

impl App {
    pub fn manage(&self) -> Manager<'_> {
        Manager { app: self }
    }
}

fn page<T>(items: Vec<T>, offset: usize, limit: Option<usize>) -> Page<T> {
    let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let total = items.len();
    let items: Vec<T> = items.into_iter().skip(offset).take(limit).collect();
    let next_offset = (offset + items.len() < total).then_some(offset + items.len());
    Page { items, total, next_offset }
}

fn device_name(name: &str) -> Result<DeviceName, ManageError> {
    DeviceName::parse_loose(name).map_err(|e| ManageError::NotFound(format!("no device named {name:?} ({e})")))
}

fn no_device(name: &str) -> ManageError {
    ManageError::NotFound(format!("no device named {name:?}"))
}

/// What the token store says of every device, for statuses: subjects with a live family, devices with a
/// usable code.
struct TokenFacts {
    live: HashSet<String>,
    codes: HashSet<String>,
    /// When each subject last downloaded, as every node recorded it.
    seen: HashMap<String, Time>,
}

impl<'a> Manager<'a> {
    fn now() -> Time {
        unix_now() as Time
    }

    fn inventory(&self) -> std::sync::Arc<crate::provision::deployment::Deployment> {
        self.app.provisioner().current()
    }

    async fn token_facts(&self, now: Time) -> Result<TokenFacts, ManageError> {
        let seen = match self.app.accounts() {
            Some(store) => store.downloads_seen().await?,
            None => HashMap::new(),
        };
        let Some(service) = self.app.token_service() else {
            return Ok(TokenFacts { live: HashSet::new(), codes: HashSet::new(), seen });
        };
        let families = service.store().families(None, now).await?;
        let codes = service.store().list_activation_codes().await?;
        Ok(TokenFacts {
            live: families.into_iter().filter(|f| f.state == "live").map(|f| f.subject).collect(),
            codes: codes.iter().filter(|c| c.is_usable(now)).map(|c| c.device.clone()).collect(),
            seen,
        })
    }

    fn status_of(device: &Device, facts: &TokenFacts) -> DeviceStatus {
        if !device.enabled {
            DeviceStatus::Disabled
        } else if facts.live.contains(&format!("device:{}", device.name))
            || device.owner.as_ref().is_some_and(|o| {
                device.phone_type.prefix != crate::provision::model::Prefix::Sep
                    && facts.live.contains(&format!("user:{o}"))
            })
        {
            DeviceStatus::Onboarded
        } else if facts.codes.contains(device.name.as_str()) {
            DeviceStatus::CodeOutstanding
        } else {
            DeviceStatus::New
        }
    }

    /// The subjects whose downloads count as a device's: its own, and its owner's for a Jabber client.
    fn subjects_of(device: &Device) -> Vec<Subject> {
        let mut subjects = vec![Subject::Device(device.name.clone())];
        if device.phone_type.prefix != crate::provision::model::Prefix::Sep
            && let Some(owner) = &device.owner
        {
            subjects.push(Subject::User(owner.clone()));
        }
        subjects
    }

    /// The device's last download seen here, or recorded by any node (the newest).
    async fn last_download(&self, device: &Device) -> Result<Option<Download>, ManageError> {
        let mut newest = self.local_download(device);
        if let Some(store) = self.app.accounts() {
            for subject in Self::subjects_of(device) {
                if let Some(d) = store.last_download(&subject.to_string()).await?
                    && newest.as_ref().is_none_or(|n| d.at > n.at)
                {
                    newest = Some(d);
                }
            }
        }
        Ok(newest)
    }

    fn local_download(&self, device: &Device) -> Option<Download> {
        Self::subjects_of(device).iter().filter_map(|s| self.app.activity().last(s)).max_by_key(|d| d.at)
    }

    /// When the device last downloaded: here (memory) or on any node (the store's record).
    fn last_seen(&self, device: &Device, facts: &TokenFacts) -> Option<Time> {
        let stored = Self::subjects_of(device).iter().filter_map(|s| facts.seen.get(&s.to_string()).copied()).max();
        let local = self.local_download(device).map(|d| d.at);
        stored.max(local)
    }

    fn summary_of(&self, device: &Device, facts: &TokenFacts) -> DeviceSummary {
        DeviceSummary {
            name: device.name.to_string(),
            model: device.phone_type.name.to_owned(),
            profile: device.profile.clone(),
            pool: device.pool.clone(),
            owner: device.owner.clone(),
            description: device.description.clone(),
            enabled: device.enabled,
            status: Self::status_of(device, facts),
            last_download: self.last_seen(device, facts),
        }
    }

    pub async fn devices(&self, query: &DeviceQuery) -> Result<Page<DeviceSummary>, ManageError> {
        let now = Self::now();
        let deployment = self.inventory();
        let inventory = &deployment.inventory;
        let facts = self.token_facts(now).await?;
        let needle = query.search.as_deref().map(str::to_lowercase).filter(|s| !s.is_empty());
        let matches = |d: &Device| {
            let Some(n) = &needle else { return true };
            let owner_name = inventory.owner_of(d).map(|u| u.name.to_lowercase()).unwrap_or_default();
            d.name.as_str().to_lowercase().contains(n)
                || d.owner.as_deref().is_some_and(|o| o.to_lowercase().contains(n))
                || owner_name.contains(n)
                || d.phone_type.name.to_lowercase().contains(n)
                || d.description.to_lowercase().contains(n)
        };
        let mut items: Vec<DeviceSummary> = inventory
            .device_names_sorted()
            .into_iter()
            .filter_map(|name| inventory.device(name))
            .filter(|d| matches(d))
            .map(|d| self.summary_of(d, &facts))
            .filter(|s| query.status.is_none_or(|st| s.status == st))
            .collect();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(page(items, query.offset, query.limit))
    }

    pub async fn device(&self, name: &str) -> Result<DeviceDetail, ManageError> {
        let name = device_name(name)?;
        let deployment = self.inventory();
        let inventory = &deployment.inventory;
        let device = inventory.device(&name).ok_or_else(|| no_device(name.as_str()))?;
        let facts = self.token_facts(Self::now()).await?;
        Ok(self.detail(inventory, device, &facts))
    }

    fn detail(&self, inventory: &Inventory, device: &Device, facts: &TokenFacts) -> DeviceDetail {
        DeviceDetail {
            summary: self.summary_of(device, facts),
            owner_name: inventory.owner_of(device).map(|u| u.name.clone()),
            lines: device.lines.clone(),
            speed_dials: device.speed_dials.clone(),
            blf_speed_dials: device.blf_speed_dials.clone(),
            key_expansion_modules: device.key_expansion_modules,
            services: device.services.as_deref().cloned(),
            allow_activation_code_via_mra: device.allow_activation_code_via_mra,
            mra_service_domain: device.mra_service_domain.clone(),
            oauth: inventory.profile_of(device).is_some_and(|p| p.oauth),
            file: format!("{}.cnf.xml", device.name),
            uses_owner_tokens: device.phone_type.prefix != Prefix::Sep && device.owner.is_some(),
        }
    }

    /// The device's configuration file as this node serves it.
    pub async fn rendered(&self, name: &str) -> Result<String, ManageError> {
        let name = device_name(name)?;
        let deployment = self.inventory();
        let device = deployment.inventory.device(&name).ok_or_else(|| no_device(name.as_str()))?;
        deployment
            .templates
            .render(&deployment.inventory, device, &deployment.phone_edge_trust)
            .map_err(|e| ManageError::Internal(e.to_string()))
    }

    pub async fn device_state(&self, name: &str) -> Result<DeviceState, ManageError> {
        let now = Self::now();
        let name = device_name(name)?;
        let deployment = self.inventory();
        let device = deployment.inventory.device(&name).ok_or_else(|| no_device(name.as_str()))?;
        let facts = self.token_facts(now).await?;
        let (families, codes) = match self.app.token_service() {
            Some(service) => {
                let mut families = Vec::new();
                for subject in Self::subjects_of(device) {
                    families.extend(service.store().families(Some(&subject.to_string()), now).await?);
                }
                families.sort_by_key(|f| std::cmp::Reverse(f.created));
                let codes = service.store().list_activation_codes().await?;
                let codes = codes
                    .iter()
                    .filter(|c| c.device == name.as_str() && c.is_usable(now))
                    .map(|c| CodeView::of(c, now))
                    .collect();
                (families, codes)
            }
            None => (Vec::new(), Vec::new()),
        };
        Ok(DeviceState {
            name: name.to_string(),
            status: Self::status_of(device, &facts),
            last_download: self.last_download(device).await?,
            last_grant: families.first().map(|f| f.created),
            // A family that never rotated has no refresh yet (its change is its creation).
            last_refresh: families.iter().filter(|f| f.changed > f.created).map(|f| f.changed).max(),
            outstanding_codes: codes,
            families,
        })
    }

    /// Writes `edits`, puts the result in force on this node, and audits it.
    async fn write(
        &self,
        caller: &Caller,
        edits: Edits,
        action: &str,
        target: &str,
        detail: String,
        check: impl Fn(&Inventory, &Inventory) -> Result<(), SiteError>,
    ) -> Result<(), ManageError> {
        caller.may_change()?;
        let config = self.app.live();
        self.app.site().edit_inventory(&config, &edits, &caller.actor(), check).await?;
        self.put_in_force().await;
        self.audit(caller, action, target, detail).await;
        Ok(())
    }

    /// Puts what the store or the files now hold in force here, without waiting for the watch.
    async fn put_in_force(&self) {
        let now = Self::now();
        if self.app.site().shared().is_some() {
            if let Err(e) = self.app.sync_store(now).await {
                tracing::warn!(error = %e, "the change is written; this node applies it when the store is back");
            }
        } else if let Err(errors) = self.app.reload().await {
            for e in errors {
                tracing::error!(error = %e, "the change is written but the deployment did not reload");
            }
        }
    }

    async fn audit(&self, caller: &Caller, action: &str, target: &str, detail: String) {
        self.record(caller.actor(), &caller.address, action, target, detail).await;
    }

    /// Writes one event to the audit trail (and the log).
    async fn record(&self, actor: String, address: &str, action: &str, target: &str, detail: String) {
        let event = AuditEvent {
            at: Self::now(),
            actor,
            address: address.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
        };
        tracing::info!(target: "sipcfg::admin", actor = %event.actor, address = %event.address, action, target, "administrative change");
        match self.app.accounts() {
            Some(store) => {
                if let Err(e) = store.audit(&event).await {
                    tracing::error!(error = %e, action, target, "the change is made but could not be written to the audit trail");
                }
            }
            None => tracing::error!(action, target, "no store for the audit trail"),
        }
    }

    /// Creates a device (`replace` false: refused if it exists) or replaces it.
    pub async fn put_device(
        &self,
        caller: &Caller,
        name: &str,
        doc: DeviceInput,
        replace: bool,
    ) -> Result<(DeviceDetail, bool), ManageError> {
        let name =
            DeviceName::parse_loose(name).map_err(|e| ManageError::BadRequest(format!("device name {name:?}: {e}")))?;
        let existed = self.inventory().inventory.device(&name).is_some();
        if existed && !replace {
            return Err(ManageError::Conflict(format!(
                "a device named {name} exists: PUT /api/v1/devices/{name} changes it"
            )));
        }
        let n = name.clone();
        let action = if existed { "device.update" } else { "device.create" };
        self.write(
            caller,
            Edits::device(name.as_str(), Some(doc.clone())),
            action,
            name.as_str(),
            describe(&doc),
            move |before, _| {
                if !replace && before.device(&n).is_some() {
                    return Err(SiteError::Changed(PathBuf::from(n.as_str())));
                }
                Ok(())
            },
        )
        .await?;
        Ok((self.device(name.as_str()).await?, !existed))
    }

    /// Enables or disables a device.
    pub async fn set_enabled(&self, caller: &Caller, name: &str, enabled: bool) -> Result<DeviceDetail, ManageError> {
        let name = device_name(name)?;
        let deployment = self.inventory();
        let device = deployment.inventory.device(&name).ok_or_else(|| no_device(name.as_str()))?;
        let mut doc = device.to_doc();
        doc.enabled = enabled;
        let action = if enabled { "device.enable" } else { "device.disable" };
        self.write(
            caller,
            Edits::device(name.as_str(), Some(doc)),
            action,
            name.as_str(),
            String::new(),
            |_, _| Ok(()),
        )
        .await?;
        self.device(name.as_str()).await
    }

    /// Deletes a device, retires its activation codes and revokes its token families: a removed device can
    /// neither redeem an old code nor refresh.
    pub async fn delete_device(&self, caller: &Caller, name: &str) -> Result<(), ManageError> {
        let name = device_name(name)?;
        if self.inventory().inventory.device(&name).is_none() {
            return Err(no_device(name.as_str()));
        }
        caller.may_change()?;
        // Tokens first: a failure here leaves the device in place, to be deleted again.
        let retired = self.retire_tokens(&name).await?;
        let n = name.clone();
        self.write(
            caller,
            Edits::device(name.as_str(), None),
            "device.delete",
            name.as_str(),
            retired,
            move |before, _| {
                if before.device(&n).is_none() {
                    return Err(SiteError::Changed(PathBuf::from(n.as_str())));
                }
                Ok(())
            },
        )
        .await
    }

    async fn retire_tokens(&self, name: &DeviceName) -> Result<String, ManageError> {
        let Some(service) = self.app.token_service() else { return Ok(String::new()) };
        let now = Self::now();
        let revoked = service.retire_codes(name, now).await?;
        service.revoke_subject(&Subject::Device(name.clone()), now).await?;
        let _ = self.app.sync_tokens(now).await;
        Ok(format!("{revoked} activation code(s) retired, token families revoked"))
    }

    /// Creates an activation code for a device.
    pub async fn create_code(&self, caller: &Caller, name: &str, days: Option<u32>) -> Result<NewCode, ManageError> {
        caller.may_change()?;
        let days = days.unwrap_or(DEFAULT_CODE_DAYS);
        if !(1..=365).contains(&days) {
            return Err(ManageError::BadRequest(format!("valid_days {days}: give 1 to 365")));
        }
        let name = device_name(name)?;
        let deployment = self.inventory();
        let device = deployment.inventory.device(&name).ok_or_else(|| no_device(name.as_str()))?;
        let service = self.token_service()?;
        let now = Self::now();
        let (id, code) = service.create_activation_code(&name, now, i64::from(days) * 86_400).await?;
        self.audit(caller, "activation-code.create", name.as_str(), format!("code {id}, valid {days} day(s)")).await;
        Ok(NewCode {
            id,
            device: name.to_string(),
            owner: device.owner.clone(),
            qr_svg: qr_svg(&code),
            code,
            expires: now + i64::from(days) * 86_400,
        })
    }

    /// Creates a code for each device named (all must exist; nothing is created otherwise).
    pub async fn create_codes(
        &self,
        caller: &Caller,
        names: &[String],
        days: Option<u32>,
    ) -> Result<Vec<NewCode>, ManageError> {
        caller.may_change()?;
        if names.is_empty() || names.len() > MAX_BULK_CODES {
            return Err(ManageError::BadRequest(format!("give 1 to {MAX_BULK_CODES} devices")));
        }
        let deployment = self.inventory();
        let missing: Vec<String> = names
            .iter()
            .filter(|n| DeviceName::parse_loose(n).ok().and_then(|d| deployment.inventory.device(&d)).is_none())
            .map(|n| format!("no device named {n:?}"))
            .collect();
        if !missing.is_empty() {
            return Err(ManageError::Invalid(missing));
        }
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            out.push(self.create_code(caller, n, days).await?);
        }
        Ok(out)
    }

    fn token_service(&self) -> Result<&std::sync::Arc<crate::auth::service::TokenService>, ManageError> {
        self.app
            .token_service()
            .ok_or_else(|| ManageError::NotFound("the token service is not configured: add [state] or [store]".into()))
    }

    pub async fn codes(
        &self,
        device: Option<&str>,
        offset: usize,
        limit: Option<usize>,
    ) -> Result<Page<CodeView>, ManageError> {
        let now = Self::now();
        let codes = self.token_service()?.store().list_activation_codes().await?;
        let mut items: Vec<CodeView> = codes
            .iter()
            .filter(|c| device.is_none_or(|d| c.device.eq_ignore_ascii_case(d)))
            .map(|c| CodeView::of(c, now))
            .collect();
        items.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(page(items, offset, limit))
    }

    pub async fn revoke_code(&self, caller: &Caller, id: &str) -> Result<(), ManageError> {
        caller.may_change()?;
        let revoked = self.token_service()?.store().revoke_activation_code(id, Self::now()).await?;
        if !revoked {
            return Err(ManageError::NotFound(format!("no usable activation code with id {id:?}")));
        }
        self.audit(caller, "activation-code.revoke", id, String::new()).await;
        Ok(())
    }

    /// Revokes every token of a device or a user.
    pub async fn revoke_tokens(&self, caller: &Caller, subject: &Subject) -> Result<(), ManageError> {
        caller.may_change()?;
        let service = self.token_service()?;
        let now = Self::now();
        service.revoke_subject(subject, now).await?;
        let _ = self.app.sync_tokens(now).await;
        self.audit(caller, "token.revoke", &subject.to_string(), String::new()).await;
        Ok(())
    }

    pub async fn families(&self, subject: &Subject) -> Result<Vec<Family>, ManageError> {
        Ok(self.token_service()?.store().families(Some(&subject.to_string()), Self::now()).await?)
    }

    /// The subject of a device of the inventory.
    pub fn device_subject(&self, name: &str) -> Result<Subject, ManageError> {
        DeviceName::parse_loose(name)
            .ok()
            .filter(|d| self.inventory().inventory.device(d).is_some())
            .map(Subject::Device)
            .ok_or_else(|| no_device(name))
    }

    /// Whether a device exists (for the answers that must not say so to whoever may not see it).
    pub fn has_device(&self, name: &str) -> bool {
        DeviceName::parse_loose(name).ok().is_some_and(|d| self.inventory().inventory.device(&d).is_some())
    }

    pub fn has_user(&self, id: &str) -> bool {
        self.inventory().inventory.users.contains_key(id)
    }

    // Users.

    pub fn users(&self, search: Option<&str>, offset: usize, limit: Option<usize>) -> Page<User> {
        let needle = search.map(str::to_lowercase).filter(|s| !s.is_empty());
        let deployment = self.inventory();
        let items: Vec<User> = deployment
            .inventory
            .users
            .values()
            .filter(|u| {
                needle.as_ref().is_none_or(|n| u.id.to_lowercase().contains(n) || u.name.to_lowercase().contains(n))
            })
            .cloned()
            .collect();
        page(items, offset, limit)
    }

    pub fn user(&self, id: &str) -> Result<User, ManageError> {
        self.inventory()
            .inventory
            .users
            .get(id)
            .cloned()
            .ok_or_else(|| ManageError::NotFound(format!("no user {id:?}")))
    }

    pub async fn put_user(&self, caller: &Caller, id: &str, doc: UserDoc) -> Result<(User, bool), ManageError> {
        let existed = self.has_user(id);
        let action = if existed { "user.update" } else { "user.create" };
        self.write(caller, Edits::user(id, Some(doc)), action, id, String::new(), |_, _| Ok(())).await?;
        Ok((self.user(id)?, !existed))
    }

    pub async fn delete_user(&self, caller: &Caller, id: &str) -> Result<(), ManageError> {
        if !self.has_user(id) {
            return Err(ManageError::NotFound(format!("no user {id:?}")));
        }
        self.write(caller, Edits::user(id, None), "user.delete", id, String::new(), |_, _| Ok(())).await?;
        if let Some(service) = self.app.token_service() {
            service.revoke_subject(&Subject::User(id.to_owned()), Self::now()).await?;
        }
        Ok(())
    }

    // Security profiles.

    pub async fn put_profile(
        &self,
        caller: &Caller,
        name: &str,
        doc: ProfileDoc,
    ) -> Result<(Profile, bool), ManageError> {
        let existed = self.inventory().inventory.profiles.contains_key(name);
        let action = if existed { "profile.update" } else { "profile.create" };
        self.write(caller, Edits::profile(name, Some(doc)), action, name, String::new(), |_, _| Ok(())).await?;
        let profile = self.inventory().inventory.profiles.get(name).cloned();
        Ok((profile.ok_or_else(|| ManageError::Conflict(format!("profile {name:?} was removed meanwhile")))?, !existed))
    }

    /// Deletes a profile (refused, with the devices named, while any device uses it).
    pub async fn delete_profile(&self, caller: &Caller, name: &str) -> Result<(), ManageError> {
        if !self.inventory().inventory.profiles.contains_key(name) {
            return Err(ManageError::NotFound(format!("no profile {name:?}")));
        }
        self.write(caller, Edits::profile(name, None), "profile.delete", name, String::new(), |_, _| Ok(())).await
    }

    // Device pools, CM groups and date/time groups.

    /// Every device pool (or CM group, or date/time group), by name.
    pub fn pools<T: PoolEntry>(&self) -> Vec<PoolView<T>> {
        let deployment = self.inventory();
        let inventory = &deployment.inventory;
        T::of(&inventory.pools).iter().map(|(name, doc)| PoolView::of(inventory, name, doc)).collect()
    }

    pub fn pool<T: PoolEntry>(&self, name: &str) -> Result<PoolView<T>, ManageError> {
        let deployment = self.inventory();
        let inventory = &deployment.inventory;
        T::of(&inventory.pools)
            .get(name)
            .map(|doc| PoolView::of(inventory, name, doc))
            .ok_or_else(|| ManageError::NotFound(pools::not_found::<T>(inventory, name)))
    }

    /// Creates or replaces a device pool (or group), checked as a whole inventory; `true` when created.
    pub async fn put_pool<T: PoolEntry>(
        &self,
        caller: &Caller,
        name: &str,
        doc: T,
    ) -> Result<(PoolView<T>, bool), ManageError> {
        caller.may_change()?;
        let config = self.app.live();
        let detail = pools::describe(&doc);
        let (after, created) = pools::put(self.app.site(), &config, name, doc, &caller.actor()).await?;
        self.put_in_force().await;
        let action = format!("{}.{}", T::KIND.action(), if created { "create" } else { "update" });
        self.audit(caller, &action, name, detail).await;
        let doc =
            T::of(&after.pools).get(name).ok_or_else(|| ManageError::Conflict(pools::not_found::<T>(&after, name)))?;
        Ok((PoolView::of(&after, name, doc), created))
    }

    /// Deletes a device pool (refused, naming some of them, while devices use it) or a group (refused while
    /// a device pool names it).
    pub async fn delete_pool<T: PoolEntry>(&self, caller: &Caller, name: &str) -> Result<(), ManageError> {
        caller.may_change()?;
        let config = self.app.live();
        pools::remove::<T>(self.app.site(), &config, name, &caller.actor()).await?;
        self.put_in_force().await;
        self.audit(caller, &format!("{}.delete", T::KIND.action()), name, String::new()).await;
        Ok(())
    }

    // Phone-Edge-Trust.

    /// Adds the certificates of a PEM text to Phone-Edge-Trust, as `sipcfg cert add` does (a chain's CAs; the
    /// server's own certificate when it is self-signed). Returns what was added, present and skipped, and a
    /// warning when the store still misses the issuer of the server's certificate.
    pub async fn add_trust(&self, caller: &Caller, pem: &[u8]) -> Result<TrustChange, ManageError> {
        caller.may_change()?;
        let config = self.app.live();
        let now = Self::now();
        // The trust store reads certificates from a file: the upload goes to a private one, removed after.
        let file = std::env::temp_dir().join(format!(
            "sipcfg-upload-{}.pem",
            crate::util::random::random_id().map_err(|e| ManageError::Internal(e.to_string()))?
        ));
        write_private(&file, pem).map_err(|e| ManageError::Internal(format!("{}: {e}", file.display())))?;
        let server_leaf =
            crate::tls::load_certificates(&config.tls.certificate).ok().and_then(|c| c.into_iter().next());
        let added = self
            .app
            .site()
            .add_certificates(
                &config,
                TrustPurpose::PhoneEdgeTrust,
                &file,
                now,
                server_leaf.as_ref().map(|c| c.as_ref()),
            )
            .await;
        let _ = std::fs::remove_file(&file);
        let added = match added {
            Ok(a) => a,
            Err(SiteError::Trust(e)) => {
                let message = e.to_string().replace(&file.display().to_string(), "the upload");
                return Err(match e {
                    crate::provision::trust::TrustError::AlreadyPresent { .. } => ManageError::Conflict(message),
                    _ => ManageError::Invalid(vec![message]),
                });
            }
            Err(e) => return Err(e.into()),
        };
        self.put_in_force().await;
        for c in &added.added {
            self.audit(caller, "cert.add", &format!("phone-edge-trust {}", c.sha256), c.subject.clone()).await;
        }
        Ok(TrustChange {
            added: added.added.iter().map(CertView::of).collect(),
            present: added.present.iter().map(|(c, _)| CertView::of(c)).collect(),
            skipped: added.skipped.iter().map(|(c, why)| (CertView::of(c), why.clone())).collect(),
            warning: self.trust_problem().await,
        })
    }

    /// Removes a Phone-Edge-Trust certificate by its SHA-256 (or a unique prefix of it, as `sipcfg cert remove`).
    pub async fn remove_trust(&self, caller: &Caller, id: &str) -> Result<TrustChange, ManageError> {
        caller.may_change()?;
        let config = self.app.live();
        let removed = match self.app.site().remove_certificate(&config, TrustPurpose::PhoneEdgeTrust, id).await {
            Ok(c) => c,
            Err(SiteError::Trust(e)) => return Err(ManageError::NotFound(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        self.put_in_force().await;
        self.audit(caller, "cert.remove", &format!("phone-edge-trust {}", removed.sha256), removed.subject.clone())
            .await;
        Ok(TrustChange {
            added: Vec::new(),
            present: vec![CertView::of(&removed)],
            skipped: Vec::new(),
            warning: self.trust_problem().await,
        })
    }

    /// Why OAuth phones would fail TLS with Phone-Edge-Trust as it now is, if they would.
    async fn trust_problem(&self) -> Option<String> {
        let config = self.app.live();
        self.app
            .site()
            .with_held(|held| crate::app::check::phone_edge_trust_problem(&config, held))
            .await
            .ok()
            .flatten()
    }

    // Cluster settings.

    pub async fn set_cluster(
        &self,
        caller: &Caller,
        changes: &[ClusterChange],
        detail: String,
    ) -> Result<(), ManageError> {
        caller.may_change()?;
        let config = self.app.live();
        self.app.site().set_cluster(&config, changes).await?;
        self.put_in_force().await;
        self.audit(caller, "cluster.set", "cluster", detail).await;
        Ok(())
    }

    // The dashboard and the audit trail.

    pub async fn summary(&self, stale_days: u32) -> Result<Summary, ManageError> {
        let now = Self::now();
        let deployment = self.inventory();
        let inventory = &deployment.inventory;
        let facts = self.token_facts(now).await?;
        let mut by_status: HashMap<&'static str, usize> = DeviceStatus::ALL.iter().map(|s| (s.as_str(), 0)).collect();
        let (mut never, mut stale) = (0, 0);
        let cut = now - i64::from(stale_days) * 86_400;
        for device in inventory.devices.values() {
            *by_status.entry(Self::status_of(device, &facts).as_str()).or_default() += 1;
            if device.enabled {
                match self.last_seen(device, &facts) {
                    None => never += 1,
                    Some(at) if at < cut => stale += 1,
                    Some(_) => {}
                }
            }
        }
        Ok(Summary {
            devices: inventory.devices.len(),
            by_status,
            never_downloaded: never,
            not_seen: stale,
            stale_days,
            users: inventory.users.len(),
            sip_oauth_mode: inventory.cluster.sip_oauth_mode,
            refresh_login_flow: inventory.cluster.refresh_login_flow,
        })
    }

    pub async fn audit_trail(&self, before: Option<i64>, limit: Option<usize>) -> Result<Vec<AuditEntry>, ManageError> {
        let store = self
            .app
            .accounts()
            .ok_or_else(|| ManageError::NotFound("no audit trail: add [state] or [store]".into()))?;
        let limit = limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE) as u32;
        Ok(store.audit_trail(before, limit).await?)
    }
}

impl<'a> Manager<'a> {
    /// A phone redeeming the code of a placeholder device (`BAT…`, created without its MAC) names itself
    /// (`claimed`, its `SEP` name): the placeholder becomes that device in the inventory, and the code is
    /// pointed at it, before the code is redeemed as any other. Codes of other devices pass unchanged. A
    /// phone learns nothing more than "unknown code" when its name is taken or another phone was first.
    pub async fn adopt_placeholder(&self, code: &str, claimed: Option<&str>, address: &str) -> Result<(), GrantError> {
        let Some(service) = self.app.token_service() else { return Ok(()) };
        let now = Self::now();
        let (digest, placeholder) = service.code_device(code, now).await?;
        if !placeholder.is_placeholder() {
            return Ok(());
        }
        let unknown = GrantError::InvalidGrant(UNKNOWN_CODE);
        let claimed = claimed.ok_or(GrantError::InvalidRequest(
            "this code onboards a phone not named yet: send device_name (the phone's SEP name)",
        ))?;
        let name = DeviceName::parse_loose(claimed).ok().filter(|n| n.prefix() == Prefix::Sep).ok_or(
            GrantError::InvalidRequest("device_name is SEP followed by the phone's MAC address (12 hex digits)"),
        )?;
        let deployment = self.inventory();
        let Some(device) = deployment.inventory.device(&placeholder) else {
            tracing::warn!(target: "sipcfg::tokens", %placeholder, "activation code of a placeholder that is no longer in the inventory");
            return Err(unknown);
        };
        let mut edits = Edits::device(placeholder.as_str(), None);
        edits.devices.push((name.to_string(), Some(device.to_doc())));
        let (p, n) = (placeholder.clone(), name.clone());
        let config = self.app.live();
        let actor = format!("phone:{name}");
        let renamed = self
            .app
            .site()
            .edit_inventory(&config, &edits, &actor, move |before, _| {
                if before.device(&p).is_none() || before.device(&n).is_some() {
                    return Err(SiteError::Changed(PathBuf::from(n.as_str())));
                }
                Ok(())
            })
            .await;
        if let Err(e) = renamed {
            tracing::warn!(target: "sipcfg::tokens", %placeholder, device = %name, error = %e, "a phone could not take a placeholder's name");
            return Err(match ManageError::from(e) {
                ManageError::Unavailable(detail) => GrantError::Unavailable(detail),
                _ => unknown,
            });
        }
        if !service.store().retarget_activation_code(&digest, placeholder.as_str(), name.as_str(), now).await? {
            tracing::warn!(target: "sipcfg::tokens", %placeholder, device = %name, "placeholder renamed, but its code was taken meanwhile");
            return Err(unknown);
        }
        self.put_in_force().await;
        tracing::info!(target: "sipcfg::tokens", %placeholder, device = %name, "a phone took its placeholder's name");
        let detail = format!("placeholder {placeholder} renamed by the phone redeeming its activation code");
        self.record(actor, address, "device.adopt", name.as_str(), detail).await;
        Ok(())
    }
}

/// A certificate as the API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertView {
    pub subject: String,
    pub issuer: String,
    pub sha256: String,
    pub not_after: Time,
}

impl CertView {
    fn of(c: &crate::provision::trust::TrustCert) -> CertView {
        CertView {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            sha256: c.sha256.clone(),
            not_after: c.not_after,
        }
    }
}

/// What a Phone-Edge-Trust change did. `present` holds the removed certificate for a removal.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrustChange {
    pub added: Vec<CertView>,
    pub present: Vec<CertView>,
    pub skipped: Vec<(CertView, String)>,
    /// Set when OAuth phones would fail TLS on 6971: the store misses the server certificate's issuer.
    pub warning: Option<String>,
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// Why an import was refused.
#[derive(Debug)]
pub enum ImportFailure {
    /// Rows (or the header) with problems, one line each, as `sipcfg import` prints them; nothing written.
    Rows(Vec<String>),
    Other(ManageError),
}

impl<'a> Manager<'a> {
    /// Imports a BAT export (the file's bytes): a dry run with `options.dry_run`, which writes nothing.
    pub async fn import_csv(
        &self,
        caller: &Caller,
        csv: &[u8],
        options: crate::provision::import::Options,
    ) -> Result<ImportReportView, ImportFailure> {
        if !options.dry_run {
            caller.may_change().map_err(ImportFailure::Other)?;
        }
        let config = self.app.live();
        let mut progress = crate::util::progress::Silent;
        match self.app.site().import_bytes(&config, csv, options, &mut progress, &caller.actor()).await {
            Ok(report) => {
                let view = ImportReportView::of(&report);
                if report.written {
                    self.put_in_force().await;
                    let mut detail = format!("{} added, {} updated", report.added.len(), report.updated.len());
                    if !report.created_users.is_empty() {
                        detail.push_str(&format!(", users created: {}", report.created_users.join(", ")));
                    }
                    self.audit(caller, "import", "csv upload", detail).await;
                }
                Ok(view)
            }
            Err(SiteError::Import(crate::provision::import::ImportError::Rows(rows))) => {
                let mut lines: Vec<String> = rows.errors.iter().map(ToString::to_string).collect();
                lines.push(if rows.header {
                    "the header is not usable; nothing written".to_owned()
                } else {
                    format!("{} invalid row(s) of {}; nothing written", rows.invalid_rows(), rows.rows)
                });
                Err(ImportFailure::Rows(lines))
            }
            Err(SiteError::Import(e)) => Err(ImportFailure::Other(ManageError::BadRequest(e.to_string()))),
            Err(e) => Err(ImportFailure::Other(e.into())),
        }
    }

    /// The newest refused downloads on this node (status 400 and above), newest first.
    pub fn recent_refusals(&self, n: usize) -> Vec<(String, Download)> {
        self.app.activity().recent_refusals(n)
    }
}

/// What an import did, for the console.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReportView {
    pub rows: usize,
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub unchanged: Vec<String>,
    pub ignored_columns: Vec<String>,
    /// Owners the import created (`create_users`).
    pub created_users: Vec<String>,
    pub written: bool,
}

impl ImportReportView {
    fn of(r: &crate::provision::import::ImportReport) -> ImportReportView {
        let names = |v: &[DeviceName]| v.iter().map(ToString::to_string).collect();
        ImportReportView {
            rows: r.rows,
            added: names(&r.added),
            updated: names(&r.updated),
            unchanged: names(&r.unchanged),
            ignored_columns: r.ignored_columns.clone(),
            created_users: r.created_users.clone(),
            written: r.written,
        }
    }
}

/// A short description of a device for the audit trail.
fn describe(doc: &DeviceDoc) -> String {
    format!(
        "model {:?}, profile {:?}, owner {:?}, {}",
        doc.model,
        doc.profile,
        doc.owner.as_deref().unwrap_or(""),
        if doc.enabled { "enabled" } else { "disabled" }
    )
}

/// `text` as a QR code in SVG (medium error correction, a quiet zone of 4 modules).
pub fn qr_svg(text: &str) -> String {
    match qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M) {
        Ok(code) => code
            .render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(200, 200)
            .dark_color(qrcode::render::svg::Color("#000000"))
            .light_color(qrcode::render::svg::Color("#ffffff"))
            .build(),
        Err(e) => {
            tracing::error!(error = %e, "cannot draw a QR code");
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages() {
        let p = page((0..120).collect::<Vec<_>>(), 0, None);
        assert_eq!((p.items.len(), p.total, p.next_offset), (50, 120, Some(50)));
        let p = page((0..120).collect::<Vec<_>>(), 100, Some(50));
        assert_eq!((p.items.len(), p.next_offset), (20, None));
        let p = page((0..120).collect::<Vec<_>>(), 0, Some(100_000));
        assert_eq!(p.items.len(), MAX_PAGE.min(120));
    }

    #[test]
    fn a_qr_code_is_svg() {
        let svg = qr_svg("1234567812345678");
        assert!(svg.starts_with("<?xml") && svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    }
}
