//! Common files (ring lists, dial plans, locales, softkeys, firmware) from one folder, the file root.
//!
//! Names reach here only after the file-name grammar (no `/`, `\`, leading `.` or `..`); the resolved path
//! is still checked to be inside the root after following symbolic links, so a link can never lead out.

use std::io;
use std::path::{Path, PathBuf};

use crate::provision::cache::RenderedFile;

pub struct FileRoot {
    dir: PathBuf,
    max_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{0}: no such file in the file root")]
    NotFound(String),
    #[error("{0}: resolves outside the file root")]
    OutsideRoot(String),
    #[error("{0}: larger than the limit of {1} bytes")]
    TooLarge(String, u64),
    #[error("{0}: {1}")]
    Io(String, io::Error),
}

impl FileRoot {
    /// The file root at `dir`, which must exist.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<FileRoot> {
        let dir = dir.canonicalize()?;
        if !dir.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, format!("{} is not a folder", dir.display())));
        }
        Ok(FileRoot { dir, max_bytes })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `name` (already checked by the file-name grammar).
    pub async fn read(&self, name: &str) -> Result<RenderedFile, FileError> {
        let candidate = self.dir.join(name);
        let path = match tokio::fs::canonicalize(&candidate).await {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FileError::NotFound(name.to_owned())),
            Err(e) => return Err(FileError::Io(name.to_owned(), e)),
        };
        if !path.starts_with(&self.dir) {
            return Err(FileError::OutsideRoot(name.to_owned()));
        }
        let meta = tokio::fs::metadata(&path).await.map_err(|e| FileError::Io(name.to_owned(), e))?;
        if !meta.is_file() {
            return Err(FileError::NotFound(name.to_owned()));
        }
        if meta.len() > self.max_bytes {
            return Err(FileError::TooLarge(name.to_owned(), self.max_bytes));
        }
        let body = tokio::fs::read(&path).await.map_err(|e| FileError::Io(name.to_owned(), e))?;
        Ok(RenderedFile::new(body, content_type(name)))
    }
}

/// Media type by extension.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "xml" => "application/xml; charset=utf-8",
        "json" => "application/json",
        "txt" | "loads" => "text/plain; charset=utf-8",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "wav" => "audio/wav",
        "crl" => "application/pkix-crl",
        _ => "application/octet-stream",
    }
}
