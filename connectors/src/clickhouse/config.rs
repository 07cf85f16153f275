use serde::{Deserialize, Serialize};

/// Where and how revpulse writes its metric tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP endpoint of the ClickHouse server.
    pub url: String,
    /// Database that `migrate` creates and the sink writes to (letters,
    /// digits and `_` only).
    pub database: String,
    /// ClickHouse user.
    pub user: String,
    /// Password of `user` (empty: none).
    pub password: String,
    /// First delay before retrying a failed write, in milliseconds; it
    /// doubles on every further failure.
    pub retry_initial_ms: u64,
    /// Upper bound of the retry delay, in milliseconds.
    pub retry_max_ms: u64,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            database: "revpulse".into(),
            user: "default".into(),
            password: String::new(),
            retry_initial_ms: 100,
            retry_max_ms: 5_000,
        }
    }
}
