//! One storage story, run on SQLite and on the PostgreSQL server of this machine.

use std::collections::HashSet;

use chatwarden::audit::record::AuditRecord;
use chatwarden::cases::{Actor, CaseKind, CaseSource, CaseState, Decision, NewCase, NewTarget, Policy, Refusal, TargetStatus, now_ms};
use chatwarden::store::{Created, DecisionOutcome, Pair, Store};

use crate::helpers::{postgres_url, sqlite_url, target_result};

fn actor(oid: &str) -> Actor {
    Actor { oid: oid.into(), name: format!("Admin {oid}"), user_id: format!("29:{oid}") }
}

fn policy() -> Policy {
    Policy {
        admins: Some(HashSet::from(["alice".to_owned(), "bob".to_owned(), "carol".to_owned()])),
        require_second_approver: true,
        escalation_admins: Default::default(),
    }
}

fn new_case(ttl_ms: i64) -> NewCase {
    NewCase {
        kind: CaseKind::RemoveChat,
        source: CaseSource::Command,
        tenant_id: "tenant-1".into(),
        requester: actor("alice"),
        reason: Some("phishing".into()),
        targets: vec![NewTarget {
            thread_id: Some("19:abc@thread.v2".into()),
            user_ref: "victim@contoso.com".into(),
            user_oid: None,
            user_tenant_id: "tenant-1".into(),
            display_name: None,
        }],
        evidence: vec!["audit-1".into()],
        no_evidence: false,
        ttl_ms,
    }
}

async fn open(store: &Store, key: &str) -> String {
    match store.create_case(&new_case(60_000), Some(key), now_ms()).await.unwrap() {
        Created::New(case) => case.id,
        other => panic!("{other:?}"),
    }
}

on_both_stores!(
    a_case_is_opened_once_per_activity,
    a_decision_applies_once_and_later_clicks_change_nothing,
    a_rejection_is_final,
    non_admins_are_refused_and_recorded_outside_the_case,
    the_requester_cannot_approve_their_own_case,
    a_late_decision_expires_the_case,
    overdue_proposals_are_expired_by_the_sweep,
    concurrent_decisions_apply_exactly_once,
    an_execution_claim_is_exclusive_and_a_lapsed_lease_is_reclaimed,
    target_results_and_the_final_state_are_recorded,
    history_is_newest_first_and_events_tell_the_story,
    an_alert_key_lives_only_while_its_case_is_open,
    retention_prunes_old_rows_in_batches_and_keeps_what_cases_need,
    every_state_change_the_store_makes_is_one_the_state_machine_allows,
    a_case_is_reminded_once_and_only_while_it_waits_for_a_decision,
    a_run_reads_pending_targets_in_pages_and_a_summary_counts_them_all,
);

async fn a_case_is_reminded_once_and_only_while_it_waits_for_a_decision(store: Store) {
    let now = now_ms();
    let waiting = open(&store, "conv|1").await;
    let due = |store: Store, before: i64, at: i64| async move {
        store.reminders_due(before, at).await.unwrap().into_iter().map(|c| c.id).collect::<Vec<_>>()
    };
    assert!(due(store.clone(), 10_000, now).await.is_empty(), "60 s left: not due 10 s before expiry");
    assert_eq!(due(store.clone(), 120_000, now).await, std::slice::from_ref(&waiting));
    assert!(due(store.clone(), 120_000, now + 61_000).await.is_empty(), "an expired case is not reminded");
    // Two sweeps (two replicas) race: one wins, and the case is no longer due.
    let (first, second) =
        tokio::join!(store.mark_reminded(&waiting, true, "reminded", now), store.mark_reminded(&waiting, true, "reminded", now));
    assert_eq!([first.unwrap(), second.unwrap()].iter().filter(|won| **won).count(), 1);
    assert!(due(store.clone(), 120_000, now).await.is_empty());
    let case = store.case(&waiting).await.unwrap().unwrap();
    assert_eq!(case.escalated_at, Some(now));
    let kinds: Vec<String> = store.events(&waiting).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["requested", "escalated"]);
    // A decided case is never reminded.
    let decided = open(&store, "conv|2").await;
    store.decide(&decided, &actor("bob"), Decision::Reject, None, &policy(), now).await.unwrap();
    assert!(due(store.clone(), 120_000, now).await.is_empty());
    assert!(!store.mark_reminded(&decided, false, "reminded", now).await.unwrap());
}

async fn a_case_is_opened_once_per_activity(store: Store) {
    let id = open(&store, "conv|1").await;
    let again = store.create_case(&new_case(60_000), Some("conv|1"), now_ms()).await.unwrap();
    assert_eq!(again, Created::Duplicate(Some(id.clone())));
    let case = store.case(&id).await.unwrap().unwrap();
    assert_eq!(case.state, CaseState::Proposed);
    assert_eq!(case.kind, CaseKind::RemoveChat);
    assert_eq!(case.requester, actor("alice"));
    assert_eq!(case.evidence, ["audit-1"]);
    assert_eq!(case.targets.len(), 1);
    assert_eq!(case.targets[0].thread_id.as_deref(), Some("19:abc@thread.v2"));
    assert_eq!(case.targets[0].status, TargetStatus::Pending);
    assert_eq!(store.history(10).await.unwrap().len(), 1);
}

async fn a_decision_applies_once_and_later_clicks_change_nothing(store: Store) {
    let id = open(&store, "conv|1").await;
    let first = store.decide(&id, &actor("bob"), Decision::Approve, Some("conv|2"), &policy(), now_ms()).await.unwrap();
    let DecisionOutcome::Applied(case) = first else { panic!("{first:?}") };
    assert_eq!(case.state, CaseState::Approved);
    assert_eq!(case.approver, Some(actor("bob")));
    // A second click (new activity) by another admin.
    let second = store.decide(&id, &actor("carol"), Decision::Approve, Some("conv|3"), &policy(), now_ms()).await.unwrap();
    assert!(matches!(second, DecisionOutcome::Refused(Refusal::AlreadyDecided(CaseState::Approved), _)), "{second:?}");
    // The first click redelivered.
    let replay = store.decide(&id, &actor("bob"), Decision::Approve, Some("conv|2"), &policy(), now_ms()).await.unwrap();
    assert!(matches!(replay, DecisionOutcome::Duplicate(Some(_))), "{replay:?}");
    let case = store.case(&id).await.unwrap().unwrap();
    assert_eq!(case.approver, Some(actor("bob")));
    let approvals = store.events(&id).await.unwrap().into_iter().filter(|e| e.kind == "approved").count();
    assert_eq!(approvals, 1);
}

async fn a_rejection_is_final(store: Store) {
    let id = open(&store, "conv|1").await;
    let rejected = store.decide(&id, &actor("bob"), Decision::Reject, Some("conv|2"), &policy(), now_ms()).await.unwrap();
    assert!(matches!(rejected, DecisionOutcome::Applied(ref c) if c.state == CaseState::Rejected));
    let later = store.decide(&id, &actor("carol"), Decision::Approve, Some("conv|3"), &policy(), now_ms()).await.unwrap();
    assert!(matches!(later, DecisionOutcome::Refused(Refusal::AlreadyDecided(CaseState::Rejected), _)));
    assert!(store.claim_for_execution(&id, "runner", 60_000, now_ms()).await.unwrap().is_none());
    assert_eq!(store.case(&id).await.unwrap().unwrap().state, CaseState::Rejected);
}

async fn non_admins_are_refused_and_recorded_outside_the_case(store: Store) {
    let id = open(&store, "conv|1").await;
    let outcome = store.decide(&id, &actor("mallory"), Decision::Approve, Some("conv|2"), &policy(), now_ms()).await.unwrap();
    assert!(matches!(outcome, DecisionOutcome::Refused(Refusal::NotAuthorised, _)));
    assert_eq!(store.case(&id).await.unwrap().unwrap().state, CaseState::Proposed);
    assert!(store.events(&id).await.unwrap().iter().all(|e| e.kind != "refused"));
    let refusals = store.refusals(10).await.unwrap();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].actor_oid.as_deref(), Some("mallory"));
}

async fn the_requester_cannot_approve_their_own_case(store: Store) {
    let id = open(&store, "conv|1").await;
    let outcome = store.decide(&id, &actor("alice"), Decision::Approve, Some("conv|2"), &policy(), now_ms()).await.unwrap();
    assert!(matches!(outcome, DecisionOutcome::Refused(Refusal::OwnCase, _)));
    assert_eq!(store.case(&id).await.unwrap().unwrap().state, CaseState::Proposed);
    let mut lax = policy();
    lax.require_second_approver = false;
    let outcome = store.decide(&id, &actor("alice"), Decision::Approve, Some("conv|3"), &lax, now_ms()).await.unwrap();
    assert!(matches!(outcome, DecisionOutcome::Applied(_)));
}

async fn a_late_decision_expires_the_case(store: Store) {
    let Created::New(case) = store.create_case(&new_case(0), Some("conv|1"), now_ms()).await.unwrap() else { panic!() };
    let outcome = store.decide(&case.id, &actor("bob"), Decision::Approve, Some("conv|2"), &policy(), now_ms()).await.unwrap();
    assert!(matches!(outcome, DecisionOutcome::Refused(Refusal::Expired, Some(ref c)) if c.state == CaseState::Expired), "{outcome:?}");
    assert!(store.claimable(now_ms()).await.unwrap().is_empty());
}

async fn overdue_proposals_are_expired_by_the_sweep(store: Store) {
    let now = now_ms();
    let Created::New(old) = store.create_case(&new_case(1_000), None, now - 5_000).await.unwrap() else { panic!() };
    let fresh = open(&store, "conv|9").await;
    let expired = store.expire_due(now).await.unwrap();
    assert_eq!(expired.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), std::slice::from_ref(&old.id));
    assert_eq!(store.case(&old.id).await.unwrap().unwrap().state, CaseState::Expired);
    assert_eq!(store.case(&fresh).await.unwrap().unwrap().state, CaseState::Proposed);
    assert!(store.expire_due(now).await.unwrap().is_empty());
}

async fn concurrent_decisions_apply_exactly_once(store: Store) {
    let id = open(&store, "conv|1").await;
    let deciders: [&'static str; 8] = ["bob", "carol", "bob", "carol", "bob", "carol", "bob", "carol"];
    let attempts = deciders.into_iter().enumerate().map(|(i, who)| {
        let store = store.clone();
        let id = id.clone();
        let decision = if i % 3 == 0 { Decision::Reject } else { Decision::Approve };
        tokio::spawn(async move {
            store.decide(&id, &actor(who), decision, Some(&format!("conv|click-{i}")), &policy(), now_ms()).await.unwrap()
        })
    });
    let outcomes = futures_util::future::join_all(attempts).await;
    let applied = outcomes.iter().filter(|o| matches!(o.as_ref().unwrap(), DecisionOutcome::Applied(_))).count();
    assert_eq!(applied, 1);
    let decided = store.events(&id).await.unwrap().into_iter().filter(|e| e.kind == "approved" || e.kind == "rejected").count();
    assert_eq!(decided, 1);
}

async fn an_execution_claim_is_exclusive_and_a_lapsed_lease_is_reclaimed(store: Store) {
    let id = open(&store, "conv|1").await;
    store.decide(&id, &actor("bob"), Decision::Approve, None, &policy(), now_ms()).await.unwrap();
    assert_eq!(store.claimable(now_ms()).await.unwrap(), std::slice::from_ref(&id));
    let now = now_ms();
    let (a, b) =
        tokio::join!(store.claim_for_execution(&id, "runner-a", 1_000, now), store.claim_for_execution(&id, "runner-b", 1_000, now));
    let winners = [a.unwrap(), b.unwrap()].into_iter().flatten().count();
    assert_eq!(winners, 1);
    // While the lease holds, nobody else may claim it.
    assert!(store.claim_for_execution(&id, "runner-c", 1_000, now + 500).await.unwrap().is_none());
    assert!(store.claimable(now + 500).await.unwrap().is_empty());
    // The holder died: after the lease, another runner takes over.
    assert_eq!(store.claimable(now + 1_500).await.unwrap(), std::slice::from_ref(&id));
    let taken = store.claim_for_execution(&id, "runner-c", 1_000, now + 1_500).await.unwrap();
    assert_eq!(taken.map(|c| c.case.state), Some(CaseState::Executing));
    // The old holder can no longer finish it.
    assert!(
        !store.finish(&id, "runner-a", CaseState::Done, now + 1_600).await.unwrap()
            || !store.finish(&id, "runner-b", CaseState::Done, now + 1_600).await.unwrap()
    );
    assert!(store.finish(&id, "runner-c", CaseState::Done, now + 1_700).await.unwrap());
    assert_eq!(store.case(&id).await.unwrap().unwrap().state, CaseState::Done);
}

async fn target_results_and_the_final_state_are_recorded(store: Store) {
    let id = open(&store, "conv|1").await;
    store.decide(&id, &actor("bob"), Decision::Approve, None, &policy(), now_ms()).await.unwrap();
    store.claim_for_execution(&id, "runner", 60_000, now_ms()).await.unwrap().unwrap();
    store
        .record_target(&id, &target_result(0, TargetStatus::Failed, Some(403), "the approver lacks consent", Some("oid-123")), now_ms())
        .await
        .unwrap();
    assert!(store.finish(&id, "runner", CaseState::Failed, now_ms()).await.unwrap());
    let case = store.case(&id).await.unwrap().unwrap();
    assert_eq!(case.state, CaseState::Failed);
    assert_eq!(case.targets[0].status, TargetStatus::Failed);
    assert_eq!(case.targets[0].graph_status, Some(403));
    assert_eq!(case.targets[0].user_oid.as_deref(), Some("oid-123"));
    assert_eq!(case.targets[0].detail.as_deref(), Some("the approver lacks consent"));
}

async fn a_run_reads_pending_targets_in_pages_and_a_summary_counts_them_all(store: Store) {
    let mut new = new_case(60_000);
    new.targets = (0..40)
        .map(|i| NewTarget {
            thread_id: Some(format!("19:chat{i}@thread.v2")),
            user_ref: format!("user{i}@contoso.com"),
            user_oid: Some(format!("oid-{i}")),
            user_tenant_id: "tenant-1".into(),
            display_name: None,
        })
        .collect();
    let Created::New(case) = store.create_case(&new, Some("conv|bulk"), now_ms()).await.unwrap() else { panic!() };
    store.decide(&case.id, &actor("bob"), Decision::Approve, None, &policy(), now_ms()).await.unwrap();
    let claimed = store.claim_for_execution(&case.id, "runner", 60_000, now_ms()).await.unwrap().unwrap();
    // The claim holds the case's first targets and the count of all of them, not the whole case.
    assert_eq!(claimed.case.state, CaseState::Executing);
    assert_eq!(claimed.case.targets.iter().map(|t| t.position).collect::<Vec<_>>(), (0..15).collect::<Vec<i64>>());
    assert_eq!(claimed.case.evidence, ["audit-1"]);
    assert_eq!((claimed.tally.total(), claimed.tally.pending), (40, 40));
    // Outcomes recorded for 0-4 and 12: pages of the rest, in position order, after a position.
    let results: Vec<_> = [0, 1, 2, 3, 4, 12]
        .into_iter()
        .map(|p| target_result(p, if p == 3 { TargetStatus::Failed } else { TargetStatus::Done }, Some(204), "removed", None))
        .collect();
    store.record_targets(&case.id, "runner", &results, now_ms() + 60_000, now_ms()).await.unwrap().unwrap();
    let page = |after: Option<i64>, limit: usize| {
        let store = store.clone();
        let id = case.id.clone();
        async move { store.pending_targets(&id, after, limit).await.unwrap().into_iter().map(|t| t.position).collect::<Vec<i64>>() }
    };
    assert_eq!(page(None, 10).await, [5, 6, 7, 8, 9, 10, 11, 13, 14, 15]);
    assert_eq!(page(Some(15), 10).await, (16..26).collect::<Vec<i64>>());
    assert_eq!(page(Some(35), 10).await, [36, 37, 38, 39], "the last page is short");
    assert!(page(Some(39), 10).await.is_empty());
    let first = store.pending_targets(&case.id, None, 1).await.unwrap();
    assert_eq!(first[0].user_oid.as_deref(), Some("oid-5"), "a page carries what the Graph call needs");
    assert_eq!(first[0].thread_id.as_deref(), Some("19:chat5@thread.v2"));
    let summary = store.case_summary(&case.id).await.unwrap().unwrap();
    assert_eq!((summary.tally.done, summary.tally.failed, summary.tally.skipped, summary.tally.pending), (5, 1, 0, 34));
    assert_eq!(summary.tally.final_state(), None, "targets still pending: the case is not finished");
    assert_eq!(summary.case.targets[3].status, TargetStatus::Failed);
    assert!(store.case_summary("CW-NONE1").await.unwrap().is_none());
}

async fn history_is_newest_first_and_events_tell_the_story(store: Store) {
    let now = now_ms();
    let Created::New(first) = store.create_case(&new_case(60_000), Some("k1"), now - 2_000).await.unwrap() else { panic!() };
    let Created::New(second) = store.create_case(&new_case(60_000), Some("k2"), now - 1_000).await.unwrap() else { panic!() };
    let history = store.history(10).await.unwrap();
    assert_eq!(history.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), [second.id.clone(), first.id.clone()]);
    assert_eq!(store.history(1).await.unwrap().len(), 1);
    store.decide(&first.id, &actor("bob"), Decision::Reject, None, &policy(), now).await.unwrap();
    let kinds: Vec<String> = store.events(&first.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["requested", "rejected"]);
}

#[tokio::test]
async fn a_sqlite_database_survives_a_restart() {
    let url = sqlite_url();
    let store = Store::connect(&url).await.unwrap();
    let id = open(&store, "conv|1").await;
    store.close().await;
    let reopened = Store::connect(&url).await.unwrap();
    assert_eq!(reopened.case(&id).await.unwrap().unwrap().state, CaseState::Proposed);
    assert_eq!(reopened.create_case(&new_case(60_000), Some("conv|1"), now_ms()).await.unwrap(), Created::Duplicate(Some(id)));
}

#[tokio::test]
async fn a_postgres_database_survives_a_restart() {
    let url = postgres_url().await;
    let store = Store::connect(&url).await.unwrap();
    let id = open(&store, "conv|1").await;
    store.close().await;
    let reopened = Store::connect(&url).await.unwrap();
    assert_eq!(reopened.case(&id).await.unwrap().unwrap().state, CaseState::Proposed);
}

/// Two replicas on one database: what one holds the other cannot take, and a lock whose work
/// was dropped half-way (a timeout, a cancelled task) is not left held by a pooled connection.
#[tokio::test]
async fn an_advisory_lock_whose_work_is_dropped_is_released_for_every_replica() {
    const KEY: i64 = 0x7465_7374_6c6f_636b;
    let url = postgres_url().await;
    let (first, second) = (Store::connect(&url).await.unwrap(), Store::connect(&url).await.unwrap());
    let (held, taken) = tokio::sync::oneshot::channel::<()>();
    let holding = first.clone();
    let holder = tokio::spawn(async move { holding.with_advisory_lock(KEY, async { taken.await.ok() }).await });
    crate::helpers::wait_until("the first replica to hold the lock", async || {
        second.with_advisory_lock(KEY, async {}).await.unwrap().is_none()
    })
    .await;
    drop(held);
    assert_eq!(holder.await.unwrap().unwrap(), Some(None), "the work ran under the lock");
    assert_eq!(second.with_advisory_lock(KEY, async { 1 }).await.unwrap(), Some(1), "unlocked when the work ended");

    let cut_short =
        tokio::time::timeout(std::time::Duration::from_millis(100), first.with_advisory_lock(KEY, std::future::pending::<()>()));
    assert!(cut_short.await.is_err(), "the work never ends");
    crate::helpers::wait_until("the lock of the dropped work to be free", async || {
        second.with_advisory_lock(KEY, async {}).await.unwrap().is_some()
    })
    .await;
    assert_eq!(first.with_advisory_lock(KEY, async { 2 }).await.unwrap(), Some(2), "and the first replica takes it again");
}

async fn an_alert_key_lives_only_while_its_case_is_open(store: Store) {
    let pair = Pair { chat: "19:abc@thread.v2", user_ref: "victim@contoso.com", user_oid: None };
    let key = pair.alert_key();
    // Rejected: the key goes with the decision, and the rejection time closes the pair.
    let rejected = open(&store, &key).await;
    assert_eq!(store.open_alert_case(&pair).await.unwrap(), Some(rejected.clone()));
    assert!(store.is_pair_evidence(&pair, "audit-1").await.unwrap());
    assert!(!store.is_pair_evidence(&pair, "audit-2").await.unwrap());
    let decided_at = now_ms();
    store.decide(&rejected, &actor("bob"), Decision::Reject, None, &policy(), decided_at).await.unwrap();
    assert_eq!(store.open_alert_case(&pair).await.unwrap(), None);
    assert_eq!(store.pair_closed_at(&pair).await.unwrap(), Some(decided_at));
    // Expired: the key goes too, and expiry does not close the pair.
    let expired = match store.create_case(&new_case(-1), Some(&key), now_ms()).await.unwrap() {
        Created::New(case) => case.id,
        other => panic!("{other:?}"),
    };
    assert_eq!(store.expire_due(now_ms()).await.unwrap().len(), 1);
    assert_eq!(store.open_alert_case(&pair).await.unwrap(), None);
    assert_eq!(store.pair_closed_at(&pair).await.unwrap(), Some(decided_at));
    assert!(store.case(&expired).await.unwrap().unwrap().state == CaseState::Expired);
    // Done: the key goes with the finish, and Graph's confirmation closes the pair.
    let done = open(&store, &key).await;
    store.decide(&done, &actor("bob"), Decision::Approve, None, &policy(), now_ms()).await.unwrap();
    store.claim_for_execution(&done, "runner", 60_000, now_ms()).await.unwrap().unwrap();
    let removed_at = now_ms() + 5;
    store.record_target(&done, &target_result(0, TargetStatus::Done, Some(204), "removed", Some("victim-oid")), removed_at).await.unwrap();
    assert_eq!(store.open_alert_case(&pair).await.unwrap(), Some(done.clone()), "still open while executing");
    assert!(store.finish(&done, "runner", CaseState::Done, now_ms()).await.unwrap());
    assert_eq!(store.open_alert_case(&pair).await.unwrap(), None);
    assert_eq!(store.pair_closed_at(&pair).await.unwrap(), Some(removed_at));
    // The pair is found under its object id as well.
    let by_oid = Pair { chat: "19:abc@thread.v2", user_ref: "victim-oid", user_oid: Some("victim-oid") };
    assert_eq!(store.pair_closed_at(&by_oid).await.unwrap(), Some(removed_at));
    assert!(store.removed_pairs().await.unwrap().contains(&(("19:abc@thread.v2".into(), "victim-oid".into()), removed_at)));
    // A record joins an open case's evidence once.
    let open_again = open(&store, &key).await;
    assert!(store.add_evidence(&open_again, "audit-9", "audit record audit-9", now_ms()).await.unwrap());
    assert!(!store.add_evidence(&open_again, "audit-9", "audit record audit-9", now_ms()).await.unwrap());
    assert_eq!(store.case(&open_again).await.unwrap().unwrap().evidence, ["audit-1", "audit-9"]);
}

fn audit_record(id: &str, chat: &str) -> AuditRecord {
    AuditRecord::from_json(format!(
        r#"{{"Id": "{id}", "Operation": "MemberAdded", "OrganizationId": "tenant-1", "ChatThreadId": "{chat}",
            "Members": [{{"UPN": "victim@contoso.com", "UserObjectId": "victim-oid"}}]}}"#
    ))
    .unwrap()
}

async fn retention_prunes_old_rows_in_batches_and_keeps_what_cases_need(store: Store) {
    let old = now_ms() - 10 * 86_400_000;
    let cutoff = now_ms() - 8 * 86_400_000;
    // Five old records, one of them evidence of a case (audit-1), and one new record.
    let olds: Vec<AuditRecord> = (1..=5).map(|i| audit_record(&format!("audit-{i}"), &format!("19:old{i}@thread.v2"))).collect();
    store.insert_audit_batch(&olds, old).await.unwrap();
    store.insert_audit(&audit_record("audit-new", "19:new@thread.v2"), now_ms()).await.unwrap();
    // Keys: an old finished one, an old one of an open case, a new one.
    store.claim_key("conv|old", old).await.unwrap();
    let open_case = match store.create_case(&new_case(60_000), Some("alert|19:abc@thread.v2|victim@contoso.com"), old).await.unwrap() {
        Created::New(case) => case.id,
        other => panic!("{other:?}"),
    };
    store.claim_key("conv|new", now_ms()).await.unwrap();
    // Refusals: an old one and a new one; a case event that is old (history is kept).
    store.record_event(None, Some(&actor("eve")), "refused", Some("not_admin"), old).await.unwrap();
    store.record_event(None, Some(&actor("eve")), "refused", Some("not_admin"), now_ms()).await.unwrap();

    let (first, _) = store.prune_batch(cutoff, 0, 2).await.unwrap();
    assert_eq!(first.audit_records, 1, "the first two records are audit-1 (evidence, kept) and audit-2: {first:?}");
    let total = store.prune_before(cutoff, 2).await.unwrap();
    assert_eq!(total.audit_records, 3);
    assert_eq!(store.audit_count().await.unwrap(), 2, "audit-1 (evidence) and audit-new remain");
    assert!(store.audit_for_chat("19:old2@thread.v2").await.unwrap().is_empty());
    assert_eq!(store.audit_for_chat("19:old1@thread.v2").await.unwrap().len(), 1);
    assert_eq!(store.audit_for_chat("19:new@thread.v2").await.unwrap().len(), 1);
    // No lookup row of a pruned record is left: the user is found in the two kept records only.
    assert_eq!(store.audit_for_user("victim@contoso.com").await.unwrap().len(), 2);
    assert_eq!(store.lookup_row_count().await.unwrap(), 2 * 3, "chat, UPN and object id of each kept record");
    assert_eq!(total.dedupe_keys + first.dedupe_keys, 1, "only the old key of no open case");
    assert!(!store.claim_key("conv|new", now_ms()).await.unwrap(), "a new key is kept");
    assert!(store.claim_key("conv|old", now_ms()).await.unwrap(), "the old key was pruned");
    assert_eq!(
        store.open_alert_case(&Pair { chat: "19:abc@thread.v2", user_ref: "victim@contoso.com", user_oid: None }).await.unwrap(),
        Some(open_case.clone())
    );
    // Refusals are history: only history retention prunes it, from the start of the chain.
    assert_eq!(store.refusals(10).await.unwrap().len(), 2);
    assert!(!store.events(&open_case).await.unwrap().is_empty(), "case history is not pruned");
    assert!(store.prune_before(cutoff, 2).await.unwrap().is_empty());
}

/// The store's transitions, path by path, checked against `CaseState::can_become`; and the
/// changes the state machine forbids, refused by the store.
async fn every_state_change_the_store_makes_is_one_the_state_machine_allows(store: Store) {
    let state = |id: String| {
        let store = store.clone();
        async move { store.case(&id).await.unwrap().unwrap().state }
    };
    let mut changes = Vec::new();
    // proposed -> approved -> executing -> done
    let done = open(&store, "conv|a").await;
    let mut before = state(done.clone()).await;
    store.decide(&done, &actor("bob"), Decision::Approve, None, &policy(), now_ms()).await.unwrap();
    changes.push((before, state(done.clone()).await));
    before = state(done.clone()).await;
    store.claim_for_execution(&done, "runner", 60_000, now_ms()).await.unwrap().unwrap();
    changes.push((before, state(done.clone()).await));
    before = state(done.clone()).await;
    assert!(store.finish(&done, "runner", CaseState::Done, now_ms()).await.unwrap());
    changes.push((before, state(done.clone()).await));
    // proposed -> rejected; proposed -> expired; executing -> failed
    let rejected = open(&store, "conv|b").await;
    store.decide(&rejected, &actor("bob"), Decision::Reject, None, &policy(), now_ms()).await.unwrap();
    changes.push((CaseState::Proposed, state(rejected.clone()).await));
    let expired = match store.create_case(&new_case(-1), Some("conv|c"), now_ms()).await.unwrap() {
        Created::New(case) => case.id,
        other => panic!("{other:?}"),
    };
    store.expire_due(now_ms()).await.unwrap();
    changes.push((CaseState::Proposed, state(expired.clone()).await));
    let failed = open(&store, "conv|d").await;
    store.decide(&failed, &actor("bob"), Decision::Approve, None, &policy(), now_ms()).await.unwrap();
    store.claim_for_execution(&failed, "runner", 60_000, now_ms()).await.unwrap().unwrap();
    assert!(store.finish(&failed, "runner", CaseState::Failed, now_ms()).await.unwrap());
    changes.push((CaseState::Executing, state(failed.clone()).await));
    for (from, to) in &changes {
        assert!(from.can_become(*to), "the store moved a case {from} -> {to}");
    }
    assert_eq!(changes.len(), 6);

    // Forbidden moves are refused and change nothing.
    let proposed = open(&store, "conv|e").await;
    assert!(store.claim_for_execution(&proposed, "runner", 60_000, now_ms()).await.unwrap().is_none(), "proposed -> executing");
    store.decide(&proposed, &actor("bob"), Decision::Approve, None, &policy(), now_ms()).await.unwrap();
    assert!(!store.finish(&proposed, "runner", CaseState::Done, now_ms()).await.unwrap(), "approved -> done");
    assert!(
        matches!(
            store.decide(&done, &actor("carol"), Decision::Reject, None, &policy(), now_ms()).await.unwrap(),
            DecisionOutcome::Refused(Refusal::AlreadyDecided(CaseState::Done), _)
        ),
        "done -> rejected"
    );
    assert!(store.claim_for_execution(&rejected, "runner", 60_000, now_ms()).await.unwrap().is_none(), "rejected -> executing");
    assert!(store.claim_for_execution(&expired, "runner", 60_000, now_ms()).await.unwrap().is_none(), "expired -> executing");
    for (id, expected) in
        [(&proposed, CaseState::Approved), (&done, CaseState::Done), (&rejected, CaseState::Rejected), (&expired, CaseState::Expired)]
    {
        assert_eq!(state(id.clone()).await, expected);
    }
}
