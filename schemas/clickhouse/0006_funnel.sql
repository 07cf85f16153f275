-- Campaign and offer funnel (SPEC §3.6): outbound messages per day and
-- campaign (campaign_daily) or offer (offer_daily), counted by status;
-- rates are NULL when their denominator is 0. Nullable columns are read
-- through a one-element tuple, so the newest version wins, NULL or not
-- (0004_nullable_current.sql).

CREATE TABLE IF NOT EXISTS campaign_daily (
    tenant_id String,
    day Date,
    campaign_id String,
    queued UInt64,
    sent UInt64,
    delivered UInt64,
    clicked UInt64,
    replied UInt64,
    failed UInt64,
    held_out UInt64,
    delivery_rate Nullable(Float64),
    click_rate Nullable(Float64),
    reply_rate Nullable(Float64),
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, campaign_id);

CREATE TABLE IF NOT EXISTS offer_daily (
    tenant_id String,
    day Date,
    offer_id String,
    queued UInt64,
    sent UInt64,
    delivered UInt64,
    clicked UInt64,
    replied UInt64,
    failed UInt64,
    held_out UInt64,
    delivery_rate Nullable(Float64),
    click_rate Nullable(Float64),
    reply_rate Nullable(Float64),
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, offer_id);

CREATE VIEW IF NOT EXISTS campaign_daily_current AS
SELECT
    tenant_id, day, campaign_id,
    argMax(queued, version) AS queued,
    argMax(sent, version) AS sent,
    argMax(delivered, version) AS delivered,
    argMax(clicked, version) AS clicked,
    argMax(replied, version) AS replied,
    argMax(failed, version) AS failed,
    argMax(held_out, version) AS held_out,
    argMax(tuple(delivery_rate), version).1 AS delivery_rate,
    argMax(tuple(click_rate), version).1 AS click_rate,
    argMax(tuple(reply_rate), version).1 AS reply_rate
FROM campaign_daily
GROUP BY tenant_id, day, campaign_id
HAVING argMax(deleted, version) = 0;

CREATE VIEW IF NOT EXISTS offer_daily_current AS
SELECT
    tenant_id, day, offer_id,
    argMax(queued, version) AS queued,
    argMax(sent, version) AS sent,
    argMax(delivered, version) AS delivered,
    argMax(clicked, version) AS clicked,
    argMax(replied, version) AS replied,
    argMax(failed, version) AS failed,
    argMax(held_out, version) AS held_out,
    argMax(tuple(delivery_rate), version).1 AS delivery_rate,
    argMax(tuple(click_rate), version).1 AS click_rate,
    argMax(tuple(reply_rate), version).1 AS reply_rate
FROM offer_daily
GROUP BY tenant_id, day, offer_id
HAVING argMax(deleted, version) = 0;
