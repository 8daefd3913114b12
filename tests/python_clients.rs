//! Real Python CUDA clients against the CUDA shim and the software GPU
//! (docs/clients.md "Python CUDA clients"): NVIDIA's cuda-bindings driver module and
//! numba-cuda, from the venv `${VGPU_CACHE:-.cache}/venv-numba` that
//! `scripts/test-deps.sh numba` installs (pins and the reason nvJitLink is left
//! out are there).
//!
//! Both reach the driver the same way: cuda-bindings loads `libcuda.so.1`,
//! takes `cuGetProcAddress_v2` with dlsym and resolves every other entry point
//! through it with a per-function version. numba-cuda 0.30.4 additionally
//! probes `libcuda.so` / `libcuda.so.1` with ctypes before it calls anything.
//!
//! Kernels: numba-cuda 0.30.4 has no switch to keep nvJitLink out (the old
//! `NUMBA_CUDA_ENABLE_PYNVJITLINK` is not read any more): if cuda-bindings can
//! load libnvJitLink, numba compiles to LTO-IR and links an sm_90 SASS cubin
//! in-process, which the software GPU cannot run. The venv therefore has no
//! `nvidia-nvjitlink-cu12`, and the guest environment drops `CUDA_HOME` /
//! `CUDA_PATH` so that cuda-pathfinder cannot find one elsewhere; numba then
//! emits PTX and cuda.core links it with the driver's `cuLink*` calls.
//! `tests/py/numba_kernels.py` checks this before it launches anything.
mod common;

use common::{expected, Daemon, GuestOutput};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// numba imports and JIT-compiles for several seconds before the first call;
/// the software GPU then interprets the kernels.
const NUMBA_TIMEOUT: Duration = Duration::from_secs(240);
const BINDINGS_TIMEOUT: Duration = Duration::from_secs(90);

/// `python` of the numba venv; panics with the install command when missing.
#[track_caller]
fn numba_python() -> PathBuf {
    let py = common::cache_dir().join("venv-numba/bin/python");
    assert!(
        py.is_file(),
        "no numba venv at {}: run scripts/test-deps.sh numba",
        py.display()
    );
    py
}

/// Runs `tests/py/<script>` with the numba venv's python as a guest of `d`.
fn run_script(d: &Daemon, script: &str, timeout: Duration) -> GuestOutput {
    let mut cmd = Command::new(numba_python());
    cmd.arg(common::repo_root().join("tests/py").join(script))
        .env_remove("CUDA_HOME")
        .env_remove("CUDA_PATH")
        .env_remove("NUMBA_CUDA_DRIVER")
        .env_remove("NUMBA_ENABLE_CUDASIM");
    // numba's on-disk caches stay out of the repository and $HOME.
    let tmp = common::TempDir::new("numba");
    let cache = tmp.path().to_string_lossy().into_owned();
    let env = [
        ("NUMBA_CACHE_DIR", cache.as_str()),
        ("PYTHONDONTWRITEBYTECODE", "1"),
        ("PYTHONUNBUFFERED", "1"),
    ];
    common::run_guest_with_timeout(cmd, d, &env, timeout)
}

/// The `key=value` lines of stdout (first occurrence wins).
fn key_values(out: &GuestOutput) -> HashMap<String, String> {
    let mut kv = HashMap::new();
    for line in out.stdout.lines() {
        if let Some((k, v)) = line.split_once('=') {
            kv.entry(k.trim().to_string())
                .or_insert_with(|| v.trim().to_string());
        }
    }
    kv
}

#[track_caller]
fn get<'a>(kv: &'a HashMap<String, String>, key: &str, out: &GuestOutput) -> &'a str {
    kv.get(key)
        .unwrap_or_else(|| panic!("no {key}= line:\n{out}"))
        .as_str()
}

#[track_caller]
fn num(kv: &HashMap<String, String>, key: &str, out: &GuestOutput) -> u64 {
    get(kv, key, out)
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number:\n{out}"))
}

#[test]
fn cuda_bindings_driver_calls() {
    if !common::requires_h100_pcie("checks the H100 PCIe's published numbers") {
        return;
    }
    let mut d = Daemon::start_emulated();
    let out = run_script(&d, "cuda_bindings_probe.py", BINDINGS_TIMEOUT);
    out.assert_success();
    let kv = key_values(&out);
    assert_eq!(get(&kv, "init", &out), "ok");
    assert!(
        num(&kv, "driver_version", &out) >= expected::MIN_CUDA_DRIVER_VERSION as u64,
        "{out}"
    );
    assert_eq!(get(&kv, "count", &out), "1", "{out}");
    assert_eq!(get(&kv, "name", &out), expected::NAME, "{out}");
    assert_eq!(
        num(&kv, "total_mem", &out),
        expected::TOTAL_MEM_BYTES,
        "{out}"
    );
    assert_eq!(
        num(&kv, "total_mem", &out) / (1024 * 1024),
        expected::TOTAL_MEM_MIB
    );
    assert_eq!(
        get(&kv, "compute_capability", &out),
        format!("{}.{}", expected::CC_MAJOR, expected::CC_MINOR),
        "{out}"
    );
    assert!(num(&kv, "sm_count", &out) > 0, "{out}");
    assert_eq!(get(&kv, "pci_bus_id", &out), expected::PCI_BUS_ID, "{out}");
    assert_eq!(get(&kv, "primary_ctx", &out), "ok", "{out}");
    let free = num(&kv, "mem_free", &out);
    assert_eq!(
        num(&kv, "mem_total", &out),
        expected::TOTAL_MEM_BYTES,
        "{out}"
    );
    assert!(free > 0 && free <= expected::TOTAL_MEM_BYTES, "{out}");
    assert_eq!(get(&kv, "alloc", &out), "ok", "{out}");
    assert_eq!(get(&kv, "roundtrip_equal", &out), "True", "{out}");
    assert_eq!(get(&kv, "memset_equal", &out), "True", "{out}");
    assert_eq!(get(&kv, "free", &out), "ok", "{out}");
    assert_eq!(get(&kv, "created_ctx_current", &out), "True", "{out}");
    assert_eq!(
        get(&kv, "created_ctx_roundtrip_equal", &out),
        "True",
        "{out}"
    );
    assert_eq!(get(&kv, "done", &out), "ok", "{out}");
    d.assert_alive();
}

#[test]
fn numba_detect_and_list_devices() {
    if !common::requires_h100_pcie("checks the H100 PCIe's name") {
        return;
    }
    let mut d = Daemon::start_emulated();
    let out = run_script(&d, "numba_detect.py", NUMBA_TIMEOUT);
    out.assert_success();
    let kv = key_values(&out);
    assert_eq!(get(&kv, "is_available", &out), "True", "{out}");
    // cuda.detect()'s own text.
    assert!(out.stdout.contains("Found 1 CUDA devices"), "{out}");
    let id_line = out.line("id 0");
    assert!(id_line.contains(expected::NAME), "{out}");
    assert!(id_line.contains("[SUPPORTED]"), "{out}");
    assert!(
        out.stdout.contains("Compute Capability: 9.0"),
        "detect() shows CC 9.0:\n{out}"
    );
    assert!(out.stdout.contains("1/1 devices are supported"), "{out}");
    assert_eq!(get(&kv, "detect_supported", &out), "True", "{out}");
    // cuda.list_devices()
    assert_eq!(get(&kv, "list_devices", &out), "1", "{out}");
    assert_eq!(get(&kv, "device0_name", &out), expected::NAME, "{out}");
    assert_eq!(get(&kv, "device0_cc", &out), "9.0", "{out}");
    d.assert_alive();
}

#[test]
fn numba_jit_kernels() {
    let mut d = Daemon::start_emulated();
    let out = run_script(&d, "numba_kernels.py", NUMBA_TIMEOUT);
    let kv = key_values(&out);
    assert_eq!(
        kv.get("linker").map(String::as_str),
        Some("driver-culink"),
        "numba must link PTX through cuLink*, not nvJitLink:\n{out}"
    );
    out.assert_success();
    for check in ["vector_add", "atomic_sum", "block_reduce", "all"] {
        assert_eq!(get(&kv, check, &out), "ok", "{check}:\n{out}");
    }
    d.assert_alive();
}
