-- Cases, their targets, evidence and history; activity dedupe keys.
-- Times are Unix milliseconds (BIGINT) so the same queries run on SQLite and PostgreSQL.

CREATE TABLE cases (
    id                TEXT PRIMARY KEY,
    kind              TEXT NOT NULL,
    state             TEXT NOT NULL,
    source            TEXT NOT NULL,
    tenant_id         TEXT NOT NULL,
    requester_oid     TEXT NOT NULL,
    requester_name    TEXT NOT NULL,
    requester_user_id TEXT NOT NULL,
    reason            TEXT,
    no_evidence       BIGINT NOT NULL DEFAULT 0,
    approver_oid      TEXT,
    approver_name     TEXT,
    approver_user_id  TEXT,
    decided_at        BIGINT,
    service_url       TEXT,
    conversation_id   TEXT,
    card_activity_id  TEXT,
    lease_owner       TEXT,
    lease_until       BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    version           BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX cases_state ON cases (state, expires_at);
CREATE INDEX cases_created ON cases (created_at);

CREATE TABLE case_targets (
    case_id        TEXT NOT NULL REFERENCES cases (id),
    position       BIGINT NOT NULL,
    thread_id      TEXT,
    user_ref       TEXT NOT NULL,
    user_oid       TEXT,
    user_tenant_id TEXT NOT NULL,
    display_name   TEXT,
    status         TEXT NOT NULL DEFAULT 'pending',
    graph_status   BIGINT,
    detail         TEXT,
    updated_at     BIGINT NOT NULL,
    PRIMARY KEY (case_id, position)
);

CREATE TABLE case_evidence (
    case_id         TEXT NOT NULL REFERENCES cases (id),
    audit_record_id TEXT NOT NULL,
    PRIMARY KEY (case_id, audit_record_id)
);

-- The decision log: every request, approval, refusal and Graph result. case_id is NULL for
-- refusals that concern no case.
CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    case_id    TEXT,
    at         BIGINT NOT NULL,
    actor_oid  TEXT,
    actor_name TEXT,
    kind       TEXT NOT NULL,
    detail     TEXT
);
CREATE INDEX events_case ON events (case_id, id);

-- Activities already processed (Teams redelivers slow ones), kept across restarts.
CREATE TABLE processed_activities (
    activity_key TEXT PRIMARY KEY,
    case_id      TEXT,
    processed_at BIGINT NOT NULL
);
