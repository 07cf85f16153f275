//! The Kafka source: the [`KafkaTransport`] reads raw records, the
//! [`Decoder`] makes upserts or rejections of them, and the dead-letter
//! policy sends rejections to the DLQ (counted, logged, never fatal). Valid
//! records go to the caller; a record that cannot be decoded for want of
//! the schema registry pauses its partition until the registry answers.

use std::time::Duration;

use rdkafka::error::KafkaError;
use revpulse_pipelines::event::{Reject, Topic, Upsert};

use super::decoding::{Decoded, Decoder};
use super::dlq::{DeadLetters, Origin};
use super::transport::{Handled, KafkaTransport, Offsets, RawRecord, TransportError};
use super::KafkaConfig;
use crate::metrics::Metrics;
use crate::schema_registry::AvroCodec;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("kafka.formats.{0} is avro but no schema registry codec was given")]
    NoCodec(&'static str),
}

/// Why offsets were not committed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Dead letters of the messages they cover are not acknowledged yet
    /// (the broker may be down): commit again later.
    #[error("dead letters not yet acknowledged by the broker")]
    DeadLettersPending,
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// How long a commit waits for dead letters before it is put off: short,
/// so a broker outage does not stall the worker's loop (and readiness).
const COMMIT_DLQ_WAIT: Duration = Duration::from_millis(200);

/// What one poll delivered.
#[derive(Debug, Default)]
pub struct Polled {
    /// Messages read (valid and rejected).
    pub messages: usize,
    /// Oldest Kafka timestamp among them (ms since epoch), for freshness.
    pub oldest_timestamp_ms: Option<i64>,
}

/// Where a valid record came from.
#[derive(Clone, Copy, Debug)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

pub struct KafkaSource {
    transport: KafkaTransport,
    decoder: Decoder,
    dlq: DeadLetters,
    metrics: Metrics,
    last_lag_check: Option<std::time::Instant>,
}

impl KafkaSource {
    /// Connects and assigns this worker's share (`worker` of `workers`) of
    /// the input partitions, resuming those in `start` (a checkpoint's
    /// positions) and reading the others from their beginning, waiting up
    /// to `wait` for the topics to exist. `avro` decodes the topics whose
    /// format is Avro.
    pub fn connect(
        cfg: &KafkaConfig,
        metrics: Metrics,
        avro: Option<AvroCodec>,
        share: (usize, usize),
        wait: Duration,
        start: &Offsets,
    ) -> Result<Self, SourceError> {
        if let Some(t) = cfg.formats.first_avro().filter(|_| avro.is_none()) {
            return Err(SourceError::NoCodec(t.name()));
        }
        let topics: Vec<(String, Topic, _)> =
            Topic::ALL.into_iter().map(|t| (cfg.topics.get(t).to_owned(), t, cfg.formats.get(t))).collect();
        let names: Vec<String> = topics.iter().map(|(n, _, _)| n.clone()).collect();
        let transport = KafkaTransport::connect(cfg, &names, share, wait, start)?;
        Ok(KafkaSource {
            transport,
            decoder: Decoder::new(topics, avro, metrics.clone()),
            dlq: DeadLetters::new(cfg)?,
            metrics,
            last_lag_check: None,
        })
    }

    /// Reads up to `max` messages, waiting at most `wait` in total. Valid
    /// messages go to `emit`; rejected ones to the DLQ. Never fails on bad
    /// input.
    pub fn poll_batch(&mut self, max: usize, wait: Duration, mut emit: impl FnMut(Topic, Upsert, Position)) -> Polled {
        let mut polled = Polled::default();
        let KafkaSource { transport, decoder, dlq, metrics, .. } = self;
        polled.messages = transport.poll_batch(max, wait, |record| {
            let (topic, outcome) = match decoder.decode(&record) {
                Decoded::Unavailable => return Handled::Retry,
                Decoded::Foreign => return Handled::Done,
                Decoded::Valid(topic, upsert) => (topic, Ok(upsert)),
                Decoded::Rejected(topic, reject) => (topic, Err(reject)),
            };
            if let Some(ts) = record.timestamp_ms {
                polled.oldest_timestamp_ms = Some(polled.oldest_timestamp_ms.map_or(ts, |o| o.min(ts)));
            }
            match outcome {
                Ok(upsert) => emit(topic, upsert, Position { partition: record.partition, offset: record.offset }),
                Err(reject) => dead_letter(dlq, metrics, topic, &record, &reject),
            }
            Handled::Done
        });
        polled
    }

    /// Whether the broker answered the last probe (or delivered since).
    pub fn healthy(&self) -> bool {
        self.transport.healthy()
    }

    /// See [`KafkaTransport::probe_broker`].
    pub fn probe_broker(&mut self, every: Duration) {
        self.transport.probe_broker(every)
    }

    /// Positions read so far: committing them covers every message handed out.
    pub fn positions(&self) -> &Offsets {
        self.transport.positions()
    }

    /// Commits `offsets` for the group, once the DLQ has acknowledged every
    /// dead letter queued so far ([`CommitError::DeadLettersPending`] if it
    /// has not within a short wait). Call only once ClickHouse acknowledged
    /// the writes covering them. `watermark` (retention's greatest event
    /// time as of these offsets) travels as commit metadata, so a restart
    /// closes the same periods (see [`KafkaSource::committed`]).
    pub fn commit(&self, offsets: &Offsets, watermark: Option<i64>) -> Result<(), CommitError> {
        if offsets.is_empty() {
            return Ok(());
        }
        if self.dlq.in_flight() > 0 && self.dlq.flush(COMMIT_DLQ_WAIT).is_err() {
            return Err(CommitError::DeadLettersPending);
        }
        Ok(self.transport.commit(offsets, watermark)?)
    }

    /// The group's committed offsets of every partition of the five topics
    /// (a too-late message is dead-lettered by the worker that owns its key,
    /// not necessarily the one that read it), and the least watermark
    /// committed with them: the previous run's progress.
    pub fn committed(&self, timeout: Duration) -> Result<(Offsets, Option<i64>), KafkaError> {
        self.transport.committed(timeout)
    }

    /// Waits until every dead letter queued so far is acknowledged.
    pub fn flush_dead_letters(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.dlq.flush(timeout)
    }

    /// The Kafka topic name `topic` is read from.
    pub fn topic_name(&self, topic: Topic) -> Option<&str> {
        self.decoder.name_of(topic)
    }

    /// Dead-letters a message the pipeline rejected after decoding (e.g.
    /// `too_late`, SPEC §7); `payload` is what to publish in its place.
    pub fn dead_letter(&self, topic: Topic, at: Position, key: &[u8], payload: &[u8], reject: &Reject) {
        let Some(name) = self.decoder.name_of(topic) else { return };
        let record = RawRecord {
            topic: name,
            partition: at.partition,
            offset: at.offset,
            key: Some(key),
            payload: Some(payload),
            timestamp_ms: None,
        };
        dead_letter(&self.dlq, &self.metrics, topic, &record, reject);
    }

    /// Refreshes the consumer-lag gauges, at most every `every`.
    pub fn update_lag(&mut self, every: Duration) {
        // While the broker is unreachable every lookup would wait out its
        // timeout on the driver thread; the probe brings `healthy` back.
        if !self.healthy() || self.last_lag_check.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_lag_check = Some(std::time::Instant::now());
        for (t, p) in self.transport.assigned() {
            if let Ok((_low, high)) = self.transport.watermarks(t, *p, Duration::from_millis(500)) {
                let pos = self.positions().get(&(t.clone(), *p)).copied().unwrap_or(0);
                self.metrics.consumer_lag.with_label_values(&[t.as_str(), &p.to_string()]).set((high - pos).max(0));
            }
        }
    }

    /// See [`KafkaTransport::catch_up_targets`].
    pub fn catch_up_targets(&self) -> Result<Offsets, KafkaError> {
        self.transport.catch_up_targets()
    }

    /// Whether every partition of `targets` has been read up to its target.
    pub fn reached(&self, targets: &Offsets) -> bool {
        self.transport.reached(targets)
    }
}

/// The dead-letter policy: a rejected record is counted by topic and
/// reason, logged, and queued for the DLQ; a failure to queue it is
/// counted and logged too, and never stops the source.
fn dead_letter(dlq: &DeadLetters, metrics: &Metrics, topic: Topic, record: &RawRecord<'_>, reject: &Reject) {
    metrics.rejected.with_label_values(&[topic.name(), reject.reason.as_str()]).inc();
    tracing::warn!(topic = record.topic, partition = record.partition, offset = record.offset, reason = reject.reason.as_str(), detail = %reject.detail, "rejected message sent to the dead-letter topic");
    let origin = Origin { topic: record.topic, partition: record.partition, offset: record.offset };
    if let Err(e) = dlq.send(&origin, record.key, record.payload, reject) {
        metrics.dlq_errors.inc();
        tracing::error!(error = %e, topic = record.topic, offset = record.offset, "could not queue dead letter");
    }
}
