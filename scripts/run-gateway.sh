#!/usr/bin/env bash
# `make run`: the Veza gateway with the filter, in front of the Veza services when they are
# running, else in front of the bundled stand-ins. Ctrl-C stops everything this started.
#
# Ports (environment): VEZA_GATEWAY_PORT (10000), VEZA_ADMIN_PORT (9901),
# VEZA_STATS_PORT (19001), VEZA_BACKEND_PORT (8080), VEZA_CHAT_PORT (3001), VEZA_STREAM_PORT (3002).
# VEZA_DEMO_TRAFFIC=0 turns off the light demo traffic sent when stand-ins answer.
# VEZA_RUN_DIR (build) holds the generated Envoy config and Envoy's log.
# VEZA_BUILD=native runs the native module (envoy/envoy-native.yaml) instead of the .wasm;
# VEZA_BUILD=native-metrics the native module counting in its access logger, metrics only
# (envoy/envoy-native-metrics.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."

gateway=${VEZA_GATEWAY_PORT:-10000}
admin=${VEZA_ADMIN_PORT:-9901}
stats=${VEZA_STATS_PORT:-19001}
backend=${VEZA_BACKEND_PORT:-8080}
chat=${VEZA_CHAT_PORT:-3001}
stream=${VEZA_STREAM_PORT:-3002}
log_fields="one JSON line per request, with trace ids"
case ${VEZA_BUILD:-wasm} in
  wasm) shipped=envoy/envoy.yaml module=veza_observability.wasm ;;
  native) shipped=envoy/envoy-native.yaml module=libveza_observability.so ;;
  # Metrics only: no trace context, so its access log has no trace ids.
  native-metrics) shipped=envoy/envoy-native-metrics.yaml module=libveza_observability.so
    log_fields="one JSON line per request" ;;
  *) echo "VEZA_BUILD=${VEZA_BUILD}: expected wasm, native or native-metrics" >&2; exit 2 ;;
esac
run_dir=${VEZA_RUN_DIR:-build}

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pids=()
cleanup() {
  trap - EXIT INT TERM
  ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "stopped"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# A real service keeps its port; each missing one is served by a stand-in on that port.
standin_args=()
missing=()
for service in backend:$backend chat:$chat stream:$stream; do
  name=${service%%:*} port=${service##*:}
  if listening "$port"; then
    echo "veza $name: the running service on 127.0.0.1:$port"
    standin_args+=("--$name" "127.0.0.1:0")
  else
    missing+=("$name")
    standin_args+=("--$name" "127.0.0.1:$port")
  fi
done
if ((${#missing[@]})); then
  target/debug/veza-standins "${standin_args[@]}" --jitter-ms 40 &
  pids+=($!)
  for service in backend:$backend chat:$chat stream:$stream; do
    for _ in $(seq 100); do listening "${service##*:}" && break; sleep 0.1; done
  done
fi

mkdir -p "$run_dir"
config=$run_dir/envoy-run.yaml
sed -e "s|port_value: 10000 }|port_value: $gateway }|" \
    -e "s|port_value: 9901 }|port_value: $admin }|" \
    -e "s|port_value: 19001 }|port_value: $stats }|" \
    -e "s|port_value: 8080 }|port_value: $backend }|" \
    -e "s|port_value: 3001 }|port_value: $chat }|" \
    -e "s|port_value: 3002 }|port_value: $stream }|" \
    -e "s|filename: build/$module|filename: $PWD/build/$module|" \
    "$shipped" > "$config"

# Envoy's stdout is the JSON access log: to a file here, not over the terminal.
if command -v func-e >/dev/null; then
  func-e run -c "$config" --log-path "$run_dir/envoy-run.log" >"$run_dir/access-log.json" &
else
  build/bin/envoy -c "$config" --disable-hot-restart --log-path "$run_dir/envoy-run.log" \
    >"$run_dir/access-log.json" &
fi
pids+=($!)
for _ in $(seq 200); do
  [[ "$(curl -s "http://127.0.0.1:$admin/ready" 2>/dev/null)" == LIVE ]] && break
  sleep 0.1
done

cat <<MSG

  Filter            ${VEZA_BUILD:-wasm} build ($shipped)
  Veza gateway      http://127.0.0.1:$gateway   (try: curl http://127.0.0.1:$gateway/api/v1/tracks/42)
  Health            http://127.0.0.1:$gateway/live   http://127.0.0.1:$gateway/ready
                    (/ready also calls postgres_exporter on 9187 and redis_exporter on 9121)
  Metrics           http://127.0.0.1:$stats/metrics   (what Prometheus scrapes: the filter's metrics)
  Envoy's own       http://127.0.0.1:$stats/stats/prometheus
  Envoy log         $run_dir/envoy-run.log
  Access log        $run_dir/access-log.json   ($log_fields)
  Stand-ins for     ${missing[*]:-nothing (every Veza service is running)}

  Ctrl-C stops everything.
MSG

# Light traffic so the numbers move; only when stand-ins (not real users' services) answer.
if ((${#missing[@]})) && [[ "${VEZA_DEMO_TRAFFIC:-1}" != 0 ]]; then
  (
    paths=(/api/v1/tracks/1 /api/v1/tracks/2 /api/v1/tracks /api/v1/users/me /api/v1/search
           /health /api/messages/stats "/stream/demo.mp3?expires=99999999999&sig=demo" /api/v1/nope)
    # Three signed-in listeners (JWTs whose sub names them; the stand-ins do not verify).
    tokens=(eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiAiZGVtby1saXN0ZW5lci0wIn0.ZGVtbw eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiAiZGVtby1saXN0ZW5lci0xIn0.ZGVtbw eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiAiZGVtby1saXN0ZW5lci0yIn0.ZGVtbw)
    while sleep 1; do
      for path in "${paths[@]}"; do curl -s -o /dev/null "http://127.0.0.1:$gateway$path" || true; done
      curl -s -o /dev/null -X POST -d '{"email":"a@b.c","password":"wrong"}' "http://127.0.0.1:$gateway/api/v1/auth/login" || true
      curl -s -o /dev/null -X POST -d '{"email":"a@b.c","password":"pw"}' "http://127.0.0.1:$gateway/api/v1/auth/login" || true
      for token in "${tokens[@]}"; do
        curl -s -o /dev/null -H "authorization: Bearer $token" "http://127.0.0.1:$gateway/api/v1/users/me" || true
      done
    done
  ) &
  pids+=($!)
fi
wait "${pids[-1]}"
