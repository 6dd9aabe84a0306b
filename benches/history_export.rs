//! Export, offline verification and `history --verify` of a large history: wall time and peak
//! memory (RSS, from `/usr/bin/time`) of the real binary at 100,000 and 1,000,000 events, to
//! show that memory does not grow with the history.
//!
//! `cargo bench --bench history_export` (sizes: `HISTORY_EVENTS=100000,1000000`). Without
//! `--bench` (as under `cargo test`) it runs a 2,000-event smoke version that still checks the
//! export verifies.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::Command;
use std::time::Instant;

use chatwarden::history::{GENESIS, HistoryEvent};
use chatwarden::store::Store;
use sqlx::Connection as _;

/// Writes `n` chained events straight to the database in one transaction (the store's own
/// path commits each event on its own, which would measure the disk, not the export).
async fn seed(url: &str, n: i64) {
    Store::connect(url).await.unwrap().close().await;
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    let mut prev = GENESIS.to_owned();
    let start = 1_780_000_000_000_i64;
    for chunk in (1..=n).collect::<Vec<_>>().chunks(500) {
        let mut sql =
            String::from("INSERT INTO events (case_id, at, actor_oid, actor_name, kind, detail, data, seq, prev_hash, hash) VALUES ");
        for (i, seq) in chunk.iter().enumerate() {
            let mut event = HistoryEvent {
                seq: *seq,
                at: start + seq * 1000,
                case_id: Some(format!("C{:05}", seq / 6)),
                actor_oid: Some("0b7c4e2a-1111-4a1b-9c2d-3e4f5a6b7c8d".into()),
                actor_name: Some("Dana Admin".into()),
                kind: "target_done".into(),
                detail: Some(format!("target {seq}: removed: the user no longer has access to the chat")),
                data: Some(format!(
                    r#"{{"graph":{{"client_request_id":"6f1c2d3e-0000-4000-8000-{seq:012}","date":"Wed, 02 Dec 2026 01:02:03 GMT","request_id":"a1b2c3d4-{seq:012}"}},"graph_status":204,"target":0}}"#
                )),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            event.hash = event.expected_hash();
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "('{}', {}, '{}', '{}', '{}', '{}', '{}', {}, '{}', '{}')",
                event.case_id.as_deref().unwrap(),
                event.at,
                event.actor_oid.as_deref().unwrap(),
                event.actor_name.as_deref().unwrap(),
                event.kind,
                event.detail.as_deref().unwrap(),
                event.data.as_deref().unwrap(),
                event.seq,
                event.prev_hash,
                event.hash
            ));
            prev = event.hash;
        }
        sqlx::query(&sql).execute(&mut *tx).await.unwrap();
    }
    sqlx::query(&format!("UPDATE history_chain SET seq = {n}, head = '{prev}' WHERE id = 1")).execute(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
}

/// Runs the binary (under `/usr/bin/time` when `rss`); returns (seconds, peak RSS in MiB, or
/// 0 when not measured).
fn measured(args: &[&str], url: &str, rss: bool) -> (f64, f64) {
    let started = Instant::now();
    let mut command = if rss { Command::new("/usr/bin/time") } else { Command::new(env!("CARGO_BIN_EXE_chatwarden")) };
    if rss {
        command.args(["-f", "%M"]).arg(env!("CARGO_BIN_EXE_chatwarden"));
    }
    let output = command
        .args(args)
        .env_clear()
        .env("CHATWARDEN_DATABASE_URL", url)
        .output()
        .expect("the binary runs (full runs: under /usr/bin/time, Debian package time)");
    let seconds = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    if !rss {
        return (seconds, 0.0);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let kib: f64 = stderr.lines().last().and_then(|l| l.trim().parse().ok()).expect("peak RSS from /usr/bin/time");
    (seconds, kib / 1024.0)
}

#[tokio::main]
async fn main() {
    sqlx::any::install_default_drivers();
    let full = std::env::args().any(|a| a == "--bench");
    let default_sizes = if full { "100000,1000000" } else { "2000" };
    let sizes: Vec<i64> = std::env::var("HISTORY_EVENTS")
        .unwrap_or_else(|_| default_sizes.into())
        .split(',')
        .map(|s| s.trim().parse().expect("HISTORY_EVENTS: numbers"))
        .collect();
    let dir = std::env::temp_dir().join(format!("chatwarden-history-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!("| events | export JSONL | export CSV | verify-export | history --verify | JSONL size |");
    println!("|---|---|---|---|---|---|");
    for n in sizes {
        let url = format!("sqlite://{}/h{n}.db?mode=rwc", dir.display());
        seed(&url, n).await;
        let jsonl = dir.join(format!("h{n}.jsonl"));
        let csv = dir.join(format!("h{n}.csv"));
        let export_jsonl = measured(&["export", "--out", jsonl.to_str().unwrap()], &url, full);
        let export_csv = measured(&["export", "--format", "csv", "--out", csv.to_str().unwrap()], &url, full);
        let verify_file = measured(&["verify-export", jsonl.to_str().unwrap()], &url, full);
        let verify_db = measured(&["history", "--verify"], &url, full);
        let size = std::fs::metadata(&jsonl).unwrap().len() as f64 / 1_048_576.0;
        let cell = |(s, mib): (f64, f64)| format!("{s:.1} s, {mib:.0} MiB peak");
        println!("| {n} | {} | {} | {} | {} | {size:.0} MiB |", cell(export_jsonl), cell(export_csv), cell(verify_file), cell(verify_db));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
