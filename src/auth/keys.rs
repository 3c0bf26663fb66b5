//! Key material: verification keys from PEM files and JWKS documents, signing keys from PEM, each pinned
//! to one algorithm.

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, VerificationAlgorithm};
use jsonwebtoken::{DecodingKey, DecodingKeyKind, EncodingKey};

use crate::config::Algorithm;

/// A key file or JWKS that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("no signing key is configured (add [auth.signing] to the configuration)")]
    NoSigningKey,
    #[error("cannot sign the token: {0}")]
    Sign(String),
}

pub fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })
}

pub fn decoding_key_from_pem(algorithm: Algorithm, pem: &[u8]) -> jsonwebtoken::errors::Result<DecodingKey> {
    use Algorithm::*;
    match algorithm {
        ES256 | ES384 => DecodingKey::from_ec_pem(pem),
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(pem),
        EdDSA => DecodingKey::from_ed_pem(pem),
    }
}

pub fn encoding_key_from_pem(algorithm: Algorithm, pem: &[u8]) -> jsonwebtoken::errors::Result<EncodingKey> {
    use Algorithm::*;
    match algorithm {
        ES256 | ES384 => EncodingKey::from_ec_pem(pem),
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => EncodingKey::from_rsa_pem(pem),
        EdDSA => EncodingKey::from_ed_pem(pem),
    }
}

/// Reads a JWKS file. Each key's algorithm comes from its `alg` member, or, without one, from the only
/// configured algorithm that fits its key type; symmetric keys are refused.
pub fn load_jwks(
    path: &Path,
    allowed: &[Algorithm],
) -> Result<Vec<(Option<String>, Algorithm, DecodingKey)>, KeyError> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
    let invalid = |message: String| KeyError::Invalid { path: path.to_owned(), message };
    let set: JwkSet = serde_json::from_slice(&read(path)?).map_err(|e| invalid(format!("not a JWKS: {e}")))?;
    let mut keys = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let name = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
        let fits: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => vec![Algorithm::ES256],
                EllipticCurve::P384 => vec![Algorithm::ES384],
                _ => vec![],
            },
            AlgorithmParameters::RSA(_) => {
                use Algorithm::*;
                vec![RS256, RS384, RS512, PS256, PS384, PS512]
            }
            AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
            AlgorithmParameters::OctetKey(_) => {
                return Err(invalid(format!("key {name}: symmetric keys are not accepted")));
            }
            _ => return Err(invalid(format!("key {name}: unsupported key type"))),
        };
        let algorithm = match &jwk.common.key_algorithm {
            Some(a) => {
                let text = serde_json::to_value(a).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                let alg: Algorithm = serde_json::from_value(serde_json::Value::String(text.clone()))
                    .map_err(|_| invalid(format!("key {name}: algorithm {text} is not supported")))?;
                if !fits.contains(&alg) {
                    return Err(invalid(format!("key {name}: algorithm {text} does not fit the key type")));
                }
                alg
            }
            None => {
                let usable: Vec<_> = fits.iter().filter(|a| allowed.contains(a)).collect();
                match usable.as_slice() {
                    [one] => **one,
                    _ => {
                        return Err(invalid(format!(
                            "key {name}: has no \"alg\" and its type fits {} configured algorithms",
                            usable.len()
                        )));
                    }
                }
            }
        };
        if !allowed.contains(&algorithm) {
            return Err(invalid(format!("key {name}: algorithm {algorithm:?} is not in auth.algorithms")));
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| invalid(format!("key {name}: {e}")))?;
        keys.push((jwk.common.key_id.clone(), algorithm, key));
    }
    Ok(keys)
}

/// A verification key parsed once, for its one algorithm. jsonwebtoken's `decode` parses the key's DER (and,
/// for RSA, builds its Montgomery context) on every verification: about 4 µs of a boot-storm phone's RS256
/// check (20.4 → 16.3 µs, BENCHMARKS.md).
pub struct PublicKey {
    key: ParsedPublicKey,
}

impl PublicKey {
    /// The key jsonwebtoken read from a PEM file or a JWK, parsed for `algorithm`'s verification. A key that
    /// does not parse is refused here, when the configuration is loaded, not at every token.
    pub fn new(algorithm: Algorithm, key: &DecodingKey) -> Result<PublicKey, String> {
        let verification = verification(algorithm);
        let parsed = match key.kind() {
            DecodingKeyKind::SecretOrDer(bytes) => ParsedPublicKey::new(verification, bytes),
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                ParsedPublicKey::new(verification, rsa_public_key_der(n, e))
            }
        };
        parsed.map(|key| PublicKey { key }).map_err(|e| format!("not a usable {algorithm:?} public key ({e})"))
    }

    /// Whether `signature` (the JWS signature's bytes) signs `message` (the token's `header.payload`).
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

/// The aws-lc-rs verification of each algorithm: the ones jsonwebtoken's aws-lc provider uses (ECDSA in the
/// JWS fixed-width form; RSA moduli of 2048 to 8192 bits).
fn verification(algorithm: Algorithm) -> &'static dyn VerificationAlgorithm {
    use Algorithm::*;
    match algorithm {
        ES256 => &sig::ECDSA_P256_SHA256_FIXED,
        ES384 => &sig::ECDSA_P384_SHA384_FIXED,
        RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        EdDSA => &sig::ED25519,
    }
}

/// An RSA public key from a JWK's modulus and exponent (big-endian bytes), as the DER of RFC 8017's
/// `RSAPublicKey` (a SEQUENCE of two INTEGERs), which aws-lc-rs parses.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn length(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
            out.push(0x80 | (bytes.len() - first) as u8);
            out.extend_from_slice(&bytes[first..]);
        }
    }
    fn integer(out: &mut Vec<u8>, magnitude: &[u8]) {
        let start = magnitude.iter().position(|&b| b != 0).unwrap_or(magnitude.len());
        let digits = &magnitude[start..];
        // A positive INTEGER: at least one byte, and a 0 before a first byte with its high bit set.
        let pad = digits.first().is_none_or(|&b| b & 0x80 != 0);
        out.push(0x02);
        length(out, digits.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(digits);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut der = Vec::with_capacity(body.len() + 6);
    der.push(0x30);
    length(&mut der, body.len());
    der.extend_from_slice(&body);
    der
}

/// Installs aws-lc-rs as jsonwebtoken's crypto provider (once per process).
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
