//! `revpulse bench --restart`: restart time after a history of H and of
//! 4×H events with the same live state, and what checkpoints cost the
//! pipeline (docs/benchmarks.md, "Restart").
//!
//! The live state is a fixed set of generated records; the history
//! corrects each of them over and over (the same key, a newer `ts`), so
//! both histories end with the same keys. Each history runs through the
//! production runner with checkpoints until every row is acknowledged and
//! the run stops (writing its last checkpoint); then a tail of corrections
//! arrives and the runner starts again: the restart time is from that
//! start until the group has committed every partition to its end, which
//! happens only once ClickHouse acknowledged every row up to there. The
//! pipeline throughput of history H is measured with and without
//! checkpoints, on topics of their own, in the same run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::TopicPartitionList;
use revpulse_connectors::clickhouse::ClickHouseConfig;
use revpulse_connectors::kafka::KafkaConfig;
use revpulse_pipelines::event::Topic;
use revpulse_pipelines::time::{format_micros, parse_rfc3339};

use super::{fresh_database, join, phase_kafka, read_messages, spawn_producer, spawn_runner};
use crate::config::Config;
use crate::demo::ensure_clickhouse;
use crate::generate::{GenConfig, Generator, Record};
use crate::runner::Shared;

/// Restart benchmark knobs.
#[derive(Clone, Debug)]
pub struct RestartOptions {
    /// Records of the live state (keys; a few repeat).
    pub live: usize,
    /// Corrections of every live record in history H (so H = live × (1 + rounds)).
    pub rounds: usize,
    pub partitions: i32,
    pub tenants: usize,
    pub seed: u64,
    pub clickhouse: ClickHouseConfig,
}

type Cluster = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

/// `record` with its `ts` moved `secs` later: a correction of the same key.
fn corrected(record: &Record, secs: i64) -> Option<Record> {
    let mut value: serde_json::Value = serde_json::from_str(record.payload.as_deref()?).ok()?;
    let ts = parse_rfc3339(value.get("ts")?.as_str()?)?;
    value["ts"] = format_micros(ts + secs * 1_000_000).into();
    Some(Record { topic: record.topic, key: record.key.clone(), payload: Some(value.to_string()) })
}

/// The live records and a history that corrects each of them `rounds` times.
fn history(live: &[Record], rounds: usize, from: usize) -> Vec<Record> {
    let mut out = live.to_vec();
    for r in 0..rounds {
        out.extend(live.iter().filter_map(|rec| corrected(rec, (from + r + 1) as i64)));
    }
    out
}

/// Whether the group has committed every input partition to its end.
fn committed_to_end(consumer: &BaseConsumer, kafka: &KafkaConfig) -> anyhow::Result<bool> {
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for t in Topic::ALL {
        let name = kafka.topics.get(t);
        let md = consumer.fetch_metadata(Some(name), Duration::from_secs(5))?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) = consumer.fetch_watermarks(name, p.id(), Duration::from_secs(5))?;
            tpl.add_partition(name, p.id());
            ends.push((name.to_owned(), p.id(), high));
        }
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(5))?;
    Ok(ends.iter().all(|(t, p, high)| {
        *high == 0 || committed.find_partition(t, *p).is_some_and(|e| e.offset() == rdkafka::Offset::Offset(*high))
    }))
}

fn wait_committed(kafka: &KafkaConfig, within: Duration) -> anyhow::Result<()> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        .create()?;
    let deadline = Instant::now() + within;
    while !committed_to_end(&consumer, kafka)? {
        anyhow::ensure!(Instant::now() < deadline, "the pipeline did not catch up within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Streams `msgs` through a new runner on `cfg` until every one is read
/// and committed, then stops it; returns events per second.
fn run_history(rt: &tokio::runtime::Runtime, cfg: &Config, msgs: &[Record]) -> anyhow::Result<f64> {
    let shared = Shared::default();
    let seen = Arc::new(AtomicU64::new(0));
    let window = 4_000 * 8 * 5;
    let t = Instant::now();
    let producer = spawn_producer(&cfg.kafka, msgs, seen.clone(), window, None);
    let runner = spawn_runner(rt, cfg, &shared, 1);
    while (read_messages(&shared) as usize) < msgs.len() {
        seen.store(read_messages(&shared), Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
    }
    seen.store(u64::MAX, Ordering::Relaxed);
    join(producer)?;
    wait_committed(&cfg.kafka, Duration::from_secs(600))?;
    let rate = msgs.len() as f64 / t.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    join(runner)?;
    Ok(rate)
}

/// One history through a checkpointing runner, a tail of corrections while
/// it is down, and the timed restart. Returns (history events/s, restart s).
fn history_then_restart(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    opts: &RestartOptions,
    live: &[Record],
    rounds: usize,
) -> anyhow::Result<(usize, f64, f64)> {
    let name = format!("restart{rounds}");
    let state = std::env::temp_dir().join(format!("revpulse-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let mut cfg = Config {
        kafka: phase_kafka(cluster, &name, opts.partitions)?,
        clickhouse: fresh_database(rt, &opts.clickhouse, &format!("revpulse_bench_{name}"))?,
        ..Config::default()
    };
    cfg.state.dir = Some(state.display().to_string());
    let msgs = history(live, rounds, 0);
    let rate = run_history(rt, &cfg, &msgs)?;
    // A tail: the last thousand live records corrected once more.
    let tail = history(&live[live.len().saturating_sub(1_000)..], 1, rounds + 1);
    join(spawn_producer(&cfg.kafka, &tail, Arc::new(AtomicU64::new(u64::MAX)), u64::MAX, None))?;
    let shared = Shared::default();
    let t = Instant::now();
    let runner = spawn_runner(rt, &cfg, &shared, 1);
    wait_committed(&cfg.kafka, Duration::from_secs(600))?;
    let restart = t.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    join(runner)?;
    let _ = std::fs::remove_dir_all(&state);
    Ok((msgs.len(), rate, restart))
}

pub fn restart(opts: &RestartOptions) -> anyhow::Result<()> {
    let rt = crate::start::runtime()?;
    rt.block_on(ensure_clickhouse(&opts.clickhouse))?;
    let cluster = MockCluster::new(1).context("mock cluster")?;
    let mut generator = Generator::new(GenConfig { seed: opts.seed, tenants: opts.tenants, ..GenConfig::default() });
    let live: Vec<Record> =
        std::iter::from_fn(|| Some(generator.next_record())).filter(|r| r.payload.is_some()).take(opts.live).collect();
    let keys: std::collections::HashSet<(Topic, &str)> = live.iter().map(|r| (r.topic, r.key.as_str())).collect();
    println!(
        "revpulse bench --restart: {} live keys, history H = {} events, 4xH = {} events, {} partitions per topic",
        keys.len(),
        live.len() * (1 + opts.rounds),
        live.len() * (1 + 4 * opts.rounds + 3),
        opts.partitions
    );
    // Throughput without checkpoints, on history H.
    let plain = Config {
        kafka: phase_kafka(&cluster, "restart-plain", opts.partitions)?,
        clickhouse: fresh_database(&rt, &opts.clickhouse, "revpulse_bench_restart_plain")?,
        ..Config::default()
    };
    let without = run_history(&rt, &plain, &history(&live, opts.rounds, 0))?;
    let (h, with, restart_h) = history_then_restart(&rt, &cluster, opts, &live, opts.rounds)?;
    let (h4, _, restart_4h) = history_then_restart(&rt, &cluster, opts, &live, 4 * opts.rounds + 3)?;
    let per_million = restart_h / keys.len() as f64 * 1e6;
    println!("pipeline, history H, without checkpoints: {without:>10.0} events/s");
    println!(
        "pipeline, history H, with checkpoints:    {with:>10.0} events/s ({:+.1}%)",
        (with / without - 1.0) * 100.0
    );
    println!("restart after H  = {h:>9} events: {restart_h:>6.2} s ({per_million:.2} s per million live keys)");
    println!("restart after 4xH = {h4:>8} events: {restart_4h:>6.2} s");
    println!("restart time ratio (4x history / 1x history): {:.2}", restart_4h / restart_h);
    Ok(())
}
