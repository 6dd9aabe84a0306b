//! `/revoke-sessions` for a UPN or a whole group: lookups with the requester's token, one case,
//! one approval, batched revocations with the approver's token, per-user outcomes.

use std::sync::Mutex;

use chatwarden::cases::{CaseKind, CaseState, TargetStatus};
use chatwarden::store::Store;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::cases::{card_case_id, invoke, mount_connector, replies, wait_state};
use crate::helpers::*;

const GROUP: &str = "6f1e2d3c-4b5a-4968-8776-655443322110";
const REQUESTER_USER_ID: &str = "29:1AbCdEfGh-admin";

fn approver_token() -> String {
    delegated_token(&format!("29:admin-{SECOND_ADMIN_OID}"))
}

fn user(i: usize) -> Value {
    json!({"id": format!("00000000-0000-4000-8000-{i:012}"), "userPrincipalName": format!("user{i}@contoso.com"), "displayName": format!("User {i}")})
}

/// Group members over two pages: users 0..25 then 25..45, plus `extra` on the second page.
async fn mount_group(app: &TestApp, extra: Option<Value>) {
    let base = format!("/v1.0/groups/{GROUP}/transitiveMembers/microsoft.graph.user");
    let first: Vec<Value> = (0..25).map(user).collect();
    let mut second: Vec<Value> = (25..45).map(user).collect();
    if let Some(extra) = extra {
        second.push(extra);
    }
    Mock::given(method("GET"))
        .and(path(base.clone()))
        .and(query_param("$select", "id,userPrincipalName,displayName"))
        .and(header("authorization", format!("Bearer {}", delegated_token(REQUESTER_USER_ID)).as_str()))
        .and(wiremock::matchers::query_param_is_missing("$skiptoken"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"value": first, "@odata.nextLink": format!("{}{base}?$skiptoken=page2", app.graph.uri())})),
        )
        .mount(&app.graph)
        .await;
    Mock::given(method("GET"))
        .and(path(base))
        .and(query_param("$skiptoken", "page2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": second})))
        .mount(&app.graph)
        .await;
}

/// Graph `$batch` for revocations: user 7 is throttled once, user 12 is refused (403).
struct RevokeBatch {
    throttled: Mutex<bool>,
}

impl wiremock::Respond for RevokeBatch {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let mut throttled = self.throttled.lock().unwrap();
        let responses: Vec<Value> = body["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                let url = item["url"].as_str().unwrap();
                if url.contains("000000000007") && !*throttled {
                    *throttled = true;
                    json!({"id": item["id"], "status": 429, "headers": {"Retry-After": "0"}, "body": {"error": {"code": "TooManyRequests"}}})
                } else if url.contains("000000000012") {
                    json!({"id": item["id"], "status": 403, "body": {"error": {"code": "Authorization_RequestDenied"}}})
                } else {
                    json!({"id": item["id"], "status": 200, "body": {"value": true}})
                }
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({"responses": responses}))
    }
}

async fn command(app: &TestApp, id: &str, text: &str) {
    let url = app.service_url();
    let mut activity = message(&url, text);
    activity["id"] = json!(id);
    assert_eq!(app.post_activity(Some(&valid_token(&url)), &activity).await.status(), 200);
}

fn batches(requests: &[Request]) -> Vec<Value> {
    requests.iter().filter(|r| r.url.path() == "/v1.0/$batch").map(|r| serde_json::from_slice(&r.body).unwrap()).collect()
}

#[tokio::test]
async fn a_upn_is_resolved_to_its_object_id_before_the_card_is_posted() {
    let app = spawn_app_with(Fakes { real_graph: true, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    Mock::given(method("GET"))
        .and(path("/v1.0/users/alice%40contoso.com"))
        .and(header("authorization", format!("Bearer {}", delegated_token(REQUESTER_USER_ID)).as_str()))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "alice-oid", "userPrincipalName": "alice@contoso.com", "displayName": "Alice"})),
        )
        .mount(&app.graph)
        .await;
    command(&app, "cmd-1", "/revoke-sessions alice@contoso.com compromised").await;
    let case_id = card_case_id(&app).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.kind, CaseKind::RevokeSessions);
    assert_eq!(case.targets[0].user_oid.as_deref(), Some("alice-oid"));
    assert_eq!(case.targets[0].display_name.as_deref(), Some("Alice"));
    let card = replies(&app).await.pop().unwrap()["attachments"][0]["content"].to_string();
    assert!(card.contains("revoke the sign-in sessions of 1 user(s)"), "{card}");
    assert!(card.contains("Continuous Access Evaluation"), "{card}");

    command(&app, "cmd-2", "/revoke-sessions nobody@contoso.com").await;
    let last = replies(&app).await.pop().unwrap();
    assert_eq!(last["text"], "There is no user `nobody@contoso.com` in the directory.");
}

#[tokio::test]
async fn a_group_of_45_users_is_one_case_revoked_in_3_batches_with_per_user_results() {
    let app = spawn_app_with(Fakes { real_graph: true, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    mount_group(&app, None).await;
    Mock::given(method("POST"))
        .and(path("/v1.0/$batch"))
        .and(header("authorization", format!("Bearer {}", approver_token()).as_str()))
        .respond_with(RevokeBatch { throttled: Mutex::new(false) })
        .mount(&app.graph)
        .await;
    command(&app, "cmd-1", &format!("/revoke-sessions group:{GROUP} phishing campaign")).await;
    let card = replies(&app).await.pop().unwrap()["attachments"][0]["content"].to_string();
    assert!(card.contains("revoke the sign-in sessions of 45 user(s)"), "{card}");
    assert!(card.contains("User 0 (user0@contoso.com)"), "{card}");
    assert!(card.contains("and 30 more"), "{card}");
    let case_id = card_case_id(&app).await;

    let url = app.service_url();
    app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve")).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    wait_state(&store, &case_id, CaseState::Failed).await;

    let requests = app.graph.received_requests().await.unwrap();
    let sent = batches(&requests);
    let sizes: Vec<usize> = sent.iter().map(|b| b["requests"].as_array().unwrap().len()).collect();
    // Entra ID's write quota takes all 45 at once: full batches back to back, the throttled item
    // sent again in the last one.
    assert_eq!(sizes, [20, 20, 6]);
    assert_eq!(sent[0]["requests"][0]["url"], "/users/00000000-0000-4000-8000-000000000000/revokeSignInSessions");
    for request in requests.iter().filter(|r| r.url.path() == "/v1.0/$batch") {
        assert_eq!(request.headers.get("authorization").unwrap(), &format!("Bearer {}", approver_token()));
    }
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.targets.len(), 45);
    assert_eq!(case.targets.iter().filter(|t| t.status == TargetStatus::Done).count(), 44);
    let refused = case.targets.iter().find(|t| t.status == TargetStatus::Failed).unwrap();
    assert_eq!(refused.user_ref, "user12@contoso.com");
    assert_eq!(refused.graph_status, Some(403));
    assert!(refused.detail.as_deref().unwrap().contains("User.RevokeSessions.All"));
    let throttled = case.targets.iter().find(|t| t.user_ref == "user7@contoso.com").unwrap();
    assert_eq!(throttled.status, TargetStatus::Done);
    let events = store.events(&case_id).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "target_done").count(), 44);
    assert_eq!(events.iter().filter(|e| e.kind == "target_failed").count(), 1);
}

#[tokio::test]
async fn the_approver_in_the_group_is_skipped_and_listed() {
    let app = spawn_app_with(Fakes { real_graph: true, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    mount_group(&app, Some(json!({"id": SECOND_ADMIN_OID, "userPrincipalName": "sam@contoso.com", "displayName": "Sam"}))).await;
    Mock::given(method("POST")).and(path("/v1.0/$batch")).respond_with(RevokeBatch { throttled: Mutex::new(true) }).mount(&app.graph).await;
    command(&app, "cmd-1", &format!("/revoke-sessions group:{GROUP}")).await;
    let case_id = card_case_id(&app).await;
    let url = app.service_url();
    app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve")).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    wait_state(&store, &case_id, CaseState::Failed).await;
    let case = store.case(&case_id).await.unwrap().unwrap();
    let own = case.targets.iter().find(|t| t.user_oid.as_deref() == Some(SECOND_ADMIN_OID)).unwrap();
    assert_eq!(own.status, TargetStatus::Skipped);
    assert!(own.detail.as_deref().unwrap().contains("approver's own sessions"));
    let revoked: usize =
        batches(&app.graph.received_requests().await.unwrap()).iter().map(|b| b["requests"].as_array().unwrap().len()).sum();
    assert_eq!(revoked, 45, "every member but the approver");
}

#[tokio::test]
async fn a_group_above_the_ceiling_is_refused_with_its_size() {
    let app = spawn_app_with(Fakes { real_graph: true, ..Fakes::default() }, |c| c.revoke_ceiling = 10).await;
    mount_connector(&app).await;
    mount_group(&app, None).await;
    command(&app, "cmd-1", &format!("/revoke-sessions group:{GROUP}")).await;
    let last = replies(&app).await.pop().unwrap();
    assert_eq!(
        last["text"],
        format!("Group `{GROUP}` has 45 users, more than the 10 one case may revoke (CHATWARDEN_REVOKE_CEILING). Nothing was opened.")
    );
    let store = Store::connect(&app.database_url).await.unwrap();
    assert!(store.history(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_requester_who_is_not_signed_in_is_asked_to_sign_in_first() {
    let app = spawn_app_with(Fakes { real_graph: true, signed_in: false, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&app.token_service)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/botsignin/GetSignInResource"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"signInLink": "https://token.botframework.com/api/oauth/signin?signin=1"})),
        )
        .mount(&app.token_service)
        .await;
    command(&app, "cmd-1", &format!("/revoke-sessions group:{GROUP}")).await;
    assert!(replies(&app).await.is_empty(), "the sign-in prompt is for the requester alone");
    let last = crate::cases::private_answers(&app).await.pop().unwrap();
    assert_eq!(last["recipient"]["id"], REQUESTER_USER_ID);
    assert!(last["text"].as_str().unwrap().starts_with("Sign in first"), "{last}");
    assert_eq!(last["attachments"][0]["contentType"], "application/vnd.microsoft.card.oauth");
    assert!(app.graph.received_requests().await.unwrap().is_empty());
}

/// Every activity the bot posted in the thread, typing indicators included, in order.
async fn thread_posts(app: &TestApp) -> Vec<Value> {
    let requests = app.connector.received_requests().await.unwrap();
    requests
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path().contains("/activities/"))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn a_command_that_takes_a_while_shows_the_typing_indicator_first_and_a_quick_one_does_not() {
    let app = spawn_app_with(Fakes { real_graph: true, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    // Graph takes 1.2 s to list the group: long enough to be noticed as a wait.
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/groups/{GROUP}/transitiveMembers/microsoft.graph.user")))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"value": [user(1), user(2)]}))
                .set_delay(std::time::Duration::from_millis(1200)),
        )
        .mount(&app.graph)
        .await;
    command(&app, "cmd-1", &format!("/revoke-sessions group:{GROUP} phishing")).await;
    let posts = thread_posts(&app).await;
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[0]["type"], "typing");
    assert_eq!(posts[0]["replyToId"], "cmd-1");
    assert!(posts[0].get("text").is_none(), "{}", posts[0]);
    assert_eq!(posts[1]["type"], "message");
    assert!(posts[1]["attachments"][0]["content"].to_string().contains("revoke the sign-in sessions of 2 user(s)"));
    // The case's own replies (what the other tests read) leave the indicator out.
    assert_eq!(replies(&app).await.len(), 1);

    command(&app, "cmd-2", "/help").await;
    let posts = thread_posts(&app).await;
    assert_eq!(posts.len(), 3, "a quick answer comes without a typing indicator");
    assert_eq!(posts[2]["type"], "message");
}
