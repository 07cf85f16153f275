-- Retention state (README "Lateness and retention"): written with the
-- metric rows, exactly once, and read back at start-up so that closed
-- subjects and closed days keep counting in the lifetime sums after a
-- restart. Empty unless retention is configured.

-- Open subjects and the horizon at which their current life began.
CREATE TABLE IF NOT EXISTS state_open_subjects (
    tenant_id String,
    subject_id String,
    since_us UInt64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, subject_id);

-- What closed experiment subjects contributed to experiment_variants.
CREATE TABLE IF NOT EXISTS state_experiment_closed (
    tenant_id String,
    experiment_id String,
    variant String,
    subjects UInt64,
    converters UInt64,
    revenue_cents UInt64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, experiment_id, variant);

-- What conversions of closed days contributed to offer_acceptance.
CREATE TABLE IF NOT EXISTS state_offer_closed (
    tenant_id String,
    offer_id String,
    accepted_lines UInt64,
    revenue_cents UInt64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, offer_id);
