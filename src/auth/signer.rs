//! Minting tokens: with the configured signing key (`sipcfg token`), or with the token service's own keys
//! (grants).

use std::path::PathBuf;

use jsonwebtoken::{EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::auth::keys::{self, KeyError};
use crate::config::{Algorithm, AuthConfig, SigningConfig};
use crate::provision::subject::Subject;
use crate::util::random::random_id;
use crate::util::time::unix_now;

/// Claims of a token minted by sipcfg.
#[derive(Debug, Serialize, Deserialize)]
pub struct MintedClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
}

/// Mints tokens with the configured signing key.
pub struct Signer {
    key: EncodingKey,
    header: Header,
    issuer: String,
    audience: String,
    pub default_ttl_secs: u64,
}

impl Signer {
    /// A signer for a private key in PEM (the token service's keys).
    pub fn from_pem(
        auth: &AuthConfig,
        algorithm: Algorithm,
        kid: &str,
        pem: &[u8],
        ttl_secs: u64,
    ) -> Result<Signer, KeyError> {
        keys::install_crypto_provider();
        let key = keys::encoding_key_from_pem(algorithm, pem).map_err(|e| KeyError::Invalid {
            path: PathBuf::from(format!("key {kid}")),
            message: format!("not a {algorithm:?} private key in PEM: {e}"),
        })?;
        let mut header = Header::new(algorithm.to_jwt());
        header.kid = Some(kid.to_owned());
        Ok(Signer {
            key,
            header,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            default_ttl_secs: ttl_secs,
        })
    }

    pub fn from_config(auth: &AuthConfig) -> Result<Signer, KeyError> {
        keys::install_crypto_provider();
        let s: &SigningConfig = auth.signing.as_ref().ok_or(KeyError::NoSigningKey)?;
        let pem = keys::read(&s.private_key)?;
        let key = keys::encoding_key_from_pem(s.algorithm, &pem).map_err(|e| KeyError::Invalid {
            path: s.private_key.clone(),
            message: format!("not a {:?} private key in PEM: {e}", s.algorithm),
        })?;
        let mut header = Header::new(s.algorithm.to_jwt());
        header.kid = s.kid.clone();
        Ok(Signer {
            key,
            header,
            issuer: auth.issuer.clone(),
            audience: auth.audience.clone(),
            default_ttl_secs: s.default_ttl_secs,
        })
    }

    /// A token for `subject`, valid from now for `ttl_secs`.
    pub fn mint(&self, subject: &Subject, ttl_secs: u64) -> Result<String, KeyError> {
        self.mint_at(subject, unix_now(), ttl_secs)
    }

    /// A token for `subject`, issued at `now`, valid for `ttl_secs`.
    pub fn mint_at(&self, subject: &Subject, now: u64, ttl_secs: u64) -> Result<String, KeyError> {
        let claims = MintedClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: subject.to_string(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl_secs),
            jti: random_id().map_err(|e| KeyError::Sign(e.to_string()))?,
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key).map_err(|e| KeyError::Sign(e.to_string()))
    }
}
