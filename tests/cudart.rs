//! Unmodified libcudart from the PyPI wheels (11.8, 12.4, 12.9, 13.0, 13.5)
//! on the shims: `tests/c/cudart_client.c` built against each runtime's own
//! headers, linked to that runtime, run against `vgpu host --driver
//! emulated`. The runtimes come from `scripts/test-deps.sh cudart nvcc`.
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

fn check_runtime(version: &str, runtime_version: i32) {
    let daemon = Daemon::start_emulated();
    let out = common::run_guest(client(version), &daemon, &[]);
    out.assert_success();
    let v = out.line("versions ");
    assert_eq!(
        common::field(v, "runtime"),
        runtime_version.to_string(),
        "{v}"
    );
    let drv: i32 = common::field(v, "driver").parse().unwrap();
    assert!(drv >= expected::MIN_CUDA_DRIVER_VERSION, "{v}");
    assert_eq!(common::field(out.line("count "), "n"), "1");
    let p = out.line("prop ");
    assert_eq!(common::field(p, "name"), expected::NAME, "{p}");
    assert_eq!(common::field(p, "major"), "9", "{p}");
    assert_eq!(common::field(p, "minor"), "0", "{p}");
    assert_eq!(
        common::field(p, "total"),
        expected::TOTAL_MEM_BYTES.to_string(),
        "{p}"
    );
    assert_eq!(common::field(p, "sms"), "114", "{p}");
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
    assert_eq!(
        common::field(m, "total"),
        expected::TOTAL_MEM_BYTES.to_string(),
        "{m}"
    );
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

/// A wrong integrity answer (the shim's test switch) must make cudart refuse
/// to work: proof that the check is really computed and checked.
#[test]
fn wrong_integrity_answer_is_rejected() {
    let daemon = Daemon::start_emulated();
    for version in ["11.8.89", "12.9.79", "13.5.37"] {
        // cudaErrorSoftwareValidityNotEstablished
        let mut cmd = client(version);
        cmd.args(["--expect-error", "103"]);
        let out = common::run_guest(cmd, &daemon, &[("VGPU_TEST_CORRUPT_INTEGRITY", "1")]);
        out.assert_success();
    }
}
