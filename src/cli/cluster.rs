//! `sipcfg sip-oauth-mode` and `sipcfg cluster`: the cluster switch and settings.

use std::process::ExitCode;

use clap::Subcommand;

use crate::app::oauth_order::{self, Missing};
use crate::cli::{ConfigArg, load_config, load_inventory};
use crate::config::Config;
use crate::provision::settings::{self, ClusterChange};
use crate::provision::trust::{Purpose, TrustStore};
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
    let config = load_config(arg)?;
    let file = &config.inventory.file;
    let set = |on| settings::apply(file, &[ClusterChange::SipOAuthMode(on)]).map_err(|e| e.to_string());
    let cluster = match action {
        ModeAction::Status => load_inventory(file)?.cluster,
        ModeAction::Enable => {
            // CUCM's task flow puts the switch last: refuse while a step before it would leave phones unserved.
            let missing = missing_steps(&config)?;
            if !missing.blocking.is_empty() {
                return Err(format!(
                    "SIP OAuth mode not enabled: the steps before it are not done:\n  {}",
                    missing.blocking.join("\n  ")
                ));
            }
            for advice in &missing.advice {
                eprintln!("note: {advice}");
            }
            set(true)?
        }
        ModeAction::Disable => set(false)?,
    };
    let state = if cluster.sip_oauth_mode { "enabled" } else { "disabled" };
    match action {
        ModeAction::Status => println!("SIP OAuth mode is {state}"),
        _ => println!(
            "SIP OAuth mode is {state} ({} updated; a running server applies it within seconds)",
            file.display()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn cluster(arg: &ConfigArg, action: ClusterAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let file = &config.inventory.file;
    let cluster = match action {
        ClusterAction::Show => load_inventory(file)?.cluster,
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
                && load_inventory(file)?.cluster.sip_oauth_mode
                && !config.auth.has_external_issuer()
            {
                return Err(
                    "the refresh login flow stays on: SIP OAuth mode is enabled and [auth] trusts no other issuer, \
                     so without it no phone could get or refresh a token. Disable SIP OAuth mode first \
                     (`sipcfg sip-oauth-mode disable`), or add your issuer's keys to [auth]"
                        .into(),
                );
            }
            settings::apply(file, &changes).map_err(|e| e.to_string())?
        }
    };
    print!("{}", settings::describe(&cluster));
    Ok(ExitCode::SUCCESS)
}

/// What is missing before the cluster switch in the deployment `config` describes.
fn missing_steps(config: &Config) -> Result<Missing, String> {
    let inventory = load_inventory(&config.inventory.file)?;
    let trust = match &config.trust.phone_edge_trust {
        Some(dir) => {
            TrustStore::new(Purpose::PhoneEdgeTrust, dir.clone()).load(unix_now() as Time).map_err(|e| e.to_string())?
        }
        None => Vec::new(),
    };
    Ok(oauth_order::before_the_switch(config, &inventory, &trust))
}
