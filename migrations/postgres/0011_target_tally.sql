-- A case's tally (targets per status: the claim, every progress update, the end of a run) is
-- read from this index alone, not from every target row: a run's reads stay small at 10,000
-- targets.
CREATE INDEX case_targets_status ON case_targets (case_id, status);
