//! Starting the query API next to the pipeline (or alone).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use revpulse_api::{ApiConfig, AppState, Keys};
use tokio::task::JoinHandle;

use crate::runner::Shared;

/// A running API server.
pub struct ApiServer {
    pub addr: SocketAddr,
    pub handle: JoinHandle<std::io::Result<()>>,
}

/// Binds `cfg.listen` and serves the API until `shared.stop` is set. Also
/// keeps `/readyz`'s ClickHouse flag current.
pub fn start_api(
    rt: &tokio::runtime::Runtime,
    cfg: &ApiConfig,
    ch: clickhouse::Client,
    shared: &Shared,
) -> anyhow::Result<ApiServer> {
    let keys = Keys::new(&cfg.keys).map_err(anyhow::Error::msg).context("invalid [api] keys")?;
    let listener =
        rt.block_on(tokio::net::TcpListener::bind(&cfg.listen)).with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    rt.spawn(revpulse_api::watch_clickhouse(ch.clone(), shared.readiness.clone(), Duration::from_secs(2)));
    let state =
        AppState { ch, metrics: shared.metrics.clone(), readiness: shared.readiness.clone(), keys: Arc::new(keys) };
    let app = revpulse_api::router(state, Duration::from_millis(cfg.request_timeout_ms));
    let stop = shared.stop.clone();
    let handle = rt.spawn(revpulse_api::serve(listener, app, async move {
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }));
    tracing::info!(%addr, "query API listening");
    Ok(ApiServer { addr, handle })
}
