//! Kernels end to end: `tests/cuda/kernels.cu` compiled by the pinned nvcc
//! (PTX-only and SASS+PTX, static and shared cudart), run unmodified through
//! the shims on the tests' daemon (the software GPU, or `VGPU_TEST_DRIVER`'s
//! driver), every number checked on the CPU by the program itself. A CUDA
//! 12.2 host (the h100-cuda12.2 profile) runs no CUDA 13 runtime; its driver
//! has no `cuFuncGetParamInfo`, so there the layouts the driver-API launches
//! need come from the module images.
mod common;

use common::Daemon;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// `nvidia/cu13` of the test venv: nvcc, its headers, libcudart.so.13.
fn cuda13() -> PathBuf {
    let nv = common::venv_site_packages().join("nvidia/cu13");
    assert!(
        nv.join("bin/nvcc").is_file(),
        "{}: run scripts/test-deps.sh nvcc",
        nv.display()
    );
    nv
}

/// Builds one variant of kernels.cu (cached for the test binary's run).
fn build(variant: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<std::collections::HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = built.get(variant) {
        return p.clone();
    }
    let nv = cuda13();
    let out_dir = common::artifacts().dir.join("vgpu-test-cuda");
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join(format!("kernels-{variant}"));
    let mut cmd = Command::new(nv.join("bin/nvcc"));
    cmd.env(
        "PATH",
        format!(
            "{}:{}",
            nv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    match variant {
        "ptx-static" => cmd.args(["-gencode", "arch=compute_90,code=compute_90"]),
        "ptx-shared" => cmd.args([
            "-gencode",
            "arch=compute_90,code=compute_90",
            "-cudart",
            "shared",
        ]),
        "sass-static" => cmd.args([
            "-gencode",
            "arch=compute_90,code=sm_90",
            "-gencode",
            "arch=compute_90,code=compute_90",
        ]),
        "sass-shared" => cmd.args([
            "-gencode",
            "arch=compute_90,code=sm_90",
            "-gencode",
            "arch=compute_90,code=compute_90",
            "-cudart",
            "shared",
        ]),
        other => panic!("unknown variant {other}"),
    };
    cmd.arg(format!("-Xlinker=-rpath,{}", nv.join("lib").display()))
        .arg("-o")
        .arg(&exe)
        .arg(common::repo_root().join("tests/cuda/kernels.cu"));
    let out = cmd.output().expect("run nvcc");
    assert!(
        out.status.success(),
        "nvcc {variant}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    built.insert(variant.to_string(), exe.clone());
    exe
}

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
        Command::new(build(variant)),
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
    let mut bad = Command::new(build("ptx-static"));
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
    let mut good = Command::new(build("ptx-static"));
    good.arg("vadd");
    let out = common::run_guest(good, &daemon, &[("VGPU_LOG", "warn")]);
    out.assert_success();
    out.line("vadd ok=1");
}

/// The driver API alone with NVRTC-compiled PTX: `cuModuleLoadData` +
/// `cuLaunchKernel` with `kernelParams`, then with the `extra` buffer.
#[test]
fn nvrtc_ptx_through_the_driver_api() {
    let daemon = Daemon::start_target();
    let mut cmd = Command::new(common::compile_c("nvrtc_vadd.c", &[]));
    cmd.arg(cuda13().join("lib/libnvrtc.so.13"));
    let out = common::run_guest(cmd, &daemon, &[("VGPU_LOG", "warn")]);
    out.assert_success();
    out.line("kernelparams ok=1");
    out.line("extra ok=1");
    out.line("done ok=1");
}
