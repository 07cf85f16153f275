//! Shared helpers of the integration tests: a real ClickHouse (started by
//! `scripts/clickhouse.sh` when none answers) with a fresh database per test.

#![allow(dead_code)]

pub mod schema_registry_fixture;

use std::sync::atomic::{AtomicUsize, Ordering};

use revpulse::demo::ensure_clickhouse;
use revpulse_connectors::clickhouse::{migrate, ClickHouseConfig, ClickHouseSink};
use revpulse_pipelines::row::Table;

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// A migrated, empty database of its own.
pub async fn fresh_clickhouse(name: &str) -> ClickHouseConfig {
    fresh_clickhouse_at(name, std::env::var("REVPULSE_TEST_CLICKHOUSE_URL").ok()).await
}

/// As [`fresh_clickhouse`], on the server at `url` (default: the local one).
pub async fn fresh_clickhouse_at(name: &str, url: Option<String>) -> ClickHouseConfig {
    let mut cfg = ClickHouseConfig::default();
    if let Some(url) = url {
        cfg.url = url;
    }
    if let Err(e) = ensure_clickhouse(&cfg).await {
        panic!(
            "this integration test needs a ClickHouse server at {}: {e:#}. Start one with \
             `scripts/clickhouse.sh start` (or run everything with `scripts/test.sh`), or point \
             REVPULSE_TEST_CLICKHOUSE_URL at one. `cargo test -p revpulse-pipelines` needs none.",
            cfg.url
        );
    }
    cfg.database = format!("rp_test_{name}_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let admin = ClickHouseSink::new(ClickHouseConfig { database: "default".into(), ..cfg.clone() }, None);
    admin
        .client()
        .query(&format!("DROP DATABASE IF EXISTS {}", cfg.database))
        .execute()
        .await
        .expect("drop test database");
    migrate(&cfg).await.expect("migrations apply");
    cfg
}

/// Every current row of every metric table, as `replay --output json` rows.
pub async fn clickhouse_rows(cfg: &ClickHouseConfig) -> Vec<serde_json::Value> {
    let sink = ClickHouseSink::new(cfg.clone(), None);
    let mut out = Vec::new();
    for t in Table::all() {
        out.extend(sink.current_rows(t).await.expect("read current rows"));
    }
    out
}

/// Asserts that ClickHouse holds exactly the rows of `expected` (all tables).
pub async fn assert_clickhouse_matches(cfg: &ClickHouseConfig, expected: &revpulse::replay::State) {
    assert_tables_match(cfg, expected, |_| true).await
}

/// As [`assert_clickhouse_matches`], for the metric tables only (a run
/// with retention also writes retention state, which a recomputation
/// without retention has none of).
pub async fn assert_metric_tables_match(cfg: &ClickHouseConfig, expected: &revpulse::replay::State) {
    assert_tables_match(cfg, expected, |t| !t.is_state()).await
}

async fn assert_tables_match(cfg: &ClickHouseConfig, expected: &revpulse::replay::State, keep: impl Fn(Table) -> bool) {
    let expected: Vec<serde_json::Value> =
        expected.iter().filter(|(k, _)| keep(k.table)).map(|(k, v)| revpulse_pipelines::row::row_json(k, v)).collect();
    let actual: std::collections::BTreeSet<String> = clickhouse_rows(cfg)
        .await
        .iter()
        .filter(|v| v["table"].as_str().and_then(Table::from_name).is_some_and(&keep))
        .map(|v| v.to_string())
        .collect();
    let expected: std::collections::BTreeSet<String> = expected.iter().map(|v| v.to_string()).collect();
    assert!(!expected.is_empty(), "nothing expected");
    let missing: Vec<_> = expected.difference(&actual).take(5).collect();
    let extra: Vec<_> = actual.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ClickHouse differs from the recomputation: {} rows vs {} expected\nmissing: {missing:#?}\nextra: {extra:#?}",
        actual.len(),
        expected.len()
    );
}

/// Malformed messages of every SPEC §2.6 kind, with the reason each must get:
/// (topic, key, payload, reason).
pub fn malformed() -> Vec<(revpulse_pipelines::event::Topic, &'static str, Vec<u8>, &'static str)> {
    use revpulse_pipelines::event::Topic;
    let good = r#"{"tenant_id":"dealer-000","ts":"2026-11-01T12:00:00Z","event_id":"bad-X","channel":"maps","intent_cluster":"x","impressions":10,"share_ai_snippet":0.5,"ctr_baseline":0.1,"ctr_drop_when_ai":0.5,"lead_cr":0.1,"close_rate":0.1,"recoverable_share":0.1,"avg_gross":100}"#;
    vec![
        (Topic::Impressions, "bad-1", b"{not json".to_vec(), "invalid_json"),
        (Topic::Impressions, "bad-1b", good.as_bytes()[..good.len() / 2].to_vec(), "invalid_json"),
        (Topic::Impressions, "bad-2", good.replace(r#""channel":"maps","#, "").into_bytes(), "missing_field"),
        (Topic::Impressions, "bad-3", good.replace("10,", "\"10\",").into_bytes(), "wrong_type"),
        (Topic::Impressions, "bad-4", good.replace("0.5,\"ctr_b", "1.5,\"ctr_b").into_bytes(), "out_of_range"),
        (Topic::Impressions, "bad-4b", good.replace("10,", "123456789012345678901234567890,").into_bytes(), "wrong_type"),
        (Topic::Impressions, "bad-5", good.replace("2026-11-01T12:00:00Z", "yesterday").into_bytes(), "bad_timestamp"),
        (Topic::Impressions, "bad-6", good.replace("\"x\"", &format!("\"{}\"", "x".repeat(2000))).into_bytes(), "string_too_long"),
        (Topic::Impressions, "bad-7", vec![0xff, 0xfe, 0x00], "invalid_utf8"),
        (Topic::Impressions, "bad-8", format!("{good}{}", " ".repeat(1 << 20)).into_bytes(), "payload_too_large"),
        (Topic::Impressions, "bad-9", format!("{}{good}", "[".repeat(5000)).into_bytes(), "wrong_type"),
        (Topic::Messages, "bad-10", br#"{"tenant_id":"t","ts":"2026-11-01T00:00:00Z","message_id":"m","subject_id":"s","direction":"sideways","channel":"sms","status":"sent"}"#.to_vec(), "unknown_enum"),
    ]
}

/// A runtime, a mock Kafka cluster with the five topics (`partitions`
/// each) and the DLQ, and a configuration pointing at them and at a fresh
/// ClickHouse database.
pub fn mock_pipeline(
    name: &str,
    partitions: i32,
) -> (
    tokio::runtime::Runtime,
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    revpulse::config::Config,
) {
    let rt = revpulse::start::runtime().expect("runtime");
    let ch = rt.block_on(fresh_clickhouse(name));
    let mut cfg = revpulse::config::Config { clickhouse: ch, ..Default::default() };
    let cluster = revpulse::start::embedded_kafka(&mut cfg.kafka, partitions).expect("mock cluster");
    cfg.kafka.max_batch_messages = 1_500;
    (rt, cluster, cfg)
}

/// Every message the pipeline has read so far: consumed plus rejected.
pub fn messages_seen(m: &revpulse_connectors::metrics::Metrics) -> usize {
    use revpulse_pipelines::event::{Reason, Topic};
    let consumed: u64 = Topic::ALL.iter().map(|t| m.consumed.with_label_values(&[t.name()]).get()).sum();
    let rejected: u64 = Topic::ALL
        .iter()
        .flat_map(|t| Reason::ALL.iter().map(move |r| (t, r)))
        .map(|(t, r)| m.rejected.with_label_values(&[t.name(), r.as_str()]).get())
        .sum();
    (consumed + rejected) as usize
}

/// Runs the production runner on a thread until it has read `messages`
/// messages (or `within` passes: panic), then stops it gracefully. `during`
/// runs once per wait step, for tests that act while it runs.
pub fn run_until_seen(
    rt: &tokio::runtime::Runtime,
    cfg: &revpulse::config::Config,
    messages: usize,
    within: std::time::Duration,
    during: impl FnMut(&revpulse::runner::Shared),
) -> (revpulse::runner::Shared, revpulse::runner::RunStats) {
    run_cluster_until_seen(rt, cfg, &Default::default(), messages, within, during)
}

/// As [`run_until_seen`], on `cluster`'s workers.
pub fn run_cluster_until_seen(
    rt: &tokio::runtime::Runtime,
    cfg: &revpulse::config::Config,
    cluster: &revpulse::runner::Cluster,
    messages: usize,
    within: std::time::Duration,
    mut during: impl FnMut(&revpulse::runner::Shared),
) -> (revpulse::runner::Shared, revpulse::runner::RunStats) {
    use std::sync::atomic::Ordering;
    let shared = revpulse::runner::Shared::default();
    let sink = std::sync::Arc::new(ClickHouseSink::new(cfg.clickhouse.clone(), Some(shared.metrics.clone())));
    let (handle, runner_shared, runner_cfg) = (rt.handle().clone(), shared.clone(), cfg.clone());
    let cluster = cluster.clone();
    let runner =
        std::thread::spawn(move || revpulse::runner::run_cluster(&runner_cfg, &cluster, runner_shared, sink, handle));
    let deadline = std::time::Instant::now() + within;
    while messages_seen(&shared.metrics) < messages {
        assert!(
            std::time::Instant::now() < deadline,
            "pipeline read only {} of {messages} messages",
            messages_seen(&shared.metrics)
        );
        during(&shared);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    shared.stop.store(true, Ordering::Relaxed);
    let stats = runner.join().expect("runner thread").expect("runner ok");
    assert_eq!(shared.metrics.sink_in_flight.get(), 0, "every sink batch was acknowledged");
    (shared, stats)
}

/// The `revpulse.*` headers of one dead letter (`None`: header missing).
#[derive(Debug)]
pub struct DeadLetter {
    pub reason: Option<String>,
    pub source_topic: Option<String>,
    pub source_partition: Option<String>,
    pub source_offset: Option<String>,
    /// `http` for events posted to the ingest route.
    pub source: Option<String>,
}

/// Dead letters on `topic`, read from the beginning, until `expect` of them
/// arrived or 30 s passed.
pub fn dead_letters(brokers: &str, topic: &str, expect: usize) -> Vec<DeadLetter> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let dlq: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("dlq-check-{}", NEXT_DB.fetch_add(1, Ordering::Relaxed)))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("dlq consumer");
    dlq.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while out.len() < expect && std::time::Instant::now() < deadline {
        if let Some(Ok(msg)) = dlq.poll(std::time::Duration::from_millis(200)) {
            let header = |name: &str| {
                msg.headers()
                    .and_then(|h| h.iter().find(|h| h.key == name).and_then(|h| h.value))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            out.push(DeadLetter {
                reason: header("revpulse.reason"),
                source_topic: header("revpulse.source.topic"),
                source_partition: header("revpulse.source.partition"),
                source_offset: header("revpulse.source.offset"),
                source: header("revpulse.source"),
            });
        }
    }
    out
}

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Sends SIGTERM to `child`.
pub fn send_sigterm(child: &std::process::Child) {
    let status =
        std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill -TERM");
    assert!(status.success());
}

/// Waits for `child` to exit, at most `within`.
pub fn wait_exit(child: &mut std::process::Child, within: std::time::Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(started.elapsed() < within, "no exit within {within:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Waits until the group has committed every input partition up to its
/// high watermark (everything read and acknowledged by ClickHouse).
pub fn wait_committed(kafka: &revpulse_connectors::kafka::KafkaConfig, deadline: std::time::Duration) {
    use rdkafka::consumer::Consumer as _;
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        .create()
        .expect("consumer");
    let started = std::time::Instant::now();
    loop {
        let mut tpl = rdkafka::TopicPartitionList::new();
        let mut highs = Vec::new();
        for t in revpulse_pipelines::event::Topic::ALL {
            let name = kafka.topics.get(t);
            let md = consumer.fetch_metadata(Some(name), std::time::Duration::from_secs(5)).expect("metadata");
            for p in md.topics().iter().flat_map(|t| t.partitions()) {
                let (_, high) =
                    consumer.fetch_watermarks(name, p.id(), std::time::Duration::from_secs(5)).expect("watermarks");
                tpl.add_partition(name, p.id());
                highs.push(((name.to_owned(), p.id()), high));
            }
        }
        let committed = consumer.committed_offsets(tpl, std::time::Duration::from_secs(5)).expect("committed");
        let behind: Vec<_> = highs
            .iter()
            .filter(|((t, p), high)| {
                let c = committed.find_partition(t, *p).map(|e| e.offset());
                *high > 0 && c != Some(rdkafka::Offset::Offset(*high))
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(started.elapsed() < deadline, "offsets not committed in time: {behind:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Runs the production runner on `cluster`'s workers until the group has
/// committed everything the topics hold, then stops it gracefully. What a
/// test of restarts waits for when a restart need not re-read anything
/// (checkpoints).
pub fn run_until_committed(
    rt: &tokio::runtime::Runtime,
    cfg: &revpulse::config::Config,
    cluster: &revpulse::runner::Cluster,
) -> revpulse::runner::Shared {
    let shared = revpulse::runner::Shared::default();
    let sink = std::sync::Arc::new(ClickHouseSink::new(cfg.clickhouse.clone(), Some(shared.metrics.clone())));
    let (handle, runner_shared, runner_cfg, cluster) =
        (rt.handle().clone(), shared.clone(), cfg.clone(), cluster.clone());
    let runner =
        std::thread::spawn(move || revpulse::runner::run_cluster(&runner_cfg, &cluster, runner_shared, sink, handle));
    wait_committed(&cfg.kafka, std::time::Duration::from_secs(240));
    shared.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    runner.join().expect("runner thread").expect("the pipeline stops cleanly");
    shared
}

/// A fresh state directory for checkpoints of test `name`.
pub fn state_dir(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("revpulse-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.display().to_string()
}
