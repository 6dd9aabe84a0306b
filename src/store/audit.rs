//! The audit index: records stored once (by `Id`), queryable by chat, by user (object id or UPN,
//! case-insensitive) and by external tenant or domain; the poller's checkpoint and contents; and
//! small settings learned at run time.

use sqlx::{Any, Row as _};

use super::{Backend, Store, StoreError};
use crate::audit::record::AuditRecord;

/// Most records one lookup returns.
const LOOKUP_LIMIT: i64 = 5_000;

/// Records per multi-row insert (7 parameters each, well under SQLite's 32,766 and PostgreSQL's
/// 65,535 parameters per statement).
const RECORDS_PER_STATEMENT: usize = 500;
/// Lookup keys per multi-row insert (2 parameters each).
const KEYS_PER_STATEMENT: usize = 4_000;

/// The value list of a multi-row insert of `rows` rows of `columns` values: `(?, ?), (?, ?), ...`
/// on SQLite, `($1, $2), ($3, $4), ...` on PostgreSQL (which has no `?`). SQLite needs the
/// anonymous form: binding a numbered parameter looks its name up in a list, which makes a
/// statement with thousands of `$N` parameters quadratic to bind.
fn placeholders(backend: Backend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(row * columns + column + 1).to_string());
                }
            }
        }
        sql.push(')');
    }
    sql
}

/// The lookup keys of a record: `u:` + each member's and the actor's object id and UPN, `p:` +
/// each external tenant id and domain; lower case, each once.
fn lookup_keys(record: &AuditRecord) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    let mut user = |value: Option<&str>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            keys.insert(format!("u:{}", value.to_ascii_lowercase()));
        }
    };
    for member in record.internal_members() {
        user(member.user_object_id.as_deref());
        user(member.upn.as_deref());
    }
    user(record.user_key.as_deref());
    user(record.user_id.as_deref());
    let parties = record.external_parties();
    for party in parties.tenant_ids.into_iter().chain(parties.domains) {
        keys.insert(format!("p:{}", party.to_ascii_lowercase()));
    }
    keys
}

impl Store {
    /// Stores a record unless one with the same id exists; returns whether it was new.
    pub async fn insert_audit(&self, record: &AuditRecord, now: i64) -> Result<bool, StoreError> {
        Ok(self.insert_audit_batch(std::slice::from_ref(record), now).await?.first().copied().unwrap_or(false))
    }

    /// Stores many records in one transaction (each once, by id); returns which were new. Rows
    /// are written with multi-row inserts, so a batch costs a handful of statements.
    pub async fn insert_audit_batch(&self, records: &[AuditRecord], now: i64) -> Result<Vec<bool>, StoreError> {
        let mut fresh_ids = std::collections::HashSet::new();
        let mut tx = self.pool.begin().await?;
        for chunk in records.chunks(RECORDS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO audit_records (id, tenant_id, operation, created_at, chat_thread_id, raw, ingested_at) VALUES {} \
                 ON CONFLICT (id) DO NOTHING RETURNING id",
                placeholders(self.backend(), chunk.len(), 7)
            );
            let mut insert = sqlx::query_scalar::<Any, String>(&sql);
            for record in chunk {
                insert = insert
                    .bind(record.id.clone())
                    .bind(record.organization_id.to_ascii_lowercase())
                    .bind(record.operation.as_str().to_owned())
                    .bind(record.created_at)
                    .bind(record.chat_thread_id.clone())
                    .bind(record.raw.to_string())
                    .bind(now);
            }
            let inserted: std::collections::HashSet<String> = insert.fetch_all(&mut *tx).await?.into_iter().collect();
            let mut keys: Vec<(String, &str)> = Vec::new();
            let mut seen_in_chunk = std::collections::HashSet::new();
            for record in chunk.iter().filter(|r| inserted.contains(&r.id) && seen_in_chunk.insert(r.id.as_str())) {
                keys.extend(lookup_keys(record).into_iter().map(|key| (key, record.id.as_str())));
            }
            for rows in keys.chunks(KEYS_PER_STATEMENT) {
                let sql = format!("INSERT INTO audit_keys (lookup, record_id) VALUES {}", placeholders(self.backend(), rows.len(), 2));
                let mut insert = sqlx::query::<Any>(&sql);
                for (key, id) in rows {
                    insert = insert.bind(key.clone()).bind(id.to_string());
                }
                insert.execute(&mut *tx).await?;
            }
            fresh_ids.extend(inserted);
        }
        tx.commit().await?;
        // A record id seen twice in one batch is new only the first time.
        let mut reported = std::collections::HashSet::new();
        Ok(records.iter().map(|r| fresh_ids.contains(&r.id) && reported.insert(r.id.clone())).collect())
    }

    fn parse_rows(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<AuditRecord>, StoreError> {
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let raw: String = row.try_get("raw")?;
            let value: serde_json::Value =
                serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(format!("audit record JSON: {e}")))?;
            match AuditRecord::parse(value) {
                Ok(record) => records.push(record),
                Err(err) => tracing::warn!(error = %err, "stored audit record no longer parses"),
            }
        }
        Ok(records)
    }

    /// Records of `chat` that name `user` (object id or UPN) as a member or as the actor.
    pub async fn audit_for_chat_user(&self, chat: &str, user: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let user = format!("u:{}", user.to_ascii_lowercase());
        let rows = sqlx::query(
            "SELECT r.raw FROM audit_records r WHERE r.chat_thread_id = $1 \
             AND r.id IN (SELECT record_id FROM audit_keys WHERE lookup = $2) ORDER BY COALESCE(r.created_at, 9223372036854775807), r.id LIMIT $3",
        )
        .bind(chat)
        .bind(&user)
        .bind(LOOKUP_LIMIT)
        .fetch_all(&self.pool)
        .await?;
        Self::parse_rows(rows)
    }

    /// Records of one chat, oldest first.
    pub async fn audit_for_chat(&self, chat: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT raw FROM audit_records WHERE chat_thread_id = $1 ORDER BY COALESCE(created_at, 9223372036854775807), id LIMIT $2",
        )
        .bind(chat)
        .bind(LOOKUP_LIMIT)
        .fetch_all(&self.pool)
        .await?;
        Self::parse_rows(rows)
    }

    /// Records that name `user` (object id or UPN, case-insensitive) as a member or the actor.
    pub async fn audit_for_user(&self, user: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.raw FROM audit_records r WHERE r.id IN (SELECT record_id FROM audit_keys WHERE lookup = $1) \
             ORDER BY COALESCE(r.created_at, 9223372036854775807), r.id LIMIT $2",
        )
        .bind(format!("u:{}", user.to_ascii_lowercase()))
        .bind(LOOKUP_LIMIT)
        .fetch_all(&self.pool)
        .await?;
        Self::parse_rows(rows)
    }

    /// Records of chats involving an external tenant id or domain (case-insensitive).
    pub async fn audit_for_party(&self, party: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let party = format!("p:{}", party.to_ascii_lowercase());
        let rows = sqlx::query(
            "SELECT r.raw FROM audit_records r WHERE r.id IN (SELECT record_id FROM audit_keys WHERE lookup = $1) \
             ORDER BY COALESCE(r.created_at, 9223372036854775807), r.id LIMIT $2",
        )
        .bind(&party)
        .bind(LOOKUP_LIMIT)
        .fetch_all(&self.pool)
        .await?;
        Self::parse_rows(rows)
    }

    /// How many audit records are stored.
    pub async fn audit_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM audit_records").fetch_one(&self.pool).await?)
    }

    /// (chat, user) pairs already removed by a finished case (`done` targets), user as object id
    /// or as given, lower case.
    pub async fn removed_pairs(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT thread_id, user_oid, user_ref FROM case_targets WHERE status = 'done' AND thread_id IS NOT NULL")
            .fetch_all(&self.pool)
            .await?;
        let mut pairs = Vec::with_capacity(rows.len() * 2);
        for row in rows {
            let thread: String = row.try_get("thread_id")?;
            if let Some(oid) = row.try_get::<Option<String>, _>("user_oid")? {
                pairs.push((thread.clone(), oid.to_ascii_lowercase()));
            }
            pairs.push((thread, row.try_get::<String, _>("user_ref")?.to_ascii_lowercase()));
        }
        Ok(pairs)
    }

    /// The end of the last fully processed window of a poll source.
    pub async fn checkpoint(&self, source: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar("SELECT window_end FROM poll_checkpoints WHERE source = $1").bind(source).fetch_optional(&self.pool).await?)
    }

    /// Records that a window up to `window_end` was fully processed.
    pub async fn set_checkpoint(&self, source: &str, window_end: i64, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO poll_checkpoints (source, window_end, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (source) DO UPDATE SET window_end = excluded.window_end, updated_at = excluded.updated_at",
        )
        .bind(source)
        .bind(window_end)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether a content blob was already fetched and ingested.
    pub async fn content_seen(&self, content_id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar::<_, String>("SELECT content_id FROM poll_contents WHERE content_id = $1")
            .bind(content_id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Marks a content blob as ingested.
    pub async fn mark_content(&self, content_id: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO poll_contents (content_id, fetched_at) VALUES ($1, $2) ON CONFLICT (content_id) DO NOTHING")
            .bind(content_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A setting learned at run time.
    pub async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?)
    }

    /// Stores a setting learned at run time.
    pub async fn set_setting(&self, key: &str, value: &str, now: i64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Runs `work` only if this process holds the poll lock: a PostgreSQL advisory lock (so one
    /// replica polls), or nothing to take on SQLite (one instance). Returns `None` when another
    /// replica holds it.
    pub async fn with_poll_lock<T, F>(&self, work: F) -> Result<Option<T>, StoreError>
    where
        F: std::future::Future<Output = T>,
    {
        const POLL_LOCK: i64 = 0x6368_6174_7761_7264; // "chatward"
        if self.backend() != super::Backend::Postgres {
            return Ok(Some(work.await));
        }
        let mut conn = self.pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(POLL_LOCK).fetch_one(&mut *conn).await?;
        if !locked {
            return Ok(None);
        }
        let result = work.await;
        let _: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)").bind(POLL_LOCK).fetch_one(&mut *conn).await?;
        Ok(Some(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_anonymous_on_sqlite_and_numbered_on_postgres() {
        assert_eq!(placeholders(Backend::Sqlite, 2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(placeholders(Backend::Postgres, 2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
