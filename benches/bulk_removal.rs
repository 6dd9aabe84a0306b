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
//! The case runs under the real `CaseRunner` (claim, lease, outcomes recorded as they come, the
//! card's progress at most every 5 s): the benchmark counts the card's progress updates and the
//! shortest gap between two of them.
//! `BULK_RESTART=1` cuts the run in the middle: a first runner (a child process, this benchmark
//! run again) is killed with SIGKILL while Graph holds its request halfway through the run, after
//! Graph took that request's writes and before it answered; the runner here resumes once the dead
//! runner's lease lapses. The fake Graph counts the writes it took per target: none may be
//! missing, and only the cut-short request's may be there twice. The smoke run does both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chatwarden::cases::{Actor, CaseKind, CaseSource, Decision, NewCase, NewTarget, Policy, now_ms};
use chatwarden::cases::{Case, CaseState, CaseSummary};
use chatwarden::config::RetryPolicy;
use chatwarden::entra::app_token::AppTokenProvider;
use chatwarden::execution::{CaseObserver, CaseRunner, GraphExecutor};
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
    /// Writes taken per target (a chat's removal, or a user's revocation), when counted.
    writes: Option<HashMap<String, u8>>,
    /// Once this many writes were taken, the next request is taken but never answered; who is
    /// told when it came.
    hold: Option<(usize, tokio::sync::oneshot::Sender<()>)>,
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

    /// Counts a write Graph took for `target`, when writes are counted.
    fn took(&mut self, target: &str) {
        if let Some(writes) = &mut self.writes {
            *writes.entry(target.to_owned()).or_default() += 1;
        }
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

/// The target a write is for: the chat of a removal (one per target here), the user of a
/// revocation.
fn target_of(url: &str) -> &str {
    url.split("/chats/").nth(1).or_else(|| url.split("/users/").nth(1)).and_then(|rest| rest.split('/').next()).unwrap_or_default()
}

/// Graph's answer to one request under the limits: status, JSON body, `Retry-After`, and whether
/// this is the request to hold without an answer.
fn answer(limits: &Mutex<Limits>, path: &str, body: &[u8]) -> (u16, Option<Value>, Option<&'static str>, bool) {
    let now = Instant::now();
    let mut limits = limits.lock().unwrap();
    limits.requests += 1;
    // The request to hold is the first after `after` writes that Graph takes a write of.
    let (due, removed_before) = (limits.hold.as_ref().is_some_and(|(after, _)| limits.removed >= *after), limits.removed);
    let hold = |limits: &mut Limits| {
        let held = due && limits.removed > removed_before;
        if held && let Some((_, told)) = limits.hold.take() {
            let _ = told.send(());
        }
        held
    };
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
                    limits.took(target_of(url));
                    json!({"id": item["id"], "status": 204})
                } else {
                    json!({"id": item["id"], "status": 429, "headers": {"Retry-After": "1"}, "body": {"error": {"code": "TooManyRequests"}}})
                }
            })
            .collect();
        return (200, Some(json!({"responses": responses})), None, hold(&mut limits));
    }
    let admitted =
        if path.ends_with("/revokeSignInSessions") { limits.admit_directory_write(now) } else { limits.admit(&keys_for(path, &body), now) };
    if admitted {
        limits.took(target_of(path));
        (204, None, None, hold(&mut limits))
    } else {
        (429, None, Some("1"), false)
    }
}

/// The fake Graph: a plain HTTP server that keeps no request (a wiremock mock keeps a copy of
/// every request it matched, which would count in this process's memory as if it were ours).
async fn start_fake_graph(limits: Arc<Mutex<Limits>>, latency: Duration) -> String {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    async fn respond(request: HttpRequest, body: web::Bytes, state: web::Data<(Arc<Mutex<Limits>>, Duration)>) -> HttpResponse {
        let (status, json, retry_after, hold) = answer(&state.0, request.path(), &body);
        if hold {
            // Taken, never answered: the runner that sent it is killed while it waits.
            std::future::pending::<()>().await;
        }
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
const LEASE: Duration = Duration::from_secs(600);
/// The first runner's lease in a restart: short, so the run resumes soon after it is killed.
const FIRST_LEASE: Duration = Duration::from_secs(3);

/// What the case's card would be told: the runner's start and end, and each progress update
/// (when, and how many targets were recorded by then).
#[derive(Default)]
struct CardLog {
    runs: Mutex<usize>,
    progress: Mutex<Vec<(Instant, usize)>>,
}

#[async_trait]
impl CaseObserver for CardLog {
    async fn case_changed(&self, _case: &Case) {}

    async fn run_changed(&self, _run: &CaseSummary) {
        *self.runs.lock().unwrap() += 1;
    }

    async fn progress(&self, run: &CaseSummary, _waiting: usize) {
        self.progress.lock().unwrap().push((Instant::now(), run.tally.recorded()));
    }
}

/// A fake token service that hands out the approver's delegated token.
async fn token_service() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/usertoken/GetToken"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"token": "approver-token", "expiration": "2099-01-01T00:00:00Z"})))
        .mount(&server)
        .await;
    server
}

/// The Graph client and the runner `owner` that executes cases in `store` against `graph`,
/// with the approver's token from `tokens`.
fn case_runner(
    store: Store,
    graph: &str,
    tokens: &str,
    owner: &str,
    lease: Duration,
    progress_every: Duration,
    observer: Arc<dyn CaseObserver>,
) -> (Arc<GraphClient>, CaseRunner) {
    let metrics = Arc::new(Metrics::default());
    let retry = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(30),
        request_timeout: Duration::from_secs(10),
    };
    let tokens = Arc::new(
        DelegatedTokens::new(
            TokenSource::TokenService { base: url::Url::parse(tokens).unwrap(), connection: "graph".into() },
            Arc::new(AppTokenProvider::anonymous()),
            retry,
            metrics.clone(),
        )
        .unwrap(),
    );
    let client = Arc::new(GraphClient::new(url::Url::parse(graph).unwrap(), retry, metrics.clone()).unwrap());
    let executor = Arc::new(GraphExecutor::new(client.clone(), tokens));
    (client, CaseRunner::new(store, executor, observer, owner.to_owned(), lease, progress_every, metrics))
}

/// The first runner of a restart, in a child process: runs the case until it is killed.
async fn first_runner(database: &str) {
    let case_id = std::env::var("BULK_CASE").unwrap();
    let graph = std::env::var("BULK_GRAPH_URL").unwrap();
    let tokens = token_service().await;
    let store = Store::connect(database).await.unwrap();
    let (_, runner) =
        case_runner(store, &graph, &tokens.uri(), "bench-first-runner", FIRST_LEASE, Duration::from_secs(5), Arc::new(CardLog::default()));
    runner.run(&case_id).await.unwrap();
}

/// Starts the first runner of a restart on `case_id` and kills it (SIGKILL) once Graph holds the
/// request it will never answer; the time it ran.
async fn run_and_kill_first_runner(database: &str, case_id: &str, graph: &str, held: tokio::sync::oneshot::Receiver<()>) -> Duration {
    let started = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(std::env::args().skip(1))
        .env("BULK_RUN_CASE_IN", database)
        .env("BULK_CASE", case_id)
        .env("BULK_GRAPH_URL", graph)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(900), held).await.expect("the first runner reached the held request").unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    started.elapsed()
}

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

/// How a restart went: the writes Graph took per target.
fn print_restart(targets: usize, held_at: usize, first: Duration, resumed: Duration, writes: &HashMap<String, u8>) {
    let never = targets - writes.len();
    let once = writes.values().filter(|n| **n == 1).count();
    let twice = writes.values().filter(|n| **n == 2).count();
    let more = writes.values().filter(|n| **n > 2).count();
    println!("| restart | targets | first runner killed at | resumed and done after | written once | twice | more | never |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| SIGKILL while Graph held request {held_at}, halfway | {targets} | {:.1} s | {:.1} s | {once} | {twice} | {more} | {never} |",
        first.as_secs_f64(),
        resumed.as_secs_f64()
    );
    assert_eq!(never, 0, "a target was lost");
    assert_eq!(more, 0, "a target was written more than twice");
    assert!(twice <= 20, "only the cut-short request (at most 20 targets) may be written again: {twice}");
}

/// How often the card was told of progress: updates, and the shortest and longest gaps.
fn print_card(card: &CardLog, every: Duration) {
    let progress = card.progress.lock().unwrap();
    let gaps: Vec<Duration> = progress.windows(2).map(|w| w[1].0.duration_since(w[0].0)).collect();
    let (shortest, longest) = (gaps.iter().min().copied().unwrap_or_default(), gaps.iter().max().copied().unwrap_or_default());
    println!(
        "card: {} progress updates (at most one per {} s): shortest gap {:.2} s, longest {:.2} s; recorded counts never went down: {}",
        progress.len(),
        every.as_secs(),
        shortest.as_secs_f64(),
        longest.as_secs_f64(),
        progress.windows(2).all(|w| w[0].1 <= w[1].1)
    );
    assert!(gaps.iter().all(|gap| *gap >= every), "two progress updates closer than {every:?}");
    assert!(progress.windows(2).all(|w| w[0].1 <= w[1].1), "the progress went back");
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
    if let Ok(database) = std::env::var("BULK_RUN_CASE_IN") {
        first_runner(&database).await;
        return;
    }
    // The smoke run (`cargo test`) runs the whole run and then a restart; `cargo bench` one of them.
    let restarts: &[bool] = match (full, std::env::var("BULK_RESTART").is_ok_and(|v| v == "1")) {
        (false, _) => &[false, true],
        (true, restart) => {
            if restart {
                &[true]
            } else {
                &[false]
            }
        }
    };
    for restart in restarts {
        measure(full, revoke, targets, users, latency, *restart).await;
    }
}

/// One case of `targets`, created in a child process, run here (after a first runner was killed
/// mid-way, with `restart`), and compared with the best the limits allow.
async fn measure(full: bool, revoke: bool, targets: usize, users: usize, latency: Duration, restart: bool) {
    let database = database_url().await;
    let case_id = approved_case_in_child(&database);
    let limits = Arc::new(Mutex::new(Limits::default()));
    let graph = start_fake_graph(Arc::clone(&limits), latency).await;
    let tokens = token_service().await;
    let store = Store::connect(&database).await.unwrap();
    let every = if full { Duration::from_secs(5) } else { Duration::from_secs(1) };
    let card = Arc::new(CardLog::default());
    let (client, runner) = case_runner(store.clone(), &graph, &tokens.uri(), RUNNER, LEASE, every, card.clone());

    // The n-th request in a 1/s (or 30/s) stream can start at (n - 1) / rate seconds; the n-th
    // write to Entra ID once the bucket has refilled n - 3,000 of them.
    let best = if revoke {
        Duration::from_secs_f64(((targets as f64 - DIRECTORY_BURST) / DIRECTORY_PER_SECOND).max(0.0)).max(latency)
    } else {
        Duration::from_secs_f64(((targets - 1) as f64 / 30.0).max((targets / users - 1) as f64))
    };
    let mut first_run = None;
    if restart {
        // Halfway through the targets.
        let (told, held) = tokio::sync::oneshot::channel();
        {
            let mut limits = limits.lock().unwrap();
            limits.writes = Some(HashMap::new());
            limits.hold = Some((targets / 2, told));
        }
        let first = run_and_kill_first_runner(&database, &case_id, &graph, held).await;
        first_run = Some((limits.lock().unwrap().requests, first));
    }
    let rss_before = memory("VmRSS:");
    let started = Instant::now();
    // After a restart the first runner's lease has to lapse before this one can claim the case.
    let state = loop {
        if let Some(state) = runner.run(&case_id).await.unwrap() {
            break state;
        }
        assert!(restart && started.elapsed() < FIRST_LEASE * 10, "the case could not be claimed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ours = started.elapsed();
    let peak = memory("VmHWM:");
    assert_eq!(state, CaseState::Done);
    let done = store.case_summary(&case_id).await.unwrap().unwrap().tally.done;
    assert_eq!(done, targets, "every target done and recorded");
    assert_eq!(*card.runs.lock().unwrap(), 2, "the card was told of the run's start and end");
    let (throttled_ours, requests_ours) = {
        let limits = limits.lock().unwrap();
        (limits.throttled, limits.requests)
    };
    if let Some((held_at, first)) = first_run {
        let writes = limits.lock().unwrap().writes.take().unwrap();
        print_restart(targets, held_at, first, ours, &writes);
        return;
    }
    println!("RSS before the run: {rss_before}; peak RSS after chatwarden's run: {peak}");
    print_card(&card, every);
    if std::env::var("BULK_SKIP_LOOP").is_ok_and(|v| v == "1") {
        print_ours(targets, best, ours, requests_ours, throttled_ours);
        return;
    }

    // The one-call-at-a-time loop, against a fresh fake (same limits, same latency).
    *limits.lock().unwrap() = Limits::default();
    let token = SecretString::from("approver-token".to_owned());
    let started = Instant::now();
    let every = store.case(&case_id).await.unwrap().unwrap().targets;
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
