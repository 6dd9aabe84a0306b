//! What the store knows about one (chat, internal user) pair: whether a case for it is open,
//! whether a record is already evidence for it, and when it was last removed or rejected. Alert
//! deduplication and `/remove-external` decide from these, so a pair that was removed and comes
//! back is alerted again.

use sqlx::{Any, Row as _, Transaction};

use super::{Store, StoreError};
use crate::cases::Actor;

/// One internal user in one chat, as targets name them: the chat thread, the user's reference
/// (UPN or object id, lower case) and their object id when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair<'a> {
    /// Chat thread id.
    pub chat: &'a str,
    /// UPN or object id, lower case.
    pub user_ref: &'a str,
    /// Object id, lower case, when known.
    pub user_oid: Option<&'a str>,
}

impl Pair<'_> {
    /// The dedupe key an alert case holds while it is open.
    pub fn alert_key(&self) -> String {
        format!("alert|{}|{}", self.chat, self.user_ref)
    }
}

/// Targets of `pair` (the SQL fragment, parameters `$1` chat, `$2` reference, `$3` object id).
const PAIR_TARGETS: &str = "t.thread_id = $1 AND (t.user_ref = $2 OR t.user_oid = $2 OR t.user_oid = $3)";

/// Releases the alert key a case held while open, in the transaction that closes it.
pub(super) async fn release_alert_key(tx: &mut Transaction<'_, Any>, case_id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM processed_activities WHERE case_id = $1 AND activity_key LIKE 'alert|%'")
        .bind(case_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// The open alert case of `pair`, if any (its key exists only while it is open).
    pub async fn open_alert_case(&self, pair: &Pair<'_>) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT case_id FROM processed_activities WHERE activity_key = $1")
            .bind(pair.alert_key())
            .fetch_optional(&self.pool)
            .await?
            .flatten())
    }

    /// Whether `record_id` is already evidence of a case about `pair`.
    pub async fn is_pair_evidence(&self, pair: &Pair<'_>, record_id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT 1 FROM case_evidence e JOIN case_targets t ON t.case_id = e.case_id \
             WHERE {PAIR_TARGETS} AND e.audit_record_id = $4 LIMIT 1"
        ))
        .bind(pair.chat)
        .bind(pair.user_ref)
        .bind(pair.user_oid.unwrap_or(pair.user_ref))
        .bind(record_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// When `pair` was last closed by a person or by Graph: the latest removal of it that Graph
    /// confirmed, or the latest rejection of a case about it (Unix ms). Records from before this
    /// moment belong to what was already decided; a newer record is a new event.
    pub async fn pair_closed_at(&self, pair: &Pair<'_>) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT MAX(CASE WHEN t.status = 'done' THEN t.updated_at END) AS removed_at, \
                    MAX(CASE WHEN c.state = 'rejected' THEN c.decided_at END) AS rejected_at \
             FROM case_targets t JOIN cases c ON c.id = t.case_id WHERE {PAIR_TARGETS}"
        ))
        .bind(pair.chat)
        .bind(pair.user_ref)
        .bind(pair.user_oid.unwrap_or(pair.user_ref))
        .fetch_one(&self.pool)
        .await?;
        let removed: Option<i64> = row.try_get("removed_at")?;
        let rejected: Option<i64> = row.try_get("rejected_at")?;
        Ok(removed.max(rejected))
    }

    /// Adds a record to an open case's evidence (with an event); `false` when it already was.
    pub async fn add_evidence(&self, case_id: &str, record_id: &str, detail: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let added = sqlx::query("INSERT INTO case_evidence (case_id, audit_record_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(case_id)
            .bind(record_id)
            .execute(&mut *tx)
            .await?;
        if added.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        super::events::insert_event(&mut tx, Some(case_id), None::<&Actor>, "evidence_added", Some(detail), now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every (chat, user) pair Graph confirmed removed, with the time of its latest removal
    /// (Unix ms), under its object id and under its reference (both lower case).
    pub async fn removed_pairs(&self) -> Result<Vec<((String, String), i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT thread_id, user_oid, user_ref, MAX(updated_at) AS removed_at FROM case_targets \
             WHERE status = 'done' AND thread_id IS NOT NULL GROUP BY thread_id, user_oid, user_ref",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut pairs = Vec::with_capacity(rows.len() * 2);
        for row in rows {
            let thread: String = row.try_get("thread_id")?;
            let removed_at: i64 = row.try_get("removed_at")?;
            if let Some(oid) = row.try_get::<Option<String>, _>("user_oid")? {
                pairs.push(((thread.clone(), oid.to_ascii_lowercase()), removed_at));
            }
            pairs.push(((thread, row.try_get::<String, _>("user_ref")?.to_ascii_lowercase()), removed_at));
        }
        Ok(pairs)
    }
}
