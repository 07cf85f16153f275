//! Idempotent schema migrations from `schemas/clickhouse/*.sql`.

use clickhouse::Client;

use super::sink::{client, SinkError};
use super::ClickHouseConfig;

/// Migrations in order: (name, SQL of `;`-terminated statements).
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_rar", include_str!("../../../schemas/clickhouse/0001_rar.sql")),
    ("0002_families", include_str!("../../../schemas/clickhouse/0002_families.sql")),
    ("0003_state", include_str!("../../../schemas/clickhouse/0003_state.sql")),
    ("0004_nullable_current", include_str!("../../../schemas/clickhouse/0004_nullable_current.sql")),
    ("0005_conversation_active", include_str!("../../../schemas/clickhouse/0005_conversation_active.sql")),
    ("0006_funnel", include_str!("../../../schemas/clickhouse/0006_funnel.sql")),
    ("0007_payment_recovery", include_str!("../../../schemas/clickhouse/0007_payment_recovery.sql")),
    ("0008_watchlist_coverage", include_str!("../../../schemas/clickhouse/0008_watchlist_coverage.sql")),
    ("0009_deals", include_str!("../../../schemas/clickhouse/0009_deals.sql")),
];

/// Splits a migration into statements, dropping `--` comment lines.
pub fn statements(sql: &str) -> Vec<String> {
    let text: String = sql.lines().filter(|l| !l.trim_start().starts_with("--")).map(|l| format!("{l}\n")).collect();
    text.split(";\n").map(str::trim).filter(|s| !s.is_empty()).map(|s| s.trim_end_matches(';').to_owned()).collect()
}

/// Creates the database and applies every migration not yet recorded in
/// `schema_migrations`. Every statement is `IF NOT EXISTS` (or, to replace
/// a view, `DROP … IF EXISTS` before it, 18.16 having no `CREATE OR
/// REPLACE VIEW`), so a crash half-way is repaired by the next run;
/// processes migrating at once may leave such a view missing for a moment.
/// Returns the names applied now.
pub async fn migrate(cfg: &ClickHouseConfig) -> Result<Vec<String>, SinkError> {
    if cfg.database.is_empty() || !cfg.database.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
        return Err(SinkError::Config(format!("database name {:?} must be [A-Za-z0-9_]+", cfg.database)));
    }
    let server: Client = client(cfg).with_database("default");
    server.query_raw(&format!("CREATE DATABASE IF NOT EXISTS {}", cfg.database)).execute().await?;
    let db = client(cfg);
    db.query_raw("CREATE TABLE IF NOT EXISTS schema_migrations (name String, applied_at DateTime) ENGINE = MergeTree ORDER BY name")
        .execute()
        .await?;
    let applied: Vec<String> = db.query("SELECT name FROM schema_migrations").fetch_all().await?;
    let mut now = Vec::new();
    for (name, sql) in MIGRATIONS {
        if applied.iter().any(|a| a == name) {
            continue;
        }
        for stmt in statements(sql) {
            db.query_raw(&stmt).execute().await?;
        }
        db.query("INSERT INTO schema_migrations (name, applied_at) VALUES (?, now())").bind(*name).execute().await?;
        now.push((*name).to_owned());
    }
    Ok(now)
}
