//! Execution of approved cases under a lease: claiming a case (or one whose lease ran out),
//! renewing the lease, recording each target's outcome, finishing, and the cases waiting to be
//! claimed.

use super::events::{insert_event, insert_event_with_data};
use super::pairs::release_alert_key;
use super::{Store, StoreError};
use crate::cases::{CaseState, CaseSummary, TargetResult, TargetStatus};

impl Store {
    /// Claims a case for execution: `approved -> executing`, or an `executing` case whose lease
    /// ran out (its replica died). Returns the case's summary when this caller won the claim: a
    /// run takes its targets a page at a time ([`Store::pending_targets`]).
    pub async fn claim_for_execution(
        &self,
        case_id: &str,
        owner: &str,
        lease_ms: i64,
        now: i64,
    ) -> Result<Option<CaseSummary>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE cases SET state = 'executing', lease_owner = $1, lease_until = $2, updated_at = $3, version = version + 1 \
             WHERE id = $4 AND (state = 'approved' OR (state = 'executing' AND (lease_until IS NULL OR lease_until < $3)))",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(case_id)
        .execute(&mut *tx)
        .await?;
        if claimed.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(None);
        }
        insert_event(&mut tx, Some(case_id), None, "executing", None, now).await?;
        tx.commit().await?;
        self.case_summary(case_id).await
    }

    /// Extends the execution lease of a case this owner holds.
    pub async fn renew_lease(&self, case_id: &str, owner: &str, lease_until: i64) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        extend_lease(&mut conn, case_id, owner, lease_until).await
    }

    /// Records one target's outcome: its state, Graph's status, error code, request ids and
    /// date, and the object id it resolved to; its event carries the same facts as data.
    pub async fn record_target(&self, case_id: &str, result: &TargetResult, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if update_target(&mut tx, case_id, result, false, now).await? {
            insert_target_event(&mut tx, case_id, result, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Records the outcomes of a run as they come, in one transaction, while `owner` still
    /// holds the case's lease (which the same write extends to `lease_until`). A target that
    /// already has its outcome keeps it. Returns the results that were written, or `None` when
    /// the lease is gone (another runner owns the case now, and nothing was written).
    pub async fn record_targets(
        &self,
        case_id: &str,
        owner: &str,
        results: &[TargetResult],
        lease_until: i64,
        now: i64,
    ) -> Result<Option<Vec<TargetStatus>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !extend_lease(&mut tx, case_id, owner, lease_until).await? {
            tx.rollback().await?;
            return Ok(None);
        }
        let mut written = Vec::with_capacity(results.len());
        for result in results {
            if update_target(&mut tx, case_id, result, true, now).await? {
                written.push(result);
            }
        }
        // Events last: the chain's head is taken after every other row this write touches.
        for result in &written {
            insert_target_event(&mut tx, case_id, result, now).await?;
        }
        tx.commit().await?;
        Ok(Some(written.iter().map(|r| r.status).collect()))
    }

    /// Ends an execution this owner holds: `executing -> done | failed`.
    pub async fn finish(&self, case_id: &str, owner: &str, state: CaseState, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let finished = sqlx::query(
            "UPDATE cases SET state = $1, lease_owner = NULL, lease_until = NULL, updated_at = $2, version = version + 1 \
             WHERE id = $3 AND state = 'executing' AND lease_owner = $4",
        )
        .bind(state.as_str())
        .bind(now)
        .bind(case_id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
        if finished.rows_affected() != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        release_alert_key(&mut tx, case_id).await?;
        insert_event(&mut tx, Some(case_id), None, state.as_str(), None, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Cases waiting to be executed: approved, or executing with a lapsed lease.
    pub async fn claimable(&self, now: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM cases WHERE state = 'approved' OR (state = 'executing' AND (lease_until IS NULL OR lease_until < $1)) \
             ORDER BY created_at LIMIT 100",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Moves the end of `owner`'s lease on an executing case to `lease_until`; false when the lease
/// is not theirs (any more).
async fn extend_lease(conn: &mut sqlx::AnyConnection, case_id: &str, owner: &str, lease_until: i64) -> Result<bool, StoreError> {
    let extended = sqlx::query("UPDATE cases SET lease_until = $1 WHERE id = $2 AND state = 'executing' AND lease_owner = $3")
        .bind(lease_until)
        .bind(case_id)
        .bind(owner)
        .execute(conn)
        .await?;
    Ok(extended.rows_affected() == 1)
}

/// Writes one target's outcome; with `only_pending`, a target that already has an outcome is
/// left alone. Says whether it wrote.
async fn update_target(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    case_id: &str,
    result: &TargetResult,
    only_pending: bool,
    now: i64,
) -> Result<bool, StoreError> {
    let receipt = result.receipt.as_ref();
    let guard = if only_pending { " AND status = 'pending'" } else { "" };
    let sql = format!(
        "UPDATE case_targets SET status = $1, graph_status = $2, detail = $3, user_oid = COALESCE($4, user_oid), updated_at = $5, \
         graph_code = $6, graph_request_id = $7, client_request_id = $8, graph_date = $9 WHERE case_id = $10 AND position = $11{guard}"
    );
    let updated = sqlx::query(&sql)
        .bind(result.status.as_str())
        .bind(result.graph_status)
        .bind(&result.detail)
        .bind(result.user_oid.as_deref())
        .bind(now)
        .bind(result.graph_code.as_deref())
        .bind(receipt.and_then(|r| r.request_id.as_deref()))
        .bind(receipt.map(|r| r.client_request_id.as_str()))
        .bind(receipt.and_then(|r| r.date.as_deref()))
        .bind(case_id)
        .bind(result.position)
        .execute(&mut **tx)
        .await?;
    Ok(updated.rows_affected() == 1)
}

/// The history event of one target's outcome, with Graph's answer as data.
async fn insert_target_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    case_id: &str,
    result: &TargetResult,
    now: i64,
) -> Result<(), StoreError> {
    let receipt = result.receipt.as_ref();
    let event = format!("target {}: {}", result.position, result.detail);
    let data = serde_json::json!({
        "target": result.position,
        "status": result.status.as_str(),
        "graph_status": result.graph_status,
        "graph_code": result.graph_code,
        "user_oid": result.user_oid,
        "graph": receipt,
    })
    .to_string();
    let kind = format!("target_{}", result.status.as_str());
    insert_event_with_data(tx, Some(case_id), None, &kind, Some(&event), Some(&data), now).await
}
