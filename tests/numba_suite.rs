//! numba-cuda's own test suite, from its wheel, on the software GPU: a ratchet.
//!
//! Runs `cudadrv/` and the `cudapy/` files of [`CI_SELECTION`] through
//! `tests/py/numba_suite/run.py` (the runner behind `scripts/numba-suite.sh`:
//! one daemon, one guest process per test file, pytest with
//! `--import-mode=importlib`, numba-cuda's conftest fixture, a per-test
//! timeout) and then requires
//! * every test that is not in [`EXPECTED_FAILURES`] to pass (or be skipped by
//!   the suite itself: multiple GPUs, nvJitLink, the simulator, ...), and
//! * every test in [`EXPECTED_FAILURES`] to still fail, so that a fix forces
//!   its entries out of the list and the list only shrinks.
//!
//! Each entry names its cause, a key of `CAUSES` in
//! `tests/py/numba_suite/classify.py` (where it gets fixed, the issue asking
//! for it), and must fail for that cause: when a fix moves a test on to its
//! next problem, the entry moves to that cause's group. The whole suite is
//! `scripts/numba-suite.sh` (README).
//!
//! Needs `scripts/test-deps.sh numba numba_suite` and the built workspace.
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::process::Command;
use std::time::Duration;

/// The parts of numba-cuda's suite (under `numba/cuda/tests`) CI runs, 48
/// files, ~880 tests: all of `cudadrv/`; `cudapy/` files that finish in
/// seconds and mostly pass today (compiler, type inference, control flow,
/// libdevice math, device arrays, streams, small kernels), so that
/// regressions show; and one or two files for each cause of failure in
/// [`EXPECTED_FAILURES`] (pool allocation, illegal address and its sticky
/// aftermath, cooperative groups, bf16, `.callprototype`, IPC, ...), so that
/// fixes show. About 6 minutes of wall time on this 2-core machine while it
/// was shared (load ~10), ~2 minutes of CPU; the whole suite is ~40 minutes.
/// When fixes make these files run kernels that fail fast today, they get
/// slower: keep the run near 5 minutes.
const CI_SELECTION: &[&str] = &[
    "cudadrv",
    "cudapy/test_array.py",
    "cudapy/test_array_methods.py",
    "cudapy/test_blackscholes.py",
    "cudapy/test_compiler.py",
    "cudapy/test_cooperative_groups.py",
    "cudapy/test_bfloat16.py",
    "cudapy/test_device_array_capture.py",
    "cudapy/test_device_func.py",
    "cudapy/test_dispatcher.py",
    "cudapy/test_exception.py",
    "cudapy/test_flow_control.py",
    "cudapy/test_idiv.py",
    "cudapy/test_ipc.py",
    "cudapy/test_libdevice.py",
    "cudapy/test_localmem.py",
    "cudapy/test_mandel.py",
    "cudapy/test_stream_api.py",
    "cudapy/test_typeinfer.py",
    "cudapy/test_warning.py",
];

/// Per-test limit handed to the runner (pytest-timeout): the slowest test of
/// the selection takes ~8 s on a loaded 2-core machine.
const PER_TEST_TIMEOUT_S: u32 = 120;

/// The whole run; the runner's own timeouts end well before.
const RUN_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The tests of [`CI_SELECTION`] that fail today, grouped by cause: the key
/// of the cause in `tests/py/numba_suite/classify.py` (`CAUSES` there says
/// what breaks, which crate fixes it and which issue asks for it; the runner
/// writes each failure's key into `outcomes.tsv`), then pytest node ids
/// relative to `numba/cuda/tests`. Each must still fail, for that cause.
const EXPECTED_FAILURES: &[(&str, &[&str])] = &[
    // mapped pinned host memory: cuMemHostGetDevicePointer NOT_SUPPORTED, CAN_MAP_HOST_MEMORY 0
    // ("cannot map host memory"). Fix: vgpu-cuda (host_memory); issue 15.
    (
        "mapped-host",
        &[
            "cudadrv/test_cuda_memory.py::TestCudaMemory::test_host_alloc",
            "cudadrv/test_cuda_memory.py::TestCudaMemory::test_pinned_memory",
            "cudadrv/test_deallocations.py::TestDeallocation::test_del_mapped_contextmanager",
            "cudadrv/test_deallocations.py::TestDeallocation::test_del_mapped_memory",
            "cudadrv/test_host_alloc.py::TestHostAlloc::test_host_alloc_driver",
            "cudadrv/test_host_alloc.py::TestHostAlloc::test_host_alloc_mapped",
            "cudadrv/test_host_alloc.py::TestHostAlloc::test_host_operators",
            "cudapy/test_array.py::TestCudaArray::test_array_like_1d",
            "cudapy/test_array.py::TestCudaArray::test_array_like_1d_f",
            "cudapy/test_array.py::TestCudaArray::test_array_like_1d_view",
            "cudapy/test_array.py::TestCudaArray::test_array_like_1d_view_f",
            "cudapy/test_array.py::TestCudaArray::test_array_like_2d",
            "cudapy/test_array.py::TestCudaArray::test_array_like_2d_f",
            "cudapy/test_array.py::TestCudaArray::test_array_like_2d_f_transpose",
            "cudapy/test_array.py::TestCudaArray::test_array_like_2d_transpose",
            "cudapy/test_array.py::TestCudaArray::test_array_like_2d_view",
            "cudapy/test_array.py::TestCudaArray::test_array_like_2d_view_f",
            "cudapy/test_array.py::TestCudaArray::test_array_like_2d_view_f_transpose",
            "cudapy/test_array.py::TestCudaArray::test_array_like_2d_view_transpose_device",
            "cudapy/test_array.py::TestCudaArray::test_array_like_3d",
            "cudapy/test_array.py::TestCudaArray::test_array_like_3d_f",
            "cudapy/test_warning.py::TestWarnings::test_nowarn_on_mapped_array",
        ],
    ),
    // managed memory: cuMemAllocManaged NOT_SUPPORTED. Fix: vgpu-cuda + vgpu-emu; issue 15.
    (
        "managed",
        &[
            "cudadrv/test_cuda_memory.py::TestCudaMemory::test_managed_memory",
            "cudadrv/test_deallocations.py::TestDeallocation::test_del_managed_memory",
            "cudadrv/test_managed_alloc.py::TestManagedAlloc::test_managed_alloc_driver_host_attach",
            "cudadrv/test_managed_alloc.py::TestManagedAlloc::test_managed_alloc_driver_undersubscribe",
            "cudadrv/test_managed_alloc.py::TestManagedAlloc::test_managed_array_attach_global",
            "cudadrv/test_managed_alloc.py::TestManagedAlloc::test_managed_array_attach_host",
            "cudapy/test_warning.py::TestWarnings::test_nowarn_on_managed_array",
        ],
    ),
    // IPC: cuIpcGetMemHandle / cuIpcOpenMemHandle. Fix: vgpu-cuda + vgpu-host; issue 15.
    (
        "ipc",
        &[
            "cudapy/test_ipc.py::TestIpcMemory::test_ipc_array",
            "cudapy/test_ipc.py::TestIpcMemory::test_ipc_handle",
            "cudapy/test_ipc.py::TestIpcMemory::test_ipc_handle_serialization",
            "cudapy/test_ipc.py::TestIpcStaged::test_ipc_array",
            "cudapy/test_ipc.py::TestIpcStaged::test_staged",
        ],
    ),
    // PTX the parser rejects: other (a .func call with another argument count, ...). Fix:
    // vgpu-ptx (parser); issue 15.
    (
        "ptx-parse-other",
        &[
            "cudapy/test_device_func.py::TestDeclareDeviceCABI::test_declare_device_cabi_pointer_return",
            "cudapy/test_device_func.py::TestDeclareDeviceCABI::test_declare_device_cabi_void_return",
        ],
    ),
    // PTX instruction the interpreter cannot execute (bf16 / f16 arithmetic, ...): the launch
    // fails, the error surfaces at the next copy. Fix: vgpu-ptx (interpreter); issue 15.
    (
        "ptx-unsupported-op",
        &[
            "cudadrv/test_cuda_driver.py::TestAcceleratedArchitecture::test_device_arch_specific",
        ],
    ),
    // graphs / stream capture: cuStreamBeginCapture NOT_SUPPORTED. Fix: vgpu-cuda + vgpu-host;
    // issue 10.
    (
        "graphs",
        &[
            "cudadrv/test_cuda_driver.py::TestCudaDriver::test_cuda_core_graph_builder_launch_user_facing",
        ],
    ),
    // register count: CU_FUNC_ATTRIBUTE_NUM_REGS is a fixed 32 and max-register JIT options are
    // not honoured. Fix: vgpu-emu (function attributes, cuLink*); issue 15.
    (
        "num-regs",
        &[
            "cudadrv/test_linker.py::TestLinker::test_set_registers_no_max",
        ],
    ),
    // another driver call returns NOT_SUPPORTED. Fix: vgpu-cuda; issue 15.
    (
        "not-supported-other",
        &[
            "cudapy/test_cooperative_groups.py::TestCudaCooperativeGroups::test_false_cooperative_doesnt_link_cudadevrt",
        ],
    ),
    // the venv has no nvJitLink on purpose (numba must link PTX through cuLink*), so numba's
    // first link warns "cuda.bindings.nvjitlink is not available" and a test that expects no
    // warning fails. Fix: environment (vgpu-emu if it ever links LTO-IR); issue 15.
    (
        "nvjitlink-warning",
        &[
            "cudapy/test_warning.py::TestWarnings::test_efficient_launch_configuration",
        ],
    ),
];

/// One row of the runner's `outcomes.tsv`.
struct Outcome {
    outcome: String,
    message: String,
    location: String,
    host: String,
    /// The cause key the runner classified a failure under ("" if it passed).
    cause: String,
}

impl Outcome {
    /// The message, then where it was raised and what the daemon logged.
    fn detail(&self) -> String {
        let mut d = self.message.clone();
        if !self.location.is_empty() {
            write!(d, "\n    at {}", self.location).unwrap();
        }
        if !self.host.is_empty() {
            write!(d, "\n    host: {}", self.host).unwrap();
        }
        d
    }
}

const FAILED: &[&str] = &["failed", "error", "timeout", "crashed", "xpassed"];
const OK: &[&str] = &["passed", "skipped", "xfailed"];

#[test]
fn numba_cuda_suite_ci_selection() {
    let py = common::cache_dir().join("venv-numba/bin/python");
    let probe = Command::new(&py)
        .args(["-c", "import numba_cuda, pytest, pytest_timeout"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "no numba venv with pytest at {}: run scripts/test-deps.sh numba numba_suite ({probe:?})",
        py.display()
    );

    let expected = expected_failures();
    // Kept after the run (the runner starts it afresh each time): its
    // summary, logs and outcomes are what a failure is investigated with.
    let out_dir = common::artifacts().dir.join("numba-suite-ci");
    let mut cmd = Command::new(&py);
    cmd.arg(common::repo_root().join("tests/py/numba_suite/run.py"))
        .arg("--out")
        .arg(&out_dir)
        .arg("--vgpu")
        .arg(&common::artifacts().vgpu)
        .arg(format!("--timeout={PER_TEST_TIMEOUT_S}"))
        .args(CI_SELECTION)
        .env_remove("VGPU_HOST");
    let run = common::run_with_timeout(cmd, RUN_TIMEOUT);
    // 0: all passed, 1: some did not; anything else: the runner failed.
    assert!(
        matches!(run.status.code(), Some(0 | 1)),
        "the numba-suite runner failed:\n{run}"
    );
    let summary = fs::read_to_string(out_dir.join("summary.txt")).unwrap_or_default();
    let outcomes = read_outcomes(&out_dir.join("outcomes.tsv"));

    let mut problems = String::new();
    for line in summary.lines().filter(|l| l.starts_with("DAEMON:")) {
        writeln!(problems, "{line}").unwrap();
    }
    // A part that collected nothing, or skipped all, would pass unnoticed.
    for sel in CI_SELECTION {
        let prefix = format!("{sel}/");
        let ran = outcomes
            .iter()
            .filter(|(id, o)| {
                (id.starts_with(&prefix) || id.split("::").next() == Some(sel))
                    && o.outcome != "skipped"
            })
            .count();
        if ran == 0 {
            writeln!(problems, "{sel}: no test ran").unwrap();
        }
    }
    for (id, o) in &outcomes {
        let now = o.outcome.as_str();
        match expected.get(id.as_str()) {
            None if OK.contains(&now) => {}
            Some(cause) if FAILED.contains(&now) && o.cause == *cause => {}
            None => writeln!(
                problems,
                "NEW FAILURE [{}] {id}: {now}: {}",
                o.cause,
                o.detail()
            )
            .unwrap(),
            Some(cause) if FAILED.contains(&now) => writeln!(
                problems,
                "CAUSE CHANGED {id}: listed under \"{cause}\", now fails as \"{}\": {}",
                o.cause,
                o.detail()
            )
            .unwrap(),
            Some(cause) => writeln!(
                problems,
                "NOW {now} (remove it from EXPECTED_FAILURES \"{cause}\"): {id}"
            )
            .unwrap(),
        }
    }
    for (id, cause) in &expected {
        if !outcomes.contains_key(*id) {
            writeln!(
                problems,
                "NOT RUN (stale EXPECTED_FAILURES entry under \"{cause}\"): {id}"
            )
            .unwrap();
        }
    }
    assert!(
        problems.is_empty(),
        "numba-cuda suite ratchet:\n{problems}\nThe run is in {dir} (summary.txt, logs/); \
         EXPECTED_FAILURES as this run would have it:\n    {py} \
         tests/py/numba_suite/classify.py --rust {dir}\n--- runner ---\n{}\n--- summary ---\n{summary}",
        run.stdout,
        dir = out_dir.display(),
        py = py.display(),
    );
}

/// [`EXPECTED_FAILURES`] by node id; an id listed twice is a mistake.
fn expected_failures() -> BTreeMap<&'static str, &'static str> {
    let mut m = BTreeMap::new();
    for (cause, ids) in EXPECTED_FAILURES {
        for id in *ids {
            assert!(
                m.insert(*id, *cause).is_none(),
                "{id} is listed twice in EXPECTED_FAILURES"
            );
        }
    }
    m
}

/// `outcomes.tsv`: node id, outcome, seconds, message, location, host log,
/// driver calls named, cause key.
fn read_outcomes(path: &std::path::Path) -> BTreeMap<String, Outcome> {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (the runner wrote no outcomes)", path.display()));
    text.lines()
        .map(|line| {
            let mut cells = line.split('\t').map(str::to_string);
            let mut next = || cells.next().unwrap_or_default();
            let id = next();
            let outcome = next();
            let _seconds = next();
            let (message, location, host, _markers) = (next(), next(), next(), next());
            let cause = next();
            (
                id,
                Outcome {
                    outcome,
                    message,
                    location,
                    host,
                    cause,
                },
            )
        })
        .collect()
}
