//! Activity dedupe keys: each activity (or other one-time key) is claimed once, so a redelivered
//! activity or a repeated token exchange changes nothing the second time.

use sqlx::{Any, Transaction};

use super::{Store, StoreError};

/// Claims an activity key; `Ok(false)` when it was already claimed.
pub(super) async fn claim_activity(tx: &mut Transaction<'_, Any>, key: &str, now: i64) -> Result<bool, StoreError> {
    let result = sqlx::query("INSERT INTO processed_activities (activity_key, case_id, processed_at) VALUES ($1, NULL, $2) ON CONFLICT (activity_key) DO NOTHING")
        .bind(key)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(result.rows_affected() == 1)
}

impl Store {
    /// Claims a one-time key (e.g. a repeated SSO token exchange); `false` when already claimed.
    pub async fn claim_key(&self, key: &str, now: i64) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let fresh = claim_activity(&mut tx, key, now).await?;
        tx.commit().await?;
        Ok(fresh)
    }
}
