//! `sipcfg import`: phones from a CUCM BAT export.

use std::path::Path;
use std::process::ExitCode;

use crate::app::site::SiteError;
use crate::cli::progress::Bar;
use crate::cli::{ConfigArg, block_on, load_config, open_site};
use crate::provision::import::{ImportError, ImportReport, Options};

pub(crate) fn import(
    arg: &ConfigArg,
    file: &Path,
    update: bool,
    dry_run: bool,
    create_users: bool,
) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let mut progress = Bar::new("checking rows");
    let (inventory, outcome) = block_on(async {
        let site = open_site(&config)?;
        let outcome = site.import(&config, file, Options { update, dry_run, create_users }, &mut progress).await;
        if let Ok(report) = &outcome
            && report.written
            && !dry_run
        {
            let mode = if update { " (--update)" } else { "" };
            // The file as an absolute path: the trail does not say where the command ran.
            let target = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
            site.audit_cli(&config, "import", &target.display().to_string(), &format!("{}{mode}", counts(report)))
                .await;
        }
        Ok::<_, String>((site.inventory_location(&config), outcome))
    })??;
    let report = match outcome {
        Ok(report) => report,
        Err(SiteError::Import(ImportError::Rows(rows))) => {
            for e in &rows.errors {
                eprintln!("error: {}: {e}", file.display());
            }
            let what = if rows.header {
                "the header is not usable".to_owned()
            } else {
                format!("{} invalid row(s) of {}", rows.invalid_rows(), rows.rows)
            };
            eprintln!("{}: {what}; nothing written to {inventory}", file.display());
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.to_string()),
    };
    if !report.ignored_columns.is_empty() {
        eprintln!("note: columns not imported: {}", report.ignored_columns.join(", "));
    }
    if !report.created_users.is_empty() {
        let verb = if dry_run { "would create" } else { "created" };
        eprintln!(
            "note: {verb} {} owner user(s), named by their id (`sipcfg user import` or the directory sync names them): {}",
            report.created_users.len(),
            report.created_users.join(", ")
        );
    }
    let counts = counts(&report);
    if dry_run {
        println!("{}: {} rows valid: {counts} (dry run: nothing written)", file.display(), report.rows);
    } else if report.written {
        println!("{}: {counts}; {inventory} written (every running server applies it within seconds)", file.display());
    } else {
        println!("{}: {counts}; {inventory} is already up to date", file.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// What an import did, for people and the audit trail.
fn counts(report: &ImportReport) -> String {
    let mut counts =
        format!("{} added, {} updated, {} unchanged", report.added.len(), report.updated.len(), report.unchanged.len());
    if !report.created_users.is_empty() {
        counts.push_str(&format!(", {} owner user(s) created", report.created_users.len()));
    }
    counts
}
