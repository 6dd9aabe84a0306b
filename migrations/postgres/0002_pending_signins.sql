-- Approvals waiting for the approving admin to sign in (the Action.Submit path): once the
-- sign-in completes, the decision is applied without pressing Approve again.
CREATE TABLE pending_signins (
    admin_oid  TEXT PRIMARY KEY,
    case_id    TEXT NOT NULL REFERENCES cases (id),
    decision   TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
