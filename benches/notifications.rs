//! Change notifications end to end, in this process: the real server, validation tokens signed
//! by the test key, members encrypted to a certificate generated here, a fake Graph answering
//! the chat's members and a fake Connector that notes when each card arrives.
//!
//! - Detection latency: 1,000 notifications of outsiders joining 1,000 chats, sent at 100/s;
//!   for each, the time from sending the notification to the approval card reaching the
//!   Connector (p50, p99, max).
//! - Intake: 20,000 notifications in batches of 100 (as Graph batches them), membership changes
//!   of our own users in our own chats, each decrypted, validated, claimed once and evaluated
//!   (the members read from the fake Graph included); sustained notifications/s until the last is
//!   processed.
//!
//! `taskset -c 0 cargo bench --bench notifications` (one core for everything, fakes included);
//! `NOTIFY_DATABASE=postgres` runs on PostgreSQL (`CHATWARDEN_TEST_POSTGRES_URL`), and with
//! `NOTIFY_REPLICAS=2` two servers share that database: every latency notification is delivered
//! to both (one card each is asserted), intake batches alternate between them. Without
//! `--bench`: 50 and 500.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code, missing_docs)]

#[path = "../tests/api/helpers.rs"]
mod helpers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatwarden::notifications::{CertificateSet, GRAPH_CHANGE_TRACKING_APP_ID, NotificationCertificate, NotificationSettings, encrypt};
use helpers::*;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, ResponseTemplate};

const CLIENT_STATE: &str = "client-state-secret-0123456789";
const KID: &str = "identity-platform-key";
const EVIL_TENANT: &str = "1d36ca61-5509-4ac7-983d-91dfdeb5f492";

/// Notes when the card of each chat arrives, and counts a chat's card arriving twice.
struct CardClock(Arc<Mutex<HashMap<String, Instant>>>, Arc<std::sync::atomic::AtomicUsize>);

impl wiremock::Respond for CardClock {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let now = Instant::now();
        let text = String::from_utf8_lossy(&request.body);
        if let Some(start) = text.find("in chat 19:bench-") {
            let chat: String = text[start + 8..].chars().take_while(|c| *c != '"' && *c != ' ').collect();
            if self.0.lock().unwrap().insert(chat, now).is_some() {
                self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        ResponseTemplate::new(201).set_body_json(json!({"id": "19:c0ffee@thread.tacv2;messageid=777", "activityId": "777"}))
    }
}

/// The members of `19:bench-*` chats: our John, and Mallory when the chat's name says so.
struct Members;

impl wiremock::Respond for Members {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = request.url.path();
        let mut members = vec![
            json!({"userId": "a1b2c3d4-0000-4000-8000-00000000000a", "tenantId": TENANT_ID, "displayName": "John Doe", "email": "john.doe@contoso.com"}),
        ];
        if path.contains("evil") {
            members.push(json!({"userId": "e5f6a7b8-0000-4000-8000-0000000000ee", "tenantId": EVIL_TENANT, "displayName": "Mallory", "email": "mallory@evil.example"}));
        } else {
            members.push(json!({"userId": "b1b2c3d4-0000-4000-8000-00000000000b", "tenantId": TENANT_ID, "displayName": "Jane Roe", "email": "jane.roe@contoso.com"}));
        }
        ResponseTemplate::new(200).set_body_json(json!({"value": members}))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1).min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (latency_n, intake_n) = if full { (1_000, 20_000) } else { (50, 500) };
    let postgres = std::env::var("NOTIFY_DATABASE").is_ok_and(|v| v == "postgres");
    let replicas: usize = std::env::var("NOTIFY_REPLICAS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    assert!(replicas == 1 || (replicas == 2 && postgres), "two replicas share one PostgreSQL database (NOTIFY_DATABASE=postgres)");
    let database_url = if postgres { Some(postgres_url().await) } else { None };
    let (cert, _, _) = NotificationCertificate::generate("chatwarden bench").unwrap();
    let (der, cert_id) = (cert.der().to_vec(), cert.id().to_owned());
    let certificates = CertificateSet::new(cert, None);
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let twice = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut apps = Vec::new();
    for _ in 0..replicas {
        let fakes = Fakes { database_url: database_url.clone(), ..Fakes::default() };
        let certificates = certificates.clone();
        let app = spawn_app_with(fakes, |c| {
            c.notifications = Some(NotificationSettings {
                url: url::Url::parse("https://chatwarden.example.com/api/notifications").unwrap(),
                certificates,
                client_state: secrecy::SecretString::from(CLIENT_STATE.to_owned()),
                model: None,
            });
            c.case_ttl = Duration::from_secs(3600);
        })
        .await;
        Mock::given(method("GET"))
            .and(path("/common/v2.0/.well-known/openid-configuration"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"jwks_uri": format!("{}/common/discovery/v2.0/keys", app.login.uri())})),
            )
            .mount(&app.login)
            .await;
        Mock::given(method("GET"))
            .and(path("/common/discovery/v2.0/keys"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [jwk(KID, "test-key-1", &[])]})))
            .mount(&app.login)
            .await;
        let clock = CardClock(Arc::clone(&arrivals), Arc::clone(&twice));
        Mock::given(method("POST")).and(path("/v3/conversations")).respond_with(clock).mount(&app.connector).await;
        Mock::given(method("GET")).and(path_regex("^/v1.0/chats/.+/members$")).respond_with(Members).mount(&app.graph).await;
        let url = app.service_url();
        let mut hello = message(&url, "/history");
        hello["id"] = json!("hello-1");
        app.post_activity(Some(&valid_token(&url)), &hello).await;
        apps.push(app);
    }
    let count =
        |result: &'static str| apps.iter().map(|a| a.metrics.get("chatwarden_notifications_total", &[("result", result)])).sum::<u64>();

    let token = sign(
        KID,
        TEAMS_KEY_PEM,
        &json!({"aud": APP_ID, "iss": format!("https://sts.windows.net/{TENANT_ID}/"), "appid": GRAPH_CHANGE_TRACKING_APP_ID,
                "tid": TENANT_ID, "exp": now() + 3600, "nbf": now() - 60}),
    );
    let notification = |chat: &str, member: Value| {
        let content = encrypt(&der, &cert_id, member.to_string().as_bytes()).unwrap();
        json!({"subscriptionId": "sub-1", "changeType": "created", "clientState": CLIENT_STATE, "tenantId": TENANT_ID,
               "resource": format!("chats('{chat}')/members('m-{}')", fastrand::u64(..)), "encryptedContent": content})
    };
    let endpoints: Vec<String> = apps.iter().map(|a| format!("{}/api/notifications", a.address)).collect();
    let client = reqwest::Client::new();
    // Like Graph: a 503 (the queue is full) is delivered again a little later.
    let post = |replica: usize, items: Vec<Value>| {
        let body = json!({"value": items, "validationTokens": [token.clone()]});
        let (client, endpoint) = (&client, &endpoints[replica]);
        async move {
            loop {
                let status = client.post(endpoint).json(&body).send().await.unwrap().status().as_u16();
                if status != 503 {
                    return status;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // Warm the key cache, the app tokens, the approvers' accounts and the connection pools with
    // one case of its own.
    let mallory = json!({"userId": "e5f6a7b8-0000-4000-8000-0000000000ee", "tenantId": EVIL_TENANT, "displayName": "Mallory", "email": "mallory@evil.example"});
    for replica in 0..replicas {
        assert_eq!(post(replica, vec![notification(&format!("19:warm-evil-{replica}@thread.v2"), mallory.clone())]).await, 202);
        wait_until("the warm-up case", async || count("opened") == replica as u64 + 1).await;
    }

    // Latency: outsiders joining, 100 a second; with two replicas each delivery reaches both (as
    // when Graph delivers again to another one), and still one card each.
    let bodies: Vec<(String, Value)> = (0..latency_n)
        .map(|i| {
            let chat = format!("19:bench-evil-{i:05}@thread.v2");
            (chat.clone(), notification(&chat, mallory.clone()))
        })
        .collect();
    let mut sent = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for (chat, body) in bodies {
        tick.tick().await;
        sent.insert(chat, Instant::now());
        if replicas == 2 {
            let (a, b) = tokio::join!(post(0, vec![body.clone()]), post(1, vec![body]));
            assert_eq!((a, b), (202, 202));
        } else {
            assert_eq!(post(0, vec![body]).await, 202);
        }
    }
    wait_until("every card", async || arrivals.lock().unwrap().len() >= latency_n).await;
    wait_until("every delivery evaluated", async || count("opened") + count("evaluated") >= (latency_n * replicas + replicas) as u64).await;
    let arrived = arrivals.lock().unwrap().clone();
    let mut latencies: Vec<Duration> = sent.iter().map(|(chat, at)| arrived[chat].duration_since(*at)).collect();
    latencies.sort();
    let backend = match (postgres, replicas) {
        (false, _) => "SQLite".to_owned(),
        (true, 1) => "PostgreSQL".to_owned(),
        (true, n) => format!("PostgreSQL, {n} replicas"),
    };
    let twice = twice.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(twice, 0, "a chat's card was posted twice");
    println!("| detection latency ({backend}) | notifications | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| notification sent -> card at the Connector, 100/s | {latency_n} | {} | {} | {} | {} |",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );
    println!("cards: {} for {latency_n} chats ({} deliveries), posted twice: {twice}", arrived.len(), latency_n * replicas);

    // Intake: benign membership changes, batches of 100, 8 batches in flight.
    let jane = json!({"userId": "b1b2c3d4-0000-4000-8000-00000000000b", "tenantId": TENANT_ID, "displayName": "Jane Roe", "email": "jane.roe@contoso.com"});
    let batches: Vec<Vec<Value>> = (0..intake_n)
        .map(|i| notification(&format!("19:bench-ours-{i:06}@thread.v2"), jane.clone()))
        .collect::<Vec<_>>()
        .chunks(100)
        .map(<[Value]>::to_vec)
        .collect();
    let evaluated = || count("evaluated");
    let before = evaluated();
    let started = Instant::now();
    use futures_util::StreamExt as _;
    let statuses: Vec<u16> = futures_util::stream::iter(batches.into_iter().enumerate())
        .map(|(i, batch)| post(i % replicas, batch))
        .buffer_unordered(8)
        .collect()
        .await;
    let accepted = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 202), "{:?}", statuses.iter().filter(|s| **s != 202).collect::<Vec<_>>());
    for _ in 0..60_000 {
        if evaluated() - before >= intake_n as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let processed = started.elapsed();
    assert_eq!(evaluated() - before, intake_n as u64, "every notification was evaluated");
    println!();
    println!("| intake ({backend}) | notifications | all answered 202 | all processed | notifications/s |");
    println!("|---|---|---|---|---|");
    println!(
        "| decrypt + validate + members read + rules (no case), batches of 100 | {intake_n} | {:.2} s | {:.2} s | {:.0} |",
        accepted.as_secs_f64(),
        processed.as_secs_f64(),
        intake_n as f64 / processed.as_secs_f64()
    );
}
