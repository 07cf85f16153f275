//! The dead-letter queue (SPEC §2.6): rejected messages are re-published
//! unchanged to the DLQ topic, with headers naming their origin and reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use revpulse_pipelines::event::Reject;

use super::KafkaConfig;

/// Headers of a dead-lettered message.
pub const HEADER_TOPIC: &str = "revpulse.source.topic";
pub const HEADER_PARTITION: &str = "revpulse.source.partition";
pub const HEADER_OFFSET: &str = "revpulse.source.offset";
pub const HEADER_REASON: &str = "revpulse.reason";
pub const HEADER_DETAIL: &str = "revpulse.detail";

/// Counts dead letters the broker finally refused (after librdkafka's own
/// retries), so they show up in metrics and logs.
#[derive(Default)]
pub struct DlqContext {
    failed: AtomicU64,
}

impl ClientContext for DlqContext {}

impl ProducerContext for DlqContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "dead letter not delivered");
        }
    }
}

pub struct DeadLetters {
    producer: BaseProducer<DlqContext>,
    topic: String,
}

/// Where a rejected message came from.
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

impl DeadLetters {
    pub fn new(cfg: &KafkaConfig) -> Result<Self, KafkaError> {
        let producer = cfg
            .client_config()
            .set("linger.ms", "5")
            // Rejected payloads may be over 1 MiB (that is one reject reason).
            .set("message.max.bytes", "16777216")
            .set("enable.idempotence", "true")
            .create_with_context(DlqContext::default())?;
        Ok(DeadLetters { producer, topic: cfg.dlq_topic.clone() })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Queues one rejected message for the DLQ.
    pub fn send(
        &self,
        origin: &Origin<'_>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        reject: &Reject,
    ) -> Result<(), KafkaError> {
        let partition = origin.partition.to_string();
        let offset = origin.offset.to_string();
        // Keep the detail header small: it may quote the payload.
        let detail: String = reject.detail.chars().take(512).collect();
        let headers = OwnedHeaders::new()
            .insert(Header { key: HEADER_TOPIC, value: Some(origin.topic) })
            .insert(Header { key: HEADER_PARTITION, value: Some(&partition) })
            .insert(Header { key: HEADER_OFFSET, value: Some(&offset) })
            .insert(Header { key: HEADER_REASON, value: Some(reject.reason.as_str()) })
            .insert(Header { key: HEADER_DETAIL, value: Some(&detail) });
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).headers(headers);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = payload {
            record = record.payload(p);
        }
        super::send_waiting(&self.producer, record)
    }

    /// Waits until every dead letter is acknowledged by the broker; offsets
    /// of rejected messages may be committed only after this.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Dead letters the broker refused so far.
    pub fn failed(&self) -> u64 {
        self.producer.context().failed.load(Ordering::Relaxed)
    }
}
