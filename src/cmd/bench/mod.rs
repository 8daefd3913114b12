//! `vgpu bench`: what remoting costs and how fast the software GPU is,
//! each measured against a floor of this machine taken in the same run, so
//! the ratios mean something on any machine.
//!
//! - a raw Unix-socket ping-pong between two threads (the floor of a round
//!   trip), against a synchronous vgpu call (`Ping`: frame, worker
//!   dispatch, reply);
//! - kernel launches through the CUDA shim, exactly as an application makes
//!   them: batched (N launches, one synchronize) and each followed by a
//!   synchronize (a round trip per launch) — the ratio shows launches do not
//!   pay a round trip each ([`shim`]);
//! - a captured graph of 256 empty kernels against the same kernels launched
//!   one by one: the launch call alone, launch + synchronize, and the
//!   messages each sends, counted on the wire ([`wire`]);
//! - the PTX interpreter's instructions per second on a fixed kernel
//!   ([`interp`]);
//! - llama.cpp decoding the tiny Q8_0 model through vgpu against llama.cpp's
//!   own CPU backend ([`llama`]), where the llama test dependencies are
//!   installed.
//!
//! Needs a running daemon (`VGPU_HOST`); the report starts with the machine
//! and the host's driver. `--json` / `--tsv` print the figures as records.

mod copies;
mod interp;
mod llama;
mod machine;
mod report;
mod shim;
mod wire;

use clap::Args;
use report::{percentile, us, Format, Report};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};
use vgpu_transport::proto::{caps, GetInventory, Hello, Inventory, Ping};
use vgpu_transport::{Client, Endpoint};

#[derive(Args)]
pub struct BenchArgs {
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 20000)]
    pub round_trips: usize,
    /// Kernel launches per launch measurement.
    #[arg(long, default_value_t = 20000)]
    pub launches: usize,
    /// Kernels captured into the graph.
    #[arg(long, default_value_t = 256)]
    pub graph_kernels: usize,
    /// Timed launches of the graph (and of its kernels one by one).
    #[arg(long, default_value_t = 100)]
    pub graph_launches: usize,
    /// The daemon's TCP endpoint (`HOST:PORT`, loopback), for the copy
    /// figures over TCP; without it they are skipped.
    #[arg(long)]
    pub tcp: Option<String>,
    /// Skip the copy figures.
    #[arg(long)]
    pub no_copies: bool,
    /// Skip the llama.cpp generation figures (minutes on the software GPU).
    #[arg(long)]
    pub no_llama: bool,
    /// Seconds each llama.cpp run may take.
    #[arg(long, default_value_t = 1200)]
    pub llama_timeout: u64,
    /// Print the figures as JSON records (progress goes to stderr).
    #[arg(long, conflicts_with = "tsv")]
    pub json: bool,
    /// Print the figures as tab-separated records (progress goes to stderr).
    #[arg(long)]
    pub tsv: bool,
    /// Internal: the graph-launch sequence whose frames the parent counts.
    #[arg(long, hide = true)]
    pub wire_child: bool,
}

/// The target of issue 11 for the tiny Q8_0 model on the software GPU.
const TARGET_TOKENS_PER_S: f64 = 2.0;

pub fn bench(args: BenchArgs) -> ExitCode {
    if args.wire_child {
        return match wire::child(args.graph_kernels) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vgpu bench --wire-child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let format = match (args.json, args.tsv) {
        (true, _) => Format::Json,
        (_, true) => Format::Tsv,
        _ => Format::Text,
    };
    let mut r = Report::new(format);
    let host = std::env::var("VGPU_HOST")
        .unwrap_or_else(|_| vgpu_transport::endpoint::DEFAULT_ENDPOINT.into());
    let ep: Endpoint = match host.parse() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("vgpu bench: VGPU_HOST: {e}");
            return ExitCode::FAILURE;
        }
    };
    r.say(&format!("vgpu bench against {ep}, {} UTC", utc_now()));
    r.text("date_utc", utc_now());
    machine(&mut r);

    let mut client = match connect(&ep) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vgpu bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The inventory waits for the host's driver: nothing below is timed
    // against a host still starting.
    let emulated = match client.call(&GetInventory {}) {
        Ok(inv) => {
            host_line(&mut r, &inv);
            inv.driver_kind == "emulated"
        }
        Err(e) => {
            eprintln!("vgpu bench: inventory: {e}");
            return ExitCode::FAILURE;
        }
    };

    let mut raw = match raw_ping_pong(args.round_trips) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vgpu bench: raw ping-pong: {e}");
            return ExitCode::FAILURE;
        }
    };
    let raw_p50 = percentile(&mut raw, 0.5);
    let raw_p99 = percentile(&mut raw, 0.99);
    r.say(&format!(
        "raw unix ping-pong (64 B):   p50 {:8.2} us   p99 {:8.2} us   ({} round trips)",
        us(raw_p50),
        us(raw_p99),
        args.round_trips
    ));
    r.num("raw_round_trip_p50", us(raw_p50), "us");
    r.num("raw_round_trip_p99", us(raw_p99), "us");
    let mut ping = match vgpu_ping(&mut client, args.round_trips) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vgpu bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    drop(client);
    let ping_p50 = percentile(&mut ping, 0.5);
    let ping_p99 = percentile(&mut ping, 0.99);
    let sync_ratio = us(ping_p50) / us(raw_p50).max(1e-9);
    r.say(&format!(
        "vgpu sync call (Ping):       p50 {:8.2} us   p99 {:8.2} us   ({sync_ratio:.2}x raw; {})",
        us(ping_p50),
        us(ping_p99),
        target(sync_ratio, TARGET_SYNC_RATIO)
    ));
    r.num("sync_call_ratio", sync_ratio, "x");
    r.num("sync_call_p50", us(ping_p50), "us");
    r.num("sync_call_p99", us(ping_p99), "us");
    if args.no_copies {
        r.skipped("copies", "copies:", "--no-copies");
    } else {
        copy_figures(&mut r, &ep, args.tcp.as_deref());
    }

    let rt = us(ping_p50).max(1e-9);
    let floors = Floors {
        raw: us(raw_p50).max(1e-9),
        sync: rt,
    };
    match shim::Shim::open() {
        Ok(s) => {
            launch_figures(&mut r, &s, args.launches, &floors);
            threaded_figures(&mut r, &s, args.launches, args.round_trips, &floors);
            graph_figures(&mut r, &s, args.graph_kernels, args.graph_launches, rt);
        }
        Err(e) => {
            r.failed("launches", "launches through the shim:", &e);
            r.failed("graphs", "graphs through the shim:", &e);
        }
    }
    message_figures(&mut r, &ep, args.graph_kernels);
    interpreter_figures(&mut r);
    if args.no_llama {
        r.skipped("llama", "llama.cpp generation:", "--no-llama");
    } else {
        llama_figures(
            &mut r,
            &host,
            emulated,
            Duration::from_secs(args.llama_timeout),
        );
    }
    r.finish()
}

fn machine(r: &mut Report) {
    let m = machine::Machine::probe();
    r.say(&format!(
        "machine: {} ({} CPUs, {} usable here), {:.1} GiB, load average {:.2} at start",
        m.cpu_model, m.cpus, m.available, m.mem_gib, m.load
    ));
    r.text("machine_cpu_model", m.cpu_model);
    r.num("machine_cpus", m.cpus as f64, "");
    r.num("machine_cpus_usable", m.available as f64, "");
    r.num("machine_mem", m.mem_gib, "GiB");
    r.num("machine_load_1min", m.load, "");
}

fn host_line(r: &mut Report, inv: &Inventory) {
    let device = inv
        .devices
        .first()
        .map_or("no device".to_string(), |d| d.name.clone());
    let kind = if inv.driver_kind == "emulated" {
        "software GPU"
    } else {
        "real driver"
    };
    r.say(&format!(
        "host: {} ({kind}, CUDA driver {}.{}), {device}",
        inv.driver_kind,
        inv.cuda_driver_version / 1000,
        inv.cuda_driver_version % 1000 / 10
    ));
    r.text("host_driver", inv.driver_kind.clone());
    r.text("host_device", device);
}

fn connect(ep: &Endpoint) -> Result<Client, String> {
    let stream = ep
        .connect(Duration::from_secs(3))
        .map_err(|e| format!("{ep}: {e}"))?;
    let hello = Hello::new(
        vgpu_transport::BUILD_ID,
        caps::BATCH,
        std::env::var("VGPU_TOKEN").ok(),
    );
    Client::handshake(stream, &hello, Duration::from_secs(5)).map_err(|e| e.to_string())
}

fn raw_ping_pong(n: usize) -> std::io::Result<Vec<Duration>> {
    let (mut a, mut b) = UnixStream::pair()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = [0u8; 64];
        for _ in 0..n {
            b.read_exact(&mut buf)?;
            b.write_all(&buf)?;
        }
        Ok(())
    });
    let mut buf = [7u8; 64];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        a.write_all(&buf)?;
        a.read_exact(&mut buf)?;
        samples.push(t.elapsed());
    }
    echo.join().expect("echo thread")?;
    Ok(samples)
}

fn vgpu_ping(c: &mut Client, n: usize) -> Result<Vec<Duration>, String> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.call(&Ping {}).map_err(|e| e.to_string())?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Issue 12's copy targets on the software GPU, as ratios in one run.
const COPY_UNIX_TARGET: f64 = 0.5;
const COPY_TCP_TARGET: f64 = 0.8;

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio >= target {
        "met"
    } else {
        "NOT met"
    }
}

/// Floors, then 64 MiB copies over Unix+shm, Unix alone and TCP.
fn copy_figures(r: &mut Report, ep: &Endpoint, tcp: Option<&str>) {
    let mem = copies::memcpy_floor();
    r.say(&format!("memcpy (64 MiB):             {mem:8.2} GB/s"));
    r.num("floor_memcpy", mem, "GB/s");
    let unix = copies::unix_floor().unwrap_or(0.0);
    r.say(&format!(
        "raw unix stream:             {unix:8.2} GB/s   (two threads, 1 MiB writes)"
    ));
    r.num("floor_unix_stream", unix, "GB/s");
    let tcp_floor = copies::tcp_floor().unwrap_or(0.0);
    r.say(&format!(
        "raw tcp loopback stream:     {tcp_floor:8.2} GB/s   (two threads, 1 MiB writes)"
    ));
    r.num("floor_tcp_stream", tcp_floor, "GB/s");
    let mut runs: Vec<(&str, Endpoint, bool, f64, f64, &str)> = Vec::new();
    if matches!(ep, Endpoint::Unix(_)) {
        runs.push((
            "unix+shm",
            ep.clone(),
            true,
            mem,
            COPY_UNIX_TARGET,
            "memcpy",
        ));
        runs.push((
            "unix, no shm",
            ep.clone(),
            false,
            mem,
            COPY_UNIX_TARGET,
            "memcpy",
        ));
    }
    match tcp.map(|t| format!("tcp:{t}").parse::<Endpoint>()) {
        Some(Ok(t)) => runs.push(("tcp", t, false, tcp_floor, COPY_TCP_TARGET, "raw tcp")),
        Some(Err(e)) => r.failed("copies_tcp", "copies over tcp:", &e),
        None => r.skipped("copies_tcp", "copies over tcp:", "no --tcp HOST:PORT"),
    }
    for (label, ep, shm, floor, target, floor_name) in runs {
        let key = label.replace([' ', ',', '+'], "_").replace("__", "_");
        match copies::vgpu_copies(&ep, shm) {
            Ok((h2d, d2h, used)) => {
                if shm && !used {
                    r.say("  (the host refused the shared-memory region)");
                }
                for (dir, v) in [("HtoD", h2d), ("DtoH", d2h)] {
                    let ratio = v / floor.max(1e-12);
                    r.say(&format!(
                        "{:<29}{v:8.2} GB/s   ({ratio:.2}x {floor_name}; target >= {target}x {})",
                        format!("{dir} 64 MiB, {label}:"),
                        verdict(ratio, target)
                    ));
                    r.num(&format!("copy_{}_{key}", dir.to_lowercase()), v, "GB/s");
                }
            }
            Err(e) => r.failed(&format!("copies_{key}"), &format!("copies, {label}:"), &e),
        }
    }
}

/// `rt`: the sync call's p50 in µs, the unit launches are priced in.
/// Issue 12's targets on the software GPU, as ratios to this machine's
/// floors measured in the same run.
const TARGET_SYNC_RATIO: f64 = 1.3;
const TARGET_ENQUEUE_RATIO: f64 = 20.0;
const TARGET_BATCHED_RATIO: f64 = 0.2;

/// "target <= X met" or how far off, for a ratio that should stay low.
fn target(ratio: f64, max: f64) -> String {
    if ratio <= max {
        format!("target <= {max} met")
    } else {
        format!("target <= {max} NOT met")
    }
}

/// The round trips of this run, in µs (p50).
struct Floors {
    /// A raw Unix-socket ping-pong.
    raw: f64,
    /// vgpu's synchronous call, the unit launches are priced in.
    sync: f64,
}

fn launch_figures(r: &mut Report, s: &shim::Shim, n: usize, f: &Floors) {
    let rt = f.sync;
    let local_n = 1_000_000;
    let local = match shim::local_calls(s, local_n) {
        Ok(d) => d.as_nanos() as f64 / local_n as f64,
        Err(e) => return r.failed("launches", "a locally answered call:", &e),
    };
    r.say(&format!(
        "local call (cuCtxGetCurrent):{local:10.1} ns each   (answered by the shim; the floor of a guest call)"
    ));
    r.num("local_call", local, "ns");
    let l = match shim::launches(s, n) {
        Ok(l) => l,
        Err(e) => return r.failed("launches", "launches through the shim:", &e),
    };
    let batched_rate = n as f64 / l.batched.as_secs_f64();
    let synced_rate = l.n_synced as f64 / l.synced.as_secs_f64();
    let call = us(l.submitted) / n as f64;
    let n_bursts = (n / shim::BURST).clamp(5, 200);
    let mut bursts = match shim::enqueue_bursts(s, n_bursts) {
        Ok(b) => b,
        Err(e) => return r.failed("launches", "launch enqueue:", &e),
    };
    let enqueue = us(percentile(&mut bursts, 0.5));
    let enqueue_ratio = enqueue * 1000.0 / local.max(1e-9);
    r.say(&format!(
        "launch enqueue (guest side): {enqueue:10.3} us each   ({enqueue_ratio:.1}x a local call, {}; p50 of {n_bursts} bursts of {} launches)",
        target(enqueue_ratio, TARGET_ENQUEUE_RATIO),
        shim::BURST
    ));
    r.say(&format!(
        "launch call in a long burst: {call:10.2} us each   ({:.2} sync round trips; {n} launches: includes waiting for the host to drain the socket)",
        call / rt
    ));
    r.num("launch_enqueue", enqueue, "us");
    let batched_ratio = 1e6 / batched_rate / f.raw;
    r.say(&format!(
        "launches, batched:           {batched_rate:10.0} launches/s   ({:.2} us each, {batched_ratio:.3}x a raw ping-pong, {}; {n} launches + 1 sync)",
        1e6 / batched_rate,
        target(batched_ratio, TARGET_BATCHED_RATIO),
    ));
    r.num("launch_enqueue_ratio", enqueue_ratio, "x");
    r.num("launch_batched_ratio", batched_ratio, "x");
    r.say(&format!(
        "launches, sync after each:   {synced_rate:10.0} launches/s   ({:.2} us each)",
        1e6 / synced_rate
    ));
    r.say(&format!(
        "batching speed-up:           {:10.1}x   (a launch costs {:.2} sync round trips)",
        batched_rate / synced_rate,
        (1e6 / batched_rate) / rt
    ));
    r.num("launch_call", call, "us");
    r.num("launches_batched", batched_rate, "launches/s");
    r.num("launches_synced", synced_rate, "launches/s");
    r.num("batching_speedup", batched_rate / synced_rate, "x");
}

/// The launch and sync figures again with several application threads at
/// once, each launching on its own stream.
fn threaded_figures(r: &mut Report, s: &shim::Shim, n: usize, syncs: usize, f: &Floors) {
    const THREADS: usize = 4;
    let t = match shim::threaded(s, THREADS, (n / THREADS).max(1), (syncs / THREADS).max(1)) {
        Ok(t) => t,
        Err(e) => return r.failed("threads", "launches from 4 threads:", &e),
    };
    let rate = t.launches as f64 / t.elapsed.as_secs_f64();
    let call = us(t.submitted) / t.launches as f64;
    let batched_ratio = 1e6 / rate / f.raw;
    let mut syncs = t.syncs;
    let p50 = us(percentile(&mut syncs, 0.5));
    let p99 = us(percentile(&mut syncs, 0.99));
    r.say(&format!(
        "{} threads, launch call:      {call:10.2} us each   (each thread on its own stream)",
        t.threads
    ));
    r.say(&format!(
        "{} threads, batched:          {rate:10.0} launches/s   ({:.2} us each, {batched_ratio:.3}x a raw ping-pong; {} launches + 1 sync per thread)",
        t.threads,
        1e6 / rate,
        t.launches / t.threads
    ));
    r.say(&format!(
        "{} threads, sync call:        p50 {p50:8.2} us   p99 {p99:8.2} us   ({:.2}x raw, {:.2}x one thread's; all threads calling at once)",
        t.threads,
        p50 / f.raw,
        p50 / f.sync
    ));
    r.num("threads", t.threads as f64, "");
    r.num("threads_launch_call", call, "us");
    r.num("threads_launches_batched", rate, "launches/s");
    r.num("threads_sync_call_p50", p50, "us");
    r.num("threads_sync_call_ratio", p50 / f.raw, "x");
}

fn graph_figures(r: &mut Report, s: &shim::Shim, kernels: usize, reps: usize, rt: f64) {
    let timed = shim::Graph::capture(s, kernels).and_then(|g| shim::graph_times(&g, reps.max(1)));
    let mut t = match timed {
        Ok(t) => t,
        Err(e) => return r.failed("graphs", "graph through the shim:", &e),
    };
    let [g_call, g_e2e, e_call, e_e2e] = [
        &mut t.graph_call,
        &mut t.graph_e2e,
        &mut t.each_call,
        &mut t.each_e2e,
    ]
    .map(|v| us(percentile(v, 0.5)));
    r.say(&format!(
        "graph launch call:           p50 {g_call:8.2} us   ({kernels} launch calls: {e_call:.2} us, {:.1}x the graph's)",
        e_call / g_call.max(1e-9)
    ));
    r.say(&format!(
        "graph launch + sync:         p50 {g_e2e:8.2} us   ({kernels} launches + sync: {e_e2e:.2} us, {:.1}x the graph's; {:.2} sync round trips)",
        e_e2e / g_e2e.max(1e-9),
        g_e2e / rt
    ));
    r.num("graph_kernels", kernels as f64, "");
    r.num("graph_launch_call_p50", g_call, "us");
    r.num("graph_one_by_one_calls_p50", e_call, "us");
    r.num("graph_launch_sync_p50", g_e2e, "us");
    r.num("graph_one_by_one_sync_p50", e_e2e, "us");
}

fn message_figures(r: &mut Report, ep: &Endpoint, kernels: usize) {
    let c = match wire::count(ep, kernels) {
        Ok(c) => c,
        Err(e) => return r.failed("graph_messages", "graph launch messages:", &e),
    };
    r.say(&format!(
        "graph launch messages:       {} ({}, {} B)   ({kernels} launches one by one: {} messages, {:.1} KiB)",
        c.graph.frames.len(),
        c.graph.ops(),
        c.graph.bytes(),
        c.one_by_one.frames.len(),
        c.one_by_one.bytes() as f64 / 1024.0
    ));
    r.num("graph_launch_messages", c.graph.frames.len() as f64, "");
    r.num("graph_launch_bytes", c.graph.bytes() as f64, "B");
    r.num(
        "graph_one_by_one_messages",
        c.one_by_one.frames.len() as f64,
        "",
    );
    r.num("graph_one_by_one_bytes", c.one_by_one.bytes() as f64, "B");
}

fn interpreter_figures(r: &mut Report) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runs = vec![(1, "1 thread".to_string(), "interpreter_1_thread")];
    if cores > 1 {
        runs.push((0, format!("{cores} threads"), "interpreter_all_threads"));
    }
    for (workers, label, name) in runs {
        match interp::throughput(workers) {
            Ok((t, blocks)) => {
                r.say(&format!(
                    "{:<29}{:10.1} M instructions/s   ({} instructions in {:.2} s, {blocks} blocks of 256 threads; fastest of {})",
                    format!("interpreter, {label}:"),
                    t.per_second() / 1e6,
                    t.instructions,
                    t.seconds,
                    interp::RUNS
                ));
                r.num(name, t.per_second(), "instructions/s");
            }
            Err(e) => r.failed(name, &format!("interpreter, {label}:"), &e),
        }
    }
}

fn llama_figures(r: &mut Report, host: &str, emulated: bool, timeout: Duration) {
    let setup = match llama::Setup::find() {
        Ok(s) => s,
        Err(why) => return r.skipped("llama", "llama.cpp generation:", &why),
    };
    let model = llama::describe(&setup.model);
    let cpu = match setup.run_cpu(timeout) {
        Ok(g) => g,
        Err(e) => return r.failed("llama_cpu", "llama.cpp, CPU backend:", &e),
    };
    // The runner prints step times to 0.1 ms, a few ticks of a CPU step.
    r.say(&format!(
        "llama.cpp, CPU backend:      {:8.0} tokens/s   ({model}, median of {} decode steps, mean {:.0}; 2 threads; steps timed to 0.1 ms)",
        cpu.tokens_per_s(),
        cpu.steps.len(),
        cpu.mean_tokens_per_s()
    ));
    r.num("llama_cpu_tokens_per_s", cpu.tokens_per_s(), "tokens/s");
    r.num(
        "llama_cpu_tokens_per_s_mean",
        cpu.mean_tokens_per_s(),
        "tokens/s",
    );
    let gpu = match setup.run_vgpu(host, timeout) {
        Ok(g) => g,
        Err(e) => return r.failed("llama_vgpu", "llama.cpp through vgpu:", &e),
    };
    let on = if emulated {
        "software GPU".to_string()
    } else {
        gpu.gpu.clone().unwrap_or_else(|| "real GPU".into())
    };
    let target = if !emulated {
        String::new()
    } else if gpu.tokens_per_s() >= TARGET_TOKENS_PER_S {
        format!("; target >= {TARGET_TOKENS_PER_S} met")
    } else {
        format!(
            "; target >= {TARGET_TOKENS_PER_S}: {:.1}x to go",
            TARGET_TOKENS_PER_S / gpu.tokens_per_s().max(1e-9)
        )
    };
    r.say(&format!(
        "llama.cpp through vgpu:      {:8.2} tokens/s   ({model} on the {on}, CUDA graphs on; median of {} decode steps, mean {:.2}; 1/{:.0} of the CPU backend; whole run {:.0} s{target})",
        gpu.tokens_per_s(),
        gpu.steps.len(),
        gpu.mean_tokens_per_s(),
        cpu.tokens_per_s() / gpu.tokens_per_s().max(1e-9),
        gpu.total_s
    ));
    r.say(&format!(
        "llama.cpp tokens:            {}",
        if gpu.tokens == cpu.tokens {
            "the same as the CPU backend's"
        } else {
            "DIFFERENT from the CPU backend's (tests/llama.rs says where)"
        }
    ));
    r.num("llama_vgpu_tokens_per_s", gpu.tokens_per_s(), "tokens/s");
    r.num(
        "llama_vgpu_tokens_per_s_mean",
        gpu.mean_tokens_per_s(),
        "tokens/s",
    );
    r.num("llama_vgpu_run", gpu.total_s, "s");
    r.text(
        "llama_vgpu_same_tokens",
        if gpu.tokens == cpu.tokens {
            "yes"
        } else {
            "no"
        },
    );
}

/// `YYYY-MM-DD HH:MM` now, in UTC.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86400) as i64);
    let s = secs % 86400;
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", s / 3600, s % 3600 / 60)
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (the
/// era-based conversion: 400-year eras of 146097 days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2000-02-29: 30 years of 365 days plus the 7 leap days before it
        // (72, 76, 80, 84, 88, 92, 96), then January and 28 days.
        assert_eq!(civil_from_days(30 * 365 + 7 + 31 + 28), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
