use std::collections::BTreeMap;

use revpulse_pipelines::event::Topic;
use serde::{Deserialize, Serialize};

use crate::schema_registry::{SchemaRegistryConfig, ValueFormats};

/// Kafka topic names of the six inputs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicNames {
    /// Impressions (SPEC §2.1).
    pub impressions: String,
    /// Sales conversation events (SPEC §2.2).
    pub conversations: String,
    /// Outbound/inbound messages and experiment assignments (SPEC §2.3).
    pub messages: String,
    /// Payment webhooks (SPEC §2.4).
    pub payments: String,
    /// Dealership repair-order updates (SPEC §2.5).
    pub ro_updates: String,
    /// CRM opportunities (SPEC §2.7).
    pub deals: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        TopicNames {
            impressions: Topic::Impressions.name().into(),
            conversations: Topic::Conversations.name().into(),
            messages: Topic::Messages.name().into(),
            payments: Topic::Payments.name().into(),
            ro_updates: Topic::RoUpdates.name().into(),
            deals: Topic::Deals.name().into(),
        }
    }
}

impl TopicNames {
    pub fn get(&self, topic: Topic) -> &str {
        match topic {
            Topic::Impressions => &self.impressions,
            Topic::Conversations => &self.conversations,
            Topic::Messages => &self.messages,
            Topic::Payments => &self.payments,
            Topic::RoUpdates => &self.ro_updates,
            Topic::Deals => &self.deals,
        }
    }
}

/// The Kafka cluster revpulse reads from and dead-letters to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// Consumer group id under which progress (offsets) is committed.
    pub group_id: String,
    /// Input topic names.
    pub topics: TopicNames,
    /// Dead-letter topic for rejected messages (SPEC §2.6).
    pub dlq_topic: String,
    /// Most messages in one dataflow epoch.
    pub max_batch_messages: usize,
    /// Longest wait for messages before an epoch is sealed, in milliseconds.
    pub max_batch_ms: u64,
    /// Value format per input topic: `json` (default) or `avro`
    /// (Confluent wire format, decoded against `schema_registry`).
    pub formats: ValueFormats,
    /// Schema registry for Avro topics (Confluent REST API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// Extra librdkafka properties, applied to the consumer and producer
    /// (e.g. `security.protocol`, `sasl.mechanism`).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "revpulse".into(),
            topics: TopicNames::default(),
            dlq_topic: "revpulse.dlq".into(),
            max_batch_messages: 100_000,
            max_batch_ms: 100,
            formats: ValueFormats::default(),
            schema_registry: None,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// The first Avro topic when no registry is configured (a configuration
    /// error).
    pub fn needs_registry(&self) -> Option<&'static str> {
        self.formats.first_avro().filter(|_| self.schema_registry.is_none()).map(Topic::name)
    }

    pub(crate) fn client_config(&self) -> rdkafka::ClientConfig {
        let mut c = rdkafka::ClientConfig::new();
        self.apply(&mut c);
        c
    }

    /// Sets the brokers and the user's extra properties on `c`.
    pub(crate) fn apply(&self, c: &mut rdkafka::ClientConfig) {
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
    }
}
