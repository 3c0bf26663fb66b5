//! The inventory's rules, in one place: what makes a cluster, a phone security profile, a user and a device
//! valid (CUCM's own rules where it has them). The inventory loader ([`crate::provision::inventory`]) and the
//! BAT import ([`crate::provision::import`]) both check with these functions; each words a broken rule in
//! its own vocabulary (inventory keys, or the columns of a BAT file) from the typed problem.

use std::collections::BTreeMap;
use std::fmt;

use crate::provision::filename::DeviceName;
use crate::provision::inventory::{CallManager, Cluster, Line, Profile, SecurityMode, Transport, Users};
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
    problems
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
    pub owner: Option<&'a str>,
    pub lines: &'a [Line],
    pub allow_activation_code_via_mra: bool,
    pub mra_service_domain: &'a str,
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
            DeviceProblem::MraWithoutServiceDomain => {
                write!(f, "allow_activation_code_via_mra needs mra_service_domain")
            }
            DeviceProblem::MraWithoutOAuth { profile } => write!(
                f,
                "allow_activation_code_via_mra needs a profile with OAuth, and profile {profile:?} has oauth = false: \
                 give the device an OAuth profile, or remove allow_activation_code_via_mra"
            ),
            DeviceProblem::EmptyDirectoryNumber { line } => write!(f, "line {line}: dn must not be empty"),
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
    if device.allow_activation_code_via_mra && device.mra_service_domain.is_empty() {
        problems.push(DeviceProblem::MraWithoutServiceDomain);
    }
    for (i, line) in device.lines.iter().enumerate() {
        if line.dn.is_empty() {
            problems.push(DeviceProblem::EmptyDirectoryNumber { line: i + 1 });
        }
    }
    (phone_type, problems)
}
