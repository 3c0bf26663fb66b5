//! `sipcfg sip-oauth-mode` and `sipcfg cluster`: the cluster switch and settings.

use std::process::ExitCode;

use clap::Subcommand;

use crate::cli::{ConfigArg, load_config, load_inventory};
use crate::provision::settings::{self, ClusterChange};

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
        ModeAction::Enable => set(true)?,
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
            settings::apply(file, &changes).map_err(|e| e.to_string())?
        }
    };
    print!("{}", settings::describe(&cluster));
    Ok(ExitCode::SUCCESS)
}
