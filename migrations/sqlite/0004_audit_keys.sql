-- One lookup table for every way an audit record is found, replacing audit_people and its five
-- indexes: a record's people become rows of (lookup, record_id) in a single B-tree, so indexing a
-- record costs one tree insert per key instead of six, and a lookup is one range scan.
-- lookup is 'u:' + a member's or the actor's object id or UPN, or 'p:' + an external tenant id or
-- domain, all lower case.
CREATE TABLE audit_keys (
    lookup    TEXT NOT NULL,
    record_id TEXT NOT NULL,
    PRIMARY KEY (lookup, record_id)
) WITHOUT ROWID;

INSERT INTO audit_keys (lookup, record_id)
    SELECT 'u:' || user_oid, record_id FROM audit_people WHERE user_oid IS NOT NULL AND side IN ('internal', 'actor')
    UNION SELECT 'u:' || upn, record_id FROM audit_people WHERE upn IS NOT NULL AND side IN ('internal', 'actor')
    UNION SELECT 'p:' || tenant_id, record_id FROM audit_people WHERE tenant_id IS NOT NULL AND side = 'external'
    UNION SELECT 'p:' || domain, record_id FROM audit_people WHERE domain IS NOT NULL AND side = 'external';

DROP TABLE audit_people;
