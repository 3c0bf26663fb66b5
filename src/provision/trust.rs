//! The Phone-Edge-Trust store: the CA certificates phones use to validate this server's certificate on port
//! 6971. CUCM lets an administrator upload at most 16 of them under the purpose "Phone-Edge-Trust"; they are
//! published to phones in the rendered configurations and as `caconfig.json`.
//!
//! The store is a directory of `<first 16 hex digits of the SHA-256>.pem` files, one certificate each, so an
//! administrator can inspect it with `ls` and `openssl x509`, and every change is one atomic file operation.
//! Only validated CA certificates go in: a server certificate or an expired root published here would make
//! phones reject the server, and phones are hard to reach once they no longer trust it.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;

use crate::util::encoding::{base64, hex, pem_encode};
use crate::util::fsutil;
use crate::util::time::rfc3339_utc;

/// CUCM's limit on Phone-Edge-Trust certificates; phones are not known to accept more.
pub const MAX_PHONE_EDGE_TRUST: usize = 16;
/// CUCM's name for the purpose, also written into `caconfig.json`.
pub const PHONE_EDGE_TRUST: &str = "Phone-Edge-Trust";
/// A CA certificate is a few KiB; anything much larger is the wrong file (or `/dev/zero`), not read whole.
const MAX_PEM_BYTES: u64 = 1 << 20;
/// The shortest SHA-256 prefix `remove` accepts, so a slip of the keyboard cannot match by accident.
const MIN_ID_HEX: usize = 8;
/// Length of the SHA-256 prefix used as the file name in the store.
const FILE_ID_HEX: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: not a PEM certificate: {detail}")]
    NotPem { path: PathBuf, detail: String },
    #[error(
        "{path}: {count} certificates in one file; add them one by one, one file per CA certificate \
         (the store keeps one certificate per file)"
    )]
    SeveralCertificates { path: PathBuf, count: usize },
    #[error(
        "{path}: the file also holds a private key; give a file with only the CA certificate \
         (`openssl x509 -in <file> -out ca-cert.pem` extracts it) and keep CA keys off this server"
    )]
    ContainsPrivateKey { path: PathBuf },
    #[error("{path}: larger than {max} bytes, which no CA certificate is")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path}: cannot parse the certificate: {message}")]
    Unparsable { path: PathBuf, message: String },
    #[error(
        "{path}: \"{subject}\" is not a CA certificate ({reason}); Phone-Edge-Trust holds the CA that issued \
         the server certificate, not the server certificate itself"
    )]
    NotCa { path: PathBuf, subject: String, reason: &'static str },
    #[error("{path}: \"{subject}\" expired on {not_after}")]
    Expired { path: PathBuf, subject: String, not_after: String },
    #[error("{path}: \"{subject}\" is not valid before {not_before} (is this machine's clock right?)")]
    NotYetValid { path: PathBuf, subject: String, not_before: String },
    #[error(
        "{dir}: the Phone-Edge-Trust store already holds {max} certificates, the most CUCM allows; \
         remove one first"
    )]
    StoreFull { dir: PathBuf, max: usize },
    #[error("{dir}: {count} certificates, more than the {max} CUCM allows in Phone-Edge-Trust; remove some")]
    Overfull { dir: PathBuf, count: usize, max: usize },
    #[error("{path}: \"{subject}\" (SHA-256 {sha256}) is already in the Phone-Edge-Trust store as {existing}")]
    AlreadyPresent { path: PathBuf, subject: String, sha256: String, existing: PathBuf },
    #[error("{dir}: no certificate in the Phone-Edge-Trust store matches \"{id}\"")]
    NotFound { dir: PathBuf, id: String },
    #[error("{dir}: \"{id}\" matches {count} certificates; give more digits of the SHA-256")]
    Ambiguous { dir: PathBuf, id: String, count: usize },
    #[error(
        "\"{id}\" does not name a certificate: give its SHA-256 in hex (at least 8 digits, colons allowed) \
         or its file name in the store"
    )]
    InvalidId { id: String },
    #[error("{path}: cannot {action}: {source}")]
    Io { path: PathBuf, action: &'static str, source: io::Error },
}

/// One CA certificate of the store, with what an administrator needs to recognise it.
#[derive(Debug, Clone, Serialize)]
pub struct TrustCert {
    /// Subject distinguished name, as `openssl x509 -subject` prints it (e.g. `O=Example, CN=Root CA`).
    pub subject: String,
    pub issuer: String,
    /// SHA-256 of the DER, lower-case hex: the certificate's identity everywhere in sipcfg.
    pub sha256: String,
    /// Validity, unix seconds (UTC).
    pub not_before: i64,
    pub not_after: i64,
    #[serde(skip)]
    pub der: Vec<u8>,
    /// The certificate alone, re-encoded from the DER (no comments, keys or other blocks of the source file).
    pub pem: String,
}

impl TrustCert {
    /// The DER in standard base64 with padding (the body of the PEM, without line breaks).
    pub fn der_base64(&self) -> String {
        base64(&self.der)
    }

    /// Past `notAfter`. Phones reject a server whose chain ends in an expired root, so callers should warn.
    pub fn is_expired(&self, now: i64) -> bool {
        now > self.not_after
    }

    /// The certificate's file name in the store: `<first 16 hex digits of the SHA-256>.pem`.
    pub fn file_name(&self) -> String {
        let id: String = self.sha256.chars().take(FILE_ID_HEX).collect();
        format!("{id}.pem")
    }
}

/// Parses a PEM file holding exactly one certificate, which must be a CA (basicConstraints CA:TRUE) valid at
/// `now` (unix seconds). `source` only names the file in errors.
pub fn parse_ca_pem(pem: &[u8], source: &Path, now: i64) -> Result<TrustCert, TrustError> {
    let cert = parse_cert(pem, source, true)?;
    if now > cert.not_after {
        return Err(TrustError::Expired {
            path: source.to_owned(),
            subject: cert.subject,
            not_after: rfc3339_utc(cert.not_after),
        });
    }
    if now < cert.not_before {
        return Err(TrustError::NotYetValid {
            path: source.to_owned(),
            subject: cert.subject,
            not_before: rfc3339_utc(cert.not_before),
        });
    }
    Ok(cert)
}

/// Parses exactly one PEM certificate; with `require_ca`, refuses anything but a CA. No time checks.
fn parse_cert(pem: &[u8], source: &Path, require_ca: bool) -> Result<TrustCert, TrustError> {
    let path = || source.to_owned();
    let not_pem = |detail: String| TrustError::NotPem { path: path(), detail };

    if has_private_key(pem) {
        return Err(TrustError::ContainsPrivateKey { path: path() });
    }
    let ders = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(format!("bad PEM: {e}")))?;
    let der = match ders.as_slice() {
        [der] => der,
        [] => return Err(not_pem(why_no_certificate(pem))),
        several => return Err(TrustError::SeveralCertificates { path: path(), count: several.len() }),
    };

    let unparsable = |message: String| TrustError::Unparsable { path: path(), message };
    let (rest, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| unparsable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(unparsable(format!("{} bytes of trailing data after the certificate", rest.len())));
    }
    let subject = x509.subject().to_string();
    if require_ca {
        let reason = match x509.basic_constraints() {
            Err(e) => return Err(unparsable(format!("basicConstraints: {e}"))),
            Ok(None) => Some("no basicConstraints extension"),
            Ok(Some(bc)) if !bc.value.ca => Some("basicConstraints CA:FALSE"),
            Ok(Some(_)) => None,
        };
        if let Some(reason) = reason {
            return Err(TrustError::NotCa { path: path(), subject, reason });
        }
    }

    let der = der.to_vec();
    Ok(TrustCert {
        issuer: x509.issuer().to_string(),
        sha256: hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der).as_ref()),
        not_before: x509.validity().not_before.timestamp(),
        not_after: x509.validity().not_after.timestamp(),
        pem: pem_encode("CERTIFICATE", &der),
        subject,
        der,
    })
}

/// A PEM block of a private key, of any kind (PKCS#8, PKCS#1, SEC1, encrypted).
fn has_private_key(pem: &[u8]) -> bool {
    pem.split(|&b| b == b'\n')
        .any(|line| line.starts_with(b"-----BEGIN ") && line.windows(11).any(|w| w == b"PRIVATE KEY"))
}

/// Why a file without a CERTIFICATE block is not one, with a way out where there is one.
fn why_no_certificate(data: &[u8]) -> String {
    if data.iter().all(u8::is_ascii_whitespace) {
        "the file is empty".into()
    } else if data.first() == Some(&0x30) && !data.windows(11).any(|w| w == b"-----BEGIN ") {
        // 0x30 is an ASN.1 SEQUENCE: almost certainly a binary (DER) certificate.
        "it looks like a binary (DER) certificate; convert it with \
         `openssl x509 -inform der -in <file> -out <file>.pem`"
            .into()
    } else {
        "no \"-----BEGIN CERTIFICATE-----\" block in the file".into()
    }
}

/// Reads a file that should hold a certificate, refusing absurd sizes.
fn read_limited(path: &Path) -> Result<Vec<u8>, TrustError> {
    let io_err = |source| TrustError::Io { path: path.to_owned(), action: "read", source };
    let file = File::open(path).map_err(io_err)?;
    let mut data = Vec::new();
    file.take(MAX_PEM_BYTES + 1).read_to_end(&mut data).map_err(io_err)?;
    if data.len() as u64 > MAX_PEM_BYTES {
        return Err(TrustError::TooLarge { path: path.to_owned(), max: MAX_PEM_BYTES });
    }
    Ok(data)
}

/// The directory of Phone-Edge-Trust certificates. Not locked: two concurrent `add`s may together exceed
/// the limit, which the next `load` reports; it is an administrator's tool, not a shared service.
#[derive(Debug, Clone)]
pub struct TrustStore {
    dir: PathBuf,
}

impl TrustStore {
    pub fn new(dir: impl Into<PathBuf>) -> TrustStore {
        TrustStore { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every certificate of the store, sorted by subject then SHA-256. A missing directory is an empty store.
    ///
    /// Every file must hold exactly one CA certificate, none twice, at most [`MAX_PHONE_EDGE_TRUST`] in all;
    /// otherwise the error names the file, since publishing a partial or oversized set to phones is worse
    /// than refusing to start. Expired or not yet valid certificates are listed (and logged as a warning,
    /// judged at `now`): callers decide what to do with them.
    pub fn load(&self, now: i64) -> Result<Vec<TrustCert>, TrustError> {
        let certs = self.load_entries()?;
        for (path, cert) in &certs {
            if cert.is_expired(now) {
                tracing::warn!(
                    "{}: Phone-Edge-Trust certificate \"{}\" expired on {}",
                    path.display(),
                    cert.subject,
                    rfc3339_utc(cert.not_after)
                );
            } else if now < cert.not_before {
                tracing::warn!(
                    "{}: Phone-Edge-Trust certificate \"{}\" is not valid before {}",
                    path.display(),
                    cert.subject,
                    rfc3339_utc(cert.not_before)
                );
            }
        }
        Ok(certs.into_iter().map(|(_, cert)| cert).collect())
    }

    /// Adds the single CA certificate of `pem_file`, valid at `now`, unless it is already present or the
    /// store is full. Creates the directory if needed.
    pub fn add(&self, pem_file: &Path, now: i64) -> Result<TrustCert, TrustError> {
        let cert = parse_ca_pem(&read_limited(pem_file)?, pem_file, now)?;
        let existing = self.load_entries()?;
        if let Some((path, _)) = existing.iter().find(|(_, c)| c.sha256 == cert.sha256) {
            return Err(TrustError::AlreadyPresent {
                path: pem_file.to_owned(),
                subject: cert.subject,
                sha256: cert.sha256,
                existing: path.clone(),
            });
        }
        if existing.len() >= MAX_PHONE_EDGE_TRUST {
            return Err(TrustError::StoreFull { dir: self.dir.clone(), max: MAX_PHONE_EDGE_TRUST });
        }
        fs::create_dir_all(&self.dir).map_err(|source| TrustError::Io {
            path: self.dir.clone(),
            action: "create the directory",
            source,
        })?;
        let target = self.dir.join(cert.file_name());
        let write_err = |source| TrustError::Io { path: target.clone(), action: "write", source };
        // Another certificate with the same 64-bit prefix: never overwrite it silently.
        if fs::symlink_metadata(&target).is_ok() {
            return Err(write_err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the file exists and holds a different certificate",
            )));
        }
        fsutil::atomic_write(&target, cert.pem.as_bytes()).map_err(write_err)?;
        Ok(cert)
    }

    /// Removes one certificate, named by its full SHA-256 (hex, any case, colons allowed as `openssl x509
    /// -fingerprint` prints it), a unique prefix of at least 8 hex digits, or its file name in the store.
    ///
    /// Files that do not parse are skipped when matching by SHA-256, so a broken store can still be cleaned.
    pub fn remove(&self, id: &str) -> Result<TrustCert, TrustError> {
        let files = self.pem_files()?;
        let not_found = || TrustError::NotFound { dir: self.dir.clone(), id: id.to_owned() };
        let (path, cert) = if let Some(path) = files.iter().find(|p| p.file_name().is_some_and(|n| n == id)) {
            (path.clone(), parse_cert(&read_limited(path)?, path, false)?)
        } else if id.ends_with(".pem") {
            return Err(not_found());
        } else {
            let prefix = normalize_id(id).ok_or_else(|| TrustError::InvalidId { id: id.to_owned() })?;
            let mut matches = Vec::new();
            for path in files {
                match read_limited(&path).and_then(|pem| parse_cert(&pem, &path, false)) {
                    Ok(cert) if cert.sha256.starts_with(&prefix) => matches.push((path, cert)),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("skipped: {e}"),
                }
            }
            match matches.len() {
                0 => return Err(not_found()),
                1 => matches.swap_remove(0),
                count => return Err(TrustError::Ambiguous { dir: self.dir.clone(), id: id.to_owned(), count }),
            }
        };
        fs::remove_file(&path).map_err(|source| TrustError::Io { path: path.clone(), action: "remove", source })?;
        fsutil::sync_dir(&self.dir).map_err(|source| TrustError::Io {
            path: self.dir.clone(),
            action: "flush the directory",
            source,
        })?;
        Ok(cert)
    }

    /// The store's `*.pem` files, sorted; dot files (such as `atomic_write`'s temporary files) are not
    /// part of it.
    fn pem_files(&self) -> Result<Vec<PathBuf>, TrustError> {
        let io_err = |source| TrustError::Io { path: self.dir.clone(), action: "list the directory", source };
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_err)?.path();
            let visible = path.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'));
            if visible && path.extension().is_some_and(|e| e == "pem") {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// Every file parsed strictly (one CA certificate each), checked as a set, sorted for display.
    fn load_entries(&self) -> Result<Vec<(PathBuf, TrustCert)>, TrustError> {
        let mut certs: Vec<(PathBuf, TrustCert)> = Vec::new();
        for path in self.pem_files()? {
            let cert = parse_cert(&read_limited(&path)?, &path, true)?;
            if let Some((existing, _)) = certs.iter().find(|(_, c)| c.sha256 == cert.sha256) {
                return Err(TrustError::AlreadyPresent {
                    existing: existing.clone(),
                    path,
                    subject: cert.subject,
                    sha256: cert.sha256,
                });
            }
            certs.push((path, cert));
        }
        if certs.len() > MAX_PHONE_EDGE_TRUST {
            return Err(TrustError::Overfull { dir: self.dir.clone(), count: certs.len(), max: MAX_PHONE_EDGE_TRUST });
        }
        certs.sort_by(|(_, a), (_, b)| a.subject.cmp(&b.subject).then_with(|| a.sha256.cmp(&b.sha256)));
        Ok(certs)
    }
}

/// A SHA-256 (prefix) as the user typed it, in the store's form: lower-case hex without colons.
fn normalize_id(id: &str) -> Option<String> {
    let hex: String = id.trim().chars().filter(|&c| c != ':').map(|c| c.to_ascii_lowercase()).collect();
    let valid = (MIN_ID_HEX..=64).contains(&hex.len()) && hex.chars().all(|c| c.is_ascii_hexdigit());
    valid.then_some(hex)
}

#[derive(Serialize)]
struct CaConfig<'a> {
    version: u32,
    purpose: &'a str,
    certificates: Vec<CaConfigCert<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CaConfigCert<'a> {
    subject: &'a str,
    issuer: &'a str,
    sha256: &'a str,
    not_before: String,
    not_after: String,
    pem: &'a str,
}

/// The body of `caconfig.json`. CUCM's own format is not public, so this one is sipcfg's:
/// `{"version":1,"purpose":"Phone-Edge-Trust","certificates":[{"subject", "issuer", "sha256", "notBefore",
/// "notAfter" (RFC 3339 UTC), "pem"}]}`, pretty-printed, certificates in the order given.
pub fn caconfig_json(certs: &[TrustCert]) -> Vec<u8> {
    let doc = CaConfig {
        version: 1,
        purpose: PHONE_EDGE_TRUST,
        certificates: certs
            .iter()
            .map(|c| CaConfigCert {
                subject: &c.subject,
                issuer: &c.issuer,
                sha256: &c.sha256,
                not_before: rfc3339_utc(c.not_before),
                not_after: rfc3339_utc(c.not_after),
                pem: &c.pem,
            })
            .collect(),
    };
    match serde_json::to_vec_pretty(&doc) {
        Ok(mut body) => {
            body.push(b'\n');
            body
        }
        // Strings and integers always serialize; this arm exists only to keep the function total.
        Err(e) => {
            tracing::error!("caconfig.json: {e}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    fn now() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("certs-example").join(name)
    }

    fn openssl(args: &[&str]) -> Vec<u8> {
        let out = Command::new("openssl").args(args).output().expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// A self-signed P-256 certificate `<dir>/<stem>.pem` (key in `<stem>-key.pem`) with the given
    /// basicConstraints.
    fn make_cert(dir: &Path, stem: &str, cn: &str, basic_constraints: &str) -> PathBuf {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        let subj = format!("/CN={cn}");
        let ext = format!("basicConstraints={basic_constraints}");
        let mut args: Vec<&str> =
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650".split(' ').collect();
        args.extend(["-subj", &subj, "-addext", &ext, "-keyout", path_str(&key), "-out", path_str(&cert)]);
        openssl(&args);
        cert
    }

    fn make_ca(dir: &Path, stem: &str, cn: &str) -> PathBuf {
        make_cert(dir, stem, cn, "critical,CA:TRUE")
    }

    fn path_str(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    fn parse_file(path: &Path, now: i64) -> Result<TrustCert, TrustError> {
        parse_ca_pem(&fs::read(path).unwrap(), path, now)
    }

    #[test]
    fn accepts_a_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let file = make_ca(tmp.path(), "alpha", "Alpha Root");
        let cert = parse_file(&file, now()).unwrap();
        assert_eq!(cert.subject, "CN=Alpha Root");
        assert_eq!(cert.issuer, "CN=Alpha Root");
        assert!(cert.not_before <= now() && now() <= cert.not_after);
        assert!((cert.not_after - cert.not_before - 3650 * 86_400).abs() <= 86_400);
        assert!(!cert.is_expired(now()));

        let fingerprint =
            String::from_utf8(openssl(&["x509", "-in", path_str(&file), "-noout", "-fingerprint", "-sha256"])).unwrap();
        let expected: String = fingerprint.trim().rsplit('=').next().unwrap().replace(':', "").to_lowercase();
        assert_eq!(cert.sha256, expected);
        assert_eq!(cert.file_name(), format!("{}.pem", &expected[..16]));

        // Our PEM is byte for byte what OpenSSL writes, and its body is der_base64.
        assert_eq!(cert.pem, fs::read_to_string(&file).unwrap());
        let body: String = cert.pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(body, cert.der_base64());
        let der = openssl(&["x509", "-in", path_str(&file), "-outform", "der"]);
        assert_eq!(cert.der, der);
    }

    #[test]
    fn accepts_the_example_ca() {
        let file = example("ca.pem");
        let pem = fs::read(&file).unwrap();
        let at = parse_cert(&pem, &file, false).unwrap().not_before + 60;
        let cert = parse_ca_pem(&pem, &file, at).unwrap();
        assert!(cert.subject.contains("CN=sipcfg Example Phone-Edge-Trust Root CA"), "{}", cert.subject);
    }

    #[test]
    fn refuses_a_leaf() {
        let tmp = tempfile::tempdir().unwrap();
        let leaf = make_cert(tmp.path(), "leaf", "phone.example.com", "critical,CA:FALSE");
        let err = parse_file(&leaf, now()).unwrap_err();
        assert!(matches!(err, TrustError::NotCa { reason: "basicConstraints CA:FALSE", .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains("leaf.pem") && message.contains("not a CA certificate"), "{message}");

        let server = example("server.pem");
        let pem = fs::read(&server).unwrap();
        let at = parse_cert(&pem, &server, false).unwrap().not_before + 60;
        let err = parse_ca_pem(&pem, &server, at).unwrap_err();
        assert!(matches!(err, TrustError::NotCa { .. }), "{err}");
        assert!(err.to_string().contains("server.pem"), "{err}");

        // An X.509 v1 certificate has no extensions at all.
        let csr = tmp.path().join("v1.csr");
        let v1 = tmp.path().join("v1.pem");
        let key = tmp.path().join("leaf-key.pem");
        openssl(&["req", "-new", "-key", path_str(&key), "-subj", "/CN=v1", "-out", path_str(&csr)]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            path_str(&csr),
            "-signkey",
            path_str(&key),
            "-days",
            "30",
            "-out",
            path_str(&v1),
        ]);
        let err = parse_file(&v1, now()).unwrap_err();
        assert!(matches!(err, TrustError::NotCa { reason: "no basicConstraints extension", .. }), "{err}");
    }

    #[test]
    fn refuses_garbage() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("garbage.pem");

        let err = parse_ca_pem(b"this is not a certificate\n", &src, now()).unwrap_err();
        assert!(matches!(err, TrustError::NotPem { .. }), "{err}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");
        assert!(err.to_string().contains("BEGIN CERTIFICATE"), "{err}");

        let err = parse_ca_pem(b"", &src, now()).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");

        let err = parse_ca_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n", &src, now()).unwrap_err();
        assert!(matches!(err, TrustError::NotPem { .. }), "{err}");

        let err =
            parse_ca_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", &src, now()).unwrap_err();
        assert!(matches!(err, TrustError::Unparsable { .. }), "{err}");

        let ca = make_ca(tmp.path(), "ca", "DER Root");
        let der = openssl(&["x509", "-in", path_str(&ca), "-outform", "der"]);
        let err = parse_ca_pem(&der, &src, now()).unwrap_err();
        assert!(err.to_string().contains("-inform der"), "{err}");
    }

    #[test]
    fn refuses_two_certificates_in_one_file() {
        let tmp = tempfile::tempdir().unwrap();
        let a = fs::read(make_ca(tmp.path(), "a", "A")).unwrap();
        let b = fs::read(make_ca(tmp.path(), "b", "B")).unwrap();
        let both = tmp.path().join("bundle.pem");
        fs::write(&both, [a, b].concat()).unwrap();
        let err = parse_file(&both, now()).unwrap_err();
        assert!(matches!(err, TrustError::SeveralCertificates { count: 2, .. }), "{err}");
        assert!(err.to_string().contains("bundle.pem") && err.to_string().contains("one by one"), "{err}");
    }

    #[test]
    fn refuses_a_file_with_a_private_key() {
        let tmp = tempfile::tempdir().unwrap();
        let cert = fs::read(make_ca(tmp.path(), "ca", "Keyed")).unwrap();
        let key = fs::read(tmp.path().join("ca-key.pem")).unwrap();
        let err = parse_ca_pem(&[key, cert].concat(), Path::new("ca+key.pem"), now()).unwrap_err();
        assert!(matches!(err, TrustError::ContainsPrivateKey { .. }), "{err}");
    }

    #[test]
    fn refuses_expired_and_not_yet_valid() {
        let tmp = tempfile::tempdir().unwrap();
        let file = make_ca(tmp.path(), "ca", "Aging Root");
        let cert = parse_file(&file, now()).unwrap();
        assert!(parse_file(&file, cert.not_after).is_ok());
        assert!(parse_file(&file, cert.not_before).is_ok());

        let err = parse_file(&file, cert.not_after + 1).unwrap_err();
        assert!(matches!(err, TrustError::Expired { .. }), "{err}");
        assert!(err.to_string().contains(&rfc3339_utc(cert.not_after)), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");

        let err = parse_file(&file, cert.not_before - 1).unwrap_err();
        assert!(matches!(err, TrustError::NotYetValid { .. }), "{err}");
        assert!(err.to_string().contains(&rfc3339_utc(cert.not_before)), "{err}");
    }

    #[test]
    fn store_adds_lists_in_order_and_refuses_duplicates() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(tmp.path().join("store").join("phone-edge-trust"));
        assert!(store.load(now()).unwrap().is_empty(), "a missing directory is an empty store");

        let files = [("zeta", "Zeta"), ("alpha", "Alpha"), ("mid", "Mid"), ("twin1", "Twin"), ("twin2", "Twin")]
            .map(|(stem, cn)| make_ca(tmp.path(), stem, cn));
        for file in &files {
            let added = store.add(file, now()).unwrap();
            assert!(store.dir().join(added.file_name()).is_file());
        }
        let listed = store.load(now()).unwrap();
        let subjects: Vec<&str> = listed.iter().map(|c| c.subject.as_str()).collect();
        assert_eq!(subjects, ["CN=Alpha", "CN=Mid", "CN=Twin", "CN=Twin", "CN=Zeta"]);
        assert!(listed[2].sha256 < listed[3].sha256);

        let err = store.add(&files[1], now()).unwrap_err();
        assert!(matches!(err, TrustError::AlreadyPresent { .. }), "{err}");
        assert!(err.to_string().contains(&listed[0].file_name()), "{err}");
        assert_eq!(store.load(now()).unwrap().len(), 5);

        // Refused files never reach the store.
        let leaf = make_cert(tmp.path(), "leaf", "Leaf", "critical,CA:FALSE");
        assert!(matches!(store.add(&leaf, now()), Err(TrustError::NotCa { .. })));
        assert!(matches!(store.add(&tmp.path().join("missing.pem"), now()), Err(TrustError::Io { .. })));
        assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 5);
    }

    #[test]
    fn store_refuses_the_seventeenth() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(tmp.path().join("store"));
        for i in 0..MAX_PHONE_EDGE_TRUST {
            store.add(&make_ca(tmp.path(), &format!("ca{i}"), &format!("Root {i:02}")), now()).unwrap();
        }
        let extra = make_ca(tmp.path(), "extra", "Root 17");
        let err = store.add(&extra, now()).unwrap_err();
        assert!(matches!(err, TrustError::StoreFull { max: 16, .. }), "{err}");
        assert!(err.to_string().contains("16"), "{err}");
        assert_eq!(store.load(now()).unwrap().len(), MAX_PHONE_EDGE_TRUST);

        // A 17th copied in by hand is reported, not published.
        let cert = parse_file(&extra, now()).unwrap();
        fs::write(store.dir().join(cert.file_name()), &cert.pem).unwrap();
        let err = store.load(now()).unwrap_err();
        assert!(matches!(err, TrustError::Overfull { count: 17, .. }), "{err}");
    }

    #[test]
    fn store_removes_by_prefix_full_hash_or_file_name() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(tmp.path().join("store"));
        let a = store.add(&make_ca(tmp.path(), "a", "A"), now()).unwrap();
        let b = store.add(&make_ca(tmp.path(), "b", "B"), now()).unwrap();
        let c = store.add(&make_ca(tmp.path(), "c", "C"), now()).unwrap();

        assert!(matches!(store.remove(&a.sha256[..7]), Err(TrustError::InvalidId { .. })));
        assert!(matches!(store.remove("not-hex!"), Err(TrustError::InvalidId { .. })));
        assert!(matches!(store.remove("0123456789abcdef0123.pem"), Err(TrustError::NotFound { .. })));

        let removed = store.remove(&a.sha256[..8]).unwrap();
        assert_eq!(removed.sha256, a.sha256);
        assert!(matches!(store.remove(&a.sha256), Err(TrustError::NotFound { .. })));

        // As `openssl x509 -fingerprint -sha256` prints it.
        let colons: Vec<String> =
            b.sha256.as_bytes().chunks(2).map(|p| String::from_utf8_lossy(p).to_uppercase()).collect();
        assert_eq!(store.remove(&colons.join(":")).unwrap().sha256, b.sha256);

        assert_eq!(store.remove(&c.file_name()).unwrap().sha256, c.sha256);
        assert!(store.load(now()).unwrap().is_empty());
        assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 0);
    }

    #[test]
    fn load_names_a_broken_file_and_ignores_other_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(tmp.path().join("store"));
        let a = store.add(&make_ca(tmp.path(), "a", "A"), now()).unwrap();
        fs::write(store.dir().join("README"), "not a certificate").unwrap();
        fs::write(store.dir().join(".a.pem.tmp-1-2"), "left by a crash").unwrap();
        assert_eq!(store.load(now()).unwrap().len(), 1);

        fs::write(store.dir().join("junk.pem"), "garbage").unwrap();
        let err = store.load(now()).unwrap_err();
        assert!(err.to_string().contains("junk.pem"), "{err}");
        // The good certificate can still be removed; the broken file has no certificate to remove, and the
        // error names it so it can be deleted by hand.
        assert_eq!(store.remove(&a.sha256[..12]).unwrap().sha256, a.sha256);
        let err = store.remove("junk.pem").unwrap_err();
        assert!(matches!(err, TrustError::NotPem { .. }) && err.to_string().contains("junk.pem"), "{err}");
    }

    #[test]
    fn an_expired_certificate_in_the_store_is_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(tmp.path().join("store"));
        let added = store.add(&make_ca(tmp.path(), "a", "A"), now()).unwrap();
        let later = added.not_after + 86_400 * 365 * 50;
        let listed = store.load(later).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].is_expired(later));
    }

    #[test]
    fn caconfig_json_lists_the_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(tmp.path().join("store"));
        store.add(&make_ca(tmp.path(), "b", "Beta"), now()).unwrap();
        store.add(&make_ca(tmp.path(), "a", "Alpha"), now()).unwrap();
        let certs = store.load(now()).unwrap();

        let body = caconfig_json(&certs);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["purpose"], "Phone-Edge-Trust");
        let listed = json["certificates"].as_array().unwrap();
        assert_eq!(listed.len(), 2);
        for (entry, cert) in listed.iter().zip(&certs) {
            assert_eq!(entry["subject"], cert.subject.as_str());
            assert_eq!(entry["issuer"], cert.issuer.as_str());
            assert_eq!(entry["sha256"], cert.sha256.as_str());
            assert_eq!(entry["notBefore"], rfc3339_utc(cert.not_before).as_str());
            assert_eq!(entry["notAfter"], rfc3339_utc(cert.not_after).as_str());
            assert_eq!(entry["pem"], cert.pem.as_str());
        }
        assert_eq!(listed[0]["subject"], "CN=Alpha");

        let empty: serde_json::Value = serde_json::from_slice(&caconfig_json(&[])).unwrap();
        assert_eq!(empty["certificates"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn trust_cert_serializes_without_der() {
        let tmp = tempfile::tempdir().unwrap();
        let cert = parse_file(&make_ca(tmp.path(), "a", "A"), now()).unwrap();
        let json = serde_json::to_value(&cert).unwrap();
        assert!(json.get("der").is_none());
        assert_eq!(json["sha256"], cert.sha256.as_str());
        assert_eq!(json["not_after"], cert.not_after);
    }
}
