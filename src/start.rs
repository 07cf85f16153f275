//! The one start-up path of `run`, `demo`, `bench`, the benchmarks and
//! the integration tests: the tokio runtime, the embedded broker, and the
//! services around the pipeline (migrations, sink, API, signal handling).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use revpulse_connectors::clickhouse::{migrate, ClickHouseSink, RowCache};
use revpulse_connectors::kafka::KafkaConfig;
use revpulse_pipelines::event::Topic;

use crate::config::Config;
use crate::runner::{run_cluster, Cluster, RunStats, Shared};
use crate::serve::{start_api, ApiServer};

/// The tokio runtime every command uses: two threads drive the sink, the
/// API and the schema registry client (timely workers are threads of
/// their own).
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// The embedded broker: librdkafka's in-process mock cluster (it speaks the
/// real Kafka protocol on loopback), with `kafka`'s five input topics
/// (`partitions` each) and its dead-letter topic created, and `kafka`
/// pointed at it.
pub fn embedded_kafka(
    kafka: &mut KafkaConfig,
    partitions: i32,
) -> anyhow::Result<MockCluster<'static, DefaultProducerContext>> {
    let cluster = MockCluster::new(1).context("starting the embedded Kafka (librdkafka mock cluster)")?;
    for topic in Topic::ALL {
        cluster.create_topic(kafka.topics.get(topic), partitions, 1)?;
    }
    cluster.create_topic(&kafka.dlq_topic, 1, 1)?;
    kafka.brokers = cluster.bootstrap_servers();
    Ok(cluster)
}

/// What to start next to the pipeline.
#[derive(Clone, Copy, Debug)]
pub struct StartOptions {
    /// Serve the query API on `cfg.api.listen`.
    pub api: bool,
    /// First SIGINT/SIGTERM stops gracefully, the second aborts.
    pub signals: bool,
}

/// The services around a running pipeline.
pub struct Services {
    pub shared: Shared,
    pub sink: Arc<ClickHouseSink>,
    pub api: Option<ApiServer>,
}

impl Services {
    /// Applies the migrations, then builds the sink and starts what
    /// `opts` asks for.
    pub fn start(rt: &tokio::runtime::Runtime, cfg: &Config, opts: StartOptions) -> anyhow::Result<Services> {
        let applied = rt.block_on(migrate(&cfg.clickhouse)).context("applying ClickHouse migrations")?;
        tracing::info!(?applied, "migrations applied");
        let mut shared = Shared::default();
        if opts.api && cfg.api.row_cache {
            shared.rows = Some(Arc::new(RowCache::default()));
        }
        let sink = Arc::new(ClickHouseSink::new(cfg.clickhouse.clone(), Some(shared.metrics.clone())));
        let api = if opts.api { Some(start_api(rt, cfg, sink.client().clone(), &shared)?) } else { None };
        if opts.signals {
            crate::install_signal_handlers(rt, &shared);
        }
        Ok(Services { shared, sink, api })
    }

    /// Runs the pipeline on `cluster`'s workers until a stop, then stops
    /// the API too.
    pub fn run(self, rt: &tokio::runtime::Runtime, cfg: &Config, cluster: &Cluster) -> anyhow::Result<RunStats> {
        let stats = run_cluster(cfg, cluster, self.shared.clone(), self.sink, rt.handle().clone());
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(api) = self.api {
            if let Ok(Err(e)) = rt.block_on(api.handle) {
                tracing::warn!(error = %e, "API server stopped with an error");
            }
        }
        stats
    }
}
