//! With `VGPU_HOST` pointing at an endpoint with no daemon, the shims fail fast
//! and cleanly: cuInit = 100 (CUDA_ERROR_NO_DEVICE), nvmlInit_v2 = 9
//! (NVML_ERROR_DRIVER_NOT_LOADED), each within 5 s, no crash, no hang.
mod common;

use std::process::Command;
use std::time::Duration;

fn check(vgpu_host: &str) {
    let exe = common::compile_c("no_daemon.c", &[]);
    let out = common::run_guest_at(Command::new(exe), vgpu_host, &[]);
    let line = out.line("no_daemon ");
    for (key, want) in [
        ("cuInit", "100"),
        ("cuInit_again", "100"),
        ("nvmlInit_v2", "9"),
        ("nvmlInit_again", "9"),
    ] {
        assert_eq!(common::field(line, key), want, "{key}:\n{out}");
    }
    for key in [
        "cuInit_ms",
        "cuInit_again_ms",
        "nvmlInit_ms",
        "nvmlInit_again_ms",
    ] {
        let ms: f64 = common::field(line, key).parse().unwrap();
        assert!(ms <= 5000.0, "{key} = {ms} ms:\n{out}");
    }
    out.assert_success();
    assert!(
        out.elapsed < Duration::from_secs(25),
        "took {:?}:\n{out}",
        out.elapsed
    );
}

#[test]
fn unix_socket_without_daemon() {
    let dir = common::TempDir::new("nohost");
    let sock = dir.path().join("nobody.sock");
    check(&format!("unix:{}", sock.display()));
}

#[test]
fn unix_socket_file_nobody_listens_on() {
    // A stale socket file (daemon died): connect() gets ECONNREFUSED.
    let dir = common::TempDir::new("stale");
    let sock = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    check(&format!("unix:{}", sock.display()));
}

#[test]
fn tcp_port_without_daemon() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    check(&format!("tcp:127.0.0.1:{port}"));
}
