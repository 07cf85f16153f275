//! The production pipeline: Kafka → dataflow → ClickHouse, with offsets
//! committed only after ClickHouse acknowledged the rows that cover them.
//!
//! One driver thread owns the Kafka consumer and the timely worker: it reads
//! a batch of messages as one epoch, steps the dataflow until the epoch is
//! complete, and hands the consolidated row changes plus the source
//! positions to the sink task. The sink task coalesces whatever batches are
//! waiting, writes them with retries, and sends the positions back for
//! commit. The channel between them is bounded, so a ClickHouse outage
//! pauses consumption instead of growing memory.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use revpulse_api::Readiness;
use revpulse_connectors::clickhouse::ClickHouseSink;
use revpulse_connectors::kafka::{KafkaSource, Offsets};
use revpulse_connectors::metrics::Metrics;
use revpulse_connectors::schema_registry::AvroCodec;
use revpulse_pipelines::dataflow::{build, net_changes};
use revpulse_pipelines::row::{RowKey, RowVals, Table};
use tokio::sync::mpsc;

use crate::config::Config;

/// Flags shared by the pipeline, the API and signal handling.
#[derive(Clone, Default)]
pub struct Shared {
    pub metrics: Metrics,
    pub readiness: Arc<Readiness>,
    /// Graceful stop: finish the in-flight batch, commit, return.
    pub stop: Arc<AtomicBool>,
    /// Hard stop: also abandon a write that is still being retried.
    pub abort: Arc<AtomicBool>,
}

/// What a run processed.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    pub epochs: u64,
    pub messages: u64,
    pub committed: Offsets,
}

struct SinkBatch {
    rows: Vec<(RowKey, Option<RowVals>)>,
    offsets: Offsets,
    oldest_ms: Option<i64>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Writes batches in order, coalescing those that queued up meanwhile, and
/// acknowledges each write's source positions.
async fn sink_task(
    sink: Arc<ClickHouseSink>,
    mut rx: mpsc::Receiver<SinkBatch>,
    acks: std::sync::mpsc::Sender<Offsets>,
    shared: Shared,
) {
    while let Some(first) = rx.recv().await {
        let mut merged: BTreeMap<RowKey, Option<RowVals>> = BTreeMap::new();
        let mut offsets = Offsets::new();
        let mut oldest: Option<i64> = None;
        let mut batches = 0;
        let mut next = Some(first);
        while let Some(b) = next {
            batches += 1;
            // Later batches override earlier ones key by key.
            merged.extend(b.rows);
            offsets = b.offsets;
            oldest = match (oldest, b.oldest_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            next = rx.try_recv().ok();
        }
        let rows: Vec<_> = merged.into_iter().collect();
        if !rows.is_empty() && sink.write_retrying(&rows, &shared.abort).await.is_err() {
            tracing::warn!(rows = rows.len(), "sink aborted with unacknowledged rows; they are re-derived on restart");
            return;
        }
        shared.readiness.clickhouse.store(true, Ordering::Relaxed);
        if let Some(ts) = oldest {
            shared.metrics.freshness.observe(((now_ms() - ts).max(0) as f64) / 1000.0);
        }
        shared.metrics.sink_in_flight.sub(batches);
        if acks.send(offsets).is_err() {
            return;
        }
    }
}

/// Start-up reconciliation: the keys ClickHouse holds live rows for, minus
/// every key the rebuilt dataflow has emitted, are stale once the source has
/// read up to the high watermarks it saw at start.
struct CatchUp {
    targets: Offsets,
    suspects: HashSet<RowKey>,
    started: Instant,
}

impl CatchUp {
    fn start(source: &KafkaSource, sink: &ClickHouseSink, rt: &tokio::runtime::Handle) -> anyhow::Result<CatchUp> {
        let targets = source.catch_up_targets().context("reading high watermarks")?;
        let mut suspects = HashSet::new();
        for table in Table::ALL {
            let keys =
                rt.block_on(sink.live_keys(table)).with_context(|| format!("reading live keys of {}", table.name()))?;
            suspects.extend(keys);
        }
        tracing::info!(
            partitions = targets.len(),
            live_rows = suspects.len(),
            "rebuilding state from the beginning of every partition"
        );
        Ok(CatchUp { targets, suspects, started: Instant::now() })
    }

    fn touched(&mut self, rows: &[(RowKey, Option<RowVals>)]) {
        if !self.suspects.is_empty() {
            for (key, _) in rows {
                self.suspects.remove(key);
            }
        }
    }

    /// Delete markers for the stale keys.
    fn finish(self) -> Vec<(RowKey, Option<RowVals>)> {
        tracing::info!(
            seconds = self.started.elapsed().as_secs_f64(),
            stale_rows = self.suspects.len(),
            "caught up with the input as of start-up"
        );
        let mut deletes: Vec<_> = self.suspects.into_iter().map(|k| (k, None)).collect();
        deletes.sort_by(|a, b| a.0.cmp(&b.0));
        deletes
    }
}

/// Runs the pipeline until `shared.stop` is set.
pub fn run_pipeline(
    cfg: &Config,
    shared: Shared,
    sink: Arc<ClickHouseSink>,
    rt: tokio::runtime::Handle,
) -> anyhow::Result<RunStats> {
    let cfg = cfg.clone();
    timely::execute_directly(move |worker| -> anyhow::Result<RunStats> {
        let mut df = build(worker, &cfg.metrics);
        let avro = match (&cfg.kafka.schema_registry, cfg.kafka.formats.first_avro()) {
            (Some(registry), Some(_)) => Some(AvroCodec::new(registry, rt.clone()).context("schema registry")?),
            _ => None,
        };
        let mut source = KafkaSource::connect(&cfg.kafka, shared.metrics.clone(), avro, 0, 1, Duration::from_secs(60))
            .context("connecting the Kafka source")?;
        let (batch_tx, batch_rx) = mpsc::channel::<SinkBatch>(cfg.pipeline.max_in_flight_batches.max(1));
        let (ack_tx, ack_rx) = std::sync::mpsc::channel::<Offsets>();
        // Recovery (README "Recovery"): the dataflow starts empty and re-reads
        // every partition. Rows live in ClickHouse that the rebuilt state no
        // longer has must be deleted once the catch-up is complete.
        let mut catch_up = Some(CatchUp::start(&source, &sink, &rt)?);
        let sink_handle = rt.spawn(sink_task(sink, batch_rx, ack_tx, shared.clone()));
        let mut stats = RunStats::default();
        let wait = Duration::from_millis(cfg.kafka.max_batch_ms.max(1));
        let commit = |source: &KafkaSource, offsets: &Offsets, stats: &mut RunStats| {
            match source.commit(offsets) {
                Ok(()) => stats.committed = offsets.clone(),
                // A failed commit only delays progress tracking; the next one covers it.
                Err(e) => tracing::warn!(error = %e, "offset commit failed"),
            }
        };

        while !shared.stop.load(Ordering::Relaxed) {
            let polled = source.poll_batch(cfg.kafka.max_batch_messages, wait, |topic, key, value, seq| {
                df.inputs.send(topic, key, value, seq);
            });
            source.probe_broker(Duration::from_secs(2));
            shared.readiness.kafka.store(source.healthy(), Ordering::Relaxed);
            while let Ok(offsets) = ack_rx.try_recv() {
                commit(&source, &offsets, &mut stats);
            }
            source.update_lag(Duration::from_secs(5));
            let mut rows = Vec::new();
            if polled.messages > 0 {
                stats.messages += polled.messages as u64;
                stats.epochs += 1;
                let epoch = stats.epochs;
                df.inputs.advance_to(epoch);
                df.inputs.flush();
                let sealed = Instant::now();
                worker.step_while(|| df.probe.less_than(&epoch));
                shared.metrics.frontier_delay.observe(sealed.elapsed().as_secs_f64());
                rows = net_changes(std::mem::take(&mut df.completed.borrow_mut().changes));
                shared.metrics.emitted_rows.inc_by(rows.len() as u64);
                if let Some(c) = catch_up.as_mut() {
                    c.touched(&rows);
                }
            }
            // The deletes ride in the batch that completes the catch-up, so the
            // offsets that mark it complete are committed only with them.
            let deletes = catch_up.take_if(|c| source.reached(&c.targets)).map(CatchUp::finish);
            if polled.messages == 0 && deletes.is_none() {
                continue;
            }
            if let Some(deletes) = deletes {
                rows.extend(deletes);
                rows.sort_by(|a, b| a.0.cmp(&b.0));
            }
            shared.metrics.sink_in_flight.inc();
            let batch = SinkBatch { rows, offsets: source.positions().clone(), oldest_ms: polled.oldest_timestamp_ms };
            if batch_tx.blocking_send(batch).is_err() {
                break;
            }
        }
        // Drain: the sink finishes what it holds, then its acks end.
        drop(batch_tx);
        for offsets in ack_rx.iter() {
            commit(&source, &offsets, &mut stats);
        }
        if let Err(e) = rt.block_on(sink_handle) {
            tracing::error!(error = %e, "sink task failed");
        }
        tracing::info!(epochs = stats.epochs, messages = stats.messages, "pipeline stopped");
        Ok(stats)
    })
}
