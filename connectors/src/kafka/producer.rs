//! A keyed producer for `revpulse produce`, the demo's generator and tests.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use super::KafkaConfig;

pub struct KeyedProducer {
    producer: BaseProducer,
}

impl KeyedProducer {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut client = rdkafka::ClientConfig::new();
        client
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.max.bytes", "16777216");
        // The user's properties (`kafka.properties`) win over these defaults.
        cfg.apply(&mut client);
        let producer = client.create()?;
        Ok(KeyedProducer { producer })
    }

    /// Queues one message (`payload == None`: tombstone), waiting while the
    /// local queue is full.
    pub fn send(&self, topic: &str, key: &[u8], payload: Option<&[u8]>) -> Result<(), KafkaError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        super::send_waiting(&self.producer, record)
    }

    /// Serves delivery callbacks without blocking.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every queued message is delivered.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}
