# Shared by the scripts that run a local server for revpulse (clickhouse.sh,
# clickhouse-current.sh, tansu.sh); sourced, not run. Each defines install,
# start, stop and up (answers?) and ends with `dispatch "$@"`.

# stop_pid FILE [MARK]: stops the process whose pid FILE holds — only if its
# command line contains MARK, when given (the pid may have been reused) —
# with SIGTERM, waits up to 30 s for the process itself to exit (not just
# its port: a new server on the same directory fails while the old one
# still holds its lock), then SIGKILL; removes FILE.
stop_pid() {
  local file=$1 mark=${2:-} pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if [ -z "$mark" ] || grep -qsF -- "$mark" "/proc/$pid/cmdline"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

# dispatch VERB: install | start | stop | status (exit 0 when it answers).
dispatch() {
  case "${1:-start}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) up ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
  esac
}
