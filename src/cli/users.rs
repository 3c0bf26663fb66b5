//! `sipcfg user`: end users (CUCM: User Management > End User) without editing the inventory by hand: add,
//! remove, list, and an import of CUCM's BAT user export. Each change is checked as a whole inventory (a user
//! who owns a device cannot be removed), written where the inventory lives (its file or the shared store),
//! and audited.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::app::site::actor;
use crate::cli::{ConfigArg, block_on, load_config, open_site, site_inventory};
use crate::provision::edit::Edits;
use crate::provision::inventory::UserDoc;

#[derive(Subcommand, Debug)]
pub enum UserAction {
    /// Add a user, or with --update change one.
    Add {
        /// The user id (CUCM's User ID), e.g. jsmith.
        id: String,
        /// The display name, e.g. "John Smith".
        #[arg(long)]
        name: String,
        /// The department, e.g. Sales.
        #[arg(long, default_value = "")]
        department: String,
        /// Change the user if it exists (without it, an existing id is refused).
        #[arg(long)]
        update: bool,
    },
    /// Remove a user (refused while a device names the user as its owner).
    Remove {
        /// The user id.
        id: String,
    },
    /// List users: id, name, department, and how many devices each owns.
    List,
    /// Add the users of a CUCM BAT user export (CSV: USER ID, FIRST NAME, LAST NAME, DEPARTMENT; other
    /// columns are named and ignored). Every row is checked first; nothing is written unless all are valid.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Change users that exist (without it, such rows are refused).
        #[arg(long)]
        update: bool,
        /// Check everything, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) fn user(arg: &ConfigArg, action: UserAction) -> Result<ExitCode, String> {
    block_on(user_async(arg, action))?
}

async fn user_async(arg: &ConfigArg, action: UserAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let site = open_site(&config)?;
    let inventory = site_inventory(&site, &config).await?;
    let location = site.inventory_location(&config);
    match action {
        UserAction::List => {
            let mut owned: BTreeMap<&str, usize> = BTreeMap::new();
            for d in inventory.devices.values() {
                if let Some(o) = &d.owner {
                    *owned.entry(o.as_str()).or_default() += 1;
                }
            }
            for u in inventory.users.values() {
                let n = owned.get(u.id.as_str()).copied().unwrap_or(0);
                println!("{:<20} {:<30} {:<20} {n} device(s)", u.id, u.name, u.department);
            }
            eprintln!("{} user(s) in {location}", inventory.users.len());
            Ok(ExitCode::SUCCESS)
        }
        UserAction::Add { id, name, department, update } => {
            let exists = inventory.users.contains_key(&id);
            if exists && !update {
                return Err(format!("{location}: user {id:?} exists: add --update to change it"));
            }
            // A change keeps what the command does not set (mail, telephone, source, enabled).
            let doc = match inventory.users.get(&id) {
                Some(u) => UserDoc { name, department, ..u.doc.clone() },
                None => UserDoc::new(name, department),
            };
            site.edit_inventory(&config, &Edits::user(&id, Some(doc)), &actor(), |_, _| Ok(()))
                .await
                .map_err(|e| format!("nothing written: {e}"))?;
            let action = if exists { "user.update" } else { "user.create" };
            site.audit_cli(&config, action, &id, "").await;
            eprintln!("{} user {id} in {location}", if exists { "changed" } else { "added" });
            Ok(ExitCode::SUCCESS)
        }
        UserAction::Remove { id } => {
            if !inventory.users.contains_key(&id) {
                return Err(format!("{location}: no user {id:?} (`sipcfg user list` lists them)"));
            }
            let owned: Vec<String> = inventory
                .devices
                .values()
                .filter(|d| d.owner.as_deref() == Some(id.as_str()))
                .map(|d| d.name.to_string())
                .collect();
            if !owned.is_empty() {
                return Err(format!(
                    "{location}: user {id:?} owns {} device(s) ({}): give them another owner or remove them first; \
                     nothing written",
                    owned.len(),
                    owned.join(", ")
                ));
            }
            site.edit_inventory(&config, &Edits::user(&id, None), &actor(), |_, _| Ok(()))
                .await
                .map_err(|e| format!("nothing written: {e}"))?;
            site.audit_cli(&config, "user.delete", &id, "").await;
            eprintln!(
                "removed user {id} from {location}; revoke the user's tokens with `sipcfg token revoke --user {id}`"
            );
            Ok(ExitCode::SUCCESS)
        }
        UserAction::Import { file, update, dry_run } => {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
            let plan = plan_users(&file, &bytes, &inventory.users.keys().cloned().collect(), update)?;
            for column in &plan.ignored {
                eprintln!("note: column {column:?} is not used (sipcfg keeps a user's id, name and department)");
            }
            let (added, changed) = (plan.added.len(), plan.changed.len());
            if dry_run || plan.edits.is_empty() {
                eprintln!(
                    "{}: {} row(s): {added} to add, {changed} to change; nothing written{}",
                    file.display(),
                    plan.rows,
                    if dry_run { " (--dry-run)" } else { "" }
                );
                return Ok(ExitCode::SUCCESS);
            }
            site.edit_inventory(&config, &plan.edits, &actor(), |_, _| Ok(()))
                .await
                .map_err(|e| format!("nothing written: {e}"))?;
            let detail = format!("{added} added, {changed} changed");
            site.audit_cli(&config, "user.import", &file.display().to_string(), &detail).await;
            eprintln!("{}: {detail} in {location}", file.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The checked rows of a BAT user export.
#[derive(Debug, Default)]
struct UserPlan {
    rows: usize,
    added: Vec<String>,
    changed: Vec<String>,
    ignored: Vec<String>,
    edits: Edits,
}

/// Reads a CUCM BAT user export: a header naming `USER ID` (required), `FIRST NAME`, `LAST NAME`,
/// `DEPARTMENT` (optional, any letter case). Every problem is reported with its line; nothing is planned
/// unless every row is valid.
fn plan_users(file: &Path, csv: &[u8], existing: &HashSet<String>, update: bool) -> Result<UserPlan, String> {
    let csv = csv.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(csv);
    let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(csv);
    let headers = reader.headers().map_err(|e| format!("{}: line 1: {e}", file.display()))?.clone();
    let find = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let id_col =
        find("USER ID").ok_or_else(|| format!("{}: line 1: the header has no \"USER ID\" column", file.display()))?;
    let (first, last, dept) = (find("FIRST NAME"), find("LAST NAME"), find("DEPARTMENT"));
    let used: HashSet<usize> = [Some(id_col), first, last, dept].into_iter().flatten().collect();
    let mut plan = UserPlan {
        ignored: headers.iter().enumerate().filter(|(i, _)| !used.contains(i)).map(|(_, h)| h.to_owned()).collect(),
        ..UserPlan::default()
    };
    let mut problems = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("line {}: not a CSV record: {e}", e.position().map_or(0, |p| p.line())));
                continue;
            }
        };
        if record.iter().all(str::is_empty) {
            continue;
        }
        plan.rows += 1;
        let line = record.position().map_or(0, |p| p.line());
        let field = |c: Option<usize>| c.and_then(|c| record.get(c)).unwrap_or("").to_owned();
        let id = field(Some(id_col));
        if id.is_empty() {
            problems.push(format!("line {line}: USER ID is empty"));
            continue;
        }
        if !seen.insert(id.clone()) {
            problems.push(format!("line {line} ({id}): the user is on an earlier line too"));
            continue;
        }
        let name = [field(first), field(last)].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
        let name = if name.is_empty() { id.clone() } else { name };
        if existing.contains(&id) {
            if !update {
                problems.push(format!("line {line} ({id}): the user exists (give --update to change it)"));
                continue;
            }
            plan.changed.push(id.clone());
        } else {
            plan.added.push(id.clone());
        }
        plan.edits.users.push((id, Some(UserDoc::new(name, field(dept)))));
    }
    if !problems.is_empty() {
        return Err(format!("{}:\n{}\nnothing written", file.display(), problems.join("\n")));
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bat_user_export_is_read_and_checked() {
        let csv = b"\xEF\xBB\xBFFIRST NAME,LAST NAME,USER ID,DEPARTMENT,MAIL ID\n\
                    Mary,Miller,mmiller,Sales,m@x\n\
                    ,,nn,,\n\
                    John,Smith,jsmith,Sales,\n";
        let existing: HashSet<String> = ["jsmith".to_owned()].into();
        let e = plan_users(Path::new("u.csv"), csv, &existing, false).unwrap_err();
        assert!(e.contains("line 4 (jsmith): the user exists (give --update"), "{e}");
        let plan = plan_users(Path::new("u.csv"), csv, &existing, true).unwrap();
        assert_eq!((plan.rows, plan.added.len(), plan.changed.len()), (3, 2, 1));
        assert_eq!(plan.ignored, vec!["MAIL ID"]);
        assert_eq!(plan.edits.users[0], ("mmiller".into(), Some(UserDoc::new("Mary Miller", "Sales"))));
        assert_eq!(plan.edits.users[1].1.as_ref().unwrap().name, "nn", "no name: the id");
        let e = plan_users(Path::new("u.csv"), b"NAME\nx\n", &existing, false).unwrap_err();
        assert!(e.contains("no \"USER ID\" column"), "{e}");
        let e = plan_users(Path::new("u.csv"), b"USER ID\na\na\n\n", &existing, false).unwrap_err();
        assert!(e.contains("line 3 (a): the user is on an earlier line too"), "{e}");
    }
}
