//! The fact coverage route (SPEC §5, §3.9).

use axum::extract::State;
use axum::Json;
use revpulse_connectors::clickhouse::select_current;
use revpulse_pipelines::fact_coverage::FACTS;
use revpulse_pipelines::row::Table;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::params::{tenant, P};
use crate::{ApiError, AppState, ErrorBody};

#[derive(clickhouse::Row, Deserialize)]
struct CoverageRow {
    fact: String,
    leads: u64,
    with_fact: u64,
    coverage: f64,
}

/// How many leads carry one fact.
#[derive(Serialize, ToSchema)]
pub struct FactCoverage {
    /// `homeowner`, `monthly_bill`, `property_type`, `region`,
    /// `timeline_months`, `credit_signal`, `decision_maker` or `sentiment`.
    fact: String,
    /// Leads for which at least one current record carries the fact.
    with_fact: u64,
    /// with_fact / leads; null when the tenant has no leads.
    coverage: Option<f64>,
}

/// A tenant's lead data coverage: every fact of SPEC §3.9, in its order.
#[derive(Serialize, ToSchema)]
pub struct Coverage {
    tenant_id: String,
    /// The tenant's leads (0 when it has none: then every fact has
    /// with_fact 0 and coverage null).
    leads: u64,
    facts: Vec<FactCoverage>,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/facts/coverage",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128)),
    responses(
        (status = 200, description = "Coverage per fact", body = Coverage),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn coverage(State(s): State<AppState>, P(t): P<String>) -> Result<Json<Coverage>, ApiError> {
    let t = tenant(&t)?;
    let rows: Vec<CoverageRow> =
        s.ch.query(&select_current::<CoverageRow>(Table::FactCoverage, "tenant_id = ?")).bind(t).fetch_all().await?;
    let leads = rows.iter().map(|r| r.leads).max().unwrap_or(0);
    let facts = FACTS
        .iter()
        .map(|name| {
            let row = rows.iter().find(|r| r.fact == *name);
            FactCoverage {
                fact: (*name).to_owned(),
                with_fact: row.map_or(0, |r| r.with_fact),
                coverage: row.map(|r| r.coverage),
            }
        })
        .collect();
    Ok(Json(Coverage { tenant_id: t.to_owned(), leads, facts }))
}
