//! Revenue per minute routes (SPEC §5, §3.3): realized revenue per minute
//! and conversation efficiency.

use axum::extract::State;
use axum::Json;
use revpulse_connectors::clickhouse::{current_query, select_current};
use revpulse_pipelines::row::{ConversationRpmKey, Minute, Table};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::params::{id, int, tenant, P, Q};
use crate::{ApiError, AppState, ErrorBody};

#[derive(clickhouse::Row, Deserialize)]
struct ConversationRow {
    subject_id: String,
    duration_minutes: f64,
    revenue_potential: f64,
    revenue_per_minute: f64,
    active: u64,
}

/// Efficiency of one conversation (SPEC §3.3).
#[derive(Serialize, ToSchema)]
pub struct ConversationEfficiency {
    tenant_id: String,
    conversation_id: String,
    /// The lead: subject of the conversation's latest record.
    subject_id: String,
    /// max(1, last ts − first ts) in minutes.
    duration_minutes: f64,
    revenue_potential: f64,
    revenue_per_minute: f64,
    /// 1 while none of its current records has `kind = ended`, else 0
    /// (SPEC §3.10).
    #[schema(minimum = 0, maximum = 1)]
    active: u64,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/conversations/{id}",
    tag = "metrics",
    params(
        ("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128),
        ("id" = String, Path, description = "Conversation id", min_length = 1, max_length = 1024),
    ),
    responses(
        (status = 200, description = "The conversation's efficiency", body = ConversationEfficiency),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 404, description = "No such conversation", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_conversation(
    State(s): State<AppState>,
    P((t, conversation)): P<(String, String)>,
) -> Result<Json<ConversationEfficiency>, ApiError> {
    let t = tenant(&t)?;
    let conversation = id("id", &conversation)?;
    let key = ConversationRpmKey { tenant_id: t.into(), conversation_id: conversation.into() };
    let row: Option<ConversationRow> = match s.cached(key) {
        Some(v) => Some(ConversationRow {
            subject_id: v.subject_id.into(),
            duration_minutes: v.duration_minutes,
            revenue_potential: v.revenue_potential,
            revenue_per_minute: v.revenue_per_minute,
            active: v.active,
        }),
        None => {
            let sql =
                select_current::<ConversationRow>(Table::ConversationRpm, "tenant_id = ? AND conversation_id = ?");
            s.ch.query(&sql).bind(t).bind(conversation).fetch_optional().await?
        }
    };
    let r = row.ok_or_else(|| ApiError::not_found("conversation"))?;
    Ok(Json(ConversationEfficiency {
        tenant_id: t.to_owned(),
        conversation_id: conversation.to_owned(),
        subject_id: r.subject_id,
        duration_minutes: r.duration_minutes,
        revenue_potential: r.revenue_potential,
        revenue_per_minute: r.revenue_per_minute,
        active: r.active,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PerMinuteQuery {
    /// Start, RFC 3339 (default: one hour before `to`).
    #[param(value_type = Option<String>, pattern = "^(197[1-9]|19[89][0-9]|20[0-9]{2}|210[0-4])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")]
    from: Option<String>,
    /// End, RFC 3339, inclusive (default: now). An empty range has no buckets.
    #[param(value_type = Option<String>, pattern = "^(197[1-9]|19[89][0-9]|20[0-9]{2}|210[0-4])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")]
    to: Option<String>,
    /// Conversion source (default `all`).
    #[param(value_type = Option<SourceParam>)]
    source: Option<String>,
    /// Most buckets to return (default 1440, one day).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 44640)]
    limit: Option<String>,
    /// Buckets to skip (default 0).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 1000000)]
    offset: Option<String>,
}

/// Conversion sources of `revenue_per_minute`.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum SourceParam {
    All,
    Payments,
    Ro,
}

#[derive(clickhouse::Row, Deserialize)]
struct MinuteRow {
    minute: u32,
    revenue: f64,
    conversions: u64,
}

/// Realized revenue of one minute.
#[derive(Serialize, ToSchema)]
pub struct MinuteBucket {
    /// `YYYY-MM-DDTHH:MM:00Z`.
    minute: String,
    revenue: f64,
    conversions: u64,
}

/// Minute buckets with conversions, oldest first (minutes without any are omitted).
#[derive(Serialize, ToSchema)]
pub struct PerMinute {
    tenant_id: String,
    source: String,
    from: String,
    to: String,
    minutes: Vec<MinuteBucket>,
    limit: u64,
    offset: u64,
}

#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/revenue/per-minute",
    tag = "metrics",
    params(("tenant" = String, Path, description = "Tenant id", min_length = 1, max_length = 128), PerMinuteQuery),
    responses(
        (status = 200, description = "Realized revenue per minute", body = PerMinute),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key", body = ErrorBody),
        (status = 403, description = "Key not scoped to this tenant", body = ErrorBody),
        (status = 503, description = "Metrics store unavailable or request timed out", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn per_minute(
    State(s): State<AppState>,
    P(t): P<String>,
    Q(q): Q<PerMinuteQuery>,
) -> Result<Json<PerMinute>, ApiError> {
    let t = tenant(&t)?;
    let parse =
        |name: &str, v: &str| Minute::parse_seconds(v).ok_or_else(|| ApiError::bad_request(name, "RFC 3339 timestamp"));
    let to = match q.to.as_deref() {
        Some(v) => parse("to", v)?,
        None => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
    };
    let from = match q.from.as_deref() {
        Some(v) => parse("from", v)?,
        None => to - 3_600,
    };
    let limit = int("limit", q.limit.as_deref(), 1_440, 1, 44_640)?;
    let offset = int("offset", q.offset.as_deref(), 0, 0, 1_000_000)?;
    let source = q.source.unwrap_or_else(|| "all".into());
    if !matches!(source.as_str(), "all" | "payments" | "ro") {
        return Err(ApiError::bad_request("source", "one of all, payments, ro"));
    }
    let rows: Vec<MinuteRow> =
        s.ch.query(&format!(
            "SELECT toUInt32(minute) AS m, revenue, conversions FROM ({}) ORDER BY m LIMIT ?, ?",
            current_query(
                Table::RevenuePerMinute,
                "tenant_id = ? AND source = ? AND minute >= toDateTime(?) AND minute <= toDateTime(?)"
            )
        ))
        .bind(t)
        .bind(&source)
        .bind(Minute::of_seconds(from).0)
        .bind(to.clamp(0, i64::from(u32::MAX)) as u32)
        .bind(offset)
        .bind(limit)
        .fetch_all()
        .await?;
    Ok(Json(PerMinute {
        tenant_id: t.to_owned(),
        source,
        from: Minute::of_seconds(from).to_string(),
        to: Minute::of_seconds(to).to_string(),
        minutes: rows
            .into_iter()
            .map(|r| MinuteBucket {
                minute: Minute(r.minute).to_string(),
                revenue: r.revenue,
                conversions: r.conversions,
            })
            .collect(),
        limit,
        offset,
    }))
}
