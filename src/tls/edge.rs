//! The edge-proxy listener's TLS: mutual TLS where a client certificate must chain to the configured trust
//! store (CUCM's Tomcat-trust for Expressway-C) and name one of the configured proxies. A proxy that does
//! not match is refused during the handshake. Behind it, the phone's bearer token is still required.
//!
//! This listener has its own `ServerConfig`, hence its own session cache: a session resumed here was
//! always established here, never on the phone port.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::config::{EdgeConfig, EdgeProxy, TlsConfig};
use crate::tls::{TlsError, load_certificates, load_private_key};

pub fn server_config(tls: &TlsConfig, edge: &EdgeConfig) -> Result<ServerConfig, TlsError> {
    let provider = crate::tls::provider();
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(&edge.client_ca)? {
        roots.add(cert).map_err(|e| TlsError::File {
            path: edge.client_ca.clone(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::File { path: edge.client_ca.clone(), message: e.to_string() })?;
    let verifier = Arc::new(ProxyVerifier { inner, proxies: edge.proxies.clone() });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certificates(&tls.certificate)?, load_private_key(&tls.private_key)?)?;
    crate::tls::apply_common(&mut config, tls);
    Ok(config)
}

/// The subject common names and DNS subject alternative names of a certificate.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return Vec::new() };
    let mut names: Vec<String> =
        cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_owned)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                names.push((*d).to_owned());
            }
        }
    }
    names
}

/// The configured proxy a client certificate belongs to.
pub fn matching_proxy<'a>(proxies: &'a [EdgeProxy], der: &[u8]) -> Option<&'a EdgeProxy> {
    let names = certificate_names(der);
    proxies.iter().find(|p| p.names().any(|want| names.iter().any(|have| have.eq_ignore_ascii_case(want))))
}

#[derive(Debug)]
struct ProxyVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    proxies: Vec<EdgeProxy>,
}

impl ClientCertVerifier for ProxyVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner.verify_client_cert(end_entity, intermediates, now)?;
        match matching_proxy(&self.proxies, end_entity) {
            Some(_) => Ok(ClientCertVerified::assertion()),
            None => {
                tracing::warn!(names = ?certificate_names(end_entity), "edge proxy refused: certificate matches no configured proxy");
                Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
