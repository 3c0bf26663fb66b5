//! TLS settings of the listeners: TLS 1.3 and 1.2 only, aws-lc-rs, ALPN h2 and http/1.1; the phone port's
//! configuration with its session cache ([`PhoneTls`]), and the edge listener's mutual TLS ([`edge`]).

pub mod edge;
pub mod observe;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Edge(String),
}

pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File { path: path.to_owned(), message };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsError::File { path: path.to_owned(), message: format!("no usable private key: {e}") })
}

/// The server configuration for the HTTPS listener.
pub fn server_config(tls: &TlsConfig) -> Result<ServerConfig, TlsError> {
    with_chain(tls, load_certificates(&tls.certificate)?, false)
}

/// With `ask_client_certificate` (observe mode), clients are asked for an optional certificate
/// ([`observe::AnyClientCertificate`]).
fn with_chain(
    tls: &TlsConfig,
    certs: Vec<CertificateDer<'static>>,
    ask_client_certificate: bool,
) -> Result<ServerConfig, TlsError> {
    let key = load_private_key(&tls.private_key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match ask_client_certificate {
        true => builder.with_client_cert_verifier(Arc::new(observe::AnyClientCertificate::new(&provider))),
        false => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    apply_common(&mut config, tls);
    Ok(config)
}

/// The HTTPS listener's TLS configuration in force, with what its resumable sessions rest on: the
/// certificate chain the server proved itself with and the resumption settings.
pub struct PhoneTls {
    pub config: Arc<ServerConfig>,
    chain: Vec<CertificateDer<'static>>,
    resumption: (bool, usize),
    ask_client_certificate: bool,
}

impl PhoneTls {
    /// Builds the configuration; a reload passes the one in force (`previous`), whose session cache is kept
    /// when the chain, the resumption settings and the client-certificate request are the same, so that an
    /// inventory or template change does not cost every phone a full handshake. A new certificate starts an
    /// empty cache: no session established under the old one is resumed. `ask_client_certificate`:
    /// observe mode's optional client certificate (`observe.request_client_certificate`).
    pub fn new(
        tls: &TlsConfig,
        ask_client_certificate: bool,
        previous: Option<&PhoneTls>,
    ) -> Result<PhoneTls, TlsError> {
        let chain = load_certificates(&tls.certificate)?;
        let mut config = with_chain(tls, chain.clone(), ask_client_certificate)?;
        let resumption = (tls.resumption, tls.session_cache_entries);
        if let Some(previous) = previous
            && tls.resumption
            && previous.resumption == resumption
            && previous.chain == chain
            && previous.ask_client_certificate == ask_client_certificate
        {
            config.session_storage = previous.config.session_storage.clone();
        }
        Ok(PhoneTls { config: Arc::new(config), chain, resumption, ask_client_certificate })
    }

    /// The certificate chain presented: the leaf first, then the intermediates of the `[tls]` file.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

/// aws-lc-rs with the TLS 1.3 suites in the order we prefer: AES-128-GCM-SHA256 first. It is TLS 1.3's
/// mandatory suite and matches the 128-bit strength of P-256 and X25519; its key schedule runs on SHA-256,
/// which has CPU instructions of its own where SHA-384 does not (SHA-384's HMACs were 9% of the server's CPU
/// in a boot storm profile). Then AES-256-GCM and ChaCha20-Poly1305; the TLS 1.2 suites keep their order.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::CipherSuite::TLS13_AES_128_GCM_SHA256;
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(|s| s.suite() != TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// What the phone listener and the edge listener share: ALPN, suite order, resumption.
pub fn apply_common(config: &mut ServerConfig, tls: &TlsConfig) {
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's cipher-suite order (all AEAD with ECDHE) wins over the client's.
    config.ignore_client_order = true;
    if tls.resumption {
        // Stateful: a session ID or ticket names an entry in this process's memory, so nothing that
        // resumes a session outlives a restart or a certificate change. One ticket per handshake is enough
        // for a phone's next connection.
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(tls.session_cache_entries);
        config.send_tls13_tickets = 1;
    } else {
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    }
}
