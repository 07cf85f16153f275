//! Conversions (SPEC §3): a payment with status `succeeded` (revenue =
//! amount, time = `ts`) or an RO with status `closed` (revenue = sum of line
//! amounts, time = `closed_at`). Shared by revenue per minute, attribution
//! and experiment lift.

use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

use crate::event::{Payment, PaymentStatus, RoStatus, RoUpdate};
use crate::time::Micros;
use crate::types::Text;
use crate::upsert::Epoch;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Source {
    Payments,
    Ro,
}

impl Source {
    /// The `source` column value of `revenue_per_minute`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Payments => "payments",
            Source::Ro => "ro",
        }
    }
}

/// One conversion.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Conversion {
    pub tenant: Text,
    pub subject: Text,
    pub source: Source,
    /// `payment_id` or `ro_id`.
    pub id: Text,
    pub time: Micros,
    pub revenue_cents: u128,
    /// RO lines that name an offer: (offer_id, amount_cents).
    pub offer_lines: Vec<(Text, u64)>,
}

/// The conversion a payment is, if any.
pub fn of_payment(p: &Payment) -> Option<Conversion> {
    (p.status == PaymentStatus::Succeeded).then(|| Conversion {
        tenant: p.tenant_id.0.clone(),
        subject: p.subject_id.0.clone(),
        source: Source::Payments,
        id: p.payment_id.0.clone(),
        time: p.ts.0,
        revenue_cents: u128::from(p.amount_cents.0),
        offer_lines: Vec::new(),
    })
}

/// The conversion a repair order is, if any.
pub fn of_ro(r: &RoUpdate) -> Option<Conversion> {
    let closed_at = r.closed_at?;
    (r.status == RoStatus::Closed).then(|| Conversion {
        tenant: r.tenant_id.0.clone(),
        subject: r.subject_id.0.clone(),
        source: Source::Ro,
        id: r.ro_id.0.clone(),
        time: closed_at.0,
        revenue_cents: r.lines.iter().map(|l| u128::from(l.amount_cents.0)).sum(),
        offer_lines: r
            .lines
            .iter()
            .filter_map(|l| l.offer_id.as_ref().map(|o| (o.0.clone(), l.amount_cents.0)))
            .collect(),
    })
}

/// All current conversions.
pub fn conversions<'s>(
    payments: VecCollection<'s, Epoch, (Text, Payment)>,
    ros: VecCollection<'s, Epoch, (Text, RoUpdate)>,
) -> VecCollection<'s, Epoch, Conversion> {
    payments.flat_map(|(_, p)| of_payment(&p)).concat(ros.flat_map(|(_, r)| of_ro(&r)))
}
