//! Attribution and offer routes (SPEC §5, §3.4).

use axum::extract::State;
use axum::Json;
use revpulse_connectors::clickhouse::{current_query, select_current};
use revpulse_pipelines::row::{Date, Table};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::params::{page, tenant, P, Q};
use crate::{ApiError, AppState, ErrorBody};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttributionQuery {
    /// First conversion day, `YYYY-MM-DD` (default: 29 days before `to`).
    #[param(value_type = Option<String>, pattern = "^(197[1-9]|19[89][0-9]|20[0-9]{2}|210[0-4])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$")]
    from: Option<String>,
    /// Last conversion day, `YYYY-MM-DD`, inclusive (default: today, UTC). An empty range credits nothing.
    #[param(value_type = Option<String>, pattern = "^(197[1-9]|19[89][0-9]|20[0-9]{2}|210[0-4])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$")]
    to: Option<String>,
    /// Attribution model (default `last_touch`).
    #[param(value_type = Option<ModelParam>)]
    model: Option<String>,
}

/// A range of days, both ends inclusive.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DayRangeQuery {
    /// First day, `YYYY-MM-DD` (default: 29 days before `to`).
    #[param(value_type = Option<String>, pattern = "^(197[1-9]|19[89][0-9]|20[0-9]{2}|210[0-4])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$")]
    pub(crate) from: Option<String>,
    /// Last day, `YYYY-MM-DD`, inclusive (default: today, UTC).
    #[param(value_type = Option<String>, pattern = "^(197[1-9]|19[89][0-9]|20[0-9]{2}|210[0-4])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$")]
    pub(crate) to: Option<String>,
}

/// Attribution models (SPEC §3.4).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ModelParam {
    LastTouch,
    Linear,
}

#[derive(clickhouse::Row, Deserialize)]
struct CampaignRow {
    campaign_id: String,
    conversions: f64,
    revenue: f64,
}

/// Credit of one campaign.
#[derive(Serialize, ToSchema)]
pub struct CampaignCredit {
    /// `unknown` for touches without a campaign.
    campaign_id: String,
    /// Credited conversions (fractional under `linear`).
    conversions: f64,
    revenue: f64,
}

/// Conversions without a candidate touch.
#[derive(Serialize, ToSchema)]
pub struct Unattributed {
    conversions: f64,
    revenue: f64,
}

/// Attribution over a range of conversion days.
#[derive(Serialize, ToSchema)]
pub struct Attribution {
    tenant_id: String,
    model: String,
    from: String,
    to: String,
    /// Campaigns by revenue, highest first.
    campaigns: Vec<CampaignCredit>,
    unattributed: Unattributed,
}

fn parse_day(name: &str, v: &str) -> Result<Date, ApiError> {
    Date::parse(v).ok_or_else(|| ApiError::bad_request(name, "a date, YYYY-MM-DD"))
}

/// The days `from..=to` of a query: `to` defaults to today (UTC), `from`
/// to 29 days before `to`.
pub(crate) fn day_range(from: Option<&str>, to: Option<&str>) -> Result<(Date, Date), ApiError> {
    let to = match to {
        Some(v) => parse_day("to", v)?,
        None => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros());
            Date::of(now.min(i64::MAX as u128) as i64)
        }
    };
    let from = match from {
        Some(v) => parse_day("from", v)?,
        None => Date((to.0 - 29).max(0)),
    };
    Ok((from, to))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/attribution",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128), AttributionQuery),
    responses(
        (status = 200, description = "Credit per campaign, plus unattributed", body = Attribution),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn attribution(
    State(s): State<AppState>,
    P(t): P<String>,
    Q(q): Q<AttributionQuery>,
) -> Result<Json<Attribution>, ApiError> {
    let t = tenant(&t)?;
    let model = q.model.unwrap_or_else(|| "last_touch".into());
    if !matches!(model.as_str(), "last_touch" | "linear") {
        return Err(ApiError::bad_request("model", "last_touch or linear"));
    }
    let (from, to) = day_range(q.from.as_deref(), q.to.as_deref())?;
    let rows: Vec<CampaignRow> =
        s.ch.query(&format!(
            "SELECT campaign_id, sum(conversions) AS conversions, sum(revenue) AS revenue FROM ({}) \
             GROUP BY campaign_id ORDER BY revenue DESC, campaign_id",
            current_query(
                Table::AttributionDaily,
                "tenant_id = ? AND model = ? AND day >= toDate(?) AND day <= toDate(?)"
            )
        ))
        .bind(t)
        .bind(&model)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all()
        .await?;
    let mut unattributed = Unattributed { conversions: 0.0, revenue: 0.0 };
    let mut campaigns = Vec::new();
    for r in rows {
        if r.campaign_id.is_empty() {
            unattributed = Unattributed { conversions: r.conversions, revenue: r.revenue };
        } else {
            campaigns.push(CampaignCredit {
                campaign_id: r.campaign_id,
                conversions: r.conversions,
                revenue: r.revenue,
            });
        }
    }
    Ok(Json(Attribution {
        tenant_id: t.to_owned(),
        model,
        from: from.to_string(),
        to: to.to_string(),
        campaigns,
        unattributed,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OffersQuery {
    /// Page size (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Offers to skip (default 0).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 1000000)]
    offset: Option<String>,
}

#[derive(clickhouse::Row, Deserialize)]
struct AcceptedRow {
    offer_id: String,
    accepted_lines: u64,
    revenue: f64,
}

#[derive(clickhouse::Row, Deserialize)]
struct SendsRow {
    offer_id: String,
    sends: u64,
}

/// One offer: its acceptance (SPEC §3.4) and its sends (§3.6).
#[derive(Serialize, ToSchema)]
pub struct AcceptedOffer {
    offer_id: String,
    /// RO lines with this offer that was in a candidate touch.
    accepted_lines: u64,
    revenue: f64,
    /// Outbound messages with this offer counted as `sent` in
    /// `offer_daily`, over all days.
    sends: u64,
    /// accepted_lines / sends; null when nothing was sent.
    acceptance_rate: Option<f64>,
}

/// Offers that were accepted or sent, by revenue (highest first), then id.
#[derive(Serialize, ToSchema)]
pub struct Offers {
    tenant_id: String,
    offers: Vec<AcceptedOffer>,
    limit: u64,
    offset: u64,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/offers",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128), OffersQuery),
    responses(
        (status = 200, description = "Accepted and sent offers per offer_id", body = Offers),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn offers(
    State(s): State<AppState>,
    P(t): P<String>,
    Q(q): Q<OffersQuery>,
) -> Result<Json<Offers>, ApiError> {
    let t = tenant(&t)?;
    let (limit, offset) = page(q.limit.as_deref(), q.offset.as_deref())?;
    // A tenant's offers are a catalogue, not a stream: both lists are read
    // whole and merged here, so offers sent but never accepted are listed
    // too (no outer join that both ClickHouse versions run alike).
    let accepted: Vec<AcceptedRow> =
        s.ch.query(&select_current::<AcceptedRow>(Table::OfferAcceptance, "tenant_id = ?")).bind(t).fetch_all().await?;
    let sends: Vec<SendsRow> =
        s.ch.query(&format!(
            "SELECT offer_id, sum(sent) AS sends FROM ({}) GROUP BY offer_id",
            current_query(Table::OfferDaily, "tenant_id = ?")
        ))
        .bind(t)
        .fetch_all()
        .await?;
    let mut merged: std::collections::BTreeMap<String, (u64, f64, u64)> = std::collections::BTreeMap::new();
    for a in accepted {
        let e = merged.entry(a.offer_id).or_default();
        (e.0, e.1) = (a.accepted_lines, a.revenue);
    }
    for r in sends {
        merged.entry(r.offer_id).or_default().2 = r.sends;
    }
    let mut offers: Vec<AcceptedOffer> = merged
        .into_iter()
        .map(|(offer_id, (accepted_lines, revenue, sends))| AcceptedOffer {
            offer_id,
            accepted_lines,
            revenue,
            sends,
            acceptance_rate: (sends > 0).then(|| accepted_lines as f64 / sends as f64),
        })
        .collect();
    offers.sort_by(|a, b| b.revenue.total_cmp(&a.revenue).then_with(|| a.offer_id.cmp(&b.offer_id)));
    let offers = offers.into_iter().skip(offset as usize).take(limit as usize).collect();
    Ok(Json(Offers { tenant_id: t.to_owned(), offers, limit, offset }))
}
