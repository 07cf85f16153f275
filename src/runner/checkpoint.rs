//! The checkpointer: acknowledged epochs → one atomic checkpoint of the
//! process's state (docs/guarantees.md, "Checkpoints").
//!
//! Each worker hands over, for every epoch every worker has acknowledged
//! (the same rule as offset commits), the upsert-log changes its
//! operators made in that epoch and the positions and watermark after it.
//! A checkpoint covers an epoch `X` only when every worker of the process
//! has handed over everything below `X`, so the log and the positions are
//! one consistent cut: a message below a checkpointed position is in the
//! log (or was replaced or deleted there), whichever worker read it and
//! whichever worker owns its key. Checkpoints are written by a thread of
//! their own, at most one at a time, every `[state] interval_ms` and at a
//! clean stop.
//!
//! A multi-process cluster needs the same across processes, so there the
//! cuts are *rounds* ([`super::rounds`]): every process cuts at an epoch
//! the leader proposes, stages that cut, and applies it only once every
//! process has staged it; a start first agrees which round is the
//! checkpoint.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use revpulse_connectors::kafka::Offsets;
use revpulse_connectors::metrics::Metrics;
use revpulse_connectors::state::{Checkpoint, CheckpointStore, Cut, LogChange};
use revpulse_pipelines::dataflow::{Inputs, Logged};
use revpulse_pipelines::event::{decode_value, Event, Topic};
use revpulse_pipelines::retention::NO_WATERMARK;
use revpulse_pipelines::time::{format_micros, Micros};
use revpulse_pipelines::types::Text;
use revpulse_pipelines::upsert::RESTORED;

use crate::config::StateConfig;

/// What one worker sealed in one epoch, as the checkpoint needs it.
#[derive(Debug, Default)]
struct Sealed {
    epoch: u64,
    log: Vec<Logged>,
    /// The worker's positions after the epoch, if they moved.
    positions: Option<Offsets>,
    /// The watermark the epoch was processed with, if it changed (or the
    /// positions moved) in this epoch; `None` for an entry of log only.
    applied: Option<Micros>,
}

/// One worker's epochs not yet handed over.
#[derive(Debug, Default)]
pub struct Feed {
    sealed: BTreeMap<u64, Sealed>,
    last_positions: Offsets,
    last_applied: Option<Micros>,
    /// Every upsert-log entry of the epochs below this has arrived.
    log_below: u64,
}

impl Feed {
    /// Epoch `epoch` was sealed at this worker with `positions` after it
    /// and processed with watermark `applied`; `log` is what its upsert
    /// operators logged since the last call (entries of their own epochs),
    /// complete for the epochs below `log_below`.
    pub fn record(
        &mut self,
        epoch: u64,
        log: Vec<(u64, Logged)>,
        log_below: u64,
        positions: &Offsets,
        applied: Micros,
    ) {
        self.record_log(log, log_below);
        let moved = *positions != self.last_positions;
        if !moved && self.last_applied == Some(applied) {
            return;
        }
        if moved {
            self.last_positions = positions.clone();
        }
        self.last_applied = Some(applied);
        let s = self.sealed.entry(epoch).or_insert_with(|| Sealed { epoch, ..Sealed::default() });
        s.applied = Some(applied);
        if moved {
            s.positions = Some(positions.clone());
        }
    }

    /// Upsert-log entries that arrived after the last sealed epoch (at a
    /// stop), complete below `log_below`.
    pub fn record_log(&mut self, log: Vec<(u64, Logged)>, log_below: u64) {
        self.log_below = self.log_below.max(log_below);
        for (e, entry) in log {
            self.sealed.entry(e).or_insert_with(|| Sealed { epoch: e, ..Sealed::default() }).log.push(entry);
        }
    }

    /// Everything sealed below `below` (and below what the log completed),
    /// and the epoch that is.
    fn take_below(&mut self, below: u64) -> (u64, Vec<Sealed>) {
        let below = below.min(self.log_below);
        let keep = self.sealed.split_off(&below);
        let taken = std::mem::replace(&mut self.sealed, keep);
        (below, taken.into_values().collect())
    }
}

/// Per worker of this process: what it handed over, and below which epoch.
#[derive(Default)]
struct Worker {
    through: u64,
    sealed: VecDeque<Sealed>,
}

struct Inner {
    workers: Vec<Worker>,
    interval: Duration,
    last_cut: Instant,
    watermark: Micros,
    /// A checkpoint is being written.
    busy: bool,
    /// A write failed: the changes it carried are gone from here, so no
    /// later checkpoint may be written over the last good one.
    failed: bool,
    /// Multi-process: cuts wait for rounds instead of the interval.
    cluster: bool,
    /// A proposed round's epoch, not cut yet.
    round: Option<u64>,
    /// The epoch of the last round proposed.
    last_round: u64,
    /// The number of the cut last staged, and of the last applied (both
    /// the agreed checkpoint's at start).
    staged: u64,
    applied: u64,
}

/// The process's checkpointer, shared by its workers.
#[derive(Clone)]
pub struct Checkpointer {
    inner: Arc<Mutex<Inner>>,
    tx: mpsc::SyncSender<Job>,
    writer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// A cut as the workers hand it to the writer: versions still as events.
struct Pending {
    changes: Vec<((Topic, Text), Option<(u64, Event)>)>,
    positions: Offsets,
    watermark: Micros,
}

impl Pending {
    /// The store's form: keys as strings, versions as canonical JSON.
    fn render(self) -> Cut {
        let changes = self
            .changes
            .into_iter()
            .map(|((topic, key), value)| LogChange {
                topic,
                key: key.into_string(),
                value: value.map(|(seq, event)| (seq, event.to_json().into_bytes())),
            })
            .collect();
        Cut { changes, positions: self.positions, watermark: self.watermark }
    }
}

enum Job {
    Write(Pending),
    Stage(Pending, u64),
    Apply(u64),
    Stop,
}

/// A process's place in the multi-process checkpoint rounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundState {
    /// The cut last staged.
    pub staged: u64,
    /// The cut last applied (the checkpoint).
    pub applied: u64,
    /// No round is waiting to be cut, staged or applied here.
    pub idle: bool,
}

impl Checkpointer {
    /// Starts the writer thread for `store`; `local_workers` hand over to it,
    /// `watermark` is the one the restored checkpoint (or the start) had.
    /// `shape` names the run in the checkpoint; `cluster` makes cuts wait
    /// for rounds.
    pub fn start(
        store: CheckpointStore,
        (local_workers, shape, cluster): (usize, &str, bool),
        interval: Duration,
        (watermark, written_at_ms): (Micros, Option<u64>),
        metrics: Metrics,
    ) -> Checkpointer {
        let inner = Arc::new(Mutex::new(Inner {
            workers: (0..local_workers.max(1)).map(|_| Worker::default()).collect(),
            interval,
            last_cut: Instant::now(),
            watermark,
            busy: false,
            failed: false,
            cluster,
            round: None,
            last_round: 0,
            staged: 0,
            applied: 0,
        }));
        let (tx, rx) = mpsc::sync_channel::<Job>(1);
        let done = Arc::clone(&inner);
        let shape = shape.to_owned();
        let writer = std::thread::Builder::new()
            .name("revpulse-checkpoint".into())
            .spawn(move || write_loop(store, rx, done, metrics, (shape, written_at_ms)))
            .map_err(|e| tracing::error!(error = %e, "cannot start the checkpoint writer; no checkpoints this run"))
            .ok();
        Checkpointer { inner, tx, writer: Arc::new(Mutex::new(writer)) }
    }

    /// Worker `local` hands over its epochs below `below`, which every
    /// worker has acknowledged; a checkpoint is cut if one is due and the
    /// writer is free. `force` (a clean stop) cuts whatever the interval,
    /// after waiting for the write in progress. In a cluster, cuts wait for
    /// rounds instead ([`super::rounds`]; a stop's is `Rounds::finish`).
    pub fn hand_over(&self, local: usize, feed: &mut Feed, below: u64, force: bool) {
        let Ok(mut inner) = self.inner.lock() else { return };
        let (below, sealed) = feed.take_below(below);
        if inner.failed {
            return;
        }
        if let Some(w) = inner.workers.get_mut(local) {
            w.through = w.through.max(below);
            w.sealed.extend(sealed);
        }
        if inner.cluster {
            self.cut_round(&mut inner);
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while force && inner.busy && Instant::now() < deadline {
            drop(inner);
            std::thread::sleep(Duration::from_millis(5));
            let Ok(again) = self.inner.lock() else { return };
            inner = again;
        }
        let due = force || inner.last_cut.elapsed() >= inner.interval;
        if !due || inner.busy {
            return;
        }
        let Some(cut) = inner.cut(None) else { return };
        inner.busy = true;
        inner.last_cut = Instant::now();
        if self.tx.try_send(Job::Write(cut)).is_err() {
            inner.busy = false;
        }
    }

    /// Multi-process: a round at epoch `at` was proposed (`at` only grows;
    /// an epoch seen before is not a new round).
    pub fn propose(&self, at: u64) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if at > inner.last_round && !inner.failed {
            inner.last_round = at;
            inner.round = Some(at);
            self.cut_round(&mut inner);
        }
    }

    /// Stages the proposed round's cut once every local worker handed over
    /// its epochs below it and the previous round is applied here (staging
    /// replaces what is staged).
    fn cut_round(&self, inner: &mut Inner) {
        let Some(at) = inner.round else { return };
        let ready = inner.workers.iter().all(|w| w.through >= at);
        if !ready || inner.busy || inner.staged != inner.applied || inner.failed {
            return;
        }
        let Some(cut) = inner.cut(Some(at)) else { return };
        inner.busy = true;
        match self.tx.try_send(Job::Stage(cut, inner.applied + 1)) {
            Ok(()) => inner.round = None,
            // Cannot happen while not busy; the round is lost, so stop.
            Err(_) => {
                inner.busy = false;
                inner.failed = true;
                tracing::error!("the checkpoint writer is gone; no further checkpoints this run");
            }
        }
    }

    /// Multi-process: every process staged cut `seq`; apply it here.
    pub fn apply(&self, seq: u64) {
        let Ok(mut inner) = self.inner.lock() else { return };
        if inner.staged == seq && inner.applied < seq && !inner.busy && !inner.failed {
            inner.busy = true;
            if self.tx.try_send(Job::Apply(seq)).is_err() {
                inner.busy = false;
            }
        }
    }

    /// Where this process stands in the rounds; `None` once a write failed.
    pub fn round_state(&self) -> Option<RoundState> {
        let inner = self.inner.lock().ok()?;
        if inner.failed {
            return None;
        }
        let idle = inner.round.is_none() && !inner.busy && inner.staged == inner.applied;
        Some(RoundState { staged: inner.staged, applied: inner.applied, idle })
    }

    /// The index in this process of the worker with global index `global`
    /// (timely numbers a cluster's workers `process × workers + thread`).
    pub fn local_index(&self, global: usize) -> usize {
        self.inner.lock().map_or(0, |i| global % i.workers.len().max(1))
    }

    /// The share (index, of how many) of this process's checkpoint that
    /// the worker with global index `global` restores.
    pub fn local_share(&self, global: usize) -> (usize, usize) {
        let local = self.inner.lock().map_or(1, |i| i.workers.len().max(1));
        (self.local_index(global), local)
    }

    /// The epoch below which local worker `local` has handed over.
    pub fn worker_through(&self, local: usize) -> u64 {
        self.inner.lock().ok().and_then(|i| i.workers.get(local).map(|w| w.through)).unwrap_or(0)
    }

    /// Multi-process: the interval since the last round has passed.
    pub fn round_due(&self) -> bool {
        self.inner.lock().is_ok_and(|i| i.last_cut.elapsed() >= i.interval)
    }

    /// Multi-process: the leader proposed a round.
    pub fn proposed(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.last_cut = Instant::now();
        }
    }

    /// Multi-process: the start agreed on cut `seq` with `watermark`.
    pub fn agreed(&self, seq: u64, watermark: Micros) {
        if let Ok(mut inner) = self.inner.lock() {
            (inner.staged, inner.applied, inner.watermark) = (seq, seq, watermark);
        }
    }

    /// Waits until the checkpoint being written (if any) is on disk.
    pub fn wait_idle(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.inner.lock().map_or(true, |i| !i.busy) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the writer after what it is writing.
    pub fn stop(&self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(handle) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = handle.join();
        }
    }
}

impl Inner {
    /// The cut below the least epoch every local worker handed over up to
    /// (or below `at`, a round's epoch, which they all reached): the log
    /// changes merged per key (later epochs win), each worker's newest
    /// positions, the watermark of the last epoch. `None` if there is
    /// nothing new, except for a round, which is cut even if empty.
    fn cut(&mut self, at: Option<u64>) -> Option<Pending> {
        let below = at.or_else(|| self.workers.iter().map(|w| w.through).min())?;
        let mut changes: BTreeMap<(Topic, Text), Option<(u64, Event)>> = BTreeMap::new();
        let mut positions = Offsets::new();
        let mut any = false;
        // The watermark of the last epoch below the cut: each worker's last
        // recorded one (they agree; the least is the safe choice if not).
        let mut watermark: Option<Micros> = None;
        for w in &mut self.workers {
            let mut last = None;
            while w.sealed.front().is_some_and(|s| s.epoch < below) {
                let Some(s) = w.sealed.pop_front() else { break };
                any = true;
                for logged in s.log {
                    changes.insert((logged.topic, logged.key), logged.value);
                }
                if let Some(p) = s.positions {
                    positions.extend(p);
                }
                last = s.applied.or(last);
            }
            if let Some(l) = last {
                watermark = Some(watermark.map_or(l, |m: Micros| m.min(l)));
            }
        }
        if !any && at.is_none() {
            return None;
        }
        if let Some(w) = watermark {
            self.watermark = w;
        }
        Some(Pending { changes: changes.into_iter().collect(), positions, watermark: self.watermark })
    }
}

/// The shape a single-process run records: its worker count may change.
const ONE_PROCESS: &str = "one process";

/// The shape process `index` of a multi-process run records: a restart
/// must have the same, since each process holds only its workers' keys.
fn process_shape(index: usize, processes: usize, workers: usize) -> String {
    format!("process {index} of {processes}, {workers} worker{} each", if workers == 1 { "" } else { "s" })
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The writer thread: writes, stages or applies each cut, records
/// duration, size and age.
fn write_loop(
    store: CheckpointStore,
    rx: mpsc::Receiver<Job>,
    inner: Arc<Mutex<Inner>>,
    metrics: Metrics,
    (shape, mut last_ok): (String, Option<u64>),
) {
    loop {
        let job = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Job::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(job) => Some(job),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
        };
        if let Some(job) = job {
            let t = Instant::now();
            let done = match job {
                Job::Write(pending) => store.write(&pending.render(), &shape, now_ms()).map(|w| (Some(w), None)),
                Job::Stage(pending, seq) => store.stage(&pending.render(), seq).map(|()| (None, Some((seq, false)))),
                Job::Apply(seq) => store.apply_staged(&shape, now_ms()).map(|w| (w, Some((seq, true)))),
                Job::Stop => return,
            };
            let Ok(mut i) = inner.lock() else { return };
            i.busy = false;
            match done {
                Ok((written, round)) => {
                    match round {
                        Some((seq, false)) => i.staged = seq,
                        Some((seq, true)) => i.applied = seq,
                        None => {}
                    }
                    if let Some(written) = written {
                        metrics.checkpoint.duration.observe(t.elapsed().as_secs_f64());
                        metrics.checkpoint.bytes.set(store.disk_bytes() as i64);
                        metrics.checkpoint.keys.set(written.keys as i64);
                        last_ok = Some(now_ms());
                        tracing::debug!(changes = written.changes, keys = written.keys, "checkpoint written");
                    }
                }
                // The next checkpoint carries these changes' keys only if
                // they change again, so a failed write stops checkpointing:
                // the last good checkpoint stays valid.
                Err(e) => {
                    metrics.checkpoint.errors.inc();
                    tracing::error!(error = %e, "checkpoint write failed; no further checkpoints this run");
                    i.failed = true;
                    return;
                }
            }
        }
        if let Some(t) = last_ok {
            metrics.checkpoint.age.set(now_ms().saturating_sub(t) as f64 / 1000.0);
        }
    }
}

/// A process's durable state: the store, the checkpoint this run resumes
/// from, and the checkpointer that writes the next ones.
#[derive(Clone)]
pub struct Durable {
    pub store: CheckpointStore,
    pub resume: Option<Checkpoint>,
    pub checkpointer: Checkpointer,
    /// Decoding threads per worker for a restore: the cores the process's
    /// workers share.
    decoders: usize,
    /// Multi-process: what the start must agree on first.
    pub cluster: Option<ClusterStart>,
}

/// A multi-process start: this process's cuts, and the agreement's outcome
/// once a local worker has acted on it.
#[derive(Clone)]
pub struct ClusterStart {
    shape: String,
    /// The staged cut's number, if one is staged.
    staged: Option<u64>,
    settled: Arc<Mutex<Option<Result<Option<Checkpoint>, String>>>>,
}

impl Durable {
    /// Opens `cfg`'s state directory (a multi-process cluster's process `i`:
    /// its `process-i` subdirectory) and reads its checkpoint; `None` when
    /// checkpoints are off. A checkpoint of another shape of run is an
    /// error: a single process may change its worker count (the upsert
    /// operator routes restored keys to their owners), but a process of a
    /// cluster holds only its own workers' keys.
    pub fn open(
        cfg: &StateConfig,
        workers: usize,
        (process, processes): (usize, usize),
        metrics: &Metrics,
    ) -> anyhow::Result<Option<Durable>> {
        let Some(base) = cfg.dir() else { return Ok(None) };
        let opening = Instant::now();
        let (dir, shape) = if processes > 1 {
            (base.join(format!("process-{process}")), process_shape(process, processes, workers))
        } else {
            (base.to_owned(), ONE_PROCESS.to_owned())
        };
        let dir = dir.as_path();
        if !cfg.rebuild {
            refuse_other_layout(base, processes)?;
        }
        if cfg.rebuild {
            tracing::warn!(dir = %dir.display(), "--rebuild: discarding the state directory; rebuilding from the topics");
            CheckpointStore::wipe(dir)?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating the state directory {}", dir.display()))?;
        let store = CheckpointStore::open(dir)?;
        let resume = store.checkpoint()?;
        if let Some(cp) = resume.as_ref().filter(|cp| cp.shape != shape) {
            anyhow::bail!(
                "the checkpoint in {} was written by {} and this run is {shape}; each process of a cluster holds \
                 only its own workers' keys, so start with the same processes and workers, or start every process \
                 with --rebuild",
                dir.display(),
                cp.shape
            );
        }
        match &resume {
            Some(cp) => tracing::info!(
                dir = %dir.display(),
                keys = cp.total_keys(),
                partitions = cp.positions.len(),
                watermark = %format_watermark(cp.watermark),
                age_s = now_ms().saturating_sub(cp.written_at_ms) / 1000,
                open_s = opening.elapsed().as_secs_f64(),
                "resuming from the checkpoint"
            ),
            None => tracing::info!(dir = %dir.display(), "no checkpoint yet: reading the topics from their beginning"),
        }
        let interval = Duration::from_millis(cfg.interval_ms.max(1));
        let watermark = resume.as_ref().map_or(NO_WATERMARK, |c| c.watermark);
        let written = resume.as_ref().map(|c| c.written_at_ms);
        let cluster = processes > 1;
        let checkpointer = Checkpointer::start(
            store.clone(),
            (workers, &shape, cluster),
            interval,
            (watermark, written),
            metrics.clone(),
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let decoders = (cores / workers.max(1)).max(1);
        let cluster = if cluster {
            Some(ClusterStart { shape, staged: store.staged()?, settled: Arc::new(Mutex::new(None)) })
        } else {
            None
        };
        Ok(Some(Durable { store, resume, checkpointer, decoders, cluster }))
    }

    /// Multi-process: this process's (checkpointed, reachable) cuts for the
    /// start's agreement: reachable is the staged cut if there is one.
    pub fn cuts(&self) -> (u64, u64) {
        let committed = self.resume.as_ref().map_or(0, |c| c.seq);
        let staged = self.cluster.as_ref().and_then(|c| c.staged);
        (committed, staged.unwrap_or(committed))
    }

    /// Multi-process: acts on the start's agreement that cut `agreed` (the
    /// newest any process checkpointed) is the checkpoint, given that the
    /// oldest cut some process can reach is `reachable`: applies this
    /// process's staged cut if it is `agreed`, discards it if newer. Once
    /// per process (the first local worker acts, the others see its
    /// outcome).
    pub fn settle(mut self, agreed: u64, reachable: u64) -> anyhow::Result<Durable> {
        let Some(cluster) = self.cluster.clone() else { return Ok(self) };
        let (committed, _) = self.cuts();
        if reachable < agreed {
            anyhow::bail!(
                "the processes' checkpoints in {} and its peers are not one cut (this process: cut {committed}, \
                 staged {:?}; the newest checkpointed in the cluster: {agreed}, the oldest reachable: {reachable}): \
                 a process lost or replaced its state directory, or failed while the others checkpointed; start \
                 every process with --rebuild",
                self.store.dir().display(),
                cluster.staged,
            );
        }
        let mut settled = cluster.settled.lock().map_err(|_| anyhow::anyhow!("a worker panicked while settling"))?;
        if settled.is_none() {
            let apply = cluster.staged == Some(agreed) && committed < agreed;
            let outcome = (|| -> anyhow::Result<Option<Checkpoint>> {
                if apply {
                    self.store.apply_staged(&cluster.shape, now_ms())?;
                } else if cluster.staged.is_some() {
                    self.store.discard_staged()?;
                }
                let resume = self.store.checkpoint()?;
                let watermark = resume.as_ref().map_or(NO_WATERMARK, |c| c.watermark);
                self.checkpointer.agreed(agreed, watermark);
                tracing::info!(
                    cut = agreed,
                    applied_staged = apply,
                    keys = resume.as_ref().map_or(0, Checkpoint::total_keys),
                    "the processes agreed on their checkpoint"
                );
                Ok(resume)
            })();
            *settled = Some(outcome.map_err(|e| format!("{e:#}")));
        }
        match settled.as_ref() {
            Some(Ok(resume)) => self.resume = resume.clone(),
            Some(Err(e)) => anyhow::bail!("settling the checkpoint: {e}"),
            None => {}
        }
        drop(settled);
        Ok(self)
    }

    /// Feeds worker `index`'s share (of `peers`) of the checkpointed
    /// versions into the dataflow's inputs, as one epoch's messages.
    ///
    /// Decoding the versions' JSON is most of a restore's work, so it runs
    /// on `decoders` threads while one reads the store and this (the
    /// worker's) thread feeds what they decoded into the inputs.
    pub fn restore(&self, inputs: &mut Inputs, share: (usize, usize)) -> anyhow::Result<u64> {
        let Some(cp) = &self.resume else { return Ok(0) };
        let decoders = self.decoders.max(1);
        let store = &self.store;
        let (restored, read, bad) = std::thread::scope(|scope| {
            let (raw_tx, raw_rx) = mpsc::sync_channel::<RawChunk>(2 * decoders);
            let raw_rx = Arc::new(Mutex::new(raw_rx));
            let (out_tx, out_rx) = mpsc::sync_channel::<DecodedChunk>(2 * decoders);
            for _ in 0..decoders {
                let (rx, tx) = (Arc::clone(&raw_rx), out_tx.clone());
                scope.spawn(move || loop {
                    let next = rx.lock().ok().and_then(|rx| rx.recv().ok());
                    let Some(chunk) = next else { return };
                    if tx.send(chunk.decode()).is_err() {
                        return;
                    }
                });
            }
            drop(out_tx);
            let reader = scope.spawn(move || read_chunks(store, cp, share, &raw_tx));
            let (mut restored, mut bad) = (0u64, None);
            for chunk in out_rx {
                match chunk {
                    Ok((topic, events)) => {
                        restored += events.len() as u64;
                        for (key, event) in events {
                            inputs.send(topic, key, Some(event), RESTORED);
                        }
                    }
                    Err(detail) => bad = bad.or(Some(detail)),
                }
            }
            let read = reader.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the checkpoint reader panicked")));
            (restored, read, bad)
        });
        read?;
        if let Some(detail) = bad {
            anyhow::bail!(
                "the checkpoint in {} holds a version that does not decode ({detail}); start with --rebuild",
                self.store.dir().display()
            );
        }
        Ok(restored)
    }
}

/// A single process's checkpoint is the state directory itself, a
/// cluster's are its `process-I` subdirectories: a start of the other kind
/// would not see them, and would silently rebuild (or resume stale ones
/// later), so it is refused.
fn refuse_other_layout(base: &std::path::Path, processes: usize) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(base) else { return Ok(()) };
    let names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    let cluster = names.iter().any(|n| n.starts_with("process-"));
    // fjall's marker file: a store lives here (other entries, such as a
    // volume's lost+found, are no checkpoint).
    let single = names.iter().any(|n| n == "version");
    if processes > 1 && single {
        anyhow::bail!(
            "the state directory {} holds a single process's checkpoint, and this run is a cluster of {processes} \
             processes (which checkpoint in its process-I subdirectories); start as one process, or start every \
             process with --rebuild",
            base.display()
        );
    }
    if processes <= 1 && cluster {
        anyhow::bail!(
            "the state directory {} holds a multi-process cluster's checkpoints (process-I subdirectories), and \
             this run is one process; start the cluster as it was, or start with --rebuild",
            base.display()
        );
    }
    Ok(())
}

/// Checkpointed versions of one topic as stored: keys and JSON.
struct RawChunk {
    topic: Topic,
    entries: Vec<(Box<str>, Vec<u8>)>,
}

/// A decoded chunk, or what did not decode.
type DecodedChunk = Result<(Topic, Vec<(Text, Event)>), String>;

impl RawChunk {
    const LEN: usize = 4096;

    fn decode(self) -> DecodedChunk {
        let topic = self.topic;
        let mut out = Vec::with_capacity(self.entries.len());
        for (key, json) in self.entries {
            match decode_value(topic, &json) {
                Ok(event) => out.push((Text::from(&*key), event)),
                Err(reject) => return Err(format!("{} key {key:?}: {}", topic.name(), reject.detail)),
            }
        }
        Ok((topic, out))
    }
}

/// Reads `share`'s entries of every topic's log (checksums and key counts
/// checked) and sends them in chunks.
fn read_chunks(
    store: &CheckpointStore,
    cp: &Checkpoint,
    share: (usize, usize),
    tx: &mpsc::SyncSender<RawChunk>,
) -> anyhow::Result<()> {
    for topic in Topic::ALL {
        let expected = cp.keys.get(&topic).copied().unwrap_or(0);
        let mut chunk = Vec::with_capacity(RawChunk::LEN);
        store.for_each_entry(topic, expected, share, |key, _seq, json| {
            chunk.push((Box::from(key), json.to_vec()));
            if chunk.len() == RawChunk::LEN {
                let entries = std::mem::replace(&mut chunk, Vec::with_capacity(RawChunk::LEN));
                let _ = tx.send(RawChunk { topic, entries });
            }
        })?;
        if !chunk.is_empty() {
            let _ = tx.send(RawChunk { topic, entries: chunk });
        }
    }
    Ok(())
}

fn format_watermark(w: Micros) -> String {
    if w == NO_WATERMARK {
        "none".into()
    } else {
        format_micros(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(topic: &str, offset: i64) -> Offsets {
        Offsets::from([((topic.to_owned(), 0), offset)])
    }

    fn logged(key: &str, value: Option<&str>) -> Logged {
        let payment = |id: &str| {
            let json = format!(
                r#"{{"tenant_id":"t","ts":"2026-11-01T00:00:00Z","payment_id":"{id}","subject_id":"s","status":"succeeded","amount_cents":100,"currency":"USD"}}"#
            );
            decode_value(Topic::Payments, json.as_bytes()).ok()
        };
        Logged { topic: Topic::Payments, key: key.into(), value: value.and_then(payment).map(|e| (1, e)) }
    }

    fn inner(workers: usize) -> Inner {
        Inner {
            workers: (0..workers).map(|_| Worker::default()).collect(),
            interval: Duration::ZERO,
            last_cut: Instant::now(),
            watermark: NO_WATERMARK,
            busy: false,
            failed: false,
            cluster: false,
            round: None,
            last_round: 0,
            staged: 0,
            applied: 0,
        }
    }

    fn hand(inner: &mut Inner, local: usize, feed: &mut Feed, below: u64) {
        let (below, sealed) = feed.take_below(below);
        inner.workers[local].through = inner.workers[local].through.max(below);
        inner.workers[local].sealed.extend(sealed);
    }

    /// A cut covers only epochs every local worker handed over, merges a
    /// key's changes with the later epoch winning, and carries each
    /// worker's newest positions and the watermark of its last epoch.
    #[test]
    fn a_cut_is_consistent_across_workers() {
        let mut inner = inner(2);
        let (mut a, mut b) = (Feed::default(), Feed::default());
        a.record(1, vec![(1, logged("k", Some("v1")))], 2, &at("p", 10), 5);
        a.record(2, vec![(2, logged("k", Some("v2")))], 3, &at("p", 20), 6);
        b.record(1, vec![(1, logged("j", Some("w1")))], 2, &at("q", 3), 5);
        b.record(2, vec![(2, logged("j", None))], 3, &at("q", 4), 6);
        hand(&mut inner, 0, &mut a, 3);
        // Worker 1 has handed over nothing: no cut yet.
        assert!(inner.cut(None).is_none());
        hand(&mut inner, 1, &mut b, 2);
        let cut = inner.cut(None).expect("a cut below epoch 2");
        assert_eq!(cut.positions, Offsets::from([(("p".to_owned(), 0), 10), (("q".to_owned(), 0), 3)]));
        assert_eq!(cut.watermark, 5);
        let keys: Vec<(String, bool)> =
            cut.changes.iter().map(|((_, key), value)| (key.to_string(), value.is_some())).collect();
        assert_eq!(keys, vec![("j".to_owned(), true), ("k".to_owned(), true)]);
        hand(&mut inner, 1, &mut b, 3);
        let cut = inner.cut(None).expect("a cut below epoch 3");
        assert_eq!(cut.watermark, 6);
        assert_eq!(cut.positions.len(), 2);
        let j = cut.changes.iter().find(|((_, key), _)| key == "j").expect("j changed");
        assert_eq!(j.1, None, "the later epoch's delete wins");
        assert!(inner.cut(None).is_none(), "nothing new");
    }

    /// Process 1 of 2 with checkpoint `committed` (if any) and cut
    /// `staged` staged, in a directory of its own.
    fn process_state(name: &str, committed: Option<u64>, staged: Option<u64>) -> (StateConfig, Durable) {
        let base = std::env::temp_dir().join(format!("revpulse-settle-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let cfg = StateConfig { dir: Some(base.display().to_string()), ..StateConfig::default() };
        let dir = base.join("process-1");
        std::fs::create_dir_all(&dir).expect("dir");
        let store = CheckpointStore::open(&dir).expect("store");
        let shape = process_shape(1, 2, 1);
        let cut = |key: &str, offset| Cut {
            changes: vec![LogChange { topic: Topic::Payments, key: key.into(), value: Some((1, b"{}".to_vec())) }],
            positions: at("p", offset),
            watermark: NO_WATERMARK,
        };
        if let Some(seq) = committed {
            store.stage(&cut("old", 1), seq).expect("stage");
            store.apply_staged(&shape, 1).expect("apply");
        }
        if let Some(seq) = staged {
            store.stage(&cut("new", 2), seq).expect("stage");
        }
        drop(store);
        let d = Durable::open(&cfg, 1, (1, 2), &Metrics::new()).expect("open").expect("checkpoints on");
        (cfg, d)
    }

    /// A start applies the staged cut the cluster agreed on, discards one
    /// newer than it, and refuses cuts that no longer meet.
    #[test]
    fn a_cluster_start_settles_on_the_agreed_cut() {
        // Staged 3 on top of 2, and some process applied 3: apply.
        let (cfg, d) = process_state("apply", Some(2), Some(3));
        assert_eq!(d.cuts(), (2, 3));
        let d = d.settle(3, 3).expect("settles");
        let cp = d.resume.clone().expect("a checkpoint");
        assert_eq!((cp.seq, cp.positions.clone()), (3, at("p", 2)));
        assert_eq!(d.store.staged().ok().flatten(), None);
        d.checkpointer.stop();
        // Staged 3 on top of 2, and nobody applied 3: discard.
        let (_, d) = process_state("discard", Some(2), Some(3));
        let d = d.settle(2, 2).expect("settles");
        let cp = d.resume.clone().expect("a checkpoint");
        assert_eq!((cp.seq, cp.positions.clone()), (2, at("p", 1)));
        assert_eq!(d.store.staged().ok().flatten(), None);
        d.checkpointer.stop();
        // Some process lost its state while the others are at cut 5.
        let (_, d) = process_state("lost", None, None);
        let e = d.settle(5, 0).err().map(|e| format!("{e:#}")).unwrap_or_default();
        assert!(e.contains("not one cut") && e.contains("--rebuild"), "{e}");
        // Another shape of run is refused at open, naming both.
        let other = Durable::open(&cfg, 2, (1, 2), &Metrics::new()).err().map(|e| format!("{e:#}"));
        let other = other.unwrap_or_default();
        assert!(
            other.contains("written by process 1 of 2, 1 worker each and this run is process 1 of 2, 2 workers each"),
            "{other}"
        );
        // A single process on a cluster's directory is refused, not rebuilt.
        let single = Durable::open(&cfg, 1, (0, 1), &Metrics::new()).err().map(|e| format!("{e:#}"));
        assert!(single.unwrap_or_default().contains("holds a multi-process cluster's checkpoints"));
        for name in ["apply", "discard", "lost"] {
            let _ = std::fs::remove_dir_all(
                std::env::temp_dir().join(format!("revpulse-settle-{name}-{}", std::process::id())),
            );
        }
    }

    /// Entries whose epochs the upsert-log capture has not completed stay
    /// behind, whatever every worker acknowledged.
    #[test]
    fn incomplete_log_epochs_wait() {
        let mut feed = Feed::default();
        feed.record(4, vec![(3, logged("k", Some("v")))], 3, &at("p", 1), 0);
        let (below, sealed) = feed.take_below(10);
        assert_eq!(below, 3);
        assert!(sealed.is_empty());
        feed.record(5, vec![], 6, &at("p", 1), 0);
        let (below, sealed) = feed.take_below(10);
        assert_eq!(below, 6);
        assert_eq!(sealed.iter().map(|s| s.epoch).collect::<Vec<_>>(), vec![3, 4]);
    }
}
