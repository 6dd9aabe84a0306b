//! Hostile input and faults through the real server: every case gets a clear 4xx or a polite
//! refusal, never a panic or a lost decision.

use std::time::Duration;

use chatwarden::cases::CaseState;
use chatwarden::store::Store;
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::cases::{CARD_ID, invoke, mount_connector, replies, request_removal};
use crate::helpers::*;

async fn post_json_text(app: &TestApp, body: &str) -> reqwest::Response {
    let url = app.service_url();
    let token = format!("Bearer {}", valid_token(&url));
    app.post_raw(&[("content-type", "application/json"), ("authorization", &token)], body.as_bytes().to_vec()).await
}

#[tokio::test]
async fn deeply_nested_duplicate_keyed_and_mistyped_bodies_get_400() {
    let app = spawn_app().await;
    let url = app.service_url();
    let deep = format!("{{\"type\":\"message\",\"serviceUrl\":\"{url}\",\"value\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let duplicate = format!("{{\"type\":\"message\",\"type\":\"invoke\",\"serviceUrl\":\"{url}\",\"channelId\":\"msteams\"}}");
    let mistyped = format!("{{\"type\":\"message\",\"text\":5,\"serviceUrl\":\"{url}\",\"channelId\":\"msteams\"}}");
    let array_entities = format!("{{\"type\":\"message\",\"entities\":{{\"a\":1}},\"serviceUrl\":\"{url}\",\"channelId\":\"msteams\"}}");
    for body in [deep, duplicate, mistyped, array_entities] {
        let response = post_json_text(&app, &body).await;
        assert_eq!(response.status(), 400, "{}", &body[..80.min(body.len())]);
        assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "bad_json");
    }
    app.assert_no_outbound().await;
    // The server is still healthy afterwards.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn unknown_activity_types_and_invokes_are_acknowledged_and_ignored() {
    let app = spawn_app().await;
    let url = app.service_url();
    let mut strange = message(&url, "");
    strange["type"] = json!("somethingNew");
    assert_eq!(app.post_activity(Some(&valid_token(&url)), &strange).await.status(), 200);
    let mut unknown_invoke = message(&url, "");
    unknown_invoke["type"] = json!("invoke");
    unknown_invoke["name"] = json!("composeExtension/query");
    let response = app.post_activity(Some(&valid_token(&url)), &unknown_invoke).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({}));
    let mut bad_action = message(&url, "");
    bad_action["type"] = json!("invoke");
    bad_action["name"] = json!("adaptiveCard/action");
    bad_action["value"] = json!({"action": {"type": "Action.Execute", "verb": "approve", "data": {"caseId": "CW-1"}}});
    let body: Value = app.post_activity(Some(&valid_token(&url)), &bad_action).await.json().await.unwrap();
    assert_eq!(body["statusCode"], 400);
    assert_eq!(body["value"]["code"], "NotSupported");
    app.assert_no_outbound().await;
}

#[tokio::test]
async fn huge_strings_inside_the_limit_get_a_precise_refusal() {
    let app = spawn_app().await;
    mount_connector(&app).await;
    let url = app.service_url();
    let long = "x".repeat(200 * 1024);
    let command = message(&url, &format!("/remove-chat 19:abc@thread.v2 alice@contoso.com {long}"));
    assert_eq!(app.post_activity(Some(&valid_token(&url)), &command).await.status(), 200);
    let reply = replies(&app).await.pop().unwrap();
    assert!(reply["text"].as_str().unwrap().starts_with("Invalid [reason]"), "{}", &reply["text"].to_string()[..100]);
    let store = Store::connect(&app.database_url).await.unwrap();
    assert!(store.history(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_admin_flooding_commands_is_slowed_down_politely() {
    let app = spawn_app_with(Fakes::default(), |c| c.commands_per_minute = 2).await;
    mount_connector(&app).await;
    let url = app.service_url();
    for i in 0..3 {
        let mut history = message(&url, "/history");
        history["id"] = json!(format!("h-{i}"));
        assert_eq!(app.post_activity(Some(&valid_token(&url)), &history).await.status(), 200);
    }
    let private = crate::cases::private_answers(&app).await;
    assert_eq!(private.len(), 1, "{private:?}");
    assert!(private[0]["text"].as_str().unwrap().starts_with("You are sending commands too fast"), "{private:?}");
    assert_eq!(replies(&app).await.len(), 2, "the two answered commands, in the thread");
    assert_eq!(app.metrics.get("chatwarden_rate_limited_total", &[("what", "command")]), 1);
}

#[tokio::test]
async fn a_stranger_flooding_the_bot_is_refused_a_few_times_then_recorded_once_and_ignored() {
    let app = spawn_app_with(Fakes::default(), |c| c.refusals_per_minute = 2).await;
    mount_connector(&app).await;
    let url = app.service_url();
    let stranger = "99999999-aaaa-4bbb-8ccc-dddddddddddd";
    for i in 0..6 {
        let mut text = message(&url, "/remove-chat 19:abc@thread.v2 alice@contoso.com");
        text["id"] = json!(format!("s-{i}"));
        crate::cases::from(&mut text, stranger, "Stranger");
        assert_eq!(app.post_activity(Some(&valid_token(&url)), &text).await.status(), 200);
    }
    let answered =
        crate::cases::private_answers(&app).await.iter().filter(|r| r["text"].as_str() == Some(chatwarden::workflow::REFUSAL_TEXT)).count();
    assert_eq!(answered, 2, "only the refusals within the limit are answered");
    let store = Store::connect(&app.database_url).await.unwrap();
    let recorded = store.refusals(100).await.unwrap();
    assert_eq!(recorded.len(), 3, "two refusals and one note that the rest are not recorded: {recorded:?}");
    assert!(recorded[0].detail.as_deref().unwrap().contains("neither recorded nor answered"), "{recorded:?}");
    assert_eq!(app.metrics.get("chatwarden_rate_limited_total", &[("what", "refusal")]), 4);
    // Admins are not affected.
    let mut help = message(&url, "/help");
    help["id"] = json!("admin-1");
    app.post_activity(Some(&valid_token(&url)), &help).await;
    assert!(replies(&app).await.iter().any(|r| r["text"].as_str().unwrap_or_default().contains("/remove-chat")));
}

#[tokio::test]
async fn an_alert_source_over_its_rate_gets_429_with_retry_after() {
    let app = spawn_app_with(Fakes::default(), |c| {
        c.alert_secret = Some(secrecy::SecretString::from("alert-secret-for-tests-0123456789".to_owned()));
        c.alerts_per_minute = 2;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = app
            .client
            .post(format!("{}/api/alerts", app.address))
            .header("content-type", "application/json")
            .body("[]")
            .send()
            .await
            .unwrap();
        statuses.push((response.status().as_u16(), response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned())));
    }
    assert_eq!(statuses[0].0, 401);
    assert_eq!(statuses[1].0, 401);
    assert_eq!(statuses[2].0, 429);
    let wait: u64 = statuses[2].1.as_deref().unwrap().parse().unwrap();
    assert!((29..=30).contains(&wait), "{wait}");
}

#[tokio::test]
async fn unsigned_pushes_from_a_shared_address_never_starve_the_signed_sender() {
    const SECRET: &str = "alert-secret-for-tests-0123456789";
    let app = spawn_app_with(Fakes::default(), |c| {
        c.alert_secret = Some(secrecy::SecretString::from(SECRET.to_owned()));
        c.alerts_per_minute = 2;
    })
    .await;
    let post = |signature: Option<String>| {
        let mut request = app.client.post(format!("{}/api/alerts", app.address)).header("content-type", "application/json").body("[]");
        if let Some(signature) = signature {
            request = request.header("X-Chatwarden-Signature-256", signature);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Behind an ingress every caller has the same peer address: a flood of unsigned posts...
    let mut unsigned = Vec::new();
    for _ in 0..5 {
        unsigned.push(post(None).await);
    }
    assert_eq!(unsigned, [401, 401, 429, 429, 429]);
    // ...and the signed sender still gets its own budget, then its own 429.
    let signed = chatwarden::audit::signature::sign(SECRET.as_bytes(), b"[]");
    assert_eq!(post(Some(signed.clone())).await, 202);
    assert_eq!(post(Some(signed.clone())).await, 202);
    assert_eq!(post(Some(signed)).await, 429);
    assert_eq!(app.metrics.get("chatwarden_rate_limited_total", &[("what", "alert_failures")]), 3);
    assert_eq!(app.metrics.get("chatwarden_rate_limited_total", &[("what", "alerts")]), 1);
    assert_eq!(app.metrics.get("chatwarden_alert_requests_total", &[("result", "bad_signature")]), 5);
}

#[tokio::test]
async fn a_token_service_outage_leaves_the_case_waiting_and_says_so() {
    let app = spawn_app_with(Fakes { real_graph: true, signed_in: false, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    Mock::given(method("GET"))
        .and(path_regex("^/api/usertoken/.*"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&app.token_service)
        .await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    let body: Value = app
        .post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["value"], "The sign-in service could not be reached; nothing was changed. Try again.");
    let store = Store::connect(&app.database_url).await.unwrap();
    assert_eq!(store.case(&case_id).await.unwrap().unwrap().state, CaseState::Proposed);
    assert!(app.graph.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_graph_timeout_fails_the_target_in_plain_words() {
    let app = spawn_app_with(Fakes { real_graph: true, ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    Mock::given(method("POST"))
        .and(path_regex("removeAllAccessForUser$"))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(5)))
        .mount(&app.graph)
        .await;
    let case_id = request_removal(&app, "cmd-1").await;
    let url = app.service_url();
    app.post_activity(Some(&valid_token(&url)), &invoke(&url, "inv-1", SECOND_ADMIN_OID, &case_id, "approve")).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    crate::cases::wait_state(&store, &case_id, CaseState::Failed).await;
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.targets[0].detail.as_deref(), Some("Graph gave no usable answer (timeout): try again later"));
}

#[tokio::test]
async fn a_connector_failure_on_the_card_keeps_the_case_and_records_it() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path_regex("^/v3/conversations/.+/activities/.+$"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&app.connector)
        .await;
    let url = app.service_url();
    let command = message(&url, "/remove-chat 19:abc@thread.v2 alice@contoso.com");
    assert_eq!(app.post_activity(Some(&valid_token(&url)), &command).await.status(), 200);
    let store = Store::connect(&app.database_url).await.unwrap();
    let case = store.history(1).await.unwrap().remove(0);
    assert_eq!(case.state, CaseState::Proposed);
    assert!(case.card.is_none());
    assert!(store.events(&case.id).await.unwrap().iter().any(|e| e.kind == "card_failed"));
}

#[tokio::test]
async fn an_unreachable_database_makes_the_bot_unready_and_answer_500_so_teams_retries() {
    let database_url = postgres_url().await;
    let app = spawn_app_with(Fakes { database_url: Some(database_url.clone()), ..Fakes::default() }, |_| {}).await;
    mount_connector(&app).await;
    let name = database_url.rsplit('/').next().unwrap().to_owned();
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&postgres_base_url()).await.unwrap();
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await.unwrap();
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["checks"]["database"], "unavailable");
    let url = app.service_url();
    let mut command = message(&url, "/remove-chat 19:abc@thread.v2 alice@contoso.com");
    command["replyToId"] = json!(CARD_ID);
    let response = app.post_activity(Some(&valid_token(&url)), &command).await;
    assert_eq!(response.status(), 500);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "internal");
    let texts: Vec<String> = replies(&app).await.iter().map(|r| r["text"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(texts, ["Sorry, that failed on our side; nothing was changed. Please try again."]);
}
