//! Writes row changes as versioned upserts and reads current state back.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clickhouse::Client;
use revpulse_pipelines::row::{ColType, RowKey, RowVals, Table};

use super::rowbinary::{columns, encode_row};
use super::ClickHouseConfig;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("clickhouse config: {0}")]
    Config(String),
    #[error("clickhouse returned malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("sink shut down before the write was acknowledged")]
    Shutdown,
}

/// ClickHouse exception codes that retrying cannot fix: the table, column,
/// database or credentials are wrong, or the statement does not fit the
/// schema. Anything else (connection refused, timeouts, too many parts,
/// memory limits, a server restarting) may pass and is retried.
const PERMANENT_CODES: &[u32] = &[
    16,  // NO_SUCH_COLUMN_IN_TABLE
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    60,  // UNKNOWN_TABLE
    62,  // SYNTAX_ERROR
    81,  // UNKNOWN_DATABASE
    192, // UNKNOWN_USER
    193, // WRONG_PASSWORD
    497, // ACCESS_DENIED
    516, // AUTHENTICATION_FAILED
];

/// The exception code of a ClickHouse error response (`Code: 60. DB::…`).
fn exception_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + "Code: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl SinkError {
    /// Whether retrying the same write may succeed (vector's sinks make the
    /// same split). A permanent error stops the sink: the rows stay
    /// unacknowledged, nothing is committed, and the error is reported
    /// instead of being retried forever.
    pub fn retryable(&self) -> bool {
        match self {
            SinkError::ClickHouse(clickhouse::error::Error::BadResponse(m)) => {
                exception_code(m).is_none_or(|c| !PERMANENT_CODES.contains(&c))
            }
            SinkError::ClickHouse(_) => true,
            SinkError::Config(_) | SinkError::Json(_) | SinkError::Shutdown => false,
        }
    }
}

/// A client for `cfg`, with validation off: RowBinary and client-side `?`
/// binding work on ClickHouse 18.16 as well as on current releases.
pub fn client(cfg: &ClickHouseConfig) -> Client {
    let mut c =
        Client::default().with_url(&cfg.url).with_database(&cfg.database).with_user(&cfg.user).with_validation(false);
    if !cfg.password.is_empty() {
        c = c.with_password(&cfg.password);
    }
    c
}

/// Issues strictly increasing row versions that also increase across
/// restarts: wall-clock microseconds, bumped past the last one issued.
#[derive(Debug, Default)]
pub struct Versioner {
    last: AtomicU64,
}

impl Versioner {
    pub fn next(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0);
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let v = now.max(prev + 1);
            match self.last.compare_exchange_weak(prev, v, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return v,
                Err(p) => prev = p,
            }
        }
    }
}

/// The ClickHouse sink.
pub struct ClickHouseSink {
    client: Client,
    cfg: ClickHouseConfig,
    versions: Versioner,
    healthy: AtomicBool,
    metrics: Option<Metrics>,
}

impl ClickHouseSink {
    pub fn new(cfg: ClickHouseConfig, metrics: Option<Metrics>) -> Self {
        ClickHouseSink {
            client: client(&cfg),
            cfg,
            versions: Versioner::default(),
            healthy: AtomicBool::new(true),
            metrics,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The pipeline metrics this sink records into, if any.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// Whether the last write (or ping) succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub async fn ping(&self) -> bool {
        let ok = self.client.query("SELECT 1").fetch_one::<u8>().await.is_ok();
        self.healthy.store(ok, Ordering::Relaxed);
        ok
    }

    /// Writes net row changes (sorted by key, as `net_changes` returns them)
    /// in one INSERT per table, all with one fresh version. Re-writing the
    /// same changes is harmless: the newer version carries the same values.
    pub async fn write(&self, rows: &[(RowKey, Option<RowVals>)]) -> Result<(), SinkError> {
        let version = self.versions.next();
        for chunk in rows.chunk_by(|a, b| a.0.table == b.0.table) {
            let table = chunk[0].0.table;
            let mut buf = Vec::with_capacity(chunk.len() * 64);
            for (key, vals) in chunk {
                encode_row(&mut buf, key, vals.as_ref(), version);
            }
            let sql = format!("INSERT INTO {} ({}) FORMAT RowBinary", table.name(), columns(table));
            let mut insert = self.client.insert_formatted_with(sql);
            insert.send(Bytes::from(buf)).await?;
            insert.end().await?;
        }
        Ok(())
    }

    /// [`Self::write`], retried with capped exponential backoff until it
    /// succeeds, `stop` is set, or the error is not [`SinkError::retryable`].
    /// Records sink metrics and health.
    pub async fn write_retrying(&self, rows: &[(RowKey, Option<RowVals>)], stop: &AtomicBool) -> Result<(), SinkError> {
        let mut delay = Duration::from_millis(self.cfg.retry_initial_ms.max(1));
        let max = Duration::from_millis(self.cfg.retry_max_ms.max(1));
        loop {
            let started = Instant::now();
            match self.write(rows).await {
                Ok(()) => {
                    self.healthy.store(true, Ordering::Relaxed);
                    if let Some(m) = &self.metrics {
                        m.sink_latency.observe(started.elapsed().as_secs_f64());
                        m.sunk_rows.inc_by(rows.len() as u64);
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.healthy.store(false, Ordering::Relaxed);
                    if let Some(m) = &self.metrics {
                        m.sink_errors.inc();
                    }
                    if !e.retryable() {
                        tracing::error!(error = %e, rows = rows.len(), "clickhouse write failed permanently; not retried");
                        return Err(e);
                    }
                    tracing::warn!(error = %e, rows = rows.len(), retry_in_ms = delay.as_millis() as u64, "clickhouse write failed; retrying");
                    if stop.load(Ordering::Relaxed) {
                        return Err(SinkError::Shutdown);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(max);
                }
            }
        }
    }

    /// Waits until no insert that began at least `age` ago runs on the
    /// server, for at most `limit` (false: some still ran). A process
    /// killed while writing leaves its last INSERT to the server, which
    /// may land after a successor listed the live keys; the successor
    /// waits for its predecessor's writes before it lists. (Inserts that
    /// began later are not a dead predecessor's. An HTTP insert shows in
    /// `system.processes` once the server has its whole body — the window
    /// in which a dead client's write can still land; a body cut off by
    /// the death is discarded. Any table's inserts count: the server's
    /// other clients can only make the wait longer, up to `limit`.)
    pub async fn settle_older_inserts(&self, age: Duration, limit: Duration) -> Result<bool, SinkError> {
        let started = std::time::Instant::now();
        loop {
            let older = (age + started.elapsed()).as_secs_f64();
            let sql = format!(
                "SELECT count() FROM system.processes WHERE query LIKE 'INSERT INTO %' AND elapsed >= {older:.3}"
            );
            let running: u64 = self.client.query(&sql).fetch_one().await?;
            if running == 0 {
                return Ok(true);
            }
            if started.elapsed() >= limit {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The keys of every live (not deleted) row of `table`.
    pub async fn live_keys(&self, table: Table) -> Result<Vec<RowKey>, SinkError> {
        // Key columns only, unordered: a start reads every live key, and
        // the values would only be parsed to be dropped.
        Ok(self
            .rows(table, false)
            .await?
            .iter()
            .map(|row| {
                RowKey::new(table, table.key_columns().iter().map(|(n, ty)| ty.cell_from_json(row.get(*n))).collect())
            })
            .collect())
    }

    /// The current rows of a retention state table ([`Table::STATE`]:
    /// `String` and `UInt64` columns only), to restore at start-up.
    pub async fn state_rows(&self, table: Table) -> Result<Vec<(RowKey, RowVals)>, SinkError> {
        Ok(self
            .current_rows(table)
            .await?
            .iter()
            .map(|row| {
                let key = table.key_columns().iter().map(|(n, ty)| ty.cell_from_json(row.get(*n))).collect();
                let vals = table.value_columns().iter().map(|(n, ty)| ty.cell_from_json(row.get(*n))).collect();
                (RowKey::new(table, key), vals)
            })
            .collect())
    }

    /// The current rows of `table` as JSON objects shaped like
    /// `replay --output json` (with `"table"`), sorted by key columns.
    pub async fn current_rows(&self, table: Table) -> Result<Vec<serde_json::Value>, SinkError> {
        self.rows(table, true).await
    }

    /// The current rows of `table`, with their value columns and in key
    /// order when `values`, else their key columns only.
    async fn rows(&self, table: Table, values: bool) -> Result<Vec<serde_json::Value>, SinkError> {
        let keys: Vec<&str> = table.key_columns().iter().map(|(n, _)| *n).collect();
        // Minutes render as `replay --output json` does: YYYY-MM-DDTHH:MM:00Z.
        // Not with formatDateTime: its `%M` is the minute on 18.16 and the
        // month's name on current releases.
        let selected: Vec<String> = table
            .key_columns()
            .iter()
            .map(|(n, ty)| match ty {
                ColType::DateTime => format!("concat(replaceOne(toString({n}, 'UTC'), ' ', 'T'), 'Z') AS {n}"),
                _ => (*n).to_owned(),
            })
            .collect();
        let vals: String = table
            .value_columns()
            .iter()
            .filter(|_| values)
            .map(|(n, ty)| match ty {
                // Instants to the second, as `replay --output json` prints them.
                ColType::NullableDateTime => {
                    format!(
                        ", concat(replaceOne(toString(argMax(tuple({n}), version).1, 'UTC'), ' ', 'T'), 'Z') AS {n}"
                    )
                }
                ColType::DateTime => {
                    format!(", concat(replaceOne(toString(argMax({n}, version), 'UTC'), ' ', 'T'), 'Z') AS {n}")
                }
                _ => format!(", {}", super::current::latest(n, *ty)),
            })
            .collect();
        let order = if values { format!(" ORDER BY {}", keys.join(", ")) } else { String::new() };
        let sql = format!(
            "SELECT {s}{vals} FROM {t} GROUP BY {k} HAVING argMax(deleted, version) = 0{order}",
            s = selected.join(", "),
            k = keys.join(", "),
            t = table.name(),
        );
        let mut cursor = self
            .client
            .query_raw(&sql)
            .with_setting("output_format_json_quote_64bit_integers", "0")
            .fetch_bytes("JSONEachRow")?;
        let bytes = cursor.collect().await?;
        let floats: Vec<&str> = table
            .value_columns()
            .iter()
            .filter(|(_, ty)| matches!(ty, ColType::Float64 | ColType::NullableFloat64))
            .map(|(n, _)| *n)
            .collect();
        let mut out = Vec::new();
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let mut obj = serde_json::Map::new();
            obj.insert("table".into(), table.name().into());
            if let serde_json::Value::Object(cols) = serde_json::from_slice(line)? {
                obj.extend(cols);
            }
            // ClickHouse prints integral floats without a fraction (`52`); keep them floats.
            for name in &floats {
                if let Some(v) = obj.get_mut(*name) {
                    if let Some(f) = v.as_f64() {
                        *v = serde_json::Value::from(f);
                    }
                }
            }
            out.push(serde_json::Value::Object(obj));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(m: &str) -> SinkError {
        SinkError::ClickHouse(clickhouse::error::Error::BadResponse(m.to_owned()))
    }

    #[test]
    fn schema_and_credential_errors_are_not_retried() {
        assert!(!bad("Code: 60. DB::Exception: Table revpulse.x doesn't exist").retryable());
        assert!(!bad("Code: 516. DB::Exception: default: Authentication failed").retryable());
        assert!(bad("Code: 252. DB::Exception: Too many parts").retryable());
        assert!(bad("502 Bad Gateway").retryable());
        assert!(SinkError::ClickHouse(clickhouse::error::Error::TimedOut).retryable());
        assert!(!SinkError::Shutdown.retryable());
    }

    #[test]
    fn exception_codes_are_read_from_the_message() {
        assert_eq!(exception_code("Code: 62, e.displayText() = DB::Exception: Syntax error"), Some(62));
        assert_eq!(exception_code("no code here"), None);
    }
}
