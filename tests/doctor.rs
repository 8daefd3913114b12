//! `vgpu doctor`: PASS on a healthy setup, and the right FAIL, by name, for
//! each way a setup breaks.
mod common;

use common::{Daemon, GuestOutput};
use std::path::PathBuf;
use std::process::Command;

/// Every check that asks the device; all must PASS on a healthy setup.
const DEVICE_CHECKS: &[&str] = &[
    "cuInit",
    "driver version",
    "device identity",
    "compute capability",
    "VMM",
    "NVML memory",
    "virtual files",
];

fn doctor_under_run() -> Command {
    let vgpu = &common::artifacts().vgpu;
    let mut cmd = Command::new(vgpu);
    cmd.args(["run", "--"]).arg(vgpu).arg("doctor");
    cmd
}

/// The line of check `name`, e.g. `PASS  daemon: ...`.
#[track_caller]
fn check<'a>(out: &'a GuestOutput, name: &str) -> &'a str {
    let found = out.stdout.lines().find(|l| {
        l.get(6..)
            .is_some_and(|rest| rest.starts_with(&format!("{name}:")))
    });
    found.unwrap_or_else(|| panic!("doctor printed no {name:?} check:\n{out}"))
}

#[test]
fn healthy_setup_passes() {
    let d = Daemon::start_emulated();
    let out = common::run_guest(doctor_under_run(), &d, &[("LD_LIBRARY_PATH", "")]);
    out.assert_success();
    for name in ["daemon", "libcuda.so.1", "libnvidia-ml.so.1", "LD_PRELOAD"]
        .iter()
        .chain(DEVICE_CHECKS)
    {
        let line = check(&out, name);
        assert!(line.starts_with("PASS  "), "{name}: {line}\n{out}");
    }
    assert!(!out.stdout.contains("FAIL"), "{out}");
    let files = check(&out, "virtual files");
    assert!(
        files.contains(common::expected::PCI_BUS_ID),
        "virtual files line names no bus id: {files}"
    );
}

#[test]
fn no_daemon_fails_the_daemon_check() {
    let dir = common::TempDir::new("doc-nohost");
    let dead = format!("unix:{}", dir.path().join("none.sock").display());
    let out = common::run_guest_at(doctor_under_run(), &dead, &[("LD_LIBRARY_PATH", "")]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let line = check(&out, "daemon");
    assert!(
        line.starts_with("FAIL  daemon: nothing answers at "),
        "{out}"
    );
    assert!(out.stdout.contains("fix: start the daemon"), "{out}");
    assert!(out.stdout.contains("SKIP  device checks"), "{out}");
}

/// A directory holding a foreign `libcuda.so.1` (SONAME included).
fn foreign_libcuda_dir(tmp: &common::TempDir) -> PathBuf {
    let so = common::compile_c(
        "fake_libcuda.c",
        &["-shared", "-fPIC", "-Wl,-soname,libcuda.so.1"],
    );
    let dir = tmp.path().join("other");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&so, dir.join("libcuda.so.1")).unwrap();
    assert_eq!(
        common::soname(&dir.join("libcuda.so.1")).as_deref(),
        Some("libcuda.so.1")
    );
    dir
}

#[test]
fn shadowing_libcuda_fails_by_name() {
    let d = Daemon::start_emulated();
    let tmp = common::TempDir::new("doc-shadow");
    let other = foreign_libcuda_dir(&tmp);
    // The foreign library first on the path, no preload: what an
    // application started from this environment would load.
    let path = format!("{}:{}", other.display(), common::shim_libdir().display());
    let mut cmd = Command::new(&common::artifacts().vgpu);
    cmd.arg("doctor");
    let out = common::run_guest(cmd, &d, &[("LD_LIBRARY_PATH", path.as_str())]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(check(&out, "daemon").starts_with("PASS  "), "{out}");
    let line = check(&out, "libcuda.so.1");
    assert!(
        line.starts_with("FAIL  libcuda.so.1: ")
            && line.contains(&other.join("libcuda.so.1").display().to_string())
            && line.contains("not vgpu's shim"),
        "{out}"
    );
    assert!(
        check(&out, "libnvidia-ml.so.1").starts_with("PASS  "),
        "{out}"
    );
    assert!(check(&out, "cuInit").starts_with("FAIL  "), "{out}");
}

#[test]
fn old_driver_fails_the_version_check() {
    if !common::requires_software_gpu("the CUDA 12.2 host is a software GPU profile") {
        return;
    }
    let d = Daemon::start(&["--driver", "emulated", "--profile", "h100-cuda12.2"]);
    let out = common::run_guest(doctor_under_run(), &d, &[("LD_LIBRARY_PATH", "")]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(check(&out, "daemon").contains("CUDA 12.2"), "{out}");
    let line = check(&out, "driver version");
    assert!(
        line.starts_with("FAIL  driver version: CUDA 12.2: ")
            && line.contains("11.x, 12.x accept it")
            && line.contains("13.x refuse it"),
        "{out}"
    );
    // Only that check fails.
    let fails: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert_eq!(fails.len(), 1, "{out}");
}

/// A cold host: doctor waits like a guest, passes, and says the host was
/// initializing; given less time than the host needs, the daemon check
/// fails saying so.
#[test]
fn a_cold_host_is_reported_as_initializing() {
    if !common::requires_software_gpu("the init delay is the software GPU's knob") {
        return;
    }
    let d = Daemon::start_with_env(&[], &[("VGPU_EMU_INIT_DELAY_MS", "2000")]);
    let out = common::run_guest(doctor_under_run(), &d, &[("LD_LIBRARY_PATH", "")]);
    out.assert_success();
    let line = check(&out, "daemon");
    assert!(
        line.starts_with("PASS  ") && line.contains("host was initializing: devices after 2."),
        "{out}"
    );
    assert!(out.stderr.contains("host is initializing"), "{out}");
    let env = [("LD_LIBRARY_PATH", ""), ("VGPU_INIT_TIMEOUT", "0.5")];
    let out = common::run_guest(doctor_under_run(), &d, &env);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let line = check(&out, "daemon");
    assert!(
        line.starts_with("FAIL  daemon: ") && line.contains("host is initializing"),
        "{out}"
    );
    assert!(out.stdout.contains("VGPU_INIT_TIMEOUT=SECONDS"), "{out}");
}
