//! The upsert operator shared by all five topics (SPEC §2).
//!
//! Turns a stream of keyed versions and tombstones into a differential
//! collection of the *current* version per key, emitting the retraction of
//! the previous version whenever it is replaced or deleted.
//!
//! Modelled on differential's `arrange_from_upsert`, with a different rule:
//! that operator lets the last update (by dataflow time, ties by value)
//! replace the previous value unconditionally, while SPEC §2 keeps the
//! version with the greatest *event* `ts` since the last tombstone (ties: the
//! later arrival). So an older version that arrives late must be ignored,
//! which needs the current version's `ts` at hand. The operator keeps the
//! current version per key in a hash map, as Materialize's upsert operator
//! does; everything downstream is arrangements, `reduce` and `join`.
//!
//! **The upsert log.** With checkpoints on, the operator also reports each
//! key's changes ([`Logged`] entries): the version it made current, with
//! its arrival sequence, or that the key has none any more (a tombstone,
//! or a release of the sole holder's state). A release that only forgets
//! a version (the families hold their own copies) leaves it in the log, so
//! a restart from a checkpoint feeds the dataflow what a replay of a topic
//! compacted by the SPEC §2 rule would. Versions fed back from a
//! checkpoint carry the sequence [`RESTORED`] and are not logged again.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::{ExchangeData, VecCollection};
use serde::Serialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map as _;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::event::{Topic, Versioned};
use crate::retention::{by_watermark, closed, split_results, Retained, Work};
use crate::time::Micros;
use crate::types::Text;

/// Dataflow time: an ingestion epoch. Every batch of input messages gets the
/// next epoch, so event times never gate progress and any lateness is fine.
pub type Epoch = u64;

/// One input message: upsert key, the new version (`None`: tombstone), and
/// its arrival sequence number (Kafka offset, or line number in `replay`).
/// All messages of one key come from one partition, so the sequence numbers
/// of one key order its messages by arrival.
pub type UpsertMsg<V> = (Text, Option<V>, u64);

/// The arrival sequence of a version fed back from a checkpoint.
pub const RESTORED: u64 = u64::MAX;

/// A change of a key in the upsert log: its new current version with that
/// version's arrival sequence, or `None` when it has none any more.
pub type LogEntry<V> = (Text, Option<(u64, V)>);

/// Applies the SPEC §2 upsert rule to the messages of one key, in arrival
/// order, starting from the current version `current`. Returns `None` if the
/// messages leave the current version as it is, else the new current version.
pub fn resolve<V: Versioned>(current: Option<&V>, msgs: impl IntoIterator<Item = Option<V>>) -> Option<Option<V>> {
    resolve_seq(current, msgs.into_iter().map(|m| (m, 0))).map(|next| next.map(|(v, _)| v))
}

/// [`resolve`] over `(version, arrival sequence)` pairs, keeping the
/// sequence of the version that wins.
fn resolve_seq<V: Versioned>(
    current: Option<&V>,
    msgs: impl IntoIterator<Item = (Option<V>, u64)>,
) -> Option<Option<(V, u64)>> {
    let mut next: Option<Option<(V, u64)>> = None;
    for (msg, seq) in msgs {
        match msg {
            None => next = Some(None),
            Some(v) => {
                let cur_ts = match &next {
                    Some(n) => n.as_ref().map(|(n, _)| n.ts()),
                    None => current.map(|c| c.ts()),
                };
                // `>=`: on an exact tie the later arrival wins.
                if cur_ts.is_none_or(|t| v.ts() >= t) {
                    next = Some(Some((v, seq)));
                }
            }
        }
    }
    next
}

/// What the operator emits: a change of the current versions, or (with
/// checkpoints) an upsert-log entry.
type Out<V> = (Result<(Text, V), LogEntry<V>>, Epoch, isize);

/// The arrival position of a Kafka message: partition and offset in one
/// number (offset in the low 40 bits), so it orders one key's versions
/// (which share a partition) and names the message for a dead letter.
pub fn seq(partition: i32, offset: i64) -> u64 {
    ((partition.max(0) as u64) << 40) | (offset.max(0) as u64 & ((1 << 40) - 1))
}

/// The partition and offset of a [`seq`].
pub fn seq_parts(seq: u64) -> (i32, i64) {
    ((seq >> 40) as i32, (seq & ((1 << 40) - 1)) as i64)
}

/// An impression rejected because its month was closed (SPEC §7), for the
/// dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TooLate {
    pub topic: Topic,
    pub key: Text,
    /// See [`seq`].
    pub seq: u64,
    /// The event as decoded, in canonical JSON.
    pub payload: String,
    /// The watermark it was judged against.
    pub watermark: Micros,
}

/// Retention of an upsert stream: a version is released once the watermark
/// reaches its `release_at` (every family it feeds has closed it), and a
/// version that arrives released is rejected as too late.
pub struct UpsertRetention<'r, 's, V> {
    pub retained: &'r Retained<'s>,
    pub topic: Topic,
    /// The watermark at which a version is released.
    pub release_at: Rc<dyn Fn(&V) -> Micros>,
    /// Whether the upsert state is the only holder of the versions.
    /// Impressions: RaR keeps nothing else, so a release retracts the
    /// version, and a version that arrives released is rejected (too late).
    /// The other topics' families hold their own copies and judge lateness
    /// themselves (an open subject still takes an old record), so every
    /// version is admitted and a release only forgets it: a later correction
    /// then counts as a new record.
    pub sole_holder: bool,
    pub too_late: Rc<RefCell<Vec<TooLate>>>,
}

/// The current version per key, with an index of release times.
struct State<V> {
    current: HashMap<Text, V>,
    /// (release time, key) of versions made current; entries go stale when
    /// a key moves on, and are checked against `current` on release.
    ends: BTreeMap<Micros, Vec<Text>>,
}

impl<V: Versioned + Clone + PartialEq> State<V> {
    /// Applies one epoch's messages, sorted by key then arrival; `admit`
    /// says whether a version may enter (it is not released yet).
    fn apply(
        &mut self,
        batch: Vec<UpsertMsg<V>>,
        mut admit: impl FnMut(&Text, u64, &V) -> bool,
        release_at: Option<&dyn Fn(&V) -> Micros>,
        log: bool,
        mut give: impl FnMut(Result<(Text, V), LogEntry<V>>, isize),
    ) {
        let mut msgs = batch.into_iter().peekable();
        while let Some((key, first, seq)) = msgs.next() {
            let mut group = Vec::new();
            let mut push = |v: Option<V>, seq: u64| match v {
                Some(v) if !admit(&key, seq, &v) => {}
                v => group.push((v, seq)),
            };
            push(first, seq);
            while let Some((_, v, seq)) = msgs.next_if(|m| m.0 == key) {
                push(v, seq);
            }
            let Some(next) = resolve_seq(self.current.get(&key), group) else {
                continue;
            };
            let prev = match &next {
                Some((v, _)) => {
                    if let Some(release_at) = release_at {
                        self.ends.entry(release_at(v)).or_default().push(key.clone());
                    }
                    self.current.insert(key.clone(), v.clone())
                }
                None => self.current.remove(&key),
            };
            // A tombstone is logged even for a key with no current version:
            // the log may still hold a version released from `current`.
            let changed = match (&prev, &next) {
                (Some(p), Some((n, _))) => p != n,
                (None, Some(_)) => true,
                (_, None) => true,
            };
            if log && changed && next.as_ref().is_none_or(|(_, seq)| *seq != RESTORED) {
                give(Err((key.clone(), next.as_ref().map(|(v, seq)| (*seq, v.clone())))), 1);
            }
            let next = next.map(|(v, _)| v);
            if prev == next {
                continue;
            }
            if let Some(p) = prev {
                give(Ok((key.clone(), p)), -1);
            }
            if let Some(n) = next {
                give(Ok((key, n)), 1);
            }
        }
    }

    /// Removes every current version released under watermark `w`, and
    /// hands it to `give` (to retract it) when `retract`.
    fn release(
        &mut self,
        w: Micros,
        release_at: &dyn Fn(&V) -> Micros,
        retract: bool,
        log: bool,
        mut give: impl FnMut(Result<(Text, V), LogEntry<V>>, isize),
    ) {
        let released = |at: Micros| closed(at, w, 0);
        while let Some(entry) = self.ends.first_entry() {
            if !released(*entry.key()) {
                break;
            }
            for key in entry.remove() {
                if self.current.get(&key).is_some_and(|v| released(release_at(v))) {
                    if let Some(v) = self.current.remove(&key) {
                        if retract {
                            if log {
                                give(Err((key.clone(), None)), 1);
                            }
                            give(Ok((key, v)), -1);
                        }
                    }
                }
            }
        }
    }
}

/// Groups by key; within a key, arrival order.
fn sort_batch<V>(batch: &mut [UpsertMsg<V>]) {
    batch.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
}

/// The current versions of an upsert stream, and (with checkpoints) its
/// upsert-log entries.
pub type Upserted<'scope, V> =
    (VecCollection<'scope, Epoch, (Text, V)>, Option<VecCollection<'scope, Epoch, LogEntry<V>>>);

/// Maintains the collection of current versions of an upsert stream, and
/// with `log` the stream of its upsert-log entries (see the module docs).
pub fn upsert<'scope, V>(
    stream: StreamVec<'scope, Epoch, UpsertMsg<V>>,
    name: &str,
    retention: Option<UpsertRetention<'_, 'scope, V>>,
    log: bool,
) -> Upserted<'scope, V>
where
    V: ExchangeData + Versioned + Serialize,
{
    let out = match retention {
        Some(retention) => upsert_retained(stream, name, retention, log),
        None => upsert_plain(stream, name, log),
    };
    if log {
        let (current, logged) = split_results(out);
        (current, Some(logged))
    } else {
        // Without a log every change is `Ok`: one pass, no copy of the stream.
        (out.flat_map(|(d, t, r)| d.ok().map(|d| (d, t, r))).as_collection(), None)
    }
}

fn upsert_plain<'scope, V>(
    stream: StreamVec<'scope, Epoch, UpsertMsg<V>>,
    name: &str,
    log: bool,
) -> StreamVec<'scope, Epoch, Out<V>>
where
    V: ExchangeData + Versioned + Serialize,
{
    let exchange = Exchange::new(|msg: &UpsertMsg<V>| msg.0.hashed());
    stream.unary_frontier::<CapacityContainerBuilder<Vec<Out<V>>>, _, _, _>(exchange, name, |_cap, _info| {
        let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Vec<UpsertMsg<V>>)> = BTreeMap::new();
        let mut state = State { current: HashMap::new(), ends: BTreeMap::new() };
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                pending.entry(*cap.time()).or_insert_with(|| (cap.retain(0), Vec::new())).1.append(data);
            });
            while let Some(entry) = pending.first_entry() {
                if frontier.less_equal(entry.key()) {
                    break;
                }
                let (time, (cap, mut batch)) = entry.remove_entry();
                sort_batch(&mut batch);
                let mut session = output.session(&cap);
                state.apply(batch, |_, _, _| true, None, log, |d, r| session.give((d, time, r)));
            }
        }
    })
}

/// [`upsert`] with retention: epochs are processed in order once the
/// watermark before them is known (see [`by_watermark`]).
fn upsert_retained<'scope, V>(
    stream: StreamVec<'scope, Epoch, UpsertMsg<V>>,
    name: &str,
    retention: UpsertRetention<'_, 'scope, V>,
    log: bool,
) -> StreamVec<'scope, Epoch, Out<V>>
where
    V: ExchangeData + Versioned + Serialize,
{
    let UpsertRetention { retained, topic, release_at, sole_holder, too_late } = retention;
    let exchange = Exchange::new(|msg: &UpsertMsg<V>| msg.0.hashed());
    let mut state = State { current: HashMap::new(), ends: BTreeMap::new() };
    by_watermark(stream, exchange, retained, name, move |time, w, work, out| match work {
        Work::Release => state.release(w, &*release_at, sole_holder, log, |d, r| out.push((d, time, r))),
        Work::Data(mut batch) => {
            sort_batch(&mut batch);
            let mut late = too_late.borrow_mut();
            let admit = |key: &Text, seq: u64, v: &V| {
                if !sole_holder || !closed(release_at(v), w, 0) {
                    return true;
                }
                let payload = serde_json::to_string(v).unwrap_or_default();
                late.push(TooLate { topic, key: key.clone(), seq, payload, watermark: w });
                false
            };
            state.apply(batch, admit, Some(&*release_at), log, |d, r| out.push((d, time, r)));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Micros;

    #[derive(Debug, PartialEq)]
    struct V(Micros, &'static str);
    impl Versioned for V {
        fn upsert_key(&self) -> &str {
            "k"
        }
        fn ts(&self) -> Micros {
            self.0
        }
        fn tenant(&self) -> &str {
            "t"
        }
    }

    #[test]
    fn greatest_ts_since_last_tombstone_wins() {
        assert_eq!(resolve::<V>(None, []), None);
        assert_eq!(resolve(None, [Some(V(2, "a")), Some(V(1, "b"))]), Some(Some(V(2, "a"))));
        assert_eq!(resolve(None, [Some(V(2, "a")), Some(V(2, "b"))]), Some(Some(V(2, "b"))));
        assert_eq!(resolve(Some(&V(5, "cur")), [Some(V(3, "old"))]), None);
        assert_eq!(resolve(Some(&V(5, "cur")), [None, Some(V(3, "old"))]), Some(Some(V(3, "old"))));
        assert_eq!(resolve(Some(&V(5, "cur")), [Some(V(9, "new")), None]), Some(None));
    }
}
