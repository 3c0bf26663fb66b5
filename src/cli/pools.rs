//! `sipcfg device-pool`, `sipcfg cm-group` and `sipcfg date-time-group`: CUCM's System > Device Pool, Cisco
//! Unified CM Group and Date/Time Group without editing the inventory by hand, on one server (the inventory
//! file, comments kept) or in a cluster (the shared store, which the nodes follow). `set` creates an entry or
//! changes the keys it is given; `remove` is refused while something uses the entry. Each change is checked
//! as a whole inventory and audited ([`crate::app::pools`]).

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;

use crate::app::pools::{self, PoolEntry, PoolError};
use crate::app::site::actor;
use crate::cli::{ConfigArg, block_on, load_config, open_site, site_inventory};
use crate::provision::inventory::{CmGroupDoc, DateTimeGroupDoc, DevicePoolDoc, Inventory, ServiceUrls, TimeFormat};

// Parsed once per command: the size of the `Set` variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum DevicePoolAction {
    /// List the device pools: name, CM group, date/time group, locales, and how many devices use each.
    List,
    /// Print a device pool as the inventory stores it, and the devices that use it.
    Show {
        /// The pool's name, e.g. "DP Paris".
        name: String,
    },
    /// Create a device pool, or change the keys given of one that exists. An empty value ("") removes the
    /// key: the pool then takes the cluster's.
    Set {
        /// The pool's name: for a new pool, 1 to 50 letters, digits, spaces, periods, hyphens, underscores.
        name: String,
        /// Its CM group (`sipcfg cm-group list`): the call managers of its phones.
        #[arg(long, value_name = "GROUP")]
        cm_group: Option<String>,
        /// Its date/time group (`sipcfg date-time-group list`).
        #[arg(long, value_name = "GROUP")]
        date_time_group: Option<String>,
        /// CUCM's "User Locale", e.g. French_France.
        #[arg(long, value_name = "LOCALE")]
        user_locale: Option<String>,
        /// CUCM's "Network Locale", e.g. France.
        #[arg(long, value_name = "LOCALE")]
        network_locale: Option<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// The pool's phone service URLs (docs/inventory.md, "Phone service URLs"); each left out is the
        /// cluster's.
        #[command(flatten)]
        services: ServiceOptions,
    },
    /// Remove a device pool (refused while a device uses it).
    Remove {
        /// The pool's name.
        name: String,
    },
}

/// Phone service URL options: a value sets the key, an empty value ("") removes it.
#[derive(clap::Args, Debug, Default)]
pub struct ServiceOptions {
    /// `directoryURL`: the Directories button.
    #[arg(long, value_name = "URL")]
    pub directory_url: Option<String>,
    /// `servicesURL`: the Services button.
    #[arg(long, value_name = "URL")]
    pub services_url: Option<String>,
    /// `idleURL`: shown after --idle-timeout seconds without use.
    #[arg(long, value_name = "URL")]
    pub idle_url: Option<String>,
    /// `idleTimeout`, seconds (0-86400); needs an idle URL. An empty value removes it.
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<String>,
    /// `authenticationURL`.
    #[arg(long, value_name = "URL")]
    pub authentication_url: Option<String>,
    /// `informationURL`: the help button.
    #[arg(long, value_name = "URL")]
    pub information_url: Option<String>,
    /// `messagesURL`: the Messages button.
    #[arg(long, value_name = "URL")]
    pub messages_url: Option<String>,
}

impl ServiceOptions {
    /// `urls` with the options given applied.
    pub fn apply(self, urls: &mut ServiceUrls) -> Result<(), String> {
        set_key(&mut urls.directory, self.directory_url);
        set_key(&mut urls.services, self.services_url);
        set_key(&mut urls.idle, self.idle_url);
        set_key(&mut urls.authentication, self.authentication_url);
        set_key(&mut urls.information, self.information_url);
        set_key(&mut urls.messages, self.messages_url);
        if let Some(t) = self.idle_timeout {
            urls.idle_timeout = match t.trim() {
                "" => None,
                t => Some(t.parse().map_err(|_| format!("--idle-timeout {t:?}: a number of seconds, 0-86400"))?),
            };
        }
        Ok(())
    }
}

#[derive(Subcommand, Debug)]
pub enum CmGroupAction {
    /// List the CM groups: name, call managers in priority order, and the device pools that use each.
    List,
    /// Print a CM group as the inventory stores it, and the device pools that use it.
    Show {
        /// The group's name, e.g. "CMG Paris".
        name: String,
    },
    /// Create a CM group, or change the keys given of one that exists.
    Set {
        /// The group's name: for a new group, 1 to 50 letters, digits, spaces, periods, hyphens, underscores.
        name: String,
        /// 1 to 3 call managers of [cluster] call_managers, by name, the primary first: a,b,c. Required for a
        /// new group.
        #[arg(long, value_name = "A,B,C")]
        call_managers: Option<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove a CM group (refused while a device pool names it).
    Remove {
        /// The group's name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DateTimeGroupAction {
    /// List the date/time groups: name, time zone, date and time formats, NTP servers, and the device pools
    /// that use each.
    List,
    /// Print a date/time group as the inventory stores it, and the device pools that use it.
    Show {
        /// The group's name, e.g. Paris.
        name: String,
    },
    /// Create a date/time group, or change the keys given of one that exists. An empty value ("") removes
    /// the key: the group then takes the cluster's.
    Set {
        /// The group's name: for a new group, 1 to 50 letters, digits, spaces, periods, hyphens, underscores.
        name: String,
        /// A time zone as Cisco phones name it, e.g. "Central Standard/Daylight Time" (docs/inventory.md).
        #[arg(long, value_name = "ZONE")]
        time_zone: Option<String>,
        /// CUCM's "Date Format": M/D/Y, D/M/Y, Y/M/D, or the same with - or . between.
        #[arg(long, value_name = "FORMAT")]
        date_format: Option<String>,
        /// CUCM's "Time Format".
        #[arg(long, value_name = "FORMAT", value_parser = ["12-hour", "24-hour", ""])]
        time_format: Option<String>,
        /// CUCM's "Phone NTP References", in order (at most 5): a,b.
        #[arg(long, value_name = "A,B")]
        ntp_servers: Option<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// Remove a date/time group (refused while a device pool names it).
    Remove {
        /// The group's name.
        name: String,
    },
}

/// What one of the three commands is asked, whatever the kind; `Set` carries how the options change an
/// entry (`None` when it is new).
enum Op<T> {
    List,
    Show(String),
    Set(String, Box<dyn FnOnce(Option<T>) -> Result<T, String> + Send>),
    Remove(String),
}

/// How lists show an entry of a kind.
trait Listed: PoolEntry {
    /// The list's columns after the name.
    fn columns(&self) -> String;
}

fn or_cluster(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(cluster's)")
}

impl Listed for DevicePoolDoc {
    fn columns(&self) -> String {
        format!(
            "cm_group {:<20} date_time_group {:<20} locales {}, {}",
            or_cluster(&self.cm_group),
            or_cluster(&self.date_time_group),
            or_cluster(&self.user_locale),
            or_cluster(&self.network_locale)
        )
    }
}

impl Listed for CmGroupDoc {
    fn columns(&self) -> String {
        self.call_managers.join(", ")
    }
}

impl Listed for DateTimeGroupDoc {
    fn columns(&self) -> String {
        let time = match self.time_format {
            Some(TimeFormat::Hour12) => "12-hour",
            Some(TimeFormat::Hour24) => "24-hour",
            None => "(cluster's)",
        };
        let ntp = self.ntp_servers.as_ref().map(|n| n.join(", "));
        format!(
            "{:<37} {} {time}  ntp {}",
            or_cluster(&self.time_zone),
            or_cluster(&self.date_format),
            or_cluster(&ntp)
        )
    }
}

/// Sets `slot` from an option: its value, or no key for an empty value; without the option, as it was.
fn set_key(slot: &mut Option<String>, option: Option<String>) {
    if let Some(v) = option {
        *slot = (!v.is_empty()).then_some(v);
    }
}

/// `a, b,c` as a list; `None` for an empty value.
fn list(value: &str) -> Option<Vec<String>> {
    let items: Vec<String> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
    (!items.is_empty()).then_some(items)
}

pub(crate) fn device_pool(arg: &ConfigArg, action: DevicePoolAction) -> Result<ExitCode, String> {
    let op = match action {
        DevicePoolAction::List => Op::List,
        DevicePoolAction::Show { name } => Op::Show(name),
        DevicePoolAction::Remove { name } => Op::Remove(name),
        DevicePoolAction::Set {
            name,
            cm_group,
            date_time_group,
            user_locale,
            network_locale,
            description,
            services,
        } => Op::Set(
            name,
            Box::new(move |was: Option<DevicePoolDoc>| {
                let mut doc = was.unwrap_or_default();
                services.apply(&mut doc.services)?;
                set_key(&mut doc.cm_group, cm_group);
                set_key(&mut doc.date_time_group, date_time_group);
                set_key(&mut doc.user_locale, user_locale);
                set_key(&mut doc.network_locale, network_locale);
                if let Some(d) = description {
                    doc.description = d;
                }
                Ok(doc)
            }),
        ),
    };
    block_on(run(arg, op))?
}

pub(crate) fn cm_group(arg: &ConfigArg, action: CmGroupAction) -> Result<ExitCode, String> {
    let op = match action {
        CmGroupAction::List => Op::List,
        CmGroupAction::Show { name } => Op::Show(name),
        CmGroupAction::Remove { name } => Op::Remove(name),
        CmGroupAction::Set { name, call_managers, description } => Op::Set(
            name,
            Box::new(move |was: Option<CmGroupDoc>| {
                let mut doc = match (was, call_managers.as_deref().map(list)) {
                    (_, Some(None)) => {
                        return Err(
                            "--call-managers is empty: list the group's call managers, the primary first".into()
                        );
                    }
                    (None, None) => return Err("a new CM group needs --call-managers a,b,c (the primary first)".into()),
                    (Some(was), None) => was,
                    (Some(mut was), Some(Some(list))) => {
                        was.call_managers = list;
                        was
                    }
                    (None, Some(Some(list))) => CmGroupDoc { call_managers: list, description: String::new() },
                };
                if let Some(d) = description {
                    doc.description = d;
                }
                Ok(doc)
            }),
        ),
    };
    block_on(run(arg, op))?
}

pub(crate) fn date_time_group(arg: &ConfigArg, action: DateTimeGroupAction) -> Result<ExitCode, String> {
    let op = match action {
        DateTimeGroupAction::List => Op::List,
        DateTimeGroupAction::Show { name } => Op::Show(name),
        DateTimeGroupAction::Remove { name } => Op::Remove(name),
        DateTimeGroupAction::Set { name, time_zone, date_format, time_format, ntp_servers, description } => Op::Set(
            name,
            Box::new(move |was: Option<DateTimeGroupDoc>| {
                let mut doc = was.unwrap_or_default();
                set_key(&mut doc.time_zone, time_zone);
                set_key(&mut doc.date_format, date_format);
                match time_format.as_deref() {
                    Some("12-hour") => doc.time_format = Some(TimeFormat::Hour12),
                    Some("24-hour") => doc.time_format = Some(TimeFormat::Hour24),
                    Some(_) => doc.time_format = None,
                    None => {}
                }
                if let Some(v) = ntp_servers {
                    doc.ntp_servers = list(&v);
                }
                if let Some(d) = description {
                    doc.description = d;
                }
                Ok(doc)
            }),
        ),
    };
    block_on(run(arg, op))?
}

/// The entry as the inventory file writes it: `[device_pools."DP Paris"]` and its keys.
fn as_toml<T: PoolEntry>(name: &str, doc: &T) -> String {
    let table = BTreeMap::from([(T::KIND.table(), BTreeMap::from([(name, doc)]))]);
    toml::to_string(&table).unwrap_or_default()
}

/// What uses an entry, for people: `3 device(s)` or `2 device pool(s)`.
fn usage<T: PoolEntry>(inventory: &Inventory, name: &str) -> (Vec<String>, String) {
    let users = pools::users_of(inventory, T::KIND, name);
    let what = match T::KIND {
        pools::PoolKind::DevicePool => "device(s)",
        _ => "device pool(s)",
    };
    let said = format!("{} {what}", users.len());
    (users, said)
}

async fn run<T: Listed>(arg: &ConfigArg, op: Op<T>) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let site = open_site(&config)?;
    let inventory = site_inventory(&site, &config).await?;
    let location = site.inventory_location(&config);
    let (kind, entries) = (T::KIND, T::of(&inventory.pools));
    let failed = |e: PoolError| match e {
        PoolError::Site(e) => format!("nothing written: {e}"),
        other => format!("{location}: {other}; nothing written"),
    };
    match op {
        Op::List => {
            let width = entries.keys().map(|n| n.chars().count()).max().unwrap_or(0).max(4);
            for (name, doc) in entries {
                let (_, used) = usage::<T>(&inventory, name);
                println!("{name:<width$}  {}  used by {used}", doc.columns());
            }
            eprintln!("{} {}(s) in {location}", entries.len(), kind.label());
            Ok(ExitCode::SUCCESS)
        }
        Op::Show(name) => {
            let doc = entries.get(&name).ok_or_else(|| {
                format!(
                    "{location}: {} (`sipcfg {} list` lists them)",
                    pools::not_found::<T>(&inventory, &name),
                    kind.action()
                )
            })?;
            print!("{}", as_toml(&name, doc));
            let (users, used) = usage::<T>(&inventory, &name);
            println!("# used by {used}{}{}", if users.is_empty() { "" } else { ": " }, users.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Op::Set(name, change) => {
            let was = entries.get(&name).cloned();
            let doc = change(was.clone()).map_err(|e| format!("{} {name:?}: {e}; nothing written", kind.label()))?;
            if was.as_ref() == Some(&doc) {
                eprintln!("{} {name:?} unchanged in {location}; nothing written", kind.label());
                return Ok(ExitCode::SUCCESS);
            }
            let detail = pools::describe(&doc);
            let (_, created) = pools::put(&site, &config, &name, doc, &actor()).await.map_err(failed)?;
            let (verb, action) = if created { ("added", "create") } else { ("changed", "update") };
            site.audit_cli(&config, &format!("{}.{action}", kind.action()), &name, &detail).await;
            eprintln!("{verb} {} {name:?} in {location}", kind.label());
            Ok(ExitCode::SUCCESS)
        }
        Op::Remove(name) => {
            pools::remove::<T>(&site, &config, &name, &actor()).await.map_err(failed)?;
            site.audit_cli(&config, &format!("{}.delete", kind.action()), &name, "").await;
            eprintln!("removed {} {name:?} from {location}", kind.label());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_change_only_the_keys_they_name_and_an_empty_value_removes_one() {
        let mut slot = Some("a".to_owned());
        set_key(&mut slot, None);
        assert_eq!(slot.as_deref(), Some("a"));
        set_key(&mut slot, Some("b".into()));
        assert_eq!(slot.as_deref(), Some("b"));
        set_key(&mut slot, Some(String::new()));
        assert_eq!(slot, None);
        assert_eq!(list(" a, b ,,c"), Some(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(list(""), None);
        let pool = DevicePoolDoc { cm_group: Some("CMG Paris".into()), ..DevicePoolDoc::default() };
        assert_eq!(as_toml("DP Paris", &pool), "[device_pools.\"DP Paris\"]\ncm_group = \"CMG Paris\"\n");
    }
}
