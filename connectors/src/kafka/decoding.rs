//! Decoding: what a raw Kafka record means. Each input topic's records are
//! decoded by its configured value format (JSON, or Confluent-framed Avro
//! through the schema registry) and validated (SPEC §2.6) into an upsert or
//! a rejection. The transport ([`super::transport`]) never looks inside a
//! record; this module never touches a consumer.

use std::collections::HashMap;

use prometheus::IntCounter;
use revpulse_pipelines::event::{decode, Reject, Topic, Upsert};

use super::transport::RawRecord;
use crate::metrics::Metrics;
use crate::schema_registry::{AvroCodec, AvroError, ValueFormat};

/// What a record decoded to. Returned and consumed at once, so the upsert
/// stays unboxed (no allocation per message on the hot path).
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    /// A valid upsert (or tombstone) of `topic`.
    Valid(Topic, Upsert),
    /// Rejected: it goes to the dead-letter topic.
    Rejected(Topic, Reject),
    /// The schema registry could not be asked. Nobody has seen the record
    /// to be bad, so it must not be dead-lettered: it is retried.
    Unavailable,
    /// Not one of the input topics.
    Foreign,
}

/// Decodes the records of the input topics.
pub struct Decoder {
    /// Kafka topic name → its topic, value format and `consumed` counter,
    /// resolved once rather than per record.
    topics: HashMap<String, (Topic, ValueFormat, IntCounter)>,
    avro: Option<AvroCodec>,
    metrics: Metrics,
}

impl Decoder {
    /// `topics` maps each Kafka topic name to its event type and format.
    pub fn new(
        topics: impl IntoIterator<Item = (String, Topic, ValueFormat)>,
        avro: Option<AvroCodec>,
        metrics: Metrics,
    ) -> Decoder {
        let topics = topics
            .into_iter()
            .map(|(name, topic, format)| {
                let counter = metrics.consumed.with_label_values(&[topic.name()]);
                (name, (topic, format, counter))
            })
            .collect();
        Decoder { topics, avro, metrics }
    }

    /// The Kafka topic name of `topic`.
    pub fn name_of(&self, topic: Topic) -> Option<&str> {
        self.topics.iter().find(|(_, (t, _, _))| *t == topic).map(|(n, _)| n.as_str())
    }

    pub fn decode(&self, record: &RawRecord<'_>) -> Decoded {
        let Some(&(topic, format, ref consumed)) = self.topics.get(record.topic) else {
            return Decoded::Foreign;
        };
        let decoded = match (format, &self.avro) {
            (ValueFormat::Avro, Some(codec)) => match codec.decode(topic, record.key, record.payload) {
                Ok(u) => Ok(u),
                Err(AvroError::Rejected(r)) => Err(r),
                Err(e) => {
                    self.metrics.registry_errors.inc();
                    tracing::warn!(error = %e, topic = record.topic, partition = record.partition, offset = record.offset, "schema registry unavailable; the partition waits for it");
                    return Decoded::Unavailable;
                }
            },
            _ => decode(topic, record.key, record.payload),
        };
        match decoded {
            Ok(upsert) => {
                consumed.inc();
                Decoded::Valid(topic, upsert)
            }
            Err(reject) => Decoded::Rejected(topic, reject),
        }
    }
}
