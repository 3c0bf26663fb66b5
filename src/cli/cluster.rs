//! `sipcfg sip-oauth-mode` and `sipcfg cluster`: the cluster switch and settings.

use std::process::ExitCode;

use clap::Subcommand;

use crate::app::oauth_order::{self, Missing};
use crate::app::site::{Site, SiteError};
use crate::cli::{ConfigArg, block_on, load_config, open_site, site_inventory};
use crate::config::Config;
use crate::provision::settings::{self, ClusterChange};
use crate::provision::trust::Purpose;
use crate::util::time::{Time, unix_now};

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ModeAction {
    Enable,
    Disable,
    Status,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Print the SIP OAuth cluster settings, and the OAuth ports of each call manager that sets its own.
    Show,
    /// Change settings; every change is validated and written atomically.
    Set {
        /// CUCM's enterprise parameter "OAuth with Refresh Login Flow".
        #[arg(long, value_enum)]
        refresh_login_flow: Option<OnOff>,
        /// SIP phone OAuth port (1024-49151, default 5090).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1024..=49151))]
        sip_oauth_port: Option<u16>,
        /// SIP MRA OAuth port (1024-49151, default 5091), distinct from the phone port.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1024..=49151))]
        sip_mra_oauth_port: Option<u16>,
        /// Access token expiry in minutes (1-1440, default 60).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1440))]
        access_token_minutes: Option<u32>,
        /// Refresh token expiry in days (1-365, default 60).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=365))]
        refresh_token_days: Option<u32>,
    },
}

pub(crate) fn sip_oauth_mode(arg: &ConfigArg, action: ModeAction) -> Result<ExitCode, String> {
    block_on(sip_oauth_mode_async(arg, action))?
}

async fn sip_oauth_mode_async(arg: &ConfigArg, action: ModeAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let site = open_site(&config)?;
    let set = |on| {
        let (site, config) = (&site, &config);
        async move { site.set_cluster(config, &[ClusterChange::SipOAuthMode(on)]).await.map_err(|e| e.to_string()) }
    };
    let cluster = match action {
        ModeAction::Status => site_inventory(&site, &config).await?.cluster,
        ModeAction::Enable => {
            // CUCM's task flow puts the switch last: refuse while a step before it would leave phones unserved.
            let missing = missing_steps(&config, &site).await?;
            if !missing.blocking.is_empty() {
                return Err(format!(
                    "SIP OAuth mode not enabled: the steps before it are not done:\n  {}",
                    missing.blocking.join("\n  ")
                ));
            }
            for advice in &missing.advice {
                eprintln!("note: {advice}");
            }
            set(true).await?
        }
        ModeAction::Disable => set(false).await?,
    };
    if !matches!(action, ModeAction::Status) {
        let state = if cluster.sip_oauth_mode { "enabled" } else { "disabled" };
        site.audit_cli(&config, "cluster.sip-oauth-mode", "cluster", state).await;
    }
    let state = if cluster.sip_oauth_mode { "enabled" } else { "disabled" };
    match action {
        ModeAction::Status => println!("SIP OAuth mode is {state}"),
        _ => println!(
            "SIP OAuth mode is {state} ({} updated; every running server applies it within seconds)",
            site.inventory_location(&config)
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn cluster(arg: &ConfigArg, action: ClusterAction) -> Result<ExitCode, String> {
    block_on(cluster_async(arg, action))?
}

async fn cluster_async(arg: &ConfigArg, action: ClusterAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let site = open_site(&config)?;
    let cluster = match action {
        ClusterAction::Show => site_inventory(&site, &config).await?.cluster,
        ClusterAction::Set {
            refresh_login_flow,
            sip_oauth_port,
            sip_mra_oauth_port,
            access_token_minutes,
            refresh_token_days,
        } => {
            let mut changes = Vec::new();
            changes.extend(refresh_login_flow.map(|v| ClusterChange::RefreshLoginFlow(matches!(v, OnOff::On))));
            changes.extend(sip_oauth_port.map(ClusterChange::SipOAuthPort));
            changes.extend(sip_mra_oauth_port.map(ClusterChange::SipMraOAuthPort));
            changes.extend(access_token_minutes.map(ClusterChange::AccessTokenMinutes));
            changes.extend(refresh_token_days.map(ClusterChange::RefreshTokenDays));
            if changes.is_empty() {
                return Err("nothing to set: see `sipcfg cluster set --help`".into());
            }
            if matches!(refresh_login_flow, Some(OnOff::Off))
                && site_inventory(&site, &config).await?.cluster.sip_oauth_mode
                && !config.auth.has_external_issuer()
            {
                return Err(
                    "the refresh login flow stays on: SIP OAuth mode is enabled and [auth] trusts no other issuer, \
                     so without it no phone could get or refresh a token. Disable SIP OAuth mode first \
                     (`sipcfg sip-oauth-mode disable`), or add your issuer's keys to [auth]"
                        .into(),
                );
            }
            let cluster = site.set_cluster(&config, &changes).await.map_err(|e| e.to_string())?;
            let detail = changes.iter().map(change_text).collect::<Vec<_>>().join(", ");
            site.audit_cli(&config, "cluster.set", "cluster", &detail).await;
            cluster
        }
    };
    print!("{}", settings::describe(&cluster));
    Ok(ExitCode::SUCCESS)
}

/// A setting change as the inventory's `[cluster]` writes it, for the audit trail.
fn change_text(change: &ClusterChange) -> String {
    match *change {
        ClusterChange::SipOAuthMode(on) => format!("sip_oauth_mode = {on}"),
        ClusterChange::RefreshLoginFlow(on) => format!("refresh_login_flow = {on}"),
        ClusterChange::SipOAuthPort(p) => format!("sip_oauth_port = {p}"),
        ClusterChange::SipMraOAuthPort(p) => format!("sip_mra_oauth_port = {p}"),
        ClusterChange::AccessTokenMinutes(m) => format!("access_token_minutes = {m}"),
        ClusterChange::RefreshTokenDays(d) => format!("refresh_token_days = {d}"),
    }
}

/// What is missing before the cluster switch in the deployment `config` describes.
async fn missing_steps(config: &Config, site: &Site) -> Result<Missing, String> {
    let inventory = site_inventory(site, config).await?;
    let trust = match site.certificates(config, Purpose::PhoneEdgeTrust, unix_now() as Time).await {
        Ok((certs, _)) => certs.into_iter().map(|(_, c)| c).collect(),
        // No Phone-Edge-Trust folder configured: an empty store, which the missing steps name.
        Err(SiteError::Config(_)) => Vec::new(),
        Err(e) => return Err(e.to_string()),
    };
    Ok(oauth_order::before_the_switch(config, &inventory, &trust))
}
