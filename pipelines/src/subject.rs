//! Retention of the lifetime families — leads (SPEC §3.2), conversation
//! efficiency (§3.3) and experiments (§3.5) — per subject (SPEC §7; README
//! "Lateness and retention").
//!
//! These families have no period: a lead's score is over all its current
//! records. What bounds them is the subject (tenant × `subject_id`): every
//! record they read belongs to one, and a subject's activity ends. With
//! `subject_idle_secs` = `L`:
//! - each held record has an *end*: a conversations record its `ts`; an
//!   experiment message its assignment time (`sent_at`, or `ts`) plus the
//!   experiment window, since conversions may join it until then; a
//!   conversion its time. A subject's end is the greatest end of its records;
//! - a subject *closes* at the first epoch `e` whose horizon `W(<e) − L`
//!   reaches its end (a session window whose gap is `L`): all its records
//!   are retracted together at `e`, and every worker learns that it closed;
//! - a record whose own end is at or before the horizon when it arrives is
//!   left out (it is too late), whether or not its subject is open;
//! - a later record of a closed subject opens it afresh: a new lead, a new
//!   experiment subject.
//!
//! Until it closes, a subject is exact (a pure function of its current
//! records); when it closes, [`freeze_closed`] keeps what it contributed:
//! its `lead_scores` and `conversation_rpm` rows stay at their last values,
//! and its experiment figures stay in the variant sums.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::{Data, VecCollection};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast as _;
use timely::dataflow::operators::vec::Map as _;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::conversion::Conversion;
use crate::event::{Conversation, Message};
use crate::retention::{by_watermark, closed, Retained, Work, NO_WATERMARK};
use crate::row::{Cell, RowKey, RowVals, Table};
use crate::time::Micros;
use crate::types::Text;
use crate::upsert::Epoch;

/// A subject: (tenant, subject_id), the same pair as a lead.
pub type SubjectKey = (Text, Text);

/// A record a lifetime family reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Held {
    Conversation(Text, Conversation),
    /// A message carrying an experiment.
    Assignment(Text, Message),
    Conversion(Conversion),
    /// Input only: a subject open before a restart, and its `since`.
    Seed(Text, Text, Micros),
}

impl Held {
    fn subject(&self) -> SubjectKey {
        match self {
            Held::Seed(tenant, subject, _) => (tenant.clone(), subject.clone()),
            Held::Conversation(_, c) => (c.tenant_id.0.clone(), c.subject_id.0.clone()),
            Held::Assignment(_, m) => (m.tenant_id.0.clone(), m.subject_id.0.clone()),
            Held::Conversion(c) => (c.tenant.clone(), c.subject.clone()),
        }
    }

    /// Until when the record can still change its families' results.
    fn end(&self, experiment_window: Micros) -> Micros {
        match self {
            Held::Conversation(_, c) => c.ts.0,
            Held::Assignment(_, m) => m.sent_at.unwrap_or(m.ts).0.saturating_add(experiment_window),
            Held::Conversion(c) => c.time,
            Held::Seed(_, _, since) => *since,
        }
    }
}

/// The inputs of the lifetime families, as held per subject.
pub struct Subjects<'s> {
    pub conversations: VecCollection<'s, Epoch, (Text, Conversation)>,
    /// Messages that carry an experiment.
    pub assignments: VecCollection<'s, Epoch, (Text, Message)>,
    pub conversions: VecCollection<'s, Epoch, Conversion>,
    /// The subjects closed at each epoch, at every worker (`None`: subjects
    /// never close).
    pub closed: Option<StreamVec<'s, Epoch, SubjectKey>>,
    /// The `state_open_subjects` rows.
    pub open_rows: Option<VecCollection<'s, Epoch, (RowKey, RowVals)>>,
}

/// One subject's open records, with multiplicities, its end, and the
/// horizon when its current life began: records of the subject that end
/// after it belong to this life (records of earlier lives all end at or
/// before it), which is what lets a restart rebuild exactly this life.
struct Open {
    records: HashMap<Held, isize>,
    end: Micros,
    since: Micros,
}

/// What the subject operator emits.
// Changes are nearly all of it; boxing them would allocate per record.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Out {
    Change(Held),
    Closed(SubjectKey),
    /// A subject's `state_open_subjects` row.
    Open(SubjectKey, Micros),
}

/// The `state_open_subjects` row of a subject.
fn open_row((tenant, subject): SubjectKey, since: Micros) -> (RowKey, RowVals) {
    (
        RowKey::new(Table::StateOpenSubjects, vec![Cell::Str(tenant), Cell::Str(subject)]),
        vec![Cell::U64(since.max(0) as u64)],
    )
}

/// A `state_open_subjects` row as a seed.
fn seed_of((key, vals): (RowKey, RowVals)) -> Option<Held> {
    let (Table::StateOpenSubjects, [Cell::Str(tenant), Cell::Str(subject)], [Cell::U64(since)]) =
        (key.table, key.key.as_slice(), vals.as_slice())
    else {
        return None;
    };
    Some(Held::Seed(tenant.clone(), subject.clone(), (*since).min(i64::MAX as u64) as Micros))
}

/// Holds the lifetime families' inputs per subject, releasing a subject's
/// records together when it closes. Without `subject_idle_secs` the inputs
/// pass through.
pub fn subjects<'s>(
    conversations: VecCollection<'s, Epoch, (Text, Conversation)>,
    messages: VecCollection<'s, Epoch, (Text, Message)>,
    conversions: VecCollection<'s, Epoch, Conversion>,
    retained: Option<&Retained<'s>>,
    experiment_window: Micros,
    restored: VecCollection<'s, Epoch, (RowKey, RowVals)>,
) -> Subjects<'s> {
    let assignments = messages.filter(|(_, m)| m.experiment_id.is_some() && m.variant.is_some());
    let Some((r, lateness)) = retained.and_then(|r| Some((r, r.lateness.subject?))) else {
        return Subjects { conversations, assignments, conversions, closed: None, open_rows: None };
    };
    let held = conversations
        .map(|(k, c)| Held::Conversation(k, c))
        .concat(assignments.map(|(k, m)| Held::Assignment(k, m)))
        .concat(conversions.map(Held::Conversion))
        .concat(restored.flat_map(seed_of));
    let mut open: HashMap<SubjectKey, Open> = HashMap::new();
    // (end, subject) for every end a subject has had; stale entries are
    // checked against the subject's current end.
    let mut ends: BTreeMap<Micros, Vec<SubjectKey>> = BTreeMap::new();
    let exchange = Exchange::new(|(h, _, _): &(Held, Epoch, isize)| h.subject().hashed());
    let open_count = Rc::clone(&r.open_subjects);
    let out = by_watermark(held.inner, exchange, r, "Retain: subjects", move |epoch, w, work, out| {
        match work {
            Work::Release => {
                while let Some(entry) = ends.first_entry() {
                    if !closed(*entry.key(), w, lateness) {
                        break;
                    }
                    for subject in entry.remove() {
                        if !open.get(&subject).is_some_and(|o| closed(o.end, w, lateness)) {
                            continue;
                        }
                        if let Some(o) = open.remove(&subject) {
                            out.extend(o.records.into_iter().map(|(h, r)| (Out::Change(h), epoch, -r)));
                            out.push((Out::Open(subject.clone(), o.since), epoch, -1));
                            out.push((Out::Closed(subject), epoch, 1));
                        }
                    }
                }
            }
            Work::Data(mut batch) => {
                // Seeds (a restart's open subjects) before the records they admit.
                batch.sort_by_key(|(h, _, _)| !matches!(h, Held::Seed(..)));
                let horizon = if w == NO_WATERMARK { NO_WATERMARK } else { w.saturating_sub(lateness) };
                for (h, _, r) in batch {
                    let subject = h.subject();
                    let end = h.end(experiment_window);
                    if let Held::Seed(_, _, since) = h {
                        if r > 0 && !open.contains_key(&subject) {
                            open.insert(subject.clone(), Open { records: HashMap::new(), end: since, since });
                            ends.entry(since).or_default().push(subject.clone());
                            out.push((Out::Open(subject, since), epoch, 1));
                        }
                        continue;
                    }
                    let o = match open.get_mut(&subject) {
                        Some(o) if r < 0 || end > o.since => o,
                        Some(_) => continue,
                        // A retraction of a record released with its subject.
                        None if r < 0 => continue,
                        None if closed(end, w, lateness) => continue,
                        None => {
                            out.push((Out::Open(subject.clone(), horizon), epoch, 1));
                            ends.entry(end).or_default().push(subject.clone());
                            open.entry(subject.clone()).or_insert(Open { records: HashMap::new(), end, since: horizon })
                        }
                    };
                    let count = o.records.entry(h.clone()).or_insert(0);
                    if *count + r < 0 {
                        // Released with an earlier life of this subject.
                        if *count == 0 {
                            o.records.remove(&h);
                        }
                        continue;
                    }
                    *count += r;
                    if *count == 0 {
                        o.records.remove(&h);
                    }
                    if o.records.is_empty() {
                        // Every record retracted: its rows are deleted, not frozen.
                        let since = o.since;
                        open.remove(&subject);
                        out.push((Out::Open(subject, since), epoch, -1));
                        out.push((Out::Change(h), epoch, r));
                        continue;
                    }
                    let new_end = if r > 0 {
                        o.end.max(end)
                    } else {
                        o.records.keys().map(|h| h.end(experiment_window)).max().unwrap_or(end).max(o.since)
                    };
                    if new_end != o.end {
                        o.end = new_end;
                        ends.entry(new_end).or_default().push(subject);
                    }
                    out.push((Out::Change(h), epoch, r));
                }
            }
        }
        open_count.set(open.len());
    });
    let conversations_held = out.clone().flat_map(|(o, t, r)| match o {
        Out::Change(Held::Conversation(k, c)) => Some(((k, c), t, r)),
        _ => None,
    });
    let assignments_held = out.clone().flat_map(|(o, t, r)| match o {
        Out::Change(Held::Assignment(k, m)) => Some(((k, m), t, r)),
        _ => None,
    });
    let conversions_held = out.clone().flat_map(|(o, t, r)| match o {
        Out::Change(Held::Conversion(c)) => Some((c, t, r)),
        _ => None,
    });
    let open_rows = out.clone().flat_map(|(o, t, r)| match o {
        Out::Open(subject, since) => Some((open_row(subject, since), t, r)),
        _ => None,
    });
    let closed = out
        .flat_map(|(o, _, _)| match o {
            Out::Closed(subject) => Some(subject),
            _ => None,
        })
        .broadcast();
    Subjects {
        conversations: conversations_held.as_collection(),
        assignments: assignments_held.as_collection(),
        conversions: conversions_held.as_collection(),
        closed: Some(closed),
        open_rows: Some(open_rows.as_collection()),
    }
}

/// Splits `input` at closed subjects: the retractions a subject's closing
/// causes (at the epoch it closes) are taken out of `kept`, so downstream
/// keeps what the subject contributed, and come out of `frozen` negated
/// (what was kept). `subject_of` names the subject a record belongs to.
pub fn freeze_closed<'s, D: Data>(
    input: VecCollection<'s, Epoch, D>,
    closed: &StreamVec<'s, Epoch, SubjectKey>,
    name: &str,
    subject_of: impl Fn(&D) -> Option<SubjectKey> + 'static,
) -> (VecCollection<'s, Epoch, D>, VecCollection<'s, Epoch, D>) {
    let mut data: BTreeMap<Epoch, (Capability<Epoch>, Vec<(D, Epoch, isize)>)> = BTreeMap::new();
    let mut marks: BTreeMap<Epoch, HashSet<SubjectKey>> = BTreeMap::new();
    let split =
        input.inner.binary_frontier::<_, CapacityContainerBuilder<Vec<(Result<D, D>, Epoch, isize)>>, _, _, _, _>(
            closed.clone(),
            Pipeline,
            Pipeline,
            name,
            move |_cap, _| {
                move |(data_in, data_f), (marks_in, marks_f), output| {
                    data_in.for_each(|cap, batch| {
                        data.entry(*cap.time()).or_insert_with(|| (cap.retain(0), Vec::new())).1.append(batch);
                    });
                    marks_in.for_each(|cap, batch| marks.entry(*cap.time()).or_default().extend(batch.drain(..)));
                    let ready = |e: &Epoch| !data_f.less_equal(e) && !marks_f.less_equal(e);
                    while let Some(entry) = data.first_entry() {
                        if !ready(entry.key()) {
                            break;
                        }
                        let (e, (cap, batch)) = entry.remove_entry();
                        let closing = marks.remove(&e).unwrap_or_default();
                        let mut session = output.session(&cap);
                        for (d, t, r) in batch {
                            let frozen =
                                r < 0 && !closing.is_empty() && subject_of(&d).is_some_and(|s| closing.contains(&s));
                            if frozen {
                                session.give((Err(d), t, -r));
                            } else {
                                session.give((Ok(d), t, r));
                            }
                        }
                    }
                    while marks.first_key_value().is_some_and(|(e, _)| !marks_f.less_equal(e) && !data_f.less_equal(e))
                    {
                        marks.pop_first();
                    }
                }
            },
        );
    let kept = split.clone().flat_map(|(d, t, r)| d.ok().map(|d| (d, t, r))).as_collection();
    let frozen = split.flat_map(|(d, t, r)| d.err().map(|d| (d, t, r))).as_collection();
    (kept, frozen)
}

/// The subject a `lead_scores` or `conversation_rpm` row belongs to.
pub fn row_subject((key, vals): &(RowKey, RowVals)) -> Option<SubjectKey> {
    match (key.table, key.key.as_slice(), vals.first()) {
        (Table::LeadScores, [Cell::Str(tenant), Cell::Str(subject)], _) => Some((tenant.clone(), subject.clone())),
        (Table::ConversationRpm, [Cell::Str(tenant), _], Some(Cell::Str(subject))) => {
            Some((tenant.clone(), subject.clone()))
        }
        _ => None,
    }
}
