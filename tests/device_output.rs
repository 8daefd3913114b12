//! Device output end to end: `tests/cuda/device_output.cu`, compiled by the
//! pinned nvcc to PTX, run unmodified through the shims on the tests'
//! daemon. A kernel's `printf` text reaches the guest process's stdout, and
//! a failed device assert's message its stderr, at the synchronization that
//! flushes them (in order with the program's own output), as on a local
//! GPU; a failed assert is CUDA_ERROR_ASSERT (cudaErrorAssert, 710), sticky;
//! one guest's output never reaches another; and a flood of output beyond
//! the host's bound is cut, said so, and hangs nothing.
mod common;

use common::{Daemon, GuestOutput};
use std::path::PathBuf;
use std::process::Command;

/// device_output.cu as PTX only (compute_90) with static cudart.
fn program() -> PathBuf {
    common::nvcc_build("device_output.cu", "ptx-static")
}

/// The program built by nvcc 13 is refused by cudart 13 on a 12.x host
/// driver (35) at its first call: on such a profile that is the result.
fn refused_by_cudart_13(out: &GuestOutput) -> bool {
    match common::expected::host() {
        Some(h) if !h.runs_cudart(13) => {
            assert!(
                !out.status.success()
                    && out
                        .stderr
                        .contains(": 35 (CUDA driver version is insufficient"),
                "{out}"
            );
            true
        }
        _ => false,
    }
}

fn run(daemon: &Daemon, args: &[&str]) -> GuestOutput {
    let mut cmd = Command::new(program());
    cmd.args(args);
    common::run_guest(cmd, daemon, &[("VGPU_LOG", "warn")])
}

/// Where `line` is in `lines`, or a panic showing the output.
#[track_caller]
fn position(lines: &[&str], line: &str, out: &GuestOutput) -> usize {
    lines
        .iter()
        .position(|l| *l == line)
        .unwrap_or_else(|| panic!("no line {line:?}:\n{out}"))
}

#[test]
fn printf_reaches_stdout_at_the_synchronization() {
    let daemon = Daemon::start_target();
    let out = run(&daemon, &["printf"]);
    if refused_by_cudart_13(&out) {
        return;
    }
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    // The first kernel: 3 blocks of 5 threads, one line each, in whatever
    // order the device ran them.
    let mut dev: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("dev "))
        .collect();
    let mut expected: Vec<String> = (0..3)
        .flat_map(|b: u32| {
            (0..5u32).map(move |t| {
                format!(
                    "dev b={b} t={t} v={} h={:x}",
                    40 + b * 1000 + t * 7,
                    (b << 8) | t
                )
            })
        })
        .collect();
    dev.sort_unstable();
    expected.sort_unstable();
    assert_eq!(dev, expected, "{out}");
    // All of them between the program's lines before and after the
    // synchronization, none before the launch's host line.
    let launched = position(&lines, "host launched", &out);
    let synced = position(&lines, "host after sync=0", &out);
    assert!(position(&lines, "host before", &out) < launched, "{out}");
    for d in &dev {
        let i = position(&lines, d, &out);
        assert!(launched < i && i < synced, "{d:?} out of place:\n{out}");
    }
    // A blocking copy flushes the second kernel's lines.
    let copying = position(&lines, "host copying", &out);
    let copied = position(&lines, "host after copy=0 values=0,1,4,9", &out);
    for i in 0..4 {
        let d = position(&lines, &format!("dev2 i={i} sq={}", i * i), &out);
        assert!(copying < d && d < copied, "dev2 i={i} out of place:\n{out}");
    }
    assert_eq!(lines.len(), 5 + 15 + 4, "{out}");
    // Nothing of it on stderr.
    assert!(!out.stderr.contains("dev"), "{out}");
}

#[test]
fn a_failed_assert_prints_cudas_message_and_is_a_sticky_710() {
    let daemon = Daemon::start_target();
    let out = run(&daemon, &["assert"]);
    if refused_by_cudart_13(&out) {
        return;
    }
    out.assert_success();
    // cudaErrorAssert, from the synchronization and every call after it.
    assert_eq!(
        common::field(out.line("assert sync="), "sync"),
        "710",
        "{out}"
    );
    assert_eq!(
        common::field(out.line("assert malloc="), "malloc"),
        "710",
        "{out}"
    );
    assert_eq!(
        common::field(out.line("assert again="), "again"),
        "710",
        "{out}"
    );
    // One thread failed: thread 3 of block 0, with CUDA's message.
    let asserts: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("Assertion"))
        .collect();
    assert_eq!(asserts.len(), 1, "{out}");
    let a = asserts[0];
    assert!(
        a.contains("device_output.cu:")
            && a.contains("check(int)")
            && a.ends_with(
                ": block: [0,0,0], thread: [3,0,0] Assertion `threadIdx.x < limit` failed."
            ),
        "{a:?}"
    );
    assert!(!out.stdout.contains("Assertion"), "{out}");
}

#[test]
fn one_guests_output_never_reaches_another() {
    let daemon = Daemon::start_target();
    let guests: Vec<_> = ["A", "B", "C"]
        .into_iter()
        .map(|tag| {
            let mut cmd = Command::new(program());
            cmd.args(["tag", tag]);
            let host = daemon.host_env();
            std::thread::spawn(move || {
                (
                    tag,
                    common::run_guest_at(cmd, &host, &[("VGPU_LOG", "warn")]),
                )
            })
        })
        .collect();
    for g in guests {
        let (tag, out) = g.join().unwrap();
        if refused_by_cudart_13(&out) {
            continue;
        }
        out.assert_success();
        out.line("tag done");
        let mut mine: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("tag "))
            .collect();
        mine.retain(|l| *l != "tag done");
        let mut expected: Vec<String> = (0..20)
            .flat_map(|r| (0..8).map(move |t| format!("tag {tag} r={r} t={t}")))
            .collect();
        mine.sort_unstable();
        expected.sort_unstable();
        assert_eq!(mine, expected, "guest {tag}:\n{out}");
    }
}

#[test]
fn a_flood_is_cut_at_the_hosts_bound_and_hangs_nothing() {
    const LIMIT: usize = 64 << 10;
    let daemon = Daemon::start_with_env(&[], &[("VGPU_DEVICE_OUTPUT_LIMIT", "65536")]);
    // 4 launches of 64 × 256 threads, ~50 bytes a line: about 3 MB.
    let out = run(&daemon, &["flood", "4"]);
    if refused_by_cudart_13(&out) {
        return;
    }
    out.assert_success();
    assert_eq!(common::field(out.line("flood sync="), "sync"), "0", "{out}");
    assert_eq!(common::field(out.line("flood done="), "done"), "0", "{out}");
    let flood: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("flood l="))
        .collect();
    // The bound's worth arrived, in whole lines, and output after the next
    // synchronization is whole again.
    let bytes: usize = flood.iter().map(|l| l.len() + 1).sum();
    assert!(
        bytes > LIMIT - 100 && bytes <= LIMIT,
        "{bytes} bytes of flood"
    );
    assert!(
        flood.iter().all(|l| l.ends_with(" ......................")),
        "a line cut short"
    );
    out.line("after flood");
    assert!(
        out.stderr.contains("device output for fd 1 were dropped"),
        "{}",
        out.stderr
    );
    let mut d = daemon;
    d.assert_alive();
}
