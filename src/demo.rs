//! `revpulse demo`: the whole pipeline on one machine, nothing configured.
//!
//! librdkafka's in-process mock cluster is the embedded broker (it speaks
//! the real Kafka protocol on loopback; `kcat -b <bootstrap>` works against
//! it), a local ClickHouse is started by `scripts/clickhouse.sh` unless one
//! already answers, and a generator streams realistic events to all five
//! topics while the pipeline and the API run.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use revpulse_api::{ApiKey, Scope};
use revpulse_connectors::clickhouse::{ClickHouseConfig, ClickHouseSink};
use revpulse_connectors::kafka::{KafkaConfig, KeyedProducer};
use revpulse_pipelines::time::MICROS_PER_DAY;

use crate::config::Config;
use crate::generate::{GenConfig, Generator};
use crate::runner::Shared;
use crate::start::{embedded_kafka, runtime, Services, StartOptions};

/// Demo knobs (all have defaults).
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Live events per second after the backlog.
    pub rate: u64,
    /// Events of history (spread over the last 90 days) produced first.
    pub backlog: usize,
    /// Stop after this long (default: until Ctrl-C).
    pub duration: Option<Duration>,
    pub listen: String,
    pub tenants: usize,
    pub partitions: i32,
    pub seed: u64,
    /// ClickHouse to write to; the repo's local server is started when this
    /// is its address and nothing answers there.
    pub clickhouse_url: String,
    pub database: String,
}

/// The demo's API key, scoped to every tenant.
pub const DEMO_KEY: &str = "demo-key";

/// Makes sure a ClickHouse answers at `cfg.url`, starting the repo's local
/// one if not and `cfg.url` is its address (any other address is the user's
/// server, which revpulse does not start).
pub async fn ensure_clickhouse(cfg: &ClickHouseConfig) -> anyhow::Result<()> {
    let probe = ClickHouseSink::new(ClickHouseConfig { database: "default".into(), ..cfg.clone() }, None);
    if probe.ping().await {
        return Ok(());
    }
    anyhow::ensure!(
        cfg.url == ClickHouseConfig::default().url,
        "no ClickHouse answers at {} (start it, e.g. scripts/clickhouse-current.sh start for a current release)",
        cfg.url
    );
    let script = std::env::var("REVPULSE_CLICKHOUSE_SCRIPT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/clickhouse.sh").to_owned());
    tracing::info!(script, "starting a local ClickHouse");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg("start")
        .status()
        .with_context(|| format!("running {script}"))?;
    anyhow::ensure!(status.success(), "{script} start failed");
    for _ in 0..50 {
        if probe.ping().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("ClickHouse did not answer at {}", cfg.url)
}

fn wall_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// Event time of the demo's history: `backlog` events spread evenly over the
/// 90 days before `now`, so every month of that span has data and the
/// history ends where the live stream begins.
fn backlog_ts(i: usize, backlog: usize, now: i64) -> i64 {
    let span = 90 * MICROS_PER_DAY;
    now - span + (i128::from(span) * i as i128 / backlog.max(1) as i128) as i64
}

/// Produces a backlog of history, then `rate` events per second until
/// stopped, each carrying the wall-clock time it is sent at: the dashboards'
/// "last hour" panels and the per-minute API show the present, and no event
/// lies in the future however long the demo runs.
fn stream_events(kafka: &KafkaConfig, opts: &DemoOptions, shared: &Shared) -> anyhow::Result<()> {
    let producer = KeyedProducer::new(kafka)?;
    let backlog = opts.backlog.max(1);
    let started = wall_micros();
    let mut generator = Generator::new(GenConfig {
        seed: opts.seed,
        tenants: opts.tenants,
        start: backlog_ts(0, backlog, started),
        step: 0,
    });
    let send = |generator: &mut Generator| -> anyhow::Result<()> {
        let r = generator.next_record();
        producer.send(kafka.topics.get(r.topic), r.key.as_bytes(), r.payload.as_deref().map(str::as_bytes))?;
        Ok(())
    };
    for i in 0..backlog {
        generator.set_now(backlog_ts(i, backlog, started));
        send(&mut generator)?;
    }
    let tick = Duration::from_millis(100);
    let per_tick = (opts.rate / 10).max(1);
    while !shared.stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        for _ in 0..per_tick {
            // Never backwards, should the wall clock be stepped back.
            generator.set_now(wall_micros().max(generator.now()));
            send(&mut generator)?;
        }
        producer.poll();
        std::thread::sleep(tick.saturating_sub(t.elapsed()));
    }
    producer.flush(Duration::from_secs(5))?;
    Ok(())
}

pub fn demo(opts: DemoOptions) -> anyhow::Result<()> {
    let rt = runtime()?;
    // No file, but `REVPULSE__…` variables still override the defaults
    // (e.g. `REVPULSE__API__MAX_IN_FLIGHT`); the demo sets its own broker,
    // ClickHouse, state directory and key over them.
    let mut cfg = Config::resolve(None).context("REVPULSE__ environment overrides")?;
    cfg.clickhouse.url = opts.clickhouse_url.clone();
    cfg.clickhouse.database = opts.database.clone();
    rt.block_on(ensure_clickhouse(&cfg.clickhouse))?;
    let _cluster = embedded_kafka(&mut cfg.kafka, opts.partitions)?;
    cfg.api.keys = vec![ApiKey::clear(DEMO_KEY, "*").with_scopes(&[Scope::Read, Scope::Ingest])];
    cfg.api.listen = opts.listen.clone();
    // Checkpoints on, as in production, in a directory of this demo's own:
    // its embedded broker's topics die with it, so no state may outlive it.
    let state_dir = std::env::temp_dir().join(format!("revpulse-demo-state-{}", std::process::id()));
    cfg.state.dir = Some(state_dir.display().to_string());
    cfg.state.rebuild = true;
    let services = Services::start(&rt, &cfg, StartOptions { api: true, signals: true })?;
    let shared = services.shared.clone();
    let addr = services.api.as_ref().map(|a| a.addr).context("the demo serves the API")?;
    if let Some(d) = opts.duration {
        let stop = shared.stop.clone();
        rt.spawn(async move {
            tokio::time::sleep(d).await;
            stop.store(true, Ordering::Relaxed);
        });
    }

    // Event stream.
    let gen_kafka = cfg.kafka.clone();
    let gen_opts = opts.clone();
    let gen_shared = shared.clone();
    let generator = std::thread::spawn(move || stream_events(&gen_kafka, &gen_opts, &gen_shared));

    let tenant = "dealer-000";
    let month = revpulse_pipelines::time::format_day(revpulse_pipelines::time::month_of(wall_micros()));
    println!(
        "\nrevpulse demo is running (Ctrl-C to stop)\n\
         \n  embedded Kafka   {brokers}   (kcat -b {brokers} -L)\
         \n  ClickHouse       {ch}   database `{db}`\
         \n  API              http://{addr}   key: {DEMO_KEY}\
         \n\n  curl -H 'Authorization: Bearer {DEMO_KEY}' 'http://{addr}/v1/tenants/{tenant}/rar?month={m}'\
         \n  curl http://{addr}/metrics\
         \n  curl http://{addr}/readyz\
         \n  curl {ch} --data-binary 'SELECT tenant_id, month, rar, pressure FROM {db}.rar_monthly_current ORDER BY rar DESC LIMIT 10'\n",
        brokers = cfg.kafka.brokers,
        ch = cfg.clickhouse.url,
        db = cfg.clickhouse.database,
        m = &month[..7],
    );

    let stats = services.run(&rt, &cfg, &Default::default());
    shared.stop.store(true, Ordering::Relaxed);
    match generator.join() {
        Ok(Err(e)) => tracing::warn!(error = %e, "generator stopped with an error"),
        Err(_) => tracing::warn!("generator thread panicked"),
        Ok(Ok(())) => {}
    }
    let _ = std::fs::remove_dir_all(&state_dir);
    let stats = stats?;
    println!("demo stopped after {} messages in {} epochs", stats.messages, stats.epochs);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_spans_the_90_days_before_now_and_ends_before_it() {
        let now = 1_800_000_000 * 1_000_000;
        let ts: Vec<i64> = (0..1_000).map(|i| backlog_ts(i, 1_000, now)).collect();
        assert_eq!(ts[0], now - 90 * MICROS_PER_DAY);
        assert!(ts.windows(2).all(|w| w[0] < w[1]));
        assert!(ts[999] < now && now - ts[999] <= 90 * MICROS_PER_DAY / 1_000);
    }

    #[test]
    fn a_server_at_another_address_is_not_started() {
        let rt = crate::start::runtime().expect("runtime");
        let cfg = ClickHouseConfig { url: "http://127.0.0.1:9".into(), ..ClickHouseConfig::default() };
        let err = rt.block_on(ensure_clickhouse(&cfg)).expect_err("nothing answers there").to_string();
        assert!(err.contains("no ClickHouse answers at http://127.0.0.1:9"), "{err}");
    }
}
