//! The audit index: records stored once (by `Id`), queryable by chat, by user (object id or UPN,
//! case-insensitive) and by external tenant or domain.

use sqlx::{Any, Row as _};

use super::sql::{insert_or_skip, on_conflict_skip, placeholders};
use super::{Backend, Store, StoreError};
use crate::audit::record::{AuditParseError, AuditRecord};

/// Most records one lookup returns.
const LOOKUP_LIMIT: i64 = 5_000;

/// Records per multi-row insert (7 parameters each: 14,000, under SQLite's 32,766 and
/// PostgreSQL's 65,535 parameters per statement); why 2,000 and not 500 is measured in
/// BENCHMARKS.md (audit ingestion).
const RECORDS_PER_STATEMENT: usize = 2_000;
/// Lookup rows per multi-row insert (3 parameters each: 30,000).
const KEYS_PER_STATEMENT: usize = 10_000;
/// Bits of a record's sequence number below its lookup bucket: 65,536 records per bucket
/// (migration 0006). New lookup rows go to the newest bucket's subtree only, so a commit writes
/// the same few pages however many records are stored; a lookup probes each bucket once.
const BUCKET_BITS: u32 = 16;
/// Records re-indexed per transaction when the index is rebuilt.
const REINDEX_BATCH: i64 = 2_000;
/// The setting that asks for the lookup index to be rebuilt from the stored records.
const REINDEX_SETTING: &str = "audit_reindex";

/// What a lookup key names, and its prefix in the key's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    /// A chat thread id, matched as written.
    Chat,
    /// A member's or the actor's object id or UPN, matched case-insensitively.
    User,
    /// An external tenant id or domain, matched case-insensitively.
    Party,
}

impl KeyKind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Chat => "c:",
            Self::User => "u:",
            Self::Party => "p:",
        }
    }

    fn folds_case(self) -> bool {
        self != Self::Chat
    }
}

/// A lookup key: what it names and the value as given.
type Key<'a> = (KeyKind, &'a str);

/// Calls `each` with every lookup key of a record as (kind, value as written): its chat; each
/// internal member's and the actor's object id and UPN; each external tenant id and domain. The
/// same key can come more than once (a UPN that is also the actor's).
fn for_each_key(record: &AuditRecord, mut each: impl FnMut(KeyKind, &str)) {
    if let Some(chat) = record.chat_thread_id.as_deref() {
        each(KeyKind::Chat, chat);
    }
    let parties = record.external_parties();
    let members = record.internal_members_among(&parties).flat_map(|m| [m.user_object_id.as_deref(), m.upn.as_deref()]);
    for user in members.chain([record.user_key.as_deref(), record.user_id.as_deref()]).flatten() {
        if !user.is_empty() {
            each(KeyKind::User, user);
        }
    }
    for party in parties.tenant_ids.iter().chain(&parties.domains) {
        each(KeyKind::Party, party);
    }
}

/// The first 8 bytes of a digest, as a signed integer.
fn first_eight(digest: &[u8]) -> i64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// The stored form of a lookup key: the first 8 bytes of the SHA-256 of its text (the prefix, then
/// the value, lower case for users and parties), as a signed integer. The text is never built: the
/// value is fed to the hash in lower-cased pieces from a stack buffer. Collisions are filtered out
/// when records are read back (`matches`), and SHA-256 keeps anyone from crafting records whose
/// keys collide with a given user's.
fn key_hash((kind, value): Key<'_>) -> i64 {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    hasher.update(kind.prefix().as_bytes());
    if kind.folds_case() {
        let mut buffer = [0u8; 64];
        for piece in value.as_bytes().chunks(buffer.len()) {
            let lower = &mut buffer[..piece.len()];
            lower.copy_from_slice(piece);
            lower.make_ascii_lowercase();
            hasher.update(&*lower);
        }
    } else {
        hasher.update(value.as_bytes());
    }
    first_eight(&hasher.finalize())
}

/// Whether `record` really has every one of `keys` (a hash match is only a candidate).
fn matches(record: &AuditRecord, keys: &[Key<'_>]) -> bool {
    let mut found = vec![false; keys.len()];
    for_each_key(record, |kind, value| {
        for ((wanted_kind, wanted), found) in keys.iter().zip(found.iter_mut()) {
            if *wanted_kind == kind {
                *found |= if kind.folds_case() { wanted.eq_ignore_ascii_case(value) } else { *wanted == value };
            }
        }
    });
    found.into_iter().all(|f| f)
}

/// The lookup bucket of a record's sequence number.
fn bucket_of(seq: i64) -> i64 {
    seq >> BUCKET_BITS
}

/// An SQL condition: `column` is one of the buckets from the oldest stored record's to the
/// newest's. Written so that each backend probes the primary key once per bucket: a recursive
/// list on SQLite, an array (`= ANY`) on PostgreSQL, whose planner cannot estimate a recursive
/// list. MIN and MAX are separate subqueries: SQLite reads a lone MIN or MAX from the index end.
fn in_any_bucket(backend: Backend, column: &str) -> String {
    let first = format!("(SELECT MIN(seq) FROM audit_records) >> {BUCKET_BITS}");
    let last = format!("(SELECT MAX(seq) FROM audit_records) >> {BUCKET_BITS}");
    match backend {
        Backend::Sqlite => format!(
            "{column} IN (WITH RECURSIVE buckets(b) AS (SELECT {first} UNION ALL SELECT b + 1 FROM buckets WHERE b < {last}) SELECT b FROM buckets)"
        ),
        Backend::Postgres => format!("{column} = ANY(ARRAY(SELECT generate_series({first}, {last})))"),
    }
}

/// Sorted, distinct (bucket, key hash, record sequence) rows for the given records.
pub(super) fn lookup_rows<'r>(records: impl Iterator<Item = (&'r AuditRecord, i64)>) -> Vec<(i64, i64, i64)> {
    let mut rows: Vec<(i64, i64, i64)> = Vec::new();
    for (record, seq) in records {
        for_each_key(record, |kind, value| rows.push((bucket_of(seq), key_hash((kind, value)), seq)));
    }
    // In key order, each insert lands next to the previous one in the B-tree: the pages a batch
    // touches are visited once each instead of at random.
    rows.sort_unstable();
    rows.dedup();
    rows
}

impl Store {
    /// Stores a record unless one with the same id exists; returns whether it was new.
    pub async fn insert_audit(&self, record: &AuditRecord, now: i64) -> Result<bool, StoreError> {
        Ok(self.insert_audit_batch(std::slice::from_ref(record), now).await?.first().copied().unwrap_or(false))
    }

    /// Stores many records in one transaction (each once, by id); returns which were new. Rows
    /// are written with multi-row inserts, so a batch costs a handful of statements.
    pub async fn insert_audit_batch(&self, records: &[AuditRecord], now: i64) -> Result<Vec<bool>, StoreError> {
        let mut fresh: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        let mut tx = self.pool.begin().await?;
        for chunk in records.chunks(RECORDS_PER_STATEMENT) {
            let sql = format!(
                "{} audit_records (id, tenant_id, operation, created_at, chat_thread_id, raw, ingested_at) VALUES {} {} RETURNING id, seq",
                insert_or_skip(self.backend()),
                placeholders(self.backend(), chunk.len(), 7),
                on_conflict_skip(self.backend(), "(id)"),
            );
            let mut insert = sqlx::query_as::<Any, (String, i64)>(&sql);
            for record in chunk {
                insert = insert
                    .bind(record.id.clone())
                    .bind(record.organization_id.to_ascii_lowercase())
                    .bind(record.operation.as_str().to_owned())
                    .bind(record.created_at)
                    .bind(record.chat_thread_id.clone())
                    .bind(record.raw_json().to_owned())
                    .bind(now);
            }
            let inserted: std::collections::HashMap<String, i64> = insert.fetch_all(&mut *tx).await?.into_iter().collect();
            // A record id seen twice in one chunk is indexed (and reported) once.
            let mut indexed = std::collections::HashSet::new();
            let new_records =
                chunk.iter().filter_map(|r| inserted.get(&r.id).filter(|_| indexed.insert(r.id.as_str())).map(|seq| (r, *seq)));
            self.insert_lookup_rows(&mut tx, &lookup_rows(new_records)).await?;
            fresh.extend(inserted);
        }
        tx.commit().await?;
        // A record id seen twice in one batch is new only the first time.
        let mut reported = std::collections::HashSet::new();
        Ok(records.iter().map(|r| fresh.contains_key(&r.id) && reported.insert(r.id.clone())).collect())
    }

    async fn insert_lookup_rows(&self, tx: &mut sqlx::Transaction<'_, Any>, rows: &[(i64, i64, i64)]) -> Result<(), StoreError> {
        for rows in rows.chunks(KEYS_PER_STATEMENT) {
            let sql = format!(
                "{} audit_lookup (bucket, key_hash, record_seq) VALUES {} {}",
                insert_or_skip(self.backend()),
                placeholders(self.backend(), rows.len(), 3),
                on_conflict_skip(self.backend(), ""),
            );
            let mut insert = sqlx::query::<Any>(&sql);
            for (bucket, hash, seq) in rows {
                insert = insert.bind(*bucket).bind(*hash).bind(*seq);
            }
            insert.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// Rebuilds the lookup index from the stored records when a migration asked for it (the
    /// `audit_reindex` setting), in batches. Each batch records its progress in the setting in the
    /// same transaction, so a process stopped half way (a liveness probe, a deploy) goes on where
    /// it stopped; safe on several replicas at once (rows are inserted once).
    pub(super) async fn reindex_audit_if_asked(&self) -> Result<(), StoreError> {
        let Some(progress) = self.setting(REINDEX_SETTING).await? else {
            return Ok(());
        };
        // 'pending' (from the migration) or the last sequence number indexed.
        let mut after = progress.parse::<i64>().unwrap_or(i64::MIN);
        tracing::info!(after_seq = after, "rebuilding the audit lookup index from the stored records");
        let mut total = 0usize;
        loop {
            let rows = sqlx::query("SELECT seq, raw FROM audit_records WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(after)
                .bind(REINDEX_BATCH)
                .fetch_all(&self.pool)
                .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("seq")?;
            let mut records = Vec::with_capacity(rows.len());
            for row in rows {
                let seq: i64 = row.try_get("seq")?;
                match AuditRecord::from_json(row.try_get::<String, _>("raw")?) {
                    Ok(record) => records.push((record, seq)),
                    Err(err) => tracing::warn!(error = %err, seq, "a stored audit record no longer parses; it is not indexed"),
                }
            }
            total += records.len();
            let mut tx = self.pool.begin().await?;
            self.insert_lookup_rows(&mut tx, &lookup_rows(records.iter().map(|(r, seq)| (r, *seq)))).await?;
            sqlx::query("UPDATE settings SET value = $1 WHERE key = $2")
                .bind(after.to_string())
                .bind(REINDEX_SETTING)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        sqlx::query("DELETE FROM settings WHERE key = $1").bind(REINDEX_SETTING).execute(&self.pool).await?;
        tracing::info!(records = total, "audit lookup index rebuilt");
        Ok(())
    }

    /// Stored records carrying the hash of `key` (and of `also`, when given; oldest first),
    /// keeping those that really have the keys. `key` drives, probed in each bucket: each of its
    /// records is checked for `also` with one probe of the (bucket, key_hash, record_seq) primary
    /// key.
    async fn audit_with_keys(&self, key: Key<'_>, also: Option<Key<'_>>) -> Result<Vec<AuditRecord>, StoreError> {
        let sql = match also {
            None => format!(
                "SELECT raw FROM audit_records WHERE seq IN (SELECT record_seq FROM audit_lookup WHERE {} AND key_hash = $1) \
                 ORDER BY COALESCE(created_at, 9223372036854775807), id LIMIT $2",
                in_any_bucket(self.backend(), "bucket"),
            ),
            Some(_) => format!(
                "SELECT raw FROM audit_records WHERE seq IN (SELECT a.record_seq FROM audit_lookup a \
                 JOIN audit_lookup b ON b.bucket = a.bucket AND b.key_hash = $2 AND b.record_seq = a.record_seq \
                 WHERE {} AND a.key_hash = $1) \
                 ORDER BY COALESCE(created_at, 9223372036854775807), id LIMIT $3",
                in_any_bucket(self.backend(), "a.bucket"),
            ),
        };
        let mut query = sqlx::query(&sql).bind(key_hash(key));
        if let Some(also) = also {
            query = query.bind(key_hash(also));
        }
        let keys: Vec<Key<'_>> = std::iter::once(key).chain(also).collect();
        let rows = query.bind(LOOKUP_LIMIT).fetch_all(&self.pool).await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let raw: String = row.try_get("raw")?;
            match AuditRecord::from_json(raw) {
                Ok(record) if matches(&record, &keys) => records.push(record),
                Ok(_) => {}
                Err(AuditParseError::Malformed(err)) => return Err(StoreError::Corrupt(format!("audit record JSON: {err}"))),
                Err(err) => tracing::warn!(error = %err, "stored audit record no longer parses"),
            }
        }
        Ok(records)
    }

    /// Records of `chat` that name `user` (object id or UPN) as a member or as the actor.
    pub async fn audit_for_chat_user(&self, chat: &str, user: &str) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_with_keys((KeyKind::Chat, chat), Some((KeyKind::User, user))).await
    }

    /// Records of one chat, oldest first.
    pub async fn audit_for_chat(&self, chat: &str) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_with_keys((KeyKind::Chat, chat), None).await
    }

    /// Records that name `user` (object id or UPN, case-insensitive) as a member or the actor.
    pub async fn audit_for_user(&self, user: &str) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_with_keys((KeyKind::User, user), None).await
    }

    /// Records of chats involving an external tenant id or domain (case-insensitive).
    pub async fn audit_for_party(&self, party: &str) -> Result<Vec<AuditRecord>, StoreError> {
        self.audit_with_keys((KeyKind::Party, party), None).await
    }

    /// How many audit records are stored.
    pub async fn audit_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM audit_records").fetch_one(&self.pool).await?)
    }

    /// How many lookup rows the audit index holds (a size check for operators and tests).
    pub async fn lookup_row_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM audit_lookup").fetch_one(&self.pool).await?)
    }
}

impl Store {
    /// The chats of audit records created since `since` (Unix ms), most recent first, at most
    /// `limit`: what a reconciliation after missed change notifications reads again.
    pub async fn recent_audit_chats(&self, since: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT chat_thread_id FROM audit_records WHERE chat_thread_id IS NOT NULL AND created_at >= $1 \
             GROUP BY chat_thread_id ORDER BY MAX(created_at) DESC LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash of a key's whole text, computed the plain way.
    fn text_hash(text: &str) -> i64 {
        use sha2::Digest as _;
        first_eight(&sha2::Sha256::digest(text.as_bytes()))
    }

    #[test]
    fn key_hashes_are_stable_and_keys_are_normalised() {
        // A stored index must read back the same in every version: pin the hash of one key.
        // sha256("c:19:a@thread.v2")[..8] as a big-endian i64 (computed with Python's hashlib).
        assert_eq!(text_hash("c:19:a@thread.v2"), -1133618623846795362);
        assert_eq!(key_hash((KeyKind::Chat, "19:a@thread.v2")), -1133618623846795362);
        // Hashed in pieces, the value gives the hash of the key's text: lower case for users and
        // parties (values longer than the lower-casing buffer too), as written for chats.
        let long = "A".repeat(150);
        assert_eq!(key_hash((KeyKind::User, "Alice@Contoso.COM")), text_hash("u:alice@contoso.com"));
        assert_eq!(key_hash((KeyKind::Party, &format!("{long}@Contoso.COM"))), text_hash(&format!("p:{}@contoso.com", "a".repeat(150))));
        assert_eq!(key_hash((KeyKind::Chat, "19:A@thread.v2")), text_hash("c:19:A@thread.v2"));
        assert_ne!(key_hash((KeyKind::Chat, "19:A@thread.v2")), key_hash((KeyKind::Chat, "19:a@thread.v2")));
    }

    #[test]
    fn lookup_rows_are_sorted_and_distinct() {
        let record = AuditRecord::from_json(
            r#"{"Id": "1", "Operation": "MemberAdded", "OrganizationId": "t", "ChatThreadId": "19:x@unq.gbl.spaces",
                "UserId": "Bob@contoso.com", "UserKey": "bob@contoso.com"}"#,
        )
        .unwrap();
        let rows = lookup_rows([(&record, 70_000), (&record, 7), (&record, 7)].into_iter());
        assert_eq!(rows.len(), 4, "chat key and one user key (UserId and UserKey are the same user), twice: {rows:?}");
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(rows.iter().map(|(bucket, _, seq)| (*bucket, *seq)).collect::<Vec<_>>(), [(0, 7), (0, 7), (1, 70_000), (1, 70_000)]);
        assert!(matches(&record, &[(KeyKind::Chat, "19:x@unq.gbl.spaces"), (KeyKind::User, "BOB@contoso.com")]));
        assert!(!matches(&record, &[(KeyKind::Chat, "19:x@unq.gbl.spaces"), (KeyKind::User, "eve@contoso.com")]));
        assert!(!matches(&record, &[(KeyKind::Chat, "19:X@unq.gbl.spaces")]), "chats are matched as written");
        assert!(!matches(&record, &[(KeyKind::Party, "bob@contoso.com")]), "a user is not a party");
    }

    #[test]
    fn buckets_hold_65536_records_each() {
        assert_eq!((bucket_of(1), bucket_of(65_535), bucket_of(65_536), bucket_of(200_000)), (0, 0, 1, 3));
    }
}
