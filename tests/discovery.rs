//! Ollama's GPU discovery, replayed by the C harness in `tests/c/` against the
//! shims and `vgpu host --driver emulated`: with the shims found through
//! `LD_LIBRARY_PATH`, through `LD_PRELOAD` in a fork+exec'd child, and with a
//! configured PCI address.
mod common;

use common::{expected, Daemon};
use std::process::Command;

fn c_program(name: &str) -> Command {
    Command::new(common::compile_c(name, &[]))
}

/// Asserts the `inference compute ...` line of ollama_cgo_0123 describes the H100.
fn check_cgo_output(out: &common::GuestOutput) {
    out.assert_success();
    let line = out.line("inference compute ");
    let id = common::field(line, "id");
    assert!(common::is_gpu_uuid(&id), "bad id {id:?} in {line:?}");
    assert_eq!(common::field(line, "library"), "cuda", "{line}");
    assert_eq!(common::field(line, "compute"), "9.0", "{line}");
    assert_eq!(common::field(line, "name"), expected::NAME, "{line}");
    let driver = common::field(line, "driver");
    let major: i32 = driver.split('.').next().unwrap().parse().unwrap();
    assert!(
        major * 1000 >= expected::MIN_CUDA_DRIVER_VERSION,
        "driver {driver} < 13.0: {line}"
    );
    let total: u64 = common::field(line, "total").parse().unwrap();
    let avail: u64 = common::field(line, "available").parse().unwrap();
    assert_eq!(total, expected::TOTAL_MEM_BYTES, "{line}");
    assert!(
        avail >= expected::OLLAMA_MIN_FREE_BYTES && avail <= total,
        "available {avail}: {line}"
    );
    let refresh = out.line("refresh ");
    assert_eq!(common::field(refresh, "id"), id, "{refresh}");
    assert_eq!(
        common::field(refresh, "total"),
        total.to_string(),
        "{refresh}"
    );
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("inference compute "))
            .count(),
        1,
        "expected exactly one device:\n{out}"
    );
}

fn check_030_output(out: &common::GuestOutput, pci: &str) {
    out.assert_success();
    let drv = out.line("driver ");
    assert_eq!(common::field(drv, "count"), "1", "{drv}");
    let cuda: f64 = common::field(drv, "cuda").parse().unwrap();
    assert!(cuda >= 13.0, "{drv}");
    let nv_major: u32 = common::field(drv, "nvidia_major").parse().unwrap();
    assert!(nv_major >= expected::MIN_NVIDIA_DRIVER_MAJOR, "{drv}");
    let dev = out.line("device ");
    assert_eq!(common::field(dev, "index"), "0", "{dev}");
    assert_eq!(common::field(dev, "name"), expected::NAME, "{dev}");
    assert_eq!(common::field(dev, "compute"), "9.0", "{dev}");
    assert_eq!(common::field(dev, "arch"), "900", "{dev}");
    assert_eq!(common::field(dev, "integrated"), "0", "{dev}");
    assert_eq!(
        common::field(dev, "total"),
        expected::TOTAL_MEM_BYTES.to_string(),
        "{dev}"
    );
    assert_eq!(common::field(dev, "pci_id"), pci, "{dev}");
}

fn check_mem_nvml_output(out: &common::GuestOutput) {
    out.assert_success();
    let line = out.line("mem ");
    assert!(common::is_gpu_uuid(&common::field(line, "id")), "{line}");
    let total = expected::TOTAL_MEM_BYTES.to_string();
    assert_eq!(common::field(line, "cuda_total"), total, "{line}");
    assert_eq!(common::field(line, "nvml_total"), total, "{line}");
    assert_eq!(common::field(line, "name"), expected::NAME, "{line}");
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
    let cuda_driver: i32 = common::field(line, "cuda_driver").parse().unwrap();
    assert!(cuda_driver >= expected::MIN_CUDA_DRIVER_VERSION, "{line}");
    let nv = common::field(line, "nvidia_driver");
    let nv_major: u32 = nv.split('.').next().unwrap().parse().unwrap();
    assert!(nv_major >= expected::MIN_NVIDIA_DRIVER_MAJOR, "{line}");
    assert_eq!(common::field(line, "name"), expected::NAME, "{line}");
    assert_eq!(common::field(line, "nvml_name"), expected::NAME, "{line}");
    let total = expected::TOTAL_MEM_BYTES.to_string();
    assert_eq!(common::field(line, "total"), total, "{line}");
    assert_eq!(common::field(line, "nvml_total"), total, "{line}");
    assert_eq!(common::field(line, "count"), "1", "{line}");
    assert_eq!(common::field(line, "nvml_count"), "1", "{line}");
}

// ---------------------------------------------------------------- LD_LIBRARY_PATH

#[test]
fn cgo_0123_absolute_resolved_path() {
    let d = Daemon::start_emulated();
    // Ollama resolves the globbed symlink to its final file and dlopens that.
    let lib = std::fs::canonicalize(common::shim_libdir().join("libcuda.so.1")).unwrap();
    let mut cmd = c_program("ollama_cgo_0123.c");
    cmd.arg(&lib);
    check_cgo_output(&common::run_guest(cmd, &d, &[]));
}

#[test]
fn cgo_0123_by_soname() {
    let d = Daemon::start_emulated();
    let mut cmd = c_program("ollama_cgo_0123.c");
    cmd.arg("libcuda.so.1");
    check_cgo_output(&common::run_guest(cmd, &d, &[]));
}

#[test]
fn gpu_discover_030_default_pci() {
    let d = Daemon::start_emulated();
    let out = common::run_guest(c_program("ollama_gpu_discover_030.c"), &d, &[]);
    check_030_output(&out, expected::PCI_BUS_ID);
}

#[test]
fn mem_nvml_by_uuid() {
    let d = Daemon::start_emulated();
    let out = common::run_guest(c_program("ollama_mem_nvml.c"), &d, &[]);
    check_mem_nvml_output(&out);
}

#[test]
fn identity_consistent_default_pci() {
    let d = Daemon::start_emulated();
    let out = common::run_guest(c_program("device_identity.c"), &d, &[]);
    check_identity_output(&out, expected::PCI_BUS_ID);
}

#[test]
fn cgo_uuid_matches_nvml_uuid_across_processes() {
    let d = Daemon::start_emulated();
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
    let d = Daemon::start_emulated();
    let out = common::run_guest(
        c_program("ollama_gpu_discover_030.c"),
        &d,
        &[("VGPU_PCI_BUS_ID", OTHER_PCI)],
    );
    check_030_output(&out, OTHER_PCI);
}

#[test]
fn identity_consistent_configured_pci() {
    let d = Daemon::start_emulated();
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
    let d = Daemon::start_emulated();
    let out = run_preloaded(&d, "ollama_cgo_0123.c", &[], &["libcuda.so.1"], &[]);
    check_cgo_output(&out);
}

#[test]
fn preload_fork_exec_gpu_discover_030() {
    let d = Daemon::start_emulated();
    let out = run_preloaded(&d, "ollama_gpu_discover_030.c", &[], &[], &[]);
    check_030_output(&out, expected::PCI_BUS_ID);
}

#[test]
fn preload_fork_exec_mem_nvml() {
    let d = Daemon::start_emulated();
    let out = run_preloaded(&d, "ollama_mem_nvml.c", &[], &[], &[]);
    check_mem_nvml_output(&out);
}

#[test]
fn preload_fork_exec_after_parent_cuinit() {
    // The parent already holds a connection; the exec'd child opens its own.
    let d = Daemon::start_emulated();
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
    let d = Daemon::start_emulated();
    let env = [("VGPU_PCI_BUS_ID", OTHER_PCI)];
    let out = run_preloaded(&d, "device_identity.c", &[], &[], &env);
    check_identity_output(&out, OTHER_PCI);
    let out = run_preloaded(&d, "ollama_gpu_discover_030.c", &[], &[], &env);
    check_030_output(&out, OTHER_PCI);
}
