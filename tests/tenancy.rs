//! Guest-side tenancy (docs/security.md): a setuid program that loads the
//! shim ignores every `VGPU_*` setting and logs to no file.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `nobody`: the user the setuid program is started as (its real uid),
/// so the kernel sets AT_SECURE.
const NOBODY: u32 = 65534;

const PROGRAM: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    /* ld.so ignores LD_LIBRARY_PATH in setuid programs: load by path. */
    void *h = dlopen(argv[1], RTLD_NOW);
    if (!h) { printf("dlopen failed: %s\n", dlerror()); return 2; }
    int (*cuInit)(unsigned) = (int (*)(unsigned))dlsym(h, "cuInit");
    printf("cuInit=%d\n", cuInit(0));
    return 0;
}
"#;

/// Runs the program as `nobody`, setuid-root or not, with `VGPU_LOG_FILE`
/// pointing into a fresh directory; whether the log file appeared.
fn log_file_written(setuid: bool) -> bool {
    let dir = common::TempDir::new("setuid");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = dir.path().join("p.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = dir.path().join("p");
    let gcc = Command::new("gcc")
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg("-ldl")
        .status()
        .expect("gcc");
    assert!(gcc.success());
    let mode = if setuid { 0o4755 } else { 0o755 };
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(mode)).unwrap();
    let log = dir.path().join("vgpu.log");
    let out = Command::new(&exe)
        .arg(&common::artifacts().cuda_shim)
        .env("VGPU_LOG", "debug")
        .env("VGPU_LOG_FILE", &log)
        .env("VGPU_HOST", "unix:/nonexistent/vgpu-setuid-test.sock")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run the program");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("cuInit="),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    log.exists()
}

#[test]
fn setuid_programs_ignore_vgpu_settings() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test makes a setuid-root program: run it as root (CI does)");
    }
    // The same program honours VGPU_LOG_FILE when it is not setuid, so the
    // check below can fail.
    assert!(
        log_file_written(false),
        "the plain program wrote no log file"
    );
    assert!(
        !log_file_written(true),
        "a setuid program honoured VGPU_LOG_FILE"
    );
}

const DEVICE_UNAVAILABLE: &str = "46";

fn program() -> Command {
    Command::new(common::compile_c("tenancy_fork.c", &[]))
}

/// `fork()` while another thread waits in a call returns at once (no
/// handler waits for the session), and the child opens its own session.
#[test]
fn fork_during_a_blocked_call_returns_at_once() {
    let d = common::Daemon::start_emulated();
    let mut cmd = program();
    cmd.arg("fork-blocked");
    let out = common::run_guest(cmd, &d, &[]);
    out.assert_success();
    let f = common::fields(out.line("fork_ms="));
    let ms: f64 = f["fork_ms"].parse().unwrap();
    assert!(ms < 1000.0, "fork took {ms} ms\n{out}");
    assert_eq!(f["child"], "0", "the child's own session\n{out}");
}

/// A child that never execs does not keep its parent's session: when the
/// parent exits, its worker exits, while the child lives on.
#[test]
fn a_forked_child_does_not_keep_the_parents_session() {
    let d = common::Daemon::start_emulated();
    let mut cmd = program();
    cmd.arg("orphan");
    let out = common::run_guest(cmd, &d, &[]);
    out.assert_success();
    let child: u32 = common::field(out.line("child_pid="), "child_pid")
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !d.workers().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the parent's worker outlives it\n{}",
            d.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        std::path::Path::new(&format!("/proc/{child}")).exists(),
        "the child ended before the check could tell"
    );
}

/// After the host restarts, the old session is lost for good: every call
/// on the old context fails with CUDA_ERROR_DEVICE_UNAVAILABLE (not a new
/// session that knows none of its handles); a new process works.
#[test]
fn a_host_restart_is_a_lasting_device_loss() {
    use std::io::BufRead;
    let mut d = common::Daemon::start_emulated();
    let dir = common::TempDir::new("restart");
    let flag = dir.path().join("go");
    let mut cmd = program();
    cmd.arg("restart")
        .arg(&flag)
        .env("VGPU_HOST", d.host_env())
        .env("LD_LIBRARY_PATH", common::shim_libdir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    let mut child = cmd.spawn().unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    d.stop();
    let listen = format!("unix:{}", d.socket.display());
    let d2 = common::Daemon::start(&["--driver", "emulated", "--listen", &listen]);
    std::fs::write(&flag, "").unwrap();
    let line = lines.next().unwrap().unwrap();
    assert!(child.wait().unwrap().success());
    let f = common::fields(&line);
    for k in ["alloc1", "alloc2", "sync"] {
        assert_eq!(f[k], DEVICE_UNAVAILABLE, "{k}: {line}");
    }
    let mut cmd = program();
    cmd.arg("fresh");
    let out = common::run_guest(cmd, &d2, &[]);
    out.assert_success();
    assert_eq!(common::field(out.line("fresh="), "fresh"), "0", "{out}");
}

/// Every call has a deadline: a host that does not answer (here: an
/// endless kernel, with the host's own time limit off) makes the call fail
/// with CUDA_ERROR_DEVICE_UNAVAILABLE after VGPU_CALL_TIMEOUT, and the
/// session stays lost.
#[test]
fn a_call_past_its_deadline_is_a_device_loss() {
    let d = common::Daemon::start(&["--driver", "emulated", "--guest-kernel-time-ms", "0"]);
    let mut cmd = program();
    cmd.arg("deadline");
    let out = common::run_guest(cmd, &d, &[("VGPU_CALL_TIMEOUT", "1")]);
    out.assert_success();
    let f = common::fields(out.line("sync="));
    assert_eq!(f["sync"], DEVICE_UNAVAILABLE, "{out}");
    assert_eq!(f["alloc"], DEVICE_UNAVAILABLE, "{out}");
    let ms: f64 = f["ms"].parse().unwrap();
    assert!((900.0..5000.0).contains(&ms), "{ms} ms\n{out}");
}

/// Loopback TCP without a token is no way around the Unix socket's uid
/// policy: a loopback peer is the user owning its socket, and a user the
/// policy refuses (here `nobody`) is refused on TCP too, with the reason.
#[test]
fn loopback_tcp_applies_the_uid_policy() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test runs a guest as nobody: run it as root (CI does)");
    }
    let d = common::Daemon::start(&["--driver", "emulated", "--listen", "tcp:127.0.0.1:0"]);
    let tcp = format!("{}", d.endpoints[1]);
    let run = |as_nobody: bool| {
        let mut cmd = program();
        cmd.arg("fresh");
        if as_nobody {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        common::run_guest_at(cmd, &tcp, &[])
    };
    let me = run(false);
    me.assert_success();
    assert_eq!(common::field(me.line("fresh="), "fresh"), "0", "{me}");
    let nobody = run(true);
    assert!(!nobody.status.success(), "{nobody}");
    assert!(
        nobody
            .stderr
            .contains(&format!("uid {NOBODY} is not allowed")),
        "{nobody}"
    );
}
