//! PyTorch 2.15.0 (the PyPI default +cu132 build, docs/clients.md "Python CUDA clients") on the vgpu
//! device: `torch.cuda.is_available()`, `get_device_name(0)`,
//! `mem_get_info()`, a tensor to the device and back, and a
//! `torch.cuda.CUDAGraph` captured and replayed.
//!
//! OPT-IN and long, so `#[ignore]`d: torch is a 2.8 GB download and 5.3 GB
//! on disk. Its venv `${VGPU_CACHE:-.cache}/venv-torch` is made by
//! `scripts/test-deps.sh torch` (a group outside ALL_GROUPS); then
//! `cargo test --test torch -- --ignored` runs it, and fails when the venv is
//! missing. Not run in CI.
//!
//! What torch needs from the driver: libcudart 13.2 inside torch's wheels,
//! i.e. every dark-API table of docs/call-path.md "Export tables" with the integrity check,
//! cuGetProcAddress, and module loading for torch's own kernels.
//! libtorch_cuda.so 2.15.0+cu132 carries no PTX at all: its fatbin holds
//! 2,981 cubins (sm_75 to sm_121) and no PTX entry, so every native torch
//! kernel needs a real GPU; on the software GPU each is refused with "no
//! kernel image" and the shim's log names the kernel.
mod common;

use common::{expected, Daemon};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Importing torch and starting CUDA, then interpreting kernels on the CPU.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// `python` of the torch venv; its group's stamp says the pinned torch was
/// installed completely.
fn torch_python() -> PathBuf {
    let venv = common::cache_dir().join("venv-torch");
    let py = venv.join("bin/python");
    assert!(
        venv.join(".stamp-torch").is_file() && py.is_file(),
        "no torch venv at {}: run scripts/test-deps.sh torch (~2.8 GB download) first",
        venv.display()
    );
    py
}

#[test]
#[ignore = "opt-in: needs the 5.3 GB torch venv (scripts/test-deps.sh torch), then \
            cargo test --test torch -- --ignored"]
fn torch_cuda_basics() {
    if !common::requires_h100_pcie("checks the H100 PCIe's name and memory") {
        return;
    }
    let py = torch_python();
    let mut d = Daemon::start_emulated();
    let mut cmd = Command::new(py);
    cmd.arg(common::repo_root().join("tests/py/torch_probe.py"))
        .env_remove("CUDA_HOME")
        .env_remove("CUDA_PATH");
    let env = [("PYTHONDONTWRITEBYTECODE", "1"), ("PYTHONUNBUFFERED", "1")];
    let out = common::run_guest_with_timeout(cmd, &d, &env, RUN_TIMEOUT);
    let kv: HashMap<&str, &str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| -> &str {
        kv.get(k)
            .copied()
            .unwrap_or_else(|| panic!("no {k}= line:\n{out}"))
    };
    assert_eq!(get("is_available"), "True", "{out}");
    assert_eq!(get("device_count"), "1", "{out}");
    assert_eq!(get("device_name"), expected::NAME, "{out}");
    assert_eq!(get("capability"), "9.0", "{out}");
    assert_eq!(
        get("total_memory").parse::<u64>().ok(),
        Some(expected::TOTAL_MEM_BYTES),
        "{out}"
    );
    let (free, total) = get("mem_get_info")
        .split_once(',')
        .unwrap_or_else(|| panic!("mem_get_info not `free,total`:\n{out}"));
    let free: u64 = free.parse().expect("free");
    let total: u64 = total.parse().expect("total");
    assert_eq!(total, expected::TOTAL_MEM_BYTES, "{out}");
    assert!(free > 0 && free <= total, "{out}");
    assert_eq!(get("to_cuda"), "cuda:0", "{out}");
    assert_eq!(get("roundtrip"), "True", "{out}");
    // torch's own kernels are SASS-only: on the software GPU they are "no
    // kernel image" (a real GPU behind the daemon runs them); anything else
    // is a failure.
    for (k, want) in [("mul_roundtrip", "True"), ("sum", "523776.0")] {
        let got = get(k);
        assert!(
            got == want || got.contains("no kernel image is available"),
            "{k}={got}:\n{out}"
        );
    }
    assert_eq!(get("synchronize"), "ok", "{out}");
    // torch.cuda.CUDAGraph capture and replay (copies only: they need no
    // kernel image).
    assert_eq!(get("graph_replay"), "True", "{out}");
    assert_eq!(get("failed"), "none", "{out}");
    out.assert_success();
    d.assert_alive();
}
