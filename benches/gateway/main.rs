//! `make bench`: what the filter costs per request, measured against a real Envoy, and a
//! table of the performance goals with a verdict for each.
//!
//! One Envoy worker pinned to CPU 0; the load generators (wrk, oha), nginx (the upstream of the
//! proxied route and the span collector stand-in) and the chat stand-in on CPU 1. Every form
//! of envoy/bench.yaml runs in the same rounds: each round starts every form's Envoy, and each
//! route's measurement alternates between them a slice (1 s) at a time, so drift on a shared
//! machine hits every form alike:
//!
//! - no filter; the empty wasm filter (the floor any wasm filter pays);
//! - this filter as configured by default (metrics, trace headers, sampling 1%, no export);
//! - the same without trace headers: metrics only, the foundation issue's capability;
//! - Envoy's native `envoy.access_loggers.stats` emitting the same counter and histogram;
//! - this filter sampling 100% with every span exported, and Envoy's own OpenTelemetry tracer
//!   doing the same job (100%, `traceparent`, spans to the same collector);
//! - this filter with 10 and with 1,000 route templates, and with 10,000 live series;
//! - the native build (the dynamic module) by default, without trace headers, and with 100%
//!   spans exported, against the same peers; and its hooks alone (`make native-floor`: each
//!   returns at once), the floor a dynamic-module filter of its shape pays.
//!
//! Reported per form and route: median requests/s, p50 and p99 latency, the share of no
//! filter's requests/s, Envoy's own CPU time per request (from /proc over the slices), and the
//! CPU a form adds above another. A share and an added CPU are taken within each round (the
//! median over the rounds of the ratio, or the difference, inside each), so a round that runs
//! every form slower cancels. Then: p99 latency at a fixed
//! 70% of the no-filter maximum rate through nginx (oha), a WebSocket echo workload, memory over
//! BENCH_MEMORY_REQUESTS (10 million) requests on 10,000 distinct paths, and the `.wasm` size.
//!
//! Environment: BENCH_SECONDS (10) per measurement, BENCH_SLICE_SECONDS (1) per turn of a
//! form within it, BENCH_ROUNDS (5), BENCH_CONNECTIONS (32),
//! BENCH_MEMORY_REQUESTS (10000000; 0 skips). While investigating: BENCH_ONLY runs a subset
//! (form names, comma-separated, or separated by `|` when one has a comma in it; the verdicts
//! that need a missing form are then not given), and
//! BENCH_PLUGIN_CONFIG adds a form of this filter with that plugin configuration (JSON).
//! BENCH_NATIVE_VARIANT adds a form loading that native module library (another build of it).
//! BENCH_BROWSER_HEADERS=1 sends nine more request headers, as a browser would, with wrk.
//! BENCH_PROBES=1 adds the probe filter's forms: the cost of each hostcall kind the filter makes.
//! BENCH_CARGO_WASM=1 adds this filter as cargo builds it, before wasm-opt.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use veza_bench::*;
use veza_observability::config::scale_configuration as scale_config;
use veza_test_harness::*;

mod forms;
mod load;
mod memory;
mod nginx;
mod report;

use forms::*;
use load::*;
use memory::*;
use nginx::*;
use report::*;

const ENVOY_CPU: usize = 0;
const LOAD_CPU: usize = 1;

/// The foundation's target: share of no-filter throughput on the direct-response route.
const DIRECT_THROUGHPUT_TARGET: f64 = 0.65;
/// The filter's added CPU per request, as a multiple of the empty wasm filter's.
const ADDED_CPU_VS_EMPTY_TARGET: f64 = 1.3;
/// Share of the no-filter maximum rate the fixed-rate latency run offers.
const FIXED_RATE_SHARE: f64 = 0.7;
const P99_ADDED_TARGET_US: f64 = 100.0;
/// Largest cost increase allowed from 10 to 1,000 templates, and from 10 to 10,000 series.
const SCALE_TOLERANCE: f64 = 0.10;
const MEMORY_DRIFT_TARGET: f64 = 0.02;
const WEBSOCKET_TARGET: f64 = 0.9;
/// The native build's goals: added CPU as multiples of Envoy's own peers' (the stats access
/// logger for metrics, the OpenTelemetry tracer for spans), throughput and WebSocket shares.
const NATIVE_VS_LOGGER_TARGET: f64 = 1.5;
const NATIVE_METRICS_ONLY_VS_LOGGER_TARGET: f64 = 1.0;
const NATIVE_SPANS_VS_TRACER_TARGET: f64 = 0.5;
const NATIVE_DIRECT_THROUGHPUT_TARGET: f64 = 0.90;
const NATIVE_WEBSOCKET_TARGET: f64 = 0.97;
const WASM_SIZE_TARGET: u64 = 300 * 1024;
const WEBSOCKET_CONNECTIONS: usize = 4;
/// Distinct paths of the memory run.
const MEMORY_PATHS: usize = 10_000;
const MEMORY_WARMUP_REQUESTS: u64 = 200_000;

fn main() {
    let seconds = env_number("BENCH_SECONDS", 10);
    let rounds = env_number("BENCH_ROUNDS", 5) as usize;
    let connections = env_number("BENCH_CONNECTIONS", 32);
    let memory_requests = env_number("BENCH_MEMORY_REQUESTS", 10_000_000);
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY").ok().map(|v| {
        let separator = if v.contains('|') { '|' } else { ',' };
        v.split(separator).map(|s| s.trim().to_owned()).collect()
    });
    let forms: Vec<Form> = forms()
        .into_iter()
        .filter(|f| only.as_ref().is_none_or(|o| o.iter().any(|n| n == f.name)))
        .collect();
    let oha = Path::new(REPO).join("build/tools/bin/oha");
    assert!(oha.exists(), "oha is missing: run make bench");
    // This process (the WebSocket clients, the chat stand-in) shares the load CPU with wrk.
    let pinned = Command::new("taskset")
        .args([
            "-a",
            "-p",
            "-c",
            &LOAD_CPU.to_string(),
            &std::process::id().to_string(),
        ])
        .output()
        .unwrap();
    assert!(pinned.status.success());
    let standins = veza_standins::spawn(Listeners::ephemeral().unwrap(), 0).unwrap();
    let nginx = Nginx::start();
    let chat_port = standins.chat.port();

    let mut runs: HashMap<(FormId, Route), Vec<Measurement>> = HashMap::new();
    let mut echoes: HashMap<FormId, Vec<(f64, f64)>> = HashMap::new();
    let slice_seconds = env_number("BENCH_SLICE_SECONDS", 1).clamp(1, seconds);
    let slices = (seconds / slice_seconds).max(1) as usize;
    let all_forms: Vec<&Form> = forms.iter().collect();
    for round in 1..=rounds {
        // Every form's Envoy lives through the round, and each route's measurement
        // alternates between them a slice at a time, so a drift on the shared machine (a
        // neighbour starting, the host warming) lands on every form alike rather than on
        // whichever form was running then.
        let envoys = start_round(&all_forms, round, nginx.port, chat_port);
        for route in [Route::Direct, Route::Proxied, Route::Templated] {
            let group: Vec<&(&Form, Envoy)> = envoys
                .iter()
                .filter(|(form, _)| form.routes.contains(&route))
                .collect();
            for (_, envoy) in &group {
                warm_up(envoy, route, connections);
            }
            let mut taken: Vec<Vec<Slice>> = group.iter().map(|_| Vec::new()).collect();
            for slice in 0..slices {
                for i in turn_order(group.len(), slice) {
                    taken[i].push(wrk_slice(&group[i].1, route, slice_seconds, connections));
                }
            }
            for ((form, _), slices) in group.iter().zip(&taken) {
                let m = Measurement::of(slices);
                eprintln!(
                    "round {round}/{rounds} {:<32} {:<20} {:>7.0} req/s  Envoy CPU {:>5.2} us/req",
                    form.name,
                    route.name(),
                    m.requests_per_second,
                    m.envoy_cpu_us_per_request
                );
                runs.entry((form.id, route)).or_default().push(m);
            }
        }
        for (form, envoy) in &envoys {
            // The native peers really do their job (a misconfigured one would look cheap).
            let emitted = match form.id {
                FormId::ThisFilterSpans | FormId::NativeSpans => Some("trace_spans_exported_total"),
                FormId::EnvoyTracer => Some("envoy_tracing_opentelemetry_spans_sent"),
                FormId::StatsLogger => Some("envoy_native_http_requests_total"),
                _ => None,
            };
            if let Some(metric) = emitted {
                let text = envoy.prometheus_text();
                let sent: f64 = text
                    .lines()
                    .filter(|l| l.starts_with(metric))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum();
                assert!(sent > 0.0, "{} emitted no {metric}", form.name);
            }
        }
        // The echo alternates between forms a slice at a time too, over connections each
        // form keeps for the round; one slice each first warms them.
        let echoing: Vec<&(&Form, Envoy)> = envoys.iter().filter(|(f, _)| f.echoes).collect();
        let mut clients: Vec<EchoClients> = echoing
            .iter()
            .map(|(_, envoy)| EchoClients::open(envoy))
            .collect();
        for client in &mut clients {
            client.slice(slice_seconds);
        }
        let mut taken: Vec<Vec<Slice>> = echoing.iter().map(|_| Vec::new()).collect();
        for slice in 0..slices {
            for i in turn_order(echoing.len(), slice) {
                taken[i].push(clients[i].slice(slice_seconds));
            }
        }
        drop(clients);
        for ((form, _), slices) in echoing.iter().zip(&taken) {
            let m = Measurement::of(slices);
            eprintln!(
                "round {round}/{rounds} {:<32} {:<20} {:>7.0} msg/s  Envoy CPU {:>5.1} us/msg",
                form.name, "websocket echo", m.requests_per_second, m.envoy_cpu_us_per_request
            );
            echoes
                .entry(form.id)
                .or_default()
                .push((m.requests_per_second, m.envoy_cpu_us_per_request));
        }
    }
    let summary = |id: FormId, route: Route| -> Option<Summary> {
        let ms = runs.get(&(id, route))?;
        Some(Summary {
            rps: median(ms.iter().map(|m| m.requests_per_second).collect()),
            p50: median(ms.iter().map(|m| m.p50_us).collect()),
            p99: median(ms.iter().map(|m| m.p99_us).collect()),
            cpu: median(ms.iter().map(|m| m.envoy_cpu_us_per_request).collect()),
        })
    };
    // The templated route's forms are compared with the other form's direct responses.
    let base_route = |route: Route| {
        if route == Route::Templated {
            Route::Direct
        } else {
            route
        }
    };
    // Envoy CPU per request that a form adds above another, within each round.
    let above = |id: FormId, route: Route, base: FormId| -> Option<f64> {
        Some(added_within_rounds(
            runs.get(&(id, route))?,
            runs.get(&(base, base_route(route)))?,
        ))
    };
    // A form's share of no filter's requests/s, within each round as the added CPU is.
    let share = |id: FormId, route: Route| -> Option<f64> {
        let rates = |id, route| -> Option<Vec<f64>> {
            Some(
                runs.get(&(id, route))?
                    .iter()
                    .map(|m| m.requests_per_second)
                    .collect(),
            )
        };
        Some(share_within_rounds(
            &rates(id, route)?,
            &rates(FormId::NoFilter, base_route(route))?,
        ))
    };

    println!(
        "\nEnvoy 1.40, 1 worker on CPU {ENVOY_CPU}; wrk -t1 -c{connections} -d{seconds}s on CPU {LOAD_CPU}; median of {rounds} rounds\n"
    );
    println!(
        "| route | form | requests/s | vs no filter | p50 | p99 | Envoy CPU per request | added vs no filter |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for route in [Route::Direct, Route::Proxied, Route::Templated] {
        for form in forms.iter().filter(|f| f.routes.contains(&route)) {
            let s = summary(form.id, route).unwrap();
            let (ratio, added) = match (
                share(form.id, route),
                above(form.id, route, FormId::NoFilter),
            ) {
                (Some(share), Some(added)) => (format!("{share:.2}"), format!("{added:+.1} µs")),
                _ => ("".to_owned(), "".to_owned()),
            };
            println!(
                "| {} | {} | {:.0} | {ratio} | {:.0} µs | {:.0} µs | {:.1} µs | {added} |",
                route.name(),
                form.name,
                s.rps,
                s.p50,
                s.p99,
                s.cpu,
            );
        }
    }

    let mut verdicts = Verdicts(Vec::new());
    for route in [Route::Direct, Route::Proxied] {
        let (Some(empty_added), Some(this_added)) = (
            above(FormId::EmptyWasm, route, FormId::NoFilter),
            above(FormId::ThisFilter, route, FormId::NoFilter),
        ) else {
            continue;
        };
        verdicts.add_ratio(
            &format!(
                "{}: default filter's added CPU vs the empty wasm filter's",
                route.name()
            ),
            this_added,
            empty_added,
            ADDED_CPU_VS_EMPTY_TARGET,
        );
        if route == Route::Direct {
            if let Some(ratio) = share(FormId::ThisFilter, route) {
                verdicts.add(
                    ratio >= DIRECT_THROUGHPUT_TARGET,
                    "direct response: default filter's throughput vs no filter",
                    format!("{ratio:.3}"),
                    format!("≥ {DIRECT_THROUGHPUT_TARGET}"),
                );
            }
            if let Some(ratio) = share(FormId::NoTraceHeaders, route) {
                verdicts.add(
                    ratio >= DIRECT_THROUGHPUT_TARGET,
                    "direct response: filter without trace headers (metrics only) throughput vs no filter",
                    format!("{ratio:.3}"),
                    format!("≥ {DIRECT_THROUGHPUT_TARGET}"),
                );
            }
        }
        if let (Some(own), Some(native)) = (
            above(FormId::ThisFilter, route, FormId::EmptyWasm),
            above(FormId::StatsLogger, route, FormId::NoFilter),
        ) {
            verdicts.add(
                own <= native,
                &format!(
                    "{}: filter's own work (above the empty filter) vs Envoy's stats access logger (above no filter)",
                    route.name()
                ),
                format!("{own:.1} µs vs {native:.1} µs"),
                "≤".to_owned(),
            );
        }
        if let (Some(ours), Some(theirs)) = (
            above(FormId::ThisFilterSpans, route, FormId::NoFilter),
            above(FormId::EnvoyTracer, route, FormId::NoFilter),
        ) {
            verdicts.add(
                ours < theirs,
                &format!(
                    "{}: filter with 100% spans exported vs Envoy's OpenTelemetry tracer, added CPU",
                    route.name()
                ),
                format!("{ours:.1} µs vs {theirs:.1} µs"),
                "<".to_owned(),
            );
        }
    }
    for route in [Route::Direct, Route::Proxied] {
        let added = |id: FormId| above(id, route, FormId::NoFilter);
        let logger = added(FormId::StatsLogger);
        for (id, target, what) in [
            (
                FormId::Native,
                NATIVE_VS_LOGGER_TARGET,
                "native module, default",
            ),
            (
                FormId::NativeNoTraceHeaders,
                NATIVE_METRICS_ONLY_VS_LOGGER_TARGET,
                "native module without trace headers",
            ),
            (
                FormId::NativeLogged,
                NATIVE_METRICS_ONLY_VS_LOGGER_TARGET,
                "native module without trace headers, counted in its access logger",
            ),
        ] {
            if let (Some(ours), Some(logger)) = (added(id), logger) {
                verdicts.add_ratio(
                    &format!(
                        "{}: {what}, added CPU vs Envoy's stats access logger's",
                        route.name()
                    ),
                    ours,
                    logger,
                    target,
                );
            }
        }
        if let (Some(ours), Some(tracer)) = (added(FormId::NativeSpans), added(FormId::EnvoyTracer))
        {
            verdicts.add_ratio(
                &format!(
                    "{}: native module with 100% spans exported, added CPU vs Envoy's OpenTelemetry tracer's",
                    route.name()
                ),
                ours,
                tracer,
                NATIVE_SPANS_VS_TRACER_TARGET,
            );
        }
        if route == Route::Direct {
            if let Some(ratio) = share(FormId::Native, route) {
                verdicts.add(
                    ratio >= NATIVE_DIRECT_THROUGHPUT_TARGET,
                    "direct response: native module's throughput vs no filter",
                    format!("{ratio:.3}"),
                    format!("≥ {NATIVE_DIRECT_THROUGHPUT_TARGET}"),
                );
            }
        }
    }
    let scale_cost = |id: FormId| above(id, Route::Templated, FormId::NoFilter);
    for (goal, small, large) in [
        (
            "1,000 route templates vs 10: filter's added CPU",
            FormId::Templates10,
            FormId::Templates1000,
        ),
        (
            "10,000 live series vs 10: filter's added CPU",
            FormId::Templates1000,
            FormId::Series10000,
        ),
    ] {
        if let (Some(small), Some(large)) = (scale_cost(small), scale_cost(large)) {
            verdicts.add(
                large <= small * (1.0 + SCALE_TOLERANCE),
                goal,
                format!(
                    "{large:.1} µs vs {small:.1} µs: {:+.1}%",
                    (large / small - 1.0) * 100.0
                ),
                format!("≤ +{:.0}%", SCALE_TOLERANCE * 100.0),
            );
        }
    }

    // Fixed-rate latency through nginx at 70% of the no-filter maximum.
    // Envoy's stats access logger and the native floor are the peers that say how much of
    // a native form's added p99 any filter of that cost, or of that shape, would add.
    let latency_forms = [
        FormId::NoFilter,
        FormId::EmptyWasm,
        FormId::ThisFilter,
        FormId::StatsLogger,
        FormId::Native,
        FormId::NativeLogged,
        FormId::NativeFloor,
    ];
    let mut p99s: HashMap<FormId, Vec<(f64, f64)>> = HashMap::new();
    let rate = summary(FormId::NoFilter, Route::Proxied).map(|s| s.rps * FIXED_RATE_SHARE);
    if let Some(rate) = rate {
        let latency: Vec<&Form> = forms
            .iter()
            .filter(|f| latency_forms.contains(&f.id))
            .collect();
        for round in 1..=rounds {
            // As for CPU: every form's Envoy through the round, the load alternating between
            // them a slice at a time. A form's p99 is its median slice's: a stall of the host
            // spoils the slices it falls in, not the form's whole measurement.
            let envoys = start_round(&latency, round, nginx.port, chat_port);
            for (_, envoy) in &envoys {
                fixed_rate_p99_us(&oha, envoy, Route::Proxied, rate, 2);
            }
            let mut taken: Vec<Vec<(f64, f64)>> = envoys.iter().map(|_| Vec::new()).collect();
            for slice in 0..slices {
                for i in turn_order(envoys.len(), slice) {
                    let envoy = &envoys[i].1;
                    taken[i].push(fixed_rate_p99_us(
                        &oha,
                        envoy,
                        Route::Proxied,
                        rate,
                        slice_seconds,
                    ));
                }
            }
            for ((form, _), taken) in envoys.iter().zip(taken) {
                let (p99, achieved) = median_pair(&taken);
                eprintln!(
                    "round {round}/{rounds} {:<32} {:.0} req/s offered, {achieved:.0} sent: p99 {p99:.0} us (median slice)",
                    form.name, rate
                );
                p99s.entry(form.id).or_default().extend(taken);
            }
        }
        println!(
            "\nFixed rate through nginx: {rate:.0} requests/s offered ({:.0}% of no filter's maximum), oha -c32 with latency correction, {slice_seconds} s slices, {slices} per round, {rounds} rounds: the median slice's p99, and the worst\n",
            FIXED_RATE_SHARE * 100.0
        );
        println!("| form | requests/s achieved | p99 | worst slice's p99 | added vs no filter |");
        println!("|---|---|---|---|---|");
        let p99_of = |id: FormId| p99s.get(&id).map(|runs| median_pair(runs));
        let base = p99_of(FormId::NoFilter).map(|(p99, _)| p99);
        for form in forms.iter().filter(|f| p99s.contains_key(&f.id)) {
            let (p99, achieved) = p99_of(form.id).unwrap();
            let worst = p99s[&form.id].iter().map(|r| r.0).fold(0.0, f64::max);
            let added = base
                .map(|b| format!("{:+.0} µs", p99 - b))
                .unwrap_or_default();
            println!(
                "| {} | {achieved:.0} | {p99:.0} µs | {worst:.0} µs | {added} |",
                form.name
            );
        }
        let stall = |id: FormId| {
            let runs: Vec<f64> = p99s.get(&id)?.iter().map(|r| r.0).collect();
            stalled(&runs)
        };
        for (id, build) in [(FormId::ThisFilter, "wasm"), (FormId::Native, "native")] {
            if let (Some(base), Some((this, achieved))) = (base, p99_of(id)) {
                let added = this - base;
                let goal = format!(
                    "{build}: p99 latency added at {:.0}% of the no-filter maximum rate, proxied",
                    FIXED_RATE_SHARE * 100.0
                );
                let measured =
                    format!("{added:+.0} µs ({achieved:.0} of {rate:.0} requests/s sent)");
                let target = format!("≤ {P99_ADDED_TARGET_US:.0} µs, at the offered rate");
                let stalled = [(FormId::NoFilter, "no filter"), (id, build)]
                    .into_iter()
                    .find_map(|(id, name)| stall(id).map(|range| (name, range)));
                match stalled {
                    Some((name, (low, high))) => verdicts.undecided(
                        format!("most slices stalled ({name}'s p99 from {low:.0} to {high:.0} µs)"),
                        &goal,
                        measured,
                        target,
                    ),
                    None => verdicts.add(
                        added <= P99_ADDED_TARGET_US && achieved >= rate * 0.98,
                        &goal,
                        measured,
                        target,
                    ),
                }
            }
        }
    }

    if !echoes.is_empty() {
        println!(
            "\nWebSocket echo, {WEBSOCKET_CONNECTIONS} connections, 32-byte binary messages, {slice_seconds} s slices, median of {rounds} rounds\n"
        );
        println!("| form | messages/s (round trips) | vs no filter | Envoy CPU per message |");
        println!("|---|---|---|---|");
        let echo = |id: FormId| echoes.get(&id).map(|runs| median_pair(runs));
        // A form's share of no filter's message rate, within each round.
        let share = |id: FormId| -> Option<f64> {
            let rates = |id| -> Option<Vec<f64>> {
                Some(echoes.get(&id)?.iter().map(|run| run.0).collect())
            };
            Some(share_within_rounds(&rates(id)?, &rates(FormId::NoFilter)?))
        };
        for form in forms.iter().filter(|f| echoes.contains_key(&f.id)) {
            let (rate, cpu) = echo(form.id).unwrap();
            let ratio = share(form.id)
                .map(|share| format!("{share:.2}"))
                .unwrap_or_default();
            println!("| {} | {rate:.0} | {ratio} | {cpu:.1} µs |", form.name);
        }
        for (id, build, target) in [
            (FormId::ThisFilter, "wasm", WEBSOCKET_TARGET),
            (FormId::Native, "native", NATIVE_WEBSOCKET_TARGET),
        ] {
            if let Some(ratio) = share(id) {
                verdicts.add(
                    ratio >= target,
                    &format!("{build}: WebSocket echo rate vs no filter"),
                    format!("{ratio:.3}"),
                    format!("≥ {target}"),
                );
            }
        }
    }

    for (id, build) in [(FormId::ThisFilter, "wasm"), (FormId::Native, "native")] {
        if memory_requests == 0 || !forms.iter().any(|f| f.id == id) {
            continue;
        }
        let dir = scratch_dir("memory");
        let run = memory_run(
            id,
            nginx.port,
            chat_port,
            memory_requests,
            connections,
            &dir,
        );
        let (_, vm_start, rss_start) = run.samples[0];
        let (_, vm_end, rss_end) = *run.samples.last().unwrap();
        println!(
            "\nMemory, {build} build: {} requests over {MEMORY_PATHS} distinct paths in {:.0} s, after {MEMORY_WARMUP_REQUESTS} warm-up requests\n",
            run.requests, run.seconds
        );
        println!("| requests | VM linear memory | Envoy RSS |");
        println!("|---|---|---|");
        for (requests, vm, rss) in &run.samples {
            println!(
                "| {requests} | {:.0} KiB | {:.1} MiB |",
                vm / 1024.0,
                rss / 1048576.0
            );
        }
        let vm_drift = vm_end / vm_start - 1.0;
        let rss_drift = rss_end / rss_start - 1.0;
        // The native build has no VM: its memory is in Envoy's RSS.
        if !id.native() {
            verdicts.add(
                vm_drift.abs() < MEMORY_DRIFT_TARGET,
                "VM memory drift over the memory run (one worker)",
                format!(
                    "{:.0} → {:.0} KiB: {:+.2}%",
                    vm_start / 1024.0,
                    vm_end / 1024.0,
                    vm_drift * 100.0
                ),
                format!("< {:.0}%", MEMORY_DRIFT_TARGET * 100.0),
            );
        }
        verdicts.add(
            rss_drift.abs() < MEMORY_DRIFT_TARGET,
            &format!("{build}: Envoy RSS drift over the memory run"),
            format!(
                "{:.1} → {:.1} MiB: {:+.2}%",
                rss_start / 1048576.0,
                rss_end / 1048576.0,
                rss_drift * 100.0
            ),
            format!("< {:.0}%", MEMORY_DRIFT_TARGET * 100.0),
        );
    }

    if forms.iter().any(|f| f.id.native()) {
        let size = std::fs::metadata(native_path()).unwrap().len();
        println!(
            "\nNative module: {size} bytes ({:.0} KiB)",
            size as f64 / 1024.0
        );
    }
    let size = std::fs::metadata(wasm_path()).unwrap().len();
    verdicts.add(
        size <= WASM_SIZE_TARGET,
        "`.wasm` size",
        format!("{size} bytes ({:.0} KiB)", size as f64 / 1024.0),
        format!("≤ {} KiB", WASM_SIZE_TARGET / 1024),
    );
    verdicts.print();
}

/// Every form's Envoy for round `round` (from 1), started in the round's turn order (every
/// other round in reverse, so the order they were started and warmed in favours none), with
/// its warm-up series.
fn start_round<'a>(
    forms: &[&'a Form],
    round: usize,
    nginx_port: u16,
    chat_port: u16,
) -> Vec<(&'a Form, Envoy)> {
    turn_order(forms.len(), round - 1)
        .into_iter()
        .map(|i| {
            let form = forms[i];
            let (config, ports) = config(form.id, nginx_port, chat_port);
            let envoy = Envoy::start_pinned(&config, ports, 1, Some(ENVOY_CPU));
            if form.warm_series > 0 {
                warm_series(&envoy, form.warm_series);
            }
            (form, envoy)
        })
        .collect()
}
