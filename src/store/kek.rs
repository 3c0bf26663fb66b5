//! The key-encryption key of the shared store: the private parts of the token-signing keys are stored in
//! PostgreSQL encrypted with it (AES-256-GCM, the key id as associated data), so that a database dump or a
//! replica alone cannot mint tokens. Every node reads the same key from a file (`[store] key_file`): 32
//! random bytes in base64, one line, readable by sipcfg only.

use std::io;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::util::encoding::hex;
use crate::util::random::random_bytes;

/// Why the key file cannot be used, or a stored key cannot be decrypted.
#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error(
        "{path}: cannot read the store's key-encryption key: {source}; create it with `sipcfg store init` \
             (on the first node), then copy it to every node"
    )]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path}: not a key-encryption key: {why} (expected 32 random bytes in base64 on one line, as \
             `sipcfg store init` or `openssl rand -base64 32` writes)"
    )]
    Malformed { path: PathBuf, why: String },
    #[error(
        "{path}: readable by other users (mode {mode:o}): the key decrypts the token-signing keys; \
             chmod 600 it"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the system random number generator failed")]
    Random,
    #[error(
        "signing key {kid} was encrypted with key-encryption key {stored}, but {path} holds key {ours}: \
             every node needs the same [store] key_file"
    )]
    WrongKey { kid: String, stored: String, ours: String, path: PathBuf },
    #[error("signing key {kid}: its encrypted private key does not decrypt (altered in the database?)")]
    Undecryptable { kid: String },
}

/// The key-encryption key, read from its file.
pub struct Kek {
    key: LessSafeKey,
    /// The first 8 bytes of the SHA-256 of the key, hex: stored with every encrypted key, so that a node
    /// with another key file says so instead of failing to decrypt.
    id: String,
    path: PathBuf,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek").field("id", &self.id).field("path", &self.path).finish_non_exhaustive()
    }
}

impl Kek {
    /// Reads the key from `path`; a file other users can read is refused.
    pub fn load(path: &Path) -> Result<Kek, KekError> {
        let text = std::fs::read_to_string(path).map_err(|source| KekError::Read { path: path.to_owned(), source })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|source| KekError::Read { path: path.to_owned(), source })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(KekError::Exposed { path: path.to_owned(), mode: mode & 0o777 });
            }
        }
        let malformed = |why: String| KekError::Malformed { path: path.to_owned(), why };
        let line =
            text.lines().map(str::trim).find(|l| !l.is_empty()).ok_or_else(|| malformed("it is empty".into()))?;
        let bytes = STANDARD.decode(line).map_err(|e| malformed(format!("not base64 ({e})")))?;
        let bytes: [u8; 32] =
            bytes.try_into().map_err(|b: Vec<u8>| malformed(format!("{} bytes instead of 32", b.len())))?;
        Ok(Kek::from_bytes(&bytes, path))
    }

    /// Writes a new random key to `path` (mode 0600; an existing file is never replaced).
    pub fn create(path: &Path) -> Result<Kek, KekError> {
        let bytes = random_bytes::<32>().map_err(|_| KekError::Random)?;
        let write = |source| KekError::Write { path: path.to_owned(), source };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(write)?;
        use std::io::Write;
        file.write_all(format!("{}\n", STANDARD.encode(bytes)).as_bytes()).map_err(write)?;
        file.sync_all().map_err(write)?;
        Ok(Kek::from_bytes(&bytes, path))
    }

    fn from_bytes(bytes: &[u8; 32], path: &Path) -> Kek {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
        let id = hex(&digest.as_ref()[..8]);
        // AES-256-GCM takes any 32 bytes: this cannot fail.
        let key = match UnboundKey::new(&AES_256_GCM, bytes) {
            Ok(k) => LessSafeKey::new(k),
            Err(_) => unreachable!("a 32-byte key is a valid AES-256 key"),
        };
        Kek { key, id, path: path.to_owned() }
    }

    /// The key's identifier (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `nonce || ciphertext || tag` of `plain`, bound to `kid`.
    pub fn seal(&self, kid: &str, plain: &[u8]) -> Result<Vec<u8>, KekError> {
        let nonce = random_bytes::<NONCE_LEN>().map_err(|_| KekError::Random)?;
        let mut sealed = plain.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(kid.as_bytes()), &mut sealed)
            .map_err(|_| KekError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of what [`Kek::seal`] made for `kid` with the key `stored_id`.
    pub fn open(&self, kid: &str, stored_id: &str, sealed: &[u8]) -> Result<Vec<u8>, KekError> {
        if stored_id != self.id {
            return Err(KekError::WrongKey {
                kid: kid.to_owned(),
                stored: stored_id.to_owned(),
                ours: self.id.clone(),
                path: self.path.clone(),
            });
        }
        let undecryptable = || KekError::Undecryptable { kid: kid.to_owned() };
        if sealed.len() < NONCE_LEN {
            return Err(undecryptable());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| undecryptable())?;
        let mut body = body.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(kid.as_bytes()), &mut body).map_err(|_| undecryptable())?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_the_same_key_and_kid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let kek = Kek::create(&path).unwrap();
        let sealed = kek.seal("k1", b"private").unwrap();
        assert_ne!(&sealed[NONCE_LEN..NONCE_LEN + 7], b"private");
        let again = Kek::load(&path).unwrap();
        assert_eq!(again.id(), kek.id());
        assert_eq!(again.open("k1", kek.id(), &sealed).unwrap(), b"private");
        // Another key id, another kid, or an altered byte: refused, with the reason.
        assert!(matches!(again.open("k1", "0000", &sealed), Err(KekError::WrongKey { .. })));
        assert!(matches!(again.open("k2", kek.id(), &sealed), Err(KekError::Undecryptable { .. })));
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(matches!(again.open("k1", kek.id(), &altered), Err(KekError::Undecryptable { .. })));
        // Never overwritten.
        assert!(matches!(Kek::create(&path), Err(KekError::Write { .. })));
    }

    #[test]
    fn bad_key_files_are_explained() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let write = |text: &str, mode: u32| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("c2hvcnQ=\n", 0o600);
        assert!(Kek::load(&path).unwrap_err().to_string().contains("5 bytes instead of 32"));
        write("not base64!\n", 0o600);
        assert!(Kek::load(&path).unwrap_err().to_string().contains("not base64"));
        write(&format!("{}\n", STANDARD.encode([7u8; 32])), 0o644);
        assert!(Kek::load(&path).unwrap_err().to_string().contains("chmod 600"));
        write(&format!("{}\n", STANDARD.encode([7u8; 32])), 0o600);
        assert!(Kek::load(&path).is_ok());
        assert!(Kek::load(&dir.path().join("missing")).unwrap_err().to_string().contains("sipcfg store init"));
    }
}
