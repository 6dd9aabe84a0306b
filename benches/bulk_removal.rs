//! Bulk removal: one `/remove-external` case with 1,000 targets against a fake Graph that
//! enforces Graph's documented Teams limits (30 requests/s per app per tenant, 1/s per chat,
//! 1/s per user; 429 with `Retry-After` when exceeded, checked per item inside `$batch`), with
//! 50 ms of network latency per HTTP request. The case is stored in a SQLite database and every
//! `$batch` answer is recorded there as it comes, before the next request, as `serve` does. Compares chatwarden's executor with the best time
//! the limits allow and with a one-call-at-a-time loop (the published PowerShell sample's
//! approach). `cargo bench --bench bulk_removal`; without `--bench` it runs a 40-target smoke run.
//! `BULK_TARGETS=10000` sets the size (a quarter as many users, so Graph's 1/s per user still
//! binds); `BULK_SKIP_LOOP=1` leaves out the one-call-at-a-time comparison. The case is created
//! and approved by a child process (this benchmark run again), so the process that claims and
//! runs it holds nothing of its creation: its RSS before the run is printed beside its peak RSS
//! after it (the fake Graph in it keeps no requests). The run takes the pending targets from the
//! store a page at a time, as `serve` does.
//! `BULK_KIND=revoke` runs a `/revoke-sessions` case of as many distinct users instead, against
//! Entra ID's documented write quota (a token bucket of 3,000 writes per 150 seconds per app and
//! tenant: 3,000 at once, then 20 a second); the best then is `(n - 3000) / 20` seconds, or one
//! round trip when all fit in the bucket.
//! `BULK_DATABASE=postgres` keeps the case in a fresh PostgreSQL database
//! (`CHATWARDEN_TEST_POSTGRES_URL`) instead: the database's page cache is then in its own process,
//! and the RSS is chatwarden's alone (SQLite's cache, up to 16 MiB per connection, is in ours).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatwarden::cases::{Actor, CaseKind, CaseSource, Decision, NewCase, NewTarget, Policy, now_ms};
use chatwarden::config::RetryPolicy;
use chatwarden::entra::app_token::AppTokenProvider;
use chatwarden::execution::{CaseExecutor, GraphExecutor, RecordedProgress, StoredTargets};
use chatwarden::graph::GraphClient;
use chatwarden::metrics::Metrics;
use chatwarden::store::{Created, Store};
use chatwarden::tokens::{DelegatedTokens, TokenSource};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TENANT: &str = "5f0e9d8c-2222-4b3c-8d7e-6f5a4b3c2d1e";

/// Sliding one-second windows per tenant, chat and user.
#[derive(Default)]
struct Limits {
    windows: HashMap<String, VecDeque<Instant>>,
    throttled: usize,
    removed: usize,
    requests: usize,
    /// Entra ID's write bucket: tokens left, as of when.
    directory: Option<(f64, Instant)>,
}

/// Entra ID's write quota per app and tenant: 3,000 per 150 seconds, as a token bucket.
const DIRECTORY_BURST: f64 = 3_000.0;
const DIRECTORY_PER_SECOND: f64 = 20.0;

impl Limits {
    /// One write against Entra ID's bucket.
    fn admit_directory_write(&mut self, now: Instant) -> bool {
        let (tokens, at) = self.directory.unwrap_or((DIRECTORY_BURST, now));
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * DIRECTORY_PER_SECOND).min(DIRECTORY_BURST);
        let admitted = tokens >= 1.0;
        self.directory = Some((if admitted { tokens - 1.0 } else { tokens }, now));
        if admitted {
            self.removed += 1;
        } else {
            self.throttled += 1;
        }
        admitted
    }

    fn admit(&mut self, keys: &[(String, usize)], now: Instant) -> bool {
        for (key, limit) in keys {
            let window = self.windows.entry(key.clone()).or_default();
            while window.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
                window.pop_front();
            }
            if window.len() >= *limit {
                self.throttled += 1;
                return false;
            }
        }
        for (key, _) in keys {
            self.windows.entry(key.clone()).or_default().push_back(now);
        }
        self.removed += 1;
        // Forget chats and users with nothing in their window, so the fake's own memory does not
        // grow with the number of targets.
        if self.removed % 1_000 == 0 {
            self.windows.retain(|_, window| window.back().is_some_and(|t| now.duration_since(*t) < Duration::from_secs(1)));
        }
        true
    }
}

fn keys_for(url: &str, body: &Value) -> Vec<(String, usize)> {
    let chat = url.split("/chats/").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default().to_owned();
    let user = body["user"]["id"].as_str().unwrap_or_default().to_owned();
    vec![(format!("tenant:{TENANT}"), 30), (format!("chat:{chat}"), 1), (format!("user:{user}"), 1)]
}

/// Graph's answer to one request under the limits: status, JSON body, `Retry-After`.
fn answer(limits: &Mutex<Limits>, path: &str, body: &[u8]) -> (u16, Option<Value>, Option<&'static str>) {
    let now = Instant::now();
    let mut limits = limits.lock().unwrap();
    limits.requests += 1;
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if path.ends_with("$batch") {
        let responses: Vec<Value> = body["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| {
                let url = item["url"].as_str().unwrap();
                let admitted = if url.ends_with("/revokeSignInSessions") {
                    limits.admit_directory_write(now)
                } else {
                    limits.admit(&keys_for(url, &item["body"]), now)
                };
                if admitted {
                    json!({"id": item["id"], "status": 204})
                } else {
                    json!({"id": item["id"], "status": 429, "headers": {"Retry-After": "1"}, "body": {"error": {"code": "TooManyRequests"}}})
                }
            })
            .collect();
        return (200, Some(json!({"responses": responses})), None);
    }
    let admitted =
        if path.ends_with("/revokeSignInSessions") { limits.admit_directory_write(now) } else { limits.admit(&keys_for(path, &body), now) };
    if admitted { (204, None, None) } else { (429, None, Some("1")) }
}

/// The fake Graph: a plain HTTP server that keeps no request (a wiremock mock keeps a copy of
/// every request it matched, which would count in this process's memory as if it were ours).
async fn start_fake_graph(limits: Arc<Mutex<Limits>>, latency: Duration) -> String {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    async fn respond(request: HttpRequest, body: web::Bytes, state: web::Data<(Arc<Mutex<Limits>>, Duration)>) -> HttpResponse {
        let (status, json, retry_after) = answer(&state.0, request.path(), &body);
        tokio::time::sleep(state.1).await;
        let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
        if let Some(seconds) = retry_after {
            response.insert_header(("retry-after", seconds));
        }
        match json {
            Some(json) => response.json(json),
            None => response.finish(),
        }
    }
    let state = web::Data::new((limits, latency));
    let server = HttpServer::new(move || App::new().app_data(state.clone()).default_service(web::post().to(respond)))
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
    let address = server.addrs()[0];
    tokio::spawn(server.run());
    format!("http://{address}")
}

/// Stores and approves the bulk case (a revocation of `targets` users when `revoke`); its id.
async fn approved_case(store: &Store, targets: usize, users: usize, revoke: bool) -> String {
    let requester = Actor { oid: "5a1d2c3b-1111-4a1b-9c2d-3e4f5a6b7c8d".into(), name: "Dana".into(), user_id: "29:dana".into() };
    let approver = Actor { oid: "0b7c4e2a-1111-4a1b-9c2d-3e4f5a6b7c8d".into(), name: "Sam".into(), user_id: "29:sam".into() };
    let users = if revoke { targets } else { users };
    let new = NewCase {
        kind: if revoke { CaseKind::RevokeSessions } else { CaseKind::RemoveExternal },
        source: CaseSource::Command,
        tenant_id: TENANT.into(),
        requester,
        reason: None,
        targets: (0..targets)
            .map(|i| NewTarget {
                thread_id: (!revoke).then(|| format!("19:{i:08x}-chat@unq.gbl.spaces")),
                user_ref: format!("user{}@contoso.com", i % users),
                user_oid: Some(format!("00000000-0000-4000-8000-{:012}", i % users)),
                user_tenant_id: TENANT.into(),
                display_name: None,
            })
            .collect(),
        evidence: vec![],
        no_evidence: true,
        ttl_ms: 3_600_000,
    };
    let Created::New(case) = store.create_case(&new, None, now_ms()).await.unwrap() else { panic!("case not created") };
    let policy = Policy { admins: None, require_second_approver: true, escalation_admins: Default::default() };
    store.decide(&case.id, &approver, Decision::Approve, None, &policy, now_ms()).await.unwrap();
    case.id
}

/// Marks the line the child prints with the case's id.
const CASE_LINE: &str = "bulk case: ";

/// Runs this benchmark again to create and approve the case in `database`; the case's id.
fn approved_case_in_child(database: &str) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env("BULK_CREATE_CASE_IN", database)
        .output()
        .unwrap();
    assert!(output.status.success(), "the child could not create the case: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    stdout.lines().find_map(|line| line.strip_prefix(CASE_LINE)).expect("the child printed the case id").to_owned()
}

const RUNNER: &str = "bench-runner";
const LEASE_MS: i64 = 600_000;

/// A line of /proc/self/status (`VmRSS:` now, `VmHWM:` the peak) in MiB.
fn memory(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned()))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or_else(|| "n/a".to_owned(), |kib| format!("{:.1} MiB", kib / 1024.0))
}

/// A fresh SQLite file, or with `BULK_DATABASE=postgres` a fresh PostgreSQL database.
async fn database_url() -> String {
    if !std::env::var("BULK_DATABASE").is_ok_and(|v| v == "postgres") {
        return format!("sqlite://{}", std::env::temp_dir().join(format!("chatwarden-bulk-{:016x}.db", fastrand::u64(..))).display());
    }
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let base = std::env::var("CHATWARDEN_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("cw_bulk_{:016x}", fastrand::u64(..));
    let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    format!("{}/{name}", &base[..base.rfind('/').unwrap()])
}

/// The table's header, the best the limits allow, and chatwarden's row.
/// `took` against `best`, as "1.02x" (a dash when the best is no time at all: the smoke run).
fn ratio(took: Duration, best: Duration) -> String {
    if best.is_zero() { "-".to_owned() } else { format!("{:.2}x", took.as_secs_f64() / best.as_secs_f64()) }
}

fn print_ours(targets: usize, best: Duration, ours: Duration, requests: usize, throttled: usize) {
    println!("| approach | targets | wall time | vs best | HTTP requests | items throttled (429) |");
    println!("|---|---|---|---|---|---|");
    println!("| best the limits allow | {targets} | {:.1} s | 1.00x | | |", best.as_secs_f64());
    println!(
        "| chatwarden ($batch of 20, Retry-After per item) | {targets} | {:.1} s | {} | {requests} | {throttled} |",
        ours.as_secs_f64(),
        ratio(ours, best)
    );
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let revoke = std::env::var("BULK_KIND").is_ok_and(|v| v == "revoke");
    let size = std::env::var("BULK_TARGETS").ok().and_then(|n| n.parse::<usize>().ok()).filter(|n| *n >= 40);
    let (targets, users, latency) = match (full, size) {
        (true, Some(n)) => (n, n / 4, Duration::from_millis(50)),
        (true, None) => (1_000, 250, Duration::from_millis(50)),
        (false, _) => (40, 10, Duration::ZERO),
    };
    if let Ok(database) = std::env::var("BULK_CREATE_CASE_IN") {
        let store = Store::connect(&database).await.unwrap();
        println!("{CASE_LINE}{}", approved_case(&store, targets, users, revoke).await);
        return;
    }
    let database = database_url().await;
    let case_id = approved_case_in_child(&database);
    let limits = Arc::new(Mutex::new(Limits::default()));
    let graph = start_fake_graph(Arc::clone(&limits), latency).await;
    let token_service = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "approver-token", "expiration": "2099-01-01T00:00:00Z"})))
        .mount(&token_service)
        .await;
    let metrics = Arc::new(Metrics::default());
    let retry = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(30),
        request_timeout: Duration::from_secs(10),
    };
    let tokens = Arc::new(
        DelegatedTokens::new(
            TokenSource::TokenService { base: url::Url::parse(&token_service.uri()).unwrap(), connection: "graph".into() },
            Arc::new(AppTokenProvider::anonymous()),
            retry,
            metrics.clone(),
        )
        .unwrap(),
    );
    let client = Arc::new(GraphClient::new(url::Url::parse(&graph).unwrap(), retry, metrics.clone()).unwrap());
    let executor = GraphExecutor::new(client.clone(), tokens);
    let store = Store::connect(&database).await.unwrap();
    let bulk = store.claim_for_execution(&case_id, RUNNER, LEASE_MS, now_ms()).await.unwrap().expect("claimed").case;
    let (progress, _changes) = RecordedProgress::new(store.clone(), &bulk.id, RUNNER, LEASE_MS);

    // The n-th request in a 1/s (or 30/s) stream can start at (n - 1) / rate seconds; the n-th
    // write to Entra ID once the bucket has refilled n - 3,000 of them.
    let rss_before = memory("VmRSS:");
    let best = if revoke {
        Duration::from_secs_f64(((targets as f64 - DIRECTORY_BURST) / DIRECTORY_PER_SECOND).max(0.0)).max(latency)
    } else {
        Duration::from_secs_f64(((targets - 1) as f64 / 30.0).max((targets / users - 1) as f64))
    };
    let started = Instant::now();
    let results = executor.execute(&bulk, &StoredTargets::new(store.clone(), &bulk.id), &progress).await;
    let ours = started.elapsed();
    assert!(results.is_empty(), "every answer recorded as it came, so the executor kept none");
    let peak = memory("VmHWM:");
    let done = store.case_summary(&bulk.id).await.unwrap().unwrap().tally.done;
    assert_eq!(done, targets, "every target done and recorded");
    let throttled_ours = limits.lock().unwrap().throttled;
    let requests_ours = limits.lock().unwrap().requests;
    println!("RSS before the run: {rss_before}; peak RSS after chatwarden's run: {peak}");
    if std::env::var("BULK_SKIP_LOOP").is_ok_and(|v| v == "1") {
        print_ours(targets, best, ours, requests_ours, throttled_ours);
        return;
    }

    // The one-call-at-a-time loop, against a fresh fake (same limits, same latency).
    *limits.lock().unwrap() = Limits::default();
    let token = SecretString::from("approver-token".to_owned());
    let started = Instant::now();
    let every = store.case(&bulk.id).await.unwrap().unwrap().targets;
    for target in &every {
        let oid = target.user_oid.as_deref().unwrap();
        let status = match &target.thread_id {
            Some(thread) => client.remove_all_access(&token, thread, oid, TENANT).await.unwrap(),
            None => client.revoke_sessions(&token, oid).await.unwrap(),
        };
        assert_eq!(status.status, 204);
    }
    let one_by_one = started.elapsed();
    let throttled_loop = limits.lock().unwrap().throttled;

    print_ours(targets, best, ours, requests_ours, throttled_ours);
    println!(
        "| one call at a time (PowerShell sample loop) | {targets} | {:.1} s | {} | {targets}+ | {throttled_loop} |",
        one_by_one.as_secs_f64(),
        ratio(one_by_one, best)
    );
}
