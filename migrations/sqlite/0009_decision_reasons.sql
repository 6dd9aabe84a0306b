-- A reason for every decision: the approver's (or rejecter's) words, kept with the case, and with
-- an approval that waits for its approver's sign-in.
ALTER TABLE cases ADD COLUMN decision_reason TEXT;
ALTER TABLE pending_signins ADD COLUMN reason TEXT;
