//! Inbound authentication through the real server: every rule of the design, each asserting the
//! status, the error code and that no outbound request was made.

use futures_util::StreamExt as _;
use serde_json::{Value, json};

use crate::helpers::*;

const CLOCK_SKEW: u64 = chatwarden::botframework::auth::CLOCK_SKEW_SECONDS;

/// A rejection: the status, the one generic body code a caller sees for it, and the precise
/// reason counted in metrics only.
async fn assert_rejected(app: &TestApp, token: Option<&str>, body: &Value, status: u16, code: &str) {
    let metadata_before = app.metadata_fetches().await;
    let response = app.post_activity(token, body).await;
    assert_eq!(response.status().as_u16(), status);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], generic_code(status), "{error}");
    assert!(!error.to_string().contains(code), "the body names the failed check: {error}");
    app.assert_no_outbound().await;
    assert_eq!(app.metadata_fetches().await, metadata_before, "a rejected token caused a key fetch");
    assert_eq!(app.metrics.get("chatwarden_auth_rejections_total", &[("reason", leak(code))]), 1);
}

fn generic_code(status: u16) -> &'static str {
    match status {
        401 => "unauthorized",
        403 => "forbidden",
        _ => "unavailable",
    }
}

fn leak(code: &str) -> &'static str {
    Box::leak(code.to_owned().into_boxed_str())
}

fn unsigned(header: Value, claims: &Value) -> String {
    use base64::Engine as _;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}.", e.encode(header.to_string()), e.encode(claims.to_string()))
}

#[tokio::test]
async fn a_valid_token_is_accepted_and_help_is_answered_through_the_connector() {
    let app = spawn_app().await;
    app.mount_reply().await;
    let url = app.service_url();
    let response = app.post_activity(Some(&valid_token(&url)), &message(&url, "/help")).await;
    assert_eq!(response.status(), 200);

    let replies = TestApp::received(&app.connector, &reply_path()).await;
    assert_eq!(replies.len(), 1);
    let reply = &replies[0];
    assert_eq!(reply.headers.get("authorization").unwrap(), &format!("Bearer {BOT_TOKEN}"));
    let body: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["replyToId"], ACTIVITY_ID);
    assert_eq!(body["conversation"]["id"], CONVERSATION_ID);
    assert_eq!(body["recipient"]["id"], "29:1AbCdEfGh-admin");
    assert!(body["text"].as_str().unwrap().contains("/remove-chat <thread-id> <user> [reason...]"));

    let token_requests = TestApp::received(&app.login, &format!("/{TENANT_ID}/oauth2/v2.0/token")).await;
    assert_eq!(token_requests.len(), 1);
    let form = String::from_utf8(token_requests[0].body.clone()).unwrap();
    assert!(form.contains("grant_type=client_credentials"), "{form}");
    assert!(form.contains(&format!("client_id={APP_ID}")), "{form}");
    assert!(form.contains("scope=https%3A%2F%2Fapi.botframework.com%2F.default"), "{form}");
}

#[tokio::test]
async fn an_audience_given_as_an_array_containing_the_app_id_is_accepted() {
    let app = spawn_app().await;
    app.mount_reply().await;
    let url = app.service_url();
    let mut claims = valid_claims(&url);
    claims["aud"] = json!(["someone-else", APP_ID]);
    let response = app.post_activity(Some(&sign(TEAMS_KID, TEAMS_KEY_PEM, &claims)), &message(&url, "/help")).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_request_without_authorization_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    assert_rejected(&app, None, &message(&url, "/help"), 401, "missing_authorization").await;
}

#[tokio::test]
async fn a_non_bearer_scheme_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let body = serde_json::to_vec(&message(&url, "/help")).unwrap();
    let token = valid_token(&url);
    for header in [format!("Basic {token}"), format!("bearer {token}"), format!("Bearer  {token}")] {
        let response = app.post_raw(&[("content-type", "application/json"), ("authorization", &header)], body.clone()).await;
        assert_eq!(response.status(), 401, "{header}");
    }
    app.assert_no_outbound().await;
    assert_eq!(app.metrics.get("chatwarden_auth_rejections_total", &[("reason", "malformed_authorization")]), 3);
}

#[tokio::test]
async fn a_garbage_token_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    assert_rejected(&app, Some("not-a-jwt"), &message(&url, "/help"), 401, "malformed_token").await;
}

#[tokio::test]
async fn a_token_from_another_issuer_is_rejected_before_any_key_lookup() {
    let app = spawn_app().await;
    let url = app.service_url();
    let mut claims = valid_claims(&url);
    claims["iss"] = json!("https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/");
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("kid-nobody-knows".into());
    let token =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_rsa_pem(TEAMS_KEY_PEM.as_bytes()).unwrap()).unwrap();
    assert_rejected(&app, Some(&token), &message(&url, "/help"), 401, "wrong_issuer").await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let mut claims = valid_claims(&url);
    claims["aud"] = json!("11111111-2222-3333-4444-555555555555");
    assert_rejected(&app, Some(&sign(TEAMS_KID, TEAMS_KEY_PEM, &claims)), &message(&url, "/help"), 401, "wrong_audience").await;
}

#[tokio::test]
async fn a_connector_audience_token_is_rejected() {
    // aud=https://api.botframework.com is what any bot gets to call the Connector.
    let app = spawn_app().await;
    let url = app.service_url();
    let mut claims = valid_claims(&url);
    claims["aud"] = json!("https://api.botframework.com");
    assert_rejected(&app, Some(&sign(TEAMS_KID, TEAMS_KEY_PEM, &claims)), &message(&url, "/help"), 401, "wrong_audience").await;
}

#[tokio::test]
async fn a_token_expired_beyond_the_leeway_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let mut claims = valid_claims(&url);
    claims["exp"] = json!(now() - 360);
    claims["nbf"] = json!(now() - 3960);
    assert_rejected(&app, Some(&sign(TEAMS_KID, TEAMS_KEY_PEM, &claims)), &message(&url, "/help"), 401, "expired").await;
}

#[tokio::test]
async fn a_token_expired_within_the_leeway_is_accepted() {
    let app = spawn_app().await;
    app.mount_reply().await;
    let url = app.service_url();
    let mut claims = valid_claims(&url);
    claims["exp"] = json!(now() - 240);
    claims["nbf"] = json!(now() - 3840);
    let response = app.post_activity(Some(&sign(TEAMS_KID, TEAMS_KEY_PEM, &claims)), &message(&url, "/help")).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_token_not_yet_valid_beyond_the_leeway_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let mut claims = valid_claims(&url);
    claims["nbf"] = json!(now() + 360);
    assert_rejected(&app, Some(&sign(TEAMS_KID, TEAMS_KEY_PEM, &claims)), &message(&url, "/help"), 401, "not_yet_valid").await;
}

#[tokio::test]
async fn a_token_without_exp_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let mut claims = valid_claims(&url);
    claims.as_object_mut().unwrap().remove("exp");
    assert_rejected(&app, Some(&sign(TEAMS_KID, TEAMS_KEY_PEM, &claims)), &message(&url, "/help"), 401, "missing_claim").await;
}

#[tokio::test]
async fn an_unsigned_alg_none_token_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let token = unsigned(json!({"alg": "none", "typ": "JWT", "kid": TEAMS_KID}), &valid_claims(&url));
    assert_rejected(&app, Some(&token), &message(&url, "/help"), 401, "unsupported_algorithm").await;
}

#[tokio::test]
async fn an_hs256_token_keyed_with_the_public_key_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(TEAMS_KID.into());
    let public_n = jwk(TEAMS_KID, "test-key-1", &[])["n"].as_str().unwrap().to_owned();
    let token = jsonwebtoken::encode(&header, &valid_claims(&url), &jsonwebtoken::EncodingKey::from_secret(public_n.as_bytes())).unwrap();
    assert_rejected(&app, Some(&token), &message(&url, "/help"), 401, "unsupported_algorithm").await;
}

#[tokio::test]
async fn a_token_with_an_unknown_kid_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let before = app.metadata_fetches().await;
    let token = sign("unknown-kid", TEAMS_KEY_PEM, &valid_claims(&url));
    let response = app.post_activity(Some(&token), &message(&url, "/help")).await;
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");
    assert_eq!(app.metrics.get("chatwarden_auth_rejections_total", &[("reason", "unknown_key")]), 1);
    app.assert_no_outbound().await;
    assert!(app.metadata_fetches().await <= before + 1);
}

#[tokio::test]
async fn a_known_kid_with_a_signature_by_another_key_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let token = sign(TEAMS_KID, OTHER_KEY_PEM, &valid_claims(&url));
    assert_rejected(&app, Some(&token), &message(&url, "/help"), 401, "bad_signature").await;
}

#[tokio::test]
async fn a_key_not_endorsed_for_msteams_is_refused_with_403() {
    let app = spawn_app().await;
    let url = app.service_url();
    let token = sign(WEBCHAT_KID, OTHER_KEY_PEM, &valid_claims(&url));
    assert_rejected(&app, Some(&token), &message(&url, "/help"), 403, "channel_not_endorsed").await;
}

#[tokio::test]
async fn an_activity_from_another_channel_is_refused_with_403() {
    let app = spawn_app().await;
    let url = app.service_url();
    let mut body = message(&url, "/help");
    body["channelId"] = json!("webchat");
    assert_rejected(&app, Some(&valid_token(&url)), &body, 403, "channel_not_supported").await;
}

#[tokio::test]
async fn a_serviceurl_claim_that_differs_from_the_activity_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let token = valid_token("https://smba.trafficmanager.net/emea/");
    assert_rejected(&app, Some(&token), &message(&url, "/help"), 401, "service_url_mismatch").await;
}

#[tokio::test]
async fn a_token_without_a_serviceurl_claim_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let mut claims = valid_claims(&url);
    claims.as_object_mut().unwrap().remove("serviceurl");
    assert_rejected(&app, Some(&sign(TEAMS_KID, TEAMS_KEY_PEM, &claims)), &message(&url, "/help"), 401, "service_url_missing").await;
}

#[tokio::test]
async fn a_tampered_payload_is_rejected() {
    let app = spawn_app().await;
    let url = app.service_url();
    let token = valid_token(&url);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = valid_claims(&url);
    claims["aud"] = json!(APP_ID);
    claims["exp"] = json!(now() + 7200);
    use base64::Engine as _;
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    assert_rejected(&app, Some(&parts.join(".")), &message(&url, "/help"), 401, "bad_signature").await;
}

#[tokio::test]
async fn a_service_url_off_the_allowlist_is_rejected_and_nothing_is_sent_there() {
    let app = spawn_app().await;
    let attacker = wiremock::MockServer::start().await;
    // Same machine, but `localhost` is not on the allowlist (only 127.0.0.1 is).
    let url = attacker.uri().replace("127.0.0.1", "localhost") + "/";
    assert_rejected(&app, Some(&valid_token(&url)), &message(&url, "/help"), 401, "service_url_not_allowed").await;
    assert!(attacker.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn metadata_down_at_start_means_not_ready_until_it_recovers() {
    let app = spawn_app_with(Fakes { metadata_up: false, ..Fakes::default() }, |_| {}).await;
    let url = app.service_url();
    assert_eq!(app.get("/readyz").await.status(), 503);
    let response = app.post_activity(Some(&valid_token(&url)), &message(&url, "/help")).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    app.assert_no_outbound().await;

    mount_metadata(&app.metadata, default_jwks()).await;
    app.wait_ready().await;
    app.mount_reply().await;
    let response = app.post_activity(Some(&valid_token(&url)), &message(&url, "/help")).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_flood_of_random_kids_causes_at_most_one_metadata_refresh() {
    let app = spawn_app().await;
    let url = app.service_url();
    let before = app.metadata_fetches().await;
    let body = message(&url, "/help");
    let requests = (0..100).map(|i| {
        let token = sign(&format!("random-kid-{i}-{}", fastrand::u64(..)), TEAMS_KEY_PEM, &valid_claims(&url));
        let app = &app;
        let body = &body;
        async move { app.post_activity(Some(&token), body).await.status().as_u16() }
    });
    // 100 tokens, 25 in flight at a time (a flood, without opening 100 sockets at once).
    let statuses: Vec<u16> = futures_util::stream::iter(requests).buffer_unordered(25).collect().await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let refreshes = app.metadata_fetches().await - before;
    assert!(refreshes <= 1, "{refreshes} refreshes");
    app.assert_no_outbound().await;
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_by_an_unknown_kid_refresh_and_old_keys_survive_a_failed_refresh() {
    let app = spawn_app_with(Fakes::default(), |c| c.key_refresh.unknown_kid_min_interval = std::time::Duration::ZERO).await;
    app.mount_reply().await;
    let url = app.service_url();
    // Microsoft rotates: the JWKS now also holds a new key.
    app.metadata.reset().await;
    mount_metadata(
        &app.metadata,
        json!({"keys": [jwk(TEAMS_KID, "test-key-1", &["msteams"]), jwk("rotated", "test-key-2", &["msteams"])]}),
    )
    .await;
    let token = sign("rotated", OTHER_KEY_PEM, &valid_claims(&url));
    assert_eq!(app.post_activity(Some(&token), &message(&url, "/help")).await.status(), 200);
    // The metadata endpoint fails: the keys already loaded keep working.
    app.metadata.reset().await;
    let unknown = sign("another-unknown", TEAMS_KEY_PEM, &valid_claims(&url));
    assert_eq!(app.post_activity(Some(&unknown), &message(&url, "/help")).await.status(), 401);
    assert_eq!(app.post_activity(Some(&token), &message(&url, "/help")).await.status(), 200);
    assert_eq!(app.metrics.get("chatwarden_key_refreshes_total", &[("trigger", "unknown_kid"), ("result", "error")]), 1);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let app = spawn_app().await;
    let url = app.service_url();
    let mut body = message(&url, "/help");
    body["text"] = json!("x".repeat(300 * 1024));
    let response = app.post_activity(Some(&valid_token(&url)), &body).await;
    assert_eq!(response.status(), 413);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "payload_too_large");
    app.assert_no_outbound().await;
}

#[tokio::test]
async fn a_large_body_is_answered_413_every_time_and_never_with_a_reset() {
    const SECRET: &str = "alert-secret-for-tests-0123456789";
    let app = spawn_app_with(Fakes::default(), |c| c.alert_secret = Some(secrecy::SecretString::from(SECRET.to_owned()))).await;
    let url = app.service_url();
    let big = vec![b' '; 3 * 1024 * 1024];
    for round in 0..25 {
        // A fresh client per round: each request on a new connection, as an attacker's would be.
        let client = reqwest::Client::new();
        let messages = client
            .post(format!("{}/api/messages", app.address))
            .header("content-type", "application/json")
            .bearer_auth(valid_token(&url))
            .body(big.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: /api/messages answered with a transport error instead of 413: {e}"));
        assert_eq!(messages.status(), 413, "round {round}");
        let alerts = client
            .post(format!("{}/api/alerts", app.address))
            .header("content-type", "application/json")
            .header("x-chatwarden-signature-256", chatwarden::audit::signature::sign(SECRET.as_bytes(), &big))
            .body(big.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: /api/alerts answered with a transport error instead of 413: {e}"));
        assert_eq!(alerts.status(), 413, "round {round}");
    }
    app.assert_no_outbound().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_refused_with_413() {
    let app = spawn_app_with(Fakes::default(), |c| c.max_body_bytes = 2048).await;
    let url = app.service_url();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..10).map(|_| Ok(vec![b' '; 1024])).collect();
    let response = app
        .client
        .post(format!("{}/api/messages", app.address))
        .header("content-type", "application/json")
        .bearer_auth(valid_token(&url))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    app.assert_no_outbound().await;
}

#[tokio::test]
async fn malformed_json_with_a_valid_token_is_refused_with_400() {
    let app = spawn_app().await;
    let url = app.service_url();
    let token = format!("Bearer {}", valid_token(&url));
    for body in [&b"{\"type\": \"message\", "[..], b"[1,2,3]", b"{\"text\": \"no type\"}", b"\xff\xfe"] {
        let response = app.post_raw(&[("content-type", "application/json"), ("authorization", &token)], body.to_vec()).await;
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "bad_json");
    }
    app.assert_no_outbound().await;
}

#[tokio::test]
async fn a_remembered_verification_still_expires_with_its_token() {
    let app = spawn_app().await;
    app.mount_reply().await;
    let url = app.service_url();
    let mut claims = valid_claims(&url);
    // Valid only thanks to the leeway, for about one more second.
    claims["exp"] = json!(now() - CLOCK_SKEW + 1);
    let token = sign(TEAMS_KID, TEAMS_KEY_PEM, &claims);
    assert_eq!(app.post_activity(Some(&token), &message(&url, "/help")).await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let response = app.post_activity(Some(&token), &message(&url, "/help")).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    assert_eq!(app.metrics.get("chatwarden_auth_rejections_total", &[("reason", "expired")]), 1);
}

#[tokio::test]
async fn a_remembered_verification_is_still_bound_to_each_activity() {
    let app = spawn_app().await;
    app.mount_reply().await;
    let url = app.service_url();
    let token = valid_token(&url);
    assert_eq!(app.post_activity(Some(&token), &message(&url, "/help")).await.status(), 200);
    // The same (now remembered) token with an activity pointing elsewhere is still refused.
    let response = app.post_activity(Some(&token), &message("https://smba.trafficmanager.net/emea/", "/help")).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    assert_eq!(app.metrics.get("chatwarden_auth_rejections_total", &[("reason", "service_url_mismatch")]), 1);
}
