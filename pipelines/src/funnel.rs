//! Campaign and offer funnel — SPEC §3.6.
//!
//! Over the current outbound `messages` records: a record's day is the UTC
//! day of its `sent_at` (or `ts` if absent, the touch time of §3.4), its
//! campaign `campaign_id` (`unknown` when absent). Counted by current
//! status, each status in every column it implies:
//!
//! ```text
//! queued    = queued
//! sent      = sent + delivered + clicked + replied      (the touches of §3.4)
//! delivered = delivered + clicked + replied
//! clicked   = clicked + replied
//! replied   = replied
//! failed    = failed
//! held_out  = held_out
//! delivery_rate = delivered / (sent + failed)   click_rate = clicked / delivered
//! reply_rate    = replied / delivered           (null when the denominator is 0)
//! ```
//!
//! `campaign_daily` groups by (tenant, day, campaign); `offer_daily` the
//! records that carry an `offer_id` by (tenant, day, offer). A key exists
//! while at least one record falls in it. One `reduce` per key over its
//! records' statuses: an update costs the key's distinct statuses (at most
//! seven), not its history. With retention a record is kept until its day
//! closes (`attribution_lateness_secs`, the lateness of the attributed
//! revenue the funnel is read next to), and closed days' rows are final.

use std::rc::Rc;

use differential_dataflow::VecCollection;

use crate::attribution::UNKNOWN_CAMPAIGN;
use crate::event::{Direction, Message, MessageStatus, Topic};
use crate::family::{Family, Record, ReleaseFn, Rules, Streams, NEVER};
use crate::retention::{self, day_end, Lateness};
use crate::row::{
    CampaignDailyKey, Date, FunnelValues, OfferDailyKey, OfferFunnelValues, RowKey, RowVals, Table, TableKey,
};
use crate::time::{day_of, Day, Micros};
use crate::types::Text;
use crate::upsert::Epoch;

/// Which funnel a record counts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Funnel {
    Campaign,
    Offer,
}

/// A funnel key: (tenant, funnel, day, campaign or offer).
type Key = (Text, Funnel, Day, Text);

/// The day a message counts on: that of its touch time.
pub fn day_of_message(m: &Message) -> Day {
    day_of(m.sent_at.unwrap_or(m.ts).0)
}

/// The funnel keys an outbound record falls in, with its status.
fn keys_of(m: &Message) -> Vec<(Key, MessageStatus)> {
    if m.direction != Direction::Outbound {
        return Vec::new();
    }
    let (tenant, day) = (m.tenant_id.0.clone(), day_of_message(m));
    let campaign = m.campaign_id.as_ref().map_or(UNKNOWN_CAMPAIGN, |c| c.0.as_str());
    let mut out = vec![((tenant.clone(), Funnel::Campaign, day, Text::from(campaign)), m.status)];
    if let Some(offer) = &m.offer_id {
        out.push(((tenant, Funnel::Offer, day, offer.0.clone()), m.status));
    }
    out
}

/// The counts of a key's records, by column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    pub queued: u64,
    pub sent: u64,
    pub delivered: u64,
    pub clicked: u64,
    pub replied: u64,
    pub failed: u64,
    pub held_out: u64,
}

impl Counts {
    /// Adds `n` records of `status`.
    pub fn add(&mut self, status: MessageStatus, n: u64) {
        use MessageStatus::*;
        match status {
            Queued => self.queued += n,
            Failed => self.failed += n,
            HeldOut => self.held_out += n,
            Sent | Delivered | Clicked | Replied => {
                self.sent += n;
                if status != Sent {
                    self.delivered += n;
                }
                if matches!(status, Clicked | Replied) {
                    self.clicked += n;
                }
                if status == Replied {
                    self.replied += n;
                }
            }
        }
    }

    /// `(delivery_rate, click_rate, reply_rate)`, null on a zero denominator.
    pub fn rates(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        (
            ratio(self.delivered, self.sent + self.failed),
            ratio(self.clicked, self.delivered),
            ratio(self.replied, self.delivered),
        )
    }
}

/// The counts of every funnel key with at least one record.
pub fn counts<'s>(
    messages: VecCollection<'s, Epoch, (Text, Message)>,
    retained: Option<&retention::Retained<'s>>,
) -> VecCollection<'s, Epoch, (Key, Counts)> {
    let keyed = messages.flat_map(|(_, m)| keys_of(&m));
    let keyed =
        retention::retain(keyed, retained, |l| l.attribution, "Retain: funnel", |((_, _, day, _), _)| day_end(*day));
    keyed.reduce(|_key, statuses, out| {
        let mut c = Counts::default();
        for (status, n) in statuses {
            c.add(**status, (*n).max(0) as u64);
        }
        out.push((c, 1));
    })
}

/// The value columns of either table, from a key's counts (the two tables
/// share their columns, but each table has a value type of its own).
macro_rules! funnel_values {
    ($values:ident, $c:expr) => {{
        let c: Counts = $c;
        let (delivery_rate, click_rate, reply_rate) = c.rates();
        let Counts { queued, sent, delivered, clicked, replied, failed, held_out } = c;
        $values { queued, sent, delivered, clicked, replied, failed, held_out, delivery_rate, click_rate, reply_rate }
    }};
}

/// The `campaign_daily` and `offer_daily` rows.
pub fn rows<'s>(counts: VecCollection<'s, Epoch, (Key, Counts)>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    counts.map(|((tenant_id, funnel, day, id), c)| match funnel {
        Funnel::Campaign => {
            CampaignDailyKey { tenant_id, day: Date(day), campaign_id: id }.row(funnel_values!(FunnelValues, c))
        }
        Funnel::Offer => {
            OfferDailyKey { tenant_id, day: Date(day), offer_id: id }.row(funnel_values!(OfferFunnelValues, c))
        }
    })
}

/// Campaign and offer funnel (SPEC §3.6): day-keyed, closing with the
/// attribution lateness.
pub const FAMILY: Family = Family {
    name: "funnel",
    inputs: &[Topic::Messages],
    tables: &[Table::CampaignDaily, Table::OfferDaily],
    state: &[],
    own_copy: true,
    release,
    row_period,
    build,
};

fn release(rules: &Rules) -> Option<ReleaseFn> {
    let lateness = rules.lateness.attribution?;
    // The touch time is never after message_time: releasing by the latter
    // keeps a record at least until its day closes.
    Some(Rc::new(move |r: Record<'_>| match r {
        Record::Message(m) => day_end(day_of(Record::message_time(m))).saturating_add(lateness),
        _ => NEVER,
    }))
}

fn row_period(l: &Lateness, key: &RowKey) -> Option<(Micros, Micros)> {
    let day = CampaignDailyKey::of(key).map(|k| k.day).or_else(|| OfferDailyKey::of(key).map(|k| k.day))?;
    Some((l.attribution?, day_end(day.0)))
}

fn build<'s>(s: &Streams<'_, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    rows(counts(s.current.messages.clone(), s.retained))
}
