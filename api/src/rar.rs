//! `GET /v1/tenants/{tenant}/rar?month=YYYY-MM` (SPEC §5, §3.1).

use axum::extract::State;
use axum::Json;
use revpulse_connectors::clickhouse::select_current;
use revpulse_pipelines::row::{Date, Table};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::params::{tenant, P, Q};
use crate::{ApiError, AppState, ErrorBody};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RarQuery {
    /// Calendar month, `YYYY-MM` (UTC).
    #[param(required = true, value_type = String, pattern = "^(197[1-9]|19[89][0-9]|20[0-9]{2}|210[0-4])-(0[1-9]|1[0-2])$", example = "2026-11")]
    month: Option<String>,
}

/// The `rar_monthly` values of a tenant and month, as stored and as served.
#[derive(clickhouse::Row, Deserialize, Serialize, ToSchema)]
pub struct Monthly {
    impressions: u64,
    sess_ai: f64,
    zero_click: f64,
    lost_leads: f64,
    lost_sales: f64,
    rar: f64,
    recoverable: f64,
    baseline_revenue: f64,
    /// rar / baseline_revenue, in [0, 1].
    pressure: f64,
    /// The 5 intents with the highest rar (ties by name).
    top_intents: Vec<String>,
}

/// Revenue at risk of one channel in the month.
#[derive(clickhouse::Row, Deserialize, Serialize, ToSchema)]
pub struct ChannelRar {
    channel: String,
    rar: f64,
    recoverable: f64,
}

/// Revenue at risk of a tenant and month (SPEC §3.1).
#[derive(Serialize, ToSchema)]
pub struct RarResponse {
    tenant_id: String,
    /// First day of the month, `YYYY-MM-DD`.
    month: String,
    #[serde(flatten)]
    monthly: Monthly,
    /// rar per channel, highest first.
    by_channel: Vec<ChannelRar>,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/rar",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128), RarQuery),
    responses(
        (status = 200, description = "RaR of the month", body = RarResponse),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 404, description = "No RaR for that tenant and month", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_rar(
    State(s): State<AppState>,
    P(t): P<String>,
    Q(q): Q<RarQuery>,
) -> Result<Json<RarResponse>, ApiError> {
    let t = tenant(&t)?;
    let month = q.month.ok_or_else(|| ApiError::bad_request("month", "required, as YYYY-MM"))?;
    let first =
        Date::parse_month(&month).ok_or_else(|| ApiError::bad_request("month", "expected YYYY-MM"))?.to_string();
    let monthly: Option<Monthly> =
        s.ch.query(&select_current::<Monthly>(Table::RarMonthly, "tenant_id = ? AND month = toDate(?)"))
            .bind(t)
            .bind(&first)
            .fetch_optional()
            .await?;
    let monthly = monthly.ok_or_else(|| ApiError::not_found("RaR for that tenant and month"))?;
    let by_channel: Vec<ChannelRar> =
        s.ch.query(
            &(select_current::<ChannelRar>(Table::RarByChannel, "tenant_id = ? AND month = toDate(?)")
                + " ORDER BY rar DESC, channel"),
        )
        .bind(t)
        .bind(&first)
        .fetch_all()
        .await?;
    Ok(Json(RarResponse { tenant_id: t.to_owned(), month: first, monthly, by_channel }))
}
