//! The shared store of a cluster ([`PgStore`]): PostgreSQL, which every node and every `sipcfg` command of the
//! cluster reads and writes. It holds the deployment (cluster settings, profiles, users, devices, the
//! certificate stores) and the token service's state ([`AuthStore`]); templates and common files stay files
//! on each node.
//!
//! **Following changes.** Every transaction that changes what nodes hold in memory takes the next number from
//! `meta.seq` (`UPDATE ... RETURNING`: the row lock orders such commits by their number), writes what it
//! changed to `change_log` and sends `NOTIFY sipcfg, '<seq>'`. A node reads the log from the last number it
//! applied ([`PgStore::changes_since`]): on each notification, after every reconnection (notifications sent
//! meanwhile are lost) and periodically. A device or a user is applied alone; anything else is a full load.
//!
//! **Tokens.** The same transactions as the SQLite store: a refresh rotation locks the presented token's row
//! (`SELECT ... FOR UPDATE`), so two nodes racing on one token serialise and exactly one rotates it; a partial
//! unique index keeps one active token per family whatever happens. Signing keys' private parts are
//! encrypted with the key-encryption key ([`Kek`]).
//!
//! **Unreachable.** Errors that mean "cannot reach the server" are [`StoreError::Unavailable`]; after one, the
//! store answers `Unavailable` at once (grants get their 503 without waiting for a timeout) until a
//! [`PgStore::probe`] (the node's watch, every second while down) reaches it again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, SqlSafeStr, Transaction};

use crate::auth::store::{
    ActivationCode, AuthStore, Digest, Family, NewRefreshToken, NodeReport, Revocation, Rotation, SigningKey,
    StoreError, StoredActivationCode, StoredRefreshToken, Time, TokenState,
};
use crate::config::StoreConfig;
use crate::provision::deployment::StoredDeployment;
use crate::provision::inventory::{Cluster, ClusterDoc, DeviceDoc, InventoryDoc, Pools, ProfileDoc, UserDoc};
use crate::provision::trust::{Purpose, TrustCert};
use crate::store::kek::{Kek, KekError};
use crate::store::sqlite::parents_first;

mod accounts;

/// The newest schema this sipcfg knows.
pub const SCHEMA_VERSION: i64 = 3;

/// The notification channel.
const CHANNEL: &str = "sipcfg";

/// More devices than this in one change are announced as one full load rather than one by one.
pub const INCREMENTAL_MAX: usize = 10_000;

/// How long a change stays in the log: a node that was away longer does a full load instead.
const CHANGE_LOG_KEEP_MS: i64 = 24 * 3600 * 1000;

/// A node that has not reported for this long is forgotten.
const NODE_KEEP: Time = 24 * 60 * 60;

/// How long a redeemed or revoked activation code stays listed.
const SPENT_CODE_KEEP: Time = 24 * 60 * 60;

/// Statements that run longer than this are cancelled by the server (a stuck lock must not hold a grant).
const STATEMENT_TIMEOUT_MS: u32 = 30_000;

fn migrator() -> Migrator {
    let migration = |version, description: &str, sql: &'static str| {
        Migration::new(version, description.to_owned().into(), MigrationType::Simple, sql.into_sql_str(), false)
    };
    let mut migrator = Migrator::with_migrations(vec![
        migration(1, "shared store", include_str!("migrations/0001_shared_store.sql")),
        migration(2, "accounts", include_str!("migrations/0002_accounts.sql")),
        migration(3, "downloads", include_str!("migrations/0003_downloads.sql")),
    ]);
    // The migrations table of a database used for other things too stays recognisable.
    migrator.dangerous_set_table_name("sipcfg_schema_migrations");
    migrator
}

/// The shared store.
pub struct PgStore {
    pool: PgPool,
    kek: Option<Kek>,
    /// The URL (never with a password), for messages.
    origin: String,
    /// Set by an error that means unreachable; cleared by a successful [`PgStore::probe`].
    down: AtomicBool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// A deployment read in one snapshot, with the change number it reflects.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The last change it includes: a node that loads it has applied the log up to here.
    pub seq: u64,
    /// The inventory version it was read at (for [`PgStore::edit`]'s check).
    pub version: u64,
    pub deployment: StoredDeployment,
}

/// What changed since a node's last look, read in one snapshot with the current documents of the devices
/// and users named.
#[derive(Debug, Clone, Default)]
pub struct ChangeSet {
    /// The last change number: once this set is applied, the node is at it.
    pub latest: u64,
    /// Something other than devices and users changed, or the log no longer reaches back far enough: only a
    /// full load brings the node up to date.
    pub full: bool,
    /// Keys or revocations changed.
    pub tokens: bool,
    pub devices: Vec<(String, Option<DeviceDoc>)>,
    pub users: Vec<(String, Option<UserDoc>)>,
    /// When the oldest change of the set was committed (unix milliseconds, the database's clock).
    pub oldest_ms: Option<i64>,
}

impl ChangeSet {
    pub fn is_empty(&self) -> bool {
        !self.full && !self.tokens && self.devices.is_empty() && self.users.is_empty()
    }
}

/// An administrative change to the deployment, checked by the caller against the whole inventory first.
#[derive(Debug, Clone)]
pub enum Edit {
    /// The cluster settings with the device pools and their groups: one document (docs/decisions.md).
    Cluster(Box<Cluster>, Box<Pools>),
    Profile(String, Option<ProfileDoc>),
    User(String, Option<UserDoc>),
    /// Devices put (`Some`) or removed.
    Devices(Vec<(String, Option<DeviceDoc>)>),
    AddCerts(Purpose, Vec<TrustCert>),
    /// By full SHA-256.
    RemoveCert(Purpose, String),
}

/// The `cluster` row's document: the cluster's keys, its call managers, and the device pools with their CM and
/// date/time groups (keys absent while there are none, so a deployment without pools stores what it always did).
#[derive(serde::Serialize)]
struct ClusterRowRef<'a> {
    #[serde(flatten)]
    cluster: ClusterDoc<'a>,
    #[serde(flatten)]
    pools: &'a Pools,
}

/// [`ClusterRowRef`] as it is read back.
#[derive(serde::Deserialize)]
struct ClusterRow {
    #[serde(flatten)]
    cluster: Cluster,
    #[serde(flatten)]
    pools: Pools,
}

/// The inventory changed between the caller's read and its write: nothing was written.
pub const CONFLICT: &str = "the inventory changed while the change was being checked; nothing was written";

/// What `store init` did to the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    pub from: i64,
    pub to: i64,
}

/// Rows as read: an activation code (id, device, created, expires, used, revoked, digest), a refresh token
/// (digest, family, subject, issued, expires, state, parent, changed), a signing key (kid, algorithm, sealed
/// private key, key-encryption key id, created, retire_at).
type CodeRow = (String, String, i64, i64, Option<i64>, bool, Vec<u8>);
type TokenRow = (Vec<u8>, String, String, i64, i64, String, Option<Vec<u8>>, i64);
type KeyRow = (String, String, Vec<u8>, String, i64, Option<i64>);

fn purpose_name(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::PhoneEdgeTrust => "phone-edge-trust",
        Purpose::TomcatTrust => "tomcat-trust",
    }
}

fn digest_of(bytes: Vec<u8>) -> Result<Digest, StoreError> {
    bytes.try_into().map_err(|_| StoreError::Corrupt("a stored digest is not 32 bytes".into()))
}

fn seq_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl PgStore {
    /// A store on `config` (the pool connects when first used, so a node can start while PostgreSQL is
    /// down). `kek` is needed for the token service's signing keys.
    pub fn open(config: &StoreConfig, kek: Option<Kek>) -> Result<PgStore, StoreError> {
        let origin = crate::config::redact_url(&config.url);
        let refused = |message: String| StoreError::Shared { store: origin.clone(), message };
        let mut options: PgConnectOptions = config.url.parse().map_err(|e| refused(format!("not a valid URL: {e}")))?;
        if let Some(file) = &config.password_file {
            let text = std::fs::read_to_string(file)
                .map_err(|e| refused(format!("{}: cannot read the password file: {e}", file.display())))?;
            let password = text.lines().next().unwrap_or("").trim_end_matches('\r');
            if password.is_empty() {
                return Err(refused(format!("{}: the password file is empty", file.display())));
            }
            options = options.password(password);
        }
        let options =
            options.application_name("sipcfg").options([("statement_timeout", STATEMENT_TIMEOUT_MS.to_string())]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .min_connections(0)
            .acquire_timeout(config.connect_timeout())
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(options);
        Ok(PgStore { pool, kek, origin, down: AtomicBool::new(false) })
    }

    /// The URL, for messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The URL as the "file" errors of the inventory and certificate stores name.
    pub fn origin_path(&self) -> PathBuf {
        PathBuf::from(&self.origin)
    }

    /// The key-encryption key's file, when one is loaded.
    pub fn kek(&self) -> Option<&Kek> {
        self.kek.as_ref()
    }

    fn fail(&self, e: sqlx::Error) -> StoreError {
        let unavailable = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed => true,
            // Class 08 (connection exception), 57P01-57P03 (shutting down, cannot connect now).
            sqlx::Error::Database(db) => db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        };
        if unavailable {
            self.down.store(true, Ordering::SeqCst);
            StoreError::Unavailable { store: self.origin.clone(), message: e.to_string() }
        } else {
            StoreError::Shared { store: self.origin.clone(), message: e.to_string() }
        }
    }

    /// `Unavailable` at once while the store is known to be down (see the module's doc).
    fn up(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                store: self.origin.clone(),
                message: "not reachable at the last attempt (retrying every second)".into(),
            });
        }
        Ok(())
    }

    /// Whether the last attempt found the store unreachable.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::SeqCst)
    }

    async fn begin(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        self.up()?;
        self.pool.begin().await.map_err(|e| self.fail(e))
    }

    async fn commit(&self, tx: Transaction<'static, Postgres>) -> Result<(), StoreError> {
        tx.commit().await.map_err(|e| self.fail(e))
    }

    /// Reaches the store (whatever the last attempt said) and returns its last change number.
    pub async fn probe(&self) -> Result<u64, StoreError> {
        let seq: i64 = sqlx::query_scalar("SELECT seq FROM meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.schema_error(e))?;
        self.down.store(false, Ordering::SeqCst);
        Ok(seq_of(seq))
    }

    /// A missing `meta` table means no schema yet: say what to run.
    fn schema_error(&self, e: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = &e
            && db.code().as_deref() == Some("42P01")
        {
            return StoreError::Database {
                path: self.origin.clone(),
                message: "holds no sipcfg schema: run `sipcfg store init` once (it creates the schema and moves the \
                          deployment in)"
                    .into(),
            };
        }
        self.fail(e)
    }

    /// Creates or upgrades the schema (safe to run twice, and while nodes run: an advisory lock serialises
    /// concurrent runs, each migration is one transaction, and migrations only add).
    pub async fn migrate(&self) -> Result<Migrated, StoreError> {
        let from = self.schema_version().await?;
        if from > SCHEMA_VERSION {
            return Err(self.newer_schema(from));
        }
        migrator().run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => self.fail(e),
            other => StoreError::Shared { store: self.origin.clone(), message: other.to_string() },
        })?;
        Ok(Migrated { from, to: SCHEMA_VERSION })
    }

    /// The schema version the database is at (0: none).
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('sipcfg_schema_migrations') IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
        if !exists {
            return Ok(0);
        }
        let version: Option<i64> =
            sqlx::query_scalar("SELECT max(version) FROM sipcfg_schema_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.fail(e))?;
        Ok(version.unwrap_or(0))
    }

    fn newer_schema(&self, version: i64) -> StoreError {
        StoreError::Database {
            path: self.origin.clone(),
            message: format!(
                "schema version {version} was written by a newer sipcfg; this one knows version {SCHEMA_VERSION} \
                 only: upgrade this node's sipcfg"
            ),
        }
    }

    /// Refuses a database this node cannot use: no schema yet, an older one (run `store init`), or a newer
    /// one (upgrade sipcfg).
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        let version = self.schema_version().await?;
        let refuse = |message: String| Err(StoreError::Shared { store: self.origin.clone(), message });
        match version {
            0 => refuse(
                "holds no sipcfg schema: run `sipcfg store init` once (it creates the schema and moves the \
                 deployment in)"
                    .into(),
            ),
            v if v < SCHEMA_VERSION => refuse(format!(
                "schema version {v} is older than this sipcfg's ({SCHEMA_VERSION}): run `sipcfg store init` to \
                 upgrade it (safe while the other nodes run)"
            )),
            v if v > SCHEMA_VERSION => Err(self.newer_schema(v)),
            _ => Ok(()),
        }
    }

    /// Takes the next change number for `entries` (kind, key), logs them and notifies the nodes, in `tx`.
    async fn change(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        entries: &[(&str, &str)],
        tokens: bool,
        inventory: bool,
        actor: &str,
    ) -> Result<u64, StoreError> {
        let seq: i64 = sqlx::query_scalar(
            "UPDATE meta SET seq = seq + 1,
                 token_seq = CASE WHEN $1 THEN seq + 1 ELSE token_seq END,
                 inventory_version = inventory_version + CASE WHEN $2 THEN 1 ELSE 0 END
             WHERE id = 1 RETURNING seq",
        )
        .bind(tokens)
        .bind(inventory)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| self.fail(e))?;
        let kinds: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
        let keys: Vec<&str> = entries.iter().map(|(_, k)| *k).collect();
        sqlx::query(
            "INSERT INTO change_log (seq, kind, key, at_ms, actor)
             SELECT $1, k, key, (extract(epoch FROM clock_timestamp()) * 1000)::bigint, $4
             FROM unnest($2::text[], $3::text[]) AS t (k, key)
             ON CONFLICT DO NOTHING",
        )
        .bind(seq)
        .bind(&kinds)
        .bind(&keys)
        .bind(actor)
        .execute(&mut **tx)
        .await
        .map_err(|e| self.fail(e))?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(seq.to_string())
            .execute(&mut **tx)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(seq_of(seq))
    }

    /// A change of what nodes hold of the token service (keys, revocations).
    async fn token_change(&self, tx: &mut Transaction<'static, Postgres>) -> Result<u64, StoreError> {
        self.change(tx, &[("tokens", "")], true, false, "").await
    }

    // ---- The deployment ----

    /// Whether a deployment was moved in (the cluster settings exist).
    pub async fn has_deployment(&self) -> Result<bool, StoreError> {
        self.up()?;
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cluster)")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.schema_error(e))
    }

    /// The whole deployment, read in one snapshot.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        let (seq, version): (i64, i64) = sqlx::query_as("SELECT seq, inventory_version FROM meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.schema_error(e))?;
        let cluster: Option<sqlx::types::Json<ClusterRow>> = sqlx::query_scalar("SELECT doc FROM cluster WHERE id = 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        let Some(sqlx::types::Json(ClusterRow { cluster, pools })) = cluster else {
            return Err(StoreError::Database {
                path: self.origin.clone(),
                message: "holds no deployment yet: run `sipcfg store init` (it moves in the inventory that the \
                          configuration's files describe)"
                    .into(),
            });
        };
        let mut inventory = InventoryDoc {
            cluster,
            profiles: Default::default(),
            users: Default::default(),
            devices: Default::default(),
            device_pools: Default::default(),
            cm_groups: Default::default(),
            date_time_groups: Default::default(),
        };
        inventory.set_pools(pools);
        let profiles: Vec<(String, sqlx::types::Json<ProfileDoc>)> =
            sqlx::query_as("SELECT name, doc FROM profiles").fetch_all(&mut *tx).await.map_err(|e| self.fail(e))?;
        inventory.profiles = profiles.into_iter().map(|(k, v)| (k, v.0)).collect();
        let users: Vec<(String, sqlx::types::Json<UserDoc>)> =
            sqlx::query_as("SELECT id, doc FROM users").fetch_all(&mut *tx).await.map_err(|e| self.fail(e))?;
        inventory.users = users.into_iter().map(|(k, v)| (k, v.0)).collect();
        let devices: Vec<(String, sqlx::types::Json<DeviceDoc>)> =
            sqlx::query_as("SELECT name, doc FROM devices").fetch_all(&mut *tx).await.map_err(|e| self.fail(e))?;
        inventory.devices = devices.into_iter().map(|(k, v)| (k, v.0)).collect();
        let certs: Vec<(String, String, String)> =
            sqlx::query_as("SELECT purpose, sha256, pem FROM trust_certs ORDER BY purpose, sha256")
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| self.fail(e))?;
        let mut deployment = StoredDeployment { inventory, phone_edge_trust: Vec::new(), tomcat_trust: Vec::new() };
        for (purpose, sha256, pem) in certs {
            let location = self.origin_path().join(&purpose).join(&sha256);
            match purpose.as_str() {
                "phone-edge-trust" => deployment.phone_edge_trust.push((location, pem)),
                _ => deployment.tomcat_trust.push((location, pem)),
            }
        }
        self.commit(tx).await?;
        Ok(Snapshot { seq: seq_of(seq), version: seq_of(version), deployment })
    }

    /// The certificates of one store, each with where it is.
    pub async fn trust_certs(&self, purpose: Purpose) -> Result<Vec<(PathBuf, String)>, StoreError> {
        self.up()?;
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT sha256, pem FROM trust_certs WHERE purpose = $1 ORDER BY sha256")
                .bind(purpose_name(purpose))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.schema_error(e))?;
        let base = self.origin_path().join(purpose_name(purpose));
        Ok(rows.into_iter().map(|(sha, pem)| (base.join(sha), pem)).collect())
    }

    /// What changed after change number `applied`, with the devices' and users' current documents, in one
    /// snapshot.
    pub async fn changes_since(&self, applied: u64) -> Result<ChangeSet, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        let (latest, trimmed): (i64, i64) = sqlx::query_as("SELECT seq, trimmed FROM meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.schema_error(e))?;
        let applied = i64::try_from(applied).unwrap_or(i64::MAX);
        let mut set = ChangeSet { latest: seq_of(latest), ..ChangeSet::default() };
        if latest <= applied {
            self.commit(tx).await?;
            return Ok(set);
        }
        if trimmed > applied {
            set.full = true;
            set.tokens = true;
            self.commit(tx).await?;
            return Ok(set);
        }
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT kind, key, at_ms FROM change_log WHERE seq > $1 AND seq <= $2 ORDER BY seq, kind, key",
        )
        .bind(applied)
        .bind(latest)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| self.fail(e))?;
        let mut devices = Vec::new();
        let mut users = Vec::new();
        for (kind, key, at_ms) in rows {
            set.oldest_ms = Some(set.oldest_ms.map_or(at_ms, |o| o.min(at_ms)));
            match kind.as_str() {
                "device" => devices.push(key),
                "user" => users.push(key),
                "tokens" => set.tokens = true,
                _ => set.full = true,
            }
        }
        if !set.full {
            devices.sort();
            devices.dedup();
            users.sort();
            users.dedup();
            let found: Vec<(String, sqlx::types::Json<DeviceDoc>)> =
                sqlx::query_as("SELECT name, doc FROM devices WHERE name = ANY($1)")
                    .bind(&devices)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.fail(e))?;
            let mut found: std::collections::HashMap<String, DeviceDoc> =
                found.into_iter().map(|(k, v)| (k, v.0)).collect();
            set.devices = devices
                .into_iter()
                .map(|name| {
                    let doc = found.remove(&name);
                    (name, doc)
                })
                .collect();
            let found: Vec<(String, sqlx::types::Json<UserDoc>)> =
                sqlx::query_as("SELECT id, doc FROM users WHERE id = ANY($1)")
                    .bind(&users)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(|e| self.fail(e))?;
            let mut found: std::collections::HashMap<String, UserDoc> =
                found.into_iter().map(|(k, v)| (k, v.0)).collect();
            set.users = users
                .into_iter()
                .map(|id| {
                    let doc = found.remove(&id);
                    (id, doc)
                })
                .collect();
        }
        self.commit(tx).await?;
        Ok(set)
    }

    /// Applies `edits` in one transaction, if the inventory is still at `expected` (the version the caller
    /// checked its change against; `None`: whatever it is). Returns the change number.
    pub async fn edit(&self, edits: &[Edit], expected: Option<u64>, actor: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin().await?;
        let version: i64 = sqlx::query_scalar("SELECT inventory_version FROM meta WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.schema_error(e))?;
        if let Some(expected) = expected
            && seq_of(version) != expected
        {
            return Err(StoreError::Shared { store: self.origin.clone(), message: CONFLICT.into() });
        }
        let mut entries: Vec<(String, String)> = Vec::new();
        for edit in edits {
            self.apply_edit(&mut tx, edit, &mut entries).await?;
        }
        if entries.is_empty() {
            self.commit(tx).await?;
            return Ok(0);
        }
        let devices = entries.iter().filter(|(k, _)| k == "device").count();
        if devices > INCREMENTAL_MAX {
            entries.retain(|(k, _)| k != "device");
            entries.push(("inventory".into(), String::new()));
        }
        let borrowed: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let seq = self.change(&mut tx, &borrowed, false, true, actor).await?;
        self.commit(tx).await?;
        Ok(seq)
    }

    async fn apply_edit(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        edit: &Edit,
        entries: &mut Vec<(String, String)>,
    ) -> Result<(), StoreError> {
        let fail = |e| self.fail(e);
        match edit {
            Edit::Cluster(cluster, pools) => {
                let doc = sqlx::types::Json(ClusterRowRef { cluster: ClusterDoc::of(cluster), pools });
                sqlx::query("INSERT INTO cluster (id, doc) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET doc = $1")
                    .bind(doc)
                    .execute(&mut **tx)
                    .await
                    .map_err(fail)?;
                entries.push(("cluster".into(), String::new()));
            }
            Edit::Profile(name, doc) => {
                match doc {
                    Some(doc) => sqlx::query(
                        "INSERT INTO profiles (name, doc) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET doc = $2",
                    )
                    .bind(name)
                    .bind(sqlx::types::Json(doc))
                    .execute(&mut **tx)
                    .await
                    .map_err(fail)?,
                    None => sqlx::query("DELETE FROM profiles WHERE name = $1")
                        .bind(name)
                        .execute(&mut **tx)
                        .await
                        .map_err(fail)?,
                };
                entries.push(("profile".into(), name.clone()));
            }
            Edit::User(id, doc) => {
                match doc {
                    Some(doc) => sqlx::query(
                        "INSERT INTO users (id, doc) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET doc = $2",
                    )
                    .bind(id)
                    .bind(sqlx::types::Json(doc))
                    .execute(&mut **tx)
                    .await
                    .map_err(fail)?,
                    None => sqlx::query("DELETE FROM users WHERE id = $1")
                        .bind(id)
                        .execute(&mut **tx)
                        .await
                        .map_err(fail)?,
                };
                entries.push(("user".into(), id.clone()));
            }
            Edit::Devices(devices) => {
                let (put, removed): (Vec<_>, Vec<_>) = devices.iter().partition(|(_, doc)| doc.is_some());
                for chunk in put.chunks(1000) {
                    let names: Vec<&str> = chunk.iter().map(|(n, _)| n.as_str()).collect();
                    let profiles: Vec<&str> =
                        chunk.iter().map(|(_, d)| d.as_ref().map_or("", |d| d.profile.as_str())).collect();
                    let owners: Vec<Option<&str>> =
                        chunk.iter().map(|(_, d)| d.as_ref().and_then(|d| d.owner.as_deref())).collect();
                    let docs: Vec<sqlx::types::Json<&DeviceDoc>> =
                        chunk.iter().filter_map(|(_, d)| d.as_ref().map(sqlx::types::Json)).collect();
                    sqlx::query(
                        "INSERT INTO devices (name, profile, owner, doc)
                         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
                         ON CONFLICT (name) DO UPDATE
                             SET profile = excluded.profile, owner = excluded.owner, doc = excluded.doc",
                    )
                    .bind(&names)
                    .bind(&profiles)
                    .bind(&owners)
                    .bind(&docs)
                    .execute(&mut **tx)
                    .await
                    .map_err(fail)?;
                }
                let names: Vec<&str> = removed.iter().map(|(n, _)| n.as_str()).collect();
                if !names.is_empty() {
                    sqlx::query("DELETE FROM devices WHERE name = ANY($1)")
                        .bind(&names)
                        .execute(&mut **tx)
                        .await
                        .map_err(fail)?;
                }
                entries.extend(devices.iter().map(|(n, _)| ("device".to_owned(), n.clone())));
            }
            Edit::AddCerts(purpose, certs) => {
                for cert in certs {
                    sqlx::query(
                        "INSERT INTO trust_certs (purpose, sha256, pem, added)
                         VALUES ($1, $2, $3, extract(epoch FROM now())::bigint) ON CONFLICT DO NOTHING",
                    )
                    .bind(purpose_name(*purpose))
                    .bind(&cert.sha256)
                    .bind(&cert.pem)
                    .execute(&mut **tx)
                    .await
                    .map_err(fail)?;
                }
                entries.push(("trust".into(), purpose_name(*purpose).into()));
            }
            Edit::RemoveCert(purpose, sha256) => {
                sqlx::query("DELETE FROM trust_certs WHERE purpose = $1 AND sha256 = $2")
                    .bind(purpose_name(*purpose))
                    .bind(sha256)
                    .execute(&mut **tx)
                    .await
                    .map_err(fail)?;
                entries.push(("trust".into(), purpose_name(*purpose).into()));
            }
        }
        Ok(())
    }

    /// Moves a whole deployment (and, when given, the token state) in, in one transaction, if the store holds
    /// no deployment yet. Returns false, writing nothing, if it already holds one.
    pub async fn move_in(
        &self,
        deployment: &StoredDeployment,
        phone_edge_trust: &[TrustCert],
        tomcat_trust: &[TrustCert],
        tokens: Option<&TokenState>,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        // The meta row lock: two `store init` at once move in one deployment.
        sqlx::query("SELECT seq FROM meta WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await
            .map_err(|e| self.schema_error(e))?;
        let held: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cluster)")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        if held {
            return Ok(false);
        }
        let inventory = &deployment.inventory;
        let pools = Pools {
            cm_groups: inventory.cm_groups.clone(),
            date_time_groups: inventory.date_time_groups.clone(),
            device_pools: inventory.device_pools.clone(),
        };
        let mut edits = vec![Edit::Cluster(Box::new(inventory.cluster.clone()), Box::new(pools))];
        edits.extend(inventory.profiles.iter().map(|(k, v)| Edit::Profile(k.clone(), Some(v.clone()))));
        edits.extend(inventory.users.iter().map(|(k, v)| Edit::User(k.clone(), Some(v.clone()))));
        edits.push(Edit::Devices(inventory.devices.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect()));
        edits.push(Edit::AddCerts(Purpose::PhoneEdgeTrust, phone_edge_trust.to_vec()));
        edits.push(Edit::AddCerts(Purpose::TomcatTrust, tomcat_trust.to_vec()));
        let mut ignored = Vec::new();
        for edit in &edits {
            self.apply_edit(&mut tx, edit, &mut ignored).await?;
        }
        if let Some(tokens) = tokens {
            self.restore_tokens(&mut tx, tokens).await?;
        }
        self.change(&mut tx, &[("inventory", ""), ("tokens", "")], true, true, actor).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    async fn restore_tokens(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        state: &TokenState,
    ) -> Result<(), StoreError> {
        let fail = |e| self.fail(e);
        let held: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM activation_codes) + (SELECT count(*) FROM refresh_tokens)
                  + (SELECT count(*) FROM revocations) + (SELECT count(*) FROM signing_keys)",
        )
        .fetch_one(&mut **tx)
        .await
        .map_err(fail)?;
        if held > 0 {
            return Err(StoreError::Database {
                path: self.origin.clone(),
                message: "already holds token state; nothing was moved in".into(),
            });
        }
        for c in &state.activation_codes {
            sqlx::query(
                "INSERT INTO activation_codes (id, digest, device, created, expires, used, revoked)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&c.code.id)
            .bind(&c.digest[..])
            .bind(&c.code.device)
            .bind(c.code.created)
            .bind(c.code.expires)
            .bind(c.code.used)
            .bind(c.code.revoked)
            .execute(&mut **tx)
            .await
            .map_err(fail)?;
        }
        for t in &state.refresh_tokens {
            sqlx::query(
                "INSERT INTO refresh_tokens (digest, family, subject, issued, expires, state, parent, changed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&t.digest[..])
            .bind(&t.family)
            .bind(&t.subject)
            .bind(t.issued)
            .bind(t.expires)
            .bind(&t.state)
            .bind(t.parent.as_ref().map(|p| &p[..]))
            .bind(t.changed)
            .execute(&mut **tx)
            .await
            .map_err(fail)?;
        }
        for r in &state.revocations {
            sqlx::query("INSERT INTO revocations (subject, revoked_at, keep_until) VALUES ($1, $2, $3)")
                .bind(&r.subject)
                .bind(r.revoked_at)
                .bind(r.keep_until)
                .execute(&mut **tx)
                .await
                .map_err(fail)?;
        }
        for k in &state.signing_keys {
            self.insert_key(tx, k).await?;
        }
        Ok(())
    }

    /// Everything the token service holds (signing keys decrypted), for `sipcfg store export`.
    pub async fn token_state(&self) -> Result<TokenState, StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        let fail = |e| self.fail(e);
        let codes: Vec<CodeRow> = sqlx::query_as(
            "SELECT id, device, created, expires, used, revoked, digest FROM activation_codes ORDER BY created, id",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
        let mut state = TokenState::default();
        for (id, device, created, expires, used, revoked, digest) in codes {
            state.activation_codes.push(StoredActivationCode {
                code: ActivationCode { id, device, created, expires, used, revoked },
                digest: digest_of(digest)?,
            });
        }
        let tokens: Vec<TokenRow> = sqlx::query_as(
            "SELECT digest, family, subject, issued, expires, state, parent, changed FROM refresh_tokens
             ORDER BY issued, digest",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(fail)?;
        let mut refresh = Vec::with_capacity(tokens.len());
        for (digest, family, subject, issued, expires, token_state, parent, changed) in tokens {
            refresh.push(StoredRefreshToken {
                digest: digest_of(digest)?,
                family,
                subject,
                issued,
                expires,
                state: token_state,
                parent: parent.map(digest_of).transpose()?,
                changed,
            });
        }
        state.refresh_tokens = parents_first(refresh);
        let revocations: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT subject, revoked_at, keep_until FROM revocations ORDER BY subject")
                .fetch_all(&mut *tx)
                .await
                .map_err(fail)?;
        state.revocations = revocations
            .into_iter()
            .map(|(subject, revoked_at, keep_until)| Revocation { subject, revoked_at, keep_until })
            .collect();
        state.signing_keys = self.read_keys(&mut tx).await?;
        self.commit(tx).await?;
        Ok(state)
    }

    /// Subscribes to change notifications, on a connection of its own.
    pub async fn listen(&self) -> Result<Listener, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(|e| self.fail(e))?;
        listener.listen(CHANNEL).await.map_err(|e| self.fail(e))?;
        Ok(Listener { listener, origin: self.origin.clone() })
    }

    fn kek_or_refuse(&self) -> Result<&Kek, StoreError> {
        self.kek.as_ref().ok_or_else(|| StoreError::Database {
            path: self.origin.clone(),
            message: "the token service's signing keys need [store] key_file (the key-encryption key)".into(),
        })
    }

    async fn insert_key(&self, tx: &mut Transaction<'static, Postgres>, key: &SigningKey) -> Result<(), StoreError> {
        let kek = self.kek_or_refuse()?;
        let sealed = kek.seal(&key.kid, key.private_pem.as_bytes()).map_err(|e| self.kek_error(e))?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_key, kek_id, created, retire_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(sealed)
        .bind(kek.id())
        .bind(key.created)
        .bind(key.retire_at)
        .execute(&mut **tx)
        .await
        .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn read_keys(&self, tx: &mut Transaction<'static, Postgres>) -> Result<Vec<SigningKey>, StoreError> {
        let rows: Vec<KeyRow> = sqlx::query_as(
            "SELECT kid, algorithm, private_key, kek_id, created, retire_at FROM signing_keys ORDER BY created, kid",
        )
        .fetch_all(&mut **tx)
        .await
        .map_err(|e| self.fail(e))?;
        let kek = if rows.is_empty() { None } else { Some(self.kek_or_refuse()?) };
        let mut keys = Vec::with_capacity(rows.len());
        for (kid, algorithm, sealed, kek_id, created, retire_at) in rows {
            let Some(kek) = kek else { break };
            let plain = kek.open(&kid, &kek_id, &sealed).map_err(|e| self.kek_error(e))?;
            let private_pem = String::from_utf8(plain)
                .map_err(|_| StoreError::Corrupt(format!("signing key {kid}: the private key is not PEM text")))?;
            keys.push(SigningKey { kid, algorithm, private_pem, created, retire_at });
        }
        Ok(keys)
    }

    fn kek_error(&self, e: KekError) -> StoreError {
        StoreError::Shared { store: self.origin.clone(), message: e.to_string() }
    }
}

/// Change notifications of the shared store.
pub struct Listener {
    listener: PgListener,
    origin: String,
}

impl Listener {
    /// The next notification's change number; `Ok(None)` when the connection was lost and re-established
    /// (notifications sent meanwhile are lost: read the log). An error when the store cannot be reached.
    pub async fn next(&mut self) -> Result<Option<u64>, StoreError> {
        match self.listener.try_recv().await {
            Ok(Some(n)) => Ok(Some(n.payload().parse().unwrap_or(0))),
            Ok(None) => Ok(None),
            Err(e) => Err(StoreError::Unavailable { store: self.origin.clone(), message: e.to_string() }),
        }
    }
}

#[async_trait::async_trait]
impl AuthStore for PgStore {
    async fn add_activation_code(
        &self,
        id: &str,
        digest: &Digest,
        device: &str,
        created: Time,
        expires: Time,
    ) -> Result<(), StoreError> {
        self.up()?;
        sqlx::query(
            "INSERT INTO activation_codes (id, digest, device, created, expires, used, revoked)
             VALUES ($1, $2, $3, $4, $5, NULL, false)",
        )
        .bind(id)
        .bind(&digest[..])
        .bind(device)
        .bind(created)
        .bind(expires)
        .execute(&self.pool)
        .await
        .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn list_activation_codes(&self) -> Result<Vec<ActivationCode>, StoreError> {
        self.up()?;
        let rows: Vec<(String, String, i64, i64, Option<i64>, bool)> = sqlx::query_as(
            "SELECT id, device, created, expires, used, revoked FROM activation_codes ORDER BY created, id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.fail(e))?;
        Ok(rows
            .into_iter()
            .map(|(id, device, created, expires, used, revoked)| ActivationCode {
                id,
                device,
                created,
                expires,
                used,
                revoked,
            })
            .collect())
    }

    async fn revoke_activation_code(&self, id: &str, now: Time) -> Result<bool, StoreError> {
        self.up()?;
        let done = sqlx::query(
            "UPDATE activation_codes SET revoked = true, used = $2
             WHERE id = $1 AND used IS NULL AND NOT revoked AND expires > $2",
        )
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.fail(e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn retarget_activation_code(
        &self,
        digest: &Digest,
        from: &str,
        to: &str,
        now: Time,
    ) -> Result<bool, StoreError> {
        self.up()?;
        let done = sqlx::query(
            "UPDATE activation_codes SET device = $3
             WHERE digest = $1 AND device = $2 AND used IS NULL AND NOT revoked AND expires > $4",
        )
        .bind(&digest[..])
        .bind(from)
        .bind(to)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| self.fail(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn activation_code_device(&self, digest: &Digest, now: Time) -> Result<Option<String>, StoreError> {
        self.up()?;
        sqlx::query_scalar(
            "SELECT device FROM activation_codes WHERE digest = $1 AND used IS NULL AND NOT revoked AND expires > $2",
        )
        .bind(&digest[..])
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.fail(e))
    }

    async fn redeem_activation_code(
        &self,
        digest: &Digest,
        now: Time,
        first: &NewRefreshToken,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin().await?;
        // The row lock: two nodes redeeming one code at once, one wins.
        let code: Option<(String, String)> = sqlx::query_as(
            "UPDATE activation_codes SET used = $2
             WHERE digest = $1 AND used IS NULL AND NOT revoked AND expires > $2
             RETURNING id, device",
        )
        .bind(&digest[..])
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.fail(e))?;
        let Some((_, device)) = code else {
            return Ok(None);
        };
        insert_token(&mut tx, first, &first.family, &format!("device:{device}"), None, now)
            .await
            .map_err(|e| self.fail(e))?;
        self.commit(tx).await?;
        Ok(Some(device))
    }

    async fn rotate_refresh_token(
        &self,
        presented: &Digest,
        now: Time,
        next: &NewRefreshToken,
        grace: Time,
    ) -> Result<Rotation, StoreError> {
        let mut tx = self.begin().await?;
        let fail = |e| self.fail(e);
        let token: Option<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT family, subject, state, expires, changed FROM refresh_tokens WHERE digest = $1 FOR UPDATE",
        )
        .bind(&presented[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
        let Some((family, subject, state, expires, changed)) = token else {
            return Ok(Rotation::Invalid);
        };
        if expires <= now {
            return Ok(Rotation::Invalid);
        }
        let outcome = match state.as_str() {
            "active" => {
                sqlx::query("UPDATE refresh_tokens SET state = 'rotated', changed = $2 WHERE digest = $1")
                    .bind(&presented[..])
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
                insert_token(&mut tx, next, &family, &subject, Some(presented), now).await.map_err(fail)?;
                Rotation::Rotated { subject, family }
            }
            "rotated"
                if grace > 0
                    && now - changed <= grace
                    && !child_was_used(&mut tx, presented).await.map_err(fail)? =>
            {
                sqlx::query(
                    "UPDATE refresh_tokens SET state = 'revoked', changed = $2 WHERE family = $1 AND state = 'active'",
                )
                .bind(&family)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
                insert_token(&mut tx, next, &family, &subject, Some(presented), now).await.map_err(fail)?;
                Rotation::Retried { subject, family }
            }
            "rotated" => {
                revoke_family(&mut tx, &family, now).await.map_err(fail)?;
                Rotation::Reused { subject, family }
            }
            "revoked" => return Ok(Rotation::Invalid),
            other => return Err(StoreError::Corrupt(format!("refresh token in unknown state {other:?}"))),
        };
        self.commit(tx).await?;
        Ok(outcome)
    }

    async fn families(&self, subject: Option<&str>, now: Time) -> Result<Vec<Family>, StoreError> {
        self.up()?;
        let rows = sqlx::query(
            "SELECT family, subject, min(issued) AS created, max(changed) AS changed, max(expires) AS expires,
                    bool_or(state = 'active') AS active, bool_or(state = 'revoked') AS revoked
             FROM refresh_tokens WHERE $1::text IS NULL OR subject = $1
             GROUP BY family, subject ORDER BY min(issued) DESC, family",
        )
        .bind(subject)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|row| {
                let expires: Time = row.try_get("expires")?;
                Ok(Family {
                    family: row.try_get("family")?,
                    subject: row.try_get("subject")?,
                    created: row.try_get("created")?,
                    changed: row.try_get("changed")?,
                    expires,
                    state: Family::state_of(row.try_get("active")?, row.try_get("revoked")?, expires, now),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.fail(e))
    }

    async fn revoke_refresh_family(&self, digest: &Digest, now: Time) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin().await?;
        let token: Option<(String, String)> =
            sqlx::query_as("SELECT family, subject FROM refresh_tokens WHERE digest = $1")
                .bind(&digest[..])
                .fetch_optional(&mut *tx)
                .await
                .map_err(|e| self.fail(e))?;
        let Some((family, subject)) = token else {
            return Ok(None);
        };
        revoke_family(&mut tx, &family, now).await.map_err(|e| self.fail(e))?;
        self.commit(tx).await?;
        Ok(Some(subject))
    }

    async fn revoke_subject(&self, subject: &str, now: Time, keep_until: Time) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        let fail = |e| self.fail(e);
        sqlx::query(
            "UPDATE refresh_tokens SET state = 'revoked', changed = $2 WHERE subject = $1 AND state <> 'revoked'",
        )
        .bind(subject)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        sqlx::query(
            "INSERT INTO revocations (subject, revoked_at, keep_until) VALUES ($1, $2, $3)
             ON CONFLICT (subject) DO UPDATE SET
                 revoked_at = greatest(revocations.revoked_at, excluded.revoked_at),
                 keep_until = greatest(revocations.keep_until, excluded.keep_until)",
        )
        .bind(subject)
        .bind(now)
        .bind(keep_until)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        self.token_change(&mut tx).await?;
        self.commit(tx).await
    }

    async fn revocations(&self, now: Time) -> Result<Vec<(String, Time)>, StoreError> {
        self.up()?;
        sqlx::query_as("SELECT subject, revoked_at FROM revocations WHERE keep_until > $1 ORDER BY subject")
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        let mut tx = self.begin().await?;
        let keys = self.read_keys(&mut tx).await?;
        self.commit(tx).await?;
        Ok(keys)
    }

    async fn add_first_signing_key(&self, key: &SigningKey) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        // Nodes starting together on an empty store: the lock makes the check and the insert one step, so
        // exactly one first key is made (the others find it).
        sqlx::query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        let any: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys)")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        if any {
            return Ok(false);
        }
        self.insert_key(&mut tx, key).await?;
        self.token_change(&mut tx).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    async fn add_signing_key(&self, key: &SigningKey, retire_others_at: Option<Time>) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        self.insert_key(&mut tx, key).await?;
        if let Some(at) = retire_others_at {
            sqlx::query("UPDATE signing_keys SET retire_at = $2 WHERE kid <> $1 AND retire_at IS NULL")
                .bind(&key.kid)
                .bind(at)
                .execute(&mut *tx)
                .await
                .map_err(|e| self.fail(e))?;
        }
        self.token_change(&mut tx).await?;
        self.commit(tx).await
    }

    async fn regenerate_signing_keys(&self, key: &SigningKey, now: Time) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM signing_keys").execute(&mut *tx).await.map_err(|e| self.fail(e))?;
        self.insert_key(&mut tx, key).await?;
        sqlx::query("UPDATE refresh_tokens SET state = 'revoked', changed = $1 WHERE state <> 'revoked'")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        self.token_change(&mut tx).await?;
        self.commit(tx).await
    }

    async fn purge(&self, now: Time) -> Result<usize, StoreError> {
        let mut tx = self.begin().await?;
        let fail = |e| self.fail(e);
        let codes = sqlx::query(
            "DELETE FROM activation_codes
             WHERE expires <= $1 OR ((used IS NOT NULL OR revoked) AND coalesce(used, created) <= $2)",
        )
        .bind(now)
        .bind(now.saturating_sub(SPENT_CODE_KEEP))
        .execute(&mut *tx)
        .await
        .map_err(fail)?
        .rows_affected();
        let tokens = sqlx::query("DELETE FROM refresh_tokens WHERE expires <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(fail)?
            .rows_affected();
        let revocations = sqlx::query("DELETE FROM revocations WHERE keep_until <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(fail)?
            .rows_affected();
        let staying: i64 =
            sqlx::query_scalar("SELECT count(*) FROM signing_keys WHERE retire_at IS NULL OR retire_at > $1")
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(fail)?;
        let keys = if staying > 0 {
            sqlx::query("DELETE FROM signing_keys WHERE retire_at <= $1")
        } else {
            // Every key is past its retirement: keep the newest, so that tokens can still be signed.
            sqlx::query(
                "DELETE FROM signing_keys WHERE retire_at <= $1
                 AND kid <> (SELECT kid FROM signing_keys ORDER BY created DESC, kid DESC LIMIT 1)",
            )
        }
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(fail)?
        .rows_affected();
        // The change log: older than a day, a node that was away that long does a full load.
        let trimmed: Option<i64> = sqlx::query_scalar(
            "WITH gone AS (DELETE FROM change_log
                           WHERE at_ms < (extract(epoch FROM clock_timestamp()) * 1000)::bigint - $1
                           RETURNING seq)
             SELECT max(seq) FROM gone",
        )
        .bind(CHANGE_LOG_KEEP_MS)
        .fetch_one(&mut *tx)
        .await
        .map_err(fail)?;
        if let Some(trimmed) = trimmed {
            sqlx::query("UPDATE meta SET trimmed = greatest(trimmed, $1) WHERE id = 1")
                .bind(trimmed)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        if revocations + keys > 0 {
            self.token_change(&mut tx).await?;
        }
        self.commit(tx).await?;
        Ok((codes + tokens + revocations + keys) as usize)
    }

    async fn change_counter(&self) -> Result<u64, StoreError> {
        self.up()?;
        let seq: i64 = sqlx::query_scalar("SELECT token_seq FROM meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| self.schema_error(e))?;
        Ok(seq_of(seq))
    }

    async fn report_node(&self, node: &NodeReport) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO nodes (id, name, started, seen, applied) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE SET name = $2, seen = $4, applied = $5",
        )
        .bind(&node.id)
        .bind(&node.name)
        .bind(node.started)
        .bind(node.seen)
        .bind(i64::try_from(node.applied).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await
        .map_err(|e| self.fail(e))?;
        sqlx::query("DELETE FROM nodes WHERE seen < $1")
            .bind(node.seen.saturating_sub(NODE_KEEP))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        self.commit(tx).await
    }

    async fn nodes(&self) -> Result<Vec<NodeReport>, StoreError> {
        self.up()?;
        let rows = sqlx::query("SELECT id, name, started, seen, applied FROM nodes ORDER BY name, id")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|row| {
                Ok(NodeReport {
                    id: row.try_get("id")?,
                    name: row.try_get("name")?,
                    started: row.try_get("started")?,
                    seen: row.try_get("seen")?,
                    applied: seq_of(row.try_get("applied")?),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.fail(e))
    }
}

async fn insert_token(
    tx: &mut Transaction<'static, Postgres>,
    token: &NewRefreshToken,
    family: &str,
    subject: &str,
    parent: Option<&Digest>,
    now: Time,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (digest, family, subject, issued, expires, state, parent, changed)
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $7)",
    )
    .bind(&token.digest[..])
    .bind(family)
    .bind(subject)
    .bind(token.issued)
    .bind(token.expires)
    .bind(parent.map(|d| &d[..]))
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether a token rotated from `parent` was itself presented since (see the SQLite store).
async fn child_was_used(tx: &mut Transaction<'static, Postgres>, parent: &Digest) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE parent = $1 AND state = 'rotated')")
        .bind(&parent[..])
        .fetch_one(&mut **tx)
        .await
}

async fn revoke_family(tx: &mut Transaction<'static, Postgres>, family: &str, now: Time) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE refresh_tokens SET state = 'revoked', changed = $2 WHERE family = $1 AND state <> 'revoked'",
    )
    .bind(family)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// The path under which errors name a certificate of the shared store.
pub fn cert_location(origin: &Path, purpose: Purpose, sha256: &str) -> PathBuf {
    origin.join(purpose_name(purpose)).join(sha256)
}
