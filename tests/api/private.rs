//! Answers meant for one person (a refusal, a sign-in prompt, "too fast") reach only them: a
//! targeted message in the channel, else their one-to-one chat with the bot, and the thread only
//! when Teams takes neither.

use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::cases::{from, replies};
use crate::helpers::*;

const STRANGER_OID: &str = "99999999-9999-4999-8999-999999999999";
const PERSONAL_CHAT: &str = "a:1personal-chat-with-mallory";

fn stranger_command(url: &str) -> Value {
    let mut command = message(url, "/history");
    from(&mut command, STRANGER_OID, "Mallory");
    command
}

fn targeted_path() -> String {
    format!("/v3/conversations/{}/activities", encode(CONVERSATION_ID))
}

/// The Connector's thread replies answer 201.
async fn mount_thread_replies(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path(reply_path()))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "reply-1"})))
        .mount(&app.connector)
        .await;
}

/// The Connector answers targeted messages with `status`.
async fn mount_targeted(app: &TestApp, status: u16) {
    let body = if status < 300 {
        json!({"id": "targeted-1"})
    } else {
        json!({"error": {"code": "BotNotInConversationRoster", "message": "not enabled"}})
    };
    Mock::given(method("POST"))
        .and(path(targeted_path()))
        .and(query_param("isTargetedActivity", "true"))
        .and(header("authorization", format!("Bearer {BOT_TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(status).set_body_json(body))
        .mount(&app.connector)
        .await;
}

/// The Connector opens the bot's one-to-one chat with Mallory (or refuses with `status`).
async fn mount_personal_chat(app: &TestApp, status: u16) {
    Mock::given(method("POST"))
        .and(path("/v3/conversations"))
        .and(header("authorization", format!("Bearer {BOT_TOKEN}").as_str()))
        .and(body_partial_json(json!({
            "isGroup": false,
            "members": [{"id": "29:Mallory"}],
            "tenantId": TENANT_ID,
            "channelData": {"tenant": {"id": TENANT_ID}}
        })))
        .respond_with(ResponseTemplate::new(status).set_body_json(json!({"id": PERSONAL_CHAT})))
        .mount(&app.connector)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/v3/conversations/{}/activities", encode(PERSONAL_CHAT))))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "personal-1"})))
        .mount(&app.connector)
        .await;
}

async fn posted(app: &TestApp, at: &str, query: Option<&str>) -> Vec<Value> {
    let requests = app.connector.received_requests().await.unwrap();
    requests
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == at && r.url.query() == query)
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

fn private_count(app: &TestApp, via: &'static str) -> u64 {
    app.metrics.get("chatwarden_private_answers_total", &[("via", via)])
}

#[tokio::test]
async fn a_refusal_in_the_channel_is_a_targeted_message_only_the_sender_sees() {
    let app = spawn_app().await;
    mount_thread_replies(&app).await;
    mount_targeted(&app, 201).await;
    let url = app.service_url();
    assert_eq!(app.post_activity(Some(&valid_token(&url)), &stranger_command(&url)).await.status(), 200);

    let targeted = posted(&app, &targeted_path(), Some("isTargetedActivity=true")).await;
    assert_eq!(targeted.len(), 1);
    assert_eq!(targeted[0]["type"], "message");
    assert_eq!(targeted[0]["text"], chatwarden::workflow::REFUSAL_TEXT);
    assert_eq!(targeted[0]["recipient"]["id"], "29:Mallory");
    assert_eq!(targeted[0]["conversation"]["id"], CONVERSATION_ID);
    assert!(replies(&app).await.is_empty(), "nothing in the thread");
    assert_eq!(private_count(&app, "targeted"), 1);
}

#[tokio::test]
async fn where_teams_refuses_a_targeted_message_the_answer_goes_to_the_personal_chat() {
    let app = spawn_app().await;
    mount_thread_replies(&app).await;
    mount_targeted(&app, 403).await;
    mount_personal_chat(&app, 201).await;
    let url = app.service_url();
    assert_eq!(app.post_activity(Some(&valid_token(&url)), &stranger_command(&url)).await.status(), 200);

    let created = posted(&app, "/v3/conversations", None).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["bot"]["id"], format!("28:{APP_ID}"));
    let sent = posted(&app, &format!("/v3/conversations/{}/activities", encode(PERSONAL_CHAT)), None).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["text"], chatwarden::workflow::REFUSAL_TEXT);
    assert_eq!(sent[0]["conversation"]["id"], PERSONAL_CHAT);
    assert!(sent[0].get("replyToId").is_none(), "{}", sent[0]);
    assert!(replies(&app).await.is_empty(), "nothing in the thread");
    assert_eq!((private_count(&app, "targeted"), private_count(&app, "personal")), (0, 1));
}

#[tokio::test]
async fn when_neither_private_way_works_the_answer_still_reaches_the_sender_in_the_thread() {
    let app = spawn_app().await;
    mount_thread_replies(&app).await;
    mount_targeted(&app, 400).await;
    mount_personal_chat(&app, 403).await;
    let url = app.service_url();
    assert_eq!(app.post_activity(Some(&valid_token(&url)), &stranger_command(&url)).await.status(), 200);

    let in_thread = replies(&app).await;
    assert_eq!(in_thread.len(), 1);
    assert_eq!(in_thread[0]["text"], chatwarden::workflow::REFUSAL_TEXT);
    assert_eq!(private_count(&app, "thread"), 1);
    let store = chatwarden::store::Store::connect(&app.database_url).await.unwrap();
    assert_eq!(store.refusals(10).await.unwrap().len(), 1, "the refusal is recorded once, whichever way it went");
}
