//! Micro-benchmarks of the hot paths: token validation with a cached key, activity parse,
//! command parse, card build, audit record parse, the request's log context. `cargo bench --bench micro`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use chatwarden::audit::record::AuditRecord;
use chatwarden::botframework::activity::Activity;
use chatwarden::botframework::auth::ChannelAuthenticator;
use chatwarden::botframework::keys::KeyStore;
use chatwarden::cases::{Actor, Case, CaseKind, CaseSource, CaseState, Target, TargetStatus};
use chatwarden::config::KeyRefreshPolicy;
use chatwarden::metrics::Metrics;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const APP_ID: &str = "9a8b7c6d-3333-4e5f-a6b7-c8d9e0f1a2b3";
const SERVICE_URL: &str = "https://smba.trafficmanager.net/emea/";

fn activity_json() -> String {
    json!({
        "type": "message", "id": "1719900000123", "timestamp": "2026-05-04T09:12:33.120Z", "serviceUrl": SERVICE_URL, "channelId": "msteams",
        "from": {"id": "29:1AbCdEfGh-admin", "name": "Dana Admin", "aadObjectId": "0b7c4e2a-1111-4a1b-9c2d-3e4f5a6b7c8d"},
        "conversation": {"isGroup": true, "conversationType": "channel", "tenantId": "5f0e9d8c-2222-4b3c-8d7e-6f5a4b3c2d1e", "id": "19:c0ffee@thread.tacv2;messageid=1719900000123"},
        "recipient": {"id": "28:9a8b7c6d-3333-4e5f-a6b7-c8d9e0f1a2b3", "name": "chatwarden"},
        "textFormat": "plain", "text": "<at>chatwarden</at> /remove-chat 19:abc123@thread.v2 alice@contoso.com phishing link",
        "entities": [{"type": "mention", "text": "<at>chatwarden</at>", "mentioned": {"id": "28:9a8b7c6d-3333-4e5f-a6b7-c8d9e0f1a2b3", "name": "chatwarden"}},
                     {"type": "clientInfo", "locale": "en-GB", "country": "GB", "platform": "Web", "timezone": "Europe/Berlin"}],
        "channelData": {"teamsChannelId": "19:c0ffee@thread.tacv2", "teamsTeamId": "19:team@thread.tacv2", "channel": {"id": "19:c0ffee@thread.tacv2"},
                        "team": {"id": "19:team@thread.tacv2"}, "tenant": {"id": "5f0e9d8c-2222-4b3c-8d7e-6f5a4b3c2d1e"}}
    })
    .to_string()
}

fn token() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims =
        json!({"iss": "https://api.botframework.com", "aud": APP_ID, "exp": now + 7200, "nbf": now - 10, "serviceurl": SERVICE_URL});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("bench-key".into());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("../tests/fixtures/test-key-1.pem")).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn token_validation(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (authenticator, _server) = runtime.block_on(async {
        let server = MockServer::start().await;
        let keys: serde_json::Value = serde_json::from_str(include_str!("../tests/fixtures/test-keys-public.json")).unwrap();
        Mock::given(method("GET"))
            .and(path("/metadata"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jwks_uri": format!("{}/keys", server.uri())})))
            .mount(&server)
            .await;
        let jwk = json!({"kty": "RSA", "kid": "bench-key", "n": keys["test-key-1"]["n"], "e": "AQAB", "endorsements": ["msteams"]});
        Mock::given(method("GET"))
            .and(path("/keys"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [jwk]})))
            .mount(&server)
            .await;
        let url = url::Url::parse(&format!("{}/metadata", server.uri())).unwrap();
        let store = Arc::new(KeyStore::new(url, KeyRefreshPolicy::default(), Arc::new(Metrics::default())).unwrap());
        store.refresh().await.unwrap();
        (ChannelAuthenticator::new(APP_ID, store), server)
    });
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", token())).unwrap());
    let activity: Activity = serde_json::from_str(&activity_json()).unwrap();
    c.bench_function("token validation (cached key) + bind to activity", |b| {
        b.iter(|| {
            let verified = runtime.block_on(authenticator.verify(black_box(&headers))).unwrap();
            verified.bind(black_box(&activity)).unwrap();
        })
    });
    // A token never seen before: the signature is verified (RS256 with AWS-LC). A new
    // authenticator per iteration (built outside the measurement) starts with nothing remembered.
    c.bench_function("token validation (new token, RS256 verify) + bind", |b| {
        b.iter_batched_ref(
            || ChannelAuthenticator::new(APP_ID, Arc::clone(authenticator.keys())),
            |fresh| {
                let verified = runtime.block_on(fresh.verify(black_box(&headers))).unwrap();
                verified.bind(black_box(&activity)).unwrap();
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("token precheck (before any key)", |b| {
        let header = format!("Bearer {}", token());
        b.iter(|| chatwarden::botframework::auth::precheck(black_box(&header)).unwrap())
    });
}

fn parsing(c: &mut Criterion) {
    let activity = activity_json();
    c.bench_function("activity parse + mention strip", |b| {
        b.iter(|| {
            let a: Activity = serde_json::from_str(black_box(&activity)).unwrap();
            black_box(a.text_without_bot_mention());
        })
    });
    c.bench_function("command parse (/remove-chat)", |b| {
        b.iter(|| chatwarden::commands::parse(black_box("/remove-chat 19:abc123@thread.v2 alice@contoso.com phishing link")).unwrap())
    });
    let record = chatwarden::standins::seed_records()[0].to_string();
    let record = record.as_str();
    c.bench_function("audit record parse + detection", |b| {
        let rules = chatwarden::audit::detection::DetectionRules::default();
        b.iter(|| {
            let record = AuditRecord::from_json(black_box(record)).unwrap();
            black_box(rules.evaluate(&record));
        })
    });
}

fn cards(c: &mut Criterion) {
    let actor = Actor { oid: "0b7c4e2a-1111-4a1b-9c2d-3e4f5a6b7c8d".into(), name: "Dana Admin".into(), user_id: "29:x".into() };
    let case = Case {
        id: "CW-7K3P9".into(),
        kind: CaseKind::RemoveChat,
        state: CaseState::Proposed,
        source: CaseSource::Alert,
        tenant_id: "t".into(),
        requester: actor,
        reason: Some(
            "MemberAdded at 2026-11-20 09:12:03 UTC by it-support@contoso-helpdesk.example: chat with contoso-helpdesk.example".into(),
        ),
        no_evidence: false,
        approver: None,
        decided_at: None,
        decision_reason: None,
        escalated_at: None,
        card: None,
        created_at: 1_779_786_000_000,
        updated_at: 1_779_786_000_000,
        expires_at: 1_779_872_400_000,
        version: 0,
        targets: vec![Target {
            position: 0,
            thread_id: Some("19:5b1f0c2a-7d9e-4c3b-8a6f-0e1d2c3b4a59_0000@unq.gbl.spaces".into()),
            user_ref: "alexw@example.com".into(),
            user_oid: Some("00000000-0000-0000-0000-000000000020".into()),
            user_tenant_id: "t".into(),
            display_name: Some("Alex Wilber".into()),
            status: TargetStatus::Pending,
            graph_status: None,
            detail: None,
            graph_code: None,
            receipt: None,
        }],
        evidence: vec!["5d7c3b1e-0a4f-4e61-9b2d-7f8e9a0b1c2d".into()],
    };
    c.bench_function("approval card build + serialize", |b| {
        b.iter(|| serde_json::to_vec(&chatwarden::cards::approval_card(black_box(&case), true)).unwrap())
    });
}

fn notifications(c: &mut Criterion) {
    use chatwarden::notifications::{CertificateSet, NotificationCertificate, decrypt, encrypt};
    let (cert, _, _) = NotificationCertificate::generate("bench").unwrap();
    let content = encrypt(cert.der(), cert.id(), br#"{"userId":"u","tenantId":"t","displayName":"Mallory"}"#).unwrap();
    let set = CertificateSet::new(cert, None);
    c.bench_function("notification: dataSignature + RSA-OAEP + AES-CBC decrypt (RSA 2048)", |b| {
        b.iter(|| decrypt(&set, std::hint::black_box(&content)).unwrap())
    });
}

/// What a request costs the log at the default level when nothing inside it logs: a tracing span
/// with the four request fields under the stock JSON log (how requests were logged until
/// 2026-12-02), against the task-local `RequestContext` that replaced it. Both draw the v4
/// request id.
fn request_context(c: &mut Criterion) {
    let peer: std::net::SocketAddr = ([127, 0, 0, 1], 50_412).into();
    let method = actix_web::http::Method::POST;
    let uri = actix_web::http::Uri::from_static("/api/messages");
    let subscriber = || {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::sink)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish()
    };
    tracing::subscriber::with_default(subscriber(), || {
        c.bench_function("request log context at info: a tracing span (JSON log)", |b| {
            b.iter(|| {
                let span = tracing::info_span!(
                    "HTTP request",
                    http.method = %method,
                    url.path = uri.path(),
                    client.address = tracing::field::display(peer),
                    request_id = tracing::field::display(uuid::Uuid::new_v4()),
                );
                let entered = span.enter();
                black_box(&entered);
            })
        });
    });
    tracing::subscriber::with_default(subscriber(), || {
        c.bench_function("request log context at info: RequestContext (task-local)", |b| {
            b.iter(|| {
                let context = chatwarden::telemetry::RequestContext::new(method.clone(), uri.clone(), Some(peer));
                context.sync_scope(|| black_box(1))
            })
        });
    });
}

criterion_group!(benches, token_validation, parsing, cards, notifications, request_context);
criterion_main!(benches);
