//! `revpulse bench --ingest`: HTTP ingest throughput (SPEC §5.1) against
//! the plain Kafka producer, in one run on one broker (docs/benchmarks.md,
//! "HTTP ingest").
//!
//! The same payment events go to a fresh topic each time: once through
//! [`KeyedProducer`] (what `revpulse produce` does: queue everything, then
//! wait for every acknowledgement), then through `POST /v1/ingest/payments`
//! in NDJSON batches of 1, 100 and 10,000 events, each request answered
//! only once Kafka acknowledged all of it. HTTP clients keep their
//! connections alive; batches of 1 (one webhook per request) use several
//! connections at once, as webhook senders do.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::mocking::MockCluster;
use revpulse_api::{ApiKey, Scope};
use revpulse_connectors::kafka::KeyedProducer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::phase_kafka;
use crate::config::Config;
use crate::runner::Shared;

/// Ingest benchmark knobs.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Events per measurement (batches of 1 send a tenth of them).
    pub events: usize,
    pub partitions: i32,
    /// Concurrent HTTP connections.
    pub connections: usize,
}

/// One payment event, as a webhook relay would post it.
fn payment(i: usize) -> String {
    format!(
        r#"{{"tenant_id":"dealer-{:03}","ts":"2026-11-{:02}T{:02}:{:02}:{:02}Z","payment_id":"pay-{i}","subject_id":"cust-{}","status":"{}","amount_cents":{},"currency":"USD","plan_id":"plan-{}"}}"#,
        i % 20,
        1 + i % 28,
        i % 24,
        i % 60,
        (i / 60) % 60,
        i % 50_000,
        if i.is_multiple_of(10) { "failed" } else { "succeeded" },
        2_000 + (i * 7919) % 250_000,
        i % 3
    )
}

/// A keep-alive HTTP/1.1 connection that sends requests and reads answers.
pub(crate) struct Connection {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    pub(crate) async fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection { stream, buf: Vec::new() })
    }

    /// POSTs `body`; returns the status.
    async fn post(&mut self, path: &str, key: &str, body: &[u8]) -> anyhow::Result<u16> {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body).await?;
        self.answer().await
    }

    /// GETs `path`; returns the status.
    pub(crate) async fn get(&mut self, path: &str, key: &str) -> anyhow::Result<u16> {
        let head = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\r\n");
        self.stream.write_all(head.as_bytes()).await?;
        self.answer().await
    }

    /// Reads one answer; returns its status.
    async fn answer(&mut self) -> anyhow::Result<u16> {
        // Headers, then exactly Content-Length bytes of body.
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .context("answer without content-length")?;
        while self.buf.len() < end + length {
            self.fill().await?;
        }
        self.buf.drain(..end + length);
        Ok(status)
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Events per second of `events` posted in batches of `batch` over
/// `connections` connections.
fn over_http(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    events: Arc<Vec<String>>,
    batch: usize,
    connections: usize,
) -> anyhow::Result<f64> {
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(events.chunks(batch).map(|c| c.join("\n").into_bytes()).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..connections {
            let (bodies, next) = (Arc::clone(&bodies), Arc::clone(&next));
            tasks.push(tokio::spawn(async move {
                let mut c = Connection::open(addr).await?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { return anyhow::Ok(()) };
                    let status = c.post("/v1/ingest/payments", "bench", body).await?;
                    anyhow::ensure!(status == 200, "ingest answered {status}");
                }
            }));
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok(())
    })?;
    Ok(events.len() as f64 / t.elapsed().as_secs_f64())
}

pub fn ingest(opts: &IngestOptions) -> anyhow::Result<()> {
    let rt = crate::start::runtime()?;
    let cluster = MockCluster::new(1).context("mock cluster")?;
    let events: Vec<String> = (0..opts.events).map(payment).collect();
    let bytes: usize = events.iter().map(String::len).sum();
    println!(
        "revpulse bench --ingest: {} payment events ({:.1} MiB of JSON), {} partitions, {} HTTP connections\n",
        events.len(),
        bytes as f64 / super::MIB,
        opts.partitions,
        opts.connections
    );

    // The plain producer path: queue all, wait for every acknowledgement.
    let kafka = phase_kafka(&cluster, "ingest-producer", opts.partitions)?;
    let producer = KeyedProducer::new(&kafka)?;
    let t = Instant::now();
    for (i, e) in events.iter().enumerate() {
        producer.send(
            kafka.topics.get(revpulse_pipelines::event::Topic::Payments),
            format!("pay-{i}").as_bytes(),
            Some(e.as_bytes()),
        )?;
    }
    producer.flush(Duration::from_secs(120))?;
    let plain = events.len() as f64 / t.elapsed().as_secs_f64();
    println!("Kafka producer (KeyedProducer, acks=all): {plain:>10.0} events/s");

    let events = Arc::new(events);
    for (batch, share, connections) in [(1, 10, opts.connections), (100, 1, opts.connections), (10_000, 1, 2)] {
        let mut cfg = Config {
            kafka: phase_kafka(&cluster, &format!("ingest-http-{batch}"), opts.partitions)?,
            ..Config::default()
        };
        cfg.api.listen = "127.0.0.1:0".into();
        cfg.api.keys = vec![ApiKey::clear("bench", "*").with_scopes(&[Scope::Ingest])];
        cfg.api.request_timeout_ms = 60_000;
        cfg.api.ingest_ack_timeout_ms = 30_000;
        let shared = Shared::default();
        let ch = revpulse_connectors::clickhouse::ClickHouseSink::new(cfg.clickhouse.clone(), None).client().clone();
        let api = crate::serve::start_api(&rt, &cfg, ch, &shared)?;
        let subset = Arc::new(events[..events.len() / share].to_vec());
        let rate = over_http(&rt, api.addr, subset, batch, connections)?;
        println!(
            "HTTP ingest, batches of {batch:>6} ({connections} connections): {rate:>10.0} events/s  ({:.3} of the producer's)",
            rate / plain
        );
        shared.stop.store(true, Ordering::Relaxed);
        let _ = rt.block_on(api.handle);
    }
    Ok(())
}
