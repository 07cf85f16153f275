#!/usr/bin/env bash
# Installs what revpulse needs on a fresh Debian (bookworm) machine, as root
# or with sudo: a C toolchain and zlib for the bundled librdkafka, curl, kcat,
# and ClickHouse. Idempotent; skips what is already there. Rust itself comes
# from rustup (https://rustup.rs) and is expected on PATH.
set -euo pipefail

need=()
for pkg in build-essential zlib1g-dev pkg-config curl kcat clickhouse-server clickhouse-client; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  echo "installed: ${need[*]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust with rustup first" >&2; exit 1; }
