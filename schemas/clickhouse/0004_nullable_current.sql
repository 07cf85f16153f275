-- `argMax` skips NULL values, so 0002's experiment_lift_current read an
-- older version's number for a key whose newest version is NULL (a lift
-- that became undefined), until a merge dropped the older version. Through
-- a one-element tuple the newest version wins, NULL or not; the API and
-- the sink's readers generate the same form (connectors/src/clickhouse/current.rs).
-- DROP TABLE drops a view on 18.16 and on current releases alike.
DROP TABLE IF EXISTS experiment_lift_current;

CREATE VIEW IF NOT EXISTS experiment_lift_current AS
SELECT
    tenant_id, experiment_id,
    argMax(tuple(lift), version).1 AS lift,
    argMax(tuple(incremental_revenue), version).1 AS incremental_revenue,
    argMax(tuple(z), version).1 AS z,
    argMax(tuple(p_value), version).1 AS p_value
FROM experiment_lift
GROUP BY tenant_id, experiment_id
HAVING argMax(deleted, version) = 0;
