//! Shared helpers of the integration tests: a real ClickHouse (started by
//! `scripts/clickhouse.sh` when none answers) with a fresh database per test.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use revpulse::demo::ensure_clickhouse;
use revpulse_connectors::clickhouse::{migrate, ClickHouseConfig, ClickHouseSink};
use revpulse_pipelines::row::Table;

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// A migrated, empty database of its own.
pub async fn fresh_clickhouse(name: &str) -> ClickHouseConfig {
    let mut cfg = ClickHouseConfig::default();
    if let Ok(url) = std::env::var("REVPULSE_TEST_CLICKHOUSE_URL") {
        cfg.url = url;
    }
    ensure_clickhouse(&cfg).await.expect("a ClickHouse server for integration tests");
    cfg.database = format!("rp_test_{name}_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let admin = ClickHouseSink::new(ClickHouseConfig { database: "default".into(), ..cfg.clone() }, None);
    admin
        .client()
        .query(&format!("DROP DATABASE IF EXISTS {}", cfg.database))
        .execute()
        .await
        .expect("drop test database");
    migrate(&cfg).await.expect("migrations apply");
    cfg
}

/// Every current row of every metric table, as `replay --output json` rows.
pub async fn clickhouse_rows(cfg: &ClickHouseConfig) -> Vec<serde_json::Value> {
    let sink = ClickHouseSink::new(cfg.clone(), None);
    let mut out = Vec::new();
    for t in Table::ALL {
        out.extend(sink.current_rows(t).await.expect("read current rows"));
    }
    out
}
