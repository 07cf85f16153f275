//! `GET /v1/tenants/{t}/rar?month=YYYY-MM` (SPEC §5, §3.1).

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::{ApiError, AppState};

#[derive(Deserialize)]
pub struct RarQuery {
    month: Option<String>,
}

#[derive(clickhouse::Row, Deserialize)]
struct Monthly {
    impressions: u64,
    sess_ai: f64,
    zero_click: f64,
    lost_leads: f64,
    lost_sales: f64,
    rar: f64,
    recoverable: f64,
    baseline_revenue: f64,
    pressure: f64,
    top_intents: Vec<String>,
}

#[derive(clickhouse::Row, Deserialize, Serialize)]
pub struct Part {
    channel: String,
    rar: f64,
    recoverable: f64,
}

#[derive(Serialize)]
pub struct RarResponse {
    tenant_id: String,
    month: String,
    impressions: u64,
    sess_ai: f64,
    zero_click: f64,
    lost_leads: f64,
    lost_sales: f64,
    rar: f64,
    recoverable: f64,
    baseline_revenue: f64,
    pressure: f64,
    top_intents: Vec<String>,
    by_channel: Vec<Part>,
}

pub async fn get_rar(
    State(s): State<AppState>,
    Path(tenant): Path<String>,
    Query(q): Query<RarQuery>,
) -> Result<Json<RarResponse>, ApiError> {
    let month = q.month.ok_or_else(|| ApiError::bad_request("month", "required, as YYYY-MM"))?;
    let day = revpulse_pipelines::time::parse_month(&month)
        .ok_or_else(|| ApiError::bad_request("month", "expected YYYY-MM"))?;
    let first = revpulse_pipelines::time::format_day(day);
    let monthly: Option<Monthly> = s
        .ch
        .query(
            "SELECT argMax(impressions, version), argMax(sess_ai, version), argMax(zero_click, version), \
             argMax(lost_leads, version), argMax(lost_sales, version), argMax(rar, version), argMax(recoverable, version), \
             argMax(baseline_revenue, version), argMax(pressure, version), argMax(top_intents, version) \
             FROM rar_monthly WHERE tenant_id = ? AND month = toDate(?) \
             GROUP BY tenant_id, month HAVING argMax(deleted, version) = 0",
        )
        .bind(&tenant)
        .bind(&first)
        .fetch_optional()
        .await?;
    let m = monthly.ok_or_else(|| ApiError::not_found("RaR for that tenant and month"))?;
    let by_channel: Vec<Part> =
        s.ch.query(
            "SELECT channel, argMax(rar, version) AS r, argMax(recoverable, version) \
             FROM rar_by_channel WHERE tenant_id = ? AND month = toDate(?) \
             GROUP BY channel HAVING argMax(deleted, version) = 0 ORDER BY r DESC, channel",
        )
        .bind(&tenant)
        .bind(&first)
        .fetch_all()
        .await?;
    Ok(Json(RarResponse {
        tenant_id: tenant,
        month: first,
        impressions: m.impressions,
        sess_ai: m.sess_ai,
        zero_click: m.zero_click,
        lost_leads: m.lost_leads,
        lost_sales: m.lost_sales,
        rar: m.rar,
        recoverable: m.recoverable,
        baseline_revenue: m.baseline_revenue,
        pressure: m.pressure,
        top_intents: m.top_intents,
        by_channel,
    }))
}
