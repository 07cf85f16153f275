//! Lead score — SPEC §3.2.
//!
//! A lead (tenant × subject) exists while it has a current `conversations`
//! record. Its facts are, per fact key, the value of the current record
//! with the greatest `ts` carrying it (ties: greatest `event_id`); counters
//! are summed over all current records; `engaged_minutes` is the sum over
//! its conversations of (last `ts` − first `ts`) in minutes (records grouped
//! by `conversation_id` among the lead's own records).
//!
//! ```text
//! base       = homeowner ? 10 + bill(≥300→20, ≥200→14, ≥100→7) + property(sf 10, condo 6, coop 4, else 2) : 0
//! behavioral = min(10, engaged_minutes) + min(10, 2·technical_questions + questions)
//!            + min(5, 2.5·objections_resolved) + 5·max(0, sentiment)
//! timing     = timeline(≤3→8, ≤6→5, ≤12→2) + 6·credit_signal + decision_maker(primary 6, influencer 3)
//! market     = market_scores[region] (default 5)
//! score      = round_half_away(base + behavioral + timing + market, 2)   (clamped to 0..100)
//! ```
//! Tier, multiplier and probability use the rounded score (weights are
//! [`LeadScoreConfig`]). Components are reported rounded the same way. The
//! sums are exact ([`Ratio`]: engaged time in microseconds, decimals as
//! written), so a figure that is exactly a half rounds away from zero
//! however floats would have represented it.
//!
//! One `reduce` per lead: the work per update is proportional to the lead's
//! own current records, not to history.

use std::rc::Rc;

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use crate::config::LeadScoreConfig;
use crate::event::{Conversation, DecisionMaker, Facts, PropertyType, Topic};
use crate::exact::Ratio;
use crate::family::{no_period, Family, Record, ReleaseFn, Rules, Streams, NEVER};
use crate::row::{LeadScoreKey, LeadScoreValues, RowKey, RowVals, Table, TableKey};
use crate::time::Micros;
use crate::types::Text;
use crate::types::F64;
use crate::upsert::Epoch;

/// One current conversations record, as the per-lead reduce sees it. The
/// derived order (ts, then event_id) is the "latest wins" order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeadRecord {
    pub ts: Micros,
    pub event_id: Text,
    pub conversation_id: Text,
    pub facts: Facts,
}

impl LeadRecord {
    pub fn of(c: &Conversation) -> LeadRecord {
        LeadRecord {
            ts: c.ts.0,
            event_id: c.event_id.0.clone(),
            conversation_id: c.conversation_id.0.clone(),
            facts: c.facts.clone().unwrap_or_default(),
        }
    }
}

/// The resolved facts of a lead.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LeadFacts {
    pub homeowner: Option<bool>,
    pub monthly_bill: Option<f64>,
    pub property_type: Option<PropertyType>,
    pub region: Option<Text>,
    pub timeline_months: Option<u64>,
    pub credit_signal: Option<bool>,
    pub decision_maker: Option<DecisionMaker>,
    pub sentiment: Option<f64>,
    pub questions: u64,
    pub technical_questions: u64,
    pub objections_resolved: u64,
    /// Σ over its conversations of (last `ts` − first `ts`), µs.
    pub engaged_micros: i128,
}

/// Resolves a lead's facts from its current records, given in ascending
/// (ts, event_id) order.
pub fn resolve(records: &[&LeadRecord]) -> LeadFacts {
    let mut f = LeadFacts::default();
    for r in records.iter().rev() {
        let x = &r.facts;
        f.homeowner = f.homeowner.or(x.homeowner);
        f.monthly_bill = f.monthly_bill.or(x.monthly_bill.map(|v| v.get()));
        f.property_type = f.property_type.or(x.property_type);
        if f.region.is_none() {
            f.region = x.region.as_ref().map(|r| r.0.clone());
        }
        f.timeline_months = f.timeline_months.or(x.timeline_months.map(|c| c.0));
        f.credit_signal = f.credit_signal.or(x.credit_signal);
        f.decision_maker = f.decision_maker.or(x.decision_maker);
        f.sentiment = f.sentiment.or(x.sentiment.map(|v| v.get()));
        f.questions += x.questions.map_or(0, |c| c.0);
        f.technical_questions += x.technical_questions.map_or(0, |c| c.0);
        f.objections_resolved += x.objections_resolved.map_or(0, |c| c.0);
    }
    // Per conversation: (first ts, last ts); summed as integers, divided once.
    let mut spans: std::collections::BTreeMap<&str, (Micros, Micros)> = std::collections::BTreeMap::new();
    for r in records {
        let e = spans.entry(r.conversation_id.as_str()).or_insert((r.ts, r.ts));
        e.0 = e.0.min(r.ts);
        e.1 = e.1.max(r.ts);
    }
    f.engaged_micros = spans.values().map(|(a, b)| i128::from(b - a)).sum();
    f
}

pub use crate::row::Tier;

/// A lead's score and what follows from it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Score {
    pub score: F64,
    pub base: F64,
    pub behavioral: F64,
    pub timing: F64,
    pub market: F64,
    pub tier: Tier,
    pub revenue_potential: F64,
    pub conversion_probability: F64,
}

pub(crate) fn first_step(steps: &[crate::config::Step], hit: impl Fn(f64) -> bool) -> Ratio {
    steps.iter().find(|s| hit(s.at)).map_or(Ratio::ZERO, |s| Ratio::of_f64(s.points))
}

fn points(x: f64) -> Ratio {
    Ratio::of_f64(x)
}

fn count(n: u64) -> Ratio {
    Ratio::int(i128::from(n))
}

/// Scores resolved facts (SPEC §3.2).
pub fn score(f: &LeadFacts, cfg: &LeadScoreConfig) -> Score {
    let base = if f.homeowner == Some(true) {
        let bill = f.monthly_bill.map_or(Ratio::ZERO, |b| first_step(&cfg.monthly_bill, |at| b >= at));
        let property = match f.property_type {
            Some(PropertyType::SingleFamily) => cfg.single_family,
            Some(PropertyType::Condo) => cfg.condo,
            Some(PropertyType::Coop) => cfg.coop,
            Some(PropertyType::Other) | None => cfg.other_property,
        };
        points(cfg.homeowner) + bill + points(property)
    } else {
        Ratio::ZERO
    };
    let engaged = Ratio::minutes_of_micros(f.engaged_micros).min(points(cfg.engaged_minutes_cap));
    let questions = (points(cfg.technical_weight) * count(f.technical_questions) + count(f.questions))
        .min(points(cfg.questions_cap));
    let objections = (points(cfg.objection_weight) * count(f.objections_resolved)).min(points(cfg.objections_cap));
    let sentiment = points(cfg.sentiment_weight) * points(f.sentiment.unwrap_or(0.0)).max(Ratio::ZERO);
    let behavioral = engaged + questions + objections + sentiment;
    let timeline = f.timeline_months.map_or(Ratio::ZERO, |m| first_step(&cfg.timeline, |at| m as f64 <= at));
    let credit = if f.credit_signal == Some(true) { points(cfg.credit_signal) } else { Ratio::ZERO };
    let dm = match f.decision_maker {
        Some(DecisionMaker::Primary) => cfg.primary,
        Some(DecisionMaker::Influencer) => cfg.influencer,
        Some(DecisionMaker::Researcher) => cfg.researcher,
        None => 0.0,
    };
    let timing = timeline + credit + points(dm);
    let market = points(
        f.region.as_ref().and_then(|r| cfg.market_scores.get(r.as_str())).copied().unwrap_or(cfg.default_market),
    );
    let total = (base + behavioral + timing + market).clamp(Ratio::ZERO, Ratio::int(100));
    let score = total.round2();
    let (tier, price) = if score >= cfg.premium_at {
        (Tier::Premium, cfg.premium_price)
    } else if score >= cfg.standard_at {
        (Tier::Standard, cfg.standard_price)
    } else if score >= cfg.basic_at {
        (Tier::Basic, cfg.basic_price)
    } else {
        (Tier::Unqualified, cfg.unqualified_price)
    };
    let multiplier = cfg.multipliers.iter().find(|s| score >= s.at).map_or(1.0, |s| s.points);
    let probability = 1.0 / (1.0 + (-(score - cfg.probability_midpoint) / cfg.probability_scale).exp());
    Score {
        score: F64(score),
        base: F64(base.round2()),
        behavioral: F64(behavioral.round2()),
        timing: F64(timing.round2()),
        market: F64(market.round2()),
        tier,
        revenue_potential: F64(price * multiplier),
        conversion_probability: F64(probability),
    }
}

/// A lead: (tenant, subject).
pub type LeadKey = (Text, Text);

/// The score of every current lead.
pub fn lead_scores<'s>(
    conversations: VecCollection<'s, Epoch, (Text, Conversation)>,
    cfg: &LeadScoreConfig,
) -> VecCollection<'s, Epoch, (LeadKey, Score)> {
    let cfg = cfg.clone();
    conversations.map(|(_, c)| ((c.tenant_id.0.clone(), c.subject_id.0.clone()), LeadRecord::of(&c))).reduce(
        move |_lead, records, out| {
            let records: Vec<&LeadRecord> = records.iter().map(|(r, _)| *r).collect();
            out.push((score(&resolve(&records), &cfg), 1));
        },
    )
}

/// The `lead_scores` rows.
pub fn rows<'s>(scores: VecCollection<'s, Epoch, (LeadKey, Score)>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    scores.map(|((tenant_id, subject_id), sc)| {
        LeadScoreKey { tenant_id, subject_id }.row(LeadScoreValues {
            score: sc.score.0,
            base: sc.base.0,
            behavioral: sc.behavioral.0,
            timing: sc.timing.0,
            market: sc.market.0,
            tier: sc.tier,
            revenue_potential: sc.revenue_potential.0,
            conversion_probability: sc.conversion_probability.0,
        })
    })
}

/// Lead scores (SPEC §3.2), over the conversations held per subject.
pub const FAMILY: Family = Family {
    name: "lead_scores",
    inputs: &[Topic::Conversations],
    tables: &[Table::LeadScores],
    state: &[],
    own_copy: true,
    release: subject_release,
    row_period: no_period,
    build,
};

/// The lifetime families over conversations: a conversation record is done
/// with once its subject could have been idle for `subject_idle_secs`
/// since it (the subject's own close is [`crate::subject`]'s business).
pub fn subject_release(rules: &Rules) -> Option<ReleaseFn> {
    let idle = rules.lateness.subject?;
    Some(Rc::new(move |r: Record<'_>| match r {
        Record::Conversation(c) => c.ts.0.saturating_add(idle),
        _ => NEVER,
    }))
}

fn build<'s>(s: &Streams<'_, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    rows(s.scores.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(engaged_micros: i128) -> LeadFacts {
        LeadFacts { engaged_micros, ..LeadFacts::default() }
    }

    /// SPEC §3.2's rounding acts on the exact value: halves that floats
    /// represent just below still round up.
    #[test]
    fn exact_halves_round_away_from_zero() {
        let cfg = LeadScoreConfig::default();
        // One conversation of 371.1 s (6.185 minutes) with 3 questions.
        let lead = LeadFacts { questions: 3, ..facts(371_100_000) };
        let s = score(&lead, &cfg);
        assert_eq!(s.behavioral, F64(9.19));
        assert_eq!(s.score, F64(14.19), "9.185 + market 5, rounded once");
        // 84.995 is premium: 40 base + 20 timing + 5 market + 10 questions
        // + 5 objections + 4.995 engaged minutes (299.7 s).
        let lead = LeadFacts {
            homeowner: Some(true),
            monthly_bill: Some(300.0),
            property_type: Some(PropertyType::SingleFamily),
            timeline_months: Some(3),
            credit_signal: Some(true),
            decision_maker: Some(DecisionMaker::Primary),
            questions: 10,
            objections_resolved: 2,
            ..facts(299_700_000)
        };
        let s = score(&lead, &cfg);
        assert_eq!((s.score, s.tier, s.revenue_potential), (F64(85.0), Tier::Premium, F64(300.0)));
        assert_eq!(s.behavioral, F64(20.0), "19.995");
        // A sentiment of 0.001 adds 0.005: a half again.
        let lead = LeadFacts { sentiment: Some(0.001), ..facts(0) };
        assert_eq!(score(&lead, &cfg).behavioral, F64(0.01));
    }
}
