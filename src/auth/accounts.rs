//! Administrators of the management API and the web console: accounts with a role, their passwords
//! (argon2id), API tokens and browser sessions, and the audit trail of administrative changes, behind the
//! [`AccountStore`] interface (SQLite in one node, PostgreSQL shared by a cluster).
//!
//! Secrets are never stored in the clear: passwords as argon2id PHC strings, API tokens and session ids as
//! SHA-256 digests of what the client holds.

use std::fmt;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::auth::store::StoreError;
use crate::auth::{Digest, digest};
use crate::util::encoding::base64url;
use crate::util::random::{RandomError, random_bytes};
use crate::util::time::Time;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Everything, including accounts.
    #[serde(rename = "admin")]
    Admin,
    /// Devices, users, codes, tokens, trust and settings; not accounts.
    #[serde(rename = "operator")]
    Operator,
    /// Reads everything an operator may change; changes nothing.
    #[serde(rename = "read-only")]
    ReadOnly,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::ReadOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::ReadOnly => "read-only",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether the role may change the deployment (devices, users, codes, tokens, trust, settings).
    pub fn can_change(self) -> bool {
        matches!(self, Role::Admin | Role::Operator)
    }

    /// Whether the role may add and remove accounts.
    pub fn can_manage_accounts(self) -> bool {
        matches!(self, Role::Admin)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An administrator account, as listed (never its password hash).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub created: Time,
}

/// An account with its password hash, for logging in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAccount {
    pub account: Account,
    /// argon2id, PHC string format.
    pub password_hash: String,
}

/// A browser session: whose it is, the token its forms carry against CSRF, and when it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub account: Account,
    pub csrf: String,
    pub expires: Time,
}

/// One administrative change: who made it, from where, what and when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEvent {
    pub at: Time,
    /// `admin:NAME` (console or API), `cli:USER@HOST` (a command).
    pub actor: String,
    /// The client address for the console and the API; the host for a command.
    pub address: String,
    /// What was done, e.g. `device.delete`, `activation-code.create`.
    pub action: String,
    /// What it was done to, e.g. a device name.
    pub target: String,
    /// More, for people (never a secret).
    pub detail: String,
}

/// An audit event as listed, with its position in the trail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// A phone's download, as the console shows a device's last one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Download {
    pub at: Time,
    pub address: std::net::IpAddr,
    pub file: String,
    pub status: u16,
    pub user_agent: String,
}

/// Account names: what a person types and what the audit trail shows.
pub fn check_account_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(format!("account name {name:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@' (e.g. \"jsmith\")"))
    }
}

/// The shortest password an account may have.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Hashes a password with argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes, 1 lane, as OWASP
/// recommends) and a random salt.
pub fn hash_password(password: &str) -> Result<String, RandomError> {
    let salt_bytes = random_bytes::<16>()?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|_| RandomError)?;
    Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| RandomError)
}

/// Whether `password` matches an argon2id hash (false for a hash it cannot read).
pub fn verify_password(password: &str, hash: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash to verify against when the account does not exist, so that a login for an unknown name costs
/// what a wrong password costs (the answer's timing does not tell which names exist).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a password of anyone").unwrap_or_default())
}

/// A generated password: 20 characters from a 64-character alphabet (120 bits).
pub fn generate_password() -> Result<String, RandomError> {
    Ok(base64url(&random_bytes::<15>()?))
}

/// Prefix of API tokens, so that secret scanners and people recognise one.
pub const API_TOKEN_PREFIX: &str = "sipcfg_";

/// A new secret for an API token or a session: what the client holds, and the digest the store keeps.
pub fn new_secret(prefix: &str) -> Result<(String, Digest), RandomError> {
    let secret = format!("{prefix}{}", base64url(&random_bytes::<32>()?));
    let d = digest(secret.as_bytes());
    Ok((secret, d))
}

/// The durable state of the management API and the console.
#[async_trait::async_trait]
pub trait AccountStore: Send + Sync {
    /// Adds an account; false if one with that name exists.
    async fn add_account(&self, account: &Account, password_hash: &str) -> Result<bool, StoreError>;
    /// Replaces an account's password and ends its sessions; false if there is no such account.
    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError>;
    async fn account(&self, name: &str) -> Result<Option<StoredAccount>, StoreError>;
    async fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Removes an account with its sessions and API tokens; false if there is none.
    async fn remove_account(&self, name: &str) -> Result<bool, StoreError>;

    /// Stores an API token of `account` (its digest).
    async fn add_api_token(&self, digest: &Digest, account: &str, created: Time) -> Result<(), StoreError>;
    /// The account an API token belongs to.
    async fn api_token_account(&self, digest: &Digest) -> Result<Option<Account>, StoreError>;

    async fn add_session(
        &self,
        digest: &Digest,
        account: &str,
        csrf: &str,
        created: Time,
        expires: Time,
    ) -> Result<(), StoreError>;
    /// A session that has not expired.
    async fn session(&self, digest: &Digest, now: Time) -> Result<Option<Session>, StoreError>;
    async fn remove_session(&self, digest: &Digest) -> Result<(), StoreError>;

    /// Records the last download of each subject (`device:NAME`, `user:ID`), keeping the newest.
    async fn record_downloads(&self, downloads: &[(String, Download)]) -> Result<(), StoreError>;
    /// The last download of `subject` recorded by any node.
    async fn last_download(&self, subject: &str) -> Result<Option<Download>, StoreError>;
    /// When each subject last downloaded, as recorded by every node.
    async fn downloads_seen(&self) -> Result<std::collections::HashMap<String, Time>, StoreError>;

    /// Appends to the audit trail.
    async fn audit(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// The newest `limit` events before `before` (an [`AuditEntry::id`]), newest first.
    async fn audit_trail(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
        assert!(!verify_password("x", "not a hash"));
        assert_ne!(h, hash_password("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn roles_and_names() {
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert!(!Role::ReadOnly.can_change());
        assert!(Role::Operator.can_change() && !Role::Operator.can_manage_accounts());
        assert!(check_account_name("j.smith@corp").is_ok());
        assert!(check_account_name("").is_err());
        assert!(check_account_name("a b").is_err());
        let (secret, d) = new_secret(API_TOKEN_PREFIX).unwrap();
        assert!(secret.starts_with("sipcfg_") && secret.len() > 40);
        assert_eq!(digest(secret.as_bytes()), d);
        assert_eq!(generate_password().unwrap().len(), 20);
    }
}
