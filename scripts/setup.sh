#!/usr/bin/env bash
# Installs what revpulse needs on a fresh Debian (bookworm) machine, as root
# or with sudo: a C toolchain and zlib for the bundled librdkafka, curl, kcat,
# ClickHouse, Prometheus (server and promtool, for tests/prometheus.rs),
# docker-compose (only to validate docker-compose.yml; no engine needed), and
# Node.js where the machine has none. The current ClickHouse (PyPI) and the
# pinned npm tools install themselves on first use.
# Idempotent; skips what is already there. Rust itself comes from rustup
# (https://rustup.rs) and is expected on PATH.
set -euo pipefail

# install_missing [apt-get install flags…] -- packages…
install_missing() {
  local flags=() need=()
  while [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${flags[@]}" "${need[@]}" >/dev/null
  echo "installed: ${need[*]}"
}

install_missing -- build-essential zlib1g-dev pkg-config curl kcat clickhouse-server clickhouse-client
# Without recommends: docker-compose would otherwise pull in a Docker engine.
fresh_prometheus=$(dpkg -s prometheus >/dev/null 2>&1 || echo yes)
install_missing --no-install-recommends -- prometheus docker-compose
# The package starts a system Prometheus on :9090 where systemd runs; the
# tests start their own, and docker-compose.yml wants the port.
if [ -n "$fresh_prometheus" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
# Node.js and npm type-check the Grafana files (scripts/dashboards-check.sh);
# python3-venv builds the current ClickHouse's and schemathesis' venvs.
command -v npm >/dev/null 2>&1 || install_missing -- nodejs npm
python3 -c 'import venv, ensurepip' 2>/dev/null || install_missing -- python3-venv
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
