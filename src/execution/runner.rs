//! The case runner: claims approved cases with a lease, runs the executor, records outcomes as
//! they come, and sweeps expired proposals and abandoned runs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::progress::{ProgressSink, RecordedProgress, show_progress};
pub use crate::cases::TargetResult;
use crate::cases::{Case, CaseState, final_state, now_ms};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Carries out a case's targets (the Graph calls).
#[async_trait]
pub trait CaseExecutor: Send + Sync {
    /// Executes every pending target of `case`. Outcomes may be reported to `progress` as they
    /// come (the run stops when it says so); every outcome it did not record is returned.
    async fn execute(&self, case: &Case, progress: &dyn ProgressSink) -> Vec<TargetResult>;
}

/// Told whenever a case changes, to update its card.
#[async_trait]
pub trait CaseObserver: Send + Sync {
    /// The case after the change.
    async fn case_changed(&self, case: &Case);

    /// A running case as recorded so far, with `waiting` targets held back by `Retry-After`.
    async fn progress(&self, _case: &Case, _waiting: usize) {}
}

/// Claims and runs approved cases.
pub struct CaseRunner {
    store: Store,
    executor: Arc<dyn CaseExecutor>,
    observer: Arc<dyn CaseObserver>,
    owner: String,
    lease: Duration,
    progress_every: Duration,
    metrics: Arc<Metrics>,
}

impl CaseRunner {
    /// A runner identified as `owner` (unique per process) holding leases of `lease` and
    /// showing a run's progress on its card at most once per `progress_every`.
    pub fn new(
        store: Store,
        executor: Arc<dyn CaseExecutor>,
        observer: Arc<dyn CaseObserver>,
        owner: String,
        lease: Duration,
        progress_every: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { store, executor, observer, owner, lease, progress_every, metrics }
    }

    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Runs one case if this runner wins its claim; returns its final state, or `None` when
    /// another runner holds it or it is not runnable.
    pub async fn run(&self, case_id: &str) -> Result<Option<CaseState>, StoreError> {
        let Some(case) = self.store.claim_for_execution(case_id, &self.owner, self.lease_ms(), now_ms()).await? else {
            return Ok(None);
        };
        tracing::info!(case.id = %case.id, targets = case.targets.len(), "executing case");
        self.observer.case_changed(&case).await;

        let (progress, changes) = RecordedProgress::new(self.store.clone(), &case.id, &self.owner, self.lease_ms());
        let shown =
            tokio::spawn(show_progress(self.store.clone(), Arc::clone(&self.observer), case.id.clone(), changes, self.progress_every));
        // What the executor returns is what it could not record as it went: recorded now.
        let rest = {
            let execution = self.executor.execute(&case, &progress);
            tokio::pin!(execution);
            let mut renew = tokio::time::interval(self.lease / 3);
            renew.tick().await;
            loop {
                tokio::select! {
                    results = &mut execution => break results,
                    _ = renew.tick() => {
                        if !self.store.renew_lease(&case.id, &self.owner, now_ms() + self.lease_ms()).await.unwrap_or(false) {
                            tracing::warn!(case.id = %case.id, "could not renew the execution lease");
                        }
                    }
                }
            }
        };
        drop(progress);
        if let Err(err) = shown.await {
            tracing::warn!(case.id = %case.id, error = %err, "the progress updater ended abnormally");
        }
        let now = now_ms();
        if self.store.record_targets(&case.id, &self.owner, &rest, now + self.lease_ms(), now).await?.is_none() {
            tracing::warn!(case.id = %case.id, "lost the execution lease before recording the outcomes; another runner will finish it");
            return Ok(None);
        }
        let recorded = self.store.case(&case.id).await?.unwrap_or(case);
        let state = final_state(&recorded.targets);
        if !self.store.finish(&recorded.id, &self.owner, state, now_ms()).await? {
            tracing::warn!(case.id = %recorded.id, "lost the execution lease before finishing; another runner will finish it");
            return Ok(None);
        }
        tracing::info!(case.id = %recorded.id, state = %state, "case finished");
        if let Some(finished) = self.store.case(&recorded.id).await? {
            self.observer.case_changed(&finished).await;
        }
        Ok(Some(state))
    }

    /// Expires overdue proposals and runs every claimable case once.
    pub async fn sweep(&self) -> Result<(), StoreError> {
        for case in self.store.expire_due(now_ms()).await? {
            tracing::info!(case.id = %case.id, "case expired without a decision");
            self.observer.case_changed(&case).await;
        }
        for id in self.store.claimable(now_ms()).await? {
            if let Err(err) = self.run(&id).await {
                tracing::error!(case.id = %id, error = %err, "could not run case");
            }
        }
        Ok(())
    }

    /// Sweeps now (start-up recovery) and then every `every`; each finished sweep is counted in
    /// `chatwarden_case_sweeps_total` (a sweeper that stopped shows as a flat counter).
    pub(crate) fn spawn_sweeper(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let runner = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let result = match runner.sweep().await {
                    Ok(()) => "ok",
                    Err(err) => {
                        tracing::error!(error = %err, "case sweep failed");
                        "error"
                    }
                };
                runner.metrics.inc("chatwarden_case_sweeps_total", &[("result", result)]);
                tokio::time::sleep(every).await;
            }
        })
    }
}
