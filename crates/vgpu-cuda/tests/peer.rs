//! Two devices through libvgpu_cuda.so: the software GPU's `2x-h100`
//! profile (two H100 PCIe with peer access) behind `vgpu host`, driven by
//! tests/c/peer.c — peer queries answered from the inventory's links in
//! every `CUDA_VISIBLE_DEVICES` order, peer access with the driver's codes,
//! copies between the devices (the host's `cuMemcpyPeer[Async]`), pointer
//! ordinals.
//!
//! Needs `cargo build --workspace` first and gcc.

use std::path::Path;
use std::process::Command;
use vgpu_test_support::{artifacts, compile_c_in, run_with_timeout, Daemon, GUEST_TIMEOUT};

/// Runs peer.c (`single`: the one-device mode) with `visible` as
/// CUDA_VISIBLE_DEVICES; every check must pass.
fn run_peer(daemon: &Daemon, visible: Option<&str>, single: bool) {
    let exe = compile_c_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c"),
        "peer.c",
        &[],
    );
    let mut cmd = Command::new(&exe);
    cmd.arg(&artifacts().cuda_shim)
        .env("VGPU_HOST", daemon.host_env())
        .env("VGPU_LOG", "warn")
        .env_remove("CUDA_VISIBLE_DEVICES");
    if single {
        cmd.arg("single");
    }
    if let Some(v) = visible {
        cmd.env("CUDA_VISIBLE_DEVICES", v);
    }
    let out = run_with_timeout(cmd, GUEST_TIMEOUT);
    let text = out.stdout.clone();
    eprintln!("--- CUDA_VISIBLE_DEVICES={visible:?}\n{text}{}", out.stderr);
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.is_empty(),
        "CUDA_VISIBLE_DEVICES={visible:?}: failed checks: {failed:#?}"
    );
    assert!(out.status.success() && text.contains("done failures=0"));
}

#[test]
fn two_devices_and_peer_access() {
    // The profile is named here, whatever VGPU_TEST_PROFILE says, so the
    // test always has its two devices; the trace log shows which ops the
    // copies became.
    let daemon = Daemon::start_with_env(
        &["--driver", "emulated", "--profile", "2x-h100"],
        &[("VGPU_LOG", "trace")],
    );
    run_peer(&daemon, None, false);
    // Peer copies are the host's peer copies, not device-to-device copies
    // in one context.
    let log = daemon.logs();
    for op in ["MemcpyPeer seq", "MemcpyPeerAsync seq"] {
        assert!(log.contains(op), "no {op:?} in the host log");
    }
    // The inventory's links name host ordinals: reversed, both devices
    // still reach each other (and every pointer its own device).
    run_peer(&daemon, Some("1,0"), false);
    run_peer(&daemon, Some("1"), true);
}
