//! revpulse pipelines: the event model (SPEC §2) and the differential
//! dataflow operators that maintain the metric families (SPEC §3).
//! "SPEC §N" throughout the code is a section of `docs/spec.md`, the
//! product contract; `docs/metrics.md` gives the readings chosen.
//!
//! Map: [`event`] decodes and validates input, [`upsert`] turns each topic
//! into a collection of current versions, one module per metric family
//! ([`rar`] …) turns those into [`row`]s and declares itself ([`family`]),
//! and [`dataflow`] wires the declared families up.

pub mod attribution;
pub mod config;
pub mod conversion;
pub mod dataflow;
pub mod deals;
pub mod diff;
pub mod event;
pub mod exact;
pub mod experiment;
pub mod fact_coverage;
pub mod family;
pub mod fixed;
pub mod funnel;
pub mod lead_score;
pub mod next_buy;
pub mod rar;
pub mod recovery;
pub mod retention;
pub mod revenue_per_minute;
pub mod row;
pub mod subject;
pub mod time;
pub mod types;
pub mod upsert;
