//! The Kafka source: reads the five topics, decodes and validates every
//! message, hands valid ones to the dataflow and rejected ones to the DLQ.
//!
//! Partitions are *assigned*, not subscribed: worker `i` of `n` reads the
//! partitions at positions `i, i+n, …` of the sorted (topic, partition)
//! list, so the mapping is deterministic and there are no rebalances to
//! duplicate or drop work. Every start reads from the beginning of each
//! partition to rebuild the dataflow state (README "Recovery"); the consumer
//! group's committed offsets record what ClickHouse has acknowledged (and
//! drive lag monitoring), and are committed only after that acknowledgement.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use revpulse_pipelines::event::{decode, Event, Topic, Upsert};
use revpulse_pipelines::event::{Reason, Reject};
use revpulse_pipelines::retention::NO_WATERMARK;
use revpulse_pipelines::time::{format_micros, Micros};
use revpulse_pipelines::types::Text;
use revpulse_pipelines::upsert::{seq, seq_parts, TooLate};

/// Prefix of the commit metadata that carries retention's watermark.
pub const WATERMARK_METADATA: &str = "revpulse.watermark=";

use super::dlq::{DeadLetters, Origin};
use super::KafkaConfig;
use crate::metrics::Metrics;
use crate::schema_registry::{AvroCodec, AvroError, ValueFormat};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {0:?} does not exist or has no partitions (create it first)")]
    MissingTopic(String),
    #[error("kafka.formats.{0} is avro but no schema registry codec was given")]
    NoCodec(&'static str),
}

/// Next offset to read per (topic, partition): what a commit records.
pub type Offsets = BTreeMap<(String, i32), i64>;

pub struct KafkaSource {
    consumer: BaseConsumer,
    dlq: DeadLetters,
    /// Kafka topic name → its topic, value format and `consumed` counter,
    /// resolved once rather than per message.
    topics: HashMap<String, (Topic, ValueFormat, IntCounter)>,
    avro: Option<AvroCodec>,
    /// Partitions paused because the schema registry could not be asked
    /// for their next message (see [`Blocked`]).
    blocked: HashMap<(String, i32), Blocked>,
    metrics: Metrics,
    positions: Offsets,
    assigned: Vec<(String, i32)>,
    /// Every partition of the five topics, for the group's committed watermark.
    all: Vec<(String, i32)>,
    healthy: bool,
    last_lag_check: Option<Instant>,
    last_probe: Option<Instant>,
}

/// What one poll delivered.
#[derive(Debug, Default)]
pub struct Polled {
    /// Messages read (valid and rejected).
    pub messages: usize,
    /// Oldest Kafka timestamp among them (ms since epoch), for freshness.
    pub oldest_timestamp_ms: Option<i64>,
}

impl KafkaSource {
    /// Connects and assigns this worker's share of the input partitions,
    /// waiting up to `wait` for the topics to exist. `avro` decodes the
    /// topics whose format is Avro.
    pub fn connect(
        cfg: &KafkaConfig,
        metrics: Metrics,
        avro: Option<AvroCodec>,
        worker: usize,
        workers: usize,
        wait: Duration,
    ) -> Result<Self, SourceError> {
        if let Some(t) = cfg.formats.first_avro().filter(|_| avro.is_none()) {
            return Err(SourceError::NoCodec(t.name()));
        }
        let mut client = rdkafka::ClientConfig::new();
        // Short fetch waits keep epochs (and so freshness) tight; user
        // properties below may override any of these.
        client.set("fetch.wait.max.ms", "10").set("enable.partition.eof", "false");
        cfg.apply(&mut client);
        let consumer: BaseConsumer = client
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .create()?;
        let mut all: Vec<(String, i32)> = Vec::new();
        let mut topics = HashMap::new();
        let deadline = Instant::now() + wait;
        for topic in Topic::ALL {
            let name = cfg.topics.get(topic).to_owned();
            let counter = metrics.consumed.with_label_values(&[topic.name()]);
            topics.insert(name.clone(), (topic, cfg.formats.get(topic), counter));
            loop {
                let md = consumer.fetch_metadata(Some(&name), Duration::from_secs(5))?;
                let partitions: Vec<i32> = md
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                if !partitions.is_empty() {
                    all.extend(partitions.into_iter().map(|p| (name.clone(), p)));
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(SourceError::MissingTopic(name));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        all.sort();
        let assigned: Vec<(String, i32)> =
            all.iter().cloned().enumerate().filter(|(i, _)| i % workers.max(1) == worker).map(|(_, tp)| tp).collect();
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &assigned {
            tpl.add_partition_offset(t, *p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        tracing::info!(worker, workers, partitions = assigned.len(), "kafka source assigned");
        Ok(KafkaSource {
            consumer,
            dlq: DeadLetters::new(cfg)?,
            topics,
            avro,
            blocked: HashMap::new(),
            metrics,
            positions: Offsets::new(),
            assigned,
            all,
            healthy: true,
            last_lag_check: None,
            last_probe: None,
        })
    }

    /// Whether the broker answered the last probe (or delivered since).
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Asks the cluster for metadata at most every `every`, so readiness
    /// notices a lost broker even when no traffic would reveal it (librdkafka
    /// reconnects on its own; this only observes).
    pub fn probe_broker(&mut self, every: Duration) {
        if self.last_probe.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_probe = Some(Instant::now());
        let topic = self.assigned.first().map(|(t, _)| t.clone());
        let ok = self.consumer.fetch_metadata(topic.as_deref(), Duration::from_secs(1)).is_ok();
        if ok != self.healthy {
            tracing::warn!(reachable = ok, "kafka reachability changed");
        }
        self.healthy = ok;
    }

    /// Reads up to `max` messages, waiting at most `wait` in total. Valid
    /// messages go to `emit(topic, key, value, offset)`; rejected ones to the
    /// DLQ. Never fails on bad input.
    pub fn poll_batch(
        &mut self,
        max: usize,
        wait: Duration,
        mut emit: impl FnMut(Topic, Text, Option<Event>, u64),
    ) -> Polled {
        let deadline = Instant::now() + wait;
        let mut polled = Polled::default();
        let KafkaSource { consumer, dlq, topics, avro, blocked, metrics, positions, healthy, .. } = self;
        let mut ctx =
            Handler { dlq, topics, avro: avro.as_ref(), metrics, positions, healthy, blocked, unavailable: None };
        ctx.retry_blocked(consumer, &mut polled, &mut emit);
        while polled.messages < max {
            let left = deadline.saturating_duration_since(Instant::now());
            // Wait for the first message; after that, close the epoch at the
            // first short gap so a trickle is not held back.
            let timeout = if polled.messages == 0 { left } else { left.min(Duration::from_millis(5)) };
            match consumer.poll(timeout) {
                Some(result) => ctx.handle(result, &mut polled, &mut emit),
                None if polled.messages > 0 || left.is_zero() => break,
                None => {}
            }
            if let Some(msg) = ctx.unavailable.take() {
                ctx.block(consumer, msg);
            }
        }
        polled
    }

    /// Positions read so far: committing them covers every message handed out.
    pub fn positions(&self) -> &Offsets {
        &self.positions
    }

    /// Commits `offsets` for the group, after the DLQ has acknowledged every
    /// dead letter queued so far. Call only once ClickHouse acknowledged the
    /// writes covering them. `watermark` (retention's greatest event time as
    /// of these offsets) is stored as each partition's commit metadata, so a
    /// restart closes the same periods (see [`KafkaSource::committed`]).
    pub fn commit(&self, offsets: &Offsets, watermark: Option<Micros>) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
        self.dlq.flush(Duration::from_secs(30))?;
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in offsets {
            let mut elem = tpl.add_partition(t, *p);
            elem.set_offset(Offset::Offset(*o))?;
            if let Some(w) = watermark {
                elem.set_metadata(format!("{WATERMARK_METADATA}{w}"));
            }
        }
        self.consumer.commit(&tpl, CommitMode::Async)
    }

    /// The group's committed offsets of every partition of the five topics
    /// (a too-late message is dead-lettered by the worker that owns its key,
    /// not necessarily the one that read it), and the least watermark
    /// committed with them ([`NO_WATERMARK`] when none): the previous run's
    /// progress. The least, because workers commit independently, and a
    /// greater one may already count events beyond another worker's commit.
    pub fn committed(&self, timeout: Duration) -> Result<(Offsets, Micros), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &self.all {
            tpl.add_partition(t, *p);
        }
        let committed = self.consumer.committed_offsets(tpl, timeout)?;
        let mut offsets = Offsets::new();
        let mut watermark: Option<Micros> = None;
        for elem in committed.elements() {
            if let Some(w) = elem.metadata().strip_prefix(WATERMARK_METADATA).and_then(|w| w.parse::<Micros>().ok()) {
                watermark = Some(watermark.map_or(w, |m| m.min(w)));
            }
            if let Offset::Offset(o) = elem.offset() {
                offsets.insert((elem.topic().to_owned(), elem.partition()), o);
            }
        }
        Ok((offsets, watermark.unwrap_or(NO_WATERMARK)))
    }

    /// Waits until every dead letter queued so far is acknowledged.
    pub fn flush_dead_letters(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.dlq.flush(timeout)
    }

    /// Dead-letters a message the dataflow rejected as `too_late` (SPEC §7):
    /// its payload is the event as decoded, in canonical JSON.
    pub fn dead_letter_too_late(&self, late: &TooLate) {
        let topic = late.topic;
        let Some(name) = self.topics.iter().find(|(_, (t, _, _))| *t == topic).map(|(n, _)| n.as_str()) else {
            return;
        };
        let (partition, offset) = seq_parts(late.seq);
        let reject = Reject::new(
            Reason::TooLate,
            format!("its period closed: the watermark is {}", format_micros(late.watermark)),
        );
        let origin = Origin { topic: name, partition, offset };
        let (key, payload) = (Some(late.key.as_bytes()), Some(late.payload.as_bytes()));
        dead_letter(&self.dlq, &self.metrics, topic, &origin, key, payload, &reject);
    }

    /// Refreshes the consumer-lag gauges, at most every `every`.
    pub fn update_lag(&mut self, every: Duration) {
        // While the broker is unreachable every lookup would wait out its
        // timeout on the driver thread; the probe brings `healthy` back.
        if !self.healthy || self.last_lag_check.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_lag_check = Some(Instant::now());
        for (t, p) in &self.assigned {
            if let Ok((_low, high)) = self.consumer.fetch_watermarks(t, *p, Duration::from_millis(500)) {
                let pos = self.positions.get(&(t.clone(), *p)).copied().unwrap_or(0);
                self.metrics.consumer_lag.with_label_values(&[t.as_str(), &p.to_string()]).set((high - pos).max(0));
            }
        }
    }

    /// The offsets up to which a start-up catch-up must read: the high
    /// watermark of every assigned partition that holds any message.
    pub fn catch_up_targets(&self) -> Result<Offsets, KafkaError> {
        let mut out = Offsets::new();
        for (t, p) in &self.assigned {
            let (low, high) = self.consumer.fetch_watermarks(t, *p, Duration::from_secs(5))?;
            if high > low {
                out.insert((t.clone(), *p), high);
            }
        }
        Ok(out)
    }

    /// Whether every partition of `targets` has been read up to its target.
    pub fn reached(&self, targets: &Offsets) -> bool {
        targets.iter().all(|(tp, target)| self.positions.get(tp).is_some_and(|p| p >= target))
    }
}

/// Sends one rejected message to the DLQ: counted by topic and reason,
/// logged, and a failure to queue it counted and logged too.
fn dead_letter(
    dlq: &DeadLetters,
    metrics: &Metrics,
    topic: Topic,
    origin: &Origin<'_>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    reject: &Reject,
) {
    metrics.rejected.with_label_values(&[topic.name(), reject.reason.as_str()]).inc();
    tracing::warn!(topic = origin.topic, partition = origin.partition, offset = origin.offset, reason = reject.reason.as_str(), detail = %reject.detail, "rejected message sent to the dead-letter topic");
    if let Err(e) = dlq.send(origin, key, payload, reject) {
        metrics.dlq_errors.inc();
        tracing::error!(error = %e, topic = origin.topic, offset = origin.offset, "could not queue dead letter");
    }
}

/// A partition whose next message could not be decoded because the schema
/// registry was unavailable. Nobody has seen that message to be bad, so it
/// must not be dead-lettered: the partition is paused (other partitions go
/// on), the message is retried with backoff, and once it is decoded the
/// partition is sought to the message after it and resumed. Messages of the
/// partition that were already fetched behind it are dropped meanwhile and
/// fetched again after the seek, so order and positions stay exact.
struct Blocked {
    msg: OwnedMessage,
    retry_at: Instant,
    backoff: Duration,
    /// Decoded and handled; only the seek and resume are left.
    handled: bool,
}

/// The parts of the source a message touches, borrowed apart from the
/// consumer that lends the message.
struct Handler<'a> {
    dlq: &'a DeadLetters,
    topics: &'a HashMap<String, (Topic, ValueFormat, IntCounter)>,
    avro: Option<&'a AvroCodec>,
    metrics: &'a Metrics,
    positions: &'a mut Offsets,
    healthy: &'a mut bool,
    blocked: &'a mut HashMap<(String, i32), Blocked>,
    /// The message just found undecodable for want of a registry.
    unavailable: Option<OwnedMessage>,
}

impl Handler<'_> {
    fn handle(
        &mut self,
        result: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
        polled: &mut Polled,
        emit: &mut impl FnMut(Topic, Text, Option<Event>, u64),
    ) {
        let msg = match result {
            Ok(m) => m,
            Err(e) => {
                *self.healthy = false;
                tracing::warn!(error = %e, "kafka consumer error; librdkafka retries");
                return;
            }
        };
        *self.healthy = true;
        if !self.blocked.is_empty() && self.blocked.contains_key(&(msg.topic().to_owned(), msg.partition())) {
            // Behind a blocked message: read again after its seek.
            return;
        }
        if !self.process(&msg, polled, emit) {
            self.unavailable = Some(msg.detach());
        }
    }

    /// Decodes and hands on one message. False when the registry could not
    /// be asked (nothing was done; the message must be retried).
    fn process<M: Message>(
        &mut self,
        msg: &M,
        polled: &mut Polled,
        emit: &mut impl FnMut(Topic, Text, Option<Event>, u64),
    ) -> bool {
        let topic_name = msg.topic();
        let Some(&(topic, format, ref consumed)) = self.topics.get(topic_name) else {
            return true;
        };
        let offset = msg.offset();
        let decoded: Result<Upsert, _> = match (format, self.avro) {
            (ValueFormat::Avro, Some(codec)) => match codec.decode(topic, msg.key(), msg.payload()) {
                Ok(u) => Ok(u),
                Err(AvroError::Rejected(r)) => Err(r),
                Err(e) => {
                    self.metrics.registry_errors.inc();
                    tracing::warn!(error = %e, topic = topic_name, partition = msg.partition(), offset, "schema registry unavailable; the partition waits for it");
                    return false;
                }
            },
            _ => decode(topic, msg.key(), msg.payload()),
        };
        polled.messages += 1;
        if let Some(ts) = msg.timestamp().to_millis() {
            polled.oldest_timestamp_ms = Some(polled.oldest_timestamp_ms.map_or(ts, |o| o.min(ts)));
        }
        match decoded {
            Ok(upsert) => {
                consumed.inc();
                emit(topic, upsert.key, upsert.value, seq(msg.partition(), offset));
            }
            Err(reject) => {
                let origin = Origin { topic: topic_name, partition: msg.partition(), offset };
                dead_letter(self.dlq, self.metrics, topic, &origin, msg.key(), msg.payload(), &reject);
            }
        }
        self.positions.insert((topic_name.to_owned(), msg.partition()), offset + 1);
        true
    }

    /// Pauses `msg`'s partition until the registry answers for `msg`.
    fn block(&mut self, consumer: &BaseConsumer, msg: OwnedMessage) {
        let tp = (msg.topic().to_owned(), msg.partition());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        if let Err(e) = consumer.pause(&tpl) {
            // Still correct: its later messages are dropped until the seek.
            tracing::warn!(error = %e, topic = tp.0, partition = tp.1, "pausing a partition");
        }
        let backoff = Duration::from_millis(100);
        self.blocked.insert(tp, Blocked { msg, retry_at: Instant::now() + backoff, backoff, handled: false });
    }

    /// Retries the blocked messages that are due; seeks and resumes their
    /// partitions once they are handled.
    fn retry_blocked(
        &mut self,
        consumer: &BaseConsumer,
        polled: &mut Polled,
        emit: &mut impl FnMut(Topic, Text, Option<Event>, u64),
    ) {
        if self.blocked.is_empty() {
            return;
        }
        let now = Instant::now();
        let due: Vec<(String, i32)> =
            self.blocked.iter().filter(|(_, b)| b.retry_at <= now).map(|(tp, _)| tp.clone()).collect();
        for tp in due {
            let Some(mut b) = self.blocked.remove(&tp) else { continue };
            if !b.handled && !self.process(&b.msg, polled, emit) {
                b.backoff = (b.backoff * 2).min(Duration::from_secs(5));
                b.retry_at = now + b.backoff;
                self.blocked.insert(tp, b);
                continue;
            }
            b.handled = true;
            let next = Offset::Offset(b.msg.offset() + 1);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&tp.0, tp.1);
            match consumer.seek(&tp.0, tp.1, next, Duration::from_secs(1)).and_then(|()| consumer.resume(&tpl)) {
                Ok(()) => tracing::info!(topic = tp.0, partition = tp.1, "schema registry answered; partition resumed"),
                Err(e) => {
                    tracing::warn!(error = %e, topic = tp.0, partition = tp.1, "seek/resume after a registry outage; retrying");
                    b.retry_at = now + Duration::from_millis(100);
                    self.blocked.insert(tp, b);
                }
            }
        }
    }
}
