//! Prometheus: the shipped scrape config and alerting rules pass `promtool`
//! (including the rules' unit tests), `/metrics` of a running pipeline
//! passes `promtool check metrics`, and every PromQL query of the Grafana
//! dashboards returns series from a real Prometheus server scraping it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use revpulse::config::Config;
use revpulse::generate::{GenConfig, Generator};
use revpulse::runner::{run_pipeline, Shared};
use revpulse::serve::start_api;
use revpulse_api::ApiKey;
use revpulse_connectors::clickhouse::ClickHouseSink;
use revpulse_connectors::kafka::KeyedProducer;
use revpulse_pipelines::event::Topic;
use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn tool(name: &str) -> Command {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "{name} not found: scripts/setup.sh installs it (Debian package prometheus)"
    );
    Command::new(name)
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run tool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn shipped_config_and_alerting_rules_pass_promtool() {
    let dir = Path::new(REPO).join("deploy/prometheus");
    ok(tool("promtool").current_dir(&dir).args(["check", "config", "prometheus.yml"]));
    ok(tool("promtool").current_dir(&dir).args(["check", "rules", "alerts.yml"]));
    let tested = ok(tool("promtool").current_dir(&dir).args(["test", "rules", "alerts_test.yml"]));
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// The PromQL of every Prometheus panel in `dashboards/json`.
fn dashboard_exprs() -> Vec<(String, String)> {
    fn walk(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                let title = m.get("title").and_then(Value::as_str).unwrap_or(title);
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push((title.to_owned(), e.clone()));
                }
                m.values().for_each(|x| walk(x, title, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(Path::new(REPO).join("dashboards/json")).expect("dashboards") {
        let path = entry.expect("entry").path();
        let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        walk(&dash, "", &mut out);
    }
    out
}

fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl").args(["-sS", "--max-time", "5"]).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Prometheus(std::process::Child, PathBuf);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[test]
fn live_metrics_pass_promtool_and_every_dashboard_query_returns_series() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "pipeline-health dashboard has its queries: {exprs:?}");

    let rt = revpulse::start::runtime().expect("runtime");
    let ch = rt.block_on(common::fresh_clickhouse("prom"));
    let mut cfg = Config { clickhouse: ch.clone(), ..Config::default() };
    let _cluster = revpulse::start::embedded_kafka(&mut cfg.kafka, 1).expect("embedded kafka");
    cfg.kafka.max_batch_ms = 20;
    cfg.api.listen = "127.0.0.1:0".into();
    cfg.api.keys = vec![ApiKey::clear("k", "*")];

    let shared = Shared::default();
    let sink = Arc::new(ClickHouseSink::new(ch.clone(), Some(shared.metrics.clone())));
    let api = start_api(&rt, &cfg, sink.client().clone(), &shared).expect("api");
    let (handle, runner_shared, runner_cfg) = (rt.handle().clone(), shared.clone(), cfg.clone());
    let runner = std::thread::spawn(move || run_pipeline(&runner_cfg, runner_shared, sink, handle));

    // A steady trickle of events with an occasional bad one, so rates,
    // histograms and the rejected counter all have samples.
    let producing = Arc::new(AtomicBool::new(true));
    let (kafka, flag) = (cfg.kafka.clone(), producing.clone());
    let producer = std::thread::spawn(move || {
        let p = KeyedProducer::new(&kafka).expect("producer");
        let mut g = Generator::new(GenConfig { seed: 5, tenants: 2, ..GenConfig::default() });
        let mut i = 0u64;
        while flag.load(Ordering::Relaxed) {
            let r = g.next_record();
            p.send(kafka.topics.get(r.topic), r.key.as_bytes(), r.payload.as_deref().map(str::as_bytes)).expect("send");
            if i.is_multiple_of(500) {
                p.send(kafka.topics.get(Topic::Payments), b"bad", Some(b"{not json")).expect("send bad");
            }
            i += 1;
            if i.is_multiple_of(100) {
                p.poll();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        p.flush(Duration::from_secs(10)).expect("flush");
    });

    let dir = std::env::temp_dir().join(format!("revpulse-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("prometheus dir");
    let port = common::free_port();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: revpulse\n    static_configs:\n      - targets: [\"{}\"]\n",
            api.addr
        ),
    )
    .expect("write config");
    let child = tool("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log file"))
        .spawn()
        .expect("start prometheus");
    let mut prometheus = Prometheus(child, dir.clone());

    let base = format!("http://{}", api.addr);
    let query_url = format!("http://127.0.0.1:{port}/api/v1/query");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut empty: Vec<&(String, String)>;
    loop {
        if let Ok(Some(status)) = prometheus.0.try_wait() {
            let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
            panic!("prometheus exited ({status}):\n{log}");
        }
        // API traffic for the request-duration histogram.
        let _ = curl(&["-H", "Authorization: Bearer k", &format!("{base}/v1/tenants/dealer-000/leads?limit=5")]);
        let _ = curl(&[&format!("{base}/v1/tenants/dealer-000/leads?limit=5")]);
        empty = exprs
            .iter()
            .filter(|(_, e)| {
                let body = curl(&["-G", "--data-urlencode", &format!("query={e}"), &query_url]);
                let v: Value = body.and_then(|b| serde_json::from_str(&b).ok()).unwrap_or(Value::Null);
                v["status"] != "success" || v["data"]["result"].as_array().is_none_or(Vec::is_empty)
            })
            .collect();
        if empty.is_empty() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }

    // The exposition itself, as Prometheus' own linter sees it.
    let metrics = curl(&[&format!("{base}/metrics")]).expect("GET /metrics");
    let mut check = tool("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), metrics.as_bytes()).expect("write");
    let out = check.wait_with_output().expect("promtool check metrics");
    let lint = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    producing.store(false, Ordering::Relaxed);
    producer.join().expect("producer");
    shared.stop.store(true, Ordering::Relaxed);
    runner.join().expect("runner thread").expect("runner ok");

    assert!(out.status.success() && lint.trim().is_empty(), "promtool check metrics:\n{lint}");
    for family in ["revpulse_consumed_total", "revpulse_freshness_seconds_bucket", "revpulse_consumer_lag"] {
        assert!(metrics.contains(family), "{family} missing from /metrics");
    }
    assert!(empty.is_empty(), "dashboard queries without series: {empty:#?}");
}
