//! The revpulse dataflow: six upsert inputs → metric operators → one
//! collection of table rows, captured per completed epoch for the sink.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::hashable::Hashable;
use differential_dataflow::input::{Input as _, InputSession};
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::input::Handle;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::vec::Map as _;
use timely::dataflow::operators::{Concat as _, Exchange as _, Probe as _};
use timely::dataflow::{ProbeHandle, StreamVec};

use crate::config::MetricsConfig;
use crate::event::{Conversation, Deal, Event, Impression, Message, Payment, RoUpdate, Topic, Versioned};
use crate::family::{topic_release, AsRecord, Rules, Streams, TopicRelease, FAMILIES};
use crate::retention::{watermarks, Lateness, Retained, Watermarks, NO_WATERMARK};
use crate::row::{RowKey, RowVals};
use crate::subject::Subjects;
use crate::time::{Micros, MICROS_PER_SECOND};
use crate::types::Text;
use crate::upsert::{upsert, Epoch, TooLate, UpsertMsg, UpsertRetention};
use crate::{attribution, conversion, lead_score, retention, subject};

/// The input handles of one worker, one per topic.
pub struct Inputs {
    pub impressions: Handle<Epoch, UpsertMsg<Impression>>,
    pub conversations: Handle<Epoch, UpsertMsg<Conversation>>,
    pub messages: Handle<Epoch, UpsertMsg<Message>>,
    pub payments: Handle<Epoch, UpsertMsg<Payment>>,
    pub ro_updates: Handle<Epoch, UpsertMsg<RoUpdate>>,
    pub deals: Handle<Epoch, UpsertMsg<Deal>>,
    /// Retention state read back from ClickHouse at start-up.
    pub restored: InputSession<Epoch, (RowKey, RowVals), isize>,
}

impl Inputs {
    /// Sends one decoded message of `topic` at the current epoch. A value of
    /// the wrong topic is a programming error upstream and is dropped.
    pub fn send(&mut self, topic: Topic, key: Text, value: Option<Event>, seq: u64) {
        match (topic, value) {
            (Topic::Impressions, None) => self.impressions.send((key, None, seq)),
            (Topic::Conversations, None) => self.conversations.send((key, None, seq)),
            (Topic::Messages, None) => self.messages.send((key, None, seq)),
            (Topic::Payments, None) => self.payments.send((key, None, seq)),
            (Topic::RoUpdates, None) => self.ro_updates.send((key, None, seq)),
            (Topic::Deals, None) => self.deals.send((key, None, seq)),
            (_, Some(Event::Impression(e))) => self.impressions.send((key, Some(e), seq)),
            (_, Some(Event::Conversation(e))) => self.conversations.send((key, Some(e), seq)),
            (_, Some(Event::Message(e))) => self.messages.send((key, Some(e), seq)),
            (_, Some(Event::Payment(e))) => self.payments.send((key, Some(e), seq)),
            (_, Some(Event::RoUpdate(e))) => self.ro_updates.send((key, Some(e), seq)),
            (_, Some(Event::Deal(e))) => self.deals.send((key, Some(e), seq)),
        }
    }

    /// Hands the dataflow the retention state a previous run wrote (rows of
    /// [`crate::row::Table::STATE`]), once, before the first epoch closes: open
    /// subjects, and what closed subjects and days contributed to lifetime
    /// sums, which their released inputs can no longer rebuild.
    pub fn restore(&mut self, rows: impl IntoIterator<Item = (RowKey, RowVals)>) {
        for row in rows {
            self.restored.insert(row);
        }
    }

    /// Closes the current epoch: everything sent so far is at `epoch()`.
    pub fn advance_to(&mut self, epoch: Epoch) {
        self.restored.advance_to(epoch);
        self.impressions.advance_to(epoch);
        self.conversations.advance_to(epoch);
        self.messages.advance_to(epoch);
        self.payments.advance_to(epoch);
        self.ro_updates.advance_to(epoch);
        self.deals.advance_to(epoch);
    }

    pub fn flush(&mut self) {
        self.restored.flush();
        self.impressions.flush();
        self.conversations.flush();
        self.messages.flush();
        self.payments.flush();
        self.ro_updates.flush();
        self.deals.flush();
    }

    pub fn epoch(&self) -> Epoch {
        *self.impressions.time()
    }
}

/// An upsert-log entry of this worker's share of a topic (see
/// [`crate::upsert`]): what a checkpoint stores. Versions are rendered
/// (as JSON) by the checkpoint writer, off the dataflow's threads and
/// once per checkpoint however often a key changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    pub topic: Topic,
    pub key: Text,
    /// The new current version and its arrival sequence, or `None`.
    pub value: Option<(u64, Event)>,
}

/// Row changes whose epochs are complete, handed from the dataflow to the
/// driver (sink or replay), plus the epoch up to which they are complete.
#[derive(Default)]
pub struct Completed {
    /// All epochs `< frontier` are complete (and their changes below).
    pub frontier: Epoch,
    pub changes: Vec<(RowKey, RowVals, isize)>,
    /// With checkpoints: the upsert-log entries of complete epochs, in
    /// epoch order and, within an epoch, in the order they were made.
    pub log: Vec<(Epoch, Logged)>,
    /// All epochs `< log_frontier` have every upsert-log entry in `log`.
    pub log_frontier: Epoch,
    /// Greatest event time per complete epoch (with retention configured),
    /// for the watermark committed with the offsets of an epoch.
    pub watermarks: BTreeMap<Epoch, Micros>,
}

impl Completed {
    /// Takes the upsert-log entries that arrived, with the epoch below
    /// which they are complete.
    pub fn take_log(&mut self) -> (Vec<(Epoch, Logged)>, Epoch) {
        (std::mem::take(&mut self.log), self.log_frontier)
    }
}

/// The watermark each epoch is processed with, as a driver commits it
/// with the epoch's source positions (docs/retention.md): the greatest
/// event time of the complete epochs before it. A lower bound of the
/// dataflow's own watermark, since only complete epochs' maxima count.
#[derive(Clone, Copy, Debug)]
pub struct WatermarkFold {
    current: Micros,
}

impl WatermarkFold {
    /// Starting from the watermark a previous run committed.
    pub fn new(initial: Micros) -> WatermarkFold {
        WatermarkFold { current: initial }
    }

    /// The driver just saw every epoch below `epoch` complete: returns the
    /// watermark the last of them was processed with, then folds in (and
    /// drops) the maxima recorded for the epochs below `epoch`.
    pub fn complete(&mut self, epoch: Epoch, completed: &RefCell<Completed>) -> Micros {
        let applied = self.current;
        let mut done = completed.borrow_mut();
        while let Some(entry) = done.watermarks.first_entry() {
            if *entry.key() >= epoch {
                break;
            }
            self.current = self.current.max(entry.remove());
        }
        applied
    }

    /// The watermark as of the epochs folded in so far.
    pub fn current(&self) -> Micros {
        self.current
    }
}

/// The dataflow of one worker.
pub struct Dataflow {
    pub inputs: Inputs,
    pub probe: ProbeHandle<Epoch>,
    pub completed: Rc<RefCell<Completed>>,
    /// Impressions rejected because their month was closed (SPEC §7), for
    /// the driver to dead-letter.
    pub too_late: Rc<RefCell<Vec<TooLate>>>,
    /// Whether input may raise the watermark (see [`watermarks`]); open
    /// unless the driver closes it while replaying retained input.
    pub watermark_gate: Rc<Cell<bool>>,
    /// Subjects this worker holds open (with subject retention).
    pub open_subjects: Rc<Cell<usize>>,
}

/// The current versions of the six topics.
pub struct Current<'s> {
    pub impressions: VecCollection<'s, Epoch, (Text, Impression)>,
    pub conversations: VecCollection<'s, Epoch, (Text, Conversation)>,
    pub messages: VecCollection<'s, Epoch, (Text, Message)>,
    pub payments: VecCollection<'s, Epoch, (Text, Payment)>,
    pub ro_updates: VecCollection<'s, Epoch, (Text, RoUpdate)>,
    pub deals: VecCollection<'s, Epoch, (Text, Deal)>,
}

/// Builds every metric family of [`FAMILIES`] (SPEC §3) over the current
/// versions; with retention, closed periods and subjects are released and
/// their rows frozen. `restored` carries the retention state a previous run
/// left in ClickHouse (see [`Inputs::restore`]).
pub fn metrics<'s>(
    current: Current<'s>,
    cfg: &MetricsConfig,
    retained: Option<&Retained<'s>>,
    restored: VecCollection<'s, Epoch, (RowKey, RowVals)>,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    let conversions = conversion::conversions(current.payments.clone(), current.ro_updates.clone());
    let experiment_window = cfg.experiment_window_secs as Micros * MICROS_PER_SECOND;
    let held = subject::subjects(
        current.conversations.clone(),
        current.messages.clone(),
        conversions.clone(),
        retained,
        experiment_window,
        restored.clone(),
    );
    // One arrangement of conversions by lead, shared by attribution and
    // experiments, unless retention gives each its own set.
    let (attribution_by_subject, experiment_by_subject) = match retained {
        None => {
            let shared = attribution::by_subject_of(conversions.clone());
            (Some(shared.clone()), shared)
        }
        Some(_) => (None, attribution::by_subject_of(held.conversions.clone())),
    };
    let scores = lead_score::lead_scores(held.conversations.clone(), &cfg.lead_score);
    let streams = Streams {
        current,
        conversions,
        held,
        scores,
        attribution_by_subject,
        experiment_by_subject,
        cfg,
        retained,
        restored,
    };
    let mut families = FAMILIES.iter().map(|f| (f.build)(&streams));
    let first = families.next().expect("at least one family");
    let rows = families.fold(first, |rows, more| rows.concat(more));
    let Subjects { closed, open_rows, .. } = streams.held;
    match (closed, open_rows) {
        (Some(closed), Some(open_rows)) => {
            // A closed subject's lead and conversation rows stay final.
            let (kept, _) = subject::freeze_closed(rows, &closed, "Freeze closed subjects' rows", subject::row_subject);
            kept.concat(open_rows)
        }
        _ => rows,
    }
}

/// How the upsert state of a topic with versions `V` is released (see
/// [`topic_release`]); `None` without retention or if a reader never
/// releases.
fn retention_of<'r, 's, V: AsRecord + 'static>(
    retained: Option<&'r Retained<'s>>,
    topic: Topic,
    rules: &Rules,
    too_late: &Rc<RefCell<Vec<TooLate>>>,
) -> Option<UpsertRetention<'r, 's, V>> {
    let retained = retained?;
    let TopicRelease { release_at, sole_holder } = topic_release(topic, rules)?;
    Some(UpsertRetention {
        retained,
        topic,
        release_at: Rc::new(move |v: &V| release_at(v.record())),
        sole_holder,
        too_late: Rc::clone(too_late),
    })
}

/// What to build beyond the metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildOptions {
    /// The watermark the previous run committed ([`NO_WATERMARK`] if none).
    pub initial_watermark: Micros,
    /// Report the upsert log ([`Completed::log`]) for checkpoints.
    pub log: bool,
}

impl BuildOptions {
    /// A first start without checkpoints.
    pub fn fresh() -> BuildOptions {
        BuildOptions { initial_watermark: NO_WATERMARK, log: false }
    }
}

/// Builds the dataflow in a new worker scope.
pub fn build(worker: &mut timely::worker::Worker, cfg: &MetricsConfig, opts: BuildOptions) -> Dataflow {
    let BuildOptions { initial_watermark, log } = opts;
    let completed = Rc::new(RefCell::new(Completed::default()));
    let sink_state = Rc::clone(&completed);
    let too_late = Rc::new(RefCell::new(Vec::new()));
    let watermark_gate = Rc::new(Cell::new(true));
    let gate = Rc::clone(&watermark_gate);
    let open_subjects = Rc::new(Cell::new(0));
    let cfg = cfg.clone();
    worker.dataflow::<Epoch, _, _>(move |scope| {
        let (impressions, imp_stream) = scope.new_input::<UpsertMsg<Impression>>();
        let (conversations, conv_stream) = scope.new_input::<UpsertMsg<Conversation>>();
        let (messages, msg_stream) = scope.new_input::<UpsertMsg<Message>>();
        let (payments, pay_stream) = scope.new_input::<UpsertMsg<Payment>>();
        let (ro_updates, ro_stream) = scope.new_input::<UpsertMsg<RoUpdate>>();
        let (deals, deal_stream) = scope.new_input::<UpsertMsg<Deal>>();
        let (restored, restored_rows) = scope.new_collection::<(RowKey, RowVals), isize>();

        let lateness = Lateness::of(&cfg);
        let retained = lateness.any().then(|| {
            fn times<'a, V: Versioned + timely::ExchangeData + Clone>(
                s: &StreamVec<'a, Epoch, UpsertMsg<V>>,
            ) -> StreamVec<'a, Epoch, Micros> {
                s.clone().flat_map(|(_, v, _)| v.map(|v| v.ts()))
            }
            let all = times(&imp_stream)
                .concat(times(&conv_stream))
                .concat(times(&msg_stream))
                .concat(times(&pay_stream))
                .concat(times(&ro_stream))
                .concat(times(&deal_stream));
            Retained {
                wm: watermarks(all, gate),
                initial: initial_watermark,
                lateness,
                open_subjects: Rc::clone(&open_subjects),
            }
        });
        let rules = Rules::of(&cfg);
        let r = retained.as_ref();
        let mut logs = Vec::new();
        let (impressions_current, l) =
            upsert(imp_stream, "Upsert: impressions", retention_of(r, Topic::Impressions, &rules, &too_late), log);
        logs.extend(l.map(|l| logged(Topic::Impressions, l, Event::Impression)));
        let (conversations_current, l) =
            upsert(conv_stream, "Upsert: conversations", retention_of(r, Topic::Conversations, &rules, &too_late), log);
        logs.extend(l.map(|l| logged(Topic::Conversations, l, Event::Conversation)));
        let (messages_current, l) =
            upsert(msg_stream, "Upsert: messages", retention_of(r, Topic::Messages, &rules, &too_late), log);
        logs.extend(l.map(|l| logged(Topic::Messages, l, Event::Message)));
        let (payments_current, l) =
            upsert(pay_stream, "Upsert: payments", retention_of(r, Topic::Payments, &rules, &too_late), log);
        logs.extend(l.map(|l| logged(Topic::Payments, l, Event::Payment)));
        let (ro_current, l) =
            upsert(ro_stream, "Upsert: ro_updates", retention_of(r, Topic::RoUpdates, &rules, &too_late), log);
        logs.extend(l.map(|l| logged(Topic::RoUpdates, l, Event::RoUpdate)));
        let (deals_current, l) =
            upsert(deal_stream, "Upsert: deals", retention_of(r, Topic::Deals, &rules, &too_late), log);
        logs.extend(l.map(|l| logged(Topic::Deals, l, Event::Deal)));
        let current = Current {
            impressions: impressions_current,
            conversations: conversations_current,
            messages: messages_current,
            payments: payments_current,
            ro_updates: ro_current,
            deals: deals_current,
        };
        let rows = retention::freeze(metrics(current, &cfg, retained.as_ref(), restored_rows), retained.as_ref());
        if let Some(r) = &retained {
            record_watermarks(&r.wm, Rc::clone(&sink_state));
        }
        let probe = capture(rows, Rc::clone(&sink_state));
        if let Some(first) = logs.pop() {
            let all = logs.into_iter().fold(first, |all, more| all.concat(more));
            capture_log(all.probe_with(&probe), sink_state);
        }
        Dataflow {
            inputs: Inputs { impressions, conversations, messages, payments, ro_updates, deals, restored },
            probe,
            completed,
            too_late,
            watermark_gate,
            open_subjects,
        }
    })
}

/// A topic's upsert-log entries, its versions as events (`wrap`).
fn logged<'s, V: Clone + 'static>(
    topic: Topic,
    log: VecCollection<'s, Epoch, crate::upsert::LogEntry<V>>,
    wrap: fn(V) -> Event,
) -> StreamVec<'s, Epoch, (Logged, Epoch)> {
    log.inner.map(move |((key, value), t, _)| (Logged { topic, key, value: value.map(|(seq, v)| (seq, wrap(v))) }, t))
}

/// Keeps the upsert-log entries of complete epochs in `out`, in order.
fn capture_log(log: StreamVec<'_, Epoch, (Logged, Epoch)>, out: Rc<RefCell<Completed>>) {
    let mut stash: BTreeMap<Epoch, Vec<(Epoch, Logged)>> = BTreeMap::new();
    log.sink(Pipeline, "Capture upsert log", move |(input, frontier)| {
        input.for_each(|cap, data| {
            let batch = stash.entry(*cap.time()).or_default();
            batch.extend(data.drain(..).map(|(l, t)| (t, l)));
        });
        let mut out = out.borrow_mut();
        while let Some(entry) = stash.first_entry() {
            if frontier.less_equal(entry.key()) {
                break;
            }
            out.log.append(&mut entry.remove());
        }
        let upto = frontier.frontier().first().copied().unwrap_or(Epoch::MAX);
        out.log_frontier = out.log_frontier.max(upto);
    });
}

/// Keeps the per-epoch watermark maxima of complete epochs in `out`.
fn record_watermarks(wm: &Watermarks<'_>, out: Rc<RefCell<Completed>>) {
    let mut stash: BTreeMap<Epoch, Micros> = BTreeMap::new();
    wm.clone().sink(Pipeline, "Record watermarks", move |(input, frontier)| {
        input.for_each(|cap, data| {
            let e = stash.entry(*cap.time()).or_insert(NO_WATERMARK);
            *e = data.iter().copied().fold(*e, Micros::max);
        });
        let mut out = out.borrow_mut();
        while let Some(entry) = stash.first_entry() {
            if frontier.less_equal(entry.key()) {
                break;
            }
            let (e, w) = entry.remove_entry();
            out.watermarks.insert(e, w);
        }
    });
}

/// The worker, of `peers`, that captures and writes `key`'s row: every
/// change of a row goes to one worker, so sink writes are partitioned
/// without duplicates and consolidate per key. Start-up reconciliation uses
/// the same rule to split ClickHouse's live keys.
pub fn row_owner(key: &RowKey, peers: usize) -> usize {
    (key.hashed() % peers.max(1) as u64) as usize
}

/// Routes row changes to their owning worker, stashes them by epoch and
/// releases each epoch, consolidated by the driver, once the frontier has
/// passed it. The probe sits behind the exchange, so an epoch is complete
/// only when every worker's changes for it have arrived.
fn capture(rows: VecCollection<'_, Epoch, (RowKey, RowVals)>, out: Rc<RefCell<Completed>>) -> ProbeHandle<Epoch> {
    let routed = rows.inner.exchange(|((k, _), _, _): &((RowKey, RowVals), Epoch, isize)| k.hashed());
    let (probe, routed) = routed.probe();
    let mut stash: BTreeMap<Epoch, Vec<(RowKey, RowVals, isize)>> = BTreeMap::new();
    routed.sink(Pipeline, "Capture", move |(input, frontier)| {
        input.for_each(|cap, data| {
            let batch = stash.entry(*cap.time()).or_default();
            batch.extend(data.drain(..).map(|((k, v), _t, d)| (k, v, d)));
        });
        let mut out = out.borrow_mut();
        let upto = frontier.frontier().first().copied().unwrap_or(Epoch::MAX);
        while let Some(entry) = stash.first_entry() {
            if *entry.key() >= upto {
                break;
            }
            out.changes.append(&mut entry.remove());
        }
        out.frontier = out.frontier.max(upto);
    });
    probe
}

/// The net effect of a set of row changes: per key, its new value, or
/// `None` when the key no longer has a row. Keys are in sorted order.
pub fn net_changes(changes: Vec<(RowKey, RowVals, isize)>) -> Vec<(RowKey, Option<RowVals>)> {
    let mut updates: Vec<((RowKey, RowVals), isize)> = changes.into_iter().map(|(k, v, d)| ((k, v), d)).collect();
    differential_dataflow::consolidation::consolidate(&mut updates);
    let mut net: Vec<(RowKey, Option<RowVals>)> = Vec::new();
    for ((key, vals), diff) in updates {
        let value = (diff > 0).then_some(vals);
        match net.last_mut() {
            Some((k, v)) if *k == key => {
                if value.is_some() {
                    *v = value;
                }
            }
            _ => net.push((key, value)),
        }
    }
    net
}
