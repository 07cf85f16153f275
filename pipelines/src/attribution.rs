//! Attribution and offer acceptance — SPEC §3.4.
//!
//! A **touch** is an outbound message with status sent, delivered, clicked
//! or replied; its time is `sent_at` (or `ts`). A conversion's candidates are
//! the touches to the same (tenant, subject) with time in
//! `[conversion time − window, conversion time]`.
//!
//! - **Last touch**: the candidate with the latest time (ties: greatest
//!   `message_id`) gets the whole conversion and its revenue.
//! - **Linear**: each of the n candidates gets 1/n of both.
//! - A touch without `campaign_id` credits campaign `unknown`; a conversion
//!   without candidates credits campaign `""` under both models.
//!
//! Output per (tenant, conversion day, model, campaign): credited
//! conversions and revenue. Credits are apportioned in millionths: the
//! remainder units of a linear split go one each to the earliest candidates
//! (by time, then `message_id`), so each conversion's credits sum to exactly
//! 1 and its revenue exactly; totals are then exact integer sums.
//!
//! **Offer acceptance**: an RO line with an `offer_id` that was the offer of
//! a candidate touch is an accepted line; per (tenant, offer_id): accepted
//! lines and their revenue.

use std::collections::BTreeMap;
use std::rc::Rc;

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map as _;

use crate::conversion::{Conversion, Source};
use crate::event::{Direction, Message, MessageStatus, Topic};
use crate::family::{Family, Record, ReleaseFn, Rules, Streams, NEVER};
use crate::fixed::{to_f64, Fixed};
use crate::lead_score::LeadKey;
use crate::retention::{self, day_end, state_micros as micros, state_us, Lateness, Retained, SumChange};
use crate::row::{
    AttributionDailyKey, AttributionDailyValues, Date, OfferAcceptanceKey, OfferAcceptanceValues, OfferClosedKey,
    OfferClosedValues, RowKey, RowVals, Table, TableKey,
};
use crate::time::{day_of, Day, Micros};
use crate::types::Text;
use crate::upsert::Epoch;
use differential_dataflow::difference::Multiply as _;

/// Conversions arranged by (tenant, subject), shared with experiment lift.
pub type BySubject<'s> = Arranged<'s, TraceAgent<ValSpine<(Text, Text), Conversion, Epoch, isize>>>;

/// Arranges conversions by (tenant, subject).
pub fn by_subject_of<'s>(conversions: VecCollection<'s, Epoch, Conversion>) -> BySubject<'s> {
    conversions.map(|c| ((c.tenant.clone(), c.subject.clone()), c)).arrange_by_key()
}

/// Campaign credited for touches without `campaign_id`.
pub const UNKNOWN_CAMPAIGN: &str = "unknown";
/// Campaign credited for conversions without candidate touches.
pub const UNATTRIBUTED: &str = "";

/// Millionths in one unit.
const UNIT: Fixed = 1_000_000;
/// Millionths of a currency unit in one cent.
const PER_CENT: Fixed = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Touch {
    pub time: Micros,
    pub message_id: Text,
    pub campaign: Text,
    pub offer: Option<Text>,
}

/// The touch a message is, keyed by (tenant, subject), if it is one.
pub fn touch_of(m: &Message) -> Option<((Text, Text), Touch)> {
    let counts = matches!(
        m.status,
        MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Clicked | MessageStatus::Replied
    );
    (m.direction == Direction::Outbound && counts).then(|| {
        let touch = Touch {
            time: m.sent_at.unwrap_or(m.ts).0,
            message_id: m.message_id.0.clone(),
            campaign: m.campaign_id.as_ref().map_or(UNKNOWN_CAMPAIGN, |c| c.0.as_str()).into(),
            offer: m.offer_id.as_ref().map(|o| o.0.clone()),
        };
        ((m.tenant_id.0.clone(), m.subject_id.0.clone()), touch)
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Model {
    LastTouch,
    Linear,
}

impl Model {
    pub fn as_str(self) -> &'static str {
        match self {
            Model::LastTouch => "last_touch",
            Model::Linear => "linear",
        }
    }
}

/// What the per-conversion reduce sees: the conversion (sorts first), then
/// its candidate touches in (time, message_id) order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum AttrIn {
    Conversion { day: Day, revenue_cents: u128, offer_lines: Vec<(Text, u64)> },
    Candidate(Touch),
}

/// What one conversion contributes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Credit {
    Campaign { day: Day, model: Model, campaign: Text, conversions: Fixed, revenue: Fixed },
    Offer { day: Day, offer: Text, lines: i64, cents: i128 },
}

/// `total` split into `n` integer parts that sum to `total`, larger first.
pub fn apportion(total: Fixed, n: usize) -> impl Iterator<Item = Fixed> {
    let n = n.max(1) as Fixed;
    let (base, rem) = (total / n, total % n);
    (0..n).map(move |i| base + Fixed::from(i < rem))
}

/// The credits of one conversion given its candidates in (time, message_id) order.
pub fn credits(day: Day, revenue_cents: u128, offer_lines: &[(Text, u64)], candidates: &[&Touch]) -> Vec<Credit> {
    let revenue = revenue_cents as Fixed * PER_CENT;
    let mut out = Vec::new();
    let Some(last) = candidates.last() else {
        for model in [Model::LastTouch, Model::Linear] {
            out.push(Credit::Campaign { day, model, campaign: UNATTRIBUTED.into(), conversions: UNIT, revenue });
        }
        return out;
    };
    out.push(Credit::Campaign {
        day,
        model: Model::LastTouch,
        campaign: last.campaign.clone(),
        conversions: UNIT,
        revenue,
    });
    let mut linear: BTreeMap<&str, (Fixed, Fixed)> = BTreeMap::new();
    let shares = apportion(UNIT, candidates.len()).zip(apportion(revenue, candidates.len()));
    for (touch, (c, r)) in candidates.iter().zip(shares) {
        let e = linear.entry(touch.campaign.as_str()).or_default();
        e.0 += c;
        e.1 += r;
    }
    for (campaign, (conversions, revenue)) in linear {
        out.push(Credit::Campaign { day, model: Model::Linear, campaign: campaign.into(), conversions, revenue });
    }
    let mut offers: BTreeMap<&str, (i64, i128)> = BTreeMap::new();
    for (offer, cents) in offer_lines {
        if candidates.iter().any(|t| t.offer.as_deref() == Some(offer.as_str())) {
            let e = offers.entry(offer.as_str()).or_default();
            e.0 += 1;
            e.1 += i128::from(*cents);
        }
    }
    for (offer, (lines, cents)) in offers {
        out.push(Credit::Offer { day, offer: offer.into(), lines, cents });
    }
    out
}

crate::additive! {
    /// Credited conversions and revenue, in millionths.
    pub struct Credited {
        /// Number of crediting conversions: the row exists while non-zero.
        pub credits: i64,
        pub conversions: i128,
        pub revenue: i128,
    }
}

crate::additive! {
    /// Accepted offer lines and their revenue in cents.
    pub struct Accepted {
        pub lines: i64,
        pub cents: i128,
    }
}

/// The `attribution_daily` and `offer_acceptance` rows.
pub fn attribution<'s>(
    messages: VecCollection<'s, Epoch, (Text, Message)>,
    conversions: VecCollection<'s, Epoch, Conversion>,
    by_subject: Option<BySubject<'s>>,
    window_secs: u64,
    retained: Option<&Retained<'s>>,
    restored: VecCollection<'s, Epoch, (RowKey, RowVals)>,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    let window = window_secs as Micros * 1_000_000;
    // With retention (SPEC §7): a conversion's day closes at its end plus the
    // lateness; a touch is kept until every day it could credit is closed.
    let touches = retention::retain(
        messages.flat_map(|(_, m)| touch_of(&m)),
        retained,
        |l| l.attribution,
        "Retain: touches",
        move |(_, t): &(LeadKey, Touch)| day_end(day_of(t.time.saturating_add(window))),
    );
    let conversions =
        retention::retain(conversions, retained, |l| l.attribution, "Retain: conversions", |c| day_end(day_of(c.time)));
    // Shared with experiments when nothing is retained; else its own, of
    // the conversions attribution holds.
    let by_subject = by_subject.unwrap_or_else(|| by_subject_of(conversions.clone()));
    let candidates = touches.join_core(by_subject, move |_lead, touch: &Touch, conv: &Conversion| {
        let in_window = touch.time <= conv.time && touch.time >= conv.time - window;
        in_window.then(|| ((conv.tenant.clone(), conv.source, conv.id.clone()), AttrIn::Candidate(touch.clone())))
    });
    let per_conversion = conversions.map(|c| {
        let input =
            AttrIn::Conversion { day: day_of(c.time), revenue_cents: c.revenue_cents, offer_lines: c.offer_lines };
        ((c.tenant, c.source, c.id), input)
    });
    let credited = per_conversion.concat(candidates).reduce(|_conv: &(Text, Source, Text), inputs, out| {
        let Some((AttrIn::Conversion { day, revenue_cents, offer_lines }, _)) = inputs.first() else { return };
        let candidates: Vec<&Touch> = inputs
            .iter()
            .filter_map(|(i, _)| match i {
                AttrIn::Candidate(t) => Some(t),
                AttrIn::Conversion { .. } => None,
            })
            .collect();
        out.extend(credits(*day, *revenue_cents, offer_lines, &candidates).into_iter().map(|c| (c, 1)));
    });

    let daily = daily_rows(credited.clone());
    // Offer acceptance is a lifetime sum: a closed conversion's credits stay
    // counted when its state is released, and are kept as state for restarts
    // (taken back only while days close; without, every day is rebuilt).
    let offer_of = |((tenant, _, _), credit): ((Text, Source, Text), Credit)| match credit {
        Credit::Offer { offer, lines, cents, .. } => Some(((tenant, offer), Accepted { lines, cents })),
        Credit::Campaign { .. } => None,
    };
    let (credited, closed_state) = match retained.and_then(|r| Some((r, r.lateness.attribution?))) {
        Some((r, lateness)) => {
            let restored = restored.flat_map(restored_offers);
            let (kept, dropped) = retention::freeze_split(
                credited,
                r,
                "Freeze closed offer credits",
                move |(_, credit), w| match credit {
                    Credit::Offer { day, .. } => retention::closed(day_end(*day), w, lateness),
                    Credit::Campaign { .. } => false,
                },
            );
            // A release's retractions, negated: what stays counted, logged
            // with the watermark its day closed under.
            let closes = dropped.inner.flat_map(move |((d, w), _, r)| {
                let (key, accepted) = offer_of(d)?;
                (r < 0).then(|| SumChange::Closed(key, w, accepted.multiply(&-r)))
            });
            let state = retention::lifetime_sum_state(restored, closes, "Log closed offer credits", offer_closed_row);
            (kept, Some(state))
        }
        None => (credited, None),
    };
    let mut contributions = credited.explode(offer_of);
    if let Some((_, restored)) = &closed_state {
        contributions = contributions.concat(restored.clone());
    }
    let offers = contributions.count_total().map(|((tenant_id, offer_id), a)| {
        let values = OfferAcceptanceValues { accepted_lines: a.lines.max(0) as u64, revenue: a.cents as f64 / 100.0 };
        OfferAcceptanceKey { tenant_id, offer_id }.row(values)
    });
    let rows = daily.concat(offers);
    match closed_state {
        Some((closed_rows, _)) => rows.concat(closed_rows),
        None => rows,
    }
}

/// The `attribution_daily` rows: credits summed per (tenant, day, model, campaign).
fn daily_rows<'s>(
    credited: VecCollection<'s, Epoch, ((Text, Source, Text), Credit)>,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    credited
        .explode(|((tenant, _, _), credit)| match credit {
            Credit::Campaign { day, model, campaign, conversions, revenue } => {
                Some(((tenant, day, model, campaign), Credited { credits: 1, conversions, revenue }))
            }
            Credit::Offer { .. } => None,
        })
        .count_total()
        .map(|((tenant_id, day, model, campaign_id), c)| {
            let key = AttributionDailyKey { tenant_id, day: Date(day), model: model.as_str().into(), campaign_id };
            key.row(AttributionDailyValues { conversions: to_f64(c.conversions), revenue: to_f64(c.revenue) })
        })
}

/// A `state_offer_closed` row a start took back: an offer's total as of
/// the watermark in its key.
fn restored_offers(row: (RowKey, RowVals)) -> Option<SumChange<(Text, Text), Accepted>> {
    let (key, v) = OfferClosedKey::parse(&row)?;
    let accepted = Accepted { lines: v.accepted_lines as i64, cents: i128::from(v.revenue_cents) };
    Some(SumChange::Restored((key.tenant_id, key.offer_id), micros(key.closed_us), accepted))
}

/// A `state_offer_closed` row: what conversions of closed days had credited
/// an offer in total as of watermark `closed`.
fn offer_closed_row((tenant, offer): &(Text, Text), closed: Micros, a: &Accepted) -> (RowKey, RowVals) {
    let key = OfferClosedKey { tenant_id: tenant.clone(), offer_id: offer.clone(), closed_us: state_us(closed) };
    key.row(OfferClosedValues { accepted_lines: a.lines.max(0) as u64, revenue_cents: a.cents.max(0) as u64 })
}

/// Attribution and offer acceptance (SPEC §3.4): a touch is done with once
/// every day it could credit is closed, a conversion once its day is.
pub const FAMILY: Family = Family {
    name: "attribution",
    inputs: &[Topic::Messages, Topic::Payments, Topic::RoUpdates],
    tables: &[Table::AttributionDaily, Table::OfferAcceptance],
    state: &[Table::StateOfferClosed],
    own_copy: true,
    release: release_rule,
    row_period,
    build,
};

fn release_rule(rules: &Rules) -> Option<ReleaseFn> {
    let (lateness, window) = (rules.lateness.attribution?, rules.attribution_window);
    // A touch until the last day it may credit, a conversion until its day.
    Some(Rc::new(move |r: Record<'_>| {
        r.window_end(window).map_or(NEVER, |last| day_end(day_of(last)).saturating_add(lateness))
    }))
}

fn row_period(l: &Lateness, key: &RowKey) -> Option<(Micros, Micros)> {
    let day = AttributionDailyKey::of(key)?.day;
    Some((l.attribution?, day_end(day.0)))
}

fn build<'s>(s: &Streams<'_, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    attribution(
        s.current.messages.clone(),
        s.conversions.clone(),
        s.attribution_by_subject.clone(),
        s.cfg.attribution_window_secs,
        s.retained,
        s.restored.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apportion_sums_exactly() {
        assert_eq!(apportion(1_000_000, 3).collect::<Vec<_>>(), vec![333_334, 333_333, 333_333]);
        assert_eq!(apportion(10, 4).sum::<Fixed>(), 10);
        assert_eq!(apportion(0, 2).collect::<Vec<_>>(), vec![0, 0]);
    }
}
