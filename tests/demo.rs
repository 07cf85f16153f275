//! `revpulse demo` looks like a live business: its history covers the 90
//! days up to now (every month of them has data), its live stream carries
//! the wall clock (revenue per minute has rows in the last ten minutes), and
//! no row of any table lies in the future, after 30 s of a demo — but for
//! what the future is (deals expected to close later: `expected_close` and
//! `forecast_monthly`), which must be there.

mod common;

use std::process::Command;

use revpulse_connectors::clickhouse::ClickHouseSink;

async fn tsv(sink: &ClickHouseSink, sql: &str) -> String {
    let mut cursor = sink.client().query_raw(sql).fetch_bytes("TSV").expect("query starts");
    let body = cursor.collect().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    String::from_utf8_lossy(&body).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_on_the_wall_clock() {
    let cfg = common::fresh_clickhouse("demo").await;
    let port = common::free_port();
    let out = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            Command::new(env!("CARGO_BIN_EXE_revpulse"))
                .args(["demo", "--duration", "30", "--rate", "1000", "--backlog", "20000"])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--clickhouse-url", &cfg.url, "--database", &cfg.database])
                .env_remove("REVPULSE_CONFIG")
                .output()
                .expect("demo runs")
        }
    })
    .await
    .expect("demo thread");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let sink = ClickHouseSink::new(cfg.clone(), None);
    let db = &cfg.database;
    let columns = tsv(
        &sink,
        &format!(
            "SELECT table, name, type FROM system.columns WHERE database = '{db}' \
             AND type IN ('Date', 'DateTime') AND table NOT LIKE '%_current' AND table NOT LIKE '.%' ORDER BY table, name"
        ),
    )
    .await;
    let mut checked = 0;
    for line in columns.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let [table, column, ty] = cols[..] else { panic!("system.columns row {line:?}") };
        let bound = if ty == "Date" { "today()" } else { "now()" };
        let future = tsv(&sink, &format!("SELECT count() FROM {db}.{table} WHERE {column} > {bound}")).await;
        let expected = matches!((table, column), ("deal_health", "expected_close") | ("forecast_monthly", "month"));
        if expected {
            assert_ne!(future, "0", "{table}.{column}: no open deal expected to close later");
        } else {
            assert_eq!(future, "0", "{table}.{column}: rows in the future");
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} time columns checked: {columns}");

    let recent =
        tsv(&sink, &format!("SELECT count() FROM {db}.revenue_per_minute_current WHERE minute >= now() - 600")).await;
    assert!(recent.parse::<u64>().expect("count") > 0, "no revenue per minute in the last ten minutes");

    let missing = tsv(
        &sink,
        &format!(
            "SELECT count() FROM (SELECT DISTINCT toStartOfMonth(today() - number) AS month FROM numbers(90)) \
             WHERE month NOT IN (SELECT month FROM {db}.rar_monthly_current)"
        ),
    )
    .await;
    assert_eq!(missing, "0", "months of the last 90 days without RaR");
}
