//! libvgpu_nvml.so against a real `vgpu host --driver emulated`, driven by
//! the C client in tests/c/nvml_e2e.c (dlopen by path, as ctypes and Ollama
//! do). Needs the workspace built first: `cargo test` does not build other
//! packages' binaries or this package's cdylib into target/<profile>/.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vgpu_test_support::expected::{NAME, TOTAL_MEM_MIB as TOTAL_MIB};
use vgpu_test_support::{
    artifacts, compile_c_in, run_with_timeout, Daemon, GuestOutput, TempDir, GUEST_TIMEOUT,
};
use vgpu_transport::proto::GetInventory;

/// The C client, compiled once per test binary run.
fn client_exe() -> PathBuf {
    compile_c_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c"),
        "nvml_e2e.c",
        &[],
    )
}

/// Runs the C client with a deadline, so a hang fails instead of blocking.
fn run_client(mode: &str, env: &[(&str, &str)]) -> (GuestOutput, HashMap<String, String>) {
    let mut cmd = Command::new(client_exe());
    cmd.arg(&artifacts().nvml_shim)
        .arg(mode)
        .env_remove("VGPU_PCI_BUS_ID")
        .env_remove("VGPU_LOG_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_with_timeout(cmd, GUEST_TIMEOUT);
    let kv = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (out, kv)
}

fn show(out: &GuestOutput) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status, out.stdout, out.stderr
    )
}

fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[test]
fn full_client_against_emulated_host() {
    let d = Daemon::start_emulated();
    let inv = d.connect().call(&GetInventory {}).expect("inventory");
    let (out, kv) = run_client("full", &[("VGPU_HOST", &d.host_env())]);
    let ctx = || format!("{}\n--- host log\n{}", show(&out), d.logs());
    assert!(out.status.success(), "{}", ctx());
    let get = |k: &str| {
        kv.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("no {k}=\n{}", ctx()))
    };
    let num = |k: &str| -> u64 { get(k).parse().unwrap_or_else(|_| panic!("{k}\n{}", ctx())) };

    assert_eq!(get("count"), "1", "{}", ctx());
    assert_eq!(get("name"), NAME);
    let uuid = get("uuid");
    assert_eq!(
        uuid,
        format_uuid(&inv.devices[0].uuid),
        "UUID must be the inventory's bytes"
    );
    assert_eq!(num("memory_total") / (1024 * 1024), TOTAL_MIB);
    assert_eq!(num("memory_total"), inv.devices[0].total_mem);
    assert!(num("memory_used") + num("memory_free") <= num("memory_total"));
    assert_eq!(num("memory_v2_total"), num("memory_total"));
    assert_eq!(get("pci_bus_id"), "00000000:00:05.0");
    assert_eq!(get("pci_bus_id_legacy"), "0000:00:05.0");
    assert_eq!(get("pci_v1_bus_id"), "0000:00:05.0");
    assert_eq!(
        get("pci_device_id"),
        format!("0x{:08x}", inv.devices[0].pci_device_id)
    );
    assert_eq!(
        get("pci_subsystem_id"),
        format!("0x{:08x}", inv.devices[0].pci_subsystem_id)
    );
    assert_eq!(get("driver_version"), inv.system_driver_version);
    assert_eq!(
        get("cuda_driver_version"),
        inv.cuda_driver_version.to_string()
    );
    let (ma, mi) = inv.devices[0].nvml_cc;
    assert_eq!(get("compute_capability"), format!("{ma}.{mi}"));
    assert!((1..=120).contains(&num("temperature")), "{}", ctx());
    assert!(num("utilization_gpu") <= 100);
    assert_eq!(get("compute_v3_count"), get("compute_v3_query_count"));
}

#[test]
fn guest_pci_address_is_configurable() {
    let d = Daemon::start_emulated();
    let (out, kv) = run_client(
        "full",
        &[
            ("VGPU_HOST", &d.host_env()),
            ("VGPU_PCI_BUS_ID", "0000:00:07.0"),
        ],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(kv["pci_bus_id"], "00000000:00:07.0");
    assert_eq!(kv["pci_bus_id_legacy"], "0000:00:07.0");
    assert_eq!(kv["pci_device"], "7");
}

#[test]
fn no_daemon_is_driver_not_loaded_quickly() {
    let dir = TempDir::new("nvml");
    let host = format!("unix:{}", dir.0.join("nobody-listens").display());
    let t = Instant::now();
    let (out, kv) = run_client("nodaemon", &[("VGPU_HOST", &host)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(kv["init_rc"], "9", "{}", show(&out));
    assert_eq!(kv["init_error"], "Driver Not Loaded");
    assert_eq!(
        kv["count_rc"], "1",
        "calls after a failed init are uninitialized"
    );
    assert_eq!(kv["shutdown_rc"], "1");
    // Versions real NVML answers without init: no host, so no driver.
    assert_eq!(kv["nvml_version_rc"], "9", "{}", show(&out));
    assert_eq!(kv["cuda_version_rc"], "9", "{}", show(&out));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

/// A socket file with nobody accepting (a crashed daemon leaves one behind).
#[test]
fn stale_socket_is_driver_not_loaded_quickly() {
    let dir = TempDir::new("nvml");
    let path = dir.0.join("stale");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let host = format!("unix:{}", path.display());
    let (out, kv) = run_client("nodaemon", &[("VGPU_HOST", &host)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(kv["init_rc"], "9", "{}", show(&out));
    let ms: f64 = kv["init_ms"].parse().unwrap();
    assert!(ms < 5000.0, "init took {ms} ms");
}

/// A listener that accepts connections into its backlog but never answers
/// the handshake (a wedged daemon): init must give up with DRIVER_NOT_LOADED
/// when the guest's handshake deadline passes (2 s in
/// crates/vgpu-guest/src/client.rs), not hang the application. 5 s leaves
/// that deadline room on a loaded machine; connecting itself is immediate.
#[test]
fn stalled_listener_is_driver_not_loaded_within_5s() {
    let dir = TempDir::new("nvml");
    let path = dir.0.join("stall");
    let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let host = format!("unix:{}", path.display());
    let (out, kv) = run_client("nodaemon", &[("VGPU_HOST", &host), ("VGPU_LOG", "warn")]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(kv["init_rc"], "9", "{}", show(&out));
    // The handshake is what gave up: a refused connection (no listener)
    // would fail at once and say nothing about a stall.
    assert!(out.stderr.contains("handshake"), "{}", show(&out));
    let ms: f64 = kv["init_ms"].parse().unwrap();
    assert!(ms < 5000.0, "init took {ms} ms\n{}", show(&out));
}
