//! Payment recovery — SPEC §3.7.
//!
//! Over the current `payments` records of each (tenant, subject), with the
//! window `W` (`recovery_window_secs`, default 7 days):
//!
//! ```text
//! failed f is recovered   ⇔ ∃ succeeded s: f.ts < s.ts ≤ f.ts + W
//! succeeded s is a recovery ⇔ ∃ failed f:  s.ts − W ≤ f.ts < s.ts
//! per UTC day: failed     = failed payments with ts in the day
//!              recovered  = those of them that are recovered
//!              recovery_rate = recovered / failed   (null when failed = 0)
//!              recoveries = recoveries with ts in the day
//!              recovered_revenue = Σ their amount_cents / 100
//! ```
//!
//! A day exists while failed > 0 or recoveries > 0; refunded payments take
//! no part. A retry that reuses the failed payment's `payment_id` replaces
//! it (upsert) and is a plain conversion. One `reduce` per subject over its
//! payments (a subject has few), then a sum per (tenant, day).
//!
//! With retention (`attribution_lateness_secs`, the day-keyed families'
//! lateness) a day's row is final once the watermark passes the end of the
//! day plus `W` plus the lateness: a failure of the day may be recovered
//! until `W` after it. A payment is kept until every row it can change is
//! final — its own day's and those of the payments it matches, up to `W`
//! later.

use std::rc::Rc;

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use crate::event::{Payment, PaymentStatus, Topic};
use crate::family::{Family, Record, ReleaseFn, Rules, Streams, NEVER};
use crate::retention::{self, day_end, Lateness};
use crate::row::{Date, PaymentRecoveryKey, PaymentRecoveryValues, RowKey, RowVals, Table, TableKey};
use crate::time::{day_of, Day, Micros};
use crate::types::Text;
use crate::upsert::Epoch;

/// A payment as recovery sees it; the derived order is by time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attempt {
    pub ts: Micros,
    pub payment_id: Text,
    pub succeeded: bool,
    pub cents: u64,
}

/// One subject's contribution to one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DayCounts {
    pub failed: u64,
    pub recovered: u64,
    pub recoveries: u64,
    pub cents: u128,
}

impl DayCounts {
    /// Adds `n` subjects' `o`.
    fn add(&mut self, o: &DayCounts, n: u64) {
        self.failed += n * o.failed;
        self.recovered += n * o.recovered;
        self.recoveries += n * o.recoveries;
        self.cents += u128::from(n) * o.cents;
    }
}

/// The per-day counts of one subject's payments, given in time order.
pub fn subject_days(attempts: &[&Attempt], window: Micros) -> Vec<(Day, DayCounts)> {
    let mut days: std::collections::BTreeMap<Day, DayCounts> = std::collections::BTreeMap::new();
    let successes: Vec<Micros> = attempts.iter().filter(|a| a.succeeded).map(|a| a.ts).collect();
    let failures: Vec<Micros> = attempts.iter().filter(|a| !a.succeeded).map(|a| a.ts).collect();
    for a in attempts {
        let d = days.entry(day_of(a.ts)).or_default();
        if a.succeeded {
            // Some failure in [ts − W, ts).
            let from = a.ts.saturating_sub(window);
            let i = failures.partition_point(|f| *f < from);
            if failures.get(i).is_some_and(|f| *f < a.ts) {
                d.recoveries += 1;
                d.cents += u128::from(a.cents);
            }
        } else {
            d.failed += 1;
            // Some success in (ts, ts + W].
            let i = successes.partition_point(|s| *s <= a.ts);
            if successes.get(i).is_some_and(|s| *s <= a.ts.saturating_add(window)) {
                d.recovered += 1;
            }
        }
    }
    days.into_iter().filter(|(_, c)| c.failed > 0 || c.recoveries > 0).collect()
}

/// The counts of every (tenant, day) with a failure or a recovery.
pub fn days<'s>(
    payments: VecCollection<'s, Epoch, (Text, Payment)>,
    retained: Option<&retention::Retained<'s>>,
    window: Micros,
) -> VecCollection<'s, Epoch, ((Text, Day), DayCounts)> {
    let attempts = payments.flat_map(|(_, p)| {
        let succeeded = match p.status {
            PaymentStatus::Succeeded => true,
            PaymentStatus::Failed => false,
            PaymentStatus::Refunded => return None,
        };
        let attempt = Attempt { ts: p.ts.0, payment_id: p.payment_id.0, succeeded, cents: p.amount_cents.0 };
        Some(((p.tenant_id.0, p.subject_id.0), attempt))
    });
    let attempts = retention::retain(
        attempts,
        retained,
        |l| l.payment_recovery,
        "Retain: payment recovery",
        move |(_, a)| day_end(day_of(a.ts.saturating_add(window))),
    );
    attempts
        .reduce(move |_subject, attempts, out| {
            let attempts: Vec<&Attempt> = attempts.iter().map(|(a, _)| *a).collect();
            out.extend(subject_days(&attempts, window).into_iter().map(|d| (d, 1)));
        })
        .map(|((tenant, _subject), (day, counts))| ((tenant, day), counts))
        .reduce(|_day, counts, out| {
            let mut total = DayCounts::default();
            for (c, n) in counts {
                total.add(c, (*n).max(0) as u64);
            }
            out.push((total, 1));
        })
}

/// The `payment_recovery` rows.
pub fn rows<'s>(
    days: VecCollection<'s, Epoch, ((Text, Day), DayCounts)>,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    days.map(|((tenant_id, day), c)| {
        PaymentRecoveryKey { tenant_id, day: Date(day) }.row(PaymentRecoveryValues {
            failed: c.failed,
            recovered: c.recovered,
            recovery_rate: (c.failed > 0).then(|| c.recovered as f64 / c.failed as f64),
            recoveries: c.recoveries,
            recovered_revenue: c.cents as f64 / 100.0,
        })
    })
}

/// Payment recovery (SPEC §3.7): day-keyed, each day final `W` plus the
/// lateness after its end.
pub const FAMILY: Family = Family {
    name: "payment_recovery",
    inputs: &[Topic::Payments],
    tables: &[Table::PaymentRecovery],
    state: &[],
    own_copy: true,
    release,
    row_period,
    build,
};

/// A payment is kept until the day of `ts + W` is final: the latest row it
/// can change is that day's (a failure recovered by a success up to `W`
/// later), and a day is final its end plus `W` plus the lateness.
fn release(rules: &Rules) -> Option<ReleaseFn> {
    let (lateness, window) = (rules.lateness.payment_recovery?, rules.recovery_window);
    Some(Rc::new(move |r: Record<'_>| match r {
        Record::Payment(p) => day_end(day_of(p.ts.0.saturating_add(window))).saturating_add(lateness),
        _ => NEVER,
    }))
}

fn row_period(l: &Lateness, key: &RowKey) -> Option<(Micros, Micros)> {
    let day = PaymentRecoveryKey::of(key)?.day;
    Some((l.payment_recovery?, day_end(day.0)))
}

fn build<'s>(s: &Streams<'_, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    rows(days(s.current.payments.clone(), s.retained, s.cfg.recovery_window()))
}
