-- Payment recovery per day (SPEC §3.7): failed payments, those recovered by
-- a succeeded payment of the same subject within the window, the
-- recoveries and their revenue. recovery_rate is NULL when failed = 0 and
-- is read through a one-element tuple (0004_nullable_current.sql).
CREATE TABLE IF NOT EXISTS payment_recovery (
    tenant_id String,
    day Date,
    failed UInt64,
    recovered UInt64,
    recovery_rate Nullable(Float64),
    recoveries UInt64,
    recovered_revenue Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day);

CREATE VIEW IF NOT EXISTS payment_recovery_current AS
SELECT
    tenant_id, day,
    argMax(failed, version) AS failed,
    argMax(recovered, version) AS recovered,
    argMax(tuple(recovery_rate), version).1 AS recovery_rate,
    argMax(recoveries, version) AS recoveries,
    argMax(recovered_revenue, version) AS recovered_revenue
FROM payment_recovery
GROUP BY tenant_id, day
HAVING argMax(deleted, version) = 0;
