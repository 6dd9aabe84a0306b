//! The case runner: claims approved cases with a lease, runs the executor, records outcomes as
//! they come, and sweeps expired proposals and abandoned runs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;

use super::pending::{PendingTargets, StoredTargets};
use super::progress::{ProgressSink, RecordedProgress, show_progress};
pub use crate::cases::TargetResult;
use crate::cases::{Case, CaseState, CaseSummary, now_ms};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Carries out a case's targets (the Graph calls).
#[async_trait]
pub trait CaseExecutor: Send + Sync {
    /// Executes every pending target of `case`, taken from `targets` a page at a time (not from
    /// `case.targets`, which may hold only the first few). Outcomes may be reported to `progress`
    /// as they come (the run stops when it says so); every outcome it did not record is returned.
    async fn execute(&self, case: &Case, targets: &dyn PendingTargets, progress: &dyn ProgressSink) -> Vec<TargetResult>;
}

/// Told whenever a case changes, to update its card.
#[async_trait]
pub trait CaseObserver: Send + Sync {
    /// The case after the change (a decision, expiry).
    async fn case_changed(&self, case: &Case);

    /// A run started or ended: the case's summary after the change.
    async fn run_changed(&self, _run: &CaseSummary) {}

    /// A running case as recorded so far, with `waiting` targets held back by `Retry-After`.
    async fn progress(&self, _run: &CaseSummary, _waiting: usize) {}
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
        let Some(claimed) = self.store.claim_for_execution(case_id, &self.owner, self.lease_ms(), now_ms()).await? else {
            return Ok(None);
        };
        tracing::info!(case.id = %claimed.case.id, targets = claimed.tally.total(), pending = claimed.tally.pending, "executing case");
        self.observer.run_changed(&claimed).await;
        let case = claimed.case;

        let (progress, changes) = RecordedProgress::new(self.store.clone(), &case.id, &self.owner, self.lease_ms());
        let shown =
            tokio::spawn(show_progress(self.store.clone(), Arc::clone(&self.observer), case.id.clone(), changes, self.progress_every));
        // What the executor returns is what it could not record as it went: recorded now.
        let rest = {
            let targets = StoredTargets::new(self.store.clone(), &case.id);
            let (ended, run_ended) = oneshot::channel();
            let execution = async {
                let results = self.executor.execute(&case, &targets, &progress).await;
                let _ = ended.send(());
                results
            };
            tokio::join!(execution, self.keep_lease(&case.id, run_ended)).0
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
        let tally = self.store.case_summary(&case.id).await?.map(|recorded| recorded.tally).unwrap_or_default();
        let Some(state) = tally.final_state() else {
            // A read of the pending targets failed mid-run: they stay pending, and the case goes
            // to the next runner once this lease lapses.
            tracing::error!(case.id = %case.id, pending = tally.pending, "the run ended with targets still pending; the case is left for the next run");
            return Ok(None);
        };
        if !self.store.finish(&case.id, &self.owner, state, now_ms()).await? {
            tracing::warn!(case.id = %case.id, "lost the execution lease before finishing; another runner will finish it");
            return Ok(None);
        }
        tracing::info!(case.id = %case.id, state = %state, "case finished");
        if let Some(finished) = self.store.case_summary(&case.id).await? {
            self.observer.run_changed(&finished).await;
        }
        Ok(Some(state))
    }

    /// Renews `case_id`'s lease every third of it until `run_ended`. It runs beside the run, not
    /// in turns with it: a renewal waits for the run's own write to the case's row (which takes
    /// the lease row first), and that write must be able to finish meanwhile.
    async fn keep_lease(&self, case_id: &str, mut run_ended: oneshot::Receiver<()>) {
        let mut renew = tokio::time::interval(self.lease / 3);
        renew.tick().await;
        loop {
            tokio::select! {
                _ = &mut run_ended => return,
                _ = renew.tick() => {
                    if !self.store.renew_lease(case_id, &self.owner, now_ms() + self.lease_ms()).await.unwrap_or(false) {
                        tracing::warn!(case.id = %case_id, "could not renew the execution lease");
                    }
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::cases::{Actor, CaseKind, CaseSource, Decision, NewCase, NewTarget, Policy, TargetStatus};
    use crate::store::Created;

    /// Does at most `per_run` pending targets per run (all done), noting the positions it got.
    struct Partial {
        per_run: usize,
        seen: Mutex<Vec<i64>>,
    }

    #[async_trait]
    impl CaseExecutor for Partial {
        async fn execute(&self, _case: &Case, targets: &dyn PendingTargets, _progress: &dyn ProgressSink) -> Vec<TargetResult> {
            let page = targets.after(None, self.per_run).await.unwrap_or_default();
            self.seen.lock().unwrap().extend(page.iter().map(|t| t.position));
            page.iter()
                .map(|t| TargetResult {
                    position: t.position,
                    status: TargetStatus::Done,
                    graph_status: Some(204),
                    detail: "removed".into(),
                    user_oid: None,
                    graph_code: None,
                    receipt: None,
                })
                .collect()
        }
    }

    /// Notes each run change: the state and the tally's done and total.
    #[derive(Default)]
    struct Runs(Mutex<Vec<(CaseState, usize, usize)>>);

    #[async_trait]
    impl CaseObserver for Runs {
        async fn case_changed(&self, _: &Case) {}

        async fn run_changed(&self, run: &CaseSummary) {
            self.0.lock().unwrap().push((run.case.state, run.tally.done, run.tally.total()));
        }
    }

    fn runner(store: &Store, executor: Arc<Partial>, observer: Arc<Runs>, owner: &str, lease: Duration) -> CaseRunner {
        CaseRunner::new(store.clone(), executor, observer, owner.into(), lease, Duration::from_secs(5), Arc::new(Metrics::default()))
    }

    #[tokio::test]
    async fn a_run_that_leaves_targets_pending_does_not_finish_the_case_and_the_next_run_does() {
        let path = std::env::temp_dir().join(format!("chatwarden-runner-{:016x}.db", fastrand::u64(..)));
        let store = Store::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        let admin = |oid: &str| Actor { oid: oid.into(), name: oid.into(), user_id: format!("29:{oid}") };
        let new = NewCase {
            kind: CaseKind::RemoveExternal,
            source: CaseSource::Command,
            tenant_id: "t".into(),
            requester: admin("alice"),
            reason: None,
            targets: (0..3)
                .map(|i| NewTarget {
                    thread_id: Some(format!("19:chat{i}@thread.v2")),
                    user_ref: format!("u{i}@contoso.com"),
                    user_oid: Some(format!("oid-{i}")),
                    user_tenant_id: "t".into(),
                    display_name: None,
                })
                .collect(),
            evidence: vec![],
            no_evidence: true,
            ttl_ms: 60_000,
        };
        let Created::New(case) = store.create_case(&new, None, now_ms()).await.unwrap() else { panic!("not created") };
        let policy = Policy { admins: None, require_second_approver: true, escalation_admins: Default::default() };
        store.decide(&case.id, &admin("bob"), Decision::Approve, None, &policy, now_ms()).await.unwrap();

        let runs = Arc::new(Runs::default());
        let short = Arc::new(Partial { per_run: 1, seen: Mutex::default() });
        let first = runner(&store, Arc::clone(&short), Arc::clone(&runs), "runner-a", Duration::from_millis(300));
        assert_eq!(first.run(&case.id).await.unwrap(), None, "two targets still pending: not finished");
        let stored = store.case(&case.id).await.unwrap().unwrap();
        assert_eq!(stored.state, CaseState::Executing);
        assert_eq!(stored.targets.iter().filter(|t| t.status == TargetStatus::Pending).count(), 2);
        assert_eq!(*runs.0.lock().unwrap(), [(CaseState::Executing, 0, 3)], "the card says it runs, and nothing more");

        // Once the lease lapses the next runner takes the case and sends only what is pending.
        let full = Arc::new(Partial { per_run: 100, seen: Mutex::default() });
        let next = runner(&store, Arc::clone(&full), Arc::clone(&runs), "runner-b", Duration::from_secs(60));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let state = loop {
            if let Some(state) = next.run(&case.id).await.unwrap() {
                break state;
            }
            assert!(tokio::time::Instant::now() < deadline, "the lapsed lease was never reclaimed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(state, CaseState::Done);
        assert_eq!(*short.seen.lock().unwrap(), [0]);
        assert_eq!(*full.seen.lock().unwrap(), [1, 2]);
        assert_eq!(runs.0.lock().unwrap().last(), Some(&(CaseState::Done, 3, 3)), "the final card counts every target");
    }
}
