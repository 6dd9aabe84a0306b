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
    let (metadata, login, tokens, graph) =
        (MockServer::start().await, MockServer::start().await, MockServer::start().await, MockServer::start().await);
    mount_metadata(&metadata, default_jwks()).await;
    mount_login(&login).await;
    mount_signed_in(&tokens).await;
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
