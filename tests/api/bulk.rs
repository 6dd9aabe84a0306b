//! A bulk run as people in the channel see it: its card shows progress while Graph works
//! through the targets (done, skipped, failed, waiting on `Retry-After`), updated at a bounded
//! rate, and ends with the final card.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use chatwarden::cases::{CardRef, CaseKind, CaseState, TargetStatus, now_ms};
use chatwarden::store::Store;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::helpers::*;

const CARD_ACTIVITY: &str = "bulk-card-1";
const EVERY: Duration = Duration::from_millis(400);

/// Graph's `$batch`: 204 for every item; users whose number ends in 3 are throttled once with
/// `Retry-After: 1`, and user-7 is not there (404).
#[derive(Default)]
struct ThrottlingBatch {
    throttled: Mutex<std::collections::HashSet<String>>,
}

impl wiremock::Respond for ThrottlingBatch {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let mut throttled = self.throttled.lock().unwrap();
        let responses: Vec<Value> = body["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                let user = item["body"]["user"]["id"].as_str().unwrap().to_owned();
                if user == "user-7" {
                    json!({"id": item["id"], "status": 404, "body": {"error": {"code": "NotFound", "message": "gone"}}})
                } else if user.ends_with('3') && throttled.insert(user) {
                    json!({"id": item["id"], "status": 429, "headers": {"Retry-After": "1"}, "body": {"error": {"code": "TooManyRequests"}}})
                } else {
                    json!({"id": item["id"], "status": 204})
                }
            })
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({"responses": responses}))
    }
}

/// The Connector: keeps every card update with the time it arrived.
#[derive(Default, Clone)]
struct CardUpdates {
    seen: std::sync::Arc<Mutex<Vec<(Instant, String)>>>,
}

impl wiremock::Respond for CardUpdates {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.seen.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&request.body).into_owned()));
        ResponseTemplate::new(200).set_body_json(json!({"id": CARD_ACTIVITY}))
    }
}

/// "**Progress:** 40 of 100 targets: ..." -> 40.
fn progress_count(card: &str) -> Option<usize> {
    let rest = card.split("**Progress:** ").nth(1)?;
    rest.split(' ').next()?.replace(',', "").parse().ok()
}

#[tokio::test]
async fn a_bulk_case_card_shows_progress_at_a_bounded_rate_and_ends_with_the_outcome() {
    let database_url = sqlite_url();
    let store = Store::connect(&database_url).await.unwrap();
    let case = approved_case(&store, CaseKind::RemoveExternal, bulk_targets(100)).await;
    let fakes = Fakes { real_graph: true, database_url: Some(database_url.clone()), ..Fakes::default() };
    let started = Instant::now();
    let app = spawn_app_with(fakes, |config| {
        config.execution.progress_interval = EVERY;
        // The case is claimed once its card is known (below), not before.
        config.execution.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let updates = CardUpdates::default();
    Mock::given(method("PUT"))
        .and(path(format!("/v3/conversations/{}/activities/{CARD_ACTIVITY}", encode(CONVERSATION_ID))))
        .respond_with(updates.clone())
        .mount(&app.connector)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/v3/conversations/[^/]+/activities$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "outcome-1"})))
        .mount(&app.connector)
        .await;
    Mock::given(method("POST")).and(path("/v1.0/$batch")).respond_with(ThrottlingBatch::default()).mount(&app.graph).await;
    let card = CardRef { service_url: app.service_url(), conversation_id: CONVERSATION_ID.into(), activity_id: CARD_ACTIVITY.into() };
    store.set_card(&case.id, &card, now_ms()).await.unwrap();

    wait_until("the bulk case to finish", async || {
        store.case(&case.id).await.unwrap().is_some_and(|c| matches!(c.state, CaseState::Done | CaseState::Failed))
    })
    .await;
    let finished = store.case(&case.id).await.unwrap().unwrap();
    assert_eq!(finished.state, CaseState::Done);
    let count = |status: TargetStatus| finished.targets.iter().filter(|t| t.status == status).count();
    assert_eq!((count(TargetStatus::Done), count(TargetStatus::Skipped)), (99, 1));
    let elapsed = started.elapsed();

    wait_until("the final card", async || updates.seen.lock().unwrap().last().is_some_and(|(_, body)| body.contains("Done: "))).await;
    let seen = updates.seen.lock().unwrap().clone();
    let progress: Vec<&(Instant, String)> = seen.iter().filter(|(_, body)| body.contains("**Progress:**")).collect();
    assert!(progress.len() >= 2, "a run of several seconds shows progress more than once: {}", progress.len());
    assert!(seen.first().unwrap().1.contains("In progress: "), "the card says it runs before any progress");
    assert!(seen.last().unwrap().1.contains("Done: ") && !seen.last().unwrap().1.contains("**Progress:**"), "the outcome is last");
    assert_eq!(seen.iter().filter(|(_, body)| body.contains("Done: ")).count(), 1, "no progress update after the outcome");

    // Partial counts that only grow, with what waits on Retry-After while it waits.
    let counts: Vec<usize> = progress.iter().map(|(_, body)| progress_count(body).unwrap()).collect();
    assert!(counts.iter().any(|n| (1..100).contains(n)), "{counts:?}");
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert!(progress.iter().any(|(_, body)| body.contains("waiting on Graph's Retry-After")), "throttled targets are shown waiting");
    assert!(progress.iter().any(|(_, body)| body.contains("1 skipped")), "the 404 shows as skipped");

    // Bounded rate: consecutive progress updates at least the interval apart.
    for pair in progress.windows(2) {
        let gap = pair[1].0.duration_since(pair[0].0);
        assert!(gap + Duration::from_millis(20) >= EVERY, "progress updates {gap:?} apart");
    }
    assert!(progress.len() as u128 <= elapsed.as_millis() / EVERY.as_millis() + 1, "{} updates in {elapsed:?}", progress.len());
    store.close().await;
}
