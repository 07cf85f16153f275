#!/usr/bin/env bash
# Installs (Debian), starts, stops and checks a local ClickHouse server for
# revpulse demo and tests. Data and config live under $REVPULSE_CH_DIR
# (default: .revpulse/clickhouse in the repo); it listens on 127.0.0.1 only.
#
#   scripts/clickhouse.sh install   # apt-get install clickhouse-server/client if missing
#   scripts/clickhouse.sh start     # start in the background unless already up
#   scripts/clickhouse.sh stop
#   scripts/clickhouse.sh status    # exit 0 when it answers on HTTP
set -euo pipefail
# shellcheck source=scripts/service.sh
. "$(dirname "$0")/service.sh"

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${REVPULSE_CH_DIR:-$repo/.revpulse/clickhouse}
http_port=${REVPULSE_CH_HTTP_PORT:-8123}
tcp_port=${REVPULSE_CH_TCP_PORT:-9000}
url="http://127.0.0.1:${http_port}/"

up() { curl -fsS --max-time 1 "${url}ping" >/dev/null 2>&1; }

install() {
  if command -v clickhouse-server >/dev/null 2>&1 || [ -x /usr/sbin/clickhouse-server ]; then return 0; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
}

write_config() {
  mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
  cat >"$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog><size>10M</size><count>2</count></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>$http_port</http_port>
  <tcp_port>$tcp_port</tcp_port>
  <max_connections>256</max_connections>
  <keep_alive_timeout>10</keep_alive_timeout>
  <max_concurrent_queries>100</max_concurrent_queries>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mlock_executable>false</mlock_executable>
</yandex>
XML
  cat >"$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage><log_queries>0</log_queries></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
}

start() {
  if up; then echo "clickhouse already up at $url"; return 0; fi
  install
  write_config
  nohup /usr/sbin/clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 1 300); do
    if up; then echo "clickhouse up at $url (data in $dir)"; return 0; fi
    sleep 0.1
  done
  echo "clickhouse did not come up; see $dir/log" >&2
  tail -20 "$dir/log/stdout.log" "$dir/log/error.log" >&2 || true
  return 1
}

stop() { stop_pid "$dir/pid" "$dir/config.xml"; }

dispatch "$@"
