//! The inventory's rules, in one place: what makes a cluster, a phone security profile, a user and a device
//! valid (CUCM's own rules where it has them). The inventory loader ([`crate::provision::inventory`]) and the
//! BAT import ([`crate::provision::import`]) both check with these functions; each words a broken rule in
//! its own vocabulary (inventory keys, or the columns of a BAT file) from the typed problem.

use std::collections::BTreeMap;
use std::fmt;

use crate::provision::filename::DeviceName;
use crate::provision::inventory::{
    BlfSpeedDial, CallManager, Cluster, CmGroupDoc, DateTimeGroupDoc, DevicePoolDoc, Line, Pools, Profile,
    SecurityMode, ServiceUrls, SpeedDial, Transport, Users,
};
use crate::provision::model::{self, PhoneType, Prefix};
use crate::provision::subject::MAX_USER_ID;

/// SIP OAuth ports, as CUCM allows them.
pub const OAUTH_PORTS: std::ops::RangeInclusive<u16> = 1024..=49151;
/// Access token expiry in minutes (CUCM: 1-1440).
pub const ACCESS_TOKEN_MINUTES: std::ops::RangeInclusive<u32> = 1..=1440;
/// Refresh token expiry in days (CUCM: 1-365).
pub const REFRESH_TOKEN_DAYS: std::ops::RangeInclusive<u32> = 1..=365;

/// The cluster settings' problems, as messages naming the key.
pub fn cluster_problems(cluster: &Cluster) -> Vec<String> {
    let mut problems = Vec::new();
    if cluster.call_managers.is_empty() {
        problems.push("call_managers: name at least one call manager".into());
    }
    for (key, port) in [("sip_oauth_port", cluster.sip_oauth_port), ("sip_mra_oauth_port", cluster.sip_mra_oauth_port)]
    {
        if !OAUTH_PORTS.contains(&port) {
            problems.push(format!("{key} {port} is outside {}-{}", OAUTH_PORTS.start(), OAUTH_PORTS.end()));
        }
    }
    if !ACCESS_TOKEN_MINUTES.contains(&cluster.access_token_minutes) {
        problems.push(format!("access_token_minutes {} is outside 1-1440", cluster.access_token_minutes));
    }
    if !REFRESH_TOKEN_DAYS.contains(&cluster.refresh_token_days) {
        problems.push(format!("refresh_token_days {} is outside 1-365", cluster.refresh_token_days));
    }
    if cluster.sip_oauth_port == cluster.sip_mra_oauth_port {
        problems.push("sip_oauth_port and sip_mra_oauth_port must differ".into());
    }
    for (key, port) in [("sip_oauth_port", cluster.sip_oauth_port), ("sip_mra_oauth_port", cluster.sip_mra_oauth_port)]
    {
        if let Some(sip_key) = sip_port_taken(cluster, port) {
            problems.push(format!(
                "{key} {port} is also {sip_key}: a node's OAuth ports must differ from its SIP and secure SIP ports; \
                 give the OAuth port a number of its own"
            ));
        }
    }
    problems.extend(service_url_problems(&cluster.services));
    problems
}

/// The longest service URL (CUCM's URL fields take 255 characters).
pub const MAX_SERVICE_URL: usize = 255;
/// The longest idle timeout, seconds (a day).
pub const MAX_IDLE_TIMEOUT: u32 = 86_400;
/// The longest speed dial or BLF destination, and button label (CUCM's limits for both fields).
pub const MAX_BUTTON_TEXT: usize = 50;

/// The problems of a set of service URLs, as messages naming the key (`services.directory`, …).
pub fn service_url_problems(urls: &ServiceUrls) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, url) in urls.urls() {
        let Some(url) = url else { continue };
        if let Some(problem) = url_problem(url) {
            problems.push(format!("services.{key} {url:?}: {problem}"));
        }
    }
    if let Some(timeout) = urls.idle_timeout {
        if timeout > MAX_IDLE_TIMEOUT {
            problems.push(format!("services.idle_timeout {timeout} is over {MAX_IDLE_TIMEOUT} seconds"));
        }
        if urls.idle.is_none() {
            problems.push("services.idle_timeout needs services.idle, the URL shown when the phone is idle".into());
        }
    }
    problems
}

/// Why a phone cannot use `url` as a service URL, if it cannot.
fn url_problem(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    let Some(rest) = rest else {
        return Some("a service URL starts with http:// or https://".into());
    };
    if url.len() > MAX_SERVICE_URL {
        return Some(format!("longer than {MAX_SERVICE_URL} characters"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("spaces and control characters must be percent-encoded".into());
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Some("no host".into());
    }
    if authority.contains('@') {
        return Some(
            "credentials in a URL are shown on every phone and written to logs: leave user:password@ out".into(),
        );
    }
    None
}

/// The key of the cluster's SIP port that `port` is, if it is one: every node listens on both.
fn sip_port_taken(cluster: &Cluster, port: u16) -> Option<&'static str> {
    if port == cluster.sip_port {
        Some("sip_port")
    } else if port == cluster.secured_sip_port {
        Some("secured_sip_port")
    } else {
        None
    }
}

/// One call manager's problems, as messages naming the key; the caller names the call manager. A node's OAuth
/// ports are its own where it sets them, else the cluster's (whose own problems [`cluster_problems`] reports,
/// so a node that sets none has nothing to add).
pub fn call_manager_problems(cluster: &Cluster, cm: &CallManager) -> Vec<String> {
    let mut problems = Vec::new();
    if cm.address.trim().is_empty() {
        problems.push("address is empty: give the host name or address phones register to".into());
    }
    for (key, port) in [("sip_oauth_port", cm.sip_oauth_port), ("sip_mra_oauth_port", cm.sip_mra_oauth_port)] {
        let Some(port) = port else { continue };
        if !OAUTH_PORTS.contains(&port) {
            problems.push(format!("{key} {port} is outside {}-{}", OAUTH_PORTS.start(), OAUTH_PORTS.end()));
        }
        if let Some(sip_key) = sip_port_taken(cluster, port) {
            problems.push(format!(
                "{key} {port} is the node's {} (cluster {sip_key}): give the OAuth port a number of its own",
                if sip_key == "sip_port" { "SIP port" } else { "secure SIP port" }
            ));
        }
    }
    let ports = cm.oauth_ports(cluster);
    if cm.overrides_oauth_ports() && ports.sip == ports.mra {
        let from = |own: Option<u16>| if own.is_some() { "its own" } else { "the cluster's" };
        problems.push(format!(
            "sip_oauth_port ({}) and sip_mra_oauth_port ({}) are both {}: they must differ",
            from(cm.sip_oauth_port),
            from(cm.sip_mra_oauth_port),
            ports.sip
        ));
    }
    problems
}

/// CUCM's phone security profile rules, as messages naming the rule broken.
pub fn profile_problems(p: &Profile) -> Vec<String> {
    let mut problems = Vec::new();
    if model::phone_type(&p.phone_type).is_none() {
        problems.push(format!("unknown phone type {:?}", p.phone_type));
    }
    match p.security_mode {
        SecurityMode::NonSecure if p.transport == Transport::Tls => {
            problems.push("transport TLS needs device security mode authenticated or encrypted".into())
        }
        SecurityMode::Authenticated | SecurityMode::Encrypted if p.transport != Transport::Tls => {
            problems.push("device security mode authenticated and encrypted force transport TLS".into())
        }
        _ => {}
    }
    if p.oauth {
        if p.security_mode != SecurityMode::Encrypted {
            problems.push("OAuth authentication needs device security mode encrypted".into());
        }
        if p.transport != Transport::Tls {
            problems.push("OAuth authentication needs transport TLS".into());
        }
        if p.digest_authentication {
            problems.push("OAuth authentication cannot be combined with digest authentication".into());
        }
        if p.tftp_encrypted_config {
            problems.push("OAuth authentication cannot be combined with TFTP encrypted config".into());
        }
    } else if p.tftp_encrypted_config {
        // CUCM allows it without OAuth, but its phones then ask only for the encrypted file, which sipcfg never
        // serves (docs/decisions.md): such a profile describes phones sipcfg cannot configure.
        problems.push(
            "tftp_encrypted_config: sipcfg never serves TFTP-encrypted files (.cnf.xml.enc.sgn), so its phones \
             would get no configuration; set tftp_encrypted_config = false"
                .into(),
        );
    }
    problems
}

/// Whether `id` may name a user: 1 to 128 bytes (UTF-8), no `:` (it would be ambiguous in a token's subject)
/// and no control characters.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_USER_ID && !id.chars().any(|c| c.is_control() || c == ':')
}

/// The message for a user id that [`valid_user_id`] refuses.
pub const USER_ID_RULE: &str = "a user id is 1 to 128 bytes of text, without ':' or control characters";

/// A device's fields as they are checked against the rest of the inventory.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFields<'a> {
    /// The device's name, when it parsed.
    pub name: Option<&'a DeviceName>,
    pub model: &'a str,
    pub profile: &'a str,
    pub pool: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub lines: &'a [Line],
    pub allow_activation_code_via_mra: bool,
    pub mra_service_domain: &'a str,
    pub speed_dials: &'a [SpeedDial],
    pub blf_speed_dials: &'a [BlfSpeedDial],
    pub key_expansion_modules: usize,
    pub services: &'a ServiceUrls,
}

/// A rule a device breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceProblem {
    /// Not a phone type sipcfg knows; `suggestion` is one that differs only in letter case.
    UnknownModel {
        model: String,
        suggestion: Option<&'static str>,
    },
    /// The name's prefix is not the phone type's (`SEP` for hardware phones, `CSF`… for Jabber).
    WrongPrefix {
        model: &'static str,
        expected: Prefix,
        found: Prefix,
    },
    UnknownProfile {
        profile: String,
        suggestion: Option<String>,
    },
    /// CUCM profiles are per phone type.
    ProfileOfOtherType {
        profile: String,
        profile_type: String,
        model: &'static str,
    },
    UnknownOwner {
        owner: String,
        suggestion: Option<String>,
    },
    UnknownPool {
        pool: String,
        suggestion: Option<String>,
    },
    /// "Allow Activation Code via MRA" needs the "Activation Code MRA Service Domain".
    MraWithoutServiceDomain,
    /// "Allow Activation Code via MRA" on a device whose profile does not enable OAuth: over MRA a phone
    /// joins only with an activation code, and the code's tokens are SIP OAuth.
    MraWithoutOAuth {
        profile: String,
    },
    /// Line `line` (from 1) has no directory number.
    EmptyDirectoryNumber {
        line: usize,
    },
    /// More lines than the phone type carries.
    TooManyLines {
        model: &'static str,
        lines: usize,
        max: usize,
    },
    /// Speed dials or BLF speed dials on a type without line keys (a 7811, a conference phone, Jabber).
    NoLineKeys {
        model: &'static str,
        what: &'static str,
    },
    /// Key expansion modules on a type that takes fewer.
    TooManyModules {
        model: &'static str,
        modules: usize,
        max: usize,
    },
    /// Lines, speed dials and BLF speed dials need more buttons than the phone and its modules have.
    TooManyButtons {
        model: &'static str,
        used: usize,
        keys: usize,
        modules: usize,
        max_modules: usize,
    },
    /// A speed dial (`what` = "speed_dials") or BLF speed dial whose number or label breaks a rule.
    BadButton {
        what: &'static str,
        index: usize,
        problem: String,
    },
    /// Service URLs on a device of a type that does not use them (Jabber).
    ServicesNotSupported {
        model: &'static str,
    },
    /// A service URL of the device's own breaks a rule.
    BadServiceUrl(String),
}

impl fmt::Display for DeviceProblem {
    /// In the inventory's words (its keys); the import words the same problems in BAT column names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceProblem::UnknownModel { model, suggestion } => write!(
                f,
                "unknown model {model:?}{} (see docs/inventory.md for the supported phone types)",
                did_you_mean(*suggestion)
            ),
            DeviceProblem::WrongPrefix { model, expected, found } => {
                write!(f, "a {model} is named {expected}<…>, not {found}<…>")
            }
            DeviceProblem::UnknownProfile { profile, suggestion } => {
                write!(f, "unknown profile {profile:?}{}", did_you_mean(suggestion.as_deref()))
            }
            DeviceProblem::ProfileOfOtherType { profile, profile_type, model } => {
                write!(f, "profile {profile:?} belongs to phone type {profile_type:?}, not to {model:?}")
            }
            DeviceProblem::UnknownOwner { owner, suggestion } => {
                write!(f, "unknown owner user {owner:?}{}", did_you_mean(suggestion.as_deref()))
            }
            DeviceProblem::UnknownPool { pool, suggestion } => write!(
                f,
                "unknown pool {pool:?}{}: name a [device_pools.NAME] of the inventory, or leave pool out for the \
                 cluster's settings",
                did_you_mean(suggestion.as_deref())
            ),
            DeviceProblem::MraWithoutServiceDomain => {
                write!(f, "allow_activation_code_via_mra needs mra_service_domain")
            }
            DeviceProblem::MraWithoutOAuth { profile } => write!(
                f,
                "allow_activation_code_via_mra needs a profile with OAuth, and profile {profile:?} has oauth = false: \
                 give the device an OAuth profile, or remove allow_activation_code_via_mra"
            ),
            DeviceProblem::EmptyDirectoryNumber { line } => write!(f, "line {line}: dn must not be empty"),
            DeviceProblem::TooManyLines { model, lines, max } => {
                write!(f, "{lines} lines, and a {model} carries {max}{}", if *max == 1 { " line" } else { " at most" })
            }
            DeviceProblem::NoLineKeys { model, what } => write!(
                f,
                "{what}: a {model} has no line keys for speed dials or BLF buttons (see docs/inventory.md, \
                 \"What each phone type supports\")"
            ),
            DeviceProblem::TooManyModules { model, modules, max: 0 } => write!(
                f,
                "key_expansion_modules = {modules}, and a {model} takes no key expansion module (see docs/inventory.md)"
            ),
            DeviceProblem::TooManyModules { model, modules, max } => {
                write!(f, "key_expansion_modules = {modules}, and a {model} takes at most {max}")
            }
            DeviceProblem::TooManyButtons { model, used, keys, modules, max_modules } => {
                write!(
                    f,
                    "lines, speed_dials and blf_speed_dials need {used} buttons, and a {model} with {modules} key \
                     expansion modules has {keys}"
                )?;
                if modules < max_modules {
                    write!(f, ": add a module (it takes up to {max_modules}) or remove buttons")
                } else {
                    write!(f, ": remove buttons")
                }
            }
            DeviceProblem::BadButton { what, index, problem } => write!(f, "{what}[{index}]: {problem}"),
            DeviceProblem::ServicesNotSupported { model } => write!(
                f,
                "services: a {model} does not use phone service URLs (only hardware phones do); remove \
                 [devices.NAME.services]"
            ),
            DeviceProblem::BadServiceUrl(problem) => f.write_str(problem),
        }
    }
}

/// ` (did you mean "X"?)`, or nothing.
pub fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default()
}

/// Checks a device against the phone types and the inventory's profiles and users. Returns its phone type
/// when the model is known, and every rule it breaks.
pub fn check_device(
    device: DeviceFields<'_>,
    profiles: &BTreeMap<String, Profile>,
    users: &Users,
    pools: &BTreeMap<String, DevicePoolDoc>,
) -> (Option<&'static PhoneType>, Vec<DeviceProblem>) {
    let mut problems = Vec::new();
    let phone_type = model::phone_type(device.model);
    match phone_type {
        None => {
            let suggestion =
                model::PHONE_TYPES.iter().find(|t| t.name.eq_ignore_ascii_case(device.model)).map(|t| t.name);
            problems.push(DeviceProblem::UnknownModel { model: device.model.to_owned(), suggestion });
        }
        Some(t) => {
            // A placeholder (BAT…) stands for a hardware phone whose MAC is not known yet.
            let placeholder_ok = |name: &crate::provision::filename::DeviceName| {
                name.prefix() == model::Prefix::Bat && t.prefix == model::Prefix::Sep
            };
            if let Some(name) = device.name
                && name.prefix() != t.prefix
                && !placeholder_ok(name)
            {
                problems.push(DeviceProblem::WrongPrefix { model: t.name, expected: t.prefix, found: name.prefix() });
            }
        }
    }
    match profiles.get(device.profile) {
        None => {
            let suggestion = profiles.keys().find(|p| p.eq_ignore_ascii_case(device.profile)).cloned();
            problems.push(DeviceProblem::UnknownProfile { profile: device.profile.to_owned(), suggestion });
        }
        Some(p) => {
            if let Some(t) = phone_type
                && p.phone_type != t.name
            {
                problems.push(DeviceProblem::ProfileOfOtherType {
                    profile: device.profile.to_owned(),
                    profile_type: p.phone_type.clone(),
                    model: t.name,
                });
            }
            if device.allow_activation_code_via_mra && !p.oauth {
                problems.push(DeviceProblem::MraWithoutOAuth { profile: device.profile.to_owned() });
            }
        }
    }
    if let Some(owner) = device.owner
        && !users.contains_key(owner)
    {
        let suggestion = users.keys().find(|u| u.eq_ignore_ascii_case(owner)).cloned();
        problems.push(DeviceProblem::UnknownOwner { owner: owner.to_owned(), suggestion });
    }
    if let Some(pool) = device.pool
        && !pools.contains_key(pool)
    {
        let suggestion = suggest(pool, pools.keys().map(String::as_str)).map(str::to_owned);
        problems.push(DeviceProblem::UnknownPool { pool: pool.to_owned(), suggestion });
    }
    if device.allow_activation_code_via_mra && device.mra_service_domain.is_empty() {
        problems.push(DeviceProblem::MraWithoutServiceDomain);
    }
    for (i, line) in device.lines.iter().enumerate() {
        if line.dn.is_empty() {
            problems.push(DeviceProblem::EmptyDirectoryNumber { line: i + 1 });
        }
    }
    for (i, sd) in device.speed_dials.iter().enumerate() {
        for problem in button_problems("number", &sd.number, &sd.label) {
            problems.push(DeviceProblem::BadButton { what: "speed_dials", index: i + 1, problem });
        }
    }
    for (i, blf) in device.blf_speed_dials.iter().enumerate() {
        for problem in button_problems("destination", &blf.destination, &blf.label) {
            problems.push(DeviceProblem::BadButton { what: "blf_speed_dials", index: i + 1, problem });
        }
    }
    if let Some(t) = phone_type {
        problems.extend(feature_problems(t, &device));
    }
    problems.extend(service_url_problems(device.services).into_iter().map(DeviceProblem::BadServiceUrl));
    (phone_type, problems)
}

/// What the device asks of its phone type that the type does not have.
fn feature_problems(t: &'static PhoneType, device: &DeviceFields<'_>) -> Vec<DeviceProblem> {
    let features = t.features;
    let mut problems = Vec::new();
    let lines = device.lines.len();
    if lines > features.max_lines {
        problems.push(DeviceProblem::TooManyLines { model: t.name, lines, max: features.max_lines });
    }
    if features.line_keys == 0 {
        for (what, used) in
            [("speed_dials", device.speed_dials.len()), ("blf_speed_dials", device.blf_speed_dials.len())]
        {
            if used > 0 {
                problems.push(DeviceProblem::NoLineKeys { model: t.name, what });
            }
        }
    }
    let modules = device.key_expansion_modules;
    if modules > features.max_kems {
        problems.push(DeviceProblem::TooManyModules { model: t.name, modules, max: features.max_kems });
    } else if features.line_keys > 0 {
        let used = lines + device.speed_dials.len() + device.blf_speed_dials.len();
        let keys = features.line_keys + modules * model::KEM_KEYS;
        if used > keys {
            problems.push(DeviceProblem::TooManyButtons {
                model: t.name,
                used,
                keys,
                modules,
                max_modules: features.max_kems,
            });
        }
    }
    if !features.services && !device.services.is_empty() {
        problems.push(DeviceProblem::ServicesNotSupported { model: t.name });
    }
    problems
}

/// What is wrong with a speed dial's destination (`key` names it) and label.
fn button_problems(key: &str, destination: &str, label: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let uri = destination.strip_prefix("sip:").unwrap_or(destination);
    if destination.is_empty() {
        problems.push(format!("{key} must not be empty"));
    } else if destination.len() > MAX_BUTTON_TEXT {
        problems.push(format!("{key} is longer than {MAX_BUTTON_TEXT} characters"));
    } else if (!uri.contains('@') || uri.chars().any(|c| c.is_whitespace() || c.is_control()))
        && !destination.chars().all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | '+'))
    {
        problems.push(format!("{key} {destination:?}: a number is digits, *, # and + (or a SIP URI, user@host)"));
    }
    if label.chars().count() > MAX_BUTTON_TEXT {
        problems.push(format!("label is longer than {MAX_BUTTON_TEXT} characters"));
    }
    if label.chars().any(char::is_control) {
        problems.push("label must not hold control characters".into());
    }
    problems
}

/// The most call managers a CM group holds (CUCM: primary, secondary, tertiary).
pub const MAX_CM_GROUP: usize = 3;
/// The most NTP servers a date/time group names (CUCM's phone NTP references).
pub const MAX_NTP_SERVERS: usize = 5;

/// CUCM's date formats ("Date Format" of a date/time group); `dateTemplate` adds `a` for a 12-hour clock.
pub const DATE_FORMATS: [&str; 9] = ["M/D/Y", "D/M/Y", "Y/M/D", "M-D-Y", "D-M-Y", "Y-M-D", "M.D.Y", "D.M.Y", "Y.M.D"];

/// The time zones as Cisco phones name them in `timeZone` (the names CUCM's date/time groups render).
pub const TIME_ZONES: [&str; 54] = [
    "Dateline Standard Time",
    "Samoa Standard Time",
    "Hawaiian Standard Time",
    "Alaskan Standard/Daylight Time",
    "Pacific Standard/Daylight Time",
    "Mountain Standard/Daylight Time",
    "US Mountain Standard Time",
    "Central Standard/Daylight Time",
    "Mexico Standard/Daylight Time",
    "Canada Central Standard Time",
    "SA Pacific Standard Time",
    "Eastern Standard/Daylight Time",
    "US Eastern Standard Time",
    "Atlantic Standard/Daylight Time",
    "SA Western Standard Time",
    "Pacific SA Standard Time",
    "Newfoundland Standard/Daylight Time",
    "South America Standard/Daylight Time",
    "SA Eastern Standard Time",
    "Mid-Atlantic Standard/Daylight Time",
    "Azores Standard/Daylight Time",
    "GMT Standard/Daylight Time",
    "Greenwich Standard Time",
    "W. Europe Standard/Daylight Time",
    "GTB Standard/Daylight Time",
    "Egypt Standard/Daylight Time",
    "E. Europe Standard/Daylight Time",
    "Romance Standard/Daylight Time",
    "Central Europe Standard/Daylight Time",
    "South Africa Standard Time",
    "Jerusalem Standard/Daylight Time",
    "Saudi Arabia Standard Time",
    "Russian Standard/Daylight Time",
    "Iran Standard/Daylight Time",
    "Caucasus Standard/Daylight Time",
    "Arabian Standard Time",
    "Afghanistan Standard Time",
    "West Asia Standard Time",
    "Ekaterinburg Standard Time",
    "India Standard Time",
    "Central Asia Standard Time",
    "SE Asia Standard Time",
    "China Standard/Daylight Time",
    "Taipei Standard Time",
    "Tokyo Standard Time",
    "Cen. Australia Standard/Daylight Time",
    "AUS Central Standard Time",
    "E. Australia Standard Time",
    "AUS Eastern Standard/Daylight Time",
    "West Pacific Standard Time",
    "Tasmania Standard/Daylight Time",
    "Central Pacific Standard Time",
    "Fiji Standard Time",
    "New Zealand Standard/Daylight Time",
];

/// The candidate `name` was probably meant as: one that differs only in letter case, else the nearest within
/// a few typing mistakes.
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str> + Clone) -> Option<&'a str> {
    if let Some(c) = candidates.clone().find(|c| c.eq_ignore_ascii_case(name)) {
        return Some(c);
    }
    let limit = (name.chars().count() / 5).max(2);
    let lower = name.to_lowercase();
    candidates
        .map(|c| (edit_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The time zone `name` was probably meant as: also one with daylight saving time, which Cisco writes
/// `Standard/Daylight Time` (`Pacific Standard Time` → `Pacific Standard/Daylight Time`), or the only one
/// that starts with it (`Tokyo` → `Tokyo Standard Time`).
fn suggest_time_zone(name: &str) -> Option<&'static str> {
    let plain = |s: &str| s.to_lowercase().replace("/daylight", "").replace(' ', "");
    let wanted = plain(name);
    let lower = name.to_lowercase();
    let mut starting = TIME_ZONES.iter().copied().filter(|z| z.to_lowercase().starts_with(&format!("{lower} ")));
    let only_start = match (starting.next(), starting.next()) {
        (Some(z), None) => Some(z),
        _ => None,
    };
    TIME_ZONES
        .iter()
        .copied()
        .find(|z| plain(z) == wanted)
        .or(only_start)
        .or_else(|| suggest(name, TIME_ZONES.iter().copied()))
}

/// A CM group's problems, as messages naming the key and the fix; the caller names the group.
pub fn cm_group_problems(cluster: &Cluster, group: &CmGroupDoc) -> Vec<String> {
    let mut problems = Vec::new();
    let labels = || cluster.call_managers.iter().map(CallManager::label);
    let known = || labels().map(|l| format!("{l:?}")).collect::<Vec<_>>().join(", ");
    if group.call_managers.is_empty() {
        problems.push(format!(
            "call_managers is empty: list the group's call managers, the primary first (of [cluster] \
             call_managers: {})",
            known()
        ));
    }
    if group.call_managers.len() > MAX_CM_GROUP {
        problems.push(format!(
            "call_managers lists {} call managers; a CM group has at most {MAX_CM_GROUP} (primary, secondary, \
             tertiary): split the phones over several groups",
            group.call_managers.len()
        ));
    }
    for (i, name) in group.call_managers.iter().enumerate() {
        if group.call_managers[..i].contains(name) {
            problems
                .push(format!("call manager {name:?} is listed twice: list each call manager once, in priority order"));
            continue;
        }
        match labels().filter(|l| l == name).count() {
            1 => {}
            0 => problems.push(format!(
                "unknown call manager {name:?}{}: name one of [cluster] call_managers by its name (its address \
                 when it has none): {}",
                did_you_mean(suggest(name, labels())),
                known()
            )),
            n => problems.push(format!(
                "call manager {name:?} names {n} call managers of [cluster] call_managers: give them distinct names"
            )),
        }
    }
    problems
}

/// A date/time group's problems, as messages naming the key and the fix; the caller names the group.
pub fn date_time_group_problems(group: &DateTimeGroupDoc) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(zone) = &group.time_zone
        && !TIME_ZONES.contains(&zone.as_str())
    {
        problems.push(format!(
            "unknown time_zone {zone:?}{}: use a time zone as Cisco phones name it (docs/inventory.md lists them)",
            did_you_mean(suggest_time_zone(zone))
        ));
    }
    if let Some(format) = &group.date_format
        && !DATE_FORMATS.contains(&format.as_str())
    {
        let hint = match format.strip_suffix('a') {
            Some(date) if DATE_FORMATS.contains(&date) => {
                format!(": write date_format = {date:?} and time_format = \"12-hour\"")
            }
            _ => format!(
                "{}: use one of {}",
                did_you_mean(suggest(format, DATE_FORMATS.iter().copied())),
                DATE_FORMATS.join(", ")
            ),
        };
        problems.push(format!("unknown date_format {format:?}{hint}"));
    }
    if let Some(servers) = &group.ntp_servers {
        if servers.len() > MAX_NTP_SERVERS {
            problems.push(format!(
                "ntp_servers lists {} servers; a date/time group has at most {MAX_NTP_SERVERS}",
                servers.len()
            ));
        }
        for (i, server) in servers.iter().enumerate() {
            if server.trim().is_empty() {
                problems.push(format!("ntp_servers: server {} is empty: give a host name or address", i + 1));
            } else if servers[..i].contains(server) {
                problems.push(format!("ntp_servers: {server:?} is listed twice"));
            }
        }
    }
    problems
}

/// A device pool's problems (the groups it names), as messages naming the key and the fix; the caller names
/// the pool.
pub fn device_pool_problems(pools: &Pools, pool: &DevicePoolDoc) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(group) = &pool.cm_group
        && !pools.cm_groups.contains_key(group)
    {
        problems.push(format!(
            "unknown cm_group {group:?}{}: name a [cm_groups.NAME] of the inventory, or leave cm_group out for \
             the cluster's call managers",
            did_you_mean(suggest(group, pools.cm_groups.keys().map(String::as_str)))
        ));
    }
    if let Some(group) = &pool.date_time_group
        && !pools.date_time_groups.contains_key(group)
    {
        problems.push(format!(
            "unknown date_time_group {group:?}{}: name a [date_time_groups.NAME] of the inventory, or leave \
             date_time_group out for the cluster's date and time settings",
            did_you_mean(suggest(group, pools.date_time_groups.keys().map(String::as_str)))
        ));
    }
    for (key, value) in [("user_locale", &pool.user_locale), ("network_locale", &pool.network_locale)] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            problems.push(format!("{key} is empty: name a locale, or leave {key} out for the cluster's"));
        }
    }
    problems.extend(service_url_problems(&pool.services));
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Cluster {
        toml::from_str(
            "name = \"c\"\ncall_managers = [{ address = \"pub.example.test\", name = \"pub\" }, \
             { address = \"sub1.example.test\", name = \"sub1\" }, { address = \"sub2.example.test\" }]",
        )
        .unwrap()
    }

    fn group(names: &[&str]) -> CmGroupDoc {
        CmGroupDoc { call_managers: names.iter().map(|n| (*n).to_owned()).collect(), description: String::new() }
    }

    #[test]
    fn a_cm_group_names_known_call_managers_once_and_not_too_many() {
        let cluster = cluster();
        assert!(cm_group_problems(&cluster, &group(&["sub1", "pub", "sub2.example.test"])).is_empty());
        assert_eq!(
            cm_group_problems(&cluster, &group(&[])),
            ["call_managers is empty: list the group's call managers, the primary first (of [cluster] \
              call_managers: \"pub\", \"sub1\", \"sub2.example.test\")"]
        );
        assert_eq!(
            cm_group_problems(&cluster, &group(&["pub", "sbu1", "pub"])),
            [
                "unknown call manager \"sbu1\" (did you mean \"sub1\"?): name one of [cluster] call_managers by its \
                 name (its address when it has none): \"pub\", \"sub1\", \"sub2.example.test\"",
                "call manager \"pub\" is listed twice: list each call manager once, in priority order",
            ]
        );
        assert_eq!(
            cm_group_problems(&cluster, &group(&["pub", "sub1", "sub2.example.test", "PUB"]))[0],
            "call_managers lists 4 call managers; a CM group has at most 3 (primary, secondary, tertiary): split \
             the phones over several groups"
        );
        assert!(cm_group_problems(&cluster, &group(&["nowhere"]))[0].starts_with("unknown call manager \"nowhere\": "));
    }

    #[test]
    fn a_date_time_group_has_a_cisco_time_zone_and_a_cucm_date_format() {
        let ok = DateTimeGroupDoc {
            time_zone: Some("Pacific Standard/Daylight Time".into()),
            date_format: Some("M/D/Y".into()),
            time_format: Some(crate::provision::inventory::TimeFormat::Hour12),
            ntp_servers: Some(vec!["ntp.example.test".into()]),
            description: String::new(),
        };
        assert!(date_time_group_problems(&ok).is_empty());
        assert!(date_time_group_problems(&DateTimeGroupDoc::default()).is_empty(), "every key is the cluster's");
        let bad = DateTimeGroupDoc {
            time_zone: Some("Pacific Standard Time".into()),
            date_format: Some("M/D/Ya".into()),
            ntp_servers: Some(vec!["a".into(), " ".into(), "a".into()]),
            ..ok.clone()
        };
        assert_eq!(
            date_time_group_problems(&bad),
            [
                "unknown time_zone \"Pacific Standard Time\" (did you mean \"Pacific Standard/Daylight Time\"?): use \
                 a time zone as Cisco phones name it (docs/inventory.md lists them)",
                "unknown date_format \"M/D/Ya\": write date_format = \"M/D/Y\" and time_format = \"12-hour\"",
                "ntp_servers: server 2 is empty: give a host name or address",
                "ntp_servers: \"a\" is listed twice",
            ]
        );
        let typo = DateTimeGroupDoc {
            time_zone: Some("central europe standard/daylight time".into()),
            date_format: Some("DD/MM/YY".into()),
            ..DateTimeGroupDoc::default()
        };
        let problems = date_time_group_problems(&typo);
        assert!(problems[0].contains("(did you mean \"Central Europe Standard/Daylight Time\"?)"), "{problems:?}");
        assert!(problems[1].starts_with("unknown date_format \"DD/MM/YY\": use one of M/D/Y, D/M/Y"), "{problems:?}");
        let many = DateTimeGroupDoc {
            ntp_servers: Some((1..=6).map(|i| format!("ntp{i}.example.test")).collect()),
            ..DateTimeGroupDoc::default()
        };
        assert_eq!(date_time_group_problems(&many), ["ntp_servers lists 6 servers; a date/time group has at most 5"]);
    }

    #[test]
    fn a_device_pool_names_groups_of_the_inventory() {
        let mut pools = Pools::default();
        pools.cm_groups.insert("West".into(), group(&["pub"]));
        pools.date_time_groups.insert("Pacific".into(), DateTimeGroupDoc::default());
        let ok = DevicePoolDoc {
            cm_group: Some("West".into()),
            date_time_group: Some("Pacific".into()),
            ..DevicePoolDoc::default()
        };
        assert!(device_pool_problems(&pools, &ok).is_empty());
        assert!(device_pool_problems(&pools, &DevicePoolDoc::default()).is_empty(), "every key is the cluster's");
        let bad = DevicePoolDoc {
            cm_group: Some("west".into()),
            date_time_group: Some("Pacfic".into()),
            user_locale: Some(String::new()),
            ..DevicePoolDoc::default()
        };
        assert_eq!(
            device_pool_problems(&pools, &bad),
            [
                "unknown cm_group \"west\" (did you mean \"West\"?): name a [cm_groups.NAME] of the inventory, or \
                 leave cm_group out for the cluster's call managers",
                "unknown date_time_group \"Pacfic\" (did you mean \"Pacific\"?): name a [date_time_groups.NAME] of \
                 the inventory, or leave date_time_group out for the cluster's date and time settings",
                "user_locale is empty: name a locale, or leave user_locale out for the cluster's",
            ]
        );
    }

    #[test]
    fn suggestions_are_a_letter_case_or_a_few_typing_mistakes_away() {
        let names = ["Site-A", "Site-B", "Headquarters"];
        assert_eq!(suggest("site-a", names.iter().copied()), Some("Site-A"));
        assert_eq!(suggest("Headquaters", names.iter().copied()), Some("Headquarters"));
        assert_eq!(suggest("Branch", names.iter().copied()), None);
    }
}
