//! The audit poller's state: each source's checkpoint, the content blobs already ingested, and the
//! lock that lets one replica poll.

use super::{Backend, Store, StoreError};

impl Store {
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

    /// Runs `work` only if this process holds the poll lock: a PostgreSQL advisory lock (so one
    /// replica polls), or nothing to take on SQLite (one instance). Returns `None` when another
    /// replica holds it.
    pub async fn with_poll_lock<T, F>(&self, work: F) -> Result<Option<T>, StoreError>
    where
        F: std::future::Future<Output = T>,
    {
        const POLL_LOCK: i64 = 0x6368_6174_7761_7264; // "chatward"
        self.with_advisory_lock(POLL_LOCK, work).await
    }

    /// Runs `work` only if this process holds the PostgreSQL advisory lock `key` (one replica at
    /// a time), or at once on SQLite (one instance). Returns `None` when another replica holds it.
    pub async fn with_advisory_lock<T, F>(&self, key: i64, work: F) -> Result<Option<T>, StoreError>
    where
        F: std::future::Future<Output = T>,
    {
        if self.backend() != Backend::Postgres {
            return Ok(Some(work.await));
        }
        let mut conn = self.pool.acquire().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *conn).await?;
        if !locked {
            return Ok(None);
        }
        let result = work.await;
        let _: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)").bind(key).fetch_one(&mut *conn).await?;
        Ok(Some(result))
    }
}
