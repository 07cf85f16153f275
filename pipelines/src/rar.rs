//! Revenue at Risk — SPEC §3.1.
//!
//! Per impressions record:
//! ```text
//! sess_ai          = impressions × share_ai_snippet × ctr_baseline
//! zero_click       = sess_ai × ctr_drop_when_ai
//! lost_leads       = zero_click × lead_cr
//! lost_sales       = lost_leads × close_rate
//! rar              = lost_sales × avg_gross
//! recoverable      = rar × recoverable_share
//! baseline_revenue = impressions × ctr_baseline × lead_cr × close_rate × avg_gross
//! ```
//! summed per tenant × month (of `ts`), with `rar`/`recoverable` also per
//! channel and per intent cluster; `pressure = rar / baseline_revenue` (0 when
//! the baseline is 0) and `top_intents`, the 5 intents with the highest `rar`
//! (ties by name ascending).
//!
//! The sums are the *difference type* of the collections (`explode` then
//! `count_total`), so an update costs O(1) per group however many records the
//! group holds; retractions of replaced versions subtract exactly.

use std::rc::Rc;

use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;

use crate::event::{Impression, Topic};
use crate::family::{Family, Record, ReleaseFn, Rules, Streams, NEVER};
use crate::fixed::{ratio, to_f64, to_fixed, Fixed};
use crate::retention::{month_end, Lateness};
use crate::row::{
    Date, RarByChannelKey, RarByChannelValues, RarByIntentKey, RarByIntentValues, RarMonthlyKey, RarMonthlyValues,
    RowKey, RowVals, Table, TableKey,
};
use crate::time::{month_of, Micros};
use crate::types::Text;
use crate::upsert::Epoch;

/// How many intents `top_intents` lists.
pub const TOP_INTENTS: usize = 5;

crate::additive! {
    /// The additive RaR measures of a set of impressions records, in fixed point.
    pub struct RarSums {
        /// Number of contributing records: a group exists while this is non-zero.
        pub records: i64,
        pub impressions: i128,
        pub sess_ai: Fixed,
        pub zero_click: Fixed,
        pub lost_leads: Fixed,
        pub lost_sales: Fixed,
        pub rar: Fixed,
        pub recoverable: Fixed,
        pub baseline_revenue: Fixed,
    }
}

impl RarSums {
    /// The contribution of one record; each measure is rounded once.
    pub fn of(r: &Impression) -> RarSums {
        let imp = r.impressions.0 as f64;
        let sess_ai = imp * r.share_ai_snippet.get() * r.ctr_baseline.get();
        let zero_click = sess_ai * r.ctr_drop_when_ai.get();
        let lost_leads = zero_click * r.lead_cr.get();
        let lost_sales = lost_leads * r.close_rate.get();
        let rar = lost_sales * r.avg_gross.get();
        let recoverable = rar * r.recoverable_share.get();
        let baseline = imp * r.ctr_baseline.get() * r.lead_cr.get() * r.close_rate.get() * r.avg_gross.get();
        RarSums {
            records: 1,
            impressions: i128::from(r.impressions.0),
            sess_ai: to_fixed(sess_ai),
            zero_click: to_fixed(zero_click),
            lost_leads: to_fixed(lost_leads),
            lost_sales: to_fixed(lost_sales),
            rar: to_fixed(rar),
            recoverable: to_fixed(recoverable),
            baseline_revenue: to_fixed(baseline),
        }
    }

    /// `rar / baseline_revenue`, in [0, 1]; 0 when the baseline is 0.
    pub fn pressure(&self) -> f64 {
        ratio(self.rar, self.baseline_revenue).clamp(0.0, 1.0)
    }
}

/// The `rar_monthly` values of a month's sums.
pub fn monthly_vals(s: &RarSums, top_intents: Vec<Text>) -> RarMonthlyValues {
    RarMonthlyValues {
        impressions: u64::try_from(s.impressions).unwrap_or(u64::MAX),
        sess_ai: to_f64(s.sess_ai),
        zero_click: to_f64(s.zero_click),
        lost_leads: to_f64(s.lost_leads),
        lost_sales: to_f64(s.lost_sales),
        rar: to_f64(s.rar),
        recoverable: to_f64(s.recoverable),
        baseline_revenue: to_f64(s.baseline_revenue),
        pressure: s.pressure(),
        top_intents,
    }
}

/// The 5 highest-`rar` intents of a month from `(intent, rar)` pairs.
pub fn top_intents<'a>(intents: impl IntoIterator<Item = (&'a str, Fixed)>) -> Vec<Text> {
    let mut v: Vec<(Fixed, &str)> = intents.into_iter().map(|(i, r)| (-r, i)).collect();
    v.sort_unstable();
    v.into_iter().take(TOP_INTENTS).map(|(_, i)| Text::from(i)).collect()
}

/// Builds the three RaR tables from the current impressions records.
pub fn rar<'s>(
    impressions: VecCollection<'s, Epoch, (Text, Impression)>,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    let contributions = impressions.map(|(_, r)| {
        let sums = RarSums::of(&r);
        (r.tenant_id.0, month_of(r.ts.0), r.channel.0, r.intent_cluster.0, sums)
    });

    let monthly = contributions.clone().explode(|(t, m, _, _, s)| Some(((t, m), s))).count_total();
    let by_channel = contributions.clone().explode(|(t, m, c, _, s)| Some(((t, m, c), s))).count_total();
    let by_intent = contributions.explode(|(t, m, _, i, s)| Some(((t, m, i), s))).count_total();

    // Sorting `(-rar, intent)` ascending is rar descending, ties by name.
    let top = by_intent.clone().map(|((t, m, i), s)| ((t, m), (-s.rar, i))).reduce(|_month, ranked, out| {
        let top: Vec<Text> = ranked.iter().take(TOP_INTENTS).map(|((_, i), _)| i.clone()).collect();
        out.push((top, 1));
    });

    let monthly_rows = monthly
        .join(top)
        .map(|((tenant_id, m), (s, top))| RarMonthlyKey { tenant_id, month: Date(m) }.row(monthly_vals(&s, top)));
    let channel_rows = by_channel.map(|((tenant_id, m, channel), s)| {
        let values = RarByChannelValues { rar: to_f64(s.rar), recoverable: to_f64(s.recoverable) };
        RarByChannelKey { tenant_id, month: Date(m), channel }.row(values)
    });
    let intent_rows = by_intent.map(|((tenant_id, m, intent_cluster), s)| {
        let values = RarByIntentValues { rar: to_f64(s.rar), recoverable: to_f64(s.recoverable) };
        RarByIntentKey { tenant_id, month: Date(m), intent_cluster }.row(values)
    });
    monthly_rows.concat(channel_rows).concat(intent_rows)
}

/// Revenue at Risk (SPEC §3.1): impressions are done with once their
/// month is closed.
pub const FAMILY: Family = Family {
    name: "rar",
    inputs: &[Topic::Impressions],
    tables: &[Table::RarMonthly, Table::RarByChannel, Table::RarByIntent],
    state: &[],
    own_copy: false,
    release: release_rule,
    row_period,
    build,
};

fn release_rule(rules: &Rules) -> Option<ReleaseFn> {
    let lateness = rules.lateness.rar?;
    Some(Rc::new(move |r: Record<'_>| match r {
        Record::Impression(i) => month_end(month_of(i.ts.0)).saturating_add(lateness),
        _ => NEVER,
    }))
}

fn row_period(l: &Lateness, key: &RowKey) -> Option<(Micros, Micros)> {
    let month = match key.table {
        Table::RarMonthly => RarMonthlyKey::of(key)?.month,
        Table::RarByChannel => RarByChannelKey::of(key)?.month,
        Table::RarByIntent => RarByIntentKey::of(key)?.month,
        _ => return None,
    };
    Some((l.rar?, month_end(month.0)))
}

fn build<'s>(s: &Streams<'_, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    rar(s.current.impressions.clone())
}
