//! Routes, health, errors and local mode through the real server.

use chatwarden::config::{Config, Mode};
use serde_json::{Value, json};
use wiremock::MockServer;

use crate::helpers::*;

#[tokio::test]
async fn healthz_answers_ok_and_every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let id = response.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    assert_eq!(id.len(), 36, "{id}");
    let other = app.get("/healthz").await;
    assert_ne!(other.headers().get("x-request-id").unwrap().to_str().unwrap(), id);
}

#[tokio::test]
async fn readyz_reports_the_signing_keys() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"status": "ready", "checks": {"signing_keys": "ok", "database": "ok"}}));
}

#[tokio::test]
async fn wrong_methods_get_405_with_allow() {
    let app = spawn_app().await;
    let response = app.get("/api/messages").await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers().get("allow").unwrap(), "POST");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let response = app.client.post(format!("{}/healthz", app.address)).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers().get("allow").unwrap(), "GET");
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let app = spawn_app().await;
    let response = app.get("/api/nothing-here").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
}

#[tokio::test]
async fn a_body_that_is_not_json_gets_415() {
    let app = spawn_app().await;
    let url = app.service_url();
    let token = format!("Bearer {}", valid_token(&url));
    let body = serde_json::to_vec(&message(&url, "/help")).unwrap();
    let response = app.post_raw(&[("content-type", "text/plain"), ("authorization", &token)], body).await;
    assert_eq!(response.status(), 415);
    app.assert_no_outbound().await;
}

#[tokio::test]
async fn metrics_count_rejections_by_reason() {
    let app = spawn_app().await;
    let url = app.service_url();
    app.post_activity(None, &message(&url, "/help")).await;
    app.post_activity(Some("garbage"), &message(&url, "/help")).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("chatwarden_auth_rejections_total{reason=\"missing_authorization\"} 1"), "{text}");
    assert!(text.contains("chatwarden_auth_rejections_total{reason=\"malformed_token\"} 1"), "{text}");
    assert!(text.contains("chatwarden_key_refreshes_total{trigger=\"scheduled\",result=\"ok\"} 1"), "{text}");
}

#[tokio::test]
async fn unknown_commands_get_the_help_text_and_bad_arguments_a_precise_error() {
    let app = spawn_app().await;
    app.mount_reply().await;
    let url = app.service_url();
    app.post_activity(Some(&valid_token(&url)), &message(&url, "/frobnicate")).await;
    app.post_activity(Some(&valid_token(&url)), &message(&url, "/remove-chat not-a-thread alice@contoso.com")).await;
    let replies = TestApp::received(&app.connector, &reply_path()).await;
    assert_eq!(replies.len(), 2);
    let texts: Vec<String> =
        replies.iter().map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["text"].as_str().unwrap().to_owned()).collect();
    assert!(texts[0].starts_with("Unknown command `/frobnicate`."), "{}", texts[0]);
    assert!(texts[0].contains("/history [n]"));
    assert_eq!(
        texts[1],
        "Invalid <thread-id> `not-a-thread`: a chat id starts with `19:`. Usage: `/remove-chat <thread-id> <user> [reason...]`"
    );
}

#[tokio::test]
async fn non_message_activities_are_acknowledged_without_a_reply() {
    let app = spawn_app().await;
    let url = app.service_url();
    let mut update = message(&url, "");
    update["type"] = json!("conversationUpdate");
    let response = app.post_activity(Some(&valid_token(&url)), &update).await;
    assert_eq!(response.status(), 200);
    app.assert_no_outbound().await;
}

fn dev_config() -> Config {
    let db = sqlite_url();
    let mut config = Config::from_sources(Mode::Dev, None, |name| match name {
        "CHATWARDEN_BIND" => Some("0.0.0.0:0".to_owned()),
        "CHATWARDEN_DATABASE_URL" => Some(db.clone()),
        _ => None,
    })
    .unwrap();
    config.retry.base_delay = std::time::Duration::from_millis(5);
    config
}

#[tokio::test]
async fn local_mode_answers_without_a_token_on_loopback_and_sends_no_token() {
    let connector = MockServer::start().await;
    let app = launch(dev_config(), MockServer::start().await, MockServer::start().await, connector).await;
    assert!(app.address.starts_with("http://127.0.0.1:"));
    let body: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(body["checks"]["signing_keys"], "disabled");
    app.mount_reply().await;
    // The playground's connector lives on localhost.
    let url = app.connector.uri().replace("127.0.0.1", "localhost");
    let response = app.post_activity(None, &message(&url, "/help")).await;
    assert_eq!(response.status(), 200);
    let replies = TestApp::received(&app.connector, &reply_path()).await;
    assert_eq!(replies.len(), 1);
    assert!(replies[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn local_mode_never_sends_to_a_cloud_service_url() {
    let app = launch(dev_config(), MockServer::start().await, MockServer::start().await, MockServer::start().await).await;
    let response = app.post_activity(None, &message("https://smba.trafficmanager.net/emea/", "/help")).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(app.metrics.get("chatwarden_auth_rejections_total", &[("reason", "service_url_not_allowed")]), 1);
}

#[tokio::test]
async fn serve_mode_never_mounts_the_local_stand_ins() {
    let app = spawn_app().await;
    for path in ["/_local/graph/calls", "/_local/token/api/usertoken/GetToken?userId=x"] {
        assert_eq!(app.get(path).await.status(), 404, "{path}");
    }
}

#[tokio::test]
async fn metrics_report_cases_by_state() {
    let app = spawn_app().await;
    crate::cases::mount_connector(&app).await;
    crate::cases::request_removal(&app, "cmd-1").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("# TYPE chatwarden_cases gauge\nchatwarden_cases{state=\"proposed\"} 1\n"), "{text}");
    assert!(text.contains("chatwarden_activities_total{type=\"message\",result=\"ok\"} 1"), "{text}");
}

#[tokio::test]
async fn local_mode_delivers_realistic_encrypted_notifications_through_the_whole_path() {
    let app = launch(dev_config(), MockServer::start().await, MockServer::start().await, MockServer::start().await).await;
    let calls = || async {
        let calls: Value = app.get("/_local/graph/calls").await.json().await.unwrap();
        calls
            .as_array()
            .unwrap()
            .iter()
            .map(|c| format!("{} {}", c["method"].as_str().unwrap(), c["path"].as_str().unwrap()))
            .collect::<Vec<_>>()
    };
    // The subscription is made at start, against the stand-in Graph.
    wait_until("the subscription", async || calls().await.iter().any(|c| c == "POST /v1.0/subscriptions")).await;
    let response = app.client.post(format!("{}/_local/notifications/member-added", app.address)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let delivered: Value = response.json().await.unwrap();
    assert_eq!(delivered["status"], 202, "{delivered}");
    assert_eq!(delivered["answer"]["queued"], 1);
    let store = chatwarden::store::Store::connect(&app.database_url).await.unwrap();
    wait_until("the case", async || !store.history(1).await.unwrap().is_empty()).await;
    let case = store.history(1).await.unwrap().remove(0);
    assert!(case.reason.as_deref().unwrap().starts_with("Graph change notification at "), "{:?}", case.reason);
    assert_eq!(case.targets[0].user_ref, "alexw@example.com");
    let case = store.case(&case.id).await.unwrap().unwrap();
    assert!(case.evidence[0].starts_with("graph-notification:"));
    assert!(calls().await.iter().any(|c| c.starts_with("GET /v1.0/chats/") && c.ends_with("/members")));
}
