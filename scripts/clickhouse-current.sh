#!/usr/bin/env bash
# Installs, starts, stops and checks a current (26.x) ClickHouse server for
# revpulse, beside the 18.16 one of scripts/clickhouse.sh. The server is the
# ClickHouse engine of the chdb-core wheel (PyPI, pinned below) in a venv at
# $REVPULSE_CHDB_VENV (default: .revpulse/chdb-venv in the repo): a Python
# process that opens the HTTP and native TCP listeners and then runs a query
# that sleeps for ~10 years. Data and config live under
# $REVPULSE_CH_CURRENT_DIR (default: .revpulse/clickhouse-current); it listens
# on 127.0.0.1 only, HTTP on $REVPULSE_CH_CURRENT_HTTP_PORT (default 8124) and
# native TCP on $REVPULSE_CH_CURRENT_TCP_PORT (default 9001), so it runs
# alongside the 18.16 server on 8123/9000. User `default`, no password,
# timezone UTC.
#
#   scripts/clickhouse-current.sh install   # venv + pip install chdb-core if missing
#   scripts/clickhouse-current.sh start     # start in the background unless already up
#   scripts/clickhouse-current.sh stop
#   scripts/clickhouse-current.sh status    # exit 0 when it answers on HTTP
#
# Don't run the engine without the config.xml written here: without it, it
# takes 8123/9000 (the 18.16 server's ports). `SYSTEM SHUTDOWN`, and a `KILL
# QUERY` that hits the sleeping query (visible in system.processes), stop it
# as `stop` does; `start` again to bring it back.
set -euo pipefail
# shellcheck source=scripts/service.sh
. "$(dirname "$0")/service.sh"

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=$(realpath -m "${REVPULSE_CH_CURRENT_DIR:-$repo/.revpulse/clickhouse-current}") # start() cds into it
venv=${REVPULSE_CHDB_VENV:-$repo/.revpulse/chdb-venv}
http_port=${REVPULSE_CH_CURRENT_HTTP_PORT:-8124}
tcp_port=${REVPULSE_CH_CURRENT_TCP_PORT:-9001}
chdb_version=26.9.0 # chdb-core; its engine reports version() 26.9.2.1
url="http://127.0.0.1:${http_port}/"

up() { curl -fsS --max-time 1 "${url}ping" >/dev/null 2>&1; }
version() { curl -fsS --max-time 5 "$url" --data-binary 'SELECT version()' 2>/dev/null || echo unknown; }

installed_version() {
  "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("chdb-core"))' 2>/dev/null || true
}

install() {
  if [ "$(installed_version)" = "$chdb_version" ]; then return 0; fi
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # --no-deps: the engine needs none of chdb-core's optional Python packages.
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps "chdb-core==$chdb_version"
}

write_config() {
  mkdir -p "$dir"/{data,log}
  # chdb ignores <timezone> here (TZ=UTC in start() sets it) and takes its
  # data path from serve.py, not <path>.
  cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<clickhouse>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog><size>10M</size><count>2</count><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$http_port</http_port>
  <tcp_port>$tcp_port</tcp_port>
  <max_connections>256</max_connections>
  <keep_alive_timeout>10</keep_alive_timeout>
  <max_concurrent_queries>100</max_concurrent_queries>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
</clickhouse>
XML
  cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<clickhouse>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage><log_queries>0</log_queries><implicit_select>0</implicit_select></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</clickhouse>
XML
  cat >"$dir/serve.py" <<'PY'
# Run by scripts/clickhouse-current.sh with the working directory holding
# config.xml (ports, users), which the engine reads from there.
import os
import sys

if not os.path.isfile("config.xml"):
    sys.exit("serve.py: no config.xml in the working directory; not starting (it would take 8123/9000)")
# A session of its own: `SYSTEM SHUTDOWN` sends SIGTERM to the server's whole
# process group, which would otherwise include whatever ran `start`.
try:
    os.setsid()
except OSError:
    pass  # already a group leader
from chdb import _chdb  # noqa: E402

# The listeners live as long as this query runs: one row a second for
# 315360000 rows, i.e. ten years. Client queries run on their own threads; one
# that fails does not end this one. The engine cannot be restarted in-process,
# so when the query ends (killed, or a port was taken) the process exits.
res = _chdb.query(
    "SYSTEM START LISTEN HTTP; SYSTEM START LISTEN TCP; "
    "SELECT sleepEachRow(1) FROM numbers(315360000) "
    "SETTINGS max_block_size = 1, function_sleep_max_microseconds_per_block = 0, "
    "max_execution_time = 0 FORMAT Null",
    "TabSeparated",
    path=sys.argv[1],
)
sys.exit("serve.py: the server query ended: " + (res.error_message() or "see the lines above"))
PY
}

start() {
  if up; then echo "clickhouse-current already up at $url (version $(version))"; return 0; fi
  stop # a server of ours that stopped answering still holds the data directory
  install
  write_config
  (cd "$dir" && TZ=UTC exec nohup "$venv/bin/python" serve.py "$dir/data" >"$dir/log/stdout.log" 2>&1) &
  echo $! >"$dir/pid"
  for _ in $(seq 1 300); do
    if up; then echo "clickhouse-current up at $url (version $(version), data in $dir)"; return 0; fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "clickhouse-current did not come up; see $dir/log" >&2
  tail -20 "$dir/log/stdout.log" "$dir/log/error.log" >&2 || true
  return 1
}

stop() { stop_pid "$dir/pid" "$dir/data"; }

dispatch "$@"
