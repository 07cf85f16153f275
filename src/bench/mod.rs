//! `revpulse bench`: throughput, freshness and memory of the whole system,
//! measured in one process and one run so the figures compare (issue:
//! performance). Everything runs on this machine: librdkafka's mock cluster
//! as the broker and the local ClickHouse (started if needed).
//!
//! Phases, all over the same generated events:
//! 1. `replay`: the generator's files through `revpulse replay`'s path
//!    (read, decode, dataflow; no Kafka, no ClickHouse), on 1 and 2 timely
//!    workers — comparable with other engines on identical input.
//! 2. state: resident memory the dataflow holds after all events, per
//!    current version, against the JSON size of those versions.
//! 3. ceiling: Kafka consume + decode only (a plain `BaseConsumer` loop).
//! 4. pipeline: Kafka → dataflow (all five families) → ClickHouse with the
//!    production runner, until every row is acknowledged; on 1 and on 2
//!    timely workers.
//! 5. freshness: a steady load at half the pipeline's rate; Kafka message
//!    timestamp → its rows acknowledged by ClickHouse, p50/p99.
//!
//! The mock cluster keeps only ~5 MiB per partition, so producers run
//! concurrently with the consumer under test and never get more than
//! `window` messages ahead of it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::{Offset, TopicPartitionList};
use revpulse_connectors::clickhouse::{migrate, ClickHouseConfig, ClickHouseSink};
use revpulse_connectors::kafka::{KafkaConfig, KeyedProducer, TopicNames};
use revpulse_pipelines::deals::{as_of_stats, AsOfStats};
use revpulse_pipelines::event::{decode, Event, Topic};

use crate::config::Config;
use crate::demo::ensure_clickhouse;
use crate::generate::{write_dir, GenConfig, Generator, Record};
use crate::replay::{self, Line};
use crate::runner::{run_cluster, Cluster, Shared};

pub mod api;
pub mod ingest;
pub mod restart;

/// Benchmark knobs.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub events: usize,
    pub partitions: i32,
    pub tenants: usize,
    pub seed: u64,
    /// Length of the freshness phase.
    pub freshness: Duration,
    pub clickhouse: ClickHouseConfig,
}

pub fn bench(opts: &BenchOptions) -> anyhow::Result<()> {
    let rt = crate::start::runtime()?;
    println!(
        "revpulse bench: {} events, {} partitions per topic, {} tenants",
        opts.events, opts.partitions, opts.tenants
    );
    let mut generator = Generator::new(GenConfig { seed: opts.seed, tenants: opts.tenants, ..GenConfig::default() });
    let msgs: Vec<Record> = (0..opts.events).map(|_| generator.next_record()).collect();
    let json_bytes: usize = msgs.iter().map(|m| m.payload.as_ref().map_or(0, String::len)).sum();
    println!("input: {:.1} MiB of JSON\n", json_bytes as f64 / MIB);

    // 1. replay, from the generator's files.
    let dir = std::env::temp_dir().join(format!("revpulse-bench-{}", std::process::id()));
    write_dir(&dir, GenConfig { seed: opts.seed, tenants: opts.tenants, ..GenConfig::default() }, opts.events)?;
    let t = Instant::now();
    let (lines, _) = replay::read_dir(&dir)?;
    let decode_secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = Config::default();
    let replay_rate = replay_phase(&lines, &cfg, decode_secs)?;

    // 2. state held by the dataflow.
    let (versions, current_json) = {
        let current = current_versions(&lines);
        (current.len(), current.values().map(|e| e.to_json().len()).sum::<usize>())
    };
    let held = Arc::new(AtomicU64::new(0));
    let probe = held.clone();
    // The input lines exist before the baseline and live until after the
    // measurement, so the difference is what the dataflow holds.
    let before = reset_peak_rss();
    replay::run_observed(lines, &cfg.metrics, 1, 100_000, move || {
        trim_heap();
        probe.store(rss_bytes().saturating_sub(before), Ordering::Relaxed)
    })?;
    let state = held.load(Ordering::Relaxed);

    // 3 and 4 share a broker; every phase gets topics of its own.
    let cluster = MockCluster::new(1).context("mock cluster")?;
    let window = 4_000 * opts.partitions.max(1) as u64 * 5;
    let ceiling = {
        let kafka = phase_kafka(&cluster, "ceiling", opts.partitions)?;
        let base = reset_peak_rss();
        let consumed = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        let producer = spawn_producer(&kafka, &msgs, consumed.clone(), window, None);
        consume_and_decode(&kafka, msgs.len() as u64, &consumed)?;
        let secs = t.elapsed().as_secs_f64();
        join(producer)?;
        (msgs.len() as f64 / secs, peak_rss_bytes(), base)
    };

    rt.block_on(ensure_clickhouse(&opts.clickhouse))?;
    let run_phase = |name: &str, workers: usize| -> anyhow::Result<(f64, u64, u64)> {
        let cfg = Config {
            kafka: phase_kafka(&cluster, name, opts.partitions)?,
            clickhouse: fresh_database(&rt, &opts.clickhouse, "revpulse_bench")?,
            ..Config::default()
        };
        let base = reset_peak_rss();
        let shared = Shared::default();
        let seen = Arc::new(AtomicU64::new(0));
        let t = Instant::now();
        let producer = spawn_producer(&cfg.kafka, &msgs, seen.clone(), window, None);
        let runner = spawn_runner(&rt, &cfg, &shared, workers);
        while (read_messages(&shared) as usize) < msgs.len() {
            seen.store(read_messages(&shared), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(5));
        }
        seen.store(u64::MAX, Ordering::Relaxed);
        shared.stop.store(true, Ordering::Relaxed);
        join(runner)?;
        let secs = t.elapsed().as_secs_f64();
        join(producer)?;
        Ok((msgs.len() as f64 / secs, peak_rss_bytes(), base))
    };
    // The pipeline reads the topics interleaved, in epochs of arrival:
    // the as-of moves of a live stream (replay reads one topic after another).
    let (pipeline, as_of) = as_of_cost(|| run_phase("pipeline", 1))?;
    let pipeline2 = run_phase("pipeline2", 2)?;

    // 5. freshness at half the sustained rate.
    let rate = (pipeline.0 / 2.0).max(100.0);
    let freshness = freshness_phase(&rt, &cluster, opts, &msgs, rate)?;
    Report { replay_rate, ceiling, pipeline, pipeline2, rate, freshness, versions, current_json, state, as_of }.print();
    Ok(())
}

/// Replay rates on 1 and 2 workers (decoding included).
fn replay_phase(lines: &[Line], cfg: &Config, decode_secs: f64) -> anyhow::Result<[f64; 2]> {
    let mut rates = [0.0; 2];
    for (i, workers) in [1usize, 2].into_iter().enumerate() {
        let t = Instant::now();
        replay::run(lines.to_vec(), &cfg.metrics, workers, 100_000)?;
        rates[i] = lines.len() as f64 / (t.elapsed().as_secs_f64() + decode_secs);
    }
    Ok(rates)
}

/// What the deals family's as-of moves cost while `f` runs.
fn as_of_cost<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<(T, AsOfStats)> {
    let before = as_of_stats();
    let out = f()?;
    Ok((out, as_of_stats().since(before)))
}

/// Freshness at a steady `rate`: Kafka message timestamp → its rows
/// acknowledged by ClickHouse, as (p50, p99, sink batches).
fn freshness_phase(
    rt: &tokio::runtime::Runtime,
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    opts: &BenchOptions,
    msgs: &[Record],
    rate: f64,
) -> anyhow::Result<(f64, f64, u64)> {
    let cfg = Config {
        kafka: phase_kafka(cluster, "freshness", opts.partitions)?,
        clickhouse: fresh_database(rt, &opts.clickhouse, "revpulse_bench")?,
        ..Config::default()
    };
    let shared = Shared::default();
    let runner = spawn_runner(rt, &cfg, &shared, 1);
    let unpaced = Arc::new(AtomicU64::new(u64::MAX));
    let limit = ((rate * opts.freshness.as_secs_f64()) as usize).min(msgs.len());
    let producer = spawn_producer(&cfg.kafka, &msgs[..limit], unpaced, u64::MAX, Some(rate));
    join(producer)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (read_messages(&shared) as usize) < limit && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    shared.stop.store(true, Ordering::Relaxed);
    join(runner)?;
    let h = shared.metrics.freshness.clone();
    Ok((quantile(&h, 0.5), quantile(&h, 0.99), h.get_sample_count()))
}

/// One run's figures, as `revpulse bench` prints them.
struct Report {
    replay_rate: [f64; 2],
    /// (events/s, peak RSS, RSS at its start) of each phase.
    ceiling: (f64, u64, u64),
    pipeline: (f64, u64, u64),
    pipeline2: (f64, u64, u64),
    /// The freshness phase's rate and its (p50, p99, sink batches).
    rate: f64,
    freshness: (f64, f64, u64),
    versions: usize,
    current_json: usize,
    state: u64,
    /// The deals family's as-of moves in the 1-worker pipeline.
    as_of: AsOfStats,
}

impl Report {
    fn print(&self) {
        let mib = |b: u64| b as f64 / MIB;
        println!("| measure | value |");
        println!("|---|---:|");
        println!("| replay (files → dataflow), 1 worker | {:.0} events/s |", self.replay_rate[0]);
        println!(
            "| replay, 2 workers | {:.0} events/s ({:.2}× 1 worker) |",
            self.replay_rate[1],
            self.replay_rate[1] / self.replay_rate[0]
        );
        println!(
            "| ceiling: Kafka consume + decode | {:.0} events/s (peak RSS {:.0} MiB, {:.0} MiB above its start) |",
            self.ceiling.0,
            mib(self.ceiling.1),
            mib(self.ceiling.1.saturating_sub(self.ceiling.2))
        );
        println!(
            "| pipeline: Kafka → dataflow → ClickHouse | {:.0} events/s (peak RSS {:.0} MiB, {:.0} MiB above its start) |",
            self.pipeline.0,
            mib(self.pipeline.1),
            mib(self.pipeline.1.saturating_sub(self.pipeline.2))
        );
        println!(
            "| pipeline, 2 workers | {:.0} events/s ({:.2}× 1 worker; peak RSS {:.0} MiB) |",
            self.pipeline2.0,
            self.pipeline2.0 / self.pipeline.0,
            mib(self.pipeline2.1)
        );
        println!("| pipeline / ceiling | {:.3} |", self.pipeline.0 / self.ceiling.0);
        println!(
            "| freshness at {:.0} events/s ({} sink batches) | p50 {:.3} s, p99 {:.3} s |",
            self.rate, self.freshness.2, self.freshness.0, self.freshness.1
        );
        println!(
            "| state: {} current versions, {:.1} MiB of JSON | {:.1} MiB resident, {:.0} bytes per version, {:.2}× their JSON |",
            self.versions,
            mib(self.current_json as u64),
            mib(self.state),
            self.state as f64 / self.versions.max(1) as f64,
            self.state as f64 / self.current_json.max(1) as f64,
        );
        let per = |n: u64| n as f64 / self.as_of.moves.max(1) as f64;
        println!(
            "| deals: rows re-emitted per as-of change ({} changes, pipeline) | {:.2} re-evaluating every open deal of the tenant, {:.2} incrementally ({:.2} deals visited) |",
            self.as_of.moves,
            2.0 * per(self.as_of.open_deals),
            2.0 * per(self.as_of.rebanded),
            per(self.as_of.visited),
        );
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// The versions the upsert rule keeps (SPEC §2): greatest `ts` since the
/// last tombstone, ties to the later arrival.
fn current_versions(lines: &[Line]) -> HashMap<(Topic, &str), &Event> {
    let mut order: Vec<&Line> = lines.iter().collect();
    order.sort_by_key(|l| (l.topic, l.seq));
    let mut current: HashMap<(Topic, &str), &Event> = HashMap::new();
    for l in order {
        let key = (l.topic, l.key.as_str());
        match &l.value {
            None => {
                current.remove(&key);
            }
            Some(e) => {
                let newer = current.get(&key).is_none_or(|c| e.ts() >= c.ts());
                if newer {
                    current.insert(key, e);
                }
            }
        }
    }
    current
}

pub(crate) fn phase_kafka(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    phase: &str,
    partitions: i32,
) -> anyhow::Result<KafkaConfig> {
    let mut kafka = KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        group_id: format!("bench-{phase}"),
        ..KafkaConfig::default()
    };
    let name = |t: Topic| format!("{phase}.{}", t.name());
    kafka.topics = TopicNames {
        impressions: name(Topic::Impressions),
        conversations: name(Topic::Conversations),
        messages: name(Topic::Messages),
        payments: name(Topic::Payments),
        ro_updates: name(Topic::RoUpdates),
        deals: name(Topic::Deals),
    };
    kafka.dlq_topic = format!("{phase}.dlq");
    for t in Topic::ALL {
        cluster.create_topic(kafka.topics.get(t), partitions, 1)?;
    }
    cluster.create_topic(&kafka.dlq_topic, 1, 1)?;
    Ok(kafka)
}

pub(crate) fn fresh_database(
    rt: &tokio::runtime::Runtime,
    base: &ClickHouseConfig,
    name: &str,
) -> anyhow::Result<ClickHouseConfig> {
    let cfg = ClickHouseConfig { database: name.into(), ..base.clone() };
    rt.block_on(async {
        let admin = ClickHouseSink::new(ClickHouseConfig { database: "default".into(), ..cfg.clone() }, None);
        admin.client().query(&format!("DROP DATABASE IF EXISTS {name}")).execute().await?;
        migrate(&cfg).await?;
        anyhow::Ok(())
    })?;
    Ok(cfg)
}

/// Produces `msgs` on a thread, at most `window` messages ahead of `progress`
/// (what the consumer under test has read), or at `rate` per second.
pub(crate) fn spawn_producer(
    kafka: &KafkaConfig,
    msgs: &[Record],
    progress: Arc<AtomicU64>,
    window: u64,
    rate: Option<f64>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let kafka = kafka.clone();
    let batch = msgs.to_vec();
    std::thread::spawn(move || {
        let producer = KeyedProducer::new(&kafka)?;
        let start = Instant::now();
        for (i, Record { topic, key, payload }) in batch.iter().enumerate() {
            let i = i as u64;
            while i > progress.load(Ordering::Relaxed).saturating_add(window) {
                producer.poll();
                std::thread::sleep(Duration::from_micros(200));
            }
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(i as f64 / rate);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            producer.send(kafka.topics.get(*topic), key.as_bytes(), payload.as_deref().map(str::as_bytes))?;
            if i.is_multiple_of(1_000) {
                producer.poll();
            }
        }
        producer.flush(Duration::from_secs(60))?;
        Ok(())
    })
}

/// The ceiling: read and decode every message of the phase's topics.
fn consume_and_decode(kafka: &KafkaConfig, total: u64, progress: &AtomicU64) -> anyhow::Result<()> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    let mut topics = HashMap::new();
    for t in Topic::ALL {
        let name = kafka.topics.get(t);
        topics.insert(name.to_owned(), t);
        let md = consumer.fetch_metadata(Some(name), Duration::from_secs(5))?;
        for p in md.topics().iter().flat_map(|t| t.partitions()) {
            tpl.add_partition_offset(name, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let (mut read, mut valid) = (0u64, 0u64);
    while read < total {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            read += 1;
            if let Some(&t) = topics.get(m.topic()) {
                valid += u64::from(decode(t, m.key(), m.payload()).is_ok());
            }
            if read.is_multiple_of(1_000) {
                progress.store(read, Ordering::Relaxed);
            }
        }
    }
    progress.store(u64::MAX, Ordering::Relaxed);
    anyhow::ensure!(valid == total, "{} of {total} messages did not decode", total - valid);
    Ok(())
}

pub(crate) fn spawn_runner(
    rt: &tokio::runtime::Runtime,
    cfg: &Config,
    shared: &Shared,
    workers: usize,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let sink = Arc::new(ClickHouseSink::new(cfg.clickhouse.clone(), Some(shared.metrics.clone())));
    let (cfg, shared, handle) = (cfg.clone(), shared.clone(), rt.handle().clone());
    let cluster = Cluster { workers, ..Cluster::default() };
    std::thread::spawn(move || run_cluster(&cfg, &cluster, shared, sink, handle).map(|_| ()))
}

/// Messages the runner has read (consumed and rejected).
pub(crate) fn read_messages(shared: &Shared) -> u64 {
    let m = &shared.metrics;
    Topic::ALL.iter().map(|t| m.consumed.with_label_values(&[t.name()]).get()).sum()
}

pub(crate) fn join(h: std::thread::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    h.join().map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
}

/// The `q` quantile of a histogram, interpolated within its bucket as
/// Prometheus' `histogram_quantile` does.
fn quantile(h: &prometheus::Histogram, q: f64) -> f64 {
    let m = prometheus::core::Collector::collect(h);
    let Some(hist) = m.first().and_then(|f| f.get_metric().first()).map(|m| m.get_histogram().clone()) else {
        return f64::NAN;
    };
    let total = hist.get_sample_count() as f64;
    let rank = q * total;
    let (mut prev_bound, mut prev_count) = (0.0, 0.0);
    for b in hist.get_bucket() {
        let (bound, count) = (b.upper_bound(), b.cumulative_count() as f64);
        if count >= rank {
            let within = if count > prev_count { (rank - prev_count) / (count - prev_count) } else { 0.0 };
            return prev_bound + (bound - prev_bound) * within;
        }
        (prev_bound, prev_count) = (bound, count);
    }
    prev_bound
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

fn rss_bytes() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn peak_rss_bytes() -> u64 {
    status_kib("VmHWM:") * 1024
}

/// Hands freed heap pages back to the OS, so RSS shows what is live rather
/// than what glibc's allocator keeps cached from earlier phases.
fn trim_heap() {
    extern "C" {
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: glibc's malloc_trim takes no pointers and may be called at
    // any time from any thread.
    unsafe {
        malloc_trim(0);
    }
}

/// Trims the heap and resets the peak-RSS mark (Linux: writing 5 to
/// clear_refs); returns the RSS the phase starts from.
fn reset_peak_rss() -> u64 {
    trim_heap();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    rss_bytes()
}

/// Soak knobs: a steady stream for a long time, RSS sampled as it goes.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub duration: Duration,
    /// Offered events per second.
    pub rate: u64,
    /// Event time that passes per wall-clock second, so days and months of
    /// event time (and so closed periods) go by within the run.
    pub event_secs_per_sec: u64,
    pub sample: Duration,
    pub partitions: i32,
    pub tenants: usize,
    pub seed: u64,
    pub clickhouse: ClickHouseConfig,
    /// Lateness per family: the soak measures memory once periods close.
    pub retention: revpulse_pipelines::config::RetentionConfig,
    /// Stream only these topics (empty: all).
    pub topics: Vec<Topic>,
}

/// `revpulse bench --soak SECS`: streams generated events at a steady rate
/// through the production pipeline (embedded broker, local ClickHouse) and
/// prints RSS, throughput and lag every `sample`. Memory flat once the
/// retention horizon has passed is the goal of lateness/retention (SPEC §7,
/// not yet implemented: without it, state grows with the keys seen).
pub fn soak(opts: &SoakOptions) -> anyhow::Result<()> {
    let rt = crate::start::runtime()?;
    rt.block_on(ensure_clickhouse(&opts.clickhouse))?;
    let cluster = MockCluster::new(1).context("mock cluster")?;
    let mut cfg = Config {
        kafka: phase_kafka(&cluster, "soak", opts.partitions)?,
        clickhouse: fresh_database(&rt, &opts.clickhouse, "revpulse_soak")?,
        ..Config::default()
    };
    cfg.metrics.retention = opts.retention.clone();
    let shared = Shared::default();
    let runner = spawn_runner(&rt, &cfg, &shared, 1);
    let step = (opts.event_secs_per_sec as i64 * 1_000_000) / opts.rate.max(1) as i64;
    let start = crate::generate::GenConfig::default().start;
    let mut generator = Generator::new(GenConfig { seed: opts.seed, tenants: opts.tenants, start, step });
    // Big producer batches: the embedded broker scans its log per batch on
    // every fetch, so many tiny batches would measure the broker, not us.
    let mut producer_cfg = cfg.kafka.clone();
    producer_cfg.properties.insert("linger.ms".into(), "200".into());
    let producer = KeyedProducer::new(&producer_cfg)?;
    println!(
        "soak: {} events/s for {} s, {} s of event time per second, sampling every {} s",
        opts.rate,
        opts.duration.as_secs(),
        opts.event_secs_per_sec,
        opts.sample.as_secs()
    );
    println!("| elapsed s | event time | produced | consumed | RSS MiB |");
    println!("|---:|---|---:|---:|---:|");
    let t0 = Instant::now();
    let mut produced = 0u64;
    let mut next_sample = opts.sample;
    let mut samples: Vec<(f64, u64)> = Vec::new();
    while t0.elapsed() < opts.duration {
        let due = (t0.elapsed().as_secs_f64() * opts.rate as f64) as u64;
        while produced < due {
            let r = generator.next_record();
            if !opts.topics.is_empty() && !opts.topics.contains(&r.topic) {
                continue;
            }
            producer.send(cfg.kafka.topics.get(r.topic), r.key.as_bytes(), r.payload.as_deref().map(str::as_bytes))?;
            produced += 1;
        }
        producer.poll();
        if t0.elapsed() >= next_sample {
            next_sample += opts.sample;
            let rss = rss_bytes();
            samples.push((t0.elapsed().as_secs_f64(), rss));
            println!(
                "| {:.0} | {} | {} | {} | {:.0} |",
                t0.elapsed().as_secs_f64(),
                revpulse_pipelines::time::format_micros(generator.now()),
                produced,
                read_messages(&shared),
                rss as f64 / MIB
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    producer.flush(Duration::from_secs(30))?;
    shared.stop.store(true, Ordering::Relaxed);
    join(runner)?;
    if let (Some(mid), Some(last)) = (samples.get(samples.len() / 2), samples.last()) {
        let per_min = (last.1 as f64 - mid.1 as f64) / MIB / ((last.0 - mid.0) / 60.0).max(1e-9);
        println!("RSS growth over the second half: {per_min:+.1} MiB/min");
    }
    Ok(())
}
