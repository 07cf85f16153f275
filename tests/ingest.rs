//! HTTP ingest (SPEC §5.1) on real components: the API's acknowledged
//! producer publishes to librdkafka's mock cluster (the real protocol), the
//! production runner consumes from it, and ClickHouse is real. Covers
//! validation with per-event answers and dead letters, signatures, scopes,
//! limits, Kafka down, and that events posted over HTTP give the same
//! tables as the same events produced to Kafka.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use revpulse::config::Config;
use revpulse::generate::{GenConfig, Generator};
use revpulse::replay::{self, Line};
use revpulse::runner::Shared;
use revpulse_api::ingest::{sign, MAX_BODY_BYTES, MAX_EVENTS};
use revpulse_api::{ApiKey, Scope};
use revpulse_connectors::kafka::KeyedProducer;
use revpulse_pipelines::event::{decode_value, Topic};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// POSTs `body` to `path` over HTTP/1.1; returns the status and JSON body.
async fn post(addr: SocketAddr, path: &str, key: Option<&str>, extra: &[(&str, String)], body: &[u8]) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut head =
        format!("POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if let Some(k) = key {
        head.push_str(&format!("Authorization: Bearer {k}\r\n"));
    }
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let (mut rd, mut wr) = s.split();
    let body = body.to_vec();
    let write = async move {
        // The server may answer (413) before it read everything.
        let _ = wr.write_all(head.as_bytes()).await;
        let _ = wr.write_all(&body).await;
    };
    let mut buf = Vec::new();
    let read = rd.read_to_end(&mut buf);
    let (_, read) = tokio::join!(write, read);
    read.expect("read");
    let text = String::from_utf8_lossy(&buf);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

fn ndjson() -> (&'static str, String) {
    ("Content-Type", "application/x-ndjson".to_owned())
}

/// Starts the query API for `cfg` (ingest publishing to its Kafka).
fn start_api(rt: &tokio::runtime::Runtime, cfg: &mut Config) -> (SocketAddr, Shared) {
    cfg.api.listen = "127.0.0.1:0".into();
    let shared = Shared::default();
    let ch = revpulse_connectors::clickhouse::ClickHouseSink::new(cfg.clickhouse.clone(), None).client().clone();
    let api = revpulse::serve::start_api(rt, cfg, ch, &shared).expect("api");
    (api.addr, shared)
}

fn impression(id: &str, tenant: &str) -> String {
    format!(
        r#"{{"tenant_id":"{tenant}","ts":"2026-11-01T12:00:00Z","event_id":"{id}","channel":"bing","intent_cluster":"x","impressions":10,"share_ai_snippet":0.5,"ctr_baseline":0.1,"ctr_drop_when_ai":0.2,"lead_cr":0.1,"close_rate":0.2,"recoverable_share":0.3,"avg_gross":100}}"#
    )
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

#[test]
fn ingest_validates_signs_scopes_limits_and_dead_letters() {
    let (rt, cluster, mut cfg) = common::mock_pipeline("ingest_rules", 1);
    cfg.api.ingest_ack_timeout_ms = 1_500;
    let mut signed = ApiKey::clear("signed", "*").with_scopes(&[Scope::Ingest]);
    signed.signing_secret = Some("whsec_test".into());
    cfg.api.keys = vec![
        ApiKey::clear("all", "*").with_scopes(&[Scope::Read, Scope::Ingest]),
        ApiKey::clear("d0", "dealer-000").with_scopes(&[Scope::Ingest]),
        ApiKey::clear("reader", "*"),
        signed,
    ];
    let (addr, api) = start_api(&rt, &mut cfg);
    let path = "/v1/ingest/impressions";

    // A batch of valid events with every §2.6 reason in between: the valid
    // ones are accepted, each bad one answered by index and dead-lettered.
    let bad = common::malformed();
    let mut body = Vec::new();
    let mut expected: Vec<(usize, &str)> = Vec::new();
    let mut index = 0;
    for (i, (topic, _, payload, reason)) in bad.iter().enumerate().filter(|(_, b)| b.0 == Topic::Impressions) {
        body.extend_from_slice(impression(&format!("ok-{i}"), "dealer-000").as_bytes());
        body.push(b'\n');
        if *reason == "payload_too_large" {
            // Over 1 MiB inside the event: NDJSON lines are trimmed.
            body.extend_from_slice(
                impression("big", "dealer-000").replacen('{', &format!("{{{}", " ".repeat(1 << 20)), 1).as_bytes(),
            );
        } else {
            body.extend_from_slice(payload);
        }
        body.push(b'\n');
        assert_eq!(*topic, Topic::Impressions);
        expected.push((index + 1, reason));
        index += 2;
    }
    let (st, answer) = rt.block_on(post(addr, path, Some("all"), &[ndjson()], &body));
    assert_eq!(st, 200, "{answer}");
    assert_eq!(answer["accepted"], expected.len(), "{answer}");
    let got: Vec<(usize, String)> = answer["rejected"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| (r["index"].as_u64().unwrap_or(0) as usize, r["reason"].as_str().unwrap_or("").to_owned()))
        .collect();
    let want: Vec<(usize, String)> = expected.iter().map(|(i, r)| (*i, (*r).to_owned())).collect();
    assert_eq!(got, want);
    assert!(answer["rejected"][0]["detail"].as_str().is_some_and(|d| !d.is_empty()));
    // The other topics' reasons (an unknown enum value of `messages`).
    for (topic, _, payload, reason) in bad.iter().filter(|b| b.0 != Topic::Impressions) {
        let route = format!("/v1/ingest/{}", topic.name());
        let (st, answer) = rt.block_on(post(addr, &route, Some("all"), &[ndjson()], payload));
        assert_eq!((st, &answer["rejected"][0]["reason"]), (200, &Value::from(*reason)), "{answer}");
        expected.push((0, reason));
    }
    let letters = common::dead_letters(&cluster.bootstrap_servers(), &cfg.kafka.dlq_topic, expected.len());
    let reasons: BTreeSet<String> = letters.iter().filter_map(|l| l.reason.clone()).collect();
    assert_eq!(reasons, expected.iter().map(|(_, r)| (*r).to_owned()).collect::<BTreeSet<_>>());
    assert!(reasons.contains("unknown_enum") && reasons.len() >= 9, "{reasons:?}");
    assert!(letters.iter().all(|l| l.source.as_deref() == Some("http")
        && l.source_topic.as_deref().is_some_and(|t| t == "impressions" || t == "messages")
        && l.source_offset.as_deref() == Some("-1")));
    // A JSON array and a single object are events too; a tombstone with a `*` key.
    let array = format!("[{}, {}]", impression("arr-1", "dealer-001"), impression("arr-2", "dealer-001"));
    let (st, answer) = rt.block_on(post(addr, path, Some("all"), &[], array.as_bytes()));
    assert_eq!((st, &answer["accepted"]), (200, &Value::from(2)), "{answer}");
    let (st, answer) = rt.block_on(post(addr, path, Some("all"), &[], br#"{"_key":"arr-2","_tombstone":true}"#));
    assert_eq!((st, &answer["accepted"]), (200, &Value::from(1)), "{answer}");

    // Signatures: missing, wrong and stale are 401; a fresh one is accepted.
    let one = impression("signed-1", "dealer-000");
    let good = sign("whsec_test", now(), one.as_bytes());
    for (header, why) in [
        (None, "missing"),
        (Some(sign("other", now(), one.as_bytes())), "wrong"),
        (Some(sign("whsec_test", now() - 301, one.as_bytes())), "stale"),
        (Some(sign("whsec_test", now(), b"another body")), "another body"),
    ] {
        let extra: Vec<(&str, String)> = header.into_iter().map(|h| ("Revpulse-Signature", h)).collect();
        let (st, answer) = rt.block_on(post(addr, path, Some("signed"), &extra, one.as_bytes()));
        assert_eq!(st, 401, "{why}: {answer}");
        assert!(answer["error"].is_string());
    }
    let (st, answer) = rt.block_on(post(addr, path, Some("signed"), &[("Revpulse-Signature", good)], one.as_bytes()));
    assert_eq!((st, &answer["accepted"]), (200, &Value::from(1)), "{answer}");

    // Keys: unknown 401; no ingest scope 403; a tenant key publishing
    // another tenant's event or a tombstone is refused whole.
    let mixed = format!("{}\n{}\n", impression("d0-1", "dealer-000"), impression("d1-1", "dealer-001"));
    for (key, body, want) in [
        (None, one.clone(), 401),
        (Some("nope"), one.clone(), 401),
        (Some("reader"), one.clone(), 403),
        (Some("d0"), mixed.clone(), 403),
        (Some("d0"), r#"{"_key":"ok-0","_tombstone":true}"#.to_owned(), 403),
    ] {
        let (st, answer) = rt.block_on(post(addr, path, key, &[ndjson()], body.as_bytes()));
        assert_eq!(st, want, "{key:?}: {answer}");
    }
    let (st, answer) =
        rt.block_on(post(addr, path, Some("d0"), &[ndjson()], impression("d0-2", "dealer-000").as_bytes()));
    assert_eq!((st, &answer["accepted"]), (200, &Value::from(1)), "{answer}");

    // Limits and malformed requests.
    let oversized = vec![b' '; MAX_BODY_BYTES + 1];
    assert_eq!(rt.block_on(post(addr, path, Some("all"), &[ndjson()], &oversized)).0, 413);
    let too_many = "{}\n".repeat(MAX_EVENTS + 1);
    assert_eq!(rt.block_on(post(addr, path, Some("all"), &[ndjson()], too_many.as_bytes())).0, 413);
    assert_eq!(rt.block_on(post(addr, path, Some("all"), &[], b"")).0, 400);
    assert_eq!(rt.block_on(post(addr, path, Some("all"), &[], b"[{\"a\":1},")).0, 400);
    assert_eq!(rt.block_on(post(addr, "/v1/ingest/nope", Some("all"), &[], one.as_bytes())).0, 404);

    // Everything accepted so far reaches the pipeline: 2 × 9 valid + 2 + 1 tombstone + 1 + 1.
    let accepted = api.metrics.ingest_events.with_label_values(&["impressions", "accepted"]).get() as usize;
    let valid = bad.iter().filter(|b| b.0 == Topic::Impressions).count();
    assert_eq!(accepted, valid + 5);
    let (shared, _) = common::run_until_seen(&rt, &cfg, accepted, Duration::from_secs(60), |_| {});
    assert_eq!(shared.metrics.consumed.with_label_values(&["impressions"]).get() as usize, accepted);

    // Kafka down: 503, and nothing reported accepted.
    cluster.broker_down(1).expect("broker down");
    let (st, answer) =
        rt.block_on(post(addr, path, Some("all"), &[ndjson()], impression("down-1", "dealer-000").as_bytes()));
    assert_eq!(st, 503, "{answer}");
    assert!(answer["error"].as_str().is_some_and(|e| e.contains("retry")), "{answer}");
    assert_eq!(api.metrics.ingest_events.with_label_values(&["impressions", "accepted"]).get() as usize, accepted);
    assert_eq!(api.metrics.ingest_events.with_label_values(&["impressions", "failed"]).get(), 1);
    cluster.broker_up(1).expect("broker up");
    api.stop.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The generated records of `n` events, and their replay lines.
fn generated(n: usize) -> (Vec<revpulse::generate::Record>, Vec<Line>) {
    let mut generator = Generator::new(GenConfig { seed: 11, tenants: 2, ..GenConfig::default() });
    let mut seq: BTreeMap<Topic, u64> = BTreeMap::new();
    let records: Vec<_> = (0..n).map(|_| generator.next_record()).collect();
    let lines = records
        .iter()
        .map(|r| {
            let s = seq.entry(r.topic).or_insert(0);
            *s += 1;
            let value = r.payload.as_deref().map(|p| decode_value(r.topic, p.as_bytes()).expect("valid"));
            Line { topic: r.topic, key: r.key.clone(), value, seq: *s }
        })
        .collect();
    (records, lines)
}

#[test]
fn events_over_http_give_the_tables_of_events_over_kafka() {
    let n = 6_000;
    let (records, lines) = generated(n);

    // Over HTTP: per topic, in order, NDJSON requests of up to 700 events.
    let (rt, _http_cluster, mut http) = common::mock_pipeline("ingest_http", 2);
    http.api.keys = vec![ApiKey::clear("k", "*").with_scopes(&[Scope::Ingest])];
    let (addr, api) = start_api(&rt, &mut http);
    for topic in Topic::ALL {
        let events: Vec<String> = records
            .iter()
            .filter(|r| r.topic == topic)
            .map(|r| match &r.payload {
                Some(p) => p.clone(),
                None => serde_json::json!({"_key": r.key.as_str(), "_tombstone": true}).to_string(),
            })
            .collect();
        for chunk in events.chunks(700) {
            let body = chunk.join("\n");
            let (st, answer) = rt.block_on(post(
                addr,
                &format!("/v1/ingest/{}", topic.name()),
                Some("k"),
                &[ndjson()],
                body.as_bytes(),
            ));
            assert_eq!((st, &answer["accepted"]), (200, &Value::from(chunk.len())), "{answer}");
        }
    }
    api.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    common::run_until_seen(&rt, &http, n, Duration::from_secs(120), |_| {});

    // Over Kafka: the same records, produced as `revpulse produce` would.
    let (rt2, _kafka_cluster, kafka) = common::mock_pipeline("ingest_kafka", 2);
    let producer = KeyedProducer::new(&kafka.kafka).expect("producer");
    for r in &records {
        producer
            .send(kafka.kafka.topics.get(r.topic), r.key.as_bytes(), r.payload.as_deref().map(str::as_bytes))
            .expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    common::run_until_seen(&rt2, &kafka, n, Duration::from_secs(120), |_| {});

    let over_http: BTreeSet<String> =
        rt.block_on(common::clickhouse_rows(&http.clickhouse)).iter().map(Value::to_string).collect();
    let over_kafka: BTreeSet<String> =
        rt2.block_on(common::clickhouse_rows(&kafka.clickhouse)).iter().map(Value::to_string).collect();
    assert!(over_http.len() > 1_000, "{} rows", over_http.len());
    let missing: Vec<_> = over_kafka.difference(&over_http).take(3).collect();
    let extra: Vec<_> = over_http.difference(&over_kafka).take(3).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, extra {extra:?}");
    // And both are what a replay computes.
    let expected = replay::run(lines, &http.metrics, 1, 5_000).expect("replay");
    rt.block_on(common::assert_clickhouse_matches(&http.clickhouse, &expected));
}

/// An Avro topic: ingested events are encoded in the Confluent wire format
/// with the topic's registered schema, and the pipeline decodes them to the
/// same tables as a replay of the JSON.
#[test]
fn events_posted_to_an_avro_topic_are_encoded_for_it() {
    use revpulse_connectors::schema_registry::{SchemaRegistryConfig, ValueFormat, ValueFormats};
    let (rt, _cluster, mut cfg) = common::mock_pipeline("ingest_avro", 2);
    let registry = rt.block_on(common::schema_registry_fixture::RegistryFixture::start());
    cfg.kafka.formats = ValueFormats { payments: ValueFormat::Avro, ..ValueFormats::default() };
    cfg.kafka.schema_registry = Some(SchemaRegistryConfig { url: registry.url.clone(), ..Default::default() });
    cfg.api.keys = vec![ApiKey::clear("k", "*").with_scopes(&[Scope::Ingest])];
    let (addr, api) = start_api(&rt, &mut cfg);
    let events: Vec<String> = (0..300)
        .map(|i| {
            format!(
                r#"{{"tenant_id":"t{}","ts":"2026-11-{:02}T10:00:00Z","payment_id":"p{}","subject_id":"s{}","status":"{}","amount_cents":{},"currency":"USD"}}"#,
                i % 2,
                1 + i % 20,
                i % 250,
                i % 40,
                if i % 7 == 0 { "failed" } else { "succeeded" },
                1_000 + i * 13
            )
        })
        .collect();
    let body = format!("{}\n{{\"_key\":\"p3\",\"_tombstone\":true}}\n", events.join("\n"));
    let (st, answer) = rt.block_on(post(addr, "/v1/ingest/payments", Some("k"), &[ndjson()], body.as_bytes()));
    assert_eq!((st, &answer["accepted"]), (200, &Value::from(301)), "{answer}");
    api.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (shared, _) = common::run_until_seen(&rt, &cfg, 301, Duration::from_secs(60), |_| {});
    assert_eq!(shared.metrics.consumed.with_label_values(&["payments"]).get(), 301, "decoded as Avro, none rejected");
    let mut lines: Vec<Line> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let value = decode_value(Topic::Payments, e.as_bytes()).expect("valid");
            Line { topic: Topic::Payments, key: value.upsert_key().into(), value: Some(value), seq: i as u64 + 1 }
        })
        .collect();
    lines.push(Line { topic: Topic::Payments, key: "p3".into(), value: None, seq: 301 });
    let expected = replay::run(lines, &cfg.metrics, 1, 5_000).expect("replay");
    rt.block_on(common::assert_clickhouse_matches(&cfg.clickhouse, &expected));
}
