//! Hand-written PTX through libvgpu_cuda.so's driver API against a real
//! `vgpu host --driver emulated`: tests/c/kernels.c dlopens the library the
//! way an application would and checks every result itself.
//!
//! Needs `cargo build --workspace` first (the daemon, the software GPU and
//! the cdylib next to this test's executable) and gcc.

use std::path::Path;
use std::process::Command;
use vgpu_test_support::{artifacts, compile_c_in, run_with_timeout, Daemon, GUEST_TIMEOUT};

#[test]
fn hand_written_ptx_end_to_end() {
    let daemon = Daemon::start_emulated();
    let exe = compile_c_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c"),
        "kernels.c",
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
