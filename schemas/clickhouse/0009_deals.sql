-- Deal pipeline, forecast and health (SPEC §3.11), from the `deals` topic.

-- Open deals: close probability (percent), health (0..100), its category
-- and risk factors. expected_close is to the second.
CREATE TABLE IF NOT EXISTS deal_health (
    tenant_id String,
    deal_id String,
    stage String,
    amount Float64,
    close_probability Float64,
    health Float64,
    category String,
    risk_factors Array(String),
    expected_close DateTime,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, deal_id);

CREATE VIEW IF NOT EXISTS deal_health_current AS
SELECT
    tenant_id, deal_id,
    argMax(stage, version) AS stage,
    argMax(amount, version) AS amount,
    argMax(close_probability, version) AS close_probability,
    argMax(health, version) AS health,
    argMax(category, version) AS category,
    argMax(risk_factors, version) AS risk_factors,
    argMax(expected_close, version) AS expected_close
FROM deal_health
GROUP BY tenant_id, deal_id
HAVING argMax(deleted, version) = 0;

-- Every current deal by stage: deals, value, probability-weighted value,
-- average value.
CREATE TABLE IF NOT EXISTS pipeline_by_stage (
    tenant_id String,
    stage String,
    deals UInt64,
    value Float64,
    weighted_value Float64,
    avg_value Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, stage);

CREATE VIEW IF NOT EXISTS pipeline_by_stage_current AS
SELECT
    tenant_id, stage,
    argMax(deals, version) AS deals,
    argMax(value, version) AS value,
    argMax(weighted_value, version) AS weighted_value,
    argMax(avg_value, version) AS avg_value
FROM pipeline_by_stage
GROUP BY tenant_id, stage
HAVING argMax(deleted, version) = 0;

-- Open deals by month (first day) of expected_close.
CREATE TABLE IF NOT EXISTS forecast_monthly (
    tenant_id String,
    month Date,
    deals UInt64,
    pipeline Float64,
    weighted Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, month);

CREATE VIEW IF NOT EXISTS forecast_monthly_current AS
SELECT
    tenant_id, month,
    argMax(deals, version) AS deals,
    argMax(pipeline, version) AS pipeline,
    argMax(weighted, version) AS weighted
FROM forecast_monthly
GROUP BY tenant_id, month
HAVING argMax(deleted, version) = 0;

-- Won and lost deals by month (first day) of their current version's ts.
CREATE TABLE IF NOT EXISTS deals_closed_monthly (
    tenant_id String,
    month Date,
    won UInt64,
    lost UInt64,
    won_value Float64,
    lost_value Float64,
    win_rate Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, month);

CREATE VIEW IF NOT EXISTS deals_closed_monthly_current AS
SELECT
    tenant_id, month,
    argMax(won, version) AS won,
    argMax(lost, version) AS lost,
    argMax(won_value, version) AS won_value,
    argMax(lost_value, version) AS lost_value,
    argMax(win_rate, version) AS win_rate
FROM deals_closed_monthly
GROUP BY tenant_id, month
HAVING argMax(deleted, version) = 0;
