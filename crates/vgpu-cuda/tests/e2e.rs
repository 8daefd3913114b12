//! libvgpu_cuda.so against a real `vgpu host --driver emulated`, driven by
//! a C program that dlopens it like an application would.
//!
//! Needs the workspace's artifacts next to this test's executable
//! (`cargo build --workspace` first) and gcc.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vgpu_test_support::{
    artifacts, compile_c_in, run_with_timeout, Daemon, GuestOutput, TempDir, GUEST_TIMEOUT,
};

/// Compiles tests/c/<name> once per test process.
fn c_program(name: &str) -> PathBuf {
    compile_c_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c"),
        name,
        &[],
    )
}

fn run_probe(host: &str, mode: &str, env: &[(&str, &str)]) -> (GuestOutput, String) {
    let mut cmd = Command::new(c_program("probe.c"));
    cmd.arg(&artifacts().cuda_shim)
        .arg(mode)
        .env("VGPU_HOST", host)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .env_remove("VGPU_PCI_BUS_ID");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_with_timeout(cmd, GUEST_TIMEOUT);
    let text = out.stdout.clone();
    eprintln!("--- probe {mode} {env:?}\n{text}{}", out.stderr);
    (out, text)
}

fn failures(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("FAIL")).collect()
}

#[test]
fn discovery_and_contexts() {
    let host = Daemon::start_emulated();
    let (out, text) = run_probe(&host.host_env(), "full", &[]);
    assert!(
        out.status.success() && failures(&text).is_empty(),
        "failed checks: {:#?}",
        failures(&text)
    );
    assert!(text.lines().filter(|l| l.starts_with("ok ")).count() > 60);
}

#[test]
fn configured_pci_address() {
    let host = Daemon::start_emulated();
    let (out, text) = run_probe(
        &host.host_env(),
        "full",
        &[
            ("VGPU_PCI_BUS_ID", "0000:00:07.0"),
            ("PROBE_BUS_ID", "0000:00:07.0"),
        ],
    );
    assert!(
        out.status.success() && failures(&text).is_empty(),
        "failed checks: {:#?}",
        failures(&text)
    );
}

#[test]
fn cuda_visible_devices() {
    let host = Daemon::start_emulated();
    let (_, full) = run_probe(&host.host_env(), "full", &[]);
    let uuid = full
        .lines()
        .find_map(|l| l.strip_prefix("uuid "))
        .expect("probe printed the uuid")
        .to_string();
    let first8 = format!("GPU-{}", &uuid[..8]);
    for (value, want) in [
        ("-1", 0),
        ("", 0),
        ("1", 0),
        ("0", 1),
        ("0,-1", 1),
        (first8.as_str(), 1),
        ("GPU-00000000", 0),
    ] {
        let (_, text) = run_probe(
            &host.host_env(),
            "count",
            &[("CUDA_VISIBLE_DEVICES", value)],
        );
        assert!(
            text.contains(&format!("init 0 count {want} rc 0")),
            "CUDA_VISIBLE_DEVICES={value:?}: {text}"
        );
    }
}

#[test]
fn no_daemon_is_no_device_quickly() {
    let dir = TempDir::new("cuda");
    let endpoint = format!("unix:{}", dir.path().join("nobody-listens").display());
    let start = Instant::now();
    let (_, text) = run_probe(&endpoint, "nohost", &[]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    // cuInit: NO_DEVICE; cuDriverGetVersion still answers (13.x); other
    // calls: NOT_INITIALIZED.
    assert!(text.starts_with("init 100 "), "{text}");
    assert!(text.contains(" rc 0 count-rc 3"), "{text}");
    let version: i32 = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("version printed");
    assert!(version >= 13000, "{text}");
}

/// The memory path against the software GPU: copies of every size class
/// (256 MiB is 32 chunks), memsets, unified and 2D copies, page-locked
/// guest memory, pointer attributes, cuMemGetInfo, rejected ranges and
/// double frees, streams and async copies, stream-ordered allocation, VMM,
/// and 8 threads at once.
#[test]
fn memory_path() {
    let host = Daemon::start_emulated();
    let mut cmd = Command::new(c_program("memory.c"));
    cmd.arg(&artifacts().cuda_shim)
        .env("VGPU_HOST", host.host_env())
        .env_remove("CUDA_VISIBLE_DEVICES");
    let out = run_with_timeout(cmd, GUEST_TIMEOUT);
    let text = out.stdout.clone();
    eprintln!("--- memory\n{text}{}", out.stderr);
    assert!(
        out.status.success() && failures(&text).is_empty(),
        "failed checks: {:#?}",
        failures(&text)
    );
    assert!(text.contains("vmm-attribute 1"), "{text}");
    assert!(text.lines().filter(|l| l.starts_with("ok ")).count() > 150);
}
