//! `revpulse replay DIR`: the same dataflow over `DIR/<topic>.jsonl`.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use revpulse_pipelines::config::MetricsConfig;
use revpulse_pipelines::dataflow::{build, net_changes, BuildOptions};
use revpulse_pipelines::event::{decode_value, Event, Reject, Topic};
use revpulse_pipelines::row::{RowKey, RowVals};
use revpulse_pipelines::types::Text;

/// The final state of every metric table.
pub type State = BTreeMap<RowKey, RowVals>;

/// One line of a replay file, decoded.
#[derive(Clone, Debug)]
pub struct Line {
    pub topic: Topic,
    pub key: Text,
    pub value: Option<Event>,
    /// 1-based line number within its file: the arrival order.
    pub seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("timely: {0}")]
    Timely(String),
}

/// What a replay read.
#[derive(Debug, Default)]
pub struct Counts {
    pub valid: usize,
    pub rejected: usize,
}

/// Reads every topic file present in `dir`. Invalid lines are reported on
/// stderr with their file and line number and skipped (as the DLQ would).
pub fn read_dir(dir: &Path) -> Result<(Vec<Line>, Counts), ReplayError> {
    let mut lines = Vec::new();
    let mut counts = Counts::default();
    for topic in Topic::ALL {
        let path = dir.join(format!("{}.jsonl", topic.name()));
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ReplayError::Io { path, source }),
        };
        for (i, line) in std::io::BufReader::new(file).split(b'\n').enumerate() {
            let line = line.map_err(|source| ReplayError::Io { path: path.clone(), source })?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse_line(topic, &line) {
                Ok((key, value)) => {
                    counts.valid += 1;
                    lines.push(Line { topic, key, value, seq: i as u64 + 1 });
                }
                Err(reject) => {
                    counts.rejected += 1;
                    eprintln!("{}:{}: rejected: {reject}", path.display(), i + 1);
                }
            }
        }
    }
    Ok((lines, counts))
}

/// A replay line: an event, or `{"_key": K, "_tombstone": true}`.
pub fn parse_line(topic: Topic, line: &[u8]) -> Result<(Text, Option<Event>), Reject> {
    #[derive(serde::Deserialize)]
    struct Tombstone {
        _key: Text,
        _tombstone: bool,
    }
    if line.windows(12).any(|w| w == b"\"_tombstone\"") {
        if let Ok(t) = serde_json::from_slice::<Tombstone>(line) {
            if t._tombstone {
                return Ok((t._key, None));
            }
        }
    }
    let event = decode_value(topic, line)?;
    Ok((Text::from(event.upsert_key()), Some(event)))
}

/// Runs `lines` through the dataflow on `workers` threads, `batch` lines
/// per epoch, and returns the final state.
pub fn run(lines: Vec<Line>, cfg: &MetricsConfig, workers: usize, batch: usize) -> Result<State, ReplayError> {
    run_observed(lines, cfg, workers, batch, || {})
}

/// As [`run`]; `after` runs on worker 0 once every line is processed, while
/// the dataflow and its arrangements are still alive (`revpulse bench`
/// measures the state's memory there).
pub fn run_observed(
    lines: Vec<Line>,
    cfg: &MetricsConfig,
    workers: usize,
    batch: usize,
    after: impl Fn() + Send + Sync + 'static,
) -> Result<State, ReplayError> {
    let lines = Arc::new(lines);
    let cfg = cfg.clone();
    let guards = timely::execute(timely::Config::process(workers.max(1)), move |worker| {
        let mut df = build(worker, &cfg, BuildOptions::fresh());
        let (index, peers) = (worker.index(), worker.peers());
        let mut epoch = 0;
        let mut state = State::new();
        for chunk in lines.chunks(batch.max(1)) {
            // Each worker reads a share; the upsert operator routes by key.
            for line in chunk.iter().skip(index).step_by(peers) {
                df.inputs.send(line.topic, line.key.clone(), line.value.clone(), line.seq);
            }
            epoch += 1;
            df.inputs.advance_to(epoch);
            df.inputs.flush();
            worker.step_while(|| df.probe.less_than(&epoch));
            let late = std::mem::take(&mut *df.too_late.borrow_mut()).len();
            if late > 0 {
                tracing::warn!(too_late = late, "impressions of closed months left out (retention)");
            }
            // Applied per epoch, as the sink does: a closed row keeps its
            // value without a retraction, so changes of different epochs
            // must not be consolidated together.
            let changes = std::mem::take(&mut df.completed.borrow_mut().changes);
            for (key, vals) in net_changes(changes) {
                match vals {
                    Some(v) => state.insert(key, v),
                    None => state.remove(&key),
                };
            }
        }
        if index == 0 {
            after();
        }
        state
    })
    .map_err(ReplayError::Timely)?;
    // Each worker holds the rows it owns (see `row_owner`): disjoint keys.
    let mut rows = State::new();
    for result in guards.join() {
        rows.extend(result.map_err(ReplayError::Timely)?);
    }
    Ok(rows)
}
