//! ClickHouse sink: idempotent migrations and versioned upserts of the
//! current value per metric key (SPEC §4).

mod config;
mod driver;
mod migrate;
mod rowbinary;
mod sink;

pub use config::ClickHouseConfig;
pub use driver::{DriverError, SinkBatch, SinkDriver};
pub use migrate::{migrate, MIGRATIONS};
pub use sink::{ClickHouseSink, SinkError, Versioner};
