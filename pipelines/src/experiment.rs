//! Experiment lift — SPEC §3.5.
//!
//! A subject's assignment to an experiment is its earliest `messages` record
//! carrying that `experiment_id`, whatever its status or direction (by
//! `sent_at`, or `ts` if absent; ties: smallest `message_id`); its variant is
//! that record's. A subject converts if it has a conversion within
//! `[assignment time, assignment time + window]`.
//!
//! Per variant: `subjects`, `converters`, `conversion_rate = converters /
//! subjects`, `revenue` (every conversion of its subjects inside their
//! windows), `revenue_per_subject`. Per experiment:
//! ```text
//! lift                = cr_t / cr_c − 1                      (null when cr_c = 0)
//! incremental_revenue = (rps_t − rps_c) × subjects_t
//! z                   = (cr_t − cr_c) / √(p̂(1−p̂)(1/n_t + 1/n_c)),  p̂ = (x_t + x_c)/(n_t + n_c)
//! p_value             = erfc(|z| / √2)
//! ```
//! Values that need a missing variant, or a zero denominator, are null.

use std::rc::Rc;

use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use crate::attribution::BySubject;
use crate::conversion::{Conversion, Source};
use crate::event::{Message, Topic, Variant};
use crate::family::{no_period, Family, Record, ReleaseFn, Rules, Streams, NEVER};
use crate::retention::{lifetime_sum_state, state_micros as micros, state_us, SumChange};
use crate::row::{
    ExperimentClosedKey, ExperimentClosedValues, ExperimentLiftKey, ExperimentLiftValues, ExperimentVariantKey,
    ExperimentVariantValues, RowKey, RowVals, Table, TableKey,
};
use crate::subject::{freeze_closed, Closed};
use crate::time::Micros;
use crate::types::Text;
use crate::types::F64;
use crate::upsert::Epoch;
use differential_dataflow::difference::Multiply as _;
use timely::dataflow::operators::vec::Map as _;

pub fn variant_name(v: Variant) -> &'static str {
    match v {
        Variant::Control => "control",
        Variant::Treatment => "treatment",
    }
}

/// What the per-subject reduce sees: its assignment (sorts first), then its
/// conversions inside the window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum SubjectIn {
    Assigned(Variant),
    Converted { source: Source, id: Text, cents: u128 },
}

crate::additive! {
    /// Per-variant sums.
    pub struct VariantSums {
        pub subjects: i64,
        pub converters: i64,
        pub cents: i128,
    }
}

impl VariantSums {
    pub fn conversion_rate(&self) -> Option<f64> {
        (self.subjects > 0).then(|| self.converters as f64 / self.subjects as f64)
    }
    pub fn revenue(&self) -> f64 {
        self.cents as f64 / 100.0
    }
    pub fn revenue_per_subject(&self) -> Option<f64> {
        (self.subjects > 0).then(|| self.revenue() / self.subjects as f64)
    }
}

/// Experiment-level figures; `None` is SQL NULL.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lift {
    pub lift: Option<f64>,
    pub incremental_revenue: Option<f64>,
    pub z: Option<f64>,
    pub p_value: Option<f64>,
}

/// Lift, incremental revenue and the pooled two-proportion z test from the
/// control and treatment sums (either may be missing).
pub fn lift(control: Option<&VariantSums>, treatment: Option<&VariantSums>) -> Lift {
    let (Some(c), Some(t)) = (control, treatment) else { return Lift::default() };
    let (Some(cr_c), Some(cr_t)) = (c.conversion_rate(), t.conversion_rate()) else { return Lift::default() };
    let lift = (cr_c != 0.0).then(|| cr_t / cr_c - 1.0);
    let incremental_revenue =
        c.revenue_per_subject().zip(t.revenue_per_subject()).map(|(rc, rt)| (rt - rc) * t.subjects as f64);
    let (n_t, n_c) = (t.subjects as f64, c.subjects as f64);
    let p = (t.converters + c.converters) as f64 / (n_t + n_c);
    let se = (p * (1.0 - p) * (1.0 / n_t + 1.0 / n_c)).sqrt();
    let z = (se > 0.0 && se.is_finite()).then(|| (cr_t - cr_c) / se);
    let p_value = z.map(|z| libm::erfc(z.abs() / std::f64::consts::SQRT_2));
    Lift { lift, incremental_revenue, z, p_value }
}

/// A subject in an experiment: (tenant, experiment, subject).
pub type ExperimentSubject = (Text, Text, Text);

/// Per-(tenant, experiment) variant sums.
type Variants<'s> = VecCollection<'s, Epoch, ((Text, Text), (Variant, VariantSums))>;

/// The assignment of every subject: ((tenant, experiment, subject), (time, variant)).
pub fn assignments<'s>(
    messages: VecCollection<'s, Epoch, (Text, Message)>,
) -> VecCollection<'s, Epoch, (ExperimentSubject, (Micros, Variant))> {
    messages
        .flat_map(|(_, m)| {
            let (experiment, variant) = (m.experiment_id?, m.variant?);
            let time = m.sent_at.unwrap_or(m.ts).0;
            Some(((m.tenant_id.0, experiment.0, m.subject_id.0), (time, m.message_id.0, variant)))
        })
        .reduce(|_subject, records, out| {
            // Sorted by (time, message_id): the first is the assignment.
            let (time, _, variant) = records[0].0;
            out.push(((*time, *variant), 1));
        })
}

/// The variant a `variant` column names.
fn variant_named(name: &str) -> Option<Variant> {
    [Variant::Control, Variant::Treatment].into_iter().find(|v| variant_name(*v) == name)
}

/// A `state_experiment_closed` row a start took back: a variant's total
/// as of the watermark in its key.
fn restored_sums(row: (RowKey, RowVals)) -> Option<SumChange<(Text, Text, Variant), VariantSums>> {
    let (key, v) = ExperimentClosedKey::parse(&row)?;
    let sums = VariantSums {
        subjects: v.subjects as i64,
        converters: v.converters as i64,
        cents: i128::from(v.revenue_cents),
    };
    let variant = variant_named(&key.variant)?;
    Some(SumChange::Restored((key.tenant_id, key.experiment_id, variant), micros(key.closed_us), sums))
}

/// A `state_experiment_closed` row: what closed subjects of a variant had
/// contributed in total as of watermark `closed`.
fn closed_row(
    (tenant, experiment, variant): &(Text, Text, Variant),
    closed: Micros,
    v: &VariantSums,
) -> (RowKey, RowVals) {
    let key = ExperimentClosedKey {
        tenant_id: tenant.clone(),
        experiment_id: experiment.clone(),
        variant: variant_name(*variant).into(),
        closed_us: state_us(closed),
    };
    key.row(ExperimentClosedValues {
        subjects: v.subjects.max(0) as u64,
        converters: v.converters.max(0) as u64,
        revenue_cents: v.cents.max(0) as u64,
    })
}

/// The `experiment_variants` and `experiment_lift` rows, and with subject
/// retention the `state_experiment_closed` rows: a closed subject's figures
/// stay in its variant's sums (see [`crate::subject`]), and `restored`
/// carries those of subjects closed before a restart (see
/// [`crate::retention::restorable`]).
pub fn experiments<'s>(
    messages: VecCollection<'s, Epoch, (Text, Message)>,
    by_subject: BySubject<'s>,
    window_secs: u64,
    closed: Option<&Closed<'s>>,
    restored: VecCollection<'s, Epoch, (RowKey, RowVals)>,
) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    let window = window_secs as Micros * 1_000_000;
    let assigned = assignments(messages);
    let conversions =
        assigned.clone().map(|((tenant, experiment, subject), at)| ((tenant, subject), (experiment, at))).join_core(
            by_subject,
            move |(tenant, subject), (experiment, (time, _)): &(Text, (Micros, Variant)), c: &Conversion| {
                (c.time >= *time && c.time <= time + window).then(|| {
                    let input = SubjectIn::Converted { source: c.source, id: c.id.clone(), cents: c.revenue_cents };
                    ((tenant.clone(), experiment.clone(), subject.clone()), input)
                })
            },
        );
    let per_subject = assigned
        .map(|(subject, (_, variant))| (subject, SubjectIn::Assigned(variant)))
        .concat(conversions)
        .reduce(|_subject, inputs, out| {
            let Some((SubjectIn::Assigned(variant), _)) = inputs.first() else { return };
            let cents: u128 = inputs
                .iter()
                .map(|(i, _)| match i {
                    SubjectIn::Converted { cents, .. } => *cents,
                    SubjectIn::Assigned(_) => 0,
                })
                .sum();
            out.push(((*variant, inputs.len() > 1, cents), 1));
        });
    let sums = |((tenant, experiment, _), (variant, converted, cents)): (ExperimentSubject, (Variant, bool, u128))| {
        let sums = VariantSums { subjects: 1, converters: i64::from(converted), cents: cents as i128 };
        ((tenant, experiment, variant), sums)
    };
    // Only a dataflow that closes subjects takes back what closed ones kept;
    // without retention every subject is rebuilt from its records.
    let (per_subject, closed_state) = match closed {
        Some(closed) => {
            let restored = restored.flat_map(restored_sums);
            let (kept, frozen) =
                freeze_closed(per_subject, closed, "Freeze closed experiment subjects", |((t, _, s), _)| {
                    Some((t.clone(), s.clone()))
                });
            let closes = frozen.inner.map(move |((entry, w), _, r)| {
                let (key, sums) = sums(entry);
                SumChange::Closed(key, w, sums.multiply(&r))
            });
            let state = lifetime_sum_state(restored, closes, "Log closed experiment subjects", closed_row);
            (kept, Some(state))
        }
        None => (per_subject, None),
    };
    let mut contributions = per_subject.explode(move |entry| Some(sums(entry)));
    if let Some((_, restored)) = &closed_state {
        contributions = contributions.concat(restored.clone());
    }
    let variants: Variants<'s> = contributions
        .count_total()
        .map(|((tenant, experiment, variant), sums)| ((tenant, experiment), (variant, sums)));

    let variant_rows = variants.clone().map(|((tenant_id, experiment_id), (variant, v))| {
        let values = ExperimentVariantValues {
            subjects: v.subjects.max(0) as u64,
            converters: v.converters.max(0) as u64,
            conversion_rate: v.conversion_rate().unwrap_or(0.0),
            revenue: v.revenue(),
            revenue_per_subject: v.revenue_per_subject().unwrap_or(0.0),
        };
        ExperimentVariantKey { tenant_id, experiment_id, variant: variant_name(variant).into() }.row(values)
    });
    let lift_rows = variants
        .reduce(|_experiment, arms, out| {
            let arm = |want: Variant| arms.iter().find(|((v, _), _)| *v == want).map(|((_, sums), _)| sums);
            let l = lift(arm(Variant::Control), arm(Variant::Treatment));
            let finite = |x: Option<f64>| x.filter(|v| v.is_finite()).map(F64);
            out.push(([finite(l.lift), finite(l.incremental_revenue), finite(l.z), finite(l.p_value)], 1));
        })
        .map(|((tenant_id, experiment_id), [lift, incremental_revenue, z, p_value])| {
            let unwrap = |x: Option<F64>| x.map(|v| v.0);
            let values = ExperimentLiftValues {
                lift: unwrap(lift),
                incremental_revenue: unwrap(incremental_revenue),
                z: unwrap(z),
                p_value: unwrap(p_value),
            };
            ExperimentLiftKey { tenant_id, experiment_id }.row(values)
        });
    let rows = variant_rows.concat(lift_rows);
    match closed_state {
        Some((closed_rows, _)) => rows.concat(closed_rows),
        None => rows,
    }
}

/// Experiment lift (SPEC §3.5), over the assignments and conversions held
/// per subject: an experiment message is done with once its window has
/// passed and its subject could have been idle since, a conversion once
/// its subject could have been idle since it.
pub const FAMILY: Family = Family {
    name: "experiments",
    inputs: &[Topic::Messages, Topic::Payments, Topic::RoUpdates],
    tables: &[Table::ExperimentVariants, Table::ExperimentLift],
    state: &[Table::StateExperimentClosed],
    own_copy: true,
    release: release_rule,
    row_period: no_period,
    build,
};

fn release_rule(rules: &Rules) -> Option<ReleaseFn> {
    let (idle, window) = (rules.lateness.subject?, rules.experiment_window);
    Some(Rc::new(move |r: Record<'_>| r.window_end(window).map_or(NEVER, |end| end.saturating_add(idle))))
}

fn build<'s>(s: &Streams<'_, 's>) -> VecCollection<'s, Epoch, (RowKey, RowVals)> {
    experiments(
        s.held.assignments.clone(),
        s.experiment_by_subject.clone(),
        s.cfg.experiment_window_secs,
        s.held.closed.as_ref(),
        s.restored.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(subjects: i64, converters: i64, cents: i128) -> VariantSums {
        VariantSums { subjects, converters, cents }
    }

    #[test]
    fn lift_and_z_test() {
        let l = lift(Some(&v(1000, 100, 1_000_000)), Some(&v(1000, 130, 1_500_000)));
        assert!((l.lift.unwrap_or_default() - 0.3).abs() < 1e-12);
        assert!((l.incremental_revenue.unwrap_or_default() - 5_000.0).abs() < 1e-9);
        // p̂ = 0.115, se = sqrt(0.115·0.885·0.002) = 0.014267..., z = 0.03 / se
        assert!((l.z.unwrap_or_default() - 2.1028).abs() < 1e-3);
        assert!((l.p_value.unwrap_or_default() - 0.03548).abs() < 1e-3);
    }

    #[test]
    fn nulls_where_spec_says() {
        assert_eq!(lift(None, Some(&v(10, 1, 0))), Lift::default());
        let l = lift(Some(&v(10, 0, 0)), Some(&v(10, 2, 0)));
        assert_eq!(l.lift, None);
        assert!(l.z.is_some());
        let l = lift(Some(&v(10, 0, 0)), Some(&v(10, 0, 0)));
        assert_eq!((l.lift, l.z, l.p_value), (None, None, None));
        assert_eq!(l.incremental_revenue, Some(0.0));
    }
}
