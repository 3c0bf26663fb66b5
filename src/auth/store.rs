//! Durable state of the token service: activation codes, refresh-token families, revocations and signing
//! keys, behind the [`AuthStore`] interface. Its implementations live in [`crate::store`]: SQLite embedded in
//! one node, or PostgreSQL shared by every node of a cluster.
//!
//! Secrets are never stored: activation codes and refresh tokens are kept as SHA-256 digests of the value
//! the client holds. Signing keys are stored (PKCS#8 PEM): the database file must be readable by sipcfg only.
//!
//! Every method is one transaction: after it returns `Ok`, its effect survives a crash (SIGKILL, power loss).

pub use crate::auth::Digest;
pub use crate::util::time::Time;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {message}")]
    Database { path: String, message: String },
    #[error("state database: {0}")]
    Corrupt(String),
    /// The shared store refused or failed an operation (not a matter of reaching it).
    #[error("shared store {store}: {message}")]
    Shared { store: String, message: String },
    /// The shared store cannot be reached (network, server down, no free connection in time): worth a
    /// retry later, unlike the other errors.
    #[error("shared store {store} is unreachable: {message}")]
    Unavailable { store: String, message: String },
}

impl StoreError {
    /// Whether the store could not be reached (the operation may work later).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// An activation code as listed (never the code itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivationCode {
    /// Short public identifier for `list` and `revoke` (not the code, not derivable from the code).
    pub id: String,
    pub device: String,
    pub created: Time,
    pub expires: Time,
    /// When it was redeemed or revoked; `None` while usable (until it expires).
    pub used: Option<Time>,
    pub revoked: bool,
}

impl ActivationCode {
    /// `usable`, `used`, `revoked` or `expired`, at `now`.
    pub fn state(&self, now: Time) -> &'static str {
        if self.revoked {
            "revoked"
        } else if self.used.is_some() {
            "used"
        } else if self.expires <= now {
            "expired"
        } else {
            "usable"
        }
    }

    pub fn is_usable(&self, now: Time) -> bool {
        self.state(now) == "usable"
    }
}

/// A new refresh token to store: the first of a family, or the successor of a rotated one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefreshToken {
    pub digest: Digest,
    /// Family identifier: every token rotated from the same activation shares it.
    pub family: String,
    pub subject: String,
    pub issued: Time,
    pub expires: Time,
}

/// What presenting a refresh token for rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was the family's live one: it is now rotated and `next` is the live one.
    Rotated { subject: String, family: String },
    /// The token was the previous one, presented again within the reuse grace window and before its
    /// successor was used: a client that lost the answer to its refresh. The successor is superseded and
    /// `next` is the live one; the family lives on.
    Retried { subject: String, family: String },
    /// The token had already been rotated: replay of a stolen or duplicated token. The whole family is now
    /// revoked (RFC 9700 §4.14.2).
    Reused { subject: String, family: String },
    /// Unknown, expired or revoked.
    Invalid,
}

/// A token-signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    /// `ES256` etc.
    pub algorithm: String,
    /// PKCS#8 private key, PEM.
    pub private_pem: String,
    pub created: Time,
    /// Tokens are signed with the newest key that is not retiring.
    /// A retiring key still verifies until `retire_at` (its last token has expired), then it is deleted.
    pub retire_at: Option<Time>,
}

/// What a running node last reported: it has applied the store's changes up to `applied` (the change
/// counter it last rebuilt its view from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Random, per process start.
    pub id: String,
    /// For people: host name and listener address.
    pub name: String,
    pub started: Time,
    /// When it last reported.
    pub seen: Time,
    pub applied: u64,
}

/// A refresh token as stored, for moving the state between stores (`sipcfg store init` and `export`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRefreshToken {
    pub digest: Digest,
    pub family: String,
    pub subject: String,
    pub issued: Time,
    pub expires: Time,
    /// `active`, `rotated` or `revoked`.
    pub state: String,
    pub parent: Option<Digest>,
    pub changed: Time,
}

/// An activation code as stored (its digest, never the code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredActivationCode {
    pub code: ActivationCode,
    pub digest: Digest,
}

/// Everything a token store holds, for moving it between stores: the embedded SQLite file and the shared
/// PostgreSQL store (`sipcfg store init` moves it in, `sipcfg store export` out). Nodes are not part of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenState {
    pub activation_codes: Vec<StoredActivationCode>,
    /// Parents before their children.
    pub refresh_tokens: Vec<StoredRefreshToken>,
    pub revocations: Vec<Revocation>,
    pub signing_keys: Vec<SigningKey>,
}

/// A refresh-token family as listed: one onboarding of a subject and its rotations.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Family {
    pub family: String,
    pub subject: String,
    /// When its first token was issued (the activation code's redemption).
    pub created: Time,
    /// When it last changed (its last refresh, or its revocation).
    pub changed: Time,
    /// When its newest token expires.
    pub expires: Time,
    /// `live` (a token can refresh), `revoked`, or `expired`.
    pub state: &'static str,
}

impl Family {
    /// The state from what the store holds: whether a token of it is active, and whether any was revoked.
    pub fn state_of(active: bool, revoked: bool, expires: Time, now: Time) -> &'static str {
        if active && expires > now {
            "live"
        } else if revoked {
            "revoked"
        } else {
            "expired"
        }
    }
}

/// A revocation by subject as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub subject: String,
    pub revoked_at: Time,
    pub keep_until: Time,
}

impl TokenState {
    /// Whether there is nothing to move.
    pub fn is_empty(&self) -> bool {
        self.activation_codes.is_empty()
            && self.refresh_tokens.is_empty()
            && self.revocations.is_empty()
            && self.signing_keys.is_empty()
    }

    /// How much of each, for people.
    pub fn describe(&self) -> String {
        format!(
            "{} activation code(s), {} refresh token(s), {} revocation(s), {} signing key(s)",
            self.activation_codes.len(),
            self.refresh_tokens.len(),
            self.revocations.len(),
            self.signing_keys.len()
        )
    }
}

/// The state of the token service.
#[async_trait::async_trait]
pub trait AuthStore: Send + Sync {
    // Activation codes.
    async fn add_activation_code(
        &self,
        id: &str,
        digest: &Digest,
        device: &str,
        created: Time,
        expires: Time,
    ) -> Result<(), StoreError>;
    async fn list_activation_codes(&self) -> Result<Vec<ActivationCode>, StoreError>;
    /// Revokes a code by its id; false if there is none that is still usable.
    async fn revoke_activation_code(&self, id: &str, now: Time) -> Result<bool, StoreError>;
    /// The device a code onboards, if the code is still usable (known, unused, unrevoked, unexpired). Reads
    /// only: a code refused for where it was presented stays usable.
    async fn activation_code_device(&self, digest: &Digest, now: Time) -> Result<Option<String>, StoreError>;
    /// Points a usable code of the placeholder device `from` at `to` (the phone that presents it names
    /// itself); false if the code is not usable or not `from`'s any more (another phone took it first).
    async fn retarget_activation_code(
        &self,
        digest: &Digest,
        from: &str,
        to: &str,
        now: Time,
    ) -> Result<bool, StoreError>;
    /// Redeems a code (single use) and stores the first refresh token of a new family, in one transaction.
    /// The token's subject is `device:<the code's device>` (`first.subject` is ignored).
    /// Returns the device name, or `None` if the code is unknown, used, revoked or expired.
    async fn redeem_activation_code(
        &self,
        digest: &Digest,
        now: Time,
        first: &NewRefreshToken,
    ) -> Result<Option<String>, StoreError>;

    // Refresh tokens.
    /// Rotates `presented` into `next` (same family, same subject: `next.family` and `next.subject` are
    /// ignored and taken from the presented token) in one transaction. A rotated token presented again within
    /// `grace` seconds of its rotation, while its successor was never used, is a retry ([`Rotation::Retried`]);
    /// otherwise it is a reuse and its family is revoked. `grace` 0 turns retries off.
    async fn rotate_refresh_token(
        &self,
        presented: &Digest,
        now: Time,
        next: &NewRefreshToken,
        grace: Time,
    ) -> Result<Rotation, StoreError>;
    /// The refresh-token families of `subject` (every subject's with `None`), newest first.
    async fn families(&self, subject: Option<&str>, now: Time) -> Result<Vec<Family>, StoreError>;
    /// Revokes the family of a refresh token; returns its subject, if the token is known.
    async fn revoke_refresh_family(&self, digest: &Digest, now: Time) -> Result<Option<String>, StoreError>;

    // Revocations by subject (`device:NAME`, `user:ID`).
    /// Revokes every refresh token of `subject`, and records that its access tokens issued at or before
    /// `now` are refused.
    async fn revoke_subject(&self, subject: &str, now: Time, keep_until: Time) -> Result<(), StoreError>;
    /// Subjects with a revocation still in force: (subject, revoked at).
    async fn revocations(&self, now: Time) -> Result<Vec<(String, Time)>, StoreError>;

    // Signing keys.
    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError>;
    /// Adds `key` only if the store holds no key at all, in one transaction: nodes starting together on an
    /// empty store agree on one first key. Returns whether it was added.
    async fn add_first_signing_key(&self, key: &SigningKey) -> Result<bool, StoreError>;
    /// Adds a key; with `retire_others_at`, the other keys retire then (rotation).
    async fn add_signing_key(&self, key: &SigningKey, retire_others_at: Option<Time>) -> Result<(), StoreError>;
    /// Replaces every key with `key` and revokes every refresh token (CUCM's `set key regen authz signing`).
    async fn regenerate_signing_keys(&self, key: &SigningKey, now: Time) -> Result<(), StoreError>;

    // Housekeeping.
    /// Deletes expired codes, expired refresh tokens, revocations past their `keep_until`, and retired keys
    /// past `retire_at`. Returns how many rows went.
    async fn purge(&self, now: Time) -> Result<usize, StoreError>;
    /// A number that changes whenever any process commits a change (to reload keys and revocations).
    async fn change_counter(&self) -> Result<u64, StoreError>;

    // Nodes.
    /// Records what a running node has applied (not a change: the change counter stays). Nodes not seen for
    /// a day are forgotten.
    async fn report_node(&self, node: &NodeReport) -> Result<(), StoreError>;
    /// Every node that reported in the last day.
    async fn nodes(&self) -> Result<Vec<NodeReport>, StoreError>;
}
