//! Progress of a running case. An executor reports outcomes as Graph gives them; the runner's
//! sink makes each report durable at once, under the case's lease, so a process that dies mid-run
//! leaves every answered target recorded: the next runner sends only what is still pending. The
//! same reports drive the card's progress line, updated at most once per interval (Teams limits
//! how often a bot may edit one message).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::CaseObserver;
use crate::cases::{TargetResult, now_ms};
use crate::store::Store;

/// What a sink did with a round of final outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Durable: the executor need not keep them.
    Recorded,
    /// Not recorded (no store, or it failed): the executor keeps them and returns them at the end.
    NotRecorded,
    /// The lease is gone and another runner owns the case: the run stops here.
    Stop,
}

/// Where an executor reports outcomes while a case runs.
#[async_trait]
pub trait ProgressSink: Send + Sync {
    /// Outcomes that are final, and what became of them.
    async fn finished(&self, results: &[TargetResult]) -> Report;

    /// How many targets are waiting on Graph's `Retry-After` right now.
    fn waiting(&self, targets: usize);
}

/// A sink that keeps nothing: for running an executor on its own (benchmarks, tests).
pub struct Unrecorded;

#[async_trait]
impl ProgressSink for Unrecorded {
    async fn finished(&self, _results: &[TargetResult]) -> Report {
        Report::NotRecorded
    }

    fn waiting(&self, _targets: usize) {}
}

/// The runner's sink: records outcomes as they come while the lease holds, and tells the card
/// updater that something changed (its value: how many targets wait on `Retry-After`).
pub struct RecordedProgress {
    store: Store,
    case_id: String,
    owner: String,
    lease_ms: i64,
    changes: watch::Sender<usize>,
}

impl RecordedProgress {
    /// A sink for `case_id` run by `owner`; every write extends the lease by `lease_ms`. The
    /// receiver sees each change.
    pub fn new(store: Store, case_id: &str, owner: &str, lease_ms: i64) -> (Self, watch::Receiver<usize>) {
        let (changes, receiver) = watch::channel(0);
        let sink = Self { store, case_id: case_id.to_owned(), owner: owner.to_owned(), lease_ms, changes };
        (sink, receiver)
    }
}

#[async_trait]
impl ProgressSink for RecordedProgress {
    async fn finished(&self, results: &[TargetResult]) -> Report {
        if results.is_empty() {
            return Report::Recorded;
        }
        let now = now_ms();
        match self.store.record_targets(&self.case_id, &self.owner, results, now + self.lease_ms, now).await {
            Ok(Some(_)) => {
                self.changes.send_modify(|_| {});
                Report::Recorded
            }
            Ok(None) => {
                tracing::warn!(case.id = %self.case_id, "lost the execution lease mid-run; stopping and leaving the rest to its new owner");
                Report::Stop
            }
            Err(err) => {
                // Not fatal: the runner records whatever is still unrecorded when the run ends.
                tracing::error!(case.id = %self.case_id, error = %err, "could not record target outcomes as they came");
                Report::NotRecorded
            }
        }
    }

    fn waiting(&self, targets: usize) {
        self.changes.send_if_modified(|waiting| std::mem::replace(waiting, targets) != targets);
    }
}

/// Shows a run's progress on its card until the sink is dropped: after a change, at most one
/// update per `every`. It reads the case's summary from the store, so the card shows what is
/// recorded, and no update holds more of a case than its card shows.
pub(crate) async fn show_progress(
    store: Store,
    observer: Arc<dyn CaseObserver>,
    case_id: String,
    mut changes: watch::Receiver<usize>,
    every: Duration,
) {
    let mut last_update: Option<tokio::time::Instant> = None;
    loop {
        if changes.changed().await.is_err() {
            return;
        }
        if let Some(at) = last_update {
            let due = tokio::time::sleep_until(at + every);
            tokio::pin!(due);
            loop {
                tokio::select! {
                    () = &mut due => break,
                    changed = changes.changed() => if changed.is_err() { return },
                }
            }
        }
        let waiting = *changes.borrow_and_update();
        match store.case_summary(&case_id).await {
            Ok(Some(run)) => observer.progress(&run, waiting).await,
            Ok(None) => return,
            Err(err) => tracing::warn!(case.id = %case_id, error = %err, "could not read the case to show its progress"),
        }
        last_update = Some(tokio::time::Instant::now());
    }
}
