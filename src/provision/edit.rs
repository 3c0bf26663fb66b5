//! Changes to devices, users, profiles and device pools (with their CM and date/time groups), made by the
//! management API, the console and the commands, applied where the inventory lives: the TOML file (comments, order and formatting of everything else kept) or the documents of the
//! shared store. The caller checks the whole result as a load does before writing it.

use std::path::{Path, PathBuf};

use toml_edit::{DocumentMut, Item, Table};

use crate::provision::inventory::{
    CmGroupDoc, DateTimeGroupDoc, DeviceDoc, DevicePoolDoc, InventoryDoc, ProfileDoc, UserDoc,
};

/// Devices, users, profiles and pools put (`Some`) or removed (`None`), by name and id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Edits {
    pub devices: Vec<(String, Option<DeviceDoc>)>,
    pub users: Vec<(String, Option<UserDoc>)>,
    pub profiles: Vec<(String, Option<ProfileDoc>)>,
    /// `[device_pools.NAME]`, `[cm_groups.NAME]`, `[date_time_groups.NAME]`: in the shared store they are
    /// part of the cluster's document, so a change to any of them rewrites that document.
    pub device_pools: Vec<(String, Option<DevicePoolDoc>)>,
    pub cm_groups: Vec<(String, Option<CmGroupDoc>)>,
    pub date_time_groups: Vec<(String, Option<DateTimeGroupDoc>)>,
}

impl Edits {
    pub fn device(name: &str, doc: Option<DeviceDoc>) -> Edits {
        Edits { devices: vec![(name.to_owned(), doc)], ..Edits::default() }
    }

    pub fn user(id: &str, doc: Option<UserDoc>) -> Edits {
        Edits { users: vec![(id.to_owned(), doc)], ..Edits::default() }
    }

    pub fn profile(name: &str, doc: Option<ProfileDoc>) -> Edits {
        Edits { profiles: vec![(name.to_owned(), doc)], ..Edits::default() }
    }

    pub fn device_pool(name: &str, doc: Option<DevicePoolDoc>) -> Edits {
        Edits { device_pools: vec![(name.to_owned(), doc)], ..Edits::default() }
    }

    pub fn cm_group(name: &str, doc: Option<CmGroupDoc>) -> Edits {
        Edits { cm_groups: vec![(name.to_owned(), doc)], ..Edits::default() }
    }

    pub fn date_time_group(name: &str, doc: Option<DateTimeGroupDoc>) -> Edits {
        Edits { date_time_groups: vec![(name.to_owned(), doc)], ..Edits::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.users.is_empty() && self.profiles.is_empty() && !self.touches_pools()
    }

    /// Whether a device pool, a CM group or a date/time group is put or removed.
    pub fn touches_pools(&self) -> bool {
        !(self.device_pools.is_empty() && self.cm_groups.is_empty() && self.date_time_groups.is_empty())
    }

    /// The edits applied to an inventory's documents.
    pub fn apply_to(&self, doc: &mut InventoryDoc) {
        put_all_docs(&mut doc.cm_groups, &self.cm_groups);
        put_all_docs(&mut doc.date_time_groups, &self.date_time_groups);
        put_all_docs(&mut doc.device_pools, &self.device_pools);
        put_all_docs(&mut doc.profiles, &self.profiles);
        put_all_docs(&mut doc.users, &self.users);
        put_all_docs(&mut doc.devices, &self.devices);
    }

    /// The inventory file's `text` with the edits applied: each put device or user replaces its table (a new
    /// one is appended), each removed one goes; nothing else of the file changes.
    pub fn apply_to_toml(&self, path: &Path, text: &str) -> Result<String, EditError> {
        let mut doc: DocumentMut = text
            .parse()
            .map_err(|e: toml_edit::TomlError| EditError::Syntax { path: path.to_owned(), message: e.to_string() })?;
        put_all(&mut doc, path, "cm_groups", &self.cm_groups)?;
        put_all(&mut doc, path, "date_time_groups", &self.date_time_groups)?;
        put_all(&mut doc, path, "device_pools", &self.device_pools)?;
        put_all(&mut doc, path, "profiles", &self.profiles)?;
        put_all(&mut doc, path, "users", &self.users)?;
        put_all(&mut doc, path, "devices", &self.devices)?;
        Ok(doc.to_string())
    }
}

fn put_all_docs<T: Clone>(map: &mut std::collections::BTreeMap<String, T>, entries: &[(String, Option<T>)]) {
    for (name, entry) in entries {
        match entry {
            Some(v) => map.insert(name.clone(), v.clone()),
            None => map.remove(name),
        };
    }
}

fn put_all<T: serde::Serialize>(
    doc: &mut DocumentMut,
    path: &Path,
    key: &'static str,
    entries: &[(String, Option<T>)],
) -> Result<(), EditError> {
    if entries.is_empty() {
        return Ok(());
    }
    if doc.get(key).is_none() {
        let mut table = Table::new();
        table.set_implicit(true);
        doc.insert(key, Item::Table(table));
    }
    let layout = || EditError::Layout { path: path.to_owned(), key };
    let table = doc.get_mut(key).and_then(Item::as_table_mut).ok_or_else(layout)?;
    for (name, entry) in entries {
        match entry {
            None => {
                table.remove(name);
            }
            Some(value) => {
                let text = toml::to_string(value)
                    .map_err(|e| EditError::Syntax { path: path.to_owned(), message: e.to_string() })?;
                let parsed: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| EditError::Syntax {
                    path: path.to_owned(),
                    message: e.to_string(),
                })?;
                let mut new = parsed.as_table().clone();
                new.set_implicit(false);
                // Arrays of tables (`lines`) and sub-tables (`services`) become inline values of the entry's own
                // table: as separate `[[devices.X.lines]]` tables they would keep their place in the small
                // document they were written in, and land at the top of the inventory, far from their device.
                let keys: Vec<String> = new.iter().map(|(k, _)| k.to_owned()).collect();
                for k in keys {
                    if let Some(item) = new.remove(&k) {
                        let item = match item.into_value() {
                            Ok(mut value) => {
                                value.decor_mut().clear();
                                Item::Value(value)
                            }
                            Err(item) => item,
                        };
                        new.insert(&k, item);
                    }
                }
                match table.get_mut(name) {
                    // Replaces the values in place: the table keeps its position and its comments.
                    Some(Item::Table(existing)) => {
                        let keys: Vec<String> = existing.iter().map(|(k, _)| k.to_owned()).collect();
                        for k in keys {
                            if !new.contains_key(&k) {
                                existing.remove(&k);
                            }
                        }
                        for (k, v) in new.iter() {
                            existing.insert(k, v.clone());
                        }
                    }
                    Some(_) => return Err(layout()),
                    None => {
                        table.insert(name, Item::Table(new));
                    }
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("{path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: `{key}` is not a table of [{key}.NAME] tables; it cannot be edited (write it that way)")]
    Layout { path: PathBuf, key: &'static str },
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# the site
[cluster]
name = "x"

[users.jsmith]
name = "John Smith"

# a phone
[devices.SEP001122334455]
model = "Cisco 8851"   # the model
profile = "p"
description = "old"

[devices.SEP00112233445A]
model = "Cisco 7811"
profile = "p"
"#;

    fn device(description: &str) -> DeviceDoc {
        DeviceDoc {
            model: "Cisco 8851".into(),
            profile: "p".into(),
            pool: None,
            owner: Some("jsmith".into()),
            description: description.into(),
            lines: Vec::new(),
            enabled: false,
            allow_activation_code_via_mra: false,
            mra_service_domain: String::new(),
            speed_dials: Vec::new(),
            blf_speed_dials: Vec::new(),
            key_expansion_modules: 0,
            services: None,
        }
    }

    #[test]
    fn toml_edits_keep_the_rest_of_the_file() {
        let path = Path::new("inventory.toml");
        let mut edits = Edits::device("SEP001122334455", Some(device("new")));
        edits.devices.push(("SEP00112233445A".into(), None));
        edits.devices.push(("SEPAABBCCDDEEFF".into(), Some(device("added"))));
        edits.users.push(("mmiller".into(), Some(UserDoc::new("Mary Miller", ""))));
        let out = edits.apply_to_toml(path, TEXT).unwrap();
        assert!(out.starts_with("# the site\n"), "{out}");
        assert!(out.contains("# a phone\n[devices.SEP001122334455]"), "{out}");
        assert!(out.contains("description = \"new\""), "{out}");
        assert!(out.contains("enabled = false"), "{out}");
        assert!(!out.contains("SEP00112233445A"), "{out}");
        assert!(out.contains("[devices.SEPAABBCCDDEEFF]"), "{out}");
        assert!(out.contains("[users.mmiller]"), "{out}");
        #[derive(serde::Deserialize)]
        struct Part {
            devices: std::collections::BTreeMap<String, DeviceDoc>,
            users: std::collections::BTreeMap<String, UserDoc>,
        }
        let part: Part = toml::from_str(&out).unwrap();
        assert_eq!(part.devices["SEP001122334455"], device("new"));
        assert_eq!(part.devices.len(), 2);
        assert_eq!(part.users.len(), 2);
    }

    #[test]
    fn document_edits() {
        let mut doc: InventoryDoc = toml::from_str(include_str!("../../example/inventory.toml")).unwrap();
        let first = doc.devices.keys().next().unwrap().clone();
        let mut edits = Edits::device(&first, None);
        edits.devices.push(("SEPAABBCCDDEEFF".into(), Some(device("added"))));
        edits.apply_to(&mut doc);
        assert!(!doc.devices.contains_key(&first));
        assert_eq!(doc.devices["SEPAABBCCDDEEFF"], device("added"));
    }

    #[test]
    fn pools_and_groups_are_put_and_removed_by_their_quoted_names() {
        let text = "[cluster]\nname = \"x\"\n\n# Paris\n[device_pools.\"DP Paris\"]\ncm_group = \"CMG Paris\"  # primary site\n\n[device_pools.Old]\n";
        let pool = DevicePoolDoc { cm_group: Some("CMG Lyon".into()), ..DevicePoolDoc::default() };
        let mut edits = Edits::device_pool("DP Paris", Some(pool.clone()));
        edits.device_pools.push(("Old".into(), None));
        edits.cm_groups.push((
            "CMG Lyon".into(),
            Some(CmGroupDoc { call_managers: vec!["a".into()], description: String::new() }),
        ));
        edits.date_time_groups.push(("Lyon".into(), Some(DateTimeGroupDoc::default())));
        assert!(edits.touches_pools() && !edits.is_empty());
        let out = edits.apply_to_toml(Path::new("i.toml"), text).unwrap();
        assert!(out.contains("# Paris\n[device_pools.\"DP Paris\"]\ncm_group = \"CMG Lyon\""), "{out}");
        assert!(!out.contains("[device_pools.Old]"), "{out}");
        assert!(out.contains("[cm_groups.\"CMG Lyon\"]\ncall_managers = [\"a\"]"), "{out}");
        let mut doc: InventoryDoc = toml::from_str(include_str!("../../example/inventory.toml")).unwrap();
        doc.device_pools.insert("Old".into(), DevicePoolDoc::default());
        edits.apply_to(&mut doc);
        assert_eq!(doc.device_pools.get("DP Paris"), Some(&pool));
        assert!(!doc.device_pools.contains_key("Old") && doc.cm_groups.contains_key("CMG Lyon"));
    }

    #[test]
    fn a_devices_key_that_is_not_a_table_is_refused() {
        let e = Edits::device("SEP001122334455", None).apply_to_toml(Path::new("i.toml"), "devices = 3\n").unwrap_err();
        assert!(e.to_string().contains("i.toml: `devices` is not a table"), "{e}");
    }
}
