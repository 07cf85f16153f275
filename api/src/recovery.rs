//! The payment recovery route (SPEC §5, §3.7).

use axum::extract::State;
use axum::Json;
use revpulse_connectors::clickhouse::select_current;
use revpulse_pipelines::row::Table;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::attribution::{day_range, DayRangeQuery};
use crate::params::{tenant, P, Q};
use crate::{ApiError, AppState, ErrorBody};

/// One day of payment recovery (SPEC §3.7).
#[derive(clickhouse::Row, Deserialize, Serialize, ToSchema)]
pub struct RecoveryDay {
    /// `YYYY-MM-DD`.
    #[serde(with = "day_string")]
    #[schema(value_type = String)]
    day: u16,
    /// Failed payments with `ts` in the day.
    failed: u64,
    /// Those of them a succeeded payment recovered within the window.
    recovered: u64,
    /// recovered / failed; null when failed = 0.
    recovery_rate: Option<f64>,
    /// Succeeded payments of the day that recovered an earlier failure.
    recoveries: u64,
    recovered_revenue: f64,
}

/// ClickHouse's `Date` (days since 1970-01-01) in, `YYYY-MM-DD` out.
pub(crate) mod day_string {
    use revpulse_pipelines::row::Date;

    pub fn serialize<S: serde::Serializer>(day: &u16, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Date(i32::from(*day)).to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// The range's totals: sums, and the rate of the sums.
#[derive(Serialize, ToSchema)]
pub struct RecoveryTotals {
    failed: u64,
    recovered: u64,
    recovery_rate: Option<f64>,
    recoveries: u64,
    recovered_revenue: f64,
}

/// Payment recovery over a range of days, oldest first.
#[derive(Serialize, ToSchema)]
pub struct Recovery {
    tenant_id: String,
    from: String,
    to: String,
    days: Vec<RecoveryDay>,
    totals: RecoveryTotals,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/payments/recovery",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128), DayRangeQuery),
    responses(
        (status = 200, description = "Recovery per day and the range's totals", body = Recovery),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn recovery(
    State(s): State<AppState>,
    P(t): P<String>,
    Q(q): Q<DayRangeQuery>,
) -> Result<Json<Recovery>, ApiError> {
    let t = tenant(&t)?;
    let (from, to) = day_range(q.from.as_deref(), q.to.as_deref())?;
    let days: Vec<RecoveryDay> =
        s.ch.query(
            &(select_current::<RecoveryDay>(
                Table::PaymentRecovery,
                "tenant_id = ? AND day >= toDate(?) AND day <= toDate(?)",
            ) + " ORDER BY day"),
        )
        .bind(t)
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all()
        .await?;
    let (failed, recovered) = (days.iter().map(|d| d.failed).sum::<u64>(), days.iter().map(|d| d.recovered).sum());
    let totals = RecoveryTotals {
        failed,
        recovered,
        recovery_rate: (failed > 0).then(|| recovered as f64 / failed as f64),
        recoveries: days.iter().map(|d| d.recoveries).sum(),
        recovered_revenue: days.iter().map(|d| d.recovered_revenue).sum(),
    };
    Ok(Json(Recovery { tenant_id: t.to_owned(), from: from.to_string(), to: to.to_string(), days, totals }))
}
