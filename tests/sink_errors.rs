//! A ClickHouse error that retrying cannot fix (here: a table dropped under
//! the running pipeline) stops the run with an error instead of retrying
//! forever, and nothing is committed past what ClickHouse acknowledged.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use revpulse_connectors::clickhouse::ClickHouseSink;
use revpulse_connectors::kafka::KeyedProducer;
use revpulse_pipelines::event::Topic;

#[test]
fn a_permanent_clickhouse_error_fails_the_run() {
    let (rt, _cluster, cfg) = common::mock_pipeline("permanent", 1);
    let shared = revpulse::runner::Shared::default();
    let sink = Arc::new(ClickHouseSink::new(cfg.clickhouse.clone(), Some(shared.metrics.clone())));
    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    let send = |id: &str| {
        let event = format!(
            r#"{{"tenant_id":"t","ts":"2026-11-01T12:00:00Z","event_id":"{id}","channel":"maps","intent_cluster":"x","impressions":10,"share_ai_snippet":0.5,"ctr_baseline":0.1,"ctr_drop_when_ai":0.5,"lead_cr":0.1,"close_rate":0.1,"recoverable_share":0.1,"avg_gross":100}}"#
        );
        producer.send(cfg.kafka.topics.get(Topic::Impressions), id.as_bytes(), Some(event.as_bytes())).expect("send");
        producer.flush(Duration::from_secs(10)).expect("flush");
    };
    send("e1");
    let (runner_cfg, runner_shared, handle) = (cfg.clone(), shared.clone(), rt.handle().clone());
    let writer = Arc::clone(&sink);
    let runner = std::thread::spawn(move || revpulse::runner::run_pipeline(&runner_cfg, runner_shared, writer, handle));
    let deadline = Instant::now() + Duration::from_secs(60);
    // Once the first event's rows are in, the table goes away under the pipeline.
    while shared.metrics.sunk_rows.get() == 0 {
        assert!(Instant::now() < deadline, "the first rows were never written");
        std::thread::sleep(Duration::from_millis(50));
    }
    rt.block_on(sink.client().query("DROP TABLE rar_monthly").execute()).expect("drop table");
    send("e2");
    while !runner.is_finished() {
        assert!(Instant::now() < deadline, "the run kept retrying a write that cannot succeed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let result = runner.join().expect("runner thread");
    let err = result.expect_err("a permanent sink error fails the run");
    assert!(format!("{err:#}").contains("sink gave up"), "{err:#}");
    assert!(err.chain().any(|e| e.to_string().contains("Code: 60")), "{err:#}");
    assert!(
        !shared.readiness.clickhouse.load(std::sync::atomic::Ordering::Relaxed),
        "readiness reports ClickHouse down"
    );
}

/// A start waits for row inserts that began before it (a killed
/// predecessor's last write, still landing) before it lists the live keys:
/// `settle_older_inserts` reports one still running (here an insert that
/// sleeps), returns at once for inserts younger than the given age, and
/// once the insert ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_waits_for_older_inserts() {
    let cfg = common::fresh_clickhouse("settle").await;
    let sink = Arc::new(ClickHouseSink::new(cfg.clone(), None));
    assert_eq!(sink.settle_older_inserts(Duration::ZERO, Duration::from_secs(1)).await.ok(), Some(true));
    let slow = {
        let sink = Arc::clone(&sink);
        tokio::spawn(async move {
            let sql = "INSERT INTO offer_acceptance (tenant_id, offer_id, accepted_lines, revenue, version, deleted) \
                       SELECT 't', 'o', 1, 1.0, 1, 0 FROM system.numbers WHERE sleep(2) = 0 LIMIT 1";
            sink.client().query(sql).execute().await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t = Instant::now();
    let settled = sink.settle_older_inserts(Duration::ZERO, Duration::from_millis(300)).await;
    assert_eq!(settled.ok(), Some(false), "the running insert is waited for");
    assert!(t.elapsed() >= Duration::from_millis(300));
    // Inserts that began after the start are not waited for.
    let later = sink.settle_older_inserts(Duration::from_secs(3600), Duration::from_millis(100)).await;
    assert_eq!(later.ok(), Some(true));
    assert_eq!(sink.settle_older_inserts(Duration::ZERO, Duration::from_secs(10)).await.ok(), Some(true));
    assert!(slow.await.is_ok_and(|r| r.is_ok()), "the insert itself succeeded");
}
