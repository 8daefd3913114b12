//! Hand-written PTX through libvgpu_cuda.so's driver API against a real
//! `vgpu host --driver emulated`: tests/c/kernels.c (modules, launches,
//! events ...) and tests/c/hopper.c (launch attributes, direct and
//! captured; occupancy; tensor maps) dlopen the library the way an
//! application would and check every result themselves.
//!
//! Needs `cargo build --workspace` first (the daemon, the software GPU and
//! the cdylib next to this test's executable) and gcc.

use std::path::Path;
use std::process::Command;
use vgpu_test_support::{
    artifacts, compile_c_in, requires_h100_pcie, run_with_timeout, Daemon, GUEST_TIMEOUT,
};

/// Runs tests/c/`program` against a fresh software GPU; every check it
/// prints must pass.
fn run_checks(program: &str) {
    let daemon = Daemon::start_emulated();
    let exe = compile_c_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c"),
        program,
        &[],
    );
    let mut cmd = Command::new(&exe);
    cmd.arg(&artifacts().cuda_shim)
        .env("VGPU_HOST", daemon.host_env())
        .env("VGPU_LOG", "warn")
        .env_remove("CUDA_VISIBLE_DEVICES");
    let out = run_with_timeout(cmd, GUEST_TIMEOUT);
    let text = out.stdout.clone();
    eprintln!("{text}{}", out.stderr);
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    assert!(out.status.success() && text.contains("done failures=0"));
}

#[test]
fn hand_written_ptx_end_to_end() {
    run_checks("kernels.c");
}

/// Issue 10 item 4 and issue 11 item 3: every launch attribute reaches the
/// host's driver (its refusals come back), also from a kernel node of a
/// captured launch; the occupancy questions cuBLAS asks; tensor maps.
#[test]
fn hopper_launch_features() {
    if !requires_h100_pcie("clusters, tensor maps and the occupancy numbers of a Hopper") {
        return;
    }
    run_checks("hopper.c");
}
