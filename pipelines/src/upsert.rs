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

use std::collections::{BTreeMap, HashMap};

use differential_dataflow::collection::AsCollection;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::{ExchangeData, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::event::Versioned;
use crate::types::Text;

/// Dataflow time: an ingestion epoch. Every batch of input messages gets the
/// next epoch, so event times never gate progress and any lateness is fine.
pub type Epoch = u64;

/// One input message: upsert key, the new version (`None`: tombstone), and
/// its arrival sequence number (Kafka offset, or line number in `replay`).
/// All messages of one key come from one partition, so the sequence numbers
/// of one key order its messages by arrival.
pub type UpsertMsg<V> = (Text, Option<V>, u64);

/// Applies the SPEC §2 upsert rule to the messages of one key, in arrival
/// order, starting from the current version `current`. Returns `None` if the
/// messages leave the current version as it is, else the new current version.
pub fn resolve<V: Versioned>(current: Option<&V>, msgs: impl IntoIterator<Item = Option<V>>) -> Option<Option<V>> {
    let mut next: Option<Option<V>> = None;
    for msg in msgs {
        match msg {
            None => next = Some(None),
            Some(v) => {
                let cur_ts = match &next {
                    Some(n) => n.as_ref().map(|n| n.ts()),
                    None => current.map(|c| c.ts()),
                };
                // `>=`: on an exact tie the later arrival wins.
                if cur_ts.is_none_or(|t| v.ts() >= t) {
                    next = Some(Some(v));
                }
            }
        }
    }
    next
}

/// Maintains the collection of current versions of an upsert stream.
pub fn upsert<'scope, V>(
    stream: StreamVec<'scope, Epoch, UpsertMsg<V>>,
    name: &str,
) -> VecCollection<'scope, Epoch, (Text, V)>
where
    V: ExchangeData + Versioned,
{
    let exchange = Exchange::new(|msg: &UpsertMsg<V>| msg.0.hashed());
    stream
        .unary_frontier::<CapacityContainerBuilder<Vec<((Text, V), Epoch, isize)>>, _, _, _>(
            exchange,
            name,
            |_cap, _info| {
                let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Vec<UpsertMsg<V>>)> = BTreeMap::new();
                let mut state: HashMap<Text, V> = HashMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        pending.entry(*cap.time()).or_insert_with(|| (cap.retain(0), Vec::new())).1.append(data);
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, (cap, mut batch)) = entry.remove_entry();
                        // Group by key; within a key, arrival order.
                        batch.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
                        let mut session = output.session(&cap);
                        let mut msgs = batch.into_iter().peekable();
                        while let Some((key, first, _)) = msgs.next() {
                            let mut group = vec![first];
                            while let Some((_, v, _)) = msgs.next_if(|m| m.0 == key) {
                                group.push(v);
                            }
                            let Some(next) = resolve(state.get(&key), group) else {
                                continue;
                            };
                            let prev = match &next {
                                Some(v) => state.insert(key.clone(), v.clone()),
                                None => state.remove(&key),
                            };
                            if prev == next {
                                continue;
                            }
                            if let Some(p) = prev {
                                session.give(((key.clone(), p), time, -1));
                            }
                            if let Some(n) = next {
                                session.give(((key, n), time, 1));
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
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
