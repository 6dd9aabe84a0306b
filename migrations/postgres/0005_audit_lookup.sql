-- Compact audit lookups. Every way a record is found (its chat, the users and the external
-- parties it names) becomes a row of (key_hash, record_seq): the first 8 bytes of the SHA-256 of
-- the lookup key and the record's sequence number, two integers instead of two ~40-character
-- strings. The tree is about a fifth of audit_keys' size plus the chat index it replaces, so a
-- batch of inserts dirties far fewer pages. Lookups re-check each record they read, so a hash
-- collision can never return a record that does not match.
-- Keys: 'c:' + chat thread id (as written), 'u:' + a member's or the actor's object id or UPN,
-- 'p:' + an external tenant id or domain (both lower case).
-- The new index is filled by the service at start-up from the stored records (one code path for
-- both backends), as the 'audit_reindex' setting asks.
ALTER TABLE audit_records ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX audit_records_seq ON audit_records (seq);
DROP INDEX audit_records_chat;
DROP TABLE audit_keys;

CREATE TABLE audit_lookup (
    key_hash   BIGINT NOT NULL,
    record_seq BIGINT NOT NULL,
    PRIMARY KEY (key_hash, record_seq)
);

INSERT INTO settings (key, value, updated_at) SELECT 'audit_reindex', 'pending', 0 WHERE EXISTS (SELECT 1 FROM audit_records);
