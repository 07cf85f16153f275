//! Metric families as declarations.
//!
//! A [`Family`] says what it reads, what it writes and when it is done with
//! a record; [`crate::dataflow`] derives everything that spans families
//! from the list [`FAMILIES`]:
//! - **release of upsert state**: a topic's version is released once every
//!   family that reads the topic is done with it (the greatest of their
//!   [`Family::release`] times), and never if one of them never is (its
//!   lateness is not configured);
//! - **too-late rejection**: a version that arrives already released is
//!   dead-lettered only when no family reading the topic keeps a copy of
//!   its own ([`Family::own_copy`]);
//! - **closed rows**: a row's period, for reconciliation and the freeze
//!   before the sink, comes from the family that writes its table
//!   ([`Family::row_period`]);
//! - **state taken back at start-up**: the union of [`Family::state`].
//!
//! Adding a family is one module (its operators, ending in
//! `(RowKey, RowVals)` rows, and its `FAMILY` constant) plus one line in
//! [`FAMILIES`]; docs/development.md "Adding a metric family" walks through
//! it. A unit test checks that every table has exactly one family.
//!
//! Families build from [`Streams`], the dataflow's shared collections: the
//! current versions per topic and what several families share
//! (conversions, the subject holds of the lifetime families, lead scores,
//! the conversions arranged by subject).

use std::rc::Rc;

use differential_dataflow::VecCollection;

use crate::attribution::BySubject;
use crate::config::MetricsConfig;
use crate::conversion::Conversion;
use crate::dataflow::Current;
use crate::event::{Conversation, Deal, Impression, Message, Payment, RoUpdate, Topic};
use crate::lead_score::{LeadKey, Score};
use crate::retention::{Lateness, Retained};
use crate::row::{RowKey, RowVals, Table};
use crate::subject::Subjects;
use crate::time::{Micros, MICROS_PER_SECOND};
use crate::upsert::Epoch;
use crate::{
    attribution, deals, experiment, fact_coverage, funnel, lead_score, next_buy, rar, recovery, revenue_per_minute,
};

/// A current version of one of the input topics, as release rules see it.
#[derive(Clone, Copy, Debug)]
pub enum Record<'a> {
    Impression(&'a Impression),
    Conversation(&'a Conversation),
    Message(&'a Message),
    Payment(&'a Payment),
    RoUpdate(&'a RoUpdate),
    Deal(&'a Deal),
}

impl Record<'_> {
    /// A message's time (its `sent_at`, or `ts` if absent, and never
    /// before `ts`: a later version may only move it forward).
    pub fn message_time(m: &Message) -> Micros {
        m.sent_at.unwrap_or(m.ts).0.max(m.ts.0)
    }

    /// The time a payment or RO version would convert at (its `ts`; an
    /// RO's `closed_at` when later), whatever its status; `None` for the
    /// other topics.
    pub fn conversion_time(self) -> Option<Micros> {
        match self {
            Record::Payment(p) => Some(p.ts.0),
            Record::RoUpdate(r) => Some(r.closed_at.map_or(r.ts.0, |c| c.0.max(r.ts.0))),
            _ => None,
        }
    }
}

impl Record<'_> {
    /// The last instant a record matters to a windowed match of messages
    /// to later conversions: a message's time plus `window`, a payment's
    /// or RO's conversion time; `None` for the other topics.
    pub fn window_end(self, window: Micros) -> Option<Micros> {
        match self {
            Record::Message(m) => Some(Record::message_time(m).saturating_add(window)),
            other => other.conversion_time(),
        }
    }
}

/// A release rule's answer for a record of a topic the family does not
/// read: never (safe: the record is only kept longer).
pub const NEVER: Micros = Micros::MAX;

/// The event types of the input topics, viewed as a [`Record`].
pub trait AsRecord {
    fn record(&self) -> Record<'_>;
}

macro_rules! as_record {
    ($($t:ident),*) => {$(
        impl AsRecord for $t {
            fn record(&self) -> Record<'_> {
                Record::$t(self)
            }
        }
    )*};
}
as_record!(Impression, Conversation, Message, Payment, RoUpdate, Deal);

/// The instant (a watermark) from which a family no longer needs a record.
pub type ReleaseFn = Rc<dyn Fn(Record<'_>) -> Micros>;

/// What release rules are made of: the lateness of each family and the
/// windows that keep records alive.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    pub lateness: Lateness,
    pub attribution_window: Micros,
    pub experiment_window: Micros,
    pub recovery_window: Micros,
}

impl Rules {
    pub fn of(cfg: &MetricsConfig) -> Rules {
        Rules {
            lateness: Lateness::of(cfg),
            attribution_window: cfg.attribution_window_secs as Micros * MICROS_PER_SECOND,
            experiment_window: cfg.experiment_window_secs as Micros * MICROS_PER_SECOND,
            recovery_window: cfg.recovery_window(),
        }
    }
}

/// The dataflow's shared collections, from which families build.
pub struct Streams<'a, 's> {
    pub current: Current<'s>,
    /// Succeeded payments and closed ROs (SPEC §3 "conversion").
    pub conversions: VecCollection<'s, Epoch, Conversion>,
    /// The lifetime families' inputs, held per subject (retention).
    pub held: Subjects<'s>,
    /// Lead scores of the held conversations.
    pub scores: VecCollection<'s, Epoch, (LeadKey, Score)>,
    /// Conversions by subject for attribution; `None` with retention,
    /// where attribution arranges the conversions it retains itself.
    pub attribution_by_subject: Option<BySubject<'s>>,
    /// Held conversions by subject for experiments (the same arrangement
    /// as attribution's without retention).
    pub experiment_by_subject: BySubject<'s>,
    pub cfg: &'a MetricsConfig,
    pub retained: Option<&'a Retained<'s>>,
    /// Retention state rows a previous run left (see
    /// [`crate::dataflow::Inputs::restore`]).
    pub restored: VecCollection<'s, Epoch, (RowKey, RowVals)>,
}

/// A metric family.
pub struct Family {
    pub name: &'static str,
    /// The topics whose current versions it reads.
    pub inputs: &'static [Topic],
    /// The metric tables it writes (SPEC §4).
    pub tables: &'static [Table],
    /// The retention state tables it writes and takes back at start-up.
    pub state: &'static [Table],
    /// Whether it keeps its own copy of the records it needs (retained by
    /// its own rule, or held per subject) instead of reading the upsert
    /// state alone: then a record that arrives after the upsert state
    /// released its topic still counts here, and is not rejected.
    pub own_copy: bool,
    /// When it is done with a record of one of its inputs; `None` when it
    /// never is (its lateness is not configured).
    pub release: fn(&Rules) -> Option<ReleaseFn>,
    /// The lateness that governs a row of one of its tables and the end of
    /// the row's period; `None` for rows that never close by period.
    pub row_period: fn(&Lateness, &RowKey) -> Option<(Micros, Micros)>,
    /// Its operators, ending in its rows.
    pub build: for<'a, 's> fn(&Streams<'a, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)>,
}

/// Every metric family, in the order their rows are concatenated.
pub const FAMILIES: &[&Family] = &[
    &rar::FAMILY,
    &lead_score::FAMILY,
    &revenue_per_minute::CONVERSATION_RPM,
    &revenue_per_minute::REALIZED,
    &attribution::FAMILY,
    &experiment::FAMILY,
    &funnel::FAMILY,
    &recovery::FAMILY,
    &next_buy::FAMILY,
    &fact_coverage::FAMILY,
    &deals::FAMILY,
];

/// A family's `row_period` when none of its rows closes by period.
pub fn no_period(_: &Lateness, _: &RowKey) -> Option<(Micros, Micros)> {
    None
}

/// The family that writes `table`.
pub fn writer_of(table: Table) -> Option<&'static Family> {
    FAMILIES.iter().copied().find(|f| f.tables.contains(&table) || f.state.contains(&table))
}

/// When a topic's upsert state may release a version, derived from the
/// families that read the topic.
pub struct TopicRelease {
    pub release_at: ReleaseFn,
    /// No reader keeps its own copy: the upsert state is the only holder.
    pub sole_holder: bool,
}

/// The release of `topic`'s versions: the greatest release time of the
/// families reading it, once all of them release; `None` if one never
/// does, or no family reads the topic.
pub fn topic_release(topic: Topic, rules: &Rules) -> Option<TopicRelease> {
    let readers: Vec<&Family> = FAMILIES.iter().copied().filter(|f| f.inputs.contains(&topic)).collect();
    if readers.is_empty() {
        return None;
    }
    let rules: Vec<ReleaseFn> = readers.iter().map(|f| (f.release)(rules)).collect::<Option<_>>()?;
    let sole_holder = readers.iter().all(|f| !f.own_copy);
    let release_at: ReleaseFn = Rc::new(move |r: Record<'_>| rules.iter().map(|f| f(r)).fold(Micros::MIN, Micros::max));
    Some(TopicRelease { release_at, sole_holder })
}

/// The retention state tables a start takes back: the subject holds'
/// lives ([`crate::subject`]) and every family's own.
pub fn state_tables() -> impl Iterator<Item = Table> {
    std::iter::once(Table::StateOpenSubjects).chain(FAMILIES.iter().flat_map(|f| f.state.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetentionConfig;

    #[test]
    fn every_table_has_exactly_one_family() {
        for table in Table::all() {
            let writers = FAMILIES.iter().filter(|f| f.tables.contains(&table) || f.state.contains(&table)).count();
            let held_by_subjects = table == Table::StateOpenSubjects;
            assert_eq!(writers, usize::from(!held_by_subjects), "{table:?}");
        }
    }

    #[test]
    fn the_state_tables_are_those_families_take_back() {
        let mut declared: Vec<Table> = state_tables().collect();
        declared.sort();
        let mut state = Table::STATE.to_vec();
        state.sort();
        assert_eq!(declared, state);
    }

    #[test]
    fn a_topic_is_released_only_once_every_reader_releases() {
        let all = RetentionConfig {
            rar_lateness_secs: Some(1),
            revenue_per_minute_lateness_secs: Some(1),
            attribution_lateness_secs: Some(1),
            subject_idle_secs: Some(1),
        };
        let cfg = MetricsConfig { retention: all.clone(), ..MetricsConfig::default() };
        for topic in Topic::ALL {
            // Deals are never released (crate::deals): one version per deal.
            let released = topic_release(topic, &Rules::of(&cfg)).is_some();
            assert_eq!(released, topic != Topic::Deals, "{topic:?}");
        }
        // Without revenue-per-minute lateness, payments and ROs never release.
        let cfg = MetricsConfig {
            retention: RetentionConfig { revenue_per_minute_lateness_secs: None, ..all },
            ..MetricsConfig::default()
        };
        let rules = Rules::of(&cfg);
        assert!(topic_release(Topic::Payments, &rules).is_none());
        assert!(topic_release(Topic::RoUpdates, &rules).is_none());
        assert!(topic_release(Topic::Messages, &rules).is_some());
        assert!(topic_release(Topic::Impressions, &rules).is_some_and(|r| r.sole_holder));
        assert!(topic_release(Topic::Messages, &rules).is_some_and(|r| !r.sole_holder));
    }
}
