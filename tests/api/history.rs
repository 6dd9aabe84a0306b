//! The verifiable history on SQLite and PostgreSQL: the chain, what `history --verify` finds
//! when rows are changed, deleted or reordered, concurrent writers, sealing events written
//! before the chain, and history retention with its signed checkpoint.

use std::collections::HashSet;

use chatwarden::cases::{Actor, CaseKind, CaseSource, Decision, NewCase, NewTarget, Policy, TargetStatus, now_ms};
use chatwarden::history::{ChainBreak, GENESIS};
use chatwarden::store::{Created, Store, VerifyError};
use secrecy::SecretString;
use sqlx::Connection as _;

use crate::helpers::{postgres_url, sqlite_url, target_result};

fn actor(oid: &str) -> Actor {
    Actor { oid: oid.into(), name: format!("Admin {oid}"), user_id: format!("29:{oid}") }
}

fn policy() -> Policy {
    Policy {
        admins: Some(HashSet::from(["alice".to_owned(), "bob".to_owned()])),
        require_second_approver: true,
        escalation_admins: Default::default(),
    }
}

fn new_case(user: &str) -> NewCase {
    NewCase {
        kind: CaseKind::RemoveChat,
        source: CaseSource::Command,
        tenant_id: "tenant-1".into(),
        requester: actor("alice"),
        reason: Some("phishing lure".into()),
        targets: vec![NewTarget {
            thread_id: Some("19:abc@thread.v2".into()),
            user_ref: user.into(),
            user_oid: Some(format!("{user}-oid")),
            user_tenant_id: "tenant-1".into(),
            display_name: None,
        }],
        evidence: vec![],
        no_evidence: true,
        ttl_ms: 600_000,
    }
}

/// A case requested, approved, executed and finished: six events.
async fn finished_case(store: &Store, user: &str, at: i64) -> String {
    let Created::New(case) = store.create_case(&new_case(user), None, at).await.unwrap() else { panic!("not created") };
    store.decide(&case.id, &actor("bob"), Decision::Approve, None, &policy(), at).await.unwrap();
    store.claim_for_execution(&case.id, "runner", 60_000, at).await.unwrap().unwrap();
    store.record_target(&case.id, &target_result(0, TargetStatus::Done, Some(204), "removed", Some("oid")), at).await.unwrap();
    assert!(store.finish(&case.id, "runner", chatwarden::cases::CaseState::Done, at).await.unwrap());
    case.id
}

/// A second connection that writes the database behind the store's back, as an attacker with
/// database access would.
async fn tamper(url: &str, sql: &str) {
    sqlx::any::install_default_drivers();
    let url = if url.starts_with("sqlite:") { format!("{url}?mode=rw") } else { url.to_owned() };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
}

macro_rules! on_both {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(super::sqlite_url()).await })+
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(super::postgres_url().await).await })+
        }
    };
}

on_both!(
    every_event_is_chained_and_the_chain_verifies,
    a_changed_event_is_found_and_named,
    a_deleted_event_is_found_and_named,
    reordered_events_are_found,
    a_deleted_tail_is_found,
    history_retention_prunes_the_start_and_leaves_a_signed_checkpoint,
    export_pages_take_what_the_filter_says_in_chain_order,
);

async fn every_event_is_chained_and_the_chain_verifies(url: String) {
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.verify_history(None).await.unwrap().events, 0, "an empty chain verifies");
    let case = finished_case(&store, "victim", now_ms()).await;
    store.record_event(None, Some(&actor("eve")), "refused", Some("not an admin"), now_ms()).await.unwrap();
    let verified = store.verify_history(None).await.unwrap();
    assert_eq!((verified.events, verified.head_seq), (6, 6));
    let chain = store.history_after(0, 100).await.unwrap();
    assert_eq!(chain.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6]);
    assert_eq!(chain[0].prev_hash, GENESIS);
    for pair in chain.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert!(chain.iter().all(|e| e.hash == e.expected_hash() && e.hash.len() == 64));
    assert_eq!(
        chain.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["requested", "approved", "executing", "target_done", "done", "refused"]
    );
    // The target's event carries Graph's answer as data.
    let data: serde_json::Value = serde_json::from_str(chain[3].data.as_deref().unwrap()).unwrap();
    assert_eq!(data["graph_status"], 204);
    assert_eq!(data["target"], 0);
    assert_eq!(store.events(&case).await.unwrap().len(), 5);
    // Reopening the database seals nothing twice and the chain still verifies.
    store.close().await;
    let again = Store::connect(&url).await.unwrap();
    assert_eq!(again.verify_history(None).await.unwrap().events, 6);
}

async fn a_changed_event_is_found_and_named(url: String) {
    let store = Store::connect(&url).await.unwrap();
    finished_case(&store, "victim", now_ms()).await;
    tamper(&url, "UPDATE events SET detail = 'nothing to see' WHERE seq = 4").await;
    match store.verify_history(None).await {
        Err(VerifyError::Broken(ChainBreak::Altered { seq: 4 })) => {}
        other => panic!("{other:?}"),
    }
    // Re-hashing the changed event does not help: the next one no longer follows it.
    let changed = store.history_after(3, 1).await.unwrap().remove(0);
    tamper(&url, &format!("UPDATE events SET hash = '{}' WHERE seq = 4", changed.expected_hash())).await;
    match store.verify_history(None).await {
        Err(VerifyError::Broken(ChainBreak::Unlinked { seq: 5 })) => {}
        other => panic!("{other:?}"),
    }
}

async fn a_deleted_event_is_found_and_named(url: String) {
    let store = Store::connect(&url).await.unwrap();
    finished_case(&store, "victim", now_ms()).await;
    tamper(&url, "DELETE FROM events WHERE seq = 2").await;
    let err = store.verify_history(None).await.unwrap_err();
    assert!(matches!(err, VerifyError::Broken(ChainBreak::Missing { expected: 2, found: 3 })), "{err:?}");
    assert!(err.to_string().contains("event 2 is missing"), "{err}");
}

async fn reordered_events_are_found(url: String) {
    let store = Store::connect(&url).await.unwrap();
    finished_case(&store, "victim", now_ms()).await;
    // Swap the places of the approval and the execution.
    tamper(&url, "UPDATE events SET seq = -1 WHERE seq = 2").await;
    tamper(&url, "UPDATE events SET seq = 2 WHERE seq = 3").await;
    tamper(&url, "UPDATE events SET seq = 3 WHERE seq = -1").await;
    let err = store.verify_history(None).await.unwrap_err();
    assert!(matches!(err, VerifyError::Broken(ChainBreak::Unlinked { seq: 2 })), "{err:?}");
}

async fn a_deleted_tail_is_found(url: String) {
    let store = Store::connect(&url).await.unwrap();
    finished_case(&store, "victim", now_ms()).await;
    tamper(&url, "DELETE FROM events WHERE seq >= 4").await;
    let err = store.verify_history(None).await.unwrap_err();
    assert!(matches!(err, VerifyError::Broken(ChainBreak::Truncated { last: 3, head: 5 })), "{err:?}");
}

async fn history_retention_prunes_the_start_and_leaves_a_signed_checkpoint(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let secret = SecretString::from("history-secret-0123456789");
    let old = now_ms() - 40 * 86_400_000;
    finished_case(&store, "old-1", old).await;
    finished_case(&store, "old-2", old).await;
    store.record_event(None, Some(&actor("eve")), "refused", Some("not an admin"), old).await.unwrap();
    // An old case still open stops the sweep: it and everything after it stay.
    let Created::New(open) = store.create_case(&new_case("still-open"), None, old).await.unwrap() else { panic!() };
    finished_case(&store, "new", now_ms()).await;
    let cutoff = now_ms() - 30 * 86_400_000;

    // Not past what the forwarding receiver has acknowledged.
    assert_eq!(store.prune_history_batch(cutoff, Some(3), 1000, &secret, now_ms()).await.unwrap(), 3);
    // In batches, up to the open case's first event (seq 12).
    assert_eq!(store.prune_history_batch(cutoff, None, 4, &secret, now_ms()).await.unwrap(), 4);
    assert_eq!(store.prune_history_batch(cutoff, None, 1000, &secret, now_ms()).await.unwrap(), 4);
    assert_eq!(store.prune_history_batch(cutoff, None, 1000, &secret, now_ms()).await.unwrap(), 0);

    let checkpoint = store.history_checkpoint().await.unwrap().unwrap();
    assert_eq!((checkpoint.seq, checkpoint.pruned), (11, 11));
    assert!(checkpoint.signed_with(&secret));
    assert_eq!(store.events(&open.id).await.unwrap().len(), 1, "the open case keeps its history");
    let kinds: Vec<String> = store.history_after(0, 100).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "history_pruned").count(), 3, "{kinds:?}");

    let verified = store.verify_history(Some(&secret)).await.unwrap();
    assert_eq!(verified.checkpoint.as_ref().map(|c| c.seq), Some(11));
    assert_eq!(verified.events, u64::try_from(verified.head_seq - 11).unwrap());
    assert!(matches!(store.verify_history(None).await, Err(VerifyError::UncheckedCheckpoint { seq: 11 })));
    let wrong = SecretString::from("another-secret-0123456789");
    assert!(matches!(store.verify_history(Some(&wrong)).await, Err(VerifyError::BadCheckpoint { seq: 11 })));
    // A checkpoint forged without the secret, to hide a deleted stretch, does not verify.
    tamper(&url, "DELETE FROM events WHERE seq = 12").await;
    let next = store.history_after(12, 1).await.unwrap().remove(0);
    tamper(
        &url,
        &format!(
            "INSERT INTO history_checkpoints (seq, hash, pruned, pruned_at, signature) VALUES (12, '{}', 12, 0, '00')",
            next.prev_hash
        ),
    )
    .await;
    assert!(matches!(store.verify_history(Some(&secret)).await, Err(VerifyError::BadCheckpoint { seq: 12 })));
}

#[tokio::test]
async fn events_written_before_the_chain_are_sealed_oldest_first_at_start() {
    let url = sqlite_url();
    let store = Store::connect(&url).await.unwrap();
    finished_case(&store, "victim", now_ms()).await;
    store.close().await;
    // Two events as a version before the chain wrote them: no place, no hash.
    tamper(&url, "INSERT INTO events (case_id, at, actor_oid, actor_name, kind, detail) VALUES (NULL, 1, 'eve', 'Eve', 'refused', 'x')")
        .await;
    tamper(&url, "INSERT INTO events (case_id, at, actor_oid, actor_name, kind, detail) VALUES (NULL, 2, 'eve', 'Eve', 'refused', 'y')")
        .await;
    let reopened = Store::connect(&url).await.unwrap();
    let verified = reopened.verify_history(None).await.unwrap();
    assert_eq!((verified.events, verified.head_seq), (7, 7));
    let sealed = reopened.history_after(5, 10).await.unwrap();
    assert_eq!(sealed.iter().map(|e| e.detail.as_deref().unwrap()).collect::<Vec<_>>(), ["x", "y"]);
}

/// Many writers at once on PostgreSQL: every event gets its own place, no gap, and the chain
/// verifies.
#[tokio::test]
async fn concurrent_writers_on_postgres_keep_one_well_ordered_chain() {
    let url = postgres_url().await;
    let stores: Vec<Store> =
        futures_util::future::join_all((0..4).map(|_| Store::connect(&url))).await.into_iter().map(Result::unwrap).collect();
    let mut tasks = Vec::new();
    for round in 0..12 {
        let store = stores[round % stores.len()].clone();
        tasks.push(tokio::spawn(async move { finished_case(&store, &format!("user-{round}"), now_ms()).await }));
        let refusing = stores[(round + 1) % stores.len()].clone();
        tasks.push(tokio::spawn(async move {
            refusing.record_event(None, Some(&actor("eve")), "refused", Some("not an admin"), now_ms()).await.unwrap();
            String::new()
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let verified = stores[0].verify_history(None).await.unwrap();
    assert_eq!((verified.events, verified.head_seq), (12 * 6, 12 * 6));
}

async fn export_pages_take_what_the_filter_says_in_chain_order(url: String) {
    use chatwarden::store::EventFilter;
    let store = Store::connect(&url).await.unwrap();
    let day = 86_400_000;
    let now = now_ms();
    let old = finished_case(&store, "old", now - 10 * day).await;
    let new = finished_case(&store, "new", now).await;
    let seqs = |page: Vec<chatwarden::history::HistoryEvent>| page.into_iter().map(|e| e.seq).collect::<Vec<_>>();
    let all = EventFilter::default();
    assert_eq!(seqs(store.history_page(&all, i64::MIN, 1000).await.unwrap()), (1..=10).collect::<Vec<_>>());
    assert_eq!(seqs(store.history_page(&all, 3, 4).await.unwrap()), [4, 5, 6, 7], "a page after a place");
    let recent = EventFilter { since: Some(now - day), ..EventFilter::default() };
    assert_eq!(seqs(store.history_page(&recent, i64::MIN, 1000).await.unwrap()), [6, 7, 8, 9, 10]);
    let before = EventFilter { until: Some(now - day), ..EventFilter::default() };
    assert_eq!(seqs(store.history_page(&before, i64::MIN, 1000).await.unwrap()), [1, 2, 3, 4, 5]);
    let one = EventFilter { case_id: Some(new.clone()), since: Some(now - day), until: Some(now + day) };
    assert_eq!(seqs(store.history_page(&one, 7, 1000).await.unwrap()), [8, 9, 10]);
    let none = EventFilter { case_id: Some(old), since: Some(now - day), until: None };
    assert!(store.history_page(&none, i64::MIN, 1000).await.unwrap().is_empty());
}
