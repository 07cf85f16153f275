//! The revpulse dataflow: five upsert inputs → metric operators → one
//! collection of table rows, captured per completed epoch for the sink.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::VecCollection;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::input::Handle;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::ProbeHandle;

use crate::event::{Conversation, Event, Impression, Message, Payment, RoUpdate, Topic};
use crate::rar;
use crate::row::{RowKey, RowVals};
use crate::upsert::{upsert, Epoch, UpsertMsg};

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
    pub fn send(&mut self, topic: Topic, key: String, value: Option<Event>, seq: u64) {
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

/// Builds every metric family over the five upsert streams.
pub fn metrics<'s>(
    impressions: VecCollection<'s, Epoch, (String, Impression)>,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    rar::rar(impressions)
}

/// Builds the dataflow in a new worker scope.
pub fn build(worker: &mut timely::worker::Worker) -> Dataflow {
    let completed = Rc::new(RefCell::new(Completed::default()));
    let sink_state = Rc::clone(&completed);
    worker.dataflow::<Epoch, _, _>(move |scope| {
        let (impressions, imp_stream) = scope.new_input();
        let (conversations, conv_stream) = scope.new_input();
        let (messages, msg_stream) = scope.new_input();
        let (payments, pay_stream) = scope.new_input();
        let (ro_updates, ro_stream) = scope.new_input();

        let impressions_cur = upsert::<Impression>(imp_stream, "Upsert: impressions");
        // Maintained now so their state and DLQ behaviour are exercised; the
        // metric families that read them plug in here.
        let _conversations = upsert::<Conversation>(conv_stream, "Upsert: conversations");
        let _messages = upsert::<Message>(msg_stream, "Upsert: messages");
        let _payments = upsert::<Payment>(pay_stream, "Upsert: payments");
        let _ro_updates = upsert::<RoUpdate>(ro_stream, "Upsert: ro_updates");

        let rows = metrics(impressions_cur);
        let probe = capture(rows, sink_state);
        Dataflow { inputs: Inputs { impressions, conversations, messages, payments, ro_updates }, probe, completed }
    })
}

/// Stashes row changes by epoch and releases each epoch, consolidated by
/// the driver, once the frontier has passed it.
fn capture(rows: VecCollection<'_, Epoch, (RowKey, RowVals)>, out: Rc<RefCell<Completed>>) -> ProbeHandle<Epoch> {
    let (probe, rows) = rows.probe();
    let mut stash: BTreeMap<Epoch, Vec<(RowKey, RowVals, isize)>> = BTreeMap::new();
    rows.inner.sink(Pipeline, "Capture", move |(input, frontier)| {
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
