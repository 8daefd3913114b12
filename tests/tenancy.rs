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
