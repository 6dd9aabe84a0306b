//! Approvals and executions spread over two real `chatwarden serve` processes on one
//! PostgreSQL database. 1,000 proposed `/remove-chat` cases (each its own chat and user) are
//! approved by the second admin, with a reason, through the `adaptiveCard/action` invoke Teams
//! sends; each approval goes to one replica (alternating), or to both at once (as when Teams
//! retries against another replica). Throughput is cases approved and executed per second, from
//! the first approval sent to the last case `done`; the fake Graph counts its
//! `removeAllAccessForUser` calls per chat and the benchmark asserts exactly one per case.
//!
//! `cargo bench --bench replicas` (needs the release binary, which `cargo bench` builds, and
//! PostgreSQL at `CHATWARDEN_TEST_POSTGRES_URL`); `REPLICAS_IN_FLIGHT` sets how many approvals are
//! in flight at once (default 16). Without `--bench`: 40 cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::too_many_arguments, dead_code, missing_docs)]

#[path = "../tests/api/helpers.rs"]
mod helpers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatwarden::cases::{Actor, CaseKind, CaseSource, NewCase, now_ms};
use chatwarden::store::{Created, Store};
use futures_util::StreamExt as _;
use helpers::*;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// Graph's `removeAllAccessForUser`: 204, counting the calls per chat.
struct CountingGraph(Arc<Mutex<HashMap<String, usize>>>);

impl wiremock::Respond for CountingGraph {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let chat = request.url.path().trim_start_matches("/v1.0/chats/").trim_end_matches("/removeAllAccessForUser").to_owned();
        *self.0.lock().unwrap().entry(chat).or_default() += 1;
        ResponseTemplate::new(204)
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The invoke Teams sends when the second admin presses Approve on `case_id`'s card.
/// Activity ids are the case's: Teams' ids are unique, and a repeated one is a redelivery.
fn approval(service_url: &str, case_id: &str) -> Value {
    let mut activity = message(service_url, "");
    activity["type"] = json!("invoke");
    activity["name"] = json!("adaptiveCard/action");
    activity["id"] = json!(format!("approve-{case_id}"));
    activity["replyToId"] = json!(format!("card-{case_id}"));
    activity.as_object_mut().unwrap().remove("text");
    activity["from"] = json!({"id": "29:sam", "name": "Sam", "aadObjectId": SECOND_ADMIN_OID});
    activity["value"] = json!({"action": {"type": "Action.Execute", "verb": "approve",
        "data": {"chatwarden": 1, "caseId": case_id, "action": "approve", "reason": "checked the audit record and the chat"}},
        "trigger": "manual"});
    activity
}

/// `n` proposed cases that Dana asked for, waiting for a second admin.
async fn proposed_cases(store: &Store, n: usize, run: &str) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let new = NewCase {
            kind: CaseKind::RemoveChat,
            source: CaseSource::Command,
            tenant_id: TENANT_ID.into(),
            requester: Actor { oid: ADMIN_OID.into(), name: "Dana".into(), user_id: "29:dana".into() },
            reason: Some("suspicious link".into()),
            targets: vec![internal_target(&format!("19:{run}-{i:05}@thread.v2"), &format!("{run}-user-{i:05}"))],
            evidence: vec![],
            no_evidence: true,
            ttl_ms: 86_400_000,
        };
        let Created::New(case) = store.create_case(&new, None, now_ms()).await.unwrap() else { panic!("case not created") };
        ids.push(case.id.clone());
    }
    ids
}

/// Cases `done` in the whole database.
async fn done_in_database(database: &mut sqlx::PgConnection) -> usize {
    let (done,): (i64,) = sqlx::query_as("SELECT count(*) FROM cases WHERE state = 'done'").fetch_one(database).await.unwrap();
    usize::try_from(done).unwrap()
}

/// Sends one approval per case (to the replicas in turn, or to all of them with `to_both`),
/// `in_flight` at once, and waits until every
/// case is done. Returns cases per second.
async fn run(
    replicas: &[String],
    to_both: bool,
    service_url: &str,
    store: &Store,
    ids: &[String],
    in_flight: usize,
    token: &str,
    database: &mut sqlx::PgConnection,
) -> f64 {
    let done_before = done_in_database(database).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let statuses: Vec<u16> = futures_util::stream::iter(ids.iter().enumerate())
        .map(|(i, id)| {
            let body = approval(service_url, id);
            let chosen: Vec<&String> = if to_both { replicas.iter().collect() } else { vec![&replicas[i % replicas.len()]] };
            let client = &client;
            async move {
                let sends =
                    chosen.into_iter().map(|replica| client.post(format!("{replica}/api/messages")).bearer_auth(token).json(&body).send());
                let answers = futures_util::future::join_all(sends).await;
                answers.into_iter().map(|a| a.unwrap().status().as_u16()).max().unwrap()
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200), "{:?}", statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>());
    // The last cases finish after their invoke was answered: count them in the database with
    // one query per poll (reading every case would load the database the replicas share).
    let deadline = Instant::now() + Duration::from_secs(120);
    while done_in_database(database).await < done_before + ids.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let pending: Vec<&String> = {
        let mut pending = Vec::new();
        for id in ids {
            if !store.case(id).await.unwrap().is_some_and(|c| c.state == chatwarden::cases::CaseState::Done) {
                pending.push(id);
            }
        }
        pending
    };
    if let Some(id) = pending.first() {
        let case = store.case(id).await.unwrap().unwrap();
        let events: Vec<String> = store.events(id).await.unwrap().into_iter().map(|e| format!("{}: {:?}", e.kind, e.detail)).collect();
        panic!("{} cases never finished; {id} is {:?}: {events:#?}", pending.len(), case.state);
    }
    ids.len() as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 1_000 } else { 40 };
    let in_flight: usize = std::env::var("REPLICAS_IN_FLIGHT").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let (metadata, login, tokens, graph, connector) = (
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
        MockServer::start().await,
    );
    mount_metadata(&metadata, default_jwks()).await;
    mount_login(&login).await;
    mount_signed_in(&tokens).await;
    let calls = Arc::new(Mutex::new(HashMap::new()));
    Mock::given(method("POST"))
        .and(path_regex(r"^/v1.0/chats/[^/]+/removeAllAccessForUser$"))
        .respond_with(CountingGraph(Arc::clone(&calls)))
        .mount(&graph)
        .await;
    // The Connector accepts every card update and message (the benchmark does not keep them).
    Mock::given(path_regex("^/v3/conversations"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "m1"})))
        .mount(&connector)
        .await;
    let service_url = connector.uri();
    let token = valid_token(&service_url);

    let database_url = postgres_url().await;
    let store = Store::connect(&database_url).await.unwrap();
    let mut database = <sqlx::PgConnection as sqlx::Connection>::connect(&database_url).await.unwrap();
    let logs = std::env::temp_dir().join(format!("chatwarden-replicas-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&logs).unwrap();
    let start = async |replica: usize| {
        let port = free_port();
        let extra = [
            ("CHATWARDEN_BIND", format!("127.0.0.1:{port}")),
            ("CHATWARDEN_TOKEN_SERVICE_URL", tokens.uri()),
            ("CHATWARDEN_GRAPH_URL", graph.uri()),
            ("CHATWARDEN_REQUIRE_REASON", "true".to_owned()),
            ("CHATWARDEN_COMMANDS_PER_MINUTE", "0".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        let child = serve_binary(&database_url, &metadata, &login, &extra, &logs.join(format!("replica-{replica}.log")));
        let address = format!("http://127.0.0.1:{port}");
        let ready = reqwest::Client::new();
        wait_until("the replica to be ready", async || {
            ready.get(format!("{address}/readyz")).send().await.is_ok_and(|r| r.status().is_success())
        })
        .await;
        (child, address)
    };
    // One replica first; the second starts only for the two-replica runs.
    let (first, address) = start(0).await;
    let mut children = vec![first];
    let mut addresses = vec![address];

    println!("| replicas | approvals sent to | in flight | cases | approved + executed per second | Graph calls | a chat's call twice |");
    println!("|---|---|---|---|---|---|---|");
    let runs: [(&str, usize, bool); 3] = [("one", 1, false), ("alternating", 2, false), ("both", 2, true)];
    for (label, count, to_both) in runs {
        if count == 2 && addresses.len() == 1 {
            let (second, address) = start(1).await;
            children.push(second);
            addresses.push(address);
        }
        let ids = proposed_cases(&store, n, label).await;
        calls.lock().unwrap().clear();
        let rate = run(&addresses[..count], to_both, &service_url, &store, &ids, in_flight, &token, &mut database).await;
        let calls = calls.lock().unwrap().clone();
        let twice = calls.values().filter(|c| **c > 1).count();
        let total: usize = calls.values().sum();
        assert_eq!(calls.len(), n, "every case reached Graph");
        assert_eq!(twice, 0, "a case ran twice");
        let sent_to = match (count, to_both) {
            (1, _) => "the one",
            (_, false) => "one of two, alternating",
            (_, true) => "both",
        };
        println!("| {count} | {sent_to} | {in_flight} | {n} | {rate:.0}/s | {total} | {twice} |");
    }
    for mut child in children {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(&logs);
}
