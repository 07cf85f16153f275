//! The epoch driver: poll → seal → step, once per loop of a worker.
//!
//! Each call reads one batch of messages into the dataflow's inputs (none
//! while the worker is stopping), seals it as the next epoch, steps the
//! dataflow until the epoch is complete at every worker, and returns the
//! net row changes of the completed epochs, the watermark the epoch was
//! processed with and what the dataflow rejected as too late. Workers seal
//! an epoch per loop, with or without messages, so frontiers move in
//! lockstep.

use std::time::{Duration, Instant};

use anyhow::Context;
use revpulse_connectors::kafka::{KafkaConfig, KafkaSource, Offsets, Position};
use revpulse_connectors::metrics::Metrics;
use revpulse_pipelines::dataflow::{net_changes, Dataflow, Logged, WatermarkFold};
use revpulse_pipelines::event::{Reason, Reject};
use revpulse_pipelines::row::{RowKey, RowVals};
use revpulse_pipelines::time::{format_micros, Micros};
use revpulse_pipelines::upsert::{seq, seq_parts, TooLate, RESTORED};

/// One completed epoch, as the rest of the worker sees it.
pub struct Sealed {
    pub epoch: u64,
    /// Messages the epoch read (valid and rejected).
    pub messages: usize,
    pub oldest_ms: Option<i64>,
    /// Net row changes of the epochs that completed, sorted by key.
    pub rows: Vec<(RowKey, Option<RowVals>)>,
    /// The watermark the epoch was processed with: the one to commit with
    /// its positions, so a restart closes exactly what this run had closed.
    pub applied: Micros,
    /// The watermark as of the complete epochs before this one.
    pub watermark: Micros,
    pub too_late: Vec<TooLate>,
    /// Upsert-log entries that arrived (with checkpoints), with their epochs.
    pub log: Vec<(u64, Logged)>,
    /// Every upsert-log entry of the epochs below this has arrived.
    pub log_below: u64,
}

/// Poll → seal → step for one worker.
pub struct EpochDriver {
    epoch: u64,
    fold: WatermarkFold,
    max_messages: usize,
    wait: Duration,
    /// The watermark the last epoch was processed with.
    last_applied: Micros,
    /// Open subjects this worker last added to the process-wide gauge.
    open_reported: i64,
    metrics: Metrics,
}

impl EpochDriver {
    /// Batches of at most `kafka.max_batch_messages`, waiting at most
    /// `kafka.max_batch_ms` for them.
    pub fn new(initial_watermark: Micros, kafka: &KafkaConfig, metrics: Metrics) -> EpochDriver {
        EpochDriver {
            epoch: 0,
            fold: WatermarkFold::new(initial_watermark),
            last_applied: initial_watermark,
            max_messages: kafka.max_batch_messages,
            wait: Duration::from_millis(kafka.max_batch_ms.max(1)),
            open_reported: 0,
            metrics,
        }
    }

    /// The last epoch sealed.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether the last epoch was processed with every watermark folded in
    /// so far (nothing more for a stop to wait for).
    pub fn settled(&self) -> bool {
        self.last_applied == self.fold.current()
    }

    /// Reads a batch (unless `reading` is false: then it only paces),
    /// seals it and steps until it is complete or `halted` says stop.
    pub fn run(
        &mut self,
        worker: &mut timely::worker::Worker,
        df: &mut Dataflow,
        source: &mut KafkaSource,
        reading: bool,
        halted: impl Fn() -> bool,
    ) -> Sealed {
        let polled = if reading {
            let inputs = &mut df.inputs;
            source.poll_batch(self.max_messages, self.wait, |topic, upsert, at: Position| {
                inputs.send(topic, upsert.key, upsert.value, seq(at.partition, at.offset));
            })
        } else {
            // Nothing to read: seal epochs at a calm pace until all stop.
            std::thread::sleep(Duration::from_millis(10));
            Default::default()
        };
        self.epoch += 1;
        let epoch = self.epoch;
        df.inputs.advance_to(epoch);
        df.inputs.flush();
        let sealed = Instant::now();
        // While idle peers finish their poll, park briefly instead of spinning.
        worker.step_or_park_while(Some(Duration::from_millis(1)), || df.probe.less_than(&epoch) && !halted());
        if polled.messages > 0 {
            self.metrics.frontier_delay.observe(sealed.elapsed().as_secs_f64());
        }
        let rows = net_changes(std::mem::take(&mut df.completed.borrow_mut().changes));
        let (log, log_below) = df.completed.borrow_mut().take_log();
        let applied = self.fold.complete(epoch, &df.completed);
        self.last_applied = applied;
        // Each worker adds its own change, so the gauge sums the process's workers.
        let open_now = df.open_subjects.get() as i64;
        self.metrics.open_subjects.add(open_now - self.open_reported);
        self.open_reported = open_now;
        Sealed {
            epoch,
            messages: polled.messages,
            oldest_ms: polled.oldest_timestamp_ms,
            rows,
            applied,
            watermark: self.fold.current(),
            too_late: std::mem::take(&mut *df.too_late.borrow_mut()),
            log,
            log_below,
        }
    }
}

/// Dead-letters the messages the dataflow rejected as too late (SPEC §7),
/// except those below the offsets the previous run committed (it already
/// did), and waits until they are delivered: the worker that read them may
/// be another one, and it commits once this worker acknowledges the epoch.
pub fn dead_letter_too_late(source: &KafkaSource, too_late: &[TooLate], committed: &Offsets) -> anyhow::Result<()> {
    if too_late.is_empty() {
        return Ok(());
    }
    for late in too_late {
        // A version from the checkpoint was dead-lettered, if at all, by
        // the run that read it.
        if late.seq == RESTORED {
            continue;
        }
        let (partition, offset) = seq_parts(late.seq);
        let Some(name) = source.topic_name(late.topic) else { continue };
        if committed.get(&(name.to_owned(), partition)).is_some_and(|c| offset < *c) {
            continue;
        }
        let reject = Reject::new(
            Reason::TooLate,
            format!("its period closed: the watermark is {}", format_micros(late.watermark)),
        );
        let at = Position { partition, offset };
        source.dead_letter(late.topic, at, late.key.as_bytes(), late.payload.as_bytes(), &reject);
    }
    source.flush_dead_letters(Duration::from_secs(30)).context("delivering too-late dead letters")
}
