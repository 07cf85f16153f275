//! `GET /v1/tenants/{tenant}/experiments/{id}/lift` (SPEC §5, §3.5).

use axum::extract::State;
use axum::Json;
use revpulse_connectors::clickhouse::select_current;
use revpulse_pipelines::row::Table;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::params::{id, tenant, P};
use crate::{ApiError, AppState, ErrorBody};

/// Figures of one variant.
#[derive(clickhouse::Row, Deserialize, Serialize, ToSchema)]
pub struct VariantFigures {
    /// `control` or `treatment`.
    variant: String,
    subjects: u64,
    converters: u64,
    conversion_rate: f64,
    revenue: f64,
    revenue_per_subject: f64,
}

#[derive(clickhouse::Row, Deserialize)]
struct LiftRow {
    lift: Option<f64>,
    incremental_revenue: Option<f64>,
    z: Option<f64>,
    p_value: Option<f64>,
}

/// Lift of an experiment; null where a variant is missing or a denominator is zero.
#[derive(Serialize, ToSchema)]
pub struct ExperimentLift {
    tenant_id: String,
    experiment_id: String,
    variants: Vec<VariantFigures>,
    /// cr_t / cr_c − 1.
    lift: Option<f64>,
    /// (rps_t − rps_c) × subjects_t.
    incremental_revenue: Option<f64>,
    /// Pooled two-proportion z statistic.
    z: Option<f64>,
    /// Two-sided p-value of z.
    p_value: Option<f64>,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/experiments/{id}/lift",
    tag = "metrics",
    params(
        ("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128),
        ("id" = String, Path, description = "Experiment id", min_length = 1, max_length = 1024),
    ),
    responses(
        (status = 200, description = "Per-variant figures and lift", body = ExperimentLift),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 404, description = "No such experiment", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn lift(
    State(s): State<AppState>,
    P((t, experiment)): P<(String, String)>,
) -> Result<Json<ExperimentLift>, ApiError> {
    let t = tenant(&t)?;
    let experiment = id("id", &experiment)?;
    let row: Option<LiftRow> =
        s.ch.query(&select_current::<LiftRow>(Table::ExperimentLift, "tenant_id = ? AND experiment_id = ?"))
            .bind(t)
            .bind(experiment)
            .fetch_optional()
            .await?;
    let l = row.ok_or_else(|| ApiError::not_found("experiment"))?;
    let variants: Vec<VariantFigures> =
        s.ch.query(
            &(select_current::<VariantFigures>(Table::ExperimentVariants, "tenant_id = ? AND experiment_id = ?")
                + " ORDER BY variant"),
        )
        .bind(t)
        .bind(experiment)
        .fetch_all()
        .await?;
    Ok(Json(ExperimentLift {
        tenant_id: t.to_owned(),
        experiment_id: experiment.to_owned(),
        variants,
        lift: l.lift,
        incremental_revenue: l.incremental_revenue,
        z: l.z,
        p_value: l.p_value,
    }))
}
