//! Memory under a flood of bad tokens: the real server (in this process) receives 100,000
//! requests with random key ids, garbage tokens and foreign issuers; the process's resident set
//! is read before and after. `cargo bench --bench bad_token_flood`; without `--bench` it sends
//! 2,000 requests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code, missing_docs)]

#[path = "../tests/api/helpers.rs"]
mod helpers;

use std::time::Instant;

use futures_util::StreamExt as _;
use helpers::*;
use serde_json::json;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let total: usize = if full { 100_000 } else { 2_000 };
    let app = spawn_app().await;
    let url = app.service_url();
    let body = serde_json::to_vec(&message(&url, "/help")).unwrap();
    let client = reqwest::Client::new();
    let endpoint = format!("{}/api/messages", app.address);
    // Bad tokens need no real signature: each is refused before its signature would matter.
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let claims = valid_claims(&url);
    let send = |i: usize| {
        let token = match i % 3 {
            0 => format!(
                "{}.{}.c2ln",
                b64(json!({"alg": "RS256", "kid": format!("random-kid-{i}-{}", fastrand::u64(..))})),
                b64(claims.clone())
            ),
            1 => format!("garbage.{i}.token"),
            _ => {
                let mut foreign = claims.clone();
                foreign["iss"] = json!(format!("https://sts.windows.net/{i}/"));
                format!("{}.{}.c2ln", b64(json!({"alg": "RS256", "kid": TEAMS_KID})), b64(foreign))
            }
        };
        let request = client.post(&endpoint).bearer_auth(token).header("content-type", "application/json").body(body.clone());
        async move { request.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    // Warm up, then measure.
    let _: Vec<u16> = futures_util::stream::iter(0..1_000).map(send).buffer_unordered(32).collect().await;
    let before = rss_kib();
    let started = Instant::now();
    let statuses: Vec<u16> = futures_util::stream::iter(0..total).map(send).buffer_unordered(32).collect().await;
    let elapsed = started.elapsed();
    let after = rss_kib();
    let rejected = statuses.iter().filter(|s| **s == 401).count();
    assert_eq!(rejected, total, "every bad token gets 401");
    let refreshes = app.metadata_fetches().await;
    println!("| requests | rejected (401) | metadata fetches | time | req/s | RSS before | RSS after | growth |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {total} | {rejected} | {refreshes} | {:.1} s | {:.0} | {} KiB | {} KiB | {:+} KiB |",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        before,
        after,
        after as i64 - before as i64
    );
    assert!(refreshes <= 2, "the flood forced {refreshes} metadata fetches");
}
