//! cuBLAS on the software GPU (issue 11 item 3): the `libcublas.so.12` of
//! the llama venv (`scripts/test-deps.sh llama`: the `nvidia-cublas-cu12`
//! wheel) initializes through libvgpu_cuda.so and runs a 64x64 SGEMM whose
//! result tests/c/cublas.c checks against a CPU product.
//!
//! cuBLAS carries its own CUDA runtime and dlopens `libcuda.so.1`, which
//! the shim directory on `LD_LIBRARY_PATH` makes vgpu's. Its SGEMM and
//! DGEMM kernels live in `libcublas.so.12`, whose fatbins carry
//! compute_120 PTX beside the machine code, so the software GPU runs them;
//! most of `libcublasLt.so.12`'s kernels (the cutlass/xmma tensor-core
//! GEMMs of the half-precision paths) are machine code only, which the
//! software GPU refuses with CUDA_ERROR_NO_BINARY_FOR_GPU naming the
//! kernel.
//!
//! Needs `cargo build --workspace` first, gcc, and the llama venv.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use vgpu_test_support::{cache_dir, compile_c_in, run_guest, shim_libdir, Daemon};

/// The directory of `libcublas.so.12` in the llama venv.
fn cublas_dir() -> PathBuf {
    let lib = cache_dir().join("venv-llama/lib");
    let found = fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("site-packages/nvidia/cublas/lib"))
            .find(|d| d.join("libcublas.so.12").is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no libcublas.so.12 under {}: run scripts/test-deps.sh llama",
            lib.display()
        )
    })
}

/// The value of `key` on the line that starts with it.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
}

#[test]
fn cublas_initializes_and_runs_an_sgemm() {
    let dir = cublas_dir();
    let daemon = Daemon::start_emulated();
    let exe = compile_c_in(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c"),
        "cublas.c",
        &["-lm"],
    );
    let mut cmd = Command::new(&exe);
    cmd.arg(dir.join("libcublas.so.12"));
    let path = format!("{}:{}", shim_libdir().display(), dir.display());
    let out = run_guest(
        cmd,
        &daemon,
        &[("LD_LIBRARY_PATH", &path), ("VGPU_LOG", "warn")],
    );
    eprintln!("{out}");
    let text = &out.stdout;
    assert!(out.status.success() && text.contains("done"), "{out}");
    // cublasStatus_t 0 (CUBLAS_STATUS_SUCCESS) at every step; before the
    // shim answered cuOccupancyAvailableDynamicSMemPerBlock, cublasCreate
    // was CUBLAS_STATUS_INTERNAL_ERROR.
    for step in ["create", "setup", "gemm", "sync", "destroy"] {
        let status = field(text, step).unwrap_or_else(|| panic!("no {step} line: {text}"));
        assert!(status.starts_with("0 "), "{step}: {status}");
    }
    // Small integers: the product is exact.
    assert_eq!(field(text, "result"), Some("0"), "{text}");
    // Every entry point cuBLAS called is implemented: the shim logs each
    // stub the first time it answers. (cuBLAS asks cuCtxGetLimit for
    // CU_LIMIT_CIG_ENABLED, then CU_LIMIT_SHMEM_SIZE: forwarded, and the
    // software GPU has no CIG, so they are CUDA_ERROR_UNSUPPORTED_LIMIT.)
    let stubs: Vec<&str> = out
        .stderr
        .lines()
        .filter_map(|l| {
            l.split_once("WARN ")?
                .1
                .strip_suffix(" is not supported by vgpu (CUresult 801)")
        })
        .collect();
    assert!(stubs.is_empty(), "cuBLAS called stubs: {stubs:?}");
}
