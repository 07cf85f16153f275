//! Publishing what arrives over HTTP (SPEC §5.1): bytes only, like the
//! source's transport — the ingest route decodes and validates, this
//! module produces. Every message goes out idempotent with `acks=all`, and
//! [`Publisher::publish`] returns only once Kafka acknowledged all of a
//! request's messages (events and dead letters alike), or failed: a request
//! is never answered as accepted while part of it may be lost.
//!
//! A message not acknowledged within `ack_timeout` (librdkafka's
//! `message.timeout.ms`, retries included) fails the whole request; some of
//! its messages may still have been written, which is harmless because the
//! client retries the whole request and events are upserts.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use revpulse_pipelines::event::Reject;

use super::dlq::{HEADER_DETAIL, HEADER_OFFSET, HEADER_PARTITION, HEADER_REASON, HEADER_TOPIC};
use super::KafkaConfig;

/// The dead-letter header that says where a message came from: `http` for
/// the ingest route (the source's dead letters have none).
pub const HEADER_SOURCE: &str = "revpulse.source";
/// The dead-letter header with a rejected event's index in its request.
pub const HEADER_INDEX: &str = "revpulse.source.index";

/// One message to produce: `payload == None` is a tombstone.
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub payload: Option<&'a [u8]>,
}

/// One rejected event to dead-letter, with the Kafka topic it was meant for
/// and its index in the request.
pub struct Rejected<'a> {
    pub topic: &'a str,
    pub index: usize,
    pub payload: &'a [u8],
    pub reject: &'a Reject,
}

/// Why a request's messages were not all acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("Kafka acknowledged {acknowledged} of {total} messages: {first}")]
pub struct PublishError {
    pub acknowledged: usize,
    pub total: usize,
    /// The first failure.
    pub first: KafkaError,
}

/// An idempotent `acks=all` producer for the ingest route.
pub struct Publisher {
    producer: FutureProducer,
    dlq_topic: String,
}

impl Publisher {
    /// A producer for `cfg`'s brokers whose messages fail after
    /// `ack_timeout` without an acknowledgement.
    pub fn new(cfg: &KafkaConfig, ack_timeout: Duration) -> Result<Self, KafkaError> {
        let mut client = rdkafka::ClientConfig::new();
        client
            // Each request waits for its acknowledgements: batching across
            // requests would only add latency.
            .set("linger.ms", "0")
            .set("queue.buffering.max.messages", "1000000")
            .set("message.max.bytes", "16777216");
        // The user's properties (`kafka.properties`) win over these defaults,
        // except what the guarantee rests on.
        cfg.apply(&mut client);
        client
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", ack_timeout.as_millis().max(1).to_string());
        Ok(Publisher { producer: client.create()?, dlq_topic: cfg.dlq_topic.clone() })
    }

    /// Produces `messages` and dead-letters `rejected`, then waits for every
    /// acknowledgement.
    pub async fn publish(&self, messages: &[Outgoing<'_>], rejected: &[Rejected<'_>]) -> Result<(), PublishError> {
        let total = messages.len() + rejected.len();
        let mut pending: Vec<DeliveryFuture> = Vec::with_capacity(total);
        let mut first = None;
        for m in messages {
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(m.topic).key(m.key);
            if let Some(p) = m.payload {
                record = record.payload(p);
            }
            match self.producer.send_result(record) {
                Ok(f) => pending.push(f),
                Err((e, _)) => {
                    first.get_or_insert(e);
                }
            }
        }
        for r in rejected {
            let index = r.index.to_string();
            let detail: String = r.reject.detail.chars().take(512).collect();
            let headers = OwnedHeaders::new()
                .insert(Header { key: HEADER_TOPIC, value: Some(r.topic) })
                .insert(Header { key: HEADER_PARTITION, value: Some("-1") })
                .insert(Header { key: HEADER_OFFSET, value: Some("-1") })
                .insert(Header { key: HEADER_REASON, value: Some(r.reject.reason.as_str()) })
                .insert(Header { key: HEADER_DETAIL, value: Some(&detail) })
                .insert(Header { key: HEADER_SOURCE, value: Some("http") })
                .insert(Header { key: HEADER_INDEX, value: Some(&index) });
            let record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.dlq_topic).payload(r.payload).headers(headers);
            match self.producer.send_result(record) {
                Ok(f) => pending.push(f),
                Err((e, _)) => {
                    first.get_or_insert(e);
                }
            }
        }
        let mut acknowledged = 0;
        for f in pending {
            match f.await {
                Ok(Ok(_)) => acknowledged += 1,
                Ok(Err((e, _))) => {
                    first.get_or_insert(e);
                }
                Err(_) => {
                    first.get_or_insert(KafkaError::Canceled);
                }
            }
        }
        match first {
            None => Ok(()),
            Some(first) => Err(PublishError { acknowledged, total, first }),
        }
    }
}
