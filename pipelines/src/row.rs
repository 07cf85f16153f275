//! Output rows: the metric tables of SPEC §4, as the dataflow emits them.
//!
//! Every metric operator ends in a collection of `(RowKey, RowVals)`; the
//! ClickHouse sink and `replay --output json` both render rows from this one
//! description, so column names and order live here and in the migrations
//! only (a test checks the two agree).

use serde::{Deserialize, Serialize};

use crate::time::{day_of, format_day, format_minute, parse_rfc3339, Day, MICROS_PER_SECOND};
use crate::types::{Text, F64};

/// ClickHouse column types used by metric tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    String,
    Date,
    DateTime,
    Float64,
    UInt64,
    NullableFloat64,
    ArrayString,
}

impl ColType {
    pub fn sql(self) -> &'static str {
        match self {
            ColType::String => "String",
            ColType::Date => "Date",
            ColType::DateTime => "DateTime",
            ColType::Float64 => "Float64",
            ColType::UInt64 => "UInt64",
            ColType::NullableFloat64 => "Nullable(Float64)",
            ColType::ArrayString => "Array(String)",
        }
    }
}

impl ColType {
    /// A key or state cell read back from ClickHouse's JSON rendering, as
    /// the sink selects it (dates `YYYY-MM-DD`, minutes RFC 3339, integers
    /// unquoted). Values that do not parse read as the type's zero: only
    /// what revpulse itself wrote is read back.
    pub fn cell_from_json(self, v: Option<&serde_json::Value>) -> Cell {
        let text = v.and_then(|v| v.as_str()).unwrap_or_default();
        match self {
            ColType::Date => Cell::Date(day_of(parse_rfc3339(&format!("{text}T00:00:00Z")).unwrap_or_default())),
            ColType::DateTime => Cell::Minute((parse_rfc3339(text).unwrap_or_default() / MICROS_PER_SECOND) as u32),
            ColType::UInt64 => Cell::U64(v.and_then(|v| v.as_u64()).unwrap_or_default()),
            _ => Cell::Str(text.into()),
        }
    }
}

/// One value of a row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Cell {
    Str(Text),
    /// Days since the epoch.
    Date(Day),
    /// Seconds since the epoch, whole minutes.
    Minute(u32),
    F64(F64),
    U64(u64),
    NullF64(Option<F64>),
    StrArray(Vec<Text>),
}

impl Cell {
    pub fn f64(v: f64) -> Cell {
        Cell::F64(F64(v))
    }

    /// The JSON rendering of SPEC §4: dates `YYYY-MM-DD`, minutes
    /// `YYYY-MM-DDTHH:MM:00Z`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Cell::Str(s) => Value::from(s.as_str()),
            Cell::Date(d) => Value::from(format_day(*d)),
            Cell::Minute(m) => Value::from(format_minute(*m)),
            Cell::F64(v) => Value::from(v.0),
            Cell::U64(v) => Value::from(*v),
            Cell::NullF64(v) => v.map_or(Value::Null, |v| Value::from(v.0)),
            Cell::StrArray(v) => Value::from(v.iter().map(|s| s.as_str()).collect::<Vec<_>>()),
        }
    }

    /// The value a deleted row carries in this column.
    pub fn zero(ty: ColType) -> Cell {
        match ty {
            ColType::String => Cell::Str(Text::default()),
            ColType::Date => Cell::Date(0),
            ColType::DateTime => Cell::Minute(0),
            ColType::Float64 => Cell::f64(0.0),
            ColType::UInt64 => Cell::U64(0),
            ColType::NullableFloat64 => Cell::NullF64(None),
            ColType::ArrayString => Cell::StrArray(Vec::new()),
        }
    }
}

/// The metric tables (SPEC §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Table {
    RarMonthly,
    RarByChannel,
    RarByIntent,
    LeadScores,
    ConversationRpm,
    RevenuePerMinute,
    AttributionDaily,
    OfferAcceptance,
    ExperimentVariants,
    ExperimentLift,
    /// Retention state (docs/retention.md, "State tables"): each life of a
    /// subject — the watermark it opened under, its `since`, and the
    /// watermark it closed under (0 while open).
    StateOpenSubjects,
    /// Retention state: what closed experiment subjects contributed, per
    /// watermark they closed under (0: compacted at a start).
    StateExperimentClosed,
    /// Retention state: what conversions of closed days contributed to
    /// offer acceptance, per watermark the days closed under.
    StateOfferClosed,
}

type Cols = &'static [(&'static str, ColType)];

impl Table {
    /// The metric tables of SPEC §4.
    pub const METRICS: [Table; 10] = [
        Table::RarMonthly,
        Table::RarByChannel,
        Table::RarByIntent,
        Table::LeadScores,
        Table::ConversationRpm,
        Table::RevenuePerMinute,
        Table::AttributionDaily,
        Table::OfferAcceptance,
        Table::ExperimentVariants,
        Table::ExperimentLift,
    ];

    /// The tables that hold retention state: written like metric tables
    /// (exactly once, with the offsets they cover) and read back at start-up.
    pub const STATE: [Table; 3] = [Table::StateOpenSubjects, Table::StateExperimentClosed, Table::StateOfferClosed];

    /// Every table revpulse writes: the metrics, then the state.
    pub fn all() -> impl Iterator<Item = Table> {
        Table::METRICS.into_iter().chain(Table::STATE)
    }

    pub fn is_state(self) -> bool {
        Table::STATE.contains(&self)
    }

    pub fn name(self) -> &'static str {
        match self {
            Table::RarMonthly => "rar_monthly",
            Table::RarByChannel => "rar_by_channel",
            Table::RarByIntent => "rar_by_intent",
            Table::LeadScores => "lead_scores",
            Table::ConversationRpm => "conversation_rpm",
            Table::RevenuePerMinute => "revenue_per_minute",
            Table::AttributionDaily => "attribution_daily",
            Table::OfferAcceptance => "offer_acceptance",
            Table::ExperimentVariants => "experiment_variants",
            Table::ExperimentLift => "experiment_lift",
            Table::StateOpenSubjects => "state_open_subjects",
            Table::StateExperimentClosed => "state_experiment_closed",
            Table::StateOfferClosed => "state_offer_closed",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::all().find(|t| t.name() == name)
    }

    pub fn key_columns(self) -> Cols {
        use ColType::*;
        match self {
            Table::RarMonthly => &[("tenant_id", String), ("month", Date)],
            Table::RarByChannel => &[("tenant_id", String), ("month", Date), ("channel", String)],
            Table::RarByIntent => &[("tenant_id", String), ("month", Date), ("intent_cluster", String)],
            Table::LeadScores => &[("tenant_id", String), ("subject_id", String)],
            Table::ConversationRpm => &[("tenant_id", String), ("conversation_id", String)],
            Table::RevenuePerMinute => &[("tenant_id", String), ("minute", DateTime), ("source", String)],
            Table::AttributionDaily => {
                &[("tenant_id", String), ("day", Date), ("model", String), ("campaign_id", String)]
            }
            Table::OfferAcceptance => &[("tenant_id", String), ("offer_id", String)],
            Table::ExperimentVariants => &[("tenant_id", String), ("experiment_id", String), ("variant", String)],
            Table::ExperimentLift => &[("tenant_id", String), ("experiment_id", String)],
            Table::StateOpenSubjects => &[("tenant_id", String), ("subject_id", String), ("opened_us", UInt64)],
            Table::StateExperimentClosed => {
                &[("tenant_id", String), ("experiment_id", String), ("variant", String), ("closed_us", UInt64)]
            }
            Table::StateOfferClosed => &[("tenant_id", String), ("offer_id", String), ("closed_us", UInt64)],
        }
    }

    pub fn value_columns(self) -> Cols {
        use ColType::*;
        match self {
            Table::RarMonthly => &[
                ("impressions", UInt64),
                ("sess_ai", Float64),
                ("zero_click", Float64),
                ("lost_leads", Float64),
                ("lost_sales", Float64),
                ("rar", Float64),
                ("recoverable", Float64),
                ("baseline_revenue", Float64),
                ("pressure", Float64),
                ("top_intents", ArrayString),
            ],
            Table::RarByChannel | Table::RarByIntent => &[("rar", Float64), ("recoverable", Float64)],
            Table::LeadScores => &[
                ("score", Float64),
                ("base", Float64),
                ("behavioral", Float64),
                ("timing", Float64),
                ("market", Float64),
                ("tier", String),
                ("revenue_potential", Float64),
                ("conversion_probability", Float64),
            ],
            Table::ConversationRpm => &[
                ("subject_id", String),
                ("duration_minutes", Float64),
                ("revenue_potential", Float64),
                ("revenue_per_minute", Float64),
            ],
            Table::RevenuePerMinute => &[("revenue", Float64), ("conversions", UInt64)],
            Table::AttributionDaily => &[("conversions", Float64), ("revenue", Float64)],
            Table::OfferAcceptance => &[("accepted_lines", UInt64), ("revenue", Float64)],
            Table::ExperimentVariants => &[
                ("subjects", UInt64),
                ("converters", UInt64),
                ("conversion_rate", Float64),
                ("revenue", Float64),
                ("revenue_per_subject", Float64),
            ],
            Table::ExperimentLift => &[
                ("lift", NullableFloat64),
                ("incremental_revenue", NullableFloat64),
                ("z", NullableFloat64),
                ("p_value", NullableFloat64),
            ],
            // Microseconds since the epoch (0 for earlier instants).
            Table::StateOpenSubjects => &[("since_us", UInt64), ("closed_us", UInt64)],
            Table::StateExperimentClosed => &[("subjects", UInt64), ("converters", UInt64), ("revenue_cents", UInt64)],
            Table::StateOfferClosed => &[("accepted_lines", UInt64), ("revenue_cents", UInt64)],
        }
    }
}

/// The identity of a row: its table and key columns.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowKey {
    pub table: Table,
    pub key: Vec<Cell>,
}

/// The value columns of a row, in [`Table::value_columns`] order.
pub type RowVals = Vec<Cell>;

impl RowKey {
    pub fn new(table: Table, key: Vec<Cell>) -> RowKey {
        RowKey { table, key }
    }
}

/// A string cell.
pub fn s(v: impl Into<Text>) -> Cell {
    Cell::Str(v.into())
}

/// One current row, as `replay --output json` prints it.
pub fn row_json(key: &RowKey, vals: &RowVals) -> serde_json::Value {
    let mut obj = serde_json::Map::new();
    obj.insert("table".into(), key.table.name().into());
    let names = key.table.key_columns().iter().chain(key.table.value_columns());
    for ((name, _), cell) in names.zip(key.key.iter().chain(vals)) {
        obj.insert((*name).into(), cell.to_json());
    }
    serde_json::Value::Object(obj)
}
