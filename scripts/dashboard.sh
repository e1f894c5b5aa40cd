#!/usr/bin/env bash
# `make dashboard`: the Grafana dashboard's panels as a static page, build/dashboard/index.html.
#
# With PROMETHEUS_URL set, renders from that Prometheus (yours, scraping your gateway).
# Otherwise starts a stack of its own on loopback (the Veza stand-ins, Envoy with the filter,
# Prometheus with monitoring/prometheus.yml and its rules), sends DASHBOARD_SECONDS (90) of
# the Veza traffic mix through it, renders, and stops everything it started.
# Ports (environment): DASHBOARD_GATEWAY_PORT (10100), DASHBOARD_ADMIN_PORT (9911),
# DASHBOARD_PROMETHEUS_PORT (9190); the stand-ins take free ports.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${DASHBOARD_OUT:-build/dashboard/index.html}
render() { target/debug/dashboard render --prometheus "$1" --out "$out" --minutes "$2"; }

if [[ -n "${PROMETHEUS_URL:-}" ]]; then
  render "$PROMETHEUS_URL" "${DASHBOARD_MINUTES:-60}"
  exit 0
fi

seconds=${DASHBOARD_SECONDS:-90}
gateway=${DASHBOARD_GATEWAY_PORT:-10100}
admin=${DASHBOARD_ADMIN_PORT:-9911}
stats=${DASHBOARD_STATS_PORT:-19011}
prometheus=${DASHBOARD_PROMETHEUS_PORT:-9190}
dir=build/dashboard-stack
rm -rf "$dir" && mkdir -p "$dir"
source scripts/lib/stack.sh
start_stack "$gateway" "$admin" "$stats"

# The shipped Prometheus config, scraping this gateway every 2 s.
sed -e "s|'localhost:19001'|'127.0.0.1:$stats'|" \
    -e "s|scrape_interval: 10s|scrape_interval: 2s|" -e "s|scrape_timeout: 5s|scrape_timeout: 2s|" \
    monitoring/prometheus.yml >"$dir/prometheus.yml"
cp monitoring/recording_rules.yml monitoring/alert_rules.yml "$dir/"
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$prometheus" >"$dir/prometheus.log" 2>&1 &
pids+=($!)
wait_for_port "$prometheus"

echo "dashboard: $seconds s of Veza traffic through the gateway on 127.0.0.1:$gateway"
target/debug/dashboard traffic --gateway "http://127.0.0.1:$gateway" --seconds "$seconds"
# Render once Prometheus has scraped the gateway after the last request.
traffic_end=$(date +%s)
for _ in $(seq 100); do
  scraped=$(curl -s "http://127.0.0.1:$prometheus/api/v1/query?query=timestamp(up%7Bjob%3D%22veza-gateway%22%7D)" \
    | python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)')
  (( scraped > traffic_end )) && break
  sleep 0.1
done
render "http://127.0.0.1:$prometheus" "$(( (seconds + 59) / 60 + 1 ))"
echo "dashboard: open $out"
