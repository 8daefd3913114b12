//! `vgpu bench` runs against a daemon and reports every measurement (the
//! timings themselves are for people, not for assertions; the message
//! counts are facts of the protocol and are checked).
mod common;

use common::Daemon;
use std::process::Command;

/// Small enough for CI; the llama.cpp runs take minutes and have tests of
/// their own (tests/llama.rs).
const QUICK: [&str; 9] = [
    "bench",
    "--round-trips",
    "300",
    "--launches",
    "300",
    "--graph-launches",
    "5",
    "--no-llama",
    "--graph-kernels=256",
];

/// The number after `label` up to the first space.
fn number_after(line: &str, label: &str) -> usize {
    let at = line
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {line:?}"))
        + label.len();
    let n = line[at..].trim_start().split(' ').next().unwrap();
    n.parse()
        .unwrap_or_else(|_| panic!("not a count after {label:?}: {line:?}"))
}

#[test]
fn bench_reports_latency_and_launch_rates() {
    let daemon = Daemon::start_emulated();
    let mut cmd = Command::new(&common::artifacts().vgpu);
    cmd.args(QUICK);
    let out = common::run_guest(cmd, &daemon, &[("VGPU_LOG", "warn")]);
    out.assert_success();
    for line in [
        "machine: ",
        "host: emulated",
        "raw unix ping-pong",
        "vgpu sync call (Ping)",
        "memcpy (64 MiB)",
        "raw unix stream",
        "raw tcp loopback stream",
        "HtoD 64 MiB, unix+shm",
        "DtoH 64 MiB, unix+shm",
        "HtoD 64 MiB, unix, no shm",
        "DtoH 64 MiB, unix, no shm",
        "local call (cuCtxGetCurrent)",
        "launch enqueue (guest side)",
        "launch call in a long burst",
        "launches, batched",
        "launches, sync after each",
        "batching speed-up",
        "4 threads, launch call",
        "4 threads, batched",
        "4 threads, sync call",
        "graph launch call",
        "graph launch + sync",
        "interpreter, 1 thread",
        "llama.cpp generation:         skipped: --no-llama",
    ] {
        out.line(line);
    }
    // A single-phase graph is one message whatever its size (issue 10);
    // each of its kernels launched alone is one message.
    let m = out.line("graph launch messages:");
    assert_eq!(number_after(m, "graph launch messages:"), 1, "{m}");
    assert!(m.contains("(GraphLaunch,"), "{m}");
    assert_eq!(number_after(m, "256 launches one by one:"), 256, "{m}");
}

#[test]
fn bench_tsv_records() {
    let daemon = Daemon::start_emulated();
    let mut cmd = Command::new(&common::artifacts().vgpu);
    cmd.args(QUICK).arg("--tsv");
    let out = common::run_guest(cmd, &daemon, &[("VGPU_LOG", "warn")]);
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "name\tvalue\tunit\tnote", "{out}");
    assert!(lines.iter().all(|l| l.split('\t').count() == 4), "{out}");
    assert!(lines.contains(&"graph_launch_messages\t1\t\t"), "{out}");
    assert!(
        lines.contains(&"graph_one_by_one_messages\t256\t\t"),
        "{out}"
    );
    assert!(lines.contains(&"host_driver\temulated\t\t"), "{out}");
    assert!(lines.contains(&"llama\t\t\tskipped: --no-llama"), "{out}");
    // The lines for people went to stderr.
    assert!(out.stderr.contains("graph launch messages:"), "{out}");
}
