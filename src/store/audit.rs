//! The audit index: records stored once (by `Id`), queryable by chat, by user (object id or UPN,
//! case-insensitive) and by external tenant or domain; the poller's checkpoint and contents; and
//! small settings learned at run time.

use sqlx::Row as _;

use super::{Store, StoreError};
use crate::audit::record::AuditRecord;

/// Most records one lookup returns.
const LOOKUP_LIMIT: i64 = 5_000;

impl Store {
    /// Stores a record unless one with the same id exists; returns whether it was new.
    pub async fn insert_audit(&self, record: &AuditRecord, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO audit_records (id, tenant_id, operation, created_at, chat_thread_id, raw, ingested_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&record.id)
        .bind(record.organization_id.to_ascii_lowercase())
        .bind(record.operation.as_str())
        .bind(record.created_at)
        .bind(record.chat_thread_id.as_deref())
        .bind(record.raw.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        let insert_person = "INSERT INTO audit_people (record_id, side, user_oid, upn, tenant_id, domain) VALUES ($1, $2, $3, $4, $5, $6)";
        for member in record.internal_members() {
            sqlx::query(insert_person)
                .bind(&record.id)
                .bind("internal")
                .bind(member.user_object_id.as_deref().map(str::to_ascii_lowercase))
                .bind(member.upn.as_deref().map(str::to_ascii_lowercase))
                .bind(member.organization_id.as_deref().map(str::to_ascii_lowercase))
                .bind(member.upn.as_deref().and_then(AuditRecord::domain_of))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(insert_person)
            .bind(&record.id)
            .bind("actor")
            .bind(record.user_key.as_deref().map(str::to_ascii_lowercase))
            .bind(record.user_id.as_deref().map(str::to_ascii_lowercase))
            .bind(None::<String>)
            .bind(record.user_id.as_deref().and_then(AuditRecord::domain_of))
            .execute(&mut *tx)
            .await?;
        let parties = record.external_parties();
        for tenant in &parties.tenant_ids {
            sqlx::query(insert_person)
                .bind(&record.id)
                .bind("external")
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(tenant)
                .bind(None::<String>)
                .execute(&mut *tx)
                .await?;
        }
        for domain in &parties.domains {
            sqlx::query(insert_person)
                .bind(&record.id)
                .bind("external")
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(domain)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
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
        let user = user.to_ascii_lowercase();
        let rows = sqlx::query(
            "SELECT r.raw FROM audit_records r WHERE r.chat_thread_id = $1 AND EXISTS (SELECT 1 FROM audit_people p \
             WHERE p.record_id = r.id AND p.side IN ('internal', 'actor') AND (p.user_oid = $2 OR p.upn = $2)) \
             ORDER BY COALESCE(r.created_at, 9223372036854775807), r.id LIMIT $3",
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
            "SELECT r.raw FROM audit_records r WHERE EXISTS (SELECT 1 FROM audit_people p WHERE p.record_id = r.id \
             AND p.side IN ('internal', 'actor') AND (p.user_oid = $1 OR p.upn = $1)) ORDER BY COALESCE(r.created_at, 9223372036854775807), r.id LIMIT $2",
        )
        .bind(user.to_ascii_lowercase())
        .bind(LOOKUP_LIMIT)
        .fetch_all(&self.pool)
        .await?;
        Self::parse_rows(rows)
    }

    /// Records of chats involving an external tenant id or domain (case-insensitive).
    pub async fn audit_for_party(&self, party: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let party = party.to_ascii_lowercase();
        let rows = sqlx::query(
            "SELECT r.raw FROM audit_records r WHERE EXISTS (SELECT 1 FROM audit_people p WHERE p.record_id = r.id \
             AND p.side = 'external' AND (p.tenant_id = $1 OR p.domain = $1)) ORDER BY COALESCE(r.created_at, 9223372036854775807), r.id LIMIT $2",
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
