//! The property tests' shared harness: arrival orders, batch splits, and the
//! real dataflow run on 1 or more timely workers, materialized after every
//! batch for comparison with a naive recomputation.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};

use proptest::test_runner::TestCaseError;
use revpulse_pipelines::config::MetricsConfig;
use revpulse_pipelines::dataflow::{build, net_changes, Inputs};
use revpulse_pipelines::row::{RowKey, RowVals, Table};

/// The tables as a map from row key to values.
pub type State = BTreeMap<RowKey, RowVals>;

/// Merges per-key message sequences in a seeded random order (each key
/// keeps its own order, as on a Kafka partition), redelivering about one
/// message in seven right after itself.
pub fn interleave<M: Clone>(per_key: Vec<Vec<M>>, seed: u64) -> Vec<M> {
    let mut queues: Vec<VecDeque<M>> = per_key.into_iter().map(Into::into).collect();
    let mut out = Vec::new();
    let mut rng = seed;
    while queues.iter().any(|q| !q.is_empty()) {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let live: Vec<usize> = (0..queues.len()).filter(|&i| !queues[i].is_empty()).collect();
        let q = live[(rng >> 33) as usize % live.len()];
        if let Some(m) = queues[q].pop_front() {
            if (rng >> 20).is_multiple_of(7) {
                out.push(m.clone());
            }
            out.push(m);
        }
    }
    out
}

/// Cuts `msgs` into consecutive batches of the sizes in `cuts`, cycling.
pub fn split<M: Clone>(msgs: &[M], cuts: &[usize]) -> Vec<Vec<M>> {
    let mut out = Vec::new();
    let mut rest = msgs;
    for &c in cuts.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = c.max(1).min(rest.len());
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

/// Feeds `batches` through the dataflow on `workers` threads (worker i reads
/// every i-th message, as partitions spread over workers) and returns the
/// tables after each batch.
pub fn run_dataflow<M: Clone + Send + Sync + 'static>(
    workers: usize,
    batches: Vec<Vec<M>>,
    send: fn(&mut Inputs, &M, u64),
) -> Vec<State> {
    run_dataflow_with(MetricsConfig::default(), workers, batches, send).0
}

/// [`run_dataflow`] with a configuration; also returns every message the
/// dataflow rejected as too late, by `seq`.
pub fn run_dataflow_with<M: Clone + Send + Sync + 'static>(
    cfg: MetricsConfig,
    workers: usize,
    batches: Vec<Vec<M>>,
    send: fn(&mut Inputs, &M, u64),
) -> (Vec<State>, Vec<u64>) {
    let batches = std::sync::Arc::new(batches);
    let too_late = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let late_out = std::sync::Arc::clone(&too_late);
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let mut df = build(worker, &cfg, revpulse_pipelines::dataflow::BuildOptions::fresh());
        let mut seq = 0u64;
        let mut per_batch: Vec<Vec<(RowKey, RowVals, isize)>> = Vec::new();
        for (epoch, batch) in batches.iter().enumerate() {
            for (i, msg) in batch.iter().enumerate() {
                seq += 1;
                if i % worker.peers() == worker.index() {
                    send(&mut df.inputs, msg, seq);
                }
            }
            df.inputs.advance_to(epoch as u64 + 1);
            df.inputs.flush();
            worker.step_while(|| df.probe.less_than(&(epoch as u64 + 1)));
            per_batch.push(std::mem::take(&mut df.completed.borrow_mut().changes));
        }
        if let Ok(mut late) = late_out.lock() {
            late.extend(df.too_late.borrow().iter().map(|l| l.seq));
        }
        per_batch
    })
    .expect("timely runs");
    let mut merged: Vec<Vec<(RowKey, RowVals, isize)>> = Vec::new();
    for result in guards.join() {
        let per_batch = result.expect("worker finished");
        merged.resize_with(per_batch.len(), Vec::new);
        for (m, b) in merged.iter_mut().zip(per_batch) {
            m.extend(b);
        }
    }
    let mut state = State::new();
    let states = merged
        .into_iter()
        .map(|changes| {
            for (key, vals) in net_changes(changes) {
                match vals {
                    Some(v) => state.insert(key, v),
                    None => state.remove(&key),
                };
            }
            state.clone()
        })
        .collect();
    let mut late = too_late.lock().map(|l| l.clone()).unwrap_or_default();
    late.sort_unstable();
    (states, late)
}

/// Rows that differ between two states, for failure messages.
pub fn diff(actual: &State, expected: &State) -> String {
    let mut lines = Vec::new();
    for (k, v) in expected {
        match actual.get(k) {
            None => lines.push(format!("missing {k:?} = {v:?}")),
            Some(a) if a != v => lines.push(format!("differs {k:?}: got {a:?}, want {v:?}")),
            _ => {}
        }
    }
    for k in actual.keys().filter(|k| !expected.contains_key(*k)) {
        lines.push(format!("extra {k:?} = {:?}", actual[k]));
    }
    lines.join("\n")
}

/// Runs the dataflow over `msgs` cut by `cuts` and checks it against
/// `naive` of every prefix that ends a batch.
pub fn check<M: Clone + Send + Sync + 'static>(
    workers: usize,
    msgs: &[M],
    cuts: &[usize],
    send: fn(&mut Inputs, &M, u64),
    naive: fn(&[M]) -> State,
) -> Result<(), TestCaseError> {
    check_tables(workers, msgs, cuts, send, naive, |_| true)
}

/// [`check`] on the tables `keep` selects only (`naive` computes those).
pub fn check_tables<M: Clone + Send + Sync + 'static>(
    workers: usize,
    msgs: &[M],
    cuts: &[usize],
    send: fn(&mut Inputs, &M, u64),
    naive: fn(&[M]) -> State,
    keep: fn(Table) -> bool,
) -> Result<(), TestCaseError> {
    let batches = split(msgs, cuts);
    let states = run_dataflow(workers, batches.clone(), send);
    let mut prefix = 0;
    for (i, (batch, state)) in batches.iter().zip(&states).enumerate() {
        prefix += batch.len();
        let expected = naive(&msgs[..prefix]);
        let state: State = state.iter().filter(|(k, _)| keep(k.table)).map(|(k, v)| (k.clone(), v.clone())).collect();
        if state != expected {
            return Err(TestCaseError::fail(format!(
                "after batch {} of {} ({workers} workers):\n{}",
                i + 1,
                batches.len(),
                diff(&state, &expected)
            )));
        }
    }
    Ok(())
}

/// Runs, crashes and restarts, as `revpulse run` does them with retention.
/// Each segment is (fresh batches, committed): a run replays every message
/// of the earlier segments with the watermark held (the replay of retained
/// input), then reads its fresh batches; the sink writes every change it
/// makes, but only its first `committed` epochs (replay included) count as
/// committed — a crash or a lost asynchronous commit took the rest. The
/// next run starts from the watermark the last committed epoch was
/// processed with and takes back the state rows the sink holds as a start
/// does ([`revpulse_pipelines::retention::restorable`]: what the commit
/// covers; the rest is deleted first). Returns the tables as the sink holds
/// them after the last run.
pub fn run_chain<M: Clone + Send + Sync + 'static>(
    cfg: MetricsConfig,
    workers: usize,
    segments: Vec<(Vec<Vec<M>>, usize)>,
    send: fn(&mut Inputs, &M, u64),
) -> State {
    use revpulse_pipelines::retention::{restorable, NO_WATERMARK};
    type Changes = Vec<Vec<(RowKey, RowVals, isize)>>;
    let run = |initial, restored: Vec<(RowKey, RowVals)>, replay: Vec<Vec<M>>, fresh: Vec<Vec<M>>, committed: usize| {
        let (replay, fresh) = (std::sync::Arc::new(replay), std::sync::Arc::new(fresh));
        let committed = committed.clamp(1, (replay.len() + fresh.len()).max(1)) as u64;
        let cfg = cfg.clone();
        let guards = timely::execute(timely::Config::process(workers), move |worker| {
            let opts = revpulse_pipelines::dataflow::BuildOptions { initial_watermark: initial, log: false };
            let mut df = build(worker, &cfg, opts);
            if worker.index() == 0 {
                df.inputs.restore(restored.clone());
            }
            let mut per_batch: Changes = Vec::new();
            let mut seq = 0u64;
            let mut epoch = 0u64;
            // The watermark each epoch was processed with, as the runner folds it.
            let mut fold = revpulse_pipelines::dataflow::WatermarkFold::new(initial);
            let mut applied_at = Vec::new();
            df.watermark_gate.set(replay.is_empty());
            for (replaying, batch) in replay.iter().map(|b| (true, b)).chain(fresh.iter().map(|b| (false, b))) {
                if !replaying {
                    df.watermark_gate.set(true);
                }
                for (i, msg) in batch.iter().enumerate() {
                    seq += 1;
                    if i % worker.peers() == worker.index() {
                        send(&mut df.inputs, msg, seq);
                    }
                }
                epoch += 1;
                df.inputs.advance_to(epoch);
                df.inputs.flush();
                worker.step_while(|| df.probe.less_than(&epoch));
                per_batch.push(std::mem::take(&mut df.completed.borrow_mut().changes));
                applied_at.push(fold.complete(epoch, &df.completed));
                // The runner steps once more per loop after the fold.
                worker.step();
            }
            // The watermark the last committed epoch was processed with.
            let applied = applied_at.get(committed as usize - 1).copied().unwrap_or(initial);
            (per_batch, applied)
        })
        .expect("timely runs");
        let mut merged: Changes = Vec::new();
        let mut applied = initial;
        for result in guards.join() {
            let (per_batch, w) = result.expect("worker finished");
            applied = applied.max(w);
            merged.resize_with(per_batch.len(), Vec::new);
            for (m, b) in merged.iter_mut().zip(per_batch) {
                m.extend(b);
            }
        }
        (merged, applied)
    };
    let mut state = State::new();
    let mut initial = NO_WATERMARK;
    let mut replay: Vec<Vec<M>> = Vec::new();
    for (fresh, committed) in segments {
        let rows: Vec<(RowKey, RowVals)> =
            state.iter().filter(|(k, _)| k.table.is_state()).map(|(k, v)| (k.clone(), v.clone())).collect();
        let taken = restorable(rows, initial);
        for key in &taken.stale {
            state.remove(key);
        }
        let (changes, applied) = run(initial, taken.restore, replay.clone(), fresh.clone(), committed);
        for batch in changes {
            for (key, vals) in net_changes(batch) {
                match vals {
                    Some(v) => state.insert(key, v),
                    None => state.remove(&key),
                };
            }
        }
        initial = applied;
        replay.extend(fresh);
    }
    state
}
