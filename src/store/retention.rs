//! Retention: audit records, activity dedupe keys and fetched poll contents older than the
//! configured age are deleted in bounded batches. What a case needs is kept: records that are
//! evidence of a case, and the keys of open cases. The history (refusals included) is one hash
//! chain and is pruned only from its start, by history retention (`store::history`).

use sqlx::Row as _;

use super::{Store, StoreError};
use crate::audit::record::AuditRecord;

/// How much one batch of [`Store::prune_batch`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Audit records (with their lookup rows).
    pub audit_records: u64,
    /// Activity and alert dedupe keys of closed or no cases.
    pub dedupe_keys: u64,
    /// Poll content ids already fetched.
    pub poll_contents: u64,
}

impl Pruned {
    /// Whether the batch deleted nothing (the sweep is done).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    fn add(&mut self, other: Pruned) {
        self.audit_records += other.audit_records;
        self.dedupe_keys += other.dedupe_keys;
        self.poll_contents += other.poll_contents;
    }
}

impl Store {
    /// Deletes up to `batch` rows of each kind older than `cutoff` (Unix ms). Audit records are
    /// taken oldest first from after sequence number `after`; returns what was deleted and where
    /// the next batch of records starts (`None` once no older record is left).
    pub async fn prune_batch(&self, cutoff: i64, after: i64, batch: i64) -> Result<(Pruned, Option<i64>), StoreError> {
        let dedupe_keys = sqlx::query(
            "DELETE FROM processed_activities WHERE activity_key IN (SELECT activity_key FROM processed_activities \
             WHERE processed_at < $1 AND (case_id IS NULL OR case_id NOT IN \
             (SELECT id FROM cases WHERE state IN ('proposed', 'approved', 'executing'))) LIMIT $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let poll_contents = sqlx::query(
            "DELETE FROM poll_contents WHERE content_id IN (SELECT content_id FROM poll_contents WHERE fetched_at < $1 LIMIT $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(&self.pool)
        .await?
        .rows_affected();
        let (audit_records, next) = self.prune_audit_batch(cutoff, after, batch).await?;
        Ok((Pruned { audit_records, dedupe_keys, poll_contents }, next))
    }

    /// Deletes the records among the `batch` oldest after `after` that were received before
    /// `cutoff` and are no case's evidence, with their lookup rows (found from the record itself).
    async fn prune_audit_batch(&self, cutoff: i64, after: i64, batch: i64) -> Result<(u64, Option<i64>), StoreError> {
        // Sequence numbers follow arrival, so walking them in order meets old records first and
        // stops at the first new one: no scan of the table, no index on the arrival time.
        let rows = sqlx::query(
            "SELECT r.seq, r.ingested_at, r.raw, \
             (SELECT COUNT(*) FROM case_evidence e WHERE e.audit_record_id = r.id) AS evidence \
             FROM audit_records r WHERE r.seq > $1 ORDER BY r.seq LIMIT $2",
        )
        .bind(after)
        .bind(batch)
        .fetch_all(&self.pool)
        .await?;
        let mut doomed = Vec::new();
        let mut last = None;
        let mut reached_new = rows.len() < usize::try_from(batch).unwrap_or(usize::MAX);
        for row in &rows {
            let seq: i64 = row.try_get("seq")?;
            if row.try_get::<i64, _>("ingested_at")? >= cutoff {
                reached_new = true;
                break;
            }
            last = Some(seq);
            if row.try_get::<i64, _>("evidence")? == 0 {
                doomed.push((seq, row.try_get::<String, _>("raw")?));
            }
        }
        let parsed: Vec<(AuditRecord, i64)> =
            doomed.iter().filter_map(|(seq, raw)| AuditRecord::from_json(raw).ok().map(|record| (record, *seq))).collect();
        let lookups = super::audit_index::lookup_rows(parsed.iter().map(|(record, seq)| (record, *seq)));
        let mut tx = self.pool.begin().await?;
        for (bucket, key_hash, seq) in lookups {
            sqlx::query("DELETE FROM audit_lookup WHERE bucket = $1 AND key_hash = $2 AND record_seq = $3")
                .bind(bucket)
                .bind(key_hash)
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        for (seq, _) in &doomed {
            sqlx::query("DELETE FROM audit_records WHERE seq = $1").bind(seq).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let next = if reached_new { None } else { last };
        Ok((doomed.len() as u64, next))
    }

    /// Prunes everything older than `cutoff`, batch after batch; returns the totals.
    pub async fn prune_before(&self, cutoff: i64, batch: i64) -> Result<Pruned, StoreError> {
        let mut total = Pruned::default();
        let mut after = 0;
        loop {
            let (pruned, next) = self.prune_batch(cutoff, after, batch).await?;
            total.add(pruned);
            match next {
                Some(next) => after = next,
                None if pruned.is_empty() => return Ok(total),
                None => after = i64::MAX,
            }
        }
    }
}
