//! `sipcfg check`: the report of [`crate::app::check`] on standard error, exit 1 on any error.

use std::process::ExitCode;

use crate::app::check;
use crate::cli::{ConfigArg, load_config};

pub(crate) fn check(arg: &ConfigArg) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let report = check::check(&config);
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    if report.ok() {
        println!("{}: ok, {} device configurations rendered", config.path.display(), report.rendered);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}: {} error(s)", config.path.display(), report.errors.len());
        Ok(ExitCode::FAILURE)
    }
}
