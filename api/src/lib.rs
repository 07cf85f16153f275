//! The query API (SPEC §5): axum over ClickHouse, tenant-scoped API keys,
//! health, readiness and Prometheus metrics.

mod auth;
mod rar;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use revpulse_connectors::metrics::Metrics;
use serde::{Deserialize, Serialize};

pub use auth::ApiKey;

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
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { listen: "127.0.0.1:8080".into(), keys: Vec::new(), request_timeout_ms: 5_000 }
    }
}

/// Whether the pipeline's dependencies are reachable (`/readyz`).
#[derive(Debug, Default)]
pub struct Readiness {
    pub kafka: AtomicBool,
    pub clickhouse: AtomicBool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.kafka.load(Ordering::Relaxed) && self.clickhouse.load(Ordering::Relaxed)
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub ch: clickhouse::Client,
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
    pub keys: Arc<Vec<ApiKey>>,
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
        (self.status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

/// The router with every route of SPEC §5 built so far.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    let v1 = Router::new()
        .route("/v1/tenants/{tenant}/rar", get(rar::get_rar))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_key));
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(v1)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(move |req: Request, next: Next| timeout(req, next, request_timeout)))
        .with_state(state)
}

async fn readyz(State(s): State<AppState>) -> Response {
    let body = serde_json::json!({
        "kafka": s.readiness.kafka.load(Ordering::Relaxed),
        "clickhouse": s.readiness.clickhouse.load(Ordering::Relaxed),
    });
    let status = if s.readiness.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
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
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let resp = next.run(req).await;
    s.metrics
        .api_latency
        .with_label_values(&[route.as_str(), resp.status().as_str()])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
