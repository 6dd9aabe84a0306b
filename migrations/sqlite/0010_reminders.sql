-- Reminders and escalation: when a proposed case was reminded (and escalated), set once by a
-- compare-and-set so that one replica, once, reminds.
ALTER TABLE cases ADD COLUMN reminded_at BIGINT;
ALTER TABLE cases ADD COLUMN escalated_at BIGINT;
