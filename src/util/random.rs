//! Randomness from the system's CSPRNG (aws-lc): codes, tokens, key ids, file-name suffixes.

use crate::util::encoding::hex;

/// The CSPRNG failed: only possible without an entropy source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// `N` random bytes.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut bytes = [0u8; N];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| RandomError)?;
    Ok(bytes)
}

/// 128 random bits as hex.
pub fn random_id() -> Result<String, RandomError> {
    Ok(hex(&random_bytes::<16>()?))
}
