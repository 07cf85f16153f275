//! The sink's driver: the whole write path between a pipeline worker and
//! ClickHouse.
//!
//! A worker hands over one [`SinkBatch`] per epoch that changed rows; the
//! driver task coalesces whatever batches queued up meanwhile (a later
//! batch overrides an earlier one key by key, so the coalesced write holds
//! the net state), writes them with retries ([`ClickHouseSink::write_retrying`],
//! which gives up at once on errors retrying cannot fix), marks ClickHouse
//! ready, observes freshness, and acknowledges the newest epoch the write
//! covered. The channel is bounded: a ClickHouse outage fills it and
//! pauses the worker instead of growing memory.
//!
//! Acknowledgements arrive in epoch order. An epoch is acknowledged only
//! once every row of it and of every epoch before it is in ClickHouse.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use revpulse_pipelines::row::{RowKey, RowVals};
use tokio::sync::mpsc;

use super::cache::RowCache;
use super::sink::{ClickHouseSink, SinkError};
use crate::metrics::Metrics;
use crate::Readiness;

/// The row changes of one epoch, net per key (`None`: delete the row).
#[derive(Debug, Default)]
pub struct SinkBatch {
    pub rows: Vec<(RowKey, Option<RowVals>)>,
    /// The epoch whose rows these are; acknowledged back once written.
    pub epoch: u64,
    /// Oldest Kafka timestamp (ms) of the messages the epoch read, for the
    /// freshness histogram.
    pub oldest_ms: Option<i64>,
}

/// Why the driver stopped before acknowledging everything it was given.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the sink's driver stopped: {0}")]
    Stopped(#[source] SinkError),
    #[error("the sink's driver task failed: {0}")]
    Task(String),
}

/// A running sink driver (one per pipeline worker).
pub struct SinkDriver {
    tx: Option<mpsc::Sender<SinkBatch>>,
    acks: std::sync::mpsc::Receiver<u64>,
    task: Option<tokio::task::JoinHandle<Result<(), SinkError>>>,
    metrics: Metrics,
}

impl SinkDriver {
    /// Starts the driver on `rt` with room for `capacity` queued batches.
    /// `ready`'s ClickHouse half is set once a write succeeds;
    /// `abort` makes a write that is still being retried give up.
    /// It records `sink_in_flight` and `freshness` into `metrics`, and
    /// applies every acknowledged batch to `rows` if given.
    pub fn spawn(
        sink: Arc<ClickHouseSink>,
        capacity: usize,
        rt: &tokio::runtime::Handle,
        (ready, abort): (Arc<Readiness>, Arc<AtomicBool>),
        (metrics, rows): (Metrics, Option<Arc<RowCache>>),
    ) -> SinkDriver {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (ack_tx, acks) = std::sync::mpsc::channel();
        let task = rt.spawn(drive(sink, rx, ack_tx, (ready, abort), (metrics.clone(), rows)));
        SinkDriver { tx: Some(tx), acks, task: Some(task), metrics }
    }

    /// The driver has ended on its own (a write gave up): nothing more
    /// will be acknowledged.
    pub fn stopped(&self) -> bool {
        self.task.as_ref().is_some_and(|t| t.is_finished())
    }

    /// Queues a batch, waiting while the queue is full. False once the
    /// driver has stopped (a write gave up).
    pub fn send(&self, batch: SinkBatch) -> bool {
        let Some(tx) = &self.tx else { return false };
        self.metrics.sink_in_flight.inc();
        tx.blocking_send(batch).is_ok()
    }

    /// Epochs acknowledged since the last call, oldest first.
    pub fn acknowledged(&self) -> impl Iterator<Item = u64> + '_ {
        self.acks.try_iter()
    }

    /// Lets the driver write what it holds and waits for it to end,
    /// calling `ack` with every epoch acknowledged meanwhile. Later
    /// batches are refused.
    pub fn finish(&mut self, rt: &tokio::runtime::Handle, mut ack: impl FnMut(u64)) -> Result<(), DriverError> {
        self.tx = None;
        for e in self.acks.iter() {
            ack(e);
        }
        let Some(task) = self.task.take() else { return Ok(()) };
        match rt.block_on(task) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(DriverError::Stopped(e)),
            Err(e) => Err(DriverError::Task(e.to_string())),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Takes `first` and every batch already queued behind it: the net rows
/// (later batches win key by key), the newest epoch, the oldest
/// timestamp and how many batches were merged.
fn coalesce(first: SinkBatch, rx: &mut mpsc::Receiver<SinkBatch>) -> (SinkBatch, i64) {
    let mut merged: BTreeMap<RowKey, Option<RowVals>> = BTreeMap::new();
    let mut out = SinkBatch::default();
    let mut batches = 0;
    let mut next = Some(first);
    while let Some(b) = next {
        batches += 1;
        merged.extend(b.rows);
        out.epoch = b.epoch;
        out.oldest_ms = match (out.oldest_ms, b.oldest_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next = rx.try_recv().ok();
    }
    out.rows = merged.into_iter().collect();
    (out, batches)
}

async fn drive(
    sink: Arc<ClickHouseSink>,
    mut rx: mpsc::Receiver<SinkBatch>,
    acks: std::sync::mpsc::Sender<u64>,
    (ready, abort): (Arc<Readiness>, Arc<AtomicBool>),
    (metrics, cache): (Metrics, Option<Arc<RowCache>>),
) -> Result<(), SinkError> {
    while let Some(first) = rx.recv().await {
        let (batch, merged) = coalesce(first, &mut rx);
        if !batch.rows.is_empty() {
            if let Err(e) = sink.write_retrying(&batch.rows, &abort).await {
                // Some tables of the batch may be in ClickHouse, some not:
                // forget its keys, so lookups ask ClickHouse.
                if let Some(cache) = &cache {
                    cache.forget(&batch.rows);
                }
                if !matches!(e, SinkError::Shutdown) {
                    ready.clickhouse.store(false, Ordering::Relaxed);
                }
                tracing::warn!(error = %e, rows = batch.rows.len(), "sink stopped with unacknowledged rows; they are re-derived on restart");
                return Err(e);
            }
            if let Some(cache) = &cache {
                cache.apply(&batch.rows);
            }
        }
        ready.clickhouse.store(true, Ordering::Relaxed);
        if let Some(ts) = batch.oldest_ms {
            metrics.freshness.observe(((now_ms() - ts).max(0) as f64) / 1000.0);
        }
        metrics.sink_in_flight.sub(merged);
        if acks.send(batch.epoch).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use revpulse_pipelines::row::{s, Cell, Table};

    use super::*;

    fn row(id: &str, v: f64) -> (RowKey, Option<RowVals>) {
        (RowKey::new(Table::OfferAcceptance, vec![s("t"), s(id)]), Some(vec![Cell::U64(1), Cell::f64(v)]))
    }

    #[test]
    fn coalescing_keeps_the_latest_value_per_key_and_the_newest_epoch() {
        let (tx, mut rx) = mpsc::channel(4);
        let later = SinkBatch { rows: vec![row("a", 2.0), (row("b", 0.0).0, None)], epoch: 3, oldest_ms: Some(5) };
        tx.try_send(later).unwrap();
        let first = SinkBatch { rows: vec![row("a", 1.0), row("b", 1.0)], epoch: 2, oldest_ms: Some(9) };
        let (out, merged) = coalesce(first, &mut rx);
        assert_eq!(merged, 2);
        assert_eq!(out.epoch, 3);
        assert_eq!(out.oldest_ms, Some(5));
        assert_eq!(out.rows, vec![row("a", 2.0), (row("b", 0.0).0, None)]);
    }
}
