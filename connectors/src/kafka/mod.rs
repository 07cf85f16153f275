//! Kafka source (consumer with manual offset commits, per-topic decoding),
//! dead-letter queue and a small keyed producer for `revpulse produce`.

mod config;
mod dlq;
mod producer;
mod source;

pub use config::{KafkaConfig, TopicNames};
pub use dlq::DeadLetters;
pub use producer::KeyedProducer;
pub use source::{KafkaSource, Offsets, SourceError};

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
