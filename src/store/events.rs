//! Case events: the history of each case and the refusals that concern no case.

use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

use super::{Store, StoreError};
use crate::cases::{Actor, CaseEvent};
use crate::history::Canonical;

fn event_from_row(row: &AnyRow) -> Result<CaseEvent, StoreError> {
    Ok(CaseEvent {
        at: row.try_get("at")?,
        actor_oid: row.try_get("actor_oid")?,
        actor_name: row.try_get("actor_name")?,
        kind: row.try_get("kind")?,
        detail: row.try_get("detail")?,
        data: row.try_get("data")?,
    })
}

pub(super) async fn insert_event(
    tx: &mut Transaction<'_, Any>,
    case_id: Option<&str>,
    actor: Option<&Actor>,
    kind: &str,
    detail: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    insert_event_with_data(tx, case_id, actor, kind, detail, None, now).await
}

/// Appends an event to the chain in the caller's transaction. Taking the chain's head first (an
/// `UPDATE` of its one row) orders every writer: the next one waits until this transaction
/// ends, so places are gapless and commit in order on PostgreSQL too. Callers add events last in
/// their transaction, so nobody waits on another lock while holding the head.
pub(super) async fn insert_event_with_data(
    tx: &mut Transaction<'_, Any>,
    case_id: Option<&str>,
    actor: Option<&Actor>,
    kind: &str,
    detail: Option<&str>,
    data: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    let head = sqlx::query("UPDATE history_chain SET seq = seq + 1 WHERE id = 1 RETURNING seq, head").fetch_one(&mut **tx).await?;
    let seq: i64 = head.try_get("seq")?;
    let prev_hash: String = head.try_get("head")?;
    let (actor_oid, actor_name) = (actor.map(|a| a.oid.as_str()), actor.map(|a| a.name.as_str()));
    let hash = Canonical { actor_name, actor_oid, at: now, case_id, data, detail, kind, prev_hash: &prev_hash, seq }.hash();
    sqlx::query(
        "INSERT INTO events (case_id, at, actor_oid, actor_name, kind, detail, data, seq, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(case_id)
    .bind(now)
    .bind(actor_oid)
    .bind(actor_name)
    .bind(kind)
    .bind(detail)
    .bind(data)
    .bind(seq)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE history_chain SET head = $1 WHERE id = 1").bind(&hash).execute(&mut **tx).await?;
    Ok(())
}

impl Store {
    /// The history of one case, oldest first.
    pub async fn events(&self, case_id: &str) -> Result<Vec<CaseEvent>, StoreError> {
        let rows = sqlx::query("SELECT at, actor_oid, actor_name, kind, detail, data FROM events WHERE case_id = $1 ORDER BY seq")
            .bind(case_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Records a refusal or any other event (a `None` case for refusals that concern no case).
    pub async fn record_event(
        &self,
        case_id: Option<&str>,
        actor: Option<&Actor>,
        kind: &str,
        detail: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_event(&mut tx, case_id, actor, kind, detail, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Events that concern no case (refusals of unauthorised people), newest first.
    pub async fn refusals(&self, limit: u32) -> Result<Vec<CaseEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor_oid, actor_name, kind, detail, data FROM events WHERE case_id IS NULL ORDER BY seq DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(event_from_row).collect()
    }
}
