//! Avro in the Confluent wire format, end to end: `revpulse produce --format
//! avro` registers each topic's `schemas/avro` schema and encodes a
//! generated data set; the pipeline decodes it against the registry and
//! ClickHouse ends up equal to a `replay` of the same JSON. Unknown schema
//! ids, wrong framing, undecodable bytes and records that fail validation
//! are dead-lettered; a registry outage pauses only the Avro partitions and
//! loses nothing, while a JSON topic keeps flowing.
//!
//! The registry is `common::schema_registry_fixture`, an in-memory test
//! fixture of the Confluent REST endpoints (no JVM registry can run here).

mod common;

use std::process::Command;
use std::time::Duration;

use revpulse::config::Config;
use revpulse::generate::{write_dir, GenConfig};
use revpulse::replay;
use revpulse_connectors::kafka::KeyedProducer;
use revpulse_connectors::schema_registry::{avro_schema, SchemaRegistryConfig, ValueFormat, ValueFormats};
use revpulse_pipelines::event::Topic;

#[test]
fn avro_topics_match_replay_and_bad_frames_are_dead_lettered() {
    let rt = revpulse::start::runtime().expect("runtime");
    let ch = rt.block_on(common::fresh_clickhouse("avro"));
    let registry = rt.block_on(common::schema_registry_fixture::RegistryFixture::start());

    let mut cfg = Config { clickhouse: ch.clone(), ..Config::default() };
    let cluster = revpulse::start::embedded_kafka(&mut cfg.kafka, 2).expect("embedded kafka");
    cfg.kafka.max_batch_messages = 1_000;
    let avro = ValueFormat::Avro;
    // Impressions stay JSON: they must flow while the registry is down.
    cfg.kafka.formats = ValueFormats {
        impressions: ValueFormat::Json,
        conversations: avro,
        messages: avro,
        payments: avro,
        ro_updates: avro,
        deals: avro,
    };
    cfg.kafka.schema_registry = Some(SchemaRegistryConfig { url: registry.url.clone(), ..Default::default() });

    let dir = std::env::temp_dir().join(format!("revpulse-avro-{}", std::process::id()));
    let counts = write_dir(&dir, GenConfig { seed: 11, tenants: 2, ..GenConfig::default() }, 6_000).expect("generate");
    for t in Topic::ALL {
        let status = Command::new(env!("CARGO_BIN_EXE_revpulse"))
            .args(["produce", "--topic", t.name(), "--registry", &registry.url])
            .args(["--format", if t == Topic::Impressions { "json" } else { "avro" }])
            .args(["--brokers", &cluster.bootstrap_servers()])
            .arg(dir.join(format!("{}.jsonl", t.name())))
            .status()
            .expect("revpulse produce");
        assert!(status.success(), "produce --format avro {}", t.name());
    }

    // Bad messages: each must land in the DLQ with its reason.
    let payments_id = registry.register("payments-value", avro_schema(Topic::Payments));
    let framed = |id: u32, body: &[u8]| [&[0u8][..], &id.to_be_bytes(), body].concat();
    let bad: Vec<(Topic, Vec<u8>, &str)> = vec![
        (Topic::Payments, b"{\"json\": \"on an avro topic\"}".to_vec(), "bad_format"),
        (Topic::Payments, framed(9_999, b"\x02a"), "unknown_schema"),
        (Topic::Payments, framed(payments_id, b"\xff\xff\xff"), "bad_format"),
        (Topic::Payments, vec![0, 0], "bad_format"),
    ];
    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    for (t, payload, _) in &bad {
        producer.send(cfg.kafka.topics.get(*t), b"bad", Some(payload)).expect("send bad");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");

    // The registry is down when the pipeline starts: nothing may be
    // dead-lettered for it, and everything arrives once it is back.
    registry.set_available(false);
    let total: usize = counts.values().sum::<usize>() + bad.len();
    let mut restored = false;
    let (shared, _) = common::run_until_seen(&rt, &cfg, total, Duration::from_secs(120), |shared| {
        // While the Avro partitions wait for the registry (each retried at
        // least once), the JSON topic is read to its end; no Avro message
        // is decoded, and only the two whose framing is wrong (no registry
        // needed to tell) are dead-lettered.
        let consumed = |t: Topic| shared.metrics.consumed.with_label_values(&[t.name()]).get() as usize;
        if !restored
            && shared.metrics.registry_errors.get() >= 2 * 4 * 2
            && consumed(Topic::Impressions) == counts[&Topic::Impressions]
        {
            let avro_consumed: usize = Topic::ALL.into_iter().filter(|t| *t != Topic::Impressions).map(consumed).sum();
            assert_eq!(avro_consumed, 0, "no Avro message decoded while the registry is down");
            assert!(
                common::messages_seen(&shared.metrics) <= counts[&Topic::Impressions] + 2,
                "only the two unframed messages were rejected"
            );
            registry.set_available(true);
            restored = true;
        }
    });
    assert!(shared.metrics.registry_errors.get() > 0);

    let (lines, _) = replay::read_dir(&dir).expect("read");
    let expected = replay::run(lines, &cfg.metrics, 1, 5_000).expect("replay");
    rt.block_on(common::assert_clickhouse_matches(&ch, &expected));

    let letters = common::dead_letters(&cluster.bootstrap_servers(), &cfg.kafka.dlq_topic, bad.len());
    let mut got: Vec<&str> = letters.iter().map(|l| l.reason.as_deref().unwrap_or_default()).collect();
    got.sort();
    let mut want: Vec<&str> = bad.iter().map(|(_, _, r)| *r).collect();
    want.sort();
    assert_eq!(got, want, "{letters:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A decoded Avro record goes through the JSON validation: the same
/// event, spelled in Avro, is accepted or rejected with the same reason.
#[test]
fn decoded_records_are_validated_like_json() {
    use revpulse_connectors::schema_registry::{AvroCodec, AvroError};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let registry = rt.block_on(common::schema_registry_fixture::RegistryFixture::start());
    let mut codec =
        AvroCodec::new(&SchemaRegistryConfig { url: registry.url.clone(), ..Default::default() }, rt.handle().clone())
            .expect("codec");
    let good = serde_json::json!({
        "tenant_id": "t1", "ts": "2026-01-01T00:00:00Z", "payment_id": "p1", "subject_id": "s1",
        "status": "succeeded", "amount_cents": 1234, "currency": "USD"
    });
    let bytes = codec.encode(Topic::Payments, "payments", &good).expect("encode");
    let decoded = codec.decode(Topic::Payments, Some(b"p1"), Some(&bytes)).expect("decode");
    let json = revpulse_pipelines::event::decode_value(Topic::Payments, good.to_string().as_bytes()).expect("json");
    assert_eq!(decoded.value, Some(json));
    assert_eq!(decoded.key, "p1");

    for (field, value) in [
        ("tenant_id", serde_json::json!("")),
        ("currency", serde_json::json!("usd")),
        ("ts", serde_json::json!("yesterday")),
        ("subject_id", serde_json::json!("x".repeat(1_025))),
    ] {
        let mut bad = good.clone();
        bad[field] = value.clone();
        let want = revpulse_pipelines::event::decode_value(Topic::Payments, bad.to_string().as_bytes())
            .expect_err("invalid JSON event");
        let bytes = codec.encode(Topic::Payments, "payments", &bad).expect("encodes: Avro has no such rule");
        match codec.decode(Topic::Payments, None, Some(&bytes)) {
            Err(AvroError::Rejected(r)) => assert_eq!(r.reason, want.reason, "{field}"),
            other => panic!("{field}: {other:?}"),
        }
    }
    // Tombstones are format-independent.
    let t = codec.decode(Topic::Payments, Some(b"p1"), None).expect("tombstone");
    assert_eq!((t.key.as_str(), t.value), ("p1", None));
}
