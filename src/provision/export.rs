//! `sipcfg render --all`: every file a phone of the deployment may ask for, written into a folder, through
//! the same rendering as `sipcfg render FILE` and the server: each device's configuration (named as the
//! phone asks for it, `SEP001122334455.cnf.xml`), `XMLDefault.cnf.xml` and `caconfig.json`. For an archive,
//! a diff of a template change, or a plain web server in an emergency.

use std::path::Path;

use crate::provision::deployment::Loaded;
use crate::provision::filename::{self, FileRequest};
use crate::provision::trust;
use crate::util::fsutil;
use crate::util::progress::Progress;

/// What [`render_all`] wrote, and every failure (it goes on past one).
#[derive(Debug, Default)]
pub struct Rendered {
    /// Device configuration files written.
    pub devices: usize,
    /// Devices in the inventory.
    pub of_devices: usize,
    /// The shared files written (`XMLDefault.cnf.xml`, `caconfig.json`).
    pub shared: Vec<&'static str>,
    /// One message per file that failed (render or write), naming it.
    pub failures: Vec<String>,
}

/// Writes every file of `loaded` into `out` (created if missing). Files of the same name are replaced, no
/// other file is touched. Files are replaced atomically but not flushed one by one: one flush of the folder
/// at the end (an fsync per file cost more than the rendering).
pub fn render_all(loaded: &Loaded, out: &Path, progress: &mut dyn Progress) -> Result<Rendered, String> {
    let (inventory, templates, trust) = (&loaded.inventory, &loaded.templates, &loaded.phone_edge_trust);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: cannot create the folder: {e}", out.display()))?;
    let names = inventory.device_names_sorted();
    let mut done = Rendered { of_devices: names.len(), ..Rendered::default() };
    progress.start(names.len() as u64);
    for name in &names {
        let device = &inventory.devices[*name];
        let file_name = format!("{name}.cnf.xml");
        debug_assert_eq!(filename::parse_name(&file_name), Ok(FileRequest::DeviceConfig((*name).clone())));
        let path = out.join(&file_name);
        match templates.render(inventory, device, trust) {
            Ok(xml) => match fsutil::replace_unsynced(&path, xml.as_bytes()) {
                Ok(()) => done.devices += 1,
                Err(e) => done.failures.push(cannot_write(&path, &e)),
            },
            Err(e) => done.failures.push(e.to_string()),
        }
        progress.step();
    }
    progress.finish();
    // What every phone may also ask for: the file of unknown phones and the Phone-Edge-Trust list.
    let shared = [
        (filename::DEFAULT_CONFIG, templates.render_default(inventory, trust).map(String::into_bytes)),
        (filename::CA_CONFIG, Ok(trust::caconfig_json(trust))),
    ];
    for (file_name, rendered) in shared {
        let path = out.join(file_name);
        match rendered {
            Ok(bytes) => match fsutil::replace_unsynced(&path, &bytes) {
                Ok(()) => done.shared.push(file_name),
                Err(e) => done.failures.push(cannot_write(&path, &e)),
            },
            Err(e) => done.failures.push(format!("{file_name}: {e}")),
        }
    }
    if let Err(e) = fsutil::sync_dir(out) {
        done.failures.push(format!("{}: cannot flush the folder to disk: {e}", out.display()));
    }
    Ok(done)
}

fn cannot_write(path: &Path, e: &std::io::Error) -> String {
    format!("{}: cannot write: {e}", path.display())
}
