#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs prerequisites, starts a
# local ClickHouse, checks formatting and lints, runs every test (unit,
# property, integration against real ClickHouse and librdkafka's mock Kafka
# cluster), then stops the ClickHouse it started.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
started=0
if ! scripts/clickhouse.sh status; then
  scripts/clickhouse.sh start
  started=1
fi
cleanup() { [ "$started" = 1 ] && scripts/clickhouse.sh stop || true; }
trap cleanup EXIT

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --all-targets --locked
