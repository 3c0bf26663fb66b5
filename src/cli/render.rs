//! `sipcfg render FILE` and `sipcfg render --all --out DIR`.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::progress::Bar;
use crate::cli::{ConfigArg, block_on, join, load_config, open_site};
use crate::config::Config;
use crate::provision::deployment::{Loaded, Sources};
use crate::provision::export;
use crate::provision::filename::{self, FileRequest};
use crate::provision::trust;

/// The deployment `config` describes, from where it lives (its files, or the shared store).
fn load(config: &Config) -> Result<Loaded, String> {
    let sources = Sources::from_config(config);
    block_on(async {
        let site = open_site(config)?;
        site.with_held(|held| held.load(&sources)).await.map_err(|e| e.to_string())?.map_err(join)
    })?
}

pub(crate) fn render(arg: &ConfigArg, file: &str) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let loaded = load(&config)?;
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
        FileRequest::CaConfig => String::from_utf8_lossy(&trust::caconfig_json(trust)).into_owned(),
        FileRequest::Common(_) => {
            return Err(format!(
                "{file} is a common file: sipcfg serves it as it is from the file root (files.root), it is not \
                 rendered. `sipcfg render` prints device configurations (e.g. SEP001122334455.cnf.xml), \
                 XMLDefault.cnf.xml and caconfig.json"
            ));
        }
        FileRequest::EncryptedConfig(name) => {
            return Err(format!(
                "{file} is a TFTP-encrypted configuration, which sipcfg never serves (not supported with SIP OAuth); \
                 render {name}.cnf.xml instead"
            ));
        }
    };
    print!("{xml}");
    Ok(ExitCode::SUCCESS)
}

/// `render --all --out DIR`: every device's file through the same rendering as `render FILE` and the server.
pub(crate) fn render_all(arg: &ConfigArg, out: &Path) -> Result<ExitCode, String> {
    let config = load_config(arg)?;
    let loaded = load(&config)?;
    let done = export::render_all(&loaded, out, &mut Bar::new("rendering"))?;
    for f in &done.failures {
        eprintln!("error: {f}");
    }
    let also = if done.shared.is_empty() { String::new() } else { format!(", and {}", done.shared.join(" and ")) };
    if done.failures.is_empty() {
        println!("{}: {} device configuration files written{also}", out.display(), done.devices);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "{}: {} failed; {} of {} device configurations written{also}",
            out.display(),
            done.failures.len(),
            done.devices,
            done.of_devices
        );
        Ok(ExitCode::FAILURE)
    }
}
