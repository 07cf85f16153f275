//! The revpulse configuration: one TOML file (unknown keys rejected) with
//! environment-variable overrides.
//!
//! Precedence, lowest first: built-in defaults, the file, `REVPULSE__…`
//! variables, command-line flags. A variable names a field by its path with
//! `__` between segments, case-insensitively: `REVPULSE__CLICKHOUSE__PASSWORD`
//! sets `[clickhouse] password`, `REVPULSE__KAFKA__TOPICS__PAYMENTS` sets
//! `[kafka.topics] payments`. Values are taken as strings where the field is
//! a string and as TOML values otherwise (`8`, `true`, `[1, 2]`,
//! `[{ key = "k", tenant = "*" }]`). Under `kafka.properties` the segment
//! after `PROPERTIES` names a librdkafka property with `_` for `.`
//! (`REVPULSE__KAFKA__PROPERTIES__SASL_PASSWORD` → `sasl.password`).

use std::path::Path;

use revpulse_api::ApiConfig;
use revpulse_connectors::clickhouse::ClickHouseConfig;
use revpulse_connectors::kafka::KafkaConfig;
use revpulse_pipelines::config::MetricsConfig;
use serde::{Deserialize, Serialize};

/// Everything `revpulse run` needs. Every section and field is optional and
/// defaults to a local single-machine setup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Kafka source and dead-letter topic.
    pub kafka: KafkaConfig,
    /// ClickHouse sink.
    pub clickhouse: ClickHouseConfig,
    /// Query API.
    pub api: ApiConfig,
    /// Metric family settings (weights, windows).
    pub metrics: MetricsConfig,
    /// Dataflow and sink tuning.
    pub pipeline: PipelineConfig,
    /// Durable state: checkpoints (docs/guarantees.md, "Checkpoints").
    pub state: StateConfig,
}

/// Durable state: where and how often checkpoints are written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Write checkpoints, and resume from the last one at start.
    pub checkpoints: bool,
    /// The state directory. Unset: `revpulse run` uses `revpulse-state` in
    /// its working directory, `revpulse demo` a fresh temporary directory
    /// (its embedded broker does not outlive it); an embedding program
    /// that leaves it unset writes no checkpoints.
    pub dir: Option<String>,
    /// Milliseconds between checkpoints (one is also written at a clean
    /// stop).
    pub interval_ms: u64,
    /// Discard the state directory and rebuild from what the topics hold
    /// (`--rebuild`; not a file setting).
    #[serde(skip)]
    pub rebuild: bool,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig { checkpoints: true, dir: None, interval_ms: 1_000, rebuild: false }
    }
}

impl StateConfig {
    /// The state directory, when checkpoints are on.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref().filter(|_| self.checkpoints).map(Path::new)
    }
}

/// Dataflow and sink tuning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Most row batches handed to the sink and not yet acknowledged; when
    /// full, consumption pauses (bounded memory during ClickHouse outages).
    pub max_in_flight_batches: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig { max_in_flight_batches: 8 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("parsing {path}: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("environment variable {var}: {detail}")]
    Env { var: String, detail: String },
    #[error("configuration (file and environment): {0}")]
    Merged(toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Prefix of the variables that override configuration fields.
pub const ENV_PREFIX: &str = "REVPULSE__";

impl Config {
    /// The file alone, without environment overrides (tests, examples).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.display().to_string(), source })
    }

    /// What every command uses: defaults, then the file (if any), then the
    /// `REVPULSE__…` variables of the process environment; then validated.
    pub fn resolve(path: Option<&Path>) -> Result<Config, ConfigError> {
        // Variables that are not UTF-8 cannot name a field; skip them.
        Config::resolve_with(
            path,
            std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    pub fn resolve_with(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?;
                // Parse as the typed config first so file errors name the file.
                toml::from_str::<Config>(&text)
                    .map_err(|source| ConfigError::Parse { path: p.display().to_string(), source })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|source| ConfigError::Parse { path: p.display().to_string(), source })?
            }
            None => toml::Table::new(),
        };
        // The default config as TOML tells string fields apart; optional
        // sections are filled in so their fields are typed too.
        let mut typed = Config::default();
        typed.kafka.schema_registry = Some(crate::config::registry_for_typing());
        typed.metrics.retention = revpulse_pipelines::config::RetentionConfig {
            rar_lateness_secs: Some(0),
            revenue_per_minute_lateness_secs: Some(0),
            attribution_lateness_secs: Some(0),
            subject_idle_secs: Some(0),
        };
        let defaults = toml::Table::try_from(typed).unwrap_or_default();
        let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
        vars.sort();
        for (var, raw) in vars {
            apply_override(&mut table, &defaults, &var, &raw)?;
        }
        let cfg: Config = toml::Value::Table(table).try_into().map_err(ConfigError::Merged)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!("api.listen {:?} is not an address like 127.0.0.1:8080", self.api.listen));
        }
        for (i, k) in self.api.keys.iter().enumerate() {
            if k.key.is_some() == k.key_sha256.is_some() {
                return bad(format!("api.keys[{i}] needs exactly one of key and key_sha256"));
            }
            if k.tenant.is_empty() {
                return bad(format!("api.keys[{i}].tenant is empty (use \"*\" for every tenant)"));
            }
        }
        if !self.clickhouse.url.starts_with("http://") && !self.clickhouse.url.starts_with("https://") {
            return bad(format!("clickhouse.url {:?} must start with http:// or https://", self.clickhouse.url));
        }
        if self.clickhouse.database.is_empty()
            || !self.clickhouse.database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return bad(format!("clickhouse.database {:?}: letters, digits and _ only", self.clickhouse.database));
        }
        if self.kafka.brokers.trim().is_empty() {
            return bad("kafka.brokers is empty".into());
        }
        if self.kafka.max_batch_messages == 0 {
            return bad("kafka.max_batch_messages must be at least 1".into());
        }
        if let Some(topic) = self.kafka.needs_registry() {
            return bad(format!("kafka.formats.{topic} is avro but kafka.schema_registry.url is not set"));
        }
        if let Some(r) = &self.kafka.schema_registry {
            // No TLS client is compiled in (docs/configuration.md, "Avro and the schema registry").
            if !r.url.starts_with("http://") {
                return bad(format!("kafka.schema_registry.url {:?} must start with http://", r.url));
            }
        }
        Ok(())
    }

    /// The configuration as TOML with secrets replaced, for `config check`.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        if !c.clickhouse.password.is_empty() {
            c.clickhouse.password = "<redacted>".into();
        }
        c.clickhouse.url = redact_userinfo(&c.clickhouse.url);
        for k in &mut c.api.keys {
            if k.key.is_some() {
                k.key = Some("<redacted>".into());
            }
        }
        if let Some(r) = c.kafka.schema_registry.as_mut() {
            if r.password.is_some() {
                r.password = Some("<redacted>".into());
            }
            r.url = redact_userinfo(&r.url);
        }
        for (k, v) in c.kafka.properties.iter_mut() {
            let secret = ["password", "secret", "key", "token", "sasl.oauthbearer.config", "sasl.jaas.config"];
            if secret.iter().any(|s| k.contains(s)) {
                *v = "<redacted>".into();
            }
        }
        toml::to_string(&c).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

/// Typed stand-in for the optional registry section: every field present,
/// strings where the real ones are strings.
pub(crate) fn registry_for_typing() -> revpulse_connectors::schema_registry::SchemaRegistryConfig {
    revpulse_connectors::schema_registry::SchemaRegistryConfig {
        username: Some(String::new()),
        password: Some(String::new()),
        ..Default::default()
    }
}

/// `scheme://user:pass@host` → `scheme://<redacted>@host`.
fn redact_userinfo(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => format!("{}<redacted>{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// Sets the field `var` names in `table`. `defaults` (the default config as
/// TOML) tells string fields apart, so `REVPULSE__CLICKHOUSE__PASSWORD=123`
/// stays the string "123".
fn apply_override(table: &mut toml::Table, defaults: &toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let err = |detail: String| ConfigError::Env { var: var.to_owned(), detail };
    let rest = &var[ENV_PREFIX.len()..];
    let mut path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    if path.iter().any(String::is_empty) {
        return Err(err("empty path segment (use __ between field names)".into()));
    }
    if path.len() == 3 && path[0] == "kafka" && path[1] == "properties" {
        path[2] = path[2].replace('_', ".");
    }
    let Some((leaf, parents)) = path.split_last() else {
        return Err(err("names no field".into()));
    };
    let mut dtable = Some(defaults);
    let mut node = table;
    for seg in parents {
        dtable = dtable.and_then(|t| t.get(seg)).and_then(toml::Value::as_table);
        let entry = node.entry(seg.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| err(format!("{seg} is not a section")))?;
    }
    let leaf_default = dtable.and_then(|t| t.get(leaf));
    let is_string = matches!(leaf_default, Some(toml::Value::String(_)))
        || (parents.len() == 2 && parents[0] == "kafka" && parents[1] == "properties");
    let value = if is_string {
        toml::Value::String(raw.to_owned())
    } else {
        match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
            Err(_) => toml::Value::String(raw.to_owned()),
        }
    };
    node.insert(leaf.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let text = include_str!("../config/revpulse.example.toml");
        let c: Config = toml::from_str(text).unwrap_or_else(|e| panic!("example config: {e}"));
        assert_eq!(c.metrics, MetricsConfig::default());
        assert_eq!(c.kafka, KafkaConfig::default());
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("revpulse-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[kafka]\nbrokers = \"file:9092\"\n[clickhouse]\npassword = \"file\"\n")
            .unwrap_or_default();
        let c = Config::resolve_with(
            Some(&file),
            env(&[
                ("REVPULSE__CLICKHOUSE__PASSWORD", "123"),
                ("REVPULSE__PIPELINE__MAX_IN_FLIGHT_BATCHES", "3"),
                ("REVPULSE__KAFKA__TOPICS__PAYMENTS", "pay.v2"),
                ("REVPULSE__KAFKA__PROPERTIES__SASL_PASSWORD", "s3cret"),
                ("REVPULSE__API__KEYS", "[{ key = \"k\", tenant = \"*\" }]"),
                ("REVPULSE__METRICS__LEAD_SCORE__MARKET_SCORES__US_WEST", "8"),
                ("REVPULSE__KAFKA__SCHEMA_REGISTRY__URL", "http://u:pw@sr:8081"),
                ("REVPULSE__KAFKA__SCHEMA_REGISTRY__TIMEOUT_MS", "3000"),
                ("REVPULSE__KAFKA__SCHEMA_REGISTRY__PASSWORD", "4567"),
                ("REVPULSE__KAFKA__FORMATS__PAYMENTS", "avro"),
                ("OTHER__CLICKHOUSE__URL", "ignored"),
            ]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.kafka.brokers, "file:9092");
        assert_eq!(c.clickhouse.password, "123");
        assert_eq!(c.pipeline.max_in_flight_batches, 3);
        assert_eq!(c.kafka.topics.payments, "pay.v2");
        assert_eq!(c.kafka.properties.get("sasl.password").map(String::as_str), Some("s3cret"));
        assert_eq!(c.api.keys.len(), 1);
        assert_eq!(c.metrics.lead_score.market_scores.get("us_west"), Some(&8.0));
        let registry = c.kafka.schema_registry.clone().unwrap_or_default();
        assert_eq!((registry.timeout_ms, registry.password.as_deref()), (3000, Some("4567")));
        assert_eq!(c.kafka.formats.payments, revpulse_connectors::schema_registry::ValueFormat::Avro);
        let printed = c.redacted_toml();
        for secret in ["s3cret", "\"123\"", "4567", "u:pw"] {
            assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        }
        assert!(printed.contains("http://<redacted>@sr:8081"));

        let typo = Config::resolve_with(Some(&file), env(&[("REVPULSE__CLICKHOUSE__PASWORD", "x")]));
        assert!(matches!(typo, Err(ConfigError::Merged(_))), "{typo:?}");
        let bad = Config::resolve_with(None, env(&[("REVPULSE__API__LISTEN", "nowhere")]));
        assert!(matches!(bad, Err(ConfigError::Invalid(_))), "{bad:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Every field has a line in the example file, which is the
    /// field-by-field documentation users copy from.
    #[test]
    fn example_config_documents_every_field() {
        fn paths(prefix: &str, t: &toml::Table, out: &mut Vec<String>) {
            for (k, v) in t {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                if let toml::Value::Table(inner) = v {
                    paths(&p, inner, out);
                }
                out.push(p);
            }
        }
        let mut defaults = Config::default();
        defaults.kafka.schema_registry = Some(Default::default());
        let mut want = Vec::new();
        paths("", &toml::Table::try_from(&defaults).unwrap_or_default(), &mut want);
        let text = include_str!("../config/revpulse.example.toml");
        // Uncomment every `# key = …` line so optional fields count too.
        let uncommented: String = text
            .lines()
            .map(|l| l.strip_prefix("# ").filter(|r| r.contains(" = ") || r.starts_with('[')).unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let example: toml::Table = toml::from_str(&uncommented).unwrap_or_else(|e| panic!("example: {e}"));
        let mut have = Vec::new();
        paths("", &example, &mut have);
        let missing: Vec<_> = want.iter().filter(|p| !have.contains(p)).collect();
        assert!(missing.is_empty(), "fields missing from config/revpulse.example.toml: {missing:?}");
    }

    #[test]
    fn retention_lateness_from_the_environment() {
        let env = [("REVPULSE__METRICS__RETENTION__RAR_LATENESS_SECS".to_owned(), "2678400".to_owned())];
        let cfg = Config::resolve_with(None, env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.metrics.retention.rar_lateness_secs, Some(2_678_400));
        assert_eq!(cfg.metrics.retention.attribution_lateness_secs, None);
    }

    #[test]
    fn empty_file_is_defaults_and_unknown_keys_fail() {
        assert_eq!(toml::from_str::<Config>("").ok(), Some(Config::default()));
        assert!(toml::from_str::<Config>("[kafka]\nbrokerz = \"x\"").is_err());
        let c: Config = toml::from_str("[kafka]\nbrokers = \"k:9092\"\n[[api.keys]]\nkey = \"s\"\ntenant = \"*\"")
            .unwrap_or_default();
        assert_eq!(c.kafka.brokers, "k:9092");
        assert_eq!(c.api.keys.len(), 1);
    }
}
