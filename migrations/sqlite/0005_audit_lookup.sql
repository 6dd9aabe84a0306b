-- Compact audit lookups. Every way a record is found (its chat, the users and the external
-- parties it names) becomes a row of (key_hash, record_seq): the first 8 bytes of the SHA-256 of
-- the lookup key and the record's sequence number, two integers instead of two ~40-character
-- strings. The tree is about a fifth of audit_keys' size plus the chat index it replaces, so a
-- batch of inserts dirties far fewer pages. Lookups re-check each record they read, so a hash
-- collision can never return a record that does not match.
-- Keys: 'c:' + chat thread id (as written), 'u:' + a member's or the actor's object id or UPN,
-- 'p:' + an external tenant id or domain (both lower case).
-- The records move to a table with an explicit sequence number (a plain rowid could change on
-- VACUUM); the new index is filled by the service at start-up from the stored records (SQLite has
-- no SHA-256), as the 'audit_reindex' setting asks.
CREATE TABLE audit_records_v5 (
    seq            INTEGER PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    tenant_id      TEXT NOT NULL,
    operation      TEXT NOT NULL,
    created_at     BIGINT,
    chat_thread_id TEXT,
    raw            TEXT NOT NULL,
    ingested_at    BIGINT NOT NULL
);
INSERT INTO audit_records_v5 (id, tenant_id, operation, created_at, chat_thread_id, raw, ingested_at)
    SELECT id, tenant_id, operation, created_at, chat_thread_id, raw, ingested_at FROM audit_records ORDER BY ingested_at, rowid;
DROP TABLE audit_keys;
DROP TABLE audit_records;
ALTER TABLE audit_records_v5 RENAME TO audit_records;

CREATE TABLE audit_lookup (
    key_hash   BIGINT NOT NULL,
    record_seq BIGINT NOT NULL,
    PRIMARY KEY (key_hash, record_seq)
) WITHOUT ROWID;

INSERT INTO settings (key, value, updated_at) SELECT 'audit_reindex', 'pending', 0 WHERE EXISTS (SELECT 1 FROM audit_records);
