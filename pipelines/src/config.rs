//! Configuration of the metric families (the `[metrics]` section of the
//! revpulse configuration file). Defaults are SPEC §3's.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Settings of every metric family.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Lead scoring weights, thresholds and prices (SPEC §3.2).
    pub lead_score: LeadScoreConfig,
    /// Attribution look-back window before a conversion, in seconds (SPEC §3.4).
    pub attribution_window_secs: u64,
    /// Conversion window after an experiment assignment, in seconds (SPEC §3.5).
    pub experiment_window_secs: u64,
    /// How long after a failed payment a succeeded one recovers it, in
    /// seconds (SPEC §3.7).
    pub recovery_window_secs: u64,
    /// Next-buy watchlist points and thresholds (SPEC §3.8).
    pub next_buy: NextBuyConfig,
    /// Deal close probability and health: stage bases, points and
    /// thresholds (SPEC §3.11).
    pub deals: DealsConfig,
    /// Lateness per metric family (SPEC §7 "Lateness and retention"); off
    /// unless set.
    pub retention: RetentionConfig,
}

/// How late an event may be, per metric family, before its period is
/// closed: a period (a month of RaR, a minute of revenue per minute, a day
/// of attribution) closes once the greatest event time seen passes its end
/// by the family's lateness. Events of closed periods are `too_late`, the
/// state they held is released, and their rows in ClickHouse are final.
/// Unset: the family never closes a period (exact for any lateness).
/// Leads, conversation efficiency and experiments have no period: they
/// close per subject, once it has been idle (docs/retention.md).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Revenue at Risk: seconds after the end of a month (of impression `ts`).
    pub rar_lateness_secs: Option<u64>,
    /// Realized revenue per minute: seconds after the end of a minute (of conversion time).
    pub revenue_per_minute_lateness_secs: Option<u64>,
    /// Attribution, offer acceptance, the campaign and offer funnel and
    /// payment recovery: seconds after the end of a conversion's (a
    /// message's) day — for payment recovery, after the end of the day
    /// plus the recovery window.
    pub attribution_lateness_secs: Option<u64>,
    /// Leads, conversation efficiency and experiment subjects: seconds a
    /// subject (tenant × `subject_id`) may be idle — no conversations record,
    /// experiment message window or conversion later than the greatest event
    /// time seen minus this — before it closes: its rows are final and its
    /// records are released.
    pub subject_idle_secs: Option<u64>,
}

impl MetricsConfig {
    /// `recovery_window_secs` in microseconds.
    pub fn recovery_window(&self) -> i64 {
        (self.recovery_window_secs.min(i64::MAX as u64 / 1_000_000) as i64) * 1_000_000
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            lead_score: LeadScoreConfig::default(),
            attribution_window_secs: 7 * 86_400,
            experiment_window_secs: 7 * 86_400,
            recovery_window_secs: 7 * 86_400,
            next_buy: NextBuyConfig::default(),
            deals: DealsConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

/// A threshold and the points (or factor) it earns: the first entry whose
/// threshold is met counts, so list them from the highest threshold down.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub at: f64,
    pub points: f64,
}

const fn step(at: f64, points: f64) -> Step {
    Step { at, points }
}

/// Lead score weights (SPEC §3.2): score = base + behavioral + timing + market.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeadScoreConfig {
    /// Base points for `homeowner = true` (base is 0 otherwise).
    pub homeowner: f64,
    /// Monthly bill steps (bill ≥ `at` earns `points`), highest first.
    pub monthly_bill: Vec<Step>,
    /// Property type points; `other` also applies when unknown.
    pub single_family: f64,
    pub condo: f64,
    pub coop: f64,
    pub other_property: f64,
    /// Behavioral: at most this many points from engaged minutes (1 per minute).
    pub engaged_minutes_cap: f64,
    /// Behavioral: `technical_weight · technical_questions + questions`, capped.
    pub technical_weight: f64,
    pub questions_cap: f64,
    /// Behavioral: `objection_weight · objections_resolved`, capped.
    pub objection_weight: f64,
    pub objections_cap: f64,
    /// Behavioral: `sentiment_weight · max(0, sentiment)`.
    pub sentiment_weight: f64,
    /// Timing: timeline steps (timeline_months ≤ `at` earns `points`), lowest first.
    pub timeline: Vec<Step>,
    /// Timing: points for `credit_signal = true`.
    pub credit_signal: f64,
    /// Timing: decision maker points.
    pub primary: f64,
    pub influencer: f64,
    pub researcher: f64,
    /// Market points per region; regions not listed (or unknown) get `default_market`.
    pub market_scores: BTreeMap<String, f64>,
    pub default_market: f64,
    /// Tier thresholds on the rounded score.
    pub premium_at: f64,
    pub standard_at: f64,
    pub basic_at: f64,
    /// Tier prices.
    pub premium_price: f64,
    pub standard_price: f64,
    pub basic_price: f64,
    pub unqualified_price: f64,
    /// Revenue multiplier steps on the rounded score, highest first (else 1.0).
    pub multipliers: Vec<Step>,
    /// conversion_probability = 1 / (1 + e^(−(score − midpoint) / scale)).
    pub probability_midpoint: f64,
    pub probability_scale: f64,
}

impl Default for LeadScoreConfig {
    fn default() -> Self {
        LeadScoreConfig {
            homeowner: 10.0,
            monthly_bill: vec![step(300.0, 20.0), step(200.0, 14.0), step(100.0, 7.0)],
            single_family: 10.0,
            condo: 6.0,
            coop: 4.0,
            other_property: 2.0,
            engaged_minutes_cap: 10.0,
            technical_weight: 2.0,
            questions_cap: 10.0,
            objection_weight: 2.5,
            objections_cap: 5.0,
            sentiment_weight: 5.0,
            timeline: vec![step(3.0, 8.0), step(6.0, 5.0), step(12.0, 2.0)],
            credit_signal: 6.0,
            primary: 6.0,
            influencer: 3.0,
            researcher: 0.0,
            market_scores: BTreeMap::new(),
            default_market: 5.0,
            premium_at: 85.0,
            standard_at: 70.0,
            basic_at: 50.0,
            premium_price: 250.0,
            standard_price: 125.0,
            basic_price: 75.0,
            unqualified_price: 0.0,
            multipliers: vec![step(90.0, 1.3), step(80.0, 1.2)],
            probability_midpoint: 60.0,
            probability_scale: 10.0,
        }
    }
}

/// Next-buy watchlist points and thresholds (SPEC §3.8): score = timing +
/// service + engagement + credit, rounded half away from zero to 2
/// decimals on the exact sum and clamped to 0..100.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NextBuyConfig {
    /// Timing: timeline steps (timeline_months ≤ `at` earns `points`),
    /// lowest first; an unknown timeline earns 0.
    pub timeline: Vec<Step>,
    /// Service: closed-RO visit steps (visits ≥ `at`), highest first.
    pub service_visits: Vec<Step>,
    /// Service: steps on the closed ROs' revenue in currency units
    /// (revenue ≥ `at`), highest first.
    pub service_revenue: Vec<Step>,
    /// Engagement: engagement record steps (engagements ≥ `at`), highest first.
    pub engagements: Vec<Step>,
    /// Credit: points for `credit_signal = true`.
    pub credit_signal: f64,
    /// Upper ends of the buy windows in months, ascending: with `[3, 6,
    /// 12]` a timeline ≤ 3 is `0-3m`, ≤ 6 `3-6m`, ≤ 12 `6-12m`, larger
    /// `later`, unknown `unknown`.
    pub buy_windows: Vec<u64>,
}

impl Default for NextBuyConfig {
    fn default() -> Self {
        NextBuyConfig {
            timeline: vec![step(3.0, 40.0), step(6.0, 25.0), step(12.0, 10.0)],
            service_visits: vec![step(3.0, 20.0), step(2.0, 12.0), step(1.0, 5.0)],
            service_revenue: vec![step(1500.0, 10.0), step(500.0, 5.0)],
            engagements: vec![step(3.0, 15.0), step(1.0, 8.0)],
            credit_signal: 15.0,
            buy_windows: vec![3, 6, 12],
        }
    }
}

/// Deal close probability and health (SPEC §3.11). Points are percent
/// (probability) or health points, taken to three decimals; day
/// thresholds are fractional days, compared exactly (to the microsecond)
/// with `days_in_stage` = as-of − `stage_entered_at` and `idle_days` =
/// as-of − `last_activity_at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DealsConfig {
    /// Close probability base of each open stage.
    pub discovery: f64,
    pub qualified: f64,
    pub proposal: f64,
    pub negotiation: f64,
    /// `min(interactions_cap, interaction_points × interactions)`.
    pub interaction_points: f64,
    pub interactions_cap: f64,
    /// Added for `champion_identified`, `budget_confirmed`, `decision_maker_engaged`.
    pub champion_points: f64,
    pub budget_points: f64,
    pub decision_maker_points: f64,
    /// Subtracted: `min(competitors_cap, competitor_points × competitors_mentioned)`.
    pub competitor_points: f64,
    pub competitors_cap: f64,
    /// A deal is `stagnant` once `days_in_stage` exceeds this; the close
    /// probability then loses `stagnant_penalty`.
    pub stagnant_days: f64,
    pub stagnant_penalty: f64,
    /// A deal is `inactive` once `idle_days` exceeds this.
    pub inactive_days: f64,
    /// Health velocity: `days_in_stage ≤ at` earns `points`, lowest first.
    pub velocity: Vec<Step>,
    /// Health engagement: `idle_days ≤ at` earns `points`, lowest first.
    pub engagement: Vec<Step>,
    /// Health points for a champion, a confirmed budget and an engaged
    /// decision maker.
    pub champion_health: f64,
    pub budget_health: f64,
    pub decision_maker_health: f64,
    /// Category thresholds on health: `healthy` at or above the first,
    /// `at_risk` at or above the second, else `critical`.
    pub healthy_at: f64,
    pub at_risk_at: f64,
}

impl Default for DealsConfig {
    fn default() -> Self {
        DealsConfig {
            discovery: 10.0,
            qualified: 25.0,
            proposal: 50.0,
            negotiation: 75.0,
            interaction_points: 2.5,
            interactions_cap: 25.0,
            champion_points: 10.0,
            budget_points: 10.0,
            decision_maker_points: 5.0,
            competitor_points: 5.0,
            competitors_cap: 15.0,
            stagnant_days: 30.0,
            stagnant_penalty: 10.0,
            inactive_days: 14.0,
            velocity: vec![step(14.0, 35.0), step(30.0, 25.0), step(60.0, 10.0)],
            engagement: vec![step(7.0, 35.0), step(14.0, 25.0), step(21.0, 10.0)],
            champion_health: 10.0,
            budget_health: 10.0,
            decision_maker_health: 10.0,
            healthy_at: 70.0,
            at_risk_at: 40.0,
        }
    }
}
