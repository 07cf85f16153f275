//! Property test for SPEC §3.11: the deal tables (`deal_health`,
//! `pipeline_by_stage`, `forecast_monthly`, `deals_closed_monthly`) through
//! the real dataflow equal a naive from-scratch recomputation — written
//! here, separately from the operators — after every batch, on 1 and 2
//! timely workers. Inputs are random deals with corrections, stale
//! versions, tombstones and redeliveries, and refunded payments (which
//! produce no rows of their own) that only move the tenants' as-of time;
//! times fall on whole days and one microsecond past them, so the day
//! thresholds are hit exactly and just crossed.

mod harness;

use std::collections::BTreeMap;

use harness::State;
use proptest::prelude::*;
use revpulse_pipelines::dataflow::Inputs;
use revpulse_pipelines::event::*;
use revpulse_pipelines::row::{Cell, RowKey, Table};
use revpulse_pipelines::time::{month_of, Micros};
use revpulse_pipelines::types::{Count, Str, Tenant, Text, Ts, F64};

type Msg = (Topic, Text, Option<Event>);

const DAY: Micros = 86_400_000_000;
const BASE: Micros = 1_793_491_200_000_000; // 2026-11-01T00:00:00Z

/// Day `slot` after BASE, plus one microsecond when `past`.
fn t(slot: u8, past: bool) -> Ts {
    Ts(BASE + i64::from(slot) * DAY + i64::from(past))
}

fn tenant(i: u8) -> Tenant {
    Tenant(format!("t{i}").into())
}

fn opt<S: Strategy>(s: S) -> impl Strategy<Value = Option<S::Value>> {
    prop::option::weighted(0.6, s)
}

fn arb_deal(key: Text) -> impl Strategy<Value = Event> {
    (
        (0u8..2, 0u8..90, any::<bool>(), 0usize..6),
        prop::sample::select(&[0u64, 1, 999, 250_000, 1_234_567][..]),
        ((0u8..90, any::<bool>()), (0u8..90, any::<bool>()), 0u8..200),
        (opt(any::<bool>()), opt(any::<bool>()), opt(any::<bool>())),
        (opt(0u64..5), opt(0u64..14)),
    )
        .prop_map(
            move |((tn, slot, past, stage), amount, (entered, active, close), (ch, bu, dm), (comp, inter))| {
                Event::Deal(Deal {
                    tenant_id: tenant(tn),
                    ts: t(slot, past),
                    deal_id: Str(key.clone()),
                    subject_id: None,
                    stage: DealStage::ALL[stage],
                    amount_cents: Count(amount),
                    currency: Str("USD".into()),
                    stage_entered_at: t(entered.0, entered.1),
                    last_activity_at: t(active.0, active.1),
                    expected_close: t(close, false),
                    owner: None,
                    champion_identified: ch,
                    budget_confirmed: bu,
                    decision_maker_engaged: dm,
                    competitors_mentioned: comp.map(Count),
                    interactions: inter.map(Count),
                })
            },
        )
}

/// A refunded payment: no conversion, no row, but a version whose `ts`
/// counts towards its tenant's as-of time.
fn arb_clock(key: Text) -> impl Strategy<Value = Event> {
    (0u8..2, 0u8..120, any::<bool>()).prop_map(move |(tn, slot, past)| {
        Event::Payment(Payment {
            tenant_id: tenant(tn),
            ts: t(slot, past),
            payment_id: Str(key.clone()),
            subject_id: Str("s".into()),
            status: PaymentStatus::Refunded,
            amount_cents: Count(100),
            currency: Str("USD".into()),
            plan_id: None,
        })
    })
}

fn arb_msg(topic: Topic, key: Text) -> BoxedStrategy<Msg> {
    let k = key.clone();
    let event = match topic {
        Topic::Deals => arb_deal(k).boxed(),
        _ => arb_clock(k).boxed(),
    };
    prop_oneof![
        1 => Just((topic, key.clone(), None)),
        6 => event.prop_map(move |e| (topic, key.clone(), Some(e))),
    ]
    .boxed()
}

/// Per-key sequences of deals and clock payments, interleaved arbitrarily
/// (each key keeps its order, as on a Kafka partition), plus batch sizes.
fn arb_input() -> impl Strategy<Value = (Vec<Msg>, Vec<usize>)> {
    let per_key = prop::collection::vec((any::<bool>(), 1usize..5), 3..20).prop_flat_map(|keys| {
        keys.iter()
            .enumerate()
            .map(|(k, (deal, n))| {
                let topic = if *deal { Topic::Deals } else { Topic::Payments };
                prop::collection::vec(arb_msg(topic, format!("{}-{k}", topic.name()).into()), *n..=*n)
            })
            .collect::<Vec<_>>()
    });
    (per_key, any::<u64>(), prop::collection::vec(1usize..8, 1..10))
        .prop_map(|(per_key, seed, cuts)| (harness::interleave(per_key, seed), cuts))
}

// ---------------- naive recomputation ----------------

const DEAL_TABLES: [Table; 4] =
    [Table::DealHealth, Table::PipelineByStage, Table::ForecastMonthly, Table::DealsClosedMonthly];

fn current(msgs: &[Msg]) -> BTreeMap<(Topic, Text), Event> {
    let mut cur: BTreeMap<(Topic, Text), Event> = BTreeMap::new();
    for (topic, key, value) in msgs {
        let k = (*topic, key.clone());
        match value {
            None => {
                cur.remove(&k);
            }
            Some(v) if cur.get(&k).is_none_or(|c| v.ts() >= c.ts()) => {
                cur.insert(k, v.clone());
            }
            Some(_) => {}
        }
    }
    cur
}

fn s(x: &str) -> Cell {
    Cell::Str(x.into())
}

fn f(x: f64) -> Cell {
    Cell::F64(F64(x))
}

fn date(month: i32) -> Cell {
    Cell::Date(month)
}

/// Days over a threshold, exactly: `days > t` with days = max(0, as_of − from).
fn over(as_of: Micros, from: Ts, days: i64) -> bool {
    (as_of - from.0).max(0) > days * DAY
}

/// SPEC §3.11 with the default points, in thousandths: (probability, health,
/// category, risks).
fn naive_deal(d: &Deal, as_of: Micros) -> (i64, i64, &'static str, Vec<&'static str>) {
    let yes = |f: Option<bool>| f == Some(true);
    let base = match d.stage {
        DealStage::Won => return (100_000, 0, "", vec![]),
        DealStage::Lost => return (0, 0, "", vec![]),
        DealStage::Discovery => 10_000,
        DealStage::Qualified => 25_000,
        DealStage::Proposal => 50_000,
        DealStage::Negotiation => 75_000,
    };
    let interactions = d.interactions.map_or(0, |n| n.0) as i64;
    let competitors = d.competitors_mentioned.map_or(0, |n| n.0) as i64;
    let stagnant = over(as_of, d.stage_entered_at, 30);
    let inactive = over(as_of, d.last_activity_at, 14);
    let mut p = base + (2_500 * interactions).min(25_000) - (5_000 * competitors).min(15_000);
    p += if yes(d.champion_identified) { 10_000 } else { 0 };
    p += if yes(d.budget_confirmed) { 10_000 } else { 0 };
    p += if yes(d.decision_maker_engaged) { 5_000 } else { 0 };
    p -= if stagnant { 10_000 } else { 0 };
    let velocity = if !over(as_of, d.stage_entered_at, 14) {
        35_000
    } else if !over(as_of, d.stage_entered_at, 30) {
        25_000
    } else if !over(as_of, d.stage_entered_at, 60) {
        10_000
    } else {
        0
    };
    let engagement = if !over(as_of, d.last_activity_at, 7) {
        35_000
    } else if !over(as_of, d.last_activity_at, 14) {
        25_000
    } else if !over(as_of, d.last_activity_at, 21) {
        10_000
    } else {
        0
    };
    let flags = [d.champion_identified, d.budget_confirmed, d.decision_maker_engaged];
    let health = velocity + engagement + 10_000 * flags.iter().filter(|f| yes(**f)).count() as i64;
    let category = match health {
        h if h >= 70_000 => "healthy",
        h if h >= 40_000 => "at_risk",
        _ => "critical",
    };
    let mut risks = Vec::new();
    for (name, on) in [
        ("stagnant", stagnant),
        ("inactive", inactive),
        ("no_champion", !yes(d.champion_identified)),
        ("no_budget", !yes(d.budget_confirmed)),
        ("no_decision_maker", !yes(d.decision_maker_engaged)),
        ("competition", competitors > 0),
    ] {
        if on {
            risks.push(name);
        }
    }
    (p.clamp(0, 100_000), health, category, risks)
}

fn naive_rows(msgs: &[Msg]) -> State {
    let cur = current(msgs);
    let mut as_of: BTreeMap<Text, Micros> = BTreeMap::new();
    for e in cur.values() {
        let m = as_of.entry(e.tenant().into()).or_insert(Micros::MIN);
        *m = (*m).max(e.ts());
    }
    let mut out = State::new();
    // (deals, cents, Σ cents × probability in thousandths)
    let mut stages: BTreeMap<(Text, &'static str), (i64, i128, i128)> = BTreeMap::new();
    let mut forecast: BTreeMap<(Text, i32), (i64, i128, i128)> = BTreeMap::new();
    let mut closed: BTreeMap<(Text, i32), (u64, u64, i128, i128)> = BTreeMap::new();
    for e in cur.values() {
        let Event::Deal(d) = e else { continue };
        let tenant = d.tenant_id.0.clone();
        let (p, health, category, risks) = naive_deal(d, as_of[&tenant]);
        let cents = i128::from(d.amount_cents.0);
        let stage = d.stage.as_str();
        let add = |sums: &mut (i64, i128, i128)| {
            sums.0 += 1;
            sums.1 += cents;
            sums.2 += cents * i128::from(p);
        };
        add(stages.entry((tenant.clone(), stage)).or_default());
        let open = !matches!(d.stage, DealStage::Won | DealStage::Lost);
        if open {
            add(forecast.entry((tenant.clone(), month_of(d.expected_close.0))).or_default());
            let key = RowKey::new(Table::DealHealth, vec![Cell::Str(tenant.clone()), Cell::Str(d.deal_id.0.clone())]);
            let close_second = (d.expected_close.0 / 1_000_000) as u32;
            out.insert(
                key,
                vec![
                    s(stage),
                    f(d.amount_cents.0 as f64 / 100.0),
                    f(p as f64 / 1000.0),
                    f(health as f64 / 1000.0),
                    s(category),
                    Cell::StrArray(risks.into_iter().map(Text::from).collect()),
                    Cell::Minute(close_second),
                ],
            );
        } else {
            let c = closed.entry((tenant, month_of(d.ts.0))).or_default();
            if d.stage == DealStage::Won {
                c.0 += 1;
                c.2 += cents;
            } else {
                c.1 += 1;
                c.3 += cents;
            }
        }
    }
    for ((tenant, stage), (n, cents, weighted)) in stages {
        let key = RowKey::new(Table::PipelineByStage, vec![Cell::Str(tenant), s(stage)]);
        let vals = vec![
            Cell::U64(n as u64),
            f(cents as f64 / 100.0),
            f(weighted as f64 / 10_000_000.0),
            f(cents as f64 / 100.0 / n as f64),
        ];
        out.insert(key, vals);
    }
    for ((tenant, month), (n, cents, weighted)) in forecast {
        let key = RowKey::new(Table::ForecastMonthly, vec![Cell::Str(tenant), date(month)]);
        out.insert(key, vec![Cell::U64(n as u64), f(cents as f64 / 100.0), f(weighted as f64 / 10_000_000.0)]);
    }
    for ((tenant, month), (won, lost, won_cents, lost_cents)) in closed {
        let key = RowKey::new(Table::DealsClosedMonthly, vec![Cell::Str(tenant), date(month)]);
        out.insert(
            key,
            vec![
                Cell::U64(won),
                Cell::U64(lost),
                f(won_cents as f64 / 100.0),
                f(lost_cents as f64 / 100.0),
                f(won as f64 / (won + lost) as f64),
            ],
        );
    }
    out
}

// ---------------- the dataflow under test ----------------

fn send(inputs: &mut Inputs, (topic, key, value): &Msg, seq: u64) {
    inputs.send(*topic, key.clone(), value.clone(), seq);
}

fn deal_tables(state: &State) -> State {
    state.iter().filter(|(k, _)| DEAL_TABLES.contains(&k.table)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn check(workers: usize, msgs: &[Msg], cuts: &[usize]) -> Result<(), TestCaseError> {
    harness::check_tables(workers, msgs, cuts, send, naive_rows, |t| DEAL_TABLES.contains(&t))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn deal_tables_match_naive_after_every_batch((msgs, cuts) in arb_input()) {
        check(1, &msgs, &cuts)?;
    }

    #[test]
    fn deal_tables_match_naive_on_two_workers((msgs, cuts) in arb_input()) {
        check(2, &msgs, &cuts)?;
    }
}

/// A batch that only moves the as-of time onto a threshold changes nothing;
/// one microsecond past it re-bands the deal (stagnant, inactive, lower
/// probability and health) — and a tombstone of the clock moves it back.
#[test]
fn as_of_on_and_just_past_a_threshold() {
    let deal = Deal {
        tenant_id: tenant(0),
        ts: t(0, false),
        deal_id: Str("d".into()),
        subject_id: None,
        stage: DealStage::Proposal,
        amount_cents: Count(100_000),
        currency: Str("USD".into()),
        stage_entered_at: t(0, false),
        last_activity_at: t(16, false),
        expected_close: t(40, false),
        owner: None,
        champion_identified: Some(true),
        budget_confirmed: None,
        decision_maker_engaged: None,
        competitors_mentioned: None,
        interactions: Some(Count(2)),
    };
    let clock = |slot: u8, past: bool| {
        let p = Payment {
            tenant_id: tenant(0),
            ts: t(slot, past),
            payment_id: Str("clock".into()),
            subject_id: Str("s".into()),
            status: PaymentStatus::Refunded,
            amount_cents: Count(100),
            currency: Str("USD".into()),
            plan_id: None,
        };
        (Topic::Payments, Text::from("clock"), Some(Event::Payment(p)))
    };
    let msgs = [
        (Topic::Deals, Text::from("d"), Some(Event::Deal(deal))),
        clock(30, false),
        clock(30, true),
        (Topic::Payments, Text::from("clock"), None),
    ];
    let batches: Vec<Vec<Msg>> = msgs.iter().map(|m| vec![m.clone()]).collect();
    let states = harness::run_dataflow(1, batches, send);
    let health =
        |st: &State| st.iter().find(|(k, _)| k.table == Table::DealHealth).map(|(_, v)| (v[2].clone(), v[3].clone()));
    let h: Vec<_> = states.iter().map(health).collect();
    // Day 30 exactly: not yet stagnant (> 30), velocity ≤30 → 25, idle 14 → 25;
    // a microsecond later: stagnant (−10), velocity ≤60 → 10, inactive, engagement ≤21 → 10.
    assert_eq!(h[1], Some((f(50.0 + 5.0 + 10.0), f(25.0 + 25.0 + 10.0))));
    assert_eq!(h[2], Some((f(50.0 + 5.0 + 10.0 - 10.0), f(10.0 + 10.0 + 10.0))));
    assert_eq!(h[3], h[0]);
    for (i, st) in states.iter().enumerate() {
        let expected = naive_rows(&msgs[..=i]);
        assert_eq!(deal_tables(st), expected, "after message {i}");
    }
}
