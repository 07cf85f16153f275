-- Retention state (docs/retention.md): written with the
-- metric rows and read back at start-up, so that closed subjects and closed
-- days keep counting in the lifetime sums after a restart. Every row names
-- the watermark it was written under (µs), so a start takes back exactly
-- what the committed watermark covers, even when a crash left newer rows.
-- Empty unless retention is configured.

-- Each life of a subject: the watermark it opened under, the horizon its
-- records must end after, and the watermark it closed under (0: open).
CREATE TABLE IF NOT EXISTS state_open_subjects (
    tenant_id String,
    subject_id String,
    opened_us UInt64,
    since_us UInt64,
    closed_us UInt64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, subject_id, opened_us);

-- What closed experiment subjects contributed to experiment_variants, per
-- watermark they closed under (0: compacted at a start).
CREATE TABLE IF NOT EXISTS state_experiment_closed (
    tenant_id String,
    experiment_id String,
    variant String,
    closed_us UInt64,
    subjects UInt64,
    converters UInt64,
    revenue_cents UInt64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, experiment_id, variant, closed_us);

-- What conversions of closed days contributed to offer_acceptance, per
-- watermark the days closed under (0: compacted at a start).
CREATE TABLE IF NOT EXISTS state_offer_closed (
    tenant_id String,
    offer_id String,
    closed_us UInt64,
    accepted_lines UInt64,
    revenue_cents UInt64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, offer_id, closed_us);
