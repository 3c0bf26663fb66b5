//! The edge-proxy listener's TLS: mutual TLS where a client certificate must chain to a CA of CUCM's
//! Tomcat-trust (the store `[trust] tomcat_trust`, and the PEM file `edge.client_ca` if set) or be one of its
//! self-signed certificates, and name one of the configured proxies: by DNS name (subject CN or DNS SAN) or,
//! for a proxy given by IP address, by IP address SAN. A proxy that does not match is refused during the
//! handshake. Behind it, the phone's bearer token is still required.
//!
//! This listener has its own `ServerConfig`, hence its own session cache: a session resumed here was
//! always established here, never on the phone port.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::config::{EdgeConfig, EdgeProxy, ProxyName, TlsConfig};
use crate::tls::{TlsError, load_certificates, load_private_key};

/// The Tomcat-trust store's certificates, loaded by the caller, and its folder (named in errors).
#[derive(Debug, Clone, Copy)]
pub struct TomcatTrust<'a> {
    pub dir: &'a Path,
    pub certs: &'a [CertificateDer<'static>],
}

/// The edge listener's configuration: client certificates are checked against `edge.client_ca` and
/// `tomcat_trust` together (a certificate that chains to either is trusted).
pub fn server_config(
    tls: &TlsConfig,
    edge: &EdgeConfig,
    tomcat_trust: Option<TomcatTrust<'_>>,
) -> Result<ServerConfig, TlsError> {
    let provider = crate::tls::provider();
    let mut roots = RootCertStore::empty();
    if let Some(client_ca) = &edge.client_ca {
        for cert in load_certificates(client_ca)? {
            roots.add(cert).map_err(|e| TlsError::File {
                path: client_ca.clone(),
                message: format!("not a usable CA certificate: {e}"),
            })?;
        }
    }
    if let Some(store) = tomcat_trust {
        for cert in store.certs {
            roots.add(cert.clone()).map_err(|e| TlsError::File {
                path: store.dir.to_owned(),
                message: format!("a certificate is not usable as a trust anchor: {e}"),
            })?;
        }
    }
    if roots.is_empty() {
        let message = match tomcat_trust {
            Some(store) => format!(
                "{}: the Tomcat-trust store is empty and edge.client_ca is not set, so no Expressway-C can be \
                 admitted: add the CA of its certificate (or the certificate, if self-signed) with `sipcfg cert add \
                 --purpose tomcat-trust FILE`",
                store.dir.display()
            ),
            None => "edge: no CA for Expressway-C certificates: set [trust] tomcat_trust or edge.client_ca".into(),
        };
        return Err(TlsError::Edge(message));
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Edge(format!("edge client certificate verifier: {e}")))?;
    let verifier = Arc::new(ProxyVerifier { inner, proxies: edge.proxies.clone() });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certificates(&tls.certificate)?, load_private_key(&tls.private_key)?)?;
    crate::tls::apply_common(&mut config, tls);
    Ok(config)
}

/// The names a client certificate carries: subject common names and DNS subject alternative names (`dns`),
/// and IP address subject alternative names (`ips`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl CertificateNames {
    /// Whether the certificate carries `want` where a name of its kind must be: an IP address only as an IP
    /// address SAN (never as a CN: RFC 6125), a host name as the CN or a DNS SAN, in any letter case.
    pub fn carries(&self, want: ProxyName<'_>) -> bool {
        match want {
            ProxyName::Ip(ip) => self.ips.iter().any(|have| have.to_canonical() == ip.to_canonical()),
            ProxyName::Dns(name) => self.dns.iter().any(|have| have.eq_ignore_ascii_case(name)),
        }
    }
}

/// The names of a certificate (nothing for one that does not parse).
pub fn certificate_names(der: &[u8]) -> CertificateNames {
    let mut names = CertificateNames::default();
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return names };
    names.dns = cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok().map(str::to_owned)).collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => names.dns.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        names.ips.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        names.ips.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    names
}

/// The configured proxy a client certificate belongs to.
pub fn matching_proxy<'a>(proxies: &'a [EdgeProxy], der: &[u8]) -> Option<&'a EdgeProxy> {
    let names = certificate_names(der);
    proxies.iter().find(|p| p.match_names().any(|want| names.carries(want)))
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
                let names = certificate_names(end_entity);
                tracing::warn!(
                    names = ?names.dns,
                    ip_addresses = ?names.ips,
                    "edge proxy refused: certificate matches no configured proxy"
                );
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
