//! The delegated-token path end to end: approval -> the approver's own token -> exactly one
//! Graph call -> card updated; and the sign-in paths that complete a pending approval.

use std::time::Duration;

use chatwarden::cases::{CaseKind, CaseState};
use chatwarden::store::Store;
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::cases::{CARD_ID, THREAD, VICTIM, from, invoke, mount_connector, puts, request_removal, wait_state};
use crate::helpers::*;

const SIGN_IN_LINK: &str = "https://token.botframework.com/api/oauth/signin?signin=abc123";

fn approver_user_id() -> String {
    format!("29:admin-{SECOND_ADMIN_OID}")
}

async fn mount_removal(app: &TestApp, user_oid: &str, token: &str) {
    Mock::given(method("POST"))
        .and(path(format!("/v1.0/chats/{}/removeAllAccessForUser", encode(THREAD))))
        .and(header("authorization", format!("Bearer {token}").as_str()))
        .and(body_json(json!({"user": {"@odata.type": "microsoft.graph.teamworkUserIdentity", "id": user_oid, "tenantId": TENANT_ID}})))
        .respond_with(ResponseTemplate::new(204))
        .mount(&app.graph)
        .await;
}

async fn mount_not_signed_in(app: &TestApp) {
    Mock::given(method("GET"))
        .and(path("/api/botsignin/GetSignInResource"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "signInLink": SIGN_IN_LINK,
            "tokenExchangeResource": {"id": "exchange-1", "uri": format!("api://botid-{APP_ID}"), "providerId": "provider"},
        })))
        .mount(&app.token_service)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .and(query_param("code", "654321"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"channelId": "msteams", "connectionName": "graph", "token": "token-from-magic-code", "expiration": "2099-01-01T00:00:00Z"})))
        .with_priority(1)
        .mount(&app.token_service)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&app.token_service)
        .await;
}

/// The case's only target was removed by Graph (204), i.e. the call carried the expected token and body.
async fn assert_removed(store: &Store, case_id: &str) {
    let case = store.case(case_id).await.unwrap().unwrap();
    assert_eq!(case.state, CaseState::Done);
    assert_eq!(case.targets[0].graph_status, Some(204), "{:?}", case.targets[0]);
}

fn graph_calls(requests: &[wiremock::Request]) -> usize {
    requests.iter().filter(|r| r.url.path().ends_with("/removeAllAccessForUser")).count()
}

#[tokio::test]
async fn an_approval_by_a_signed_in_admin_removes_the_user_once_with_their_own_token() {
    let app = spawn_app_with(Fakes { real_graph: true, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    mount_removal(&app, VICTIM, &delegated_token(&approver_user_id())).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let response = app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve")).await;
    assert_eq!(response.status(), 200);
    let store = Store::connect(&app.database_url).await.unwrap();
    wait_state(&store, &case_id, CaseState::Done).await;
    // A second press after the fact calls nothing.
    app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-2", SECOND_ADMIN_OID, &case_id, "approve")).await;
    app.wait_for_a_full_sweep().await;

    let requests = app.graph.received_requests().await.unwrap();
    assert_eq!(graph_calls(&requests), 1);
    for request in &requests {
        assert_eq!(request.headers.get("authorization").unwrap(), &format!("Bearer {}", delegated_token(&approver_user_id())));
    }
    // The bot's own token never reaches Graph.
    assert!(requests.iter().all(|r| r.headers.get("authorization").unwrap() != &format!("Bearer {BOT_TOKEN}")));
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.targets[0].graph_status, Some(204));
    assert_eq!(case.targets[0].detail.as_deref(), Some("removed: the user no longer has access to the chat"));
    let last = puts(&app).await.pop().unwrap();
    let card = &last["attachments"][0]["content"];
    assert!(card["body"][0]["text"].as_str().unwrap().starts_with("Done"));
    assert_eq!(card["actions"][0]["verb"], "revoke_sessions");
}

#[tokio::test]
async fn an_admin_who_is_not_signed_in_is_asked_to_and_the_retried_invoke_completes_the_removal() {
    let app = spawn_app_with(Fakes { real_graph: true, signed_in: false, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    mount_not_signed_in(&app).await;
    mount_removal(&app, VICTIM, "token-from-magic-code").await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();

    let response = app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["statusCode"], 401);
    assert_eq!(body["type"], "application/vnd.microsoft.activity.loginRequest");
    assert_eq!(body["value"]["connectionName"], "graph");
    assert_eq!(body["value"]["buttons"][0]["type"], "signin");
    assert_eq!(body["value"]["buttons"][0]["value"], SIGN_IN_LINK);
    assert_eq!(body["value"]["tokenExchangeResource"]["id"], "exchange-1");
    let store = Store::connect(&app.database_url).await.unwrap();
    assert_eq!(store.case(&case_id).await.unwrap().unwrap().state, CaseState::Proposed);
    assert!(app.graph.received_requests().await.unwrap().is_empty());

    // Teams re-sends the same action with the magic code of the completed sign-in.
    let mut retried = invoke(&url, "inv-2", SECOND_ADMIN_OID, &case_id, "approve");
    retried["value"]["state"] = json!("654321");
    let body: Value = app.post_activity(Some(&valid_token(&url)), &retried).await.json().await.unwrap();
    assert_eq!(body["type"], "application/vnd.microsoft.card.adaptive", "{body}");
    wait_state(&store, &case_id, CaseState::Done).await;
    assert_removed(&store, &case_id).await;
    assert_eq!(graph_calls(&app.graph.received_requests().await.unwrap()), 1);
}

#[tokio::test]
async fn a_wrong_magic_code_is_refused_and_changes_nothing() {
    let app = spawn_app_with(Fakes { real_graph: true, signed_in: false, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    mount_not_signed_in(&app).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let mut retried = invoke(&url, "inv-2", SECOND_ADMIN_OID, &case_id, "approve");
    retried["value"]["state"] = json!("000000");
    let body: Value = app.post_activity(Some(&valid_token(&url)), &retried).await.json().await.unwrap();
    assert_eq!(body["statusCode"], 401);
    assert_eq!(body["type"], "application/vnd.microsoft.error.invalidAuthCode");
    let store = Store::connect(&app.database_url).await.unwrap();
    assert_eq!(store.case(&case_id).await.unwrap().unwrap().state, CaseState::Proposed);
}

fn signin_invoke(url: &str, id: &str, name: &str, value: Value) -> Value {
    let mut activity = message(url, "");
    activity.as_object_mut().unwrap().remove("text");
    activity["type"] = json!("invoke");
    activity["name"] = json!(name);
    activity["id"] = json!(id);
    activity["value"] = value;
    from(&mut activity, SECOND_ADMIN_OID, &format!("admin-{SECOND_ADMIN_OID}"));
    activity
}

#[tokio::test]
async fn on_the_submit_path_a_sign_in_card_is_posted_and_verify_state_resumes_the_approval() {
    let app = spawn_app_with(Fakes { real_graph: true, signed_in: false, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    mount_not_signed_in(&app).await;
    mount_removal(&app, VICTIM, "token-from-magic-code").await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let mut submit = message(&url, "");
    submit.as_object_mut().unwrap().remove("text");
    submit["id"] = json!("submit-1");
    submit["replyToId"] = json!(CARD_ID);
    submit["value"] = json!({"chatwarden": 1, "caseId": case_id, "action": "approve", "reason": "lure confirmed in the audit record"});
    from(&mut submit, SECOND_ADMIN_OID, &format!("admin-{SECOND_ADMIN_OID}"));
    assert_eq!(app.post_activity(Some(&valid_token(&url)), &submit).await.status(), 200);
    let oauth = crate::cases::private_answers(&app).await.pop().expect("the sign-in card goes to the approver alone");
    assert_eq!(oauth["recipient"]["id"], format!("29:admin-{SECOND_ADMIN_OID}"));
    assert_eq!(oauth["attachments"][0]["contentType"], "application/vnd.microsoft.card.oauth");
    assert_eq!(oauth["attachments"][0]["content"]["buttons"][0]["value"], SIGN_IN_LINK);

    let verify = signin_invoke(&url, "verify-1", "signin/verifyState", json!({"state": "654321"}));
    let response = app.post_activity(Some(&valid_token(&url)), &verify).await;
    assert_eq!(response.status(), 200);
    let store = Store::connect(&app.database_url).await.unwrap();
    wait_state(&store, &case_id, CaseState::Done).await;
    assert_removed(&store, &case_id).await;
    assert_eq!(store.case(&case_id).await.unwrap().unwrap().approver.unwrap().oid, SECOND_ADMIN_OID);
    assert_eq!(graph_calls(&app.graph.received_requests().await.unwrap()), 1);
}

#[tokio::test]
async fn token_exchange_invokes_are_handled_once_and_a_failed_exchange_answers_412() {
    let app = spawn_app_with(Fakes { real_graph: true, signed_in: false, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    Mock::given(method("POST"))
        .and(path("/api/usertoken/exchange"))
        .and(body_json(json!({"token": sso_token_for(SECOND_ADMIN_OID)})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "exchanged", "expiration": "2099-01-01T00:00:00Z"})))
        .mount(&app.token_service)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/usertoken/exchange"))
        .respond_with(ResponseTemplate::new(400))
        .mount(&app.token_service)
        .await;
    let url = app.service_url();
    let good = json!({"id": "exchange-1", "connectionName": "graph", "token": sso_token_for(SECOND_ADMIN_OID)});
    for id in ["x-1", "x-2"] {
        let response = app.post_activity(Some(&valid_token(&url)), &signin_invoke(&url, id, "signin/tokenExchange", good.clone())).await;
        assert_eq!(response.status(), 200);
    }
    let exchanges =
        app.token_service.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/api/usertoken/exchange").count();
    assert_eq!(exchanges, 1, "the repeated exchange was processed again");

    // The approver's own SSO token, which the token service refuses (consent needed).
    let mut consent = sso_token_for(SECOND_ADMIN_OID);
    consent.push_str("-needs-consent");
    let bad = json!({"id": "exchange-2", "connectionName": "graph", "token": consent});
    let response = app.post_activity(Some(&valid_token(&url)), &signin_invoke(&url, "x-3", "signin/tokenExchange", bad)).await;
    assert_eq!(response.status(), 412);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["id"], "exchange-2");
    assert_eq!(body["connectionName"], "graph");
    assert!(body["failureDetail"].as_str().unwrap().contains("consent"));
}

#[tokio::test]
async fn an_sso_token_on_the_retried_invoke_is_exchanged_and_the_removal_runs() {
    let app = spawn_app_with(Fakes { real_graph: true, signed_in: false, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    Mock::given(method("POST"))
        .and(path("/api/usertoken/exchange"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "sso-graph-token", "expiration": "2099-01-01T00:00:00Z"})))
        .mount(&app.token_service)
        .await;
    mount_removal(&app, VICTIM, "sso-graph-token").await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let mut retried = invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve");
    retried["value"]["authentication"] = json!({"id": "exchange-1", "connectionName": "graph", "token": sso_token_for(SECOND_ADMIN_OID)});
    let body: Value = app.post_activity(Some(&valid_token(&url)), &retried).await.json().await.unwrap();
    assert_eq!(body["type"], "application/vnd.microsoft.card.adaptive", "{body}");
    let store = Store::connect(&app.database_url).await.unwrap();
    wait_state(&store, &case_id, CaseState::Done).await;
    assert_removed(&store, &case_id).await;
}

#[tokio::test]
async fn an_approval_carrying_another_users_sso_token_is_refused_and_changes_nothing() {
    let app = spawn_app_with(Fakes { real_graph: true, signed_in: false, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    Mock::given(method("POST"))
        .and(path("/api/usertoken/exchange"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"token": "requesters-graph-token", "expiration": "2099-01-01T00:00:00Z"})),
        )
        .mount(&app.token_service)
        .await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    // The second admin approves, but the SSO token attached is the requester's own.
    let mut retried = invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve");
    retried["value"]["authentication"] = json!({"id": "exchange-1", "connectionName": "graph", "token": sso_token_for(ADMIN_OID)});
    let body: Value = app.post_activity(Some(&valid_token(&url)), &retried).await.json().await.unwrap();
    assert!(body["value"].as_str().unwrap().contains("belongs to another account"), "{body}");
    let store = Store::connect(&app.database_url).await.unwrap();
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.state, CaseState::Proposed);
    assert!(
        store
            .events(&case_id)
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == "refused" && e.detail.as_deref().unwrap_or_default().contains("another user"))
    );
    let exchanges =
        app.token_service.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/api/usertoken/exchange").count();
    assert_eq!(exchanges, 0, "the foreign SSO token was sent to the token service");
    assert_eq!(graph_calls(&app.graph.received_requests().await.unwrap()), 0);
}

#[tokio::test]
async fn a_upn_target_is_resolved_to_its_object_id_before_the_removal() {
    let app = spawn_app_with(Fakes { real_graph: true, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/alice%40contoso.com"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "alice-oid", "userPrincipalName": "alice@contoso.com", "displayName": "Alice"})),
        )
        .mount(&app.graph)
        .await;
    mount_removal(&app, "alice-oid", &delegated_token(&approver_user_id())).await;
    let url = app.service_url();
    let command = message(&url, &format!("/remove-chat {THREAD} alice@contoso.com"));
    app.post_activity(Some(&valid_token(&url)), &command).await;
    let case_id = crate::cases::card_case_id(&app).await;
    app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve")).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    wait_state(&store, &case_id, CaseState::Done).await;
    assert_removed(&store, &case_id).await;
    assert_eq!(store.case(&case_id).await.unwrap().unwrap().targets[0].user_oid.as_deref(), Some("alice-oid"));
}

#[tokio::test]
async fn the_revoke_sessions_follow_up_opens_a_new_case_for_the_same_user() {
    let app = spawn_app_with(Fakes { real_graph: true, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    mount_removal(&app, VICTIM, &delegated_token(&approver_user_id())).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve")).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    wait_state(&store, &case_id, CaseState::Done).await;

    let body: Value = app
        .post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-2", ADMIN_OID, &case_id, "revoke_sessions"))
        .await
        .json()
        .await
        .unwrap();
    assert!(body["value"].as_str().unwrap().contains(&case_id), "{body}");
    let history = store.history(10).await.unwrap();
    let follow_up = history.iter().find(|c| c.kind == CaseKind::RevokeSessions).unwrap();
    assert_eq!(follow_up.state, CaseState::Proposed);
    assert_eq!(follow_up.targets[0].user_oid.as_deref(), Some(VICTIM));
    assert_eq!(follow_up.reason.as_deref(), Some(format!("follow-up of {case_id}").as_str()));
}

#[tokio::test]
async fn the_revoke_follow_up_is_refused_for_a_case_that_never_ran() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    let url = app.service_url();
    let rejected = request_removal(&app, "cmd-1").await;
    app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", SECOND_ADMIN_OID, &rejected, "reject")).await;
    wait_state(&store, &rejected, CaseState::Rejected).await;
    let body: Value = app
        .post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-2", ADMIN_OID, &rejected, "revoke_sessions"))
        .await
        .json()
        .await
        .unwrap();
    assert!(body["value"].as_str().unwrap().contains("was not executed"), "{body}");
    // Nor is the button offered on the rejected card.
    let card = cards_put_for(&app).await;
    assert!(card.iter().all(|c| !c.to_string().contains("revoke_sessions")), "{card:?}");
    assert!(store.history(10).await.unwrap().iter().all(|c| c.kind != CaseKind::RevokeSessions));
}

#[tokio::test]
async fn the_revoke_follow_up_keeps_to_the_revoke_ceiling() {
    let app = spawn_app_with(Fakes { real_graph: true, ..Fakes::default() }, |c| c.revoke_ceiling = 1).await;
    mount_connector(&app).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    // A finished bulk removal of two users (stored directly: the ceiling is what is tested).
    let case = done_bulk_removal(&store, &["user-a", "user-b"]).await;
    let url = app.service_url();
    let body: Value = app
        .post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-2", ADMIN_OID, &case, "revoke_sessions"))
        .await
        .json()
        .await
        .unwrap();
    assert!(body["value"].as_str().unwrap().contains("CHATWARDEN_REVOKE_CEILING"), "{body}");
    assert!(store.history(10).await.unwrap().iter().all(|c| c.kind != CaseKind::RevokeSessions));
}

/// The cards the bot PUT over its approval cards.
async fn cards_put_for(app: &TestApp) -> Vec<Value> {
    for _ in 0..100 {
        let put = puts(app).await;
        if !put.is_empty() {
            return put;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no card was updated");
}

/// A `done` remove-external case over `users` in one chat, with every target done.
async fn done_bulk_removal(store: &Store, users: &[&str]) -> String {
    use chatwarden::cases::{Actor, CaseSource, Decision, NewCase, NewTarget, Policy, TargetStatus, now_ms};
    let requester = Actor { oid: ADMIN_OID.into(), name: "Requester".into(), user_id: "29:requester".into() };
    let new = NewCase {
        kind: CaseKind::RemoveExternal,
        source: CaseSource::Command,
        tenant_id: TENANT_ID.into(),
        requester,
        reason: None,
        targets: users
            .iter()
            .map(|u| NewTarget {
                thread_id: Some(THREAD.into()),
                user_ref: (*u).into(),
                user_oid: Some((*u).into()),
                user_tenant_id: TENANT_ID.into(),
                display_name: None,
            })
            .collect(),
        evidence: Vec::new(),
        no_evidence: true,
        ttl_ms: 3_600_000,
    };
    let chatwarden::store::Created::New(case) = store.create_case(&new, None, now_ms()).await.unwrap() else { panic!("not created") };
    let approver = Actor { oid: SECOND_ADMIN_OID.into(), name: "Approver".into(), user_id: "29:approver".into() };
    let policy = Policy { admins: None, require_second_approver: true, escalation_admins: Default::default() };
    store.decide(&case.id, &approver, Decision::Approve, None, &policy, now_ms()).await.unwrap();
    store.claim_for_execution(&case.id, "test-runner", 60_000, now_ms()).await.unwrap().unwrap();
    for position in 0..users.len() as i64 {
        store.record_target(&case.id, &target_result(position, TargetStatus::Done, Some(204), "removed", None), now_ms()).await.unwrap();
    }
    assert!(store.finish(&case.id, "test-runner", CaseState::Done, now_ms()).await.unwrap());
    case.id
}

#[tokio::test]
async fn the_approval_records_the_approvers_object_id_and_the_upn_their_token_names() {
    use base64::Engine as _;
    let app = spawn_app_with(Fakes { real_graph: true, signed_in: false, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = format!(r#"{{"oid":"{SECOND_ADMIN_OID}","upn":"sam@contoso.com","scp":"Chat.ReadWrite.All"}}"#);
    let token = format!("{}.{}.sig", e.encode(r#"{"alg":"RS256","typ":"JWT"}"#), e.encode(claims));
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"channelId": "msteams", "connectionName": "graph", "token": token, "expiration": "2099-01-01T00:00:00Z"}),
        ))
        .mount(&app.token_service)
        .await;
    mount_removal(&app, VICTIM, &token).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve")).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    wait_state(&store, &case_id, CaseState::Done).await;
    let approved = store.events(&case_id).await.unwrap().into_iter().find(|e| e.kind == "approved").unwrap();
    assert_eq!(approved.actor_oid.as_deref(), Some(SECOND_ADMIN_OID));
    assert_eq!(approved.detail.as_deref(), Some("signed in as sam@contoso.com; reason: approve: checked the audit record and the chat"));
    let data: Value = serde_json::from_str(approved.data.as_deref().unwrap()).unwrap();
    assert_eq!(
        data,
        json!({"approver_oid": SECOND_ADMIN_OID, "approver_upn": "sam@contoso.com", "reason": "approve: checked the audit record and the chat"})
    );
    assert!(!approved.data.unwrap().contains(&token), "the token itself is never recorded");
    assert!(store.verify_history(None).await.is_ok());
}
