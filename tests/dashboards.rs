//! Every SQL query in `dashboards/json/*.json` (panels and template
//! variables) runs against a real ClickHouse loaded with a replayed data set
//! and returns rows, and the SQL of the Grafana alert rules in
//! `dashboards/provisioning/alerting/` runs. (The Prometheus queries of the pipeline-health
//! dashboard are checked against a real Prometheus in tests/prometheus.rs.)

mod common;

use revpulse::generate::{write_dir, GenConfig};
use revpulse::replay;
use revpulse_connectors::clickhouse::ClickHouseSink;
use serde_json::Value;

fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("rawSql", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) if s.trim_start().to_uppercase().starts_with("SELECT") => {
                        out.push(s.clone())
                    }
                    _ => queries(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| queries(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_rows() {
    let cfg = common::fresh_clickhouse("dash").await;
    let dir = std::env::temp_dir().join(format!("revpulse-dash-{}", std::process::id()));
    write_dir(&dir, GenConfig::default(), 20_000).expect("generate");
    let (lines, _) = replay::read_dir(&dir).expect("read");
    let state = replay::run(lines, &Default::default(), 1, 100_000).expect("replay");
    let sink = ClickHouseSink::new(cfg.clone(), None);
    sink.write(&state.into_iter().map(|(k, v)| (k, Some(v))).collect::<Vec<_>>()).await.expect("load");

    // Each `<table>_current` view returns what the API's generated query does.
    for table in revpulse_pipelines::row::Table::METRICS {
        let keys: Vec<&str> = table.key_columns().iter().map(|(n, _)| *n).collect();
        let all = |sql: String| {
            let sink = &sink;
            let keys = keys.join(", ");
            async move {
                let sql = format!("SELECT * FROM ({sql}) ORDER BY {keys}");
                let mut cursor = sink.client().query_raw(&sql).fetch_bytes("TSV").expect("query starts");
                cursor.collect().await.unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
        };
        let view = all(format!("SELECT * FROM {}_current", table.name())).await;
        let query = all(revpulse_connectors::clickhouse::current_query(table, "1")).await;
        assert!(view == query, "{}_current differs from current_query", table.name());
    }

    let dash_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/json");
    let mut checked = 0;
    for entry in std::fs::read_dir(dash_dir).expect("dashboards dir") {
        let path = entry.expect("entry").path();
        let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("dashboard JSON");
        let mut qs = Vec::new();
        queries(&dash, &mut qs);
        let reads_clickhouse = dash.to_string().contains("grafana-clickhouse-datasource");
        assert_eq!(!qs.is_empty(), reads_clickhouse, "{}: ClickHouse panels and SQL go together", path.display());
        for q in qs {
            // Grafana substitutes variables client-side; do the same.
            let sql = q.replace("${tenant}", "dealer-000");
            let mut cursor = sink.client().query_raw(&sql).fetch_bytes("TSV").expect("query starts");
            let body = cursor.collect().await.unwrap_or_else(|e| panic!("{}: {sql}: {e}", path.display()));
            assert!(!body.is_empty(), "{}: no rows from {sql}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} queries");

    // The SQL of the Grafana alert rules runs too (its rows depend on the
    // current month, which this data set need not cover).
    let alert_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/provisioning/alerting");
    let mut alert_queries = 0;
    for entry in std::fs::read_dir(alert_dir).expect("alerting dir") {
        let path = entry.expect("entry").path();
        let mut qs = Vec::new();
        queries(&yaml_as_json(&path), &mut qs);
        for sql in qs {
            let mut cursor = sink.client().query_raw(&sql).fetch_bytes("TSV").expect("query starts");
            cursor.collect().await.unwrap_or_else(|e| panic!("{}: {sql}: {e}", path.display()));
            alert_queries += 1;
        }
    }
    assert!(alert_queries >= 1, "no alert rule SQL found in {alert_dir}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A YAML file as JSON, through Debian's python3-yaml (which
/// `scripts/setup.sh` installs with docker-compose).
fn yaml_as_json(path: &std::path::Path) -> Value {
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", "import sys, json, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"])
        .arg(path)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("YAML as JSON")
}
