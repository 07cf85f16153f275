//! Revenue per minute — SPEC §3.3.
//!
//! - **Realized**: per tenant × UTC minute of the conversion time × source
//!   (`payments`, `ro`, and `all`): revenue (`Σ amount_cents / 100`) and
//!   conversion count. Sums are integer cents, so exact.
//! - **Conversation efficiency**: per conversation, `duration_minutes =
//!   max(1, (last ts − first ts) in minutes)`, the `subject_id` of its latest
//!   record (greatest `ts`, ties greatest `event_id`), that lead's
//!   `revenue_potential` (§3.2) and `revenue_per_minute = potential /
//!   duration`.

use std::rc::Rc;

use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;

use crate::conversion::{Conversion, Source};
use crate::event::{Conversation, ConversationKind, Topic};
use crate::family::{no_period, Family, Record, ReleaseFn, Rules, Streams, NEVER};
use crate::lead_score::{LeadKey, Score};
use crate::retention::{self, minute_end, Lateness};
use crate::row::{
    ConversationRpmKey, ConversationRpmValues, Minute, RevenuePerMinuteKey, RevenuePerMinuteValues, RowKey, RowVals,
    Table, TableKey,
};
use crate::time::{minute_of, Micros, MICROS_PER_MINUTE, MICROS_PER_SECOND};
use crate::types::Text;
use crate::types::F64;
use crate::upsert::Epoch;

/// The `source` of the rows that count every conversion.
pub const ALL_SOURCES: &str = "all";

crate::additive! {
    /// Conversions and their revenue in cents.
    pub struct Realized {
        pub conversions: i64,
        pub cents: i128,
    }
}

/// The `revenue_per_minute` rows.
pub fn realized<'s>(conversions: VecCollection<'s, Epoch, Conversion>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    conversions
        .explode(|c| {
            let minute = minute_of(c.time);
            let r = Realized { conversions: 1, cents: c.revenue_cents as i128 };
            [((c.tenant.clone(), minute, Some(c.source)), r.clone()), ((c.tenant, minute, None), r)]
        })
        .count_total()
        .map(|((tenant_id, minute, source), r): ((Text, u32, Option<Source>), Realized)| {
            let source = source.map_or(ALL_SOURCES, Source::as_str).into();
            let values =
                RevenuePerMinuteValues { revenue: r.cents as f64 / 100.0, conversions: r.conversions.max(0) as u64 };
            RevenuePerMinuteKey { tenant_id, minute: Minute(minute), source }.row(values)
        })
}

/// A conversation's extent: first and last `ts`, the subject of its
/// latest record, and whether some current record ended it.
pub type Extent = (Micros, Micros, Text, bool);

/// The extent of every current conversation, keyed by (tenant, conversation_id).
pub fn extents<'s>(
    conversations: VecCollection<'s, Epoch, (Text, Conversation)>,
) -> VecCollection<'s, Epoch, ((Text, Text), Extent)> {
    conversations
        .map(|(_, c)| {
            let ended = c.kind == ConversationKind::Ended;
            ((c.tenant_id.0, c.conversation_id.0), (c.ts.0, c.event_id.0, c.subject_id.0, ended))
        })
        .reduce(|_conv, records, out| {
            // Values arrive sorted by (ts, event_id, …): first is earliest, last is latest.
            let (first, _, _, _) = records[0].0;
            let (last, _, subject, _) = records[records.len() - 1].0;
            let ended = records.iter().any(|(r, _)| r.3);
            out.push(((*first, *last, subject.clone(), ended), 1));
        })
}

/// `duration_minutes` of a conversation spanning `first..=last`.
pub fn duration_minutes(first: Micros, last: Micros) -> f64 {
    ((last - first) as f64 / MICROS_PER_MINUTE as f64).max(1.0)
}

/// The `conversation_rpm` rows.
pub fn conversation_rpm<'s>(
    extents: VecCollection<'s, Epoch, ((Text, Text), Extent)>,
    scores: VecCollection<'s, Epoch, (LeadKey, Score)>,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    let potential = scores.map(|(lead, sc)| (lead, sc.revenue_potential));
    extents
        .map(|((tenant, conv), (first, last, subject, ended))| {
            ((tenant, subject), (conv, F64(duration_minutes(first, last)), ended))
        })
        .join_map(potential, |(tenant, subject), (conv, minutes, ended), potential: &F64| {
            let values = ConversationRpmValues {
                subject_id: subject.clone(),
                duration_minutes: minutes.0,
                revenue_potential: potential.0,
                revenue_per_minute: potential.0 / minutes.0,
                active: u64::from(!*ended),
            };
            ConversationRpmKey { tenant_id: tenant.clone(), conversation_id: conv.clone() }.row(values)
        })
}

/// Conversation efficiency (SPEC §3.3), over the held conversations and
/// the lead scores.
pub const CONVERSATION_RPM: Family = Family {
    name: "conversation_rpm",
    inputs: &[Topic::Conversations],
    tables: &[Table::ConversationRpm],
    state: &[],
    own_copy: true,
    release: crate::lead_score::subject_release,
    row_period: no_period,
    build: build_conversation_rpm,
};

fn build_conversation_rpm<'s>(s: &Streams<'_, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    conversation_rpm(extents(s.held.conversations.clone()), s.scores.clone())
}

/// Realized revenue per minute (SPEC §3.3): a conversion is done with once
/// its minute is closed.
pub const REALIZED: Family = Family {
    name: "revenue_per_minute",
    inputs: &[Topic::Payments, Topic::RoUpdates],
    tables: &[Table::RevenuePerMinute],
    state: &[],
    own_copy: true,
    release: realized_release,
    row_period: realized_row_period,
    build: build_realized,
};

fn realized_release(rules: &Rules) -> Option<ReleaseFn> {
    let lateness = rules.lateness.revenue_per_minute?;
    Some(Rc::new(move |r: Record<'_>| r.conversion_time().map_or(NEVER, |t| minute_end(t).saturating_add(lateness))))
}

fn realized_row_period(l: &Lateness, key: &RowKey) -> Option<(Micros, Micros)> {
    let minute = RevenuePerMinuteKey::of(key)?.minute;
    Some((l.revenue_per_minute?, minute_end(i64::from(minute.0) * MICROS_PER_SECOND)))
}

fn build_realized<'s>(s: &Streams<'_, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    realized(retention::retain(
        s.conversions.clone(),
        s.retained,
        |l| l.revenue_per_minute,
        "Retain: revenue per minute",
        |c| minute_end(c.time),
    ))
}
