//! The tables revpulse writes, declared once: name, key columns and value
//! columns with their types. The [`tables!`] declaration generates the
//! [`Table`] enum, its column lists, and per table a typed key and a typed
//! value struct that the operators build and the readers parse, so no
//! column is ever addressed by position outside this module.

use serde::{Deserialize, Serialize};

use super::{Cell, Cols, Column, Date, Minute, RowKey, RowVals, Second, Tier};
use crate::types::Text;

/// A table's typed key: the table it belongs to, its key columns, and the
/// conversion to and from the cells the sink and the readers carry.
pub trait TableKey: Sized {
    /// The table whose key this is.
    const TABLE: Table;
    /// `(name, type)` of each key column, in order.
    const COLUMNS: Cols;
    /// The table's typed value columns.
    type Values: TableValues;
    fn into_cells(self) -> Vec<Cell>;
    fn from_cells(cells: &[Cell]) -> Option<Self>;

    /// The row `(key, values)` in the form every table shares.
    fn row(self, values: Self::Values) -> (RowKey, RowVals) {
        (RowKey::new(Self::TABLE, self.into_cells()), values.into_cells())
    }

    /// The typed key of `key` if it belongs to this table.
    fn of(key: &RowKey) -> Option<Self> {
        if key.table == Self::TABLE {
            Self::from_cells(&key.key)
        } else {
            None
        }
    }

    /// The typed key and values of a row of this table.
    fn parse((key, values): &(RowKey, RowVals)) -> Option<(Self, Self::Values)> {
        Some((Self::of(key)?, Self::Values::from_cells(values)?))
    }
}

/// A table's typed value columns.
pub trait TableValues: Sized {
    /// `(name, type)` of each value column, in order.
    const COLUMNS: Cols;
    fn into_cells(self) -> RowVals;
    fn from_cells(cells: &[Cell]) -> Option<Self>;
}

macro_rules! typed_columns {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident: $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
        }

        impl $name {
            const COLUMNS: Cols = &[$((stringify!($field), <$ty as Column>::TYPE)),*];

            fn cells(self) -> Vec<Cell> {
                vec![$(Column::into_cell(self.$field)),*]
            }

            fn parse_cells(cells: &[Cell]) -> Option<Self> {
                let [$($field),*] = cells else { return None };
                Some($name { $($field: Column::from_cell($field)?),* })
            }
        }
    };
}

macro_rules! tables {
    (
        metrics { $($(#[$mm:meta])* $metric:ident = $mname:literal $mbody:tt)* }
        state { $($(#[$sm:meta])* $state:ident = $sname:literal $sbody:tt)* }
    ) => {
        /// The tables revpulse writes: the metric tables of docs/spec.md §4,
        /// then the retention state (docs/retention.md, "State tables").
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Table {
            $($(#[$mm])* $metric,)*
            $($(#[$sm])* $state,)*
        }

        impl Table {
            /// The metric tables of SPEC §4.
            pub const METRICS: [Table; [$($mname),*].len()] = [$(Table::$metric),*];

            /// The tables that hold retention state: written like metric
            /// tables (exactly once, with the offsets they cover) and read
            /// back at start-up.
            pub const STATE: [Table; [$($sname),*].len()] = [$(Table::$state),*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Table::$metric => $mname,)*
                    $(Table::$state => $sname,)*
                }
            }

            /// `(name, type)` of each key column, in order.
            pub fn key_columns(self) -> Cols {
                match self {
                    $(Table::$metric => <tables!(@key $mbody) as TableKey>::COLUMNS,)*
                    $(Table::$state => <tables!(@key $sbody) as TableKey>::COLUMNS,)*
                }
            }

            /// `(name, type)` of each value column, in order.
            pub fn value_columns(self) -> Cols {
                match self {
                    $(Table::$metric => <tables!(@values $mbody) as TableValues>::COLUMNS,)*
                    $(Table::$state => <tables!(@values $sbody) as TableValues>::COLUMNS,)*
                }
            }
        }

        $(tables!(@table $metric $mbody);)*
        $(tables!(@table $state $sbody);)*
    };
    (@key { key $key:ident $kb:tt values $vals:ident $vb:tt }) => { $key };
    (@values { key $key:ident $kb:tt values $vals:ident $vb:tt }) => { $vals };
    (@table $table:ident { key $key:ident $kb:tt values $vals:ident $vb:tt }) => {
        typed_columns!(#[doc = concat!("The key of a `", stringify!($table), "` row.")] $key $kb);
        typed_columns!(#[doc = concat!("The values of a `", stringify!($table), "` row.")] $vals $vb);

        impl TableKey for $key {
            const TABLE: Table = Table::$table;
            const COLUMNS: Cols = $key::COLUMNS;
            type Values = $vals;
            fn into_cells(self) -> Vec<Cell> {
                self.cells()
            }
            fn from_cells(cells: &[Cell]) -> Option<Self> {
                $key::parse_cells(cells)
            }
        }

        impl TableValues for $vals {
            const COLUMNS: Cols = $vals::COLUMNS;
            fn into_cells(self) -> RowVals {
                self.cells()
            }
            fn from_cells(cells: &[Cell]) -> Option<Self> {
                $vals::parse_cells(cells)
            }
        }
    };
}

tables! {
    metrics {
        /// Revenue at Risk per tenant and month (SPEC §3.1).
        RarMonthly = "rar_monthly" {
            key RarMonthlyKey { tenant_id: Text, month: Date }
            values RarMonthlyValues {
                impressions: u64,
                sess_ai: f64,
                zero_click: f64,
                lost_leads: f64,
                lost_sales: f64,
                rar: f64,
                recoverable: f64,
                baseline_revenue: f64,
                pressure: f64,
                /// The 5 highest-`rar` intents, highest first (ties by name).
                top_intents: Vec<Text>,
            }
        }
        /// Revenue at Risk per channel (SPEC §3.1).
        RarByChannel = "rar_by_channel" {
            key RarByChannelKey { tenant_id: Text, month: Date, channel: Text }
            values RarByChannelValues { rar: f64, recoverable: f64 }
        }
        /// Revenue at Risk per intent cluster (SPEC §3.1).
        RarByIntent = "rar_by_intent" {
            key RarByIntentKey { tenant_id: Text, month: Date, intent_cluster: Text }
            values RarByIntentValues { rar: f64, recoverable: f64 }
        }
        /// The score of every current lead (SPEC §3.2).
        LeadScores = "lead_scores" {
            key LeadScoreKey { tenant_id: Text, subject_id: Text }
            values LeadScoreValues {
                score: f64,
                base: f64,
                behavioral: f64,
                timing: f64,
                market: f64,
                tier: Tier,
                revenue_potential: f64,
                conversion_probability: f64,
            }
        }
        /// Revenue potential per conversation minute (SPEC §3.3).
        ConversationRpm = "conversation_rpm" {
            key ConversationRpmKey { tenant_id: Text, conversation_id: Text }
            values ConversationRpmValues {
                subject_id: Text,
                duration_minutes: f64,
                revenue_potential: f64,
                revenue_per_minute: f64,
                /// 1 while no current record has `kind = ended` (SPEC §3.10).
                active: u64,
            }
        }
        /// Realized revenue per minute and source (SPEC §3.3).
        RevenuePerMinute = "revenue_per_minute" {
            key RevenuePerMinuteKey { tenant_id: Text, minute: Minute, source: Text }
            values RevenuePerMinuteValues { revenue: f64, conversions: u64 }
        }
        /// Attributed conversions and revenue per day, model and campaign (SPEC §3.4).
        AttributionDaily = "attribution_daily" {
            key AttributionDailyKey { tenant_id: Text, day: Date, model: Text, campaign_id: Text }
            values AttributionDailyValues { conversions: f64, revenue: f64 }
        }
        /// Accepted offer lines and their revenue (SPEC §3.4).
        OfferAcceptance = "offer_acceptance" {
            key OfferAcceptanceKey { tenant_id: Text, offer_id: Text }
            values OfferAcceptanceValues { accepted_lines: u64, revenue: f64 }
        }
        /// Per experiment arm (SPEC §3.5).
        ExperimentVariants = "experiment_variants" {
            key ExperimentVariantKey { tenant_id: Text, experiment_id: Text, variant: Text }
            values ExperimentVariantValues {
                subjects: u64,
                converters: u64,
                conversion_rate: f64,
                revenue: f64,
                revenue_per_subject: f64,
            }
        }
        /// Treatment against control (SPEC §3.5); null where undefined.
        ExperimentLift = "experiment_lift" {
            key ExperimentLiftKey { tenant_id: Text, experiment_id: Text }
            values ExperimentLiftValues {
                lift: Option<f64>,
                incremental_revenue: Option<f64>,
                z: Option<f64>,
                p_value: Option<f64>,
            }
        }
        /// Outbound messages per day and campaign by status (SPEC §3.6).
        CampaignDaily = "campaign_daily" {
            key CampaignDailyKey { tenant_id: Text, day: Date, campaign_id: Text }
            values FunnelValues {
                queued: u64,
                sent: u64,
                delivered: u64,
                clicked: u64,
                replied: u64,
                failed: u64,
                held_out: u64,
                delivery_rate: Option<f64>,
                click_rate: Option<f64>,
                reply_rate: Option<f64>,
            }
        }
        /// Failed payments, their recoveries and recovered revenue per day (SPEC §3.7).
        PaymentRecovery = "payment_recovery" {
            key PaymentRecoveryKey { tenant_id: Text, day: Date }
            values PaymentRecoveryValues {
                failed: u64,
                recovered: u64,
                recovery_rate: Option<f64>,
                recoveries: u64,
                recovered_revenue: f64,
            }
        }
        /// Outbound messages per day and offer by status (SPEC §3.6).
        OfferDaily = "offer_daily" {
            key OfferDailyKey { tenant_id: Text, day: Date, offer_id: Text }
            values OfferFunnelValues {
                queued: u64,
                sent: u64,
                delivered: u64,
                clicked: u64,
                replied: u64,
                failed: u64,
                held_out: u64,
                delivery_rate: Option<f64>,
                click_rate: Option<f64>,
                reply_rate: Option<f64>,
            }
        }
        /// Who is likely to buy next, in which window and why (SPEC §3.8).
        NextBuy = "next_buy" {
            key NextBuyKey { tenant_id: Text, subject_id: Text }
            values NextBuyValues {
                score: f64,
                buy_window: Text,
                timeline_months: Option<u64>,
                service_visits: u64,
                service_revenue: f64,
                last_service_at: Option<Second>,
                engagements: u64,
                reasons: Vec<Text>,
            }
        }
        /// How many of a tenant's leads carry each fact (SPEC §3.9).
        FactCoverage = "fact_coverage" {
            key FactCoverageKey { tenant_id: Text, fact: Text }
            values FactCoverageValues { leads: u64, with_fact: u64, coverage: f64 }
        }
        /// Open deals' close probability, health and risks (SPEC §3.11).
        DealHealth = "deal_health" {
            key DealHealthKey { tenant_id: Text, deal_id: Text }
            values DealHealthValues {
                stage: Text,
                amount: f64,
                close_probability: f64,
                health: f64,
                category: Text,
                risk_factors: Vec<Text>,
                expected_close: Second,
            }
        }
        /// Every current deal by stage (SPEC §3.11).
        PipelineByStage = "pipeline_by_stage" {
            key PipelineByStageKey { tenant_id: Text, stage: Text }
            values PipelineByStageValues { deals: u64, value: f64, weighted_value: f64, avg_value: f64 }
        }
        /// Open deals by month of `expected_close` (SPEC §3.11).
        ForecastMonthly = "forecast_monthly" {
            key ForecastMonthlyKey { tenant_id: Text, month: Date }
            values ForecastMonthlyValues { deals: u64, pipeline: f64, weighted: f64 }
        }
        /// Won and lost deals by month of their current version's `ts` (SPEC §3.11).
        DealsClosedMonthly = "deals_closed_monthly" {
            key DealsClosedMonthlyKey { tenant_id: Text, month: Date }
            values DealsClosedMonthlyValues { won: u64, lost: u64, won_value: f64, lost_value: f64, win_rate: f64 }
        }
    }
    state {
        /// Retention state (docs/retention.md, "State tables"): each life of
        /// a subject — the watermark it opened under, its `since`, and the
        /// watermark it closed under (0 while open). Instants are
        /// microseconds since the epoch (0 for earlier ones).
        StateOpenSubjects = "state_open_subjects" {
            key OpenSubjectKey { tenant_id: Text, subject_id: Text, opened_us: u64 }
            values OpenSubjectValues { since_us: u64, closed_us: u64 }
        }
        /// Retention state: what closed experiment subjects contributed, per
        /// watermark they closed under (0: compacted at a start).
        StateExperimentClosed = "state_experiment_closed" {
            key ExperimentClosedKey { tenant_id: Text, experiment_id: Text, variant: Text, closed_us: u64 }
            values ExperimentClosedValues { subjects: u64, converters: u64, revenue_cents: u64 }
        }
        /// Retention state: what conversions of closed days contributed to
        /// offer acceptance, per watermark the days closed under.
        StateOfferClosed = "state_offer_closed" {
            key OfferClosedKey { tenant_id: Text, offer_id: Text, closed_us: u64 }
            values OfferClosedValues { accepted_lines: u64, revenue_cents: u64 }
        }
        /// Retention state: what closed leads contributed to fact coverage
        /// (the leads, and per fact those carrying it), per watermark they
        /// closed under.
        StateLeadsClosed = "state_leads_closed" {
            key LeadsClosedKey { tenant_id: Text, closed_us: u64 }
            values LeadsClosedValues {
                leads: u64,
                homeowner: u64,
                monthly_bill: u64,
                property_type: u64,
                region: u64,
                timeline_months: u64,
                credit_signal: u64,
                decision_maker: u64,
                sentiment: u64,
            }
        }
    }
}
