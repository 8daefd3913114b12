//! Real NVML clients from PyPI (nvidia-ml-py, nvitop, gpustat; pinned in
//! scripts/test-deps.sh) against the NVML shim, found through the
//! LD_LIBRARY_PATH lib dir.
mod common;

use common::{expected, Daemon};
use std::collections::HashMap;
use std::process::Command;

fn key_values(out: &common::GuestOutput) -> HashMap<String, String> {
    out.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn pynvml_script() {
    if !common::requires_h100_pcie("checks the H100 PCIe's published numbers") {
        return;
    }
    let bin = common::venv();
    let d = Daemon::start_emulated();
    let mut cmd = Command::new(bin.join("python"));
    cmd.arg(common::repo_root().join("tests/py/pynvml_probe.py"));
    let out = common::run_guest(cmd, &d, &[]);
    out.assert_success();
    let kv = key_values(&out);
    let get = |k: &str| -> &str {
        kv.get(k)
            .unwrap_or_else(|| panic!("no {k}= line:\n{out}"))
            .as_str()
    };
    let num = |k: &str| -> u64 {
        get(k)
            .parse()
            .unwrap_or_else(|_| panic!("{k} is not a number:\n{out}"))
    };
    assert_eq!(get("count"), "1", "{out}");
    assert_eq!(get("name"), expected::NAME, "{out}");
    assert_eq!(get("handle_by_uuid_name"), expected::NAME, "{out}");
    assert!(common::is_gpu_uuid(get("uuid")), "{out}");
    assert_eq!(num("memory_total"), expected::TOTAL_MEM_BYTES, "{out}");
    assert_eq!(num("memory_total") / (1024 * 1024), expected::TOTAL_MEM_MIB);
    assert!(
        num("memory_used") + num("memory_free") <= num("memory_total"),
        "{out}"
    );
    assert!(
        num("memory_free") >= expected::OLLAMA_MIN_FREE_BYTES,
        "{out}"
    );
    assert_eq!(get("pci_bus_id"), expected::NVML_PCI_BUS_ID, "{out}");
    assert_eq!(get("pci_bus_id_legacy"), expected::PCI_BUS_ID, "{out}");
    assert_eq!(get("compute_capability"), "9.0", "{out}");
    let major: u32 = get("driver_version")
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(major >= expected::MIN_NVIDIA_DRIVER_MAJOR, "{out}");
    assert!(
        num("cuda_driver_version") >= expected::MIN_CUDA_DRIVER_VERSION as u64,
        "{out}"
    );
    // Values a monitoring client shows; a real H100 reports them all.
    assert!((1..=120).contains(&num("temperature")), "{out}");
    assert!(num("power_mw") < 1_000_000, "{out}");
    assert!(num("utilization_gpu") <= 100, "{out}");
    assert!(num("utilization_memory") <= 100, "{out}");
    let _ = num("processes");
}

#[test]
fn nvitop_once() {
    if !common::requires_h100_pcie("checks the H100 PCIe's name and memory") {
        return;
    }
    let bin = common::venv();
    let d = Daemon::start_emulated();
    let mut cmd = Command::new(bin.join("nvitop"));
    cmd.arg("--once");
    let out = common::run_guest(cmd, &d, &[("COLUMNS", "160"), ("TERM", "xterm")]);
    out.assert_success();
    assert!(out.stdout.contains("H100"), "no H100:\n{out}");
    // nvitop prints 85520809984 bytes as 79.65GiB.
    assert!(out.stdout.contains("79.65GiB"), "no memory total:\n{out}");
    assert!(!out.stdout.contains("NVML not found"), "{out}");
}

#[test]
fn gpustat() {
    if !common::requires_h100_pcie("checks the H100 PCIe's name and memory") {
        return;
    }
    let bin = common::venv();
    let d = Daemon::start_emulated();
    let mut cmd = Command::new(bin.join("gpustat"));
    cmd.arg("--no-color");
    let out = common::run_guest(cmd, &d, &[]);
    out.assert_success();
    assert!(out.stdout.contains("H100"), "no H100:\n{out}");
    // gpustat: "<used> / 81559 MB"
    assert!(
        out.stdout
            .contains(&format!("/ {} MB", expected::TOTAL_MEM_MIB)),
        "no memory total:\n{out}"
    );
}
