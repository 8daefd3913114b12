//! A cold host: the driver takes seconds to initialize (the software GPU's
//! `VGPU_EMU_INIT_DELAY_MS` plays it). The guest waits for the host's
//! inventory up to `VGPU_INIT_TIMEOUT` (default 60 s), saying "host is
//! initializing" meanwhile; past that deadline cuInit reports no device,
//! and the log says why; asked again within as long, it answers the same
//! at once.
mod common;

use common::Daemon;
use std::process::Command;
use std::time::Duration;

fn cold_daemon(delay_ms: &str) -> Daemon {
    Daemon::start_with_env(&[], &[("VGPU_EMU_INIT_DELAY_MS", delay_ms)])
}

#[test]
fn a_guest_waits_for_a_cold_host() {
    if !common::requires_software_gpu("the init delay is the software GPU's knob") {
        return;
    }
    let d = cold_daemon("3000");
    let exe = common::compile_c("device_identity.c", &[]);
    let out = common::run_guest(Command::new(exe), &d, &[]);
    out.assert_success();
    let line = out.line("identity ");
    assert!(common::is_gpu_uuid(&common::field(line, "uuid")), "{out}");
    assert!(
        out.stderr.contains("is initializing") && out.stderr.contains("VGPU_INIT_TIMEOUT"),
        "no word of the wait:\n{out}"
    );
    // Each of the two connections (CUDA and NVML share one) waited once.
    assert!(out.elapsed >= Duration::from_millis(2900), "{out}");
}

#[test]
fn past_the_deadline_cuinit_reports_no_device() {
    if !common::requires_software_gpu("the init delay is the software GPU's knob") {
        return;
    }
    let d = cold_daemon("5000");
    let exe = common::compile_c("no_daemon.c", &[]);
    let out = common::run_guest(Command::new(exe), &d, &[("VGPU_INIT_TIMEOUT", "1")]);
    out.assert_success();
    let line = out.line("no_daemon ");
    for (key, want) in [
        ("cuInit", "100"),
        ("cuInit_again", "100"),
        ("nvmlInit_v2", "9"),
    ] {
        assert_eq!(common::field(line, key), want, "{key}:\n{out}");
    }
    let ms = |key| common::field(line, key).parse::<f64>().unwrap();
    assert!((900.0..4000.0).contains(&ms("cuInit_ms")), "{out}");
    // Asked again at once, the answer is the same without another wait
    // (and without another cold worker on the host).
    assert!(ms("cuInit_again_ms") < 500.0, "{out}");
    assert!(out.stderr.contains("not asked again yet"), "{out}");
    assert!(
        out.stderr
            .contains("did not finish initializing its GPU driver within 1 s"),
        "no reason in the log:\n{out}"
    );
    assert!(out.stderr.contains("reporting no CUDA device"), "{out}");
}

#[test]
fn a_malformed_init_timeout_is_no_device_with_the_reason() {
    let d = Daemon::start(&[]);
    let exe = common::compile_c("no_daemon.c", &[]);
    let out = common::run_guest(Command::new(exe), &d, &[("VGPU_INIT_TIMEOUT", "soon")]);
    let line = out.line("no_daemon ");
    assert_eq!(common::field(line, "cuInit"), "100", "{out}");
    assert!(out.stderr.contains("VGPU_INIT_TIMEOUT `soon`"), "{out}");
}
