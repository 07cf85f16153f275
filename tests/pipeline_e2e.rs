//! End to end on real components: events (with corrections, duplicates,
//! tombstones and malformed messages) are produced to librdkafka's mock
//! cluster, the production runner consumes them, and the metric rows read
//! back from a real ClickHouse equal a `replay` of the same events. Rejected
//! messages land in the DLQ with their headers; the stream continues.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use revpulse::config::Config;
use revpulse::generate::{GenConfig, Generator};
use revpulse::replay::{self, Line};
use revpulse_connectors::kafka::KeyedProducer;
use revpulse_pipelines::event::{decode_value, Topic};

#[test]
fn kafka_to_clickhouse_matches_replay_and_dead_letters_bad_input() {
    let rt = revpulse::start::runtime().expect("runtime");
    let ch = rt.block_on(common::fresh_clickhouse("e2e"));

    let mut cfg = Config { clickhouse: ch.clone(), ..Config::default() };
    let cluster = revpulse::start::embedded_kafka(&mut cfg.kafka, 3).expect("mock cluster");
    cfg.kafka.max_batch_messages = 2_000;

    // Produce 20k generated events with the bad ones sprinkled in.
    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    let mut generator = Generator::new(GenConfig { seed: 7, tenants: 3, ..GenConfig::default() });
    let bad = common::malformed();
    let mut lines: Vec<Line> = Vec::new();
    let mut seq: BTreeMap<Topic, u64> = BTreeMap::new();
    let total = 20_000;
    for i in 0..total {
        if i % 2_000 == 1_000 {
            let (topic, key, payload, _) = &bad[(i / 2_000) % bad.len()];
            producer.send(cfg.kafka.topics.get(*topic), key.as_bytes(), Some(payload)).expect("send bad");
        }
        let r = generator.next_record();
        producer
            .send(cfg.kafka.topics.get(r.topic), r.key.as_bytes(), r.payload.as_deref().map(str::as_bytes))
            .expect("send");
        let s = seq.entry(r.topic).or_insert(0);
        *s += 1;
        let value =
            r.payload.as_deref().map(|p| decode_value(r.topic, p.as_bytes()).expect("generated events are valid"));
        lines.push(Line { topic: r.topic, key: r.key.clone(), value, seq: *s });
    }
    // All nine bad kinds, at least once.
    for (topic, key, payload, _) in &bad {
        producer.send(cfg.kafka.topics.get(*topic), key.as_bytes(), Some(payload)).expect("send bad");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let bad_sent = total / 2_000 + bad.len();

    // Run the pipeline until everything is consumed, then stop gracefully.
    let (shared, stats) = common::run_until_seen(&rt, &cfg, total + bad_sent, Duration::from_secs(120), |_| {});
    let m = &shared.metrics;
    assert!(!stats.committed.is_empty(), "offsets were committed after the sink acknowledged");
    assert_eq!(m.sink_in_flight.get(), 0, "every batch handed to the sink was acknowledged and counted once");

    // ClickHouse holds exactly what a replay of the valid events computes.
    let expected = replay::run(lines, &cfg.metrics, 1, 5_000).expect("replay");
    rt.block_on(common::assert_clickhouse_matches(&ch, &expected));

    // Every bad message is in the DLQ with origin and reason headers, and counted.
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for letter in common::dead_letters(&cluster.bootstrap_servers(), &cfg.kafka.dlq_topic, bad_sent) {
        assert!(letter.source_topic.as_deref().is_some_and(|t| t == "impressions" || t == "messages"));
        assert!(letter.source_partition.is_some());
        assert!(letter.source_offset.and_then(|o| o.parse::<i64>().ok()).is_some());
        *reasons.entry(letter.reason.unwrap_or_default()).or_default() += 1;
    }
    assert_eq!(reasons.values().sum::<usize>(), bad_sent, "{reasons:?}");
    for (_, _, _, reason) in &bad {
        assert!(reasons.contains_key(*reason), "no DLQ message with reason {reason}: {reasons:?}");
    }
    let counted: u64 = reasons
        .keys()
        .map(|r| {
            m.rejected.with_label_values(&["impressions", r]).get()
                + m.rejected.with_label_values(&["messages", r]).get()
        })
        .sum();
    assert_eq!(counted as usize, bad_sent);
}
