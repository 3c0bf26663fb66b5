//! The embedded [`AuthStore`] ([`SqliteAuthStore`]): one SQLite database file in WAL mode, shared by the
//! server and the `sipcfg` CLI, which are separate processes.
//!
//! Every write is one `BEGIN IMMEDIATE` transaction: it takes SQLite's write lock before reading anything,
//! so writers in any process are serialised and a read-modify-write (redeeming a code, rotating a token)
//! never interleaves with another. `synchronous=FULL` makes a commit durable before the method returns. A
//! writer that finds the lock taken waits up to [`BUSY_TIMEOUT`] for it.
//!
//! Within a process, the one connection sits behind a mutex; reads are single statements, so each sees one
//! consistent snapshot. Every transaction that changes what nodes hold in memory (revocations, signing keys)
//! also increments the `changes` counter in the `meta` table, which is how another process notices it (see
//! [`AuthStore::change_counter`]); codes and refresh tokens are committed without it.
//!
//! The invariant of refresh-token rotation, at most one active token per family, is also enforced by the
//! database itself (a partial unique index), so a bug elsewhere cannot break it silently.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior, params};

mod accounts;

use crate::auth::store::{
    ActivationCode, AuthStore, Digest, Family, NewRefreshToken, NodeReport, Revocation, Rotation, SigningKey,
    StoreError, StoredActivationCode, StoredRefreshToken, Time, TokenState,
};

/// The version of the schema: [`SCHEMA`] is version 1, and [`MIGRATIONS`] take it to this one. A database
/// with a newer version was written by a newer sipcfg and is refused.
const SCHEMA_VERSION: i64 = 4;

/// Migrations, in order: entry `i` takes a database from version `i + 1` to `i + 2`. Each runs in the
/// transaction that also records the new version, so a crash leaves the old version or the new one.
const MIGRATIONS: &[&str] = &[
    // 2: the running nodes and what each has applied (`sipcfg token revoke` waits for them).
    "CREATE TABLE nodes (
        id      TEXT PRIMARY KEY NOT NULL,
        name    TEXT NOT NULL,
        started INTEGER NOT NULL,
        seen    INTEGER NOT NULL,
        applied INTEGER NOT NULL
    ) STRICT;",
    // 3: administrators of the management API and the console, their API tokens and sessions, and the audit
    // trail of administrative changes (accounts.rs).
    "CREATE TABLE accounts (
        name          TEXT PRIMARY KEY NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'read-only')),
        password_hash TEXT NOT NULL,
        created       INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE api_tokens (
        digest  BLOB PRIMARY KEY NOT NULL CHECK (length(digest) = 32),
        account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
        created INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX api_tokens_by_account ON api_tokens (account);
    CREATE TABLE sessions (
        digest  BLOB PRIMARY KEY NOT NULL CHECK (length(digest) = 32),
        account TEXT NOT NULL REFERENCES accounts (name) ON DELETE CASCADE,
        csrf    TEXT NOT NULL,
        created INTEGER NOT NULL,
        expires INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX sessions_by_account ON sessions (account);
    CREATE INDEX sessions_by_expires ON sessions (expires);
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      INTEGER NOT NULL,
        actor   TEXT NOT NULL,
        address TEXT NOT NULL,
        action  TEXT NOT NULL,
        target  TEXT NOT NULL,
        detail  TEXT NOT NULL
    ) STRICT;",
    // 4: each phone's last download, written by the nodes every few seconds (the console's device status).
    "CREATE TABLE downloads (
        subject    TEXT PRIMARY KEY NOT NULL,
        at         INTEGER NOT NULL,
        address    TEXT NOT NULL,
        file       TEXT NOT NULL,
        status     INTEGER NOT NULL,
        user_agent TEXT NOT NULL
    ) STRICT;",
];

/// How long a writer waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

/// How long [`enable_wal`] waits between attempts.
const WAL_RETRY: Duration = Duration::from_millis(10);

/// A node that has not reported for this long is forgotten.
const NODE_KEEP: Time = 24 * 60 * 60;

/// How long a redeemed or revoked activation code stays listed before [`AuthStore::purge`] deletes it.
const SPENT_CODE_KEEP: Time = 24 * 60 * 60;

/// Schema version 1. Times are unix seconds; digests are SHA-256 (32 bytes).
const SCHEMA: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) STRICT;

CREATE TABLE activation_codes (
    id      TEXT PRIMARY KEY NOT NULL,
    digest  BLOB NOT NULL UNIQUE CHECK (length(digest) = 32),
    device  TEXT NOT NULL,
    created INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    used    INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
) STRICT;
CREATE INDEX activation_codes_by_created ON activation_codes (created, id);
CREATE INDEX activation_codes_by_expires ON activation_codes (expires);

CREATE TABLE refresh_tokens (
    digest  BLOB PRIMARY KEY NOT NULL CHECK (length(digest) = 32),
    family  TEXT NOT NULL,
    subject TEXT NOT NULL,
    issued  INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    state   TEXT NOT NULL CHECK (state IN ('active', 'rotated', 'revoked')),
    parent  BLOB REFERENCES refresh_tokens (digest) ON DELETE SET NULL,
    changed INTEGER NOT NULL
) STRICT;
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family);
CREATE UNIQUE INDEX refresh_tokens_one_active ON refresh_tokens (family) WHERE state = 'active';
CREATE INDEX refresh_tokens_by_subject ON refresh_tokens (subject);
CREATE INDEX refresh_tokens_by_expires ON refresh_tokens (expires);
CREATE INDEX refresh_tokens_by_parent ON refresh_tokens (parent);

CREATE TABLE revocations (
    subject    TEXT PRIMARY KEY NOT NULL,
    revoked_at INTEGER NOT NULL,
    keep_until INTEGER NOT NULL
) STRICT;
CREATE INDEX revocations_by_keep_until ON revocations (keep_until);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY NOT NULL,
    algorithm   TEXT NOT NULL,
    private_pem TEXT NOT NULL,
    created     INTEGER NOT NULL,
    retire_at   INTEGER
) STRICT;
";

/// Why an operation failed, before the database path is attached.
enum Fail {
    Sql(rusqlite::Error),
    /// Reported as [`StoreError::Database`].
    Refused(String),
    /// The stored data breaks the schema's rules; reported as [`StoreError::Corrupt`].
    Corrupt(String),
}

impl From<rusqlite::Error> for Fail {
    fn from(e: rusqlite::Error) -> Fail {
        Fail::Sql(e)
    }
}

/// The [`AuthStore`] in a SQLite database file.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (and its folder) if missing. A new file is readable by its
    /// owner only (it holds private keys). Refuses a database written by a newer sipcfg, or one that is not a
    /// sipcfg state database.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let io_error = |what: &str, e: io::Error| StoreError::Database {
            path: path.display().to_string(),
            message: format!("{what}: {e}"),
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| io_error(&format!("creating folder {}", dir.display()), e))?;
        }
        create_private(path).map_err(|e| io_error("creating the database file", e))?;
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Database { path: path.display().to_string(), message: e.to_string() })?;
        let store = SqliteStore { path: path.to_path_buf(), conn: Mutex::new(conn) };
        {
            let mut conn = store.lock()?;
            configure(&conn).and_then(|()| init_schema(&mut conn)).map_err(|e| store.error(e))?;
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, fail: Fail) -> StoreError {
        let path = self.path.display().to_string();
        match fail {
            Fail::Sql(e) => StoreError::Database { path, message: e.to_string() },
            Fail::Refused(message) => StoreError::Database { path, message },
            Fail::Corrupt(message) => StoreError::Corrupt(format!("{path}: {message}")),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| {
            self.error(Fail::Refused(
                "connection unusable: a thread panicked while using it (restart sipcfg)".to_string(),
            ))
        })
    }

    /// Runs a read (a single statement, hence one consistent snapshot).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Fail>) -> Result<T, StoreError> {
        let conn = self.lock()?;
        f(&conn).map_err(|e| self.error(e))
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction. `f` returns its result and what it wrote: nothing (the
    /// transaction is rolled back), state only nodes never hold in memory (codes, refresh tokens: committed),
    /// or a change of what nodes hold (revocations, keys: committed, and the change counter incremented, so
    /// every node rebuilds its view). On error nothing is written.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<(T, Wrote), Fail>) -> Result<T, StoreError> {
        let mut conn = self.lock()?;
        in_transaction(&mut conn, f).map_err(|e| self.error(e))
    }
}

/// What a write transaction did (see [`SqliteStore::write`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrote {
    Nothing,
    Stored,
    Changed,
}

fn in_transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<(T, Wrote), Fail>,
) -> Result<T, Fail> {
    if !conn.is_autocommit() {
        // Only if an earlier rollback itself failed: do not let the next transaction nest in a stale one.
        conn.execute_batch("ROLLBACK")?;
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (value, wrote) = f(&tx)?;
    match wrote {
        Wrote::Nothing => tx.rollback()?,
        Wrote::Stored => tx.commit()?,
        Wrote::Changed => {
            let bumped = tx.execute("UPDATE meta SET value = value + 1 WHERE key = 'changes'", [])?;
            if bumped != 1 {
                return Err(Fail::Corrupt("the change counter is missing from the meta table".to_string()));
            }
            tx.commit()?;
        }
    }
    Ok(value)
}

/// Creates `path` empty with mode 0600 if it does not exist, so that SQLite (which gives its `-wal` and
/// `-shm` files the database file's mode) never makes the keys readable by others.
#[cfg(unix)]
fn create_private(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(file) => {
            // The umask can only remove bits; make sure the owner can read and write.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            give_to_folder_owner(path)?;
            file.sync_all()
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A database that root creates (a command run with sudo before the service's first start) in a folder that
/// belongs to another user (the package's `/var/lib/sipcfg`, owned by `sipcfg`) is given to that user, or
/// the service could not open it.
#[cfg(unix)]
fn give_to_folder_owner(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else { return Ok(()) };
    let (file, folder) = (fs::metadata(path)?, fs::metadata(dir)?);
    if file.uid() == 0 && folder.uid() != 0 {
        std::os::unix::fs::chown(path, Some(folder.uid()), Some(folder.gid()))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn create_private(_path: &Path) -> io::Result<()> {
    Ok(())
}

/// Per-connection settings.
fn configure(conn: &Connection) -> Result<(), Fail> {
    let step = |what: &'static str| move |e: rusqlite::Error| Fail::Refused(format!("{what}: {e}"));
    conn.busy_timeout(BUSY_TIMEOUT).map_err(step("setting the busy timeout"))?;
    enable_wal(conn)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(step("setting synchronous=FULL"))?;
    conn.pragma_update(None, "foreign_keys", true).map_err(step("enabling foreign keys"))?;
    // Deleted private keys are overwritten, not left in free pages.
    conn.pragma_update(None, "secure_delete", true).map_err(step("enabling secure_delete"))?;
    Ok(())
}

/// Switches the database to WAL mode (persistent: this only does something the first time). The switch
/// needs an exclusive lock, and SQLite does not wait for it with the busy handler, so when several
/// processes open a new database at once it is retried here for up to [`BUSY_TIMEOUT`].
fn enable_wal(conn: &Connection) -> Result<(), Fail> {
    let deadline = Instant::now() + BUSY_TIMEOUT;
    loop {
        let outcome = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0));
        let retry = match &outcome {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(_) => true,
            Err(e) => e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy),
        };
        if !retry || Instant::now() >= deadline {
            return Err(match outcome {
                Ok(mode) => Fail::Refused(format!("cannot use WAL journal mode (the database stays in {mode} mode)")),
                Err(e) => Fail::Refused(format!("enabling WAL journal mode: {e}")),
            });
        }
        thread::sleep(WAL_RETRY);
    }
}

/// Creates the schema in an empty database, or checks the version of an existing one and upgrades it.
fn init_schema(conn: &mut Connection) -> Result<(), Fail> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has_meta: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta')",
        [],
        |row| row.get(0),
    )?;
    let mut version = if has_meta {
        let version: Option<i64> =
            tx.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0)).optional()?;
        match version {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(Fail::Refused(format!(
                    "schema version {v} was written by a newer sipcfg; this one understands version \
                     {SCHEMA_VERSION} only: upgrade sipcfg"
                )));
            }
            Some(v) if v >= 1 => v,
            Some(v) => return Err(Fail::Refused(format!("unknown schema version {v} (expected {SCHEMA_VERSION})"))),
            None => {
                return Err(Fail::Refused(
                    "not a sipcfg state database: no schema_version in its meta table".to_string(),
                ));
            }
        }
    } else {
        let tables: i64 = tx.query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
            [],
            |row| row.get(0),
        )?;
        if tables > 0 {
            return Err(Fail::Refused("not a sipcfg state database: it has tables but no meta table".to_string()));
        }
        tx.execute_batch(SCHEMA)?;
        tx.execute("INSERT INTO meta (key, value) VALUES ('schema_version', 1), ('changes', 0)", [])?;
        1
    };
    while version < SCHEMA_VERSION {
        let migration = MIGRATIONS
            .get(usize::try_from(version - 1).unwrap_or(usize::MAX))
            .ok_or_else(|| Fail::Refused(format!("no migration from schema version {version}")))?;
        tx.execute_batch(migration)?;
        version += 1;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", [version])?;
    }
    tx.commit()?;
    Ok(())
}

fn insert_token(
    tx: &Transaction<'_>,
    token: &NewRefreshToken,
    family: &str,
    subject: &str,
    parent: Option<&Digest>,
    now: Time,
) -> Result<(), Fail> {
    tx.execute(
        "INSERT INTO refresh_tokens (digest, family, subject, issued, expires, state, parent, changed)
         VALUES (?1, ?2, ?3, ?4, ?5, 'active', ?6, ?7)",
        params![&token.digest[..], family, subject, token.issued, token.expires, parent.map(|d| &d[..]), now],
    )?;
    Ok(())
}

/// Whether a token rotated from `parent` was itself presented (rotated) since: then a retry with `parent` is
/// not a lost answer but a replay.
fn child_was_used(tx: &Transaction<'_>, parent: &Digest) -> Result<bool, Fail> {
    Ok(tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM refresh_tokens WHERE parent = ?1 AND state = 'rotated')",
        params![&parent[..]],
        |row| row.get(0),
    )?)
}

/// Revokes every token of `family` not yet revoked; returns how many.
fn revoke_family(tx: &Transaction<'_>, family: &str, now: Time) -> Result<usize, Fail> {
    Ok(tx.execute(
        "UPDATE refresh_tokens SET state = 'revoked', changed = ?2 WHERE family = ?1 AND state <> 'revoked'",
        params![family, now],
    )?)
}

/// The operations of [`AuthStore`], synchronous: each is one transaction (see the module's doc).
impl SqliteStore {
    pub fn add_activation_code(
        &self,
        id: &str,
        digest: &Digest,
        device: &str,
        created: Time,
        expires: Time,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO activation_codes (id, digest, device, created, expires, used, revoked)
                 VALUES (?1, ?2, ?3, ?4, ?5, NULL, 0)",
                params![id, &digest[..], device, created, expires],
            )?;
            Ok(((), Wrote::Stored))
        })
    }

    pub fn list_activation_codes(&self) -> Result<Vec<ActivationCode>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, device, created, expires, used, revoked FROM activation_codes ORDER BY created, id",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok(ActivationCode {
                    id: row.get(0)?,
                    device: row.get(1)?,
                    created: row.get(2)?,
                    expires: row.get(3)?,
                    used: row.get(4)?,
                    revoked: row.get(5)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn revoke_activation_code(&self, id: &str, now: Time) -> Result<bool, StoreError> {
        self.write(|tx| {
            let revoked = tx.execute(
                "UPDATE activation_codes SET revoked = 1, used = ?2
                 WHERE id = ?1 AND used IS NULL AND revoked = 0 AND expires > ?2",
                params![id, now],
            )? > 0;
            Ok((revoked, if revoked { Wrote::Stored } else { Wrote::Nothing }))
        })
    }

    pub fn retarget_activation_code(
        &self,
        digest: &Digest,
        from: &str,
        to: &str,
        now: Time,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE activation_codes SET device = ?3
                 WHERE digest = ?1 AND device = ?2 AND used IS NULL AND revoked = 0 AND expires > ?4",
                params![&digest[..], from, to, now],
            )?;
            Ok((n == 1, if n == 1 { Wrote::Stored } else { Wrote::Nothing }))
        })
    }

    pub fn activation_code_device(&self, digest: &Digest, now: Time) -> Result<Option<String>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .query_row(
                    "SELECT device FROM activation_codes
                     WHERE digest = ?1 AND used IS NULL AND revoked = 0 AND expires > ?2",
                    params![&digest[..], now],
                    |row| row.get(0),
                )
                .optional()?)
        })
    }

    pub fn redeem_activation_code(
        &self,
        digest: &Digest,
        now: Time,
        first: &NewRefreshToken,
    ) -> Result<Option<String>, StoreError> {
        self.write(|tx| {
            let code: Option<(String, String)> = tx
                .query_row(
                    "SELECT id, device FROM activation_codes
                     WHERE digest = ?1 AND used IS NULL AND revoked = 0 AND expires > ?2",
                    params![&digest[..], now],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let Some((id, device)) = code else {
                return Ok((None, Wrote::Nothing));
            };
            tx.execute("UPDATE activation_codes SET used = ?2 WHERE id = ?1", params![id, now])?;
            insert_token(tx, first, &first.family, &format!("device:{device}"), None, now)?;
            Ok((Some(device), Wrote::Stored))
        })
    }

    pub fn rotate_refresh_token(
        &self,
        presented: &Digest,
        now: Time,
        next: &NewRefreshToken,
        grace: Time,
    ) -> Result<Rotation, StoreError> {
        self.write(|tx| {
            let token: Option<(String, String, String, Time, Time)> = tx
                .query_row(
                    "SELECT family, subject, state, expires, changed FROM refresh_tokens WHERE digest = ?1",
                    params![&presented[..]],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)),
                )
                .optional()?;
            let Some((family, subject, state, expires, changed)) = token else {
                return Ok((Rotation::Invalid, Wrote::Nothing));
            };
            // An expired token is invalid whatever its state: once purged it would be unknown anyway.
            if expires <= now {
                return Ok((Rotation::Invalid, Wrote::Nothing));
            }
            match state.as_str() {
                "active" => {
                    tx.execute(
                        "UPDATE refresh_tokens SET state = 'rotated', changed = ?2 WHERE digest = ?1",
                        params![&presented[..], now],
                    )?;
                    insert_token(tx, next, &family, &subject, Some(presented), now)?;
                    Ok((Rotation::Rotated { subject, family }, Wrote::Stored))
                }
                "rotated" if grace > 0 && now - changed <= grace && !child_was_used(tx, presented)? => {
                    // The retry of a client that lost the answer to its refresh: the token issued then, never
                    // presented, is superseded (revoked, not reused) and a new one takes its place.
                    tx.execute(
                        "UPDATE refresh_tokens SET state = 'revoked', changed = ?2 WHERE family = ?1 AND state = 'active'",
                        params![family, now],
                    )?;
                    insert_token(tx, next, &family, &subject, Some(presented), now)?;
                    Ok((Rotation::Retried { subject, family }, Wrote::Stored))
                }
                "rotated" => {
                    revoke_family(tx, &family, now)?;
                    Ok((Rotation::Reused { subject, family }, Wrote::Stored))
                }
                "revoked" => Ok((Rotation::Invalid, Wrote::Nothing)),
                other => Err(Fail::Corrupt(format!("refresh token in unknown state {other:?}"))),
            }
        })
    }

    pub fn families(&self, subject: Option<&str>, now: Time) -> Result<Vec<Family>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT family, subject, min(issued), max(changed), max(expires),
                        max(state = 'active'), max(state = 'revoked')
                 FROM refresh_tokens WHERE ?1 IS NULL OR subject = ?1
                 GROUP BY family, subject ORDER BY min(issued) DESC, family",
            )?;
            let rows = stmt.query_map([subject], |row| {
                let expires: Time = row.get(4)?;
                Ok(Family {
                    family: row.get(0)?,
                    subject: row.get(1)?,
                    created: row.get(2)?,
                    changed: row.get(3)?,
                    expires,
                    state: Family::state_of(row.get::<_, i64>(5)? == 1, row.get::<_, i64>(6)? == 1, expires, now),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn revoke_refresh_family(&self, digest: &Digest, now: Time) -> Result<Option<String>, StoreError> {
        self.write(|tx| {
            let token: Option<(String, String)> = tx
                .query_row(
                    "SELECT family, subject FROM refresh_tokens WHERE digest = ?1",
                    params![&digest[..]],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let Some((family, subject)) = token else {
                return Ok((None, Wrote::Nothing));
            };
            let revoked = revoke_family(tx, &family, now)?;
            Ok((Some(subject), if revoked > 0 { Wrote::Stored } else { Wrote::Nothing }))
        })
    }

    pub fn revoke_subject(&self, subject: &str, now: Time, keep_until: Time) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE refresh_tokens SET state = 'revoked', changed = ?2 WHERE subject = ?1 AND state <> 'revoked'",
                params![subject, now],
            )?;
            // Neither time ever goes back: a clock stepping backwards must not shorten a revocation.
            tx.execute(
                "INSERT INTO revocations (subject, revoked_at, keep_until) VALUES (?1, ?2, ?3)
                 ON CONFLICT (subject) DO UPDATE SET
                     revoked_at = max(revoked_at, excluded.revoked_at),
                     keep_until = max(keep_until, excluded.keep_until)",
                params![subject, now, keep_until],
            )?;
            Ok(((), Wrote::Changed))
        })
    }

    pub fn revocations(&self, now: Time) -> Result<Vec<(String, Time)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT subject, revoked_at FROM revocations WHERE keep_until > ?1 ORDER BY subject")?;
            let rows = stmt.query_map([now], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kid, algorithm, private_pem, created, retire_at FROM signing_keys ORDER BY created, kid",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok(SigningKey {
                    kid: row.get(0)?,
                    algorithm: row.get(1)?,
                    private_pem: row.get(2)?,
                    created: row.get(3)?,
                    retire_at: row.get(4)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn add_first_signing_key(&self, key: &SigningKey) -> Result<bool, StoreError> {
        // BEGIN IMMEDIATE: one writer at a time, so the check and the insert are one step.
        self.write(|tx| {
            let any: bool = tx.query_row("SELECT EXISTS (SELECT 1 FROM signing_keys)", [], |row| row.get(0))?;
            if any {
                return Ok((false, Wrote::Nothing));
            }
            insert_key(tx, key)?;
            Ok((true, Wrote::Changed))
        })
    }

    pub fn add_signing_key(&self, key: &SigningKey, retire_others_at: Option<Time>) -> Result<(), StoreError> {
        self.write(|tx| {
            insert_key(tx, key)?;
            if let Some(at) = retire_others_at {
                tx.execute(
                    "UPDATE signing_keys SET retire_at = ?2 WHERE kid <> ?1 AND retire_at IS NULL",
                    params![key.kid, at],
                )?;
            }
            Ok(((), Wrote::Changed))
        })
    }

    pub fn regenerate_signing_keys(&self, key: &SigningKey, now: Time) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute("DELETE FROM signing_keys", [])?;
            insert_key(tx, key)?;
            tx.execute("UPDATE refresh_tokens SET state = 'revoked', changed = ?1 WHERE state <> 'revoked'", [now])?;
            Ok(((), Wrote::Changed))
        })
    }

    pub fn purge(&self, now: Time) -> Result<usize, StoreError> {
        self.write(|tx| {
            let codes = tx.execute(
                "DELETE FROM activation_codes
                 WHERE expires <= ?1 OR ((used IS NOT NULL OR revoked <> 0) AND coalesce(used, created) <= ?2)",
                params![now, now.saturating_sub(SPENT_CODE_KEEP)],
            )?;
            let tokens = tx.execute("DELETE FROM refresh_tokens WHERE expires <= ?1", [now])?;
            let revocations = tx.execute("DELETE FROM revocations WHERE keep_until <= ?1", [now])?;
            let staying: i64 = tx.query_row(
                "SELECT count(*) FROM signing_keys WHERE retire_at IS NULL OR retire_at > ?1",
                [now],
                |row| row.get(0),
            )?;
            let keys = if staying > 0 {
                tx.execute("DELETE FROM signing_keys WHERE retire_at <= ?1", [now])?
            } else {
                // Every key is past its retirement: keep the newest, so that tokens can still be signed.
                tx.execute(
                    "DELETE FROM signing_keys WHERE retire_at <= ?1
                     AND kid <> (SELECT kid FROM signing_keys ORDER BY created DESC, kid DESC LIMIT 1)",
                    [now],
                )?
            };
            let total = codes + tokens + revocations + keys;
            // Revocations and keys are what nodes hold: only their purge is a change for them.
            let wrote = if revocations + keys > 0 {
                Wrote::Changed
            } else if total > 0 {
                Wrote::Stored
            } else {
                Wrote::Nothing
            };
            Ok((total, wrote))
        })
    }

    pub fn report_node(&self, node: &NodeReport) -> Result<(), StoreError> {
        // Not a change of the token service's state: the change counter stays, so no node resyncs for it.
        let mut conn = self.lock()?;
        let report = |conn: &mut Connection| -> Result<(), Fail> {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO nodes (id, name, started, seen, applied) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET name = ?2, seen = ?4, applied = ?5",
                params![node.id, node.name, node.started, node.seen, i64::try_from(node.applied).unwrap_or(i64::MAX)],
            )?;
            tx.execute("DELETE FROM nodes WHERE seen < ?1", [node.seen.saturating_sub(NODE_KEEP)])?;
            tx.commit()?;
            Ok(())
        };
        report(&mut conn).map_err(|e| self.error(e))
    }

    pub fn nodes(&self) -> Result<Vec<NodeReport>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, name, started, seen, applied FROM nodes ORDER BY name, id")?;
            let rows = stmt.query_map([], |row| {
                Ok(NodeReport {
                    id: row.get(0)?,
                    name: row.get(1)?,
                    started: row.get(2)?,
                    seen: row.get(3)?,
                    applied: u64::try_from(row.get::<_, i64>(4)?).unwrap_or(0),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    pub fn change_counter(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            let value: Option<i64> =
                conn.query_row("SELECT value FROM meta WHERE key = 'changes'", [], |row| row.get(0)).optional()?;
            let value =
                value.ok_or_else(|| Fail::Corrupt("the change counter is missing from the meta table".to_string()))?;
            u64::try_from(value).map_err(|_| Fail::Corrupt(format!("negative change counter {value}")))
        })
    }
}

/// Moving the whole state in and out (`sipcfg store init` and `sipcfg store export`).
impl SqliteStore {
    /// Everything the database holds but the nodes, in one snapshot.
    pub fn dump(&self) -> Result<TokenState, StoreError> {
        let mut conn = self.lock()?;
        let dump = |conn: &mut Connection| -> Result<TokenState, Fail> {
            let tx = conn.transaction()?;
            let digest = |bytes: Vec<u8>| -> Result<Digest, Fail> {
                bytes.try_into().map_err(|_| Fail::Corrupt("a digest is not 32 bytes".into()))
            };
            let mut stmt = tx.prepare(
                "SELECT id, device, created, expires, used, revoked, digest FROM activation_codes ORDER BY created, id",
            )?;
            let codes = stmt
                .query_map([], |row| {
                    Ok((
                        ActivationCode {
                            id: row.get(0)?,
                            device: row.get(1)?,
                            created: row.get(2)?,
                            expires: row.get(3)?,
                            used: row.get(4)?,
                            revoked: row.get(5)?,
                        },
                        row.get::<_, Vec<u8>>(6)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let activation_codes = codes
                .into_iter()
                .map(|(code, d)| Ok(StoredActivationCode { code, digest: digest(d)? }))
                .collect::<Result<Vec<_>, Fail>>()?;
            let mut stmt = tx.prepare(
                "SELECT digest, family, subject, issued, expires, state, parent, changed FROM refresh_tokens
                 ORDER BY issued, digest",
            )?;
            let rows = stmt
                .query_map([], |row| {
                    Ok((
                        row.get::<_, Vec<u8>>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Time>(3)?,
                        row.get::<_, Time>(4)?,
                        row.get::<_, String>(5)?,
                        row.get::<_, Option<Vec<u8>>>(6)?,
                        row.get::<_, Time>(7)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            let mut tokens = Vec::with_capacity(rows.len());
            for (d, family, subject, issued, expires, state, parent, changed) in rows {
                let parent = parent.map(digest).transpose()?;
                tokens.push(StoredRefreshToken {
                    digest: digest(d)?,
                    family,
                    subject,
                    issued,
                    expires,
                    state,
                    parent,
                    changed,
                });
            }
            let mut stmt = tx.prepare("SELECT subject, revoked_at, keep_until FROM revocations ORDER BY subject")?;
            let revocations = stmt
                .query_map([], |row| {
                    Ok(Revocation { subject: row.get(0)?, revoked_at: row.get(1)?, keep_until: row.get(2)? })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            drop(stmt);
            Ok(TokenState {
                activation_codes,
                refresh_tokens: parents_first(tokens),
                revocations,
                signing_keys: Vec::new(),
            })
        };
        let mut state = dump(&mut conn).map_err(|e| self.error(e))?;
        drop(conn);
        state.signing_keys = self.signing_keys()?;
        Ok(state)
    }

    /// Writes `state` into this database, which must hold no token state yet (a fresh file).
    pub fn restore(&self, state: &TokenState) -> Result<(), StoreError> {
        self.write(|tx| {
            let held: i64 = tx.query_row(
                "SELECT (SELECT count(*) FROM activation_codes) + (SELECT count(*) FROM refresh_tokens)
                      + (SELECT count(*) FROM revocations) + (SELECT count(*) FROM signing_keys)",
                [],
                |row| row.get(0),
            )?;
            if held > 0 {
                return Err(Fail::Refused(
                    "already holds token state: restore into a new file, or remove this one first".into(),
                ));
            }
            for c in &state.activation_codes {
                tx.execute(
                    "INSERT INTO activation_codes (id, digest, device, created, expires, used, revoked)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        c.code.id,
                        &c.digest[..],
                        c.code.device,
                        c.code.created,
                        c.code.expires,
                        c.code.used,
                        c.code.revoked
                    ],
                )?;
            }
            for t in &state.refresh_tokens {
                tx.execute(
                    "INSERT INTO refresh_tokens (digest, family, subject, issued, expires, state, parent, changed)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        &t.digest[..],
                        t.family,
                        t.subject,
                        t.issued,
                        t.expires,
                        t.state,
                        t.parent.as_ref().map(|p| &p[..]),
                        t.changed
                    ],
                )?;
            }
            for r in &state.revocations {
                tx.execute(
                    "INSERT INTO revocations (subject, revoked_at, keep_until) VALUES (?1, ?2, ?3)",
                    params![r.subject, r.revoked_at, r.keep_until],
                )?;
            }
            for k in &state.signing_keys {
                insert_key(tx, k)?;
            }
            Ok(((), Wrote::Changed))
        })
    }
}

/// `tokens` reordered so that every token comes after its parent (when the parent is there): a store with
/// a foreign key on the parent takes them in this order.
pub fn parents_first(tokens: Vec<StoredRefreshToken>) -> Vec<StoredRefreshToken> {
    use std::collections::{HashMap, HashSet};
    let present: HashSet<Digest> = tokens.iter().map(|t| t.digest).collect();
    let mut children: HashMap<Digest, Vec<StoredRefreshToken>> = HashMap::new();
    let mut roots = Vec::new();
    for t in tokens {
        match t.parent.filter(|p| present.contains(p) && *p != t.digest) {
            Some(p) => children.entry(p).or_default().push(t),
            None => roots.push(t),
        }
    }
    let mut ordered = Vec::with_capacity(present.len());
    let mut stack: Vec<StoredRefreshToken> = roots.into_iter().rev().collect();
    while let Some(t) = stack.pop() {
        if let Some(mut kids) = children.remove(&t.digest) {
            kids.reverse();
            stack.extend(kids);
        }
        ordered.push(t);
    }
    // A cycle (impossible in a sound database) would leave tokens behind: keep them rather than lose them.
    for (_, rest) in children {
        ordered.extend(rest);
    }
    ordered
}

fn insert_key(tx: &Transaction<'_>, key: &SigningKey) -> Result<(), Fail> {
    tx.execute(
        "INSERT INTO signing_keys (kid, algorithm, private_pem, created, retire_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![key.kid, key.algorithm, key.private_pem, key.created, key.retire_at],
    )?;
    Ok(())
}

/// [`SqliteStore`] as an [`AuthStore`]: every operation runs on tokio's blocking pool, so a commit waiting for
/// its fsync never holds a runtime worker.
#[derive(Debug, Clone)]
pub struct SqliteAuthStore(Arc<SqliteStore>);

impl SqliteAuthStore {
    pub fn new(store: SqliteStore) -> SqliteAuthStore {
        SqliteAuthStore(Arc::new(store))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Runs `f` with the store on the blocking pool.
async fn blocking<T, F>(store: &Arc<SqliteStore>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store)).await.map_err(|e| StoreError::Database {
        path: String::new(),
        message: format!("the state database's worker thread failed: {e}"),
    })?
}

#[async_trait::async_trait]
impl AuthStore for SqliteAuthStore {
    async fn add_activation_code(
        &self,
        id: &str,
        digest: &Digest,
        device: &str,
        created: Time,
        expires: Time,
    ) -> Result<(), StoreError> {
        let (id, digest, device) = (id.to_owned(), *digest, device.to_owned());
        blocking(&self.0, move |s| s.add_activation_code(&id, &digest, &device, created, expires)).await
    }

    async fn list_activation_codes(&self) -> Result<Vec<ActivationCode>, StoreError> {
        blocking(&self.0, |s| s.list_activation_codes()).await
    }

    async fn revoke_activation_code(&self, id: &str, now: Time) -> Result<bool, StoreError> {
        let id = id.to_owned();
        blocking(&self.0, move |s| s.revoke_activation_code(&id, now)).await
    }

    async fn activation_code_device(&self, digest: &Digest, now: Time) -> Result<Option<String>, StoreError> {
        let digest = *digest;
        blocking(&self.0, move |s| s.activation_code_device(&digest, now)).await
    }

    async fn retarget_activation_code(
        &self,
        digest: &Digest,
        from: &str,
        to: &str,
        now: Time,
    ) -> Result<bool, StoreError> {
        let (digest, from, to) = (*digest, from.to_owned(), to.to_owned());
        blocking(&self.0, move |s| s.retarget_activation_code(&digest, &from, &to, now)).await
    }

    async fn redeem_activation_code(
        &self,
        digest: &Digest,
        now: Time,
        first: &NewRefreshToken,
    ) -> Result<Option<String>, StoreError> {
        let (digest, first) = (*digest, first.clone());
        blocking(&self.0, move |s| s.redeem_activation_code(&digest, now, &first)).await
    }

    async fn rotate_refresh_token(
        &self,
        presented: &Digest,
        now: Time,
        next: &NewRefreshToken,
        grace: Time,
    ) -> Result<Rotation, StoreError> {
        let (presented, next) = (*presented, next.clone());
        blocking(&self.0, move |s| s.rotate_refresh_token(&presented, now, &next, grace)).await
    }

    async fn families(&self, subject: Option<&str>, now: Time) -> Result<Vec<Family>, StoreError> {
        let subject = subject.map(str::to_owned);
        blocking(&self.0, move |s| s.families(subject.as_deref(), now)).await
    }

    async fn revoke_refresh_family(&self, digest: &Digest, now: Time) -> Result<Option<String>, StoreError> {
        let digest = *digest;
        blocking(&self.0, move |s| s.revoke_refresh_family(&digest, now)).await
    }

    async fn revoke_subject(&self, subject: &str, now: Time, keep_until: Time) -> Result<(), StoreError> {
        let subject = subject.to_owned();
        blocking(&self.0, move |s| s.revoke_subject(&subject, now, keep_until)).await
    }

    async fn revocations(&self, now: Time) -> Result<Vec<(String, Time)>, StoreError> {
        blocking(&self.0, move |s| s.revocations(now)).await
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>, StoreError> {
        blocking(&self.0, |s| s.signing_keys()).await
    }

    async fn add_first_signing_key(&self, key: &SigningKey) -> Result<bool, StoreError> {
        let key = key.clone();
        blocking(&self.0, move |s| s.add_first_signing_key(&key)).await
    }

    async fn add_signing_key(&self, key: &SigningKey, retire_others_at: Option<Time>) -> Result<(), StoreError> {
        let key = key.clone();
        blocking(&self.0, move |s| s.add_signing_key(&key, retire_others_at)).await
    }

    async fn regenerate_signing_keys(&self, key: &SigningKey, now: Time) -> Result<(), StoreError> {
        let key = key.clone();
        blocking(&self.0, move |s| s.regenerate_signing_keys(&key, now)).await
    }

    async fn purge(&self, now: Time) -> Result<usize, StoreError> {
        blocking(&self.0, move |s| s.purge(now)).await
    }

    async fn change_counter(&self) -> Result<u64, StoreError> {
        blocking(&self.0, |s| s.change_counter()).await
    }

    async fn report_node(&self, node: &NodeReport) -> Result<(), StoreError> {
        let node = node.clone();
        blocking(&self.0, move |s| s.report_node(&node)).await
    }

    async fn nodes(&self) -> Result<Vec<NodeReport>, StoreError> {
        blocking(&self.0, |s| s.nodes()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use tempfile::TempDir;

    use super::*;

    const DEVICE: &str = "SEP001122334455";
    const SUBJECT: &str = "device:SEP001122334455";

    fn db_path(dir: &TempDir) -> PathBuf {
        dir.path().join("state").join("auth.db")
    }

    fn open(dir: &TempDir) -> SqliteStore {
        SqliteStore::open(&db_path(dir)).unwrap()
    }

    fn digest(a: u8, b: u8) -> Digest {
        let mut d = [0u8; 32];
        d[0] = a;
        d[1] = b;
        d[31] = 0xA5;
        d
    }

    fn token(digest: Digest, family: &str, issued: Time, expires: Time) -> NewRefreshToken {
        NewRefreshToken { digest, family: family.to_string(), subject: SUBJECT.to_string(), issued, expires }
    }

    fn key(kid: &str, created: Time) -> SigningKey {
        SigningKey {
            kid: kid.to_string(),
            algorithm: "ES256".to_string(),
            private_pem: format!("-----BEGIN PRIVATE KEY-----\n{kid}\n-----END PRIVATE KEY-----\n"),
            created,
            retire_at: None,
        }
    }

    /// Creates a family: a code redeemed into its first token `digest(n, 0)`.
    fn new_family(store: &SqliteStore, n: u8, family: &str, now: Time) {
        store.add_activation_code(&format!("code{n}"), &digest(200, n), DEVICE, now, now + 600).unwrap();
        let first = token(digest(n, 0), family, now, now + 10_000);
        assert_eq!(store.redeem_activation_code(&digest(200, n), now, &first).unwrap().as_deref(), Some(DEVICE));
    }

    fn state_of(store: &SqliteStore, d: &Digest) -> Option<String> {
        let conn = store.conn.lock().unwrap();
        conn.query_row("SELECT state FROM refresh_tokens WHERE digest = ?1", [&d[..]], |row| row.get(0))
            .optional()
            .unwrap()
    }

    fn parent_of(store: &SqliteStore, d: &Digest) -> Option<Vec<u8>> {
        let conn = store.conn.lock().unwrap();
        conn.query_row("SELECT parent FROM refresh_tokens WHERE digest = ?1", [&d[..]], |row| row.get(0)).unwrap()
    }

    fn family_states(store: &SqliteStore, family: &str) -> Vec<String> {
        let conn = store.conn.lock().unwrap();
        let mut stmt =
            conn.prepare("SELECT state FROM refresh_tokens WHERE family = ?1 ORDER BY issued, digest").unwrap();
        stmt.query_map([family], |row| row.get(0)).unwrap().collect::<Result<Vec<String>, _>>().unwrap()
    }

    /// Families with more than one active token: must always be empty.
    fn doubly_active(store: &SqliteStore) -> Vec<(String, i64)> {
        let conn = store.conn.lock().unwrap();
        let mut stmt = conn
            .prepare(
                "SELECT family, count(*) FROM refresh_tokens WHERE state = 'active'
                 GROUP BY family HAVING count(*) > 1",
            )
            .unwrap();
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().collect::<Result<Vec<_>, _>>().unwrap()
    }

    fn count(store: &SqliteStore, table: &str) -> i64 {
        let conn = store.conn.lock().unwrap();
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SqliteStore>();
        let dir = TempDir::new().unwrap();
        let store = SqliteAuthStore::new(open(&dir));
        let _: &dyn AuthStore = &store;
    }

    #[test]
    fn connection_settings() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let conn = store.conn.lock().unwrap();
        let journal: String = conn.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(journal, "wal");
        let synchronous: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0)).unwrap();
        assert_eq!(synchronous, 2, "FULL");
        let foreign_keys: i64 = conn.query_row("PRAGMA foreign_keys", [], |row| row.get(0)).unwrap();
        assert_eq!(foreign_keys, 1);
        let busy: i64 = conn.query_row("PRAGMA busy_timeout", [], |row| row.get(0)).unwrap();
        assert_eq!(busy, 5000);
        let version: i64 =
            conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |row| row.get(0)).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[cfg(unix)]
    #[test]
    fn new_database_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        store.add_signing_key(&key("k1", 1), None).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let path = db_path(&dir);
        assert_eq!(mode(&path), 0o600);
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        assert!(wal.exists());
        assert_eq!(mode(&wal), 0o600);
    }

    #[test]
    fn lifecycle() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        assert_eq!(store.change_counter().unwrap(), 0);
        assert!(store.list_activation_codes().unwrap().is_empty());

        store.add_signing_key(&key("k1", 10), None).unwrap();
        store.add_activation_code("a1", &digest(1, 1), DEVICE, 100, 1000).unwrap();
        let codes = store.list_activation_codes().unwrap();
        assert_eq!(
            codes,
            vec![ActivationCode {
                id: "a1".to_string(),
                device: DEVICE.to_string(),
                created: 100,
                expires: 1000,
                used: None,
                revoked: false
            }]
        );

        // `first.subject` is ignored: the subject is the code's device.
        let first = NewRefreshToken { subject: "user:mallory".to_string(), ..token(digest(10, 0), "fam1", 200, 5000) };
        assert_eq!(store.redeem_activation_code(&digest(1, 1), 200, &first).unwrap().as_deref(), Some(DEVICE));
        assert_eq!(store.list_activation_codes().unwrap()[0].used, Some(200));
        {
            let conn = store.conn.lock().unwrap();
            let subject: String = conn
                .query_row("SELECT subject FROM refresh_tokens WHERE digest = ?1", [&digest(10, 0)[..]], |row| {
                    row.get(0)
                })
                .unwrap();
            assert_eq!(subject, SUBJECT);
        }

        let rotated = Rotation::Rotated { subject: SUBJECT.to_string(), family: "fam1".to_string() };
        let next = token(digest(10, 1), "fam1", 300, 5300);
        assert_eq!(store.rotate_refresh_token(&digest(10, 0), 300, &next, 0).unwrap(), rotated);
        // `next.family` and `next.subject` are ignored.
        let next = NewRefreshToken {
            digest: digest(10, 2),
            family: "elsewhere".to_string(),
            subject: "user:mallory".to_string(),
            issued: 400,
            expires: 5400,
        };
        assert_eq!(store.rotate_refresh_token(&digest(10, 1), 400, &next, 0).unwrap(), rotated);
        {
            let conn = store.conn.lock().unwrap();
            let (family, subject): (String, String) = conn
                .query_row(
                    "SELECT family, subject FROM refresh_tokens WHERE digest = ?1",
                    [&digest(10, 2)[..]],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .unwrap();
            assert_eq!((family.as_str(), subject.as_str()), ("fam1", SUBJECT));
        }

        let before = store.change_counter().unwrap();
        store.revoke_subject(SUBJECT, 500, 6000).unwrap();
        assert!(store.change_counter().unwrap() > before);
        assert_eq!(store.revocations(500).unwrap(), vec![(SUBJECT.to_string(), 500)]);
        assert_eq!(store.revocations(6000).unwrap(), vec![]);
        let next = token(digest(10, 3), "fam1", 600, 5600);
        assert_eq!(store.rotate_refresh_token(&digest(10, 2), 600, &next, 0).unwrap(), Rotation::Invalid);
        assert_eq!(family_states(&store, "fam1"), vec!["revoked"; 3]);

        // A later revocation moves revoked_at forward and never shortens keep_until.
        store.revoke_subject(SUBJECT, 700, 3000).unwrap();
        assert_eq!(store.revocations(5999).unwrap(), vec![(SUBJECT.to_string(), 700)]);

        assert_eq!(store.signing_keys().unwrap(), vec![key("k1", 10)]);
        // Code (expired), three tokens (expired) and the revocation.
        assert_eq!(store.purge(6000).unwrap(), 5);
        assert!(store.list_activation_codes().unwrap().is_empty());
        assert_eq!(count(&store, "refresh_tokens"), 0);
        assert_eq!(store.signing_keys().unwrap().len(), 1);
        assert!(doubly_active(&store).is_empty());
    }

    #[test]
    fn activation_codes_are_single_use() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        store.add_activation_code("a1", &digest(1, 1), DEVICE, 100, 1000).unwrap();
        assert_eq!(
            store.redeem_activation_code(&digest(1, 1), 200, &token(digest(5, 0), "f1", 200, 900)).unwrap(),
            Some(DEVICE.to_string())
        );
        let counter = store.change_counter().unwrap();
        assert_eq!(
            store.redeem_activation_code(&digest(1, 1), 201, &token(digest(6, 0), "f2", 201, 900)).unwrap(),
            None
        );
        assert_eq!(state_of(&store, &digest(6, 0)), None, "nothing written");
        assert_eq!(store.change_counter().unwrap(), counter, "nothing written");
        assert_eq!(store.list_activation_codes().unwrap()[0].used, Some(200));
        // A redeemed code is not usable, so it cannot be revoked.
        assert!(!store.revoke_activation_code("a1", 300).unwrap());
        assert!(!store.revoke_activation_code("nonesuch", 300).unwrap());
        assert_eq!(store.change_counter().unwrap(), counter);

        // Unknown digest.
        assert_eq!(
            store.redeem_activation_code(&digest(9, 9), 201, &token(digest(6, 0), "f2", 201, 900)).unwrap(),
            None
        );

        // Revoked codes cannot be redeemed; revoking twice is refused.
        store.add_activation_code("a2", &digest(1, 2), DEVICE, 150, 1000).unwrap();
        assert!(store.revoke_activation_code("a2", 300).unwrap());
        assert!(!store.revoke_activation_code("a2", 301).unwrap());
        assert_eq!(
            store.redeem_activation_code(&digest(1, 2), 302, &token(digest(6, 0), "f2", 302, 900)).unwrap(),
            None
        );
        let codes = store.list_activation_codes().unwrap();
        assert_eq!(codes.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), vec!["a1", "a2"]);
        assert!(codes[1].revoked);
        assert_eq!(codes[1].used, Some(300));

        // Duplicate ids and digests are errors.
        assert!(store.add_activation_code("a1", &digest(1, 3), DEVICE, 100, 1000).is_err());
        assert!(store.add_activation_code("a3", &digest(1, 1), DEVICE, 100, 1000).is_err());
    }

    #[test]
    fn expired_code_is_refused() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        store.add_activation_code("a1", &digest(1, 1), DEVICE, 100, 1000).unwrap();
        assert_eq!(
            store.redeem_activation_code(&digest(1, 1), 1000, &token(digest(5, 0), "f1", 1000, 9000)).unwrap(),
            None
        );
        assert_eq!(
            store.redeem_activation_code(&digest(1, 1), 5000, &token(digest(5, 0), "f1", 5000, 9000)).unwrap(),
            None
        );
        assert!(!store.revoke_activation_code("a1", 1000).unwrap());
        let codes = store.list_activation_codes().unwrap();
        assert_eq!((codes[0].used, codes[0].revoked), (None, false), "listed until purged");
        assert_eq!(count(&store, "refresh_tokens"), 0);
        // One second earlier it worked.
        store.add_activation_code("a2", &digest(1, 2), DEVICE, 100, 1000).unwrap();
        assert!(
            store.redeem_activation_code(&digest(1, 2), 999, &token(digest(5, 0), "f1", 999, 9000)).unwrap().is_some()
        );
    }

    #[test]
    fn rotation_chain_of_five() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        new_family(&store, 1, "fam", 100);
        for i in 1..=5u8 {
            let now = 100 + Time::from(i) * 10;
            let next = token(digest(1, i), "fam", now, now + 10_000);
            assert_eq!(
                store.rotate_refresh_token(&digest(1, i - 1), now, &next, 0).unwrap(),
                Rotation::Rotated { subject: SUBJECT.to_string(), family: "fam".to_string() }
            );
            assert_eq!(parent_of(&store, &digest(1, i)), Some(digest(1, i - 1).to_vec()));
            assert!(doubly_active(&store).is_empty());
        }
        assert_eq!(parent_of(&store, &digest(1, 0)), None);
        let mut expected = vec!["rotated"; 5];
        expected.push("active");
        assert_eq!(family_states(&store, "fam"), expected);

        // An expired live token is invalid and nothing changes.
        let counter = store.change_counter().unwrap();
        let next = token(digest(1, 6), "fam", 20_000, 30_000);
        assert_eq!(store.rotate_refresh_token(&digest(1, 5), 20_000, &next, 0).unwrap(), Rotation::Invalid);
        assert_eq!(store.change_counter().unwrap(), counter);
        assert_eq!(state_of(&store, &digest(1, 5)).as_deref(), Some("active"));
        assert_eq!(state_of(&store, &digest(1, 6)), None);
        // An unknown one too.
        assert_eq!(store.rotate_refresh_token(&digest(99, 0), 200, &next, 0).unwrap(), Rotation::Invalid);
    }

    #[test]
    fn reuse_revokes_the_family() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        new_family(&store, 1, "fam", 100);
        new_family(&store, 2, "other", 100);
        store.rotate_refresh_token(&digest(1, 0), 110, &token(digest(1, 1), "fam", 110, 9000), 0).unwrap();
        store.rotate_refresh_token(&digest(1, 1), 120, &token(digest(1, 2), "fam", 120, 9000), 0).unwrap();

        // The stolen token 1 is replayed.
        let counter = store.change_counter().unwrap();
        assert_eq!(
            store.rotate_refresh_token(&digest(1, 1), 130, &token(digest(1, 3), "fam", 130, 9000), 0).unwrap(),
            Rotation::Reused { subject: SUBJECT.to_string(), family: "fam".to_string() }
        );
        // Committed, but not a change of what nodes hold (refresh tokens live in the store only).
        assert_eq!(store.change_counter().unwrap(), counter);
        assert_eq!(state_of(&store, &digest(1, 3)), None, "no successor for a replayed token");
        // Committed: another connection sees the family revoked.
        let other = open(&dir);
        assert_eq!(family_states(&other, "fam"), vec!["revoked"; 3]);

        // The live token of that family is dead now; so is the replayed one.
        for presented in [digest(1, 2), digest(1, 1), digest(1, 0)] {
            assert_eq!(
                store.rotate_refresh_token(&presented, 140, &token(digest(1, 4), "fam", 140, 9000), 0).unwrap(),
                Rotation::Invalid
            );
        }
        // Other families are untouched.
        assert_eq!(
            store.rotate_refresh_token(&digest(2, 0), 150, &token(digest(2, 1), "other", 150, 9000), 0).unwrap(),
            Rotation::Rotated { subject: SUBJECT.to_string(), family: "other".to_string() }
        );
        assert!(doubly_active(&store).is_empty());
    }

    #[test]
    fn a_retry_within_the_grace_window_keeps_the_family() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        new_family(&store, 1, "fam", 100);
        let t = |n: u8, at: Time| token(digest(1, n), "fam", at, 9000);
        let retried = Rotation::Retried { subject: "device:SEP001122334455".into(), family: "fam".into() };
        // R0 → R1; the answer is lost and the client presents R0 again: R1 is superseded by R2.
        assert!(matches!(
            store.rotate_refresh_token(&digest(1, 0), 100, &t(1, 100), 30).unwrap(),
            Rotation::Rotated { .. }
        ));
        assert_eq!(store.rotate_refresh_token(&digest(1, 0), 110, &t(2, 110), 30).unwrap(), retried);
        assert_eq!(state_of(&store, &digest(1, 1)).as_deref(), Some("revoked"));
        // A second lost answer: still a retry, R2 is superseded by R3.
        assert_eq!(store.rotate_refresh_token(&digest(1, 0), 115, &t(3, 115), 30).unwrap(), retried);
        assert_eq!(doubly_active(&store), Vec::<(String, i64)>::new());
        // The superseded R1 is refused without harm to the family; R3 rotates normally.
        assert_eq!(store.rotate_refresh_token(&digest(1, 1), 116, &t(9, 116), 30).unwrap(), Rotation::Invalid);
        assert!(matches!(
            store.rotate_refresh_token(&digest(1, 3), 120, &t(4, 120), 30).unwrap(),
            Rotation::Rotated { .. }
        ));
        // Once the successor was used, presenting R0 again is a replay, even inside the window.
        assert!(matches!(
            store.rotate_refresh_token(&digest(1, 0), 125, &t(5, 125), 30).unwrap(),
            Rotation::Reused { .. }
        ));
        assert!(family_states(&store, "fam").iter().all(|s| s != "active"), "the family is revoked");
    }

    #[test]
    fn outside_the_grace_window_or_without_one_a_reuse_revokes_the_family() {
        for (grace, at) in [(30, 131), (0, 100)] {
            let dir = TempDir::new().unwrap();
            let store = open(&dir);
            new_family(&store, 1, "fam", 100);
            let t = |n: u8, at: Time| token(digest(1, n), "fam", at, 9000);
            store.rotate_refresh_token(&digest(1, 0), 100, &t(1, 100), grace).unwrap();
            let again = store.rotate_refresh_token(&digest(1, 0), at, &t(2, at), grace).unwrap();
            assert!(matches!(again, Rotation::Reused { .. }), "grace {grace} at {at}: {again:?}");
            assert!(family_states(&store, "fam").iter().all(|s| s != "active"));
        }
    }

    #[test]
    fn revoke_refresh_family() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        new_family(&store, 1, "fam", 100);
        new_family(&store, 2, "other", 100);
        store.rotate_refresh_token(&digest(1, 0), 110, &token(digest(1, 1), "fam", 110, 9000), 0).unwrap();
        // Any token of the family names it, the rotated one too.
        assert_eq!(store.revoke_refresh_family(&digest(1, 0), 120).unwrap().as_deref(), Some(SUBJECT));
        assert_eq!(family_states(&store, "fam"), vec!["revoked"; 2]);
        assert_eq!(family_states(&store, "other"), vec!["active"]);
        assert_eq!(store.revoke_refresh_family(&digest(9, 9), 120).unwrap(), None);
        assert_eq!(
            store.rotate_refresh_token(&digest(1, 1), 130, &token(digest(1, 2), "fam", 130, 9000), 0).unwrap(),
            Rotation::Invalid
        );
    }

    #[test]
    fn never_two_active_tokens_per_family() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        new_family(&store, 1, "fam", 100);
        // A second activation that (wrongly) reuses a live family is refused as a whole: the code stays usable.
        store.add_activation_code("dup", &digest(201, 1), DEVICE, 100, 1000).unwrap();
        let err = store.redeem_activation_code(&digest(201, 1), 110, &token(digest(3, 0), "fam", 110, 9000));
        assert!(matches!(err, Err(StoreError::Database { .. })), "{err:?}");
        assert_eq!(store.list_activation_codes().unwrap()[1].used, None);
        assert_eq!(state_of(&store, &digest(3, 0)), None);
        assert!(doubly_active(&store).is_empty());

        // The database itself refuses a second active token.
        {
            let conn = store.conn.lock().unwrap();
            let inserted = conn.execute(
                "INSERT INTO refresh_tokens (digest, family, subject, issued, expires, state, changed)
                 VALUES (?1, 'fam', 's', 0, 9000, 'active', 0)",
                [&digest(4, 0)[..]],
            );
            assert!(inserted.is_err());
        }

        // Rotating into a digest that already exists fails and rolls back.
        let counter = store.change_counter().unwrap();
        let clash = token(digest(1, 0), "fam", 120, 9000);
        assert!(store.rotate_refresh_token(&digest(1, 0), 120, &clash, 0).is_err());
        assert_eq!(state_of(&store, &digest(1, 0)).as_deref(), Some("active"));
        assert_eq!(store.change_counter().unwrap(), counter);
        assert!(doubly_active(&store).is_empty());
    }

    #[test]
    fn two_instances_see_each_other() {
        let dir = TempDir::new().unwrap();
        let server = open(&dir);
        let cli = open(&dir);
        let seen = server.change_counter().unwrap();

        cli.add_signing_key(&key("k1", 10), None).unwrap();
        assert!(server.change_counter().unwrap() > seen);
        assert_eq!(server.signing_keys().unwrap(), vec![key("k1", 10)]);

        // Codes and refresh tokens are committed (the other sees them) without moving the counter: no node
        // holds them in memory, so none needs to rebuild its view for them.
        let seen = server.change_counter().unwrap();
        cli.add_activation_code("a1", &digest(1, 1), DEVICE, 100, 1000).unwrap();
        assert_eq!(server.change_counter().unwrap(), seen);
        assert_eq!(server.list_activation_codes().unwrap().len(), 1);

        server.redeem_activation_code(&digest(1, 1), 200, &token(digest(1, 0), "fam", 200, 9000)).unwrap();
        let seen = cli.change_counter().unwrap();
        let seen_server = server.change_counter().unwrap();
        assert_eq!(seen, seen_server);
        cli.revoke_subject(SUBJECT, 300, 9000).unwrap();
        assert!(server.change_counter().unwrap() > seen);
        assert_eq!(server.revocations(300).unwrap(), vec![(SUBJECT.to_string(), 300)]);
        assert_eq!(
            server.rotate_refresh_token(&digest(1, 0), 310, &token(digest(1, 1), "fam", 310, 9000), 0).unwrap(),
            Rotation::Invalid
        );
    }

    /// Eight threads present the same live token at once, for several families in turn.
    fn race(shared: bool) {
        const THREADS: u8 = 8;
        const ROUNDS: u8 = 10;
        let dir = TempDir::new().unwrap();
        let setup = Arc::new(open(&dir));
        for round in 0..ROUNDS {
            new_family(&setup, round, &format!("fam{round}"), 100);
        }
        let barrier = Arc::new(Barrier::new(usize::from(THREADS)));
        let handles: Vec<_> = (1..=THREADS)
            .map(|t| {
                let barrier = Arc::clone(&barrier);
                let store = if shared { Arc::clone(&setup) } else { Arc::new(open(&dir)) };
                thread::spawn(move || {
                    (0..ROUNDS)
                        .map(|round| {
                            barrier.wait();
                            let next = token(digest(round, t), "ignored", 200, 9000);
                            store.rotate_refresh_token(&digest(round, 0), 200, &next, 0).unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<Rotation>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for round in 0..ROUNDS {
            let outcomes: Vec<&Rotation> = results.iter().map(|r| &r[usize::from(round)]).collect();
            let family = format!("fam{round}");
            let rotated = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated { .. })).count();
            let reused = outcomes.iter().filter(|o| matches!(o, Rotation::Reused { .. })).count();
            let invalid = outcomes.iter().filter(|o| matches!(o, Rotation::Invalid)).count();
            assert_eq!((rotated, reused, invalid), (1, 1, usize::from(THREADS) - 2), "round {round}: {outcomes:?}");
            for o in outcomes {
                match o {
                    Rotation::Rotated { family: f, subject } | Rotation::Reused { family: f, subject } => {
                        assert_eq!((f.as_str(), subject.as_str()), (family.as_str(), SUBJECT));
                    }
                    Rotation::Invalid => {}
                    Rotation::Retried { .. } => panic!("no retry without a grace window: {o:?}"),
                }
            }
            // Exactly one successor was stored, and the replay revoked the family.
            assert_eq!(family_states(&setup, &family), vec!["revoked"; 2]);
        }
        assert!(doubly_active(&setup).is_empty());
        assert_eq!(count(&setup, "refresh_tokens"), i64::from(ROUNDS) * 2);
    }

    #[test]
    fn concurrent_rotation_separate_connections() {
        race(false);
    }

    #[test]
    fn concurrent_rotation_shared_store() {
        race(true);
    }

    #[test]
    fn concurrent_first_open() {
        const THREADS: usize = 8;
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|i| {
                let (barrier, path) = (Arc::clone(&barrier), path.clone());
                thread::spawn(move || {
                    barrier.wait();
                    let store = SqliteStore::open(&path).unwrap();
                    store.add_signing_key(&key(&format!("k{i}"), 1), None).unwrap();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.signing_keys().unwrap().len(), THREADS);
        assert_eq!(store.change_counter().unwrap(), THREADS as u64);
    }

    #[test]
    fn purge() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        let now: Time = 200_000;
        let day = SPENT_CODE_KEEP;
        store.add_activation_code("expired", &digest(1, 1), DEVICE, 1000, 150_000).unwrap();
        store.add_activation_code("used-old", &digest(1, 2), DEVICE, 1000, 1_000_000).unwrap();
        store.add_activation_code("used-recent", &digest(1, 3), DEVICE, 1000, 1_000_000).unwrap();
        store.add_activation_code("revoked-old", &digest(1, 4), DEVICE, 1000, 1_000_000).unwrap();
        store.add_activation_code("fresh", &digest(1, 5), DEVICE, 1000, 1_000_000).unwrap();
        // Redeemed more than a day ago: its token (parent of the next one) expires before now.
        store.redeem_activation_code(&digest(1, 2), now - day - 1, &token(digest(2, 0), "fam", 1000, now)).unwrap();
        store
            .rotate_refresh_token(&digest(2, 0), now - day, &token(digest(2, 1), "fam", now - day, now + 1), 0)
            .unwrap();
        store
            .redeem_activation_code(&digest(1, 3), now - 100, &token(digest(3, 0), "fam3", now - 100, now + day))
            .unwrap();
        assert!(store.revoke_activation_code("revoked-old", now - day).unwrap());

        store.revoke_subject("user:old", 1000, now).unwrap();
        store.revoke_subject("user:recent", 1000, now + 1).unwrap();

        store.add_signing_key(&key("k1", 1), None).unwrap();
        store.add_signing_key(&key("k2", 2), Some(now)).unwrap();
        store.add_signing_key(&key("k3", 3), Some(now + 1)).unwrap();

        let counter = store.change_counter().unwrap();
        // Codes: expired, used-old, revoked-old. Tokens: (2, 0). Revocations: user:old. Keys: k1.
        assert_eq!(store.purge(now).unwrap(), 6);
        assert!(store.change_counter().unwrap() > counter);
        let ids: Vec<String> = store.list_activation_codes().unwrap().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, vec!["fresh", "used-recent"]);
        assert_eq!(state_of(&store, &digest(2, 0)), None);
        assert_eq!(parent_of(&store, &digest(2, 1)), None, "dangling parent cleared");
        assert_eq!(state_of(&store, &digest(2, 1)).as_deref(), Some("active"));
        assert_eq!(store.revocations(0).unwrap(), vec![("user:recent".to_string(), 1000)]);
        let kids: Vec<String> = store.signing_keys().unwrap().into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, vec!["k2", "k3"]);

        // Nothing left to purge: nothing written.
        let counter = store.change_counter().unwrap();
        assert_eq!(store.purge(now).unwrap(), 0);
        assert_eq!(store.change_counter().unwrap(), counter);

        // Every key retired: the newest one stays.
        store.add_signing_key(&key("k0", 0), None).unwrap();
        {
            let conn = store.conn.lock().unwrap();
            conn.execute("UPDATE signing_keys SET retire_at = 5", []).unwrap();
        }
        let purged = store.purge(now + 2).unwrap();
        let kids: Vec<String> = store.signing_keys().unwrap().into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, vec!["k3"]);
        // k0, k2, the token (2, 1), user:recent.
        assert_eq!(purged, 4);
        assert_eq!(store.purge(now + 3).unwrap(), 0);
        assert_eq!(store.signing_keys().unwrap().len(), 1);
    }

    #[test]
    fn signing_key_rotation_and_regeneration() {
        let dir = TempDir::new().unwrap();
        let store = open(&dir);
        store.add_signing_key(&key("k1", 10), None).unwrap();
        store.add_signing_key(&key("k2", 20), Some(500)).unwrap();
        store.add_signing_key(&key("k3", 30), Some(900)).unwrap();
        let retire: Vec<(String, Option<Time>)> =
            store.signing_keys().unwrap().into_iter().map(|k| (k.kid, k.retire_at)).collect();
        assert_eq!(
            retire,
            vec![("k1".to_string(), Some(500)), ("k2".to_string(), Some(900)), ("k3".to_string(), None)],
            "a retiring key keeps its first retirement"
        );
        // Same creation time: ordered by kid.
        store.add_signing_key(&key("b", 30), None).unwrap();
        let kids: Vec<String> = store.signing_keys().unwrap().into_iter().map(|k| k.kid).collect();
        assert_eq!(kids, vec!["k1", "k2", "b", "k3"]);
        assert!(store.add_signing_key(&key("k1", 40), None).is_err(), "duplicate kid");

        new_family(&store, 1, "fam", 100);
        new_family(&store, 2, "fam2", 100);
        store.rotate_refresh_token(&digest(1, 0), 110, &token(digest(1, 1), "fam", 110, 9000), 0).unwrap();
        let counter = store.change_counter().unwrap();
        let fresh = SigningKey { retire_at: None, ..key("new", 1000) };
        store.regenerate_signing_keys(&fresh, 1000).unwrap();
        assert!(store.change_counter().unwrap() > counter);
        assert_eq!(store.signing_keys().unwrap(), vec![fresh]);
        assert_eq!(family_states(&store, "fam"), vec!["revoked"; 2]);
        assert_eq!(family_states(&store, "fam2"), vec!["revoked"]);
        assert_eq!(
            store.rotate_refresh_token(&digest(1, 1), 1010, &token(digest(1, 2), "fam", 1010, 9000), 0).unwrap(),
            Rotation::Invalid
        );
    }

    #[test]
    fn reopen_keeps_everything() {
        let dir = TempDir::new().unwrap();
        let (codes, keys, revocations, counter) = {
            let store = open(&dir);
            store.add_signing_key(&key("k1", 10), None).unwrap();
            store.add_signing_key(&key("k2", 20), Some(5000)).unwrap();
            store.add_activation_code("a0", &digest(200, 0), DEVICE, 100, 1000).unwrap();
            new_family(&store, 1, "fam", 100);
            store.rotate_refresh_token(&digest(1, 0), 110, &token(digest(1, 1), "fam", 110, 9000), 0).unwrap();
            store.revoke_subject("user:7", 120, 9000).unwrap();
            (
                store.list_activation_codes().unwrap(),
                store.signing_keys().unwrap(),
                store.revocations(0).unwrap(),
                store.change_counter().unwrap(),
            )
        };
        let store = open(&dir);
        assert_eq!(store.list_activation_codes().unwrap(), codes);
        assert_eq!(store.signing_keys().unwrap(), keys);
        assert_eq!(store.revocations(0).unwrap(), revocations);
        assert_eq!(store.change_counter().unwrap(), counter);
        assert_eq!(
            store.rotate_refresh_token(&digest(1, 1), 130, &token(digest(1, 2), "fam", 130, 9000), 0).unwrap(),
            Rotation::Rotated { subject: SUBJECT.to_string(), family: "fam".to_string() }
        );
        assert_eq!(
            store.rotate_refresh_token(&digest(1, 0), 140, &token(digest(1, 3), "fam", 140, 9000), 0).unwrap(),
            Rotation::Reused { subject: SUBJECT.to_string(), family: "fam".to_string() }
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = TempDir::new().unwrap();
        let path = db_path(&dir);
        drop(open(&dir));
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", [SCHEMA_VERSION + 1]).unwrap();
        }
        match SqliteStore::open(&path) {
            Err(StoreError::Database { path: p, message }) => {
                assert_eq!(p, path.display().to_string());
                assert!(message.contains("newer"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn foreign_files_are_refused() {
        let dir = TempDir::new().unwrap();
        let other = dir.path().join("other.db");
        {
            let conn = Connection::open(&other).unwrap();
            conn.execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
        }
        let err = SqliteStore::open(&other).unwrap_err();
        assert!(err.to_string().contains("not a sipcfg state database"), "{err}");
        assert!(err.to_string().contains("other.db"), "{err}");

        let garbage = dir.path().join("garbage.db");
        fs::write(&garbage, vec![b'x'; 4096]).unwrap();
        let err = SqliteStore::open(&garbage).unwrap_err();
        assert!(matches!(err, StoreError::Database { .. }), "{err:?}");
        assert!(err.to_string().contains("garbage.db"), "{err}");
    }

    #[test]
    fn poisoned_lock_is_an_error() {
        let dir = TempDir::new().unwrap();
        let store = Arc::new(open(&dir));
        let poisoner = Arc::clone(&store);
        let joined = thread::spawn(move || {
            let _guard = poisoner.conn.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(joined.is_err());
        let err = store.signing_keys().unwrap_err();
        assert!(matches!(err, StoreError::Database { .. }), "{err:?}");
        assert!(store.purge(0).is_err());
    }
}
