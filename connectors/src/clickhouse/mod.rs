//! ClickHouse sink: idempotent migrations and versioned upserts of the
//! current value per metric key (SPEC §4).

mod cache;
mod config;
mod current;
mod driver;
mod migrate;
mod rowbinary;
mod sink;

pub use cache::RowCache;
pub use config::ClickHouseConfig;
pub use current::{current_query, select_current};
pub use driver::{DriverError, SinkBatch, SinkDriver};
pub use migrate::{migrate, MIGRATIONS};
pub use sink::{ClickHouseSink, SinkError, Versioner};
