-- Re-alerting and retention. An alert's (chat, user) key now lives only while its case is open:
-- it is released in the transaction that closes the case, so a user pulled back into the same
-- chat after a removal is alerted again. Keys of cases closed before this migration go now.
DELETE FROM processed_activities
    WHERE activity_key LIKE 'alert|%'
      AND case_id IN (SELECT id FROM cases WHERE state IN ('done', 'failed', 'rejected', 'expired'));
-- Releasing a closed case's keys, and the retention sweep of old keys.
CREATE INDEX processed_activities_case ON processed_activities (case_id);
CREATE INDEX processed_activities_at ON processed_activities (processed_at);
-- When was a (chat, user) pair last removed or rejected.
CREATE INDEX case_targets_thread ON case_targets (thread_id);
-- The retention sweep of refusals (events that concern no case).
CREATE INDEX events_refusals_at ON events (at) WHERE case_id IS NULL;
CREATE INDEX poll_contents_fetched ON poll_contents (fetched_at);
-- The retention sweep keeps audit records that are evidence of a case.
CREATE INDEX case_evidence_record ON case_evidence (audit_record_id);
