//! `vgpu bench` runs against a daemon and reports every measurement (the
//! numbers themselves are for people, not for assertions).
mod common;

use common::Daemon;
use std::process::Command;

#[test]
fn bench_reports_latency_and_launch_rates() {
    let daemon = Daemon::start_emulated();
    let mut cmd = Command::new(&common::artifacts().vgpu);
    cmd.args(["bench", "--round-trips", "300", "--launches", "300"]);
    let out = common::run_guest(cmd, &daemon, &[("VGPU_LOG", "warn")]);
    out.assert_success();
    for line in [
        "raw unix ping-pong",
        "vgpu sync call (Ping)",
        "launch call (guest side)",
        "launches, batched",
        "launches, sync after each",
        "batching speed-up",
    ] {
        out.line(line);
    }
}
