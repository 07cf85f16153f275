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
