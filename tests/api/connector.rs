//! The Bot Connector client and the bot token cache against fake Entra ID and Connector servers.

use std::sync::Arc;
use std::time::Duration;

use chatwarden::botframework::activity::{Activity, OutgoingActivity};
use chatwarden::botframework::connector::{ConnectorClient, ConnectorError, NewChannelThread};
use chatwarden::botframework::service_url::{AllowedServiceUrl, HostAllowlist};
use chatwarden::config::RetryPolicy;
use chatwarden::entra::app_token::AppTokenProvider;
use chatwarden::metrics::Metrics;
use serde_json::{Value, json};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::*;

struct Fixture {
    login: MockServer,
    connector: MockServer,
    client: ConnectorClient,
    service_url: AllowedServiceUrl,
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(500),
        request_timeout: Duration::from_secs(2),
    }
}

async fn fixture() -> Fixture {
    let login = MockServer::start().await;
    let connector = MockServer::start().await;
    let metadata = MockServer::start().await;
    let config = serve_config(&metadata, &login);
    let app = config.app.clone().unwrap();
    let tokens = AppTokenProvider::client_credentials(&app, &config.endpoints.login, retry(), Arc::new(Metrics::default())).unwrap();
    let client = ConnectorClient::new(Arc::new(tokens), retry(), Arc::new(Metrics::default())).unwrap();
    let service_url = HostAllowlist::parse("127.0.0.1").unwrap().check(&format!("{}/emea/", connector.uri())).unwrap();
    Fixture { login, connector, client, service_url }
}

fn reply() -> OutgoingActivity {
    let activity: Activity = serde_json::from_value(message("http://127.0.0.1/", "/help")).unwrap();
    OutgoingActivity::reply_text(&activity, "hello")
}

fn emea_reply_path() -> String {
    format!("/emea{}", reply_path())
}

async fn token_requests(f: &Fixture) -> usize {
    f.login.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn the_bot_token_is_fetched_once_and_shared_by_concurrent_calls() {
    let f = fixture().await;
    mount_login(&f.login).await;
    Mock::given(method("POST"))
        .and(path(emea_reply_path()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "r"})))
        .mount(&f.connector)
        .await;
    let activity = reply();
    let calls = (0..20).map(|_| f.client.reply_to_activity(&f.service_url, CONVERSATION_ID, ACTIVITY_ID, &activity));
    let results = futures_util::future::join_all(calls).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(token_requests(&f).await, 1);
    assert_eq!(f.connector.received_requests().await.unwrap().len(), 20);
}

#[tokio::test]
async fn a_reply_is_posted_with_the_exact_path_headers_and_body() {
    let f = fixture().await;
    mount_login(&f.login).await;
    let activity = reply();
    Mock::given(method("POST"))
        .and(path(emea_reply_path()))
        .and(header("authorization", format!("Bearer {BOT_TOKEN}").as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(serde_json::to_value(&activity).unwrap()))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "1719900000999"})))
        .expect(1)
        .mount(&f.connector)
        .await;
    let response = f.client.reply_to_activity(&f.service_url, CONVERSATION_ID, ACTIVITY_ID, &activity).await.unwrap();
    assert_eq!(response.id.as_deref(), Some("1719900000999"));
}

#[tokio::test]
async fn throttling_is_retried_after_the_time_the_connector_asks_for() {
    let f = fixture().await;
    mount_login(&f.login).await;
    Mock::given(method("POST"))
        .and(path(emea_reply_path()))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0.3"))
        .up_to_n_times(1)
        .mount(&f.connector)
        .await;
    Mock::given(method("POST"))
        .and(path(emea_reply_path()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "ok"})))
        .mount(&f.connector)
        .await;
    let started = std::time::Instant::now();
    let response = f.client.reply_to_activity(&f.service_url, CONVERSATION_ID, ACTIVITY_ID, &reply()).await.unwrap();
    assert_eq!(response.id.as_deref(), Some("ok"));
    assert!(started.elapsed() >= Duration::from_millis(300), "did not wait for Retry-After");
    assert_eq!(f.connector.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn precondition_failed_and_gateway_errors_are_retried_a_bounded_number_of_times() {
    let f = fixture().await;
    mount_login(&f.login).await;
    Mock::given(method("POST"))
        .and(path(emea_reply_path()))
        .respond_with(ResponseTemplate::new(412))
        .up_to_n_times(1)
        .mount(&f.connector)
        .await;
    Mock::given(method("POST"))
        .and(path(emea_reply_path()))
        .respond_with(ResponseTemplate::new(504))
        .up_to_n_times(1)
        .mount(&f.connector)
        .await;
    Mock::given(method("POST"))
        .and(path(emea_reply_path()))
        .respond_with(ResponseTemplate::new(502).set_body_json(json!({"error": {"code": "ServiceError", "message": "x"}})))
        .mount(&f.connector)
        .await;
    let err = f.client.reply_to_activity(&f.service_url, CONVERSATION_ID, ACTIVITY_ID, &reply()).await.unwrap_err();
    match err {
        ConnectorError::Status { status: 502, code } => assert_eq!(code, "ServiceError"),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.connector.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let f = fixture().await;
    mount_login(&f.login).await;
    Mock::given(method("POST"))
        .and(path(emea_reply_path()))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"error": {"code": "BotDisabledByAdmin", "message": "x"}})))
        .mount(&f.connector)
        .await;
    let err = f.client.reply_to_activity(&f.service_url, CONVERSATION_ID, ACTIVITY_ID, &reply()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Status { status: 403, .. }));
    assert_eq!(f.connector.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_refused_bot_token_is_replaced_once() {
    let f = fixture().await;
    mount_login(&f.login).await;
    Mock::given(method("POST"))
        .and(path(emea_reply_path()))
        .respond_with(ResponseTemplate::new(401))
        .up_to_n_times(1)
        .mount(&f.connector)
        .await;
    Mock::given(method("POST"))
        .and(path(emea_reply_path()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "ok"})))
        .mount(&f.connector)
        .await;
    f.client.reply_to_activity(&f.service_url, CONVERSATION_ID, ACTIVITY_ID, &reply()).await.unwrap();
    assert_eq!(token_requests(&f).await, 2);
}

#[tokio::test]
async fn a_token_endpoint_failure_sends_nothing_to_the_connector() {
    let f = fixture().await;
    Mock::given(method("POST"))
        .and(path(format!("/{TENANT_ID}/oauth2/v2.0/token")))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret"})),
        )
        .mount(&f.login)
        .await;
    let err = f.client.reply_to_activity(&f.service_url, CONVERSATION_ID, ACTIVITY_ID, &reply()).await.unwrap_err();
    assert_eq!(err.to_string(), "token endpoint answered HTTP 401 (invalid_client)");
    assert!(!err.to_string().contains(APP_PASSWORD));
    assert!(f.connector.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_card_is_updated_in_place_with_put() {
    let f = fixture().await;
    mount_login(&f.login).await;
    let mut activity = reply();
    activity.id = Some("1719900000999".into());
    Mock::given(method("PUT"))
        .and(path(format!("/emea/v3/conversations/{}/activities/1719900000999", encode(CONVERSATION_ID))))
        .and(body_json(serde_json::to_value(&activity).unwrap()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "1719900000999"})))
        .expect(1)
        .mount(&f.connector)
        .await;
    f.client.update_activity(&f.service_url, CONVERSATION_ID, "1719900000999", &activity).await.unwrap();
}

#[tokio::test]
async fn a_new_channel_thread_is_created_with_the_channel_and_tenant() {
    let f = fixture().await;
    mount_login(&f.login).await;
    let activity = reply();
    let expected: Value = json!({
        "isGroup": true,
        "channelData": {"channel": {"id": "19:c0ffee@thread.tacv2"}},
        "activity": serde_json::to_value(&activity).unwrap(),
        "tenantId": TENANT_ID,
    });
    Mock::given(method("POST"))
        .and(path("/emea/v3/conversations"))
        .and(body_json(expected))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "19:c0ffee@thread.tacv2;messageid=42", "activityId": "42"})))
        .expect(1)
        .mount(&f.connector)
        .await;
    let created = f
        .client
        .create_channel_thread(&f.service_url, &NewChannelThread::new("19:c0ffee@thread.tacv2", TENANT_ID, &activity))
        .await
        .unwrap();
    assert_eq!(created.activity_id.as_deref(), Some("42"));
    assert_eq!(created.id.as_deref(), Some("19:c0ffee@thread.tacv2;messageid=42"));
}

#[tokio::test]
async fn a_message_is_sent_to_a_conversation() {
    let f = fixture().await;
    mount_login(&f.login).await;
    Mock::given(method("POST"))
        .and(path(format!("/emea/v3/conversations/{}/activities", encode(CONVERSATION_ID))))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&f.connector)
        .await;
    let response = f.client.send_to_conversation(&f.service_url, CONVERSATION_ID, &reply()).await.unwrap();
    assert_eq!(response.id, None);
}

#[tokio::test]
async fn a_hung_connector_times_out() {
    let f = fixture().await;
    mount_login(&f.login).await;
    Mock::given(method("POST"))
        .and(path(emea_reply_path()))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .mount(&f.connector)
        .await;
    let started = std::time::Instant::now();
    let err = f.client.reply_to_activity(&f.service_url, CONVERSATION_ID, ACTIVITY_ID, &reply()).await.unwrap_err();
    assert!(matches!(err, ConnectorError::Network(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}
