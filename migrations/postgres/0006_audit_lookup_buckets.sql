-- Audit lookups grouped by the age of the record. Every lookup row gains the bucket of its
-- record's sequence number (bucket = record_seq >> 16: 65,536 records per bucket) as the first
-- column of the primary key. Key hashes are random, so in a single (key_hash, record_seq) tree
-- each transaction's new rows land on leaf pages spread over the whole index, and the more
-- records stored, the more pages each commit writes. New rows now go to the newest bucket's
-- small subtree only; a lookup probes each bucket (one index probe per 65,536 records).
-- The rows are copied; no re-index is needed.
CREATE TABLE audit_lookup_v6 (
    bucket     BIGINT NOT NULL,
    key_hash   BIGINT NOT NULL,
    record_seq BIGINT NOT NULL,
    CONSTRAINT audit_lookup_bucketed_pkey PRIMARY KEY (bucket, key_hash, record_seq)
);
INSERT INTO audit_lookup_v6 (bucket, key_hash, record_seq)
    SELECT record_seq >> 16, key_hash, record_seq FROM audit_lookup ORDER BY 1, 2, 3;
DROP TABLE audit_lookup;
ALTER TABLE audit_lookup_v6 RENAME TO audit_lookup;
