//! The production pipeline: Kafka → dataflow → ClickHouse, with offsets
//! committed only after ClickHouse acknowledged the rows that cover them.
//!
//! Each timely worker owns a Kafka consumer for its share of the partitions
//! and a sink task: it reads a batch of messages as one epoch, steps the
//! dataflow until the epoch is complete, and hands the consolidated row
//! changes it owns to its sink task. The sink task coalesces whatever
//! batches are waiting, writes them with retries, and acknowledges the
//! epoch; offsets are committed once every worker acknowledged it (see
//! [`run_cluster`]). The channel to the sink is bounded, so a ClickHouse
//! outage pauses consumption instead of growing memory.

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
use revpulse_pipelines::dataflow::{build, net_changes, row_owner};
use revpulse_pipelines::retention::{restorable, Lateness, Restorable, NO_WATERMARK};
use revpulse_pipelines::row::{RowKey, RowVals, Table};
use revpulse_pipelines::time::{format_micros, Micros};
use revpulse_pipelines::upsert::seq_parts;
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
    /// A worker of this process failed: the others stop without further
    /// commits or reconciliation (their rows may depend on it).
    pub failed: Arc<AtomicBool>,
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

struct SinkBatch {
    rows: Vec<(RowKey, Option<RowVals>)>,
    /// The epoch whose rows these are; acknowledged back once written.
    epoch: u64,
    oldest_ms: Option<i64>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Writes batches in order, coalescing those that queued up meanwhile, and
/// acknowledges the newest epoch each write covers.
async fn sink_task(
    sink: Arc<ClickHouseSink>,
    mut rx: mpsc::Receiver<SinkBatch>,
    acks: std::sync::mpsc::Sender<u64>,
    shared: Shared,
) {
    while let Some(first) = rx.recv().await {
        let mut merged: BTreeMap<RowKey, Option<RowVals>> = BTreeMap::new();
        let mut epoch = 0;
        let mut oldest: Option<i64> = None;
        let mut batches = 0;
        let mut next = Some(first);
        while let Some(b) = next {
            batches += 1;
            // Later batches override earlier ones key by key.
            merged.extend(b.rows);
            epoch = b.epoch;
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
        if acks.send(epoch).is_err() {
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
    /// With subject retention, lead and conversation rows are never deleted
    /// here: a row the rebuild did not emit may be a closed subject's final
    /// row (of this or an earlier life), which nothing can rebuild.
    keep_subject_rows: bool,
}

impl CatchUp {
    /// `index` of `peers`: this worker only answers for the keys it owns.
    fn start(
        source: &KafkaSource,
        sink: &ClickHouseSink,
        rt: &tokio::runtime::Handle,
        index: usize,
        peers: usize,
        subject_retention: bool,
        state_keys: Option<Vec<RowKey>>,
    ) -> anyhow::Result<CatchUp> {
        let targets = source.catch_up_targets().context("reading high watermarks")?;
        let mut suspects = HashSet::new();
        // The state tables' keys, when the start already read them.
        let known_state = state_keys.is_some();
        suspects.extend(state_keys.into_iter().flatten().filter(|k| row_owner(k, peers) == index));
        for table in Table::all().filter(|t| !(known_state && t.is_state())) {
            let keys =
                rt.block_on(sink.live_keys(table)).with_context(|| format!("reading live keys of {}", table.name()))?;
            suspects.extend(keys.into_iter().filter(|k| row_owner(k, peers) == index));
        }
        Ok(CatchUp { targets, suspects, started: Instant::now(), keep_subject_rows: subject_retention })
    }

    fn touched(&mut self, rows: &[(RowKey, Option<RowVals>)]) {
        if !self.suspects.is_empty() {
            for (key, _) in rows {
                self.suspects.remove(key);
            }
        }
    }

    /// Delete markers for the stale keys; rows of closed periods and closed
    /// subjects are final (retention) and stay even when no retained input
    /// backs them.
    fn finish(mut self, closed: impl Fn(&RowKey) -> bool) -> Vec<(RowKey, Option<RowVals>)> {
        let keep = self.keep_subject_rows;
        let subject_closed = |k: &RowKey| keep && matches!(k.table, Table::LeadScores | Table::ConversationRpm);
        self.suspects.retain(|k| !closed(k) && !subject_closed(k));
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

/// An input that carries no data, only progress: each worker advances or
/// closes its own, and timely's progress tracking tells every worker the
/// least over all of them. Used for acknowledged epochs and, closed once,
/// as an all-workers agreement (caught up, stopping).
struct Progress {
    input: Option<timely::dataflow::operators::vec::input::Handle<u64, ()>>,
    probe: timely::dataflow::ProbeHandle<u64>,
}

impl Progress {
    fn new(worker: &mut timely::worker::Worker) -> Progress {
        use timely::dataflow::operators::vec::Input;
        use timely::dataflow::operators::Probe;
        let (input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<()>();
            (input, stream.probe().0)
        });
        Progress { input: Some(input), probe }
    }

    fn advance_to(&mut self, time: u64) {
        if let Some(input) = self.input.as_mut() {
            input.advance_to(time);
        }
    }

    fn close(&mut self) {
        self.input = None;
    }

    fn closed(&self) -> bool {
        self.input.is_none()
    }

    /// Every worker has closed its input.
    fn all_closed(&self) -> bool {
        self.probe.done()
    }

    /// The least time any worker's input is still open at.
    fn least(&self) -> u64 {
        self.probe.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX))
    }
}

/// Drops the epochs an acknowledgement of `acked` covers (acks are in order).
fn acknowledge(unacked: &mut std::collections::VecDeque<u64>, acked: u64) {
    while unacked.front().is_some_and(|u| *u <= acked) {
        unacked.pop_front();
    }
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
    let guards = timely::execute(cluster.timely_config()?, move |worker| -> anyhow::Result<RunStats> {
        run_worker(worker, &cfg, shared.clone(), sink.clone(), &rt)
    })
    .map_err(|e| anyhow::anyhow!("starting timely: {e}"))?;
    let mut stats = RunStats::default();
    for result in guards.join() {
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
) -> anyhow::Result<RunStats> {
    let index = worker.index();
    // Every worker builds the same dataflow even when its source failed, so
    // peers are not left waiting for an operator that never exists.
    let start = connect(worker, cfg, &shared, &sink, rt);
    let initial_watermark = start.as_ref().map_or(NO_WATERMARK, |s| s.watermark);
    let df = build(worker, &cfg.metrics, initial_watermark);
    let mut h =
        Handles { df, acked: Progress::new(worker), caught_up: Progress::new(worker), stopping: Progress::new(worker) };
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
}

/// A worker's source and what the previous run left behind.
struct Start {
    source: KafkaSource,
    /// Committed offsets of every input partition (with retention only):
    /// `too_late` messages below them were handled by an earlier run.
    committed: Offsets,
    /// The watermark committed with them ([`NO_WATERMARK`] if none).
    watermark: Micros,
    /// Retention state rows to take back (worker 0 hands them over).
    restored: Vec<(RowKey, RowVals)>,
    /// Retention state rows this worker owns that must go before anything
    /// is committed (see [`restorable`]).
    stale: Vec<RowKey>,
    /// Every retention state row's key, as read at start (with retention).
    state_keys: Option<Vec<RowKey>>,
}

fn connect(
    worker: &timely::worker::Worker,
    cfg: &Config,
    shared: &Shared,
    sink: &ClickHouseSink,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<Start> {
    let (index, peers) = (worker.index(), worker.peers());
    let avro = match (&cfg.kafka.schema_registry, cfg.kafka.formats.first_avro()) {
        (Some(registry), Some(_)) => Some(AvroCodec::new(registry, rt.clone()).context("schema registry")?),
        _ => None,
    };
    let source = KafkaSource::connect(&cfg.kafka, shared.metrics.clone(), avro, index, peers, Duration::from_secs(60))
        .context("connecting the Kafka source")?;
    if !Lateness::of(&cfg.metrics.retention).any() {
        return Ok(Start {
            source,
            committed: Offsets::new(),
            watermark: NO_WATERMARK,
            restored: Vec::new(),
            stale: Vec::new(),
            state_keys: None,
        });
    }
    let (committed, watermark) = source
        .committed(Duration::from_secs(30))
        .context("reading the group's committed offsets and watermark (retention)")?;
    if watermark != NO_WATERMARK {
        tracing::info!(worker = index, watermark = %format_micros(watermark), "retention: periods closed by the previous run stay closed");
    }
    let mut rows = Vec::new();
    for table in Table::STATE {
        let state = rt
            .block_on(sink.state_rows(table))
            .with_context(|| format!("reading retention state from {}", table.name()))?;
        rows.extend(state);
    }
    let state_keys = Some(rows.iter().map(|(k, _)| k.clone()).collect());
    let Restorable { restore, stale } = restorable(rows, watermark);
    let stale: Vec<RowKey> = stale.into_iter().filter(|k| row_owner(k, peers) == index).collect();
    let restored = if index == 0 { restore } else { Vec::new() };
    if !restored.is_empty() || !stale.is_empty() {
        tracing::info!(worker = index, restored = restored.len(), stale = stale.len(), "retention: state taken back");
    }
    Ok(Start { source, committed, watermark, restored, stale, state_keys })
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
    let (index, peers) = (worker.index(), worker.peers());
    let Start { mut source, committed: start_committed, watermark: initial_watermark, restored, stale, state_keys } =
        start;
    h.df.inputs.restore(restored);
    // Deleted in the first batch, which every worker acknowledges before
    // anything is committed: state newer than the committed watermark must
    // not become covered by a later commit.
    let mut stale_state: Vec<(RowKey, Option<RowVals>)> = stale.into_iter().map(|k| (k, None)).collect();
    let lateness = Lateness::of(&cfg.metrics.retention);
    // Retention's watermark as of the epochs sealed so far (a lower bound:
    // only complete epochs' maxima are folded in).
    let mut watermark = initial_watermark;
    let mut recorded_watermark = initial_watermark;
    // Replaying retained input must not close periods with newer events
    // read early from some partition (README "Lateness and retention").
    h.df.watermark_gate.set(false);
    let (batch_tx, batch_rx) = mpsc::channel::<SinkBatch>(cfg.pipeline.max_in_flight_batches.max(1));
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<u64>();
    // Recovery (README "Recovery"): the dataflow starts empty and re-reads
    // every partition. Rows live in ClickHouse that the rebuilt state no
    // longer has must be deleted once the catch-up is complete.
    let mut catch_up = Some(CatchUp::start(&source, &sink, rt, index, peers, lateness.subject.is_some(), state_keys)?);
    let sink_handle = rt.spawn(sink_task(sink, batch_rx, ack_tx, shared.clone()));
    let mut stats = RunStats::default();
    let wait = Duration::from_millis(cfg.kafka.max_batch_ms.max(1));
    // Epochs sent to the sink and not yet acknowledged, oldest first.
    let mut unacked: std::collections::VecDeque<u64> = Default::default();
    // Source positions after each epoch that read messages, with the
    // watermark of the epochs before it, oldest first.
    let mut positions: std::collections::VecDeque<(u64, Offsets, Micros)> = Default::default();
    let mut reconcile_at: Option<u64> = None;
    let mut drain_until: Option<u64> = None;
    let mut open_reported: i64 = 0;
    let mut epoch: u64 = 0;
    // While idle peers finish their poll, park briefly instead of spinning.
    let park = Some(Duration::from_millis(1));

    // Commits the newest positions whose epoch every worker has acknowledged.
    let commit_acked = |source: &KafkaSource,
                        acked: &Progress,
                        positions: &mut std::collections::VecDeque<(u64, Offsets, Micros)>,
                        stats: &mut RunStats| {
        if shared.halted() {
            return;
        }
        let all_acked_below = acked.least();
        let mut newest = None;
        while positions.front().is_some_and(|(e, _, _)| *e < all_acked_below) {
            newest = positions.pop_front();
        }
        if let Some((_, offsets, w)) = newest {
            // Without retention nothing raises it: no metadata is written.
            let w = (w != NO_WATERMARK).then_some(w);
            match source.commit(&offsets, w) {
                Ok(()) => {
                    stats.committed = offsets;
                    if let Some(w) = w {
                        shared.metrics.watermark.set(w.div_euclid(1_000_000));
                    }
                }
                // A failed commit only delays progress tracking; the next one covers it.
                Err(e) => tracing::warn!(error = %e, "offset commit failed"),
            }
        }
    };

    loop {
        if shared.halted() {
            break;
        }
        if shared.stop.load(Ordering::Relaxed) && !h.stopping.closed() {
            h.stopping.close();
        }
        let df = &mut h.df;
        let polled = if h.stopping.closed() {
            Default::default()
        } else {
            source.poll_batch(cfg.kafka.max_batch_messages, wait, |topic, key, value, seq| {
                df.inputs.send(topic, key, value, seq);
            })
        };
        if h.stopping.closed() {
            // Nothing to read: seal epochs at a calm pace until all stop.
            std::thread::sleep(Duration::from_millis(10));
        } else {
            source.probe_broker(Duration::from_secs(2));
            shared.readiness.kafka.store(source.healthy(), Ordering::Relaxed);
            source.update_lag(Duration::from_secs(5));
        }
        stats.messages += polled.messages as u64;
        epoch += 1;
        df.inputs.advance_to(epoch);
        df.inputs.flush();
        let sealed = Instant::now();
        worker.step_or_park_while(park, || df.probe.less_than(&epoch) && !shared.halted());
        if polled.messages > 0 {
            shared.metrics.frontier_delay.observe(sealed.elapsed().as_secs_f64());
        }
        let mut rows = net_changes(std::mem::take(&mut df.completed.borrow_mut().changes));
        if !stale_state.is_empty() {
            // A key the dataflow writes anew is not deleted.
            let written: HashSet<&RowKey> = rows.iter().map(|(k, _)| k).collect();
            stale_state.retain(|(k, _)| !written.contains(k));
            rows.append(&mut stale_state);
            rows.sort_by(|a, b| a.0.cmp(&b.0));
        }
        // The watermark the epoch just completed was processed with: the
        // one committed with its positions, so a restart closes exactly
        // what this run had closed (retention state in ClickHouse holds
        // what those closes kept; anything closed later is rebuilt).
        let applied = watermark;
        // W(<epoch): maxima of the epochs before this one that are complete.
        {
            let mut done = df.completed.borrow_mut();
            while let Some(entry) = done.watermarks.first_entry() {
                if *entry.key() >= epoch {
                    break;
                }
                watermark = watermark.max(entry.remove());
            }
        }
        // Each worker adds its own change, so the gauge sums the process's workers.
        let open_now = df.open_subjects.get() as i64;
        shared.metrics.open_subjects.add(open_now - open_reported);
        open_reported = open_now;
        let too_late = std::mem::take(&mut *df.too_late.borrow_mut());
        for late in &too_late {
            let (partition, offset) = seq_parts(late.seq);
            let tp = (cfg.kafka.topics.get(late.topic).to_owned(), partition);
            // Below the committed offset: an earlier run already handled it.
            if start_committed.get(&tp).is_none_or(|c| offset >= *c) {
                source.dead_letter_too_late(late);
            }
        }
        // The worker that read these may not be this one, and it commits
        // once this worker acknowledges the epoch: deliver them first.
        if !too_late.is_empty() {
            source.flush_dead_letters(Duration::from_secs(30)).context("delivering too-late dead letters")?;
        }
        shared.metrics.emitted_rows.inc_by(rows.len() as u64);
        if let Some(c) = catch_up.as_mut() {
            c.touched(&rows);
            if !h.caught_up.closed() && source.reached(&c.targets) {
                h.caught_up.close();
            }
            if reconcile_at.is_none() && h.caught_up.all_closed() {
                reconcile_at = Some(epoch + 2);
                h.df.watermark_gate.set(true);
            }
        }
        // Every worker has read up to its start-up high watermarks, and
        // every row that reading produced has reached its owner: the keys
        // this worker owns that no row touched are stale.
        if reconcile_at.is_some_and(|at| epoch >= at) && !shared.halted() {
            if let Some(c) = catch_up.take() {
                rows.extend(c.finish(|key| lateness.row_closed(key, watermark)));
                rows.sort_by(|a, b| a.0.cmp(&b.0));
            }
        }
        if polled.messages > 0 {
            stats.epochs += 1;
        }
        // A risen watermark is committed too, even with no new message.
        if polled.messages > 0 || recorded_watermark < applied {
            positions.push_back((epoch, source.positions().clone(), applied));
            recorded_watermark = applied;
        }
        if !rows.is_empty() {
            shared.metrics.sink_in_flight.inc();
            unacked.push_back(epoch);
            let batch = SinkBatch { rows, epoch, oldest_ms: polled.oldest_timestamp_ms };
            if batch_tx.blocking_send(batch).is_err() {
                break;
            }
        }
        while let Ok(e) = ack_rx.try_recv() {
            acknowledge(&mut unacked, e);
        }
        h.acked.advance_to(unacked.front().copied().unwrap_or(epoch + 1));
        worker.step();
        commit_acked(&source, &h.acked, &mut positions, &mut stats);
        if drain_until.is_none() && h.stopping.all_closed() {
            drain_until = Some(epoch + 2);
        }
        // With retention, a few more (empty) epochs let the dataflow apply
        // the watermark of the last data it read, so the final commit
        // carries it and a restart does not reopen what this run closed.
        // The watermark reaches the runner two epochs after its data (held
        // maxima, then the fold); eight more bound the wait if it never does.
        let settled = applied == watermark || drain_until.is_some_and(|d| epoch >= d + 8);
        if drain_until.is_some_and(|d| epoch >= d) && settled {
            break;
        }
    }
    // Drain: the sink finishes what it holds, then its acks end; every
    // worker then waits until all have acknowledged everything.
    drop(batch_tx);
    h.stopping.close();
    h.caught_up.close();
    // No more input from this worker: peers still draining must not wait
    // for its epochs.
    h.df.inputs.advance_to(u64::MAX);
    h.df.inputs.flush();
    for e in ack_rx.iter() {
        acknowledge(&mut unacked, e);
    }
    if let Err(e) = rt.block_on(sink_handle) {
        tracing::error!(error = %e, "sink task failed");
    }
    if !unacked.is_empty() {
        // The sink gave up (abort): what it did not write must not count as
        // acknowledged, here or at any peer.
        shared.failed.store(true, Ordering::Relaxed);
    }
    h.acked.close();
    worker.step_or_park_while(Some(Duration::from_millis(10)), || !h.acked.all_closed() && !shared.halted());
    commit_acked(&source, &h.acked, &mut positions, &mut stats);
    tracing::info!(worker = index, epochs = stats.epochs, messages = stats.messages, "pipeline stopped");
    if shared.failed.load(Ordering::Relaxed) && unacked.is_empty() && !shared.abort.load(Ordering::Relaxed) {
        anyhow::bail!("stopped because another worker failed");
    }
    Ok(stats)
}
