//! The shims export every function of the pinned cuda.h / nvml.h and carry the
//! SONAMEs the loader matches on. The authoritative lists are the generated
//! `crates/cuda-types/src/generated/{cuda,nvml}_functions.rs`.
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// Names of the `fn NAME(` items of a generated function list.
fn generated_list(file: &str) -> BTreeSet<String> {
    let path = common::repo_root()
        .join("crates/cuda-types/src/generated")
        .join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let names: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("fn "))
        .filter_map(|rest| {
            rest.split_once('(')
                .map(|(name, _)| name.trim().to_string())
        })
        .collect();
    assert!(
        names.len() > 100,
        "{} lists only {} functions: parser or file broken",
        path.display(),
        names.len()
    );
    names
}

/// Defined dynamic function symbols of a shared object (`nm -D --defined-only`).
fn defined_functions(lib: &Path) -> BTreeSet<String> {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(lib)
        .output()
        .unwrap_or_else(|e| panic!("nm not runnable ({e}); run scripts/test-deps.sh"));
    assert!(
        out.status.success(),
        "nm {}: {}",
        lib.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace().rev();
            let name = parts.next()?;
            let kind = parts.next()?;
            matches!(kind, "T" | "W" | "i").then(|| name.split('@').next().unwrap().to_string())
        })
        .collect()
}

fn check_exports(lib: &Path, list: &str) {
    let want = generated_list(list);
    let have = defined_functions(lib);
    let missing: Vec<&String> = want.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "{} lacks {} of the {} functions in {list}, e.g. {:?}",
        lib.display(),
        missing.len(),
        want.len(),
        &missing[..missing.len().min(20)]
    );
}

#[test]
fn cuda_shim_exports_every_cuda_h_function() {
    check_exports(&common::artifacts().cuda_shim, "cuda_functions.rs");
}

#[test]
fn nvml_shim_exports_every_nvml_h_function() {
    check_exports(&common::artifacts().nvml_shim, "nvml_functions.rs");
}

#[test]
fn ollama_required_symbols_are_exported() {
    // Spot check independent of the generated list (discovery needs these).
    let cuda = defined_functions(&common::artifacts().cuda_shim);
    for name in [
        "cuInit",
        "cuDriverGetVersion",
        "cuDeviceGetCount",
        "cuDeviceGet",
        "cuDeviceGetAttribute",
        "cuDeviceGetUuid",
        "cuDeviceGetName",
        "cuCtxCreate_v3",
        "cuMemGetInfo_v2",
        "cuCtxDestroy",
        "cuDeviceTotalMem_v2",
        "cuDeviceGetPCIBusId",
        "cuGetProcAddress_v2",
        "cuGetExportTable",
    ] {
        assert!(cuda.contains(name), "libvgpu_cuda.so lacks {name}");
    }
    let nvml = defined_functions(&common::artifacts().nvml_shim);
    for name in [
        "nvmlInit_v2",
        "nvmlInitWithFlags",
        "nvmlShutdown",
        "nvmlErrorString",
        "nvmlSystemGetDriverVersion",
        "nvmlDeviceGetHandleByUUID",
        "nvmlDeviceGetMemoryInfo",
        "nvmlDeviceGetName",
    ] {
        assert!(nvml.contains(name), "libvgpu_nvml.so lacks {name}");
    }
}

#[test]
fn sonames() {
    let a = common::artifacts();
    assert_eq!(
        common::soname(&a.cuda_shim).as_deref(),
        Some("libcuda.so.1"),
        "SONAME of {}",
        a.cuda_shim.display()
    );
    assert_eq!(
        common::soname(&a.nvml_shim).as_deref(),
        Some("libnvidia-ml.so.1"),
        "SONAME of {}",
        a.nvml_shim.display()
    );
}
