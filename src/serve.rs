//! Starting the query API next to the pipeline (or alone).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use revpulse_api::ingest::Ingest;
use revpulse_api::{AppState, Keys};
use revpulse_connectors::kafka::Publisher;
use revpulse_connectors::schema_registry::AvroCodec;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::runner::Shared;

/// A running API server.
pub struct ApiServer {
    pub addr: SocketAddr,
    pub handle: JoinHandle<std::io::Result<()>>,
}

/// What HTTP ingest publishes with: an acknowledged producer to `cfg`'s
/// Kafka, and the Avro encoder when a topic is Avro.
fn ingest(rt: &tokio::runtime::Runtime, cfg: &Config) -> anyhow::Result<Ingest> {
    let ack_timeout = Duration::from_millis(cfg.api.ingest_ack_timeout_ms);
    let publisher = Publisher::new(&cfg.kafka, ack_timeout).context("creating the HTTP ingest producer")?;
    let avro = match (&cfg.kafka.schema_registry, cfg.kafka.formats.first_avro()) {
        (Some(registry), Some(_)) => {
            let codec = AvroCodec::new(registry, rt.handle().clone()).context("schema registry for HTTP ingest")?;
            Some(Arc::new(std::sync::Mutex::new(codec)))
        }
        _ => None,
    };
    Ok(Ingest { publisher, topics: cfg.kafka.topics.clone(), formats: cfg.kafka.formats.clone(), avro })
}

/// Binds `cfg.api.listen` and serves the API until `shared.stop` is set
/// (HTTP ingest publishing to `cfg.kafka`). Also keeps `/readyz`'s
/// ClickHouse flag current.
pub fn start_api(
    rt: &tokio::runtime::Runtime,
    full: &Config,
    ch: clickhouse::Client,
    shared: &Shared,
) -> anyhow::Result<ApiServer> {
    let cfg = &full.api;
    let keys = Keys::new(&cfg.keys).map_err(anyhow::Error::msg).context("invalid [api] keys")?;
    let ingest = Some(Arc::new(ingest(rt, full)?));
    let listener =
        rt.block_on(tokio::net::TcpListener::bind(&cfg.listen)).with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    rt.spawn(revpulse_api::watch_clickhouse(ch.clone(), shared.readiness.clone(), Duration::from_secs(2)));
    let state = AppState {
        ch,
        metrics: shared.metrics.clone(),
        readiness: shared.readiness.clone(),
        keys: Arc::new(keys),
        ingest,
        rows: shared.rows.clone(),
        in_flight: (cfg.max_in_flight > 0).then(|| Arc::new(tokio::sync::Semaphore::new(cfg.max_in_flight))),
    };
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
