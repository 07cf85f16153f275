//! The production pipeline: Kafka → dataflow → ClickHouse, with offsets
//! committed only after ClickHouse acknowledged the rows that cover them.
//!
//! Each timely worker owns a Kafka source for its share of the partitions
//! and a sink driver, and runs a loop of named parts:
//! - [`epoch::EpochDriver`]: poll → seal → step, one epoch per loop;
//! - [`reconcile::Reconciler`]: what the previous run left behind (state
//!   taken back, stale keys deleted after the start-up catch-up);
//! - the sink's driver ([`SinkDriver`]): coalesces, writes with retries and
//!   acknowledges epochs; its queue is bounded, so a ClickHouse outage
//!   pauses consumption instead of growing memory;
//! - [`commit::CommitTracker`]: acknowledged epochs → the offsets and
//!   watermark to commit, once every worker acknowledged them (see
//!   [`run_cluster`]);
//! - [`checkpoint::Checkpointer`]: acknowledged epochs → checkpoints of
//!   the upsert log with the positions and watermark they cover, which a
//!   restart resumes from ([`checkpoint::Durable`]);
//! - [`rounds::Rounds`]: a multi-process cluster's checkpoint rounds, so
//!   that every process resumes from a cut at the same epoch;
//! - [`progress::Progress`]: the agreements between workers.

mod checkpoint;
mod commit;
mod epoch;
mod progress;
mod reconcile;
mod rounds;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use revpulse_connectors::clickhouse::{ClickHouseSink, DriverError, RowCache, SinkBatch, SinkDriver, SinkError};
use revpulse_connectors::kafka::{CommitError, KafkaSource, Offsets};
use revpulse_connectors::metrics::Metrics;
use revpulse_connectors::schema_registry::AvroCodec;
use revpulse_connectors::Readiness;
use revpulse_pipelines::dataflow::{build, BuildOptions};
use revpulse_pipelines::retention::Lateness;

use self::checkpoint::{Durable, Feed};
use self::commit::CommitTracker;
use self::epoch::{dead_letter_too_late, EpochDriver, Sealed};
use self::progress::Progress;
use self::reconcile::{Reconciler, TakenBack};
use self::rounds::Rounds;
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
    /// A worker of this process failed: the others stop without further
    /// commits or reconciliation (their rows may depend on it).
    pub failed: Arc<AtomicBool>,
    /// Current rows of the point-lookup tables as the sinks wrote them, for
    /// an API in this process (`None`: no API here, or `[api] row_cache`
    /// is off).
    pub rows: Option<Arc<RowCache>>,
}

impl Shared {
    /// Aborted or failed: nothing may be committed any more.
    fn halted(&self) -> bool {
        self.abort.load(Ordering::Relaxed) || self.failed.load(Ordering::Relaxed)
    }
}

/// What a run processed.
#[derive(Debug, Default, Clone)]
pub struct RunStats {
    pub epochs: u64,
    pub messages: u64,
    pub committed: Offsets,
}

/// Where the timely workers of `revpulse run` live: threads of this
/// process, and optionally peer processes (timely's own cluster).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Worker threads per process.
    pub workers: usize,
    /// Processes in the cluster.
    pub processes: usize,
    /// This process's index, `0..processes`.
    pub process_index: usize,
    /// One `host:port` per line, process 0 first (needed when processes > 1).
    pub hostfile: Option<std::path::PathBuf>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster { workers: 1, processes: 1, process_index: 0, hostfile: None }
    }
}

impl Cluster {
    fn timely_config(&self) -> anyhow::Result<timely::Config> {
        let mut args = vec![
            "revpulse".to_owned(),
            "-w".to_owned(),
            self.workers.max(1).to_string(),
            "-n".to_owned(),
            self.processes.max(1).to_string(),
            "-p".to_owned(),
            self.process_index.to_string(),
        ];
        if let Some(h) = &self.hostfile {
            args.extend(["-h".to_owned(), h.display().to_string()]);
        } else if self.processes > 1 {
            anyhow::bail!("--processes {} needs --hostfile", self.processes);
        }
        anyhow::ensure!(self.process_index < self.processes.max(1), "--process-index must be below --processes");
        timely::Config::from_args(args.into_iter().skip(1)).map_err(|e| anyhow::anyhow!("timely cluster: {e}"))
    }
}

/// Runs the pipeline on one worker until `shared.stop` is set.
pub fn run_pipeline(
    cfg: &Config,
    shared: Shared,
    sink: Arc<ClickHouseSink>,
    rt: tokio::runtime::Handle,
) -> anyhow::Result<RunStats> {
    run_cluster(cfg, &Cluster::default(), shared, sink, rt)
}

/// Runs the pipeline on `cluster`'s workers until `shared.stop` is set.
///
/// Every worker drives its own share of the Kafka partitions, its own sink
/// task (rows are routed to the worker that owns their key, so writes never
/// overlap) and its own commits. Workers seal an epoch per loop, with or
/// without messages, so the frontier moves in lockstep. Three agreements
/// keep the guarantees across workers:
/// - acknowledgements: each worker advances an "acked" input to the oldest
///   epoch its sink has not acknowledged; offsets of epoch `e` are committed
///   only once every worker has acknowledged `e`, since rows derived from a
///   worker's messages may be written by any worker;
/// - catch-up: stale keys are deleted only after every worker has read up to
///   its start-up high watermarks, and two epochs later (a peer may be one
///   epoch ahead), so every row of the rebuilt state has reached its owner;
/// - stopping: on the stop flag a worker stops reading but keeps sealing
///   epochs until every worker has stopped, then drains two more epochs, so
///   no row routed to it is left unwritten.
pub fn run_cluster(
    cfg: &Config,
    cluster: &Cluster,
    shared: Shared,
    sink: Arc<ClickHouseSink>,
    rt: tokio::runtime::Handle,
) -> anyhow::Result<RunStats> {
    let cfg = cfg.clone();
    let timely_config = cluster.timely_config()?;
    let durable =
        Durable::open(&cfg.state, cluster.workers.max(1), (cluster.process_index, cluster.processes), &shared.metrics)?;
    let stopper = durable.clone();
    let guards = timely::execute(timely_config, move |worker| -> anyhow::Result<RunStats> {
        run_worker(worker, &cfg, shared.clone(), sink.clone(), &rt, durable.clone())
    })
    .map_err(|e| anyhow::anyhow!("starting timely: {e}"))?;
    let results = guards.join();
    if let Some(d) = stopper {
        d.checkpointer.stop();
    }
    let mut stats = RunStats::default();
    for result in results {
        let s = result.map_err(|e| anyhow::anyhow!("timely worker: {e}"))??;
        stats.epochs = stats.epochs.max(s.epochs);
        stats.messages += s.messages;
        stats.committed.extend(s.committed);
    }
    Ok(stats)
}

fn run_worker(
    worker: &mut timely::worker::Worker,
    cfg: &Config,
    shared: Shared,
    sink: Arc<ClickHouseSink>,
    rt: &tokio::runtime::Handle,
    durable: Option<Durable>,
) -> anyhow::Result<RunStats> {
    let index = worker.index();
    // A cluster's processes first agree which checkpoint they resume from.
    let mut rounds = durable.as_ref().filter(|d| d.cluster.is_some()).map(|_| Rounds::new(worker));
    let durable = match (durable, rounds.as_mut()) {
        (Some(d), Some(r)) => {
            let (agreed, reachable) = r.agree(worker, d.cuts());
            d.settle(agreed, reachable).map(Some)
        }
        (d, _) => Ok(d),
    };
    // Every worker builds the same dataflow even when its source failed, so
    // peers are not left waiting for an operator that never exists.
    let start = durable.and_then(|d| connect(worker, cfg, &shared, &sink, rt, d));
    let initial_watermark = start.as_ref().map_or(revpulse_pipelines::retention::NO_WATERMARK, |s| s.taken.watermark);
    let log = start.as_ref().is_ok_and(|s| s.durable.is_some());
    let df = build(worker, &cfg.metrics, BuildOptions { initial_watermark, log });
    let mut h = Handles {
        df,
        acked: Progress::new(worker),
        caught_up: Progress::new(worker),
        stopping: Progress::new(worker),
        rounds,
    };
    let result = start.and_then(|start| drive(worker, cfg, &shared, sink, rt, &mut h, start));
    if let Err(e) = &result {
        // Before this worker's inputs close (which its peers would read as
        // "caught up", "stopped", "acknowledged"), make sure they commit and
        // reconcile nothing more.
        shared.failed.store(true, Ordering::Relaxed);
        shared.stop.store(true, Ordering::Relaxed);
        tracing::error!(
            worker = index,
            error = format!("{e:#}"),
            "worker failed; the pipeline stops without further commits"
        );
    }
    h.caught_up.close();
    h.stopping.close();
    result
}

/// The dataflow and the cross-worker agreements of one worker.
struct Handles {
    df: revpulse_pipelines::dataflow::Dataflow,
    /// The oldest epoch this worker's sink has not acknowledged.
    acked: Progress,
    caught_up: Progress,
    stopping: Progress,
    /// A multi-process cluster's checkpoint rounds.
    rounds: Option<Rounds>,
}

/// A worker's source and what the previous run left behind.
struct Start {
    source: KafkaSource,
    taken: TakenBack,
    durable: Option<Durable>,
}

fn connect(
    worker: &timely::worker::Worker,
    cfg: &Config,
    shared: &Shared,
    sink: &ClickHouseSink,
    rt: &tokio::runtime::Handle,
    durable: Option<Durable>,
) -> anyhow::Result<Start> {
    let (index, peers) = (worker.index(), worker.peers());
    let avro = match (&cfg.kafka.schema_registry, cfg.kafka.formats.first_avro()) {
        (Some(registry), Some(_)) => Some(AvroCodec::new(registry, rt.clone()).context("schema registry")?),
        _ => None,
    };
    let resume = durable.as_ref().and_then(|d| d.resume.as_ref());
    let start = resume.map(|c| c.positions.clone()).unwrap_or_default();
    let source =
        KafkaSource::connect(&cfg.kafka, shared.metrics.clone(), avro, (index, peers), Duration::from_secs(60), &start)
            .context("connecting the Kafka source")?;
    // The checkpoint's positions and watermark, when there is one, stand in
    // for the group's committed ones.
    let taken = if Lateness::of(&cfg.metrics).any() {
        TakenBack::read(&source, sink, rt, index, peers, resume.map(|c| (&c.positions, c.watermark)))?
    } else {
        TakenBack::nothing()
    };
    Ok(Start { source, taken, durable })
}

/// The parts of one worker's loop (see the module docs).
struct Worker<'a> {
    shared: &'a Shared,
    rt: &'a tokio::runtime::Handle,
    source: KafkaSource,
    epochs: EpochDriver,
    reconciler: Reconciler,
    commits: CommitTracker,
    sink: SinkDriver,
    /// Offsets the previous run committed (see [`TakenBack::committed`]).
    start_committed: Offsets,
    lateness: Lateness,
    stats: RunStats,
    /// With checkpoints: this worker's epochs not yet handed over.
    feed: Option<(Feed, Durable)>,
    /// This worker's index (in its process: checkpoints are per process).
    index: usize,
    /// The first epoch carries the checkpoint's versions and reads nothing,
    /// so every message read after it resolves against them.
    restoring: bool,
}

impl Worker<'_> {
    /// One loop: an epoch read, reconciled, handed to the sink, and what
    /// every worker acknowledged committed. False when the loop must end
    /// (the sink stopped).
    fn turn(&mut self, worker: &mut timely::worker::Worker, h: &mut Handles) -> anyhow::Result<bool> {
        if self.sink.stopped() {
            return Ok(false);
        }
        let reading = !h.stopping.closed() && !std::mem::take(&mut self.restoring);
        let shared = self.shared;
        let mut sealed = self.epochs.run(worker, &mut h.df, &mut self.source, reading, || shared.halted());
        if reading {
            self.source.probe_broker(Duration::from_secs(2));
            shared.readiness.kafka.store(self.source.healthy(), Ordering::Relaxed);
            self.source.update_lag(Duration::from_secs(5));
        }
        dead_letter_too_late(&self.source, &sealed.too_late, &self.start_committed)?;
        self.reconciler.absorb(&mut sealed.rows)?;
        shared.metrics.emitted_rows.inc_by(sealed.rows.len() as u64);
        if self.reconciler.check_caught_up(&self.source, &mut h.caught_up, sealed.epoch) {
            h.df.watermark_gate.set(true);
        }
        if !shared.halted() {
            let (lateness, w) = (self.lateness, sealed.watermark);
            self.reconciler.finish_if_due(sealed.epoch, |key| lateness.row_closed(key, w), &mut sealed.rows)?;
        }
        Ok(self.hand_over(worker, h, sealed))
    }

    /// Records the epoch's positions, sends its rows to the sink, takes
    /// acknowledgements and commits what every worker acknowledged.
    fn hand_over(&mut self, worker: &mut timely::worker::Worker, h: &mut Handles, sealed: Sealed) -> bool {
        let Sealed { epoch, messages, oldest_ms, rows, applied, log, log_below, .. } = sealed;
        self.stats.messages += messages as u64;
        if messages > 0 {
            self.stats.epochs += 1;
        }
        self.commits.record(epoch, messages > 0, self.source.positions(), applied);
        if let Some((feed, _)) = &mut self.feed {
            feed.record(epoch, log, log_below, self.source.positions(), applied);
        }
        if !rows.is_empty() {
            self.commits.sent(epoch);
            if !self.sink.send(SinkBatch { rows, epoch, oldest_ms }) {
                return false;
            }
        }
        for e in self.sink.acknowledged() {
            self.commits.acknowledge(e);
        }
        h.acked.advance_to(self.commits.oldest_unacked(epoch + 1));
        worker.step();
        self.commit(&h.acked, false);
        if let (Some(rounds), Some((_, durable))) = (&mut h.rounds, &self.feed) {
            if !self.shared.halted() {
                rounds.turn(&durable.checkpointer, h.acked.least());
            }
        }
        true
    }

    /// Commits the newest positions whose epoch every worker has
    /// acknowledged, and hands those epochs to the checkpointer (`last`:
    /// the stop's, written whatever the interval; a cluster's last
    /// checkpoint is a round instead, [`Worker::last_round`]).
    fn commit(&mut self, acked: &Progress, last: bool) {
        if self.shared.halted() {
            return;
        }
        if let Some((feed, durable)) = &mut self.feed {
            durable.checkpointer.hand_over(self.index, feed, acked.least(), last);
        }
        let Some((offsets, watermark)) = self.commits.committable(acked.least()) else { return };
        match self.source.commit(&offsets, watermark) {
            Ok(()) => {
                self.stats.committed = offsets;
                if let Some(w) = watermark {
                    self.shared.metrics.watermark.set(w.div_euclid(1_000_000));
                }
            }
            // A failed commit only delays progress tracking; it is retried.
            Err(e) => {
                match &e {
                    CommitError::DeadLettersPending => tracing::debug!("offset commit put off: {e}"),
                    CommitError::Kafka(_) => tracing::warn!(error = %e, "offset commit failed"),
                }
                self.commits.commit_failed(offsets, watermark);
            }
        }
    }

    /// Drain: the sink finishes what it holds, then every worker waits
    /// until all have acknowledged everything, and the last commit follows.
    fn drain(mut self, worker: &mut timely::worker::Worker, h: &mut Handles) -> anyhow::Result<RunStats> {
        h.stopping.close();
        h.caught_up.close();
        // No more input from this worker: peers still draining must not wait
        // for its epochs.
        h.df.inputs.advance_to(u64::MAX);
        h.df.inputs.flush();
        let commits = &mut self.commits;
        // A write that gave up for good (not an abort) fails the run.
        let mut sink_failed = None;
        if let Err(e) = self.sink.finish(self.rt, |e| commits.acknowledge(e)) {
            tracing::warn!(error = %e, "sink driver stopped before acknowledging everything");
            if !matches!(e, DriverError::Stopped(SinkError::Shutdown)) {
                sink_failed = Some(e);
            }
        }
        if !self.commits.all_acknowledged() {
            // The sink gave up (abort): what it did not write must not count
            // as acknowledged, here or at any peer.
            self.shared.failed.store(true, Ordering::Relaxed);
        }
        h.acked.close();
        let shared = self.shared;
        worker.step_or_park_while(Some(Duration::from_millis(10)), || !h.acked.all_closed() && !shared.halted());
        // The last commit may wait for the dead letters it covers.
        if !shared.halted() {
            if let Err(e) = self.source.flush_dead_letters(Duration::from_secs(30)) {
                tracing::warn!(error = %e, "dead letters not delivered at stop; their offsets stay uncommitted");
            }
        }
        self.commit(&h.acked, true);
        self.last_round(worker, h);
        if let Some((_, durable)) = &self.feed {
            if !durable.checkpointer.wait_idle(Duration::from_secs(60)) {
                tracing::warn!("the last checkpoint is still being written");
            }
        }
        let stats = self.stats;
        tracing::info!(worker = worker.index(), epochs = stats.epochs, messages = stats.messages, "pipeline stopped");
        if let Some(e) = sink_failed {
            return Err(
                anyhow::Error::new(e).context("the ClickHouse sink gave up; nothing it did not write was committed")
            );
        }
        let failed = shared.failed.load(Ordering::Relaxed);
        if failed && self.commits.all_acknowledged() && !shared.abort.load(Ordering::Relaxed) {
            anyhow::bail!("stopped because another worker failed");
        }
        Ok(stats)
    }
}

impl Worker<'_> {
    /// A cluster's last checkpoint round at a clean stop: every epoch's
    /// upsert log is complete now, so each worker hands over the rest.
    fn last_round(&mut self, worker: &mut timely::worker::Worker, h: &mut Handles) {
        let (Some(rounds), Some((feed, durable))) = (&mut h.rounds, &mut self.feed) else { return };
        if self.shared.halted() {
            return;
        }
        let (df, acked, index) = (&h.df, &h.acked, self.index);
        let cp = durable.checkpointer.clone();
        let written = rounds.finish(worker, (&durable.checkpointer, index), Duration::from_secs(60), || {
            let (log, below) = df.completed.borrow_mut().take_log();
            feed.record_log(log, below);
            cp.hand_over(index, feed, acked.least(), false);
        });
        if !written {
            tracing::warn!("the cluster's last checkpoint round did not finish; the previous checkpoint stays");
        }
    }
}

fn drive(
    worker: &mut timely::worker::Worker,
    cfg: &Config,
    shared: &Shared,
    sink: Arc<ClickHouseSink>,
    rt: &tokio::runtime::Handle,
    h: &mut Handles,
    start: Start,
) -> anyhow::Result<RunStats> {
    let Start { source, mut taken, durable } = start;
    h.df.inputs.restore(std::mem::take(&mut taken.restored));
    let peers = (worker.index(), worker.peers());
    let lateness = Lateness::of(&cfg.metrics);
    // Lists ClickHouse's live keys while the checkpoint is restored.
    let reconciler = Reconciler::start(&source, &sink, rt, peers, lateness.subject.is_some(), &mut taken)?;
    if let Some(d) = &durable {
        let started = std::time::Instant::now();
        // The process's store holds its own workers' keys: split them
        // between those (the upsert operator routes each to its owner).
        let restored = d.restore(&mut h.df.inputs, d.checkpointer.local_share(peers.0))?;
        if d.resume.is_some() {
            tracing::info!(
                worker = peers.0,
                versions = restored,
                secs = started.elapsed().as_secs_f64(),
                "checkpoint restored into the dataflow"
            );
        }
    }
    // Replaying retained input must not close periods with newer events
    // read early from some partition (docs/retention.md).
    h.df.watermark_gate.set(false);
    let capacity = cfg.pipeline.max_in_flight_batches;
    let mut w = Worker {
        shared,
        rt,
        epochs: EpochDriver::new(taken.watermark, &cfg.kafka, shared.metrics.clone()),
        commits: CommitTracker::new(taken.watermark),
        sink: SinkDriver::spawn(
            sink,
            capacity,
            rt,
            (Arc::clone(&shared.readiness), Arc::clone(&shared.abort)),
            (shared.metrics.clone(), shared.rows.clone()),
        ),
        reconciler,
        source,
        start_committed: taken.committed,
        lateness,
        stats: RunStats::default(),
        restoring: durable.as_ref().is_some_and(|d| d.resume.is_some()),
        // Global index `process × workers + thread` (timely's numbering).
        index: durable.as_ref().map_or(0, |d| d.checkpointer.local_index(peers.0)),
        feed: durable.map(|d| (Feed::default(), d)),
    };
    let mut drain_until: Option<u64> = None;
    while !shared.halted() {
        if shared.stop.load(Ordering::Relaxed) && !h.stopping.closed() {
            h.stopping.close();
        }
        if !w.turn(worker, h)? {
            break;
        }
        let epoch = w.epochs.epoch();
        if drain_until.is_none() && h.stopping.all_closed() {
            drain_until = Some(epoch + 2);
        }
        // With retention, a few more (empty) epochs let the dataflow apply
        // the watermark of the last data it read, so the final commit
        // carries it and a restart does not reopen what this run closed.
        // The watermark reaches the runner two epochs after its data (held
        // maxima, then the fold); eight more bound the wait if it never does.
        let settled = w.epochs.settled() || drain_until.is_some_and(|d| epoch >= d + 8);
        if drain_until.is_some_and(|d| epoch >= d) && settled {
            break;
        }
    }
    w.drain(worker, h)
}
