//! Durable state: the checkpoint store (docs/guarantees.md, "Checkpoints").
//!
//! A checkpoint holds what the dataflow cannot rebuild from the input that
//! follows it: per topic, the current version of every key (the upsert
//! log, as the upsert operator resolved it), the Kafka position after the
//! last message it covers, per partition, and the watermark the last
//! epoch it covers was processed with. Retention's own state lives in
//! ClickHouse's state tables, tagged by watermark; the checkpoint's
//! watermark selects what of it a start takes back.
//!
//! The store is [`fjall`], a pure-Rust LSM tree: one keyspace per topic for
//! the log and one for the metadata, each checkpoint one atomic batch across
//! them, fsynced before [`CheckpointStore::write`] returns. A crash in the
//! middle of a write leaves the previous checkpoint; a checkpoint is
//! incremental (the keys that changed since the previous one).
//!
//! Every log value carries a checksum, and the metadata the number of keys
//! per topic, so a damaged store is an error ([`StateError::Corrupt`]) when
//! it is read, never a silently different state.
//!
//! A process of a multi-process cluster checkpoints in two phases: a cut is
//! first *staged* ([`CheckpointStore::stage`]: its changes, positions and
//! watermark beside the checkpoint, which stays as it was), and *applied*
//! ([`CheckpointStore::apply_staged`]) once every process has staged the
//! same cut, or discarded when a start finds that some process has not.
//! Cuts are numbered (`seq`) across runs, so processes can agree on one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use revpulse_pipelines::event::Topic;

use crate::kafka::Offsets;

/// The layout this build reads and writes.
/// `-1` checksummed values with FNV-1a, byte by byte, which took a
/// third of a restore's reading time; `-2` uses XXH3.
const FORMAT: &[u8] = b"revpulse-checkpoint-2";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store at {dir}: {source}")]
    Store { dir: String, source: fjall::Error },
    #[error("state store at {dir} is damaged ({detail}); restore it from a backup, or start with --rebuild to rebuild the state from what the topics hold")]
    Corrupt { dir: String, detail: String },
    #[error("state store at {dir} has layout {found:?}, this build reads {expected:?}; start with --rebuild")]
    Format { dir: String, found: String, expected: String },
    #[error("removing the state directory {dir}: {source}")]
    Wipe { dir: String, source: std::io::Error },
}

/// One key's change in the upsert log: its new current version, as
/// `(arrival sequence, JSON)`, or `None` when it has none any more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChange {
    pub topic: Topic,
    pub key: String,
    pub value: Option<(u64, Vec<u8>)>,
}

/// What one checkpoint writes: the log changes since the previous one (at
/// most one per topic and key), and the positions and watermark as of its
/// last epoch.
#[derive(Clone, Debug, Default)]
pub struct Cut {
    pub changes: Vec<LogChange>,
    pub positions: Offsets,
    pub watermark: i64,
}

/// The metadata of the checkpoint in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub positions: Offsets,
    pub watermark: i64,
    /// Keys per topic.
    pub keys: BTreeMap<Topic, u64>,
    /// When it was written, in milliseconds since the epoch.
    pub written_at_ms: u64,
    /// The cut's number (multi-process runs; 0 otherwise).
    pub seq: u64,
    /// The run that wrote it, e.g. `process 0 of 2, 1 worker each`, or
    /// `one process` (whose worker count may change between runs).
    pub shape: String,
}

impl Checkpoint {
    pub fn total_keys(&self) -> u64 {
        self.keys.values().sum()
    }
}

/// What a write did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Written {
    pub changes: usize,
    pub keys: u64,
}

/// A local checkpoint store (`[state] dir`).
#[derive(Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    keyspace: Keyspace,
    meta: PartitionHandle,
    logs: Vec<(Topic, PartitionHandle)>,
    /// A staged cut's changes, keyed by topic (its index) and key.
    stage: PartitionHandle,
}

impl CheckpointStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<CheckpointStore, StateError> {
        let err = |source| StateError::Store { dir: dir.display().to_string(), source };
        let keyspace = Config::new(dir).open().map_err(err)?;
        let meta = keyspace.open_partition("meta", PartitionCreateOptions::default()).map_err(err)?;
        let mut logs = Vec::new();
        for topic in Topic::ALL {
            let name = format!("log_{}", topic.name());
            logs.push((topic, keyspace.open_partition(&name, PartitionCreateOptions::default()).map_err(err)?));
        }
        let stage = keyspace.open_partition("stage", PartitionCreateOptions::default()).map_err(err)?;
        Ok(CheckpointStore { dir: dir.to_owned(), keyspace, meta, logs, stage })
    }

    /// Removes everything in `dir` (`--rebuild`).
    pub fn wipe(dir: &Path) -> Result<(), StateError> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Wipe { dir: dir.display().to_string(), source }),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn store_err(&self) -> impl Fn(fjall::Error) -> StateError + '_ {
        move |source| StateError::Store { dir: self.dir.display().to_string(), source }
    }

    fn corrupt(&self, detail: impl Into<String>) -> StateError {
        StateError::Corrupt { dir: self.dir.display().to_string(), detail: detail.into() }
    }

    fn log(&self, topic: Topic) -> &PartitionHandle {
        // Every topic's keyspace is opened in `open`.
        &self.logs.iter().find(|(t, _)| *t == topic).unwrap_or(&self.logs[0]).1
    }

    fn meta_u64(&self, key: &str) -> Result<Option<u64>, StateError> {
        match self.meta.get(key).map_err(self.store_err())? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| self.corrupt(format!("metadata {key}")))?;
                Ok(Some(u64::from_le_bytes(bytes)))
            }
        }
    }

    fn meta_string(&self, key: &str) -> Result<Option<String>, StateError> {
        match self.meta.get(key).map_err(self.store_err())? {
            None => Ok(None),
            Some(v) => Ok(Some(String::from_utf8(v.to_vec()).map_err(|_| self.corrupt(format!("metadata {key}")))?)),
        }
    }

    fn read_positions(&self, prefix: &str) -> Result<Offsets, StateError> {
        let mut positions = Offsets::new();
        for item in self.meta.prefix(prefix) {
            let (k, v) = item.map_err(self.store_err())?;
            let name = std::str::from_utf8(&k[prefix.len()..]).map_err(|_| self.corrupt("position key"))?;
            let (topic, partition) = name.rsplit_once('/').ok_or_else(|| self.corrupt("position key"))?;
            let partition: i32 = partition.parse().map_err(|_| self.corrupt("position partition"))?;
            let offset: [u8; 8] = v.as_ref().try_into().map_err(|_| self.corrupt("position offset"))?;
            positions.insert((topic.to_owned(), partition), i64::from_le_bytes(offset));
        }
        Ok(positions)
    }

    /// The checkpoint in the store, or `None` if none was written.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        let format = self.meta.get("format").map_err(self.store_err())?;
        let Some(format) = format else {
            if self.logs.iter().any(|(_, l)| l.first_key_value().ok().flatten().is_some()) {
                return Err(self.corrupt("log entries without metadata"));
            }
            return Ok(None);
        };
        if format.as_ref() != FORMAT {
            return Err(StateError::Format {
                dir: self.dir.display().to_string(),
                found: String::from_utf8_lossy(&format).into_owned(),
                expected: String::from_utf8_lossy(FORMAT).into_owned(),
            });
        }
        let watermark = self.meta_u64("watermark")?.ok_or_else(|| self.corrupt("no watermark"))? as i64;
        let written_at_ms = self.meta_u64("written_at_ms")?.unwrap_or(0);
        let mut keys = BTreeMap::new();
        for topic in Topic::ALL {
            keys.insert(topic, self.meta_u64(&format!("keys/{}", topic.name()))?.unwrap_or(0));
        }
        let positions = self.read_positions("pos/")?;
        let seq = self.meta_u64("seq")?.unwrap_or(0);
        let shape = self.meta_string("shape")?.ok_or_else(|| self.corrupt("no shape"))?;
        Ok(Some(Checkpoint { positions, watermark, keys, written_at_ms, seq, shape }))
    }

    /// Writes `cut` as the checkpoint of a run of `shape`, as one atomic
    /// batch, and syncs it to disk.
    pub fn write(&self, cut: &Cut, shape: &str, now_ms: u64) -> Result<Written, StateError> {
        let mut batch = self.keyspace.batch().durability(Some(PersistMode::SyncAll));
        let written = self.fill(&mut batch, cut, shape, now_ms)?;
        batch.commit().map_err(self.store_err())?;
        Ok(written)
    }

    /// Adds `cut` as the checkpoint to `batch`.
    fn fill(&self, batch: &mut fjall::Batch, cut: &Cut, shape: &str, now_ms: u64) -> Result<Written, StateError> {
        let mut counts = BTreeMap::new();
        for topic in Topic::ALL {
            counts.insert(topic, self.meta_u64(&format!("keys/{}", topic.name()))?.unwrap_or(0));
        }
        for change in &cut.changes {
            let log = self.log(change.topic);
            let existed = log.contains_key(&change.key).map_err(self.store_err())?;
            let count = counts.entry(change.topic).or_insert(0);
            match &change.value {
                Some((seq, json)) => {
                    batch.insert(log, change.key.as_bytes(), encode_value(*seq, json));
                    *count += u64::from(!existed);
                }
                None => {
                    batch.remove(log, change.key.as_bytes());
                    *count -= u64::from(existed).min(*count);
                }
            }
        }
        for ((topic, partition), offset) in &cut.positions {
            batch.insert(&self.meta, format!("pos/{topic}/{partition}"), offset.to_le_bytes());
        }
        for (topic, count) in &counts {
            batch.insert(&self.meta, format!("keys/{}", topic.name()), count.to_le_bytes());
        }
        batch.insert(&self.meta, "watermark", cut.watermark.to_le_bytes());
        batch.insert(&self.meta, "written_at_ms", now_ms.to_le_bytes());
        batch.insert(&self.meta, "shape", shape.as_bytes());
        batch.insert(&self.meta, "format", FORMAT);
        Ok(Written { changes: cut.changes.len(), keys: counts.values().sum() })
    }

    /// The number of the staged cut, if there is one.
    pub fn staged(&self) -> Result<Option<u64>, StateError> {
        let Some(seq) = self.meta_u64("stage/seq")? else { return Ok(None) };
        let format = self.meta.get("stage/format").map_err(self.store_err())?;
        if format.as_deref() != Some(FORMAT) {
            return Err(StateError::Format {
                dir: self.dir.display().to_string(),
                found: format.map_or_else(|| "nothing".to_owned(), |f| String::from_utf8_lossy(&f).into_owned()),
                expected: String::from_utf8_lossy(FORMAT).into_owned(),
            });
        }
        Ok(Some(seq))
    }

    /// Writes `cut` as staged cut number `seq`, beside the checkpoint,
    /// which stays as it is until [`apply_staged`](Self::apply_staged).
    pub fn stage(&self, cut: &Cut, seq: u64) -> Result<(), StateError> {
        let mut batch = self.keyspace.batch().durability(Some(PersistMode::SyncAll));
        self.clear_stage(&mut batch)?;
        for change in &cut.changes {
            let value = change.value.as_ref().map_or_else(Vec::new, |(seq, json)| encode_value(*seq, json));
            batch.insert(&self.stage, stage_key(change.topic, &change.key), value);
        }
        for ((topic, partition), offset) in &cut.positions {
            batch.insert(&self.meta, format!("stage/pos/{topic}/{partition}"), offset.to_le_bytes());
        }
        batch.insert(&self.meta, "stage/watermark", cut.watermark.to_le_bytes());
        batch.insert(&self.meta, "stage/seq", seq.to_le_bytes());
        // Not "format": that would make a first cut look like a checkpoint.
        batch.insert(&self.meta, "stage/format", FORMAT);
        batch.commit().map_err(self.store_err())
    }

    /// Makes the staged cut the checkpoint (of a run of `shape`), in one
    /// atomic batch; `None` if nothing is staged.
    pub fn apply_staged(&self, shape: &str, now_ms: u64) -> Result<Option<Written>, StateError> {
        let Some(seq) = self.staged()? else { return Ok(None) };
        let mut changes = Vec::new();
        for item in self.stage.iter() {
            let (k, v) = item.map_err(self.store_err())?;
            let (&topic, key) = k.split_first().ok_or_else(|| self.corrupt("a staged key"))?;
            let topic = *Topic::ALL.get(usize::from(topic)).ok_or_else(|| self.corrupt("a staged key's topic"))?;
            let key = std::str::from_utf8(key).map_err(|_| self.corrupt("a staged key"))?.to_owned();
            let value = if v.is_empty() {
                None
            } else {
                let (seq, json) = decode_value(&v).ok_or_else(|| self.corrupt("a staged entry"))?;
                Some((seq, json.to_vec()))
            };
            changes.push(LogChange { topic, key, value });
        }
        let watermark = self.meta_u64("stage/watermark")?.ok_or_else(|| self.corrupt("no staged watermark"))? as i64;
        let cut = Cut { changes, positions: self.read_positions("stage/pos/")?, watermark };
        let mut batch = self.keyspace.batch().durability(Some(PersistMode::SyncAll));
        let written = self.fill(&mut batch, &cut, shape, now_ms)?;
        batch.insert(&self.meta, "seq", seq.to_le_bytes());
        self.clear_stage(&mut batch)?;
        batch.commit().map_err(self.store_err())?;
        Ok(Some(written))
    }

    /// Drops the staged cut, if any: some process did not stage it.
    pub fn discard_staged(&self) -> Result<(), StateError> {
        let mut batch = self.keyspace.batch().durability(Some(PersistMode::SyncAll));
        self.clear_stage(&mut batch)?;
        batch.commit().map_err(self.store_err())
    }

    fn clear_stage(&self, batch: &mut fjall::Batch) -> Result<(), StateError> {
        for item in self.stage.keys() {
            batch.remove(&self.stage, item.map_err(self.store_err())?);
        }
        for item in self.meta.prefix("stage/") {
            batch.remove(&self.meta, item.map_err(self.store_err())?.0);
        }
        Ok(())
    }

    /// Calls `f(key, seq, json)` for every key of `topic`'s log in this
    /// worker's share (`index` of `peers`, by a hash of the key), after
    /// checking every entry's checksum and the number of keys against the
    /// checkpoint's. Returns the number of keys in the share.
    pub fn for_each_entry(
        &self,
        topic: Topic,
        expected_keys: u64,
        (index, peers): (usize, usize),
        mut f: impl FnMut(&str, u64, &[u8]),
    ) -> Result<u64, StateError> {
        let (mut all, mut mine) = (0u64, 0u64);
        for item in self.log(topic).iter() {
            let (k, v) = item.map_err(self.store_err())?;
            all += 1;
            let (seq, json) = decode_value(&v).ok_or_else(|| self.corrupt(format!("a {} entry", topic.name())))?;
            if share_of(&k, peers) != index {
                continue;
            }
            let key = std::str::from_utf8(&k).map_err(|_| self.corrupt(format!("a {} key", topic.name())))?;
            f(key, seq, json);
            mine += 1;
        }
        if all != expected_keys {
            return Err(self.corrupt(format!("{} holds {all} keys, the checkpoint says {expected_keys}", topic.name())));
        }
        Ok(mine)
    }

    /// Bytes the store takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.keyspace.disk_space()
    }
}

fn stage_key(topic: Topic, key: &str) -> Vec<u8> {
    let index = Topic::ALL.iter().position(|t| *t == topic).unwrap_or(0) as u8;
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(index);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The worker (of `peers`) that restores a key: any split works, since the
/// upsert operator routes every key to its owner.
fn share_of(key: &[u8], peers: usize) -> usize {
    (fnv1a(key) % peers.max(1) as u64) as usize
}

/// FNV-1a, 64 bits, for splitting keys between workers (short inputs).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// XXH3, 64 bits: a checksum against damaged bytes, not an adversary.
fn checksum(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// `checksum (8) | seq (8) | JSON`, little-endian.
fn encode_value(seq: u64, json: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + json.len());
    body.extend_from_slice(&[0; 8]);
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(json);
    let sum = checksum(&body[8..]);
    body[..8].copy_from_slice(&sum.to_le_bytes());
    body
}

fn decode_value(v: &[u8]) -> Option<(u64, &[u8])> {
    if v.len() < 16 {
        return None;
    }
    let sum = u64::from_le_bytes(v[..8].try_into().ok()?);
    if sum != checksum(&v[8..]) {
        return None;
    }
    Some((u64::from_le_bytes(v[8..16].try_into().ok()?), &v[16..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(topic: Topic, key: &str, value: Option<&str>) -> LogChange {
        LogChange { topic, key: key.into(), value: value.map(|v| (7, v.as_bytes().to_vec())) }
    }

    fn entries(store: &CheckpointStore, topic: Topic) -> Vec<(String, u64, String)> {
        let expected = store.checkpoint().ok().flatten().map_or(0, |c| c.keys[&topic]);
        let mut out = Vec::new();
        let n = store.for_each_entry(topic, expected, (0, 1), |k, s, j| {
            out.push((k.to_owned(), s, String::from_utf8_lossy(j).into_owned()))
        });
        assert_eq!(n.ok(), Some(out.len() as u64));
        out
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("revpulse-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Checkpoints are incremental: puts replace, deletes remove, the key
    /// counts and positions follow, and a reopened store reads the same.
    #[test]
    fn incremental_checkpoints_round_trip() -> Result<(), StateError> {
        let dir = temp("roundtrip");
        {
            let store = CheckpointStore::open(&dir)?;
            assert_eq!(store.checkpoint()?, None);
            let positions = Offsets::from([(("payments".to_owned(), 0), 10)]);
            let first = vec![change(Topic::Payments, "a", Some("1")), change(Topic::Payments, "b", Some("2"))];
            store.write(&Cut { changes: first, positions, watermark: 5 }, "one process", 1)?;
            let positions = Offsets::from([(("payments".to_owned(), 0), 20), (("payments".to_owned(), 1), 3)]);
            let second = vec![
                change(Topic::Payments, "a", None),
                change(Topic::Payments, "b", Some("3")),
                change(Topic::Payments, "gone", None),
            ];
            store.write(&Cut { changes: second, positions, watermark: 9 }, "one process", 2)?;
        }
        let store = CheckpointStore::open(&dir)?;
        let cp = store.checkpoint()?.ok_or_else(|| store.corrupt("missing"))?;
        assert_eq!(cp.watermark, 9);
        assert_eq!(cp.keys[&Topic::Payments], 1);
        assert_eq!(cp.positions.get(&("payments".to_owned(), 0)), Some(&20));
        assert_eq!(cp.positions.get(&("payments".to_owned(), 1)), Some(&3));
        assert_eq!(entries(&store, Topic::Payments), vec![("b".to_owned(), 7, "3".to_owned())]);
        assert!(entries(&store, Topic::Impressions).is_empty());
        drop(store);
        CheckpointStore::wipe(&dir)?;
        assert_eq!(CheckpointStore::open(&dir)?.checkpoint()?, None);
        CheckpointStore::wipe(&dir)
    }

    /// A staged cut leaves the checkpoint as it was until it is applied;
    /// a discarded one leaves no trace; cuts keep their numbers.
    #[test]
    fn staged_cuts_apply_or_discard_atomically() -> Result<(), StateError> {
        let dir = temp("staged");
        let store = CheckpointStore::open(&dir)?;
        let at = |offset| Offsets::from([(("payments".to_owned(), 0), offset)]);
        let shape = "process 0 of 2, 1 worker each";
        store.stage(
            &Cut { changes: vec![change(Topic::Payments, "a", Some("1"))], positions: at(4), watermark: 3 },
            1,
        )?;
        assert_eq!(store.checkpoint()?, None, "staged is not a checkpoint");
        assert_eq!(store.staged()?, Some(1));
        assert!(store.apply_staged(shape, 10)?.is_some());
        let cp = store.checkpoint()?.ok_or_else(|| store.corrupt("missing"))?;
        assert_eq!((cp.seq, cp.watermark, cp.shape.as_str()), (1, 3, shape));
        assert_eq!(cp.positions, at(4));
        assert_eq!(store.staged()?, None);
        let second = vec![change(Topic::Payments, "a", None), change(Topic::Payments, "b", Some("2"))];
        store.stage(&Cut { changes: second, positions: at(9), watermark: 5 }, 2)?;
        store.discard_staged()?;
        assert_eq!(store.staged()?, None);
        assert_eq!(store.apply_staged(shape, 11)?.map(|w| w.keys), None);
        let cp = store.checkpoint()?.ok_or_else(|| store.corrupt("missing"))?;
        assert_eq!((cp.seq, cp.positions.clone()), (1, at(4)));
        assert_eq!(entries(&store, Topic::Payments), vec![("a".to_owned(), 7, "1".to_owned())]);
        let third = vec![change(Topic::Payments, "a", None), change(Topic::Payments, "b", Some("2"))];
        store.stage(&Cut { changes: third, positions: at(12), watermark: 6 }, 2)?;
        drop(store);
        let store = CheckpointStore::open(&dir)?;
        assert_eq!(store.staged()?, Some(2), "a staged cut survives a restart");
        store.apply_staged(shape, 12)?;
        let cp = store.checkpoint()?.ok_or_else(|| store.corrupt("missing"))?;
        assert_eq!((cp.seq, cp.positions.clone(), cp.keys[&Topic::Payments]), (2, at(12), 1));
        assert_eq!(entries(&store, Topic::Payments), vec![("b".to_owned(), 7, "2".to_owned())]);
        drop(store);
        CheckpointStore::wipe(&dir)
    }

    #[test]
    fn damaged_values_are_detected() {
        let good = encode_value(3, b"{\"a\":1}");
        assert_eq!(decode_value(&good), Some((3, &b"{\"a\":1}"[..])));
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert_eq!(decode_value(&bad), None, "byte {i}");
        }
        assert_eq!(decode_value(&good[..good.len() - 1]), None);
    }
}
