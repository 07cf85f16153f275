//! The `revpulse` binary's building blocks: configuration, the production
//! runner, the one start-up path ([`start`]), `replay`, `generate`, `demo`
//! and `bench`. The event model and operators
//! live in `revpulse-pipelines`, Kafka and ClickHouse in
//! `revpulse-connectors`, the HTTP API in `revpulse-api`.

pub mod bench;
pub mod config;
pub mod demo;
pub mod generate;
pub mod replay;
pub mod runner;
pub mod serve;
pub mod start;

use std::sync::atomic::Ordering;

/// First SIGINT/SIGTERM: graceful stop (finish the in-flight batch, commit).
/// Second: abort writes still being retried.
pub fn install_signal_handlers(rt: &tokio::runtime::Runtime, shared: &runner::Shared) {
    let shared = shared.clone();
    rt.spawn(async move {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            tracing::warn!("cannot install the SIGTERM handler");
            return;
        };
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if n == 0 {
                tracing::info!("stopping: finishing the in-flight batch (signal again to abort)");
                shared.stop.store(true, Ordering::Relaxed);
            } else {
                shared.abort.store(true, Ordering::Relaxed);
            }
        }
    });
}
