//! The deal routes (SPEC §5, §3.11): the pipeline, at-risk deals, one
//! deal, and the scenario calculator.
//!
//! `/deals/pipeline`, `/deals/at-risk` and `/deals/scenario` are fixed
//! segments, so a deal whose id is one of those cannot be read by
//! `/deals/{deal}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use revpulse_connectors::clickhouse::select_current;
use revpulse_pipelines::row::{DealHealthKey, Table};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::params::{id, int, number, tenant, P, Q};
use crate::recovery::day_string;
use crate::{ApiError, AppState, ErrorBody};

/// The open stages, in pipeline order, then the closed ones.
const STAGE_ORDER: &str = "indexOf(['discovery', 'qualified', 'proposal', 'negotiation', 'won', 'lost'], stage)";

/// A stage's current deals (SPEC §3.11 `pipeline_by_stage`).
#[derive(clickhouse::Row, Deserialize, Serialize, ToSchema)]
pub struct Stage {
    stage: String,
    deals: u64,
    /// Σ amount, currency units.
    value: f64,
    /// Σ amount × close_probability / 100.
    weighted_value: f64,
    avg_value: f64,
}

/// Open deals expected to close in a month (SPEC §3.11 `forecast_monthly`).
#[derive(clickhouse::Row, Deserialize, Serialize, ToSchema)]
pub struct ForecastMonth {
    /// First day of the month of `expected_close`, `YYYY-MM-DD`.
    #[serde(with = "day_string")]
    #[schema(value_type = String)]
    month: u16,
    deals: u64,
    pipeline: f64,
    weighted: f64,
}

/// Deals won and lost in a month (SPEC §3.11 `deals_closed_monthly`).
#[derive(clickhouse::Row, Deserialize, Serialize, ToSchema)]
pub struct ClosedMonth {
    /// First day of the month of the deal's current version, `YYYY-MM-DD`.
    #[serde(with = "day_string")]
    #[schema(value_type = String)]
    month: u16,
    won: u64,
    lost: u64,
    won_value: f64,
    lost_value: f64,
    /// won / (won + lost).
    win_rate: f64,
}

/// The pipeline's totals.
#[derive(Serialize, ToSchema)]
pub struct PipelineTotals {
    /// Open deals (not won or lost) and their Σ amount and weighted value.
    open_deals: u64,
    open_value: f64,
    weighted_value: f64,
    won: u64,
    lost: u64,
    won_value: f64,
    lost_value: f64,
    /// Σ won / Σ (won + lost) over every month; null without closed deals.
    win_rate: Option<f64>,
}

/// A tenant's pipeline: stages, forecast months, closed months, totals.
#[derive(Serialize, ToSchema)]
pub struct Pipeline {
    tenant_id: String,
    /// In pipeline order (discovery … negotiation, won, lost); stages
    /// without deals are left out.
    stages: Vec<Stage>,
    /// Oldest first.
    forecast: Vec<ForecastMonth>,
    /// Oldest first.
    closed: Vec<ClosedMonth>,
    totals: PipelineTotals,
}

/// An open deal's figures (SPEC §3.11 `deal_health`).
#[derive(clickhouse::Row, Deserialize, Serialize, ToSchema)]
pub struct DealFigures {
    deal_id: String,
    stage: String,
    /// Currency units.
    amount: f64,
    /// Percent, 0..100.
    close_probability: f64,
    /// 0..100.
    health: f64,
    /// `healthy`, `at_risk` or `critical`.
    category: String,
    /// In the order `stagnant`, `inactive`, `no_champion`, `no_budget`,
    /// `no_decision_maker`, `competition`.
    risk_factors: Vec<String>,
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    #[serde(with = "second_string")]
    #[schema(value_type = String)]
    expected_close: u32,
}

/// ClickHouse's `DateTime` (seconds since the epoch) in,
/// `YYYY-MM-DDTHH:MM:SSZ` out.
mod second_string {
    use revpulse_pipelines::row::Second;

    pub fn serialize<S: serde::Serializer>(t: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&Second(*t).to_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// One open deal.
#[derive(Serialize, ToSchema)]
pub struct DealResponse {
    tenant_id: String,
    #[serde(flatten)]
    deal: DealFigures,
}

/// Open deals at risk, largest first.
#[derive(Serialize, ToSchema)]
pub struct AtRisk {
    tenant_id: String,
    deals: Vec<DealFigures>,
    /// Σ amount of the listed deals.
    value: f64,
    limit: u64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AtRiskQuery {
    /// Only deals of at least this amount (currency units; default 0).
    #[param(value_type = Option<f64>, minimum = 0, maximum = 1e15)]
    min_value: Option<String>,
    /// Most deals listed (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

/// What-if inputs: fractions in [−1, 10]; an absent one is 0.
#[derive(Clone, Copy, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScenarioInput {
    #[serde(default)]
    #[schema(minimum = -1, maximum = 10)]
    pub win_rate_increase: f64,
    #[serde(default)]
    #[schema(minimum = -1, maximum = 10)]
    pub deal_size_increase: f64,
    #[serde(default)]
    #[schema(minimum = -1, maximum = 10)]
    pub pipeline_growth: f64,
}

/// Pipeline, win rate and forecast (= pipeline × win rate).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, ToSchema)]
pub struct Outlook {
    pub pipeline: f64,
    pub win_rate: f64,
    pub forecast: f64,
}

/// The scenario's baseline, projection and their difference.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct Scenario {
    pub baseline: Outlook,
    pub projected: Outlook,
    /// projected − baseline forecast.
    pub delta: f64,
    /// delta / baseline forecast × 100; null when the baseline forecast is 0.
    pub delta_percent: Option<f64>,
}

/// SPEC §5's scenario arithmetic: baseline pipeline = the open pipeline's
/// value, win rate = Σ won / Σ (won + lost) (0 without closed deals),
/// forecast = pipeline × win rate; projected pipeline = pipeline ×
/// (1 + pipeline_growth) × (1 + deal_size_increase), win rate = min(1,
/// win rate × (1 + win_rate_increase)), forecast = their product.
pub fn scenario(open_value: f64, won: u64, lost: u64, input: ScenarioInput) -> Scenario {
    let win_rate = if won + lost > 0 { won as f64 / (won + lost) as f64 } else { 0.0 };
    let baseline = Outlook { pipeline: open_value, win_rate, forecast: open_value * win_rate };
    let pipeline = open_value * (1.0 + input.pipeline_growth) * (1.0 + input.deal_size_increase);
    let win_rate = (win_rate * (1.0 + input.win_rate_increase)).min(1.0);
    let projected = Outlook { pipeline, win_rate, forecast: pipeline * win_rate };
    let delta = projected.forecast - baseline.forecast;
    let delta_percent = (baseline.forecast != 0.0).then(|| delta / baseline.forecast * 100.0);
    Scenario { baseline, projected, delta, delta_percent }
}

/// Parses and checks a scenario body.
fn scenario_input(body: &[u8]) -> Result<ScenarioInput, ApiError> {
    let bad = |e: serde_json::Error| ApiError::bad_request("body", &e.to_string());
    // An object only: serde would also read a struct from an array.
    let value: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
    if !value.is_object() {
        return Err(ApiError::bad_request("body", "a JSON object"));
    }
    let input: ScenarioInput = serde_json::from_value(value).map_err(bad)?;
    for (name, v) in [
        ("win_rate_increase", input.win_rate_increase),
        ("deal_size_increase", input.deal_size_increase),
        ("pipeline_growth", input.pipeline_growth),
    ] {
        if !(v.is_finite() && (-1.0..=10.0).contains(&v)) {
            return Err(ApiError::bad_request(name, "a fraction from -1 to 10"));
        }
    }
    Ok(input)
}

async fn stages(s: &AppState, t: &str) -> Result<Vec<Stage>, ApiError> {
    let sql = select_current::<Stage>(Table::PipelineByStage, "tenant_id = ?") + &format!(" ORDER BY {STAGE_ORDER}");
    Ok(s.ch.query(&sql).bind(t).fetch_all().await?)
}

async fn closed_months(s: &AppState, t: &str) -> Result<Vec<ClosedMonth>, ApiError> {
    let sql = select_current::<ClosedMonth>(Table::DealsClosedMonthly, "tenant_id = ?") + " ORDER BY month";
    Ok(s.ch.query(&sql).bind(t).fetch_all().await?)
}

fn is_open(stage: &Stage) -> bool {
    !matches!(stage.stage.as_str(), "won" | "lost")
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/deals/pipeline",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128)),
    responses(
        (status = 200, description = "Stages, forecast months, closed months and totals", body = Pipeline),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn pipeline(State(s): State<AppState>, P(t): P<String>) -> Result<Json<Pipeline>, ApiError> {
    let t = tenant(&t)?;
    let stages = stages(&s, t).await?;
    let sql = select_current::<ForecastMonth>(Table::ForecastMonthly, "tenant_id = ?") + " ORDER BY month";
    let forecast: Vec<ForecastMonth> = s.ch.query(&sql).bind(t).fetch_all().await?;
    let closed = closed_months(&s, t).await?;
    let open = || stages.iter().filter(|st| is_open(st));
    let (won, lost) = (closed.iter().map(|c| c.won).sum::<u64>(), closed.iter().map(|c| c.lost).sum::<u64>());
    let totals = PipelineTotals {
        open_deals: open().map(|st| st.deals).sum(),
        open_value: open().map(|st| st.value).sum(),
        weighted_value: open().map(|st| st.weighted_value).sum(),
        won,
        lost,
        won_value: closed.iter().map(|c| c.won_value).sum(),
        lost_value: closed.iter().map(|c| c.lost_value).sum(),
        win_rate: (won + lost > 0).then(|| won as f64 / (won + lost) as f64),
    };
    Ok(Json(Pipeline { tenant_id: t.to_owned(), stages, forecast, closed, totals }))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/deals/at-risk",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128), AtRiskQuery),
    responses(
        (status = 200, description = "Open deals whose category is at_risk or critical, by amount (ties by deal_id)", body = AtRisk),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn at_risk(
    State(s): State<AppState>,
    P(t): P<String>,
    Q(q): Q<AtRiskQuery>,
) -> Result<Json<AtRisk>, ApiError> {
    let t = tenant(&t)?;
    let min_value = number("min_value", q.min_value.as_deref(), 0.0, 1e15)?.unwrap_or(0.0);
    let limit = int("limit", q.limit.as_deref(), 100, 1, 1_000)?;
    // Fixed point: ClickHouse 18.16 cannot parse every float literal;
    // amounts are whole cents, so rounding up to cents keeps `>=` exact.
    // (Less a millionth of a cent: 1.1 × 100 is 110.00000000000001.)
    let min_value = format!("{:.2}", (min_value * 100.0 - 1e-6).ceil() / 100.0);
    let sql = select_current::<DealFigures>(Table::DealHealth, "tenant_id = ?")
        + " WHERE category IN ('at_risk', 'critical') AND amount >= toFloat64(?) ORDER BY amount DESC, deal_id LIMIT ?";
    let deals: Vec<DealFigures> = s.ch.query(&sql).bind(t).bind(min_value).bind(limit).fetch_all().await?;
    let value = deals.iter().map(|d| d.amount).sum();
    Ok(Json(AtRisk { tenant_id: t.to_owned(), deals, value, limit }))
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/deals/{deal}",
    tag = "metrics",
    params(
        ("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128),
        ("deal" = String, Path, description = "Deal id (not `pipeline`, `at-risk` or `scenario`)", min_length = 1, max_length = 1024),
    ),
    responses(
        (status = 200, description = "The open deal's figures", body = DealResponse),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 404, description = "No open deal with that id (won and lost deals have no health)", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_deal(
    State(s): State<AppState>,
    P((t, deal)): P<(String, String)>,
) -> Result<Json<DealResponse>, ApiError> {
    let t = tenant(&t)?;
    let deal = id("deal", &deal)?;
    let key = DealHealthKey { tenant_id: t.into(), deal_id: deal.into() };
    let row: Option<DealFigures> = match s.cached(key) {
        Some(v) => Some(DealFigures {
            deal_id: deal.to_owned(),
            stage: v.stage.into(),
            amount: v.amount,
            close_probability: v.close_probability,
            health: v.health,
            category: v.category.into(),
            risk_factors: v.risk_factors.into_iter().map(String::from).collect(),
            expected_close: v.expected_close.0,
        }),
        None => {
            let sql = select_current::<DealFigures>(Table::DealHealth, "tenant_id = ? AND deal_id = ?");
            s.ch.query(&sql).bind(t).bind(deal).fetch_optional().await?
        }
    };
    let deal = row.ok_or_else(|| ApiError::not_found("open deal"))?;
    Ok(Json(DealResponse { tenant_id: t.to_owned(), deal }))
}

#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/deals/scenario",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128)),
    request_body(content = ScenarioInput, description = "Fractions in [-1, 10]; an absent one is 0"),
    responses(
        (status = 200, description = "Baseline and projected pipeline, win rate and forecast", body = Scenario),
        (status = 400, description = "Bad body or a value out of range", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn post_scenario(
    State(s): State<AppState>,
    P(t): P<String>,
    body: Bytes,
) -> Result<Json<Scenario>, ApiError> {
    let t = tenant(&t)?;
    let input = scenario_input(&body)?;
    let open_value = stages(&s, t).await?.iter().filter(|st| is_open(st)).map(|st| st.value).sum();
    let closed = closed_months(&s, t).await?;
    let (won, lost) = (closed.iter().map(|c| c.won).sum(), closed.iter().map(|c| c.lost).sum());
    Ok(Json(scenario(open_value, won, lost, input)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_arithmetic_as_specified() {
        let none = ScenarioInput::default();
        let s = scenario(1_000.0, 3, 1, none);
        assert_eq!(s.baseline, Outlook { pipeline: 1_000.0, win_rate: 0.75, forecast: 750.0 });
        assert_eq!((s.projected, s.delta, s.delta_percent), (s.baseline, 0.0, Some(0.0)));
        let grow = ScenarioInput { win_rate_increase: 0.2, deal_size_increase: 0.1, pipeline_growth: 0.5 };
        let s = scenario(1_000.0, 3, 1, grow);
        assert!((s.projected.pipeline - 1_650.0).abs() < 1e-9);
        assert!((s.projected.win_rate - 0.9).abs() < 1e-12);
        assert!((s.projected.forecast - 1_485.0).abs() < 1e-9);
        assert!((s.delta - 735.0).abs() < 1e-9);
        assert!((s.delta_percent.unwrap_or_default() - 98.0).abs() < 1e-9);
        // The win rate is capped at 1; no closed deals: 0 and no percent.
        assert_eq!(scenario(10.0, 1, 0, ScenarioInput { win_rate_increase: 10.0, ..none }).projected.win_rate, 1.0);
        let empty = scenario(10.0, 0, 0, grow);
        assert_eq!((empty.baseline.win_rate, empty.delta, empty.delta_percent), (0.0, 0.0, None));
        assert_eq!(scenario(10.0, 1, 1, ScenarioInput { pipeline_growth: -1.0, ..none }).projected.forecast, 0.0);
    }

    #[test]
    fn scenario_bodies_are_validated() {
        assert!(scenario_input(br#"{"win_rate_increase": 0.1}"#).is_ok());
        assert!(scenario_input(br#"{}"#).is_ok());
        for bad in [
            &br#"{"win_rate_increase": 10.5}"#[..],
            br#"{"pipeline_growth": -1.01}"#,
            br#"{"deal_size_increase": "0.1"}"#,
            br#"{"other": 1}"#,
            br#"[1]"#,
            b"",
        ] {
            let e = scenario_input(bad).expect_err("rejected");
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        }
    }
}
