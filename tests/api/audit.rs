//! Teams audit records: real published samples, our own fixtures for every operation and
//! variation, the index, signed pushes, detection cards and the Management API poller.

use std::collections::HashSet;
use std::time::Duration;

use chatwarden::audit::detection::DetectionRules;
use chatwarden::audit::record::{AuditRecord, Operation};
use chatwarden::audit::signature::sign;
use chatwarden::cases::{CaseKind, CaseSource, CaseState, now_ms};
use chatwarden::store::Store;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param, query_param_is_missing};
use wiremock::{Mock, ResponseTemplate};

use crate::cases::{mount_connector, replies};
use crate::helpers::*;

const SECRET: &str = "alert-secret-for-tests-0123456789";
const EVIL_TENANT: &str = "1d36ca61-5509-4ac7-983d-91dfdeb5f492";
const CHAT: &str = "19:d473ae3c-906c-4a72-8b3f-18e6c9bfdcd7_4daf1829-8823-454f-b4e0-1cd22342d5f3@unq.gbl.spaces";
const JOHN_OID: &str = "a1b2c3d4-0000-4000-8000-00000000000a";

/// The published samples (tests/fixtures/ual-samples-sources.txt says where each was published).
fn published_samples() -> Vec<Value> {
    let text = include_str!("../fixtures/ual-samples.jsonl");
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_published_teams_record_parses() {
    let samples = published_samples();
    assert_eq!(samples.len(), 13);
    let records: Vec<AuditRecord> = samples.into_iter().map(|s| AuditRecord::parse(s).unwrap()).collect();
    let operations: Vec<&str> = records.iter().map(|r| r.operation.as_str()).collect();
    assert_eq!(
        operations,
        [
            "TeamCreated",
            "MemberAdded",
            "MemberAdded",
            "TeamsSessionStarted",
            "MessageCreatedHasLink",
            "ChatCreated",
            "ChatCreated",
            "ChatCreated",
            "ChatCreated",
            "MessageReadReceiptReceived",
            "TeamCreated",
            "MemberAdded",
            "TeamCreated"
        ]
    );
    assert_eq!(records[3].operation, Operation::Other("TeamsSessionStarted".into()));
    // Elastic's MemberAdded: four members without UserObjectId, a team (no chat), time without zone.
    assert_eq!(records[1].members.len(), 4);
    assert!(records[1].members.iter().all(|m| m.user_object_id.is_none()));
    assert_eq!(records[1].created_at, Some(1_581_958_787_000));
    assert!(records[1].chat_thread_id.is_none());
    // Sekoia's ChatCreated with a foreign tenant: one internal member, one external party.
    let chat = &records[7];
    assert_eq!(chat.chat_thread_id.as_deref(), Some(CHAT));
    assert_eq!(chat.internal_members().iter().map(|m| m.display_name.clone().unwrap()).collect::<Vec<_>>(), ["John Doe"]);
    assert_eq!(chat.external_parties().tenant_ids, [EVIL_TENANT]);
    assert!(chat.external_parties().domains.contains(&"example2.com".to_owned()));
    // Sekoia's chat without foreign tenant users: guests only, no outside tenant.
    assert!(!records[8].external_parties().foreign_flag);
    // A CreationTime with a zone (Defender's embedding).
    assert_eq!(records[9].created_at, Some(1_730_125_118_000));
    // The raw JSON is kept whole as evidence.
    assert_eq!(records[5].raw_value()["AppAccessContext"]["UniqueTokenId"], "mYyWp_-UrEa4Z_pZM7FlAA");
}

#[test]
fn the_default_rule_flags_the_published_foreign_tenant_chats_only() {
    let rules = DetectionRules::default();
    let flagged: Vec<(String, String)> = published_samples()
        .into_iter()
        .map(|s| AuditRecord::parse(s).unwrap())
        .flat_map(|r| rules.evaluate(&r).into_iter().map(move |f| (r.id.clone(), f.member.display_name.unwrap_or_default())))
        .collect();
    assert_eq!(
        flagged,
        [
            ("5964f7bd-8775-4dbe-84a8-37573510558c".to_owned(), "John Doe".to_owned()),
            ("db1cd437-5417-4cd3-ae6b-19a980f9bcfc".to_owned(), "John Doe".to_owned())
        ]
    );
}

/// Our own fixtures: one per interpreted operation and per real-world variation.
fn own_fixtures() -> Vec<Value> {
    vec![
        // MemberAdded to a group chat, member with UserObjectId, external actor adding our user.
        json!({"Id": "own-1", "RecordType": 25, "Workload": "MicrosoftTeams", "Operation": "MemberAdded", "OrganizationId": TENANT_ID,
               "CreationTime": "2026-11-20T10:00:00", "UserId": "mallory@evil.example", "UserKey": "ffffffff-0000-4000-8000-000000000001",
               "ChatThreadId": CHAT, "CommunicationType": "GroupChat",
               "Members": [{"UPN": "John.Doe@Contoso.com", "DisplayName": "John Doe", "UserObjectId": JOHN_OID, "OrganizationId": TENANT_ID, "Role": 1}],
               "ParticipantInfo": {"HasForeignTenantUsers": true, "ParticipatingSIPDomains": [{"DomainName": "evil.example", "TenantId": EVIL_TENANT}], "ParticipatingTenantIds": [TENANT_ID, EVIL_TENANT]}}),
        // MemberRemoved, no ParticipantInfo, CreationTime with Z.
        json!({"Id": "own-2", "Workload": "MicrosoftTeams", "Operation": "MemberRemoved", "OrganizationId": TENANT_ID, "CreationTime": "2026-11-20T11:00:00Z",
               "ChatThreadId": CHAT, "Members": [{"UPN": "john.doe@contoso.com"}]}),
        // MessageSent in that chat.
        json!({"Id": "own-3", "Workload": "MicrosoftTeams", "Operation": "MessageSent", "OrganizationId": TENANT_ID, "ChatThreadId": CHAT, "UserId": "john.doe@contoso.com", "UserKey": JOHN_OID}),
        // MessageEditedHasLink with an unknown extra field.
        json!({"Id": "own-4", "Workload": "MicrosoftTeams", "Operation": "MessageEditedHasLink", "OrganizationId": TENANT_ID, "ChatThreadId": CHAT, "MessageURLs": ["https://evil.example/x"], "BrandNewField": {"a": 1}}),
        // ChatCreated with an unauthenticated participant; UserKey holds the member.
        json!({"Id": "own-5", "Workload": "MicrosoftTeams", "Operation": "ChatCreated", "OrganizationId": TENANT_ID, "ChatThreadId": "19:meeting_abc@thread.v2",
               "UserId": "jane@contoso.com", "UserKey": "b1b2c3d4-0000-4000-8000-00000000000b",
               "Members": [{"UPN": "jane@contoso.com", "DisplayName": "Jane"}], "ParticipantInfo": {"HasUnauthenticatedUsers": true}}),
        // TeamCreated by an application (empty UserKey).
        json!({"Id": "own-6", "Workload": "MicrosoftTeams", "Operation": "TeamCreated", "OrganizationId": TENANT_ID, "UserId": "Application", "UserKey": "", "TeamName": "SIEM"}),
        // MessageCreatedHasLink without Workload (some SIEMs strip it).
        json!({"Id": "own-7", "Operation": "MessageCreatedHasLink", "OrganizationId": TENANT_ID, "ChatThreadId": CHAT, "Members": [{"UPN": "john.doe@contoso.com", "Role": 0}]}),
    ]
}

#[test]
fn our_fixtures_cover_every_interpreted_operation() {
    let records: Vec<AuditRecord> = own_fixtures().into_iter().map(|v| AuditRecord::parse(v).unwrap()).collect();
    let operations: HashSet<&str> = records.iter().map(|r| r.operation.as_str()).collect();
    for op in ["MemberAdded", "MemberRemoved", "ChatCreated", "MessageSent", "MessageCreatedHasLink", "MessageEditedHasLink", "TeamCreated"]
    {
        assert!(operations.contains(op), "{op}");
    }
    assert_eq!(records[1].participant_info, None);
    assert_eq!(records[5].user_key, None);
    let findings = DetectionRules::default().evaluate(&records[0]);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].member.user_object_id.as_deref(), Some(JOHN_OID));
    assert_eq!(DetectionRules::default().evaluate(&records[4]).len(), 1, "unauthenticated participant");
}

/// The schema of an earlier version: the migrations up to `last` only, copied to a folder.
async fn migrate_up_to(url: &str, backend: &str, last: u32) {
    use sqlx::Connection as _;
    let dir = std::env::temp_dir().join(format!("chatwarden-migrations-{:016x}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/").to_owned() + backend).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name[..4].parse::<u32>().unwrap() <= last {
            std::fs::copy(&path, dir.join(name)).unwrap();
        }
    }
    let url = if backend == "sqlite" { format!("{url}?mode=rwc") } else { url.to_owned() };
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap().run(&mut conn).await.unwrap();
    // Records as that version stored them (its lookup rows are dropped by the upgrade).
    for value in own_fixtures() {
        let record = AuditRecord::parse(value).unwrap();
        sqlx::query(
            "INSERT INTO audit_records (id, tenant_id, operation, created_at, chat_thread_id, raw, ingested_at) VALUES ($1, $2, $3, $4, $5, $6, 0)",
        )
        .bind(&record.id)
        .bind(&record.organization_id)
        .bind(record.operation.as_str())
        .bind(record.created_at)
        .bind(&record.chat_thread_id)
        .bind(record.raw_json())
        .execute(&mut conn)
        .await
        .unwrap();
        if last < 5 {
            sqlx::query("INSERT INTO audit_keys (lookup, record_id) VALUES ($1, $2)")
                .bind("u:someone")
                .bind(&record.id)
                .execute(&mut conn)
                .await
                .unwrap();
        }
    }
    conn.close().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A rebuild stopped half way goes on after the last batch it recorded (here: records 1-4 done).
#[tokio::test]
async fn an_interrupted_index_rebuild_goes_on_where_it_stopped() {
    use sqlx::Connection as _;
    for (url, backend) in [(sqlite_url(), "sqlite"), (postgres_url().await, "postgres")] {
        migrate_up_to(&url, backend, 5).await;
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query("INSERT INTO settings (key, value, updated_at) VALUES ('audit_reindex', '4', 0)").execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(store.setting("audit_reindex").await.unwrap(), None, "{backend}");
        let ids = |records: Vec<AuditRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.audit_for_user("jane@contoso.com").await.unwrap()), ["own-5"]);
        assert_eq!(ids(store.audit_for_chat_user(CHAT, "john.doe@contoso.com").await.unwrap()), ["own-7"], "{backend}: 1-3 count as done");
        store.close().await;
    }
}

/// A database indexed by the previous schema (`audit_keys`, migration 0004) is upgraded in place:
/// at start-up its records are indexed again from their stored JSON and found as before.
#[tokio::test]
async fn an_index_of_the_previous_schema_is_rebuilt_at_start_up() {
    for (url, backend) in [(sqlite_url(), "sqlite"), (postgres_url().await, "postgres")] {
        migrate_up_to(&url, backend, 4).await;
        for start in 0..2 {
            let store = Store::connect(&url).await.unwrap();
            assert_eq!(store.setting("audit_reindex").await.unwrap(), None, "{backend}, start {start}");
            assert_eq!(store.audit_count().await.unwrap(), 7 + start);
            let ids = |records: Vec<AuditRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
            assert_eq!(ids(store.audit_for_chat_user(CHAT, "JOHN.DOE@contoso.com").await.unwrap()), ["own-1", "own-2", "own-3", "own-7"]);
            assert_eq!(ids(store.audit_for_user("jane@contoso.com").await.unwrap()), ["own-5"]);
            assert_eq!(ids(store.audit_for_party(EVIL_TENANT).await.unwrap()), ["own-1"]);
            assert_eq!(store.audit_for_chat(CHAT).await.unwrap().len(), 5);
            // New records go on being indexed after the moved ones.
            if start == 0 {
                let mut fresh = own_fixtures().remove(5);
                fresh["Id"] = json!("own-8");
                assert!(store.insert_audit(&AuditRecord::parse(fresh).unwrap(), now_ms()).await.unwrap());
            }
            assert_eq!(ids(store.audit_for_user("application").await.unwrap()), ["own-6", "own-8"]);
            store.close().await;
        }
        if backend == "sqlite" {
            assert_eq!(page_size(&url).await, 4096, "an existing database keeps its page size");
        }
    }
}

/// The stored form of a lookup key as migration 0005 defined it: the first 8 bytes of its
/// SHA-256, big-endian, as a signed integer.
fn key_hash(key: &str) -> i64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    i64::from_be_bytes(digest[..8].try_into().unwrap())
}

/// Lookup rows of the previous schema (`audit_lookup (key_hash, record_seq)`, migration 0005),
/// for records far apart in sequence, move into buckets on upgrade without a re-index; the
/// records are found in every bucket, alone and by chat and user, with the ones stored after.
#[tokio::test]
async fn lookup_rows_of_the_previous_schema_move_into_buckets() {
    use sqlx::Connection as _;
    for (url, backend) in [(sqlite_url(), "sqlite"), (postgres_url().await, "postgres")] {
        migrate_up_to(&url, backend, 5).await;
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        // Records 1-7 become 30,000 apart: buckets 0, 0, 1, 1, 2, 2, 3 of 65,536 each.
        let renumber = "UPDATE audit_records SET seq = seq * 30000";
        if backend == "postgres" {
            for sql in [
                "ALTER TABLE audit_records ALTER COLUMN seq SET GENERATED BY DEFAULT",
                renumber,
                "ALTER TABLE audit_records ALTER COLUMN seq SET GENERATED ALWAYS",
                "ALTER TABLE audit_records ALTER COLUMN seq RESTART WITH 210001",
            ] {
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        } else {
            sqlx::query(renumber).execute(&mut conn).await.unwrap();
        }
        // Indexed as 0005 did, under their chat and under John (lookups re-check every record, so
        // the records that do not name him are not returned for him).
        let seqs: Vec<(i64, String)> = sqlx::query_as("SELECT seq, raw FROM audit_records").fetch_all(&mut conn).await.unwrap();
        for (seq, raw) in &seqs {
            let record = AuditRecord::from_json(raw.as_str()).unwrap();
            let keys = record.chat_thread_id.iter().map(|chat| format!("c:{chat}")).chain(["u:john.doe@contoso.com".to_owned()]);
            for key in keys {
                sqlx::query("INSERT INTO audit_lookup (key_hash, record_seq) VALUES ($1, $2)")
                    .bind(key_hash(&key))
                    .bind(seq)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
        conn.close().await.unwrap();

        let store = Store::connect(&url).await.unwrap();
        assert_eq!(store.setting("audit_reindex").await.unwrap(), None, "{backend}: moved, not re-indexed");
        let ids = |records: Vec<AuditRecord>| records.into_iter().map(|r| r.id).collect::<HashSet<_>>();
        let set = |ids: &[&str]| ids.iter().map(|id| id.to_string()).collect::<HashSet<_>>();
        assert_eq!(ids(store.audit_for_chat(CHAT).await.unwrap()), set(&["own-1", "own-2", "own-3", "own-4", "own-7"]), "{backend}");
        assert_eq!(ids(store.audit_for_chat_user(CHAT, "John.Doe@contoso.com").await.unwrap()), set(&["own-1", "own-2", "own-3", "own-7"]));
        // A record stored now lands in bucket 3 and is found with the moved ones.
        let mut fresh = own_fixtures().remove(0);
        fresh["Id"] = json!("own-8");
        assert!(store.insert_audit(&AuditRecord::parse(fresh).unwrap(), now_ms()).await.unwrap());
        // The moved rows name John by UPN only; the new record is indexed under every key.
        assert_eq!(ids(store.audit_for_chat_user(CHAT, JOHN_OID).await.unwrap()), set(&["own-8"]), "{backend}");
        assert_eq!(ids(store.audit_for_chat_user(CHAT, "john.doe@contoso.com").await.unwrap()).len(), 5);
        store.close().await;

        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let (misplaced, buckets): (i64, i64) =
            sqlx::query_as("SELECT (SELECT COUNT(*) FROM audit_lookup WHERE bucket <> record_seq / 65536), (SELECT COUNT(DISTINCT bucket) FROM audit_lookup)")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!((misplaced, buckets), (0, 4), "{backend}");
        conn.close().await.unwrap();
    }
}

/// The page size of the SQLite database at `url`.
async fn page_size(url: &str) -> i64 {
    use sqlx::Connection as _;
    let mut conn = sqlx::AnyConnection::connect(url).await.unwrap();
    let size: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    size
}

#[tokio::test]
async fn a_new_sqlite_database_has_32_kib_pages() {
    let url = sqlite_url();
    let store = Store::connect(&url).await.unwrap();
    assert!(store.insert_audit(&AuditRecord::parse(own_fixtures().remove(0)).unwrap(), now_ms()).await.unwrap());
    store.close().await;
    assert_eq!(page_size(&url).await, 32_768);
    // It stays so when opened again, and the record is still there.
    let store = Store::connect(&url).await.unwrap();
    assert_eq!(store.audit_count().await.unwrap(), 1);
    store.close().await;
    assert_eq!(page_size(&url).await, 32_768);
}

#[tokio::test]
async fn the_index_stores_each_record_once_and_finds_it_by_chat_user_and_party() {
    for url in [sqlite_url(), postgres_url().await] {
        let store = Store::connect(&url).await.unwrap();
        for value in own_fixtures() {
            assert!(store.insert_audit(&AuditRecord::parse(value).unwrap(), now_ms()).await.unwrap());
        }
        assert!(!store.insert_audit(&AuditRecord::parse(own_fixtures().remove(0)).unwrap(), now_ms()).await.unwrap());
        assert_eq!(store.audit_count().await.unwrap(), 7);
        let ids = |records: Vec<AuditRecord>| records.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.audit_for_chat(CHAT).await.unwrap()).len(), 5);
        assert_eq!(ids(store.audit_for_chat_user(CHAT, "JOHN.DOE@contoso.com").await.unwrap()), ["own-1", "own-2", "own-3", "own-7"]);
        assert_eq!(ids(store.audit_for_chat_user(CHAT, JOHN_OID).await.unwrap()), ["own-1", "own-3"]);
        assert_eq!(ids(store.audit_for_user("jane@contoso.com").await.unwrap()), ["own-5"]);
        assert_eq!(ids(store.audit_for_party(EVIL_TENANT).await.unwrap()), ["own-1"]);
        assert_eq!(ids(store.audit_for_party("EVIL.example").await.unwrap()), ["own-1"]);
        assert!(store.audit_for_party("fabrikam.com").await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn batches_mixing_new_stored_and_repeated_records_index_each_new_record_under_its_own_keys() {
    for url in [sqlite_url(), postgres_url().await] {
        let store = Store::connect(&url).await.unwrap();
        let record = |i: usize| {
            let mut value = member_added(&format!("batch-{i}"));
            value["ChatThreadId"] = json!(format!("19:chat-{i}@thread.v2"));
            AuditRecord::parse(value).unwrap()
        };
        // All new.
        let first: Vec<AuditRecord> = (0..5).map(record).collect();
        assert_eq!(store.insert_audit_batch(&first, now_ms()).await.unwrap(), [true; 5]);
        // Stored records between new ones, and one new id twice.
        let second: Vec<AuditRecord> = [1, 5, 3, 6, 6, 7, 0].into_iter().map(record).collect();
        assert_eq!(store.insert_audit_batch(&second, now_ms()).await.unwrap(), [false, true, false, true, false, true, false]);
        // All new again, after the mixed batch.
        let third: Vec<AuditRecord> = (8..11).map(record).collect();
        assert_eq!(store.insert_audit_batch(&third, now_ms()).await.unwrap(), [true; 3]);
        assert_eq!(store.audit_count().await.unwrap(), 11);
        // Each record is found under its own chat, and only there: its lookup rows carry its own
        // sequence number.
        for i in 0..11 {
            let found = store.audit_for_chat(&format!("19:chat-{i}@thread.v2")).await.unwrap();
            assert_eq!(found.into_iter().map(|r| r.id).collect::<Vec<_>>(), [format!("batch-{i}")], "chat {i} on {url}");
        }
    }
}

/// A transaction larger than one multi-row statement (2,000 records, 16,000 lookup rows): every
/// record stored once and found under its keys, on both backends.
#[tokio::test]
async fn a_batch_spanning_several_statements_is_stored_and_indexed_whole() {
    for url in [sqlite_url(), postgres_url().await] {
        let store = Store::connect(&url).await.unwrap();
        let records: Vec<AuditRecord> = (0..4_500)
            .map(|i| {
                let mut value = member_added(&format!("many-{i}"));
                value["ChatThreadId"] = json!(format!("19:many-{i}@thread.v2"));
                AuditRecord::parse(value).unwrap()
            })
            .collect();
        assert!(store.insert_audit_batch(&records, now_ms()).await.unwrap().iter().all(|fresh| *fresh));
        assert_eq!(store.audit_count().await.unwrap(), 4_500);
        for i in [0, 1_999, 2_000, 3_999, 4_000, 4_499] {
            let found = store.audit_for_chat(&format!("19:many-{i}@thread.v2")).await.unwrap();
            assert_eq!(found.into_iter().map(|r| r.id).collect::<Vec<_>>(), [format!("many-{i}")], "{url}");
        }
        // Every record names John: all 4,500 are found by him (up to the lookup limit of 5,000).
        assert_eq!(store.audit_for_user(JOHN_OID).await.unwrap().len(), 4_500);
        assert!(store.insert_audit_batch(&records[..10], now_ms()).await.unwrap().iter().all(|fresh| !*fresh));
    }
}

fn member_added(id: &str) -> Value {
    let mut record = own_fixtures().remove(0);
    record["Id"] = json!(id);
    record
}

async fn alert_app() -> TestApp {
    let app = spawn_app_with(Fakes::default(), |c| {
        c.alert_secret = Some(secrecy::SecretString::from(SECRET.to_owned()));
    })
    .await;
    open_security_channel(&app).await;
    app
}

/// The Connector takes cards and new threads, and the bot has learned the security channel's
/// service URL from its traffic (any activity from the channel teaches it).
pub async fn open_security_channel(app: &TestApp) {
    mount_connector(app).await;
    Mock::given(method("POST"))
        .and(path("/v3/conversations"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "19:c0ffee@thread.tacv2;messageid=777", "activityId": "777"})))
        .mount(&app.connector)
        .await;
    let url = app.service_url();
    let mut hello = message(&url, "/history");
    hello["id"] = json!("hello-1");
    app.post_activity(Some(&valid_token(&url)), &hello).await;
}

async fn push(app: &TestApp, body: &[u8], signature: Option<String>) -> reqwest::Response {
    let mut request = app.client.post(format!("{}/api/alerts", app.address)).header("content-type", "application/json").body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("X-Chatwarden-Signature-256", signature);
    }
    request.send().await.unwrap()
}

async fn created_threads(app: &TestApp) -> Vec<Value> {
    app.connector
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/v3/conversations")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn a_signed_member_added_record_posts_an_approval_card_into_the_security_channel() {
    let app = alert_app().await;
    let body = serde_json::to_vec(&member_added("push-1")).unwrap();
    let response = push(&app, &body, Some(sign(SECRET.as_bytes(), &body))).await;
    assert_eq!(response.status(), 202);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["received"], 1);
    assert_eq!(report["stored"], 1);
    let case_id = report["cases"][0].as_str().unwrap().to_owned();

    let threads = created_threads(&app).await;
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0]["channelData"]["channel"]["id"], "19:c0ffee@thread.tacv2");
    assert_eq!(threads[0]["tenantId"], TENANT_ID);
    assert_eq!(threads[0]["isGroup"], true);
    let card = threads[0]["activity"]["attachments"][0]["content"].to_string();
    assert!(card.contains(&case_id));
    assert!(card.contains("audit record push-1"), "{card}");
    assert!(card.contains("evil.example"), "{card}");

    let store = Store::connect(&app.database_url).await.unwrap();
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.source, CaseSource::Alert);
    assert_eq!(case.kind, CaseKind::RemoveChat);
    assert_eq!(case.evidence, ["push-1"]);
    assert_eq!(case.targets[0].user_oid.as_deref(), Some(JOHN_OID));
    assert_eq!(case.targets[0].thread_id.as_deref(), Some(CHAT));
    assert_eq!(case.card.unwrap().activity_id, "777");

    // The admin's command finds that evidence.
    let url = app.service_url();
    let mut command = message(&url, &format!("/remove-chat {CHAT} john.doe@contoso.com"));
    command["id"] = json!("cmd-9");
    app.post_activity(Some(&valid_token(&url)), &command).await;
    let command_case = store.history(1).await.unwrap().remove(0);
    assert_eq!(command_case.source, CaseSource::Command);
    assert_eq!(command_case.evidence, ["push-1"]);
    assert!(!command_case.no_evidence);
    assert_eq!(command_case.targets[0].user_oid.as_deref(), Some(JOHN_OID));
    assert_eq!(command_case.targets[0].display_name.as_deref(), Some("John Doe"));
}

#[tokio::test]
async fn alert_pushes_without_or_with_a_wrong_signature_are_refused() {
    let app = alert_app().await;
    let body = serde_json::to_vec(&member_added("push-1")).unwrap();
    let missing = push(&app, &body, None).await;
    assert_eq!(missing.status(), 401);
    // One generic code for every failed check: which one failed is for metrics, not for a forger.
    assert_eq!(missing.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    let wrong = push(&app, &body, Some(sign(b"another-secret-entirely", &body))).await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.json::<Value>().await.unwrap()["error"]["code"], "unauthorized");
    let tampered = push(&app, &serde_json::to_vec(&member_added("push-2")).unwrap(), Some(sign(SECRET.as_bytes(), &body))).await;
    assert_eq!(tampered.status(), 401);
    let store = Store::connect(&app.database_url).await.unwrap();
    assert_eq!(store.audit_count().await.unwrap(), 0);
    assert!(created_threads(&app).await.is_empty());
}

#[tokio::test]
async fn a_replayed_alert_body_opens_nothing_new() {
    let app = alert_app().await;
    let body = serde_json::to_vec(&json!([member_added("push-1"), own_fixtures()[2].clone()])).unwrap();
    let signature = sign(SECRET.as_bytes(), &body);
    let first: Value = push(&app, &body, Some(signature.clone())).await.json().await.unwrap();
    assert_eq!(first["stored"], 2);
    assert_eq!(first["cases"].as_array().unwrap().len(), 1);
    let replay = push(&app, &body, Some(signature)).await;
    assert_eq!(replay.status(), 202);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay, json!({"received": 2, "stored": 0, "cases": []}));
    assert_eq!(created_threads(&app).await.len(), 1);
}

#[tokio::test]
async fn bad_alert_bodies_get_precise_errors_and_nothing_is_stored() {
    let app = alert_app().await;
    let signed = |body: &[u8]| Some(sign(SECRET.as_bytes(), body));
    let malformed = b"{\"Id\": ";
    assert_eq!(push(&app, malformed, signed(malformed)).await.status(), 400);
    let not_a_record = serde_json::to_vec(&json!([{"Id": "x"}])).unwrap();
    let response = push(&app, &not_a_record, signed(&not_a_record)).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["message"], "record 0: audit record field `Operation` is missing");
    let mut foreign = member_added("foreign-1");
    foreign["OrganizationId"] = json!(EVIL_TENANT);
    let mixed = serde_json::to_vec(&json!([member_added("ok-1"), foreign])).unwrap();
    let response = push(&app, &mixed, signed(&mixed)).await;
    assert_eq!(response.status(), 422);
    assert_eq!(response.json::<Value>().await.unwrap()["error"]["message"], "record 1 belongs to another tenant; nothing was stored");
    let huge = vec![b' '; 300 * 1024];
    assert_eq!(push(&app, &huge, signed(&huge)).await.status(), 413);
    let store = Store::connect(&app.database_url).await.unwrap();
    assert_eq!(store.audit_count().await.unwrap(), 0);
}

#[tokio::test]
async fn alerts_are_off_without_a_secret() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&member_added("push-1")).unwrap();
    assert_eq!(push(&app, &body, Some(sign(b"whatever-secret", &body))).await.status(), 404);
}

#[tokio::test]
async fn remove_external_opens_one_case_for_every_pair_with_that_party() {
    let app = alert_app().await;
    let mut second = member_added("push-2");
    second["ChatThreadId"] = json!("19:second@thread.v2");
    second["Members"] = json!([{"UPN": "ann@contoso.com", "DisplayName": "Ann", "OrganizationId": TENANT_ID}]);
    let body = serde_json::to_vec(&json!([member_added("push-1"), second])).unwrap();
    assert_eq!(push(&app, &body, Some(sign(SECRET.as_bytes(), &body))).await.status(), 202);
    let url = app.service_url();
    let mut command = message(&url, "/remove-external evil.example campaign");
    command["id"] = json!("cmd-ext");
    app.post_activity(Some(&valid_token(&url)), &command).await;
    let store = Store::connect(&app.database_url).await.unwrap();
    let case = store.history(10).await.unwrap().into_iter().find(|c| c.kind == CaseKind::RemoveExternal).unwrap();
    assert_eq!(case.state, CaseState::Proposed);
    let pairs: HashSet<(String, String)> = case.targets.iter().map(|t| (t.thread_id.clone().unwrap(), t.user_ref.clone())).collect();
    assert_eq!(
        pairs,
        HashSet::from([
            (CHAT.to_owned(), "john.doe@contoso.com".to_owned()),
            ("19:second@thread.v2".to_owned(), "ann@contoso.com".to_owned())
        ])
    );
    assert_eq!(case.evidence, ["push-1", "push-2"]);

    let mut unknown = message(&url, "/remove-external fabrikam.com");
    unknown["id"] = json!("cmd-ext-2");
    app.post_activity(Some(&valid_token(&url)), &unknown).await;
    let last = replies(&app).await.pop().unwrap();
    assert!(last["text"].as_str().unwrap().starts_with("No chat of ours with `fabrikam.com`"), "{last}");
}

/// A fake Management Activity API: 3 pages of content, 2 blobs each, 2 Teams records per blob
/// (plus one Exchange record that must be ignored). `fail_page_3` makes page 3 fail once.
async fn mount_management(server: &wiremock::MockServer, fail_page_3: bool) {
    let base = server.uri();
    let feed = format!("/api/v1.0/{TENANT_ID}/activity/feed");
    Mock::given(method("POST"))
        .and(path(format!("{feed}/subscriptions/start")))
        .and(query_param("contentType", "Audit.General"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"error": {"code": "AF20024", "message": "The subscription is already enabled."}})),
        )
        .mount(server)
        .await;
    for page in 1..=3 {
        let contents: Vec<Value> = (1..=2)
            .map(|blob| json!({"contentUri": format!("{base}/blobs/p{page}b{blob}"), "contentId": format!("p{page}b{blob}"), "contentType": "Audit.General"}))
            .collect();
        let mut response = ResponseTemplate::new(200).set_body_json(contents);
        if page < 3 {
            response = response.insert_header(
                "NextPageUri",
                format!("{base}{feed}/subscriptions/content?contentType=Audit.General&nextPage={}", page + 1).as_str(),
            );
        }
        if page == 3 && fail_page_3 {
            Mock::given(method("GET"))
                .and(path(format!("{feed}/subscriptions/content")))
                .and(query_param("nextPage", "3"))
                .respond_with(ResponseTemplate::new(500))
                .up_to_n_times(2)
                .with_priority(1)
                .mount(server)
                .await;
        }
        let listing =
            Mock::given(method("GET")).and(path(format!("{feed}/subscriptions/content"))).and(query_param("contentType", "Audit.General"));
        let listing = if page == 1 {
            listing.and(query_param_is_missing("nextPage"))
        } else {
            listing.and(query_param("nextPage", page.to_string()))
        };
        listing.respond_with(response).mount(server).await;
        for blob in 1..=2 {
            let records: Vec<Value> = (1..=2)
                .map(|n| {
                    let mut record = member_added(&format!("poll-p{page}b{blob}r{n}"));
                    record["ChatThreadId"] = json!(format!("19:chat-p{page}b{blob}r{n}@thread.v2"));
                    record
                })
                .chain(std::iter::once(
                    json!({"Id": format!("exo-{page}{blob}"), "Workload": "Exchange", "Operation": "Send", "OrganizationId": TENANT_ID}),
                ))
                .collect();
            Mock::given(method("GET"))
                .and(path(format!("/blobs/p{page}b{blob}")))
                .respond_with(ResponseTemplate::new(200).set_body_json(records))
                .mount(server)
                .await;
        }
    }
}

struct Poll {
    store: Store,
    ingest: std::sync::Arc<chatwarden::alerts::AuditIngest>,
    management: wiremock::MockServer,
    login: wiremock::MockServer,
}

async fn poll_setup(database_url: &str) -> Poll {
    let store = Store::connect(database_url).await.unwrap();
    let metrics = std::sync::Arc::new(chatwarden::metrics::Metrics::default());
    let ingest = offline_ingest(&store, &metrics, true);
    let management = wiremock::MockServer::start().await;
    let login = wiremock::MockServer::start().await;
    mount_login(&login).await;
    Poll { store, ingest, management, login }
}

fn poller(p: &Poll) -> chatwarden::audit::poller::ManagementPoller {
    use chatwarden::audit::poller::{ManagementPoller, PollSettings};
    use chatwarden::entra::app_token::AppTokenProvider;
    use std::sync::Arc;
    let metrics = Arc::new(chatwarden::metrics::Metrics::default());
    let retry = chatwarden::config::RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        request_timeout: Duration::from_secs(2),
    };
    let config = serve_config(&p.login, &p.login);
    let tokens = AppTokenProvider::client_credentials_for(
        config.app.as_ref().unwrap(),
        &config.endpoints.login,
        chatwarden::startup::MANAGEMENT_SCOPE,
        retry,
        metrics.clone(),
    )
    .unwrap();
    let settings = PollSettings {
        base: url::Url::parse(&p.management.uri()).unwrap(),
        tenant_id: TENANT_ID.into(),
        interval: Duration::from_secs(60),
        lookback: Duration::from_secs(3600),
    };
    ManagementPoller::new(settings, tokens, p.store.clone(), p.ingest.clone(), retry, metrics).unwrap()
}

#[tokio::test]
async fn the_poller_ingests_every_record_exactly_once_across_a_restart() {
    let p = poll_setup(&sqlite_url()).await;
    mount_management(&p.management, true).await;
    // First run: pages 1 and 2 are ingested, page 3 fails: the window is not checkpointed.
    let first = poller(&p).poll_once().await;
    assert!(first.is_err(), "{first:?}");
    assert_eq!(p.store.audit_count().await.unwrap(), 8);
    assert_eq!(p.store.checkpoint(chatwarden::audit::poller::SOURCE).await.unwrap(), None);
    // Restart: a new poller over the same database finishes the window without duplicates.
    let second = poller(&p).poll_once().await.unwrap();
    assert_eq!(second.contents, 2);
    assert_eq!(second.records, 4);
    assert_eq!(p.store.audit_count().await.unwrap(), 12);
    assert!(p.store.checkpoint(chatwarden::audit::poller::SOURCE).await.unwrap().is_some());
    let cases = p.store.history(50).await.unwrap();
    assert_eq!(cases.len(), 12, "one case per (chat, user)");
    // The Exchange records were ignored; the subscription start was idempotent.
    assert!(p.store.audit_for_chat("19:none").await.unwrap().is_empty());
    // The app token asked for the Management API scope.
    let forms: Vec<String> =
        p.login.received_requests().await.unwrap().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();
    assert!(forms.iter().all(|f| f.contains("scope=https%3A%2F%2Fmanage.office.com%2F.default")), "{forms:?}");
    // The same record pushed again opens nothing.
    let again = AuditRecord::parse(member_added("poll-p1b1r1")).unwrap();
    let mut again = again;
    again.chat_thread_id = Some("19:chat-p1b1r1@thread.v2".into());
    let report = p.ingest.ingest(vec![again], "push").await.unwrap();
    assert!(report.cases.is_empty());
    assert_eq!(p.store.history(50).await.unwrap().len(), 12);
}

#[tokio::test]
async fn the_poller_never_follows_a_url_to_another_host() {
    let p = poll_setup(&sqlite_url()).await;
    let feed = format!("/api/v1.0/{TENANT_ID}/activity/feed");
    Mock::given(method("POST"))
        .and(path(format!("{feed}/subscriptions/start")))
        .respond_with(ResponseTemplate::new(200))
        .mount(&p.management)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{feed}/subscriptions/content")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([{"contentUri": "https://attacker.example/blob", "contentId": "x"}])))
        .mount(&p.management)
        .await;
    let err = poller(&p).poll_once().await.unwrap_err();
    assert!(matches!(err, chatwarden::audit::poller::PollError::ForeignUrl(_)), "{err:?}");
}

/// A record of `own-1`'s MemberAdded (same chat, same user) with its own id and time.
fn member_added_at(id: &str, at: time::OffsetDateTime) -> Value {
    let mut record = member_added(id);
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    record["CreationTime"] = json!(at.format(&format).unwrap());
    record
}

async fn push_signed(app: &TestApp, records: &[Value]) -> Value {
    let body = serde_json::to_vec(&json!(records)).unwrap();
    let response = push(app, &body, Some(sign(SECRET.as_bytes(), &body))).await;
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

/// Approves `case_id` as the second admin and waits until it is done.
async fn approve_and_finish(app: &TestApp, store: &Store, case_id: &str) {
    let url = app.service_url();
    let approve = crate::cases::invoke(&url, &format!("inv-{case_id}"), SECOND_ADMIN_OID, case_id, "approve");
    assert_eq!(app.post_activity(Some(&valid_token(&url)), &approve).await.status(), 200);
    crate::cases::wait_state(store, case_id, CaseState::Done).await;
}

#[tokio::test]
async fn a_user_pulled_back_into_a_removed_chat_is_alerted_again() {
    let app = alert_app().await;
    let store = Store::connect(&app.database_url).await.unwrap();
    let first = push_signed(&app, &[member_added("push-1")]).await;
    let first_case = first["cases"][0].as_str().unwrap().to_owned();
    approve_and_finish(&app, &store, &first_case).await;

    // The same record again (the poller's look-back, a SIEM replay): nothing new.
    assert_eq!(push_signed(&app, &[member_added("push-1")]).await["cases"], json!([]));
    // A record of the same pair from before the removal, arriving late (the audit log lags).
    let late = member_added_at("late-1", time::OffsetDateTime::now_utc() - time::Duration::hours(1));
    assert_eq!(push_signed(&app, &[late]).await["cases"], json!([]));
    assert_eq!(app.metrics.get("chatwarden_alert_cases_total", &[("result", "already_closed")]), 1);

    // The outsider adds the same user to the same 1:1 chat again, after the removal.
    let back = member_added_at("back-1", time::OffsetDateTime::now_utc() + time::Duration::minutes(1));
    let again = push_signed(&app, &[back]).await;
    let second_case = again["cases"][0].as_str().expect("a new case for the returning attacker").to_owned();
    assert_ne!(second_case, first_case);
    let case = store.case(&second_case).await.unwrap().unwrap();
    assert_eq!(case.state, CaseState::Proposed);
    assert_eq!(case.evidence, ["back-1"]);
    assert_eq!(created_threads(&app).await.len(), 2, "a second card was posted");
}

#[tokio::test]
async fn a_record_for_a_pair_with_an_open_case_joins_its_evidence() {
    let app = alert_app().await;
    let store = Store::connect(&app.database_url).await.unwrap();
    let first = push_signed(&app, &[member_added("push-1")]).await;
    let case_id = first["cases"][0].as_str().unwrap().to_owned();
    let later = member_added_at("push-2", time::OffsetDateTime::now_utc());
    assert_eq!(push_signed(&app, &[later.clone(), later]).await["cases"], json!([]));
    let case = store.case(&case_id).await.unwrap().unwrap();
    assert_eq!(case.evidence, ["push-1", "push-2"]);
    let added: Vec<_> = store.events(&case_id).await.unwrap().into_iter().filter(|e| e.kind == "evidence_added").collect();
    assert_eq!(added.len(), 1, "{added:?}");
    assert!(added[0].detail.as_deref().unwrap().contains("push-2"));
    assert_eq!(created_threads(&app).await.len(), 1);
}

#[tokio::test]
async fn a_rejected_pair_is_alerted_again_only_by_a_newer_record() {
    let app = alert_app().await;
    let store = Store::connect(&app.database_url).await.unwrap();
    let first = push_signed(&app, &[member_added("push-1")]).await;
    let case_id = first["cases"][0].as_str().unwrap().to_owned();
    let url = app.service_url();
    let reject = crate::cases::invoke(&url, "inv-r", SECOND_ADMIN_OID, &case_id, "reject");
    app.post_activity(Some(&valid_token(&url)), &reject).await;
    crate::cases::wait_state(&store, &case_id, CaseState::Rejected).await;
    let older = member_added_at("older-1", time::OffsetDateTime::now_utc() - time::Duration::minutes(5));
    assert_eq!(push_signed(&app, &[older]).await["cases"], json!([]));
    let newer = member_added_at("newer-1", time::OffsetDateTime::now_utc() + time::Duration::minutes(1));
    assert_eq!(push_signed(&app, &[newer]).await["cases"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn remove_external_counts_a_pair_removed_only_if_no_record_is_newer_than_the_removal() {
    let app = alert_app().await;
    let store = Store::connect(&app.database_url).await.unwrap();
    let first = push_signed(&app, &[member_added("push-1")]).await;
    approve_and_finish(&app, &store, first["cases"][0].as_str().unwrap()).await;
    let url = app.service_url();
    let mut command = message(&url, "/remove-external evil.example");
    command["id"] = json!("cmd-ext-1");
    app.post_activity(Some(&valid_token(&url)), &command).await;
    let last = replies(&app).await.pop().unwrap();
    assert!(last["text"].as_str().unwrap().contains("already removed"), "{last}");

    push_signed(&app, &[member_added_at("back-1", time::OffsetDateTime::now_utc() + time::Duration::minutes(1))]).await;
    command["id"] = json!("cmd-ext-2");
    app.post_activity(Some(&valid_token(&url)), &command).await;
    let bulk = store.history(10).await.unwrap().into_iter().find(|c| c.kind == CaseKind::RemoveExternal).expect("a bulk case");
    assert_eq!(bulk.targets.len(), 1);
    assert_eq!(bulk.targets[0].thread_id.as_deref(), Some(CHAT));
    assert_eq!(bulk.evidence, ["back-1"]);
}

#[tokio::test]
async fn the_service_prunes_records_older_than_the_retention_at_start() {
    let url = sqlite_url();
    let store = Store::connect(&url).await.unwrap();
    let old = now_ms() - 10 * 86_400_000;
    store.insert_audit(&AuditRecord::parse(member_added("old-1")).unwrap(), old).await.unwrap();
    store.insert_audit(&AuditRecord::parse(member_added("new-1")).unwrap(), now_ms()).await.unwrap();
    store.record_event(None, None, "refused", Some("not_admin"), old).await.unwrap();
    let app = spawn_app_with(Fakes { database_url: Some(url), ..Fakes::default() }, |c| {
        c.retention = Some(Duration::from_secs(8 * 86_400));
    })
    .await;
    let store = Store::connect(&app.database_url).await.unwrap();
    for _ in 0..200 {
        if store.audit_count().await.unwrap() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.audit_count().await.unwrap(), 1);
    assert_eq!(store.audit_for_chat(CHAT).await.unwrap().iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["new-1"]);
    // The refusal is history: audit-record retention leaves the chain whole.
    assert_eq!(store.refusals(10).await.unwrap().len(), 1);
    assert!(store.verify_history(None).await.is_ok());
}
