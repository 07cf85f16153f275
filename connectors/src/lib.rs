//! revpulse connectors: the Kafka source and dead-letter queue, Avro
//! decoding against a schema registry, and the ClickHouse sink with its
//! migrations. Each connector keeps its
//! configuration (`config.rs`, documented field by field) apart from its
//! runtime code.

pub mod clickhouse;
pub mod kafka;
pub mod metrics;
pub mod schema_registry;
pub mod state;

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether the pipeline's dependencies are reachable (`/readyz`): the
/// source keeps the Kafka half current, the sink's driver the ClickHouse half.
#[derive(Debug, Default)]
pub struct Readiness {
    pub kafka: AtomicBool,
    pub clickhouse: AtomicBool,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.kafka.load(Ordering::Relaxed) && self.clickhouse.load(Ordering::Relaxed)
    }
}
