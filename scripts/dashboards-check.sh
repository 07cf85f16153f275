#!/usr/bin/env bash
# Checks the shipped Grafana files the way Grafana reads them, without a
# Grafana server:
#   - every dashboards/json/*.json, type-checked by tsc --strict as
#     `const dashboard: Json<Dashboard> = <the JSON>;` against the classic
#     dashboard model of @grafana/schema (scripts/dashcheck/types.ts), 13 and
#     the 11.3 of docker-compose.yml's Grafana;
#   - every dashboards/provisioning/alerting/*.yaml, as JSON against a
#     hand-written type of Grafana's alerting file provisioning, then
#     scripts/dashcheck/check.mjs: datasource uids and types against
#     datasources.yml, conditions and expressions against refIds, every
#     environment variable documented and passed by docker-compose.yml's
#     grafana service, every rule routed to a contact point, and
#     deploy/grafana/entrypoint.sh's rendering run on a copy.
# Needs node and npm. The pinned tools (scripts/dashcheck/package-lock.json)
# are installed with `npm ci` under $REVPULSE_DASHCHECK_DIR (default
# .revpulse/dashcheck); the generated .ts files live there too.
#
#   scripts/dashboards-check.sh
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${REVPULSE_DASHCHECK_DIR:-$repo/.revpulse/dashcheck}
src=$repo/scripts/dashcheck

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
  || { echo "dashboards-check: node and npm are needed (Debian: apt-get install nodejs npm)" >&2; exit 1; }

mkdir -p "$work"
cp "$src"/{package.json,package-lock.json,tsconfig.json,types.ts,selftest.ts,check.mjs} "$work/"
# Reinstall whenever the lock file changed since the last npm ci.
if ! cmp -s "$work/package-lock.json" "$work/node_modules/.revpulse-lock.json" 2>/dev/null; then
  (cd "$work" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$work/package-lock.json" "$work/node_modules/.revpulse-lock.json"
fi

cd "$work"
node check.mjs generate "$repo"
if ! out=$(node_modules/.bin/tsc --noEmit --strict --pretty false -p tsconfig.json 2>&1); then
  printf '%s\n' "$out" | node check.mjs explain "$repo" >&2
  echo "dashboards-check: tsc found the errors above" >&2
  exit 1
fi
# Again against the schema of the Grafana docker-compose.yml runs (11.3),
# so that a dashboard both releases read passes for both.
rm -rf v11 && mkdir -p v11 && cp -r tsconfig.json selftest.ts gen v11/
sed "s#'@grafana/schema'#'@grafana/schema-11'#" types.ts >v11/types.ts
if ! out=$(node_modules/.bin/tsc --noEmit --strict --pretty false -p v11/tsconfig.json 2>&1); then
  printf '%s\n' "$out" >&2
  echo "dashboards-check: tsc found the errors above against @grafana/schema 11 (the compose stack's Grafana)" >&2
  exit 1
fi
node check.mjs semantic "$repo"

count=$(find "$repo/dashboards/json" -maxdepth 1 -name '*.json' | wc -l)
version=$(node -p "require('./node_modules/@grafana/schema/package.json').version")
v11=$(node -p "require('./node_modules/@grafana/schema-11/package.json').version")
echo "dashboards: $count checked against @grafana/schema $version and $v11"
