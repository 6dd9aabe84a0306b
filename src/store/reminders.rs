//! Reminders of undecided cases: which proposed cases are due one, and the compare-and-set that
//! lets exactly one replica, once, remind (and escalate) each.

use super::events::insert_event;
use super::{Store, StoreError};
use crate::cases::Case;

impl Store {
    /// Proposed cases that are not reminded yet and expire within `before_ms` of `now` (but
    /// have not expired), soonest first.
    pub async fn reminders_due(&self, before_ms: i64, now: i64) -> Result<Vec<Case>, StoreError> {
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM cases WHERE state = 'proposed' AND reminded_at IS NULL AND expires_at > $1 AND expires_at <= $2 \
             ORDER BY expires_at LIMIT 100",
        )
        .bind(now)
        .bind(now.saturating_add(before_ms))
        .fetch_all(&self.pool)
        .await?;
        let mut cases = Vec::with_capacity(due.len());
        for id in due {
            if let Some(case) = self.case(&id).await? {
                cases.push(case);
            }
        }
        Ok(cases)
    }

    /// Marks a proposed case reminded (and escalated, when `escalate`), with its event; `false`
    /// when it already was, or is no longer proposed: then nobody reminds it again.
    pub async fn mark_reminded(&self, case_id: &str, escalate: bool, detail: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let marked = sqlx::query(
            "UPDATE cases SET reminded_at = $1, escalated_at = CASE WHEN $2 = 1 THEN $1 ELSE escalated_at END, updated_at = $1 \
             WHERE id = $3 AND state = 'proposed' AND reminded_at IS NULL",
        )
        .bind(now)
        .bind(i64::from(escalate))
        .bind(case_id)
        .execute(&mut *tx)
        .await?;
        if marked.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_event(&mut tx, Some(case_id), None, if escalate { "escalated" } else { "reminded" }, Some(detail), now).await?;
        tx.commit().await?;
        Ok(true)
    }
}
