//! Delegated tokens and the Graph client against a fake token service, Entra ID and Graph:
//! exact paths, headers and bodies.

use std::sync::Arc;
use std::time::Duration;

use chatwarden::cases::{Actor, Case, CaseKind, CaseSource, CaseState, Target, TargetStatus};
use chatwarden::config::RetryPolicy;
use chatwarden::entra::app_token::AppTokenProvider;
use chatwarden::execution::{CaseExecutor, GraphExecutor, ListedTargets, PendingTargets, ProgressSink, TargetResult, Unrecorded};
use chatwarden::graph::{BatchItem, GraphClient};
use chatwarden::metrics::Metrics;
use chatwarden::tokens::{DelegatedTokens, TokenError, TokenSource};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use wiremock::matchers::{body_json, body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::*;

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
    }
}

fn approver() -> Actor {
    Actor { oid: SECOND_ADMIN_OID.into(), name: "Sam Approver".into(), user_id: "29:sam".into() }
}

struct Fx {
    login: MockServer,
    token_service: MockServer,
    graph_server: MockServer,
    tokens: Arc<DelegatedTokens>,
    graph: GraphClient,
}

async fn fx_with(obo: bool) -> Fx {
    let login = MockServer::start().await;
    let token_service = MockServer::start().await;
    let graph_server = MockServer::start().await;
    mount_login(&login).await;
    let config = serve_config(&MockServer::start().await, &login);
    let app = config.app.clone().unwrap();
    let metrics = Arc::new(Metrics::default());
    let bot = Arc::new(AppTokenProvider::client_credentials(&app, &config.endpoints.login, retry(), metrics.clone()).unwrap());
    let base = url::Url::parse(&token_service.uri()).unwrap();
    let source = if obo {
        TokenSource::OnBehalfOf {
            token_url: url::Url::parse(&format!("{}/{TENANT_ID}/oauth2/v2.0/token", login.uri())).unwrap(),
            client_id: APP_ID.into(),
            client_secret: SecretString::from(APP_PASSWORD.to_owned()),
            base,
            connection: "graph".into(),
        }
    } else {
        TokenSource::TokenService { base, connection: "graph".into() }
    };
    let tokens = Arc::new(DelegatedTokens::new(source, bot, retry(), metrics.clone()).unwrap());
    let graph = GraphClient::new(url::Url::parse(&graph_server.uri()).unwrap(), retry(), metrics).unwrap();
    Fx { login, token_service, graph_server, tokens, graph }
}

async fn fx() -> Fx {
    fx_with(false).await
}

fn token_response(token: &str, seconds: i64) -> ResponseTemplate {
    let expiration = (time::OffsetDateTime::now_utc() + time::Duration::seconds(seconds))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    ResponseTemplate::new(200)
        .set_body_json(json!({"channelId": "msteams", "connectionName": "graph", "token": token, "expiration": expiration}))
}

/// The token service hands out "stale-token" once (Graph will refuse it), then "fresh-token".
async fn mount_stale_then_fresh_token(token_service: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(token_response("stale-token", 3600))
        .up_to_n_times(1)
        .mount(token_service)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(token_response("fresh-token", 3600))
        .mount(token_service)
        .await;
}

async fn get_token_calls(fx: &Fx) -> Vec<Request> {
    fx.token_service.received_requests().await.unwrap().into_iter().filter(|r| r.url.path() == "/api/usertoken/GetToken").collect()
}

#[tokio::test]
async fn a_token_is_fetched_with_the_bot_token_and_then_served_from_the_cache() {
    let fx = fx().await;
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .and(query_param("userId", "29:sam"))
        .and(query_param("connectionName", "graph"))
        .and(query_param("channelId", "msteams"))
        .and(header("authorization", format!("Bearer {BOT_TOKEN}").as_str()))
        .respond_with(token_response("sam-graph-token", 3600))
        .mount(&fx.token_service)
        .await;
    let first = fx.tokens.token_for(&approver()).await.unwrap().unwrap();
    let second = fx.tokens.token_for(&approver()).await.unwrap().unwrap();
    assert_eq!(first.expose_secret(), "sam-graph-token");
    assert_eq!(second.expose_secret(), "sam-graph-token");
    assert_eq!(get_token_calls(&fx).await.len(), 1);
}

#[tokio::test]
async fn a_token_leaves_the_cache_before_it_expires() {
    let fx = fx().await;
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(token_response("short-lived", 2))
        .mount(&fx.token_service)
        .await;
    fx.tokens.token_for(&approver()).await.unwrap().unwrap();
    fx.tokens.token_for(&approver()).await.unwrap().unwrap();
    assert_eq!(get_token_calls(&fx).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    fx.tokens.token_for(&approver()).await.unwrap().unwrap();
    assert_eq!(get_token_calls(&fx).await.len(), 2);
}

#[tokio::test]
async fn fifty_concurrent_approvals_share_one_token_request() {
    let fx = fx().await;
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(token_response("shared", 3600).set_delay(Duration::from_millis(200)))
        .mount(&fx.token_service)
        .await;
    let admin = approver();
    let calls = (0..50).map(|_| fx.tokens.token_for(&admin));
    let tokens = futures_util::future::join_all(calls).await;
    assert!(tokens.iter().all(|t| t.as_ref().unwrap().as_ref().unwrap().expose_secret() == "shared"));
    assert_eq!(get_token_calls(&fx).await.len(), 1);
}

#[tokio::test]
async fn an_admin_who_has_not_signed_in_gets_none_and_nothing_is_cached() {
    let fx = fx().await;
    Mock::given(method("GET")).and(path("/api/usertoken/GetToken")).respond_with(ResponseTemplate::new(404)).mount(&fx.token_service).await;
    assert!(fx.tokens.token_for(&approver()).await.unwrap().is_none());
    assert!(fx.tokens.token_for(&approver()).await.unwrap().is_none());
    assert_eq!(get_token_calls(&fx).await.len(), 2);
}

#[tokio::test]
async fn a_magic_code_is_redeemed_with_get_token_and_code() {
    let fx = fx().await;
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .and(query_param("code", "123456"))
        .respond_with(token_response("from-code", 3600))
        .mount(&fx.token_service)
        .await;
    Mock::given(method("GET")).and(path("/api/usertoken/GetToken")).respond_with(ResponseTemplate::new(404)).mount(&fx.token_service).await;
    assert!(fx.tokens.redeem_code(&approver(), "000000").await.unwrap().is_none());
    let token = fx.tokens.redeem_code(&approver(), "123456").await.unwrap().unwrap();
    assert_eq!(token.expose_secret(), "from-code");
    // Now cached: no further request.
    let before = get_token_calls(&fx).await.len();
    assert_eq!(fx.tokens.token_for(&approver()).await.unwrap().unwrap().expose_secret(), "from-code");
    assert_eq!(get_token_calls(&fx).await.len(), before);
}

#[tokio::test]
async fn an_sso_token_is_exchanged_at_the_token_service() {
    let fx = fx().await;
    Mock::given(method("POST"))
        .and(path("/api/usertoken/exchange"))
        .and(query_param("userId", "29:sam"))
        .and(query_param("connectionName", "graph"))
        .and(query_param("channelId", "msteams"))
        .and(header("authorization", format!("Bearer {BOT_TOKEN}").as_str()))
        .and(body_json(json!({"token": sso_token_for(SECOND_ADMIN_OID)})))
        .respond_with(token_response("exchanged", 3600))
        .expect(1)
        .mount(&fx.token_service)
        .await;
    let token = fx.tokens.exchange_sso(&approver(), &sso_for(SECOND_ADMIN_OID)).await.unwrap().unwrap();
    assert_eq!(token.expose_secret(), "exchanged");
}

#[tokio::test]
async fn token_service_mode_refuses_an_sso_token_of_someone_else_without_exchanging_it() {
    let fx = fx().await;
    let stolen = sso_for(ADMIN_OID);
    assert!(matches!(fx.tokens.exchange_sso(&approver(), &stolen).await, Err(TokenError::NotTheApprover)));
    assert!(matches!(fx.tokens.exchange_sso(&approver(), &token("not-a-jwt")).await, Err(TokenError::NotTheApprover)));
    let exchanges =
        fx.token_service.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/api/usertoken/exchange").count();
    assert_eq!(exchanges, 0);
    assert!(fx.tokens.token_for(&approver()).await.is_ok(), "nothing was cached for the approver");
}

#[tokio::test]
async fn a_delegated_token_that_comes_back_for_another_user_is_refused() {
    let fx = fx().await;
    // The token service answers with a Graph token whose `oid` is another admin's.
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(token_response(&sso_token_for(ADMIN_OID), 3600))
        .mount(&fx.token_service)
        .await;
    assert!(matches!(fx.tokens.token_for(&approver()).await, Err(TokenError::NotTheApprover)));
    Mock::given(method("POST"))
        .and(path("/api/usertoken/exchange"))
        .respond_with(token_response(&sso_token_for(ADMIN_OID), 3600))
        .mount(&fx.token_service)
        .await;
    assert!(matches!(fx.tokens.exchange_sso(&approver(), &sso_for(SECOND_ADMIN_OID)).await, Err(TokenError::NotTheApprover)));
}

#[tokio::test]
async fn a_refused_sso_exchange_means_sign_in_is_needed() {
    let fx = fx().await;
    Mock::given(method("POST"))
        .and(path("/api/usertoken/exchange"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&fx.token_service)
        .await;
    assert!(fx.tokens.exchange_sso(&approver(), &sso_for(SECOND_ADMIN_OID)).await.unwrap().is_none());
}

fn sso_for(oid: &str) -> SecretString {
    SecretString::from(sso_token_for(oid))
}

#[tokio::test]
async fn obo_mode_exchanges_the_sso_token_at_entra_with_the_jwt_bearer_grant() {
    let fx = fx_with(true).await;
    let sso = sso_for(SECOND_ADMIN_OID);
    Mock::given(method("POST"))
        .and(path(format!("/{TENANT_ID}/oauth2/v2.0/token")))
        .and(body_string_contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"))
        .and(body_string_contains("requested_token_use=on_behalf_of"))
        .and(body_string_contains(format!("assertion={}", sso.expose_secret()).as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"token_type": "Bearer", "expires_in": 3600, "access_token": "obo-graph-token"})),
        )
        .with_priority(1)
        .expect(1)
        .mount(&fx.login)
        .await;
    let token = fx.tokens.exchange_sso(&approver(), &sso).await.unwrap().unwrap();
    assert_eq!(token.expose_secret(), "obo-graph-token");
    assert_eq!(fx.tokens.token_for(&approver()).await.unwrap().unwrap().expose_secret(), "obo-graph-token");
}

#[tokio::test]
async fn obo_mode_refuses_an_sso_token_of_someone_else_without_calling_entra() {
    let fx = fx_with(true).await;
    let stolen = sso_for(ADMIN_OID);
    assert!(matches!(fx.tokens.exchange_sso(&approver(), &stolen).await, Err(TokenError::NotTheApprover)));
    let obo_calls =
        fx.login.received_requests().await.unwrap().iter().filter(|r| String::from_utf8_lossy(&r.body).contains("jwt-bearer")).count();
    assert_eq!(obo_calls, 0);
}

fn token(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

#[tokio::test]
async fn remove_all_access_sends_the_exact_request_with_the_approvers_token() {
    let fx = fx().await;
    let chat = "19:11dbae04-5d5d-4bc7-9766-16793ed91233_4fdb1e07-a7e9-475c-a5e2-8d042a6c8102@unq.gbl.spaces";
    Mock::given(method("POST"))
        .and(path(format!("/v1.0/chats/{}/removeAllAccessForUser", encode(chat))))
        .and(header("authorization", "Bearer approver-token"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"user": {"@odata.type": "microsoft.graph.teamworkUserIdentity", "id": "user-oid", "tenantId": TENANT_ID}})))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&fx.graph_server)
        .await;
    assert_eq!(
        fx.graph.remove_all_access(&token("approver-token"), chat, "user-oid", TENANT_ID).await.map(|answer| answer.status),
        Ok(204)
    );
}

#[tokio::test]
async fn removals_go_to_beta_only_when_configured_for_a_cloud_that_lags() {
    let fx = fx().await;
    let chat = "19:meeting_abc@thread.v2";
    Mock::given(method("POST"))
        .and(path(format!("/beta/chats/{}/removeAllAccessForUser", encode(chat))))
        .and(header("authorization", "Bearer approver-token"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&fx.graph_server)
        .await;
    let beta = GraphClient::new(url::Url::parse(&fx.graph_server.uri()).unwrap(), retry(), Arc::new(Metrics::default()))
        .unwrap()
        .with_removal_version(chatwarden::graph::RemovalApiVersion::Beta);
    assert_eq!(beta.remove_all_access(&token("approver-token"), chat, "user-oid", TENANT_ID).await.map(|answer| answer.status), Ok(204));
    // Session revocation is v1.0 whatever the removal version.
    Mock::given(method("POST"))
        .and(path("/v1.0/users/user-oid/revokeSignInSessions"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&fx.graph_server)
        .await;
    assert_eq!(beta.revoke_sessions(&token("approver-token"), "user-oid").await.map(|answer| answer.status), Ok(204));
}

#[tokio::test]
async fn throttling_is_retried_after_the_time_graph_asks_for() {
    let fx = fx().await;
    Mock::given(method("POST"))
        .and(path("/v1.0/users/user-oid/revokeSignInSessions"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&fx.graph_server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1.0/users/user-oid/revokeSignInSessions"))
        .and(header("authorization", "Bearer approver-token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": true})))
        .mount(&fx.graph_server)
        .await;
    let started = std::time::Instant::now();
    assert_eq!(fx.graph.revoke_sessions(&token("approver-token"), "user-oid").await.map(|answer| answer.status), Ok(200));
    assert!(started.elapsed() >= Duration::from_millis(950), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_user_is_looked_up_by_upn() {
    let fx = fx().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/alice%40contoso.com"))
        .and(query_param("$select", "id,userPrincipalName,displayName"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "alice-oid", "userPrincipalName": "alice@contoso.com", "displayName": "Alice"})),
        )
        .mount(&fx.graph_server)
        .await;
    let user = fx.graph.user(&token("t"), "alice@contoso.com").await.unwrap().unwrap();
    assert_eq!(user.id, "alice-oid");
    assert_eq!(user.display_name.as_deref(), Some("Alice"));
    assert_eq!(fx.graph.user(&token("t"), "nobody@contoso.com").await, Ok(None));
}

/// Graph's `$batch`: answers each item 204, except item ids in `throttle_once` that get one 429.
struct FakeBatch {
    throttle_once: std::sync::Mutex<Vec<String>>,
}

impl wiremock::Respond for FakeBatch {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut throttle = self.throttle_once.lock().unwrap();
        answer_batch(request, |id, url| {
            if let Some(pos) = throttle.iter().position(|t| *t == id) {
                throttle.remove(pos);
                too_many_requests(id, "0")
            } else if url.contains("gone") {
                json!({"id": id, "status": 404, "body": {"error": {"code": "NotFound", "message": "x"}}})
            } else if url.contains("locked") {
                json!({"id": id, "status": 403, "body": {"error": {"code": "Forbidden", "message": "x"}}})
            } else {
                json!({"id": id, "status": 204})
            }
        })
    }
}

/// A `$batch` answer: `answer(id, url)` for each request in it.
fn answer_batch(request: &Request, mut answer: impl FnMut(String, &str) -> Value) -> ResponseTemplate {
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let responses: Vec<Value> = body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| answer(item["id"].as_str().unwrap().to_owned(), item["url"].as_str().unwrap()))
        .collect();
    ResponseTemplate::new(200).set_body_json(json!({"responses": responses}))
}

/// A 429 for item `id`, to be sent again after `retry_after` seconds.
fn too_many_requests(id: String, retry_after: &str) -> Value {
    json!({"id": id, "status": 429, "headers": {"Retry-After": retry_after}, "body": {"error": {"code": "TooManyRequests"}}})
}

/// The token service hands the approver "approver-token", valid for an hour.
async fn mount_approver_token(fx: &Fx) {
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(token_response("approver-token", 3600))
        .mount(&fx.token_service)
        .await;
}

/// The approver's token, and `$batch` (with that token) answered by `responder`.
async fn mount_batch(fx: &Fx, responder: impl wiremock::Respond + 'static) {
    mount_approver_token(fx).await;
    Mock::given(method("POST"))
        .and(path("/v1.0/$batch"))
        .and(header("authorization", "Bearer approver-token"))
        .respond_with(responder)
        .mount(&fx.graph_server)
        .await;
}

/// Runs `bulk_case(n)` on `executor`, its targets held in memory.
async fn run_bulk(executor: &GraphExecutor, n: usize, sink: &dyn ProgressSink) -> Vec<TargetResult> {
    let case = bulk_case(n);
    executor.execute(&case, &ListedTargets(case.targets.clone()), sink).await
}

fn bulk_case(n: usize) -> Case {
    Case {
        id: "CW-BULK1".into(),
        kind: CaseKind::RemoveExternal,
        state: CaseState::Executing,
        source: CaseSource::Command,
        tenant_id: TENANT_ID.into(),
        requester: Actor { oid: ADMIN_OID.into(), name: "Dana".into(), user_id: "29:dana".into() },
        reason: None,
        no_evidence: false,
        approver: Some(approver()),
        decided_at: None,
        decision_reason: None,
        escalated_at: None,
        card: None,
        created_at: 0,
        updated_at: 0,
        expires_at: i64::MAX,
        version: 0,
        targets: (0..n)
            .map(|i| Target {
                position: i as i64,
                thread_id: Some(match i {
                    7 => "19:gone@thread.v2".to_owned(),
                    8 => "19:locked@thread.v2".to_owned(),
                    _ => format!("19:chat{i}@thread.v2"),
                }),
                user_ref: format!("user-{i}"),
                user_oid: Some(format!("oid-{i}")),
                user_tenant_id: TENANT_ID.into(),
                display_name: None,
                status: TargetStatus::Pending,
                graph_status: None,
                detail: None,
                graph_code: None,
                receipt: None,
            })
            .collect(),
        evidence: vec![],
    }
}

#[tokio::test]
async fn a_bulk_revocation_goes_at_entra_ids_write_quota_not_at_the_teams_limit() {
    let fx = fx().await;
    mount_batch(&fx, FakeBatch { throttle_once: std::sync::Mutex::new(vec![]) }).await;
    let executor = GraphExecutor::new(std::sync::Arc::new(fx.graph), fx.tokens.clone());
    let mut case = bulk_case(45);
    case.kind = CaseKind::RevokeSessions;
    let results = executor.execute(&case, &ListedTargets(case.targets.clone()), &Unrecorded).await;
    assert_eq!(results.iter().filter(|r| r.status == TargetStatus::Done).count(), 45);
    let batches: Vec<Value> =
        fx.graph_server.received_requests().await.unwrap().iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
    // Entra ID's bucket holds 3,000 writes: all 45 go at once, in full batches (Teams pacing
    // would have sent 20 and 10, then waited a second for the rest).
    let sizes: Vec<usize> = batches.iter().map(|b| b["requests"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [20, 20, 5]);
    assert_eq!(batches[0]["requests"][0]["url"], "/users/oid-0/revokeSignInSessions");
}

/// Every item answered 204, noting when each `$batch` arrived and how many items it held.
struct ArrivalClock(Arc<std::sync::Mutex<Vec<(std::time::Instant, usize)>>>);

impl wiremock::Respond for ArrivalClock {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut items = 0;
        let answer = answer_batch(request, |id, _| {
            items += 1;
            json!({"id": id, "status": 204})
        });
        self.0.lock().unwrap().push((std::time::Instant::now(), items));
        answer
    }
}

#[tokio::test]
async fn two_bulk_cases_at_once_share_teams_30_a_second_instead_of_sending_60() {
    let fx = fx().await;
    let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
    mount_batch(&fx, ArrivalClock(Arc::clone(&arrivals))).await;
    let executor = GraphExecutor::new(Arc::new(fx.graph), fx.tokens.clone());
    let (first, mut second) = (bulk_case(30), bulk_case(30));
    second.id = "CW-BULK2".into();
    let (first_targets, second_targets) = (ListedTargets(first.targets.clone()), ListedTargets(second.targets.clone()));
    let (a, b) =
        tokio::join!(executor.execute(&first, &first_targets, &Unrecorded), executor.execute(&second, &second_targets, &Unrecorded),);
    let done = |results: &[TargetResult]| results.iter().filter(|r| r.graph_status == Some(204)).count();
    assert_eq!((done(&a), done(&b)), (30, 30));
    let arrivals = arrivals.lock().unwrap();
    let start = arrivals.iter().map(|(at, _)| *at).min().unwrap();
    // Graph's limit is per app and tenant, not per case: the 30 that fit in the first second go
    // first, and the other 30 a second later (each case on its own would have sent 30 at once).
    let soon: usize = arrivals.iter().filter(|(at, _)| at.duration_since(start) < Duration::from_millis(500)).map(|(_, n)| n).sum();
    assert_eq!(soon, 30, "{:?}", arrivals.iter().map(|(at, n)| (at.duration_since(start), *n)).collect::<Vec<_>>());
    assert_eq!(arrivals.iter().map(|(_, n)| n).sum::<usize>(), 60);
}

#[tokio::test]
async fn a_bulk_case_of_45_targets_is_sent_as_3_batches_with_results_per_item() {
    let fx = fx().await;
    mount_batch(&fx, FakeBatch { throttle_once: std::sync::Mutex::new(vec!["3".into(), "30".into()]) }).await;
    let executor = GraphExecutor::new(std::sync::Arc::new(fx.graph), fx.tokens.clone());
    let results = run_bulk(&executor, 45, &Unrecorded).await;
    assert_eq!(results.len(), 45);
    let batches: Vec<Value> =
        fx.graph_server.received_requests().await.unwrap().iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
    let sizes: Vec<usize> = batches.iter().map(|b| b["requests"].as_array().unwrap().len()).collect();
    // Paced to 30 items/s: 20, then the 10 left in that second (the throttled item 3 rides
    // along), then the rest; the item throttled in the third batch goes last.
    assert_eq!(sizes, [20, 10, 16, 1]);
    let first = &batches[0]["requests"][0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["url"], "/chats/19%3Achat0%40thread.v2/removeAllAccessForUser");
    assert_eq!(first["headers"]["Content-Type"], "application/json");
    assert_eq!(first["body"]["user"]["id"], "oid-0");
    let by_position = |p: i64| results.iter().find(|r| r.position == p).unwrap();
    assert_eq!(by_position(3).status, TargetStatus::Done);
    assert_eq!(by_position(30).status, TargetStatus::Done);
    assert_eq!(by_position(7).status, TargetStatus::Skipped);
    assert_eq!(by_position(8).status, TargetStatus::Failed);
    assert_eq!(by_position(8).graph_status, Some(403));
    assert!(by_position(8).detail.contains("Chat.ReadWrite.All"));
    assert_eq!(results.iter().filter(|r| r.status == TargetStatus::Done).count(), 43);
}

/// A sink that records every round except the `unrecorded`-th (from 1), and notes what it saw.
struct SinkFailingRound {
    unrecorded: usize,
    rounds: std::sync::Mutex<Vec<Vec<i64>>>,
}

#[async_trait::async_trait]
impl chatwarden::execution::ProgressSink for SinkFailingRound {
    async fn finished(&self, results: &[chatwarden::execution::TargetResult]) -> chatwarden::execution::Report {
        let mut rounds = self.rounds.lock().unwrap();
        rounds.push(results.iter().map(|r| r.position).collect());
        if rounds.len() == self.unrecorded { chatwarden::execution::Report::NotRecorded } else { chatwarden::execution::Report::Recorded }
    }

    fn waiting(&self, _targets: usize) {}
}

#[tokio::test]
async fn a_bulk_run_keeps_only_the_outcomes_its_sink_could_not_record_and_returns_them() {
    let fx = fx().await;
    mount_batch(&fx, FakeBatch { throttle_once: std::sync::Mutex::new(vec![]) }).await;
    let executor = GraphExecutor::new(std::sync::Arc::new(fx.graph), fx.tokens.clone());
    let sink = SinkFailingRound { unrecorded: 2, rounds: Default::default() };
    let results = run_bulk(&executor, 45, &sink).await;
    let rounds = sink.rounds.lock().unwrap().clone();
    // Paced to 30 items/s: 20, 10, then 15; every outcome was reported once.
    assert_eq!(rounds.iter().map(Vec::len).collect::<Vec<_>>(), [20, 10, 15]);
    let mut reported: Vec<i64> = rounds.iter().flatten().copied().collect();
    reported.sort_unstable();
    assert_eq!(reported, (0..45).collect::<Vec<i64>>());
    // Only the round the sink could not record comes back, for the runner to record.
    let returned: Vec<i64> = results.iter().map(|r| r.position).collect();
    assert_eq!(returned, rounds[1]);
    assert_eq!(results.iter().filter(|r| r.status == TargetStatus::Done).count(), 10);
}

/// Pending targets held in memory that note every read and every reported outcome: how many
/// targets the executor held (read, not yet reported) when it asked for each page.
struct Ledger {
    targets: ListedTargets,
    state: std::sync::Mutex<LedgerState>,
}

#[derive(Default)]
struct LedgerState {
    read: usize,
    reported: Vec<i64>,
    /// (after, limit, targets held) per read.
    reads: Vec<(Option<i64>, usize, usize)>,
}

impl Ledger {
    fn of(n: usize) -> Self {
        Self { targets: ListedTargets(bulk_case(n).targets), state: Default::default() }
    }
}

#[async_trait::async_trait]
impl PendingTargets for Ledger {
    async fn after(&self, after: Option<i64>, limit: usize) -> Result<Vec<Target>, chatwarden::store::StoreError> {
        let page = self.targets.after(after, limit).await?;
        let mut state = self.state.lock().unwrap();
        let held = state.read - state.reported.len();
        state.reads.push((after, limit, held));
        state.read += page.len();
        Ok(page)
    }
}

#[async_trait::async_trait]
impl ProgressSink for Ledger {
    async fn finished(&self, results: &[TargetResult]) -> chatwarden::execution::Report {
        self.state.lock().unwrap().reported.extend(results.iter().map(|r| r.position));
        chatwarden::execution::Report::Recorded
    }

    fn waiting(&self, _targets: usize) {}
}

#[tokio::test]
async fn a_bulk_run_reads_its_targets_a_page_at_a_time_as_the_queue_runs_low() {
    let fx = fx().await;
    mount_batch(&fx, FakeBatch { throttle_once: std::sync::Mutex::new(vec![]) }).await;
    let executor = GraphExecutor::new(std::sync::Arc::new(fx.graph), fx.tokens.clone()).paced_at(10_000);
    let ledger = Ledger::of(250);
    let case = bulk_case(250);
    assert!(executor.execute(&case, &ledger, &ledger).await.is_empty(), "every outcome was recorded");
    let state = ledger.state.lock().unwrap();
    // Pages of 100 in position order, each after the last target of the one before.
    let pages: Vec<(Option<i64>, usize)> = state.reads.iter().map(|(after, limit, _)| (*after, *limit)).collect();
    assert_eq!(pages, [(None, 100), (Some(99), 100), (Some(199), 100)]);
    // The next page is read only once less than one `$batch` request's worth is left.
    for (after, _, held) in &state.reads {
        assert!(*held < 20, "{held} targets still held when reading after {after:?}");
    }
    let mut reported = state.reported.clone();
    reported.sort_unstable();
    assert_eq!(reported, (0..250).collect::<Vec<i64>>(), "every target reported once");
}

/// Throttles every item the first time it sees it (`Retry-After: 2`), answers 204 after.
struct ThrottleFirstAttempt {
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl wiremock::Respond for ThrottleFirstAttempt {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut seen = self.seen.lock().unwrap();
        answer_batch(request, |id, _| if seen.insert(id.clone()) { too_many_requests(id, "2") } else { json!({"id": id, "status": 204}) })
    }
}

#[tokio::test]
async fn a_bulk_run_throttled_everywhere_stops_reading_while_its_queue_is_full() {
    let fx = fx().await;
    mount_batch(&fx, ThrottleFirstAttempt { seen: Default::default() }).await;
    let executor = GraphExecutor::new(std::sync::Arc::new(fx.graph), fx.tokens.clone()).paced_at(10_000);
    let ledger = Ledger::of(800);
    let case = bulk_case(800);
    assert!(executor.execute(&case, &ledger, &ledger).await.is_empty(), "every outcome was recorded");
    let state = ledger.state.lock().unwrap();
    // Every target waits on Retry-After once: at most 500 wait before the next page is read.
    let most = state.reads.iter().map(|(_, _, held)| *held).max().unwrap();
    assert!(most <= 500, "{most} targets held when a page was read");
    assert!(most >= 400, "the queue filled before the first answers came back: {most}");
    assert_eq!(state.reads.len(), 9, "800 targets in pages of 100, and the empty read that ends them");
    let mut reported = state.reported.clone();
    reported.sort_unstable();
    assert_eq!(reported, (0..800).collect::<Vec<i64>>(), "every target done once, none lost to the queue's bound");
}

#[tokio::test]
async fn a_401_from_graph_evicts_the_token_and_retries_once_with_a_fresh_one() {
    let fx = fx().await;
    mount_stale_then_fresh_token(&fx.token_service).await;
    Mock::given(method("POST"))
        .and(path_suffix_remove())
        .and(header("authorization", "Bearer stale-token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"code": "InvalidAuthenticationToken"}})))
        .mount(&fx.graph_server)
        .await;
    Mock::given(method("POST"))
        .and(path_suffix_remove())
        .and(header("authorization", "Bearer fresh-token"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&fx.graph_server)
        .await;
    let executor = GraphExecutor::new(std::sync::Arc::new(fx.graph), fx.tokens.clone());
    let results = run_bulk(&executor, 1, &Unrecorded).await;
    assert_eq!(results[0].status, TargetStatus::Done);
    let get_tokens =
        fx.token_service.received_requests().await.unwrap().into_iter().filter(|r| r.url.path() == "/api/usertoken/GetToken").count();
    assert_eq!(get_tokens, 2);
    assert_eq!(fx.graph_server.received_requests().await.unwrap().len(), 2);
}

fn path_suffix_remove() -> wiremock::matchers::PathRegexMatcher {
    wiremock::matchers::path_regex("^/v1.0/chats/.+/removeAllAccessForUser$")
}

#[tokio::test]
async fn forbidden_and_not_found_are_reported_in_plain_words() {
    let fx = fx().await;
    Mock::given(method("GET")).and(path("/api/usertoken/GetToken")).respond_with(token_response("t", 3600)).mount(&fx.token_service).await;
    Mock::given(method("POST"))
        .and(path_suffix_remove())
        .respond_with(
            ResponseTemplate::new(403).set_body_json(json!({"error": {"code": "Forbidden", "message": "Missing role permissions"}})),
        )
        .mount(&fx.graph_server)
        .await;
    let executor = GraphExecutor::new(std::sync::Arc::new(fx.graph), fx.tokens.clone());
    let results = run_bulk(&executor, 1, &Unrecorded).await;
    assert_eq!(results[0].status, TargetStatus::Failed);
    assert_eq!(results[0].graph_status, Some(403));
    assert!(results[0].detail.starts_with("Graph refused (403 Forbidden)"), "{}", results[0].detail);

    fx.graph_server.reset().await;
    Mock::given(method("POST"))
        .and(path_suffix_remove())
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {"code": "NotFound"}})))
        .mount(&fx.graph_server)
        .await;
    let results = run_bulk(&executor, 1, &Unrecorded).await;
    assert_eq!(results[0].status, TargetStatus::Skipped);
    assert!(results[0].detail.starts_with("nothing to remove"));
}

#[tokio::test]
async fn a_batch_never_carries_more_than_twenty_items() {
    let fx = fx().await;
    Mock::given(method("POST"))
        .and(path("/v1.0/$batch"))
        .respond_with(FakeBatch { throttle_once: std::sync::Mutex::new(vec![]) })
        .mount(&fx.graph_server)
        .await;
    let items: Vec<BatchItem> = (0..25)
        .map(|i| BatchItem { id: i.to_string(), method: "POST", url: format!("/users/u{i}/revokeSignInSessions"), body: None })
        .collect();
    let outcomes = fx.graph.batch(&token("t"), "v1.0", &items).await.unwrap();
    assert_eq!(outcomes.len(), 20);
}

#[tokio::test]
async fn a_batch_refused_with_401_is_sent_once_more_with_a_fresh_token() {
    let fx = fx().await;
    mount_stale_then_fresh_token(&fx.token_service).await;
    Mock::given(method("POST"))
        .and(path("/v1.0/$batch"))
        .and(header("authorization", "Bearer stale-token"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"code": "InvalidAuthenticationToken"}})))
        .mount(&fx.graph_server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1.0/$batch"))
        .and(header("authorization", "Bearer fresh-token"))
        .respond_with(FakeBatch { throttle_once: std::sync::Mutex::new(vec![]) })
        .mount(&fx.graph_server)
        .await;
    let executor = GraphExecutor::new(std::sync::Arc::new(fx.graph), fx.tokens.clone());
    let results = run_bulk(&executor, 3, &Unrecorded).await;
    assert!(results.iter().all(|r| r.status == TargetStatus::Done), "{results:?}");
    assert_eq!(fx.graph_server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_batch_answered_200_with_an_unreadable_body_fails_its_targets_instead_of_passing_them() {
    let fx = fx().await;
    mount_batch(&fx, ResponseTemplate::new(200).set_body_json(json!({"responses": "not a list"}))).await;
    let executor = GraphExecutor::new(std::sync::Arc::new(fx.graph), fx.tokens.clone());
    let results = run_bulk(&executor, 3, &Unrecorded).await;
    assert_eq!(results.len(), 3);
    for result in &results {
        assert_eq!(result.status, TargetStatus::Failed, "{result:?}");
        assert!(result.detail.starts_with("Graph gave no usable answer (unreadable answer: invalid batch body)"), "{result:?}");
        assert_eq!(result.graph_status, None, "no Graph status was recorded for an answer that could not be read");
    }
}

#[tokio::test]
async fn every_graph_call_carries_its_own_client_request_id_the_same_on_retries() {
    let fx = fx().await;
    Mock::given(method("POST"))
        .and(path("/v1.0/users/user-oid/revokeSignInSessions"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&fx.graph_server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1.0/users/user-oid/revokeSignInSessions"))
        .respond_with(ResponseTemplate::new(200).insert_header("request-id", "graph-side-id").set_body_json(json!({"value": true})))
        .mount(&fx.graph_server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/alice%40contoso.com"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "alice-oid", "userPrincipalName": "alice@contoso.com"})))
        .mount(&fx.graph_server)
        .await;
    assert_eq!(fx.graph.revoke_sessions(&token("approver-token"), "user-oid").await.map(|answer| answer.status), Ok(200));
    fx.graph.user(&token("approver-token"), "alice@contoso.com").await.unwrap().unwrap();
    let ids: Vec<String> = fx
        .graph_server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers.get("client-request-id").expect("a Graph call without client-request-id").to_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    for id in &ids {
        let parsed = uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("`{id}` is not a UUID: {e}"));
        assert_eq!(parsed.get_version_num(), 4);
    }
    assert_eq!(ids[0], ids[1], "a retry keeps the call's id");
    assert_ne!(ids[1], ids[2], "another call gets another id");
}

#[tokio::test]
async fn every_target_keeps_what_graph_said_its_status_code_request_ids_and_date() {
    let fx = fx().await;
    mount_approver_token(&fx).await;
    let date = "Wed, 02 Dec 2026 01:02:03 GMT";
    Mock::given(method("POST"))
        .and(path_suffix_remove())
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("request-id", "5f3c1d2e-graph-request-1")
                .insert_header("date", date)
                .set_body_json(json!({"error": {"code": "Forbidden"}})),
        )
        .mount(&fx.graph_server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1.0/$batch"))
        .respond_with(ResponseTemplate::new(200).insert_header("request-id", "batch-request-9").insert_header("date", date).set_body_json(
            json!({"responses": [{"id": "0", "status": 204}, {"id": "1", "status": 404, "body": {"error": {"code": "NotFound"}}}]}),
        ))
        .mount(&fx.graph_server)
        .await;
    let executor = GraphExecutor::new(std::sync::Arc::new(fx.graph), fx.tokens.clone());

    let single = run_bulk(&executor, 1, &Unrecorded).await.remove(0);
    let sent = fx.graph_server.received_requests().await.unwrap().remove(0);
    let sent_id = sent.headers.get("client-request-id").unwrap().to_str().unwrap().to_owned();
    let receipt = single.receipt.clone().expect("a receipt");
    assert_eq!(receipt.client_request_id, sent_id);
    assert_eq!(receipt.request_id.as_deref(), Some("5f3c1d2e-graph-request-1"));
    assert_eq!(receipt.date.as_deref(), Some(date));
    assert_eq!((single.graph_status, single.graph_code.as_deref()), (Some(403), Some("Forbidden")));

    let batched = run_bulk(&executor, 2, &Unrecorded).await;
    let batch_id =
        fx.graph_server.received_requests().await.unwrap()[1].headers.get("client-request-id").unwrap().to_str().unwrap().to_owned();
    for result in &batched {
        let receipt = result.receipt.as_ref().expect("a receipt per item");
        assert_eq!((receipt.client_request_id.as_str(), receipt.request_id.as_deref()), (batch_id.as_str(), Some("batch-request-9")));
    }
    assert_eq!(batched[1].graph_code.as_deref(), Some("NotFound"));

    // Stored with the target, shown by /status, and in the target's history event.
    let store = chatwarden::store::Store::connect(&sqlite_url()).await.unwrap();
    let case = approved_removal(&store, "19:chat0@thread.v2", "oid-0").await;
    store.claim_for_execution(&case.id, "runner", 60_000, chatwarden::cases::now_ms()).await.unwrap().unwrap();
    store.record_target(&case.id, &single, chatwarden::cases::now_ms()).await.unwrap();
    let stored = store.case(&case.id).await.unwrap().unwrap();
    assert_eq!(stored.targets[0].receipt.as_ref(), Some(&receipt));
    assert_eq!(stored.targets[0].graph_code.as_deref(), Some("Forbidden"));
    let events = store.events(&case.id).await.unwrap();
    let card = chatwarden::cards::status_card(&stored, &events).to_string();
    for shown in ["request-id 5f3c1d2e-graph-request-1", &format!("client-request-id {sent_id}"), date, "code Forbidden"] {
        assert!(card.contains(shown), "{shown} not on the /status card: {card}");
    }
    let data: Value = serde_json::from_str(events.last().unwrap().data.as_deref().unwrap()).unwrap();
    assert_eq!(data["graph"], json!({"client_request_id": sent_id, "request_id": "5f3c1d2e-graph-request-1", "date": date}));
    assert_eq!(data["graph_code"], "Forbidden");
}
