//! Recovery time (issue: exactly-once and fault tolerance): how long a
//! restart takes to rebuild the state from 1M retained events.
//!
//! Produces 1,000,000 generated events to librdkafka's mock cluster (32
//! partitions per topic, so nothing outgrows its retention), then starts the
//! production runner from scratch against a fresh ClickHouse database — what
//! every restart does — and times it until every event is consumed, computed
//! and acknowledged by ClickHouse. For comparison in the same run: the same
//! events through `replay` (dataflow only, no Kafka, no ClickHouse).
//! Run: `cargo bench --bench recovery`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use revpulse::config::Config;
use revpulse::demo::ensure_clickhouse;
use revpulse::generate::{GenConfig, Generator};
use revpulse::replay::{self, Line};
use revpulse::runner::{run_pipeline, Shared};
use revpulse_connectors::clickhouse::{migrate, ClickHouseConfig, ClickHouseSink};
use revpulse_connectors::kafka::KeyedProducer;
use revpulse_pipelines::event::{decode_value, Topic};

const EVENTS: usize = 1_000_000;

fn main() {
    let rt = revpulse::start::runtime().expect("runtime");
    let mut cfg = Config::default();
    let _cluster = revpulse::start::embedded_kafka(&mut cfg.kafka, 32).expect("embedded kafka");
    cfg.clickhouse = ClickHouseConfig { database: "revpulse_bench_recovery".into(), ..ClickHouseConfig::default() };

    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    let mut generator = Generator::new(GenConfig { seed: 3, tenants: 5, ..GenConfig::default() });
    let mut lines = Vec::with_capacity(EVENTS);
    let mut seq = std::collections::BTreeMap::new();
    for i in 0..EVENTS {
        let r = generator.next_record();
        producer
            .send(cfg.kafka.topics.get(r.topic), r.key.as_bytes(), r.payload.as_deref().map(str::as_bytes))
            .expect("send");
        let s = seq.entry(r.topic).or_insert(0u64);
        *s += 1;
        let value = r.payload.as_deref().and_then(|p| decode_value(r.topic, p.as_bytes()).ok());
        lines.push(Line { topic: r.topic, key: r.key, value, seq: *s });
        if i % 10_000 == 0 {
            producer.poll();
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");

    rt.block_on(async {
        ensure_clickhouse(&cfg.clickhouse).await.expect("ClickHouse");
        let admin =
            ClickHouseSink::new(ClickHouseConfig { database: "default".into(), ..cfg.clickhouse.clone() }, None);
        admin.client().query("DROP DATABASE IF EXISTS revpulse_bench_recovery").execute().await.expect("drop");
        migrate(&cfg.clickhouse).await.expect("migrate");
    });

    let shared = Shared::default();
    let sink = Arc::new(ClickHouseSink::new(cfg.clickhouse.clone(), Some(shared.metrics.clone())));
    let started = Instant::now();
    let runner = {
        let (cfg, shared, handle) = (cfg.clone(), shared.clone(), rt.handle().clone());
        std::thread::spawn(move || run_pipeline(&cfg, shared, sink, handle))
    };
    let consumed =
        || Topic::ALL.iter().map(|t| shared.metrics.consumed.with_label_values(&[t.name()]).get()).sum::<u64>();
    while consumed() < EVENTS as u64 {
        std::thread::sleep(Duration::from_millis(20));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let stats = runner.join().expect("runner").expect("runner ok");
    let recovery = started.elapsed();

    let t = Instant::now();
    let state = replay::run(lines, &cfg.metrics, 1, 1_000_000).expect("replay");
    let replay_time = t.elapsed();
    println!(
        "recovery of {EVENTS} events (Kafka → dataflow → ClickHouse, {} epochs): {:.1} s, {:.0} events/s",
        stats.epochs,
        recovery.as_secs_f64(),
        EVENTS as f64 / recovery.as_secs_f64()
    );
    println!(
        "replay of the same events (dataflow only, {} rows): {:.1} s, {:.0} events/s",
        state.len(),
        replay_time.as_secs_f64(),
        EVENTS as f64 / replay_time.as_secs_f64()
    );
    println!("recovery / replay: {:.2}", recovery.as_secs_f64() / replay_time.as_secs_f64());
}
