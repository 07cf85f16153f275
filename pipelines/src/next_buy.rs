//! Next-buy watchlist — SPEC §3.8.
//!
//! A subject (tenant × `subject_id`) is on the watchlist while it has a
//! current `conversations` record, a closed RO, or an *engagement* (a
//! current `messages` record that is inbound, or outbound with status
//! `clicked` or `replied`). Per subject:
//!
//! ```text
//! timeline_months, credit_signal = the latest current conversations record carrying each
//!                                  (ts, then event_id; as the facts of §3.2), else null
//! service_visits  = its closed ROs          service_revenue = Σ their line amounts / 100
//! last_service_at = max closed_at (null without closed ROs)
//! engagements     = its engagement records
//! timing     = timeline ≤3 → 40, ≤6 → 25, ≤12 → 10, else/unknown 0
//! service    = visits ≥3 → 20, ≥2 → 12, ≥1 → 5;  + revenue ≥1,500 → 10, ≥500 → 5
//! engagement = engagements ≥3 → 15, ≥1 → 8
//! credit     = credit_signal = true → 15
//! score      = round_half_away(timing + service + engagement + credit, 2), clamped to 0..100
//! buy_window = timeline ≤3 0-3m, ≤6 3-6m, ≤12 6-12m, larger later, unknown unknown
//! reasons    = the parts above 0, in the order timeline, service_visits,
//!              service_revenue, engagement, credit
//! ```
//!
//! Points and thresholds are [`NextBuyConfig`] (these are its defaults);
//! the score is summed exactly ([`Ratio`]), as the lead score is.
//!
//! One `reduce` per subject over its records of the three kinds: the work
//! per update is proportional to the subject's own records. The inputs are
//! those held per subject ([`crate::subject`]): with subject retention a
//! subject's row stays at its last value once the subject closes, as a
//! lead's does.

use std::rc::Rc;

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use crate::config::NextBuyConfig;
use crate::conversion::{Conversion, Source};
use crate::event::{Conversation, Direction, Message, MessageStatus, Topic};
use crate::exact::Ratio;
use crate::family::{no_period, Family, Record, ReleaseFn, Rules, Streams, NEVER};
use crate::lead_score::first_step;
use crate::row::{NextBuyKey, NextBuyValues, RowKey, RowVals, Second, Table, TableKey};
use crate::time::Micros;
use crate::types::{Text, F64};
use crate::upsert::Epoch;

/// Whether a message is an engagement (SPEC §3.8): inbound, or outbound
/// and clicked or replied.
pub fn is_engagement(m: &Message) -> bool {
    m.direction == Direction::Inbound || matches!(m.status, MessageStatus::Clicked | MessageStatus::Replied)
}

/// One record of a subject, as the per-subject reduce sees it. Facts sort
/// first, in (ts, event_id) order: the last carrying a fact wins.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum BuyIn {
    Facts { ts: Micros, event_id: Text, timeline_months: Option<u64>, credit_signal: Option<bool> },
    Service { ro_id: Text, closed_at: Micros, cents: u128 },
    Engagement { message_id: Text },
}

/// What a subject's records add up to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inputs {
    pub timeline_months: Option<u64>,
    pub credit_signal: Option<bool>,
    pub service_visits: u64,
    pub service_cents: u128,
    pub last_service_at: Option<Micros>,
    pub engagements: u64,
}

/// A subject's watchlist entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub score: F64,
    pub buy_window: Text,
    pub timeline_months: Option<u64>,
    pub service_visits: u64,
    pub service_cents: u128,
    pub last_service_at: Option<Micros>,
    pub engagements: u64,
    pub reasons: Vec<Text>,
}

/// The buy window of a timeline, from the windows' upper ends (ascending).
pub fn buy_window(timeline_months: Option<u64>, bounds: &[u64]) -> Text {
    let Some(m) = timeline_months else { return "unknown".into() };
    let mut lower = 0;
    for &upper in bounds {
        if m <= upper {
            return format!("{lower}-{upper}m").into();
        }
        lower = upper;
    }
    "later".into()
}

/// Scores a subject's inputs (SPEC §3.8).
pub fn entry(i: &Inputs, cfg: &NextBuyConfig) -> Entry {
    let timing = i.timeline_months.map_or(Ratio::ZERO, |m| first_step(&cfg.timeline, |at| m as f64 <= at));
    let visits = first_step(&cfg.service_visits, |at| i.service_visits as f64 >= at);
    let revenue = Ratio::new(i.service_cents.min(i128::MAX as u128) as i128, 100).unwrap_or(Ratio::ZERO);
    let revenue_points = first_step(&cfg.service_revenue, |at| revenue >= Ratio::of_f64(at));
    let engagement = first_step(&cfg.engagements, |at| i.engagements as f64 >= at);
    let credit = if i.credit_signal == Some(true) { Ratio::of_f64(cfg.credit_signal) } else { Ratio::ZERO };
    let parts = [
        ("timeline", timing),
        ("service_visits", visits),
        ("service_revenue", revenue_points),
        ("engagement", engagement),
        ("credit", credit),
    ];
    let total = parts.iter().fold(Ratio::ZERO, |sum, (_, p)| sum + *p);
    Entry {
        score: F64(total.clamp(Ratio::ZERO, Ratio::int(100)).round2()),
        buy_window: buy_window(i.timeline_months, &cfg.buy_windows),
        timeline_months: i.timeline_months,
        service_visits: i.service_visits,
        service_cents: i.service_cents,
        last_service_at: i.last_service_at,
        engagements: i.engagements,
        reasons: parts.iter().filter(|(_, p)| *p > Ratio::ZERO).map(|(name, _)| Text::from(*name)).collect(),
    }
}

/// Adds up a subject's records, given in ascending order with their
/// multiplicities.
fn inputs(records: &[(&BuyIn, isize)]) -> Inputs {
    let mut i = Inputs::default();
    for (record, n) in records.iter().rev() {
        let n = (*n).max(0) as u64;
        match record {
            BuyIn::Facts { timeline_months, credit_signal, .. } => {
                i.timeline_months = i.timeline_months.or(*timeline_months);
                i.credit_signal = i.credit_signal.or(*credit_signal);
            }
            BuyIn::Service { closed_at, cents, .. } => {
                i.service_visits += n;
                i.service_cents += cents * u128::from(n);
                i.last_service_at = i.last_service_at.max(Some(*closed_at));
            }
            BuyIn::Engagement { .. } => i.engagements += n,
        }
    }
    i
}

/// The watchlist entry of every subject with a conversations record, a
/// closed RO or an engagement.
pub fn next_buy<'s>(
    conversations: VecCollection<'s, Epoch, (Text, Conversation)>,
    engagements: VecCollection<'s, Epoch, (Text, Message)>,
    conversions: VecCollection<'s, Epoch, Conversion>,
    cfg: &NextBuyConfig,
) -> VecCollection<'s, Epoch, ((Text, Text), Entry)> {
    let facts = conversations.map(|(_, c)| {
        let f = c.facts.unwrap_or_default();
        let record = BuyIn::Facts {
            ts: c.ts.0,
            event_id: c.event_id.0,
            timeline_months: f.timeline_months.map(|m| m.0),
            credit_signal: f.credit_signal,
        };
        ((c.tenant_id.0, c.subject_id.0), record)
    });
    let service = conversions.flat_map(|c| {
        (c.source == Source::Ro)
            .then(|| ((c.tenant, c.subject), BuyIn::Service { ro_id: c.id, closed_at: c.time, cents: c.revenue_cents }))
    });
    let engaged =
        engagements.map(|(_, m)| ((m.tenant_id.0, m.subject_id.0), BuyIn::Engagement { message_id: m.message_id.0 }));
    let cfg = cfg.clone();
    facts.concat(service).concat(engaged).reduce(move |_subject, records, out| {
        out.push((entry(&inputs(records), &cfg), 1));
    })
}

/// The `next_buy` rows.
pub fn rows<'s>(
    entries: VecCollection<'s, Epoch, ((Text, Text), Entry)>,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    entries.map(|((tenant_id, subject_id), e)| {
        NextBuyKey { tenant_id, subject_id }.row(NextBuyValues {
            score: e.score.0,
            buy_window: e.buy_window,
            timeline_months: e.timeline_months,
            service_visits: e.service_visits,
            service_revenue: e.service_cents as f64 / 100.0,
            last_service_at: e.last_service_at.map(Second::of_micros),
            engagements: e.engagements,
            reasons: e.reasons,
        })
    })
}

/// The next-buy watchlist (SPEC §3.8), over the records held per subject.
pub const FAMILY: Family = Family {
    name: "next_buy",
    inputs: &[Topic::Conversations, Topic::Messages, Topic::RoUpdates],
    tables: &[Table::NextBuy],
    state: &[],
    own_copy: true,
    release: release_rule,
    row_period: no_period,
    build,
};

/// A record is done with once its subject could have been idle since it
/// (the subject's own close is [`crate::subject`]'s business).
fn release_rule(rules: &Rules) -> Option<ReleaseFn> {
    let idle = rules.lateness.subject?;
    Some(Rc::new(move |r: Record<'_>| {
        let end = match r {
            Record::Conversation(c) => Some(c.ts.0),
            Record::Message(m) => Some(Record::message_time(m)),
            Record::RoUpdate(_) => r.conversion_time(),
            _ => None,
        };
        end.map_or(NEVER, |end| end.saturating_add(idle))
    }))
}

fn build<'s>(s: &Streams<'_, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    rows(next_buy(
        s.held.conversations.clone(),
        s.held.engagements.clone(),
        s.held.conversions.clone(),
        &s.cfg.next_buy,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NextBuyConfig {
        NextBuyConfig::default()
    }

    #[test]
    fn points_windows_and_reasons() {
        let i = Inputs {
            timeline_months: Some(3),
            credit_signal: Some(true),
            service_visits: 3,
            service_cents: 150_000,
            last_service_at: Some(0),
            engagements: 3,
        };
        let e = entry(&i, &cfg());
        assert_eq!(e.score, F64(100.0));
        assert_eq!(e.buy_window, Text::from("0-3m"));
        let names: Vec<&str> = e.reasons.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["timeline", "service_visits", "service_revenue", "engagement", "credit"]);
        // Just below every threshold.
        let i = Inputs { timeline_months: Some(13), service_visits: 0, service_cents: 49_999, engagements: 0, ..i };
        let e = entry(&Inputs { credit_signal: Some(false), ..i }, &cfg());
        assert_eq!((e.score, e.buy_window.as_str(), e.reasons.len()), (F64(0.0), "later", 0));
        let e = entry(
            &Inputs {
                timeline_months: Some(4),
                service_visits: 2,
                service_cents: 50_000,
                engagements: 1,
                ..Inputs::default()
            },
            &cfg(),
        );
        assert_eq!((e.score, e.buy_window.as_str()), (F64(25.0 + 12.0 + 5.0 + 8.0), "3-6m"));
        assert_eq!(entry(&Inputs::default(), &cfg()).buy_window.as_str(), "unknown");
        assert_eq!(buy_window(Some(12), &[3, 6, 12]).as_str(), "6-12m");
        assert_eq!(buy_window(Some(0), &[3, 6, 12]).as_str(), "0-3m");
    }

    /// The score is rounded on the exact sum: configured points whose float
    /// falls just below a half still round away from zero.
    #[test]
    fn exact_halves_round_away_from_zero() {
        // 1.005 as a float is 1.00499999…: rounded as a float it is 1.00.
        assert_eq!((1.005f64 * 100.0).round() / 100.0, 1.0);
        let cfg = NextBuyConfig {
            timeline: vec![crate::config::Step { at: 3.0, points: 0.25 }],
            engagements: vec![crate::config::Step { at: 1.0, points: 0.125 }],
            credit_signal: 1.005,
            ..cfg()
        };
        let credit = Inputs { credit_signal: Some(true), ..Inputs::default() };
        assert_eq!(entry(&credit, &cfg).score, F64(1.01));
        // 0.25 + 0.125 + 1.005 = 1.38 exactly; 0.125 + 0.25 = 0.375 → 0.38.
        let all = Inputs { timeline_months: Some(1), engagements: 1, ..credit };
        assert_eq!(entry(&all, &cfg).score, F64(1.38));
        let two = Inputs { timeline_months: Some(1), engagements: 1, ..Inputs::default() };
        assert_eq!(entry(&two, &cfg).score, F64(0.38));
    }
}
