//! The audit poller's state: each source's checkpoint, the content blobs already ingested, and the
//! lock that lets one replica poll.

use sqlx::Any;
use sqlx::pool::PoolConnection;

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
    /// A lock whose work is dropped half-way is released: its connection is closed, not pooled.
    pub async fn with_advisory_lock<T, F>(&self, key: i64, work: F) -> Result<Option<T>, StoreError>
    where
        F: std::future::Future<Output = T>,
    {
        if self.backend() != Backend::Postgres {
            return Ok(Some(work.await));
        }
        let mut lock = HeldLock { conn: Some(self.pool.acquire().await?), key };
        if !lock.try_take().await? {
            lock.back_to_pool();
            return Ok(None);
        }
        let result = work.await;
        lock.unlock().await?;
        Ok(Some(result))
    }
}

/// A pooled connection that may hold a session-level advisory lock. Only `back_to_pool` (the lock
/// was not taken) and `unlock` return it to the pool. Dropped otherwise (the work's future was
/// dropped, a query failed or was cut short), the connection leaves the pool and closes, and its
/// session's locks end with it: a pooled connection never keeps a lock that nothing will release,
/// which would keep every replica from the work until the pool retired it.
struct HeldLock {
    conn: Option<PoolConnection<Any>>,
    key: i64,
}

impl HeldLock {
    /// `pg_try_advisory_lock`: whether this session now holds the lock.
    async fn try_take(&mut self) -> Result<bool, StoreError> {
        let Some(conn) = self.conn.as_mut() else { return Ok(false) };
        Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(self.key).fetch_one(&mut **conn).await?)
    }

    /// The lock was not taken: the connection is as it was.
    fn back_to_pool(mut self) {
        drop(self.conn.take());
    }

    /// Releases the lock, then returns the connection to the pool.
    async fn unlock(mut self) -> Result<(), StoreError> {
        if let Some(conn) = self.conn.as_mut() {
            let _: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)").bind(self.key).fetch_one(&mut **conn).await?;
        }
        self.back_to_pool();
        Ok(())
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            // Out of the pool and closed: the server ends the session and its advisory locks.
            drop(conn.detach());
        }
    }
}
