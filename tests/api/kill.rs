//! `kill -9` of the real `chatwarden` binary while a case is `executing`: after a restart the
//! case completes exactly once.

use std::process::Child;
use std::time::Duration;

use chatwarden::cases::{CaseState, TargetStatus};
use chatwarden::store::Store;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::cases::{THREAD, VICTIM};
use crate::helpers::*;

const LEASE_SECONDS: u64 = 2;
const REMOVE_PATH: &str = r"^/v1.0/chats/[^/]+/removeAllAccessForUser$";

/// The real binary in `serve` mode against the fakes; its log goes to `log`.
fn start_chatwarden(
    database_url: &str,
    metadata: &MockServer,
    login: &MockServer,
    tokens: &MockServer,
    graph: &MockServer,
    log: &std::path::Path,
) -> Child {
    let extra = [
        ("CHATWARDEN_TOKEN_SERVICE_URL", tokens.uri()),
        ("CHATWARDEN_GRAPH_URL", graph.uri()),
        ("CHATWARDEN_EXECUTION_LEASE_SECONDS", LEASE_SECONDS.to_string()),
    ];
    serve_binary(database_url, metadata, login, &extra, log)
}

/// The OpenID metadata, Entra and token service fakes with every admin signed in, and a Graph
/// fake with nothing mounted yet.
async fn signed_in_fakes() -> (MockServer, MockServer, MockServer, MockServer) {
    let (metadata, login, tokens, graph) =
        (MockServer::start().await, MockServer::start().await, MockServer::start().await, MockServer::start().await);
    mount_metadata(&metadata, default_jwks()).await;
    mount_login(&login).await;
    mount_signed_in(&tokens).await;
    (metadata, login, tokens, graph)
}

/// Graph `removeAllAccessForUser` requests received so far.
async fn removals(graph: &MockServer) -> Vec<wiremock::Request> {
    let is_removal = |path: &str| {
        path.strip_prefix("/v1.0/chats/")
            .and_then(|rest| rest.strip_suffix("/removeAllAccessForUser"))
            .is_some_and(|chat| !chat.is_empty() && !chat.contains('/'))
    };
    graph.received_requests().await.unwrap_or_default().into_iter().filter(|r| is_removal(r.url.path())).collect()
}

#[tokio::test]
async fn a_case_executing_when_the_process_is_killed_completes_exactly_once_after_a_restart() {
    let (metadata, login, tokens, graph) = signed_in_fakes().await;
    // The first removal hangs (the process dies while waiting for Graph); later ones succeed.
    Mock::given(method("POST"))
        .and(path_regex(REMOVE_PATH))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(120)))
        .up_to_n_times(1)
        .with_priority(1)
        .named("removal that hangs")
        .mount(&graph)
        .await;
    Mock::given(method("POST")).and(path_regex(REMOVE_PATH)).respond_with(ResponseTemplate::new(204)).named("removal").mount(&graph).await;

    // An approved case, as left by an admin's click.
    let database_url = sqlite_url();
    let store = Store::connect(&database_url).await.unwrap();
    let case = approved_removal(&store, THREAD, VICTIM).await;

    let logs = std::env::temp_dir().join(format!("chatwarden-kill-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&logs).unwrap();
    let mut first = start_chatwarden(&database_url, &metadata, &login, &tokens, &graph, &logs.join("first.log"));
    wait_until("the first process to call Graph", async || !removals(&graph).await.is_empty()).await;
    let executing = store.case(&case.id).await.unwrap().unwrap();
    assert_eq!(executing.state, CaseState::Executing);

    // SIGKILL: no shutdown hook, no lease release.
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(store.case(&case.id).await.unwrap().unwrap().state, CaseState::Executing, "the dead process left its claim");

    let mut second = start_chatwarden(&database_url, &metadata, &login, &tokens, &graph, &logs.join("second.log"));
    let finished = async || store.case(&case.id).await.unwrap().is_some_and(|c| c.state == CaseState::Done);
    wait_until("the restarted process to finish the case", finished).await;
    // Two more leases: nothing runs it again.
    tokio::time::sleep(Duration::from_secs(2 * LEASE_SECONDS)).await;
    second.kill().unwrap();
    second.wait().unwrap();

    let done = store.case(&case.id).await.unwrap().unwrap();
    assert_eq!(done.state, CaseState::Done);
    assert_eq!(done.targets[0].status, TargetStatus::Done);
    assert_eq!(done.targets[0].graph_status, Some(204));
    // One request cut short by the kill, one that completed it; both as the approving admin.
    let calls = removals(&graph).await;
    assert_eq!(calls.len(), 2, "Graph calls: {}", calls.len());
    for call in &calls {
        assert_eq!(call.headers.get("authorization").unwrap().to_str().unwrap(), format!("Bearer {}", delegated_token("29:sam")));
        let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"user": {"@odata.type": "microsoft.graph.teamworkUserIdentity", "id": VICTIM, "tenantId": TENANT_ID}})
        );
    }
    let kinds: Vec<String> = store.events(&case.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    let count = |kind: &str| kinds.iter().filter(|k| *k == kind).count();
    assert_eq!(count("approved"), 1, "{kinds:?}");
    assert_eq!(count("executing"), 2, "claimed by the killed process, then by the restarted one: {kinds:?}");
    assert_eq!(count("target_done"), 1, "{kinds:?}");
    assert_eq!(count("done"), 1, "{kinds:?}");
    store.close().await;
    let _ = std::fs::remove_dir_all(&logs);
}

/// Graph's `$batch` answering 204 for every item, except that the `hang_at`-th request (from 1)
/// never gets an answer in time: the process is killed while Graph holds it.
struct BatchHangingAt {
    hang_at: usize,
    calls: std::sync::atomic::AtomicUsize,
}

impl wiremock::Respond for BatchHangingAt {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let responses: Vec<serde_json::Value> =
            body["requests"].as_array().unwrap().iter().map(|item| serde_json::json!({"id": item["id"], "status": 204})).collect();
        let answer = ResponseTemplate::new(200).set_body_json(serde_json::json!({"responses": responses}));
        if call == self.hang_at { answer.set_delay(Duration::from_secs(120)) } else { answer }
    }
}

/// The users named in each `$batch` request Graph received, in order.
async fn batched_users(graph: &MockServer) -> Vec<Vec<String>> {
    let requests = graph.received_requests().await.unwrap_or_default();
    requests
        .iter()
        .filter(|r| r.url.path() == "/v1.0/$batch")
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            body["requests"].as_array().unwrap().iter().map(|item| item["body"]["user"]["id"].as_str().unwrap().to_owned()).collect()
        })
        .collect()
}

#[tokio::test]
async fn a_bulk_run_killed_mid_way_resumes_with_only_the_unanswered_targets_and_loses_none() {
    let (metadata, login, tokens, graph) = signed_in_fakes().await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path("/v1.0/$batch"))
        .respond_with(BatchHangingAt { hang_at: 2, calls: Default::default() })
        .mount(&graph)
        .await;

    // 50 targets: Graph's pace of 30 a second sends 20, then 10, then (a second later) 20.
    let database_url = sqlite_url();
    let store = Store::connect(&database_url).await.unwrap();
    let case = approved_case(&store, chatwarden::cases::CaseKind::RemoveExternal, bulk_targets(50)).await;

    let logs = std::env::temp_dir().join(format!("chatwarden-kill-bulk-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&logs).unwrap();
    let mut first = start_chatwarden(&database_url, &metadata, &login, &tokens, &graph, &logs.join("first.log"));
    let recorded = async |n: usize| {
        store.case(&case.id).await.unwrap().unwrap().targets.iter().filter(|t| t.status == TargetStatus::Done).count() == n
    };
    wait_until("the first batch's answers to be recorded and the second batch to be sent", async || {
        batched_users(&graph).await.len() == 2 && recorded(20).await
    })
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let cut_short = batched_users(&graph).await[1].clone();
    assert_eq!(cut_short.len(), 10);
    assert!(recorded(20).await, "the first batch's 20 answers were durable before the kill");

    let mut second = start_chatwarden(&database_url, &metadata, &login, &tokens, &graph, &logs.join("second.log"));
    wait_until("the restarted process to finish the case", async || {
        store.case(&case.id).await.unwrap().is_some_and(|c| c.state == CaseState::Done)
    })
    .await;
    second.kill().unwrap();
    second.wait().unwrap();

    let done = store.case(&case.id).await.unwrap().unwrap();
    assert!(done.targets.iter().all(|t| t.status == TargetStatus::Done && t.graph_status == Some(204)), "none lost");
    let mut sent: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for user in batched_users(&graph).await.into_iter().flatten() {
        *sent.entry(user).or_default() += 1;
    }
    assert_eq!(sent.len(), 50, "every target reached Graph");
    for (user, times) in &sent {
        // Only what Graph had not answered when the process died goes again (removal is idempotent).
        let expected = if cut_short.contains(user) { 2 } else { 1 };
        assert_eq!(*times, expected, "{user} was sent {times} time(s)");
    }
    let kinds: Vec<String> = store.events(&case.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "target_done").count(), 50, "one outcome per target: {kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "done").count(), 1, "{kinds:?}");
    store.close().await;
    let _ = std::fs::remove_dir_all(&logs);
}
