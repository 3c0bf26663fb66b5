//! The token service of the refresh login flow (CUCM "OAuth with Refresh Login Flow"), without HTTP:
//! activation codes, the activation-code and refresh-token grants with rotation and reuse detection,
//! revocation, signing keys, and the in-memory view (keys, revocations) the file server checks.
//!
//! Refresh tokens are opaque random strings (256 bits, base64url); only their SHA-256 is stored. Secrets
//! are never compared as strings: the presented value is hashed and looked up by digest, so the time an
//! answer takes says nothing about a stored secret.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::auth::keys::KeyError;
use crate::auth::signer::Signer;
use crate::auth::store::{AuthStore, NewRefreshToken, NodeReport, Rotation, SigningKey, StoreError};
use crate::auth::token::{OwnKey, Verified, Verifier};
use crate::auth::{Digest, digest};
use crate::config::{Algorithm, AuthConfig};
use crate::provision::filename::DeviceName;
use crate::provision::inventory::Cluster;
use crate::provision::subject::Subject;
use crate::util::encoding::{base64url, hex, pem_encode};
use crate::util::random::{RandomError, random_bytes};
use crate::util::time::Time;

/// The grant type of redeeming an activation code (an RFC 6749 §4.5 extension grant).
pub const ACTIVATION_CODE_GRANT: &str = "urn:sipcfg:grant-type:activation-code";
/// Activation codes are this many decimal digits (CUCM: 16).
pub const CODE_DIGITS: usize = 16;
/// Revocation records are kept this long: longer than any token sipcfg mints can live.
pub const REVOCATION_KEEP_SECS: i64 = 366 * 86_400;

/// Why a grant was refused, as RFC 6749 §5.2 names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("invalid_request: {0}")]
    InvalidRequest(&'static str),
    #[error("invalid_grant: {0}")]
    InvalidGrant(&'static str),
    #[error("unsupported_grant_type: {0}")]
    UnsupportedGrantType(&'static str),
    #[error("server_error: {0}")]
    Server(String),
    /// The store cannot be reached: 503 with `Retry-After`, the client tries again.
    #[error("temporarily_unavailable: {0}")]
    Unavailable(String),
}

impl GrantError {
    pub fn code(&self) -> &'static str {
        match self {
            GrantError::InvalidRequest(_) => "invalid_request",
            GrantError::InvalidGrant(_) => "invalid_grant",
            GrantError::UnsupportedGrantType(_) => "unsupported_grant_type",
            GrantError::Server(_) => "server_error",
            GrantError::Unavailable(_) => "temporarily_unavailable",
        }
    }

    /// Counts against the client's failed-grant budget.
    pub fn counts_as_failure(&self) -> bool {
        !matches!(self, GrantError::Server(_) | GrantError::Unavailable(_))
    }
}

impl From<StoreError> for GrantError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() { GrantError::Unavailable(e.to_string()) } else { GrantError::Server(e.to_string()) }
    }
}

impl From<RandomError> for GrantError {
    fn from(e: RandomError) -> Self {
        GrantError::Server(e.to_string())
    }
}

impl From<ServiceError> for GrantError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Store(e) => e.into(),
            other => GrantError::Server(other.to_string()),
        }
    }
}

/// Why the token service could not do what an administrator or the server asked (not a client's grant).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Random(#[from] RandomError),
    #[error("{0}")]
    Key(#[from] KeyError),
    /// A stored signing key that cannot be used.
    #[error("signing key {kid}: {message}")]
    StoredKey { kid: String, message: String },
    #[error("generating a signing key: {0}")]
    KeyGeneration(String),
    #[error("the JWKS document could not be encoded: {0}")]
    Jwks(String),
}

/// A successful grant (RFC 6749 §5.1).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_token_expires_in: u64,
}

/// Lifetimes from the cluster settings (CUCM's enterprise parameters).
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub access_secs: u64,
    pub refresh_secs: u64,
}

impl Lifetimes {
    /// The lifetimes `cluster` sets.
    pub fn of(cluster: &Cluster) -> Lifetimes {
        Lifetimes {
            access_secs: u64::from(cluster.access_token_minutes) * 60,
            refresh_secs: u64::from(cluster.refresh_token_days) * 86_400,
        }
    }
}

/// The answer for a code that cannot be redeemed, whatever the reason: it tells nothing of the code's device.
pub const UNKNOWN_CODE: &str = "the activation code is unknown, used, revoked or expired";

/// A node that has not reported for this long is taken for stopped (it reports every
/// [`NODE_REPORT_SECS`] at least, and at once when it has applied a change).
pub const NODE_ALIVE_SECS: Time = 10;
/// How often a running node reports that it is alive, at least.
pub const NODE_REPORT_SECS: Time = 2;

/// Where a change stands on the running nodes ([`TokenService::wait_applied`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Every running node has applied it.
    Everywhere(Vec<NodeReport>),
    /// No node is running: each applies the store's state when it starts.
    NoNodeRunning,
    /// The wait ended before these nodes applied it.
    NotYet { done: Vec<NodeReport>, lagging: Vec<NodeReport> },
}

/// The change counter of a view that was never read from the store.
const NEVER_SYNCED: u64 = u64::MAX;

/// What the file server needs from the token service on every request.
struct View {
    change: u64,
    signer: Option<Arc<Signer>>,
    jwks: bytes::Bytes,
    /// Keyed by subject, so that the check on every request allocates nothing.
    revocations: HashMap<Subject, Time>,
}

pub struct TokenService {
    store: Arc<dyn AuthStore>,
    /// Issuer, audience and configured keys; replaced when the configuration is reloaded.
    auth: ArcSwap<AuthConfig>,
    view: ArcSwap<View>,
    /// Serialises key changes and view rebuilds.
    sync: tokio::sync::Mutex<()>,
    /// Revocations that appeared in the store since this process opened it: its own (`/oauth/revoke`) and
    /// other processes' (`sipcfg token revoke`), counted when the view takes them in.
    revocations_seen: AtomicU64,
    /// `[state] reuse_grace_secs`: how long after its rotation a refresh token presented again counts as a
    /// client's retry rather than a replay (0: never).
    reuse_grace: Time,
}

impl TokenService {
    /// Opens the service on `store`, creating a first signing key if there is none.
    pub async fn open(
        store: Arc<dyn AuthStore>,
        auth: &AuthConfig,
        reuse_grace: Time,
        now: Time,
    ) -> Result<TokenService, ServiceError> {
        if store.signing_keys().await?.is_empty() {
            store.add_first_signing_key(&generate_key(now)?).await?;
        }
        let service = TokenService {
            store,
            auth: ArcSwap::from_pointee(auth.clone()),
            view: ArcSwap::from_pointee(View {
                change: NEVER_SYNCED,
                signer: None,
                jwks: bytes::Bytes::new(),
                revocations: HashMap::new(),
            }),
            sync: tokio::sync::Mutex::new(()),
            revocations_seen: AtomicU64::new(0),
            reuse_grace,
        };
        Ok(service)
    }

    pub fn store(&self) -> &Arc<dyn AuthStore> {
        &self.store
    }

    /// Rebuilds the in-memory view (keys, revocations) if the store changed since the last call, and
    /// returns the verifier to put in force when the keys changed.
    pub async fn sync(&self, now: Time) -> Result<Option<Verifier>, ServiceError> {
        let _guard = self.sync.lock().await;
        let change = self.store.change_counter().await?;
        if change == self.view.load().change {
            return Ok(None);
        }
        self.rebuild_locked(now, change).await.map(Some)
    }

    /// Puts a new `[auth]` configuration in force and returns the verifier built from it and the keys.
    pub async fn set_auth(&self, auth: &AuthConfig, now: Time) -> Result<Verifier, ServiceError> {
        self.auth.store(Arc::new(auth.clone()));
        self.rebuild(now).await
    }

    /// Rebuilds the view whether or not the store changed.
    async fn rebuild(&self, now: Time) -> Result<Verifier, ServiceError> {
        let _guard = self.sync.lock().await;
        let change = self.store.change_counter().await?;
        self.rebuild_locked(now, change).await
    }

    async fn rebuild_locked(&self, now: Time, change: u64) -> Result<Verifier, ServiceError> {
        let auth = self.auth.load_full();
        let keys = self.store.signing_keys().await?;
        let mut revocations: HashMap<Subject, Time> = HashMap::new();
        for (subject, at) in self.store.revocations(now).await? {
            // Two spellings of one subject: the later revocation wins.
            if let Some(subject) = Subject::parse(&subject) {
                revocations.entry(subject).and_modify(|t| *t = (*t).max(at)).or_insert(at);
            }
        }
        let seen = self.view.load();
        if seen.change != NEVER_SYNCED {
            let new = revocations.iter().filter(|&(s, at)| seen.revocations.get(s).is_none_or(|was| was < at)).count();
            self.revocations_seen.fetch_add(new as u64, Ordering::Relaxed);
        }
        let mut own = Vec::new();
        let mut jwks = Vec::new();
        let mut signer = None;
        for k in &keys {
            let unusable = |message: String| ServiceError::StoredKey { kid: k.kid.clone(), message };
            let algorithm: Algorithm = serde_json::from_value(serde_json::Value::String(k.algorithm.clone()))
                .map_err(|_| unusable(format!("unknown algorithm {}", k.algorithm)))?;
            let encoding = jsonwebtoken::EncodingKey::from_ec_pem(k.private_pem.as_bytes())
                .map_err(|e| unusable(e.to_string()))?;
            let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&encoding, algorithm.to_jwt())
                .map_err(|e| unusable(e.to_string()))?;
            jwk.common.key_id = Some(k.kid.clone());
            jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
            let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| unusable(e.to_string()))?;
            let key = crate::auth::keys::PublicKey::new(algorithm, &key).map_err(unusable)?;
            own.push(OwnKey { kid: k.kid.clone(), algorithm, key });
            jwks.push(jwk);
            if k.retire_at.is_none() {
                // Keys are ordered by creation: the newest active key signs.
                signer = Some(k);
            }
        }
        let signer = match signer {
            Some(k) => {
                let algorithm = own.iter().find(|o| o.kid == k.kid).map_or(Algorithm::ES256, |o| o.algorithm);
                Some(Arc::new(Signer::from_pem(&auth, algorithm, &k.kid, k.private_pem.as_bytes(), 3600)?))
            }
            None => None,
        };
        let verifier = Verifier::with_own_keys(&auth, own)?;
        let jwks = serde_json::to_vec_pretty(&serde_json::json!({ "keys": jwks }))
            .map_err(|e| ServiceError::Jwks(e.to_string()))?;
        self.view.store(Arc::new(View { change, signer, jwks: jwks.into(), revocations }));
        Ok(verifier)
    }

    /// The store's change counter the view in force was built from; `None` before the first sync.
    pub fn applied_change(&self) -> Option<u64> {
        Some(self.view.load().change).filter(|&c| c != NEVER_SYNCED)
    }

    /// Waits until every running node (one that reported within [`NODE_ALIVE_SECS`]) has applied the store's
    /// changes up to `change`, for at most `timeout`. A node that stops reporting drops out of the wait once
    /// it has been silent that long.
    pub async fn wait_applied(&self, change: u64, timeout: std::time::Duration) -> Result<Applied, ServiceError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let now = crate::util::time::unix_now() as Time;
            let live: Vec<NodeReport> =
                self.store.nodes().await?.into_iter().filter(|n| now - n.seen <= NODE_ALIVE_SECS).collect();
            let (done, lagging): (Vec<_>, Vec<_>) = live.into_iter().partition(|n| n.applied >= change);
            if lagging.is_empty() {
                return Ok(if done.is_empty() { Applied::NoNodeRunning } else { Applied::Everywhere(done) });
            }
            if std::time::Instant::now() >= deadline {
                return Ok(Applied::NotYet { done, lagging });
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Revocations taken in since the service was opened (see `revocations_seen`).
    pub fn revocations_seen(&self) -> u64 {
        self.revocations_seen.load(Ordering::Relaxed)
    }

    /// The JWKS document of the keys sipcfg signs with (current and retiring).
    pub fn jwks(&self) -> bytes::Bytes {
        self.view.load().jwks.clone()
    }

    /// Whether a verified access token was revoked (issued at or before its subject's revocation).
    pub fn is_revoked(&self, verified: &Verified) -> bool {
        let view = self.view.load();
        match view.revocations.get(&verified.subject) {
            None => false,
            // A token without `iat` cannot prove it is newer than the revocation.
            Some(&at) => verified.issued_at.is_none_or(|iat| iat as i64 <= at),
        }
    }

    /// Creates an activation code for `device`; returns (id, code). Only its digest is stored.
    pub async fn create_activation_code(
        &self,
        device: &DeviceName,
        now: Time,
        valid_secs: i64,
    ) -> Result<(String, String), ServiceError> {
        let code = random_code()?;
        let id = hex(&random_bytes::<4>()?);
        self.store.add_activation_code(&id, &digest(code.as_bytes()), device.as_str(), now, now + valid_secs).await?;
        Ok((id, code))
    }

    /// The activation-code grant: a 16-digit code for an access token and the first refresh token.
    ///
    /// `admit` decides, before the code is spent, whether its device may onboard where the code was
    /// presented (CUCM's "Allow Activation Code via MRA" for codes that arrive through an edge proxy). A
    /// refused code stays usable.
    pub async fn redeem(
        &self,
        code: &str,
        now: Time,
        life: Lifetimes,
        admit: impl FnOnce(&DeviceName) -> Result<(), GrantError> + Send,
    ) -> Result<TokenResponse, GrantError> {
        let (digest, name) = self.code_device(code, now).await?;
        let unknown = GrantError::InvalidGrant(UNKNOWN_CODE);
        if name.is_placeholder() {
            // Only once a phone has named itself (the placeholder renamed, the code retargeted).
            return Err(GrantError::InvalidRequest(
                "this code onboards a phone not named yet: send device_name (the phone's SEP name)",
            ));
        }
        admit(&name)?;
        let (refresh, first) = new_refresh_token(now, life)?;
        let family = first.family.clone();
        // Spent here, in one transaction with the first refresh token (a code is bound to one device for
        // good, so the device read above is the one this redeems, if the code is still usable).
        self.store.redeem_activation_code(&digest, now, &first).await?.ok_or(unknown)?;
        tracing::info!(target: "sipcfg::tokens", device = %name, family, "activation code redeemed");
        self.respond(&Subject::Device(name), refresh, now, life)
    }

    /// The digest of a code as presented (spaces and dashes ignored) and the device it onboards, if it is
    /// usable.
    pub async fn code_device(&self, code: &str, now: Time) -> Result<(Digest, DeviceName), GrantError> {
        let code: String = code.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        if code.len() != CODE_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(GrantError::InvalidGrant("an activation code is 16 digits"));
        }
        let digest = digest(code.as_bytes());
        let device =
            self.store.activation_code_device(&digest, now).await?.ok_or(GrantError::InvalidGrant(UNKNOWN_CODE))?;
        let name = DeviceName::parse_canonical(&device).map_err(|e| GrantError::Server(e.to_string()))?;
        Ok((digest, name))
    }

    /// The refresh-token grant with rotation: the presented token is spent and a new one returned.
    pub async fn refresh(&self, token: &str, now: Time, life: Lifetimes) -> Result<TokenResponse, GrantError> {
        if token.is_empty() || token.len() > 256 {
            return Err(GrantError::InvalidGrant("the refresh token is invalid"));
        }
        let (refresh, next) = new_refresh_token(now, life)?;
        match self.store.rotate_refresh_token(&digest(token.as_bytes()), now, &next, self.reuse_grace).await? {
            Rotation::Rotated { subject, family } => {
                let subject =
                    Subject::parse(&subject).ok_or_else(|| GrantError::Server(format!("stored subject {subject}")))?;
                tracing::info!(target: "sipcfg::tokens", %subject, family, "refresh token rotated");
                self.respond(&subject, refresh, now, life)
            }
            Rotation::Retried { subject, family } => {
                let subject =
                    Subject::parse(&subject).ok_or_else(|| GrantError::Server(format!("stored subject {subject}")))?;
                tracing::info!(
                    target: "sipcfg::tokens",
                    %subject,
                    family,
                    grace_secs = self.reuse_grace,
                    "the previous refresh token presented again within the reuse grace window: a new one replaces \
                     the one whose answer was lost"
                );
                self.respond(&subject, refresh, now, life)
            }
            Rotation::Reused { subject, family } => {
                tracing::warn!(target: "sipcfg::tokens", subject, family, "a rotated refresh token was presented again: family revoked");
                Err(GrantError::InvalidGrant("the refresh token was already used; its family is revoked"))
            }
            Rotation::Invalid => Err(GrantError::InvalidGrant("the refresh token is unknown, expired or revoked")),
        }
    }

    /// RFC 7009: revokes what `token` (a refresh token, or an access token this service would accept)
    /// belongs to: the whole subject. Unknown tokens are not an error.
    pub async fn revoke_token(
        &self,
        token: &str,
        verifier: &Verifier,
        now: Time,
    ) -> Result<Option<Subject>, StoreError> {
        let subject = match self.store.revoke_refresh_family(&digest(token.as_bytes()), now).await? {
            Some(s) => Subject::parse(&s),
            None => verifier.verify(token).ok(),
        };
        if let Some(s) = &subject {
            self.revoke_subject(s, now).await?;
        }
        Ok(subject)
    }

    /// Revokes every refresh token of `subject` and every access token issued to it until now.
    /// Revokes the device's activation codes that are still usable; returns how many.
    pub async fn retire_codes(&self, device: &DeviceName, now: Time) -> Result<usize, StoreError> {
        let mut retired = 0;
        for code in self.store.list_activation_codes().await? {
            if code.device == device.as_str() && code.is_usable(now) {
                retired += usize::from(self.store.revoke_activation_code(&code.id, now).await?);
            }
        }
        Ok(retired)
    }

    pub async fn revoke_subject(&self, subject: &Subject, now: Time) -> Result<(), StoreError> {
        self.store.revoke_subject(&subject.to_string(), now, now + REVOCATION_KEEP_SECS).await?;
        tracing::info!(target: "sipcfg::tokens", %subject, "revoked");
        Ok(())
    }

    /// `sipcfg keys rotate`: a new signing key; the others keep verifying until their last access token
    /// has expired, then are purged.
    pub async fn rotate_keys(&self, now: Time, max_access_secs: i64) -> Result<SigningKey, ServiceError> {
        let key = generate_key(now)?;
        let retire = now + max_access_secs + self.auth.load().leeway_secs as i64;
        self.store.add_signing_key(&key, Some(retire)).await?;
        Ok(key)
    }

    /// `sipcfg keys regen`: replaces every key and invalidates every access and refresh token at once.
    pub async fn regenerate_keys(&self, now: Time) -> Result<SigningKey, ServiceError> {
        let key = generate_key(now)?;
        self.store.regenerate_signing_keys(&key, now).await?;
        Ok(key)
    }

    fn respond(
        &self,
        subject: &Subject,
        refresh: String,
        now: Time,
        life: Lifetimes,
    ) -> Result<TokenResponse, GrantError> {
        let view = self.view.load();
        let signer = view.signer.clone().ok_or_else(|| GrantError::Server("no signing key".into()))?;
        // Revocation refuses tokens issued at or before it (seconds): a token granted after a revocation
        // within the same second is dated one second later, so it is not taken for a revoked one.
        let issued = match view.revocations.get(subject) {
            Some(&at) if at >= now => at + 1,
            _ => now,
        };
        let access_token = signer
            .mint_at(subject, issued as u64, life.access_secs)
            .map_err(|e: KeyError| GrantError::Server(e.to_string()))?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: life.access_secs,
            refresh_token: refresh,
            refresh_token_expires_in: life.refresh_secs,
        })
    }
}

/// A 16-digit code, uniformly random (rejection sampling, no modulo bias).
fn random_code() -> Result<String, RandomError> {
    const LIMIT: u64 = 10_000_000_000_000_000; // 10^16
    const ZONE: u64 = u64::MAX - (u64::MAX % LIMIT);
    loop {
        let v = u64::from_le_bytes(random_bytes::<8>()?);
        if v < ZONE {
            return Ok(format!("{:016}", v % LIMIT));
        }
    }
}

/// A new refresh token and its stored form. The family is new; the store keeps the presented token's family
/// and subject on rotation, and takes the subject from the code on redemption.
fn new_refresh_token(now: Time, life: Lifetimes) -> Result<(String, NewRefreshToken), GrantError> {
    let token = base64url(&random_bytes::<32>()?);
    let new = NewRefreshToken {
        digest: digest(token.as_bytes()),
        family: hex(&random_bytes::<12>()?),
        subject: String::new(),
        issued: now,
        expires: now + life.refresh_secs as i64,
    };
    Ok((token, new))
}

/// A new ES256 signing key (P-256, PKCS#8), named by a random kid.
pub fn generate_key(now: Time) -> Result<SigningKey, ServiceError> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
        .map_err(|e| ServiceError::KeyGeneration(e.to_string()))?;
    let pkcs8 = pair.to_pkcs8v1().map_err(|e| ServiceError::KeyGeneration(e.to_string()))?;
    Ok(SigningKey {
        kid: format!("sipcfg-{}", hex(&random_bytes::<6>()?)),
        algorithm: "ES256".into(),
        private_pem: pem_encode("PRIVATE KEY", pkcs8.as_ref()),
        created: now,
        retire_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_16_digits() {
        for _ in 0..100 {
            let c = random_code().unwrap();
            assert_eq!(c.len(), 16);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }
}
