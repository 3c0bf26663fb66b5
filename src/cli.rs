//! The `sipcfg` command line: `serve`, `check`, `render`, `token`, `import`, and the rest.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::app::App;
use crate::config::{self, Config};
use crate::filename::{self, DeviceName, FileRequest};
use crate::provision::{self, Sources};
use crate::server::{self, Listeners};
use crate::settings::{self, ClusterChange};
use crate::state::sqlite::SqliteStore;
use crate::token::{Signer, Subject, Verifier, unix_now};
use crate::token_service::TokenService;
use crate::trust::TrustStore;

#[derive(Parser, Debug)]
#[command(name = "sipcfg", version, about = "Secure configuration server for SIP phones (CUCM SIP OAuth mode)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// Configuration file. Without it, the example deployment (example/sipcfg.toml, run from the repository root).
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve configuration files over HTTPS.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Listen address, overriding server.listen (default [::]:6971).
        #[arg(long, value_name = "ADDR:PORT")]
        listen: Option<SocketAddr>,
        /// Address of the admin listener (/metrics, /healthz, /readyz), overriding admin.listen (default
        /// 127.0.0.1:9971); it turns the admin listener on.
        #[arg(long, value_name = "ADDR:PORT")]
        admin_listen: Option<SocketAddr>,
    },
    /// Validate the configuration, inventory, templates and keys, rendering every device; exit 1 on any error.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the file a device would receive, e.g. `sipcfg render SEP001122334455.cnf.xml`.
    ///
    /// With `--all --out DIR`, write every device's configuration file into DIR instead, named as the phone
    /// asks for it (SEP001122334455.cnf.xml), with XMLDefault.cnf.xml and caconfig.json; exit 1 if any
    /// file fails, after reporting every failure.
    Render {
        #[command(flatten)]
        config: ConfigArg,
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
        #[command(flatten)]
        config: ConfigArg,
        /// The CSV file.
        file: PathBuf,
        /// Replace the imported fields of devices already in the inventory (without it, such rows are refused).
        #[arg(long)]
        update: bool,
        /// Check every row and the resulting inventory; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the manual pages into DIR: sipcfg.1 and one page per subcommand (sipcfg-serve.1, …).
    Manpage {
        /// Output folder, created if missing.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print the shell completion script for SHELL on standard output.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Mint an access token with the configured signing key and print it (only it) on stdout;
    /// `token revoke` revokes a user's or device's tokens.
    #[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
    Token {
        #[command(flatten)]
        config: ConfigArg,
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
        #[command(flatten)]
        config: ConfigArg,
        #[arg(value_enum)]
        action: ModeAction,
    },
    /// Cluster settings: show them, or set the refresh login flow and the SIP OAuth ports.
    Cluster {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: ClusterAction,
    },
    /// Activation codes for onboarding (16 digits, single use): create, list, revoke.
    #[command(name = "activation-code")]
    ActivationCode {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: CodeAction,
    },
    /// The token service's signing keys: list, rotate, regen (CUCM's `set key regen authz signing`).
    Keys {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Certificate stores (CUCM's certificate management): Phone-Edge-Trust.
    Cert {
        #[command(flatten)]
        config: ConfigArg,
        #[command(subcommand)]
        action: CertAction,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenAction {
    /// Revoke every refresh token of a user or device, and refuse its access tokens issued until now.
    Revoke {
        #[arg(long, conflicts_with = "user", required_unless_present = "user")]
        device: Option<String>,
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CodeAction {
    /// Create a code for a device and print it (the only time it is shown: only its hash is stored).
    Create {
        #[arg(long)]
        device: String,
        /// Validity in days (default 7).
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..=365))]
        valid: u32,
    },
    /// List codes (id, device, state; never the codes).
    List,
    /// Revoke a code by its id.
    Revoke { id: String },
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
    /// Print the SIP OAuth cluster settings.
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

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The CA that issued the server's certificate on 6971, published to phones (at most 16).
    PhoneEdgeTrust,
}

#[derive(Subcommand, Debug)]
pub enum CertAction {
    /// Add a CA certificate (one PEM certificate, a CA, currently valid).
    Add {
        #[arg(long, value_enum)]
        purpose: Purpose,
        file: PathBuf,
    },
    /// List the certificates of a store.
    List {
        #[arg(long, value_enum, default_value = "phone-edge-trust")]
        purpose: Purpose,
    },
    /// Remove a certificate by its SHA-256 (or a unique prefix of 8+ hex digits).
    Remove {
        #[arg(long, value_enum, default_value = "phone-edge-trust")]
        purpose: Purpose,
        id: String,
    },
}

/// Logging for the commands: human-readable on standard error (`SIPCFG_LOG` filters, default `info`).
pub fn init_logging() {
    let _ = init_logging_with(&crate::config::LogConfig::default());
}

/// Logging for `serve`: text or JSON on standard error, and the audit log (JSON lines of the
/// `sipcfg::access` events) when configured. The returned guard flushes the audit log when dropped.
pub fn init_logging_with(
    log: &crate::config::LogConfig,
) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>, String> {
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SIPCFG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (subscriber, guard) = log_subscriber(log, filter)?;
    let _ = subscriber.try_init();
    Ok(guard)
}

type Subscriber = Box<dyn tracing::Subscriber + Send + Sync>;

/// The subscriber [`init_logging_with`] installs. Without an audit file it holds the console layer alone: an
/// absent (`None`) layer declares every event of every target enabled, so each request built its disabled
/// access line (the escaped path, the subject as a string, a clock read) only for the filter to drop it:
/// 12% of a keep-alive revalidation's instructions.
fn log_subscriber(
    log: &crate::config::LogConfig,
    filter: tracing_subscriber::EnvFilter,
) -> Result<(Subscriber, Option<tracing_appender::non_blocking::WorkerGuard>), String> {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::prelude::*;
    // Colours only for a person at a terminal (and never with NO_COLOR): the journal and files get plain text.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let console = match log.format {
        crate::config::LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).boxed()
        }
        crate::config::LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
    }
    .with_filter(filter);
    let registry = tracing_subscriber::registry().with(console);
    let Some(path) = &log.audit_file else { return Ok((Box::new(registry), None)) };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("audit log {}: {e}", path.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    let audit = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(writer)
        .with_filter(Targets::new().with_target("sipcfg::access", tracing::Level::INFO));
    Ok((Box::new(registry.with(audit)), Some(guard)))
}

pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve { config, listen, admin_listen } => serve(&config, listen, admin_listen),
        other => {
            init_logging();
            run_command(other)
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

fn run_command(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Serve { config, listen, admin_listen } => serve(&config, listen, admin_listen),
        Command::Check { config } => check(&config),
        Command::Render { config, file: Some(file), .. } => render(&config, &file),
        Command::Render { config, file: None, out, .. } => match out {
            Some(out) => render_all(&config, &out),
            None => Err("give a FILE, or --all --out DIR".into()),
        },
        Command::Import { config, file, update, dry_run } => import(&config, &file, update, dry_run),
        Command::Manpage { out } => manpage(&out),
        Command::Completions { shell } => completions(shell),
        Command::Token { config, action: Some(TokenAction::Revoke { device, user }), .. } => {
            revoke(&config, device, user)
        }
        Command::Token { config, action: None, device, user, ttl } => token(&config, device, user, ttl),
        Command::ActivationCode { config, action } => activation_code(&config, action),
        Command::Keys { config, action } => keys(&config, action),
        Command::SipOAuthMode { config, action } => sip_oauth_mode(&config, action),
        Command::Cluster { config, action } => cluster(&config, action),
        Command::Cert { config, action } => cert(&config, action),
    }
}

fn load_config(arg: &ConfigArg) -> Result<Config, String> {
    let path = match &arg.config {
        Some(p) => p.clone(),
        None => {
            let p = PathBuf::from(config::EXAMPLE_CONFIG);
            if !p.exists() {
                return Err(format!(
                    "no --config given and {} not found: run from the repository root, or pass --config FILE",
                    config::EXAMPLE_CONFIG
                ));
            }
            p
        }
    };
    Config::load(&path).map_err(|e| e.to_string())
}

fn serve(arg: &ConfigArg, listen: Option<SocketAddr>, admin_listen: Option<SocketAddr>) -> Result<ExitCode, String> {
    let mut config = load_config(arg)?;
    config.apply_overrides(crate::config::Overrides { listen, admin_listen });
    config.check_listeners().map_err(|e| e.to_string())?;
    let _audit_guard = init_logging_with(&config.log)?;
    let examples = config.example_key_files();
    if !examples.is_empty() {
        let files: Vec<_> = examples.iter().map(|p| p.display().to_string()).collect();
        tracing::warn!(
            "EXAMPLE KEYS IN USE ({}): they are public, anyone can mint tokens and impersonate this server. \
             Generate your own keys before serving real phones (docs/operations.md).",
            files.join(", ")
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        // Signal handlers before anything is announced: a SIGHUP or SIGTERM sent as soon as the server says
        // it serves (log line, READY=1) must reload or stop it, not meet the default action.
        let hangup = crate::reload::hangup();
        let shutdown = shutdown_signal();
        let app = Arc::new(App::from_config(config).map_err(|e| e.to_string())?);
        let listeners = Listeners::bind(&app.config).await?;
        let deployment = app.provisioner.current();
        let addr = |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(
            address = addr(&listeners.https),
            devices = deployment.inventory.devices.len(),
            sip_oauth_mode = deployment.inventory.cluster.sip_oauth_mode,
            "serving configuration files over HTTPS"
        );
        if let Some(l) = &listeners.legacy {
            tracing::info!(address = addr(l), "serving non-OAuth devices and common files over plain HTTP");
        }
        if let Some(l) = &listeners.edge {
            tracing::info!(address = addr(l), "serving edge proxies over mutual TLS");
        }
        drop(deployment);
        let (stop, mut tasks) = crate::reload::spawn_background(&app, hangup);
        tasks.push(tokio::spawn(crate::systemd::watchdog(stop.subscribe())));
        // Every listener is bound and the first deployment loaded: phones can be served.
        if let Err(e) = crate::systemd::notify_ready_status(&crate::reload::status_line(&app, true)) {
            tracing::warn!(error = %e, "systemd notification (READY=1) failed");
        }
        let shutdown = async {
            shutdown.await;
            if let Err(e) = crate::systemd::notify_stopping() {
                tracing::warn!(error = %e, "systemd notification (STOPPING=1) failed");
            }
        };
        server::run(listeners, app, shutdown).await;
        let _ = stop.send(true);
        for t in tasks {
            let _ = t.await;
        }
        Ok::<_, String>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Registers the SIGTERM handler at once (not on first poll) and returns the future that waits for
/// SIGTERM or an interrupt.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("interrupt: shutting down");
    }
}

fn check(arg: &ConfigArg) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let mut errors: Vec<String> = Vec::new();
    if let Err(e) = Verifier::from_config(&config.auth) {
        errors.push(e.to_string());
    }
    if config.auth.signing.is_some()
        && let Err(e) = Signer::from_config(&config.auth)
    {
        errors.push(e.to_string());
    }
    if let Err(e) = server::tls::server_config(&config.tls) {
        errors.push(e.to_string());
    }
    if let Some(edge) = &config.edge
        && let Err(e) = server::edge::server_config(&config.tls, edge)
    {
        errors.push(e.to_string());
    }
    let mut rendered = 0usize;
    match provision::load(&Sources::from_config(&config)) {
        Ok(loaded) => {
            let (inventory, templates, trust) = (&loaded.inventory, &loaded.templates, &loaded.phone_edge_trust);
            for name in inventory.device_names_sorted() {
                let device = &inventory.devices[name];
                match templates.render(inventory, device, trust) {
                    Ok(_) => rendered += 1,
                    Err(e) => errors.push(format!("{}: {e}", config.inventory.templates.display())),
                }
            }
            if let Err(e) = templates.render_default(inventory, trust) {
                errors.push(format!("{}: {e}", config.inventory.templates.display()));
            }
            for c in trust.iter().filter(|c| c.is_expired(unix_now() as i64)) {
                errors.push(format!("Phone-Edge-Trust certificate {} ({}) has expired", c.sha256, c.subject));
            }
            // The server chain and the edge client CA: expired is an error, expiring soon a warning.
            let certificates = crate::health::Certificates::of(&config, &[]);
            for (expired, line) in certificates.warnings(unix_now() as i64, config.admin.cert_warn_days) {
                if expired {
                    errors.push(format!("certificate expired: {line}"));
                } else {
                    eprintln!("warning: certificate expires soon: {line}");
                }
            }
            for c in trust.iter().filter(|c| !c.is_expired(unix_now() as i64)) {
                let days = (c.not_after - unix_now() as i64) / 86_400;
                if days < i64::from(config.admin.cert_warn_days) {
                    eprintln!(
                        "warning: Phone-Edge-Trust certificate {} ({}) expires in {days} days",
                        c.sha256, c.subject
                    );
                }
            }
        }
        Err(load_errors) => {
            errors.extend(load_errors.iter().flat_map(|e| e.to_string().lines().map(str::to_owned).collect::<Vec<_>>()))
        }
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    if errors.is_empty() {
        println!("{}: ok, {rendered} device configurations rendered", config.path.display());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}: {} error(s)", config.path.display(), errors.len());
        Ok(ExitCode::FAILURE)
    }
}

fn render(arg: &ConfigArg, file: &str) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let loaded = provision::load(&Sources::from_config(&config)).map_err(join)?;
    let (inventory, templates, trust) = (&loaded.inventory, &loaded.templates, &loaded.phone_edge_trust);
    let request = filename::parse_name(file).map_err(|e| format!("{file}: {e}"))?;
    let xml = match request {
        FileRequest::DeviceConfig(name) => {
            let device = inventory
                .device(&name)
                .ok_or_else(|| format!("{file}: no device {name} in {}", inventory.file.display()))?;
            if !device.enabled {
                eprintln!("note: {name} is disabled; phones are refused this file");
            }
            templates.render(inventory, device, trust).map_err(|e| e.to_string())?
        }
        FileRequest::DefaultConfig => templates.render_default(inventory, trust).map_err(|e| e.to_string())?,
        FileRequest::CaConfig => String::from_utf8_lossy(&crate::trust::caconfig_json(trust)).into_owned(),
        other => return Err(format!("{file}: a {} is not rendered", other.kind())),
    };
    print!("{xml}");
    Ok(ExitCode::SUCCESS)
}

/// A progress bar on standard error for `len` steps; hidden when standard error is not a terminal (pipes,
/// tests, logs see clean output) or when the work is too small to need one.
fn progress_bar(len: u64, message: &'static str) -> ProgressBar {
    const MIN_STEPS: u64 = 100;
    if len < MIN_STEPS || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

/// The import's row checks, drawn as a progress bar.
struct ImportProgress(Option<ProgressBar>);

impl crate::import::Progress for ImportProgress {
    fn start(&mut self, rows: u64) {
        self.0 = Some(progress_bar(rows, "checking rows"));
    }
    fn row_checked(&mut self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }
    fn finish(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

/// `render --all --out DIR`: every device's file through the same rendering as `render FILE` and the server.
fn render_all(arg: &ConfigArg, out: &Path) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let loaded = provision::load(&Sources::from_config(&config)).map_err(join)?;
    let (inventory, templates, trust) = (&loaded.inventory, &loaded.templates, &loaded.phone_edge_trust);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: cannot create the folder: {e}", out.display()))?;
    let names = inventory.device_names_sorted();
    let bar = progress_bar(names.len() as u64, "rendering");
    let mut failures = Vec::new();
    for name in &names {
        let device = &inventory.devices[*name];
        let file_name = format!("{name}.cnf.xml");
        debug_assert_eq!(filename::parse_name(&file_name), Ok(FileRequest::DeviceConfig((*name).clone())));
        let path = out.join(&file_name);
        match templates.render(inventory, device, trust) {
            Ok(xml) => {
                if let Err(e) = crate::fsutil::replace_unsynced(&path, xml.as_bytes()) {
                    failures.push(format!("{}: cannot write: {e}", path.display()));
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let device_failures = failures.len();
    // What every phone may also ask for: the file of unknown phones and the Phone-Edge-Trust list.
    let shared = [
        (filename::DEFAULT_CONFIG, templates.render_default(inventory, trust).map(String::into_bytes)),
        (filename::CA_CONFIG, Ok(crate::trust::caconfig_json(trust).to_vec())),
    ];
    let mut shared_written = Vec::new();
    for (file_name, rendered) in shared {
        let path = out.join(file_name);
        match rendered {
            Ok(bytes) => match crate::fsutil::replace_unsynced(&path, &bytes) {
                Ok(()) => shared_written.push(file_name),
                Err(e) => failures.push(format!("{}: cannot write: {e}", path.display())),
            },
            Err(e) => failures.push(format!("{file_name}: {e}")),
        }
    }
    // One flush for the whole folder instead of one per file (see fsutil::replace_unsynced).
    if let Err(e) = crate::fsutil::sync_dir(out) {
        failures.push(format!("{}: cannot flush the folder to disk: {e}", out.display()));
    }
    for f in &failures {
        eprintln!("error: {f}");
    }
    let written = names.len() - device_failures;
    let also =
        if shared_written.is_empty() { String::new() } else { format!(", and {}", shared_written.join(" and ")) };
    if failures.is_empty() {
        println!("{}: {written} device configuration files written{also}", out.display());
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{}: {} failed; {written} of {} device configurations written{also}",
            out.display(),
            failures.len(),
            names.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

fn import(arg: &ConfigArg, file: &Path, update: bool, dry_run: bool) -> Result<ExitCode, String> {
    use crate::import::{self, ImportError, Options};
    let config = load_config(arg)?;
    let inventory = &config.inventory.file;
    let mut progress = ImportProgress(None);
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

/// The command line as clap describes it, as man pages and completions need it.
fn clap_command() -> clap::Command {
    Cli::command().disable_help_subcommand(true)
}

/// `manpage --out DIR`: sipcfg.1 and one page per subcommand, nested ones too (sipcfg-cluster-set.1).
fn manpage(out: &Path) -> Result<ExitCode, String> {
    fn pages(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), String> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages(sub, out)?;
        }
        let source = format!("sipcfg {}", env!("CARGO_PKG_VERSION"));
        let man = clap_mangen::Man::new(cmd.clone()).source(source);
        let mut page = Vec::new();
        man.render(&mut page).map_err(|e| format!("cannot render the man page of {}: {e}", cmd.get_name()))?;
        out.push((man.get_filename(), page));
        Ok(())
    }
    let mut cmd = clap_command();
    cmd.build();
    let mut rendered = Vec::new();
    pages(&cmd, &mut rendered)?;
    std::fs::create_dir_all(out).map_err(|e| format!("{}: cannot create the folder: {e}", out.display()))?;
    rendered.sort();
    for (name, page) in &rendered {
        let path = out.join(name);
        crate::fsutil::atomic_write(&path, page).map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
    }
    println!("{}: {} manual pages written", out.display(), rendered.len());
    Ok(ExitCode::SUCCESS)
}

/// `completions SHELL`: the script on standard output.
fn completions(shell: clap_complete::Shell) -> Result<ExitCode, String> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut clap_command(), "sipcfg", &mut script);
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&script).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(format!("cannot write the completion script: {e}")),
    }
}

fn sip_oauth_mode(arg: &ConfigArg, action: ModeAction) -> Result<ExitCode, String> {
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

fn cluster(arg: &ConfigArg, action: ClusterAction) -> Result<ExitCode, String> {
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

fn cert(arg: &ConfigArg, action: CertAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let store = |purpose: Purpose| match purpose {
        Purpose::PhoneEdgeTrust => config
            .trust
            .phone_edge_trust
            .clone()
            .map(TrustStore::new)
            .ok_or_else(|| format!("{}: no [trust] phone_edge_trust folder is configured", config.path.display())),
    };
    let now = unix_now() as i64;
    let show = |c: &crate::trust::TrustCert| {
        let state = if c.is_expired(now) { "  EXPIRED" } else { "" };
        println!("{}  {}  (until {}){state}", c.sha256, c.subject, crate::trust::rfc3339_utc(c.not_after));
    };
    match action {
        CertAction::Add { purpose, file } => {
            let c = store(purpose)?.add(&file, now).map_err(|e| e.to_string())?;
            print!("added: ");
            show(&c);
        }
        CertAction::List { purpose } => {
            let certs = store(purpose)?.load(now).map_err(|e| e.to_string())?;
            for c in &certs {
                show(c);
            }
            println!("{} of {} certificates", certs.len(), crate::trust::MAX_PHONE_EDGE_TRUST);
        }
        CertAction::Remove { purpose, id } => {
            let c = store(purpose)?.remove(&id).map_err(|e| e.to_string())?;
            print!("removed: ");
            show(&c);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn token(arg: &ConfigArg, device: Option<String>, user: Option<String>, ttl: Option<u64>) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let signer = Signer::from_config(&config.auth).map_err(|e| e.to_string())?;
    let inventory = load_inventory(&config.inventory.file)?;
    let subject = subject_arg(&inventory, device, user)?;
    let token = signer.mint(&subject, ttl.unwrap_or(signer.default_ttl_secs)).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// The token service on the configured state database.
fn token_service(config: &Config) -> Result<TokenService, String> {
    let state = config.state.as_ref().ok_or_else(|| {
        format!("{}: no [state] database is configured (the token service needs one)", config.path.display())
    })?;
    let store = SqliteStore::open(&state.database).map_err(|e| e.to_string())?;
    let service = TokenService::open(Arc::new(store), &config.auth, unix_now() as i64)?;
    service.sync(unix_now() as i64)?;
    Ok(service)
}

fn subject_arg(
    inventory: &crate::inventory::Inventory,
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

fn revoke(arg: &ConfigArg, device: Option<String>, user: Option<String>) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let inventory = load_inventory(&config.inventory.file)?;
    let subject = subject_arg(&inventory, device, user)?;
    token_service(&config)?.revoke_subject(&subject, unix_now() as i64).map_err(|e| e.to_string())?;
    println!("revoked {subject}: its refresh tokens are dead and its access tokens are refused from now on");
    Ok(ExitCode::SUCCESS)
}

fn activation_code(arg: &ConfigArg, action: CodeAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let service = token_service(&config)?;
    let now = unix_now() as i64;
    match action {
        CodeAction::Create { device, valid } => {
            let inventory = load_inventory(&config.inventory.file)?;
            let Subject::Device(name) = subject_arg(&inventory, Some(device), None)? else {
                return Err("an activation code is for a device".into());
            };
            let (id, code) = service.create_activation_code(&name, now, i64::from(valid) * 86_400)?;
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
            let codes = service.store().list_activation_codes().map_err(|e| e.to_string())?;
            for c in &codes {
                let state = if c.revoked {
                    "revoked"
                } else if c.used.is_some() {
                    "used"
                } else if c.expires <= now {
                    "expired"
                } else {
                    "usable"
                };
                println!("{}  {:<16} {:<8} expires {}", c.id, c.device, state, crate::trust::rfc3339_utc(c.expires));
            }
            println!("{} code(s)", codes.len());
        }
        CodeAction::Revoke { id } => {
            if !service.store().revoke_activation_code(&id, now).map_err(|e| e.to_string())? {
                return Err(format!("no usable activation code with id {id}"));
            }
            println!("revoked activation code {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn keys(arg: &ConfigArg, action: KeysAction) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let service = token_service(&config)?;
    let now = unix_now() as i64;
    match action {
        KeysAction::List => {}
        KeysAction::Rotate => {
            let key = service.rotate_keys(now, 1440 * 60)?;
            println!("new signing key {}; the previous keys verify until their last token has expired", key.kid);
        }
        KeysAction::Regen { yes } => {
            if !yes {
                return Err("regen invalidates every access and refresh token at once: add --yes".into());
            }
            let key = service.regenerate_keys(now)?;
            println!("keys replaced by {}; every access and refresh token is now invalid", key.kid);
        }
    }
    for k in service.store().signing_keys().map_err(|e| e.to_string())? {
        let state = match k.retire_at {
            None => "signing".to_owned(),
            Some(t) => format!("retiring at {}", crate::trust::rfc3339_utc(t)),
        };
        println!("{}  {}  created {}  {state}", k.kid, k.algorithm, crate::trust::rfc3339_utc(k.created));
    }
    Ok(ExitCode::SUCCESS)
}

fn load_inventory(path: &std::path::Path) -> Result<crate::inventory::Inventory, String> {
    crate::inventory::Inventory::load(path).map_err(|e| e.to_string())
}

fn join(errors: Vec<provision::LoadError>) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::log_subscriber;
    use crate::config::LogConfig;
    use tracing_subscriber::EnvFilter;

    /// Whether `serve`'s subscriber, with this configuration and console filter, wants access lines.
    fn access_lines_wanted(log: &LogConfig, filter: &str) -> bool {
        let (subscriber, _guard) = log_subscriber(log, EnvFilter::new(filter)).expect("the subscriber builds");
        tracing::subscriber::with_default(
            subscriber,
            || tracing::enabled!(target: "sipcfg::access", tracing::Level::INFO),
        )
    }

    #[test]
    fn access_lines_are_built_only_when_something_writes_them() {
        let console_only = LogConfig::default();
        assert!(access_lines_wanted(&console_only, "info"));
        assert!(!access_lines_wanted(&console_only, "warn"), "filtered out and no audit file: not built");
        assert!(!access_lines_wanted(&console_only, "info,sipcfg::access=off"));
        let dir = tempfile::tempdir().expect("tempdir");
        let audited = LogConfig { audit_file: Some(dir.path().join("audit.jsonl")), ..LogConfig::default() };
        assert!(access_lines_wanted(&audited, "warn"), "the audit file wants every access line");
    }
}
