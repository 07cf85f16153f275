//! Retention end to end (SPEC §7, docs/retention.md): rows of
//! closed months stay in ClickHouse as they were while their state is
//! released; an impression of a closed month is dead-lettered as
//! `too_late`, once, even though every restart re-reads it; a tombstone for
//! a closed month's record changes nothing; the open month stays exact.

mod common;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use revpulse::replay::{self, Line};
use revpulse_connectors::kafka::KeyedProducer;
use revpulse_pipelines::event::{decode_value, Topic};
use revpulse_pipelines::row::Table;

fn impression(id: &str, ts: &str, impressions: u32) -> String {
    format!(
        r#"{{"tenant_id":"t1","ts":"{ts}","event_id":"{id}","channel":"c{}","intent_cluster":"i{}","impressions":{impressions},"share_ai_snippet":0.4,"ctr_baseline":0.05,"ctr_drop_when_ai":0.5,"lead_cr":0.1,"close_rate":0.2,"recoverable_share":0.3,"avg_gross":2500}}"#,
        impressions % 3,
        impressions % 4
    )
}

/// Sends `(key, payload)` to impressions and records the replay line.
fn send(producer: &KeyedProducer, topic: &str, lines: &mut Vec<Line>, key: &str, payload: Option<String>) {
    producer.send(topic, key.as_bytes(), payload.as_deref().map(str::as_bytes)).expect("send");
    let value = payload.map(|p| decode_value(Topic::Impressions, p.as_bytes()).expect("valid"));
    let seq = lines.len() as u64 + 1;
    lines.push(Line { topic: Topic::Impressions, key: key.into(), value, seq });
}

fn dlq_messages(brokers: &str, topic: &str) -> i64 {
    let c: BaseConsumer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().expect("consumer");
    let (low, high) = c.fetch_watermarks(topic, 0, Duration::from_secs(5)).expect("watermarks");
    high - low
}

fn rar_rows(rows: &[serde_json::Value]) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .filter(|r| r["table"].as_str().is_some_and(|t| t.starts_with("rar_")))
        .map(|r| r.to_string())
        .collect();
    out.sort();
    out
}

/// A pipeline with RaR lateness 10 days and three impression partitions,
/// fed January to June 2026 in order: by the end, January to May are
/// closed (their end plus 10 days is before the last event), June is open.
struct HalfYear {
    rt: tokio::runtime::Runtime,
    _cluster: rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    cfg: revpulse::config::Config,
    topic: String,
    producer: KeyedProducer,
    lines: Vec<Line>,
}

fn half_year(name: &str) -> HalfYear {
    let (rt, cluster, mut cfg) = common::mock_pipeline(name, 3);
    cfg.metrics.retention.rar_lateness_secs = Some(10 * 86_400);
    let topic = cfg.kafka.topics.get(Topic::Impressions).to_owned();
    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    let mut lines = Vec::new();
    for i in 0..180u32 {
        let ts = format!("2026-{:02}-{:02}T12:00:00Z", 1 + i / 30, 1 + i % 28);
        send(&producer, &topic, &mut lines, &format!("imp-{i}"), Some(impression(&format!("imp-{i}"), &ts, 100 + i)));
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    HalfYear { rt, _cluster: cluster, cfg, topic, producer, lines }
}

#[test]
fn closed_months_stay_final_and_late_events_are_dead_lettered_once() {
    let HalfYear { rt, _cluster, cfg, topic, producer, mut lines } = half_year("retention");
    let (shared, _) = common::run_until_seen(&rt, &cfg, lines.len(), Duration::from_secs(60), |_| {});
    // In order, nothing is too late: ClickHouse equals the exact result.
    let exact =
        replay::run(lines.clone(), &revpulse_pipelines::config::MetricsConfig::default(), 1, 10_000).expect("replay");
    rt.block_on(common::assert_clickhouse_matches(&cfg.clickhouse, &exact));
    assert!(shared.metrics.watermark.get() > 0, "the watermark is committed and exported");
    let before = rar_rows(&rt.block_on(common::clickhouse_rows(&cfg.clickhouse)));

    // A late impression of February, a tombstone of a January record (its
    // month is closed: no effect), and one more June impression.
    send(&producer, &topic, &mut lines, "late-1", Some(impression("late-1", "2026-02-10T00:00:00Z", 5_000)));
    producer.send(&topic, b"imp-0", None).expect("tombstone");
    send(&producer, &topic, &mut lines, "imp-june", Some(impression("imp-june", "2026-06-20T00:00:00Z", 7)));
    producer.flush(Duration::from_secs(10)).expect("flush");

    // A restart re-reads everything: the committed watermark keeps January
    // to May closed from the first epoch, and the late impression is
    // dead-lettered once (not again by the restart after it).
    for (run, expect) in [(2, 1), (3, 0)] {
        let (shared, _) = common::run_until_seen(&rt, &cfg, lines.len() + 1, Duration::from_secs(60), |_| {});
        let too_late = shared.metrics.rejected.with_label_values(&["impressions", "too_late"]).get();
        assert_eq!(too_late, expect, "run {run}: the late impression is dead-lettered by the run that first reads it");
    }
    assert_eq!(dlq_messages(&cfg.kafka.brokers, &cfg.kafka.dlq_topic), 1, "one dead letter, not one per restart");
    let letters = common::dead_letters(&cfg.kafka.brokers, &cfg.kafka.dlq_topic, 1);
    assert_eq!(letters[0].reason.as_deref(), Some("too_late"));

    let after = rar_rows(&rt.block_on(common::clickhouse_rows(&cfg.clickhouse)));
    let closed = |rows: &[String]| rows.iter().filter(|r| !r.contains("2026-06-01")).cloned().collect::<Vec<_>>();
    assert_eq!(
        closed(&after),
        closed(&before),
        "closed months are final: the late event and the tombstone changed nothing"
    );
    // The open month is exact: every June impression, the new one included.
    lines.retain(|l| l.key.as_str() != "late-1");
    let exact = replay::run(lines, &revpulse_pipelines::config::MetricsConfig::default(), 1, 10_000).expect("replay");
    let june: Vec<String> = {
        let mut v: Vec<String> = exact
            .iter()
            .filter(|(k, _)| matches!(k.table, Table::RarMonthly | Table::RarByChannel | Table::RarByIntent))
            .map(|(k, v)| revpulse_pipelines::row::row_json(k, v).to_string())
            .filter(|r| r.contains("2026-06-01"))
            .collect();
        v.sort();
        v
    };
    let june_actual: Vec<String> = after.iter().filter(|r| r.contains("2026-06-01")).cloned().collect();
    assert_eq!(june_actual, june, "the open month is exact");
}

/// A restart replays retained input from the beginning; a newer event read
/// early from one partition must not close a period whose older events
/// another partition has yet to replay (the watermark stays at the
/// committed one until the replay is complete).
#[test]
fn a_restart_does_not_close_periods_before_their_replay_is_complete() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let (rt, _cluster, mut cfg) = common::mock_pipeline("retention_replay", 3);
    cfg.metrics.retention.rar_lateness_secs = Some(2 * 86_400);
    cfg.kafka.max_batch_messages = 20;
    let topic = cfg.kafka.topics.get(Topic::Impressions).to_owned();
    let producer: BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &cfg.kafka.brokers).create().expect("producer");
    let send_to = |partition: i32, key: &str, payload: &str| {
        producer
            .send(BaseRecord::to(&topic).partition(partition).key(key).payload(payload))
            .map_err(|(e, _)| e)
            .expect("send");
    };
    // February on partitions 1 and 2; February stays open (lateness 2 days).
    for i in 0..240u32 {
        let id = format!("feb-{i}");
        send_to(1 + (i % 2) as i32, &id, &impression(&id, &format!("2026-02-{:02}T10:00:00Z", 1 + i % 27), 100 + i));
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    common::run_until_seen(&rt, &cfg, 240, Duration::from_secs(60), |_| {});
    let february = |rows: Vec<serde_json::Value>| {
        let mut v: Vec<String> = rar_rows(&rows).into_iter().filter(|r| r.contains("2026-02-01")).collect();
        v.sort();
        v
    };
    let before = february(rt.block_on(common::clickhouse_rows(&cfg.clickhouse)));
    assert!(!before.is_empty());

    // While down: a mid-March impression on partition 0, alone there, so a
    // restart reads it in its first epochs, long before partitions 1 and 2
    // have replayed February. It closes February — after the replay.
    send_to(0, "mar-1", &impression("mar-1", "2026-03-15T00:00:00Z", 9));
    producer.flush(Duration::from_secs(10)).expect("flush");
    let (shared, _) = common::run_until_seen(&rt, &cfg, 241, Duration::from_secs(60), |_| {});
    assert_eq!(shared.metrics.rejected.with_label_values(&["impressions", "too_late"]).get(), 0);
    let after = february(rt.block_on(common::clickhouse_rows(&cfg.clickhouse)));
    assert_eq!(after, before, "February closed with every one of its impressions");
}

/// On two workers a too-late impression is dead-lettered by the worker that
/// owns its key, which need not be the one that read its partition; a
/// restart still leaves every one alone below the committed offsets.
#[test]
fn two_workers_dead_letter_each_late_event_once() {
    late_events_on_two_workers("retention_workers", false);
}

/// As above, restarting from checkpoints (which read nothing twice).
#[test]
fn two_workers_dead_letter_each_late_event_once_with_checkpoints() {
    late_events_on_two_workers("retention_workers_ckpt", true);
}

fn late_events_on_two_workers(name: &str, checkpoints: bool) {
    let HalfYear { rt, _cluster, mut cfg, topic, producer, mut lines } = half_year(name);
    if checkpoints {
        cfg.state.dir = Some(common::state_dir(name));
    }
    let two = revpulse::runner::Cluster { workers: 2, ..Default::default() };
    let run = |lines: usize| match checkpoints {
        true => common::run_until_committed(&rt, &cfg, &two),
        false => common::run_cluster_until_seen(&rt, &cfg, &two, lines, Duration::from_secs(60), |_| {}).0,
    };
    run(lines.len());
    for i in 0..8 {
        let id = format!("late-{i}");
        send(&producer, &topic, &mut lines, &id, Some(impression(&id, "2026-02-10T00:00:00Z", 5_000 + i)));
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    for (run_no, expect) in [(2, 8), (3, 0)] {
        let shared = run(lines.len());
        let too_late = shared.metrics.rejected.with_label_values(&["impressions", "too_late"]).get();
        assert_eq!(
            too_late, expect,
            "run {run_no}: each late impression is dead-lettered by the run that first reads it"
        );
    }
    assert_eq!(dlq_messages(&cfg.kafka.brokers, &cfg.kafka.dlq_topic), 8, "one dead letter each, not one per restart");
}

/// Sends one event to `topic` (keyed by its upsert key) and records the
/// replay line.
fn send_event(
    producer: &KeyedProducer,
    cfg: &revpulse::config::Config,
    lines: &mut Vec<Line>,
    topic: Topic,
    json: String,
) {
    let value = decode_value(topic, json.as_bytes()).expect("valid");
    let key = value.upsert_key().to_owned();
    producer.send(cfg.kafka.topics.get(topic), key.as_bytes(), Some(json.as_bytes())).expect("send");
    let seq = lines.len() as u64 + 1;
    lines.push(Line { topic, key: key.as_str().into(), value: Some(value), seq });
}

/// Visit `i` of customer `c` on `day` (days after 2026-01-01): two
/// conversation records, an outbound message in an experiment offering
/// `oil`, and (two visits in three) a closed RO with an `oil` line two
/// hours later.
fn visit(producer: &KeyedProducer, cfg: &revpulse::config::Config, lines: &mut Vec<Line>, i: u32, c: u32, day: u32) {
    let at = |hour: u32| {
        let ts = revpulse_pipelines::time::parse_rfc3339("2026-01-01T00:00:00Z").unwrap_or_default()
            + i64::from(day) * 86_400_000_000
            + i64::from(hour) * 3_600_000_000;
        revpulse_pipelines::time::format_micros(ts)
    };
    let subject = format!("cust-{c}");
    for (n, hour) in [(0, 0), (1, 1)] {
        send_event(
            producer,
            cfg,
            lines,
            Topic::Conversations,
            format!(
                r#"{{"tenant_id":"t1","ts":"{}","event_id":"cv-{i}-{n}","conversation_id":"conv-{i}","subject_id":"{subject}","kind":"message","facts":{{"homeowner":true,"monthly_bill":{},"questions":{n}}}}}"#,
                at(hour),
                150 + i * 7 % 200
            ),
        );
    }
    let variant = if c.is_multiple_of(2) { "control" } else { "treatment" };
    send_event(
        producer,
        cfg,
        lines,
        Topic::Messages,
        format!(
            r#"{{"tenant_id":"t1","ts":"{}","message_id":"m-{i}","subject_id":"{subject}","direction":"outbound","channel":"sms","campaign_id":"service_t48h","offer_id":"oil","status":"sent","experiment_id":"x1","variant":"{variant}"}}"#,
            at(0)
        ),
    );
    if !i.is_multiple_of(3) {
        send_event(
            producer,
            cfg,
            lines,
            Topic::RoUpdates,
            format!(
                r#"{{"tenant_id":"t1","ts":"{t}","ro_id":"ro-{i}","subject_id":"{subject}","status":"closed","opened_at":"{t}","closed_at":"{t}","lines":[{{"code":"LOF","amount_cents":{},"offer_id":"oil"}}]}}"#,
                4_000 + i * 10,
                t = at(2)
            ),
        );
    }
}

/// The metric rows (no `state_*` tables) ClickHouse holds, as JSON lines.
fn metric_rows(rt: &tokio::runtime::Runtime, cfg: &revpulse::config::Config) -> std::collections::BTreeSet<String> {
    rt.block_on(common::clickhouse_rows(&cfg.clickhouse))
        .iter()
        .filter(|r| !r["table"].as_str().is_some_and(|t| t.starts_with("state_")))
        .map(|r| r.to_string())
        .collect()
}

/// Asserts two sets of rows are equal, naming a few differences.
fn assert_rows(actual: std::collections::BTreeSet<String>, expected: std::collections::BTreeSet<String>, what: &str) {
    let missing: Vec<_> = expected.difference(&actual).take(3).collect();
    let extra: Vec<_> = actual.difference(&expected).take(3).collect();
    assert!(missing.is_empty() && extra.is_empty(), "{what}: missing {missing:?}, extra {extra:?}");
}

/// The exact result, without retention.
fn exact_rows(lines: &[Line]) -> std::collections::BTreeSet<String> {
    let exact =
        replay::run(lines.to_vec(), &revpulse_pipelines::config::MetricsConfig::default(), 1, 10_000).expect("replay");
    exact.iter().map(|(k, v)| revpulse_pipelines::row::row_json(k, v).to_string()).collect()
}

/// Subjects close (leads, conversations, experiment subjects, offer
/// credits) while the tables stay exact, and stay exact across restarts:
/// the closed subjects' rows are not reconciled away, their experiment and
/// offer figures come back from the state tables, and subjects still open
/// get their old records back.
#[test]
fn closed_subjects_stay_final_and_counted_across_restarts() {
    subjects_across_restarts("subjects", false);
}

/// As above, restarting from checkpoints: the open subjects' old records
/// come back from the checkpoint instead of the topics.
#[test]
fn closed_subjects_stay_final_and_counted_across_checkpointed_restarts() {
    subjects_across_restarts("subjects_ckpt", true);
}

fn subjects_across_restarts(name: &str, checkpoints: bool) {
    let (rt, _cluster, mut cfg) = common::mock_pipeline(name, 2);
    if checkpoints {
        cfg.state.dir = Some(common::state_dir(name));
    }
    let run = |cfg: &revpulse::config::Config, lines: usize| match checkpoints {
        true => common::run_until_committed(&rt, cfg, &Default::default()),
        false => common::run_until_seen(&rt, cfg, lines, Duration::from_secs(60), |_| {}).0,
    };
    cfg.metrics.retention = revpulse_pipelines::config::RetentionConfig {
        rar_lateness_secs: Some(10 * 86_400),
        revenue_per_minute_lateness_secs: Some(86_400),
        attribution_lateness_secs: Some(2 * 86_400),
        subject_idle_secs: Some(3 * 86_400),
    };
    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    let mut lines = Vec::new();
    // Forty customers, one a day; customer 0 comes back every eight days
    // (before its idle time ends), so it stays open with records far older
    // than the horizon, which a restart must take back.
    for i in 0..40u32 {
        visit(&producer, &cfg, &mut lines, i, i, i);
        if i % 8 == 7 {
            visit(&producer, &cfg, &mut lines, 1_000 + i, 0, i);
        }
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
    let shared = run(&cfg, lines.len());
    let sink = revpulse_connectors::clickhouse::ClickHouseSink::new(cfg.clickhouse.clone(), None);
    // Lives still open (`closed_us` 0); closed ones stay until the next start.
    let lives = rt.block_on(sink.state_rows(Table::StateOpenSubjects)).expect("state");
    let open = lives.iter().filter(|(_, v)| v.last() == Some(&revpulse_pipelines::row::Cell::U64(0))).count();
    assert_eq!(shared.metrics.open_subjects.get(), open as i64, "the gauge counts the open subjects");
    let closed = rt.block_on(sink.state_rows(Table::StateExperimentClosed)).expect("state");
    let offers = rt.block_on(sink.state_rows(Table::StateOfferClosed)).expect("state");
    assert!(open > 0 && open < 20, "most of the 40 subjects closed: {open} open");
    assert!(!closed.is_empty() && !offers.is_empty(), "closed experiment subjects and offer credits are kept");
    assert_rows(metric_rows(&rt, &cfg), exact_rows(&lines), "closing subjects changes no row");

    // Restart with nothing new: every row stays.
    run(&cfg, lines.len());
    assert_rows(metric_rows(&rt, &cfg), exact_rows(&lines), "a restart keeps closed subjects' rows and figures");

    // Restart with new activity: five more days of customers.
    for i in 40..45u32 {
        visit(&producer, &cfg, &mut lines, i, i, i);
    }
    visit(&producer, &cfg, &mut lines, 1_045, 0, 44);
    producer.flush(Duration::from_secs(10)).expect("flush");
    run(&cfg, lines.len());
    assert_rows(metric_rows(&rt, &cfg), exact_rows(&lines), "new subjects count on top of the restored state");
}
