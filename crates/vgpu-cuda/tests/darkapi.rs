//! The bootstrap surface libcudart relies on — cuGetProcAddress_v2, the
//! CUDART_INTERFACE and context-local-storage tables, CLS destructors, a
//! forked child — driven by `tests/c/darkapi.c` against a real
//! `vgpu host --driver emulated`.
//!
//! Needs the workspace's artifacts next to this test's executable
//! (`cargo build --workspace` first) and gcc.

use std::path::Path;
use std::process::Command;
use vgpu_test_support::{artifacts, compile_c_in, run_with_timeout, Daemon, GUEST_TIMEOUT};

#[test]
fn bootstrap_tables_cls_and_fork() {
    let exe = compile_c_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c"),
        "darkapi.c",
        &[],
    );

    let host = Daemon::start_emulated();
    let mut cmd = Command::new(&exe);
    cmd.arg(&artifacts().cuda_shim)
        .env("VGPU_HOST", host.host_env())
        .env_remove("CUDA_VISIBLE_DEVICES")
        .env_remove("VGPU_TEST_CORRUPT_INTEGRITY");
    let out = run_with_timeout(cmd, GUEST_TIMEOUT);
    let text = out.stdout.clone();
    eprintln!("{text}{}", out.stderr);
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "failed: {failed:#?}"
    );
    assert!(text.contains("ok child passed"), "{text}");
    assert!(text.contains("done failures=0"), "{text}");
}
