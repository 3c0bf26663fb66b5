//! [`AccountStore`] in the embedded SQLite database: administrators, their API tokens and sessions, and the
//! audit trail. None of it is state a node holds in memory: the change counter stays.

use rusqlite::{OptionalExtension, params};

use super::{Fail, SqliteAuthStore, SqliteStore, Wrote, blocking};
use std::collections::HashMap;

use crate::auth::accounts::{Account, AccountStore, AuditEntry, AuditEvent, Download, Role, Session, StoredAccount};
use crate::auth::store::{Digest, StoreError, Time};

fn role_of(s: String) -> Result<Role, Fail> {
    Role::parse(&s).ok_or_else(|| Fail::Corrupt(format!("unknown account role {s:?}")))
}

fn account_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, Time)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn account_of((name, role, created): (String, String, Time)) -> Result<Account, Fail> {
    Ok(Account { name, role: role_of(role)?, created })
}

impl SqliteStore {
    pub fn add_account(&self, account: &Account, password_hash: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx.execute(
                "INSERT INTO accounts (name, role, password_hash, created) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO NOTHING",
                params![account.name, account.role.as_str(), password_hash, account.created],
            )?;
            Ok((n == 1, if n == 1 { Wrote::Stored } else { Wrote::Nothing }))
        })
    }

    pub fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n =
                tx.execute("UPDATE accounts SET password_hash = ?2 WHERE name = ?1", params![name, password_hash])?;
            tx.execute("DELETE FROM sessions WHERE account = ?1", [name])?;
            Ok((n == 1, if n == 1 { Wrote::Stored } else { Wrote::Nothing }))
        })
    }

    pub fn account(&self, name: &str) -> Result<Option<StoredAccount>, StoreError> {
        self.read(|conn| {
            let row = conn
                .query_row("SELECT name, role, created, password_hash FROM accounts WHERE name = ?1", [name], |row| {
                    Ok((account_row(row)?, row.get::<_, String>(3)?))
                })
                .optional()?;
            match row {
                None => Ok(None),
                Some((a, password_hash)) => Ok(Some(StoredAccount { account: account_of(a)?, password_hash })),
            }
        })
    }

    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT name, role, created FROM accounts ORDER BY name")?;
            let rows = stmt.query_map([], account_row)?.collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(account_of).collect()
        })
    }

    pub fn remove_account(&self, name: &str) -> Result<bool, StoreError> {
        self.write(|tx| {
            // Sessions and API tokens go with it (ON DELETE CASCADE).
            let n = tx.execute("DELETE FROM accounts WHERE name = ?1", [name])?;
            Ok((n == 1, if n == 1 { Wrote::Stored } else { Wrote::Nothing }))
        })
    }

    pub fn add_api_token(&self, digest: &Digest, account: &str, created: Time) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO api_tokens (digest, account, created) VALUES (?1, ?2, ?3)",
                params![&digest[..], account, created],
            )?;
            Ok(((), Wrote::Stored))
        })
    }

    pub fn api_token_account(&self, digest: &Digest) -> Result<Option<Account>, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "SELECT a.name, a.role, a.created FROM api_tokens t JOIN accounts a ON a.name = t.account
                 WHERE t.digest = ?1",
                [&digest[..]],
                account_row,
            )
            .optional()?
            .map(account_of)
            .transpose()
        })
    }

    pub fn add_session(
        &self,
        digest: &Digest,
        account: &str,
        csrf: &str,
        created: Time,
        expires: Time,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            // Expired sessions go when new ones come: the table stays the size of the open sessions.
            tx.execute("DELETE FROM sessions WHERE expires <= ?1", [created])?;
            tx.execute(
                "INSERT INTO sessions (digest, account, csrf, created, expires) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![&digest[..], account, csrf, created, expires],
            )?;
            Ok(((), Wrote::Stored))
        })
    }

    pub fn session(&self, digest: &Digest, now: Time) -> Result<Option<Session>, StoreError> {
        self.read(|conn| {
            let row = conn
                .query_row(
                    "SELECT a.name, a.role, a.created, s.csrf, s.expires FROM sessions s
                     JOIN accounts a ON a.name = s.account WHERE s.digest = ?1 AND s.expires > ?2",
                    params![&digest[..], now],
                    |row| Ok((account_row(row)?, row.get::<_, String>(3)?, row.get::<_, Time>(4)?)),
                )
                .optional()?;
            match row {
                None => Ok(None),
                Some((a, csrf, expires)) => Ok(Some(Session { account: account_of(a)?, csrf, expires })),
            }
        })
    }

    pub fn remove_session(&self, digest: &Digest) -> Result<(), StoreError> {
        self.write(|tx| {
            let n = tx.execute("DELETE FROM sessions WHERE digest = ?1", [&digest[..]])?;
            Ok(((), if n > 0 { Wrote::Stored } else { Wrote::Nothing }))
        })
    }

    pub fn record_downloads(&self, downloads: &[(String, Download)]) -> Result<(), StoreError> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO downloads (subject, at, address, file, status, user_agent) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (subject) DO UPDATE SET at = ?2, address = ?3, file = ?4, status = ?5, user_agent = ?6
                 WHERE excluded.at >= downloads.at",
            )?;
            for (subject, d) in downloads {
                stmt.execute(params![subject, d.at, d.address.to_string(), d.file, d.status, d.user_agent])?;
            }
            Ok(((), if downloads.is_empty() { Wrote::Nothing } else { Wrote::Stored }))
        })
    }

    pub fn last_download(&self, subject: &str) -> Result<Option<Download>, StoreError> {
        self.read(|conn| {
            let row = conn
                .query_row(
                    "SELECT at, address, file, status, user_agent FROM downloads WHERE subject = ?1",
                    [subject],
                    |row| {
                        Ok((
                            row.get::<_, Time>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, String>(2)?,
                            row.get::<_, u16>(3)?,
                            row.get::<_, String>(4)?,
                        ))
                    },
                )
                .optional()?;
            match row {
                None => Ok(None),
                Some((at, address, file, status, user_agent)) => Ok(Some(Download {
                    at,
                    address: address.parse().map_err(|_| Fail::Corrupt(format!("download address {address:?}")))?,
                    file,
                    status,
                    user_agent,
                })),
            }
        })
    }

    pub fn downloads_seen(&self) -> Result<HashMap<String, Time>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT subject, at FROM downloads")?;
            let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, Time>(1)?)))?;
            Ok(rows.collect::<Result<HashMap<_, _>, _>>()?)
        })
    }

    pub fn audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO audit (at, actor, address, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![event.at, event.actor, event.address, event.action, event.target, event.detail],
            )?;
            Ok(((), Wrote::Stored))
        })
    }

    pub fn audit_trail(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, at, actor, address, action, target, detail FROM audit WHERE id < ?1
                 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![before.unwrap_or(i64::MAX), limit], |row| {
                Ok(AuditEntry {
                    id: row.get(0)?,
                    event: AuditEvent {
                        at: row.get(1)?,
                        actor: row.get(2)?,
                        address: row.get(3)?,
                        action: row.get(4)?,
                        target: row.get(5)?,
                        detail: row.get(6)?,
                    },
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }
}

#[async_trait::async_trait]
impl AccountStore for SqliteAuthStore {
    async fn add_account(&self, account: &Account, password_hash: &str) -> Result<bool, StoreError> {
        let (account, hash) = (account.clone(), password_hash.to_owned());
        blocking(&self.0, move |s| s.add_account(&account, &hash)).await
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        let (name, hash) = (name.to_owned(), password_hash.to_owned());
        blocking(&self.0, move |s| s.set_password(&name, &hash)).await
    }

    async fn account(&self, name: &str) -> Result<Option<StoredAccount>, StoreError> {
        let name = name.to_owned();
        blocking(&self.0, move |s| s.account(&name)).await
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        blocking(&self.0, |s| s.accounts()).await
    }

    async fn remove_account(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_owned();
        blocking(&self.0, move |s| s.remove_account(&name)).await
    }

    async fn add_api_token(&self, digest: &Digest, account: &str, created: Time) -> Result<(), StoreError> {
        let (digest, account) = (*digest, account.to_owned());
        blocking(&self.0, move |s| s.add_api_token(&digest, &account, created)).await
    }

    async fn api_token_account(&self, digest: &Digest) -> Result<Option<Account>, StoreError> {
        let digest = *digest;
        blocking(&self.0, move |s| s.api_token_account(&digest)).await
    }

    async fn add_session(
        &self,
        digest: &Digest,
        account: &str,
        csrf: &str,
        created: Time,
        expires: Time,
    ) -> Result<(), StoreError> {
        let (digest, account, csrf) = (*digest, account.to_owned(), csrf.to_owned());
        blocking(&self.0, move |s| s.add_session(&digest, &account, &csrf, created, expires)).await
    }

    async fn session(&self, digest: &Digest, now: Time) -> Result<Option<Session>, StoreError> {
        let digest = *digest;
        blocking(&self.0, move |s| s.session(&digest, now)).await
    }

    async fn remove_session(&self, digest: &Digest) -> Result<(), StoreError> {
        let digest = *digest;
        blocking(&self.0, move |s| s.remove_session(&digest)).await
    }

    async fn record_downloads(&self, downloads: &[(String, Download)]) -> Result<(), StoreError> {
        let downloads = downloads.to_vec();
        blocking(&self.0, move |s| s.record_downloads(&downloads)).await
    }

    async fn last_download(&self, subject: &str) -> Result<Option<Download>, StoreError> {
        let subject = subject.to_owned();
        blocking(&self.0, move |s| s.last_download(&subject)).await
    }

    async fn downloads_seen(&self) -> Result<HashMap<String, Time>, StoreError> {
        blocking(&self.0, |s| s.downloads_seen()).await
    }

    async fn audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let event = event.clone();
        blocking(&self.0, move |s| s.audit(&event)).await
    }

    async fn audit_trail(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        blocking(&self.0, move |s| s.audit_trail(before, limit)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_sessions_tokens_and_the_audit_trail() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = SqliteStore::open(&dir.path().join("auth.db")).unwrap();
        let alice = Account { name: "alice".into(), role: Role::Operator, created: 100 };
        assert!(store.add_account(&alice, "$argon2id$x").unwrap());
        assert!(!store.add_account(&alice, "$argon2id$y").unwrap(), "a name is taken once");
        assert_eq!(store.account("alice").unwrap().unwrap().password_hash, "$argon2id$x");
        assert_eq!(store.accounts().unwrap(), vec![alice.clone()]);

        store.add_session(&[1; 32], "alice", "csrf1", 100, 200).unwrap();
        assert_eq!(store.session(&[1; 32], 150).unwrap().unwrap().csrf, "csrf1");
        assert_eq!(store.session(&[1; 32], 200).unwrap(), None, "expired");
        store.add_api_token(&[2; 32], "alice", 100).unwrap();
        assert_eq!(store.api_token_account(&[2; 32]).unwrap(), Some(alice.clone()));
        assert!(store.set_password("alice", "$argon2id$z").unwrap());
        assert_eq!(store.session(&[1; 32], 150).unwrap(), None, "a new password ends the sessions");
        store.add_session(&[3; 32], "alice", "csrf3", 100, 200).unwrap();
        store.remove_session(&[3; 32]).unwrap();
        assert_eq!(store.session(&[3; 32], 150).unwrap(), None);
        assert!(store.remove_account("alice").unwrap());
        assert_eq!(store.api_token_account(&[2; 32]).unwrap(), None, "its tokens went with it");

        for i in 0..5 {
            let event = AuditEvent {
                at: 100 + i,
                actor: "admin:alice".into(),
                address: "127.0.0.1".into(),
                action: "device.delete".into(),
                target: format!("SEP00000000000{i}"),
                detail: String::new(),
            };
            store.audit(&event).unwrap();
        }
        let page = store.audit_trail(None, 2).unwrap();
        assert_eq!(page.iter().map(|e| e.event.at).collect::<Vec<_>>(), vec![104, 103]);
        let next = store.audit_trail(Some(page[1].id), 10).unwrap();
        assert_eq!(next.iter().map(|e| e.event.at).collect::<Vec<_>>(), vec![102, 101, 100]);
    }
}
