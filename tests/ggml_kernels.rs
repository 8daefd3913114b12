//! ggml's CUDA kernels as Ollama builds them, on vgpu (issue 11): a few of
//! ggml's own kernel files, built from source for compute_90 PTX only (the
//! PTX an H100-class board JIT-compiles; on the software GPU the PTX that
//! runs), checked against CPU references. The kernels take the paths
//! Ollama's binaries take on cc 9.0: `cp.async`, `ldmatrix`, `mma.sync`
//! m16n8k16 (f16) and m16n8k32 (s8), half2 arithmetic, warp shuffles,
//! programmatic-dependent launches.
//!
//! The sources come from the pinned llama-cpp-python sdist, unpacked by
//! `scripts/test-deps.sh ggml` into `${VGPU_CACHE:-.cache}/ggml/<version>/`
//! (never committed); nvcc is group `nvcc`'s. The test builds, in parallel
//! and cached by content in `${VGPU_CACHE}/ggml/build-<version>/`:
//!
//! * ggml's base library (the C/C++ that builds graphs and packs op
//!   parameters) with gcc;
//! * ggml-cuda's `softmax.cu`, `norm.cu`, `rope.cu`, `quantize.cu` and
//!   `mmvq.cu` unchanged, with Ollama's CUDA flags (`-use_fast_math
//!   -extended-lambda`, ggml's defines);
//! * our `tests/ggml/`: `ggml_instances.cu` (the MMQ kernels for Q4_K and
//!   Q8_0 at one tile width and the MMA flash-attention kernel for head size
//!   128, instantiated from ggml's templates), `ggml_runtime.cu` (what ggml's
//!   backend file would provide), `ggml_check.cu` (inputs, ggml's
//!   launchers, CPU references, tolerances), and a declarations-only
//!   `include/cublas_v2.h`.
//!
//! The first build takes about 3 CPU-minutes; a cached one, none.
//! The program then runs unmodified through the shims on the tests' daemon
//! (the software GPU, or `VGPU_TEST_DRIVER`'s driver) and prints one line
//! per check.
mod common;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Kernel families the checks must cover (ggml_check.cu's list names the
/// checks; each name starts with its family).
const FAMILIES: [&str; 6] = ["softmax", "rms_norm", "rope", "mmvq", "mmq", "flash_attn"];

/// ggml-cuda's files built unchanged.
const GGML_CUDA_FILES: [&str; 5] = ["mmvq.cu", "softmax.cu", "norm.cu", "rope.cu", "quantize.cu"];
/// ggml's base library (ggml-base in its CMakeLists) as far as the check links it.
const GGML_BASE_FILES: [&str; 7] = [
    "ggml.c",
    "ggml-alloc.c",
    "ggml-quants.c",
    "ggml.cpp",
    "ggml-backend.cpp",
    "ggml-backend-meta.cpp",
    "ggml-threading.cpp",
];
/// Ours, heaviest first.
const OUR_FILES: [&str; 3] = ["ggml_instances.cu", "ggml_runtime.cu", "ggml_check.cu"];

/// Interpreting the kernels on two cores; the module parse of `mmvq.cu`'s
/// 12 MB of PTX included.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// The sdist pin, read from `scripts/test-deps.sh` (`GGML_SDIST=name==version`)
/// so the two cannot disagree.
fn sdist_version() -> String {
    let script = common::repo_root().join("scripts/test-deps.sh");
    let text = fs::read_to_string(&script).expect("read scripts/test-deps.sh");
    text.lines()
        .find_map(|l| l.strip_prefix("GGML_SDIST="))
        .and_then(|spec| spec.split("==").nth(1))
        .unwrap_or_else(|| panic!("no GGML_SDIST=name==version in {}", script.display()))
        .trim()
        .to_string()
}

/// `${VGPU_CACHE}/ggml/<version>/ggml`, as `scripts/test-deps.sh ggml` leaves it.
fn ggml_sources() -> PathBuf {
    let dir = common::cache_dir().join("ggml").join(sdist_version());
    let ggml = dir.join("ggml");
    assert!(
        dir.join(".stamp").is_file() && ggml.join("src/ggml-cuda/common.cuh").is_file(),
        "no ggml sources in {}: run scripts/test-deps.sh ggml",
        dir.display()
    );
    ggml
}

fn fnv1a(h: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

struct Job {
    /// Output stem.
    name: String,
    compiler: PathBuf,
    args: Vec<String>,
    source: PathBuf,
    /// Files whose bytes key the cache besides the source (our headers).
    deps: Vec<PathBuf>,
}

fn tool_version(tool: &Path) -> Vec<u8> {
    let out = Command::new(tool)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
    out.stdout
}

/// Builds `tests/ggml/ggml_check` (cached) and returns it.
fn build() -> PathBuf {
    let ggml = ggml_sources();
    let nv = common::cuda13();
    assert!(
        nv.join("include/cccl/nv/target").is_file(),
        "{}: no CCCL headers; run scripts/test-deps.sh ggml",
        nv.display()
    );
    let nvcc = nv.join("bin/nvcc");
    let ours = common::repo_root().join("tests/ggml");
    // Beside the sources, not in them: a fresh fetch of the same sources
    // keeps what was built (every object is keyed by its inputs' bytes).
    let out_dir = common::cache_dir()
        .join("ggml")
        .join(format!("build-{}", sdist_version()));
    fs::create_dir_all(&out_dir).unwrap();

    // ggml.c includes the ggml-version.h its CMake configures.
    let version_h = out_dir.join("ggml-version.h");
    let version_text = format!(
        "#pragma once\n#define GGML_VERSION \"llama-cpp-python-{}\"\n#define GGML_COMMIT \"unknown\"\n",
        sdist_version()
    );
    if fs::read_to_string(&version_h).ok().as_deref() != Some(version_text.as_str()) {
        fs::write(&version_h, version_text).unwrap();
    }

    let inc = |p: &Path| format!("-I{}", p.display());
    // ggml's CMake: C/C++ defines, and the CUDA flags of ggml-cuda's CMakeLists.
    let defines = [
        "-DNDEBUG",
        "-D_GNU_SOURCE",
        "-D_XOPEN_SOURCE=600",
        "-DGGML_SCHED_MAX_COPIES=4",
    ];
    let mut cuda_args: Vec<String> = [
        "-std=c++17",
        "-O2",
        "-use_fast_math",
        "-extended-lambda",
        "-gencode",
        "arch=compute_90,code=compute_90",
    ]
    .iter()
    .chain(defines.iter())
    .map(|s| s.to_string())
    .collect();
    cuda_args.extend([
        inc(&ggml.join("include")),
        inc(&ggml.join("src")),
        inc(&ggml.join("src/ggml-cuda")),
        inc(&ours.join("include")),
        inc(&ours),
    ]);
    let c_args = |std: &str| -> Vec<String> {
        let mut a: Vec<String> = [std, "-O2"]
            .iter()
            .chain(defines.iter())
            .map(|s| s.to_string())
            .collect();
        a.extend([
            inc(&out_dir),
            inc(&ggml.join("include")),
            inc(&ggml.join("src")),
        ]);
        a
    };

    let mut our_deps: Vec<PathBuf> = Vec::new();
    for dir in [ours.clone(), ours.join("include")] {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "h") {
                our_deps.push(p);
            }
        }
    }
    our_deps.sort();

    let mut jobs = Vec::new();
    // Heaviest first, so two workers finish together.
    for f in OUR_FILES.iter().take(1) {
        jobs.push(Job {
            name: f.trim_end_matches(".cu").into(),
            compiler: nvcc.clone(),
            args: cuda_args.clone(),
            source: ours.join(f),
            deps: our_deps.clone(),
        });
    }
    for f in GGML_CUDA_FILES {
        jobs.push(Job {
            name: f.trim_end_matches(".cu").into(),
            compiler: nvcc.clone(),
            args: cuda_args.clone(),
            source: ggml.join("src/ggml-cuda").join(f),
            deps: vec![],
        });
    }
    for f in OUR_FILES.iter().skip(1) {
        jobs.push(Job {
            name: f.trim_end_matches(".cu").into(),
            compiler: nvcc.clone(),
            args: cuda_args.clone(),
            source: ours.join(f),
            deps: our_deps.clone(),
        });
    }
    for f in GGML_BASE_FILES {
        let cxx = f.ends_with(".cpp");
        jobs.push(Job {
            name: f.replace('.', "_"),
            compiler: PathBuf::from(if cxx { "g++" } else { "gcc" }),
            args: c_args(if cxx { "-std=c++17" } else { "-std=gnu11" }),
            source: ggml.join("src").join(f),
            deps: vec![version_h.clone()],
        });
    }

    let mut versions: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    let started = Instant::now();
    let objects: Vec<PathBuf> = jobs
        .iter()
        .map(|j| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let v = versions
                .entry(j.compiler.clone())
                .or_insert_with(|| tool_version(&j.compiler));
            fnv1a(&mut h, v);
            for a in &j.args {
                fnv1a(&mut h, a.as_bytes());
                fnv1a(&mut h, b"\0");
            }
            for p in std::iter::once(&j.source).chain(&j.deps) {
                let bytes = fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                fnv1a(&mut h, &bytes);
            }
            out_dir.join(format!("{}-{h:016x}.o", j.name))
        })
        .collect();

    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(job) = jobs.get(i) else { break };
                let obj = &objects[i];
                if obj.is_file() {
                    continue;
                }
                let t0 = Instant::now();
                let tmp = obj.with_extension(format!("o.{}", std::process::id()));
                let mut cmd = Command::new(&job.compiler);
                if job.compiler == nvcc {
                    cmd.env("PATH", path_with(&nv.join("bin")));
                }
                let out = cmd
                    .args(&job.args)
                    .arg("-c")
                    .arg(&job.source)
                    .arg("-o")
                    .arg(&tmp)
                    .output()
                    .unwrap_or_else(|e| panic!("{}: {e}", job.compiler.display()));
                if out.status.success() {
                    fs::rename(&tmp, obj).unwrap();
                    eprintln!("ggml build: {} in {:.0?}", job.name, t0.elapsed());
                } else {
                    let _ = fs::remove_file(&tmp);
                    failures.lock().unwrap().push(format!(
                        "{} {}:\n{}",
                        job.compiler.display(),
                        job.source.display(),
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for o in &objects {
        fnv1a(&mut h, o.file_name().unwrap().to_string_lossy().as_bytes());
    }
    let exe = out_dir.join(format!("ggml_check-{h:016x}"));
    if !exe.is_file() {
        let tmp = out_dir.join(format!(".ggml_check.{}", std::process::id()));
        let out = Command::new(&nvcc)
            .env("PATH", path_with(&nv.join("bin")))
            .args(["-gencode", "arch=compute_90,code=compute_90", "-o"])
            .arg(&tmp)
            .args(&objects)
            .args(["-lpthread", "-ldl", "-lm"])
            .output()
            .expect("run nvcc");
        assert!(
            out.status.success(),
            "linking ggml_check:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::rename(&tmp, &exe).unwrap();
    }
    eprintln!(
        "ggml build: {} ready after {:.0?}",
        exe.display(),
        started.elapsed()
    );
    exe
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Every check of `ggml_check` passes through vgpu. The program is built by
/// nvcc 13 with its cudart 13, which refuses a 12.x driver (the
/// h100-cuda12.2 profile) at its first call, as on a real host: there that
/// refusal is the result.
#[test]
fn ggml_cuda_kernels_match_cpu_references() {
    if !common::requires_cc((9, 0), "ggml's kernels are built as compute_90 PTX only") {
        return;
    }
    let exe = build();
    let daemon = common::Daemon::start_target();
    let out = common::run_guest_with_timeout(
        Command::new(&exe),
        &daemon,
        &[("VGPU_LOG", "warn")],
        RUN_TIMEOUT,
    );
    if let Some(h) = common::expected::host().filter(|h| !h.runs_cudart(13)) {
        assert!(
            !out.status.success() && out.stderr.contains("CUDA driver version is insufficient"),
            "cudart 13 on {}'s driver:\n{out}",
            h.profile
        );
        return;
    }
    eprintln!("{}", out.stdout);
    out.assert_success();
    let plan: Vec<&str> = out.line("checks ").split_whitespace().skip(1).collect();
    for family in FAMILIES {
        assert!(
            plan.iter().any(|c| c.starts_with(family)),
            "no {family} check in the plan {plan:?}"
        );
    }
    for name in plan {
        let line = out.line(&format!("{name} "));
        assert_eq!(common::field(line, "ok"), "1", "{name}:\n{out}");
    }
    out.line("done ok=1");
}
