//! The next-buy watchlist route (SPEC §5, §3.8).

use axum::extract::State;
use axum::Json;
use revpulse_connectors::clickhouse::{current_query, select_current};
use revpulse_pipelines::row::Table;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::params::{min_score, page, tenant, P, Q};
use crate::{ApiError, AppState, ErrorBody};

/// A subject on the watchlist (SPEC §3.8).
#[derive(clickhouse::Row, Deserialize, Serialize, ToSchema)]
pub struct Watched {
    subject_id: String,
    /// 0..100, rounded to 2 decimals.
    score: f64,
    /// `0-3m`, `3-6m`, `6-12m`, `later` or `unknown` (with the default windows).
    buy_window: String,
    /// The resolved timeline; null when no conversations record carries one.
    timeline_months: Option<u64>,
    /// Closed repair orders.
    service_visits: u64,
    /// Σ their line amounts, currency units.
    service_revenue: f64,
    /// The latest `closed_at`, `YYYY-MM-DDTHH:MM:SSZ`; null without closed ROs.
    #[serde(with = "second_string")]
    #[schema(value_type = Option<String>)]
    last_service_at: Option<u32>,
    /// Inbound messages, and outbound ones clicked or replied.
    engagements: u64,
    /// The score's parts above 0, in the order `timeline`, `service_visits`,
    /// `service_revenue`, `engagement`, `credit`.
    reasons: Vec<String>,
}

/// ClickHouse's `Nullable(DateTime)` (seconds since the epoch) in,
/// `YYYY-MM-DDTHH:MM:SSZ` or null out.
mod second_string {
    use revpulse_pipelines::row::Second;

    pub fn serialize<S: serde::Serializer>(t: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&Second(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// How many of the tenant's subjects are in a buy window.
#[derive(clickhouse::Row, Deserialize, Serialize, ToSchema)]
pub struct WindowCount {
    buy_window: String,
    subjects: u64,
}

/// A page of the watchlist, highest score first, and the count of the
/// whole watchlist per buy window.
#[derive(Serialize, ToSchema)]
pub struct Watchlist {
    tenant_id: String,
    subjects: Vec<Watched>,
    /// Every subject of the tenant's watchlist per buy window (not only
    /// those matching the filters), by window name.
    windows: Vec<WindowCount>,
    limit: u64,
    offset: u64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WatchlistQuery {
    /// Only subjects in this buy window.
    #[param(value_type = Option<String>, pattern = "^(later|unknown|[0-9]{1,9}-[0-9]{1,9}m)$")]
    buy_window: Option<String>,
    /// Only subjects scoring at least this.
    #[param(value_type = Option<f64>, minimum = 0, maximum = 100)]
    min_score: Option<String>,
    /// Page size (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Subjects to skip (default 0).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 1000000)]
    offset: Option<String>,
}

/// Whether `w` names a buy window: `later`, `unknown` or `<a>-<b>m`.
fn window_name(w: &str) -> bool {
    let range = |r: &str| {
        r.split_once('-').is_some_and(|(a, b)| {
            [a, b].iter().all(|n| (1..=9).contains(&n.len()) && n.bytes().all(|c| c.is_ascii_digit()))
        })
    };
    w == "later" || w == "unknown" || w.strip_suffix('m').is_some_and(range)
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/watchlist",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128), WatchlistQuery),
    responses(
        (status = 200, description = "Subjects by score, highest first (ties by subject_id), and counts per buy window", body = Watchlist),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn watchlist(
    State(s): State<AppState>,
    P(t): P<String>,
    Q(q): Q<WatchlistQuery>,
) -> Result<Json<Watchlist>, ApiError> {
    let t = tenant(&t)?;
    let window = match q.buy_window.as_deref() {
        Some(w) if !window_name(w) => {
            return Err(ApiError::bad_request("buy_window", "later, unknown or <from>-<to>m, e.g. 0-3m"))
        }
        w => w,
    };
    let min_score = min_score(q.min_score.as_deref())?;
    let (limit, offset) = page(q.limit.as_deref(), q.offset.as_deref())?;
    let mut sql = select_current::<Watched>(Table::NextBuy, "tenant_id = ?");
    sql.push_str(" WHERE score >= toFloat64(?)");
    if window.is_some() {
        sql.push_str(" AND buy_window = ?");
    }
    sql.push_str(" ORDER BY score DESC, subject_id LIMIT ?, ?");
    let mut query = s.ch.query(&sql).bind(t).bind(min_score);
    if let Some(w) = window {
        query = query.bind(w);
    }
    let subjects: Vec<Watched> = query.bind(offset).bind(limit).fetch_all().await?;
    let counts = format!(
        "SELECT buy_window, count() AS subjects FROM ({}) GROUP BY buy_window ORDER BY buy_window",
        current_query(Table::NextBuy, "tenant_id = ?")
    );
    let windows: Vec<WindowCount> = s.ch.query(&counts).bind(t).fetch_all().await?;
    Ok(Json(Watchlist { tenant_id: t.to_owned(), subjects, windows, limit, offset }))
}

#[cfg(test)]
mod tests {
    use super::window_name;

    #[test]
    fn buy_window_names() {
        for ok in ["0-3m", "3-6m", "6-12m", "later", "unknown"] {
            assert!(window_name(ok), "{ok}");
        }
        for bad in ["", "m", "-3m", "0-3", "0-m", "soon", "0-3mm", "1-2-3m"] {
            assert!(!window_name(bad), "{bad}");
        }
    }
}
