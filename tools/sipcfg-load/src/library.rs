//! Every use of the `sipcfg` library by the load client, all for `--mint`: when the library's modules move,
//! this file is the only one to follow them.

use std::path::Path;
use std::time::{Duration, Instant};

/// A deployment's token signer and the names of its first enabled devices.
pub struct Deployment {
    signer: sipcfg::auth::signer::Signer,
    /// The first N enabled devices of the inventory, by name.
    pub names: Vec<String>,
    /// How many devices the inventory holds (enabled or not).
    pub devices: usize,
    /// How long `Inventory::load` took (scripts/bootstorm.sh reports it as the inventory load time).
    pub load_time: Duration,
}

impl Deployment {
    /// Loads the configuration at `config`, its signing key and its inventory; keeps the first `n` enabled
    /// devices in name order.
    pub fn load(config: &Path, n: usize) -> Result<Self, String> {
        let config = sipcfg::config::Config::load(config).map_err(|e| e.to_string())?;
        let signer = sipcfg::auth::signer::Signer::from_config(&config.auth).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let inventory =
            sipcfg::provision::inventory::Inventory::load(&config.inventory.file).map_err(|e| e.to_string())?;
        let load_time = t0.elapsed();
        let names = inventory
            .device_names_sorted()
            .into_iter()
            .filter(|d| inventory.devices[*d].enabled)
            .take(n)
            .map(|d| d.to_string())
            .collect();
        Ok(Deployment { signer, names, devices: inventory.devices.len(), load_time })
    }

    /// A device token for `name`, issued at `now` (see [`now`]) and valid for `ttl` seconds.
    pub fn mint(&self, name: &str, now: u64, ttl: u64) -> Result<String, String> {
        let device = sipcfg::provision::filename::DeviceName::parse_loose(name).map_err(|e| format!("{name}: {e}"))?;
        self.signer.mint_at(&sipcfg::provision::subject::Subject::Device(device), now, ttl).map_err(|e| e.to_string())
    }
}

/// The time tokens are issued at, as the library reads the clock.
pub fn now() -> u64 {
    sipcfg::util::time::unix_now()
}
