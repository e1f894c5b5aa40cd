#!/usr/bin/env bash
# `make soak`: SOAK_SECONDS (600) of mixed load through the gateway with the filter (HTTP to
# every service, signed-in users, logins, uploads, chat WebSocket sessions, audio streams,
# /ready probes, a new unknown path every round), from SOAK_CLIENTS (4) clients at full speed.
# Reports the requests and those without an answer, Envoy's RSS at the start and the end, and
# the number of metric series the filter made.
# Ports (environment): SOAK_GATEWAY_PORT (10200), SOAK_ADMIN_PORT (9921).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${SOAK_SECONDS:-600}
clients=${SOAK_CLIENTS:-4}
gateway=${SOAK_GATEWAY_PORT:-10200}
admin=${SOAK_ADMIN_PORT:-9921}
stats=${SOAK_STATS_PORT:-19021}
dir=build/soak
rm -rf "$dir" && mkdir -p "$dir"
source scripts/lib/stack.sh
start_stack "$gateway" "$admin" "$stats"

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$envoy_pid/status"; }
series() {
  curl -s "http://127.0.0.1:$admin/stats/prometheus" \
    | grep -cE '^(http_|websocket_|chat_|stream_|dependency_|user_|tracks_|playlists_|active_users|trace_|veza_)' || true
}

# A minute of warm-up (VM caches, every label set of the mix defined), then the baseline.
warm=$(( seconds < 600 ? seconds / 10 : 60 ))
target/debug/dashboard traffic --gateway "http://127.0.0.1:$gateway" --seconds "$warm" --pause-ms 0 >/dev/null
start_rss=$(rss_kb)
start_series=$(series)
echo "soak: $seconds s, $clients clients, Envoy RSS $((start_rss / 1024)) MB and $start_series series after warm-up"

client_pids=()
for n in $(seq "$clients"); do
  target/debug/dashboard traffic --gateway "http://127.0.0.1:$gateway" --seconds "$seconds" --pause-ms 0 \
    >"$dir/client-$n.log" 2>&1 &
  client_pids+=($!)
done
for pid in "${client_pids[@]}"; do wait "$pid"; done

end_rss=$(rss_kb)
end_series=$(series)
requests=0 failures=0
for n in $(seq "$clients"); do
  read -r sent failed < <(sed -nE 's/^traffic: ([0-9]+) requests and sessions in [0-9]+ s, ([0-9]+) without an answer$/\1 \2/p' "$dir/client-$n.log")
  requests=$((requests + sent)) failures=$((failures + failed))
done
counted=$(curl -s "http://127.0.0.1:$admin/stats/prometheus" | awk '/^http_requests_total/ {s += $NF} END {printf "%d", s}')
echo "soak: $requests requests and sessions sent, $failures without an answer; http_requests_total counts $counted (warm-up and /ready included)"
echo "soak: Envoy RSS $((start_rss / 1024)) MB after warm-up, $((end_rss / 1024)) MB at the end ($(awk -v a="$start_rss" -v b="$end_rss" 'BEGIN {printf "%+.1f%%", (b - a) * 100 / a}'))"
echo "soak: metric series $start_series after warm-up, $end_series at the end"
