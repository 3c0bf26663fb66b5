//! Device pools, CM groups and date/time groups (CUCM's Device Pool, Cisco Unified CM Group and Date/Time
//! Group) changed one at a time, by the management API (through [`crate::app::manage`]) and by the commands
//! `sipcfg device-pool`, `cm-group` and `date-time-group`. Each change is an inventory edit
//! ([`Site::edit_inventory`]): checked as a whole inventory (a pool naming an unknown CM group is refused with
//! the inventory's own message), written where the inventory lives (the file, comments kept, or the shared
//! store's cluster document). A removal is refused while something still uses the entry, naming some of the
//! users, so that nobody learns of it from a list of "unknown pool" errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::app::site::{Site, SiteError};
use crate::config::Config;
use crate::provision::edit::Edits;
use crate::provision::inventory::{CmGroupDoc, DateTimeGroupDoc, DevicePoolDoc, Inventory, Pools};
use crate::provision::rules::{did_you_mean, suggest};

/// How many users a refused removal names; the message gives the count of the others.
const NAMED_USERS: usize = 5;
/// CUCM's longest name of a device pool, CM group or date/time group.
pub const MAX_NAME: usize = 50;

/// The three kinds of entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    DevicePool,
    CmGroup,
    DateTimeGroup,
}

impl PoolKind {
    /// How messages name one, as CUCM's menus do.
    pub fn label(self) -> &'static str {
        match self {
            PoolKind::DevicePool => "device pool",
            PoolKind::CmGroup => "CM group",
            PoolKind::DateTimeGroup => "date/time group",
        }
    }

    /// The audit trail's action prefix (`device-pool.create`), and the command's name.
    pub fn action(self) -> &'static str {
        match self {
            PoolKind::DevicePool => "device-pool",
            PoolKind::CmGroup => "cm-group",
            PoolKind::DateTimeGroup => "date-time-group",
        }
    }

    /// The inventory's table (`[device_pools."NAME"]`).
    pub fn table(self) -> &'static str {
        match self {
            PoolKind::DevicePool => "device_pools",
            PoolKind::CmGroup => "cm_groups",
            PoolKind::DateTimeGroup => "date_time_groups",
        }
    }
}

/// A device pool, a CM group or a date/time group, as the inventory stores it.
pub trait PoolEntry: Clone + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: PoolKind;
    /// The entries of this kind, by name.
    fn of(pools: &Pools) -> &BTreeMap<String, Self>;
    /// The edit that puts (`Some`) or removes the entry.
    fn edits(name: &str, doc: Option<Self>) -> Edits;
}

impl PoolEntry for DevicePoolDoc {
    const KIND: PoolKind = PoolKind::DevicePool;
    fn of(pools: &Pools) -> &BTreeMap<String, Self> {
        &pools.device_pools
    }
    fn edits(name: &str, doc: Option<Self>) -> Edits {
        Edits::device_pool(name, doc)
    }
}

impl PoolEntry for CmGroupDoc {
    const KIND: PoolKind = PoolKind::CmGroup;
    fn of(pools: &Pools) -> &BTreeMap<String, Self> {
        &pools.cm_groups
    }
    fn edits(name: &str, doc: Option<Self>) -> Edits {
        Edits::cm_group(name, doc)
    }
}

impl PoolEntry for DateTimeGroupDoc {
    const KIND: PoolKind = PoolKind::DateTimeGroup;
    fn of(pools: &Pools) -> &BTreeMap<String, Self> {
        &pools.date_time_groups
    }
    fn edits(name: &str, doc: Option<Self>) -> Edits {
        Edits::date_time_group(name, doc)
    }
}

/// What uses an entry: the devices that name a device pool (by name, sorted), the device pools that name a
/// group (sorted).
pub fn users_of(inventory: &Inventory, kind: PoolKind, name: &str) -> Vec<String> {
    let pools = &inventory.pools.device_pools;
    let mut users: Vec<String> = match kind {
        PoolKind::DevicePool => {
            inventory.devices.values().filter(|d| d.pool.as_deref() == Some(name)).map(|d| d.name.to_string()).collect()
        }
        PoolKind::CmGroup => {
            pools.iter().filter(|(_, p)| p.cm_group.as_deref() == Some(name)).map(|(n, _)| n.clone()).collect()
        }
        PoolKind::DateTimeGroup => {
            pools.iter().filter(|(_, p)| p.date_time_group.as_deref() == Some(name)).map(|(n, _)| n.clone()).collect()
        }
    };
    users.sort();
    users
}

/// Why an entry cannot be removed while `users` use it; `None` when nothing does.
pub fn in_use(kind: PoolKind, name: &str, users: &[String]) -> Option<String> {
    if users.is_empty() {
        return None;
    }
    let them = if users.len() == 1 { "it" } else { "them" };
    let (what, then) = match kind {
        PoolKind::DevicePool => ("device", format!("move {them} to another pool (or to none) first")),
        _ => ("device pool", format!("give {them} another group (or none) first")),
    };
    let mut named: Vec<String> = users
        .iter()
        .take(NAMED_USERS)
        .map(|u| if kind == PoolKind::DevicePool { u.clone() } else { format!("{u:?}") })
        .collect();
    if users.len() > NAMED_USERS {
        named.push(format!("and {} more", users.len() - NAMED_USERS));
    }
    Some(format!(
        "{} {name:?} is used by {} {what}{} ({}): {then}",
        kind.label(),
        users.len(),
        if users.len() == 1 { "" } else { "s" },
        named.join(", ")
    ))
}

/// "no device pool named …", with a suggestion when a name is close.
pub fn not_found<T: PoolEntry>(inventory: &Inventory, name: &str) -> String {
    let names = T::of(&inventory.pools).keys().map(String::as_str);
    format!("no {} named {name:?}{}", T::KIND.label(), did_you_mean(suggest(name, names)))
}

/// Why a new entry may not have this name, if it may not: CUCM's rule (1 to 50 letters, digits, spaces,
/// periods, hyphens and underscores, no space at either end). Entries that exist keep their names.
pub fn name_problem(kind: PoolKind, name: &str) -> Option<String> {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, ' ' | '.' | '-' | '_');
    let ok = !name.is_empty() && name.chars().count() <= MAX_NAME && name.chars().all(allowed) && name.trim() == name;
    (!ok).then(|| {
        format!(
            "{} name {name:?}: give 1 to {MAX_NAME} letters, digits, spaces, periods, hyphens or underscores, \
             without a space at either end (as CUCM does)",
            kind.label()
        )
    })
}

/// The entry's keys for the audit trail: `cm_group = "CMG Paris", date_time_group = "Paris"`.
pub fn describe<T: PoolEntry>(doc: &T) -> String {
    toml::to_string(doc).map(|t| t.lines().collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("{0}")]
    NotFound(String),
    /// A removal refused: the message names the users.
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    BadName(String),
    /// A new name that only the letter case tells from an entry's.
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    Site(#[from] SiteError),
}

/// Creates or replaces an entry, checked as a whole inventory; `true` when it was created. Returns the
/// inventory as it now is.
pub async fn put<T: PoolEntry>(
    site: &Site,
    config: &Config,
    name: &str,
    doc: T,
    actor: &str,
) -> Result<(Inventory, bool), PoolError> {
    let current = site.inventory(config).await?;
    let entries = T::of(&current.pools);
    if !entries.contains_key(name) {
        if let Some(problem) = name_problem(T::KIND, name) {
            return Err(PoolError::BadName(problem));
        }
        // CUCM's names are unique whatever their letter case: a second "dp paris" beside "DP Paris" is a typo.
        if let Some(other) = entries.keys().find(|k| k.to_lowercase() == name.to_lowercase()) {
            return Err(PoolError::Exists(format!(
                "a {} named {other:?} exists: change it under that name (names differ only in letter case)",
                T::KIND.label()
            )));
        }
    }
    let created = AtomicBool::new(false);
    let inventory = site
        .edit_inventory(config, &T::edits(name, Some(doc)), actor, |before, _| {
            created.store(!T::of(&before.pools).contains_key(name), Ordering::Relaxed);
            Ok(())
        })
        .await?;
    Ok((inventory, created.load(Ordering::Relaxed)))
}

/// Removes an entry: refused while a device uses the pool, or a pool the group. Returns the inventory as it
/// now is.
pub async fn remove<T: PoolEntry>(
    site: &Site,
    config: &Config,
    name: &str,
    actor: &str,
) -> Result<Inventory, PoolError> {
    let current = site.inventory(config).await?;
    if !T::of(&current.pools).contains_key(name) {
        return Err(PoolError::NotFound(not_found::<T>(&current, name)));
    }
    if let Some(refusal) = in_use(T::KIND, name, &users_of(&current, T::KIND, name)) {
        return Err(PoolError::InUse(refusal));
    }
    // A device moved into the pool meanwhile makes the result invalid: refused by the whole-inventory check.
    Ok(site.edit_inventory(config, &T::edits(name, None), actor, |_, _| Ok(())).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_removal_names_some_users_and_counts_the_others() {
        let devices: Vec<String> = (0..12).map(|i| format!("SEP0000000000{i:02}")).collect();
        let m = in_use(PoolKind::DevicePool, "paris", &devices).unwrap();
        assert!(m.starts_with("device pool \"paris\" is used by 12 devices (SEP000000000000, "), "{m}");
        assert!(m.contains("and 7 more): move them"), "{m}");
        let m = in_use(PoolKind::CmGroup, "CMG Paris", &["DP Paris".to_owned()]).unwrap();
        assert_eq!(
            m,
            "CM group \"CMG Paris\" is used by 1 device pool (\"DP Paris\"): give it another group (or none) first"
        );
        assert_eq!(in_use(PoolKind::DateTimeGroup, "x", &[]), None);
    }

    #[test]
    fn new_names_follow_cucm() {
        assert_eq!(name_problem(PoolKind::DevicePool, "DP Paris-2_b.x"), None);
        for bad in ["", " DP", "DP ", "a/b", "a\"b", "a\nb", &"x".repeat(51)] {
            assert!(name_problem(PoolKind::CmGroup, bad).is_some_and(|m| m.starts_with("CM group name")), "{bad:?}");
        }
    }
}
