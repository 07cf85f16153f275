//! Retention of the lifetime families — leads (SPEC §3.2), conversation
//! efficiency (§3.3), experiments (§3.5), the next-buy watchlist (§3.8)
//! and fact coverage (§3.9) — per subject (SPEC §7; docs/retention.md).
//!
//! These families have no period: a lead's score is over all its current
//! records. What bounds them is the subject (tenant × `subject_id`): every
//! record they read belongs to one, and a subject's activity ends. With
//! `subject_idle_secs` = `L`:
//! - each held record has an *end*: a conversations record its `ts`; an
//!   experiment message its assignment time (`sent_at`, or `ts`) plus the
//!   experiment window, since conversions may join it until then; an
//!   engagement message (§3.8) its time; a conversion its time. A subject's end is the greatest end of its records;
//! - a subject *closes* when the watermark rises so that the horizon
//!   `W(<e) − L` reaches its end (a session window whose gap is `L`): all
//!   its records are retracted together at that epoch, and every worker
//!   learns that it closed, with the watermark it closed under;
//! - a new subject opens with a record whose end is after the horizon; an
//!   open subject takes every record that ends after the horizon at which
//!   it opened (`since`), so old records of a live subject still count;
//! - a later record of a closed subject opens it afresh: a new lead, a new
//!   experiment subject.
//!
//! While it is open a subject is exact (a pure function of its current
//! records, given the upsert rule of [`crate::upsert::UpsertRetention`]);
//! when it closes, [`freeze_closed`] keeps what it contributed: its
//! `lead_scores`, `conversation_rpm` and `next_buy` rows stay at their last
//! values, and its experiment figures and fact coverage stay in the sums. Each life of a subject
//! is logged in `state_open_subjects` (opened, since, closed) so a restart
//! can seed the lives that were open under the committed watermark.

use std::collections::{BTreeMap, HashMap};
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
use crate::family::Record;
use crate::next_buy::is_engagement;
use crate::retention::{
    by_watermark, closed, split_results, state_micros as micros, state_us, Retained, Work, NO_WATERMARK,
};
use crate::row::{
    ConversationRpmKey, LeadScoreKey, NextBuyKey, OpenSubjectKey, OpenSubjectValues, RowKey, RowVals, Table, TableKey,
};
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
    /// An engagement message (SPEC §3.8).
    Engagement(Text, Message),
    Conversion(Conversion),
    /// Input only: a life open under the committed watermark, from
    /// `state_open_subjects`: (tenant, subject, opened, since).
    Seed(Text, Text, Micros, Micros),
}

impl Held {
    fn subject(&self) -> SubjectKey {
        match self {
            Held::Seed(tenant, subject, _, _) => (tenant.clone(), subject.clone()),
            Held::Conversation(_, c) => (c.tenant_id.0.clone(), c.subject_id.0.clone()),
            Held::Assignment(_, m) | Held::Engagement(_, m) => (m.tenant_id.0.clone(), m.subject_id.0.clone()),
            Held::Conversion(c) => (c.tenant.clone(), c.subject.clone()),
        }
    }

    /// Until when the record can still change its families' results.
    fn end(&self, experiment_window: Micros) -> Micros {
        match self {
            Held::Conversation(_, c) => c.ts.0,
            Held::Assignment(_, m) => m.sent_at.unwrap_or(m.ts).0.saturating_add(experiment_window),
            Held::Engagement(_, m) => Record::message_time(m),
            Held::Conversion(c) => c.time,
            Held::Seed(_, _, _, since) => *since,
        }
    }
}

/// The inputs of the lifetime families, as held per subject.
pub struct Subjects<'s> {
    pub conversations: VecCollection<'s, Epoch, (Text, Conversation)>,
    /// Messages that carry an experiment.
    pub assignments: VecCollection<'s, Epoch, (Text, Message)>,
    /// Engagement messages (SPEC §3.8).
    pub engagements: VecCollection<'s, Epoch, (Text, Message)>,
    pub conversions: VecCollection<'s, Epoch, Conversion>,
    /// The subjects closed at each epoch, with the watermark they closed
    /// under, at every worker (`None`: subjects never close).
    pub closed: Option<Closed<'s>>,
    /// The `state_open_subjects` rows.
    pub open_rows: Option<VecCollection<'s, Epoch, (RowKey, RowVals)>>,
}

/// Closed subjects and the watermark they closed under, per epoch.
pub type Closed<'s> = StreamVec<'s, Epoch, (SubjectKey, Micros)>;

/// One life of a subject: its records with multiplicities, its end, the
/// watermark it opened under, and `since`, the horizon then: its records
/// end after `since` (records of earlier lives all end at or before it),
/// which is what lets a restart rebuild exactly this life.
struct Open {
    records: HashMap<Held, isize>,
    end: Micros,
    opened: Micros,
    since: Micros,
    /// Taken back at start-up: until the watermark first rises (the replay
    /// of retained input is complete), emptying it does not end it, since
    /// its other records may still be on their way.
    seeded: bool,
}

/// What the subject operator emits.
// Changes are nearly all of it; boxing them would allocate per record.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Out {
    Change(Held),
    Closed(SubjectKey, Micros),
    /// A life's `state_open_subjects` row: subject, opened, since, closed.
    Life(SubjectKey, Micros, Micros, Micros),
}

/// The `state_open_subjects` row of a life.
fn life_row((tenant, subject): SubjectKey, opened: Micros, since: Micros, closed: Micros) -> (RowKey, RowVals) {
    let key = OpenSubjectKey { tenant_id: tenant, subject_id: subject, opened_us: state_us(opened) };
    key.row(OpenSubjectValues { since_us: state_us(since), closed_us: state_us(closed) })
}

/// A `state_open_subjects` row a start took back (a life open under the
/// committed watermark, see [`crate::retention::restorable`]) as a seed.
fn seed_of(row: (RowKey, RowVals)) -> Option<Held> {
    let (key, values) = OpenSubjectKey::parse(&row)?;
    Some(Held::Seed(key.tenant_id, key.subject_id, micros(key.opened_us), micros(values.since_us)))
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
    let assignments = messages.clone().filter(|(_, m)| m.experiment_id.is_some() && m.variant.is_some());
    let engagements = messages.filter(|(_, m)| is_engagement(m));
    let Some((r, lateness)) = retained.and_then(|r| Some((r, r.lateness.subject?))) else {
        return Subjects { conversations, assignments, engagements, conversions, closed: None, open_rows: None };
    };
    let held = conversations
        .map(|(k, c)| Held::Conversation(k, c))
        .concat(assignments.map(|(k, m)| Held::Assignment(k, m)))
        .concat(engagements.map(|(k, m)| Held::Engagement(k, m)))
        .concat(conversions.map(Held::Conversion))
        .concat(restored.flat_map(seed_of));
    let mut open: HashMap<SubjectKey, Open> = HashMap::new();
    // (end, subject) for every end a subject has had; stale entries are
    // checked against the subject's current end.
    let mut ends: BTreeMap<Micros, Vec<SubjectKey>> = BTreeMap::new();
    // Whether the watermark has risen since the start (see `Open::seeded`).
    let mut risen = false;
    let exchange = Exchange::new(|(h, _, _): &(Held, Epoch, isize)| h.subject().hashed());
    let open_count = Rc::clone(&r.open_subjects);
    let out = by_watermark(held.inner, exchange, r, "Retain: subjects", move |epoch, w, work, out| {
        match work {
            Work::Release => {
                risen = true;
                close_idle(&mut open, &mut ends, (epoch, w, lateness), out);
            }
            Work::Data(batch) => {
                let horizon = if w == NO_WATERMARK { NO_WATERMARK } else { w.saturating_sub(lateness) };
                // One subject at a time, its changes consolidated: the outcome
                // must not depend on the order changes arrive in.
                let mut changes: Vec<((SubjectKey, Held), isize)> =
                    batch.into_iter().map(|(h, _, r)| ((h.subject(), h), r)).collect();
                differential_dataflow::consolidation::consolidate(&mut changes);
                let mut changes = changes.into_iter().peekable();
                while let Some(((subject, first), r)) = changes.next() {
                    let mut group = vec![(first, r)];
                    while let Some(((_, h), r)) = changes.next_if(|((s, _), _)| *s == subject) {
                        group.push((h, r));
                    }
                    open_seeds(&subject, &group, &mut open, &mut ends, epoch, out);
                    let at = (epoch, w, horizon, lateness, experiment_window, risen);
                    apply(&subject, group, &mut open, &mut ends, at, out);
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
    let engagements_held = out.clone().flat_map(|(o, t, r)| match o {
        Out::Change(Held::Engagement(k, m)) => Some(((k, m), t, r)),
        _ => None,
    });
    let conversions_held = out.clone().flat_map(|(o, t, r)| match o {
        Out::Change(Held::Conversion(c)) => Some((c, t, r)),
        _ => None,
    });
    let open_rows = out.clone().flat_map(|(o, t, r)| match o {
        Out::Life(subject, opened, since, closed) => Some((life_row(subject, opened, since, closed), t, r)),
        _ => None,
    });
    let closed = out
        .flat_map(|(o, _, _)| match o {
            Out::Closed(subject, w) => Some((subject, w)),
            _ => None,
        })
        .broadcast();
    Subjects {
        conversations: conversations_held.as_collection(),
        assignments: assignments_held.as_collection(),
        engagements: engagements_held.as_collection(),
        conversions: conversions_held.as_collection(),
        closed: Some(closed),
        open_rows: Some(open_rows.as_collection()),
    }
}

/// Closes the subjects whose end the watermark `w` has passed by
/// `lateness`, at `epoch`: their records are retracted together and their
/// life is logged as closed under `w`.
fn close_idle(
    open: &mut HashMap<SubjectKey, Open>,
    ends: &mut BTreeMap<Micros, Vec<SubjectKey>>,
    (epoch, w, lateness): (Epoch, Micros, Micros),
    out: &mut Vec<(Out, Epoch, isize)>,
) {
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
                out.push((Out::Life(subject.clone(), o.opened, o.since, 0), epoch, -1));
                out.push((Out::Life(subject.clone(), o.opened, o.since, w), epoch, 1));
                out.push((Out::Closed(subject, w), epoch, 1));
            }
        }
    }
}

/// Opens the lives a restart took back for `subject` (its seeds in
/// `group`), before the subject's other changes apply.
fn open_seeds(
    subject: &SubjectKey,
    group: &[(Held, isize)],
    open: &mut HashMap<SubjectKey, Open>,
    ends: &mut BTreeMap<Micros, Vec<SubjectKey>>,
    epoch: Epoch,
    out: &mut Vec<(Out, Epoch, isize)>,
) {
    // Seeds sort last in the group.
    for (h, r) in group {
        if let (Held::Seed(_, _, opened, since), true) = (h, *r > 0) {
            if !open.contains_key(subject) {
                let o = Open { records: HashMap::new(), end: *since, opened: *opened, since: *since, seeded: true };
                open.insert(subject.clone(), o);
                ends.entry(*since).or_default().push(subject.clone());
                out.push((Out::Life(subject.clone(), *opened, *since, 0), epoch, 1));
            }
        }
    }
}

/// Applies one epoch's consolidated changes of one subject (seeds aside).
fn apply(
    subject: &SubjectKey,
    group: Vec<(Held, isize)>,
    open: &mut HashMap<SubjectKey, Open>,
    ends: &mut BTreeMap<Micros, Vec<SubjectKey>>,
    (epoch, w, horizon, lateness, experiment_window, risen): (Epoch, Micros, Micros, Micros, Micros, bool),
    out: &mut Vec<(Out, Epoch, isize)>,
) {
    let records = group.into_iter().filter(|(h, _)| !matches!(h, Held::Seed(..)));
    let Some(o) = open.get_mut(subject) else {
        // Only new records that are not too late open a subject; a
        // retraction of a record released with its subject is moot.
        let admitted: Vec<(Held, isize)> =
            records.filter(|(h, r)| *r > 0 && !closed(h.end(experiment_window), w, lateness)).collect();
        let Some(end) = admitted.iter().map(|(h, _)| h.end(experiment_window)).max() else { return };
        out.push((Out::Life(subject.clone(), w, horizon, 0), epoch, 1));
        ends.entry(end).or_default().push(subject.clone());
        out.extend(admitted.iter().map(|(h, r)| (Out::Change(h.clone()), epoch, *r)));
        let records = admitted.into_iter().collect();
        open.insert(subject.clone(), Open { records, end, opened: w, since: horizon, seeded: false });
        return;
    };
    let mut retracted = false;
    for (h, r) in records {
        if r > 0 && h.end(experiment_window) <= o.since {
            continue;
        }
        let count = o.records.entry(h.clone()).or_insert(0);
        // Never below zero: a retraction of a record an earlier life held.
        let applied = r.max(-*count);
        *count += applied;
        if *count == 0 {
            o.records.remove(&h);
        }
        if applied != 0 {
            retracted |= applied < 0;
            out.push((Out::Change(h), epoch, applied));
        }
    }
    // A seeded life may hold nothing while the replay brings its records back.
    if o.records.is_empty() && retracted && (risen || !o.seeded) {
        // Every record retracted: its rows are deleted, not frozen.
        out.push((Out::Life(subject.clone(), o.opened, o.since, 0), epoch, -1));
        open.remove(subject);
        return;
    }
    let end = o.records.keys().map(|h| h.end(experiment_window)).max().unwrap_or(o.end);
    if end != o.end {
        o.end = end;
        ends.entry(end).or_default().push(subject.clone());
    }
}

/// Splits `input` at closed subjects: the retractions a subject's closing
/// causes (at the epoch it closes) are taken out of `kept`, so downstream
/// keeps what the subject contributed, and come out of `frozen` negated
/// (what was kept), with the watermark the subject closed under.
/// `subject_of` names the subject a record belongs to.
pub fn freeze_closed<'s, D: Data>(
    input: VecCollection<'s, Epoch, D>,
    closed: &Closed<'s>,
    name: &str,
    subject_of: impl Fn(&D) -> Option<SubjectKey> + 'static,
) -> (VecCollection<'s, Epoch, D>, VecCollection<'s, Epoch, (D, Micros)>) {
    let mut data: BTreeMap<Epoch, (Capability<Epoch>, Vec<(D, Epoch, isize)>)> = BTreeMap::new();
    let mut marks: BTreeMap<Epoch, HashMap<SubjectKey, Micros>> = BTreeMap::new();
    type Split<D> = (Result<D, (D, Micros)>, Epoch, isize);
    let split = input.inner.binary_frontier::<_, CapacityContainerBuilder<Vec<Split<D>>>, _, _, _, _>(
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
                // An epoch is ready once both its data and its marks are complete.
                let ready = |e: &Epoch| !data_f.less_equal(e) && !marks_f.less_equal(e);
                while let Some(entry) = data.first_entry() {
                    if !ready(entry.key()) {
                        break;
                    }
                    let (e, (cap, batch)) = entry.remove_entry();
                    let closing = marks.remove(&e).unwrap_or_default();
                    let mut session = output.session(&cap);
                    for (d, t, r) in batch {
                        let at = if r < 0 && !closing.is_empty() {
                            subject_of(&d).and_then(|s| closing.get(&s).copied())
                        } else {
                            None
                        };
                        match at {
                            Some(w) => session.give((Err((d, w)), t, -r)),
                            None => session.give((Ok(d), t, r)),
                        }
                    }
                }
                while marks.first_key_value().is_some_and(|(e, _)| ready(e)) {
                    marks.pop_first();
                }
            }
        },
    );
    split_results(split)
}

/// The tables whose rows stay at their last values when their subject
/// closes ([`row_subject`] names the subject of each).
pub const SUBJECT_TABLES: [Table; 3] = [Table::LeadScores, Table::ConversationRpm, Table::NextBuy];

/// The subject a row key of one of [`SUBJECT_TABLES`] names, for the
/// tables keyed by subject (a `conversation_rpm` key names a conversation).
pub fn key_subject(key: &RowKey) -> Option<SubjectKey> {
    match key.table {
        Table::LeadScores => LeadScoreKey::of(key).map(|k| (k.tenant_id, k.subject_id)),
        Table::NextBuy => NextBuyKey::of(key).map(|k| (k.tenant_id, k.subject_id)),
        _ => None,
    }
}

/// The subject a row of one of [`SUBJECT_TABLES`] belongs to.
pub fn row_subject(row: &(RowKey, RowVals)) -> Option<SubjectKey> {
    match row.0.table {
        Table::ConversationRpm => ConversationRpmKey::parse(row).map(|(k, v)| (k.tenant_id, v.subject_id)),
        _ => key_subject(&row.0),
    }
}
