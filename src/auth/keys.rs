//! Key material: verification keys from PEM files and JWKS documents, signing keys from PEM, each pinned
//! to one algorithm.

use std::path::{Path, PathBuf};

use jsonwebtoken::{DecodingKey, EncodingKey};

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

/// Installs aws-lc-rs as jsonwebtoken's crypto provider (once per process).
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}
