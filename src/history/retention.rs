//! History retention: the start of the chain older than `CHATWARDEN_HISTORY_RETENTION_DAYS` is
//! pruned in batches, each leaving a signed checkpoint (see `checkpoint.rs`). Events of open
//! cases, and events the forwarding receiver has not acknowledged yet, are never pruned: the
//! sweep stops at the first of them.

use std::time::Duration;

use secrecy::SecretString;

use crate::cases::now_ms;
use crate::store::{Store, StoreError};

/// The advisory lock history sweeps take on PostgreSQL ("chathst1"): one replica prunes at a time.
const PRUNE_LOCK: i64 = 0x6368_6174_6873_7431;

/// Events one batch prunes.
const BATCH: i64 = 1_000;

/// How often the sweep runs (it also runs at start).
const EVERY: Duration = Duration::from_secs(3600);

/// What the history sweep needs.
#[derive(Debug, Clone)]
pub(crate) struct HistoryRetention {
    /// Events older than this are pruned.
    pub keep: Duration,
    /// Signs the checkpoints.
    pub secret: SecretString,
    /// Whether events must wait for the forwarding receiver before they may go.
    pub forwarding: bool,
}

impl HistoryRetention {
    /// Prunes everything the rules allow, batch after batch; returns how many events went.
    pub async fn sweep(&self, store: &Store) -> Result<u64, StoreError> {
        let work = async {
            let mut total = 0;
            loop {
                let now = now_ms();
                let cutoff = now - i64::try_from(self.keep.as_millis()).unwrap_or(i64::MAX);
                let keep_after = if self.forwarding { Some(store.forward_cursor().await?) } else { None };
                let pruned = store.prune_history_batch(cutoff, keep_after, BATCH, &self.secret, now).await?;
                if pruned == 0 {
                    return Ok(total);
                }
                total += pruned;
            }
        };
        store.with_advisory_lock(PRUNE_LOCK, work).await?.unwrap_or(Ok(0))
    }

    /// Sweeps now and every hour for as long as the process runs.
    pub fn spawn(self, store: Store) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match self.sweep(&store).await {
                    Ok(0) => {}
                    Ok(events) => {
                        tracing::info!(events, "history retention pruned the start of the chain; a signed checkpoint keeps it verifiable")
                    }
                    Err(err) => tracing::error!(error = %err, "history retention failed; it runs again in an hour"),
                }
                tokio::time::sleep(EVERY).await;
            }
        })
    }
}
