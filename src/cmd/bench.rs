//! `vgpu bench`: what remoting costs, measured against the transport's floor
//! in the same run.
//!
//! - a raw Unix-socket ping-pong between two threads (the floor);
//! - a synchronous vgpu call (`Ping`: frame, worker dispatch, reply);
//! - kernel launches through the CUDA shim, exactly as an application makes
//!   them: batched (N launches, one synchronize) and each followed by a
//!   synchronize (a round trip per launch) — the ratio shows launches do not
//!   pay a round trip each.
//!
//! Needs a running daemon (`VGPU_HOST`).

use super::driver::{CudaDriver, Library};
use super::libs::find_shims;
use clap::Args;
use std::ffi::{c_char, c_uint, c_void};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vgpu_transport::proto::{caps, Hello, Ping};
use vgpu_transport::{Client, Endpoint};

#[derive(Args)]
pub struct BenchArgs {
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 20000)]
    pub round_trips: usize,
    /// Kernel launches per launch measurement.
    #[arg(long, default_value_t = 20000)]
    pub launches: usize,
}

/// A kernel that does nothing: launch cost only.
const NOOP_PTX: &str =
    ".version 7.0\n.target sm_52\n.address_size 64\n.visible .entry noop()\n{\n\tret;\n}\n\0";

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[i.min(samples.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
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

fn vgpu_ping(ep: &Endpoint, n: usize) -> Result<Vec<Duration>, String> {
    let stream = ep
        .connect(Duration::from_secs(3))
        .map_err(|e| format!("{ep}: {e}"))?;
    let hello = Hello::new(
        vgpu_transport::BUILD_ID,
        caps::BATCH,
        std::env::var("VGPU_TOKEN").ok(),
    );
    let mut c =
        Client::handshake(stream, &hello, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.call(&Ping {}).map_err(|e| e.to_string())?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

struct Launches {
    /// The launch calls alone: what the application thread pays.
    submitted: Duration,
    /// Those launches and the synchronize that waits for all of them.
    batched: Duration,
    synced: Duration,
    n_synced: usize,
}

macro_rules! cu {
    ($t:expr, $f:ident ( $($a:expr),* )) => {{
        let rc = super::driver::driver_call!($t, $f($($a),*), CUresult::CUDA_ERROR_NOT_FOUND);
        if rc.0 != 0 {
            return Err(format!("{} returned {}", stringify!($f), rc.0));
        }
    }};
}

fn shim_launches(n: usize) -> Result<Launches, String> {
    use cuda_types::cuda::*;
    let [cuda, _] = find_shims()?;
    let t = Library::open_any(&cuda.file)
        .map_err(|e| format!("{}: {e}", cuda.file.display()))?
        .cuda();
    let mut dev: CUdevice = 0;
    let mut ctx: CUcontext = std::ptr::null_mut();
    let mut module: CUmodule = std::ptr::null_mut();
    let mut func: CUfunction = std::ptr::null_mut();
    cu!(t, cuInit(0));
    cu!(t, cuDeviceGet(&mut dev, 0));
    cu!(t, cuCtxCreate_v2(&mut ctx, 0, dev));
    cu!(
        t,
        cuModuleLoadData(&mut module, NOOP_PTX.as_ptr() as *const c_void)
    );
    cu!(
        t,
        cuModuleGetFunction(&mut func, module, c"noop".as_ptr() as *const c_char)
    );
    let launch = |t: &CudaDriver| -> Result<(), String> {
        cu!(
            t,
            cuLaunchKernel(
                func,
                1 as c_uint,
                1,
                1,
                1,
                1,
                1,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut()
            )
        );
        Ok(())
    };
    // Warm up (first launch may load the module on the host).
    launch(&t)?;
    cu!(t, cuCtxSynchronize());

    let start = Instant::now();
    for _ in 0..n {
        launch(&t)?;
    }
    let submitted = start.elapsed();
    cu!(t, cuCtxSynchronize());
    let batched = start.elapsed();

    let n_synced = (n / 10).max(1);
    let start = Instant::now();
    for _ in 0..n_synced {
        launch(&t)?;
        cu!(t, cuCtxSynchronize());
    }
    let synced = start.elapsed();
    cu!(t, cuModuleUnload(module));
    cu!(t, cuCtxDestroy_v2(ctx));
    Ok(Launches {
        submitted,
        batched,
        synced,
        n_synced,
    })
}

pub fn bench(args: BenchArgs) -> ExitCode {
    let host = std::env::var("VGPU_HOST")
        .unwrap_or_else(|_| vgpu_transport::endpoint::DEFAULT_ENDPOINT.into());
    let ep: Endpoint = match host.parse() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("vgpu bench: VGPU_HOST: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("vgpu bench against {ep}");
    let mut raw = match raw_ping_pong(args.round_trips) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vgpu bench: raw ping-pong: {e}");
            return ExitCode::FAILURE;
        }
    };
    let raw_p50 = percentile(&mut raw, 0.5);
    println!(
        "raw unix ping-pong (64 B):   p50 {:8.2} us   p99 {:8.2} us   ({} round trips)",
        us(raw_p50),
        us(percentile(&mut raw, 0.99)),
        args.round_trips
    );
    let mut ping = match vgpu_ping(&ep, args.round_trips) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vgpu bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ping_p50 = percentile(&mut ping, 0.5);
    println!(
        "vgpu sync call (Ping):       p50 {:8.2} us   p99 {:8.2} us   ({:.1}x raw)",
        us(ping_p50),
        us(percentile(&mut ping, 0.99)),
        us(ping_p50) / us(raw_p50).max(1e-9)
    );
    match shim_launches(args.launches) {
        Ok(l) => {
            let batched_rate = args.launches as f64 / l.batched.as_secs_f64();
            let synced_rate = l.n_synced as f64 / l.synced.as_secs_f64();
            println!(
                "launch call (guest side):    {:10.2} us each   ({:.2} sync round trips: no round trip per launch)",
                us(l.submitted) / args.launches as f64,
                us(l.submitted) / args.launches as f64 / us(ping_p50).max(1e-9)
            );
            println!(
                "launches, batched:           {:10.0} launches/s   ({:.2} us each, {} launches + 1 sync)",
                batched_rate,
                1e6 / batched_rate,
                args.launches
            );
            println!(
                "launches, sync after each:   {:10.0} launches/s   ({:.2} us each)",
                synced_rate,
                1e6 / synced_rate
            );
            println!(
                "batching speed-up:           {:10.1}x   (a launch costs {:.2} sync round trips)",
                batched_rate / synced_rate,
                (1e6 / batched_rate) / us(ping_p50).max(1e-9)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vgpu bench: launches through the shim: {e}");
            ExitCode::FAILURE
        }
    }
}
