//! The last deployment that loaded, kept on disk so that a bad edit does not become an outage: when the files
//! of the deployment (inventory, templates, Phone-Edge-Trust) do not load at the next start, for instance
//! after a package upgrade restarted the service, sipcfg starts from this copy instead of refusing to start,
//! and says so loudly (log, `/readyz`, metrics).
//!
//! The copy is a folder per save, named after its time, and one symbolic link, `last-good`, that points at
//! the newest: a new copy is written completely (and flushed) first, then the link is replaced in one
//! atomic rename, then the older copy is removed. A crash at any point leaves the link pointing at a
//! complete copy. Common files (firmware, ring lists) are not copied: they are read from the file root as
//! they are.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::provision::deployment::Sources;
use crate::util::fsutil;
use crate::util::random::random_id;
use crate::util::time::{Time, rfc3339_utc};

/// The link to the newest copy, inside the snapshot folder.
const LINK: &str = "last-good";
/// What a copy says about itself.
const ABOUT: &str = "snapshot.json";
/// A single template or inventory file larger than this is not copied (the loader refuses such files anyway).
const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// Where a copy came from and when it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct About {
    /// When the deployment was saved (it had just loaded).
    pub saved_at: Time,
    /// The deployment generation it was in the process that saved it.
    pub generation: u64,
    /// The files it was copied from.
    pub inventory: PathBuf,
    pub templates: PathBuf,
    pub templates_override: Option<PathBuf>,
    pub phone_edge_trust: Option<PathBuf>,
    /// The fingerprint of those files when they were read; a save of unchanged files is skipped.
    pub fingerprint: u64,
}

impl About {
    /// "saved at 2026-11-29T21:57:47Z from /etc/sipcfg/inventory.toml".
    pub fn describe(&self) -> String {
        format!("saved at {} from {}", rfc3339_utc(self.saved_at), self.inventory.display())
    }
}

/// The snapshot folder of a node.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
}

impl Snapshots {
    pub fn new(dir: impl Into<PathBuf>) -> Snapshots {
        Snapshots { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest copy: what it is, and the sources that read it (common files and limits from `current`,
    /// which are not copied).
    pub fn last_good(&self, current: &Sources) -> Option<(About, Sources)> {
        let copy = fs::canonicalize(self.dir.join(LINK)).ok()?;
        let about: About = serde_json::from_slice(&fs::read(copy.join(ABOUT)).ok()?).ok()?;
        let sources = Sources {
            inventory: copy.join("inventory.toml"),
            templates: copy.join("templates"),
            templates_override: about.templates_override.as_ref().map(|_| copy.join("templates-override")),
            phone_edge_trust: about.phone_edge_trust.as_ref().map(|_| copy.join("phone-edge-trust")),
            files: current.files.clone(),
            max_file_bytes: current.max_file_bytes,
        };
        Some((about, sources))
    }

    /// Copies what `sources` name as the newest last good deployment, unless the newest copy already has
    /// `fingerprint`. Returns whether a copy was written.
    pub fn save(&self, sources: &Sources, generation: u64, fingerprint: u64, now: Time) -> io::Result<bool> {
        if self.last_good(sources).is_some_and(|(about, _)| about.fingerprint == fingerprint) {
            return Ok(false);
        }
        fs::create_dir_all(&self.dir)?;
        let name = format!("copy-{now}-{}", random_id().map_err(io::Error::other)?);
        let copy = self.dir.join(&name);
        let written = self.write_copy(&copy, sources, generation, fingerprint, now);
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&copy);
            return Err(e);
        }
        let previous = fs::read_link(self.dir.join(LINK)).ok();
        // The new link under a temporary name, then renamed over the old one: atomic.
        let temporary = self.dir.join(format!(".{LINK}-{name}"));
        std::os::unix::fs::symlink(&name, &temporary)?;
        if let Err(e) = fs::rename(&temporary, self.dir.join(LINK)) {
            let _ = fs::remove_file(&temporary);
            let _ = fs::remove_dir_all(&copy);
            return Err(e);
        }
        fsutil::sync_dir(&self.dir)?;
        if let Some(previous) = previous.filter(|p| p.as_os_str() != name.as_str()) {
            let _ = fs::remove_dir_all(self.dir.join(previous));
        }
        self.remove_leftovers(&name);
        Ok(true)
    }

    fn write_copy(
        &self,
        copy: &Path,
        sources: &Sources,
        generation: u64,
        fingerprint: u64,
        now: Time,
    ) -> io::Result<()> {
        fs::create_dir(copy)?;
        copy_file(&sources.inventory, &copy.join("inventory.toml"))?;
        copy_tree(&sources.templates, &copy.join("templates"))?;
        if let Some(dir) = &sources.templates_override {
            copy_tree(dir, &copy.join("templates-override"))?;
        }
        if let Some(dir) = &sources.phone_edge_trust {
            // A store that does not exist yet is an empty store.
            if dir.exists() {
                copy_tree(dir, &copy.join("phone-edge-trust"))?;
            } else {
                fs::create_dir(copy.join("phone-edge-trust"))?;
            }
        }
        let about = About {
            saved_at: now,
            generation,
            inventory: sources.inventory.clone(),
            templates: sources.templates.clone(),
            templates_override: sources.templates_override.clone(),
            phone_edge_trust: sources.phone_edge_trust.clone(),
            fingerprint,
        };
        let json = serde_json::to_vec_pretty(&about).map_err(io::Error::other)?;
        fsutil::atomic_write(&copy.join(ABOUT), &json)?;
        fsutil::sync_dir(copy)
    }

    /// Copies and links a crash left behind (never the one just linked).
    fn remove_leftovers(&self, keep: &str) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == keep || name == LINK {
                continue;
            }
            if name.starts_with("copy-") {
                let _ = fs::remove_dir_all(entry.path());
            } else if name.starts_with(&format!(".{LINK}-")) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Copies one regular file, flushed to disk.
fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::metadata(from)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(io::Error::other(format!("{}: larger than {MAX_FILE_BYTES} bytes", from.display())));
    }
    let contents = fs::read(from)?;
    fsutil::atomic_write(to, &contents)
}

/// Copies a folder of regular files and folders (symbolic links are followed; anything else is skipped).
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir(to)?;
    let mut entries: Vec<_> = fs::read_dir(from)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let target = to.join(entry.file_name());
        let meta = fs::metadata(&path)?;
        if meta.is_dir() {
            copy_tree(&path, &target)?;
        } else if meta.is_file() {
            copy_file(&path, &target)?;
        }
    }
    fsutil::sync_dir(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(root: &Path) -> Sources {
        fs::create_dir_all(root.join("templates/models")).unwrap();
        fs::create_dir_all(root.join("trust")).unwrap();
        fs::write(root.join("inventory.toml"), "one").unwrap();
        fs::write(root.join("templates/base.xml.j2"), "base").unwrap();
        fs::write(root.join("templates/models/m.xml.j2"), "model").unwrap();
        fs::write(root.join("trust/a.pem"), "cert").unwrap();
        Sources {
            inventory: root.join("inventory.toml"),
            templates: root.join("templates"),
            templates_override: None,
            phone_edge_trust: Some(root.join("trust")),
            files: None,
            max_file_bytes: 1,
        }
    }

    #[test]
    fn a_copy_is_read_back_and_replaced_by_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(&dir.path().join("live"));
        let snapshots = Snapshots::new(dir.path().join("snap"));
        assert!(snapshots.last_good(&src).is_none());
        assert!(snapshots.save(&src, 1, 11, 1000).unwrap());
        assert!(!snapshots.save(&src, 2, 11, 1001).unwrap(), "same fingerprint: not saved again");
        let (about, copy) = snapshots.last_good(&src).unwrap();
        assert_eq!((about.generation, about.saved_at), (1, 1000));
        assert_eq!(fs::read_to_string(&copy.inventory).unwrap(), "one");
        assert_eq!(fs::read_to_string(copy.templates.join("models/m.xml.j2")).unwrap(), "model");
        assert_eq!(fs::read_to_string(copy.phone_edge_trust.as_ref().unwrap().join("a.pem")).unwrap(), "cert");

        fs::write(&src.inventory, "two").unwrap();
        assert!(snapshots.save(&src, 3, 22, 1002).unwrap());
        let (about, copy) = snapshots.last_good(&src).unwrap();
        assert_eq!(about.generation, 3);
        assert_eq!(fs::read_to_string(&copy.inventory).unwrap(), "two");
        let copies = fs::read_dir(snapshots.dir())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("copy-"));
        assert_eq!(copies.count(), 1, "the older copy is removed");
    }

    #[test]
    fn a_failed_save_leaves_the_last_good_copy() {
        let dir = tempfile::tempdir().unwrap();
        let src = sources(&dir.path().join("live"));
        let snapshots = Snapshots::new(dir.path().join("snap"));
        snapshots.save(&src, 1, 11, 1000).unwrap();
        let broken = Sources { inventory: dir.path().join("missing.toml"), ..src.clone() };
        assert!(snapshots.save(&broken, 2, 22, 1001).is_err());
        let (about, copy) = snapshots.last_good(&src).unwrap();
        assert_eq!(about.generation, 1);
        assert_eq!(fs::read_to_string(copy.inventory).unwrap(), "one");
    }
}
