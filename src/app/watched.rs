//! The files a node is loaded from, and a cheap fingerprint of them: the file watch ([`crate::ops::reload`])
//! compares fingerprints instead of reading files, and reloads when one changed.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::provision::deployment::Sources;

/// Every file (or folder) whose change means a reload: the configuration, the TLS certificate and key, the
/// token keys, the edge client CA and the Tomcat-trust store, the inventory, templates and Phone-Edge-Trust
/// store. With a shared store, the inventory and the certificate stores are in it (its change log is
/// followed instead): only the templates are.
pub fn files(config: &Config) -> Vec<PathBuf> {
    let mut paths = vec![config.path.clone(), config.tls.certificate.clone(), config.tls.private_key.clone()];
    paths.extend(config.auth.keys.iter().map(|k| k.public_key.clone()));
    paths.extend(config.auth.jwks.iter().cloned());
    paths.extend(config.auth.signing.iter().map(|s| s.private_key.clone()));
    paths.extend(config.edge.iter().filter_map(|e| e.client_ca.clone()));
    let sources = Sources::from_config(config);
    if config.store.is_some() {
        paths.push(sources.templates);
        paths.extend(sources.templates_override);
    } else {
        paths.extend(config.trust.tomcat_trust.iter().cloned());
        paths.extend(sources.watched());
    }
    paths
}

/// A digest of the metadata (size, modification time, inode) of every file under `paths`: changes when any
/// file is written, added, removed or replaced. Polling this works on every file system (NFS and container
/// volumes included, where inotify does not), and costs a `stat` per file.
pub fn fingerprint(paths: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for p in paths {
        hash_tree(p, &mut hasher);
    }
    hasher.finish()
}

fn hash_tree(path: &Path, hasher: &mut DefaultHasher) {
    path.hash(hasher);
    let Ok(meta) = std::fs::metadata(path) else {
        0xdead_u32.hash(hasher);
        return;
    };
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else { return };
        let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for c in children {
            hash_tree(&c, hasher);
        }
        return;
    }
    meta.len().hash(hasher);
    meta.modified().ok().hash(hasher);
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.ino().hash(hasher);
        meta.ctime_nsec().hash(hasher);
    }
}
