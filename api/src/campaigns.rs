//! The campaign funnel route (SPEC §5, §3.6 with §3.4's last touch).

use axum::extract::State;
use axum::Json;
use revpulse_connectors::clickhouse::current_query;
use revpulse_pipelines::row::Table;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::attribution::{day_range, DayRangeQuery};
use crate::params::{tenant, P, Q};
use crate::{ApiError, AppState, ErrorBody};

#[derive(clickhouse::Row, Deserialize)]
struct FunnelRow {
    campaign_id: String,
    queued: u64,
    sent: u64,
    delivered: u64,
    clicked: u64,
    replied: u64,
    failed: u64,
    held_out: u64,
}

#[derive(clickhouse::Row, Deserialize)]
struct CreditRow {
    campaign_id: String,
    conversions: f64,
    revenue: f64,
}

/// One campaign over the range: its funnel and what last touch credits it.
#[derive(Serialize, ToSchema, Default)]
pub struct CampaignFunnel {
    /// `unknown` for messages without a campaign.
    campaign_id: String,
    queued: u64,
    /// Sent, delivered, clicked or replied (the touches of §3.4).
    sent: u64,
    delivered: u64,
    clicked: u64,
    replied: u64,
    failed: u64,
    held_out: u64,
    /// delivered / (sent + failed) over the range; null when 0.
    delivery_rate: Option<f64>,
    /// clicked / delivered; null when nothing was delivered.
    click_rate: Option<f64>,
    /// replied / delivered; null when nothing was delivered.
    reply_rate: Option<f64>,
    /// Conversions credited by last touch, on conversion days in the range.
    attributed_conversions: f64,
    attributed_revenue: f64,
}

/// Campaigns over a range of days, by attributed revenue (highest first),
/// then sends, then id.
#[derive(Serialize, ToSchema)]
pub struct Campaigns {
    tenant_id: String,
    from: String,
    to: String,
    campaigns: Vec<CampaignFunnel>,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/campaigns",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128), DayRangeQuery),
    responses(
        (status = 200, description = "Funnel and last-touch revenue per campaign", body = Campaigns),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn campaigns(
    State(s): State<AppState>,
    P(t): P<String>,
    Q(q): Q<DayRangeQuery>,
) -> Result<Json<Campaigns>, ApiError> {
    let t = tenant(&t)?;
    let (from, to) = day_range(q.from.as_deref(), q.to.as_deref())?;
    let range = "tenant_id = ? AND day >= toDate(?) AND day <= toDate(?)";
    let funnel: Vec<FunnelRow> =
        s.ch.query(&format!(
            "SELECT campaign_id, sum(queued) AS queued, sum(sent) AS sent, sum(delivered) AS delivered, \
             sum(clicked) AS clicked, sum(replied) AS replied, sum(failed) AS failed, sum(held_out) AS held_out \
             FROM ({}) GROUP BY campaign_id",
            current_query(Table::CampaignDaily, range)
        ))
        .bind(t)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all()
        .await?;
    let credit: Vec<CreditRow> =
        s.ch.query(&format!(
            "SELECT campaign_id, sum(conversions) AS conversions, sum(revenue) AS revenue FROM ({}) \
             GROUP BY campaign_id",
            current_query(Table::AttributionDaily, &format!("{range} AND model = 'last_touch' AND campaign_id != ''"))
        ))
        .bind(t)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all()
        .await?;
    let mut by_id: std::collections::BTreeMap<String, CampaignFunnel> = std::collections::BTreeMap::new();
    for r in funnel {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        by_id.insert(
            r.campaign_id.clone(),
            CampaignFunnel {
                delivery_rate: ratio(r.delivered, r.sent + r.failed),
                click_rate: ratio(r.clicked, r.delivered),
                reply_rate: ratio(r.replied, r.delivered),
                campaign_id: r.campaign_id,
                queued: r.queued,
                sent: r.sent,
                delivered: r.delivered,
                clicked: r.clicked,
                replied: r.replied,
                failed: r.failed,
                held_out: r.held_out,
                ..CampaignFunnel::default()
            },
        );
    }
    for r in credit {
        let c = by_id
            .entry(r.campaign_id.clone())
            .or_insert_with(|| CampaignFunnel { campaign_id: r.campaign_id, ..CampaignFunnel::default() });
        (c.attributed_conversions, c.attributed_revenue) = (r.conversions, r.revenue);
    }
    let mut campaigns: Vec<CampaignFunnel> = by_id.into_values().collect();
    campaigns.sort_by(|a, b| {
        b.attributed_revenue
            .total_cmp(&a.attributed_revenue)
            .then(b.sent.cmp(&a.sent))
            .then_with(|| a.campaign_id.cmp(&b.campaign_id))
    });
    Ok(Json(Campaigns { tenant_id: t.to_owned(), from: from.to_string(), to: to.to_string(), campaigns }))
}
