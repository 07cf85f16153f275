//! The revpulse configuration file (TOML, unknown keys rejected).

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
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.display().to_string(), source })
    }
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
