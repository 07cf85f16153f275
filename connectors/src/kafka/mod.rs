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
