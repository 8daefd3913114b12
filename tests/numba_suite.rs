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
//! Each entry names its cause ([`Cause`]: where it gets fixed and the issue
//! asking for it). The whole suite is `scripts/numba-suite.sh` (README).
//!
//! Needs `scripts/test-deps.sh numba numba_suite` and the built workspace.
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::process::Command;
use std::time::Duration;

/// The parts of numba-cuda's suite (under `numba/cuda/tests`) CI runs; chosen
/// so the run takes about 5 minutes on 2 cores (README has the timings).
const CI_SELECTION: &[&str] = &["cudadrv"];

/// Per-test limit handed to the runner (pytest-timeout): a slow kernel of
/// the selection takes ~20 s on a loaded 2-core machine.
const PER_TEST_TIMEOUT_S: u32 = 120;

/// The whole run; the runner's own timeouts end well before.
const RUN_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Why a test of the selection fails today. Doc comments say what breaks,
/// where it gets fixed and which issue asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cause {
    /// `cuMemAllocFromPoolAsync` returns CUDA_ERROR_NOT_SUPPORTED while the
    /// device reports memory-pool support; numba 0.30 (cuda.core) allocates
    /// every implicit host-array transfer from the pool. vgpu-cuda does not
    /// forward the stream-ordered allocator; issue 15.
    PoolAllocation,
    /// `cuMemHostGetDevicePointer` / "cannot map host memory": guest memory
    /// cannot be mapped into the remote GPU (vgpu-cuda host_memory,
    /// `CAN_MAP_HOST_MEMORY` 0); issue 15.
    MappedHostMemory,
    /// `cuMemAllocManaged` is not supported (vgpu-cuda, vgpu-emu); issue 15.
    ManagedMemory,
    /// `cuProfilerStart`/`cuProfilerStop` are not exported (vgpu-cuda); issue 15.
    Profiler,
    /// `cuStreamBeginCapture` (cuda.core's graph builder): graphs, issue 10.
    StreamCapture,
    /// `CU_FUNC_ATTRIBUTE_NUM_REGS` is a fixed 32 and max-register JIT
    /// options are not honoured (vgpu-emu); issue 15.
    RegisterCount,
}

use Cause::*;

/// The tests of [`CI_SELECTION`] that fail today, by cause (pytest node ids
/// relative to `numba/cuda/tests`).
const EXPECTED_FAILURES: &[(Cause, &[&str])] = &[];

/// One row of the runner's `outcomes.tsv`.
struct Outcome {
    outcome: String,
    message: String,
    location: String,
    host: String,
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
    let out_dir = common::TempDir::new("numba-suite");
    let mut cmd = Command::new(&py);
    cmd.arg(common::repo_root().join("tests/py/numba_suite/run.py"))
        .arg("--out")
        .arg(out_dir.path())
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
    let summary = fs::read_to_string(out_dir.path().join("summary.txt")).unwrap_or_default();
    let outcomes = read_outcomes(&out_dir.path().join("outcomes.tsv"));

    let mut problems = String::new();
    for line in summary.lines().filter(|l| l.starts_with("DAEMON:")) {
        writeln!(problems, "{line}").unwrap();
    }
    for sel in CI_SELECTION {
        let prefix = format!("{sel}/");
        let passed = outcomes
            .iter()
            .filter(|(id, o)| {
                (id.starts_with(&prefix) || id.split("::").next() == Some(sel))
                    && o.outcome == "passed"
            })
            .count();
        if passed == 0 {
            writeln!(problems, "{sel}: no test passed (did it run at all?)").unwrap();
        }
    }
    for (id, o) in &outcomes {
        match (expected.get(id.as_str()), o.outcome.as_str()) {
            (None, ok) if OK.contains(&ok) => {}
            (Some(_), bad) if FAILED.contains(&bad) => {}
            (None, bad) => writeln!(
                problems,
                "NEW FAILURE {id}: {bad}: {}\n    at {}\n    host: {}",
                o.message, o.location, o.host
            )
            .unwrap(),
            (Some(cause), now) => writeln!(
                problems,
                "NOW {now} (remove it from EXPECTED_FAILURES, {cause:?}): {id}"
            )
            .unwrap(),
        }
    }
    for (id, cause) in &expected {
        if !outcomes.contains_key(*id) {
            writeln!(
                problems,
                "NOT RUN (stale EXPECTED_FAILURES entry, {cause:?}): {id}"
            )
            .unwrap();
        }
    }
    assert!(
        problems.is_empty(),
        "numba-cuda suite ratchet:\n{problems}\n--- runner ---\n{}\n--- summary ---\n{summary}",
        run.stdout
    );
}

/// [`EXPECTED_FAILURES`] by node id; an id listed twice is a mistake.
fn expected_failures() -> BTreeMap<&'static str, Cause> {
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

/// `outcomes.tsv`: node id, outcome, seconds, message, location, host log.
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
            let (message, location, host) = (next(), next(), next());
            (
                id,
                Outcome {
                    outcome,
                    message,
                    location,
                    host,
                },
            )
        })
        .collect()
}
