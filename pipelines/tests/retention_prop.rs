//! Retention (SPEC §7) against the exact dataflow.
//!
//! 1. When no event is later than the lateness, closing periods changes no
//!    result: the final tables with retention equal those without, for
//!    random streams spanning months, any batching, 1 or 2 workers — so
//!    releasing state never deletes or alters a row, and closed rows keep
//!    their final values.
//! 2. Events of closed periods change nothing in the period families: a
//!    late impression is rejected (`too_late`), a late payment leaves
//!    revenue per minute and attribution untouched.

mod harness;

use proptest::prelude::*;
use revpulse_pipelines::config::{MetricsConfig, RetentionConfig};
use revpulse_pipelines::dataflow::Inputs;
use revpulse_pipelines::event::{decode_value, Event, Topic};
use revpulse_pipelines::row::Table;
use revpulse_pipelines::time::{format_micros, parse_rfc3339, Micros, MICROS_PER_SECOND};
use revpulse_pipelines::types::Text;

type Msg = (Topic, Text, Option<Event>);

const HOUR: Micros = 3_600 * MICROS_PER_SECOND;
const DAY: u64 = 86_400;

fn base() -> Micros {
    parse_rfc3339("2026-01-01T00:00:00Z").unwrap_or_default()
}

fn event(topic: Topic, json: String) -> Msg {
    let e = decode_value(topic, json.as_bytes()).unwrap_or_else(|r| panic!("test event rejected: {r:?} {json}"));
    (topic, e.upsert_key().into(), Some(e))
}

/// One event of kind `kind` at `ts`, for tenant `t` and subject `s`.
fn make(kind: u8, i: usize, ts: Micros, t: u8, s: u8, amount: u32) -> Msg {
    make_as(kind % 4, i, ts, t, &format!("s{s}"), s, amount)
}

/// [`make`] for subject `subject` (`s` picks channels, offers, variants),
/// and a fifth kind: conversations.
fn make_as(kind: u8, i: usize, ts: Micros, t: u8, subject: &str, s: u8, amount: u32) -> Msg {
    let at = format_micros(ts);
    let tenant = format!("t{t}");
    match kind % 5 {
        4 => event(
            Topic::Conversations,
            format!(
                r#"{{"tenant_id":"{tenant}","ts":"{at}","event_id":"cv{i}","conversation_id":"conv-{subject}-{}","subject_id":"{subject}","kind":"message","facts":{{"homeowner":true,"monthly_bill":{},"questions":1,"sentiment":0.5,"timeline_months":{},"credit_signal":{}}}}}"#,
                amount % 3,
                amount % 400,
                amount % 14,
                amount.is_multiple_of(2)
            ),
        ),
        0 => event(
            Topic::Impressions,
            format!(
                r#"{{"tenant_id":"{tenant}","ts":"{at}","event_id":"imp{i}","channel":"c{}","intent_cluster":"i{}","impressions":{amount},"share_ai_snippet":0.4,"ctr_baseline":0.05,"ctr_drop_when_ai":0.5,"lead_cr":0.1,"close_rate":0.2,"recoverable_share":0.3,"avg_gross":2500}}"#,
                s % 2,
                s % 3
            ),
        ),
        1 => event(
            Topic::Payments,
            format!(
                r#"{{"tenant_id":"{tenant}","ts":"{at}","payment_id":"pay{i}","subject_id":"{subject}","status":"succeeded","amount_cents":{amount},"currency":"USD"}}"#
            ),
        ),
        2 => event(
            Topic::RoUpdates,
            format!(
                r#"{{"tenant_id":"{tenant}","ts":"{at}","ro_id":"ro{i}","subject_id":"{subject}","status":"closed","opened_at":"{at}","closed_at":"{at}","lines":[{{"code":"x","amount_cents":{amount},"offer_id":"o{}"}}]}}"#,
                s % 2
            ),
        ),
        3 => event(
            Topic::Messages,
            format!(
                r#"{{"tenant_id":"{tenant}","ts":"{at}","message_id":"m{i}","subject_id":"{subject}","direction":"outbound","channel":"sms","campaign_id":"c{}","offer_id":"o{}","status":"{}","experiment_id":"x1","variant":"{}"}}"#,
                s % 3,
                s % 2,
                // Sent, or an engagement (SPEC §3.8).
                ["sent", "clicked", "replied"][amount as usize % 3],
                if s.is_multiple_of(2) { "control" } else { "treatment" }
            ),
        ),
        _ => unreachable!("kind % 5"),
    }
}

/// Event time moves forward by `step_hours` per event, each event up to
/// `disorder` hours behind; about one in ten is later corrected (same key,
/// later amount) a few events on.
fn stream() -> impl Strategy<Value = Vec<Msg>> {
    (60usize..160, 1i64..12, prop::collection::vec((any::<u8>(), 0i64..6, 0u8..2, 0u8..5, 1u32..5000), 160)).prop_map(
        |(n, step_hours, picks)| {
            let mut out = Vec::new();
            for (i, (kind, back, t, s, amount)) in picks.into_iter().take(n).enumerate() {
                let ts = base() + i as Micros * step_hours * HOUR - back * HOUR;
                let msg = make(kind, i, ts, t, s, amount);
                out.push(msg);
                if amount % 10 == 0 {
                    // A correction: same key, same time, new amount.
                    let again = make(kind, i, ts, t, s, amount + 1);
                    out.push(again);
                }
            }
            out
        },
    )
}

/// Subjects come and go: the subject of event `i` is one of four that live
/// for ten consecutive events (as customers do, for days), so a subject is
/// never idle for longer than ten steps (at most 10 days) while alive, and
/// is never seen again after. Event time moves 6–24 hours per event, each
/// event up to 6 hours behind, over 100–200 events (25–200 days); about one
/// event in ten is corrected and one in fourteen deleted a few events on.
fn subject_stream() -> impl Strategy<Value = Vec<Msg>> {
    (100usize..200, 6i64..24, prop::collection::vec((0u8..5, 0i64..6, 0u8..2, 0u8..4, 1u32..5000), 200)).prop_map(
        |(n, step_hours, picks)| {
            let mut out = Vec::new();
            let mut pending: Vec<(usize, Msg)> = Vec::new();
            for (i, (kind, back, t, s, amount)) in picks.into_iter().take(n).enumerate() {
                let ts = base() + i as Micros * step_hours * HOUR - back * HOUR;
                let subject = format!("s{}-{s}", i / 10);
                let msg = make_as(kind, i, ts, t, &subject, s, amount);
                if amount % 10 == 0 {
                    pending.push((i + 3, make_as(kind, i, ts + HOUR, t, &subject, s, amount + 1)));
                } else if amount % 14 == 1 {
                    pending.push((i + 2, (msg.0, msg.1.clone(), None)));
                }
                out.push(msg);
                let (due, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(at, _)| *at <= i);
                out.extend(due.into_iter().map(|(_, m)| m));
                pending = later;
            }
            out.extend(pending.into_iter().map(|(_, m)| m));
            out
        },
    )
}

/// Every lateness set: periods close after 5 days (corrections come up to
/// three events, 72 hours, later), subjects after 14 idle days, longer
/// than any gap in a subject's life (10 days plus the disorder).
fn subjects_retained() -> MetricsConfig {
    let mut cfg = subjects_plain();
    cfg.retention = RetentionConfig {
        rar_lateness_secs: Some(5 * DAY),
        revenue_per_minute_lateness_secs: Some(5 * DAY),
        attribution_lateness_secs: Some(5 * DAY),
        subject_idle_secs: Some(14 * DAY),
    };
    cfg
}

/// Windows long enough for touches to credit offers often.
fn subjects_plain() -> MetricsConfig {
    MetricsConfig {
        attribution_window_secs: 4 * DAY,
        experiment_window_secs: 2 * DAY,
        retention: RetentionConfig::default(),
        ..MetricsConfig::default()
    }
}

fn send(inputs: &mut Inputs, (topic, key, value): &Msg, seq: u64) {
    inputs.send(*topic, key.clone(), value.clone(), seq);
}

/// Lateness of two days for every period family: longer than the stream's
/// disorder (at most 6 hours), so nothing in it is too late.
fn retained() -> MetricsConfig {
    MetricsConfig {
        retention: RetentionConfig {
            rar_lateness_secs: Some(2 * DAY),
            revenue_per_minute_lateness_secs: Some(2 * DAY),
            attribution_lateness_secs: Some(2 * DAY),
            subject_idle_secs: None,
        },
        attribution_window_secs: DAY,
        experiment_window_secs: DAY,
        ..MetricsConfig::default()
    }
}

/// The metric rows of a state, without retention state.
fn metrics_only(mut state: harness::State) -> harness::State {
    state.retain(|k, _| !k.table.is_state());
    state
}

fn plain() -> MetricsConfig {
    MetricsConfig { retention: RetentionConfig::default(), ..retained() }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn closing_periods_changes_no_result(msgs in stream(), cuts in prop::collection::vec(1usize..40, 1..5), workers in 1usize..3) {
        let batches = harness::split(&msgs, &cuts);
        let (expected, _) = harness::run_dataflow_with(plain(), 1, vec![msgs.clone()], send);
        let (actual, late) = harness::run_dataflow_with(retained(), workers, batches, send);
        let (expected, actual) = (expected.last().cloned().unwrap_or_default(), metrics_only(actual.last().cloned().unwrap_or_default()));
        prop_assert!(late.is_empty(), "nothing is later than the lateness, yet {} rejected", late.len());
        prop_assert!(actual == expected, "{}", harness::diff(&actual, &expected));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Closing subjects changes no result when no subject comes back after
    /// it closed, and subjects do close (state is released).
    #[test]
    fn closing_subjects_changes_no_result(msgs in subject_stream(), cuts in prop::collection::vec(1usize..20, 1..5), workers in 1usize..3) {
        let batches = harness::split(&msgs, &cuts);
        let (expected, _) = harness::run_dataflow_with(subjects_plain(), 1, vec![msgs.clone()], send);
        let (actual, late) = harness::run_dataflow_with(subjects_retained(), workers, batches, send);
        let expected = expected.last().cloned().unwrap_or_default();
        let actual = actual.last().cloned().unwrap_or_default();
        // Lives that closed: `closed_us` is not 0. At least 100 events of at
        // least 6 hours each, in batches of under 20, close the first subjects.
        let closed = actual
            .iter()
            .filter(|(k, v)| k.table == Table::StateOpenSubjects && v.last() != Some(&revpulse_pipelines::row::Cell::U64(0)))
            .count();
        prop_assert!(late.is_empty(), "nothing is later than the lateness, yet {} rejected", late.len());
        prop_assert!(closed > 0, "subjects closed");
        let actual = metrics_only(actual);
        prop_assert!(actual == expected, "{}", harness::diff(&actual, &expected));
    }

    /// Restarts from the committed watermark and the retention state in
    /// ClickHouse (open subjects, closed experiment subjects and offer
    /// credits) converge to the same tables as one uninterrupted run — also
    /// after a crash that left the sink's state newer than the commit, and
    /// when the restart itself crashes while it replays (its commits then
    /// carry the same watermark) before a third run.
    #[test]
    fn restarts_restore_closed_state(
        msgs in subject_stream(),
        cuts in (20usize..100, 0usize..40),
        sizes in prop::collection::vec(1usize..40, 1..5),
        lost in (0usize..6, 0usize..3),
        workers in 1usize..3,
    ) {
        let a = cuts.0.min(msgs.len());
        let b = (a + cuts.1).min(msgs.len());
        let (expected, _) = harness::run_dataflow_with(subjects_plain(), 1, vec![msgs.clone()], send);
        let first = harness::split(&msgs[..a], &sizes);
        let second = harness::split(&msgs[a..b], &sizes);
        let third = harness::split(&msgs[b..], &sizes);
        let first_committed = first.len().saturating_sub(lost.0);
        // The second run crashes within its replay of the first's messages.
        let second_committed = first.len().saturating_sub(lost.1);
        let all = usize::MAX;
        let actual = harness::run_chain(
            subjects_retained(),
            workers,
            vec![(first, first_committed), (second, second_committed), (third, all)],
            send,
        );
        let expected = expected.last().cloned().unwrap_or_default();
        let actual = metrics_only(actual);
        prop_assert!(actual == expected, "{}", harness::diff(&actual, &expected));
    }
}

#[test]
fn events_of_closed_periods_change_no_period_row() {
    // Ten days of events, then (in the last batch) an impression and a
    // payment from the first day, whose month... day and minute are closed
    // by then (lateness 2 days); the RaR month stays open (January), so a
    // second config closes months quickly to cover RaR too.
    let mut msgs: Vec<Msg> =
        (0..240).map(|i| make(i as u8, i, base() + i as Micros * HOUR, 0, (i % 5) as u8, 100)).collect();
    let mut cfg = retained();
    cfg.retention.rar_lateness_secs = Some(0);
    let late_payment = make(1, 1_000, base() + 12 * HOUR, 0, 1, 777);
    let late_impression = make(0, 1_001, base() - 40 * 24 * HOUR, 0, 1, 777);
    let (before, _) = harness::run_dataflow_with(cfg.clone(), 1, vec![msgs.clone()], send);
    msgs.extend([late_payment, late_impression]);
    let n = msgs.len();
    let (after, late) = harness::run_dataflow_with(cfg, 1, vec![msgs[..n - 2].to_vec(), msgs[n - 2..].to_vec()], send);
    let (before, after) = (before.last().cloned().unwrap_or_default(), after.last().cloned().unwrap_or_default());
    assert_eq!(late, vec![n as u64], "the late impression (seq {n}) is rejected as too late");
    let period = |t: Table| {
        matches!(
            t,
            Table::RarMonthly
                | Table::RarByChannel
                | Table::RarByIntent
                | Table::RevenuePerMinute
                | Table::AttributionDaily
                | Table::OfferAcceptance
        )
    };
    let rows = |s: &harness::State| {
        s.iter().filter(|(k, _)| period(k.table)).map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()
    };
    assert_eq!(rows(&after), rows(&before), "period rows unchanged by events of closed periods");
    // The late payment still counts where no period closes: experiments.
    let exp = |s: &harness::State| {
        s.iter()
            .filter(|(k, _)| k.table == Table::ExperimentVariants)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    assert_ne!(exp(&after), exp(&before), "the late payment still converts a subject of the experiment");
}
