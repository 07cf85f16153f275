//! Prometheus metrics of the pipeline (SPEC §7 "Observability").
//!
//! Names follow Prometheus conventions: `revpulse_` prefix, `_total` for
//! counters, base units (`_seconds`).

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// All pipeline metric families, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Valid input messages, by topic.
    pub consumed: IntCounterVec,
    /// Rejected input messages (sent to the DLQ), by topic and reason.
    pub rejected: IntCounterVec,
    /// Row changes the dataflow emitted (after consolidation).
    pub emitted_rows: IntCounter,
    /// Rows acknowledged by ClickHouse.
    pub sunk_rows: IntCounter,
    /// Failed ClickHouse writes (each retried).
    pub sink_errors: IntCounter,
    /// Duration of successful ClickHouse writes.
    pub sink_latency: Histogram,
    /// Messages behind the high watermark, by topic and partition.
    pub consumer_lag: IntGaugeVec,
    /// Kafka message timestamp → its effect acknowledged by ClickHouse.
    pub freshness: Histogram,
    /// Epoch sealed → dataflow frontier past it.
    pub frontier_delay: Histogram,
    /// Row batches handed to the sink and not yet acknowledged.
    pub sink_in_flight: IntGauge,
    /// Failed DLQ deliveries (retried by the source).
    pub dlq_errors: IntCounter,
    /// Schema-registry lookups that failed for want of a registry (retried).
    pub registry_errors: IntCounter,
    /// Query API request duration, by route and status.
    pub api_latency: HistogramVec,
    /// Events posted to `POST /v1/ingest/{topic}` (SPEC §5.1), by topic and
    /// outcome: `accepted` (acknowledged by Kafka), `rejected` (invalid,
    /// dead-lettered) or `failed` (Kafka did not acknowledge; answered 503).
    pub ingest_events: IntCounterVec,
    /// Retention's watermark (greatest event time seen, committed epochs),
    /// seconds since the epoch; 0 while retention is off or nothing was seen.
    pub watermark: IntGauge,
    /// Subjects the lifetime families hold open (retention), summed over
    /// this process's workers.
    pub open_subjects: IntGauge,
    /// Durable state (docs/guarantees.md, "Checkpoints").
    pub checkpoint: CheckpointMetrics,
}

/// Checkpoint writes (docs/guarantees.md, "Checkpoints").
#[derive(Clone)]
pub struct CheckpointMetrics {
    /// Duration of checkpoint writes.
    pub duration: Histogram,
    /// Bytes the state directory takes on disk, after the last checkpoint.
    pub bytes: IntGauge,
    /// Keys the last checkpoint holds (current versions, all topics).
    pub keys: IntGauge,
    /// Seconds since the last checkpoint was written.
    pub age: Gauge,
    /// Checkpoint writes that failed (checkpointing stops for the run).
    pub errors: IntCounter,
}

impl CheckpointMetrics {
    fn new(r: &Registry) -> CheckpointMetrics {
        CheckpointMetrics {
            duration: registered(
                r,
                histogram("revpulse_checkpoint_duration_seconds", "Duration of checkpoint writes.", buckets()),
            ),
            bytes: registered(
                r,
                IntGauge::new(
                    "revpulse_checkpoint_size_bytes",
                    "Bytes the state directory takes after the last checkpoint.",
                ),
            ),
            keys: registered(
                r,
                IntGauge::new(
                    "revpulse_checkpoint_keys",
                    "Current versions (keys of all topics) in the last checkpoint.",
                ),
            ),
            age: registered(
                r,
                Gauge::new("revpulse_checkpoint_age_seconds", "Seconds since the last checkpoint was written."),
            ),
            errors: registered(
                r,
                IntCounter::new(
                    "revpulse_checkpoint_errors_total",
                    "Checkpoint writes that failed (checkpoints stop).",
                ),
            ),
        }
    }
}

fn buckets() -> Vec<f64> {
    vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]
}

/// Freshness targets sit at hundreds of milliseconds: finer buckets there,
/// so p50/p99 interpolate within a narrow bucket.
fn freshness_buckets() -> Vec<f64> {
    vec![0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0]
}

/// Registers a metric built by `make` in `registry`. Building and
/// registering only fail on invalid or duplicate names, which the fixed
/// names of [`Metrics::new`] rule out.
fn registered<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, make: prometheus::Result<C>) -> C {
    let metric = make.unwrap_or_else(|e| panic!("metric: {e}"));
    if let Err(e) = registry.register(Box::new(metric.clone())) {
        panic!("registering metric: {e}");
    }
    metric
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> prometheus::Result<Histogram> {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
}

/// The query API's metrics: request duration by route and status, and the
/// events posted over HTTP by topic and outcome.
fn api_metrics(r: &Registry) -> (HistogramVec, IntCounterVec) {
    let latency = registered(
        r,
        HistogramVec::new(
            HistogramOpts::new(
                "revpulse_api_request_duration_seconds",
                "Query API request duration, by route and status.",
            )
            .buckets(buckets()),
            &["route", "status"],
        ),
    );
    let ingest = registered(
        r,
        IntCounterVec::new(
            Opts::new(
                "revpulse_ingest_events_total",
                "Events posted over HTTP, by topic and outcome (accepted, rejected, failed).",
            ),
            &["topic", "outcome"],
        ),
    );
    (latency, ingest)
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let r = &registry;
        let (api_latency, ingest_events) = api_metrics(r);
        Metrics {
            consumed: registered(
                r,
                IntCounterVec::new(
                    Opts::new("revpulse_consumed_total", "Valid input messages consumed, by topic."),
                    &["topic"],
                ),
            ),
            rejected: registered(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "revpulse_rejected_total",
                        "Input messages rejected to the dead-letter topic, by topic and reason.",
                    ),
                    &["topic", "reason"],
                ),
            ),
            emitted_rows: registered(
                r,
                IntCounter::new("revpulse_emitted_rows_total", "Metric row changes emitted by the dataflow."),
            ),
            sunk_rows: registered(r, IntCounter::new("revpulse_sunk_rows_total", "Metric rows acknowledged by ClickHouse.")),
            sink_errors: registered(r, IntCounter::new("revpulse_sink_errors_total", "Failed ClickHouse writes (retried).")),
            sink_latency: registered(
                r,
                histogram("revpulse_sink_latency_seconds", "Duration of successful ClickHouse writes.", buckets()),
            ),
            consumer_lag: registered(
                r,
                IntGaugeVec::new(
                    Opts::new("revpulse_consumer_lag", "Messages behind the partition high watermark."),
                    &["topic", "partition"],
                ),
            ),
            freshness: registered(
                r,
                histogram(
                    "revpulse_freshness_seconds",
                    "Kafka message timestamp to its effect being acknowledged by ClickHouse.",
                    freshness_buckets(),
                ),
            ),
            frontier_delay: registered(
                r,
                histogram(
                    "revpulse_frontier_delay_seconds",
                    "Input epoch sealed to the dataflow frontier passing it.",
                    buckets(),
                ),
            ),
            sink_in_flight: registered(
                r,
                IntGauge::new("revpulse_sink_in_flight_batches", "Row batches handed to the sink, not yet acknowledged."),
            ),
            dlq_errors: registered(r, IntCounter::new("revpulse_dlq_errors_total", "Failed dead-letter deliveries (retried).")),
            registry_errors: registered(
                r,
                IntCounter::new(
                    "revpulse_schema_registry_errors_total",
                    "Schema-registry lookups that failed because the registry was unavailable (the message is retried).",
                ),
            ),
            api_latency,
            ingest_events,
            watermark: registered(
                r,
                IntGauge::new(
                    "revpulse_watermark_timestamp_seconds",
                    "Retention watermark: the greatest event time seen, as of the last committed epoch (Unix seconds).",
                ),
            ),
            open_subjects: registered(
                r,
                IntGauge::new(
                    "revpulse_open_subjects",
                    "Subjects (tenant x subject_id) whose records the lifetime families hold (retention).",
                ),
            ),
            checkpoint: CheckpointMetrics::new(r),
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = prometheus::TextEncoder::new();
        if let Err(e) = prometheus::Encoder::encode(&enc, &self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
