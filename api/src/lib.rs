//! The query API (SPEC §5): axum over ClickHouse, tenant-scoped API keys,
//! health, readiness, Prometheus metrics and a generated OpenAPI document.
//!
//! One module per metric family (`rar`, `leads`, `revenue`, `attribution`,
//! `experiments`, `campaigns`, `recovery`, `watchlist`, `facts`); `params` validates every parameter into a JSON 400;
//! `auth` checks keys. Values come from ClickHouse through parameterized
//! queries (the `clickhouse` crate's client-side `?` binding).

mod attribution;
mod auth;
mod campaigns;
mod deals;
mod experiments;
mod facts;
pub mod ingest;
mod leads;
mod params;
mod rar;
mod recovery;
mod revenue;
mod watchlist;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use revpulse_connectors::clickhouse::RowCache;
use revpulse_connectors::metrics::Metrics;
use revpulse_pipelines::row::{RowKey, TableKey, TableValues};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

pub use auth::{hash_key, ApiKey, Keys, Scope};

/// Query API settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// API keys; each is scoped to one tenant or to all (`"*"`).
    pub keys: Vec<ApiKey>,
    /// Longest a request may take before it is answered 503, in milliseconds.
    pub request_timeout_ms: u64,
    /// `POST /v1/ingest/{topic}`: how long Kafka may take to acknowledge a
    /// request's events (retries included) before the request is answered
    /// 503, in milliseconds; keep it below `request_timeout_ms`.
    pub ingest_ack_timeout_ms: u64,
    /// Most `/v1` requests served at once; one more is answered 503 at once
    /// with `Retry-After: 1` instead of queueing until it times out
    /// (0: no limit).
    pub max_in_flight: usize,
    /// Where the API runs in the pipeline's process: answer point lookups
    /// (a lead, a conversation, a deal) from the rows the sink wrote, and
    /// ClickHouse only for keys it did not (docs/api.md "Serving from the
    /// sink"). `revpulse api` alone always asks ClickHouse.
    pub row_cache: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: "127.0.0.1:8080".into(),
            keys: Vec::new(),
            request_timeout_ms: 5_000,
            ingest_ack_timeout_ms: 4_000,
            max_in_flight: 64,
            row_cache: true,
        }
    }
}

pub use revpulse_connectors::Readiness;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub ch: clickhouse::Client,
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
    pub keys: Arc<Keys>,
    /// HTTP ingest; `None` where no Kafka is configured (answered 503).
    pub ingest: Option<Arc<ingest::Ingest>>,
    /// The rows the pipeline's sinks wrote, where it runs in this process.
    pub rows: Option<Arc<RowCache>>,
    /// Permits of `/v1` requests in flight (`None`: no limit).
    pub in_flight: Option<Arc<tokio::sync::Semaphore>>,
}

impl AppState {
    /// The values of `key`'s row if the pipeline in this process wrote it
    /// (see [`RowCache`]); `None` means "ask ClickHouse".
    pub fn cached<K: TableKey>(&self, key: K) -> Option<K::Values> {
        let key = RowKey::new(K::TABLE, key.into_cells());
        self.rows.as_ref()?.get(&key).and_then(|v| K::Values::from_cells(&v))
    }
}

/// The body of every error response.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong; names the parameter for 400s.
    pub error: String,
}

/// An API error: status and a JSON `{"error": …}` body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    pub fn bad_request(param: &str, why: &str) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, format!("invalid parameter `{param}`: {why}"))
    }
    pub fn not_found(what: &str) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
}

impl From<clickhouse::error::Error> for ApiError {
    fn from(e: clickhouse::error::Error) -> Self {
        tracing::warn!(error = %e, "clickhouse query failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "metrics store unavailable")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(ErrorBody { error: self.message })).into_response()
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = openapi.components.as_mut() {
            c.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// Health, readiness and status of the service.
#[derive(Serialize, ToSchema)]
pub struct Status {
    status: String,
}

/// Reachability of the pipeline's dependencies.
#[derive(Serialize, ToSchema)]
pub struct ReadyStatus {
    kafka: bool,
    clickhouse: bool,
}

#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, description = "The process is alive", body = Status)))]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok".into() })
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Kafka and ClickHouse are reachable", body = ReadyStatus),
        (status = 503, description = "A dependency is unreachable", body = ReadyStatus),
    )
)]
async fn readyz(State(s): State<AppState>) -> Response {
    let body = ReadyStatus {
        kafka: s.readiness.kafka.load(Ordering::Relaxed),
        clickhouse: s.readiness.clickhouse.load(Ordering::Relaxed),
    };
    let status = if s.readiness.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain"))
)]
async fn metrics(State(s): State<AppState>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "ops",
    responses((status = 200, description = "This OpenAPI 3 document", content_type = "application/json"))
)]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The OpenAPI document of every route, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(title = "revpulse query API", description = "Revenue metrics maintained incrementally by revpulse (SPEC §5)."),
    paths(
        healthz,
        readyz,
        metrics,
        openapi_json,
        rar::get_rar,
        leads::get_lead,
        leads::list_leads,
        revenue::get_conversation,
        revenue::per_minute,
        attribution::attribution,
        attribution::offers,
        campaigns::campaigns,
        recovery::recovery,
        watchlist::watchlist,
        facts::coverage,
        experiments::lift,
        deals::pipeline,
        deals::at_risk,
        deals::get_deal,
        deals::post_scenario,
        ingest::ingest,
    ),
    components(schemas(attribution::ModelParam, leads::TierParam, revenue::SourceParam, ingest::TopicParam)),
    modifiers(&BearerAuth),
    tags(
        (name = "metrics", description = "Tenant-scoped metrics; `Authorization: Bearer <key>` of a key with the `read` scope"),
        (name = "ingest", description = "Publishing events over HTTP (SPEC §5.1); a key with the `ingest` scope"),
        (name = "ops", description = "Operations"),
    )
)]
pub struct ApiDoc;

/// The router with every route of SPEC §5.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let v1 = Router::new()
        .route("/v1/tenants/{tenant}/rar", get(rar::get_rar))
        .route("/v1/tenants/{tenant}/leads/{subject}", get(leads::get_lead))
        .route("/v1/tenants/{tenant}/leads", get(leads::list_leads))
        .route("/v1/tenants/{tenant}/conversations/{id}", get(revenue::get_conversation))
        .route("/v1/tenants/{tenant}/revenue/per-minute", get(revenue::per_minute))
        .route("/v1/tenants/{tenant}/attribution", get(attribution::attribution))
        .route("/v1/tenants/{tenant}/offers", get(attribution::offers))
        .route("/v1/tenants/{tenant}/campaigns", get(campaigns::campaigns))
        .route("/v1/tenants/{tenant}/payments/recovery", get(recovery::recovery))
        .route("/v1/tenants/{tenant}/watchlist", get(watchlist::watchlist))
        .route("/v1/tenants/{tenant}/facts/coverage", get(facts::coverage))
        .route("/v1/tenants/{tenant}/experiments/{id}/lift", get(experiments::lift))
        .route("/v1/tenants/{tenant}/deals/pipeline", get(deals::pipeline))
        .route("/v1/tenants/{tenant}/deals/at-risk", get(deals::at_risk))
        .route("/v1/tenants/{tenant}/deals/scenario", post(deals::post_scenario))
        .route("/v1/tenants/{tenant}/deals/{deal}", get(deals::get_deal))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_key))
        .route_layer(middleware::from_fn_with_state(state.clone(), shed));
    // Ingest checks its key itself: the signature covers the raw body.
    let ingest = Router::new()
        .route("/v1/ingest/{topic}", post(ingest::ingest))
        .layer(axum::extract::DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .merge(v1)
        .merge(ingest)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(move |req: Request, next: Next| timeout(req, next, request_timeout)))
        .with_state(state)
}

/// Answers 503 with `Retry-After: 1` at once when `max_in_flight`
/// requests are being served: a client can back off instead of waiting
/// out the timeout, and the requests in flight keep their latency.
async fn shed(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(limit) = &s.in_flight else { return next.run(req).await };
    let Ok(_permit) = Arc::clone(limit).try_acquire_owned() else {
        let mut resp = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded: too many requests in flight, retry")
            .into_response();
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        return resp;
    };
    next.run(req).await
}

async fn timeout(req: Request, next: Next, limit: Duration) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "request timed out").into_response(),
    }
}

/// Records request latency by route template (never the raw path, which
/// would carry tenant ids into label values) and status.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .api_latency
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// Keeps `readiness.clickhouse` current by pinging every `every`.
pub async fn watch_clickhouse(ch: clickhouse::Client, readiness: Arc<Readiness>, every: Duration) {
    loop {
        let ok = tokio::time::timeout(every, ch.query("SELECT 1").fetch_one::<u8>()).await.is_ok_and(|r| r.is_ok());
        readiness.clickhouse.store(ok, Ordering::Relaxed);
        tokio::time::sleep(every).await;
    }
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
