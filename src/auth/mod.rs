//! Who is asking: bearer tokens and sipcfg's own token service.
//!
//! | module | what |
//! |---|---|
//! | [`token`] | verification of the JWTs phones present, the verified-token cache, the per-connection memo |
//! | [`keys`], [`signer`] | key material (PEM, JWKS); minting tokens |
//! | [`service`] | the refresh login flow: activation codes, grants, rotation, revocation, signing keys |
//! | [`store`] | the token service's durable state ([`store::AuthStore`], SQLite) |
//! | [`limiter`] | failed attempts per client address (429) |

pub mod accounts;
pub mod keys;
pub mod limiter;
pub mod service;
pub mod signer;
pub mod store;
pub mod token;

/// A SHA-256 digest of a secret (activation code, refresh token, access token), as stored and cached.
pub type Digest = [u8; 32];

/// SHA-256 of a secret as presented.
pub fn digest(secret: &[u8]) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
