//! The software GPU's PTX interpreter on a fixed kernel
//! ([`vgpu_ptx::bench`]: loads, FMAs, address arithmetic, a loop, shared
//! memory with a barrier, a warp reduction), in instructions per second.
//!
//! Measured in this process by calling the interpreter directly, not as a
//! launch through vgpu: the interpreter counts the instructions it ran, so
//! the rate is exact and free of remoting and of the kernel's setup, and
//! remoting has its own figures above. (Through the software GPU the count
//! would have to be known in advance and the time would include a round
//! trip and the worker's launch path.) That is why the CLI depends on
//! vgpu-ptx, a library with no FFI.

use std::time::Duration;
use vgpu_ptx::bench::{interpreter_throughput, Throughput};

/// Long enough that thread start-up and timer resolution are noise.
const TARGET: Duration = Duration::from_millis(500);
/// Runs measured; the fastest is reported. Other work on a shared machine
/// only ever slows a run down, so the fastest is the one closest to what
/// the interpreter does on its own.
pub const RUNS: usize = 3;

/// Runs the kernel on `workers` threads (0: one per CPU), sized so one run
/// takes about [`TARGET`] (a small calibration run first); the fastest of
/// [`RUNS`] runs and its block count.
pub fn throughput(workers: usize) -> Result<(Throughput, u32), String> {
    let probe_blocks = 8;
    let probe = interpreter_throughput(probe_blocks, workers).map_err(|e| e.to_string())?;
    let scale = TARGET.as_secs_f64() / probe.seconds.max(1e-6);
    let blocks = ((probe_blocks as f64 * scale) as u32).clamp(probe_blocks, 1 << 16);
    let mut best: Option<Throughput> = None;
    for _ in 0..RUNS {
        let t = interpreter_throughput(blocks, workers).map_err(|e| e.to_string())?;
        if best.is_none_or(|b| t.per_second() > b.per_second()) {
            best = Some(t);
        }
    }
    Ok((best.expect("RUNS > 0"), blocks))
}
