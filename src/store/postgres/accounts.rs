//! [`AccountStore`] in the shared store: administrators, their API tokens and sessions, and the audit trail,
//! the same for every node (a session opened through one node's console is valid on the others). Not state
//! that nodes hold: no change-log entry.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::PgStore;
use std::collections::HashMap;

use crate::auth::accounts::{Account, AccountStore, AuditEntry, AuditEvent, Download, Role, Session, StoredAccount};
use crate::auth::store::{Digest, StoreError, Time};

impl PgStore {
    fn account_of(&self, row: &PgRow) -> Result<Account, StoreError> {
        let role: String = row.try_get("role").map_err(|e| self.fail(e))?;
        Ok(Account {
            name: row.try_get("name").map_err(|e| self.fail(e))?,
            role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("unknown account role {role:?}")))?,
            created: row.try_get("created").map_err(|e| self.fail(e))?,
        })
    }
}

#[async_trait::async_trait]
impl AccountStore for PgStore {
    async fn add_account(&self, account: &Account, password_hash: &str) -> Result<bool, StoreError> {
        self.up()?;
        let done = sqlx::query(
            "INSERT INTO accounts (name, role, password_hash, created) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&account.name)
        .bind(account.role.as_str())
        .bind(password_hash)
        .bind(account.created)
        .execute(&self.pool)
        .await
        .map_err(|e| self.fail(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("UPDATE accounts SET password_hash = $2 WHERE name = $1")
            .bind(name)
            .bind(password_hash)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        sqlx::query("DELETE FROM sessions WHERE account = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        self.commit(tx).await?;
        Ok(done.rows_affected() == 1)
    }

    async fn account(&self, name: &str) -> Result<Option<StoredAccount>, StoreError> {
        self.up()?;
        let row = sqlx::query("SELECT name, role, created, password_hash FROM accounts WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some(StoredAccount {
                account: self.account_of(&row)?,
                password_hash: row.try_get("password_hash").map_err(|e| self.fail(e))?,
            })),
        }
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.up()?;
        let rows = sqlx::query("SELECT name, role, created FROM accounts ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
        rows.iter().map(|row| self.account_of(row)).collect()
    }

    async fn remove_account(&self, name: &str) -> Result<bool, StoreError> {
        self.up()?;
        let done = sqlx::query("DELETE FROM accounts WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(done.rows_affected() == 1)
    }

    async fn add_api_token(&self, digest: &Digest, account: &str, created: Time) -> Result<(), StoreError> {
        self.up()?;
        sqlx::query("INSERT INTO api_tokens (digest, account, created) VALUES ($1, $2, $3)")
            .bind(&digest[..])
            .bind(account)
            .bind(created)
            .execute(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn api_token_account(&self, digest: &Digest) -> Result<Option<Account>, StoreError> {
        self.up()?;
        let row = sqlx::query(
            "SELECT a.name, a.role, a.created FROM api_tokens t JOIN accounts a ON a.name = t.account
             WHERE t.digest = $1",
        )
        .bind(&digest[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.fail(e))?;
        row.map(|row| self.account_of(&row)).transpose()
    }

    async fn add_session(
        &self,
        digest: &Digest,
        account: &str,
        csrf: &str,
        created: Time,
        expires: Time,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM sessions WHERE expires <= $1")
            .bind(created)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        sqlx::query("INSERT INTO sessions (digest, account, csrf, created, expires) VALUES ($1, $2, $3, $4, $5)")
            .bind(&digest[..])
            .bind(account)
            .bind(csrf)
            .bind(created)
            .bind(expires)
            .execute(&mut *tx)
            .await
            .map_err(|e| self.fail(e))?;
        self.commit(tx).await
    }

    async fn session(&self, digest: &Digest, now: Time) -> Result<Option<Session>, StoreError> {
        self.up()?;
        let row = sqlx::query(
            "SELECT a.name, a.role, a.created, s.csrf, s.expires FROM sessions s
             JOIN accounts a ON a.name = s.account WHERE s.digest = $1 AND s.expires > $2",
        )
        .bind(&digest[..])
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| self.fail(e))?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some(Session {
                account: self.account_of(&row)?,
                csrf: row.try_get("csrf").map_err(|e| self.fail(e))?,
                expires: row.try_get("expires").map_err(|e| self.fail(e))?,
            })),
        }
    }

    async fn remove_session(&self, digest: &Digest) -> Result<(), StoreError> {
        self.up()?;
        sqlx::query("DELETE FROM sessions WHERE digest = $1")
            .bind(&digest[..])
            .execute(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn record_downloads(&self, downloads: &[(String, Download)]) -> Result<(), StoreError> {
        if downloads.is_empty() {
            return Ok(());
        }
        self.up()?;
        let mut subjects = Vec::with_capacity(downloads.len());
        let (mut at, mut address, mut file, mut status, mut agent) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (subject, d) in downloads {
            subjects.push(subject.clone());
            at.push(d.at);
            address.push(d.address.to_string());
            file.push(d.file.clone());
            status.push(i32::from(d.status));
            agent.push(d.user_agent.clone());
        }
        // One statement for the whole batch.
        sqlx::query(
            "INSERT INTO downloads (subject, at, address, file, status, user_agent)
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::int[], $6::text[])
             ON CONFLICT (subject) DO UPDATE SET at = excluded.at, address = excluded.address, file = excluded.file,
                 status = excluded.status, user_agent = excluded.user_agent
             WHERE excluded.at >= downloads.at",
        )
        .bind(subjects)
        .bind(at)
        .bind(address)
        .bind(file)
        .bind(status)
        .bind(agent)
        .execute(&self.pool)
        .await
        .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn last_download(&self, subject: &str) -> Result<Option<Download>, StoreError> {
        self.up()?;
        let row = sqlx::query("SELECT at, address, file, status, user_agent FROM downloads WHERE subject = $1")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
        let Some(row) = row else { return Ok(None) };
        let address: String = row.try_get("address").map_err(|e| self.fail(e))?;
        Ok(Some(Download {
            at: row.try_get("at").map_err(|e| self.fail(e))?,
            address: address.parse().map_err(|_| StoreError::Corrupt(format!("download address {address:?}")))?,
            file: row.try_get("file").map_err(|e| self.fail(e))?,
            status: u16::try_from(row.try_get::<i32, _>("status").map_err(|e| self.fail(e))?).unwrap_or(0),
            user_agent: row.try_get("user_agent").map_err(|e| self.fail(e))?,
        }))
    }

    async fn downloads_seen(&self) -> Result<HashMap<String, Time>, StoreError> {
        self.up()?;
        let rows =
            sqlx::query("SELECT subject, at FROM downloads").fetch_all(&self.pool).await.map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|row| Ok((row.try_get("subject")?, row.try_get("at")?)))
            .collect::<Result<HashMap<String, Time>, sqlx::Error>>()
            .map_err(|e| self.fail(e))
    }

    async fn audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.up()?;
        sqlx::query("INSERT INTO audit (at, actor, address, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(event.at)
            .bind(&event.actor)
            .bind(&event.address)
            .bind(&event.action)
            .bind(&event.target)
            .bind(&event.detail)
            .execute(&self.pool)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn audit_trail(&self, before: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        self.up()?;
        let rows = sqlx::query(
            "SELECT id, at, actor, address, action, target, detail FROM audit WHERE id < $1
             ORDER BY id DESC LIMIT $2",
        )
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| self.fail(e))?;
        rows.iter()
            .map(|row| {
                Ok(AuditEntry {
                    id: row.try_get("id")?,
                    event: AuditEvent {
                        at: row.try_get("at")?,
                        actor: row.try_get("actor")?,
                        address: row.try_get("address")?,
                        action: row.try_get("action")?,
                        target: row.try_get("target")?,
                        detail: row.try_get("detail")?,
                    },
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| self.fail(e))
    }
}
