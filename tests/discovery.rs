//! Ollama's GPU discovery, replayed by the C harness in `tests/c/` against the
//! shims and the tests' daemon (the software GPU, or `VGPU_TEST_DRIVER`'s
//! driver): with the shims found through `LD_LIBRARY_PATH`, through
//! `LD_PRELOAD` in a fork+exec'd child, and with a configured PCI address.
//! On the software GPU every number is its profile's published one
//! (`expected::host`); on a real driver the checks are of form and of the
//! two APIs agreeing.
mod common;

use common::{expected, Daemon};
use std::process::Command;

fn c_program(name: &str) -> Command {
    Command::new(common::compile_c(name, &[]))
}

/// Device `{major}.{minor}` text of a version field such as driver=13.5.
fn version(text: &str) -> (i32, i32) {
    let (a, b) = text.split_once('.').unwrap_or((text, "0"));
    (a.parse().unwrap(), b.parse().unwrap())
}

/// Asserts the `inference compute ...` lines of ollama_cgo_0123 describe the
/// host's devices: exactly on the software GPU (its profile's published
/// facts), by form on a real driver.
fn check_cgo_output(out: &common::GuestOutput) {
    out.assert_success();
    let devices: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("inference compute "))
        .collect();
    let line = out.line("inference compute ");
    let id = common::field(line, "id");
    assert!(common::is_gpu_uuid(&id), "bad id {id:?} in {line:?}");
    assert_eq!(common::field(line, "library"), "cuda", "{line}");
    let total: u64 = common::field(line, "total").parse().unwrap();
    let avail: u64 = common::field(line, "available").parse().unwrap();
    let driver = version(&common::field(line, "driver"));
    match expected::host() {
        Some(h) => {
            assert_eq!(common::field(line, "compute"), h.cc_text(), "{line}");
            assert_eq!(common::field(line, "name"), h.name, "{line}");
            let want = h.cuda_driver_version;
            assert_eq!(driver, (want / 1000, want % 1000 / 10), "{line}");
            assert_eq!(total, h.total_mem, "{line}");
            assert_eq!(devices.len(), h.devices, "one line per device:\n{out}");
        }
        None => {
            assert!(!common::field(line, "name").is_empty(), "{line}");
            assert!(driver.0 >= 11, "{line}");
            assert!(!devices.is_empty(), "{out}");
        }
    }
    assert!(
        avail >= expected::OLLAMA_MIN_FREE_BYTES && avail <= total,
        "available {avail}: {line}"
    );
    let mut ids: Vec<String> = devices.iter().map(|l| common::field(l, "id")).collect();
    ids.dedup();
    assert_eq!(ids.len(), devices.len(), "devices share an id:\n{out}");
    let refresh = out.line("refresh ");
    assert_eq!(common::field(refresh, "id"), id, "{refresh}");
    assert_eq!(
        common::field(refresh, "total"),
        total.to_string(),
        "{refresh}"
    );
}

/// Ollama 0.30's own rule: a driver older than 570 keeps no device.
const OLLAMA_030_MIN_DRIVER: u32 = 570;

fn check_030_output(out: &common::GuestOutput, pci: &str) {
    let drv = out.line("driver ");
    if let Some(h) = expected::host().filter(|h| h.nvidia_major < OLLAMA_030_MIN_DRIVER) {
        let why = format!("NVIDIA driver major {} < 570", h.nvidia_major);
        assert!(!out.status.success() && out.stderr.contains(&why), "{out}");
        return;
    }
    out.assert_success();
    let dev = out.line("device ");
    assert_eq!(common::field(dev, "index"), "0", "{dev}");
    assert_eq!(common::field(dev, "integrated"), "0", "{dev}");
    assert_eq!(common::field(dev, "pci_id"), pci, "{dev}");
    let nv_major: u32 = common::field(drv, "nvidia_major").parse().unwrap();
    let cuda: f64 = common::field(drv, "cuda").parse().unwrap();
    match expected::host() {
        Some(h) => {
            assert_eq!(common::field(drv, "count"), h.devices.to_string(), "{drv}");
            assert_eq!(common::field(drv, "cuda"), h.cuda_version_text(), "{drv}");
            assert_eq!(nv_major, h.nvidia_major, "{drv}");
            assert_eq!(common::field(dev, "name"), h.name, "{dev}");
            assert_eq!(common::field(dev, "compute"), h.cc_text(), "{dev}");
            let arch = h.cc.0 * 100 + h.cc.1 * 10;
            assert_eq!(common::field(dev, "arch"), arch.to_string(), "{dev}");
            assert_eq!(
                common::field(dev, "total"),
                h.total_mem.to_string(),
                "{dev}"
            );
        }
        None => {
            assert!(cuda >= 11.0, "{drv}");
            assert!(nv_major >= OLLAMA_030_MIN_DRIVER, "{drv}");
            assert_ne!(common::field(drv, "count"), "0", "{drv}");
        }
    }
}

fn check_mem_nvml_output(out: &common::GuestOutput) {
    out.assert_success();
    let line = out.line("mem ");
    assert!(common::is_gpu_uuid(&common::field(line, "id")), "{line}");
    let cuda_total: u64 = common::field(line, "cuda_total").parse().unwrap();
    let nvml_total: u64 = common::field(line, "nvml_total").parse().unwrap();
    match expected::host() {
        Some(h) => {
            assert_eq!(cuda_total, h.total_mem, "{line}");
            assert_eq!(nvml_total, h.nvml_total_mem, "{line}");
            assert_eq!(common::field(line, "name"), h.name, "{line}");
        }
        None => assert!(cuda_total > 0 && nvml_total >= cuda_total, "{line}"),
    }
}

fn check_identity_output(out: &common::GuestOutput, pci: &str) {
    out.assert_success();
    let line = out.line("identity ");
    let uuid = common::field(line, "uuid");
    assert!(common::is_gpu_uuid(&uuid), "{line}");
    assert_eq!(common::field(line, "nvml_uuid"), uuid, "{line}");
    assert_eq!(common::field(line, "pci"), pci, "{line}");
    assert_eq!(common::field(line, "attr_pci"), pci, "{line}");
    assert_eq!(common::field(line, "nvml_bus_id_legacy"), pci, "{line}");
    assert_eq!(
        common::field(line, "nvml_bus_id"),
        format!("0000{pci}"),
        "{line}"
    );
    assert_eq!(
        common::field(line, "name"),
        common::field(line, "nvml_name"),
        "{line}"
    );
    assert_eq!(
        common::field(line, "count"),
        common::field(line, "nvml_count"),
        "{line}"
    );
    let cuda_driver: i32 = common::field(line, "cuda_driver").parse().unwrap();
    let nv = common::field(line, "nvidia_driver");
    let nv_major: u32 = nv.split('.').next().unwrap().parse().unwrap();
    let total: u64 = common::field(line, "total").parse().unwrap();
    let nvml_total: u64 = common::field(line, "nvml_total").parse().unwrap();
    match expected::host() {
        Some(h) => {
            assert_eq!(cuda_driver, h.cuda_driver_version, "{line}");
            assert_eq!(nv_major, h.nvidia_major, "{line}");
            assert_eq!(common::field(line, "name"), h.name, "{line}");
            assert_eq!(total, h.total_mem, "{line}");
            assert_eq!(nvml_total, h.nvml_total_mem, "{line}");
            assert_eq!(
                common::field(line, "count"),
                h.devices.to_string(),
                "{line}"
            );
        }
        None => assert!(
            cuda_driver >= 11000 && total > 0 && nvml_total >= total,
            "{line}"
        ),
    }
}

// ---------------------------------------------------------------- LD_LIBRARY_PATH

#[test]
fn cgo_0123_absolute_resolved_path() {
    let d = Daemon::start_target();
    // Ollama resolves the globbed symlink to its final file and dlopens that.
    let lib = std::fs::canonicalize(common::shim_libdir().join("libcuda.so.1")).unwrap();
    let mut cmd = c_program("ollama_cgo_0123.c");
    cmd.arg(&lib);
    check_cgo_output(&common::run_guest(cmd, &d, &[]));
}

#[test]
fn cgo_0123_by_soname() {
    let d = Daemon::start_target();
    let mut cmd = c_program("ollama_cgo_0123.c");
    cmd.arg("libcuda.so.1");
    check_cgo_output(&common::run_guest(cmd, &d, &[]));
}

#[test]
fn gpu_discover_030_default_pci() {
    let d = Daemon::start_target();
    let out = common::run_guest(c_program("ollama_gpu_discover_030.c"), &d, &[]);
    check_030_output(&out, expected::PCI_BUS_ID);
}

#[test]
fn mem_nvml_by_uuid() {
    let d = Daemon::start_target();
    let out = common::run_guest(c_program("ollama_mem_nvml.c"), &d, &[]);
    check_mem_nvml_output(&out);
}

#[test]
fn identity_consistent_default_pci() {
    let d = Daemon::start_target();
    let out = common::run_guest(c_program("device_identity.c"), &d, &[]);
    check_identity_output(&out, expected::PCI_BUS_ID);
}

#[test]
fn cgo_uuid_matches_nvml_uuid_across_processes() {
    let d = Daemon::start_target();
    let cgo = common::run_guest(c_program("ollama_cgo_0123.c"), &d, &[]);
    cgo.assert_success();
    let id = common::field(cgo.line("inference compute "), "id");
    let mem = common::run_guest(c_program("ollama_mem_nvml.c"), &d, &[]);
    mem.assert_success();
    assert_eq!(common::field(mem.line("mem "), "id"), id, "UUID not stable");
}

// ---------------------------------------------------------------- VGPU_PCI_BUS_ID

const OTHER_PCI: &str = "0000:00:07.0";

#[test]
fn gpu_discover_030_configured_pci() {
    let d = Daemon::start_target();
    let out = common::run_guest(
        c_program("ollama_gpu_discover_030.c"),
        &d,
        &[("VGPU_PCI_BUS_ID", OTHER_PCI)],
    );
    check_030_output(&out, OTHER_PCI);
}

#[test]
fn identity_consistent_configured_pci() {
    let d = Daemon::start_target();
    let out = common::run_guest(
        c_program("device_identity.c"),
        &d,
        &[("VGPU_PCI_BUS_ID", OTHER_PCI)],
    );
    check_identity_output(&out, OTHER_PCI);
}

// ---------------------------------------------------------------- LD_PRELOAD, fork+exec

/// Runs `fork_exec_preload --expect-preloaded PARENT_EXTRA... <program> ARGS...`
/// with LD_PRELOAD=<libvgpu_cuda.so>:<libvgpu_nvml.so> and an empty
/// LD_LIBRARY_PATH: the child's dlopen("libcuda.so.1") must be satisfied by the
/// preloaded object through its SONAME.
fn run_preloaded(
    d: &Daemon,
    program: &str,
    parent_extra: &[&str],
    args: &[&str],
    env: &[(&str, &str)],
) -> common::GuestOutput {
    let a = common::artifacts();
    let preload = format!("{}:{}", a.cuda_shim.display(), a.nvml_shim.display());
    let mut cmd = c_program("fork_exec_preload.c");
    cmd.arg("--expect-preloaded")
        .args(parent_extra)
        .arg(common::compile_c(program, &[]))
        .args(args);
    let mut all = vec![("LD_LIBRARY_PATH", ""), ("LD_PRELOAD", preload.as_str())];
    all.extend_from_slice(env);
    common::run_guest(cmd, d, &all)
}

#[test]
fn preload_fork_exec_cgo_0123() {
    let d = Daemon::start_target();
    let out = run_preloaded(&d, "ollama_cgo_0123.c", &[], &["libcuda.so.1"], &[]);
    check_cgo_output(&out);
}

#[test]
fn preload_fork_exec_gpu_discover_030() {
    let d = Daemon::start_target();
    let out = run_preloaded(&d, "ollama_gpu_discover_030.c", &[], &[], &[]);
    check_030_output(&out, expected::PCI_BUS_ID);
}

#[test]
fn preload_fork_exec_mem_nvml() {
    let d = Daemon::start_target();
    let out = run_preloaded(&d, "ollama_mem_nvml.c", &[], &[], &[]);
    check_mem_nvml_output(&out);
}

#[test]
fn preload_fork_exec_after_parent_cuinit() {
    // The parent already holds a connection; the exec'd child opens its own.
    let d = Daemon::start_target();
    let out = run_preloaded(
        &d,
        "ollama_cgo_0123.c",
        &["--parent-init"],
        &["libcuda.so.1"],
        &[],
    );
    check_cgo_output(&out);
}

#[test]
fn preload_fork_exec_configured_pci() {
    let d = Daemon::start_target();
    let env = [("VGPU_PCI_BUS_ID", OTHER_PCI)];
    let out = run_preloaded(&d, "device_identity.c", &[], &[], &env);
    check_identity_output(&out, OTHER_PCI);
    let out = run_preloaded(&d, "ollama_gpu_discover_030.c", &[], &[], &env);
    check_030_output(&out, OTHER_PCI);
}
