-- Revenue at Risk tables (SPEC §3.1, §4).
-- Every metric table holds versioned upserts of the current value per key:
-- the row with the greatest `version` is current; `deleted = 1` means the key
-- has no contributing record any more. Read the current state with FINAL or
-- with argMax(…, version) … HAVING argMax(deleted, version) = 0 (the *_current
-- views), which works on ClickHouse 18.16 and on current releases.

CREATE TABLE IF NOT EXISTS rar_monthly (
    tenant_id String,
    month Date,
    impressions UInt64,
    sess_ai Float64,
    zero_click Float64,
    lost_leads Float64,
    lost_sales Float64,
    rar Float64,
    recoverable Float64,
    baseline_revenue Float64,
    pressure Float64,
    top_intents Array(String),
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(month)
ORDER BY (tenant_id, month);

CREATE TABLE IF NOT EXISTS rar_by_channel (
    tenant_id String,
    month Date,
    channel String,
    rar Float64,
    recoverable Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(month)
ORDER BY (tenant_id, month, channel);

CREATE TABLE IF NOT EXISTS rar_by_intent (
    tenant_id String,
    month Date,
    intent_cluster String,
    rar Float64,
    recoverable Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(month)
ORDER BY (tenant_id, month, intent_cluster);

CREATE VIEW IF NOT EXISTS rar_monthly_current AS
SELECT
    tenant_id,
    month,
    argMax(impressions, version) AS impressions,
    argMax(sess_ai, version) AS sess_ai,
    argMax(zero_click, version) AS zero_click,
    argMax(lost_leads, version) AS lost_leads,
    argMax(lost_sales, version) AS lost_sales,
    argMax(rar, version) AS rar,
    argMax(recoverable, version) AS recoverable,
    argMax(baseline_revenue, version) AS baseline_revenue,
    argMax(pressure, version) AS pressure,
    argMax(top_intents, version) AS top_intents
FROM rar_monthly
GROUP BY tenant_id, month
HAVING argMax(deleted, version) = 0;

CREATE VIEW IF NOT EXISTS rar_by_channel_current AS
SELECT tenant_id, month, channel, argMax(rar, version) AS rar, argMax(recoverable, version) AS recoverable
FROM rar_by_channel
GROUP BY tenant_id, month, channel
HAVING argMax(deleted, version) = 0;

CREATE VIEW IF NOT EXISTS rar_by_intent_current AS
SELECT tenant_id, month, intent_cluster, argMax(rar, version) AS rar, argMax(recoverable, version) AS recoverable
FROM rar_by_intent
GROUP BY tenant_id, month, intent_cluster
HAVING argMax(deleted, version) = 0;
