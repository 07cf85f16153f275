-- SPEC §3.10: conversation_rpm carries `active`, 1 while none of the
-- conversation's current records has kind = ended. Rows written before
-- this migration read as active (the default) until rewritten: the first
-- start after the upgrade rewrites them all, since every start re-emits
-- the rows of the state it restored or rebuilt.
ALTER TABLE conversation_rpm ADD COLUMN active UInt64 DEFAULT 1 AFTER revenue_per_minute;

DROP TABLE IF EXISTS conversation_rpm_current;

CREATE VIEW IF NOT EXISTS conversation_rpm_current AS
SELECT
    tenant_id, conversation_id,
    argMax(subject_id, version) AS subject_id,
    argMax(duration_minutes, version) AS duration_minutes,
    argMax(revenue_potential, version) AS revenue_potential,
    argMax(revenue_per_minute, version) AS revenue_per_minute,
    argMax(active, version) AS active
FROM conversation_rpm
GROUP BY tenant_id, conversation_id
HAVING argMax(deleted, version) = 0;
