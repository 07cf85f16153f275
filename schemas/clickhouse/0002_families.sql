-- Lead score, revenue per minute, attribution, offers and experiment tables
-- (SPEC §3.2–§3.5, §4). Same versioned-upsert layout as 0001_rar.sql.

-- Lead scores (SPEC §3.2).
CREATE TABLE IF NOT EXISTS lead_scores (
    tenant_id String,
    subject_id String,
    score Float64,
    base Float64,
    behavioral Float64,
    timing Float64,
    market Float64,
    tier String,
    revenue_potential Float64,
    conversion_probability Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, subject_id);

-- Conversation efficiency (SPEC §3.3).
CREATE TABLE IF NOT EXISTS conversation_rpm (
    tenant_id String,
    conversation_id String,
    subject_id String,
    duration_minutes Float64,
    revenue_potential Float64,
    revenue_per_minute Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, conversation_id);

-- Realized revenue per minute; source is payments, ro or all (SPEC §3.3).
CREATE TABLE IF NOT EXISTS revenue_per_minute (
    tenant_id String,
    minute DateTime,
    source String,
    revenue Float64,
    conversions UInt64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, minute, source);

-- Attribution per conversion day, model (last_touch, linear) and campaign; campaign '' is unattributed (SPEC §3.4).
CREATE TABLE IF NOT EXISTS attribution_daily (
    tenant_id String,
    day Date,
    model String,
    campaign_id String,
    conversions Float64,
    revenue Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, model, campaign_id);

-- Accepted RO offers (SPEC §3.4).
CREATE TABLE IF NOT EXISTS offer_acceptance (
    tenant_id String,
    offer_id String,
    accepted_lines UInt64,
    revenue Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, offer_id);

-- Per-variant experiment figures (SPEC §3.5).
CREATE TABLE IF NOT EXISTS experiment_variants (
    tenant_id String,
    experiment_id String,
    variant String,
    subjects UInt64,
    converters UInt64,
    conversion_rate Float64,
    revenue Float64,
    revenue_per_subject Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, experiment_id, variant);

-- Experiment lift and significance; NULL where SPEC §3.5 says (SPEC §3.5).
CREATE TABLE IF NOT EXISTS experiment_lift (
    tenant_id String,
    experiment_id String,
    lift Nullable(Float64),
    incremental_revenue Nullable(Float64),
    z Nullable(Float64),
    p_value Nullable(Float64),
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, experiment_id);

CREATE VIEW IF NOT EXISTS lead_scores_current AS
SELECT
    tenant_id, subject_id,
    argMax(score, version) AS score,
    argMax(base, version) AS base,
    argMax(behavioral, version) AS behavioral,
    argMax(timing, version) AS timing,
    argMax(market, version) AS market,
    argMax(tier, version) AS tier,
    argMax(revenue_potential, version) AS revenue_potential,
    argMax(conversion_probability, version) AS conversion_probability
FROM lead_scores
GROUP BY tenant_id, subject_id
HAVING argMax(deleted, version) = 0;

CREATE VIEW IF NOT EXISTS conversation_rpm_current AS
SELECT
    tenant_id, conversation_id,
    argMax(subject_id, version) AS subject_id,
    argMax(duration_minutes, version) AS duration_minutes,
    argMax(revenue_potential, version) AS revenue_potential,
    argMax(revenue_per_minute, version) AS revenue_per_minute
FROM conversation_rpm
GROUP BY tenant_id, conversation_id
HAVING argMax(deleted, version) = 0;

CREATE VIEW IF NOT EXISTS revenue_per_minute_current AS
SELECT
    tenant_id, minute, source,
    argMax(revenue, version) AS revenue,
    argMax(conversions, version) AS conversions
FROM revenue_per_minute
GROUP BY tenant_id, minute, source
HAVING argMax(deleted, version) = 0;

CREATE VIEW IF NOT EXISTS attribution_daily_current AS
SELECT
    tenant_id, day, model, campaign_id,
    argMax(conversions, version) AS conversions,
    argMax(revenue, version) AS revenue
FROM attribution_daily
GROUP BY tenant_id, day, model, campaign_id
HAVING argMax(deleted, version) = 0;

CREATE VIEW IF NOT EXISTS offer_acceptance_current AS
SELECT
    tenant_id, offer_id,
    argMax(accepted_lines, version) AS accepted_lines,
    argMax(revenue, version) AS revenue
FROM offer_acceptance
GROUP BY tenant_id, offer_id
HAVING argMax(deleted, version) = 0;

CREATE VIEW IF NOT EXISTS experiment_variants_current AS
SELECT
    tenant_id, experiment_id, variant,
    argMax(subjects, version) AS subjects,
    argMax(converters, version) AS converters,
    argMax(conversion_rate, version) AS conversion_rate,
    argMax(revenue, version) AS revenue,
    argMax(revenue_per_subject, version) AS revenue_per_subject
FROM experiment_variants
GROUP BY tenant_id, experiment_id, variant
HAVING argMax(deleted, version) = 0;

CREATE VIEW IF NOT EXISTS experiment_lift_current AS
SELECT
    tenant_id, experiment_id,
    argMax(lift, version) AS lift,
    argMax(incremental_revenue, version) AS incremental_revenue,
    argMax(z, version) AS z,
    argMax(p_value, version) AS p_value
FROM experiment_lift
GROUP BY tenant_id, experiment_id
HAVING argMax(deleted, version) = 0;
