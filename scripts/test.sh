#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs prerequisites, starts a
# local ClickHouse, checks formatting and lints, runs every test (unit,
# property, integration against real ClickHouse and librdkafka's mock Kafka
# cluster), runs schemathesis against the live API, then stops the
# ClickHouse it started.
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
log=$(mktemp)
cargo test --workspace --lib --bins --tests --locked 2>&1 | tee "$log"
# The live API against its own OpenAPI document (schemathesis from PyPI).
scripts/schemathesis.sh
awk '/^test result:/ { p += $4; f += $6 } END { printf "cargo test: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
