//! The inventory: cluster parameters, phone security profiles, users and devices, read from one TOML file
//! and checked as a whole. Every error names the file and the entry.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::provision::filename::DeviceName;
use crate::provision::model::PhoneType;
use crate::provision::rules::{self, DeviceFields};

/// One problem found in the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryError {
    pub file: PathBuf,
    /// The entry, e.g. `device "SEP001122334455"`; empty for file-level errors.
    pub entry: String,
    pub message: String,
}

impl fmt::Display for InventoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entry.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.entry, self.message)
        }
    }
}

/// All the problems of an inventory that could not be loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct InventoryErrors(pub Vec<InventoryError>);

/// CUCM's device security mode (`deviceSecurityMode` 1/2/3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecurityMode {
    NonSecure,
    Authenticated,
    Encrypted,
}

impl SecurityMode {
    pub fn code(self) -> u8 {
        match self {
            SecurityMode::NonSecure => 1,
            SecurityMode::Authenticated => 2,
            SecurityMode::Encrypted => 3,
        }
    }
}

/// Transport of the SIP signalling (`transportLayerProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    Tcp,
    Udp,
    #[serde(rename = "tcp+udp")]
    TcpUdp,
    Tls,
}

impl Transport {
    /// 1 TCP, 2 UDP, 3 TLS as CUCM writes them; TCP+UDP is 4, the value third-party templates use for it
    /// (CUCM's own meaning of 4 is not public: see docs/decisions.md).
    pub fn code(self) -> u8 {
        match self {
            Transport::Tcp => 1,
            Transport::Udp => 2,
            Transport::Tls => 3,
            Transport::TcpUdp => 4,
        }
    }
}

/// Cluster-wide parameters rendered into every configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    /// CUCM's `utils sipOAuth-mode`: whether SIP OAuth is enabled for the cluster. Off until enabled, as in
    /// CUCM: the last step of the task flow (`sipcfg sip-oauth-mode enable`).
    #[serde(default)]
    pub sip_oauth_mode: bool,
    /// CUCM's enterprise parameter "OAuth with Refresh Login Flow": access and refresh tokens.
    #[serde(default)]
    pub refresh_login_flow: bool,
    /// Access token lifetime, 1-1440 minutes (CUCM's default 60).
    #[serde(default = "default_access_minutes")]
    pub access_token_minutes: u32,
    /// Refresh token lifetime, 1-365 days (CUCM's default 60).
    #[serde(default = "default_refresh_days")]
    pub refresh_token_days: u32,
    #[serde(default = "default_sip_port")]
    pub sip_port: u16,
    #[serde(default = "default_secured_sip_port")]
    pub secured_sip_port: u16,
    #[serde(default = "default_sip_oauth_port")]
    pub sip_oauth_port: u16,
    #[serde(default = "default_sip_mra_oauth_port")]
    pub sip_mra_oauth_port: u16,
    #[serde(default = "default_ethernet_phone_port")]
    pub ethernet_phone_port: u16,
    /// Call managers of the phones' Call Manager group, in priority order. Templates see them through the
    /// render context, with each node's ports resolved ([`CallManager::oauth_ports`]), never these.
    #[serde(skip_serializing)]
    pub call_managers: Vec<CallManager>,
    #[serde(default)]
    pub ntp_servers: Vec<String>,
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    #[serde(default = "default_date_template")]
    pub date_template: String,
    #[serde(default = "default_locale")]
    pub user_locale: String,
    #[serde(default = "default_network_locale")]
    pub network_locale: String,
    /// TFTP/HTTP server phones load firmware from (`loadServer`); empty for the call managers.
    #[serde(default)]
    pub load_server: String,
    /// The phone service URLs of every phone whose pool and device do not set them (CUCM's enterprise
    /// parameters of the same names).
    #[serde(default, skip_serializing_if = "ServiceUrls::is_empty")]
    pub services: ServiceUrls,
}

/// Phone service URLs (CUCM: the "Phone URL Parameters" enterprise parameters, and the device's own
/// "External Data Locations Information"): what the phone's buttons and idle screen open. Set on the
/// cluster, on a device pool and on a device; each key left out is the next one's (device, then pool, then
/// cluster).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceUrls {
    /// `directoryURL`: the Directories button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// `servicesURL`: the Services button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<String>,
    /// `idleURL`: shown after `idle_timeout` seconds without use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
    /// `idleTimeout`, seconds; needs `idle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u32>,
    /// `authenticationURL`: where the phone checks who may push to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<String>,
    /// `informationURL`: the help (i) button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub information: Option<String>,
    /// `messagesURL`: the Messages button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<String>,
}

impl ServiceUrls {
    /// No URL at all.
    pub const NONE: ServiceUrls = ServiceUrls {
        directory: None,
        services: None,
        idle: None,
        idle_timeout: None,
        authentication: None,
        information: None,
        messages: None,
    };

    pub fn is_empty(&self) -> bool {
        *self == ServiceUrls::default()
    }

    /// The URLs by key, for checks and messages.
    pub fn urls(&self) -> [(&'static str, Option<&str>); 6] {
        [
            ("directory", self.directory.as_deref()),
            ("services", self.services.as_deref()),
            ("idle", self.idle.as_deref()),
            ("authentication", self.authentication.as_deref()),
            ("information", self.information.as_deref()),
            ("messages", self.messages.as_deref()),
        ]
    }
}

/// The service URLs in force for one device, each resolved (device, else pool, else cluster; empty when
/// none sets it): what templates see as `services`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ResolvedServices<'a> {
    pub directory: &'a str,
    pub services: &'a str,
    pub idle: &'a str,
    pub idle_timeout: u32,
    pub authentication: &'a str,
    pub information: &'a str,
    pub messages: &'a str,
}

impl<'a> ResolvedServices<'a> {
    /// Each key from the first of `levels` (most specific first) that sets it.
    pub fn resolve(levels: &[Option<&'a ServiceUrls>]) -> ResolvedServices<'a> {
        let pick = |get: fn(&'a ServiceUrls) -> Option<&'a String>| {
            levels.iter().flatten().find_map(|l| get(l)).map_or("", String::as_str)
        };
        ResolvedServices {
            directory: pick(|l| l.directory.as_ref()),
            services: pick(|l| l.services.as_ref()),
            idle: pick(|l| l.idle.as_ref()),
            idle_timeout: levels.iter().flatten().find_map(|l| l.idle_timeout).unwrap_or(0),
            authentication: pick(|l| l.authentication.as_ref()),
            information: pick(|l| l.information.as_ref()),
            messages: pick(|l| l.messages.as_ref()),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_access_minutes() -> u32 {
    60
}
fn default_refresh_days() -> u32 {
    60
}
fn default_sip_port() -> u16 {
    5060
}
fn default_secured_sip_port() -> u16 {
    5061
}
fn default_sip_oauth_port() -> u16 {
    5090
}
fn default_sip_mra_oauth_port() -> u16 {
    5091
}
fn default_ethernet_phone_port() -> u16 {
    2000
}
fn default_time_zone() -> String {
    "Greenwich Standard Time".into()
}
fn default_date_template() -> String {
    "D/M/Y".into()
}
fn default_locale() -> String {
    "English_United_States".into()
}
fn default_network_locale() -> String {
    "United_States".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallManager {
    /// Host name or address the phones register to: what the files carry as `processNodeName`.
    pub address: String,
    /// How sipcfg names the node to people (messages, `sipcfg cluster show`); not rendered. Empty: the
    /// address ([`CallManager::label`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The node's own SIP phone OAuth port, when it differs from the cluster's (CUCM sets it per node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_oauth_port: Option<u16>,
    /// The node's own SIP MRA OAuth port, when it differs from the cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sip_mra_oauth_port: Option<u16>,
}

/// A node's SIP OAuth ports as phones use them: its own, else the cluster's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OAuthPorts {
    pub sip: u16,
    pub mra: u16,
}

impl CallManager {
    /// The node's name for people: its `name`, else its address.
    pub fn label(&self) -> &str {
        if self.name.is_empty() { &self.address } else { &self.name }
    }

    /// Whether the node sets an OAuth port of its own.
    pub fn overrides_oauth_ports(&self) -> bool {
        self.sip_oauth_port.is_some() || self.sip_mra_oauth_port.is_some()
    }

    /// The OAuth ports in force on this node: each of its own, else the cluster's default.
    pub fn oauth_ports(&self, cluster: &Cluster) -> OAuthPorts {
        OAuthPorts {
            sip: self.sip_oauth_port.unwrap_or(cluster.sip_oauth_port),
            mra: self.sip_mra_oauth_port.unwrap_or(cluster.sip_mra_oauth_port),
        }
    }
}

/// A CM group (CUCM: System > Cisco Unified CM Group): the call managers a device pool's phones register to,
/// by name (or address) from `[cluster] call_managers`, in priority order: the first is the primary.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CmGroupDoc {
    pub call_managers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// CUCM's Date/Time Group "Time Format".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum TimeFormat {
    #[serde(rename = "12-hour")]
    Hour12,
    #[serde(rename = "24-hour")]
    Hour24,
}

/// A date/time group (CUCM: System > Date/Time Group): what phones show the time with. Every key left out is
/// the cluster's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DateTimeGroupDoc {
    /// A time zone as Cisco phones name it (`timeZone`), e.g. `Pacific Standard/Daylight Time`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// CUCM's "Date Format": `M/D/Y`, `D/M/Y`, `Y/M/D`, or the same with `-` or `.`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_format: Option<String>,
    /// CUCM's "Time Format": `12-hour` or `24-hour`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_format: Option<TimeFormat>,
    /// CUCM's "Phone NTP References", in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp_servers: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A device pool (CUCM: System > Device Pool): the settings the phones of a site share. Every key left out
/// is the cluster's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePoolDoc {
    /// A `[cm_groups.NAME]`: the call managers of the pool's phones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cm_group: Option<String>,
    /// A `[date_time_groups.NAME]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_time_group: Option<String>,
    /// CUCM's device pool "User Locale" (`userLocale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_locale: Option<String>,
    /// CUCM's device pool "Network Locale" (`networkLocale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_locale: Option<String>,
    /// The phone service URLs of the pool's phones; each key left out is the cluster's.
    #[serde(default, skip_serializing_if = "ServiceUrls::is_empty")]
    pub services: ServiceUrls,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// The device pools and the groups they name, by name, as the inventory stores them (`[device_pools.NAME]`,
/// `[cm_groups.NAME]`, `[date_time_groups.NAME]`); checked as a whole when the inventory loads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Pools {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cm_groups: BTreeMap<String, CmGroupDoc>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub date_time_groups: BTreeMap<String, DateTimeGroupDoc>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub device_pools: BTreeMap<String, DevicePoolDoc>,
}

impl Pools {
    pub fn is_empty(&self) -> bool {
        self.cm_groups.is_empty() && self.date_time_groups.is_empty() && self.device_pools.is_empty()
    }
}

/// What a device's pool gives it, each value resolved (the pool's, else the cluster's); what templates see as
/// `device_pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings<'a> {
    /// The pool's name; none for a device without a pool.
    pub name: Option<&'a str>,
    /// The CM group's call managers in priority order (the cluster's when the pool names no CM group).
    pub call_managers: Vec<&'a CallManager>,
    /// `dateTemplate`: the date format, followed by `a` for a 12-hour clock.
    pub date_template: std::borrow::Cow<'a, str>,
    pub time_zone: &'a str,
    pub ntp_servers: &'a [String],
    pub user_locale: &'a str,
    pub network_locale: &'a str,
    /// The pool's service URLs; none without a pool.
    pub services: Option<&'a ServiceUrls>,
}

impl Cluster {
    /// The call manager a CM group names: by its `name`, else its address.
    pub fn call_manager(&self, label: &str) -> Option<&CallManager> {
        self.call_managers.iter().find(|cm| cm.label() == label)
    }
}

/// A phone security profile (CUCM: System > Security > Phone Security Profile), as the inventory stores it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileDoc {
    /// The phone type the profile belongs to (CUCM profiles are per phone type).
    pub phone_type: String,
    pub security_mode: SecurityMode,
    pub transport: Transport,
    /// "Enable OAuth Authentication".
    #[serde(default)]
    pub oauth: bool,
    /// "Enable Digest Authentication".
    #[serde(default, skip_serializing_if = "is_false")]
    pub digest_authentication: bool,
    /// "TFTP Encrypted Config".
    #[serde(default, skip_serializing_if = "is_false")]
    pub tftp_encrypted_config: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A phone security profile, checked, with its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: String,
    #[serde(flatten)]
    pub doc: ProfileDoc,
}

impl std::ops::Deref for Profile {
    type Target = ProfileDoc;
    fn deref(&self) -> &ProfileDoc {
        &self.doc
    }
}

/// An end user (CUCM: User Management > End User), as the inventory stores it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserDoc {
    /// Display name, e.g. `John Smith`.
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub department: String,
    /// E-mail address (from the directory).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mail: String,
    /// Telephone number (from the directory).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub telephone: String,
    /// Where the user comes from: empty for a user made by hand (the file, `sipcfg user`, the console), `ldap`
    /// for one synchronised from the directory (`[ldap]`): only those are changed, disabled or removed by a
    /// sync.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// A disabled user's tokens open no device (a directory sync disables a user gone from the directory
    /// while the user still owns devices).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
}

impl UserDoc {
    /// A user made by hand: a name and a department, enabled.
    pub fn new(name: impl Into<String>, department: impl Into<String>) -> UserDoc {
        UserDoc {
            name: name.into(),
            department: department.into(),
            mail: String::new(),
            telephone: String::new(),
            source: String::new(),
            enabled: true,
        }
    }
}

/// The value of `UserDoc::source` for users from the directory.
pub const SOURCE_LDAP: &str = "ldap";

/// An end user, checked, with its id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    #[serde(flatten)]
    pub doc: UserDoc,
}

impl std::ops::Deref for User {
    type Target = UserDoc;
    fn deref(&self) -> &UserDoc {
        &self.doc
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Line {
    /// Directory number.
    pub dn: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    /// Text shown next to the line button; defaults to the directory number.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

/// A speed dial button (CUCM: the phone's "Add a new SD").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpeedDial {
    /// What the button dials: digits, `*`, `#`, `+`, or a SIP URI.
    pub number: String,
    /// Text shown next to the button; defaults to the number.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

/// A BLF speed dial (busy lamp field, CUCM: "Add a new BLF SD"): a button that shows whether a line is in
/// use, and dials it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BlfSpeedDial {
    /// The directory number or SIP URI watched and dialled.
    pub destination: String,
    /// Text shown next to the button; defaults to the destination.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub label: String,
}

/// A device (CUCM: Device > Phone), as the inventory stores it: the `[devices.NAME]` table of the TOML
/// file, a row of the shared store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceDoc {
    pub model: String,
    pub profile: String,
    /// The device's pool (CUCM: Device Pool); none: the cluster's values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<Line>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_activation_code_via_mra: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mra_service_domain: String,
    /// Buttons after the lines, in this order: speed dials, then BLF speed dials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub speed_dials: Vec<SpeedDial>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blf_speed_dials: Vec<BlfSpeedDial>,
    /// Key expansion modules attached (CUCM: "Module 1", "Module 2", …), each with 28 more keys.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub key_expansion_modules: usize,
    /// The device's own service URLs; each key left out is its pool's, else the cluster's. Boxed: most
    /// devices set none, and a document travels in every change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Box<ServiceUrls>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The whole inventory as it is stored: what the TOML file holds, and what `sipcfg store export` writes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryDoc {
    pub cluster: Cluster,
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileDoc>,
    #[serde(default)]
    pub users: BTreeMap<String, UserDoc>,
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceDoc>,
    #[serde(default)]
    pub device_pools: BTreeMap<String, DevicePoolDoc>,
    #[serde(default)]
    pub cm_groups: BTreeMap<String, CmGroupDoc>,
    #[serde(default)]
    pub date_time_groups: BTreeMap<String, DateTimeGroupDoc>,
}

impl InventoryDoc {
    /// The device pools and their groups, taken out of the document.
    fn take_pools(&mut self) -> Pools {
        Pools {
            cm_groups: std::mem::take(&mut self.cm_groups),
            date_time_groups: std::mem::take(&mut self.date_time_groups),
            device_pools: std::mem::take(&mut self.device_pools),
        }
    }

    /// The document with `pools` as its device pools and groups.
    pub fn set_pools(&mut self, pools: Pools) {
        self.cm_groups = pools.cm_groups;
        self.date_time_groups = pools.date_time_groups;
        self.device_pools = pools.device_pools;
    }
}

/// [`InventoryDoc`] for serialization: the cluster with its call managers (which templates see resolved,
/// through the render context, so [`Cluster`] alone does not serialize them).
#[derive(Debug, Serialize)]
pub struct InventoryDocRef<'a> {
    pub cluster: ClusterDoc<'a>,
    pub profiles: BTreeMap<&'a str, &'a ProfileDoc>,
    pub users: BTreeMap<&'a str, &'a UserDoc>,
    pub devices: BTreeMap<&'a str, DeviceDoc>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub device_pools: &'a BTreeMap<String, DevicePoolDoc>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cm_groups: &'a BTreeMap<String, CmGroupDoc>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub date_time_groups: &'a BTreeMap<String, DateTimeGroupDoc>,
}

/// The cluster as it is stored: every key, the call managers included.
#[derive(Debug, Serialize)]
pub struct ClusterDoc<'a> {
    #[serde(flatten)]
    pub cluster: &'a Cluster,
    pub call_managers: &'a [CallManager],
}

impl<'a> ClusterDoc<'a> {
    pub fn of(cluster: &'a Cluster) -> ClusterDoc<'a> {
        ClusterDoc { cluster, call_managers: &cluster.call_managers }
    }
}

/// A device, checked against the profiles, users and phone types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: DeviceName,
    pub phone_type: &'static PhoneType,
    /// Name of the device's security profile (always present in the inventory).
    pub profile: String,
    /// Name of the device's pool (always present in the inventory when set); none: the cluster's values.
    pub pool: Option<String>,
    /// User id of the owner (always present in the inventory when set).
    pub owner: Option<String>,
    pub description: String,
    pub lines: Vec<Line>,
    pub enabled: bool,
    /// CUCM "Allow Activation Code via MRA": the device may onboard over Mobile and Remote Access.
    pub allow_activation_code_via_mra: bool,
    /// CUCM "Activation Code MRA Service Domain".
    pub mra_service_domain: String,
    pub speed_dials: Vec<SpeedDial>,
    pub blf_speed_dials: Vec<BlfSpeedDial>,
    pub key_expansion_modules: usize,
    /// The device's own service URLs; none when it sets none (most devices: kept small for 100,000 of them).
    pub services: Option<Box<ServiceUrls>>,
}

impl Device {
    /// Checks `doc` as the device `name` against `profiles`, `users` and device `pools`; every rule it breaks
    /// otherwise.
    pub fn from_doc(
        name: DeviceName,
        doc: DeviceDoc,
        profiles: &BTreeMap<String, Profile>,
        users: &Users,
        pools: &BTreeMap<String, DevicePoolDoc>,
    ) -> Result<Device, Vec<String>> {
        let fields = DeviceFields {
            name: Some(&name),
            model: &doc.model,
            profile: &doc.profile,
            pool: doc.pool.as_deref(),
            owner: doc.owner.as_deref(),
            lines: &doc.lines,
            allow_activation_code_via_mra: doc.allow_activation_code_via_mra,
            mra_service_domain: &doc.mra_service_domain,
            speed_dials: &doc.speed_dials,
            blf_speed_dials: &doc.blf_speed_dials,
            key_expansion_modules: doc.key_expansion_modules,
            services: doc.services.as_deref().unwrap_or(&ServiceUrls::NONE),
        };
        let (phone_type, problems) = rules::check_device(fields, profiles, users, pools);
        let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
        match phone_type {
            Some(phone_type) if problems.is_empty() => Ok(Device {
                name,
                phone_type,
                profile: doc.profile,
                pool: doc.pool,
                owner: doc.owner,
                description: doc.description,
                lines: doc.lines,
                enabled: doc.enabled,
                allow_activation_code_via_mra: doc.allow_activation_code_via_mra,
                mra_service_domain: doc.mra_service_domain,
                speed_dials: doc.speed_dials,
                blf_speed_dials: doc.blf_speed_dials,
                key_expansion_modules: doc.key_expansion_modules,
                services: doc.services.filter(|s| !s.is_empty()),
            }),
            _ => Err(problems),
        }
    }

    /// The device as it is stored.
    pub fn to_doc(&self) -> DeviceDoc {
        DeviceDoc {
            model: self.phone_type.name.to_owned(),
            profile: self.profile.clone(),
            pool: self.pool.clone(),
            owner: self.owner.clone(),
            description: self.description.clone(),
            lines: self.lines.clone(),
            enabled: self.enabled,
            allow_activation_code_via_mra: self.allow_activation_code_via_mra,
            mra_service_domain: self.mra_service_domain.clone(),
            speed_dials: self.speed_dials.clone(),
            blf_speed_dials: self.blf_speed_dials.clone(),
            key_expansion_modules: self.key_expansion_modules,
            services: self.services.clone(),
        }
    }
}

/// `dateTemplate` for a date/time group: its date format and time format, each else the cluster's (whose
/// `date_template` is both: a trailing `a` is the 12-hour clock).
fn date_template<'a>(cluster: &'a Cluster, group: Option<&DateTimeGroupDoc>) -> std::borrow::Cow<'a, str> {
    let Some(group) = group.filter(|g| g.date_format.is_some() || g.time_format.is_some()) else {
        return std::borrow::Cow::Borrowed(&cluster.date_template);
    };
    let cluster_date = cluster.date_template.strip_suffix('a').unwrap_or(&cluster.date_template);
    let twelve_hour = match group.time_format {
        Some(format) => format == TimeFormat::Hour12,
        None => cluster.date_template.ends_with('a'),
    };
    let date = group.date_format.as_deref().unwrap_or(cluster_date);
    std::borrow::Cow::Owned(format!("{date}{}", if twelve_hour { "a" } else { "" }))
}

/// The users, by id: a persistent map, so that one user's change shares the rest (10,000 users of a
/// cluster are not copied for it).
pub type Users = imbl::OrdMap<String, User>;
/// The devices, by name: a persistent map, so that one device's change shares the other 99,999.
pub type Devices = imbl::HashMap<DeviceName, Arc<Device>>;

/// A loaded, consistent inventory.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Where it was read from: the TOML file, or the shared store; errors name it.
    pub file: PathBuf,
    pub cluster: Cluster,
    pub profiles: BTreeMap<String, Profile>,
    pub users: Users,
    pub devices: Devices,
    /// The device pools and their CM and date/time groups.
    pub pools: Pools,
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Inventory, InventoryErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            InventoryErrors(vec![InventoryError {
                file: path.to_owned(),
                entry: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Inventory::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Inventory, InventoryErrors> {
        // A large inventory parses in chunks (a sixth of the memory, on every core); anything else, and any
        // error, as a whole document.
        if let Some(doc) = crate::provision::chunked::parse(text) {
            return Inventory::from_doc(path, doc);
        }
        let doc: InventoryDoc = toml::from_str(text).map_err(|e| {
            InventoryErrors(vec![InventoryError {
                file: path.to_owned(),
                entry: String::new(),
                message: crate::config::toml_message(text, &e),
            }])
        })?;
        Inventory::from_doc(path, doc)
    }

    /// Checks a whole inventory; `origin` names where it came from in every error.
    pub fn from_doc(origin: &Path, mut doc: InventoryDoc) -> Result<Inventory, InventoryErrors> {
        let file = origin.to_owned();
        let mut errors = Vec::new();
        let mut err =
            |entry: String, message: String| errors.push(InventoryError { file: file.clone(), entry, message });

        let pools = doc.take_pools();
        let cluster = doc.cluster;
        for problem in rules::cluster_problems(&cluster) {
            err("cluster".into(), problem);
        }
        for cm in &cluster.call_managers {
            for problem in rules::call_manager_problems(&cluster, cm) {
                err(format!("call manager {:?}", cm.label()), problem);
            }
        }

        for (name, group) in &pools.cm_groups {
            for problem in rules::cm_group_problems(&cluster, group) {
                err(format!("cm group {name:?}"), problem);
            }
        }
        for (name, group) in &pools.date_time_groups {
            for problem in rules::date_time_group_problems(group) {
                err(format!("date/time group {name:?}"), problem);
            }
        }
        for (name, pool) in &pools.device_pools {
            for problem in rules::device_pool_problems(&pools, pool) {
                err(format!("device pool {name:?}"), problem);
            }
        }

        let mut profiles = BTreeMap::new();
        for (name, doc) in doc.profiles {
            let profile = Profile { name: name.clone(), doc };
            for problem in rules::profile_problems(&profile) {
                err(format!("profile {name:?}"), problem);
            }
            profiles.insert(name, profile);
        }

        let mut users = Users::new();
        for (id, doc) in doc.users {
            if !rules::valid_user_id(&id) {
                err(format!("user {id:?}"), rules::USER_ID_RULE.into());
            }
            users.insert(id.clone(), User { id, doc });
        }

        let mut devices = Vec::with_capacity(doc.devices.len());
        for (name, d) in doc.devices {
            let entry = format!("device {name:?}");
            let device_name = match DeviceName::parse_canonical(&name) {
                Ok(n) => n,
                Err(e) => {
                    err(entry, e.to_string());
                    continue;
                }
            };
            match Device::from_doc(device_name, d, &profiles, &users, &pools.device_pools) {
                Ok(device) => devices.push((device.name.clone(), Arc::new(device))),
                Err(problems) => {
                    for problem in problems {
                        err(entry.clone(), problem);
                    }
                }
            }
        }

        if errors.is_empty() {
            Ok(Inventory { file, cluster, profiles, users, devices: devices.into_iter().collect(), pools })
        } else {
            Err(InventoryErrors(errors))
        }
    }

    /// The inventory as it is stored (for `sipcfg store export` and the shared store).
    pub fn to_doc(&self) -> InventoryDocRef<'_> {
        InventoryDocRef {
            cluster: ClusterDoc::of(&self.cluster),
            profiles: self.profiles.iter().map(|(k, p)| (k.as_str(), &p.doc)).collect(),
            users: self.users.iter().map(|(k, u)| (k.as_str(), &u.doc)).collect(),
            devices: self.devices.iter().map(|(k, d)| (k.as_str(), d.to_doc())).collect(),
            device_pools: &self.pools.device_pools,
            cm_groups: &self.pools.cm_groups,
            date_time_groups: &self.pools.date_time_groups,
        }
    }

    /// The inventory as an owned document (to move it into the shared store).
    pub fn doc(&self) -> InventoryDoc {
        InventoryDoc {
            cluster: self.cluster.clone(),
            profiles: self.profiles.iter().map(|(k, p)| (k.clone(), p.doc.clone())).collect(),
            users: self.users.iter().map(|(k, u)| (k.clone(), u.doc.clone())).collect(),
            devices: self.devices.iter().map(|(k, d)| (k.as_str().to_owned(), d.to_doc())).collect(),
            device_pools: self.pools.device_pools.clone(),
            cm_groups: self.pools.cm_groups.clone(),
            date_time_groups: self.pools.date_time_groups.clone(),
        }
    }

    /// What the device's pool gives it: each setting the pool (through its groups) sets, else the cluster's.
    /// Every pool and group a device names exists once the inventory has loaded; one that does not counts as
    /// unset.
    pub fn pool_settings(&self, device: &Device) -> PoolSettings<'_> {
        let cluster = &self.cluster;
        let pool = device.pool.as_deref().and_then(|p| self.pools.device_pools.get_key_value(p));
        let doc = pool.map(|(_, d)| d);
        let cm_group = doc.and_then(|d| d.cm_group.as_deref()).and_then(|g| self.pools.cm_groups.get(g));
        let date_time = doc.and_then(|d| d.date_time_group.as_deref()).and_then(|g| self.pools.date_time_groups.get(g));
        let call_managers = match cm_group {
            Some(g) => g.call_managers.iter().filter_map(|n| cluster.call_manager(n)).collect(),
            None => cluster.call_managers.iter().collect(),
        };
        PoolSettings {
            name: pool.map(|(name, _)| name.as_str()),
            call_managers,
            date_template: date_template(cluster, date_time),
            time_zone: date_time.and_then(|d| d.time_zone.as_deref()).unwrap_or(&cluster.time_zone),
            ntp_servers: date_time.and_then(|d| d.ntp_servers.as_deref()).unwrap_or(&cluster.ntp_servers),
            user_locale: doc.and_then(|d| d.user_locale.as_deref()).unwrap_or(&cluster.user_locale),
            network_locale: doc.and_then(|d| d.network_locale.as_deref()).unwrap_or(&cluster.network_locale),
            services: doc.map(|d| &d.services),
        }
    }

    pub fn device(&self, name: &DeviceName) -> Option<&Device> {
        self.devices.get(name).map(Arc::as_ref)
    }

    /// The device's profile. Every device's profile exists once the inventory has loaded.
    pub fn profile_of(&self, device: &Device) -> Option<&Profile> {
        self.profiles.get(&device.profile)
    }

    pub fn owner_of(&self, device: &Device) -> Option<&User> {
        device.owner.as_ref().and_then(|o| self.users.get(o))
    }

    /// The enabled devices whose profile enables OAuth, whatever the cluster's SIP OAuth mode, sorted: the
    /// phones that download only over HTTPS and must trust the server through Phone-Edge-Trust.
    pub fn oauth_devices(&self) -> Vec<&DeviceName> {
        let mut names: Vec<_> = self.devices.values().filter(|d| self.is_oauth_device(d)).map(|d| &d.name).collect();
        names.sort();
        names
    }

    /// Whether [`Self::oauth_devices`] has any, without collecting them (checked at every reload).
    pub fn has_oauth_devices(&self) -> bool {
        self.devices.values().any(|d| self.is_oauth_device(d))
    }

    fn is_oauth_device(&self, device: &Device) -> bool {
        device.enabled && self.profile_of(device).is_some_and(|p| p.oauth)
    }

    /// Device names in a stable order (for `check` and reports).
    pub fn device_names_sorted(&self) -> Vec<&DeviceName> {
        let mut names: Vec<_> = self.devices.keys().collect();
        names.sort();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        [cluster]
        name = "c"
        call_managers = [{ address = "cucm.example.com" }]
        [profiles.oauth]
        phone_type = "Cisco 8851"
        security_mode = "encrypted"
        transport = "tls"
        oauth = true
        [users.jsmith]
        name = "John Smith"
    "#;

    fn parse(extra: &str) -> Result<Inventory, InventoryErrors> {
        Inventory::parse(Path::new("inv.toml"), &format!("{BASE}\n{extra}"))
    }

    #[test]
    fn oauth_devices_are_the_enabled_ones_with_an_oauth_profile_whatever_the_cluster_mode() {
        let plain =
            "[profiles.plain]\nphone_type = \"Cisco 8851\"\nsecurity_mode = \"non-secure\"\ntransport = \"udp\"\n";
        let devices = "[devices.SEP0011223344BB]\nmodel = \"Cisco 8851\"\nprofile = \"oauth\"\n\
                       [devices.SEP0011223344AA]\nmodel = \"Cisco 8851\"\nprofile = \"oauth\"\n\
                       [devices.SEP0011223344CC]\nmodel = \"Cisco 8851\"\nprofile = \"oauth\"\nenabled = false\n\
                       [devices.SEP0011223344DD]\nmodel = \"Cisco 8851\"\nprofile = \"plain\"\n";
        let inv = parse(&format!("{plain}{devices}")).unwrap();
        let names: Vec<String> = inv.oauth_devices().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["SEP0011223344AA", "SEP0011223344BB"]);
        assert!(inv.has_oauth_devices());
        let off = Inventory::parse(
            Path::new("inv.toml"),
            &format!("{}\n{plain}{devices}", BASE.replace("[cluster]", "[cluster]\nsip_oauth_mode = false")),
        )
        .unwrap();
        assert_eq!(off.oauth_devices().len(), 2, "the cluster mode does not matter");

        let none =
            parse(&format!("{plain}[devices.SEP0011223344DD]\nmodel = \"Cisco 8851\"\nprofile = \"plain\"\n")).unwrap();
        assert!(!none.has_oauth_devices() && none.oauth_devices().is_empty());
    }

    #[test]
    fn loads_a_device() {
        let inv = parse("[devices.SEP001122334455]\nmodel = \"Cisco 8851\"\nprofile = \"oauth\"\nowner = \"jsmith\"\n")
            .unwrap();
        let d = inv.device(&DeviceName::parse_canonical("SEP001122334455").unwrap()).unwrap();
        assert!(d.enabled);
        assert_eq!(inv.owner_of(d).unwrap().name, "John Smith");
    }

    #[test]
    fn errors_name_file_entry_and_rule() {
        let errs = parse(
            "[devices.SEP001122334455]\nmodel = \"Cisco 8851\"\nprofile = \"nope\"\nowner = \"who\"\n\
             [devices.sep00112233445A]\nmodel = \"Cisco 8851\"\nprofile = \"oauth\"\n\
             [devices.CSFX]\nmodel = \"Cisco 8851\"\nprofile = \"oauth\"\n\
             [profiles.bad]\nphone_type = \"Cisco 8851\"\nsecurity_mode = \"non-secure\"\ntransport = \"tcp\"\noauth = true\ndigest_authentication = true\n",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "inv.toml: device \"SEP001122334455\": unknown profile \"nope\"",
            "inv.toml: device \"SEP001122334455\": unknown owner user \"who\"",
            "device \"sep00112233445A\": device names are upper case",
            "device \"CSFX\": a Cisco 8851 is named SEP<…>, not CSF<…>",
            "profile \"bad\": OAuth authentication needs device security mode encrypted",
            "profile \"bad\": OAuth authentication cannot be combined with digest authentication",
        ] {
            assert!(errs.contains(needle), "missing {needle:?} in:\n{errs}");
        }
    }

    fn cluster_with(call_managers: &str, extra: &str) -> Result<Inventory, InventoryErrors> {
        let text = format!("[cluster]\nname = \"c\"\n{extra}\ncall_managers = [\n{call_managers}\n]\n");
        Inventory::parse(Path::new("inv.toml"), &text)
    }

    #[test]
    fn a_call_manager_may_set_its_own_oauth_ports_and_the_cluster_is_the_default() {
        let inv = cluster_with(
            "{ address = \"pub.example.test\", name = \"pub\" },\n\
             { address = \"sub.example.test\", sip_oauth_port = 5190 },",
            "sip_mra_oauth_port = 5095",
        )
        .unwrap();
        let [publisher, sub] = &inv.cluster.call_managers[..] else { panic!() };
        assert_eq!(publisher.oauth_ports(&inv.cluster), OAuthPorts { sip: 5090, mra: 5095 });
        assert_eq!(sub.oauth_ports(&inv.cluster), OAuthPorts { sip: 5190, mra: 5095 });
        assert_eq!((publisher.label(), sub.label()), ("pub", "sub.example.test"), "the name, else the address");
        assert!(!publisher.overrides_oauth_ports() && sub.overrides_oauth_ports());
    }

    #[test]
    fn a_call_managers_oauth_ports_are_in_range_distinct_and_not_its_sip_ports() {
        let errs = cluster_with(
            "{ address = \"a.example.test\", name = \"a\", sip_oauth_port = 80, sip_mra_oauth_port = 5060 },\n\
             { address = \"b.example.test\", name = \"b\", sip_oauth_port = 5161 },\n\
             { address = \"c.example.test\", name = \"c\", sip_oauth_port = 5091 },\n\
             { address = \"d.example.test\", name = \"d\", sip_oauth_port = 5300, sip_mra_oauth_port = 5300 },\n\
             { address = \"\", name = \"e\" },\n\
             { address = \"f.example.test\", name = \"f\" },",
            "secured_sip_port = 5161",
        )
        .unwrap_err();
        let messages: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "inv.toml: call manager \"a\": sip_oauth_port 80 is outside 1024-49151",
                "inv.toml: call manager \"a\": sip_mra_oauth_port 5060 is the node's SIP port (cluster sip_port): \
                 give the OAuth port a number of its own",
                "inv.toml: call manager \"b\": sip_oauth_port 5161 is the node's secure SIP port (cluster \
                 secured_sip_port): give the OAuth port a number of its own",
                "inv.toml: call manager \"c\": sip_oauth_port (its own) and sip_mra_oauth_port (the cluster's) are \
                 both 5091: they must differ",
                "inv.toml: call manager \"d\": sip_oauth_port (its own) and sip_mra_oauth_port (its own) are both \
                 5300: they must differ",
                "inv.toml: call manager \"e\": address is empty: give the host name or address phones register to",
            ],
            "a node without ports of its own (f) has the cluster's, checked once, for the cluster"
        );
    }

    #[test]
    fn the_clusters_oauth_ports_are_not_its_sip_ports() {
        let errs = cluster_with("{ address = \"a.example.test\" },", "sip_port = 5090\nsecured_sip_port = 5091")
            .unwrap_err()
            .to_string();
        for needle in [
            "inv.toml: cluster: sip_oauth_port 5090 is also sip_port: a node's OAuth ports must differ from its SIP \
             and secure SIP ports",
            "inv.toml: cluster: sip_mra_oauth_port 5091 is also secured_sip_port",
        ] {
            assert!(errs.contains(needle), "missing {needle:?} in:\n{errs}");
        }
        assert!(!errs.contains("call manager"), "the node has the cluster's ports, reported once: {errs}");
    }

    #[test]
    fn no_profile_may_ask_for_tftp_encrypted_config() {
        let errs = parse(
            "[profiles.plain]\nphone_type = \"Cisco 7821\"\nsecurity_mode = \"non-secure\"\ntransport = \"udp\"\n\
             tftp_encrypted_config = true\n\
             [profiles.tls]\nphone_type = \"Cisco 7811\"\nsecurity_mode = \"authenticated\"\ntransport = \"tls\"\n\
             tftp_encrypted_config = false\n",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            errs,
            "inv.toml: profile \"plain\": tftp_encrypted_config: sipcfg never serves TFTP-encrypted files \
             (.cnf.xml.enc.sgn), so its phones would get no configuration; set tftp_encrypted_config = false"
        );
    }

    #[test]
    fn activation_via_mra_needs_an_oauth_profile() {
        let tls = "[profiles.tls]\nphone_type = \"Cisco 8851\"\nsecurity_mode = \"encrypted\"\ntransport = \"tls\"\n";
        let device = |profile: &str| {
            format!(
                "{tls}[devices.SEP001122334455]\nmodel = \"Cisco 8851\"\nprofile = \"{profile}\"\n\
                 allow_activation_code_via_mra = true\nmra_service_domain = \"mra.example.test\"\n"
            )
        };
        let errs = parse(&device("tls")).unwrap_err().to_string();
        assert_eq!(
            errs,
            "inv.toml: device \"SEP001122334455\": allow_activation_code_via_mra needs a profile with OAuth, and \
             profile \"tls\" has oauth = false: give the device an OAuth profile, or remove \
             allow_activation_code_via_mra"
        );
        assert!(parse(&device("oauth")).is_ok());
    }

    const POOLS: &str = r#"
        [cluster]
        name = "c"
        time_zone = "W. Europe Standard/Daylight Time"
        date_template = "D.M.Y"
        ntp_servers = ["ntp.example.test"]
        user_locale = "French_France"
        call_managers = [
          { address = "pub.example.test", name = "pub" },
          { address = "sub1.example.test", name = "sub1", sip_oauth_port = 5092 },
          { address = "sub2.example.test" },
        ]
        [profiles.oauth]
        phone_type = "Cisco 8851"
        security_mode = "encrypted"
        transport = "tls"
        oauth = true
        [cm_groups.West]
        call_managers = ["sub2.example.test", "sub1"]
        [date_time_groups.Pacific]
        time_zone = "Pacific Standard/Daylight Time"
        date_format = "M/D/Y"
        time_format = "12-hour"
        ntp_servers = ["ntp.west.example.test"]
        [date_time_groups.Clock12]
        time_format = "12-hour"
        [device_pools.West]
        cm_group = "West"
        date_time_group = "Pacific"
        user_locale = "English_United_States"
        [device_pools.Paris]
        date_time_group = "Clock12"
        [devices.SEP0011223344AA]
        model = "Cisco 8851"
        profile = "oauth"
        pool = "West"
        [devices.SEP0011223344BB]
        model = "Cisco 8851"
        profile = "oauth"
        pool = "Paris"
        [devices.SEP0011223344CC]
        model = "Cisco 8851"
        profile = "oauth"
    "#;

    fn device<'a>(inv: &'a Inventory, name: &str) -> &'a Device {
        inv.device(&DeviceName::parse_canonical(name).unwrap()).unwrap()
    }

    #[test]
    fn a_devices_pool_gives_its_settings_and_the_cluster_the_rest() {
        let inv = Inventory::parse(Path::new("inv.toml"), POOLS).unwrap();
        let labels = |p: &PoolSettings<'_>| p.call_managers.iter().map(|cm| cm.label().to_owned()).collect::<Vec<_>>();

        let west = inv.pool_settings(device(&inv, "SEP0011223344AA"));
        assert_eq!(west.name, Some("West"));
        assert_eq!(labels(&west), ["sub2.example.test", "sub1"], "the CM group's order, not the cluster's");
        assert_eq!(west.call_managers[1].oauth_ports(&inv.cluster).sip, 5092, "each node keeps its own ports");
        assert_eq!(
            (west.time_zone, &*west.date_template, west.ntp_servers),
            ("Pacific Standard/Daylight Time", "M/D/Ya", &["ntp.west.example.test".to_owned()][..])
        );
        assert_eq!((west.user_locale, west.network_locale), ("English_United_States", "United_States"));

        let paris = inv.pool_settings(device(&inv, "SEP0011223344BB"));
        assert_eq!(labels(&paris), ["pub", "sub1", "sub2.example.test"], "no CM group: the cluster's call managers");
        assert_eq!((paris.time_zone, &*paris.date_template), ("W. Europe Standard/Daylight Time", "D.M.Ya"));
        assert_eq!(paris.user_locale, "French_France");

        let none = inv.pool_settings(device(&inv, "SEP0011223344CC"));
        assert_eq!(none.name, None);
        assert_eq!(labels(&none), ["pub", "sub1", "sub2.example.test"]);
        assert_eq!(
            (none.time_zone, &*none.date_template, none.ntp_servers),
            ("W. Europe Standard/Daylight Time", "D.M.Y", &inv.cluster.ntp_servers[..])
        );

        let doc = inv.doc();
        assert_eq!(doc.devices["SEP0011223344AA"].pool.as_deref(), Some("West"));
        assert_eq!(doc.device_pools.len(), 2);
        let again = Inventory::from_doc(Path::new("inv.toml"), doc).unwrap();
        assert_eq!(again.pools, inv.pools);
        let exported = toml::to_string(&inv.to_doc()).unwrap();
        assert!(exported.contains("[device_pools.West]") && exported.contains("[cm_groups.West]"), "{exported}");
        assert_eq!(Inventory::parse(Path::new("inv.toml"), &exported).unwrap().pools, inv.pools);
    }

    #[test]
    fn pool_errors_name_the_entry_and_the_fix() {
        let text = POOLS
            .replace("pool = \"Paris\"", "pool = \"paris\"")
            .replace("[\"sub2.example.test\", \"sub1\"]", "[\"sub1\", \"sbu2.example.test\", \"sub1\"]")
            .replace("date_time_group = \"Pacific\"", "date_time_group = \"Pacifc\"")
            .replace(
                "time_format = \"12-hour\"\n        [device_pools.West]",
                "time_zone = \"Tokyo\"\n        [device_pools.West]",
            )
            + "\n[cm_groups.Empty]\ncall_managers = []\n";
        let errs: Vec<String> =
            Inventory::parse(Path::new("inv.toml"), &text).unwrap_err().0.iter().map(ToString::to_string).collect();
        assert_eq!(
            errs,
            [
                "inv.toml: cm group \"Empty\": call_managers is empty: list the group's call managers, the primary \
                 first (of [cluster] call_managers: \"pub\", \"sub1\", \"sub2.example.test\")",
                "inv.toml: cm group \"West\": unknown call manager \"sbu2.example.test\" (did you mean \
                 \"sub2.example.test\"?): name one of [cluster] call_managers by its name (its address when it has \
                 none): \"pub\", \"sub1\", \"sub2.example.test\"",
                "inv.toml: cm group \"West\": call manager \"sub1\" is listed twice: list each call manager once, in \
                 priority order",
                "inv.toml: date/time group \"Clock12\": unknown time_zone \"Tokyo\" (did you mean \"Tokyo Standard \
                 Time\"?): use a time zone as Cisco phones name it (docs/inventory.md lists them)",
                "inv.toml: device pool \"West\": unknown date_time_group \"Pacifc\" (did you mean \"Pacific\"?): name \
                 a [date_time_groups.NAME] of the inventory, or leave date_time_group out for the cluster's date and \
                 time settings",
                "inv.toml: device \"SEP0011223344BB\": unknown pool \"paris\" (did you mean \"Paris\"?): name a \
                 [device_pools.NAME] of the inventory, or leave pool out for the cluster's settings",
            ]
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let errs = parse("[devices.SEP001122334455]\nmodel = \n").unwrap_err().to_string();
        assert!(errs.starts_with("inv.toml: line "), "{errs}");
        let errs = parse("[devices.SEP001122334455]\nmodle = \"x\"\n").unwrap_err().to_string();
        assert!(errs.contains("modle"), "{errs}");
    }
}
