//! The `sipcfg` command line: one file per command group, each a thin shell over the library (the work is
//! done in [`crate::app`], [`crate::provision`] and [`crate::auth`]; here, arguments and what is printed).
//!
//! | file | commands |
//! |---|---|
//! | [`serve`] | `serve` |
//! | [`check`], [`render`], [`import`] | `check`, `render`, `import` |
//! | [`cluster`], [`cert`], [`edge`] | `sip-oauth-mode`, `cluster`, `cert`, `edge` |
//! | [`tokens`] | `token`, `activation-code`, `keys` |
//! | [`store`] | `store init`, `store export`, `store status` (the shared store of a cluster) |
//! | [`admin`] | `admin add`, `token`, `list`, `remove`, `passwd` (accounts of the management API and console) |
//! | [`users`], [`ldap`] | `user add`, `remove`, `list`, `import`; `ldap sync` (users from the directory) |
//! | [`pools`] | `device-pool`, `cm-group`, `date-time-group`: `list`, `show`, `set`, `remove` |
//! | [`docs`] | `manpage`, `completions` |
//! | [`logging`], [`progress`] | logs and the audit log; progress bars |

pub mod admin;
pub mod cert;
pub mod check;
pub mod cluster;
pub mod docs;
pub mod edge;
pub mod import;
pub mod ldap;
pub mod logging;
pub mod pools;
pub mod progress;
pub mod render;
pub mod serve;
pub mod store;
pub mod tokens;
pub mod users;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::app::site::Site;
use crate::cli::admin::AdminAction;
use crate::cli::cert::CertAction;
use crate::cli::cluster::{ClusterAction, ModeAction};
use crate::cli::edge::EdgeAction;
use crate::cli::ldap::LdapAction;
use crate::cli::pools::{CmGroupAction, DateTimeGroupAction, DevicePoolAction};
use crate::cli::store::StoreAction;
use crate::cli::tokens::{CodeAction, KeysAction, TokenAction};
use crate::cli::users::UserAction;
use crate::config::{self, Config, Overrides};
use crate::provision::deployment::LoadError;
use crate::provision::inventory::Inventory;

#[derive(Parser, Debug)]
#[command(name = "sipcfg", version, about = "Secure configuration server for SIP phones (CUCM SIP OAuth mode)")]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigArg,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArg {
    /// Configuration file, before or after the command. Without it: $SIPCFG_CONFIG, else the example
    /// deployment when run from the root of a source checkout (example/sipcfg.toml), else
    /// /etc/sipcfg/sipcfg.toml. `manpage` and `completions` need none.
    #[arg(long, short = 'c', value_name = "FILE", global = true, env = "SIPCFG_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve configuration files over HTTPS.
    Serve {
        /// Address of the HTTPS listener phones use, overriding server.listen (default [::]:6971): an IP
        /// address or a host name, with the port (e.g. 192.0.2.10:6971, tftp1.example.com:6971).
        #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
        listen: Option<SocketAddr>,
        /// Address of the admin listener (/metrics, /healthz, /readyz), overriding admin.listen (default
        /// 127.0.0.1:9971); it turns the admin listener on.
        #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
        admin_listen: Option<SocketAddr>,
        /// Address of the plain-HTTP listener (CUCM's 6970: common files, non-OAuth devices), overriding
        /// legacy.listen; it turns that listener on. With --listen and the others, several nodes run from one
        /// configuration on one machine.
        #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
        legacy_listen: Option<SocketAddr>,
        /// Address of the edge-proxy listener (mutual TLS, Expressway-C), overriding edge.listen; the
        /// configuration must have an [edge] section.
        #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
        edge_listen: Option<SocketAddr>,
        /// Address of the management API and web console (HTTPS, default 127.0.0.1:8443), overriding
        /// console.listen; it turns the console on.
        #[arg(long, value_name = "HOST:PORT", value_parser = parse_listen)]
        console_listen: Option<SocketAddr>,
    },
    /// Validate the configuration, inventory, templates and keys, rendering every device; exit 1 on any error.
    Check,
    /// Print the file a device would receive, e.g. `sipcfg render SEP001122334455.cnf.xml`.
    ///
    /// With `--all --out DIR`, write every device's configuration file into DIR instead, named as the phone
    /// asks for it (SEP001122334455.cnf.xml), with XMLDefault.cnf.xml and caconfig.json; exit 1 if any
    /// file fails, after reporting every failure.
    Render {
        /// File name as a phone asks for it.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        file: Option<String>,
        /// Render every device's configuration file (named as the phone asks for it), XMLDefault.cnf.xml and
        /// caconfig.json into --out.
        #[arg(long, requires = "out")]
        all: bool,
        /// Folder for --all, created if missing; files of the same name are replaced, no other file is touched.
        #[arg(long, value_name = "DIR", requires = "all")]
        out: Option<PathBuf>,
    },
    /// Add phones from a CUCM Bulk Administration (BAT) phone export (CSV) to the inventory.
    ///
    /// Every row is checked first and every problem reported with its line; nothing is written unless all
    /// rows are valid (exit 1 otherwise). Columns: DEVICE NAME, DEVICE TYPE, DEVICE SECURITY PROFILE,
    /// DESCRIPTION, OWNER USER ID, DIRECTORY NUMBER n, DISPLAY n, LINE TEXT LABEL n; others are ignored
    /// (docs/inventory.md). Profiles and owners must already be in the inventory. A running server applies
    /// the new inventory by itself.
    Import {
        /// The CSV file.
        file: PathBuf,
        /// Replace the imported fields of devices already in the inventory (without it, such rows are refused).
        #[arg(long)]
        update: bool,
        /// Check every row and the resulting inventory; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Create the owners (OWNER USER ID) the inventory does not have yet, named by their id, instead of
        /// refusing their rows.
        #[arg(long)]
        create_users: bool,
    },
    /// Write the manual pages into DIR: sipcfg.1 and one page per subcommand (sipcfg-serve.1, …).
    Manpage {
        /// Output folder, created if missing.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print the shell completion script for SHELL on standard output.
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Mint an access token with the configured signing key and print it (only it) on stdout;
    /// `token revoke` revokes a user's or device's tokens.
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Token {
        #[command(subcommand)]
        action: Option<TokenAction>,
        /// A token for one device (e.g. SEP001122334455).
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        device: Option<String>,
        /// A token for one user: it opens the configurations of every device the user owns.
        #[arg(long)]
        user: Option<String>,
        /// Lifetime in seconds (default auth.signing.default_ttl_secs).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
        ttl: Option<u64>,
    },
    /// SIP OAuth for the whole cluster (CUCM's `utils sipOAuth-mode`). A running server applies it at once.
    #[command(name = "sip-oauth-mode")]
    SipOAuthMode {
        /// enable, disable, or status (print whether it is enabled).
        #[arg(value_enum)]
        action: ModeAction,
    },
    /// Cluster settings: show them, or set the refresh login flow and the SIP OAuth ports.
    Cluster {
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Activation codes for onboarding (16 digits, single use): create, list, revoke.
    #[command(name = "activation-code")]
    ActivationCode {
        #[command(subcommand)]
        action: CodeAction,
    },
    /// The token service's signing keys: list, rotate, regen (CUCM's `set key regen authz signing`).
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Certificate stores (CUCM's certificate management): Phone-Edge-Trust, Tomcat-trust.
    Cert {
        #[command(subcommand)]
        action: CertAction,
    },
    /// Expressway-C proxies of the edge listener (CUCM's Device > Expressway-C): list them.
    Edge {
        #[command(subcommand)]
        action: EdgeAction,
    },
    /// The shared store of a cluster ([store], PostgreSQL): create or upgrade its schema and move the
    /// deployment in, write it back as files, or show the nodes and how far each has followed it.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
    /// Administrator accounts of the management API and the web console: add, token, list, remove, passwd.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// End users (owners of devices): add, remove, list, or import a CUCM BAT user export.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Device pools (CUCM's System > Device Pool): list, show, set (create or change), remove. A device
    /// names its pool with `pool`; the pool names a CM group and a date/time group.
    #[command(name = "device-pool", visible_alias = "pool")]
    DevicePool {
        #[command(subcommand)]
        action: DevicePoolAction,
    },
    /// CM groups (CUCM's System > Cisco Unified CM Group), the call managers of a device pool's phones in
    /// priority order: list, show, set, remove.
    #[command(name = "cm-group")]
    CmGroup {
        #[command(subcommand)]
        action: CmGroupAction,
    },
    /// Date/time groups (CUCM's System > Date/Time Group), the time zone, formats and NTP servers of a
    /// device pool's phones: list, show, set, remove.
    #[command(name = "date-time-group")]
    DateTimeGroup {
        #[command(subcommand)]
        action: DateTimeGroupAction,
    },
    /// Users from the directory ([ldap]): `ldap sync` reads it now and adds, updates, disables or removes
    /// the users it changes (`--dry-run`: print them, write nothing).
    Ldap {
        #[command(subcommand)]
        action: LdapAction,
    },
}

pub fn main(cli: Cli) -> ExitCode {
    let config = cli.config;
    let result = match cli.command {
        Command::Serve { listen, admin_listen, legacy_listen, edge_listen, console_listen } => {
            serve::serve(&config, Overrides { listen, admin_listen, legacy_listen, edge_listen, console_listen })
        }
        other => {
            logging::init_logging();
            run_command(&config, other)
        }
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("sipcfg: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(config: &ConfigArg, command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Serve { listen, admin_listen, legacy_listen, edge_listen, console_listen } => {
            serve::serve(config, Overrides { listen, admin_listen, legacy_listen, edge_listen, console_listen })
        }
        Command::Check => check::check(config),
        Command::Render { file: Some(file), .. } => render::render(config, &file),
        Command::Render { file: None, out, .. } => match out {
            Some(out) => render::render_all(config, &out),
            None => Err("give a FILE, or --all --out DIR".into()),
        },
        Command::Import { file, update, dry_run, create_users } => {
            import::import(config, &file, update, dry_run, create_users)
        }
        Command::Manpage { out } => docs::manpage(&out),
        Command::Completions { shell } => docs::completions(shell),
        Command::Token { action: Some(TokenAction::Revoke { device, user }), .. } => {
            tokens::revoke(config, device, user)
        }
        Command::Token { action: None, device, user, ttl } => tokens::token(config, device, user, ttl),
        Command::ActivationCode { action } => tokens::activation_code(config, action),
        Command::Keys { action } => tokens::keys(config, action),
        Command::SipOAuthMode { action } => cluster::sip_oauth_mode(config, action),
        Command::Cluster { action } => cluster::cluster(config, action),
        Command::Cert { action } => cert::cert(config, action),
        Command::Edge { action } => edge::edge(config, action),
        Command::Store { action } => store::store(config, action),
        Command::Admin { action } => admin::admin(config, action),
        Command::User { action } => users::user(config, action),
        Command::Ldap { action } => ldap::ldap(config, action),
        Command::DevicePool { action } => pools::device_pool(config, action),
        Command::CmGroup { action } => pools::cm_group(config, action),
        Command::DateTimeGroup { action } => pools::date_time_group(config, action),
    }
}

pub(crate) fn load_config(arg: &ConfigArg) -> Result<Config, String> {
    let path = match &arg.config {
        Some(p) => p.clone(),
        None => default_config().ok_or_else(|| {
            format!(
                "no configuration: {} does not exist. Give one with -c FILE or SIPCFG_CONFIG=FILE, or create {} \
                 (the package installs one); to serve the example deployment, run from the root of a source \
                 checkout",
                config::INSTALLED_CONFIG,
                config::INSTALLED_CONFIG
            )
        })?,
    };
    Config::load(&path).map_err(|e| e.to_string())
}

/// Runs an async command to completion on a runtime of its own (one thread: a command does one thing at a
/// time); an error if the runtime cannot start.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    Ok(runtime.block_on(future))
}

/// The configuration used without `-c` and `SIPCFG_CONFIG`: the example deployment when the current folder is
/// the root of a source checkout (it has `Cargo.toml` and `example/sipcfg.toml`), else the installed
/// `/etc/sipcfg/sipcfg.toml` if it exists.
fn default_config() -> Option<PathBuf> {
    let example = PathBuf::from(config::EXAMPLE_CONFIG);
    if example.is_file() && Path::new("Cargo.toml").is_file() {
        return Some(example);
    }
    let installed = PathBuf::from(config::INSTALLED_CONFIG);
    installed.is_file().then_some(installed)
}

/// `HOST:PORT` where HOST is an IP address (IPv6 in brackets) or a name, resolved now; the first address
/// the resolver gives is used.
fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    if value.rsplit_once(':').is_none_or(|(_, port)| port.parse::<u16>().is_err()) {
        return Err(format!("{value:?}: give HOST:PORT, e.g. 0.0.0.0:6971, [::]:6971 or tftp1.example.com:6971"));
    }
    let mut addrs = value.to_socket_addrs().map_err(|e| format!("{value:?}: cannot resolve the host name: {e}"))?;
    addrs.next().ok_or_else(|| format!("{value:?}: the host name resolves to no address"))
}

/// Where the deployment of `config` lives (its files, or the shared store).
pub(crate) fn open_site(config: &Config) -> Result<Site, String> {
    Site::open(config).map_err(|e| e.to_string())
}

/// The inventory, from where it lives.
pub(crate) async fn site_inventory(site: &Site, config: &Config) -> Result<Inventory, String> {
    site.inventory(config).await.map_err(|e| e.to_string())
}

pub(crate) fn join(errors: Vec<LoadError>) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}
