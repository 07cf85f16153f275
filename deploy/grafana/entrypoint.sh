#!/bin/sh
# Entrypoint of the grafana service in docker-compose.yml: renders the
# provisioning (mounted read-only at $GF_PATHS_PROVISIONING) into a copy with
# the two settings Grafana cannot take from the environment itself, then
# starts Grafana's own entrypoint (/run.sh) on that copy.
#
#   REVPULSE_RAR_PRESSURE_THRESHOLD  (default 0.25) replaces the value on the
#       line marked `# env REVPULSE_RAR_PRESSURE_THRESHOLD` in
#       alerting/rules.yaml: Grafana never expands variables inside an alert
#       query model.
#   REVPULSE_ALERT_SLACK_URL  (default empty) is expanded by Grafana in
#       alerting/notifications.yaml; when empty that file is left out, since
#       Grafana refuses to start with a Slack contact point without a URL.
#
#   deploy/grafana/entrypoint.sh --render-only   # render and stop (scripts/dashboards-check.sh)
#
# POSIX sh: the grafana image has busybox, no bash.
set -eu

src=${GF_PATHS_PROVISIONING:-/etc/grafana/provisioning}
dst=${REVPULSE_PROVISIONING_DST:-/tmp/revpulse-provisioning}
threshold=${REVPULSE_RAR_PRESSURE_THRESHOLD:-0.25}
marker='# env REVPULSE_RAR_PRESSURE_THRESHOLD'

if ! printf '%s\n' "$threshold" | grep -Eq '^[0-9]+([.][0-9]+)?$'; then
  echo "entrypoint: REVPULSE_RAR_PRESSURE_THRESHOLD='$threshold' is not a decimal number like 0.25" >&2
  exit 1
fi

rm -rf "$dst"
cp -R "$src" "$dst"
rules=$dst/alerting/rules.yaml
sed -i "s/^\( *- \)[0-9.][0-9.]*\( *$marker\)\$/\1$threshold\2/" "$rules"
if ! grep -Eq "^ *- $threshold +$marker\$" "$rules"; then
  echo "entrypoint: no '- <number> $marker' line in $rules" >&2
  exit 1
fi

if [ -z "${REVPULSE_ALERT_SLACK_URL:-}" ]; then
  rm -f "$dst/alerting/notifications.yaml"
  echo "entrypoint: REVPULSE_ALERT_SLACK_URL is empty: no Slack contact point; alerts go to Grafana's default policy" >&2
fi
echo "entrypoint: RaR pressure threshold $threshold" >&2

if [ "${1:-}" = --render-only ]; then
  exit 0
fi
GF_PATHS_PROVISIONING=$dst
export GF_PATHS_PROVISIONING
exec /run.sh "$@"
