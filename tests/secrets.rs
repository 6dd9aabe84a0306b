//! No secret ever reaches the logs or a card: a full flow (command, SSO sign-in, approval, Graph
//! removal, signed alert push, rejected tokens) with every log at TRACE captured and searched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::io::Write;
use std::sync::{Arc, Mutex};

use chatwarden::audit::signature::sign;
use serde_json::json;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

use helpers::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const ALERT_SECRET: &str = "alert-secret-never-logged-0123456789";
/// The SSO token's signature part: searched for in the logs, with the whole token.
const SSO_SIGNATURE: &str = "sso-token-never-logged-abcdef";
const GRAPH_TOKEN: &str = "graph-token-never-logged-123456";
const ATTACKER_TOKEN: &str = "attacker-token-never-logged-zyx";

#[tokio::test]
async fn no_token_password_or_secret_reaches_the_logs_or_a_card() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace,wiremock=off"))
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let app = spawn_app_with(Fakes { real_graph: true, signed_in: false, ..Fakes::default() }, |c| {
        c.alert_secret = Some(secrecy::SecretString::from(ALERT_SECRET.to_owned()));
    })
    .await;
    Mock::given(method("POST"))
        .and(path_regex("^/v3/conversations/[^/]+/activities/[^/]+$"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "card-1"})))
        .mount(&app.connector)
        .await;
    Mock::given(method("POST"))
        .and(path_regex("^/v3/conversations.*"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "19:c@thread.tacv2;messageid=2", "activityId": "2"})))
        .mount(&app.connector)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex("^/v3/conversations/.+"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "card-1"})))
        .mount(&app.connector)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/usertoken/exchange"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": GRAPH_TOKEN, "expiration": "2099-01-01T00:00:00Z"})))
        .mount(&app.token_service)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": GRAPH_TOKEN, "expiration": "2099-01-01T00:00:00Z"})))
        .mount(&app.token_service)
        .await;
    Mock::given(method("POST")).and(path_regex("removeAllAccessForUser$")).respond_with(ResponseTemplate::new(204)).mount(&app.graph).await;

    let url = app.service_url();
    let inbound = valid_token(&url);
    // The approver's SSO token (it must name them: `oid`).
    let sso_token = format!("{}{SSO_SIGNATURE}", sso_token_for(SECOND_ADMIN_OID).trim_end_matches("sig"));
    // A command, then an approval carrying an SSO token.
    let mut command = message(&url, "/remove-chat 19:abc@thread.v2 4fdb1e07-a7e9-475c-a5e2-8d042a6c8102 phishing");
    command["id"] = json!("cmd-1");
    app.post_activity(Some(&inbound), &command).await;
    let store = chatwarden::store::Store::connect(&app.database_url).await.unwrap();
    let case_id = store.history(1).await.unwrap().remove(0).id;
    let mut approve = message(&url, "");
    approve.as_object_mut().unwrap().remove("text");
    approve["type"] = json!("invoke");
    approve["name"] = json!("adaptiveCard/action");
    approve["id"] = json!("inv-1");
    approve["from"] = json!({"id": "29:sam", "name": "Sam", "aadObjectId": SECOND_ADMIN_OID});
    approve["value"] = json!({"action": {"type": "Action.Execute", "verb": "approve", "data": {"chatwarden": 1, "caseId": case_id, "action": "approve", "reason": "lure confirmed"}},
                              "authentication": {"id": "x", "connectionName": "graph", "token": sso_token}});
    assert_eq!(app.post_activity(Some(&inbound), &approve).await.status(), 200);
    for _ in 0..100 {
        if store.case(&case_id).await.unwrap().unwrap().state == chatwarden::cases::CaseState::Done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(store.case(&case_id).await.unwrap().unwrap().state, chatwarden::cases::CaseState::Done);
    // A signed alert push and a wrongly signed one.
    let record = json!({"Id": "r-1", "Workload": "MicrosoftTeams", "Operation": "MemberAdded", "OrganizationId": TENANT_ID, "ChatThreadId": "19:x@thread.v2",
                        "Members": [{"UPN": "a@contoso.com", "OrganizationId": TENANT_ID}],
                        "ParticipantInfo": {"HasForeignTenantUsers": true, "ParticipatingTenantIds": ["11111111-2222-3333-4444-555555555555"]}});
    let body = serde_json::to_vec(&record).unwrap();
    for signature in [sign(ALERT_SECRET.as_bytes(), &body), format!("sha256={}", "0".repeat(64))] {
        app.client
            .post(format!("{}/api/alerts", app.address))
            .header("x-chatwarden-signature-256", signature)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
    }
    // Rejected inbound tokens.
    app.post_activity(Some(ATTACKER_TOKEN), &message(&url, "/help")).await;
    app.post_activity(Some(&format!("{ATTACKER_TOKEN}.{ATTACKER_TOKEN}.{ATTACKER_TOKEN}")), &message(&url, "/help")).await;
    // Whatever the app still does on its own (card updates, sweeps) has happened and logged.
    app.wait_for_a_full_sweep().await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.len() > 10_000, "the flow should have logged at TRACE ({} bytes)", logs.len());
    assert!(logs.contains("case decided"), "the flow's own logs are captured");
    let mut outgoing = String::new();
    for request in app.connector.received_requests().await.unwrap() {
        outgoing.push_str(&String::from_utf8_lossy(&request.body));
    }
    assert!(outgoing.contains(&case_id), "cards were captured");
    let secrets = [
        ("app password", APP_PASSWORD.to_owned()),
        ("bot token", BOT_TOKEN.to_owned()),
        ("inbound JWT", inbound.clone()),
        ("inbound JWT signature", inbound.rsplit('.').next().unwrap().to_owned()),
        ("SSO token", sso_token.clone()),
        ("SSO token signature", SSO_SIGNATURE.to_owned()),
        ("Graph token", GRAPH_TOKEN.to_owned()),
        ("alert secret", ALERT_SECRET.to_owned()),
        ("attacker token", ATTACKER_TOKEN.to_owned()),
    ];
    for (what, secret) in secrets {
        assert!(!logs.contains(&secret), "the {what} reached the logs");
        assert!(!outgoing.contains(&secret), "the {what} reached a card or message");
    }
    assert!(!logs.to_ascii_lowercase().contains("authorization: bearer"), "an Authorization header reached the logs");
    let mut file = std::fs::File::create(std::env::temp_dir().join("chatwarden-trace-sample.log")).unwrap();
    file.write_all(logs.as_bytes()).unwrap();
}
