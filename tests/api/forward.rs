//! Forwarding the history to a SIEM: every event arrives, in order, once per idempotency key,
//! signed, through a receiver that fails, times out and throttles first, and across a
//! `kill -9` of the real binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chatwarden::audit::signature;
use chatwarden::cases::{Actor, now_ms};
use chatwarden::config::ForwardTarget;
use chatwarden::history::HistoryEvent;
use chatwarden::store::Store;
use secrecy::SecretString;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::*;

const SECRET: &str = "forward-secret-0123456789";

/// A receiver whose first answers are a 500, a reply slower than the client's timeout and a
/// 429 with `Retry-After`; every later request is accepted.
struct FlakyReceiver {
    seen: Arc<AtomicUsize>,
}

impl Respond for FlakyReceiver {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        match self.seen.fetch_add(1, Ordering::SeqCst) {
            0 => ResponseTemplate::new(500),
            1 => ResponseTemplate::new(200).set_delay(Duration::from_secs(3)),
            2 => ResponseTemplate::new(429).insert_header("retry-after", "0"),
            _ => ResponseTemplate::new(202),
        }
    }
}

fn eve() -> Actor {
    Actor { oid: "eve-oid".into(), name: "Eve".into(), user_id: "29:eve".into() }
}

/// The distinct idempotency keys in the order the receiver first saw them, after checking every
/// request's signature, key and body.
fn keys_in_arrival_order(requests: &[Request]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for request in requests {
        let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(signature::verify(SECRET.as_bytes(), &request.body, header("x-chatwarden-signature-256").as_deref()), Ok(()));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        let event: HistoryEvent = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(event.hash, event.expected_hash(), "the forwarded event verifies on its own");
        let key = header("idempotency-key").unwrap();
        assert_eq!(key, event.hash);
        assert_eq!(header("x-chatwarden-event-seq"), Some(event.seq.to_string()));
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

#[tokio::test]
async fn every_event_reaches_a_flaky_receiver_once_in_order_and_signed() {
    let receiver = MockServer::start().await;
    let seen = Arc::new(AtomicUsize::new(0));
    Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/siem"))
        .respond_with(FlakyReceiver { seen: Arc::clone(&seen) })
        .mount(&receiver)
        .await;
    let url = sqlite_url();
    let store = Store::connect(&url).await.unwrap();
    approved_removal(&store, "19:chat@thread.v2", "victim-oid").await;
    for n in 0..3 {
        store.record_event(None, Some(&eve()), "refused", Some(&format!("refusal {n}")), now_ms()).await.unwrap();
    }
    let app = spawn_app_with(Fakes { database_url: Some(url), ..Fakes::default() }, |c| {
        c.history.forward =
            Some(ForwardTarget { url: format!("{}/siem", receiver.uri()).parse().unwrap(), secret: SecretString::from(SECRET) });
        c.history.forward_max_backoff = Duration::from_millis(100);
        c.retry.request_timeout = Duration::from_millis(500);
    })
    .await;
    // The approved case runs while forwarding goes on: its events are forwarded too.
    let store = Store::connect(&app.database_url).await.unwrap();
    wait_until("the receiver to have every event", async || {
        let (head, _) = store.chain_head().await.unwrap();
        head >= 8 && store.forward_cursor().await.unwrap() == head
    })
    .await;
    let chain: Vec<String> = store.history_after(0, 1000).await.unwrap().into_iter().map(|e| e.hash).collect();
    let requests = receiver.received_requests().await.unwrap();
    assert_eq!(keys_in_arrival_order(&requests), chain, "every event, in chain order");
    // The three failures were retried: the first event was sent four times, every other once.
    assert_eq!(requests.len(), chain.len() + 3, "{} requests for {} events", requests.len(), chain.len());
    assert!(app.metrics.get("chatwarden_forwarded_events_total", &[("result", "refused")]) >= 3);
}

/// The real binary in `serve` mode forwarding to `receiver`; its log goes to `log`.
fn start_forwarding(
    database_url: &str,
    metadata: &MockServer,
    login: &MockServer,
    receiver: &MockServer,
    log: &std::path::Path,
) -> std::process::Child {
    let extra = [("CHATWARDEN_FORWARD_URL", format!("{}/siem", receiver.uri())), ("CHATWARDEN_FORWARD_SECRET", SECRET.to_owned())];
    serve_binary(database_url, metadata, login, &extra, log)
}

#[tokio::test]
async fn forwarding_resumes_after_kill_9_with_nothing_lost_or_reordered() {
    let (metadata, login, receiver) = (MockServer::start().await, MockServer::start().await, MockServer::start().await);
    mount_metadata(&metadata, default_jwks()).await;
    mount_login(&login).await;
    // The fourth event's first delivery hangs: the process is killed while it waits.
    let seen = Arc::new(AtomicUsize::new(0));
    struct HangOnFourth(Arc<AtomicUsize>);
    impl Respond for HangOnFourth {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            match self.0.fetch_add(1, Ordering::SeqCst) {
                3 => ResponseTemplate::new(200).set_delay(Duration::from_secs(120)),
                _ => ResponseTemplate::new(200),
            }
        }
    }
    Mock::given(wiremock::matchers::method("POST")).respond_with(HangOnFourth(Arc::clone(&seen))).mount(&receiver).await;
    let url = sqlite_url();
    let store = Store::connect(&url).await.unwrap();
    for n in 0..8 {
        store.record_event(None, Some(&eve()), "refused", Some(&format!("refusal {n}")), now_ms()).await.unwrap();
    }
    let logs = std::env::temp_dir().join(format!("chatwarden-forward-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&logs).unwrap();
    let mut first = start_forwarding(&url, &metadata, &login, &receiver, &logs.join("first.log"));
    wait_until("the fourth delivery", async || seen.load(Ordering::SeqCst) >= 4).await;
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(store.forward_cursor().await.unwrap(), 3, "three acknowledged before the kill");

    let mut second = start_forwarding(&url, &metadata, &login, &receiver, &logs.join("second.log"));
    wait_until("every event forwarded", async || store.forward_cursor().await.unwrap() == 8).await;
    second.kill().unwrap();
    second.wait().unwrap();
    let chain: Vec<String> = store.history_after(0, 100).await.unwrap().into_iter().map(|e| e.hash).collect();
    let requests = receiver.received_requests().await.unwrap();
    assert_eq!(keys_in_arrival_order(&requests), chain);
    assert_eq!(requests.len(), 9, "the delivery cut short by the kill is the only one sent twice");
    let _ = std::fs::remove_dir_all(&logs);
}
