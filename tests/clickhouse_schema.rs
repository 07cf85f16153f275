//! The migrations in `schemas/clickhouse/` create exactly the columns the
//! sink writes (names, types and order of `Table` plus `version, deleted`),
//! and applying them again is a no-op; every metric table has its
//! `<table>_current` view with the table's key and value columns.

mod common;

use revpulse_connectors::clickhouse::{migrate, ClickHouseSink};
use revpulse_pipelines::row::Table;

#[derive(clickhouse::Row, serde::Deserialize)]
struct Column {
    name: String,
    #[serde(rename = "type")]
    ty: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_match_table_definitions_and_are_idempotent() {
    let cfg = common::fresh_clickhouse("schema").await;
    assert!(migrate(&cfg).await.expect("second run").is_empty(), "nothing left to apply");
    let sink = ClickHouseSink::new(cfg.clone(), None);
    for table in Table::all() {
        let cols: Vec<Column> = sink
            .client()
            .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
            .bind(&cfg.database)
            .bind(table.name())
            .fetch_all()
            .await
            .expect("columns");
        let actual: Vec<(String, String)> = cols.into_iter().map(|c| (c.name, c.ty)).collect();
        let mut expected: Vec<(String, String)> = table
            .key_columns()
            .iter()
            .chain(table.value_columns())
            .map(|(n, t)| ((*n).to_owned(), t.sql().to_owned()))
            .collect();
        expected.push(("version".into(), "UInt64".into()));
        expected.push(("deleted".into(), "UInt8".into()));
        assert_eq!(actual, expected, "table {}", table.name());
        if Table::METRICS.contains(&table) {
            let view = format!("{}_current", table.name());
            let cols: Vec<Column> = sink
                .client()
                .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
                .bind(&cfg.database)
                .bind(&view)
                .fetch_all()
                .await
                .expect("columns");
            let names: Vec<String> = cols.into_iter().map(|c| c.name).collect();
            let expected: Vec<String> = expected[..expected.len() - 2].iter().map(|(n, _)| n.clone()).collect();
            assert_eq!(names, expected, "view {view}");
        }
    }
}
