//! End-to-end checks of the virtual files: a C program and Python read them
//! through every libc path with the hooks preloaded from the test cdylib
//! (`vgpu-guest-testlib`, built as a dev-dependency) and `VGPU_VFILES_TEST=1`.
//! The same programs must fail without the hooks, which proves the checks
//! can fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const BDF: &str = "0000:00:05.0";

fn testlib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join("libvgpu_guest_testlib.so");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "libvgpu_guest_testlib.so not found next to {}",
        exe.display()
    );
}

/// Compiles tests/c/vfiles_read.c once per test binary.
fn c_program() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/c/vfiles_read.c");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("vfiles_read-{}", std::process::id()));
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let st = Command::new(cc)
            .args(["-O2", "-D_FORTIFY_SOURCE=2", "-pthread", "-o"])
            .arg(&out)
            .arg(&src)
            .arg("-ldl")
            .status()
            .expect("a C compiler (cc) is needed for this test");
        assert!(st.success(), "compiling {}", src.display());
        out
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Hooks {
    /// No preload at all.
    None,
    /// Preloaded but not enabled (no provider, no test switch).
    Idle,
    /// Preloaded with the test description.
    Active,
}

fn run(mut cmd: Command, hooks: Hooks) -> Output {
    cmd.env_remove("LD_PRELOAD").env_remove("VGPU_VFILES_TEST");
    if hooks != Hooks::None {
        cmd.env("LD_PRELOAD", testlib());
    }
    if hooks == Hooks::Active {
        cmd.env("VGPU_VFILES_TEST", "1");
    }
    let out = cmd.output().unwrap();
    eprintln!(
        "--- stdout\n{}--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn c(mode: &str, hooks: Hooks) -> Output {
    let mut cmd = Command::new(c_program());
    cmd.arg(mode);
    run(cmd, hooks)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_hooks_are_exported_by_a_cdylib_that_links_the_rlib() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(testlib())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run nm ({e}): install binutils (scripts/test-deps.sh apt)")
        });
    assert!(
        out.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let syms = String::from_utf8_lossy(&out.stdout);
    let exported: Vec<&str> = syms
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    for name in [
        "open",
        "open64",
        "openat",
        "openat64",
        "__open_2",
        "__open64_2",
        "__openat_2",
        "__openat64_2",
        "fopen",
        "fopen64",
        "freopen",
        "freopen64",
        "stat",
        "stat64",
        "lstat",
        "lstat64",
        "fstatat",
        "fstatat64",
        "__xstat",
        "__xstat64",
        "__lxstat",
        "__lxstat64",
        "__fxstatat",
        "__fxstatat64",
        "statx",
        "access",
        "faccessat",
        "opendir",
        "scandir",
        "scandir64",
        "readlink",
        "readlinkat",
        "realpath",
        "__realpath_chk",
    ] {
        assert!(exported.contains(&name), "{name} not exported");
    }
    // Nothing that would interpose reads: they run on real descriptors.
    for name in [
        "read",
        "pread",
        "fread",
        "readdir",
        "readdir64",
        "mmap",
        "malloc",
    ] {
        assert!(!exported.contains(&name), "{name} must not be hooked");
    }
}

#[test]
fn c_program_sees_every_virtual_file_through_every_call() {
    let out = c("all", Hooks::Active);
    let text = stdout(&out);
    assert!(out.status.success(), "checks failed:\n{text}");
    assert!(!text.contains("FAIL"), "{text}");
    // Parent, forked child and exec'd child each had a private tree, and each
    // removed its own at exit.
    let trees: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("TREE="))
        .collect();
    assert_eq!(trees.len(), 3, "{text}");
    let mut distinct = trees.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "trees shared between processes: {trees:?}"
    );
    for t in trees {
        assert!(t.contains("/vgpu-"), "{t}");
        assert!(!Path::new(t).exists(), "{t} left behind");
    }
}

#[test]
fn c_program_fails_without_the_hooks() {
    let out = c("all", Hooks::None);
    let text = stdout(&out);
    assert!(
        !out.status.success(),
        "checks passed without the hooks:\n{text}"
    );
    assert!(
        text.contains("FAIL: fgets: fopen /proc/driver/nvidia/gpus/"),
        "{text}"
    );
    assert!(text.contains("FAIL: stat /dev/nvidia0"), "{text}");
}

#[test]
fn idle_hooks_pass_everything_through() {
    // Loaded but never enabled: the virtual files are absent...
    let out = c("all", Hooks::Idle);
    assert!(!out.status.success(), "{}", stdout(&out));
    // ...and real files read exactly as without the library.
    for hooks in [Hooks::Idle, Hooks::Active, Hooks::None] {
        let out = c("real", hooks);
        assert!(out.status.success(), "{}", stdout(&out));
    }
}

const PY: &str = r#"
import os, stat, sys
bdf = sys.argv[1]
d = '/sys/bus/pci/devices/' + bdf
fails = []
def check(ok, what):
    if not ok:
        fails.append(what)
def attempt(what, f):
    try:
        return f()
    except OSError as e:
        fails.append('%s: %s' % (what, e))
check(attempt('open vendor', lambda: open(d + '/vendor').read()) == '0x10de\n', 'vendor')
info = attempt('open information', lambda: open('/proc/driver/nvidia/gpus/%s/information' % bdf).read()) or ''
check('GPU UUID: \t GPU-6b1e3c2a-91f4-4d8e-b7a0-5c2f8e41d937\n' in info, 'uuid in information')
check('Device Minor: \t 0\n' in info, 'minor in information')
v = attempt('open version', lambda: open('/proc/driver/nvidia/version', 'rb').read()) or b''
check(v.startswith(b'NVRM version: NVIDIA UNIX '), 'version banner')
ls = os.listdir('/sys/bus/pci/devices')
check(ls.count(bdf) == 1, 'listdir shows %s %d times' % (bdf, ls.count(bdf)))
check(len(ls) == len(set(ls)), 'listdir duplicates: %r' % ls)
check(sorted(e.name for e in os.scandir('/sys/bus/pci/devices')) == sorted(ls), 'scandir != listdir')
check(os.path.isdir(d), 'isdir')
check('vendor' in os.listdir(d), 'device dir listing')
st = attempt('stat', lambda: os.stat('/dev/nvidia0'))
check(st is not None and stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 195 and os.minor(st.st_rdev) == 0, 'stat /dev/nvidia0')
check(os.path.exists('/dev/nvidiactl'), '/dev/nvidiactl exists')
check(os.path.realpath(d) == '/sys/devices/pci0000:00/' + bdf, 'realpath ' + os.path.realpath(d))
check(os.readlink(d + '/driver') == '../../../bus/pci/drivers/nvidia', 'readlink driver')
check(os.path.basename(os.path.realpath(d + '/driver')) == 'nvidia', 'driver name')
check(open('/proc/self/status').read().startswith('Name:'), '/proc/self/status')
print('\n'.join(fails) or 'ok')
sys.exit(1 if fails else 0)
"#;

#[test]
fn python_open_listdir_and_realpath() {
    let py = |hooks| {
        let mut cmd = Command::new("python3");
        cmd.args(["-c", PY, BDF]);
        run(cmd, hooks)
    };
    let out = py(Hooks::Active);
    assert!(out.status.success(), "{}", stdout(&out));
    let out = py(Hooks::None);
    assert!(
        !out.status.success(),
        "python checks passed without the hooks"
    );
}

#[test]
fn shell_tools_see_the_device() {
    let script = format!(
        "cat /sys/bus/pci/devices/{BDF}/vendor && ls -l /dev/nvidia0 /dev/nvidiactl && \
         cd /sys/bus/pci/devices/{BDF} && cat device && ls /proc/driver/nvidia/gpus"
    );
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &script]);
    let out = run(cmd, Hooks::Active);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "0x10de");
    assert!(
        lines[1].starts_with("crw-rw-rw-") && lines[1].contains("195,   0"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("crw-rw-rw-") && lines[2].contains("195, 255"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], "0x2331");
    assert_eq!(lines[4], BDF);
}
