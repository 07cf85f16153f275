//! Point lookups served from the rows the sink wrote (docs/api.md "Serving
//! from the sink") equal ClickHouse's `*_current` views — while the
//! pipeline writes, and exactly once it is idle — and the overload limit
//! answers 503 with `Retry-After` at once instead of queueing.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use revpulse::generate::{GenConfig, Generator};
use revpulse::runner::Cluster;
use revpulse::start::{Services, StartOptions};
use revpulse_api::{ApiKey, AppState, Keys, Readiness};
use revpulse_connectors::clickhouse::ClickHouseSink;
use revpulse_connectors::kafka::KeyedProducer;
use revpulse_connectors::metrics::Metrics;
use revpulse_pipelines::row::{LeadScoreKey, RowKey, Table, TableKey};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: SocketAddr, path: &str) -> (u16, String, Value) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer k\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_owned(), serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A lead as ClickHouse's `lead_scores_current` has it, in the API's shape
/// (score, tier, revenue_potential, conversion_probability), or `None`.
async fn stored(ch: &clickhouse::Client, tenant: &str, subject: &str) -> Option<(f64, String, f64, f64)> {
    ch.query(
        "SELECT score, tier, revenue_potential, conversion_probability FROM lead_scores_current \
         WHERE tenant_id = ? AND subject_id = ?",
    )
    .bind(tenant)
    .bind(subject)
    .fetch_optional::<(f64, String, f64, f64)>()
    .await
    .expect("query")
}

async fn served(addr: SocketAddr, tenant: &str, subject: &str) -> Option<(f64, String, f64, f64)> {
    let (st, _, b) = get(addr, &format!("/v1/tenants/{tenant}/leads/{subject}")).await;
    assert!(st == 200 || st == 404, "{st}: {b}");
    (st == 200).then(|| {
        let f = |k: &str| b[k].as_f64().unwrap_or(f64::NAN);
        (
            f("score"),
            b["tier"].as_str().unwrap_or_default().to_owned(),
            f("revenue_potential"),
            f("conversion_probability"),
        )
    })
}

/// Every lead ClickHouse holds, as (tenant, subject).
async fn leads(ch: &clickhouse::Client) -> Vec<(String, String)> {
    ch.query("SELECT tenant_id, subject_id FROM lead_scores_current ORDER BY tenant_id, subject_id")
        .fetch_all::<(String, String)>()
        .await
        .expect("leads")
}

#[test]
fn point_lookups_from_the_sink_equal_clickhouse_while_it_writes() {
    let (rt, _cluster, mut cfg) = common::mock_pipeline("api_serving", 4);
    cfg.kafka.max_batch_messages = 300;
    cfg.api.listen = "127.0.0.1:0".into();
    cfg.api.keys = vec![ApiKey::clear("k", "*")];
    let services = Services::start(&rt, &cfg, StartOptions { api: true, signals: false }).expect("services");
    let addr = services.api.as_ref().map(|a| a.addr).expect("api");
    let shared = services.shared.clone();
    let cache = shared.rows.clone().expect("an API next to the pipeline keeps the sink's rows");
    let ch = ClickHouseSink::new(cfg.clickhouse.clone(), None).client().clone();
    let producer = KeyedProducer::new(&cfg.kafka).expect("producer");
    let mut g = Generator::new(GenConfig { seed: 9, tenants: 2, ..GenConfig::default() });
    let total = 12_000;

    std::thread::scope(|scope| {
        let runner = scope.spawn(|| services.run(&rt, &cfg, &Cluster::default()));
        // Produce in steps; between them, compare lookups while rows change.
        let (mut compared, mut from_cache) = (0, 0);
        for _ in 0..12 {
            for _ in 0..total / 12 {
                let r = g.next_record();
                let topic = cfg.kafka.topics.get(r.topic);
                producer.send(topic, r.key.as_bytes(), r.payload.as_deref().map(str::as_bytes)).expect("send");
            }
            producer.flush(Duration::from_secs(30)).expect("flush");
            for (t, s) in rt.block_on(leads(&ch)).into_iter().step_by(7).take(40) {
                let key = RowKey::new(
                    Table::LeadScores,
                    LeadScoreKey { tenant_id: t.as_str().into(), subject_id: s.as_str().into() }.into_cells(),
                );
                from_cache += usize::from(cache.get(&key).is_some());
                // A write may land between two reads: the answer must be
                // what ClickHouse held just before or just after it.
                let ok = (0..20).any(|_| {
                    let before = rt.block_on(stored(&ch, &t, &s));
                    let answer = rt.block_on(served(addr, &t, &s));
                    let after = rt.block_on(stored(&ch, &t, &s));
                    answer == before || answer == after
                });
                assert!(ok, "{t}/{s}: the API never agreed with ClickHouse");
                compared += 1;
            }
        }
        assert!(compared > 100 && from_cache > compared / 2, "{from_cache} of {compared} lookups from the sink's rows");

        // Idle: every lead, exactly.
        let deadline = Instant::now() + Duration::from_secs(60);
        while common::messages_seen(&shared.metrics) < total || shared.metrics.sink_in_flight.get() > 0 {
            assert!(Instant::now() < deadline, "pipeline did not catch up");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        let all = rt.block_on(leads(&ch));
        assert!(all.len() > 100, "{} leads", all.len());
        for (t, s) in &all {
            assert_eq!(rt.block_on(served(addr, t, s)), rt.block_on(stored(&ch, t, s)), "{t}/{s}");
        }
        assert!(rt.block_on(served(addr, "dealer-000", "nobody")).is_none());
        shared.stop.store(true, Ordering::Relaxed);
        runner.join().expect("runner thread").expect("runner ok");
    });
}

/// With every permit taken, a request is answered 503 with `Retry-After`
/// at once, and the latency histogram records it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_a_fast_503_with_retry_after() {
    let cfg = common::fresh_clickhouse("api_overload").await;
    let sink = ClickHouseSink::new(cfg, None);
    let metrics = Metrics::new();
    let state = AppState {
        ch: sink.client().clone(),
        metrics: metrics.clone(),
        readiness: Arc::new(Readiness::default()),
        keys: Arc::new(Keys::new(&[ApiKey::clear("k", "*")]).expect("keys")),
        ingest: None,
        rows: None,
        in_flight: Some(Arc::new(tokio::sync::Semaphore::new(0))),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = revpulse_api::router(state, Duration::from_secs(5));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let t = Instant::now();
    let (st, head, body) = get(addr, "/v1/tenants/dealer-000/leads/someone").await;
    assert_eq!(st, 503, "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after: 1"), "{head}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("overloaded")), "{body}");
    assert!(t.elapsed() < Duration::from_secs(1), "answered at once");
    // Operations routes are not limited.
    assert_eq!(get(addr, "/healthz").await.0, 200);
    let shed =
        metrics.api_latency.with_label_values(&["/v1/tenants/{tenant}/leads/{subject}", "503"]).get_sample_count();
    assert_eq!(shed, 1);
}
