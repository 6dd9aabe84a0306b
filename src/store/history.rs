//! The history as a chain: reading it in order, verifying it, sealing events written before the
//! chain existed, the forwarding cursor, and history retention with signed checkpoints.

use secrecy::SecretString;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::events::insert_event_with_data;
use super::{Store, StoreError};
use crate::history::{Canonical, ChainBreak, ChainCheck, Checkpoint, GENESIS, HistoryEvent, checkpoint_signature};

const EVENT_COLUMNS: &str = "seq, at, case_id, actor_oid, actor_name, kind, detail, data, prev_hash, hash";

/// How many events one page of a walk over the chain reads.
const PAGE: i64 = 1000;

fn history_event(row: &AnyRow) -> Result<HistoryEvent, StoreError> {
    Ok(HistoryEvent {
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        case_id: row.try_get("case_id")?,
        actor_oid: row.try_get("actor_oid")?,
        actor_name: row.try_get("actor_name")?,
        kind: row.try_get("kind")?,
        detail: row.try_get("detail")?,
        data: row.try_get("data")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

/// Which events an export takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Events at or after (Unix ms).
    pub since: Option<i64>,
    /// Events before (Unix ms).
    pub until: Option<i64>,
    /// Only this case's events.
    pub case_id: Option<String>,
}

/// What `history --verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Events checked.
    pub events: u64,
    /// The checkpoint the chain starts from, when history retention pruned its start.
    pub checkpoint: Option<Checkpoint>,
    /// The chain's last place.
    pub head_seq: i64,
}

/// Why the history does not verify.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The chain is broken at an event.
    #[error(transparent)]
    Broken(#[from] ChainBreak),
    /// The checkpoint's signature is not the one the configured secret gives.
    #[error("the checkpoint at event {seq} is not signed with CHATWARDEN_HISTORY_SECRET: it was forged or the secret changed")]
    BadCheckpoint {
        /// The checkpoint's place.
        seq: i64,
    },
    /// A checkpoint exists but no secret was configured to check it.
    #[error("the chain starts at a checkpoint (event {seq}) whose signature needs CHATWARDEN_HISTORY_SECRET to be checked")]
    UncheckedCheckpoint {
        /// The checkpoint's place.
        seq: i64,
    },
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for VerifyError {
    fn from(err: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

impl Store {
    /// Up to `limit` events of the chain after place `after`, in order.
    pub async fn history_after(&self, after: i64, limit: i64) -> Result<Vec<HistoryEvent>, StoreError> {
        let rows = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(history_event).collect()
    }

    /// Up to `limit` events that `filter` takes, after place `after`, in order (one page of an
    /// export: memory stays bounded whatever the size of the history).
    pub async fn history_page(&self, filter: &EventFilter, after: i64, limit: i64) -> Result<Vec<HistoryEvent>, StoreError> {
        // Only the conditions given, and `+at` so that the time bounds filter the walk along the
        // chain's index instead of making the planner scan and sort the time index at every
        // page (quadratic over a large history; BENCHMARKS.md, "History export").
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1");
        let mut next = 2;
        for (present, condition) in
            [(filter.since.is_some(), "+at >= "), (filter.until.is_some(), "+at < "), (filter.case_id.is_some(), "case_id = ")]
        {
            if present {
                sql.push_str(&format!(" AND {condition}${next}"));
                next += 1;
            }
        }
        sql.push_str(&format!(" ORDER BY seq LIMIT ${next}"));
        let mut query = sqlx::query(&sql).bind(after);
        if let Some(since) = filter.since {
            query = query.bind(since);
        }
        if let Some(until) = filter.until {
            query = query.bind(until);
        }
        if let Some(case_id) = &filter.case_id {
            query = query.bind(case_id.as_str());
        }
        let rows = query.bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(history_event).collect()
    }

    /// The chain's last place and hash.
    pub async fn chain_head(&self) -> Result<(i64, String), StoreError> {
        let row = sqlx::query("SELECT seq, head FROM history_chain WHERE id = 1").fetch_one(&self.pool).await?;
        Ok((row.try_get("seq")?, row.try_get("head")?))
    }

    /// The checkpoint the chain starts from, when history retention pruned its start.
    pub async fn history_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let row = sqlx::query("SELECT seq, hash, pruned, pruned_at, signature FROM history_checkpoints ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Checkpoint {
                seq: row.try_get("seq")?,
                hash: row.try_get("hash")?,
                pruned: row.try_get("pruned")?,
                pruned_at: row.try_get("pruned_at")?,
                signature: row.try_get("signature")?,
            })
        })
        .transpose()
    }

    /// Walks the whole chain from its start (or checkpoint) to its head and names the first
    /// event that does not match. `secret` checks a checkpoint's signature.
    pub async fn verify_history(&self, secret: Option<&SecretString>) -> Result<Verified, VerifyError> {
        let unsealed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE seq IS NULL OR hash IS NULL").fetch_one(&self.pool).await?;
        if unsealed > 0 {
            return Err(ChainBreak::Unsealed.into());
        }
        let checkpoint = self.history_checkpoint().await?;
        let mut check = match &checkpoint {
            None => ChainCheck::starting_after(0, GENESIS),
            Some(checkpoint) => {
                match secret {
                    None => return Err(VerifyError::UncheckedCheckpoint { seq: checkpoint.seq }),
                    Some(secret) if !checkpoint.signed_with(secret) => return Err(VerifyError::BadCheckpoint { seq: checkpoint.seq }),
                    Some(_) => {}
                }
                ChainCheck::starting_after(checkpoint.seq, &checkpoint.hash)
            }
        };
        let mut after = checkpoint.as_ref().map_or(i64::MIN, |c| c.seq);
        loop {
            let page = self.history_after(after, PAGE).await?;
            for event in &page {
                check.push(event)?;
            }
            match page.last() {
                Some(last) => after = last.seq,
                None => break,
            }
        }
        let (head_seq, head_hash) = self.chain_head().await?;
        let events = check.finish(head_seq, &head_hash)?;
        Ok(Verified { events, checkpoint, head_seq })
    }

    /// Gives events written before the chain existed their places, oldest first; returns how many.
    pub(super) async fn seal_unchained_events(&self) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let pending: Vec<AnyRow> =
            sqlx::query("SELECT id, at, case_id, actor_oid, actor_name, kind, detail, data FROM events WHERE seq IS NULL ORDER BY id")
                .fetch_all(&mut *tx)
                .await?;
        if pending.is_empty() {
            tx.rollback().await?;
            return Ok(0);
        }
        let head = sqlx::query("UPDATE history_chain SET seq = seq WHERE id = 1 RETURNING seq, head").fetch_one(&mut *tx).await?;
        let (mut seq, mut prev): (i64, String) = (head.try_get("seq")?, head.try_get("head")?);
        for row in &pending {
            seq += 1;
            let (case_id, actor_oid, actor_name): (Option<String>, Option<String>, Option<String>) =
                (row.try_get("case_id")?, row.try_get("actor_oid")?, row.try_get("actor_name")?);
            let (kind, detail, data): (String, Option<String>, Option<String>) =
                (row.try_get("kind")?, row.try_get("detail")?, row.try_get("data")?);
            let hash = Canonical {
                actor_name: actor_name.as_deref(),
                actor_oid: actor_oid.as_deref(),
                at: row.try_get("at")?,
                case_id: case_id.as_deref(),
                data: data.as_deref(),
                detail: detail.as_deref(),
                kind: &kind,
                prev_hash: &prev,
                seq,
            }
            .hash();
            sqlx::query("UPDATE events SET seq = $1, prev_hash = $2, hash = $3 WHERE id = $4")
                .bind(seq)
                .bind(&prev)
                .bind(&hash)
                .bind(row.try_get::<i64, _>("id")?)
                .execute(&mut *tx)
                .await?;
            prev = hash;
        }
        sqlx::query("UPDATE history_chain SET seq = $1, head = $2 WHERE id = 1").bind(seq).bind(&prev).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(pending.len() as u64)
    }

    /// The last place the forwarding receiver acknowledged.
    pub async fn forward_cursor(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT seq FROM forward_cursor WHERE id = 1").fetch_one(&self.pool).await?)
    }

    /// Moves the forwarding cursor from `from` to `to` (compare-and-set); `false` when another
    /// forwarder moved it first.
    pub async fn advance_forward_cursor(&self, from: i64, to: i64, now: i64) -> Result<bool, StoreError> {
        let moved = sqlx::query("UPDATE forward_cursor SET seq = $1, updated_at = $2 WHERE id = 1 AND seq = $3")
            .bind(to)
            .bind(now)
            .bind(from)
            .execute(&self.pool)
            .await?;
        Ok(moved.rows_affected() == 1)
    }

    /// Prunes up to `batch` events from the start of the chain: events older than `cutoff`,
    /// of no open case, and (when `keep_after` is given) already forwarded. The last pruned
    /// event's place and hash become a checkpoint signed with `secret`, and the prune itself is
    /// an event of the chain. Returns how many events were pruned.
    pub async fn prune_history_batch(
        &self,
        cutoff: i64,
        keep_after: Option<i64>,
        batch: i64,
        secret: &SecretString,
        now: i64,
    ) -> Result<u64, StoreError> {
        let checkpoint = self.history_checkpoint().await?;
        let start = checkpoint.as_ref().map_or(0, |c| c.seq);
        let blocker: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(e.seq) FROM events e LEFT JOIN cases c ON c.id = e.case_id WHERE e.seq > $1 AND \
             (e.at >= $2 OR c.state IN ('proposed', 'approved', 'executing'))",
        )
        .bind(start)
        .bind(cutoff)
        .fetch_one(&self.pool)
        .await?;
        let (head_seq, _) = self.chain_head().await?;
        let mut last = blocker.map_or(head_seq, |b| b - 1).min(start + batch);
        if let Some(keep_after) = keep_after {
            last = last.min(keep_after);
        }
        if last <= start {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        let hash: Option<String> = sqlx::query_scalar("SELECT hash FROM events WHERE seq = $1").bind(last).fetch_optional(&mut *tx).await?;
        let Some(hash) = hash else {
            tx.rollback().await?;
            return Err(StoreError::Corrupt(format!("history event {last} is missing: run `chatwarden history --verify`")));
        };
        let deleted = sqlx::query("DELETE FROM events WHERE seq > $1 AND seq <= $2").bind(start).bind(last).execute(&mut *tx).await?;
        let pruned = checkpoint.as_ref().map_or(0, |c| c.pruned) + i64::try_from(deleted.rows_affected()).unwrap_or(i64::MAX);
        let signature = checkpoint_signature(secret, last, &hash, pruned, now);
        sqlx::query("INSERT INTO history_checkpoints (seq, hash, pruned, pruned_at, signature) VALUES ($1, $2, $3, $4, $5)")
            .bind(last)
            .bind(&hash)
            .bind(pruned)
            .bind(now)
            .bind(&signature)
            .execute(&mut *tx)
            .await?;
        let data = serde_json::json!({"checkpoint_seq": last, "checkpoint_hash": hash, "pruned": pruned}).to_string();
        let detail = format!("history retention pruned events up to {last} ({pruned} in all); the chain continues from their last hash");
        insert_event_with_data(&mut tx, None, None, "history_pruned", Some(&detail), Some(&data), now).await?;
        tx.commit().await?;
        Ok(deleted.rows_affected())
    }
}
