//! Case events: the history of each case and the refusals that concern no case.

use sqlx::any::AnyRow;
use sqlx::{Any, Row as _, Transaction};

use super::{Store, StoreError};
use crate::cases::{Actor, CaseEvent};

fn event_from_row(row: &AnyRow) -> Result<CaseEvent, StoreError> {
    Ok(CaseEvent {
        at: row.try_get("at")?,
        actor_oid: row.try_get("actor_oid")?,
        actor_name: row.try_get("actor_name")?,
        kind: row.try_get("kind")?,
        detail: row.try_get("detail")?,
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
    sqlx::query("INSERT INTO events (case_id, at, actor_oid, actor_name, kind, detail) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(case_id)
        .bind(now)
        .bind(actor.map(|a| a.oid.as_str()))
        .bind(actor.map(|a| a.name.as_str()))
        .bind(kind)
        .bind(detail)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// The history of one case, oldest first.
    pub async fn events(&self, case_id: &str) -> Result<Vec<CaseEvent>, StoreError> {
        let rows = sqlx::query("SELECT at, actor_oid, actor_name, kind, detail FROM events WHERE case_id = $1 ORDER BY id")
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
        let rows =
            sqlx::query("SELECT at, actor_oid, actor_name, kind, detail FROM events WHERE case_id IS NULL ORDER BY id DESC LIMIT $1")
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(event_from_row).collect()
    }
}
