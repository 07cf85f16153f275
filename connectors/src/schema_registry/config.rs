use revpulse_pipelines::event::Topic;
use serde::{Deserialize, Serialize};

/// How the values of a topic are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueFormat {
    /// UTF-8 JSON, one event per message (SPEC §2).
    #[default]
    Json,
    /// Confluent-framed Avro; needs `kafka.schema_registry`.
    Avro,
}

/// Value format per input topic (`json` or `avro`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValueFormats {
    pub impressions: ValueFormat,
    pub conversations: ValueFormat,
    pub messages: ValueFormat,
    pub payments: ValueFormat,
    pub ro_updates: ValueFormat,
    pub deals: ValueFormat,
}

impl ValueFormats {
    pub fn get(&self, topic: Topic) -> ValueFormat {
        match topic {
            Topic::Impressions => self.impressions,
            Topic::Conversations => self.conversations,
            Topic::Messages => self.messages,
            Topic::Payments => self.payments,
            Topic::RoUpdates => self.ro_updates,
            Topic::Deals => self.deals,
        }
    }

    /// The first topic read as Avro, if any.
    pub fn first_avro(&self) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| self.get(*t) == ValueFormat::Avro)
    }
}

/// A schema registry speaking the Confluent REST API (Confluent Schema
/// Registry, Redpanda, Apicurio in compatibility mode, Karapace).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemaRegistryConfig {
    /// Base URL, e.g. `http://schema-registry:8081` (plain HTTP; put a TLS
    /// terminating proxy in front of an HTTPS-only registry).
    pub url: String,
    /// Basic-auth user, if the registry needs one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Basic-auth password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Timeout of one registry request, in milliseconds. Schemas are cached
    /// after their first lookup, so this is paid once per schema id.
    pub timeout_ms: u64,
}

impl Default for SchemaRegistryConfig {
    fn default() -> Self {
        SchemaRegistryConfig { url: "http://127.0.0.1:8081".into(), username: None, password: None, timeout_ms: 5_000 }
    }
}

impl std::fmt::Debug for SchemaRegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistryConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}
