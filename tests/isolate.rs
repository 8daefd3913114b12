//! The virtual files as programs see them: `vgpu run --isolate` puts them in
//! the file system (raw system calls, as Go issues them, see them), plain
//! `vgpu run` shows them to libc readers only.
mod common;

use common::{Daemon, GuestOutput};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// Whether this machine lets a process make a private mount namespace
/// (directly, or through a user namespace), tried in a forked child so the
/// test process itself is untouched.
fn namespaces_available() -> bool {
    // SAFETY: the child only makes raw system calls (unshare, _exit), which
    // are async-signal-safe, so forking a multithreaded test is sound.
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                || libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) == 0;
            libc::_exit(if ok { 0 } else { 1 });
        }
        let mut status = 0;
        pid > 0
            && libc::waitpid(pid, &mut status, 0) == pid
            && libc::WIFEXITED(status)
            && libc::WEXITSTATUS(status) == 0
    }
}

/// A real NVIDIA GPU makes the shims fake nothing, so the "absent without
/// --isolate" half of these tests would not hold.
fn has_real_nvidia() -> bool {
    std::fs::read_dir("/sys/bus/pci/devices")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            let read = |f: &str| std::fs::read_to_string(e.path().join(f)).unwrap_or_default();
            read("vendor").trim() == "0x10de" && read("class").starts_with("0x03")
        })
}

/// Fails the test, saying why, on a machine with a real NVIDIA GPU: the
/// shims fake nothing there, so these checks cannot hold (the suite is for
/// GPU-less machines; scripts/gpu-check.sh is for GPU hosts).
fn require_no_real_nvidia() {
    assert!(
        !has_real_nvidia(),
        "this machine has a real NVIDIA GPU, so vgpu shows no virtual files here; \
         run this test on a GPU-less machine"
    );
}

/// Fails the test, saying why, where `vgpu run --isolate` cannot work.
fn require_namespaces() {
    assert!(
        namespaces_available(),
        "this machine forbids mount namespaces (no CAP_SYS_ADMIN, no user \
         namespaces), which `vgpu run --isolate` needs"
    );
}

fn facts(out: &GuestOutput) -> HashMap<String, String> {
    out.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn vgpu_run(extra: &[&str], program: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(&common::artifacts().vgpu);
    cmd.arg("run").args(extra).arg("--").arg(program).args(args);
    cmd
}

/// NVML's uuid and driver version, as a CUDA program under the shims sees them.
fn nvml_identity(d: &Daemon) -> (String, String) {
    let out = common::run_guest(
        Command::new(common::compile_c("device_identity.c", &[])),
        d,
        &[],
    );
    out.assert_success();
    let line = out.line("identity ");
    (
        common::field(line, "nvml_uuid"),
        common::field(line, "nvidia_driver"),
    )
}

#[test]
fn isolate_shows_the_files_to_raw_system_calls() {
    require_no_real_nvidia();
    require_namespaces();
    let d = Daemon::start_emulated();
    let (uuid, driver) = nvml_identity(&d);
    let reader = common::compile_c("raw_reader.c", &[]);

    let out = common::run_guest(
        vgpu_run(&["--isolate"], &reader, &[]),
        &d,
        &[("LD_LIBRARY_PATH", "")],
    );
    out.assert_success();
    let f = facts(&out);
    let get = |k: &str| {
        f.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("raw reader saw no {k}:\n{out}"))
    };
    let version = get("version");
    assert!(
        version.starts_with("NVRM version: NVIDIA UNIX ")
            && version.contains(&format!(" Kernel Module  {driver}  ")),
        "version line {version:?} does not carry NVML's driver {driver}"
    );
    assert_eq!(get("info_uuid"), uuid, "{out}");
    assert_eq!(get("vendor"), "0x10de", "{out}");
    assert_eq!(get("device"), "0x2331", "{out}");
    assert_eq!(get("class"), "0x030200", "{out}");
    assert_eq!(get("listed"), "1", "{out}");
    assert_eq!(
        get("driver_link"),
        "../../../bus/pci/drivers/nvidia",
        "{out}"
    );
    let node = get("dev_nvidia0");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // As root the node is a real character device with NVIDIA's numbers.
        assert_eq!(node, "chr 195:0", "{out}");
    } else {
        // In a user namespace mknod is refused: /dev/null stands in.
        assert!(node.starts_with("chr "), "{out}");
    }

    // The same reader without --isolate: the files exist only for libc.
    let out = common::run_guest(vgpu_run(&[], &reader, &[]), &d, &[("LD_LIBRARY_PATH", "")]);
    out.assert_success();
    let f = facts(&out);
    for k in ["version", "info_uuid", "dev_nvidia0"] {
        assert!(!f.contains_key(k), "{k} visible without --isolate:\n{out}");
    }
    // The address may belong to a real device (a virtio function here).
    assert_ne!(f.get("vendor").map(String::as_str), Some("0x10de"), "{out}");
    assert_ne!(
        f.get("driver_link").map(String::as_str),
        Some("../../../bus/pci/drivers/nvidia"),
        "{out}"
    );

    // Nothing leaked out of the namespace.
    assert!(!Path::new("/proc/driver/nvidia").exists());
    assert!(!Path::new("/dev/nvidia0").exists());
    assert!(!Path::new("/sys/module/nvidia").exists());
}

#[test]
fn isolate_passes_the_exit_status() {
    require_no_real_nvidia();
    require_namespaces();
    let d = Daemon::start_emulated();
    let mut cmd = Command::new(&common::artifacts().vgpu);
    cmd.args(["run", "--isolate", "--", "sh", "-c", "exit 7"]);
    let out = common::run_guest(cmd, &d, &[("LD_LIBRARY_PATH", "")]);
    assert_eq!(out.status.code(), Some(7), "{out}");
}

#[test]
fn isolate_without_a_daemon_is_a_setup_failure() {
    let dir = common::TempDir::new("iso-nohost");
    let dead = format!("unix:{}", dir.path().join("none.sock").display());
    let mut cmd = Command::new(&common::artifacts().vgpu);
    cmd.args(["run", "--isolate", "--", "true"]);
    let out = common::run_guest_at(cmd, &dead, &[("LD_LIBRARY_PATH", "")]);
    if has_real_nvidia() {
        // Nothing to describe then: the real files are used as they are.
        out.assert_success();
        return;
    }
    assert_eq!(out.status.code(), Some(125), "{out}");
    assert!(out.stderr.contains("no inventory from"), "{out}");
}

#[test]
fn python_libc_readers_agree_with_nvml_under_plain_run() {
    require_no_real_nvidia();
    let d = Daemon::start_emulated();
    let script = common::repo_root().join("tests/py/vfiles_probe.py");
    let out = common::run_guest(
        vgpu_run(
            &[],
            &common::venv().join("python"),
            &[script.to_str().unwrap()],
        ),
        &d,
        &[("LD_LIBRARY_PATH", "")],
    );
    out.assert_success();
    let f = facts(&out);
    let get = |k: &str| {
        f.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("no {k}:\n{out}"))
    };
    let bdf = get("nvml_bdf");
    assert_eq!(bdf, common::expected::PCI_BUS_ID, "{out}");
    assert_eq!(get("gpus_listing"), bdf, "{out}");
    assert!(
        get("version").contains(&format!(" Kernel Module  {}  ", get("nvml_driver"))),
        "{out}"
    );
    assert_eq!(get("info_uuid"), get("nvml_uuid"), "{out}");
    assert_eq!(get("info_model"), get("nvml_name"), "{out}");
    assert_eq!(get("pci_listed"), "1", "{out}");
    assert_eq!(get("vendor"), "0x10de", "{out}");
    assert_eq!(get("device"), "0x2331", "{out}");
    assert_eq!(get("class"), "0x030200", "{out}");
    assert_eq!(
        get("driver_link"),
        "../../../bus/pci/drivers/nvidia",
        "{out}"
    );
    assert_eq!(get("dev_nvidia0"), "1", "{out}");
}
