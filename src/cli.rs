//! The `sipcfg` command line: `serve`, `check`, `render`, `token`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::app::App;
use crate::config::{self, Config};
use crate::filename::{self, DeviceName, FileRequest};
use crate::provision;
use crate::server;
use crate::token::{Signer, Subject, Verifier};

#[derive(Parser, Debug)]
#[command(name = "sipcfg", version, about = "Secure configuration server for SIP phones (CUCM SIP OAuth mode)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct ConfigArg {
    /// Configuration file. Without it, the example deployment (example/sipcfg.toml, run from the repository root).
    #[arg(long, short = 'c', value_name = "FILE")]
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
    },
    /// Validate the configuration, inventory, templates and keys, rendering every device; exit 1 on any error.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the file a device would receive, e.g. `sipcfg render SEP001122334455.cnf.xml`.
    Render {
        #[command(flatten)]
        config: ConfigArg,
        /// File name as a phone asks for it.
        file: String,
    },
    /// Mint an access token with the configured signing key and print it (only it) on stdout.
    Token {
        #[command(flatten)]
        config: ConfigArg,
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
}

pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SIPCFG_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Serve { config, listen } => serve(&config, listen),
        Command::Check { config } => check(&config),
        Command::Render { config, file } => render(&config, &file),
        Command::Token { config, device, user, ttl } => token(&config, device, user, ttl),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("sipcfg: {message}");
            ExitCode::FAILURE
        }
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

fn serve(arg: &ConfigArg, listen: Option<SocketAddr>) -> Result<ExitCode, String> {
    let mut config = load_config(arg)?;
    if let Some(l) = listen {
        config.server.listen = l;
    }
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
        let listen = config.server.listen;
        let app = Arc::new(App::from_config(config).map_err(|e| e.to_string())?);
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let deployment = app.provisioner.current();
        tracing::info!(
            address = %listener.local_addr().map_or(listen, |a| a),
            devices = deployment.inventory.devices.len(),
            "serving configuration files over HTTPS"
        );
        drop(deployment);
        server::run(listener, app, shutdown_signal()).await;
        Ok::<_, String>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
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
    let mut rendered = 0usize;
    match provision::load(&config.inventory.file, &config.inventory.templates) {
        Ok((inventory, templates)) => {
            for name in inventory.device_names_sorted() {
                let device = &inventory.devices[name];
                match templates.render(&inventory, device) {
                    Ok(_) => rendered += 1,
                    Err(e) => errors.push(format!("{}: {e}", config.inventory.templates.display())),
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
    let (inventory, templates) = provision::load(&config.inventory.file, &config.inventory.templates).map_err(join)?;
    let request = filename::parse_name(file).map_err(|e| format!("{file}: {e}"))?;
    match request {
        FileRequest::DeviceConfig(name) => {
            let device = inventory
                .device(&name)
                .ok_or_else(|| format!("{file}: no device {name} in {}", inventory.file.display()))?;
            if !device.enabled {
                eprintln!("note: {name} is disabled; phones are refused this file");
            }
            let xml = templates.render(&inventory, device).map_err(|e| e.to_string())?;
            print!("{xml}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn token(arg: &ConfigArg, device: Option<String>, user: Option<String>, ttl: Option<u64>) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let signer = Signer::from_config(&config.auth).map_err(|e| e.to_string())?;
    let inventory = crate::inventory::Inventory::load(&config.inventory.file).map_err(|e| e.to_string())?;
    let subject = match (device, user) {
        (Some(d), _) => {
            let name = DeviceName::parse_loose(&d).map_err(|e| format!("--device {d}: {e}"))?;
            if inventory.device(&name).is_none() {
                return Err(format!("--device {d}: no such device in {}", inventory.file.display()));
            }
            Subject::Device(name)
        }
        (None, Some(u)) => {
            if !inventory.users.contains_key(&u) {
                return Err(format!("--user {u}: no such user in {}", inventory.file.display()));
            }
            Subject::User(u)
        }
        (None, None) => return Err("give --device NAME or --user ID".into()),
    };
    let token = signer.mint(&subject, ttl.unwrap_or(signer.default_ttl_secs)).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

fn join(errors: Vec<provision::LoadError>) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// Whether `path` is the example configuration (for messages).
pub fn is_example(path: &Path) -> bool {
    path.ends_with(config::EXAMPLE_CONFIG)
}
