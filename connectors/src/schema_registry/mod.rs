//! Avro values in the Confluent wire format (magic byte `0`, 4-byte
//! big-endian schema id, Avro binary), decoded and encoded with
//! `schema_registry_converter` against a registry speaking the Confluent
//! REST API. Decoded records go through the same validation as JSON events,
//! so both formats accept and reject exactly the same events.

mod codec;
mod config;

pub use codec::{AvroCodec, AvroError};
pub use config::{SchemaRegistryConfig, ValueFormat, ValueFormats};

use revpulse_pipelines::event::Topic;

/// The `.avsc` schema of `topic`'s values (`schemas/avro/`), which
/// `revpulse produce --format avro` registers under `<topic>-value`.
pub fn avro_schema(topic: Topic) -> &'static str {
    match topic {
        Topic::Impressions => include_str!("../../../schemas/avro/impressions.avsc"),
        Topic::Conversations => include_str!("../../../schemas/avro/conversations.avsc"),
        Topic::Messages => include_str!("../../../schemas/avro/messages.avsc"),
        Topic::Payments => include_str!("../../../schemas/avro/payments.avsc"),
        Topic::RoUpdates => include_str!("../../../schemas/avro/ro_updates.avsc"),
        Topic::Deals => include_str!("../../../schemas/avro/deals.avsc"),
    }
}
