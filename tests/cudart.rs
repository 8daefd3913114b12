//! Unmodified libcudart from the PyPI wheels (11.8, 12.4, 12.9, 13.0, 13.5)
//! on the shims: `tests/c/cudart_client.c` built against each runtime's own
//! headers, linked to that runtime, run against the tests' daemon (the
//! software GPU or `VGPU_TEST_DRIVER`'s driver), and on two devices with the
//! host's `--devices` and the guest's `CUDA_VISIBLE_DEVICES` together. The
//! runtimes come from `scripts/test-deps.sh cudart nvcc`.
mod common;

use common::{expected, Daemon};
use std::path::PathBuf;
use std::process::Command;

/// (version, include dir, library file) of one installed runtime wheel.
fn runtime(version: &str) -> (PathBuf, PathBuf) {
    let base = common::cache_dir()
        .join("cudart")
        .join(version)
        .join("nvidia");
    let root = if base.join("cu13").is_dir() {
        base.join("cu13")
    } else {
        base.join("cuda_runtime")
    };
    let lib = std::fs::read_dir(root.join("lib"))
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/test-deps.sh cudart", root.display()))
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libcudart.so.")
        })
        .unwrap_or_else(|| panic!("no libcudart in {}", root.display()));
    (root.join("include"), lib)
}

/// The CUDA 13 nvcc wheel's headers supply `crt/host_defines.h`, which the
/// runtime wheels include but do not ship.
fn crt_include() -> PathBuf {
    let sp = common::venv_site_packages();
    let inc = sp.join("nvidia/cu13/include");
    assert!(
        inc.join("crt/host_defines.h").is_file(),
        "{}: run scripts/test-deps.sh nvcc",
        inc.display()
    );
    inc
}

fn client(version: &str) -> Command {
    let (inc, lib) = runtime(version);
    let exe = common::compile_c(
        "cudart_client.c",
        &[
            &format!("-I{}", inc.display()),
            &format!("-idirafter{}", crt_include().display()),
            &lib.display().to_string(),
            &format!("-Wl,-rpath,{}", lib.parent().unwrap().display()),
        ],
    );
    Command::new(exe)
}

/// The runtime's view of the host: on the software GPU exactly its
/// profile's numbers (a CUDA 13 runtime on a 12.x driver refuses it, as on
/// a real host), on a real driver the numbers' form and the two APIs
/// agreeing.
fn check_runtime(version: &str, runtime_version: i32) {
    let daemon = Daemon::start_target();
    let host = expected::host();
    if let Some(h) = host.filter(|h| !h.runs_cudart(runtime_version / 1000)) {
        // cudaErrorInsufficientDriver.
        let mut cmd = client(version);
        cmd.args(["--expect-error", "35"]);
        let out = common::run_guest(cmd, &daemon, &[]);
        out.assert_success();
        let drv = common::field(out.line("versions "), "driver");
        assert_eq!(drv, h.cuda_driver_version.to_string(), "{out}");
        return;
    }
    let out = common::run_guest(client(version), &daemon, &[]);
    let v = out.line("versions ");
    assert_eq!(
        common::field(v, "runtime"),
        runtime_version.to_string(),
        "{v}"
    );
    let drv: i32 = common::field(v, "driver").parse().unwrap();
    let count: usize = common::field(out.line("count "), "n").parse().unwrap();
    let p = out.line("prop ");
    let total: u64 = common::field(p, "total").parse().unwrap();
    match host {
        Some(h) => {
            assert_eq!(drv, h.cuda_driver_version, "{v}");
            assert_eq!(count, h.devices, "{out}");
            assert_eq!(common::field(p, "name"), h.name, "{p}");
            assert_eq!(common::field(p, "major"), h.cc.0.to_string(), "{p}");
            assert_eq!(common::field(p, "minor"), h.cc.1.to_string(), "{p}");
            assert_eq!(total, h.total_mem, "{p}");
            assert_eq!(common::field(p, "sms"), h.sm_count.to_string(), "{p}");
        }
        None => {
            assert!(drv >= 11000, "{v}");
            assert!(count >= 1 && total > 0, "{out}");
        }
    }
    assert_eq!(common::field(p, "warp"), "32", "{p}");
    assert_eq!(common::field(p, "integrated"), "0", "{p}");
    // The guest-visible address 0000:00:05.0 everywhere.
    assert_eq!(common::field(p, "pci_domain"), "0", "{p}");
    assert_eq!(common::field(p, "pci_bus"), "0", "{p}");
    assert_eq!(common::field(p, "pci_device"), "5", "{p}");
    assert_eq!(
        common::field(out.line("busid "), "id").to_lowercase(),
        expected::PCI_BUS_ID
    );
    let uuid = common::field(p, "uuid");
    assert!(
        common::is_gpu_uuid(&uuid) && uuid != "GPU-00000000-0000-0000-0000-000000000000",
        "{p}"
    );
    // cudaDeviceProp.uuid is the UUID NVML knows the device by.
    let mut py = Command::new(common::venv().join("python"));
    py.args([
        "-c",
        "import pynvml as n; n.nvmlInit(); h=n.nvmlDeviceGetHandleByIndex(0); print('nvml uuid=' + n.nvmlDeviceGetUUID(h))",
    ]);
    let nvml = common::run_guest(py, &daemon, &[]);
    nvml.assert_success();
    assert_eq!(common::field(nvml.line("nvml "), "uuid"), uuid);
    let m = out.line("meminfo ");
    assert_eq!(common::field(m, "total"), total.to_string(), "{m}");
    for n in ["1", "4097", "67108864", "268435456"] {
        assert!(
            out.stdout.contains(&format!("roundtrip bytes={n} ok=1")),
            "{n}: {}",
            out.stdout
        );
    }
    if runtime_version >= 11020 {
        out.line("mallocasync ok=1");
    }
    out.line("threads n=8 ok=1");
    // A hand-built fatbin registered like nvcc's code does and launched with
    // cudaLaunchKernel: cudart 11 loads it through CUDART_INTERFACE, 12+
    // through cuLibraryLoadData.
    out.assert_success();
    out.line("kernel registered=1 ok=1");
    out.line("done ok=1");
}

#[test]
fn cudart_11_8() {
    check_runtime("11.8.89", 11080);
}

#[test]
fn cudart_12_4() {
    check_runtime("12.4.127", 12040);
}

#[test]
fn cudart_12_9() {
    check_runtime("12.9.79", 12090);
}

#[test]
fn cudart_13_0() {
    check_runtime("13.0.96", 13000);
}

#[test]
fn cudart_13_5() {
    check_runtime("13.5.37", 13050);
}

/// The UUID of the device a guest numbers 0, and how many it sees.
fn first_device(daemon: &Daemon, visible: Option<&str>) -> (String, String) {
    let mut cmd = client("12.9.79");
    cmd.args(["--sizes", "1", "--threads", "1"]);
    let env: Vec<(&str, &str)> = visible
        .map(|v| ("CUDA_VISIBLE_DEVICES", v))
        .into_iter()
        .collect();
    let out = common::run_guest(cmd, daemon, &env);
    out.line("threads n=1 ok=1");
    (
        common::field(out.line("prop "), "uuid"),
        common::field(out.line("count "), "n"),
    )
}

/// The host picks and orders devices (`--devices`), the guest's
/// CUDA_VISIBLE_DEVICES then picks among what it was given, by ordinal or
/// UUID: on the two-device profile.
#[test]
fn host_device_selection_and_cuda_visible_devices() {
    if !common::requires_software_gpu("the two-device host is a software GPU profile") {
        return;
    }
    let plain = Daemon::start(&["--driver", "emulated", "--profile", "2x-h100"]);
    let (u0, n) = first_device(&plain, None);
    assert_eq!(n, "2");
    let (u1, n) = first_device(&plain, Some("1"));
    assert_eq!(n, "1");
    assert_ne!(u0, u1);
    let swapped = Daemon::start(&[
        "--driver",
        "emulated",
        "--profile",
        "2x-h100",
        "--devices",
        "1,0",
    ]);
    assert_eq!(first_device(&swapped, None), (u1.clone(), "2".into()));
    assert_eq!(first_device(&swapped, Some("1")), (u0.clone(), "1".into()));
    assert_eq!(
        first_device(&swapped, Some(&u0[..12])),
        (u0.clone(), "1".into())
    );
    let one = Daemon::start(&[
        "--driver",
        "emulated",
        "--profile",
        "2x-h100",
        "--devices",
        &u1[..12],
    ]);
    assert_eq!(first_device(&one, None), (u1, "1".into()));
}

/// A wrong integrity answer (the shim's test switch) must make cudart refuse
/// to work: proof that the check is really computed and checked.
#[test]
fn wrong_integrity_answer_is_rejected() {
    let daemon = Daemon::start_target();
    for (version, major) in [("11.8.89", 11), ("12.9.79", 12), ("13.5.37", 13)] {
        // A runtime that refuses the host's driver never gets as far.
        if expected::host().is_some_and(|h| !h.runs_cudart(major)) {
            continue;
        }
        // cudaErrorSoftwareValidityNotEstablished
        let mut cmd = client(version);
        cmd.args(["--expect-error", "103"]);
        let out = common::run_guest(cmd, &daemon, &[("VGPU_TEST_CORRUPT_INTEGRITY", "1")]);
        out.assert_success();
    }
}
