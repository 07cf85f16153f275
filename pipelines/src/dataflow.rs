//! The revpulse dataflow: five upsert inputs → metric operators → one
//! collection of table rows, captured per completed epoch for the sink.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::hashable::Hashable;
use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::input::Handle;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Exchange as _, Probe as _};
use timely::dataflow::ProbeHandle;

use crate::config::MetricsConfig;
use crate::event::{Conversation, Event, Impression, Message, Payment, RoUpdate, Topic};
use crate::row::{RowKey, RowVals};
use crate::types::Text;
use crate::upsert::{upsert, Epoch, UpsertMsg};
use crate::{attribution, conversion, experiment, lead_score, rar, revenue_per_minute};

/// The input handles of one worker, one per topic.
pub struct Inputs {
    pub impressions: Handle<Epoch, UpsertMsg<Impression>>,
    pub conversations: Handle<Epoch, UpsertMsg<Conversation>>,
    pub messages: Handle<Epoch, UpsertMsg<Message>>,
    pub payments: Handle<Epoch, UpsertMsg<Payment>>,
    pub ro_updates: Handle<Epoch, UpsertMsg<RoUpdate>>,
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
            (_, Some(Event::Impression(e))) => self.impressions.send((key, Some(e), seq)),
            (_, Some(Event::Conversation(e))) => self.conversations.send((key, Some(e), seq)),
            (_, Some(Event::Message(e))) => self.messages.send((key, Some(e), seq)),
            (_, Some(Event::Payment(e))) => self.payments.send((key, Some(e), seq)),
            (_, Some(Event::RoUpdate(e))) => self.ro_updates.send((key, Some(e), seq)),
        }
    }

    /// Closes the current epoch: everything sent so far is at `epoch()`.
    pub fn advance_to(&mut self, epoch: Epoch) {
        self.impressions.advance_to(epoch);
        self.conversations.advance_to(epoch);
        self.messages.advance_to(epoch);
        self.payments.advance_to(epoch);
        self.ro_updates.advance_to(epoch);
    }

    pub fn flush(&mut self) {
        self.impressions.flush();
        self.conversations.flush();
        self.messages.flush();
        self.payments.flush();
        self.ro_updates.flush();
    }

    pub fn epoch(&self) -> Epoch {
        *self.impressions.time()
    }
}

/// Row changes whose epochs are complete, handed from the dataflow to the
/// driver (sink or replay), plus the epoch up to which they are complete.
#[derive(Default)]
pub struct Completed {
    /// All epochs `< frontier` are complete (and their changes below).
    pub frontier: Epoch,
    pub changes: Vec<(RowKey, RowVals, isize)>,
}

/// The dataflow of one worker.
pub struct Dataflow {
    pub inputs: Inputs,
    pub probe: ProbeHandle<Epoch>,
    pub completed: Rc<RefCell<Completed>>,
}

/// The current versions of the five topics.
pub struct Current<'s> {
    pub impressions: VecCollection<'s, Epoch, (Text, Impression)>,
    pub conversations: VecCollection<'s, Epoch, (Text, Conversation)>,
    pub messages: VecCollection<'s, Epoch, (Text, Message)>,
    pub payments: VecCollection<'s, Epoch, (Text, Payment)>,
    pub ro_updates: VecCollection<'s, Epoch, (Text, RoUpdate)>,
}

/// Builds every metric family (SPEC §3) over the current versions.
pub fn metrics<'s>(current: Current<'s>, cfg: &MetricsConfig) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    let conversions = conversion::conversions(current.payments, current.ro_updates);
    // One arrangement of conversions by lead, shared by attribution and experiments.
    let by_subject = conversions.clone().map(|c| ((c.tenant.clone(), c.subject.clone()), c)).arrange_by_key();
    let scores = lead_score::lead_scores(current.conversations.clone(), &cfg.lead_score);
    let extents = revenue_per_minute::extents(current.conversations);

    rar::rar(current.impressions)
        .concat(lead_score::rows(scores.clone()))
        .concat(revenue_per_minute::conversation_rpm(extents, scores))
        .concat(revenue_per_minute::realized(conversions.clone()))
        .concat(attribution::attribution(
            current.messages.clone(),
            conversions,
            by_subject.clone(),
            cfg.attribution_window_secs,
        ))
        .concat(experiment::experiments(current.messages, by_subject, cfg.experiment_window_secs))
}

/// Builds the dataflow in a new worker scope.
pub fn build(worker: &mut timely::worker::Worker, cfg: &MetricsConfig) -> Dataflow {
    let completed = Rc::new(RefCell::new(Completed::default()));
    let sink_state = Rc::clone(&completed);
    let cfg = cfg.clone();
    worker.dataflow::<Epoch, _, _>(move |scope| {
        let (impressions, imp_stream) = scope.new_input();
        let (conversations, conv_stream) = scope.new_input();
        let (messages, msg_stream) = scope.new_input();
        let (payments, pay_stream) = scope.new_input();
        let (ro_updates, ro_stream) = scope.new_input();

        let current = Current {
            impressions: upsert::<Impression>(imp_stream, "Upsert: impressions"),
            conversations: upsert::<Conversation>(conv_stream, "Upsert: conversations"),
            messages: upsert::<Message>(msg_stream, "Upsert: messages"),
            payments: upsert::<Payment>(pay_stream, "Upsert: payments"),
            ro_updates: upsert::<RoUpdate>(ro_stream, "Upsert: ro_updates"),
        };
        let rows = metrics(current, &cfg);
        let probe = capture(rows, sink_state);
        Dataflow { inputs: Inputs { impressions, conversations, messages, payments, ro_updates }, probe, completed }
    })
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
