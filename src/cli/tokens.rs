//! `sipcfg token`, `sipcfg activation-code`, `sipcfg keys`: tokens and the token service.

use std::process::ExitCode;

use clap::Subcommand;

use crate::app::site::Site;
use crate::auth::service::{Applied, TokenService};
use crate::auth::signer::Signer;
use crate::auth::store::NodeReport;
use crate::cli::{ConfigArg, block_on, load_config, open_site, site_inventory};
use crate::config::{Config, DEFAULT_REUSE_GRACE_SECS};
use crate::provision::filename::DeviceName;
use crate::provision::inventory::Inventory;
use crate::provision::subject::Subject;
use crate::util::time::{Time, rfc3339_utc, unix_now};

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Revoke every refresh token of a user or device, and refuse its access tokens issued until now.
    Revoke {
        /// The device whose tokens are revoked, e.g. SEP001122334455.
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        device: Option<String>,
        /// The user whose tokens are revoked (the tokens issued to the user, not to the user's devices).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CodeAction {
    /// Create a code for a device and print it (the only time it is shown: only its hash is stored).
    Create {
        /// The device the code onboards, e.g. SEP001122334455.
        #[arg(long)]
        device: String,
        /// Validity in days (default 7).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=365))]
        valid: u32,
    },
    /// List codes (id, device, state; never the codes).
    List,
    /// Revoke a code by its id.
    Revoke {
        /// The code's id, as `activation-code list` shows it (never the code itself).
        id: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysAction {
    /// List the signing keys.
    List,
    /// Add a new signing key; the old ones verify until their last access token has expired.
    Rotate,
    /// Replace every key and invalidate every access and refresh token at once.
    Regen {
        /// Confirm that every phone will have to onboard again.
        #[arg(long)]
        yes: bool,
    },
}

pub(crate) fn token(
    arg: &ConfigArg,
    device: Option<String>,
    user: Option<String>,
    ttl: Option<u64>,
) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let signer = Signer::from_config(&config.auth).map_err(|e| e.to_string())?;
    let inventory = block_on(async { site_inventory(&open_site(&config)?, &config).await })??;
    let subject = subject_arg(&inventory, device, user)?;
    let token = signer.mint(&subject, ttl.unwrap_or(signer.default_ttl_secs)).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// The token service on the configured state: `[state]`'s database, or the shared store.
pub(crate) async fn token_service(config: &Config, site: &Site) -> Result<TokenService, String> {
    let store = site.auth_store(config).map_err(|e| e.to_string())?.ok_or_else(|| {
        format!(
            "{}: no [state] database is configured, and no [store] (the token service needs one of them)",
            config.path.display()
        )
    })?;
    let grace = config.state.as_ref().map_or(DEFAULT_REUSE_GRACE_SECS, |s| s.reuse_grace_secs);
    let service =
        TokenService::open(store, &config.auth, grace as Time, unix_now() as Time).await.map_err(|e| e.to_string())?;
    service.sync(unix_now() as Time).await.map_err(|e| e.to_string())?;
    Ok(service)
}

pub(crate) fn subject_arg(
    inventory: &Inventory,
    device: Option<String>,
    user: Option<String>,
) -> Result<Subject, String> {
    match (device, user) {
        (Some(d), _) => {
            let name = DeviceName::parse_loose(&d).map_err(|e| format!("--device {d}: {e}"))?;
            if inventory.device(&name).is_none() {
                return Err(format!("--device {d}: no such device in {}", inventory.file.display()));
            }
            Ok(Subject::Device(name))
        }
        (None, Some(u)) => {
            if !inventory.users.contains_key(&u) {
                return Err(format!("--user {u}: no such user in {}", inventory.file.display()));
            }
            Ok(Subject::User(u))
        }
        (None, None) => Err("give --device NAME or --user ID".into()),
    }
}

/// A subject named on the command line that the inventory no longer has but the token store knows (a
/// refresh-token family or an activation code).
async fn removed_subject(
    service: &TokenService,
    device: Option<String>,
    user: Option<String>,
    now: Time,
) -> Result<Option<Subject>, String> {
    let subject = match (device, user) {
        (Some(d), _) => match DeviceName::parse_loose(&d) {
            Ok(name) => Subject::Device(name),
            Err(_) => return Ok(None),
        },
        (None, Some(u)) => Subject::User(u),
        (None, None) => return Ok(None),
    };
    let store = service.store();
    let families = store.families(Some(&subject.to_string()), now).await.map_err(|e| e.to_string())?;
    let codes = match &subject {
        Subject::Device(name) => {
            store.list_activation_codes().await.map_err(|e| e.to_string())?.iter().any(|c| c.device == name.as_str())
        }
        Subject::User(_) => false,
    };
    Ok((!families.is_empty() || codes).then_some(subject))
}

pub(crate) fn revoke(arg: &ConfigArg, device: Option<String>, user: Option<String>) -> Result<ExitCode, String> {
    block_on(revoke_async(arg, device, user))?
}

async fn revoke_async(arg: &ConfigArg, device: Option<String>, user: Option<String>) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let site = open_site(&config)?;
    let inventory = site_inventory(&site, &config).await?;
    let service = token_service(&config, &site).await?;
    let now = unix_now() as Time;
    let subject = match subject_arg(&inventory, device.clone(), user.clone()) {
        Ok(subject) => subject,
        // A device or user removed from the inventory by hand may still hold tokens and codes: they can be
        // revoked as long as the token store knows the subject.
        Err(refusal) => match removed_subject(&service, device, user, now).await? {
            Some(subject) => {
                eprintln!(
                    "note: {subject} is not in {}: revoking the tokens the store still holds",
                    inventory.file.display()
                );
                subject
            }
            None => return Err(refusal),
        },
    };
    if let Subject::Device(name) = &subject {
        let mut retired = 0;
        for code in service.store().list_activation_codes().await.map_err(|e| e.to_string())? {
            if code.device == name.as_str() && code.used.is_none() && !code.revoked && code.expires > now {
                retired += usize::from(
                    service.store().revoke_activation_code(&code.id, now).await.map_err(|e| e.to_string())?,
                );
            }
        }
        if retired > 0 {
            eprintln!("retired {retired} outstanding activation code(s) of {name}");
        }
    }
    service.revoke_subject(&subject, now).await.map_err(|e| e.to_string())?;
    site.audit_cli(
        &config,
        "token.revoke",
        &subject.to_string(),
        "refresh tokens revoked; access tokens issued until now refused",
    )
    .await;
    let change = service.store().change_counter().await.map_err(|e| e.to_string())?;
    // The command returns once every running node refuses the subject's tokens, not when the row is written.
    match service.wait_applied(change, REVOCATION_WAIT).await.map_err(|e| e.to_string())? {
        Applied::Everywhere(nodes) => {
            println!(
                "revoked {subject}: its refresh tokens are dead and its access tokens are refused by every \
                 running server ({})",
                names(&nodes)
            );
            Ok(ExitCode::SUCCESS)
        }
        Applied::NoNodeRunning => {
            println!(
                "revoked {subject}: its refresh tokens are dead and its access tokens are refused from now on \
                 (no server is running; each applies it when it starts)"
            );
            Ok(ExitCode::SUCCESS)
        }
        Applied::NotYet { lagging, .. } => {
            eprintln!(
                "revoked {subject} in {}, but after {} s these running servers still have not applied it: {}. \
                 They refuse its tokens once they read the state again; check that they can (their log says why \
                 not).",
                state_location(&config, &site),
                REVOCATION_WAIT.as_secs(),
                names(&lagging)
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// How long `token revoke` waits for the running servers to apply a revocation.
const REVOCATION_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

fn names(nodes: &[NodeReport]) -> String {
    nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn state_location(config: &Config, site: &Site) -> String {
    match site.shared() {
        Some(store) => store.origin().to_owned(),
        None => config.state.as_ref().map_or_else(String::new, |s| s.database.display().to_string()),
    }
}

pub(crate) fn activation_code(arg: &ConfigArg, action: CodeAction) -> Result<ExitCode, String> {
    block_on(activation_code_async(arg, action))?
}

async fn activation_code_async(arg: &ConfigArg, action: CodeAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let site = open_site(&config)?;
    let service = token_service(&config, &site).await?;
    let now = unix_now() as Time;
    match action {
        CodeAction::Create { device, valid } => {
            let inventory = site_inventory(&site, &config).await?;
            let Subject::Device(name) = subject_arg(&inventory, Some(device), None)? else {
                return Err("an activation code is for a device".into());
            };
            let (id, code) = service
                .create_activation_code(&name, now, i64::from(valid) * 86_400)
                .await
                .map_err(|e| e.to_string())?;
            // The code's id, never the code.
            site.audit_cli(&config, "activation-code.create", name.as_str(), &format!("id {id}, valid {valid} days"))
                .await;
            eprintln!("activation code {id} for {name}, valid {valid} days, single use:");
            if inventory.device(&name).is_some_and(|d| !d.enabled) {
                eprintln!("note: {name} is disabled: the code onboards it, but it gets no file until it is enabled");
            }
            if !inventory.cluster.refresh_login_flow {
                eprintln!("note: the refresh login flow is off in [cluster]: no code is redeemed until it is on");
            }
            println!("{code}");
        }
        CodeAction::List => {
            let codes = service.store().list_activation_codes().await.map_err(|e| e.to_string())?;
            for c in &codes {
                let state = c.state(now);
                println!("{}  {:<16} {:<8} expires {}", c.id, c.device, state, rfc3339_utc(c.expires));
            }
            println!("{} code(s)", codes.len());
        }
        CodeAction::Revoke { id } => {
            // Its device, for the audit trail (read first: the store's revoke answers only whether it did).
            let codes = service.store().list_activation_codes().await.map_err(|e| e.to_string())?;
            let device = codes.iter().find(|c| c.id == id).map(|c| c.device.clone());
            if !service.store().revoke_activation_code(&id, now).await.map_err(|e| e.to_string())? {
                return Err(format!("no usable activation code with id {id}"));
            }
            let detail = device.map_or_else(String::new, |d| format!("device {d}"));
            site.audit_cli(&config, "activation-code.revoke", &id, &detail).await;
            println!("revoked activation code {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn keys(arg: &ConfigArg, action: KeysAction) -> Result<ExitCode, String> {
    block_on(keys_async(arg, action))?
}

async fn keys_async(arg: &ConfigArg, action: KeysAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let site = open_site(&config)?;
    let service = token_service(&config, &site).await?;
    let now = unix_now() as Time;
    match action {
        KeysAction::List => {}
        KeysAction::Rotate => {
            let key = service.rotate_keys(now, 1440 * 60).await.map_err(|e| e.to_string())?;
            site.audit_cli(
                &config,
                "keys.rotate",
                &key.kid,
                "new signing key; the previous keys verify until their tokens expire",
            )
            .await;
            println!("new signing key {}; the previous keys verify until their last token has expired", key.kid);
        }
        KeysAction::Regen { yes } => {
            if !yes {
                return Err("regen invalidates every access and refresh token at once: add --yes".into());
            }
            let key = service.regenerate_keys(now).await.map_err(|e| e.to_string())?;
            site.audit_cli(
                &config,
                "keys.regenerate",
                &key.kid,
                "every key replaced; every access and refresh token invalid",
            )
            .await;
            println!("keys replaced by {}; every access and refresh token is now invalid", key.kid);
        }
    }
    for k in service.store().signing_keys().await.map_err(|e| e.to_string())? {
        let state = match k.retire_at {
            None => "signing".to_owned(),
            Some(t) => format!("retiring at {}", rfc3339_utc(t)),
        };
        println!("{}  {}  created {}  {state}", k.kid, k.algorithm, rfc3339_utc(k.created));
    }
    Ok(ExitCode::SUCCESS)
}
