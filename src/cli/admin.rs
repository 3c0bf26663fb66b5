//! `sipcfg admin`: the administrator accounts of the management API and the web console (add, token, list,
//! remove, passwd). Accounts live where the token state lives: `[state]`'s database, or the shared store.
//!
//! A command that makes a secret prints it, and only it, on standard output (so that `PASSWORD=$(sipcfg admin
//! add …)` works); everything else goes to standard error. Only the password's argon2id hash and the API
//! token's digest are stored. Every change is recorded in the audit trail, never with a secret.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;

use crate::app::site::Site;
use crate::auth::accounts::{
    API_TOKEN_PREFIX, Account, AccountStore, MIN_PASSWORD_CHARS, Role, check_account_name, generate_password,
    hash_password, new_secret,
};
use crate::cli::{ConfigArg, block_on, load_config, open_site};
use crate::config::Config;
use crate::util::time::{Time, rfc3339_utc, unix_now};

/// The role of an account, as the command line names it.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleArg {
    /// Everything, including accounts.
    Admin,
    /// Devices, users, activation codes, tokens, trust and settings; not accounts.
    Operator,
    /// Reads what an operator may change; changes nothing.
    ReadOnly,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Operator => Role::Operator,
            RoleArg::ReadOnly => Role::ReadOnly,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum AdminAction {
    /// Add an account and print its generated password (only it) on standard output.
    ///
    /// The password is 20 random characters, shown only now: only its argon2id hash is stored. With
    /// --password-stdin, the password is the first line of standard input instead (at least 12 characters),
    /// and nothing is printed on standard output.
    Add {
        /// The account name (1 to 64 letters, digits, '.', '_', '-' or '@'), e.g. jsmith.
        name: String,
        /// What the account may do: admin (everything, including accounts), operator (devices, users,
        /// codes, tokens, trust, settings), read-only (reads only).
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Read the password from the first line of standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Print a new API token of an account (only it) on standard output, for `Authorization: Bearer`.
    ///
    /// The token acts with the account's role until the account is removed; it is shown only now (only its
    /// SHA-256 digest is stored). Each call makes another token; the earlier ones keep working.
    Token {
        /// The account, as `sipcfg admin list` shows it.
        name: String,
    },
    /// List the accounts: name, role, when created (never a password hash or a token).
    List,
    /// Remove an account with its browser sessions and API tokens. The last admin account stays.
    Remove {
        /// The account, as `sipcfg admin list` shows it.
        name: String,
    },
    /// Give an account a new password and end its browser sessions; print the generated password (only it).
    ///
    /// With --password-stdin, the password is the first line of standard input instead (at least 12
    /// characters), and nothing is printed on standard output. The account's API tokens keep working.
    Passwd {
        /// The account, as `sipcfg admin list` shows it.
        name: String,
        /// Read the password from the first line of standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
}

pub(crate) fn admin(arg: &ConfigArg, action: AdminAction) -> Result<ExitCode, String> {
    block_on(admin_async(arg, action))?
}

async fn admin_async(arg: &ConfigArg, action: AdminAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    // A bad name is refused before anything is opened or read from standard input.
    if let AdminAction::Add { name, .. } = &action {
        check_account_name(name)?;
    }
    let site = open_site(&config)?;
    let store = account_store(&config, &site)?;
    let location = location(&config, &site);
    let now = unix_now() as Time;
    match action {
        AdminAction::Add { name, role, password_stdin } => {
            let role = Role::from(role);
            if store.account(&name).await.map_err(|e| e.to_string())?.is_some() {
                return Err(exists(&name, &location));
            }
            let (password, how) = password(password_stdin)?;
            let hash = hash_password(&password).map_err(|e| e.to_string())?;
            let account = Account { name: name.clone(), role, created: now };
            if !store.add_account(&account, &hash).await.map_err(|e| e.to_string())? {
                return Err(exists(&name, &location));
            }
            site.audit_cli(&config, "account.add", &name, &format!("role {role}; {}", how.detail())).await;
            match how {
                Password::Generated => {
                    eprintln!("added account {name} ({role}) in {location}; its password, shown only now:");
                    println!("{password}");
                }
                Password::Stdin => eprintln!("added account {name} ({role}) in {location}"),
            }
        }
        AdminAction::Token { name } => {
            let account = existing(&*store, &name, &location).await?;
            let (token, digest) = new_secret(API_TOKEN_PREFIX).map_err(|e| e.to_string())?;
            store.add_api_token(&digest, &name, now).await.map_err(|e| e.to_string())?;
            site.audit_cli(&config, "account.token", &name, &format!("API token created (role {})", account.role))
                .await;
            eprintln!(
                "API token of {name} ({}), shown only now; send it as `Authorization: Bearer TOKEN`. It works until \
                 the account is removed.",
                account.role
            );
            println!("{token}");
        }
        AdminAction::List => {
            let accounts = store.accounts().await.map_err(|e| e.to_string())?;
            let width = accounts.iter().map(|a| a.name.len()).max().unwrap_or(0).max(4);
            for a in &accounts {
                println!("{:<width$}  {:<9}  created {}", a.name, a.role.as_str(), rfc3339_utc(a.created));
            }
            println!("{} account(s)", accounts.len());
        }
        AdminAction::Remove { name } => {
            let account = existing(&*store, &name, &location).await?;
            if account.role == Role::Admin {
                let admins = store.accounts().await.map_err(|e| e.to_string())?;
                if admins.iter().filter(|a| a.role == Role::Admin).count() <= 1 {
                    return Err(format!(
                        "{name} is the last admin account: nobody could manage accounts in the console without \
                         one. Add another first (`sipcfg admin add NAME --role admin`), then remove {name}"
                    ));
                }
            }
            if !store.remove_account(&name).await.map_err(|e| e.to_string())? {
                return Err(unknown(&name, &location));
            }
            site.audit_cli(&config, "account.remove", &name, &format!("role {}", account.role)).await;
            println!("removed account {name} ({}): its sessions and API tokens no longer work", account.role);
        }
        AdminAction::Passwd { name, password_stdin } => {
            let account = existing(&*store, &name, &location).await?;
            let (password, how) = password(password_stdin)?;
            let hash = hash_password(&password).map_err(|e| e.to_string())?;
            if !store.set_password(&name, &hash).await.map_err(|e| e.to_string())? {
                return Err(unknown(&name, &location));
            }
            site.audit_cli(&config, "account.password", &name, &format!("{}; sessions ended", how.detail())).await;
            let what = format!("new password for {name} ({}); its browser sessions are ended", account.role);
            match how {
                Password::Generated => {
                    eprintln!("{what}; the password, shown only now:");
                    println!("{password}");
                }
                Password::Stdin => eprintln!("{what}"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the accounts live, or why there is nowhere.
fn account_store(config: &Config, site: &Site) -> Result<Arc<dyn AccountStore>, String> {
    site.account_store(config).map_err(|e| e.to_string())?.ok_or_else(|| {
        format!(
            "{}: no [state] database and no [store] are configured, and accounts live in one of them. Add a \
             [state] section with database = \"/var/lib/sipcfg/sipcfg.db\" (one server), or [store] (a cluster); \
             docs/configuration.md",
            config.path.display()
        )
    })
}

/// Where the accounts are, for messages: `[state]`'s database, or the shared store's URL.
fn location(config: &Config, site: &Site) -> String {
    match site.shared() {
        Some(store) => store.origin().to_owned(),
        None => config.state.as_ref().map_or_else(String::new, |s| s.database.display().to_string()),
    }
}

async fn existing(store: &dyn AccountStore, name: &str, location: &str) -> Result<Account, String> {
    match store.account(name).await.map_err(|e| e.to_string())? {
        Some(stored) => Ok(stored.account),
        None => Err(unknown(name, location)),
    }
}

fn unknown(name: &str, location: &str) -> String {
    format!("no account {name:?} in {location} (`sipcfg admin list` shows them)")
}

fn exists(name: &str, location: &str) -> String {
    format!("account {name:?} already exists in {location}; `sipcfg admin passwd {name}` gives it a new password")
}

/// Where a password came from.
#[derive(Clone, Copy)]
enum Password {
    Generated,
    Stdin,
}

impl Password {
    /// For the audit trail.
    fn detail(self) -> &'static str {
        match self {
            Password::Generated => "password generated",
            Password::Stdin => "password from standard input",
        }
    }
}

/// A generated password, or the first line of standard input.
fn password(from_stdin: bool) -> Result<(String, Password), String> {
    if !from_stdin {
        return Ok((generate_password().map_err(|e| e.to_string())?, Password::Generated));
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("password (at least {MIN_PASSWORD_CHARS} characters; it shows as typed), then Enter:");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).map_err(|e| format!("cannot read the password from standard input: {e}"))?;
    let password = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(&line);
    check_password(password)?;
    Ok((password.to_owned(), Password::Stdin))
}

/// A password given by a person: long enough, and one line.
fn check_password(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars == 0 {
        return Err("--password-stdin: no password on standard input (give it as the first line)".into());
    }
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!(
            "--password-stdin: the password has {chars} characters; at least {MIN_PASSWORD_CHARS} are needed \
             (or leave out --password-stdin for a generated one)"
        ));
    }
    if password.chars().any(char::is_control) {
        return Err("--password-stdin: the password has a control character (give it as one line of text)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_from_people_are_checked() {
        assert!(check_password("").unwrap_err().contains("no password"));
        let short = check_password("elevenchars").unwrap_err();
        assert!(short.contains("11 characters") && short.contains("at least 12"), "{short}");
        assert!(check_password("twelve chars").is_ok());
        assert!(check_password("ünïcödé-pässwörd").is_ok(), "characters, not bytes");
        assert!(check_password("with a\ttab inside").is_err());
    }

    #[test]
    fn role_names_are_the_stores() {
        use clap::ValueEnum;
        for r in RoleArg::value_variants() {
            let name = r.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(Role::parse(&name), Some(Role::from(*r)));
        }
    }
}
