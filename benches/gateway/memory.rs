//! The memory run: millions of requests over distinct paths, the VM's memory and Envoy's RSS.

use super::*;

pub(crate) struct MemoryRun {
    pub(crate) requests: u64,
    pub(crate) seconds: f64,
    /// (requests so far, VM memory bytes, Envoy RSS bytes)
    pub(crate) samples: Vec<(u64, f64, f64)>,
}

/// `total` requests over 10,000 distinct paths through this filter (form `id`, either build),
/// sampling the VM memory gauge (wasm) and Envoy's RSS after a warm-up and then every 30 s.
pub(crate) fn memory_run(
    id: FormId,
    nginx_port: u16,
    chat_port: u16,
    total: u64,
    connections: u64,
    dir: &Path,
) -> MemoryRun {
    let (config, ports) = config(id, nginx_port, chat_port);
    let envoy = Envoy::start_pinned(&config, ports, 1, Some(ENVOY_CPU));
    let script = dir.join("paths.lua");
    std::fs::write(
        &script,
        format!(
            "local i = 0\nrequest = function()\n  i = (i + 1) % {MEMORY_PATHS}\n  \
             return wrk.format(nil, \"/api/v1/tracks/\" .. i .. \"?page=\" .. i)\nend\n"
        ),
    )
    .unwrap();
    let url = envoy.url("/");
    let chunk = |seconds: u64| -> u64 {
        let output = wrk_command(&url, seconds, connections)
            .arg("-s")
            .arg(&script)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && !text.contains("Non-2xx"),
            "{text}"
        );
        parse_wrk(&text).0 as u64
    };
    // The gauge is at most one flush (1 s) older than the chunk of load just ended: nothing
    // for a 30 s chunk, and a leak would show over the run either way.
    let vm = |envoy: &Envoy| {
        if id.native() {
            0.0
        } else {
            vm_memory_bytes(envoy)
        }
    };
    let sample = |envoy: &Envoy, done: u64| (done, vm(envoy), rss_bytes(envoy.pid()));
    let mut done = 0;
    while done < MEMORY_WARMUP_REQUESTS {
        done += chunk(5);
    }
    let mut samples = vec![sample(&envoy, done)];
    let started = Instant::now();
    let mut measured = 0;
    while measured < total {
        let requests = chunk(30);
        measured += requests;
        done += requests;
        samples.push(sample(&envoy, done));
        eprintln!(
            "memory run: {measured} requests, VM memory {:.0} KiB, Envoy RSS {:.1} MiB",
            samples.last().unwrap().1 / 1024.0,
            samples.last().unwrap().2 / 1048576.0
        );
    }
    let series = envoy.samples("http_requests_total").len();
    assert!(
        series <= 4,
        "10,000 paths made {series} series (route templates should fold them)"
    );
    MemoryRun {
        requests: measured,
        seconds: started.elapsed().as_secs_f64(),
        samples,
    }
}
