//! Kafka: the source in three parts — [`transport`] (assignment, poll,
//! pause/seek, commits with metadata; bytes only), [`decoding`] (value
//! formats and validation) and the dead-letter policy in [`source`], which
//! composes them — plus the dead-letter queue, a keyed producer for
//! `revpulse produce` and the acknowledged [`Publisher`] of HTTP ingest.

mod config;
pub mod decoding;
mod dlq;
mod producer;
mod publisher;
mod source;
pub mod transport;

pub use config::{KafkaConfig, TopicNames};
pub use dlq::DeadLetters;
pub use producer::KeyedProducer;
pub use publisher::{Outgoing, PublishError, Publisher, Rejected, HEADER_INDEX, HEADER_SOURCE};
pub use source::{CommitError, KafkaSource, Polled, Position, SourceError};
pub use transport::{KafkaTransport, Offsets, RawRecord, TransportError, WATERMARK_METADATA};

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, ProducerContext};

/// Queues `record`, serving delivery reports while librdkafka's local queue
/// is full (backpressure instead of an error).
pub(crate) fn send_waiting<C: ProducerContext<DeliveryOpaque = ()>>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), KafkaError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                producer.poll(Duration::from_millis(10));
                record = back;
            }
            Err((e, _)) => return Err(e),
        }
    }
}
