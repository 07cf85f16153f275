//! revpulse connectors: the Kafka source and dead-letter queue, Avro
//! decoding against a schema registry, and the ClickHouse sink with its
//! migrations. Each connector keeps its
//! configuration (`config.rs`, documented field by field) apart from its
//! runtime code.

pub mod clickhouse;
pub mod kafka;
pub mod metrics;
pub mod schema_registry;
