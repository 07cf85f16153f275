//! Deal pipeline, forecast and health — SPEC §3.11, from the `deals` topic.
//!
//! A deal is *open* unless its stage is `won` or `lost`. A tenant's
//! *as-of time* is the greatest `ts` of its current versions on all six
//! topics; for an open deal `days_in_stage` = as-of − `stage_entered_at`
//! and `idle_days` = as-of − `last_activity_at` (0 when negative).
//!
//! ```text
//! close_probability = won 100, lost 0, open: base(stage) + min(25, 2.5·interactions)
//!                     + 10 champion + 10 budget + 5 decision maker
//!                     − min(15, 5·competitors) − 10 if days_in_stage > 30, clamped to 0..100
//! health (open)     = velocity (days_in_stage ≤14 → 35, ≤30 → 25, ≤60 → 10)
//!                     + engagement (idle_days ≤7 → 35, ≤14 → 25, ≤21 → 10) + 10 each flag
//! category          = ≥70 healthy, ≥40 at_risk, else critical
//! risk_factors      = stagnant (days_in_stage > 30), inactive (idle_days > 14),
//!                     no_champion, no_budget, no_decision_maker, competition
//! pipeline_by_stage = every current deal by stage: deals, Σ amount, Σ amount·p/100, avg
//! forecast_monthly  = open deals by month of expected_close: deals, Σ amount, Σ amount·p/100
//! deals_closed_monthly = won and lost deals by month of ts: counts, values, won / (won + lost)
//! ```
//!
//! Points and thresholds are [`DealsConfig`] (these are its defaults).
//! Probabilities and health are summed exactly in thousandths of a point,
//! so weighted values are exact sums of `amount_cents × probability`.
//!
//! **The as-of time, incrementally.** The as-of time is a maximum under
//! retractions (a corrected or deleted version can lower it). The deals
//! operator ([`banded`]) takes every change of a current version's `ts`
//! ([`times`]) and keeps per tenant the multiset of those times in an
//! ordered map: a change costs O(log n) and one map entry per distinct
//! time. (A hierarchy of `reduce`s over ever coarser time buckets computes
//! the same maximum in plain differential operators, but arranges every
//! current version at each level: in `revpulse bench` runs of 2026-12-08 it
//! held 1,500 bytes of state per current version against 1,368 this way,
//! and replayed 124k events/s against 152k.)
//!
//! **Only crossed thresholds re-evaluate.** An open deal's figures depend
//! on the as-of time only through which of its *crossings* lie below it:
//! `stage_entered_at + T` for each day threshold `T` on `days_in_stage`
//! (14, 30, 60) and `last_activity_at + T` for those on `idle_days` (7, 14,
//! 21); `days_in_stage > T` exactly when the crossing is before the as-of
//! time. Those counts are the deal's [`Band`]. The operator [`banded`]
//! keeps per tenant an ordered index of its open deals' crossings; when
//! the as-of time moves from `a` to `b` it visits only the crossings in
//! `[min(a, b), max(a, b))` — exactly those whose side changed — and
//! re-emits only deals whose band changed. An as-of move that crosses no
//! threshold emits nothing, so nothing downstream (figures, sums, rows)
//! is recomputed or written. Everything after the band is differential:
//! `map` to figures and `explode` + `count_total` for the sums.
//!
//! Limits: thresholds are taken to the microsecond; deals are never
//! released by retention (open deals stay until they close or are
//! deleted; closed deals stay with their month); with retention the other
//! topics' versions are released, and the as-of time is the greatest `ts`
//! still held (docs/metrics.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use differential_dataflow::collection::AsCollection;
use differential_dataflow::hashable::Hashable;
use differential_dataflow::operators::CountTotal as _;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::config::{DealsConfig, Step};
use crate::dataflow::Current;
use crate::event::{Deal, DealStage, Topic};
use crate::family::{no_period, Family, Rules, Streams};
use crate::row::{
    Date, DealHealthKey, DealHealthValues, DealsClosedMonthlyKey, DealsClosedMonthlyValues, ForecastMonthlyKey,
    ForecastMonthlyValues, PipelineByStageKey, PipelineByStageValues, RowKey, RowVals, Second, Table, TableKey,
};
use crate::time::{month_of, Day, Micros, MICROS_PER_DAY};
use crate::types::Text;
use crate::upsert::Epoch;

/// Thousandths of a point (or of a percent).
pub type Milli = i64;

/// Thousandths of `x`, as written in the configuration.
pub fn milli(x: f64) -> Milli {
    (x * 1000.0).round() as Milli
}

/// A day threshold in microseconds (negative ones count as 0).
pub fn day_micros(days: f64) -> Micros {
    (days.max(0.0) * MICROS_PER_DAY as f64).round() as Micros
}

/// The day thresholds of the configuration, in microseconds, ascending.
#[derive(Clone, Debug)]
pub struct Thresholds {
    /// On `days_in_stage` (velocity steps and stagnation).
    pub stage: Vec<Micros>,
    /// On `idle_days` (engagement steps and inactivity).
    pub idle: Vec<Micros>,
}

impl Thresholds {
    pub fn of(cfg: &DealsConfig) -> Thresholds {
        let list = |steps: &[Step], extra: f64| {
            let mut v: Vec<Micros> = steps.iter().map(|s| day_micros(s.at)).chain([day_micros(extra)]).collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        Thresholds { stage: list(&cfg.velocity, cfg.stagnant_days), idle: list(&cfg.engagement, cfg.inactive_days) }
    }

    /// The instants at which `d`'s figures may change.
    fn crossings(&self, d: &Deal) -> Vec<Micros> {
        let at = |from: Micros, list: &[Micros]| list.iter().map(move |t| from.saturating_add(*t)).collect::<Vec<_>>();
        let mut all = at(d.stage_entered_at.0, &self.stage);
        all.extend(at(d.last_activity_at.0, &self.idle));
        all
    }

    /// Which of `d`'s crossings lie before `as_of` (none without one).
    pub fn band(&self, d: &Deal, as_of: Option<Micros>) -> Band {
        let Some(as_of) = as_of else { return Band::default() };
        let below = |from: Micros, list: &[Micros]| list.iter().filter(|t| from.saturating_add(**t) < as_of).count();
        Band {
            stage: below(d.stage_entered_at.0, &self.stage) as u8,
            idle: below(d.last_activity_at.0, &self.idle) as u8,
        }
    }
}

/// How many of a deal's stage and idle thresholds its days exceed: the
/// first `stage` of [`Thresholds::stage`] (they ascend), and likewise
/// `idle`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Band {
    pub stage: u8,
    pub idle: u8,
}

/// Whether days over `list[..crossed]` exceed `days` (a configured threshold).
fn exceeds(list: &[Micros], crossed: u8, days: f64) -> bool {
    let t = day_micros(days);
    list.iter().position(|x| *x == t).is_some_and(|i| i < usize::from(crossed))
}

/// The first step whose `at` the days do not exceed.
fn step_points(steps: &[Step], list: &[Micros], crossed: u8) -> Milli {
    steps.iter().find(|s| !exceeds(list, crossed, s.at)).map_or(0, |s| milli(s.points))
}

/// A deal's figures (SPEC §3.11); health, category and risks only mean
/// something for open deals.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Assessed {
    pub probability: Milli,
    pub health: Milli,
    pub category: &'static str,
    pub risks: Vec<&'static str>,
}

/// Assesses `d`, whose days exceed the thresholds `band` says.
pub fn assess(d: &Deal, band: Band, th: &Thresholds, cfg: &DealsConfig) -> Assessed {
    let flag = |f: Option<bool>| f == Some(true);
    let (champion, budget, dm) =
        (flag(d.champion_identified), flag(d.budget_confirmed), flag(d.decision_maker_engaged));
    let interactions = d.interactions.map_or(0, |n| n.0);
    let competitors = d.competitors_mentioned.map_or(0, |n| n.0);
    let base = match d.stage {
        DealStage::Won => return Assessed { probability: 100_000, health: 0, category: "", risks: Vec::new() },
        DealStage::Lost => return Assessed { probability: 0, health: 0, category: "", risks: Vec::new() },
        DealStage::Discovery => cfg.discovery,
        DealStage::Qualified => cfg.qualified,
        DealStage::Proposal => cfg.proposal,
        DealStage::Negotiation => cfg.negotiation,
    };
    let times = |points: f64, n: u64| milli(points).saturating_mul(n.min(i64::MAX as u64) as i64);
    let stagnant = exceeds(&th.stage, band.stage, cfg.stagnant_days);
    let inactive = exceeds(&th.idle, band.idle, cfg.inactive_days);
    let on = |yes: bool, points: f64| if yes { milli(points) } else { 0 };
    let probability = milli(base)
        + times(cfg.interaction_points, interactions).min(milli(cfg.interactions_cap))
        + on(champion, cfg.champion_points)
        + on(budget, cfg.budget_points)
        + on(dm, cfg.decision_maker_points)
        - times(cfg.competitor_points, competitors).min(milli(cfg.competitors_cap))
        - on(stagnant, cfg.stagnant_penalty);
    let health = step_points(&cfg.velocity, &th.stage, band.stage)
        + step_points(&cfg.engagement, &th.idle, band.idle)
        + on(champion, cfg.champion_health)
        + on(budget, cfg.budget_health)
        + on(dm, cfg.decision_maker_health);
    let health = health.clamp(0, 100_000);
    let category = if health >= milli(cfg.healthy_at) {
        "healthy"
    } else if health >= milli(cfg.at_risk_at) {
        "at_risk"
    } else {
        "critical"
    };
    let risks = [
        ("stagnant", stagnant),
        ("inactive", inactive),
        ("no_champion", !champion),
        ("no_budget", !budget),
        ("no_decision_maker", !dm),
        ("competition", competitors > 0),
    ];
    Assessed {
        probability: probability.clamp(0, 100_000),
        health,
        category,
        risks: risks.into_iter().filter(|(_, on)| *on).map(|(name, _)| name).collect(),
    }
}

/// Every change of a current version's `ts` on any of the six topics, by
/// tenant: the multiset whose maximum is the tenant's as-of time.
pub fn times<'s>(current: &Current<'s>) -> VecCollection<'s, Epoch, (Text, Micros)> {
    current
        .impressions
        .clone()
        .map(|(_, v)| (v.tenant_id.0, v.ts.0))
        .concat(current.conversations.clone().map(|(_, v)| (v.tenant_id.0, v.ts.0)))
        .concat(current.messages.clone().map(|(_, v)| (v.tenant_id.0, v.ts.0)))
        .concat(current.payments.clone().map(|(_, v)| (v.tenant_id.0, v.ts.0)))
        .concat(current.ro_updates.clone().map(|(_, v)| (v.tenant_id.0, v.ts.0)))
        .concat(current.deals.clone().map(|(_, v)| (v.tenant_id.0, v.ts.0)))
}

/// What as-of moves cost, counted over the process (read by `revpulse
/// bench`): moves, the open deals of their tenants (what re-evaluating
/// every open deal per move would visit), the deals whose crossings they
/// passed, and the deals whose band changed (each re-emitted as a
/// retraction and an insertion).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsOfStats {
    pub moves: u64,
    pub open_deals: u64,
    pub visited: u64,
    pub rebanded: u64,
}

impl AsOfStats {
    /// The counts since `before` was read.
    pub fn since(self, before: AsOfStats) -> AsOfStats {
        AsOfStats {
            moves: self.moves - before.moves,
            open_deals: self.open_deals - before.open_deals,
            visited: self.visited - before.visited,
            rebanded: self.rebanded - before.rebanded,
        }
    }
}

/// The process-wide counters behind [`as_of_stats`].
struct Counters {
    moves: AtomicU64,
    open_deals: AtomicU64,
    visited: AtomicU64,
    rebanded: AtomicU64,
}

static STATS: Counters = Counters {
    moves: AtomicU64::new(0),
    open_deals: AtomicU64::new(0),
    visited: AtomicU64::new(0),
    rebanded: AtomicU64::new(0),
};

/// The counts of [`AsOfStats`] so far.
pub fn as_of_stats() -> AsOfStats {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    AsOfStats {
        moves: get(&STATS.moves),
        open_deals: get(&STATS.open_deals),
        visited: get(&STATS.visited),
        rebanded: get(&STATS.rebanded),
    }
}

/// One tenant's open deals as [`banded`] holds them.
#[derive(Default)]
struct Tenant {
    /// The `ts` of the tenant's current versions, with multiplicities.
    times: BTreeMap<Micros, isize>,
    as_of: Option<Micros>,
    deals: HashMap<Text, (Deal, Band)>,
    /// (crossing, deal_id) of every held deal.
    crossings: BTreeSet<(Micros, Text)>,
}

impl Tenant {
    fn insert(&mut self, d: Deal, th: &Thresholds, out: &mut Vec<((Deal, Band), isize)>) {
        let band = th.band(&d, self.as_of);
        for at in th.crossings(&d) {
            self.crossings.insert((at, d.deal_id.0.clone()));
        }
        out.push(((d.clone(), band), 1));
        if let Some((old, old_band)) = self.deals.insert(d.deal_id.0.clone(), (d, band)) {
            // Two current versions of one deal cannot be: keep the
            // collection consistent anyway.
            out.push(((old, old_band), -1));
        }
    }

    fn remove(&mut self, d: &Deal, th: &Thresholds, out: &mut Vec<((Deal, Band), isize)>) {
        if let Some((held, band)) = self.deals.remove(&d.deal_id.0) {
            for at in th.crossings(&held) {
                self.crossings.remove(&(at, held.deal_id.0.clone()));
            }
            out.push(((held, band), -1));
        }
    }

    /// Moves the as-of time, re-banding only deals with a crossing between
    /// the old and the new time.
    fn move_to(&mut self, as_of: Option<Micros>, th: &Thresholds, out: &mut Vec<((Deal, Band), isize)>) {
        let (old, new) = (self.as_of.unwrap_or(Micros::MIN), as_of.unwrap_or(Micros::MIN));
        self.as_of = as_of;
        if old == new {
            return;
        }
        let (lo, hi) = (old.min(new), old.max(new));
        let touched: BTreeSet<Text> =
            self.crossings.range((lo, Text::default())..(hi, Text::default())).map(|(_, id)| id.clone()).collect();
        let (visited, mut rebanded) = (touched.len(), 0);
        for id in touched {
            if let Some((d, band)) = self.deals.get_mut(&id) {
                let now = th.band(d, as_of);
                if now != *band {
                    out.push(((d.clone(), *band), -1));
                    out.push(((d.clone(), now), 1));
                    *band = now;
                    rebanded += 1;
                }
            }
        }
        for (counter, n) in [
            (&STATS.moves, 1),
            (&STATS.open_deals, self.deals.len()),
            (&STATS.visited, visited),
            (&STATS.rebanded, rebanded),
        ] {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

type Pending = BTreeMap<Epoch, (Capability<Epoch>, Vec<((Text, Micros), isize)>, Vec<((Text, Deal), isize)>)>;

/// Each open deal with its [`Band`] under its tenant's as-of time, the
/// greatest of `times` (see [`times`]). An epoch applies, per tenant:
/// removed deals, then the as-of move (deals whose crossings it passes are
/// re-banded), then added deals.
pub fn banded<'s>(
    times: VecCollection<'s, Epoch, (Text, Micros)>,
    open: VecCollection<'s, Epoch, (Text, Deal)>,
    th: Thresholds,
) -> VecCollection<'s, Epoch, (Deal, Band)> {
    let by_tenant_time = Exchange::new(|((t, _), _, _): &((Text, Micros), Epoch, isize)| t.hashed());
    let by_tenant_deal = Exchange::new(|((t, _), _, _): &((Text, Deal), Epoch, isize)| t.hashed());
    let mut pending: Pending = BTreeMap::new();
    let mut tenants: HashMap<Text, Tenant> = HashMap::new();
    type Out = ((Deal, Band), Epoch, isize);
    times
        .inner
        .binary_frontier::<_, CapacityContainerBuilder<Vec<Out>>, _, _, _, _>(
            open.inner,
            by_tenant_time,
            by_tenant_deal,
            "Deals: band by as-of",
            move |_cap, _| {
                move |(times_in, times_f), (deals_in, deals_f), output| {
                    times_in.for_each(|cap, batch| {
                        let e = pending.entry(*cap.time()).or_insert_with(|| (cap.retain(0), Vec::new(), Vec::new()));
                        e.1.extend(batch.drain(..).map(|(x, _, r)| (x, r)));
                    });
                    deals_in.for_each(|cap, batch| {
                        let e = pending.entry(*cap.time()).or_insert_with(|| (cap.retain(0), Vec::new(), Vec::new()));
                        e.2.extend(batch.drain(..).map(|(x, _, r)| (x, r)));
                    });
                    while let Some(entry) = pending.first_entry() {
                        let e = *entry.key();
                        if times_f.less_equal(&e) || deals_f.less_equal(&e) {
                            break;
                        }
                        let (cap, mut times, mut deals) = entry.remove();
                        differential_dataflow::consolidation::consolidate(&mut times);
                        differential_dataflow::consolidation::consolidate(&mut deals);
                        let mut out = Vec::new();
                        apply_epoch(&mut tenants, times, deals, &th, &mut out);
                        differential_dataflow::consolidation::consolidate(&mut out);
                        let mut session = output.session(&cap);
                        for (x, r) in out {
                            session.give((x, e, r));
                        }
                    }
                }
            },
        )
        .as_collection()
}

/// One epoch's consolidated changes of as-of times and open deals.
fn apply_epoch(
    tenants: &mut HashMap<Text, Tenant>,
    times: Vec<((Text, Micros), isize)>,
    deals: Vec<((Text, Deal), isize)>,
    th: &Thresholds,
    out: &mut Vec<((Deal, Band), isize)>,
) {
    // The tenants whose times changed, their multisets updated.
    let mut moved: BTreeSet<Text> = BTreeSet::new();
    for ((tenant, ts), r) in times {
        let state = tenants.entry(tenant.clone()).or_default();
        let n = state.times.entry(ts).or_insert(0);
        *n += r;
        if *n == 0 {
            state.times.remove(&ts);
        }
        moved.insert(tenant);
    }
    let mut added: BTreeMap<Text, Vec<Deal>> = BTreeMap::new();
    for ((tenant, d), r) in deals {
        if r < 0 {
            tenants.entry(tenant).or_default().remove(&d, th, out);
        } else {
            added.entry(tenant).or_default().push(d);
        }
    }
    for tenant in moved {
        let state = tenants.entry(tenant).or_default();
        let as_of = state.times.last_key_value().map(|(ts, _)| *ts);
        state.move_to(as_of, th, out);
    }
    for (tenant, list) in added {
        let state = tenants.entry(tenant).or_default();
        for d in list {
            state.insert(d, th, out);
        }
    }
    tenants.retain(|_, t| !t.times.is_empty() || !t.deals.is_empty());
}

crate::additive! {
    /// A stage's or a month's deals: count, Σ amount in cents, and
    /// Σ amount in cents × probability in thousandths of a percent.
    pub struct Sums {
        pub deals: i64,
        pub cents: i128,
        pub weighted: i128,
    }
}

crate::additive! {
    /// A month's won and lost deals and their amounts in cents.
    pub struct Closed {
        pub won: i64,
        pub lost: i64,
        pub won_cents: i128,
        pub lost_cents: i128,
    }
}

impl Sums {
    fn of(d: &Deal, a: &Assessed) -> Sums {
        let cents = i128::from(d.amount_cents.0);
        Sums { deals: 1, cents, weighted: cents * i128::from(a.probability) }
    }

    /// Σ amount × probability / 100, in currency units.
    fn weighted_value(&self) -> f64 {
        self.weighted as f64 / 10_000_000.0
    }
}

/// The `deal_health` row of an assessed open deal.
fn health_row(d: Deal, a: &Assessed) -> (RowKey, RowVals) {
    DealHealthKey { tenant_id: d.tenant_id.0, deal_id: d.deal_id.0 }.row(DealHealthValues {
        stage: d.stage.as_str().into(),
        amount: d.amount_cents.0 as f64 / 100.0,
        close_probability: a.probability as f64 / 1000.0,
        health: a.health as f64 / 1000.0,
        category: a.category.into(),
        risk_factors: a.risks.iter().map(|r| Text::from(*r)).collect(),
        expected_close: Second::of_micros(d.expected_close.0),
    })
}

/// The four tables of SPEC §3.11 from the current deals and the times of
/// every tenant's current versions ([`times`]).
pub fn deal_rows<'s>(
    deals: VecCollection<'s, Epoch, (Text, Deal)>,
    times: VecCollection<'s, Epoch, (Text, Micros)>,
    cfg: &DealsConfig,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    let th = Thresholds::of(cfg);
    let open = deals.clone().filter(|(_, d)| d.stage.is_open()).map(|(_, d)| (d.tenant_id.0.clone(), d));
    let (c1, t1) = (cfg.clone(), th.clone());
    let open = banded(times, open, th.clone()).map(move |(d, band)| {
        let a = assess(&d, band, &t1, &c1);
        (d, a)
    });
    let closed = deals.filter(|(_, d)| !d.stage.is_open()).map(move |(_, d)| d);
    let (c2, t2) = (cfg.clone(), th);
    let closed_assessed = closed.clone().map(move |d| {
        let a = assess(&d, Band::default(), &t2, &c2);
        (d, a)
    });
    let health = open.clone().map(|(d, a)| health_row(d, &a));
    let by_stage = open
        .clone()
        .concat(closed_assessed)
        .explode(|(d, a)| Some(((d.tenant_id.0.clone(), d.stage), Sums::of(&d, &a))))
        .count_total()
        .map(|((tenant_id, stage), s): ((Text, DealStage), Sums)| {
            let value = s.cents as f64 / 100.0;
            PipelineByStageKey { tenant_id, stage: stage.as_str().into() }.row(PipelineByStageValues {
                deals: s.deals.max(0) as u64,
                value,
                weighted_value: s.weighted_value(),
                avg_value: if s.deals > 0 { s.cents as f64 / 100.0 / s.deals as f64 } else { 0.0 },
            })
        });
    let forecast = open
        .explode(|(d, a)| Some(((d.tenant_id.0.clone(), month_of(d.expected_close.0)), Sums::of(&d, &a))))
        .count_total()
        .map(|((tenant_id, month), s): ((Text, Day), Sums)| {
            ForecastMonthlyKey { tenant_id, month: Date(month) }.row(ForecastMonthlyValues {
                deals: s.deals.max(0) as u64,
                pipeline: s.cents as f64 / 100.0,
                weighted: s.weighted_value(),
            })
        });
    let closed_monthly = closed
        .explode(|d| {
            let cents = i128::from(d.amount_cents.0);
            let c = match d.stage {
                DealStage::Won => Closed { won: 1, won_cents: cents, ..Closed::default() },
                _ => Closed { lost: 1, lost_cents: cents, ..Closed::default() },
            };
            Some(((d.tenant_id.0, month_of(d.ts.0)), c))
        })
        .count_total()
        .map(|((tenant_id, month), c): ((Text, Day), Closed)| {
            let (won, lost) = (c.won.max(0) as u64, c.lost.max(0) as u64);
            DealsClosedMonthlyKey { tenant_id, month: Date(month) }.row(DealsClosedMonthlyValues {
                won,
                lost,
                won_value: c.won_cents as f64 / 100.0,
                lost_value: c.lost_cents as f64 / 100.0,
                win_rate: if won + lost > 0 { won as f64 / (won + lost) as f64 } else { 0.0 },
            })
        });
    health.concat(by_stage).concat(forecast).concat(closed_monthly)
}

/// Deal pipeline, forecast and health (SPEC §3.11).
pub const FAMILY: Family = Family {
    name: "deals",
    inputs: &[Topic::Deals],
    tables: &[Table::DealHealth, Table::PipelineByStage, Table::ForecastMonthly, Table::DealsClosedMonthly],
    state: &[],
    own_copy: false,
    release: never,
    row_period: no_period,
    build,
};

/// Deals are never released (see the module's limits).
fn never(_: &Rules) -> Option<crate::family::ReleaseFn> {
    None
}

fn build<'s>(s: &Streams<'_, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    deal_rows(s.current.deals.clone(), times(&s.current), &s.cfg.deals)
}
