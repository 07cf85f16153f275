//! Lateness and retention (SPEC §7; docs/retention.md).
//!
//! The watermark `W(<e)` of epoch `e` is the greatest event `ts` of every
//! message in the epochs before `e`, or the watermark the previous run
//! committed with its offsets, whichever is greater. It is a function of
//! the epochs' contents, computed from every worker's input and broadcast,
//! so every operator of every worker closes a period at the same epoch.
//!
//! A family with lateness `L` has the horizon `H(e) = W(<e) − L`; one of its
//! periods is *closed* at epoch `e` when the period's end is at or before
//! `H(e)`. From that epoch on:
//! - inputs that would contribute to it are dropped (impressions are
//!   dead-lettered as `too_late`; payments, ROs and messages still count in
//!   the lifetime families, so they are only left out of this one);
//! - the state that held its inputs is released: the records are retracted
//!   at that epoch, so arrangements downstream compact them away;
//! - changes to its rows are dropped before the sink ([`freeze`]), so the
//!   rows ClickHouse holds stay at their last value: final, not deleted.
//!
//! The lifetime families close per subject instead ([`crate::subject`]).
//! What closing keeps in lifetime sums is logged as state rows
//! ([`cumulative_rows`]) that a start takes back ([`restorable`]).

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use differential_dataflow::collection::AsCollection;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::{Data, VecCollection};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast as _;
use timely::dataflow::operators::vec::{Map as _, Partition as _};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::Concat as _;
use timely::dataflow::StreamVec;
use timely::progress::frontier::MutableAntichain;

use crate::config::MetricsConfig;
use crate::row::{
    Cell, ExperimentClosedKey, LeadsClosedKey, OfferClosedKey, OpenSubjectKey, OpenSubjectValues, RowKey, RowVals,
    Table, TableKey,
};
use crate::time::{
    civil_from_days, days_from_civil, Day, Micros, MICROS_PER_DAY, MICROS_PER_MINUTE, MICROS_PER_SECOND,
};
use crate::types::Text;
use crate::upsert::Epoch;

/// Per-epoch maxima of event time, from every worker, at every worker.
pub type Watermarks<'s> = StreamVec<'s, Epoch, Micros>;

/// "No event seen yet": nothing is closed.
pub const NO_WATERMARK: Micros = Micros::MIN;

/// The lateness of each family, in microseconds (`None`: never closes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lateness {
    pub rar: Option<Micros>,
    pub revenue_per_minute: Option<Micros>,
    pub attribution: Option<Micros>,
    /// Leads, conversation efficiency and experiments: a subject's idle time.
    pub subject: Option<Micros>,
    /// Payment recovery days: the attribution lateness plus the recovery
    /// window (a failure may be recovered until the window after it).
    pub payment_recovery: Option<Micros>,
}

impl Lateness {
    pub fn of(cfg: &MetricsConfig) -> Lateness {
        let micros = |s: u64| (s.min(i64::MAX as u64 / 1_000_000) as Micros) * MICROS_PER_SECOND;
        let r = &cfg.retention;
        let attribution = r.attribution_lateness_secs.map(micros);
        Lateness {
            rar: r.rar_lateness_secs.map(micros),
            revenue_per_minute: r.revenue_per_minute_lateness_secs.map(micros),
            attribution,
            subject: r.subject_idle_secs.map(micros),
            payment_recovery: attribution.map(|l| l.saturating_add(cfg.recovery_window())),
        }
    }

    pub fn any(&self) -> bool {
        self.rar.is_some() || self.revenue_per_minute.is_some() || self.attribution.is_some() || self.subject.is_some()
    }

    /// The lateness that governs a row's table, and the end of the row's
    /// period, as the family that writes the table declares them; `None`
    /// for lifetime tables.
    pub fn row_period(&self, key: &RowKey) -> Option<(Micros, Micros)> {
        crate::family::writer_of(key.table).and_then(|f| (f.row_period)(self, key))
    }

    /// Whether a row belongs to a period closed under watermark `w`.
    pub fn row_closed(&self, key: &RowKey, w: Micros) -> bool {
        self.row_period(key).is_some_and(|(lateness, end)| closed(end, w, lateness))
    }
}

/// Whether a period ending at `end` is closed under watermark `w`.
pub fn closed(end: Micros, w: Micros, lateness: Micros) -> bool {
    w != NO_WATERMARK && end <= w.saturating_sub(lateness)
}

/// First instant after the month starting on `month` (days since epoch).
pub fn month_end(month: Day) -> Micros {
    let (y, m, _) = civil_from_days(i64::from(month));
    let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(y, m, 1) * MICROS_PER_DAY
}

/// First instant after `day`.
pub fn day_end(day: Day) -> Micros {
    (i64::from(day) + 1) * MICROS_PER_DAY
}

/// First instant after the minute of `ts`.
pub fn minute_end(ts: Micros) -> Micros {
    (ts.div_euclid(MICROS_PER_MINUTE) + 1) * MICROS_PER_MINUTE
}

/// The watermark stream: each worker's greatest event time per epoch of
/// `times`, broadcast to every worker. While `open` is false the maxima are
/// held back and emitted, folded, with the first epoch after it turns true:
/// a restart keeps the committed watermark until the replay of retained
/// input is complete, so newer events read early from one partition cannot
/// close a period whose older events another partition has yet to replay.
pub fn watermarks<'s>(times: StreamVec<'s, Epoch, Micros>, open: Rc<std::cell::Cell<bool>>) -> Watermarks<'s> {
    let mut maxima: BTreeMap<Epoch, (Capability<Epoch>, Micros)> = BTreeMap::new();
    let mut held = NO_WATERMARK;
    times
        .unary_frontier::<CapacityContainerBuilder<Vec<Micros>>, _, _, _>(Pipeline, "Watermark", move |cap, _| {
            // Kept at the input frontier, so held-back maxima can be emitted
            // as soon as the gate opens, without waiting for new input.
            let mut now = Some(cap);
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    let top = data.iter().copied().max().unwrap_or(NO_WATERMARK);
                    let e = maxima.entry(*cap.time()).or_insert_with(|| (cap.retain(0), NO_WATERMARK));
                    e.1 = e.1.max(top);
                });
                while let Some(entry) = maxima.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (cap, w) = entry.remove();
                    held = held.max(w);
                    if open.get() {
                        output.session(&cap).give(held);
                        held = NO_WATERMARK;
                    }
                }
                match frontier.frontier().iter().min() {
                    Some(t) => {
                        if let Some(cap) = now.as_mut().filter(|c| c.time() < t) {
                            cap.downgrade(t);
                        }
                    }
                    None => now = None,
                }
                if let (true, Some(cap)) = (open.get() && held != NO_WATERMARK, now.as_ref()) {
                    output.session(cap).give(held);
                    held = NO_WATERMARK;
                }
            }
        })
        .broadcast()
}

/// The watermark as operators see it: `W(<e)` for the epoch being
/// processed. Operators handle epochs in order; an epoch `e` is ready when
/// both its data and the watermark of every epoch before it are complete.
struct Clock {
    /// Watermark data per epoch not yet folded in, with a capability for the
    /// epoch after it (when a greater watermark may release state).
    pending: BTreeMap<Epoch, (Micros, Capability<Epoch>)>,
    /// `W(<e)` for the next epoch to process.
    w: Micros,
}

impl Clock {
    fn new(initial: Micros) -> Clock {
        Clock { pending: BTreeMap::new(), w: initial }
    }

    /// Takes in watermark data of one input batch.
    fn absorb(&mut self, epoch: Epoch, data: &[Micros], cap: impl FnOnce(Epoch) -> Capability<Epoch>) {
        let top = data.iter().copied().max().unwrap_or(NO_WATERMARK);
        let entry = self.pending.entry(epoch).or_insert_with(|| (NO_WATERMARK, cap(epoch + 1)));
        entry.0 = entry.0.max(top);
    }

    /// The watermark for the next epoch to process.
    fn watermark(&self) -> Micros {
        self.w
    }

    /// The next step: folding in the watermark of an epoch `x` (which may
    /// release state at `x + 1`), or processing the data of epoch `e` —
    /// whichever is first, a release before data of the same epoch.
    /// `data_epoch` is the earliest stashed data epoch.
    fn next_step(
        &mut self,
        data_epoch: Option<Epoch>,
        data_frontier: &MutableAntichain<Epoch>,
        wm_frontier: &MutableAntichain<Epoch>,
    ) -> Option<Step> {
        let release = self
            .pending
            .first_key_value()
            .map(|(x, _)| *x)
            .filter(|x| !wm_frontier.less_equal(x) && !data_frontier.less_equal(x));
        let data = data_epoch.filter(|e| !data_frontier.less_equal(e) && !wm_frontier.less_than(e));
        match (release, data) {
            (Some(x), Some(e)) if x < e => self.fold(),
            (Some(_), None) => self.fold(),
            (_, Some(e)) => Some(Step::Data(e)),
            (None, None) => None,
        }
    }

    fn fold(&mut self) -> Option<Step> {
        let (_, (w, cap)) = self.pending.pop_first()?;
        if w > self.w {
            self.w = w;
            Some(Step::Release(cap))
        } else {
            Some(Step::Nothing)
        }
    }
}

/// What to do next (see [`Clock::next_step`]).
enum Step {
    /// The watermark rose: release what it closes, at this capability's epoch.
    Release(Capability<Epoch>),
    /// A watermark that changed nothing was folded in.
    Nothing,
    /// Process the stashed data of this epoch.
    Data(Epoch),
}

/// One unit of work of an operator driven by [`by_watermark`].
pub enum Work<D> {
    /// The watermark rose: release what it closes.
    Release,
    /// The input of one epoch, complete.
    Data(Vec<D>),
}

/// Drives `logic` over the epochs of `input` in order, each once its data
/// and the watermark of every epoch before it are complete: `logic(epoch,
/// W(<epoch), work, out)` pushes its output for that epoch into `out`.
pub fn by_watermark<'s, D, O, P>(
    input: StreamVec<'s, Epoch, D>,
    pact: P,
    retained: &Retained<'s>,
    name: &str,
    mut logic: impl FnMut(Epoch, Micros, Work<D>, &mut Vec<O>) + 'static,
) -> StreamVec<'s, Epoch, O>
where
    D: Clone + 'static,
    O: Clone + 'static,
    P: ParallelizationContract<Epoch, Vec<D>>,
{
    let mut clock = Clock::new(retained.initial);
    let mut stash: BTreeMap<Epoch, (Capability<Epoch>, Vec<D>)> = BTreeMap::new();
    let mut buf = Vec::new();
    input.binary_frontier::<_, CapacityContainerBuilder<Vec<O>>, _, _, _, _>(
        retained.wm.clone(),
        pact,
        Pipeline,
        name,
        move |_cap, _| {
            move |(data_in, data_f), (wm_in, wm_f), output| {
                data_in.for_each(|cap, data| {
                    stash.entry(*cap.time()).or_insert_with(|| (cap.retain(0), Vec::new())).1.append(data);
                });
                wm_in.for_each(|cap, data| clock.absorb(*cap.time(), data, |t| cap.delayed(&t, 0)));
                while let Some(step) = clock.next_step(stash.first_key_value().map(|(e, _)| *e), data_f, wm_f) {
                    let (cap, work) = match step {
                        Step::Nothing => continue,
                        Step::Release(cap) => (cap, Work::Release),
                        Step::Data(e) => match stash.remove(&e) {
                            Some((cap, batch)) => (cap, Work::Data(batch)),
                            None => continue,
                        },
                    };
                    logic(*cap.time(), clock.watermark(), work, &mut buf);
                    if !buf.is_empty() {
                        output.session(&cap).give_iterator(buf.drain(..));
                    }
                }
            }
        },
    )
}

/// Keeps the records of `input` whose period is open: a record whose period
/// end (`end_of`) is closed at its epoch is dropped, and a held record is
/// retracted at the epoch its period closes. Without the family's lateness
/// the collection passes through untouched.
pub fn retain<'s, D>(
    input: VecCollection<'s, Epoch, D>,
    retained: Option<&Retained<'s>>,
    lateness: impl Fn(&Lateness) -> Option<Micros>,
    name: &str,
    end_of: impl Fn(&D) -> Micros + 'static,
) -> VecCollection<'s, Epoch, D>
where
    D: Data,
{
    let Some((r, lateness)) = retained.and_then(|r| Some((r, lateness(&r.lateness)?))) else { return input };
    // Open records by period end, with their multiplicity.
    let mut held: BTreeMap<Micros, BTreeMap<D, isize>> = BTreeMap::new();
    by_watermark(input.inner, Pipeline, r, name, move |epoch, w, work, out| match work {
        Work::Release => {
            while let Some(entry) = held.first_entry() {
                if !closed(*entry.key(), w, lateness) {
                    break;
                }
                out.extend(entry.remove().into_iter().map(|(d, r)| (d, epoch, -r)));
            }
        }
        Work::Data(batch) => {
            for (d, _, r) in batch {
                let end = end_of(&d);
                if closed(end, w, lateness) {
                    continue;
                }
                let counts = held.entry(end).or_default();
                let c = counts.entry(d.clone()).or_insert(0);
                *c += r;
                if *c == 0 {
                    counts.remove(&d);
                    if counts.is_empty() {
                        held.remove(&end);
                    }
                }
                out.push((d, epoch, r));
            }
        }
    })
    .as_collection()
}

/// The watermark context of a dataflow with retention configured.
pub struct Retained<'s> {
    pub wm: Watermarks<'s>,
    /// The watermark committed by the previous run.
    pub initial: Micros,
    pub lateness: Lateness,
    /// How many subjects this worker holds open (see [`crate::subject`]).
    pub open_subjects: Rc<std::cell::Cell<usize>>,
}

/// Drops every change to a row of a period closed at the change's epoch, so
/// the sink keeps the row's last value (SPEC §7: closed periods are final).
pub fn freeze<'s>(
    rows: VecCollection<'s, Epoch, (RowKey, crate::row::RowVals)>,
    retained: Option<&Retained<'s>>,
) -> VecCollection<'s, Epoch, (RowKey, crate::row::RowVals)> {
    let Some(r) = retained else { return rows };
    let lateness = r.lateness;
    freeze_where(rows, r, "Freeze closed periods", move |(key, _), w| lateness.row_closed(key, w))
}

/// Drops every change at an epoch whose watermark `w` makes `is_closed(record, w)`
/// true: downstream keeps the record's last contribution.
pub fn freeze_where<'s, D: Data>(
    input: VecCollection<'s, Epoch, D>,
    retained: &Retained<'s>,
    name: &str,
    is_closed: impl Fn(&D, Micros) -> bool + 'static,
) -> VecCollection<'s, Epoch, D> {
    freeze_split(input, retained, name, is_closed).0
}

/// [`freeze_where`], and the dropped changes with the watermark they were
/// dropped under: `(kept, dropped)`.
pub fn freeze_split<'s, D: Data>(
    input: VecCollection<'s, Epoch, D>,
    retained: &Retained<'s>,
    name: &str,
    is_closed: impl Fn(&D, Micros) -> bool + 'static,
) -> (VecCollection<'s, Epoch, D>, VecCollection<'s, Epoch, (D, Micros)>) {
    let split = by_watermark(input.inner, Pipeline, retained, name, move |_, w, work, out| {
        if let Work::Data(batch) = work {
            out.extend(
                batch.into_iter().map(|(d, t, r)| if is_closed(&d, w) { (Err((d, w)), t, r) } else { (Ok(d), t, r) }),
            );
        }
    });
    split_results(split)
}

/// The `Ok` and the `Err` changes of a split stream, as two collections.
/// Partitioned, not copied: each change goes one way.
pub fn split_results<'s, A: Data, B: Data>(
    split: StreamVec<'s, Epoch, (Result<A, B>, Epoch, isize)>,
) -> (VecCollection<'s, Epoch, A>, VecCollection<'s, Epoch, B>) {
    let mut parts = split.partition(2, |change: (Result<A, B>, Epoch, isize)| (u64::from(change.0.is_err()), change));
    let mut parts = parts.drain(..);
    let (Some(ok), Some(err)) = (parts.next(), parts.next()) else { unreachable!("partition(2) makes two streams") };
    let ok = ok.flat_map(|(d, t, r)| d.ok().map(|d| (d, t, r))).as_collection();
    let err = err.flat_map(|(d, t, r)| d.err().map(|d| (d, t, r))).as_collection();
    (ok, err)
}

/// A watermark or horizon as a `UInt64` state column (instants before 1970 as 0).
pub fn state_us(t: Micros) -> u64 {
    t.max(0) as u64
}

/// A `UInt64` state column as an instant.
pub fn state_micros(v: u64) -> Micros {
    v.min(i64::MAX as u64) as Micros
}

/// A change to a lifetime sum kept as state: what a start restored (the
/// total as of tag `Micros`), or what closed at an epoch under watermark
/// `Micros`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum SumChange<K, R> {
    Restored(K, Micros, R),
    Closed(K, Micros, R),
}

/// The state rows of a lifetime sum: per key, a running total of what
/// closed, written as one row per key and watermark it changed under, each
/// row the total so far (cumulative, so a start takes back just the row
/// with the greatest watermark the commit covers, and an interrupted start
/// takes back the same). A restored total is written back unchanged, so
/// reconciliation keeps it. The state is one total per key.
pub fn cumulative_rows<'s, K, R>(
    changes: StreamVec<'s, Epoch, SumChange<K, R>>,
    name: &str,
    to_row: impl Fn(&K, Micros, &R) -> (RowKey, RowVals) + 'static,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)>
where
    K: timely::ExchangeData + Ord + Hashable + std::hash::Hash + Clone,
    R: timely::ExchangeData + differential_dataflow::difference::Semigroup,
{
    let mut stash: BTreeMap<Epoch, (Capability<Epoch>, Vec<SumChange<K, R>>)> = BTreeMap::new();
    let mut totals: std::collections::HashMap<K, R> = std::collections::HashMap::new();
    let exchange = Exchange::new(|c: &SumChange<K, R>| match c {
        SumChange::Restored(k, _, _) | SumChange::Closed(k, _, _) => k.hashed().into(),
    });
    changes
        .unary_frontier::<CapacityContainerBuilder<Vec<((RowKey, RowVals), Epoch, isize)>>, _, _, _>(
            exchange,
            name,
            move |_cap, _| {
                move |(input, frontier), output| {
                    input.for_each(|cap, batch| {
                        stash.entry(*cap.time()).or_insert_with(|| (cap.retain(0), Vec::new())).1.append(batch);
                    });
                    while let Some(entry) = stash.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (e, (cap, mut changes)) = entry.remove_entry();
                        // Restored totals first, then closes in watermark order.
                        changes.sort_by(|a, b| match (a, b) {
                            (SumChange::Restored(..), SumChange::Closed(..)) => std::cmp::Ordering::Less,
                            (SumChange::Closed(..), SumChange::Restored(..)) => std::cmp::Ordering::Greater,
                            (SumChange::Closed(ka, wa, _), SumChange::Closed(kb, wb, _)) => (wa, ka).cmp(&(wb, kb)),
                            (SumChange::Restored(ka, ..), SumChange::Restored(kb, ..)) => ka.cmp(kb),
                        });
                        let mut written: BTreeMap<(Micros, K), ()> = BTreeMap::new();
                        for change in changes {
                            match change {
                                SumChange::Restored(k, tag, r) => {
                                    totals.insert(k.clone(), r);
                                    written.insert((tag, k), ());
                                }
                                SumChange::Closed(k, w, r) => {
                                    match totals.get_mut(&k) {
                                        Some(total) => total.plus_equals(&r),
                                        None => {
                                            totals.insert(k.clone(), r);
                                        }
                                    }
                                    written.insert((w, k), ());
                                }
                            }
                        }
                        let mut session = output.session(&cap);
                        for ((w, k), ()) in written {
                            if let Some(total) = totals.get(&k) {
                                session.give((to_row(&k, w, total), e, 1));
                            }
                        }
                    }
                }
            },
        )
        .as_collection()
}

/// A lifetime sum's retention state: its state rows ([`cumulative_rows`]
/// of the totals a start took back and of what closes), and those taken-back
/// totals as contributions to add to the sum.
pub fn lifetime_sum_state<'s, K, R>(
    restored: VecCollection<'s, Epoch, SumChange<K, R>>,
    closes: StreamVec<'s, Epoch, SumChange<K, R>>,
    name: &str,
    to_row: impl Fn(&K, Micros, &R) -> (RowKey, RowVals) + 'static,
) -> (VecCollection<'s, Epoch, (RowKey, RowVals)>, VecCollection<'s, Epoch, K, R>)
where
    K: timely::ExchangeData + Ord + Hashable + std::hash::Hash + Clone,
    R: timely::ExchangeData
        + differential_dataflow::difference::Semigroup
        + differential_dataflow::difference::Multiply<isize, Output = R>,
{
    let rows = cumulative_rows(restored.inner.clone().map(|(c, _, _)| c).concat(closes), name, to_row);
    let base = restored
        .flat_map(|c| match c {
            SumChange::Restored(key, _, total) => Some((key, total)),
            SumChange::Closed(..) => None,
        })
        .explode(Some);
    (rows, base)
}

/// How a start treats the retention state rows ClickHouse holds, given the
/// committed watermark `w0` ([`NO_WATERMARK`]: nothing committed).
#[derive(Debug, Default, PartialEq)]
pub struct Restorable {
    /// Rows to hand the dataflow ([`crate::dataflow::Inputs::restore`]):
    /// the subject lives open under `w0`, and per lifetime-sum key the total
    /// with the greatest watermark `w0` covers.
    pub restore: Vec<(RowKey, RowVals)>,
    /// Rows to delete before anything else is committed: written after the
    /// commit (a crash or a lost asynchronous commit left them), or
    /// superseded (closed lives but each subject's newest, older totals).
    pub stale: Vec<RowKey>,
    /// Rows left as they are: each subject's newest life closed under `w0`,
    /// the evidence that its rows are final ([`finals`]).
    pub kept: Vec<RowKey>,
}

/// Whether a state row tagged with watermark `tag` is covered by the
/// committed watermark `w0` (never without one).
fn covered_by(tag: u64, w0: Micros) -> bool {
    w0 != NO_WATERMARK && tag <= w0.max(0) as u64
}

/// Which subjects' rows a start may leave untouched when the rebuild does
/// not write them (start-up reconciliation, with subject retention).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finals {
    /// The state keeps each subject's newest closed life (it carries
    /// [`evidence_marker`]): only subjects whose lives all closed under
    /// the committed watermark have final rows. Any other subject's row the
    /// rebuild does not write is stale — also one a killed run wrote before
    /// the life row that would explain it (two tables, possibly two
    /// workers' sinks: the writes are not atomic).
    Evidence(HashSet<(Text, Text)>),
    /// A committed state without the marker, written by an earlier release
    /// (which deleted closed lives at every start): a subject without lives
    /// may be a closed one, so every subject but those with a life the
    /// start rebuilds (this set) keeps its rows, and the start writes the
    /// evidence ([`evidence_life`] for the subjects it keeps, and the
    /// marker) with its first batch, so later starts know.
    Legacy(HashSet<(Text, Text)>),
}

/// No subject's rows are final (as without a committed watermark).
impl Default for Finals {
    fn default() -> Self {
        Finals::Evidence(HashSet::new())
    }
}

impl Finals {
    /// Whether `subject`'s untouched rows stay.
    pub fn keeps(&self, subject: &(Text, Text)) -> bool {
        match self {
            Finals::Evidence(finals) => finals.contains(subject),
            Finals::Legacy(rebuilt) => !rebuilt.contains(subject),
        }
    }
}

/// The `state_open_subjects` row saying that the state keeps each
/// subject's newest closed life (a life of the empty subject, closed at
/// the start of time, which every start keeps).
pub fn evidence_marker() -> (RowKey, RowVals) {
    let key = OpenSubjectKey { tenant_id: Text::default(), subject_id: Text::default(), opened_us: 0 };
    key.row(OpenSubjectValues { since_us: 0, closed_us: 1 })
}

/// A closed life standing for a subject whose final rows a start kept
/// from a state without evidence (see [`Finals::Legacy`]): closed under the
/// committed watermark `w0`.
pub fn evidence_life((tenant_id, subject_id): (Text, Text), w0: Micros) -> (RowKey, RowVals) {
    let key = OpenSubjectKey { tenant_id, subject_id, opened_us: 0 };
    key.row(OpenSubjectValues { since_us: 0, closed_us: state_us(w0) })
}

/// Whether a life opened and closed under `w0`: its subject's rows from it
/// are final, and a start neither takes it back nor rebuilds it.
fn closed_under(life: &OpenSubjectKey, v: &OpenSubjectValues, w0: Micros) -> bool {
    covered_by(life.opened_us, w0) && v.closed_us != 0 && covered_by(v.closed_us, w0)
}

/// Keeps, per `id`, the item with the greatest `tag` in `newest`; the keys
/// of the items it displaces (or that lose to it) go to `stale`.
fn keep_newest<I: Ord, V>(
    newest: &mut BTreeMap<I, (u64, RowKey, V)>,
    (id, tag): (I, u64),
    (key, value): (RowKey, V),
    stale: &mut Vec<RowKey>,
) {
    match newest.get(&id) {
        Some((t, _, _)) if *t >= tag => stale.push(key),
        _ => {
            if let Some((_, older, _)) = newest.insert(id, (tag, key, value)) {
                stale.push(older);
            }
        }
    }
}

/// The subjects whose rows are final at a start, given the state rows and
/// the committed watermark `w0` (see [`Finals`]).
pub fn finals(rows: &[(RowKey, RowVals)], w0: Micros) -> Finals {
    let marker = evidence_marker().0;
    let lives: Vec<_> = rows.iter().filter(|(k, _)| *k != marker).filter_map(OpenSubjectKey::parse).collect();
    let rebuilt: HashSet<(Text, Text)> = lives
        .iter()
        .filter(|(life, v)| !closed_under(life, v, w0))
        .map(|(life, _)| (life.tenant_id.clone(), life.subject_id.clone()))
        .collect();
    // Nothing is final without a commit; a commit of this release always
    // carries the marker (the first batch of every start writes it).
    if w0 != NO_WATERMARK && !rows.iter().any(|(k, _)| *k == marker) {
        return Finals::Legacy(rebuilt);
    }
    let all = lives.into_iter().map(|(life, _)| (life.tenant_id, life.subject_id));
    Finals::Evidence(all.filter(|s| !rebuilt.contains(s)).collect())
}

/// Splits state rows (of [`crate::row::Table::STATE`]) into what a start takes back
/// and what it deletes. Without a committed watermark everything is
/// rebuilt from the input, so nothing is taken back.
pub fn restorable(rows: Vec<(RowKey, RowVals)>, w0: Micros) -> Restorable {
    let covered = |tag: u64| covered_by(tag, w0);
    let mut out = Restorable::default();
    // Per lifetime-sum key (the key without its watermark): the greatest
    // covered row so far.
    let mut best: BTreeMap<(Table, Vec<Cell>), (u64, RowKey, RowVals)> = BTreeMap::new();
    // Per subject: its newest life closed under `w0` so far.
    let mut last_closed: BTreeMap<(Text, Text), (u64, RowKey, ())> = BTreeMap::new();
    let marker = evidence_marker().0;
    for row in rows {
        let total_tag = match row.0.table {
            Table::StateExperimentClosed => ExperimentClosedKey::of(&row.0).map(|k| k.closed_us),
            Table::StateOfferClosed => OfferClosedKey::of(&row.0).map(|k| k.closed_us),
            Table::StateLeadsClosed => LeadsClosedKey::of(&row.0).map(|k| k.closed_us),
            _ => None,
        };
        if row.0 == marker {
            out.kept.push(row.0);
            continue;
        }
        match (OpenSubjectKey::parse(&row), total_tag) {
            (Some((life, v)), _) if closed_under(&life, &v, w0) => {
                let id = ((life.tenant_id, life.subject_id), life.opened_us);
                keep_newest(&mut last_closed, id, (row.0, ()), &mut out.stale);
            }
            (Some((life, _)), _) if covered(life.opened_us) => out.restore.push(row),
            (None, Some(tag)) if covered(tag) => {
                // The lifetime sum's identity: its key without the watermark.
                let id = (row.0.table, row.0.key[..row.0.key.len() - 1].to_vec());
                keep_newest(&mut best, (id, tag), row, &mut out.stale);
            }
            _ => out.stale.push(row.0),
        }
    }
    out.restore.extend(best.into_values().map(|(_, key, vals)| (key, vals)));
    out.kept.extend(last_closed.into_values().map(|(_, key, ())| key));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{month_of, parse_rfc3339};

    #[test]
    fn period_ends() {
        let ts = parse_rfc3339("2026-12-15T10:20:30Z").unwrap_or_default();
        assert_eq!(Some(month_end(month_of(ts))), parse_rfc3339("2027-01-01T00:00:00Z"));
        assert_eq!(Some(minute_end(ts)), parse_rfc3339("2026-12-15T10:21:00Z"));
        let day = crate::time::day_of(ts);
        assert_eq!(Some(day_end(day)), parse_rfc3339("2026-12-16T00:00:00Z"));
    }

    /// A record is held while its period is open, retracted at the epoch the
    /// watermark closes it, and a record arriving for a closed period is
    /// dropped: the release that bounds state.
    #[test]
    fn retain_releases_records_when_their_period_closes() {
        use differential_dataflow::input::Input as _;
        use std::cell::RefCell;
        use timely::dataflow::operators::vec::Input as _;
        use timely::dataflow::operators::{Inspect as _, Probe as _};

        let mut seen = timely::execute_directly(move |worker| {
            let seen: Rc<RefCell<Vec<(Micros, Epoch, isize)>>> = Rc::default();
            let out = Rc::clone(&seen);
            let (mut records, mut times, probe) = worker.dataflow::<Epoch, _, _>(|scope| {
                let (records, data) = scope.new_collection::<Micros, isize>();
                let (times, stream) = scope.new_input::<Micros>();
                let lateness = Lateness { rar: Some(10), ..Lateness::default() };
                let retained = Retained {
                    wm: watermarks(stream, Rc::new(std::cell::Cell::new(true))),
                    initial: NO_WATERMARK,
                    lateness,
                    open_subjects: Rc::default(),
                };
                let kept = retain(data, Some(&retained), |l| l.rar, "Retain", |end: &Micros| *end);
                let (probe, _) = kept.inner.inspect(move |x| out.borrow_mut().push(*x)).probe();
                (records, times, probe)
            });
            // Epoch 0: two open records; the watermark becomes 150.
            records.insert(100);
            records.insert(200);
            times.send(150);
            // Epoch 1: nothing; epoch 2: a record of a period closed since
            // epoch 1 (end 120 <= 150 - 10).
            for epoch in 1..=3u64 {
                records.advance_to(epoch);
                times.advance_to(epoch);
                if epoch == 2 {
                    records.insert(120);
                }
                records.flush();
                worker.step_while(|| probe.less_than(&epoch));
            }
            let seen = seen.borrow().clone();
            seen
        });
        seen.sort();
        assert_eq!(seen, vec![(100, 0, 1), (100, 1, -1), (200, 0, 1)]);
    }

    /// A start takes back the lives open under the committed watermark and,
    /// per lifetime-sum key, the greatest total it covers; it keeps each
    /// subject's newest closed life; it deletes older closed lives, older
    /// totals and everything written after the commit; without a committed
    /// watermark it takes back nothing.
    #[test]
    fn restorable_takes_back_what_the_commit_covers() {
        let life = |s: &str, opened: u64, closed: u64| {
            let key = vec![Cell::Str("t".into()), Cell::Str(s.into()), Cell::U64(opened)];
            (RowKey::new(Table::StateOpenSubjects, key), vec![Cell::U64(0), Cell::U64(closed)])
        };
        let total = |offer: &str, tag: u64, lines: u64| {
            let key = vec![Cell::Str("t".into()), Cell::Str(offer.into()), Cell::U64(tag)];
            (RowKey::new(Table::StateOfferClosed, key), vec![Cell::U64(lines), Cell::U64(0)])
        };
        let rows = vec![
            life("open", 50, 0),
            life("closed-after", 50, 150),
            life("closed-before", 50, 90),
            life("closed-before", 20, 40),
            life("opened-after", 150, 0),
            total("o", 0, 1),
            total("o", 80, 3),
            total("o", 100, 4),
            total("o", 120, 9),
        ];
        let r = restorable(rows.clone(), 100);
        let names = |v: &[(RowKey, RowVals)]| v.iter().map(|(k, _)| k.key.clone()).collect::<Vec<_>>();
        assert_eq!(names(&r.restore), names(&[life("open", 50, 0), life("closed-after", 50, 150), total("o", 100, 4)]));
        assert_eq!(r.kept, vec![life("closed-before", 50, 90).0]);
        let stale: Vec<RowKey> = [
            life("closed-before", 20, 40),
            life("opened-after", 150, 0),
            total("o", 0, 1),
            total("o", 80, 3),
            total("o", 120, 9),
        ]
        .into_iter()
        .map(|(k, _)| k)
        .collect();
        let mut got = r.stale.clone();
        got.sort();
        let mut want = stale;
        want.sort();
        assert_eq!(got, want);
        let none = restorable(rows.clone(), NO_WATERMARK);
        assert!(none.restore.is_empty());
        assert_eq!(none.stale.len(), rows.len());
        // Without the marker the state is an earlier release's: every
        // subject but those rebuilt keeps its rows.
        let subject = |s: &str| (Text::from("t"), Text::from(s));
        let Finals::Legacy(rebuilt) = finals(&rows, 100) else { panic!("no marker: legacy") };
        assert_eq!(rebuilt, ["open", "closed-after", "opened-after"].map(subject).into());
        // With it, only the subject whose lives all closed before the commit is final.
        let mut marked = rows.clone();
        marked.push(evidence_marker());
        assert_eq!(finals(&marked, 100), Finals::Evidence([subject("closed-before")].into()));
        assert_eq!(finals(&marked, NO_WATERMARK), Finals::Evidence(HashSet::new()));
        assert_eq!(finals(&rows, NO_WATERMARK), Finals::Evidence(HashSet::new()), "nothing final without a commit");
        assert!(!finals(&marked, 100).keeps(&subject("never-had-a-life")));
        assert!(finals(&rows, 100).keeps(&subject("never-had-a-life")));
        // A subject closed before the commit and open again is rebuilt.
        let reopened = [life("closed-before", 50, 90), life("closed-before", 95, 0), evidence_marker()];
        assert_eq!(finals(&reopened, 100), Finals::Evidence(HashSet::new()));
        // The marker is kept by every start, with or without a watermark.
        assert_eq!(restorable(marked.clone(), NO_WATERMARK).kept, vec![evidence_marker().0]);
        assert!(restorable(marked, 100).kept.contains(&evidence_marker().0));
    }

    #[test]
    fn closed_at_end_plus_lateness() {
        let end = 1_000;
        assert!(!closed(end, NO_WATERMARK, 0));
        assert!(!closed(end, 1_099, 100));
        assert!(closed(end, 1_100, 100));
    }
}
