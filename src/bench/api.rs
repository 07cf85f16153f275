//! `revpulse bench --api`: the query API under load while the pipeline
//! streams (docs/benchmarks.md, "Query API under load").
//!
//! Runs `revpulse demo` (this binary, in a process of its own: the
//! embedded broker, the pipeline at the demo's rate and the API) and loads
//! its API from this process over keep-alive connections, as `ab` or a
//! lead router would: single-lead lookups at 50 and at 200 concurrent
//! clients, and the RaR route at 200. Twice in one run: first with
//! `[api] row_cache = false` and `max_in_flight = 0` (every request a
//! ClickHouse query, no limit: how the API answered before), then with the
//! defaults (point lookups from the rows the sink wrote, at most 64
//! requests in flight, fast 503s beyond). Prints requests/s, p50/p99 and
//! the non-2xx answers of each phase.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use revpulse_connectors::clickhouse::{ClickHouseConfig, ClickHouseSink};

use super::ingest::Connection;
use crate::demo::{ensure_clickhouse, DEMO_KEY};

/// API benchmark knobs.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Events of history the demo produces before its live stream.
    pub backlog: usize,
    /// The demo's live events per second.
    pub rate: u64,
    /// Seconds of load per phase.
    pub secs: u64,
    pub tenants: usize,
    pub clickhouse: ClickHouseConfig,
}

/// What one phase measured.
struct Phase {
    requests: usize,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Non-2xx answers by status (404 is a 2xx-like answer here: none expected).
    non_2xx: Vec<(u16, usize)>,
    /// Requests that got no answer within 10 s (or lost their connection).
    failed: usize,
}

/// A running demo process, stopped on drop.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_demo(opts: &ApiOptions, port: u16, database: &str, env: &[(&str, &str)]) -> anyhow::Result<Demo> {
    let exe = std::env::current_exe().context("this binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["demo", "--rate", &opts.rate.to_string(), "--backlog", &opts.backlog.to_string()])
        .args(["--tenants", &opts.tenants.to_string(), "--listen", &format!("127.0.0.1:{port}")])
        .args(["--clickhouse-url", &opts.clickhouse.url, "--database", database])
        .env_remove("REVPULSE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(Demo(cmd.spawn().context("starting revpulse demo")?))
}

/// Sum of a counter family in a Prometheus text exposition.
fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits until the demo's API answers and its pipeline read the backlog.
async fn wait_caught_up(addr: SocketAddr, backlog: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        anyhow::ensure!(Instant::now() < deadline, "the demo did not read its backlog within 10 minutes");
        if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let req = "GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
            let mut text = String::new();
            if stream.write_all(req.as_bytes()).await.is_ok() && stream.read_to_string(&mut text).await.is_ok() {
                let read =
                    counter_sum(&text, "revpulse_consumed_total") + counter_sum(&text, "revpulse_rejected_total");
                if read >= backlog as f64 {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `clients` connections requesting `paths` (at random) for `secs`.
async fn load(addr: SocketAddr, paths: Arc<Vec<String>>, clients: usize, secs: u64) -> Phase {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let paths = Arc::clone(&paths);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c as u64);
            let (mut times, mut statuses, mut failed) = (Vec::new(), Vec::new(), 0usize);
            let mut conn = None;
            while Instant::now() < until {
                if conn.is_none() {
                    conn = Connection::open(addr).await.ok();
                }
                let Some(open) = conn.as_mut() else {
                    failed += 1;
                    continue;
                };
                let path = &paths[rng.random_range(0..paths.len())];
                let t = Instant::now();
                match tokio::time::timeout(Duration::from_secs(10), open.get(path, DEMO_KEY)).await {
                    Ok(Ok(status)) => {
                        times.push(t.elapsed());
                        statuses.push(status);
                    }
                    _ => {
                        failed += 1;
                        conn = None;
                    }
                }
            }
            (times, statuses, failed)
        }));
    }
    let started = Instant::now();
    let (mut times, mut statuses, mut failed) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        if let Ok((ts, ss, f)) = t.await {
            times.extend(ts);
            statuses.extend(ss);
            failed += f;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    times.sort();
    let at = |q: f64| times.get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let mut non_2xx: Vec<(u16, usize)> = Vec::new();
    for s in statuses.iter().filter(|s| !(200..300).contains(*s)) {
        match non_2xx.iter_mut().find(|(x, _)| x == s) {
            Some((_, n)) => *n += 1,
            None => non_2xx.push((*s, 1)),
        }
    }
    Phase { requests: times.len(), secs, p50_ms: ms(at(0.5)), p99_ms: ms(at(0.99)), non_2xx, failed }
}

/// Leads (tenant, subject) and a month with RaR, read from the demo's tables.
async fn targets(ch: &ClickHouseConfig) -> anyhow::Result<(Vec<(String, String)>, Vec<(String, String)>)> {
    let sink = ClickHouseSink::new(ch.clone(), None);
    let leads: Vec<(String, String)> = sink
        .client()
        .query("SELECT tenant_id, subject_id FROM lead_scores_current LIMIT 5000")
        .fetch_all()
        .await
        .context("reading leads")?;
    let months: Vec<(String, String)> = sink
        .client()
        .query("SELECT tenant_id, substring(toString(month), 1, 7) FROM rar_monthly_current LIMIT 100")
        .fetch_all()
        .await
        .context("reading RaR months")?;
    anyhow::ensure!(!leads.is_empty() && !months.is_empty(), "the demo wrote no leads or RaR");
    Ok((leads, months))
}

/// `revpulse bench --api`.
pub fn api(opts: &ApiOptions) -> anyhow::Result<()> {
    let rt = crate::start::runtime()?;
    rt.block_on(ensure_clickhouse(&opts.clickhouse))?;
    println!(
        "revpulse bench --api: demo at {} events/s after a backlog of {}, {} tenants, {} s per phase",
        opts.rate, opts.backlog, opts.tenants, opts.secs
    );
    println!("\n| serving | route | clients | requests/s | p50 ms | p99 ms | non-2xx | no answer |");
    println!("|---|---|---:|---:|---:|---:|---|---:|");
    let variants: [(&str, &[(&str, &str)]); 2] = [
        ("ClickHouse, no limit", &[("REVPULSE__API__ROW_CACHE", "false"), ("REVPULSE__API__MAX_IN_FLIGHT", "0")]),
        ("sink's rows, max_in_flight 64", &[]),
    ];
    for (i, (name, env)) in variants.iter().enumerate() {
        let database = format!("revpulse_bench_api_{i}");
        // Fresh: rows of an earlier run would be listed, then reconciled away.
        super::fresh_database(&rt, &opts.clickhouse, &database)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let _demo = start_demo(opts, port, &database, env)?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        rt.block_on(wait_caught_up(addr, opts.backlog))?;
        let ch = ClickHouseConfig { database: database.clone(), ..opts.clickhouse.clone() };
        // The backlog was read; its rows may still be on their way.
        let mut found = rt.block_on(targets(&ch));
        for _ in 0..120 {
            if found.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
            found = rt.block_on(targets(&ch));
        }
        let (leads, months) = found?;
        let lead_paths: Arc<Vec<String>> =
            Arc::new(leads.iter().map(|(t, s)| format!("/v1/tenants/{t}/leads/{s}")).collect());
        let rar_paths: Arc<Vec<String>> =
            Arc::new(months.iter().map(|(t, m)| format!("/v1/tenants/{t}/rar?month={m}")).collect());
        for (route, paths, clients) in [("lead", &lead_paths, 50), ("lead", &lead_paths, 200), ("rar", &rar_paths, 200)]
        {
            let p = rt.block_on(load(addr, Arc::clone(paths), clients, opts.secs));
            let non_2xx = if p.non_2xx.is_empty() {
                "0".to_owned()
            } else {
                p.non_2xx.iter().map(|(s, n)| format!("{n}× {s}")).collect::<Vec<_>>().join(", ")
            };
            println!(
                "| {name} | {route} | {clients} | {:.0} | {:.1} | {:.1} | {non_2xx} | {} |",
                p.requests as f64 / p.secs,
                p.p50_ms,
                p.p99_ms,
                p.failed
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::counter_sum;

    #[test]
    fn counters_sum_over_labels_only_for_their_family() {
        let text = "# TYPE revpulse_consumed_total counter\nrevpulse_consumed_total{topic=\"a\"} 3\n\
                    revpulse_consumed_total{topic=\"b\"} 4\nrevpulse_consumed_total_other 9\n";
        assert_eq!(counter_sum(text, "revpulse_consumed_total"), 7.0);
    }
}
