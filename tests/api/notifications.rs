//! Graph change notifications for chat membership and Defender XDR alerts: the handshake, every
//! check of a batch, encrypted resource data (a certificate generated here, real RSA-OAEP,
//! AES-CBC and HMAC) through to the approval card, the subscription's lifecycle and the
//! Defender poll, against fakes that check exact paths, headers and bodies.

use std::sync::Arc;
use std::time::Duration;

use chatwarden::audit::signature::sign as sign_body;
use chatwarden::cases::{CaseState, now_ms};
use chatwarden::config::RetryPolicy;
use chatwarden::defender::DefenderPoller;
use chatwarden::entra::app_token::AppTokenProvider;
use chatwarden::graph::GraphClient;
use chatwarden::metrics::Metrics;
use chatwarden::notifications::{
    CertificateSet, GRAPH_CHANGE_TRACKING_APP_ID, LIFETIME, NotificationCertificate, NotificationProcessor, NotificationSettings,
    RENEW_BEFORE, SubscriptionAction, SubscriptionManager, SubscriptionSettings, encrypt,
};
use chatwarden::store::Store;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::audit::open_security_channel;
use crate::helpers::*;

const CLIENT_STATE: &str = "client-state-secret-0123456789";
const GRAPH_KID: &str = "identity-platform-key";
const EVIL_TENANT: &str = "1d36ca61-5509-4ac7-983d-91dfdeb5f492";
const CHAT: &str = "19:5b1f0c2a-7d9e-4c3b-8a6f-0e1d2c3b4a59_a1b2c3d4-0000-4000-8000-00000000000a@unq.gbl.spaces";
const JOHN_OID: &str = "a1b2c3d4-0000-4000-8000-00000000000a";
const MALLORY_OID: &str = "e5f6a7b8-0000-4000-8000-0000000000ee";
const ALERT_SECRET: &str = "alert-secret-for-tests-0123456789";

fn certificate() -> NotificationCertificate {
    NotificationCertificate::generate("chatwarden notifications test").unwrap().0
}

fn validation_claims() -> Value {
    json!({
        "aud": APP_ID, "iss": format!("https://sts.windows.net/{TENANT_ID}/"), "appid": GRAPH_CHANGE_TRACKING_APP_ID,
        "tid": TENANT_ID, "exp": now() + 3600, "nbf": now() - 60, "iat": now() - 60, "ver": "1.0",
    })
}

fn validation_token() -> String {
    sign(GRAPH_KID, TEAMS_KEY_PEM, &validation_claims())
}

/// The Microsoft identity platform's metadata and keys on the fake login host.
async fn mount_identity_platform(login: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/common/v2.0/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jwks_uri": format!("{}/common/discovery/v2.0/keys", login.uri())})))
        .mount(login)
        .await;
    Mock::given(method("GET"))
        .and(path("/common/discovery/v2.0/keys"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [jwk(GRAPH_KID, "test-key-1", &[])]})))
        .mount(login)
        .await;
}

fn john() -> Value {
    json!({"@odata.type": "#microsoft.graph.aadUserConversationMember", "id": "m-john", "userId": JOHN_OID,
           "tenantId": TENANT_ID, "displayName": "John Doe", "email": "john.doe@contoso.com", "roles": ["owner"]})
}

fn mallory() -> Value {
    json!({"userId": MALLORY_OID, "tenantId": EVIL_TENANT, "displayName": "Mallory", "email": "mallory@evil.example",
           "id": "m-mallory", "roles": [], "visibleHistoryStartDateTime": "1970-01-01T00:00:00Z", "user": null})
}

struct NotifyApp {
    app: TestApp,
    cert_der: Vec<u8>,
    cert_id: String,
}

async fn notify_app_on(database_url: Option<String>, certificates: CertificateSet) -> NotifyApp {
    let cert = certificates.newest();
    let (cert_der, cert_id) = (cert.der().to_vec(), cert.id().to_owned());
    let fakes = Fakes { database_url, ..Fakes::default() };
    let app = spawn_app_with(fakes, |c| {
        c.alert_secret = Some(secrecy::SecretString::from(ALERT_SECRET.to_owned()));
        c.notifications = Some(NotificationSettings {
            url: url::Url::parse("https://chatwarden.example.com/api/notifications").unwrap(),
            certificates,
            client_state: secrecy::SecretString::from(CLIENT_STATE.to_owned()),
            model: None,
        });
    })
    .await;
    mount_identity_platform(&app.login).await;
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/chats/{}/members", encode(CHAT))))
        .and(header("authorization", format!("Bearer {BOT_TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [john(), mallory()]})))
        .named("chat members")
        .mount(&app.graph)
        .await;
    open_security_channel(&app).await;
    NotifyApp { app, cert_der, cert_id }
}

async fn notify_app() -> NotifyApp {
    notify_app_on(None, CertificateSet::new(certificate(), None)).await
}

impl NotifyApp {
    fn notification(&self, member: &Value) -> Value {
        let content = encrypt(&self.cert_der, &self.cert_id, member.to_string().as_bytes()).unwrap();
        json!({
            "subscriptionId": "sub-1", "changeType": "created", "clientState": CLIENT_STATE, "tenantId": TENANT_ID,
            "subscriptionExpirationDateTime": "2026-12-05T11:00:00Z",
            "resource": format!("chats('{CHAT}')/members('{}')", member["id"].as_str().unwrap()),
            "resourceData": {"id": member["id"], "@odata.type": "#microsoft.graph.aadUserConversationMember"},
            "encryptedContent": content,
        })
    }

    fn batch(&self, items: Vec<Value>, tokens: Vec<String>) -> Value {
        json!({"value": items, "validationTokens": tokens})
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.app.client.post(format!("{}{path}", self.app.address)).json(body).send().await.unwrap()
    }

    fn metric(&self, result: &'static str) -> u64 {
        self.app.metrics.get("chatwarden_notifications_total", &[("result", result)])
    }

    async fn cards(&self) -> Vec<String> {
        self.app
            .connector
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/v3/conversations")
            .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["activity"]["attachments"][0]["content"].to_string())
            .collect()
    }

    async fn member_reads(&self) -> usize {
        self.app.graph.received_requests().await.unwrap().iter().filter(|r| r.url.path().ends_with("/members")).count()
    }
}

#[tokio::test]
async fn the_validation_handshake_echoes_the_token_as_plain_text_on_both_urls() {
    let n = notify_app().await;
    for path in ["/api/notifications", "/api/notifications/lifecycle"] {
        let response = n
            .app
            .client
            .post(format!("{}{path}?validationToken=Validation%3A%20Testing%20client%20application", n.app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.text().await.unwrap(), "Validation: Testing client application");
    }
    let control = n.app.client.post(format!("{}/api/notifications?validationToken=a%0Db", n.app.address)).send().await.unwrap();
    assert_eq!(control.status(), 422);
}

#[tokio::test]
async fn notifications_are_not_found_when_not_configured() {
    let app = spawn_app().await;
    let response = app.client.post(format!("{}/api/notifications?validationToken=x", app.address)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    let response = app.client.post(format!("{}/api/notifications", app.address)).json(&json!({"value": []})).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test]
async fn an_outsider_joining_a_users_chat_posts_the_approval_card_with_the_source_and_time() {
    let n = notify_app().await;
    let response = n.post("/api/notifications", &n.batch(vec![n.notification(&mallory())], vec![validation_token()])).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap()["queued"], 1);
    wait_until("the card", async || !n.cards().await.is_empty()).await;
    let card = &n.cards().await[0];
    assert!(card.contains("Graph change notification at "), "{card}");
    assert!(card.contains("joined a chat with John Doe"), "{card}");
    assert!(card.contains("mallory@evil.example") && card.contains("tenant 1d36ca61"), "{card}");
    assert!(card.contains("evil.example"), "{card}");

    let store = Store::connect(&n.app.database_url).await.unwrap();
    let case = store.history(1).await.unwrap().remove(0);
    assert_eq!(case.state, CaseState::Proposed);
    assert_eq!(case.targets.len(), 1);
    assert_eq!(case.targets[0].user_oid.as_deref(), Some(JOHN_OID));
    assert_eq!(case.targets[0].thread_id.as_deref(), Some(CHAT));
    assert!(case.evidence[0].starts_with("graph-notification:"), "{:?}", case.evidence);
    // The app token went to Graph's members list, with the Graph scope asked of Entra.
    assert_eq!(n.member_reads().await, 1);
    let token_requests = n.app.login.received_requests().await.unwrap();
    let graph_scope = format!("scope={}", encode(&format!("{}/.default", n.app.graph.uri())));
    assert!(token_requests.iter().any(|r| String::from_utf8_lossy(&r.body).contains(&graph_scope)), "no Graph app-token request");
    assert_eq!(n.metric("opened"), 1);
}

#[tokio::test]
async fn a_tampered_signature_a_wrong_client_state_and_bad_tokens_open_nothing_and_are_counted() {
    let n = notify_app().await;
    let mut tampered = n.notification(&mallory());
    tampered["encryptedContent"]["dataSignature"] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_eq!(n.post("/api/notifications", &n.batch(vec![tampered], vec![validation_token()])).await.status(), 202);
    wait_until("the signature rejection", async || n.metric("bad_data_signature") == 1).await;

    let mut wrong_state = n.notification(&mallory());
    wrong_state["clientState"] = json!("not-our-client-state-000");
    let response = n.post("/api/notifications", &n.batch(vec![wrong_state], vec![validation_token()])).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["message"], "unauthorized");
    assert_eq!(n.metric("client_state"), 1);

    let forged = sign(GRAPH_KID, OTHER_KEY_PEM, &validation_claims());
    let mut expired = validation_claims();
    expired["exp"] = json!(now() - 3600);
    let mut audience = validation_claims();
    audience["aud"] = json!("another-app");
    let mut app_id = validation_claims();
    app_id["appid"] = json!("11111111-2222-3333-4444-555555555555");
    let mut tenant = validation_claims();
    tenant["iss"] = json!("https://sts.windows.net/another-tenant/");
    let cases = [
        (forged, "validation_token_signature"),
        (sign(GRAPH_KID, TEAMS_KEY_PEM, &expired), "validation_token_expired"),
        (sign(GRAPH_KID, TEAMS_KEY_PEM, &audience), "validation_token_audience"),
        (sign(GRAPH_KID, TEAMS_KEY_PEM, &app_id), "validation_token_app"),
        (sign(GRAPH_KID, TEAMS_KEY_PEM, &tenant), "validation_token_issuer"),
        ("not-a-jwt".to_owned(), "validation_token_malformed"),
    ];
    for (token, label) in cases {
        let response = n.post("/api/notifications", &n.batch(vec![n.notification(&mallory())], vec![validation_token(), token])).await;
        assert_eq!(response.status(), 401, "{label}");
        assert_eq!(n.metric(label), 1, "{label}");
    }
    let response = n.post("/api/notifications", &n.batch(vec![n.notification(&mallory())], vec![])).await;
    assert_eq!(response.status(), 401);
    assert_eq!(n.metric("validation_token_missing"), 1);
    let response = n.app.client.post(format!("{}/api/notifications", n.app.address)).body("{\"value\": [").send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(n.metric("bad_json"), 1);

    assert!(n.cards().await.is_empty());
    assert_eq!(n.member_reads().await, 0, "nothing refused reached Graph");
    assert!(Store::connect(&n.app.database_url).await.unwrap().history(5).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_duplicate_delivery_opens_one_case() {
    let n = notify_app().await;
    let body = n.batch(vec![n.notification(&mallory())], vec![validation_token()]);
    assert_eq!(n.post("/api/notifications", &body).await.status(), 202);
    let again = n.post("/api/notifications", &body).await;
    assert_eq!(again.status(), 202);
    assert_eq!(again.json::<Value>().await.unwrap()["queued"], 0);
    wait_until("the card", async || !n.cards().await.is_empty()).await;
    // Another delivery of the same membership (re-encrypted) joins the open case.
    assert_eq!(n.post("/api/notifications", &n.batch(vec![n.notification(&mallory())], vec![validation_token()])).await.status(), 202);
    wait_until("the second evaluation", async || n.metric("evaluated") == 1).await;
    assert_eq!(n.cards().await.len(), 1);
    let store = Store::connect(&n.app.database_url).await.unwrap();
    let cases = store.history(5).await.unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(store.case(&cases[0].id).await.unwrap().unwrap().evidence.len(), 2, "the second delivery joined as evidence");
    assert_eq!(n.metric("duplicate"), 1, "the identical delivery was dropped at the door");
}

fn member_added_record(id: &str) -> Value {
    json!({
        "Id": id, "RecordType": 25, "CreationTime": "2026-12-01T10:00:00", "Operation": "MemberAdded",
        "OrganizationId": TENANT_ID, "UserType": 0, "UserKey": EVIL_TENANT, "Workload": "MicrosoftTeams",
        "UserId": "mallory@evil.example", "ChatThreadId": CHAT,
        "Members": [{"DisplayName": "John Doe", "Role": 1, "UPN": "john.doe@contoso.com"}],
        "ParticipantInfo": {"HasForeignTenantUsers": true, "ParticipatingSIPDomains": [
            {"DomainName": "evil.example", "TenantId": EVIL_TENANT}, {"DomainName": "contoso.com", "TenantId": TENANT_ID}
        ]}
    })
}

#[tokio::test]
async fn a_notification_then_the_audit_record_of_the_pair_is_one_case_with_both_pieces_of_evidence() {
    let n = notify_app().await;
    n.post("/api/notifications", &n.batch(vec![n.notification(&mallory())], vec![validation_token()])).await;
    wait_until("the card", async || !n.cards().await.is_empty()).await;
    let body = serde_json::to_vec(&member_added_record("ual-1")).unwrap();
    let response = n
        .app
        .client
        .post(format!("{}/api/alerts", n.app.address))
        .header("content-type", "application/json")
        .header("X-Chatwarden-Signature-256", sign_body(ALERT_SECRET.as_bytes(), &body))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap()["cases"], json!([]));
    let store = Store::connect(&n.app.database_url).await.unwrap();
    let cases = store.history(5).await.unwrap();
    assert_eq!(cases.len(), 1);
    let case = store.case(&cases[0].id).await.unwrap().unwrap();
    assert_eq!(case.evidence.len(), 2, "{:?}", case.evidence);
    assert!(case.evidence.iter().any(|e| e == "ual-1"));
    assert!(case.evidence.iter().any(|e| e.starts_with("graph-notification:")));
    assert_eq!(n.cards().await.len(), 1);
}

/// The parts a subscription manager needs, against `graph` and the database at `url`.
async fn manager_on(url: &str, graph: &MockServer, cert: CertificateSet) -> SubscriptionManager {
    let store = Store::connect(url).await.unwrap();
    let metrics = Arc::new(Metrics::default());
    let retry = RetryPolicy { base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(50), ..RetryPolicy::default() };
    let graph_client = Arc::new(GraphClient::new(url::Url::parse(&graph.uri()).unwrap(), retry, Arc::clone(&metrics)).unwrap());
    let ingest = offline_ingest(&store, &metrics, false);
    let processor = Arc::new(NotificationProcessor::new(
        store.clone(),
        cert.clone(),
        Arc::clone(&graph_client),
        AppTokenProvider::anonymous(),
        ingest,
        TENANT_ID.into(),
        Arc::clone(&metrics),
    ));
    let settings = SubscriptionSettings {
        notification_url: url::Url::parse("https://chatwarden.example.com/api/notifications").unwrap(),
        model: Some("A".into()),
        client_state: secrecy::SecretString::from(CLIENT_STATE.to_owned()),
    };
    SubscriptionManager::new(graph_client, AppTokenProvider::anonymous(), store, cert, settings, processor, metrics)
}

fn iso(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap().format(&time::format_description::well_known::Rfc3339).unwrap()
}

async fn mount_create(graph: &MockServer, id: &str, delay: Duration) {
    Mock::given(method("POST"))
        .and(path("/v1.0/subscriptions"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": id, "expirationDateTime": iso(now_ms() + LIFETIME.as_millis() as i64)}))
                .set_delay(delay),
        )
        .mount(graph)
        .await;
}

async fn calls(graph: &MockServer, verb: &str, suffix: &str) -> Vec<wiremock::Request> {
    graph.received_requests().await.unwrap().into_iter().filter(|r| r.method.as_str() == verb && r.url.path().ends_with(suffix)).collect()
}

#[tokio::test]
async fn the_subscription_is_created_with_the_certificate_renewed_before_expiry_and_answers_its_lifecycle() {
    let graph = MockServer::start().await;
    let cert = certificate();
    let (encoded, id) = (cert.encoded(), cert.id().to_owned());
    let manager = manager_on(&sqlite_url(), &graph, CertificateSet::new(cert, None)).await;
    mount_create(&graph, "sub-1", Duration::ZERO).await;
    Mock::given(method("PATCH"))
        .and(path("/v1.0/subscriptions/sub-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "sub-1"})))
        .mount(&graph)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1.0/subscriptions/sub-1/reauthorize"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&graph)
        .await;

    let start = now_ms();
    assert_eq!(manager.maintain(start).await.unwrap(), SubscriptionAction::Created);
    let created = calls(&graph, "POST", "/subscriptions").await;
    let body: Value = serde_json::from_slice(&created[0].body).unwrap();
    assert_eq!(body["resource"], "/chats/getAllMembers?model=A");
    assert_eq!(body["changeType"], "created");
    assert_eq!(body["includeResourceData"], true);
    assert_eq!(body["encryptionCertificate"], encoded);
    assert_eq!(body["encryptionCertificateId"], id);
    assert_eq!(body["clientState"], CLIENT_STATE);
    assert_eq!(body["notificationUrl"], "https://chatwarden.example.com/api/notifications");
    assert_eq!(body["lifecycleNotificationUrl"], "https://chatwarden.example.com/api/notifications/lifecycle");

    // An hour later nothing is due; a day before expiry it is renewed.
    assert_eq!(manager.maintain(start + 3_600_000).await.unwrap(), SubscriptionAction::Unchanged);
    let expires = manager.state().await.unwrap().unwrap().expires_at;
    let due = expires - RENEW_BEFORE.as_millis() as i64 + 1;
    assert_eq!(manager.maintain(due).await.unwrap(), SubscriptionAction::Renewed);
    let patch = calls(&graph, "PATCH", "/subscriptions/sub-1").await;
    let body: Value = serde_json::from_slice(&patch[0].body).unwrap();
    assert_eq!(body["expirationDateTime"], iso(due + LIFETIME.as_millis() as i64));
    assert_eq!(manager.state().await.unwrap().unwrap().expires_at, due + LIFETIME.as_millis() as i64);

    let lifecycle = |event: &str, subscription: &str| {
        serde_json::from_value(json!({"subscriptionId": subscription, "lifecycleEvent": event, "clientState": CLIENT_STATE})).unwrap()
    };
    assert_eq!(manager.on_lifecycle(&lifecycle("reauthorizationRequired", "sub-1"), due).await.unwrap(), "reauthorized");
    assert_eq!(calls(&graph, "POST", "/reauthorize").await.len(), 1);
    assert_eq!(manager.on_lifecycle(&lifecycle("subscriptionRemoved", "old-one"), due).await.unwrap(), "stale_subscription");
    assert_eq!(calls(&graph, "POST", "/subscriptions").await.len(), 1);
    graph.reset().await;
    mount_create(&graph, "sub-2", Duration::ZERO).await;
    assert_eq!(manager.on_lifecycle(&lifecycle("subscriptionRemoved", "sub-1"), due).await.unwrap(), "recreated");
    assert_eq!(manager.state().await.unwrap().unwrap().id, "sub-2");
}

#[tokio::test]
async fn a_subscription_gone_at_renewal_is_recreated_and_a_new_certificate_replaces_it() {
    let graph = MockServer::start().await;
    let url = sqlite_url();
    let first = certificate();
    let manager = manager_on(&url, &graph, CertificateSet::new(first, None)).await;
    mount_create(&graph, "sub-1", Duration::ZERO).await;
    manager.maintain(now_ms()).await.unwrap();
    Mock::given(method("PATCH"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {"code": "ResourceNotFound"}})))
        .mount(&graph)
        .await;
    let due = manager.state().await.unwrap().unwrap().expires_at - 1000;
    assert_eq!(manager.maintain(due).await.unwrap(), SubscriptionAction::Created);
    assert_eq!(calls(&graph, "POST", "/subscriptions").await.len(), 2);

    // The next certificate of a rotation: a new subscription to it, then the old one deleted.
    let current = certificate();
    let next = certificate();
    let next_id = next.id().to_owned();
    let rotated = manager_on(&url, &graph, CertificateSet::new(current, Some(next))).await;
    Mock::given(method("DELETE")).and(path("/v1.0/subscriptions/sub-1")).respond_with(ResponseTemplate::new(204)).mount(&graph).await;
    assert_eq!(rotated.maintain(now_ms()).await.unwrap(), SubscriptionAction::Replaced);
    assert_eq!(rotated.state().await.unwrap().unwrap().certificate_id, next_id);
    let posts = calls(&graph, "POST", "/subscriptions").await;
    assert_eq!(serde_json::from_slice::<Value>(&posts.last().unwrap().body).unwrap()["encryptionCertificateId"], next_id);
    assert_eq!(calls(&graph, "DELETE", "/subscriptions/sub-1").await.len(), 1);
}

#[tokio::test]
async fn missed_notifications_are_reconciled_from_the_chats_the_audit_index_knows() {
    let graph = MockServer::start().await;
    let url = sqlite_url();
    let store = Store::connect(&url).await.unwrap();
    let mut record = member_added_record("ual-known-chat");
    record["CreationTime"] = json!(iso(now_ms() - 3_600_000).trim_end_matches('Z'));
    record["ParticipantInfo"] = json!({});
    record["Members"] = json!([{"DisplayName": "John Doe", "UPN": "john.doe@contoso.com"}]);
    store.insert_audit_batch(&[chatwarden::audit::record::AuditRecord::parse(record).unwrap()], now_ms()).await.unwrap();
    Mock::given(method("GET"))
        .and(path(format!("/v1.0/chats/{}/members", encode(CHAT))))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [john(), mallory()]})))
        .mount(&graph)
        .await;
    let manager = manager_on(&url, &graph, CertificateSet::new(certificate(), None)).await;
    let missed =
        serde_json::from_value(json!({"subscriptionId": "sub-1", "lifecycleEvent": "missed", "clientState": CLIENT_STATE})).unwrap();
    assert_eq!(manager.on_lifecycle(&missed, now_ms()).await.unwrap(), "reconciled");
    let cases = store.history(5).await.unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].targets[0].user_oid.as_deref(), Some(JOHN_OID));
    assert!(cases[0].reason.as_deref().unwrap().starts_with("Chat members read after missed notifications"));
}

#[tokio::test]
async fn two_replicas_on_postgresql_keep_one_subscription() {
    let url = postgres_url().await;
    let graph = MockServer::start().await;
    mount_create(&graph, "sub-only", Duration::from_millis(300)).await;
    let set = CertificateSet::new(certificate(), None);
    let (a, b) = (manager_on(&url, &graph, set.clone()).await, manager_on(&url, &graph, set).await);
    let now = now_ms();
    let (first, second) = tokio::join!(a.maintain(now), b.maintain(now));
    let mut actions = [first.unwrap(), second.unwrap()];
    actions.sort_by_key(|a| format!("{a:?}"));
    assert!(
        actions == [SubscriptionAction::Created, SubscriptionAction::NotOwner]
            || actions == [SubscriptionAction::Created, SubscriptionAction::Unchanged],
        "{actions:?}"
    );
    assert_eq!(calls(&graph, "POST", "/subscriptions").await.len(), 1);
    assert_eq!(b.state().await.unwrap().unwrap().id, "sub-only");
}

#[tokio::test]
async fn a_defender_alert_with_teams_message_evidence_opens_a_case_once() {
    let graph = MockServer::start().await;
    let url = sqlite_url();
    let store = Store::connect(&url).await.unwrap();
    let alert = json!({
        "id": "da638123", "title": "Teams message with a malicious link", "serviceSource": "microsoftDefenderForOffice365",
        "tenantId": TENANT_ID, "createdDateTime": iso(now_ms() - 600_000), "lastUpdateDateTime": iso(now_ms() - 300_000),
        "evidence": [
            {"@odata.type": "#microsoft.graph.security.mailboxEvidence", "userAccount": {}},
            {"@odata.type": "#microsoft.graph.security.teamsMessageEvidence", "threadId": CHAT, "threadType": "Chat",
             "messageId": "1730125118000", "senderFromAddress": "mallory@evil.example", "isExternal": true,
             "messageDirection": "inbound", "recipients": ["john.doe@contoso.com", "mallory@evil.example"], "suspiciousRecipients": []}
        ]
    });
    Mock::given(method("GET"))
        .and(path("/v1.0/security/alerts_v2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"value": [alert]})))
        .mount(&graph)
        .await;
    let metrics = Arc::new(Metrics::default());
    let retry = RetryPolicy::default();
    let graph_client = Arc::new(GraphClient::new(url::Url::parse(&graph.uri()).unwrap(), retry, Arc::clone(&metrics)).unwrap());
    let ingest = offline_ingest(&store, &metrics, false);
    let poller = DefenderPoller::new(
        graph_client,
        AppTokenProvider::anonymous(),
        store.clone(),
        ingest,
        TENANT_ID.into(),
        Duration::from_secs(60),
        metrics,
    );
    let report = poller.poll_once(now_ms()).await.unwrap().unwrap();
    assert_eq!(report.alerts, 1);
    assert_eq!(report.cases.len(), 1, "one recipient inside; the sender is not a target");
    let case = store.case(&report.cases[0]).await.unwrap().unwrap();
    assert_eq!(case.evidence, ["defender-alert:da638123"]);
    assert_eq!(case.targets[0].user_ref, "john.doe@contoso.com");
    assert!(case.reason.as_deref().unwrap().starts_with("Defender XDR alert at "));
    let request = &graph.received_requests().await.unwrap()[0];
    let filter = request.url.query_pairs().find(|(k, _)| k == "$filter").unwrap().1.into_owned();
    assert!(filter.starts_with("lastUpdateDateTime ge "), "{filter}");
    // The next poll starts at the alert's update time and sees it again: nothing new.
    let again = poller.poll_once(now_ms()).await.unwrap().unwrap();
    assert!(again.cases.is_empty());
    let second = graph.received_requests().await.unwrap()[1].url.query_pairs().find(|(k, _)| k == "$filter").unwrap().1.into_owned();
    assert_ne!(filter, second, "the checkpoint moved to the alert's lastUpdateDateTime");
    assert_eq!(store.history(5).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_notification_is_not_taken_twice_by_two_replicas_on_postgresql() {
    let url = postgres_url().await;
    let certificates = CertificateSet::new(certificate(), None);
    let first = notify_app_on(Some(url.clone()), certificates.clone()).await;
    let second = notify_app_on(Some(url.clone()), certificates).await;
    // The same delivery reaching both replicas (Graph delivered it again to another one).
    let body = first.batch(vec![first.notification(&mallory())], vec![validation_token()]);
    let (a, b) = tokio::join!(first.post("/api/notifications", &body), second.post("/api/notifications", &body));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (202, 202));
    let done = || first.metric("opened") + second.metric("opened") + first.metric("evaluated") + second.metric("evaluated");
    wait_until("both processed", async || done() == 2).await;
    assert_eq!(first.metric("opened") + second.metric("opened"), 1);
    assert_eq!(first.cards().await.len() + second.cards().await.len(), 1, "one card");
    let store = Store::connect(&url).await.unwrap();
    let cases = store.history(5).await.unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(store.case(&cases[0].id).await.unwrap().unwrap().evidence.len(), 1, "the delivery is evidence once");
    assert_eq!(Store::connect(&url).await.unwrap().history(5).await.unwrap().len(), 1);
}
