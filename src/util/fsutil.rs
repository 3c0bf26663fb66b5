//! Durable file writes. Keys, certificates and trust stores are replaced while the server may be reading
//! them and the machine may lose power: a reader must see the old file or the new one, never a prefix of
//! the new one, and a key must never be readable by others, not even for a moment.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// How many temporary names are tried before giving up; a clash needs the same pid and 64 random bits.
const TEMP_ATTEMPTS: u32 = 8;

/// Replaces `path` with `contents` atomically and durably.
///
/// The data goes to a new temporary file in the same directory (a rename is only atomic within one file
/// system), is flushed to disk, and then renamed over the target; finally the directory is flushed so the
/// rename itself survives a crash. After a crash the target is the old file or the new one, never half of
/// either. On any error the temporary file is removed and the target is untouched (unless the error is the
/// final directory flush, when the new file is in place but may not yet be durable).
///
/// Permissions: an existing target's mode is kept (and, best effort, its owner, so that `sudo sipcfg …` does
/// not leave a root-owned key the server cannot read). A new file gets 0o600 when its name ends in
/// `-key.pem` and 0o644 otherwise (on unix), less the bits the umask removes. The temporary file is created
/// with the final mode, so a key is never readable by others while it is being written.
///
/// A symbolic link at `path` is replaced by a regular file, not followed.
pub fn atomic_write(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace(path, contents, Durability::Synced)
}

/// Like [`atomic_write`] (readers see the old file or the new one, never a part), without flushing the file
/// or its folder to disk: for bulk output that can be made again, such as `render --all`, where an fsync
/// per file would cost more than the rendering. Call [`sync_dir`] once at the end.
pub fn replace_unsynced(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace(path, contents, Durability::Unsynced)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Synced,
    Unsynced,
}

fn replace(path: &Path, contents: &[u8], durability: Durability) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file name", path.display())))?;
    let dir = parent_dir(path);
    let existing = match fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };

    let (mut file, tmp) = create_temp(dir, &name.to_string_lossy(), new_file_mode(path, existing.as_ref()))?;
    let written = write_and_sync(&mut file, contents, existing.as_ref(), durability);
    drop(file);
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        // The temporary file is ours and useless now; failing to remove it must not hide the real error.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    match durability {
        Durability::Synced => sync_dir(dir),
        Durability::Unsynced => Ok(()),
    }
}

/// Flushes a directory's entries (creations, renames, removals) to disk. A no-op where directories cannot
/// be opened as files (not unix).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The directory holding `path`; `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The mode the new file is created with: the existing file's, or the default for its name.
fn new_file_mode(path: &Path, existing: Option<&fs::Metadata>) -> u32 {
    #[cfg(unix)]
    if let Some(meta) = existing {
        use std::os::unix::fs::PermissionsExt;
        return meta.permissions().mode() & 0o7777;
    }
    #[cfg(not(unix))]
    let _ = existing;
    if path.file_name().is_some_and(|n| n.to_string_lossy().ends_with("-key.pem")) { 0o600 } else { 0o644 }
}

/// Creates `.<name>.tmp-<pid>-<random>` in `dir` exclusively (never opening someone else's file).
fn create_temp(dir: &Path, name: &str, mode: u32) -> io::Result<(File, PathBuf)> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), random_suffix()));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        match options.open(&tmp) {
            Ok(file) => return Ok((file, tmp)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary file name")))
}

/// Writes, restores an existing file's exact permissions (the creation mode went through the umask) and
/// owner, and flushes the data to disk.
fn write_and_sync(
    file: &mut File,
    contents: &[u8],
    existing: Option<&fs::Metadata>,
    durability: Durability,
) -> io::Result<()> {
    file.write_all(contents)?;
    if let Some(meta) = existing {
        file.set_permissions(meta.permissions())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let new = file.metadata()?;
            if new.uid() != meta.uid() || new.gid() != meta.gid() {
                // Only root may give a file away; anyone else keeps ownership, as any editor's save would.
                let _ = std::os::unix::fs::fchown(&*file, Some(meta.uid()), Some(meta.gid()));
            }
        }
    }
    match durability {
        Durability::Synced => file.sync_all(),
        Durability::Unsynced => Ok(()),
    }
}

/// 64 random bits as hex; if the system RNG fails, the clock, which `create_new` makes safe anyway.
fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn writes_a_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pem");
        atomic_write(&path, b"one").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn overwrite_replaces_contents_and_leaves_no_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.xml");
        atomic_write(&path, b"a much longer first version").unwrap();
        atomic_write(&path, b"short").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"short");
        assert!(leftovers(dir.path()).is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn overwrite_keeps_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custom.pem");
        fs::write(&path, b"old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        atomic_write(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o7777, 0o640);
    }

    #[cfg(unix)]
    #[test]
    fn new_files_get_the_default_mode_for_their_name() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("server-key.pem");
        let cert = dir.path().join("server.pem");
        atomic_write(&key, b"key").unwrap();
        atomic_write(&cert, b"cert").unwrap();
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        // 0o644 unless the umask removes bits; it never adds any.
        assert_eq!(fs::metadata(&cert).unwrap().permissions().mode() & !0o644 & 0o777, 0);
    }

    #[test]
    fn writing_into_a_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("file.pem");
        let err = atomic_write(&path, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!dir.path().join("missing").exists());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_failed_rename_removes_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A non-empty directory cannot be replaced by a file: the rename fails after the data was written.
        let target = dir.path().join("occupied");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"x").unwrap();
        assert!(atomic_write(&target, b"data").is_err());
        assert!(target.is_dir());
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn a_path_without_a_file_name_is_refused() {
        let err = atomic_write(Path::new("/"), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
