//! Durable state end to end (SPEC §7 "Durable state", docs/guarantees.md
//! "Checkpoints"), in-process against librdkafka's mock cluster and a real
//! ClickHouse:
//!
//! - a restart resumes from the checkpoint and is exact even though the
//!   topics no longer hold their early segments (the mock cluster keeps
//!   ~5 MiB per partition), on 1 and 2 workers and with the worker count
//!   changing between restarts (the state re-shards);
//! - a checkpoint whose positions the topics no longer hold is a clear
//!   error naming topic, partition and offsets; `--rebuild` then rebuilds
//!   exactly what the topics still hold;
//! - a damaged checkpoint (a value's bytes, the key count) is a clear
//!   error; a torn last write (the journal truncated at five points, as a
//!   crash in the middle of writing leaves it) falls back to the previous
//!   checkpoint, and the restart is exact.
//!
//! `kill -9` at random points of a running binary with checkpoints is in
//! `tests/faults.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use revpulse::config::Config;
use revpulse::generate::{GenConfig, Generator};
use revpulse::replay::{self, Line};
use revpulse::runner::{run_cluster, Cluster, Shared};
use revpulse_connectors::clickhouse::ClickHouseSink;
use revpulse_connectors::kafka::KeyedProducer;
use revpulse_pipelines::event::{decode, decode_value, Topic};

/// Produces `total` generated events (seeded) and returns them as replay lines.
fn produce(cfg: &Config, generator: &mut Generator, total: usize, lines: &mut Vec<Line>) {
    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    for i in 0..total {
        let r = generator.next_record();
        producer
            .send(cfg.kafka.topics.get(r.topic), r.key.as_bytes(), r.payload.as_deref().map(str::as_bytes))
            .expect("send");
        let value = r.payload.as_deref().map(|p| decode_value(r.topic, p.as_bytes()).expect("valid"));
        lines.push(Line { topic: r.topic, key: r.key, value, seq: lines.len() as u64 + 1 });
        if i % 1_000 == 999 {
            producer.poll();
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
}

/// A pipeline on a one-partition mock cluster (so every topic outgrows
/// the cluster's retention quickly) with checkpoints in a fresh directory.
fn pipeline(
    name: &str,
) -> (tokio::runtime::Runtime, rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>, Config)
{
    let (rt, cluster, mut cfg) = common::mock_pipeline(name, 1);
    cfg.state.dir = Some(common::state_dir(name));
    cfg.state.interval_ms = 100;
    cfg.kafka.max_batch_messages = 5_000;
    (rt, cluster, cfg)
}

/// The least offset any input partition still holds.
fn low_watermarks(cfg: &Config) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &cfg.kafka.brokers).create().expect("consumer");
    Topic::ALL
        .iter()
        .map(|t| c.fetch_watermarks(cfg.kafka.topics.get(*t), 0, Duration::from_secs(5)).expect("watermarks").0)
        .collect()
}

/// Every record the topics still hold, as replay lines in arrival order.
fn retained(cfg: &Config) -> Vec<Line> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("group.id", "retained-reader")
        .set("enable.partition.eof", "true")
        .create()
        .expect("consumer");
    let mut lines = Vec::new();
    for topic in Topic::ALL {
        let name = cfg.kafka.topics.get(topic);
        let (low, high) = c.fetch_watermarks(name, 0, Duration::from_secs(5)).expect("watermarks");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(name, 0, Offset::Offset(low)).expect("tpl");
        c.assign(&tpl).expect("assign");
        let mut next = low;
        while next < high {
            let Some(Ok(m)) = c.poll(Duration::from_secs(5)) else { continue };
            next = m.offset() + 1;
            let u = decode(topic, m.key(), m.payload()).expect("generated records decode");
            lines.push(Line { topic, key: u.key, value: u.value, seq: m.offset() as u64 + 1 });
        }
    }
    lines
}

/// Runs the pipeline until it has committed everything the topics hold
/// (read, and acknowledged by ClickHouse), then stops it gracefully.
fn run_until_committed(rt: &tokio::runtime::Runtime, cfg: &Config, workers: usize) {
    let shared = common::run_until_committed(rt, cfg, &Cluster { workers, ..Cluster::default() });
    assert!(shared.metrics.checkpoint.keys.get() > 0, "a checkpoint was written");
}

/// Starts the pipeline and expects it to fail at start; returns the error.
fn start_error(rt: &tokio::runtime::Runtime, cfg: &Config) -> String {
    let sink = std::sync::Arc::new(ClickHouseSink::new(cfg.clickhouse.clone(), None));
    let result = run_cluster(cfg, &Cluster::default(), Shared::default(), sink, rt.handle().clone());
    match result {
        Ok(_) => panic!("the pipeline started"),
        Err(e) => format!("{e:#}"),
    }
}

/// `workers(round)`: the worker count of each run (a restart with another
/// count re-shards the checkpointed state).
fn restart_after_early_segments_are_gone(name: &str, workers: impl Fn(usize) -> usize) {
    let (rt, _cluster, cfg) = pipeline(name);
    let mut generator = Generator::new(GenConfig { seed: 21, tenants: 6, ..GenConfig::default() });
    let mut lines = Vec::new();
    // Each round is read before the cluster drops it, and each restart
    // resumes from the checkpoint: by the end, the early segments are gone.
    for round in 0..8 {
        produce(&cfg, &mut generator, 10_000, &mut lines);
        run_until_committed(&rt, &cfg, workers(round));
    }
    let lows = low_watermarks(&cfg);
    assert!(lows.iter().any(|l| *l > 0), "some partition dropped its early segments: {lows:?}");
    let expected = replay::run(lines, &Default::default(), 1, 100_000).expect("replay");
    rt.block_on(common::assert_clickhouse_matches(&cfg.clickhouse, &expected));
}

#[test]
fn a_restart_from_the_checkpoint_is_exact_after_early_segments_are_gone() {
    restart_after_early_segments_are_gone("gone1", |_| 1);
}

/// Two workers, and one and two in turns: the checkpoint re-shards.
#[test]
fn restarts_on_two_and_on_changing_worker_counts_are_exact_after_early_segments_are_gone() {
    restart_after_early_segments_are_gone("gone2", |_| 2);
    restart_after_early_segments_are_gone("gone12", |round| 1 + round % 2);
}

#[test]
fn expired_positions_are_an_error_and_rebuild_rebuilds_what_the_topics_hold() {
    let (rt, _cluster, mut cfg) = pipeline("expired");
    let mut generator = Generator::new(GenConfig { seed: 8, tenants: 4, ..GenConfig::default() });
    let mut lines = Vec::new();
    produce(&cfg, &mut generator, 5_000, &mut lines);
    run_until_committed(&rt, &cfg, 1);
    // Far more than a partition keeps: the checkpoint's positions are gone.
    produce(&cfg, &mut generator, 120_000, &mut lines);
    let error = start_error(&rt, &cfg);
    assert!(
        error.contains("the checkpoint resumes") && error.contains("earliest offset") && error.contains("--rebuild"),
        "{error}"
    );
    assert!(Topic::ALL.iter().any(|t| error.contains(cfg.kafka.topics.get(*t))), "names the topic: {error}");

    cfg.state.rebuild = true;
    let held = retained(&cfg);
    run_until_committed(&rt, &cfg, 1);
    let expected = replay::run(held, &Default::default(), 1, 100_000).expect("replay");
    rt.block_on(common::assert_clickhouse_matches(&cfg.clickhouse, &expected));
}

/// The newest journal file of a fjall store.
fn newest_journal(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = walk(&dir.join("journals"));
    files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    files.pop().expect("a journal file")
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_damaged_checkpoint_is_an_error_and_a_torn_write_falls_back_exactly() {
    let (rt, _cluster, cfg) = pipeline("damaged");
    let dir = PathBuf::from(cfg.state.dir.clone().expect("dir"));
    let mut generator = Generator::new(GenConfig { seed: 3, tenants: 3, ..GenConfig::default() });
    let mut lines = Vec::new();
    // Five torn writes: each round checkpoints, then loses the tail of its
    // journal at a different point, then restarts with more input.
    for round in 0..5u64 {
        produce(&cfg, &mut generator, 2_000, &mut lines);
        run_until_committed(&rt, &cfg, 1);
        let journal = newest_journal(&dir);
        let len = std::fs::metadata(&journal).map(|m| m.len()).expect("journal");
        let cut = len - (len / 10) * (round + 1) / 5 - 7 * round;
        std::fs::OpenOptions::new().write(true).open(&journal).and_then(|f| f.set_len(cut)).expect("truncate");
    }
    produce(&cfg, &mut generator, 2_000, &mut lines);
    // A fallback to an older checkpoint re-reads more than the last 2,000.
    run_until_committed(&rt, &cfg, 1);
    let expected = replay::run(lines, &Default::default(), 1, 100_000).expect("replay");
    rt.block_on(common::assert_clickhouse_matches(&cfg.clickhouse, &expected));

    // A value whose bytes changed, then a key the count does not know.
    {
        let keyspace = fjall::Config::new(&dir).open().expect("open store");
        let log = keyspace.open_partition("log_payments", Default::default()).expect("log");
        let (key, value) = log.first_key_value().expect("read").expect("a payment");
        let mut bad = value.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x20;
        log.insert(key, bad).expect("write");
        keyspace.persist(fjall::PersistMode::SyncAll).expect("persist");
    }
    let error = start_error(&rt, &cfg);
    assert!(error.contains("damaged") && error.contains("--rebuild"), "{error}");
    {
        let keyspace = fjall::Config::new(&dir).open().expect("open store");
        let log = keyspace.open_partition("log_payments", Default::default()).expect("log");
        let (key, _) = log.first_key_value().expect("read").expect("a payment");
        log.remove(key).expect("remove");
        keyspace.persist(fjall::PersistMode::SyncAll).expect("persist");
    }
    let error = start_error(&rt, &cfg);
    assert!(error.contains("damaged") && error.contains("the checkpoint says"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}
