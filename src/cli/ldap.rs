//! `sipcfg ldap sync [--dry-run]`: users from the directory on demand ([`crate::app::ldap`]). Prints one
//! line per change on standard output (add, update, disable, remove, skip) and a summary on standard error;
//! with `--dry-run`, writes nothing and revokes nothing.

use std::process::ExitCode;

use clap::Subcommand;

use crate::app::ldap;
use crate::app::site::actor;
use crate::cli::tokens::token_service;
use crate::cli::{ConfigArg, block_on, load_config, open_site, site_inventory};

#[derive(Subcommand, Debug)]
pub enum LdapAction {
    /// Read the directory now and add, update, disable or remove the users it changes.
    Sync {
        /// Print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub(crate) fn ldap(arg: &ConfigArg, action: LdapAction) -> Result<ExitCode, String> {
    block_on(ldap_async(arg, action))?
}

async fn ldap_async(arg: &ConfigArg, action: LdapAction) -> Result<ExitCode, String> {
    let LdapAction::Sync { dry_run } = action;
    let config = load_config(arg)?;
    let l = config.ldap.clone().ok_or_else(|| {
        format!("{}: no [ldap] section: configure the directory first (docs/configuration.md)", config.path.display())
    })?;
    let site = open_site(&config)?;
    let directory = ldap::read_directory(&l).await.map_err(|e| format!("{e}; nothing changed"))?;
    let inventory = site_inventory(&site, &config).await?;
    let plan = ldap::plan(&l, &inventory, &directory).map_err(|e| e.to_string())?;
    for line in plan.lines() {
        println!("{line}");
    }
    let location = site.inventory_location(&config);
    if dry_run || plan.is_empty() {
        eprintln!("{}: {}; nothing written{}", l.url, plan.summary(), if dry_run { " (--dry-run)" } else { "" });
        return Ok(ExitCode::SUCCESS);
    }
    // Disabled and removed users' tokens are revoked: the token service is needed when there are any.
    let service = if plan.revoked().next().is_some() && (config.state.is_some() || site.shared().is_some()) {
        Some(token_service(&config, &site).await?)
    } else {
        None
    };
    let failed = ldap::apply(&site, &config, &plan, &actor(), service.as_ref()).await.map_err(|e| e.to_string())?;
    site.audit_cli(&config, "ldap.sync", &l.url, &plan.summary()).await;
    eprintln!("{}: {} in {location}", l.url, plan.summary());
    if !failed.is_empty() {
        return Err(format!(
            "the users are changed, but these tokens could not be revoked (run `sipcfg token revoke --user ID`):\n{}",
            failed.join("\n")
        ));
    }
    Ok(ExitCode::SUCCESS)
}
