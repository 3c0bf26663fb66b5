//! `sipcfg check`: the report of [`crate::app::check`] on standard error, exit 1 on any error.

use std::process::ExitCode;

use crate::app::check;
use crate::cli::{ConfigArg, block_on, load_config, open_site};

pub(crate) fn check(arg: &ConfigArg) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let (site, report) = block_on(async {
        let site = open_site(&config)?;
        let report = site.with_held(|held| check::check(&config, held)).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((site, report))
    })??;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    let from = match site.shared() {
        Some(store) => format!(" (inventory and certificate stores from {})", store.origin()),
        None => String::new(),
    };
    if report.ok() {
        println!("{}: ok, {} device configurations rendered{from}", config.path.display(), report.rendered);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}: {} error(s){from}", config.path.display(), report.errors.len());
        Ok(ExitCode::FAILURE)
    }
}
