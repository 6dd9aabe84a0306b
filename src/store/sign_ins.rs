//! Pending sign-ins: the approval an admin gave before signing in, kept until they have.

use sqlx::Row as _;

use super::cases::corrupt;
use super::{Store, StoreError};
use crate::cases::Decision;

impl Store {
    /// Remembers that `admin_oid` approved `case_id` and must sign in first (one pending
    /// approval per admin; a newer one replaces the older).
    pub async fn set_pending_signin(
        &self,
        admin_oid: &str,
        case_id: &str,
        decision: Decision,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        let decision = match decision {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        };
        sqlx::query(
            "INSERT INTO pending_signins (admin_oid, case_id, decision, created_at, reason) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (admin_oid) DO UPDATE SET case_id = excluded.case_id, decision = excluded.decision, \
             created_at = excluded.created_at, reason = excluded.reason",
        )
        .bind(admin_oid)
        .bind(case_id)
        .bind(decision)
        .bind(now)
        .bind(reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes (and removes) the approval `admin_oid` left pending, if it is younger than
    /// `max_age_ms`: the case, the decision and its reason.
    pub async fn take_pending_signin(
        &self,
        admin_oid: &str,
        max_age_ms: i64,
        now: i64,
    ) -> Result<Option<(String, Decision, Option<String>)>, StoreError> {
        let row = sqlx::query("DELETE FROM pending_signins WHERE admin_oid = $1 RETURNING case_id, decision, created_at, reason")
            .bind(admin_oid)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let created_at: i64 = row.try_get("created_at")?;
        if now - created_at > max_age_ms {
            return Ok(None);
        }
        let decision = match row.try_get::<String, _>("decision")?.as_str() {
            "approve" => Decision::Approve,
            "reject" => Decision::Reject,
            other => return Err(corrupt("pending decision", other)),
        };
        Ok(Some((row.try_get("case_id")?, decision, row.try_get("reason")?)))
    }
}
