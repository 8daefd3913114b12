//! Stream capture and CUDA graphs end to end: `tests/cuda/graphs.cu`
//! compiled by the pinned nvcc (PTX-only and SASS+PTX, static and shared
//! cudart, as `tests/kernels.rs` builds its program), run unmodified
//! through the shims on the software GPU. The program checks every number
//! on the CPU: captures in the three modes (and the mode rules, with a
//! second thread), fork/join across two streams, a 4-node graph replayed
//! 100 times, re-capture plus `cudaGraphExecUpdate`, an explicit memset →
//! kernel → device-to-host copy → host node graph (the host node sees the
//! copied data), `cudaGraphExecKernelNodeSetParams` and enable flags, a
//! 256-kernel graph replayed 50 times, an illegal sync during capture (the
//! stream usable afterwards), and graph memory from `cudaMallocAsync` in a
//! capture.
mod common;

use common::Daemon;
use std::process::Command;

const CHECKS: &[&str] = &[
    "model",
    "mode_global",
    "mode_thread_local",
    "mode_relaxed",
    "modes",
    "fork_join",
    "replay100",
    "update",
    "host_node",
    "set_params",
    "attributes",
    "k256",
    "illegal_sync",
    "mem_nodes",
    "done",
];

fn check_all(variant: &str) {
    let daemon = Daemon::start_emulated();
    let dir = common::TempDir::new("graphs");
    let mut cmd = Command::new(common::nvcc_build("graphs.cu", variant));
    cmd.arg("all").arg(dir.path());
    let out = common::run_guest(cmd, &daemon, &[("VGPU_LOG", "warn")]);
    out.assert_success();
    for name in CHECKS {
        out.line(&format!("{name} ok=1"));
    }
    let shape = common::fields(out.line("fork_join nodes="));
    assert_eq!(
        (shape["nodes"].as_str(), shape["roots"].as_str()),
        ("5", "1")
    );
}

#[test]
fn ptx_only_static_cudart() {
    check_all("ptx-static");
}

#[test]
fn ptx_only_shared_cudart() {
    check_all("ptx-shared");
}

#[test]
fn sass_and_ptx_static_cudart() {
    check_all("sass-static");
}

#[test]
fn sass_and_ptx_shared_cudart() {
    check_all("sass-shared");
}

/// `cudaGraphDebugDotPrint` of a captured fill → scale graph: both kernels,
/// by name, one edge between them, in the driver's node naming.
#[test]
fn dot_file_describes_the_captured_graph() {
    let daemon = Daemon::start_emulated();
    let dir = common::TempDir::new("graphdot");
    let mut cmd = Command::new(common::nvcc_build("graphs.cu", "ptx-static"));
    cmd.arg("model").arg(dir.path());
    let out = common::run_guest(cmd, &daemon, &[("VGPU_LOG", "warn")]);
    out.assert_success();
    out.line("model ok=1");
    let dot = std::fs::read_to_string(dir.path().join("graph.dot")).expect("graph.dot");
    assert!(dot.starts_with("digraph dot {"), "{dot}");
    assert_eq!(dot.matches("KERNEL").count(), 2, "{dot}");
    assert!(dot.contains("fill") && dot.contains("scale"), "{dot}");
    assert_eq!(dot.matches(" -> ").count(), 1, "{dot}");
    assert!(
        dot.contains("grid <<<8,1,1>>> block <<<128,1,1>>>"),
        "{dot}"
    );
}

/// A graph through NVIDIA's cuda-bindings driver module (the numba venv of
/// `scripts/test-deps.sh numba`): a captured memset/memset/copy graph
/// replayed, and an explicit memset → copy graph with a memset value set
/// in the executable graph. The script checks the numbers.
#[test]
fn cuda_bindings_graph() {
    let py = common::cache_dir().join("venv-numba/bin/python");
    assert!(
        py.is_file(),
        "no numba venv at {}: run scripts/test-deps.sh numba",
        py.display()
    );
    let daemon = Daemon::start_emulated();
    let mut cmd = Command::new(py);
    cmd.arg(common::repo_root().join("tests/py/cuda_bindings_graph.py"))
        .env_remove("CUDA_HOME")
        .env_remove("CUDA_PATH");
    let out = common::run_guest_with_timeout(
        cmd,
        &daemon,
        &[("PYTHONDONTWRITEBYTECODE", "1"), ("VGPU_LOG", "warn")],
        std::time::Duration::from_secs(120),
    );
    out.assert_success();
    for (key, want) in [
        ("capturing", "True"),
        ("captured_nodes", "3"),
        ("captured_types", "MEMSET,MEMSET,MEMCPY"),
        ("captured_replay_equal", "True"),
        ("explicit_deps", "1"),
        ("explicit_first_equal", "True"),
        ("explicit_set_params_equal", "True"),
        ("graph_node_value", "5"),
        ("done", "ok"),
    ] {
        let line = out.line(&format!("{key}="));
        assert_eq!(&line[key.len() + 1..], want, "{out}");
    }
}

/// A graph launch is one message whatever the graph's size: the program's
/// 256-kernel graph, replayed 50 times, reaches the worker as one
/// `GraphInstantiate` and 50 `GraphLaunch` frames — captured launches
/// send nothing (the worker's trace log names every frame it serves).
#[test]
fn a_graph_launch_is_one_message() {
    let daemon = Daemon::start_with_env(&[], &[("VGPU_LOG", "trace")]);
    let mut cmd = Command::new(common::nvcc_build("graphs.cu", "ptx-static"));
    cmd.arg("k256");
    let out = common::run_guest(cmd, &daemon, &[("VGPU_LOG", "warn")]);
    out.assert_success();
    out.line("k256 ok=1");
    daemon.wait_log(&["guest disconnected"], std::time::Duration::from_secs(10));
    let log = daemon.logs();
    let served = |op: &str| {
        log.lines()
            .filter(|l| l.contains(&format!(": {op} seq ")))
            .count()
    };
    assert_eq!(served("GraphInstantiate"), 1, "{log}");
    assert_eq!(served("GraphLaunch"), 50, "{log}");
    assert_eq!(served("LaunchKernel"), 0, "{log}");
}
