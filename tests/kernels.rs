//! Kernels end to end: `tests/cuda/kernels.cu` compiled by the pinned nvcc
//! (PTX-only and SASS+PTX, static and shared cudart), run unmodified through
//! the shims on the tests' daemon (the software GPU, or `VGPU_TEST_DRIVER`'s
//! driver), every number checked on the CPU by the program itself. A CUDA
//! 12.2 host (the h100-cuda12.2 profile) runs no CUDA 13 runtime; its driver
//! has no `cuFuncGetParamInfo`, so there the layouts the driver-API launches
//! need come from the module images.
mod common;

use common::Daemon;
use std::process::Command;

/// The programs are built by nvcc 13 with its cudart 13, which refuses a
/// 12.x host driver (cudaErrorInsufficientDriver, 35) at its first call, as
/// on a real host: on the h100-cuda12.2 profile that refusal is the result.
fn refused_by_cudart_13(out: &common::GuestOutput) -> bool {
    if common::expected::host().is_some_and(|h| h.runs_cudart(13))
        || common::expected::host().is_none()
    {
        return false;
    }
    assert!(
        !out.status.success()
            && out
                .stderr
                .contains(": 35 (CUDA driver version is insufficient"),
        "{out}"
    );
    true
}

fn check_all(variant: &str) {
    let daemon = Daemon::start_target();
    let out = common::run_guest(
        Command::new(common::nvcc_build("kernels.cu", variant)),
        &daemon,
        &[("VGPU_LOG", "warn")],
    );
    if refused_by_cudart_13(&out) {
        return;
    }
    out.assert_success();
    for name in [
        "vadd",
        "matmul",
        "shuffle",
        "histogram",
        "struct",
        "dynshared",
        "math",
        "streams",
        "globals",
    ] {
        out.line(&format!("{name} ok=1"));
    }
    out.line("done ok=1");
}

#[test]
fn ptx_only_static_cudart() {
    check_all("ptx-static");
}

#[test]
fn ptx_only_shared_cudart() {
    check_all("ptx-shared");
}

#[test]
fn sass_and_ptx_static_cudart() {
    check_all("sass-static");
}

#[test]
fn sass_and_ptx_shared_cudart() {
    check_all("sass-shared");
}

/// An out-of-bounds kernel reports CUDA_ERROR_ILLEGAL_ADDRESS (cudart's
/// cudaErrorIllegalAddress, 700) to its application while the daemon keeps
/// serving another guest.
#[test]
fn out_of_bounds_is_illegal_address_and_daemon_survives() {
    let daemon = Daemon::start_target();
    let mut bad = Command::new(common::nvcc_build("kernels.cu", "ptx-static"));
    bad.arg("oob");
    let out = common::run_guest(bad, &daemon, &[("VGPU_LOG", "warn")]);
    if refused_by_cudart_13(&out) {
        return;
    }
    out.assert_success();
    assert_eq!(
        common::field(out.line("oob error="), "error"),
        "700",
        "{out}"
    );
    assert_ne!(
        common::field(out.line("oob after="), "after"),
        "0",
        "the error must be sticky: {out}"
    );
    let mut good = Command::new(common::nvcc_build("kernels.cu", "ptx-static"));
    good.arg("vadd");
    let out = common::run_guest(good, &daemon, &[("VGPU_LOG", "warn")]);
    out.assert_success();
    out.line("vadd ok=1");
}

/// cudart's limits (forwarded cuCtxGetLimit/cuCtxSetLimit), device `malloc`
/// within the heap size the application set, an overrun inside the
/// allocation's granule (no fault, as on a GPU), the profiler API, and a
/// block too large refused by the launch itself.
#[test]
fn limits_heap_granule_and_profiler() {
    let daemon = Daemon::start_target();
    let out = common::run_guest(
        Command::new(common::nvcc_build("limits.cu", "ptx-static")),
        &daemon,
        &[("VGPU_LOG", "warn")],
    );
    if refused_by_cudart_13(&out) {
        return;
    }
    out.assert_success();
    for name in ["limits", "heap", "granule", "profiler", "shape", "done"] {
        out.line(&format!("{name} ok=1"));
    }
}

/// The driver API alone with NVRTC-compiled PTX: `cuModuleLoadData` +
/// `cuLaunchKernel` with `kernelParams`, then with the `extra` buffer.
#[test]
fn nvrtc_ptx_through_the_driver_api() {
    let daemon = Daemon::start_target();
    let mut cmd = Command::new(common::compile_c("nvrtc_vadd.c", &[]));
    cmd.arg(common::cuda13().join("lib/libnvrtc.so.13"));
    let out = common::run_guest(cmd, &daemon, &[("VGPU_LOG", "warn")]);
    out.assert_success();
    out.line("kernelparams ok=1");
    out.line("extra ok=1");
    out.line("done ok=1");
}
