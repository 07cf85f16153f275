#!/usr/bin/env bash
# Runs schemathesis (PyPI) against a live `revpulse api` over a generated,
# replayed data set, with every check enabled. Any 5xx, schema violation or
# rejected schema-valid request fails the run.
#
#   scripts/schemathesis.sh            # uses target/debug/revpulse (built by cargo test)
#   REVPULSE_BIN=target/release/revpulse scripts/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
bin=${REVPULSE_BIN:-target/debug/revpulse}
[ -x "$bin" ] || cargo build --locked --bin revpulse

venv=.revpulse/venv
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'schemathesis>=4,<5'
fi

work=$(mktemp -d)
port=${REVPULSE_ST_PORT:-18181}
cat >"$work/api.toml" <<TOML
[clickhouse]
database = "rp_schemathesis"
[api]
listen = "127.0.0.1:$port"
[[api.keys]]
key = "st-key"
tenant = "*"
scopes = ["read", "ingest"]
# HTTP ingest publishes to librdkafka's own mock cluster (real protocol,
# in the API's process): `revpulse api` runs without a broker here.
[kafka.properties]
"test.mock.num.brokers" = "1"
TOML
"$bin" generate --out "$work/data" --events 20000 >/dev/null
"$bin" replay "$work/data" --config "$work/api.toml" --output json >"$work/rows.jsonl"
"$bin" replay "$work/data" --config "$work/api.toml"
pick() { python3 -c "import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r['table'] == sys.argv[2] and r['tenant_id'] == 'dealer-000':
        print(r[sys.argv[3]]); break" "$work/rows.jsonl" "$1" "$2"; }
export REVPULSE_ST_SUBJECT REVPULSE_ST_CONVERSATION REVPULSE_ST_DEAL REVPULSE_API_KEY=st-key
REVPULSE_ST_SUBJECT=$(pick lead_scores subject_id)
REVPULSE_ST_CONVERSATION=$(pick conversation_rpm conversation_id)
REVPULSE_ST_DEAL=$(pick deal_health deal_id)

"$bin" api --config "$work/api.toml" >"$work/api.log" 2>&1 &
api_pid=$!
trap 'kill $api_pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

cd "$repo/tests/schemathesis"
"$repo/$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" --checks all --seed 20261121
