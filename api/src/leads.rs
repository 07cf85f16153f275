//! Lead routes (SPEC §5, §3.2): one lead, and leads by score.

use axum::extract::State;
use axum::Json;
use revpulse_connectors::clickhouse::select_current;
use revpulse_pipelines::row::{LeadScoreKey, Table, Tier};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::params::{id, min_score, page, tenant, P, Q};
use crate::{ApiError, AppState, ErrorBody};

/// Lead tiers (SPEC §3.2).
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum TierParam {
    Premium,
    Standard,
    Basic,
    Unqualified,
}

#[derive(clickhouse::Row, Deserialize)]
struct LeadRow {
    subject_id: String,
    score: f64,
    base: f64,
    behavioral: f64,
    timing: f64,
    market: f64,
    tier: String,
    revenue_potential: f64,
    conversion_probability: f64,
}

/// The four components of a score.
#[derive(Serialize, ToSchema)]
pub struct Components {
    base: f64,
    behavioral: f64,
    timing: f64,
    market: f64,
}

/// A lead's score (SPEC §3.2).
#[derive(Serialize, ToSchema)]
pub struct Lead {
    tenant_id: String,
    subject_id: String,
    /// 0..100, rounded to 2 decimals.
    score: f64,
    components: Components,
    /// `premium`, `standard`, `basic` or `unqualified`.
    tier: String,
    revenue_potential: f64,
    conversion_probability: f64,
}

impl Lead {
    fn from_row(tenant_id: &str, r: LeadRow) -> Lead {
        Lead {
            tenant_id: tenant_id.to_owned(),
            subject_id: r.subject_id,
            score: r.score,
            components: Components { base: r.base, behavioral: r.behavioral, timing: r.timing, market: r.market },
            tier: r.tier,
            revenue_potential: r.revenue_potential,
            conversion_probability: r.conversion_probability,
        }
    }
}

/// A page of leads, highest score first.
#[derive(Serialize, ToSchema)]
pub struct LeadList {
    leads: Vec<Lead>,
    limit: u64,
    offset: u64,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/leads/{subject}",
    tag = "metrics",
    params(
        ("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128),
        ("subject" = String, Path, description = "Lead (subject) id", min_length = 1, max_length = 1024),
    ),
    responses(
        (status = 200, description = "The lead's score", body = Lead),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 404, description = "No such lead", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_lead(State(s): State<AppState>, P((t, subject)): P<(String, String)>) -> Result<Json<Lead>, ApiError> {
    let t = tenant(&t)?;
    let subject = id("subject", &subject)?;
    let key = LeadScoreKey { tenant_id: t.into(), subject_id: subject.into() };
    let row: Option<LeadRow> = match s.cached(key) {
        Some(v) => Some(LeadRow {
            subject_id: subject.to_owned(),
            score: v.score,
            base: v.base,
            behavioral: v.behavioral,
            timing: v.timing,
            market: v.market,
            tier: v.tier.as_str().to_owned(),
            revenue_potential: v.revenue_potential,
            conversion_probability: v.conversion_probability,
        }),
        None => {
            let sql = select_current::<LeadRow>(Table::LeadScores, "tenant_id = ? AND subject_id = ?");
            s.ch.query(&sql).bind(t).bind(subject).fetch_optional().await?
        }
    };
    row.map(|r| Json(Lead::from_row(t, r))).ok_or_else(|| ApiError::not_found("lead"))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeadsQuery {
    /// Only leads of this tier.
    #[param(value_type = Option<TierParam>)]
    tier: Option<String>,
    /// Only leads scoring at least this.
    #[param(value_type = Option<f64>, minimum = 0, maximum = 100)]
    min_score: Option<String>,
    /// Page size (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Leads to skip (default 0).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 1000000)]
    offset: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/leads",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128), LeadsQuery),
    responses(
        (status = 200, description = "Leads by score, highest first (ties by subject_id)", body = LeadList),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_leads(
    State(s): State<AppState>,
    P(t): P<String>,
    Q(q): Q<LeadsQuery>,
) -> Result<Json<LeadList>, ApiError> {
    let t = tenant(&t)?;
    let tier = match q.tier.as_deref() {
        None => None,
        Some(name) => Some(
            Tier::from_name(name)
                .ok_or_else(|| ApiError::bad_request("tier", "one of premium, standard, basic, unqualified"))?,
        ),
    };
    let min_score = min_score(q.min_score.as_deref())?;
    let (limit, offset) = page(q.limit.as_deref(), q.offset.as_deref())?;
    let mut sql = select_current::<LeadRow>(Table::LeadScores, "tenant_id = ?");
    sql.push_str(" WHERE score >= toFloat64(?)");
    if tier.is_some() {
        sql.push_str(" AND tier = ?");
    }
    sql.push_str(" ORDER BY score DESC, subject_id LIMIT ?, ?");
    let mut query = s.ch.query(&sql).bind(t).bind(min_score);
    if let Some(tier) = tier {
        query = query.bind(tier.as_str());
    }
    let rows: Vec<LeadRow> = query.bind(offset).bind(limit).fetch_all().await?;
    Ok(Json(LeadList { leads: rows.into_iter().map(|r| Lead::from_row(t, r)).collect(), limit, offset }))
}
