# Shared by make dashboard and make soak: start the Veza stand-ins and Envoy with the filter on
# loopback, and stop everything on exit. Source it from the repository's root; set `dir`
# (where configs and logs go) first.

pids=()
cleanup() {
  ((${#pids[@]})) && kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  for _ in $(seq 300); do listening "$1" && return 0; sleep 0.1; done
  echo "nothing listens on $1 (see $dir)" >&2
  exit 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_stack GATEWAY_PORT ADMIN_PORT STATS_PORT: the stand-ins on free ports, Envoy
# (envoy/envoy.yaml) in front of them; sets envoy_pid.
start_stack() {
  local gateway=$1 admin=$2 stats=$3
  local backend chat stream
  backend=$(free_port) chat=$(free_port) stream=$(free_port)
  target/debug/veza-standins --backend "127.0.0.1:$backend" --chat "127.0.0.1:$chat" \
    --stream "127.0.0.1:$stream" --jitter-ms 40 >"$dir/standins.log" 2>&1 &
  pids+=($!)
  for port in "$backend" "$chat" "$stream"; do wait_for_port "$port"; done
  sed -e "s|port_value: 10000 }|port_value: $gateway }|" \
      -e "s|port_value: 9901 }|port_value: $admin }|" \
      -e "s|port_value: 19001 }|port_value: $stats }|" \
      -e "s|port_value: 8080 }|port_value: $backend }|" \
      -e "s|port_value: 3001 }|port_value: $chat }|" \
      -e "s|port_value: 3002 }|port_value: $stream }|" \
      -e "s|filename: build/veza_observability.wasm|filename: $PWD/build/veza_observability.wasm|" \
      envoy/envoy.yaml >"$dir/envoy.yaml"
  build/bin/envoy -c "$dir/envoy.yaml" --disable-hot-restart \
    --log-path "$dir/envoy.log" >"$dir/access-log.json" 2>&1 &
  envoy_pid=$!
  pids+=($envoy_pid)
  wait_for_port "$gateway"
}
