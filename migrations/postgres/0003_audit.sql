-- Teams audit records (stored once, by Id) and the people each one names, for lookups by chat,
-- by user and by external party; the poller's checkpoint; settings learned at run time.

CREATE TABLE audit_records (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL,
    operation      TEXT NOT NULL,
    created_at     BIGINT,
    chat_thread_id TEXT,
    raw            TEXT NOT NULL,
    ingested_at    BIGINT NOT NULL
);
CREATE INDEX audit_records_chat ON audit_records (chat_thread_id);

-- side: 'internal' (a member of ours), 'actor' (who did it), 'external' (a foreign tenant or domain).
CREATE TABLE audit_people (
    record_id    TEXT NOT NULL REFERENCES audit_records (id),
    side         TEXT NOT NULL,
    user_oid     TEXT,
    upn          TEXT,
    tenant_id    TEXT,
    domain       TEXT
);
CREATE INDEX audit_people_record ON audit_people (record_id);
CREATE INDEX audit_people_oid ON audit_people (user_oid);
CREATE INDEX audit_people_upn ON audit_people (upn);
CREATE INDEX audit_people_tenant ON audit_people (tenant_id);
CREATE INDEX audit_people_domain ON audit_people (domain);

CREATE TABLE poll_checkpoints (
    source     TEXT PRIMARY KEY,
    window_end BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE poll_contents (
    content_id TEXT PRIMARY KEY,
    fetched_at BIGINT NOT NULL
);

CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
