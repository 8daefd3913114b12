//! `vgpu run` and `vgpu install` put the shims where unmodified programs find
//! them.
mod common;

use common::{expected, Daemon};
use std::path::Path;
use std::process::Command;

/// The device as Ollama 0.30's probe lists it: the software GPU's profile
/// exactly, a real driver's by form.
fn check_030_device(out: &common::GuestOutput) {
    out.assert_success();
    let dev = out.line("device ");
    assert_eq!(common::field(dev, "pci_id"), expected::PCI_BUS_ID, "{dev}");
    let total: u64 = common::field(dev, "total").parse().unwrap();
    match expected::host() {
        Some(h) => {
            assert_eq!(common::field(dev, "name"), h.name, "{dev}");
            assert_eq!(common::field(dev, "compute"), h.cc_text(), "{dev}");
            assert_eq!(total, h.total_mem, "{dev}");
        }
        None => assert!(total > 0 && !common::field(dev, "name").is_empty(), "{dev}"),
    }
}

#[test]
fn vgpu_run_with_only_vgpu_host() {
    let d = Daemon::start_target();
    let a = common::artifacts();
    let mut cmd = Command::new(&a.vgpu);
    cmd.arg("run")
        .arg("--")
        .arg(common::compile_c("ollama_gpu_discover_030.c", &[]));
    // Nothing but VGPU_HOST: `vgpu run` must add the shims itself.
    let out = common::run_guest(cmd, &d, &[("LD_LIBRARY_PATH", "")]);
    check_030_device(&out);

    let mut cmd = Command::new(&a.vgpu);
    cmd.args(["run", "--"])
        .arg(common::compile_c("ollama_cgo_0123.c", &[]))
        .arg("libcuda.so.1");
    let out = common::run_guest(cmd, &d, &[("LD_LIBRARY_PATH", "")]);
    out.assert_success();
    let line = out.line("inference compute ");
    assert!(!common::field(line, "name").is_empty(), "{line}");
    if let Some(h) = expected::host() {
        assert_eq!(common::field(line, "name"), h.name, "{line}");
    }
}

#[test]
fn vgpu_run_passes_exit_status() {
    let d = Daemon::start_target();
    let mut cmd = Command::new(&common::artifacts().vgpu);
    cmd.args(["run", "--", "sh", "-c", "exit 7"]);
    let out = common::run_guest(cmd, &d, &[("LD_LIBRARY_PATH", "")]);
    assert_eq!(out.status.code(), Some(7), "{out}");
}

fn assert_lib(dir: &Path, name: &str, soname: &str) {
    let p = dir.join(name);
    let real = std::fs::canonicalize(&p)
        .unwrap_or_else(|e| panic!("{} does not resolve: {e}", p.display()));
    assert!(real.is_file(), "{} is not a file", real.display());
    assert_eq!(
        common::soname(&real).as_deref(),
        Some(soname),
        "SONAME of {} ({})",
        p.display(),
        real.display()
    );
}

#[test]
fn vgpu_install_libdir() {
    let d = Daemon::start_target();
    let dir = common::TempDir::new("install");
    let libdir = dir.path().join("lib");
    std::fs::create_dir_all(&libdir).unwrap();
    let mut cmd = Command::new(&common::artifacts().vgpu);
    cmd.arg("install").arg("--libdir").arg(&libdir);
    let out = common::run_with_timeout(cmd, common::GUEST_TIMEOUT);
    out.assert_success();
    assert_lib(&libdir, "libcuda.so.1", "libcuda.so.1");
    assert_lib(&libdir, "libcuda.so", "libcuda.so.1");
    assert_lib(&libdir, "libnvidia-ml.so.1", "libnvidia-ml.so.1");
    assert_lib(&libdir, "libnvidia-ml.so", "libnvidia-ml.so.1");

    let libdir_s = libdir.to_str().unwrap();
    let exe = common::compile_c("ollama_gpu_discover_030.c", &[]);
    let out = common::run_guest(Command::new(exe), &d, &[("LD_LIBRARY_PATH", libdir_s)]);
    check_030_device(&out);
    let exe = common::compile_c("ollama_mem_nvml.c", &[]);
    let out = common::run_guest(Command::new(exe), &d, &[("LD_LIBRARY_PATH", libdir_s)]);
    out.assert_success();
}
