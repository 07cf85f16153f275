//! Kafka transport: partition assignment, polling raw records, pausing a
//! partition and seeking past a record, and offset commits that carry
//! metadata. It knows bytes and positions only; what a record means is the
//! business of [`super::decoding`], as in Materialize's bytes-only readers
//! and Feldera's transport/format split.
//!
//! Partitions are *assigned*, not subscribed: worker `i` of `n` reads the
//! partitions at positions `i, i+n, …` of the sorted (topic, partition)
//! list, so the mapping is deterministic and there are no rebalances to
//! duplicate or drop work. Every start reads from the beginning of each
//! partition to rebuild the dataflow state (docs/guarantees.md); the
//! consumer group's committed offsets record what ClickHouse has
//! acknowledged (and drive lag monitoring), and are committed only after
//! that acknowledgement.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaConfig;

/// Prefix of the commit metadata that carries retention's watermark.
pub const WATERMARK_METADATA: &str = "revpulse.watermark=";

/// Next offset to read per (topic, partition): what a commit records.
pub type Offsets = BTreeMap<(String, i32), i64>;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("topic {0:?} does not exist or has no partitions (create it first)")]
    MissingTopic(String),
    /// The checkpoint resumes a partition at an offset the topic no longer
    /// holds (retention deleted it).
    #[error(
        "the checkpoint resumes {topic} partition {partition} at offset {checkpointed}, but the earliest offset \
         it still holds is {earliest}: the records in between are gone (topic retention). Restore the state \
         directory from a newer backup, or start with --rebuild to rebuild the state from what the topics hold"
    )]
    Expired { topic: String, partition: i32, checkpointed: i64, earliest: i64 },
    /// The checkpoint resumes a partition beyond its end: the topic was
    /// recreated, or the checkpoint belongs to another cluster.
    #[error(
        "the checkpoint resumes {topic} partition {partition} at offset {checkpointed}, beyond its end ({end}): \
         the topic was recreated or the state directory belongs to another Kafka cluster; start with --rebuild"
    )]
    BeyondEnd { topic: String, partition: i32, checkpointed: i64, end: i64 },
}

/// One record as the broker delivered it.
#[derive(Clone, Copy, Debug)]
pub struct RawRecord<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Kafka timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

impl<'a> RawRecord<'a> {
    fn of<M: Message>(m: &'a M) -> RawRecord<'a> {
        RawRecord {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            timestamp_ms: m.timestamp().to_millis(),
        }
    }
}

/// What the consumer of a record did with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Done with: the position moves past it.
    Done,
    /// Could not be handled for now (a dependency is down): the partition
    /// pauses at this record and the record is offered again later.
    Retry,
}

/// A partition paused at a record its consumer asked to see again. The
/// records of the partition already fetched behind it are dropped meanwhile
/// and fetched again after the seek, so order and positions stay exact.
struct Blocked {
    msg: OwnedMessage,
    retry_at: Instant,
    backoff: Duration,
    /// Handled; only the seek and resume are left.
    handled: bool,
}

/// The consumer of one worker and what it has read.
pub struct KafkaTransport {
    consumer: BaseConsumer,
    positions: Offsets,
    assigned: Vec<(String, i32)>,
    /// Every partition of the input topics, for the group's committed watermark.
    all: Vec<(String, i32)>,
    blocked: HashMap<(String, i32), Blocked>,
    healthy: bool,
    last_probe: Option<Instant>,
}

impl KafkaTransport {
    /// Connects and assigns this worker's share of the partitions of
    /// `topics`, each from its position in `start` (a checkpoint's) or
    /// else from its beginning, waiting up to `wait` for the topics to
    /// exist. A start position the partition no longer holds is an error.
    pub fn connect(
        cfg: &KafkaConfig,
        topics: &[String],
        (worker, workers): (usize, usize),
        wait: Duration,
        start: &Offsets,
    ) -> Result<Self, TransportError> {
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
        let deadline = Instant::now() + wait;
        for name in topics {
            let partitions = wait_for_partitions(&consumer, name, deadline)?;
            all.extend(partitions.into_iter().map(|p| (name.clone(), p)));
        }
        all.sort();
        let assigned: Vec<(String, i32)> =
            all.iter().cloned().enumerate().filter(|(i, _)| i % workers.max(1) == worker).map(|(_, tp)| tp).collect();
        let mut tpl = TopicPartitionList::new();
        let mut positions = Offsets::new();
        for (t, p) in &assigned {
            match start.get(&(t.clone(), *p)) {
                Some(&offset) => {
                    let (low, high) = consumer.fetch_watermarks(t, *p, Duration::from_secs(10))?;
                    if offset < low {
                        let (topic, partition) = (t.clone(), *p);
                        return Err(TransportError::Expired { topic, partition, checkpointed: offset, earliest: low });
                    }
                    if offset > high {
                        let (topic, partition) = (t.clone(), *p);
                        return Err(TransportError::BeyondEnd { topic, partition, checkpointed: offset, end: high });
                    }
                    tpl.add_partition_offset(t, *p, Offset::Offset(offset))?;
                    positions.insert((t.clone(), *p), offset);
                }
                None => tpl.add_partition_offset(t, *p, Offset::Beginning)?,
            }
        }
        consumer.assign(&tpl)?;
        tracing::info!(
            worker,
            workers,
            partitions = assigned.len(),
            resumed = positions.len(),
            "kafka source assigned"
        );
        Ok(KafkaTransport {
            consumer,
            positions,
            assigned,
            all,
            blocked: HashMap::new(),
            healthy: true,
            last_probe: None,
        })
    }

    /// Whether the broker answered the last probe (or delivered since).
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// The partitions this worker reads.
    pub fn assigned(&self) -> &[(String, i32)] {
        &self.assigned
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

    /// Offers up to `max` records to `handle`, waiting at most `wait` in
    /// total: first the paused records that are due again, then new ones.
    /// Returns how many records were handled.
    pub fn poll_batch(
        &mut self,
        max: usize,
        wait: Duration,
        mut handle: impl FnMut(RawRecord<'_>) -> Handled,
    ) -> usize {
        let deadline = Instant::now() + wait;
        let mut n = self.retry_blocked(&mut handle);
        while n < max {
            let left = deadline.saturating_duration_since(Instant::now());
            // Wait for the first record; after that, close the batch at the
            // first short gap so a trickle is not held back.
            let timeout = if n == 0 { left } else { left.min(Duration::from_millis(5)) };
            match self.consumer.poll(timeout) {
                Some(Ok(msg)) => {
                    self.healthy = true;
                    let tp = (msg.topic().to_owned(), msg.partition());
                    if !self.blocked.is_empty() && self.blocked.contains_key(&tp) {
                        // Behind a paused record: read again after its seek.
                        continue;
                    }
                    match handle(RawRecord::of(&msg)) {
                        Handled::Done => {
                            n += 1;
                            self.positions.insert(tp, msg.offset() + 1);
                        }
                        Handled::Retry => self.block(msg.detach()),
                    }
                }
                Some(Err(e)) => {
                    self.healthy = false;
                    tracing::warn!(error = %e, "kafka consumer error; librdkafka retries");
                }
                None if n > 0 || left.is_zero() => break,
                None => {}
            }
        }
        n
    }

    /// Pauses `msg`'s partition until its consumer can handle `msg`.
    fn block(&mut self, msg: OwnedMessage) {
        let tp = (msg.topic().to_owned(), msg.partition());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.0, tp.1);
        if let Err(e) = self.consumer.pause(&tpl) {
            // Still correct: its later records are dropped until the seek.
            tracing::warn!(error = %e, topic = tp.0, partition = tp.1, "pausing a partition");
        }
        let backoff = Duration::from_millis(100);
        self.blocked.insert(tp, Blocked { msg, retry_at: Instant::now() + backoff, backoff, handled: false });
    }

    /// Offers the paused records that are due again; seeks past and
    /// resumes the partitions of those handled. Returns how many were.
    fn retry_blocked(&mut self, handle: &mut impl FnMut(RawRecord<'_>) -> Handled) -> usize {
        if self.blocked.is_empty() {
            return 0;
        }
        let now = Instant::now();
        let due: Vec<(String, i32)> =
            self.blocked.iter().filter(|(_, b)| b.retry_at <= now).map(|(tp, _)| tp.clone()).collect();
        let mut n = 0;
        for tp in due {
            let Some(mut b) = self.blocked.remove(&tp) else { continue };
            if !b.handled {
                if handle(RawRecord::of(&b.msg)) == Handled::Retry {
                    b.backoff = (b.backoff * 2).min(Duration::from_secs(5));
                    b.retry_at = now + b.backoff;
                    self.blocked.insert(tp, b);
                    continue;
                }
                n += 1;
                self.positions.insert(tp.clone(), b.msg.offset() + 1);
                b.handled = true;
            }
            let next = Offset::Offset(b.msg.offset() + 1);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&tp.0, tp.1);
            match self
                .consumer
                .seek(&tp.0, tp.1, next, Duration::from_secs(1))
                .and_then(|()| self.consumer.resume(&tpl))
            {
                Ok(()) => tracing::info!(topic = tp.0, partition = tp.1, "partition resumed"),
                Err(e) => {
                    tracing::warn!(error = %e, topic = tp.0, partition = tp.1, "seek/resume of a paused partition; retrying");
                    b.retry_at = now + Duration::from_millis(100);
                    self.blocked.insert(tp, b);
                }
            }
        }
        n
    }

    /// Positions read so far: committing them covers every record handled.
    pub fn positions(&self) -> &Offsets {
        &self.positions
    }

    /// Commits `offsets` for the group (asynchronously). `watermark` is
    /// stored as each partition's commit metadata (see [`Self::committed`]).
    pub fn commit(&self, offsets: &Offsets, watermark: Option<i64>) -> Result<(), KafkaError> {
        if offsets.is_empty() {
            return Ok(());
        }
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

    /// The group's committed offsets of every input partition, and the
    /// least watermark committed with them (`None` when none). The least,
    /// because workers commit independently, and a greater one may already
    /// count events beyond another worker's commit.
    pub fn committed(&self, timeout: Duration) -> Result<(Offsets, Option<i64>), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &self.all {
            tpl.add_partition(t, *p);
        }
        let committed = self.consumer.committed_offsets(tpl, timeout)?;
        let mut offsets = Offsets::new();
        let mut watermark: Option<i64> = None;
        for elem in committed.elements() {
            if let Some(w) = elem.metadata().strip_prefix(WATERMARK_METADATA).and_then(|w| w.parse::<i64>().ok()) {
                watermark = Some(watermark.map_or(w, |m| m.min(w)));
            }
            if let Offset::Offset(o) = elem.offset() {
                offsets.insert((elem.topic().to_owned(), elem.partition()), o);
            }
        }
        Ok((offsets, watermark))
    }

    /// (low, high) watermarks of an assigned partition.
    pub fn watermarks(&self, topic: &str, partition: i32, timeout: Duration) -> Result<(i64, i64), KafkaError> {
        self.consumer.fetch_watermarks(topic, partition, timeout)
    }

    /// The offsets up to which a start-up catch-up must read: the high
    /// watermark of every assigned partition that holds any record.
    pub fn catch_up_targets(&self) -> Result<Offsets, KafkaError> {
        let mut out = Offsets::new();
        for (t, p) in &self.assigned {
            let (low, high) = self.watermarks(t, *p, Duration::from_secs(5))?;
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

/// The partitions of `topic`, waiting until `deadline` for it to exist.
fn wait_for_partitions(consumer: &BaseConsumer, topic: &str, deadline: Instant) -> Result<Vec<i32>, TransportError> {
    loop {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        let partitions: Vec<i32> = md
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !partitions.is_empty() {
            return Ok(partitions);
        }
        if Instant::now() >= deadline {
            return Err(TransportError::MissingTopic(topic.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
