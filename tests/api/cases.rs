//! The case flow through the real server: command -> approval card -> decision -> execution,
//! with double clicks, redeliveries, strangers and restarts.

use std::time::Duration;

use chatwarden::cases::{CaseState, now_ms};
use chatwarden::store::Store;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::*;

pub const THREAD: &str = "19:11dbae04-5d5d-4bc7-9766-16793ed91233_4fdb1e07-a7e9-475c-a5e2-8d042a6c8102@unq.gbl.spaces";
pub const VICTIM: &str = "4fdb1e07-a7e9-475c-a5e2-8d042a6c8102";
pub const CARD_ID: &str = "1719900000999";

/// A connector that accepts replies (answering the card id), sends and updates.
pub async fn mount_connector(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path_regex("^/v3/conversations/[^/]+/activities/[^/]+$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": CARD_ID})))
        .mount(&app.connector)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex("^/v3/conversations/.+/activities/.+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": CARD_ID})))
        .mount(&app.connector)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/v3/conversations/[^/]+/activities$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "m1"})))
        .mount(&app.connector)
        .await;
}

pub fn from(activity: &mut Value, oid: &str, name: &str) {
    activity["from"] = json!({"id": format!("29:{name}"), "name": name, "aadObjectId": oid});
}

/// The `adaptiveCard/action` invoke Teams sends when `oid` presses `verb` on the card of
/// `case_id`, with a reason typed in.
pub fn invoke(url: &str, id: &str, oid: &str, case_id: &str, verb: &str) -> Value {
    invoke_with_reason(url, id, oid, case_id, verb, Some(&format!("{verb}: checked the audit record and the chat")))
}

/// A press of `verb` with `reason` in the card's reason field (`None`: left empty).
pub fn invoke_with_reason(url: &str, id: &str, oid: &str, case_id: &str, verb: &str, reason: Option<&str>) -> Value {
    let mut activity = message(url, "");
    activity["type"] = json!("invoke");
    activity["name"] = json!("adaptiveCard/action");
    activity["id"] = json!(id);
    activity["replyToId"] = json!(CARD_ID);
    activity.as_object_mut().unwrap().remove("text");
    let mut data = json!({"chatwarden": 1, "caseId": case_id, "action": verb});
    if let Some(reason) = reason {
        data["reason"] = json!(reason);
    }
    activity["value"] = json!({"action": {"type": "Action.Execute", "verb": verb, "data": data}, "trigger": "manual"});
    from(&mut activity, oid, &format!("admin-{oid}"));
    activity
}

/// Posts a command from the default admin and returns the case id shown on the approval card.
pub async fn request_removal(app: &TestApp, activity_id: &str) -> String {
    let url = app.service_url();
    let mut command = message(&url, &format!("/remove-chat {THREAD} {VICTIM} suspicious link"));
    command["id"] = json!(activity_id);
    let response = app.post_activity(Some(&valid_token(&url)), &command).await;
    assert_eq!(response.status(), 200);
    card_case_id(app).await
}

/// The messages the bot posted in threads (typing indicators left out).
pub async fn replies(app: &TestApp) -> Vec<Value> {
    let mut bodies = Vec::new();
    for request in app.connector.received_requests().await.unwrap() {
        if request.method.as_str() == "POST" && request.url.path().contains("/activities/") {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            if body["type"] != "typing" {
                bodies.push(body);
            }
        }
    }
    bodies
}

/// The targeted messages the bot sent: answers only their recipient sees.
pub async fn private_answers(app: &TestApp) -> Vec<Value> {
    let mut bodies = Vec::new();
    for request in app.connector.received_requests().await.unwrap() {
        if request.method.as_str() == "POST" && request.url.query() == Some("isTargetedActivity=true") {
            bodies.push(serde_json::from_slice(&request.body).unwrap());
        }
    }
    bodies
}

pub async fn card_case_id(app: &TestApp) -> String {
    let replies = replies(app).await;
    let card = replies.iter().rev().find_map(|r| r["attachments"][0]["content"].as_object().cloned()).expect("an approval card was posted");
    let facts = card["body"][1]["facts"].as_array().unwrap();
    facts[0]["value"].as_str().unwrap().to_owned()
}

pub async fn wait_state(store: &Store, id: &str, state: CaseState) {
    for _ in 0..200 {
        if store.case(id).await.unwrap().map(|c| c.state) == Some(state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("case {id} never reached {state}");
}

pub async fn puts(app: &TestApp) -> Vec<Value> {
    app.connector
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "PUT")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn an_admin_command_posts_an_approval_card_and_records_the_case() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    let case_id = request_removal(&app, "cmd-1").await;
    assert!(case_id.starts_with("CW-"), "{case_id}");

    let reply = replies(&app).await.pop().unwrap();
    assert_eq!(reply["replyToId"], "cmd-1");
    let card = &reply["attachments"][0];
    assert_eq!(card["contentType"], "application/vnd.microsoft.card.adaptive");
    let actions = card["content"]["actions"].as_array().unwrap();
    assert_eq!(actions[0]["type"], "Action.Execute");
    assert_eq!(actions[0]["data"], json!({"chatwarden": 1, "caseId": case_id, "action": "approve"}));
    assert_eq!(actions[0]["fallback"]["type"], "Action.Submit");
    assert_eq!(actions[1]["verb"], "reject");

    let store = Store::connect(&app.database_url).await.unwrap();
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.state, CaseState::Proposed);
    assert_eq!(case.requester.oid, ADMIN_OID);
    assert_eq!(case.reason.as_deref(), Some("suspicious link"));
    assert_eq!(case.targets[0].thread_id.as_deref(), Some(THREAD));
    assert_eq!(case.targets[0].user_oid.as_deref(), Some(VICTIM));
    assert_eq!(case.targets[0].user_tenant_id, TENANT_ID);
    let card_ref = case.card.unwrap();
    assert_eq!(card_ref.activity_id, CARD_ID);
    assert_eq!(card_ref.conversation_id, CONVERSATION_ID);
}

#[tokio::test]
async fn a_redelivered_command_opens_no_second_case() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    request_removal(&app, "cmd-1").await;
    request_removal(&app, "cmd-1").await;
    assert_eq!(replies(&app).await.len(), 1);
    let store = Store::connect(&app.database_url).await.unwrap();
    assert_eq!(store.history(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn another_admin_approves_and_the_case_executes_exactly_once() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let token = valid_token(&url);

    let response = app.post_activity(Some(&token), &invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve")).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["statusCode"], 200);
    assert_eq!(body["type"], "application/vnd.microsoft.card.adaptive");
    assert!(body["value"]["body"][1]["text"].as_str().unwrap().starts_with("Approved by admin-"), "{body}");

    let store = Store::connect(&app.database_url).await.unwrap();
    wait_state(&store, &case_id, CaseState::Done).await;
    // A second click, the same click redelivered, and a click on Reject change nothing.
    for (id, verb) in [("inv-2", "approve"), ("inv-1", "approve"), ("inv-3", "reject")] {
        let response = app.post_activity(Some(&token), &invoke(&url, id, SECOND_ADMIN_OID, &case_id, verb)).await;
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "application/vnd.microsoft.card.adaptive", "{body}");
    }
    app.wait_for_a_full_sweep().await;
    assert_eq!(app.executor.calls(), std::slice::from_ref(&case_id));
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.state, CaseState::Done);
    assert_eq!(case.approver.unwrap().oid, SECOND_ADMIN_OID);
    assert_eq!(case.targets[0].graph_status, Some(204));

    // The card was updated for everyone, ending with the outcome, and the thread was told.
    let updates = puts(&app).await;
    let last = updates.last().unwrap();
    assert_eq!(last["id"], CARD_ID);
    assert!(last["attachments"][0]["content"]["body"][0]["text"].as_str().unwrap().starts_with("Done"), "{last}");
    let requests = app.connector.received_requests().await.unwrap();
    let told = requests.iter().any(|r| {
        r.url.path() == format!("/v3/conversations/{}/activities", encode(CONVERSATION_ID))
            && String::from_utf8_lossy(&r.body).contains(&format!("Case {case_id} is done"))
    });
    assert!(told);
}

#[tokio::test]
async fn the_action_submit_fallback_decides_the_same_way() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let mut submit = message(&url, "");
    submit.as_object_mut().unwrap().remove("text");
    submit["id"] = json!("submit-1");
    submit["replyToId"] = json!(CARD_ID);
    submit["value"] = json!({"chatwarden": 1, "caseId": case_id, "action": "reject", "reason": "a partner's chat after all"});
    from(&mut submit, SECOND_ADMIN_OID, "Second Admin");
    assert_eq!(app.post_activity(Some(&valid_token(&url)), &submit).await.status(), 200);
    let store = Store::connect(&app.database_url).await.unwrap();
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.state, CaseState::Rejected);
    let rejected_card = |u: &Value| u["attachments"][0]["content"]["body"][0]["text"].as_str().unwrap_or_default().starts_with("Rejected");
    for _ in 0..200 {
        if puts(&app).await.iter().any(rejected_card) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(puts(&app).await.iter().any(rejected_card), "the card was not updated to Rejected");
    app.wait_for_a_full_sweep().await;
    assert!(app.executor.calls().is_empty());
}

#[tokio::test]
async fn a_stranger_pressing_approve_changes_nothing_and_learns_nothing() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let stranger = "99999999-9999-4999-8999-999999999999";
    let response = app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", stranger, &case_id, "approve")).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"statusCode": 200, "type": "application/vnd.microsoft.activity.message", "value": chatwarden::workflow::REFUSAL_TEXT})
    );
    // A forged case id gets the very same answer.
    let response = app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-2", stranger, "CW-NOPE0", "approve")).await;
    let forged: Value = response.json().await.unwrap();
    assert_eq!(forged, body);
    let store = Store::connect(&app.database_url).await.unwrap();
    assert_eq!(store.case(&case_id).await.unwrap().unwrap().state, CaseState::Proposed);
    assert_eq!(store.refusals(10).await.unwrap().len(), 2);
    assert!(app.executor.calls().is_empty());
}

#[tokio::test]
async fn the_requester_cannot_approve_their_own_request() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let response = app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", ADMIN_OID, &case_id, "approve")).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["value"], "You requested this case: another admin must approve it.");
    let store = Store::connect(&app.database_url).await.unwrap();
    assert_eq!(store.case(&case_id).await.unwrap().unwrap().state, CaseState::Proposed);
}

#[tokio::test]
async fn commands_from_strangers_or_outside_the_security_channel_are_refused_politely() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    let url = app.service_url();
    let mut stranger = message(&url, &format!("/remove-chat {THREAD} {VICTIM}"));
    from(&mut stranger, "99999999-9999-4999-8999-999999999999", "Mallory");
    let mut elsewhere = message(&url, "/history");
    elsewhere["id"] = json!("2");
    elsewhere["channelData"]["channel"]["id"] = json!("19:general@thread.tacv2");
    let mut personal = message(&url, "/help");
    personal["id"] = json!("3");
    personal["conversation"] = json!({"id": "a:personal-chat", "conversationType": "personal", "tenantId": TENANT_ID});
    personal.as_object_mut().unwrap().remove("channelData");
    let mut other_tenant = message(&url, "/help");
    other_tenant["id"] = json!("4");
    other_tenant["channelData"]["tenant"]["id"] = json!("11111111-2222-3333-4444-555555555555");
    for activity in [&stranger, &elsewhere, &personal, &other_tenant] {
        assert_eq!(app.post_activity(Some(&valid_token(&url)), activity).await.status(), 200);
    }
    // In the channels only the sender sees the refusal; the personal chat is private already.
    let private: Vec<Value> = private_answers(&app).await;
    assert_eq!(private.len(), 3, "{private:?}");
    assert!(private.iter().all(|r| r["text"] == chatwarden::workflow::REFUSAL_TEXT), "{private:?}");
    let recipients: Vec<&str> = private.iter().map(|r| r["recipient"]["id"].as_str().unwrap()).collect();
    assert_eq!(recipients, ["29:Mallory", "29:1AbCdEfGh-admin", "29:1AbCdEfGh-admin"]);
    let in_thread = replies(&app).await;
    assert_eq!(in_thread.len(), 1, "only the personal chat's answer is a plain reply: {in_thread:?}");
    assert_eq!(in_thread[0]["text"], chatwarden::workflow::REFUSAL_TEXT);
    assert_eq!(in_thread[0]["conversation"]["id"], "a:personal-chat");
    let store = Store::connect(&app.database_url).await.unwrap();
    let reasons: Vec<String> = store.refusals(10).await.unwrap().into_iter().rev().map(|e| e.detail.unwrap()).collect();
    assert_eq!(reasons, ["not_admin", "outside_security_channel", "outside_security_channel", "wrong_tenant"]);
    assert!(store.history(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn status_and_history_read_the_case_history() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let mut status = message(&url, &format!("/status {}", case_id.to_lowercase()));
    status["id"] = json!("cmd-2");
    app.post_activity(Some(&valid_token(&url)), &status).await;
    let mut history = message(&url, "/history 5");
    history["id"] = json!("cmd-3");
    app.post_activity(Some(&valid_token(&url)), &history).await;
    let replies = replies(&app).await;
    let status_card = &replies[1]["attachments"][0]["content"];
    assert_eq!(status_card["body"][0]["text"], format!("Case {case_id} (proposed)"));
    assert!(status_card.to_string().contains("requested"));
    let history_card = &replies[2]["attachments"][0]["content"];
    assert_eq!(history_card["body"][0]["text"], "Last 1 case(s)");
    assert!(history_card["body"][1]["text"].as_str().unwrap().contains(&case_id));
}

#[tokio::test]
async fn an_approved_case_left_behind_by_a_crash_runs_after_a_restart() {
    let database_url = sqlite_url();
    let store = Store::connect(&database_url).await.unwrap();
    let case = approved_removal(&store, THREAD, VICTIM).await;
    // The process that claimed it died mid-run: its lease lapsed a moment ago.
    store.claim_for_execution(&case.id, "dead-runner", 1, now_ms() - 10).await.unwrap().unwrap();
    store.close().await;

    let app = spawn_app_with(Fakes { database_url: Some(database_url.clone()), ..Fakes::default() }, |_| {}).await;
    let store = Store::connect(&database_url).await.unwrap();
    wait_state(&store, &case.id, CaseState::Done).await;
    app.wait_for_a_full_sweep().await;
    assert_eq!(app.executor.calls(), std::slice::from_ref(&case.id));
}

#[tokio::test]
async fn two_replicas_on_postgres_approving_the_same_case_execute_it_once() {
    let database_url = postgres_url().await;
    let a = spawn_app_with(Fakes { database_url: Some(database_url.clone()), ..Fakes::default() }, |_| {}).await;
    let b = spawn_app_with(Fakes { database_url: Some(database_url.clone()), ..Fakes::default() }, |_| {}).await;
    mount_connector(&a).await;
    mount_connector(&b).await;
    let case_id = request_removal(&a, "cmd-1").await;
    // The same command redelivered to the other replica opens nothing.
    let url_b = b.service_url();
    let mut again = message(&url_b, &format!("/remove-chat {THREAD} {VICTIM} suspicious link"));
    again["id"] = json!("cmd-1");
    again["conversation"]["id"] = json!(CONVERSATION_ID);
    // Same conversation id, so the same dedupe key, through replica b.
    b.post_activity(Some(&valid_token(&url_b)), &again).await;
    assert!(replies(&b).await.is_empty());

    // Two admins press Approve on both replicas at once.
    let url_a = a.service_url();
    let (token_a, token_b) = (valid_token(&url_a), valid_token(&url_b));
    let (click_a, click_b) =
        (invoke(&url_a, "inv-a", SECOND_ADMIN_OID, &case_id, "approve"), invoke(&url_b, "inv-b", SECOND_ADMIN_OID, &case_id, "approve"));
    let (ra, rb) = tokio::join!(a.post_activity(Some(&token_a), &click_a), b.post_activity(Some(&token_b), &click_b));
    assert_eq!(ra.status(), 200);
    assert_eq!(rb.status(), 200);
    let store = Store::connect(&database_url).await.unwrap();
    wait_state(&store, &case_id, CaseState::Done).await;
    tokio::join!(a.wait_for_a_full_sweep(), b.wait_for_a_full_sweep());
    let executions = a.executor.calls().len() + b.executor.calls().len();
    assert_eq!(executions, 1);
    let approvals = store.events(&case_id).await.unwrap().into_iter().filter(|e| e.kind == "approved").count();
    assert_eq!(approvals, 1);
}

#[tokio::test]
async fn a_decision_without_a_reason_gets_the_card_back_with_the_field_marked_and_changes_nothing() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let token = valid_token(&url);
    let store = Store::connect(&app.database_url).await.unwrap();
    let events_before = store.events(&case_id).await.unwrap().len();

    for (id, verb, reason, problem) in [
        ("inv-1", "approve", None, "A reason is required for every decision."),
        ("inv-2", "reject", Some("   "), "A reason is required for every decision."),
        ("inv-3", "approve", Some(&"x".repeat(501)[..]), "The reason is longer than 500 characters."),
    ] {
        let response = app.post_activity(Some(&token), &invoke_with_reason(&url, id, SECOND_ADMIN_OID, &case_id, verb, reason)).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "application/vnd.microsoft.card.adaptive", "{body}");
        let card = &body["value"];
        let input = card["body"].as_array().unwrap().iter().find(|b| b["type"] == "Input.Text").expect("the reason field");
        assert_eq!(input["errorMessage"], problem, "{verb} {reason:?}");
        assert!(card.to_string().contains("Nothing was decided."));
        assert_eq!(card["actions"][0]["verb"], "approve", "the buttons are still there");
    }
    app.wait_for_a_full_sweep().await;
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.state, CaseState::Proposed);
    assert!(case.approver.is_none() && case.decision_reason.is_none());
    assert_eq!(store.events(&case_id).await.unwrap().len(), events_before, "nothing recorded: nothing was decided");
    assert!(app.executor.calls().is_empty());
    // No sign-in was asked for an approval that could not apply.
    assert!(app.token_service.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_reason_is_kept_and_shown_on_the_card_in_status_history_and_the_cli() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let reason = "External \"IT support\" asking for MFA codes; matches the lure";
    let response = app
        .post_activity(Some(&valid_token(&url)), &invoke_with_reason(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "reject", Some(reason)))
        .await;
    let body: Value = response.json().await.unwrap();
    let shown = body["value"]["body"][1]["text"].as_str().unwrap();
    assert!(shown.starts_with("Rejected by admin-") && shown.contains("Reason: \"External \"IT support\" asking for MFA codes"), "{shown}");

    let store = Store::connect(&app.database_url).await.unwrap();
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!((case.state, case.decision_reason.as_deref()), (CaseState::Rejected, Some(reason)));
    let rejected = store.events(&case_id).await.unwrap().into_iter().find(|e| e.kind == "rejected").unwrap();
    assert_eq!(rejected.detail.as_deref(), Some(&format!("reason: {reason}")[..]));
    let data: Value = serde_json::from_str(rejected.data.as_deref().unwrap()).unwrap();
    assert_eq!(data["reason"], reason);

    let events = store.events(&case_id).await.unwrap();
    let status = chatwarden::cards::status_card(&case, &events).to_string();
    assert!(status.contains("MFA codes"), "{status}");
    let history = chatwarden::cards::history_card(&[case]).to_string();
    assert!(history.contains("matches the lure"), "{history}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chatwarden"))
        .args(["history", "--case", &case_id])
        .env_clear()
        .env("CHATWARDEN_DATABASE_URL", &app.database_url)
        .output()
        .unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert!(printed.contains(&format!("rejected  reason: {reason}")), "{printed}");
}

/// The Connector knows the second admin's Teams account.
async fn mount_team_member(app: &TestApp, oid: &str, account: &str) {
    Mock::given(method("GET"))
        .and(wiremock::matchers::path(format!("/v3/conversations/{}/members/{oid}", encode("19:team@thread.tacv2"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": account, "aadObjectId": oid, "name": "Sam"})))
        .mount(&app.connector)
        .await;
}

fn refresh(url: &str, id: &str, oid: &str, case_id: &str) -> Value {
    let mut activity = invoke_with_reason(url, id, oid, case_id, "refresh", None);
    // Each viewer's own Teams account; the second admin's is the one the Connector knows.
    let account = if oid == SECOND_ADMIN_OID { "sam-account".to_owned() } else { format!("viewer-{id}") };
    from(&mut activity, oid, &account);
    activity
}

fn has_buttons(card: &Value) -> bool {
    card["actions"].as_array().is_some_and(|a| a.iter().any(|b| b["verb"] == "approve"))
}

#[tokio::test]
async fn everyone_sees_the_status_and_only_an_eligible_approver_gets_the_buttons_on_refresh() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    mount_team_member(&app, SECOND_ADMIN_OID, "29:sam-account").await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();

    // The posted card: status only, refreshed for the one admin who may decide (not the requester).
    let posted = replies(&app).await.pop().unwrap();
    let card = &posted["attachments"][0]["content"];
    assert!(!has_buttons(card), "{card}");
    assert!(card["body"].as_array().unwrap().iter().all(|b| b["type"] != "Input.Text"));
    assert_eq!(card["refresh"]["userIds"], json!(["29:sam-account"]));
    assert_eq!(card["refresh"]["action"]["verb"], "refresh");
    assert_eq!(card["refresh"]["action"]["data"]["caseId"], case_id);
    let members = app.connector.received_requests().await.unwrap().into_iter().filter(|r| r.method.as_str() == "GET").count();
    assert_eq!(members, 1, "only the eligible approver is looked up");

    let view = |id: &'static str, oid: &'static str| {
        let (app, url, case_id) = (&app, url.clone(), case_id.clone());
        async move {
            let response = app.post_activity(Some(&valid_token(&url)), &refresh(&url, id, oid, &case_id)).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let approver = view("r-1", SECOND_ADMIN_OID).await;
    assert_eq!(approver["type"], "application/vnd.microsoft.card.adaptive", "{approver}");
    assert!(has_buttons(&approver["value"]), "{approver}");
    assert_eq!(approver["value"]["refresh"]["userIds"], json!(["29:sam-account"]), "the view keeps refreshing");

    let requester = view("r-2", ADMIN_OID).await;
    assert!(!has_buttons(&requester["value"]));
    assert!(requester["value"].to_string().contains("another admin must approve it"), "{requester}");

    let stranger = view("r-3", "99999999-aaaa-4bbb-8ccc-dddddddddddd").await;
    assert!(!has_buttons(&stranger["value"]) && stranger["value"]["body"][0]["text"].as_str().unwrap().starts_with("Waiting"));

    let mut foreign = refresh(&url, "r-4", SECOND_ADMIN_OID, &case_id);
    foreign["conversation"]["tenantId"] = json!("00000000-0000-0000-0000-00000000beef");
    foreign["channelData"]["tenant"]["id"] = json!("00000000-0000-0000-0000-00000000beef");
    let response = app.post_activity(Some(&valid_token(&url)), &foreign).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "application/vnd.microsoft.activity.message", "{body}");
    assert!(body["value"].as_str().unwrap().starts_with("Sorry, chatwarden only takes requests"));

    // Refreshing decides nothing and records nothing; the server still checks a decision.
    let store = Store::connect(&app.database_url).await.unwrap();
    assert_eq!(store.case(&case_id).await.unwrap().unwrap().state, CaseState::Proposed);
    assert_eq!(store.events(&case_id).await.unwrap().len(), 1, "only the request");
    let own = app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", ADMIN_OID, &case_id, "approve")).await;
    let own: Value = own.json().await.unwrap();
    assert!(own["value"].as_str().unwrap().contains("another admin must approve it"), "{own}");
    app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-2", SECOND_ADMIN_OID, &case_id, "approve")).await;
    wait_state(&store, &case_id, CaseState::Done).await;
    let decided = view("r-5", "99999999-aaaa-4bbb-8ccc-dddddddddddd").await;
    assert!(decided["value"]["body"][0]["text"].as_str().unwrap().starts_with("Done"), "a decided case shows its result: {decided}");
}

#[tokio::test]
async fn the_card_stays_universal_when_no_approver_account_can_be_resolved_or_there_are_too_many() {
    // The Connector's member look-up fails: nobody may be locked out.
    let app = spawn_app().await;
    mount_connector(&app).await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(503)).mount(&app.connector).await;
    let case_id = request_removal(&app, "cmd-1").await;
    let card = replies(&app).await.pop().unwrap()["attachments"][0]["content"].clone();
    assert!(has_buttons(&card) && card.get("refresh").is_none(), "{card}");
    // A refresh still answers each caller with what they may do.
    let url = app.service_url();
    let view = async |id: &str, oid: &str| -> Value {
        app.post_activity(Some(&valid_token(&url)), &refresh(&url, id, oid, &case_id)).await.json().await.unwrap()
    };
    let approver = view("r-1", SECOND_ADMIN_OID).await;
    assert!(has_buttons(&approver["value"]), "{approver}");
    let stranger = view("r-2", "99999999-aaaa-4bbb-8ccc-dddddddddddd").await;
    assert!(!has_buttons(&stranger["value"]), "a member who may not decide sees the status only: {stranger}");
    let requester = view("r-3", ADMIN_OID).await;
    assert!(!has_buttons(&requester["value"]), "the requester waits for another admin: {requester}");

    // 61 eligible admins: more than Teams' 60 userIds.
    let many = spawn_app_with(Fakes::default(), |c| {
        c.security.admins.extend((0..60).map(|i| format!("00000000-0000-4000-8000-{i:012}")));
    })
    .await;
    mount_connector(&many).await;
    mount_team_member(&many, SECOND_ADMIN_OID, "29:sam-account").await;
    request_removal(&many, "cmd-1").await;
    let card = replies(&many).await.pop().unwrap()["attachments"][0]["content"].clone();
    assert!(has_buttons(&card) && card.get("refresh").is_none(), "{card}");
    assert!(!many.connector.received_requests().await.unwrap().iter().any(|r| r.method.as_str() == "GET"), "no look-ups at all");
}

const ESCALATION_OID: &str = "e5ca1a7e-5555-4d4e-8f90-1a2b3c4d5e6f";

/// Messages posted in a case's thread that carry `marker`.
async fn thread_posts(app: &TestApp, marker: &str) -> Vec<Value> {
    let mut posts = Vec::new();
    for request in app.connector.received_requests().await.unwrap() {
        if request.method.as_str() == "POST" && request.url.path().ends_with("/activities") {
            let body: Value = serde_json::from_slice(&request.body).unwrap();
            if body["text"].as_str().is_some_and(|t| t.contains(marker)) {
                posts.push(body);
            }
        }
    }
    posts
}

async fn wait_for_reminders(app: &TestApp, kind: &'static str, count: u64) {
    for _ in 0..300 {
        if app.metrics.get("chatwarden_reminders_total", &[("kind", kind)]) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no {kind} reminder within 6 s");
}

#[tokio::test]
async fn an_undecided_case_is_reminded_once_mentioning_its_approvers_and_not_again_after_a_restart() {
    let tweak = |c: &mut chatwarden::config::Config| {
        c.case_ttl = Duration::from_secs(600);
        c.reminder_before = Some(Duration::from_secs(900));
    };
    let app = spawn_app_with(Fakes::default(), tweak).await;
    mount_connector(&app).await;
    mount_team_member(&app, SECOND_ADMIN_OID, "29:sam-account").await;
    let case_id = request_removal(&app, "cmd-1").await;
    wait_for_reminders(&app, "reminded", 1).await;
    app.wait_for_a_full_sweep().await;
    app.wait_for_a_full_sweep().await;
    let posts = thread_posts(&app, "Reminder:").await;
    assert_eq!(posts.len(), 1, "one reminder: {posts:?}");
    let text = posts[0]["text"].as_str().unwrap();
    assert!(text.starts_with(&format!("Reminder: case {case_id} (")) && text.ends_with("<at>Sam</at>"), "{text}");
    assert_eq!(
        posts[0]["entities"],
        json!([{"type": "mention", "text": "<at>Sam</at>", "mentioned": {"id": "29:sam-account", "name": "Sam"}}])
    );
    let store = Store::connect(&app.database_url).await.unwrap();
    let events: Vec<String> = store.events(&case_id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(events, ["requested", "reminded"]);

    // Another process on the same database (a restart, a second replica) does not remind again.
    let again = spawn_app_with(Fakes { database_url: Some(app.database_url.clone()), ..Fakes::default() }, tweak).await;
    mount_connector(&again).await;
    again.wait_for_a_full_sweep().await;
    again.wait_for_a_full_sweep().await;
    assert_eq!(again.metrics.get("chatwarden_reminders_total", &[("kind", "reminded")]), 0);
    assert!(thread_posts(&again, "Reminder:").await.is_empty());
}

#[tokio::test]
async fn an_escalated_case_can_be_decided_by_an_escalation_admin_and_not_before() {
    let app = spawn_app_with(Fakes::default(), |c| {
        c.case_ttl = Duration::from_secs(4);
        c.reminder_before = Some(Duration::from_secs(2));
        c.escalation_admins = vec![ESCALATION_OID.to_owned()];
    })
    .await;
    mount_connector(&app).await;
    mount_team_member(&app, ESCALATION_OID, "29:erin-account").await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let press = |id: &'static str| {
        let mut activity = invoke(&url, id, ESCALATION_OID, &case_id, "approve");
        from(&mut activity, ESCALATION_OID, "erin-account");
        activity
    };
    // Before the escalation the escalation admin may not decide.
    let early: Value = app.post_activity(Some(&valid_token(&url)), &press("inv-1")).await.json().await.unwrap();
    assert!(early["value"].as_str().unwrap().starts_with("Sorry, chatwarden only takes requests"), "{early}");
    let store = Store::connect(&app.database_url).await.unwrap();
    assert_eq!(store.case(&case_id).await.unwrap().unwrap().state, CaseState::Proposed);

    wait_for_reminders(&app, "escalated", 1).await;
    let posts = thread_posts(&app, "Escalated:").await;
    assert_eq!(posts.len(), 1);
    assert!(posts[0]["entities"].as_array().unwrap().iter().any(|m| m["mentioned"]["id"] == "29:erin-account"), "{}", posts[0]);
    assert_eq!(posts[0]["attachments"][0]["content"]["actions"][0]["verb"], "approve", "the approval card comes with it");

    let decided: Value = app.post_activity(Some(&valid_token(&url)), &press("inv-2")).await.json().await.unwrap();
    assert_eq!(decided["type"], "application/vnd.microsoft.card.adaptive", "{decided}");
    wait_state(&store, &case_id, CaseState::Done).await;
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.approver.unwrap().oid, ESCALATION_OID);
    let kinds: Vec<String> = store.events(&case_id).await.unwrap().into_iter().map(|e| e.kind).collect();
    // The early press was refused outside the case's history (as every non-admin's is).
    assert!(kinds.starts_with(&["requested".into(), "escalated".into(), "approved".into()]), "{kinds:?}");
}
