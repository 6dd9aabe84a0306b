-- A history an auditor can verify. Every event gets its place in one chain per database (seq,
-- gapless) and a SHA-256 over its content and the previous event's hash (see src/history/chain.rs
-- for the canonical form). history_chain is the chain's head: writers update it in the
-- transaction that adds the event, which orders them, so concurrent writers on PostgreSQL keep
-- one well-ordered chain. Events written before this migration are sealed, oldest first, by the
-- first start after it.
ALTER TABLE events ADD COLUMN seq BIGINT;
ALTER TABLE events ADD COLUMN prev_hash TEXT;
ALTER TABLE events ADD COLUMN hash TEXT;
-- Structured facts of an event as compact JSON text (Graph's ids for a target, the approver's UPN).
ALTER TABLE events ADD COLUMN data TEXT;
CREATE UNIQUE INDEX events_seq ON events (seq);
CREATE INDEX events_at ON events (at);
CREATE TABLE history_chain (
    id   BIGINT PRIMARY KEY,
    seq  BIGINT NOT NULL,
    head TEXT NOT NULL
);
INSERT INTO history_chain (id, seq, head) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
-- What history retention pruned: the last pruned event's place and hash, signed, so the chain
-- that remains still verifies from there.
CREATE TABLE history_checkpoints (
    seq       BIGINT PRIMARY KEY,
    hash      TEXT NOT NULL,
    pruned    BIGINT NOT NULL,
    pruned_at BIGINT NOT NULL,
    signature TEXT NOT NULL
);
-- The forwarding outbox is the chain itself: this is how far the receiver has acknowledged.
CREATE TABLE forward_cursor (
    id         BIGINT PRIMARY KEY,
    seq        BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO forward_cursor (id, seq, updated_at) VALUES (1, 0, 0);
-- What Graph said about each target, provably: its status, error code, request ids and date.
ALTER TABLE case_targets ADD COLUMN graph_code TEXT;
ALTER TABLE case_targets ADD COLUMN graph_request_id TEXT;
ALTER TABLE case_targets ADD COLUMN client_request_id TEXT;
ALTER TABLE case_targets ADD COLUMN graph_date TEXT;
