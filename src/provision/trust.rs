//! The certificate stores managed with `sipcfg cert`, as CUCM keeps them under a purpose:
//!
//! - **Phone-Edge-Trust**: what phones validate this server's certificate with on port 6971: the CA that
//!   issued it (root or intermediate), or the server certificate itself when it is self-signed. CUCM allows at
//!   most 16; they are published to phones in the rendered configurations and as `caconfig.json`.
//!   [`check_phone_edge_trust`] refuses a store that the `[tls]` chain does not lead to while OAuth devices
//!   exist, since every such phone would then fail TLS on 6971.
//! - **Tomcat-trust**: what the edge listener validates Expressway-C client certificates with: the CAs that
//!   issued them, or an Expressway-C's own self-signed certificate.
//!
//! A store is a directory of `<first 16 hex digits of the SHA-256>.pem` files, one certificate each, so an
//! administrator can inspect it with `ls` and `openssl x509`, and every change is one atomic file operation.
//! Only validated certificates go in: a CA valid now, or a self-signed certificate the purpose allows; a file
//! with a chain is split, each CA of it in a file of its own.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;

use crate::provision::inventory::Inventory;
use crate::util::encoding::{base64, hex, pem_encode};
use crate::util::fsutil;
use crate::util::time::rfc3339_utc;

/// CUCM's limit on Phone-Edge-Trust certificates; phones are not known to accept more.
pub const MAX_PHONE_EDGE_TRUST: usize = 16;
/// sipcfg's bound on Tomcat-trust certificates (CUCM publishes none): far more than an edge listener needs,
/// few enough that a wrong folder is noticed.
pub const MAX_TOMCAT_TRUST: usize = 256;
/// CUCM's name for the purpose, also written into `caconfig.json`.
pub const PHONE_EDGE_TRUST: &str = "Phone-Edge-Trust";
/// A certificate is a few KiB, a chain a few times that; anything much larger is the wrong file (or
/// `/dev/zero`), not read whole.
const MAX_PEM_BYTES: u64 = 1 << 20;
/// The shortest SHA-256 prefix `remove` accepts, so a slip of the keyboard cannot match by accident.
const MIN_ID_HEX: usize = 8;
/// Length of the SHA-256 prefix used as the file name in the store.
const FILE_ID_HEX: usize = 16;

/// What a store is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// What phones validate the server with on 6971 (published to them).
    PhoneEdgeTrust,
    /// What the edge listener validates Expressway-C client certificates with.
    TomcatTrust,
}

impl Purpose {
    /// CUCM's name, as messages give it.
    pub fn name(self) -> &'static str {
        match self {
            Purpose::PhoneEdgeTrust => PHONE_EDGE_TRUST,
            Purpose::TomcatTrust => "Tomcat-trust",
        }
    }

    /// The value of `sipcfg cert --purpose`.
    pub fn option(self) -> &'static str {
        match self {
            Purpose::PhoneEdgeTrust => "phone-edge-trust",
            Purpose::TomcatTrust => "tomcat-trust",
        }
    }

    /// The configuration key of the store's folder.
    pub fn key(self) -> &'static str {
        match self {
            Purpose::PhoneEdgeTrust => "trust.phone_edge_trust",
            Purpose::TomcatTrust => "trust.tomcat_trust",
        }
    }

    /// How many certificates the store may hold.
    pub fn max(self) -> usize {
        match self {
            Purpose::PhoneEdgeTrust => MAX_PHONE_EDGE_TRUST,
            Purpose::TomcatTrust => MAX_TOMCAT_TRUST,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: not a PEM certificate: {detail}")]
    NotPem { path: PathBuf, detail: String },
    #[error(
        "{path}: {count} certificates in one file of the store, which keeps one certificate per file; remove the \
         file and add it with `sipcfg cert add`, which stores each certificate of a chain in a file of its own"
    )]
    SeveralCertificates { path: PathBuf, count: usize },
    #[error(
        "{path}: the file also holds a private key; give a file with only the certificates \
         (`openssl x509 -in <file> -out cert.pem` extracts one) and keep private keys off the trust store"
    )]
    ContainsPrivateKey { path: PathBuf },
    #[error("{path}: larger than {max} bytes, which no certificate file is")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path}: cannot parse the certificate: {message}")]
    Unparsable { path: PathBuf, message: String },
    #[error("{path}: \"{subject}\" is not a CA certificate ({reason}); {hint}")]
    NotCa { path: PathBuf, subject: String, reason: &'static str, hint: String },
    #[error("{path}: \"{subject}\" expired on {not_after}")]
    Expired { path: PathBuf, subject: String, not_after: String },
    #[error("{path}: \"{subject}\" is not valid before {not_before} (is this machine's clock right?)")]
    NotYetValid { path: PathBuf, subject: String, not_before: String },
    #[error(
        "{dir}: the {store} store holds {holds} certificates and the file would add {adding}, more than the {max} \
         it may hold; remove some first (`sipcfg cert remove`)"
    )]
    StoreFull { dir: PathBuf, store: &'static str, holds: usize, adding: usize, max: usize },
    #[error("{dir}: {count} certificates, more than the {max} the {store} store may hold; remove some")]
    Overfull { dir: PathBuf, store: &'static str, count: usize, max: usize },
    #[error("{path}: \"{subject}\" (SHA-256 {sha256}) is already in the {store} store as {existing}")]
    AlreadyPresent { path: PathBuf, store: &'static str, subject: String, sha256: String, existing: PathBuf },
    #[error("{path}: nothing to add to the {store} store: {detail}")]
    NothingToAdd { path: PathBuf, store: &'static str, detail: String },
    #[error("{dir}: no certificate in the {store} store matches \"{id}\"")]
    NotFound { dir: PathBuf, store: &'static str, id: String },
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

/// What kind of certificate it is, for a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertKind {
    /// A CA (basicConstraints CA:TRUE).
    Ca,
    /// Not a CA, and signed by its own key: a server's (or an Expressway-C's) own certificate, trusted as
    /// itself.
    SelfSigned,
    /// Not a CA, issued by another certificate: never kept in a store.
    Leaf,
}

/// One certificate of a store, with what an administrator needs to recognise it.
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
    pub kind: CertKind,
    #[serde(skip)]
    pub der: Vec<u8>,
    /// The DER in standard base64, once: every OAuth phone's file carries it.
    #[serde(skip)]
    der_base64: String,
    /// The certificate alone, re-encoded from the DER (no comments, keys or other blocks of the source file).
    pub pem: String,
    /// Why it is not a CA (empty for a CA), as messages give it.
    #[serde(skip)]
    not_ca: &'static str,
}

impl TrustCert {
    /// The DER in standard base64 with padding (the body of the PEM, without line breaks).
    pub fn der_base64(&self) -> &str {
        &self.der_base64
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

    /// Valid at `now`, or the error that says why not.
    fn valid_at(&self, source: &Path, now: i64) -> Result<(), TrustError> {
        if now > self.not_after {
            return Err(TrustError::Expired {
                path: source.to_owned(),
                subject: self.subject.clone(),
                not_after: rfc3339_utc(self.not_after),
            });
        }
        if now < self.not_before {
            return Err(TrustError::NotYetValid {
                path: source.to_owned(),
                subject: self.subject.clone(),
                not_before: rfc3339_utc(self.not_before),
            });
        }
        Ok(())
    }

    fn not_a_ca(&self, source: &Path, hint: String) -> TrustError {
        TrustError::NotCa { path: source.to_owned(), subject: self.subject.clone(), reason: self.not_ca, hint }
    }
}

/// Parses a PEM file holding exactly one certificate, which must be a CA (basicConstraints CA:TRUE) valid at
/// `now` (unix seconds). `source` only names the file in errors.
pub fn parse_ca_pem(pem: &[u8], source: &Path, now: i64) -> Result<TrustCert, TrustError> {
    let cert = parse_single(pem, source)?;
    if cert.kind != CertKind::Ca {
        return Err(cert.not_a_ca(
            source,
            "Phone-Edge-Trust holds the CA that issued the server certificate, not the server certificate itself"
                .into(),
        ));
    }
    cert.valid_at(source, now)?;
    Ok(cert)
}

/// Every certificate of a PEM file (at least one); a file with a private key is refused. No time checks.
pub fn parse_pem_certs(pem: &[u8], source: &Path) -> Result<Vec<TrustCert>, TrustError> {
    let not_pem = |detail: String| TrustError::NotPem { path: source.to_owned(), detail };
    if has_private_key(pem) {
        return Err(TrustError::ContainsPrivateKey { path: source.to_owned() });
    }
    let ders = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(format!("bad PEM: {e}")))?;
    if ders.is_empty() {
        return Err(not_pem(why_no_certificate(pem)));
    }
    ders.iter().map(|der| parse_der(der, source)).collect()
}

/// Exactly one PEM certificate, of any kind. No time checks.
fn parse_single(pem: &[u8], source: &Path) -> Result<TrustCert, TrustError> {
    let mut certs = parse_pem_certs(pem, source)?;
    match certs.len() {
        1 => Ok(certs.swap_remove(0)),
        count => Err(TrustError::SeveralCertificates { path: source.to_owned(), count }),
    }
}

fn parse_der(der: &[u8], source: &Path) -> Result<TrustCert, TrustError> {
    let unparsable = |message: String| TrustError::Unparsable { path: source.to_owned(), message };
    let (rest, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| unparsable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(unparsable(format!("{} bytes of trailing data after the certificate", rest.len())));
    }
    let not_ca = match x509.basic_constraints() {
        Err(e) => return Err(unparsable(format!("basicConstraints: {e}"))),
        Ok(None) => "no basicConstraints extension",
        Ok(Some(bc)) if !bc.value.ca => "basicConstraints CA:FALSE",
        Ok(Some(_)) => "",
    };
    let not_before = x509.validity().not_before.timestamp();
    let kind = if not_ca.is_empty() {
        CertKind::Ca
    } else if x509.subject().as_raw() == x509.issuer().as_raw() && signed_by_itself(der, not_before) {
        CertKind::SelfSigned
    } else {
        CertKind::Leaf
    };
    Ok(TrustCert {
        issuer: x509.issuer().to_string(),
        subject: x509.subject().to_string(),
        sha256: hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref()),
        not_before,
        not_after: x509.validity().not_after.timestamp(),
        kind,
        pem: pem_encode("CERTIFICATE", der),
        der_base64: base64(der),
        der: der.to_vec(),
        not_ca,
    })
}

/// Whether a certificate that is not a CA verifies against itself as a trust anchor (its own key signed it),
/// judged within its validity: whether it is valid now is another question.
fn signed_by_itself(der: &[u8], not_before: i64) -> bool {
    let der = CertificateDer::from(der);
    let (Ok(anchor), Ok(cert)) = (webpki::anchor_from_trusted_cert(&der), webpki::EndEntityCert::try_from(&der)) else {
        return false;
    };
    let at = unix_time(not_before);
    cert.verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &[anchor], &[], at, AnyUsage, None, None).is_ok()
}

/// Any extended key usage: what a certificate is for is not the question when only its signature is.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

fn unix_time(secs: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
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

/// Reads a file that should hold certificates, refusing absurd sizes.
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

/// What [`TrustStore::add`] did with each certificate of the file.
#[derive(Debug, Default)]
pub struct Added {
    /// Written into the store.
    pub added: Vec<TrustCert>,
    /// Already in the store, with the file that holds it.
    pub present: Vec<(TrustCert, PathBuf)>,
    /// Certificates of a chain the store does not take, with why.
    pub skipped: Vec<(TrustCert, String)>,
}

/// A directory of certificates for one [`Purpose`]. Not locked: two concurrent `add`s may together exceed
/// the limit, which the next `load` reports; it is an administrator's tool, not a shared service.
#[derive(Debug, Clone)]
pub struct TrustStore {
    dir: PathBuf,
    purpose: Purpose,
}

impl TrustStore {
    pub fn new(purpose: Purpose, dir: impl Into<PathBuf>) -> TrustStore {
        TrustStore { dir: dir.into(), purpose }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn purpose(&self) -> Purpose {
        self.purpose
    }

    /// Every certificate of the store, sorted by subject then SHA-256. A missing directory is an empty store.
    ///
    /// Every file must hold exactly one certificate, a CA or a self-signed one, none twice, at most the
    /// purpose's maximum in all; otherwise the error names the file, since publishing a partial or oversized
    /// set is worse than refusing to start. Expired or not yet valid certificates are listed (and logged as a
    /// warning, judged at `now`): callers decide what to do with them.
    pub fn load(&self, now: i64) -> Result<Vec<TrustCert>, TrustError> {
        let certs = self.load_entries()?;
        let store = self.purpose.name();
        for (path, cert) in &certs {
            if cert.is_expired(now) {
                tracing::warn!(
                    "{}: {store} certificate \"{}\" expired on {}",
                    path.display(),
                    cert.subject,
                    rfc3339_utc(cert.not_after)
                );
            } else if now < cert.not_before {
                tracing::warn!(
                    "{}: {store} certificate \"{}\" is not valid before {}",
                    path.display(),
                    cert.subject,
                    rfc3339_utc(cert.not_before)
                );
            }
        }
        Ok(certs.into_iter().map(|(_, cert)| cert).collect())
    }

    /// Adds the certificates of `pem_file` that the store takes, each valid at `now`, and creates the
    /// directory if needed:
    ///
    /// - a CA certificate;
    /// - a self-signed certificate that is not a CA: for Phone-Edge-Trust only the server's own
    ///   (`server_leaf`, the DER of the `[tls]` certificate), which phones then trust as itself; for
    ///   Tomcat-trust an Expressway-C's own;
    /// - a chain (several certificates): each of them the store takes; the others (the server's or a
    ///   proxy's certificate issued by a CA) are skipped and said why, since they are trusted through that CA.
    ///
    /// A file of one certificate the store does not take, already present, or no certificate of a chain to
    /// add, is an error; so is a store that would hold more than the purpose's maximum: then nothing is
    /// written.
    pub fn add(&self, pem_file: &Path, now: i64, server_leaf: Option<&[u8]>) -> Result<Added, TrustError> {
        let existing = self.load_entries()?;
        let outcome = plan_add(self.purpose, &self.dir, &existing, pem_file, now, server_leaf)?;
        fs::create_dir_all(&self.dir).map_err(|source| TrustError::Io {
            path: self.dir.clone(),
            action: "create the directory",
            source,
        })?;
        for cert in &outcome.added {
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
        }
        Ok(outcome)
    }
}

/// What adding the certificates of `pem_file` to a store of `purpose` that holds `existing` (each with where
/// it is: a file, or a row of the shared store) would add, as [`TrustStore::add`] describes; `store` names
/// the store in errors. Nothing is written.
pub fn plan_add(
    purpose: Purpose,
    store_location: &Path,
    existing: &[(PathBuf, TrustCert)],
    pem_file: &Path,
    now: i64,
    server_leaf: Option<&[u8]>,
) -> Result<Added, TrustError> {
    let certs = parse_pem_certs(&read_limited(pem_file)?, pem_file)?;
    let single = certs.len() == 1;
    let mut outcome = Added::default();
    let mut candidates: Vec<TrustCert> = Vec::new();
    for cert in certs {
        if candidates.iter().any(|c| c.sha256 == cert.sha256) {
            continue;
        }
        match refusal(purpose, &cert, server_leaf) {
            None => {
                cert.valid_at(pem_file, now)?;
                candidates.push(cert);
            }
            Some(hint) if single => return Err(cert.not_a_ca(pem_file, hint)),
            Some(hint) => {
                let why = format!("not a CA ({}); {hint}", cert.not_ca);
                outcome.skipped.push((cert, why));
            }
        }
    }
    for cert in candidates {
        match existing.iter().find(|(_, c)| c.sha256 == cert.sha256) {
            Some((path, _)) => outcome.present.push((cert, path.clone())),
            None => outcome.added.push(cert),
        }
    }
    let store = purpose.name();
    if outcome.added.is_empty() {
        return Err(match (single, outcome.present.pop()) {
            (true, Some((cert, existing))) => TrustError::AlreadyPresent {
                path: pem_file.to_owned(),
                store,
                subject: cert.subject,
                sha256: cert.sha256,
                existing,
            },
            (_, Some(_)) => TrustError::NothingToAdd {
                path: pem_file.to_owned(),
                store,
                detail: "every certificate of it that the store takes is already there".into(),
            },
            (_, None) => TrustError::NothingToAdd {
                path: pem_file.to_owned(),
                store,
                detail: format!(
                    "none of its {} certificates is a CA{}",
                    outcome.skipped.len(),
                    match purpose {
                        Purpose::PhoneEdgeTrust => " or the server's own self-signed certificate",
                        Purpose::TomcatTrust => " or self-signed",
                    }
                ),
            },
        });
    }
    let max = purpose.max();
    if existing.len() + outcome.added.len() > max {
        return Err(TrustError::StoreFull {
            dir: store_location.to_owned(),
            store,
            holds: existing.len(),
            adding: outcome.added.len(),
            max,
        });
    }
    Ok(outcome)
}

/// Why a store of `purpose` does not take `cert` (a hint for the administrator), or `None` when it does.
fn refusal(purpose: Purpose, cert: &TrustCert, server_leaf: Option<&[u8]>) -> Option<String> {
    let is_server = server_leaf.is_some_and(|leaf| leaf == cert.der.as_slice());
    match (purpose, cert.kind) {
        (_, CertKind::Ca) => None,
        (Purpose::PhoneEdgeTrust, CertKind::SelfSigned) if is_server => None,
        (Purpose::TomcatTrust, CertKind::SelfSigned) => None,
        (Purpose::PhoneEdgeTrust, CertKind::SelfSigned) => Some(
            "a self-signed certificate goes into Phone-Edge-Trust only when it is the server's own \
             ([tls] certificate)"
                .into(),
        ),
        (Purpose::PhoneEdgeTrust, CertKind::Leaf) if is_server => Some(format!(
            "it is the server certificate ([tls] certificate); phones trust it through the CA that issued it: \
             add that CA (\"{}\"), or a file with the chain",
            cert.issuer
        )),
        (Purpose::PhoneEdgeTrust, CertKind::Leaf) => Some(format!(
            "Phone-Edge-Trust holds the CA that issued the server certificate (or the server certificate \
             itself when it is self-signed); add the CA that issued this one (\"{}\") if that is the one",
            cert.issuer
        )),
        (Purpose::TomcatTrust, CertKind::Leaf) => Some(format!(
            "Tomcat-trust holds the CA that issued an Expressway-C certificate, or that certificate itself \
             when it is self-signed; add the CA that issued this one (\"{}\")",
            cert.issuer
        )),
    }
}

impl TrustStore {
    /// Removes one certificate, named by its full SHA-256 (hex, any case, colons allowed as `openssl x509
    /// -fingerprint` prints it), a unique prefix of at least 8 hex digits, or its file name in the store.
    ///
    /// Files that do not parse are skipped when matching by SHA-256, so a broken store can still be cleaned.
    pub fn remove(&self, id: &str) -> Result<TrustCert, TrustError> {
        let files = self.pem_files()?;
        let not_found =
            || TrustError::NotFound { dir: self.dir.clone(), store: self.purpose.name(), id: id.to_owned() };
        let (path, cert) = if let Some(path) = files.iter().find(|p| p.file_name().is_some_and(|n| n == id)) {
            (path.clone(), parse_single(&read_limited(path)?, path)?)
        } else if id.ends_with(".pem") {
            return Err(not_found());
        } else {
            let prefix = normalize_id(id).ok_or_else(|| TrustError::InvalidId { id: id.to_owned() })?;
            let mut matches = Vec::new();
            for path in files {
                match read_limited(&path).and_then(|pem| parse_single(&pem, &path)) {
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

    /// Every file parsed strictly (one CA or self-signed certificate each), checked as a set, sorted for
    /// display.
    fn load_entries(&self) -> Result<Vec<(PathBuf, TrustCert)>, TrustError> {
        let mut entries = Vec::new();
        for path in self.pem_files()? {
            let cert = parse_single(&read_limited(&path)?, &path)?;
            entries.push((path, cert));
        }
        checked_set(self.purpose, &self.dir, entries)
    }
}

/// The certificates of a store of `purpose` held in the shared store: one PEM per certificate, each with
/// where it is (named in errors), checked as a folder's files are ([`TrustStore::load`]; expired ones are
/// listed, with a warning).
pub fn load_stored(
    purpose: Purpose,
    store_location: &Path,
    pems: &[(PathBuf, String)],
    now: i64,
) -> Result<Vec<(PathBuf, TrustCert)>, TrustError> {
    let mut entries = Vec::with_capacity(pems.len());
    for (location, pem) in pems {
        entries.push((location.clone(), parse_single(pem.as_bytes(), location)?));
    }
    let certs = checked_set(purpose, store_location, entries)?;
    for (location, cert) in &certs {
        if cert.is_expired(now) {
            tracing::warn!(
                "{}: {} certificate \"{}\" expired on {}",
                location.display(),
                purpose.name(),
                cert.subject,
                rfc3339_utc(cert.not_after)
            );
        }
    }
    Ok(certs)
}

/// The one certificate of `entries` that `id` names: its full SHA-256 (any case, colons allowed), a unique
/// prefix of at least 8 hex digits, or its file name (`<16 hex digits>.pem`).
pub fn find_by_id<'e>(
    purpose: Purpose,
    store_location: &Path,
    entries: &'e [(PathBuf, TrustCert)],
    id: &str,
) -> Result<&'e (PathBuf, TrustCert), TrustError> {
    let not_found =
        || TrustError::NotFound { dir: store_location.to_owned(), store: purpose.name(), id: id.to_owned() };
    if let Some(entry) = entries.iter().find(|(_, c)| c.file_name() == id) {
        return Ok(entry);
    }
    if id.ends_with(".pem") {
        return Err(not_found());
    }
    let prefix = normalize_id(id).ok_or_else(|| TrustError::InvalidId { id: id.to_owned() })?;
    let matches: Vec<&(PathBuf, TrustCert)> = entries.iter().filter(|(_, c)| c.sha256.starts_with(&prefix)).collect();
    match matches.as_slice() {
        [] => Err(not_found()),
        [one] => Ok(one),
        many => Err(TrustError::Ambiguous { dir: store_location.to_owned(), id: id.to_owned(), count: many.len() }),
    }
}

/// `entries` checked as one store: no certificate issued by another (only CAs and self-signed ones), none
/// twice, at most the purpose's maximum; sorted by subject then SHA-256.
fn checked_set(
    purpose: Purpose,
    store_location: &Path,
    entries: Vec<(PathBuf, TrustCert)>,
) -> Result<Vec<(PathBuf, TrustCert)>, TrustError> {
    let mut certs: Vec<(PathBuf, TrustCert)> = Vec::new();
    let store = purpose.name();
    for (path, cert) in entries {
        if cert.kind == CertKind::Leaf {
            let hint = format!(
                "the {store} store holds CA certificates and self-signed ones only; remove the file and add \
                 the CA that issued it (\"{}\")",
                cert.issuer
            );
            return Err(cert.not_a_ca(&path, hint));
        }
        if let Some((existing, _)) = certs.iter().find(|(_, c)| c.sha256 == cert.sha256) {
            return Err(TrustError::AlreadyPresent {
                existing: existing.clone(),
                path,
                store,
                subject: cert.subject,
                sha256: cert.sha256,
            });
        }
        certs.push((path, cert));
    }
    let max = purpose.max();
    if certs.len() > max {
        return Err(TrustError::Overfull { dir: store_location.to_owned(), store, count: certs.len(), max });
    }
    certs.sort_by(|(_, a), (_, b)| a.subject.cmp(&b.subject).then_with(|| a.sha256.cmp(&b.sha256)));
    Ok(certs)
}

/// The `[tls]` certificate chain as read from its file: the leaf first, then the intermediates.
#[derive(Debug, Clone, Copy)]
pub struct ServerChain<'a> {
    pub file: &'a Path,
    pub certs: &'a [CertificateDer<'a>],
}

/// The Phone-Edge-Trust store does not hold the issuer of the server certificate while OAuth devices exist:
/// every one of them would get the store in its file and fail TLS on 6971. Names the server certificate and
/// the store, and says how to fix it.
#[derive(Debug)]
pub struct ServerNotTrusted {
    /// The configuration file (named when no store is configured).
    pub config: PathBuf,
    /// The `[tls]` certificate file.
    pub certificate: PathBuf,
    pub subject: String,
    pub issuer: String,
    /// The server certificate is self-signed (not a CA): it goes into the store itself.
    pub self_signed: bool,
    /// The store's folder, `None` when `[trust] phone_edge_trust` is not configured.
    pub store: Option<PathBuf>,
    /// The subjects of the store's certificates.
    pub holds: Vec<String>,
    /// Why the chain leads to none of them.
    pub reason: String,
    /// The enabled devices whose profile enables OAuth, sorted.
    pub oauth_devices: Vec<String>,
}

impl fmt::Display for ServerNotTrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: Phone-Edge-Trust does not hold the issuer of the server certificate \"{}\" ({})",
            self.certificate.display(),
            self.subject,
            self.reason
        )?;
        match &self.store {
            None => write!(f, "; no Phone-Edge-Trust store is configured ([trust] phone_edge_trust)")?,
            Some(dir) if self.holds.is_empty() => write!(f, "; the store {} is empty", dir.display())?,
            Some(dir) => {
                let holds: Vec<String> = self.holds.iter().map(|s| format!("\"{s}\"")).collect();
                write!(f, "; the store {} holds {}", dir.display(), holds.join(", "))?;
            }
        }
        const SHOWN: usize = 3;
        let mut devices = self.oauth_devices.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
        if self.oauth_devices.len() > SHOWN {
            devices.push_str(", …");
        }
        write!(
            f,
            ". {} enabled device(s) with an OAuth profile ({devices}) get that store in their file and would fail \
             TLS on port 6971. ",
            self.oauth_devices.len()
        )?;
        match &self.store {
            None => {
                write!(f, "Set [trust] phone_edge_trust = \"phone-edge-trust\" in {}, then ", self.config.display())?
            }
            Some(_) => write!(f, "To fix it, ")?,
        }
        if self.self_signed {
            write!(
                f,
                "add the server certificate itself, which is self-signed: `sipcfg cert add --purpose phone-edge-trust \
                 {}`",
                self.certificate.display()
            )
        } else {
            write!(
                f,
                "add the CA that issued it (\"{}\"), the root or an intermediate of its chain: `sipcfg cert add \
                 --purpose phone-edge-trust <the issuing CA>.pem` (a file with the chain is accepted too)",
                self.issuer
            )
        }
    }
}

impl std::error::Error for ServerNotTrusted {}

/// While `inventory` has OAuth devices (enabled, with a profile that enables OAuth, whatever the cluster's
/// SIP OAuth mode), the server chain must lead to a certificate of the Phone-Edge-Trust store: a root, an
/// intermediate, or the self-signed server certificate itself ([`server_chain_anchor`]). `store_dir` is the
/// configured folder, `config` the configuration file; both only name things in the error.
pub fn check_phone_edge_trust(
    config: &Path,
    server: ServerChain<'_>,
    store_dir: Option<&Path>,
    store: &[TrustCert],
    inventory: &Inventory,
    now: i64,
) -> Result<(), Box<ServerNotTrusted>> {
    if !inventory.has_oauth_devices() {
        return Ok(());
    }
    let mut reason = match server_chain_anchor(server.certs, store, now) {
        Ok(_) => return Ok(()),
        Err(reason) => reason,
    };
    let leaf = server.certs.first().and_then(|der| parse_der(der, server.file).ok());
    if let Some(leaf) = &leaf
        && leaf.kind == CertKind::SelfSigned
        && !store.iter().any(|c| c.sha256 == leaf.sha256)
    {
        reason = "it is self-signed, and the store does not hold it".into();
    }
    Err(Box::new(ServerNotTrusted {
        config: config.to_owned(),
        certificate: server.file.to_owned(),
        subject: leaf.as_ref().map_or_else(|| "(unreadable)".into(), |c| c.subject.clone()),
        issuer: leaf.as_ref().map_or_else(|| "(unreadable)".into(), |c| c.issuer.clone()),
        self_signed: leaf.as_ref().is_some_and(|c| c.kind == CertKind::SelfSigned),
        store: store_dir.map(Path::to_owned),
        holds: store.iter().map(|c| c.subject.clone()).collect(),
        reason,
        oauth_devices: inventory.oauth_devices().into_iter().map(|d| d.to_string()).collect(),
    }))
}

/// The certificate of `store` that `chain` (the leaf first, then intermediates) leads to, verified as a TLS
/// client verifies a server (rustls-webpki): every signature, CA constraints and path lengths, the serverAuth
/// usage. Judged at `now`, or within the leaf's validity when `now` is outside it, since an expired or not
/// yet valid server certificate is another problem, reported on its own. `Err` says why not, for people.
pub fn server_chain_anchor<'s>(
    chain: &[CertificateDer<'_>],
    store: &'s [TrustCert],
    now: i64,
) -> Result<&'s TrustCert, String> {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Err("the certificate file holds no certificate".into());
    };
    if store.is_empty() {
        return Err("the store holds no certificate".into());
    }
    let end_entity =
        webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("the server certificate does not parse: {e}"))?;
    let ders: Vec<CertificateDer<'_>> = store.iter().map(|c| CertificateDer::from(c.der.as_slice())).collect();
    let mut anchors = Vec::with_capacity(ders.len());
    let mut owners = Vec::with_capacity(ders.len());
    for (i, der) in ders.iter().enumerate() {
        if let Ok(anchor) = webpki::anchor_from_trusted_cert(der) {
            anchors.push(anchor);
            owners.push(i);
        }
    }
    let at = match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, x509)) => {
            let (from, until) = (x509.validity().not_before.timestamp(), x509.validity().not_after.timestamp());
            if from <= until { now.clamp(from, until) } else { now }
        }
        Err(_) => now,
    };
    let path = end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            unix_time(at),
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| chain_failure(&e))?;
    let anchor = path.anchor();
    anchors
        .iter()
        .position(|a| std::ptr::eq(a, anchor))
        .and_then(|i| owners.get(i))
        .and_then(|&i| store.get(i))
        .ok_or_else(|| "the chain verified against a certificate that is not in the store".into())
}

/// Why a chain did not verify, for people.
fn chain_failure(e: &webpki::Error) -> String {
    use webpki::Error as E;
    match e {
        E::UnknownIssuer => {
            "neither the store nor the certificate file holds the certificate that issued it or an intermediate \
             of its chain"
                .into()
        }
        E::InvalidSignatureForPublicKey => {
            "a certificate of the store has the issuer's name but not its key: the signature does not verify".into()
        }
        E::CertExpired { .. } => "an intermediate of its chain has expired".into(),
        E::CertNotValidYet { .. } => "an intermediate of its chain is not valid yet".into(),
        E::RequiredEkuNotFoundContext(_) => "its extendedKeyUsage does not allow server authentication".into(),
        E::CaUsedAsEndEntity => "the server certificate is a CA certificate".into(),
        E::EndEntityUsedAsCa => "a certificate that issued another in its chain is not a CA".into(),
        E::PathLenConstraintViolated => "the chain is longer than a CA's pathLenConstraint allows".into(),
        other => format!("the chain does not verify: {other}"),
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

    /// Adds a file of one certificate, which must be added.
    fn add_one(store: &TrustStore, file: &Path) -> TrustCert {
        let mut outcome = store.add(file, now(), None).unwrap();
        assert_eq!(outcome.added.len(), 1, "{outcome:?}");
        outcome.added.remove(0)
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
        let at = parse_single(&pem, &file).unwrap().not_before + 60;
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
        let at = parse_single(&pem, &server).unwrap().not_before + 60;
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
        assert!(
            err.to_string().contains("bundle.pem") && err.to_string().contains("one certificate per file"),
            "{err}"
        );

        // Copied into a store by hand, it is refused at load; `add` splits it (below).
        let store = TrustStore::new(Purpose::PhoneEdgeTrust, tmp.path().join("store"));
        fs::create_dir_all(store.dir()).unwrap();
        fs::copy(&both, store.dir().join("bundle.pem")).unwrap();
        let err = store.load(now()).unwrap_err();
        assert!(matches!(err, TrustError::SeveralCertificates { count: 2, .. }), "{err}");
        assert!(err.to_string().contains("sipcfg cert add"), "{err}");
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
        let store = TrustStore::new(Purpose::PhoneEdgeTrust, tmp.path().join("store").join("phone-edge-trust"));
        assert!(store.load(now()).unwrap().is_empty(), "a missing directory is an empty store");

        let files = [("zeta", "Zeta"), ("alpha", "Alpha"), ("mid", "Mid"), ("twin1", "Twin"), ("twin2", "Twin")]
            .map(|(stem, cn)| make_ca(tmp.path(), stem, cn));
        for file in &files {
            let added = add_one(&store, file);
            assert!(store.dir().join(added.file_name()).is_file());
        }
        let listed = store.load(now()).unwrap();
        let subjects: Vec<&str> = listed.iter().map(|c| c.subject.as_str()).collect();
        assert_eq!(subjects, ["CN=Alpha", "CN=Mid", "CN=Twin", "CN=Twin", "CN=Zeta"]);
        assert!(listed[2].sha256 < listed[3].sha256);

        let err = store.add(&files[1], now(), None).unwrap_err();
        assert!(matches!(err, TrustError::AlreadyPresent { .. }), "{err}");
        assert!(err.to_string().contains(&listed[0].file_name()), "{err}");
        assert_eq!(store.load(now()).unwrap().len(), 5);

        // Refused files never reach the store.
        let leaf = make_cert(tmp.path(), "leaf", "Leaf", "critical,CA:FALSE");
        assert!(matches!(store.add(&leaf, now(), None), Err(TrustError::NotCa { .. })));
        assert!(matches!(store.add(&tmp.path().join("missing.pem"), now(), None), Err(TrustError::Io { .. })));
        assert_eq!(fs::read_dir(store.dir()).unwrap().count(), 5);
    }

    #[test]
    fn store_refuses_the_seventeenth() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(Purpose::PhoneEdgeTrust, tmp.path().join("store"));
        for i in 0..MAX_PHONE_EDGE_TRUST {
            add_one(&store, &make_ca(tmp.path(), &format!("ca{i}"), &format!("Root {i:02}")));
        }
        let extra = make_ca(tmp.path(), "extra", "Root 17");
        let err = store.add(&extra, now(), None).unwrap_err();
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
        let store = TrustStore::new(Purpose::PhoneEdgeTrust, tmp.path().join("store"));
        let a = add_one(&store, &make_ca(tmp.path(), "a", "A"));
        let b = add_one(&store, &make_ca(tmp.path(), "b", "B"));
        let c = add_one(&store, &make_ca(tmp.path(), "c", "C"));

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
        let store = TrustStore::new(Purpose::PhoneEdgeTrust, tmp.path().join("store"));
        let a = add_one(&store, &make_ca(tmp.path(), "a", "A"));
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
        let store = TrustStore::new(Purpose::PhoneEdgeTrust, tmp.path().join("store"));
        let added = add_one(&store, &make_ca(tmp.path(), "a", "A"));
        let later = added.not_after + 86_400 * 365 * 50;
        let listed = store.load(later).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].is_expired(later));
    }

    #[test]
    fn caconfig_json_lists_the_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(Purpose::PhoneEdgeTrust, tmp.path().join("store"));
        add_one(&store, &make_ca(tmp.path(), "b", "Beta"));
        add_one(&store, &make_ca(tmp.path(), "a", "Alpha"));
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

    /// A CA made with rcgen, and what it issues with.
    fn rcgen_ca(
        name: &str,
        parent: Option<&rcgen::Issuer<'static, rcgen::KeyPair>>,
    ) -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let pem = match parent {
            Some(parent) => params.signed_by(&key, parent).unwrap().pem(),
            None => params.self_signed(&key).unwrap().pem(),
        };
        (pem, rcgen::Issuer::new(params, key))
    }

    /// A server certificate (not a CA) for `name`, issued by `issuer` or self-signed.
    fn rcgen_server(name: &str, issuer: Option<&rcgen::Issuer<'static, rcgen::KeyPair>>) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        match issuer {
            Some(issuer) => params.signed_by(&key, issuer).unwrap().pem(),
            None => params.self_signed(&key).unwrap().pem(),
        }
    }

    fn der_of(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn store_of(pems: &[&str]) -> Vec<TrustCert> {
        pems.iter().map(|p| parse_single(p.as_bytes(), Path::new("store.pem")).unwrap()).collect()
    }

    #[test]
    fn the_server_chain_leads_to_a_root_an_intermediate_or_the_self_signed_certificate_itself() {
        let (root_pem, root) = rcgen_ca("Chain Root", None);
        let (inter_pem, inter) = rcgen_ca("Chain Intermediate", Some(&root));
        let leaf = der_of(&rcgen_server("sipcfg.example.test", Some(&inter)));
        let chain = [leaf.clone(), der_of(&inter_pem)];

        let roots = store_of(&[&root_pem]);
        assert_eq!(server_chain_anchor(&chain, &roots, now()).unwrap().subject, "CN=Chain Root");
        let intermediates = store_of(&[&inter_pem]);
        assert_eq!(server_chain_anchor(&chain, &intermediates, now()).unwrap().subject, "CN=Chain Intermediate");
        // Without the intermediate in the certificate file, the root alone is not enough.
        let err = server_chain_anchor(std::slice::from_ref(&leaf), &roots, now()).unwrap_err();
        assert!(err.contains("neither the store nor the certificate file"), "{err}");

        // An unrelated CA; a CA with the root's very name but another key (names alone prove nothing).
        let (other_pem, _) = rcgen_ca("Unrelated CA", None);
        let err = server_chain_anchor(&chain, &store_of(&[&other_pem]), now()).unwrap_err();
        assert!(err.contains("neither the store"), "{err}");
        let (impostor_pem, _) = rcgen_ca("Chain Root", None);
        let err = server_chain_anchor(&chain, &store_of(&[&impostor_pem]), now()).unwrap_err();
        assert!(err.contains("signature does not verify"), "{err}");
        assert!(server_chain_anchor(&chain, &[], now()).unwrap_err().contains("no certificate"));

        // A self-signed server certificate is its own anchor.
        let own = rcgen_server("sipcfg.example.test", None);
        let store = store_of(&[&own]);
        assert_eq!(store[0].kind, CertKind::SelfSigned);
        assert!(server_chain_anchor(&[der_of(&own)], &store, now()).is_ok());
        // Judged within the leaf's validity: an expired server certificate is reported elsewhere.
        let later = store[0].not_after + 86_400;
        assert!(server_chain_anchor(&[der_of(&own)], &store, later).is_ok());
    }

    #[test]
    fn add_splits_a_chain_into_its_cas_and_says_what_it_does_with_the_leaf() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(Purpose::PhoneEdgeTrust, tmp.path().join("store"));
        let (root_pem, root) = rcgen_ca("Split Root", None);
        let (inter_pem, inter) = rcgen_ca("Split Intermediate", Some(&root));
        let leaf_pem = rcgen_server("sipcfg.example.test", Some(&inter));
        let chain = tmp.path().join("chain.pem");
        fs::write(&chain, format!("{leaf_pem}{inter_pem}{root_pem}")).unwrap();

        let leaf = der_of(&leaf_pem);
        let outcome = store.add(&chain, now(), Some(leaf.as_ref())).unwrap();
        let added: Vec<&str> = outcome.added.iter().map(|c| c.subject.as_str()).collect();
        assert_eq!(added, ["CN=Split Intermediate", "CN=Split Root"]);
        assert!(outcome.present.is_empty());
        assert_eq!(outcome.skipped.len(), 1);
        let (skipped, why) = &outcome.skipped[0];
        assert_eq!(skipped.subject, "CN=sipcfg.example.test");
        assert!(why.contains("it is the server certificate") && why.contains("CN=Split Intermediate"), "{why}");
        // One certificate per file, as a single add leaves them.
        let listed = store.load(now()).unwrap();
        assert_eq!(listed.len(), 2);
        for cert in &listed {
            assert_eq!(fs::read_to_string(store.dir().join(cert.file_name())).unwrap(), cert.pem);
        }

        // Again: nothing new, and it says so.
        let err = store.add(&chain, now(), Some(leaf.as_ref())).unwrap_err();
        assert!(matches!(err, TrustError::NothingToAdd { .. }), "{err}");
        assert!(err.to_string().contains("already there"), "{err}");
        // With one more CA in it, only that one is added and the others are reported as present.
        let (extra_pem, _) = rcgen_ca("Split Extra", None);
        fs::write(&chain, format!("{leaf_pem}{inter_pem}{root_pem}{extra_pem}")).unwrap();
        let outcome = store.add(&chain, now(), None).unwrap();
        assert_eq!(outcome.added.len(), 1);
        assert_eq!(outcome.present.len(), 2);
        assert!(outcome.skipped[0].1.contains("holds the CA that issued the server certificate"));

        // A chain of leaves only.
        let leaves = tmp.path().join("leaves.pem");
        fs::write(&leaves, format!("{leaf_pem}{}", rcgen_server("other.example.test", Some(&inter)))).unwrap();
        let err = store.add(&leaves, now(), None).unwrap_err();
        assert!(matches!(err, TrustError::NothingToAdd { .. }) && err.to_string().contains("none of its 2"), "{err}");
    }

    #[test]
    fn a_chain_that_would_overfill_the_store_adds_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(Purpose::PhoneEdgeTrust, tmp.path().join("store"));
        for i in 0..MAX_PHONE_EDGE_TRUST - 1 {
            add_one(&store, &make_ca(tmp.path(), &format!("ca{i}"), &format!("Root {i:02}")));
        }
        let (root_pem, root) = rcgen_ca("Full Root", None);
        let (inter_pem, _) = rcgen_ca("Full Intermediate", Some(&root));
        let chain = tmp.path().join("chain.pem");
        fs::write(&chain, format!("{inter_pem}{root_pem}")).unwrap();
        let err = store.add(&chain, now(), None).unwrap_err();
        assert!(matches!(err, TrustError::StoreFull { holds: 15, adding: 2, max: 16, .. }), "{err}");
        assert_eq!(store.load(now()).unwrap().len(), MAX_PHONE_EDGE_TRUST - 1, "nothing written");
    }

    #[test]
    fn a_self_signed_certificate_goes_into_phone_edge_trust_only_when_it_is_the_servers_own() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(Purpose::PhoneEdgeTrust, tmp.path().join("store"));
        let own_pem = rcgen_server("sipcfg.example.test", None);
        let own = tmp.path().join("own.pem");
        fs::write(&own, &own_pem).unwrap();

        let err = store.add(&own, now(), None).unwrap_err();
        assert!(matches!(err, TrustError::NotCa { .. }), "{err}");
        assert!(err.to_string().contains("only when it is the server's own"), "{err}");
        let other = der_of(&rcgen_server("other.example.test", None));
        assert!(store.add(&own, now(), Some(other.as_ref())).is_err());

        let outcome = store.add(&own, now(), Some(der_of(&own_pem).as_ref())).unwrap();
        assert_eq!(outcome.added[0].kind, CertKind::SelfSigned);
        let listed = store.load(now()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].kind, CertKind::SelfSigned);

        // A server certificate issued by a CA is not self-signed, and the hint names its issuer.
        let (_, ca) = rcgen_ca("Issuing CA", None);
        let issued_pem = rcgen_server("sipcfg.example.test", Some(&ca));
        let issued = tmp.path().join("issued.pem");
        fs::write(&issued, &issued_pem).unwrap();
        let err = store.add(&issued, now(), Some(der_of(&issued_pem).as_ref())).unwrap_err();
        assert!(
            err.to_string().contains("it is the server certificate") && err.to_string().contains("CN=Issuing CA"),
            "{err}"
        );
        // Copied in by hand, such a certificate is refused at load.
        fs::copy(&issued, store.dir().join("issued.pem")).unwrap();
        let err = store.load(now()).unwrap_err();
        assert!(matches!(err, TrustError::NotCa { .. }) && err.to_string().contains("issued.pem"), "{err}");
    }

    #[test]
    fn tomcat_trust_takes_cas_and_self_signed_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(Purpose::TomcatTrust, tmp.path().join("tomcat-trust"));
        let own = tmp.path().join("expc.pem");
        fs::write(&own, rcgen_server("expc1.example.test", None)).unwrap();
        assert_eq!(store.add(&own, now(), None).unwrap().added[0].kind, CertKind::SelfSigned);
        let ca = make_ca(tmp.path(), "ca", "Expressway CA");
        assert_eq!(add_one(&store, &ca).kind, CertKind::Ca);

        let (_, issuer) = rcgen_ca("Expressway Issuing CA", None);
        let issued = tmp.path().join("issued.pem");
        fs::write(&issued, rcgen_server("expc2.example.test", Some(&issuer))).unwrap();
        let err = store.add(&issued, now(), None).unwrap_err();
        assert!(
            err.to_string().contains("Tomcat-trust holds the CA") && err.to_string().contains("Expressway Issuing CA"),
            "{err}"
        );
        let err = store.add(&ca, now(), None).unwrap_err();
        assert!(err.to_string().contains("already in the Tomcat-trust store"), "{err}");
        assert_eq!(store.load(now()).unwrap().len(), 2);
    }
}
