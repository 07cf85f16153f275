#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs prerequisites, starts a
# local ClickHouse 18.16 and a current one (26.x, scripts/clickhouse-current.sh),
# checks formatting and lints, runs every test (unit, property, integration
# against real ClickHouse and librdkafka's mock Kafka cluster) on 18.16, then
# the ClickHouse integration tests again on the current release, type-checks
# the Grafana dashboards and alert rules (scripts/dashboards-check.sh), runs
# schemathesis against the live API, then stops the servers it started.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
started=0 started_current=0
if ! scripts/clickhouse.sh status; then
  scripts/clickhouse.sh start
  started=1
fi
if ! scripts/clickhouse-current.sh status; then
  scripts/clickhouse-current.sh start
  started_current=1
fi
cleanup() {
  [ "$started" = 1 ] && scripts/clickhouse.sh stop || true
  [ "$started_current" = 1 ] && scripts/clickhouse-current.sh stop || true
}
trap cleanup EXIT

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
log=$(mktemp)
cargo test --workspace --lib --bins --tests --locked 2>&1 | tee "$log"
# The ClickHouse tests again on the current release (SPEC §4): migrations,
# sink errors, API, dashboards' and alert rules' SQL, restarts with start-up
# reconciliation and retention state, end to end, the demo. Not again: the
# fault, checkpoint, cluster, avro and kcat tests, whose ClickHouse use
# these cover (their subject is Kafka, processes and state).
REVPULSE_TEST_CLICKHOUSE_URL="http://127.0.0.1:${REVPULSE_CH_CURRENT_HTTP_PORT:-8124}" \
  cargo test --locked --test clickhouse_schema --test sink_errors --test api --test dashboards \
  --test retention --test pipeline_e2e --test demo 2>&1 | tee -a "$log"
scripts/dashboards-check.sh
# The live API against its own OpenAPI document (schemathesis from PyPI).
scripts/schemathesis.sh
awk '/^test result:/ { p += $4; f += $6 } END { printf "cargo test: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
