//! Audit ingestion: 100,000 realistic Teams records parsed, deduplicated and indexed into SQLite
//! and PostgreSQL (one transaction per 5,000 records, as a content blob is stored; `INGEST_BATCH`
//! changes it), then lookup latency
//! by chat and by user at that size. `cargo bench --bench ingest` (PostgreSQL from
//! CHATWARDEN_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test).
//! Without `--bench` (as under `cargo test`) it runs a 2,000-record smoke version.
//! `INGEST_BACKENDS=sqlite` (or `postgres`) runs one backend only, e.g. under `perf record`;
//! `INGEST_RECORDS` changes the number of records (default 100,000).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use chatwarden::audit::record::AuditRecord;
use chatwarden::cases::now_ms;
use chatwarden::store::Store;
use serde_json::json;

const TENANT: &str = "5f0e9d8c-2222-4b3c-8d7e-6f5a4b3c2d1e";

/// A realistic record: one of our 5,000 users pulled into a chat by one of 200 external tenants.
fn record(i: usize) -> String {
    let user = i % 5_000;
    let tenant = i % 200;
    let op = if i % 3 == 0 { "ChatCreated" } else { "MemberAdded" };
    json!({
        "CreationTime": "2026-11-20T09:12:03", "Id": format!("0000{i:08}-0a4f-4e61-9b2d-7f8e9a0b1c2d"), "Operation": op,
        "OrganizationId": TENANT, "RecordType": 25, "UserKey": format!("b7e6d5c4-3b2a-4190-8f7e-{tenant:012}"), "UserType": 0, "Version": 1,
        "Workload": "MicrosoftTeams", "UserId": format!("attacker{tenant}@evil{tenant}.example"),
        "ChatThreadId": format!("19:{i:08x}-7d9e-4c3b-8a6f-0e1d2c3b4a59_{user:08x}@unq.gbl.spaces"), "CommunicationType": "OneOnOne",
        "ClientIP": "192.0.2.1",
        "ExtraProperties": [{"Key": "TimeZone", "Value": "Europe/Paris"}, {"Key": "ClientName", "Value": "skypeteams"}],
        "Members": [
            {"OrganizationId": format!("9f3a1c2e-5b7d-4e8f-a1b2-{tenant:012}"), "DisplayName": "IT Support", "UPN": format!("attacker{tenant}@evil{tenant}.example")},
            {"OrganizationId": TENANT, "DisplayName": format!("User {user}"), "UPN": format!("user{user}@contoso.com"), "UserObjectId": format!("00000000-0000-4000-8000-{user:012}")}
        ],
        "ParticipantInfo": {"HasForeignTenantUsers": true, "HasGuestUsers": false, "HasOtherGuestUsers": false, "HasUnauthenticatedUsers": false,
            "ParticipatingDomains": [format!("evil{tenant}.example"), "contoso.com"],
            "ParticipatingSIPDomains": [{"DomainName": format!("evil{tenant}.example"), "TenantId": format!("9f3a1c2e-5b7d-4e8f-a1b2-{tenant:012}")}, {"DomainName": "contoso.com", "TenantId": TENANT}],
            "ParticipatingTenantIds": [TENANT, format!("9f3a1c2e-5b7d-4e8f-a1b2-{tenant:012}")]}
    })
    .to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn run(name: &str, url: &str, count: usize, batch: usize) {
    let store = Store::connect(url).await.unwrap();
    let raw: Vec<String> = (0..count).map(record).collect();
    let started = Instant::now();
    let mut parsing = Duration::ZERO;
    for chunk in raw.chunks(batch) {
        let t = Instant::now();
        let records: Vec<AuditRecord> = chunk.iter().map(|r| AuditRecord::from_json(r.as_str()).unwrap()).collect();
        parsing += t.elapsed();
        let fresh = store.insert_audit_batch(&records, now_ms()).await.unwrap();
        assert!(fresh.iter().all(|f| *f));
    }
    let elapsed = started.elapsed();
    eprintln!("{name}: parsing {:.2} s of {:.2} s", parsing.as_secs_f64(), elapsed.as_secs_f64());
    // Every record again: all duplicates, nothing stored twice.
    let records: Vec<AuditRecord> = raw[..500.min(count)].iter().map(|r| AuditRecord::from_json(r.as_str()).unwrap()).collect();
    assert!(store.insert_audit_batch(&records, now_ms()).await.unwrap().iter().all(|f| !*f));
    assert_eq!(store.audit_count().await.unwrap(), count as i64);
    // Fresh statistics, as autovacuum gathers within a minute of such a load on PostgreSQL (without
    // them its planner guesses thousands of matches and starts parallel workers for each lookup).
    store.analyze().await.unwrap();

    let lookups = 1_000.min(count);
    let mut by_chat = Vec::with_capacity(lookups);
    let mut by_user = Vec::with_capacity(lookups);
    for n in 0..lookups {
        let i = (n * 7_919) % count;
        let chat = format!("19:{i:08x}-7d9e-4c3b-8a6f-0e1d2c3b4a59_{:08x}@unq.gbl.spaces", i % 5_000);
        let t = Instant::now();
        assert_eq!(store.audit_for_chat_user(&chat, &format!("user{}@contoso.com", i % 5_000)).await.unwrap().len(), 1);
        by_chat.push(t.elapsed());
        let t = Instant::now();
        assert!(!store.audit_for_user(&format!("00000000-0000-4000-8000-{:012}", i % 5_000)).await.unwrap().is_empty());
        by_user.push(t.elapsed());
    }
    by_chat.sort();
    by_user.sort();
    println!(
        "| {name:<10} | {count:>7} | {:>8.1} s | {:>10.0} | {:>9.3} ms | {:>9.3} ms | {:>9.3} ms | {:>9.3} ms |",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64(),
        percentile(&by_chat, 0.5).as_secs_f64() * 1e3,
        percentile(&by_chat, 0.99).as_secs_f64() * 1e3,
        percentile(&by_user, 0.5).as_secs_f64() * 1e3,
        percentile(&by_user, 0.99).as_secs_f64() * 1e3,
    );
    store.close().await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // INGEST_RECORDS=400000 shows how the rate holds as the index grows.
    let count =
        if full { std::env::var("INGEST_RECORDS").ok().and_then(|n| n.parse().ok()).filter(|n| *n > 0).unwrap_or(100_000) } else { 2_000 };
    // Records per transaction: a whole content blob, as `AuditIngest::ingest` stores it (at most
    // 5,000); INGEST_BATCH=500 shows a stream of small pushes.
    let batch =
        std::env::var("INGEST_BATCH").ok().and_then(|b| b.parse().ok()).filter(|b| *b > 0).unwrap_or(chatwarden::alerts::INGEST_BATCH);
    println!("records per transaction: {batch}");
    sqlx::any::install_default_drivers();
    let dir = std::env::temp_dir().join(format!("chatwarden-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = format!("sqlite://{}/audit.db", dir.display());
    let base = std::env::var("CHATWARDEN_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("cw_test_bench_{}", std::process::id());
    {
        use sqlx::Connection as _;
        let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
    }
    let postgres = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
    println!("| backend    | records | ingest     | records/s  | chat+user p50 | p99     | user p50    | p99         |");
    println!("|------------|---------|------------|------------|---------------|---------|-------------|-------------|");
    // INGEST_BACKENDS=sqlite (or postgres) runs one of the two, for profiling.
    let only = std::env::var("INGEST_BACKENDS").unwrap_or_default();
    if !only.eq_ignore_ascii_case("postgres") {
        run("SQLite", &sqlite, count, batch).await;
    }
    if !only.eq_ignore_ascii_case("sqlite") {
        run("PostgreSQL", &postgres, count, batch).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    use sqlx::Connection as _;
    let mut conn = sqlx::AnyConnection::connect(&base).await.unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
}
