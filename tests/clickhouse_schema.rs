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

/// A key whose newest version holds NULL reads NULL, not an older number
/// (`argMax` alone skips NULLs), through the view and the generated query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_in_the_newest_version_is_current() {
    let cfg = common::fresh_clickhouse("nullable").await;
    let sink = ClickHouseSink::new(cfg.clone(), None);
    sink.client()
        .query_raw(
            "INSERT INTO experiment_lift VALUES ('t', 'e', 1.5, 2.0, 3.0, 0.1, 1, 0), ('t', 'e', NULL, NULL, NULL, NULL, 2, 0)",
        )
        .execute()
        .await
        .expect("insert");
    let generated = revpulse_connectors::clickhouse::current_query(Table::ExperimentLift, "1");
    for sql in ["SELECT * FROM experiment_lift_current".to_owned(), generated] {
        let mut cursor = sink.client().query_raw(&sql).fetch_bytes("TSV").expect("query starts");
        let body = cursor.collect().await.expect("query");
        assert_eq!(String::from_utf8_lossy(&body), "t\te\t\\N\t\\N\t\\N\t\\N\n", "{sql}");
    }
    let rows = sink.current_rows(Table::ExperimentLift).await.expect("rows");
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["lift"].is_null() && rows[0]["p_value"].is_null(), "{}", rows[0]);
}
