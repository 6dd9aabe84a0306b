//! The case runner against a real store, on SQLite and on the PostgreSQL server of this machine:
//! what its lease does while a run records outcomes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatwarden::cases::{
    Actor, Case, CaseKind, CaseSource, CaseState, CaseSummary, Decision, NewCase, NewTarget, Policy, TargetStatus, now_ms,
};
use chatwarden::execution::{CaseExecutor, CaseObserver, CaseRunner, PendingTargets, ProgressSink, Report, TargetResult};
use chatwarden::metrics::Metrics;
use chatwarden::store::{Created, Store};

use crate::helpers::{postgres_url, sqlite_url, target_result};

/// Reports every pending target done, one outcome per write, as an executor does when Graph
/// answers one at a time.
struct OneAtATime;

#[async_trait]
impl CaseExecutor for OneAtATime {
    async fn execute(&self, _case: &Case, targets: &dyn PendingTargets, progress: &dyn ProgressSink) -> Vec<TargetResult> {
        let mut after = None;
        while let Ok(page) = targets.after(after, 50).await {
            let Some(last) = page.last() else { break };
            after = Some(last.position);
            for target in &page {
                let done = target_result(target.position, TargetStatus::Done, Some(204), "removed", None);
                assert_eq!(progress.finished(&[done]).await, Report::Recorded);
            }
        }
        Vec::new()
    }
}

/// A card nobody reads.
struct NoCard;

#[async_trait]
impl CaseObserver for NoCard {
    async fn case_changed(&self, _case: &Case) {}

    async fn run_changed(&self, _run: &CaseSummary) {}
}

/// An approved `/remove-external` case of `targets` targets.
async fn approved_case(store: &Store, targets: usize) -> String {
    let admin = |oid: &str| Actor { oid: oid.into(), name: oid.into(), user_id: format!("29:{oid}") };
    let new = NewCase {
        kind: CaseKind::RemoveExternal,
        source: CaseSource::Command,
        tenant_id: "tenant-1".into(),
        requester: admin("alice"),
        reason: None,
        targets: (0..targets)
            .map(|i| NewTarget {
                thread_id: Some(format!("19:chat{i}@thread.v2")),
                user_ref: format!("u{i}@contoso.com"),
                user_oid: Some(format!("oid-{i}")),
                user_tenant_id: "tenant-1".into(),
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
    case.id
}

/// The lease is renewed every 10 ms while 300 outcomes are written one transaction each, so
/// renewals keep falling inside a write that holds the case's row. Renewing must not stop the
/// run from finishing its write: on PostgreSQL the renewal would wait for that write's lock
/// forever, and the case would stay `executing`, its row locked against every other runner.
async fn a_lease_renewal_during_an_outcome_write_does_not_stall_the_run(store: Store) {
    let id = approved_case(&store, 300).await;
    let runner = CaseRunner::new(
        store.clone(),
        Arc::new(OneAtATime),
        Arc::new(NoCard),
        "runner-a".into(),
        Duration::from_millis(30),
        Duration::from_secs(5),
        Arc::new(Metrics::default()),
    );
    let run = tokio::time::timeout(Duration::from_secs(60), runner.run(&id)).await;
    assert!(run.is_ok(), "the run stalled: a lease renewal waited on the run's own write");
    assert_eq!(run.unwrap().unwrap(), Some(CaseState::Done));
    let summary = store.case_summary(&id).await.unwrap().unwrap();
    assert_eq!((summary.tally.done, summary.tally.pending), (300, 0));
}

on_both_stores!(a_lease_renewal_during_an_outcome_write_does_not_stall_the_run);
