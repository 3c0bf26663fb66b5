//! `sipcfg import`: phones from a CUCM BAT export.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::progress::Bar;
use crate::cli::{ConfigArg, load_config};
use crate::provision::import::{self, ImportError, Options};

pub(crate) fn import(arg: &ConfigArg, file: &Path, update: bool, dry_run: bool) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let inventory = &config.inventory.file;
    let mut progress = Bar::new("checking rows");
    let report = match import::import(inventory, file, Options { update, dry_run }, &mut progress) {
        Ok(report) => report,
        Err(ImportError::Rows(rows)) => {
            for e in &rows.errors {
                eprintln!("error: {}: {e}", file.display());
            }
            let what = if rows.header {
                "the header is not usable".to_owned()
            } else {
                format!("{} invalid row(s) of {}", rows.invalid_rows(), rows.rows)
            };
            eprintln!("{}: {what}; nothing written to {}", file.display(), inventory.display());
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => return Err(e.to_string()),
    };
    if !report.ignored_columns.is_empty() {
        eprintln!("note: columns not imported: {}", report.ignored_columns.join(", "));
    }
    let counts =
        format!("{} added, {} updated, {} unchanged", report.added.len(), report.updated.len(), report.unchanged.len());
    if dry_run {
        println!("{}: {} rows valid: {counts} (dry run: nothing written)", file.display(), report.rows);
    } else if report.written {
        println!(
            "{}: {counts}; {} written (a running server applies it within seconds)",
            file.display(),
            inventory.display()
        );
    } else {
        println!("{}: {counts}; {} is already up to date", file.display(), inventory.display());
    }
    Ok(ExitCode::SUCCESS)
}
