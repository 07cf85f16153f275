#!/usr/bin/env bash
# The main job on one machine, nothing configured: installs prerequisites,
# builds revpulse and runs `revpulse demo` (embedded Kafka, local ClickHouse,
# live events, API on http://127.0.0.1:8080). Extra arguments go to `demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked
exec ./target/release/revpulse demo "$@"
