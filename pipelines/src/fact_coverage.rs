//! Fact coverage — SPEC §3.9.
//!
//! For each tenant with at least one lead (a subject with a current
//! `conversations` record, §3.2) and each non-counter fact of §2.2:
//!
//! ```text
//! leads     = the tenant's leads
//! with_fact = its leads for which at least one current record carries the fact
//! coverage  = with_fact / leads
//! ```
//!
//! A fact is carried when the record's `facts` object has it (any value:
//! `homeowner: false` is a known fact). Every tenant with leads has a row
//! for each of the eight facts, `with_fact` 0 included.
//!
//! One `reduce` per lead (the facts its records carry, as a bit set), then
//! a sum per tenant (`explode` + `count_total`, O(1) per changed lead).
//! With subject retention a closed lead stays counted, as its
//! `lead_scores` row stays: what closed leads contributed is taken out of
//! the retractions their close causes ([`freeze_closed`]) and kept as a
//! running total per tenant in `state_leads_closed`, which a restart
//! takes back. A subject that returns after it closed is a new lead (docs
//! /retention.md), so under retention it counts once per life.

use differential_dataflow::difference::Multiply as _;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;
use timely::dataflow::operators::vec::Map as _;

use crate::event::{Conversation, Facts, Topic};
use crate::family::{no_period, Family, Streams};
use crate::lead_score::subject_release;
use crate::retention::{lifetime_sum_state, state_micros as micros, state_us, SumChange};
use crate::row::{
    FactCoverageKey, FactCoverageValues, LeadsClosedKey, LeadsClosedValues, RowKey, RowVals, Table, TableKey,
};
use crate::subject::{freeze_closed, Closed};
use crate::time::Micros;
use crate::types::Text;
use crate::upsert::Epoch;

/// The facts of §3.9, in the order of their bits.
pub const FACTS: [&str; 8] = [
    "homeowner",
    "monthly_bill",
    "property_type",
    "region",
    "timeline_months",
    "credit_signal",
    "decision_maker",
    "sentiment",
];

/// The facts a record carries, bit `i` for [`FACTS`]`[i]`.
pub fn carried(f: &Facts) -> u8 {
    let has = [
        f.homeowner.is_some(),
        f.monthly_bill.is_some(),
        f.property_type.is_some(),
        f.region.is_some(),
        f.timeline_months.is_some(),
        f.credit_signal.is_some(),
        f.decision_maker.is_some(),
        f.sentiment.is_some(),
    ];
    has.iter().enumerate().fold(0, |bits, (i, h)| bits | (u8::from(*h) << i))
}

crate::additive! {
    /// A tenant's leads and, per fact, those carrying it.
    pub struct Coverage {
        pub leads: i64,
        pub homeowner: i64,
        pub monthly_bill: i64,
        pub property_type: i64,
        pub region: i64,
        pub timeline_months: i64,
        pub credit_signal: i64,
        pub decision_maker: i64,
        pub sentiment: i64,
    }
}

impl Coverage {
    /// One lead carrying the facts `bits`.
    pub fn of_lead(bits: u8) -> Coverage {
        let bit = |i: u8| i64::from((bits >> i) & 1);
        Coverage {
            leads: 1,
            homeowner: bit(0),
            monthly_bill: bit(1),
            property_type: bit(2),
            region: bit(3),
            timeline_months: bit(4),
            credit_signal: bit(5),
            decision_maker: bit(6),
            sentiment: bit(7),
        }
    }

    /// The leads carrying each fact, in [`FACTS`] order.
    pub fn with_fact(&self) -> [i64; 8] {
        [
            self.homeowner,
            self.monthly_bill,
            self.property_type,
            self.region,
            self.timeline_months,
            self.credit_signal,
            self.decision_maker,
            self.sentiment,
        ]
    }
}

/// A `state_leads_closed` row a start took back: a tenant's closed leads
/// as of the watermark in its key.
fn restored(row: (RowKey, RowVals)) -> Option<SumChange<Text, Coverage>> {
    let (key, v) = LeadsClosedKey::parse(&row)?;
    let n = |x: u64| x as i64;
    let total = Coverage {
        leads: n(v.leads),
        homeowner: n(v.homeowner),
        monthly_bill: n(v.monthly_bill),
        property_type: n(v.property_type),
        region: n(v.region),
        timeline_months: n(v.timeline_months),
        credit_signal: n(v.credit_signal),
        decision_maker: n(v.decision_maker),
        sentiment: n(v.sentiment),
    };
    Some(SumChange::Restored(key.tenant_id, micros(key.closed_us), total))
}

/// A `state_leads_closed` row: what a tenant's closed leads contributed
/// in total as of watermark `closed`.
fn closed_row(tenant: &Text, closed: Micros, c: &Coverage) -> (RowKey, RowVals) {
    let n = |x: i64| x.max(0) as u64;
    LeadsClosedKey { tenant_id: tenant.clone(), closed_us: state_us(closed) }.row(LeadsClosedValues {
        leads: n(c.leads),
        homeowner: n(c.homeowner),
        monthly_bill: n(c.monthly_bill),
        property_type: n(c.property_type),
        region: n(c.region),
        timeline_months: n(c.timeline_months),
        credit_signal: n(c.credit_signal),
        decision_maker: n(c.decision_maker),
        sentiment: n(c.sentiment),
    })
}

/// The `fact_coverage` rows, and with subject retention the
/// `state_leads_closed` rows.
pub fn fact_coverage<'s>(
    conversations: VecCollection<'s, Epoch, (Text, Conversation)>,
    closed: Option<&Closed<'s>>,
    restored_rows: VecCollection<'s, Epoch, (RowKey, RowVals)>,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    let per_lead = conversations
        .map(|(_, c)| ((c.tenant_id.0, c.subject_id.0), c.facts.as_ref().map_or(0, carried)))
        .reduce(|_lead, records, out| {
            out.push((records.iter().fold(0u8, |bits, (b, _)| bits | **b), 1));
        });
    let (per_lead, state) = match closed {
        Some(closed) => {
            let (kept, frozen) =
                freeze_closed(per_lead, closed, "Freeze closed leads' coverage", |(lead, _)| Some(lead.clone()));
            let closes = frozen.inner.map(|((((tenant, _), bits), w), _, r)| {
                SumChange::Closed(tenant, w, Coverage::of_lead(bits).multiply(&r))
            });
            let restored = restored_rows.flat_map(restored);
            let (rows, base) = lifetime_sum_state(restored, closes, "Log closed leads", closed_row);
            (kept, Some((rows, base)))
        }
        None => (per_lead, None),
    };
    let mut contributions = per_lead.explode(|((tenant, _), bits)| Some((tenant, Coverage::of_lead(bits))));
    if let Some((_, base)) = &state {
        contributions = contributions.concat(base.clone());
    }
    let rows = contributions.count_total().flat_map(|(tenant, c)| {
        let leads = c.leads.max(0) as u64;
        FACTS.into_iter().zip(c.with_fact()).map(move |(fact, with)| {
            let with_fact = with.max(0) as u64;
            let coverage = if leads == 0 { 0.0 } else { with_fact as f64 / leads as f64 };
            FactCoverageKey { tenant_id: tenant.clone(), fact: fact.into() }.row(FactCoverageValues {
                leads,
                with_fact,
                coverage,
            })
        })
    });
    match state {
        Some((state_rows, _)) => rows.concat(state_rows),
        None => rows,
    }
}

/// Fact coverage (SPEC §3.9), over the conversations held per subject.
pub const FAMILY: Family = Family {
    name: "fact_coverage",
    inputs: &[Topic::Conversations],
    tables: &[Table::FactCoverage],
    state: &[Table::StateLeadsClosed],
    own_copy: true,
    release: subject_release,
    row_period: no_period,
    build,
};

fn build<'s>(s: &Streams<'_, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    fact_coverage(s.held.conversations.clone(), s.held.closed.as_ref(), s.restored.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Count;

    #[test]
    fn carried_facts_are_bits_in_order() {
        let f = Facts { homeowner: Some(false), timeline_months: Some(Count(0)), ..Facts::default() };
        assert_eq!(carried(&f), 0b1_0001);
        let c = Coverage::of_lead(carried(&f));
        assert_eq!(c.with_fact(), [1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(c.leads, 1);
    }
}
