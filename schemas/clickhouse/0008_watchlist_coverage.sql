-- Next-buy watchlist per subject (SPEC §3.8): score, buy window and its
-- inputs. timeline_months and last_service_at are NULL when unknown and are
-- read through a one-element tuple (0004_nullable_current.sql); reasons name
-- the score's parts that are above 0.
CREATE TABLE IF NOT EXISTS next_buy (
    tenant_id String,
    subject_id String,
    score Float64,
    buy_window String,
    timeline_months Nullable(UInt64),
    service_visits UInt64,
    service_revenue Float64,
    last_service_at Nullable(DateTime),
    engagements UInt64,
    reasons Array(String),
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, subject_id);

CREATE VIEW IF NOT EXISTS next_buy_current AS
SELECT
    tenant_id, subject_id,
    argMax(score, version) AS score,
    argMax(buy_window, version) AS buy_window,
    argMax(tuple(timeline_months), version).1 AS timeline_months,
    argMax(service_visits, version) AS service_visits,
    argMax(service_revenue, version) AS service_revenue,
    argMax(tuple(last_service_at), version).1 AS last_service_at,
    argMax(engagements, version) AS engagements,
    argMax(reasons, version) AS reasons
FROM next_buy
GROUP BY tenant_id, subject_id
HAVING argMax(deleted, version) = 0;

-- Fact coverage per tenant and fact (SPEC §3.9): the tenant's leads, those
-- for which a current conversations record carries the fact, and their ratio.
CREATE TABLE IF NOT EXISTS fact_coverage (
    tenant_id String,
    fact String,
    leads UInt64,
    with_fact UInt64,
    coverage Float64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, fact);

CREATE VIEW IF NOT EXISTS fact_coverage_current AS
SELECT
    tenant_id, fact,
    argMax(leads, version) AS leads,
    argMax(with_fact, version) AS with_fact,
    argMax(coverage, version) AS coverage
FROM fact_coverage
GROUP BY tenant_id, fact
HAVING argMax(deleted, version) = 0;

-- Retention state (docs/retention.md): what closed leads contributed to
-- fact_coverage, per watermark they closed under (0: compacted at a start).
CREATE TABLE IF NOT EXISTS state_leads_closed (
    tenant_id String,
    closed_us UInt64,
    leads UInt64,
    homeowner UInt64,
    monthly_bill UInt64,
    property_type UInt64,
    region UInt64,
    timeline_months UInt64,
    credit_signal UInt64,
    decision_maker UInt64,
    sentiment UInt64,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (tenant_id, closed_us);
