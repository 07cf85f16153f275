//! Output rows: the tables of SPEC §4, as the dataflow emits them.
//!
//! Each table is declared once, in [`tables`]: its name, key and value
//! columns with their types. Operators build a table's typed key and values
//! ([`TableKey::row`]) and readers parse them back ([`TableKey::parse`]);
//! between the two, every table shares one form, `(RowKey, RowVals)`, so the
//! dataflow carries all tables in one collection and the ClickHouse sink,
//! the RowBinary encoder and `replay --output json` render any row from the
//! column lists. The migrations are checked against the same lists (a test
//! compares them with `system.columns`), and the API's queries are
//! generated from them.

use serde::{Deserialize, Serialize};

use std::fmt;

use crate::time::{day_of, format_day, format_minute, parse_month, parse_rfc3339, Day, Micros, MICROS_PER_SECOND};
use crate::types::{Text, F64};

mod tables;

pub use tables::*;

/// ClickHouse column types used by metric tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    String,
    Date,
    DateTime,
    Float64,
    UInt64,
    NullableFloat64,
    NullableUInt64,
    NullableDateTime,
    ArrayString,
}

impl ColType {
    /// Whether the column holds NULLs (read through a one-element tuple,
    /// see [`ColType::sql`]'s users).
    pub fn nullable(self) -> bool {
        matches!(self, ColType::NullableFloat64 | ColType::NullableUInt64 | ColType::NullableDateTime)
    }

    pub fn sql(self) -> &'static str {
        match self {
            ColType::String => "String",
            ColType::Date => "Date",
            ColType::DateTime => "DateTime",
            ColType::Float64 => "Float64",
            ColType::UInt64 => "UInt64",
            ColType::NullableFloat64 => "Nullable(Float64)",
            ColType::NullableUInt64 => "Nullable(UInt64)",
            ColType::NullableDateTime => "Nullable(DateTime)",
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

/// A value a column holds: its ClickHouse type and its cell.
pub trait Column: Sized {
    const TYPE: ColType;
    fn into_cell(self) -> Cell;
    fn from_cell(cell: &Cell) -> Option<Self>;
}

impl Column for Text {
    const TYPE: ColType = ColType::String;
    fn into_cell(self) -> Cell {
        Cell::Str(self)
    }
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Str(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl Column for Date {
    const TYPE: ColType = ColType::Date;
    fn into_cell(self) -> Cell {
        Cell::Date(self.0)
    }
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Date(v) => Some(Date(*v)),
            _ => None,
        }
    }
}

impl Column for Minute {
    const TYPE: ColType = ColType::DateTime;
    fn into_cell(self) -> Cell {
        Cell::Minute(self.0)
    }
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Minute(v) => Some(Minute(*v)),
            _ => None,
        }
    }
}

impl Column for f64 {
    const TYPE: ColType = ColType::Float64;
    fn into_cell(self) -> Cell {
        Cell::F64(F64(self))
    }
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::F64(v) => Some(v.0),
            _ => None,
        }
    }
}

impl Column for u64 {
    const TYPE: ColType = ColType::UInt64;
    fn into_cell(self) -> Cell {
        Cell::U64(self)
    }
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::U64(v) => Some(*v),
            _ => None,
        }
    }
}

impl Column for Option<f64> {
    const TYPE: ColType = ColType::NullableFloat64;
    fn into_cell(self) -> Cell {
        Cell::NullF64(self.map(F64))
    }
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::NullF64(v) => Some(v.map(|v| v.0)),
            _ => None,
        }
    }
}

impl Column for Option<u64> {
    const TYPE: ColType = ColType::NullableUInt64;
    fn into_cell(self) -> Cell {
        Cell::NullU64(self)
    }
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::NullU64(v) => Some(*v),
            _ => None,
        }
    }
}

impl Column for Option<Second> {
    const TYPE: ColType = ColType::NullableDateTime;
    fn into_cell(self) -> Cell {
        Cell::NullSecond(self.map(|s| s.0))
    }
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::NullSecond(v) => Some(v.map(Second)),
            _ => None,
        }
    }
}

/// A `DateTime` to the second (the cell a minute uses: seconds since the epoch).
impl Column for Second {
    const TYPE: ColType = ColType::DateTime;
    fn into_cell(self) -> Cell {
        Cell::Minute(self.0)
    }
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Minute(v) => Some(Second(*v)),
            _ => None,
        }
    }
}

impl Column for Vec<Text> {
    const TYPE: ColType = ColType::ArrayString;
    fn into_cell(self) -> Cell {
        Cell::StrArray(self)
    }
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::StrArray(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl Column for Tier {
    const TYPE: ColType = ColType::String;
    fn into_cell(self) -> Cell {
        Cell::Str(self.as_str().into())
    }
    fn from_cell(cell: &Cell) -> Option<Self> {
        match cell {
            Cell::Str(v) => Tier::from_name(v),
            _ => None,
        }
    }
}

/// A `Date` column's value: a UTC day, as days since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub Day);

impl Date {
    /// The UTC day of an instant.
    pub fn of(ts: Micros) -> Date {
        Date(day_of(ts))
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        if s.len() != 10 {
            return None;
        }
        parse_rfc3339(&format!("{s}T00:00:00Z")).map(Date::of)
    }

    /// Parses `YYYY-MM` into the first day of that month.
    pub fn parse_month(s: &str) -> Option<Date> {
        parse_month(s).map(Date)
    }
}

impl fmt::Display for Date {
    /// `YYYY-MM-DD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_day(self.0))
    }
}

/// A `DateTime` column's value: a whole UTC minute, as seconds since the
/// epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Minute(pub u32);

impl Minute {
    /// The minute of a number of seconds since the epoch, clamped to what
    /// a `DateTime` holds.
    pub fn of_seconds(secs: i64) -> Minute {
        Minute(secs.clamp(0, i64::from(u32::MAX)) as u32 / 60 * 60)
    }

    /// Parses an RFC 3339 timestamp into seconds since the epoch (not
    /// truncated to its minute).
    pub fn parse_seconds(s: &str) -> Option<i64> {
        parse_rfc3339(s).map(|m| m / MICROS_PER_SECOND)
    }
}

impl fmt::Display for Minute {
    /// `YYYY-MM-DDTHH:MM:00Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_minute(self.0))
    }
}

/// A `DateTime` column's value to the second, as seconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Second(pub u32);

impl Second {
    /// The second of an instant (truncated), clamped to what a `DateTime`
    /// holds.
    pub fn of_micros(ts: Micros) -> Second {
        Second(ts.div_euclid(MICROS_PER_SECOND).clamp(0, i64::from(u32::MAX)) as u32)
    }
}

impl fmt::Display for Second {
    /// `YYYY-MM-DDTHH:MM:SSZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_minute(self.0))
    }
}

/// A lead's tier (SPEC §3.2), the `lead_scores.tier` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tier {
    Unqualified,
    Basic,
    Standard,
    Premium,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Premium => "premium",
            Tier::Standard => "standard",
            Tier::Basic => "basic",
            Tier::Unqualified => "unqualified",
        }
    }

    pub fn from_name(s: &str) -> Option<Tier> {
        [Tier::Premium, Tier::Standard, Tier::Basic, Tier::Unqualified].into_iter().find(|t| t.as_str() == s)
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
    NullU64(Option<u64>),
    /// Seconds since the epoch, or NULL.
    NullSecond(Option<u32>),
    StrArray(Vec<Text>),
}

impl Cell {
    pub fn f64(v: f64) -> Cell {
        Cell::F64(F64(v))
    }

    /// The JSON rendering of SPEC §4: dates `YYYY-MM-DD`, minutes
    /// `YYYY-MM-DDTHH:MM:00Z`, instants to the second
    /// `YYYY-MM-DDTHH:MM:SSZ`, NULL as `null`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Cell::Str(s) => Value::from(s.as_str()),
            Cell::Date(d) => Value::from(format_day(*d)),
            Cell::Minute(m) => Value::from(format_minute(*m)),
            Cell::F64(v) => Value::from(v.0),
            Cell::U64(v) => Value::from(*v),
            Cell::NullF64(v) => v.map_or(Value::Null, |v| Value::from(v.0)),
            Cell::NullU64(v) => v.map_or(Value::Null, Value::from),
            Cell::NullSecond(v) => v.map_or(Value::Null, |v| Value::from(Second(v).to_string())),
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
            ColType::NullableUInt64 => Cell::NullU64(None),
            ColType::NullableDateTime => Cell::NullSecond(None),
            ColType::ArrayString => Cell::StrArray(Vec::new()),
        }
    }
}

impl Table {
    /// Every table revpulse writes: the metrics, then the state.
    pub fn all() -> impl Iterator<Item = Table> {
        Table::METRICS.into_iter().chain(Table::STATE)
    }

    pub fn is_state(self) -> bool {
        Table::STATE.contains(&self)
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::all().find(|t| t.name() == name)
    }
}

/// `(name, type)` of a table's key or value columns, in order.
pub type Cols = &'static [(&'static str, ColType)];

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A typed row is the shared form with its cells in column order, and
    /// parses back; a row of another table or of the wrong shape does not.
    #[test]
    fn typed_rows_round_trip() {
        let key = RevenuePerMinuteKey { tenant_id: "t".into(), minute: Minute(120), source: "all".into() };
        let row = key.clone().row(RevenuePerMinuteValues { revenue: 1.5, conversions: 2 });
        assert_eq!(row.0, RowKey::new(Table::RevenuePerMinute, vec![s("t"), Cell::Minute(120), s("all")]));
        assert_eq!(row.1, vec![Cell::f64(1.5), Cell::U64(2)]);
        let (back, values) = RevenuePerMinuteKey::parse(&row).expect("parses");
        assert_eq!((back, values.conversions), (key, 2));
        assert_eq!(OfferAcceptanceKey::of(&row.0), None);
        assert_eq!(RevenuePerMinuteKey::of(&RowKey::new(Table::RevenuePerMinute, vec![s("t")])), None);
        let json = row_json(&row.0, &row.1);
        assert_eq!(json["minute"], "1970-01-01T00:02:00Z");
        assert_eq!(json["conversions"], 2);
    }

    /// Every table has a key, names each column once, and its typed key
    /// describes the same columns as the table.
    #[test]
    fn tables_are_declared_once() {
        for table in Table::all() {
            assert!(!table.key_columns().is_empty(), "{table:?}");
            let mut names: Vec<&str> =
                table.key_columns().iter().chain(table.value_columns()).map(|(n, _)| *n).collect();
            let all = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), all, "{table:?} names a column twice");
            assert_eq!(Table::from_name(table.name()), Some(table));
        }
        assert_eq!(LeadScoreKey::COLUMNS, Table::LeadScores.key_columns());
        assert_eq!(<ExperimentLiftValues as TableValues>::COLUMNS, Table::ExperimentLift.value_columns());
    }

    #[test]
    fn dates_and_minutes_parse_and_print() {
        assert_eq!(Date::parse("2026-11-21").map(|d| d.to_string()), Some("2026-11-21".into()));
        assert_eq!(Date::parse("2026-11-21T00:00:00Z"), None);
        assert_eq!(Date::parse_month("2026-11").map(|d| d.to_string()), Some("2026-11-01".into()));
        assert_eq!(Minute::of_seconds(125).to_string(), "1970-01-01T00:02:00Z");
        assert_eq!(Minute::of_seconds(-5), Minute(0));
        assert_eq!(Tier::from_cell(&s("premium")), Some(Tier::Premium));
        assert_eq!(Tier::from_cell(&s("gold")), None);
    }
}
