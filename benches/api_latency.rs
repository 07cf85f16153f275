//! Query API latency on a table of 1M keys (issue: query API).
//!
//! Loads 1,000,000 `lead_scores` rows into a local ClickHouse (started by
//! `scripts/clickhouse.sh` if none answers), serves the API in-process and
//! times 3,000 single-key lookups `GET /v1/tenants/{t}/leads/{subject}` over
//! one keep-alive connection, after 300 warm-up requests. Prints p50/p90/p99
//! and, for comparison in the same run, the same lookup issued straight to
//! ClickHouse with the `clickhouse` crate. Run: `cargo bench --bench api_latency`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use revpulse::demo::ensure_clickhouse;
use revpulse_api::{ApiKey, AppState, Keys, Readiness};
use revpulse_connectors::clickhouse::{migrate, ClickHouseConfig, ClickHouseSink};
use revpulse_connectors::metrics::Metrics;
use revpulse_pipelines::row::{s, Cell, RowKey, Table};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const KEYS: usize = 1_000_000;
const TENANTS: usize = 10;
const REQUESTS: usize = 3_000;
const WARMUP: usize = 300;

fn subject(i: usize) -> (String, String) {
    (format!("dealer-{:03}", i % TENANTS), format!("cust-{i:07}"))
}

fn percentiles(mut d: Vec<Duration>) -> [f64; 4] {
    d.sort();
    let at = |p: f64| d[((d.len() as f64 * p) as usize).min(d.len() - 1)].as_secs_f64() * 1e3;
    [at(0.5), at(0.9), at(0.99), at(1.0)]
}

#[derive(clickhouse::Row, serde::Deserialize)]
#[allow(dead_code)]
struct Score {
    score: f64,
    tier: String,
}

fn main() {
    let rt = revpulse::start::runtime().expect("runtime");
    rt.block_on(async {
        let mut cfg = ClickHouseConfig { database: "revpulse_bench_api".into(), ..ClickHouseConfig::default() };
        if let Ok(url) = std::env::var("REVPULSE_BENCH_CLICKHOUSE_URL") {
            cfg.url = url;
        }
        ensure_clickhouse(&cfg).await.expect("ClickHouse");
        let admin = ClickHouseSink::new(ClickHouseConfig { database: "default".into(), ..cfg.clone() }, None);
        admin.client().query("DROP DATABASE IF EXISTS revpulse_bench_api").execute().await.expect("drop");
        migrate(&cfg).await.expect("migrate");
        let sink = ClickHouseSink::new(cfg.clone(), None);
        let t = Instant::now();
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(100_000) {
            let rows: Vec<_> = chunk
                .iter()
                .map(|&i| {
                    let (tenant, subj) = subject(i);
                    let score = (i % 10_000) as f64 / 100.0;
                    let vals = vec![
                        Cell::f64(score),
                        Cell::f64(10.0),
                        Cell::f64(20.0),
                        Cell::f64(8.0),
                        Cell::f64(5.0),
                        s("basic"),
                        Cell::f64(75.0),
                        Cell::f64(0.5),
                    ];
                    (RowKey::new(Table::LeadScores, vec![s(tenant), s(subj)]), Some(vals))
                })
                .collect();
            sink.write(&rows).await.expect("load");
        }
        println!("loaded {KEYS} lead_scores rows in {:.1}s", t.elapsed().as_secs_f64());

        let keys = Keys::new(&[ApiKey::clear("bench", "*")]).expect("keys");
        let state = AppState {
            ch: sink.client().clone(),
            metrics: Metrics::new(),
            readiness: Arc::new(Readiness::default()),
            keys: Arc::new(keys),
            ingest: None,
            rows: None,
            in_flight: None,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, revpulse_api::router(state, Duration::from_secs(5))).await });

        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut conn = BufReader::new(stream);
        let mut api = Vec::new();
        for n in 0..WARMUP + REQUESTS {
            let (tenant, subj) = subject(rng.random_range(0..KEYS));
            let req = format!(
                "GET /v1/tenants/{tenant}/leads/{subj} HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer bench\r\n\r\n"
            );
            let started = Instant::now();
            conn.get_mut().write_all(req.as_bytes()).await.expect("send");
            let mut len = 0usize;
            let mut status = String::new();
            conn.read_line(&mut status).await.expect("status");
            loop {
                let mut line = String::new();
                conn.read_line(&mut line).await.expect("header");
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            conn.read_exact(&mut body).await.expect("body");
            assert!(status.contains(" 200 "), "{status}");
            if n >= WARMUP {
                api.push(started.elapsed());
            }
        }

        let mut direct = Vec::new();
        for n in 0..WARMUP + REQUESTS {
            let (tenant, subj) = subject(rng.random_range(0..KEYS));
            let started = Instant::now();
            let _: Option<Score> = sink
                .client()
                .query(
                    "SELECT argMax(score, version), argMax(tier, version) FROM lead_scores \
                     WHERE tenant_id = ? AND subject_id = ? GROUP BY subject_id HAVING argMax(deleted, version) = 0",
                )
                .bind(&tenant)
                .bind(&subj)
                .fetch_optional()
                .await
                .expect("direct query");
            if n >= WARMUP {
                direct.push(started.elapsed());
            }
        }
        let [a50, a90, a99, amax] = percentiles(api);
        let [d50, d90, d99, dmax] = percentiles(direct);
        println!("single-key lookups on {KEYS} keys, {REQUESTS} requests each (ms)");
        println!("{:<28} {:>7} {:>7} {:>7} {:>7}", "", "p50", "p90", "p99", "max");
        println!("{:<28} {a50:>7.2} {a90:>7.2} {a99:>7.2} {amax:>7.2}", "API GET /leads/{subject}");
        println!("{:<28} {d50:>7.2} {d90:>7.2} {d99:>7.2} {dmax:>7.2}", "ClickHouse query, direct");
        println!("API p99 / direct p99: {:.2}  (target: API p99 < 20 ms)", a99 / d99);
        admin.client().query("DROP DATABASE IF EXISTS revpulse_bench_api").execute().await.expect("drop");
    });
}
