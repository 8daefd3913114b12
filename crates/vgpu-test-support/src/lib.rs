//! The harness of vgpu's end-to-end tests, shared by every package's `tests/`
//! (a dev-dependency; the root package's `tests/common/mod.rs` re-exports it).
//!
//! The tests drive the built artifacts: the `vgpu` binary, the two shims and the
//! software GPU. `cargo test` cannot build the cdylibs of other workspace members
//! for us, so `scripts/test.sh` runs `cargo build --workspace` first; the helpers
//! panic with that instruction when an artifact is missing.
//!
//! * [`artifacts`]: where the built files are (`target/<profile>/`, found from
//!   the test executable's path, so it follows `CARGO_TARGET_DIR`).
//! * [`Daemon::start_emulated`] / [`Daemon::start`]: `vgpu host` on a private
//!   unix socket, killed on drop; its log is printed when a test fails.
//!   [`Daemon::connect`] is a protocol client of it.
//! * [`target`]: which driver the daemon runs — the software GPU (default),
//!   one of its profiles, or a real driver — from `VGPU_TEST_DRIVER` and
//!   `VGPU_TEST_PROFILE`; [`requires_software_gpu`] and
//!   [`requires_h100_pcie`] let a test that cannot apply to the target say
//!   why and step aside (only ever outside the default mode).
//! * [`shim_libdir`]: a dir with `libcuda.so.1`, `libcuda.so`, `libnvidia-ml.so.1`,
//!   `libnvidia-ml.so` symlinks to the shims (what `vgpu run` does).
//! * [`compile_c`] / [`compile_c_in`]: gcc a test program, once per test binary run.
//! * [`venv`]: the Python venv of `scripts/test-deps.sh`.
//! * [`run_guest`] / [`run_with_timeout`]: run a guest program with a deadline;
//!   a hung guest fails the test instead of hanging CI.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use vgpu_transport::proto::Hello;
use vgpu_transport::{Client, Endpoint, HandshakeError};

/// Default limit for one guest program.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon may take to print `listening on`.
pub const DAEMON_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The device the software GPU must present with an H100 PCIe board (its
/// default profile, and h100-cuda12.2, h100-cuda13, 2x-h100), and the host
/// configuration of the run ([`expected::host`]). Published facts, written
/// here independently of the software GPU's own tables.
pub mod expected {
    pub const NAME: &str = "NVIDIA H100 PCIe";
    pub const CC_MAJOR: i32 = 9;
    pub const CC_MINOR: i32 = 0;
    pub const TOTAL_MEM_BYTES: u64 = 85_520_809_984;
    pub const TOTAL_MEM_MIB: u64 = 81_559;
    /// cuDeviceGetPCIBusId / NVML busIdLegacy when VGPU_PCI_BUS_ID is unset.
    pub const PCI_BUS_ID: &str = "0000:00:05.0";
    /// NVML `busId` uses an 8-digit domain.
    pub const NVML_PCI_BUS_ID: &str = "00000000:00:05.0";
    pub const MIN_CUDA_DRIVER_VERSION: i32 = 13000;
    pub const MIN_NVIDIA_DRIVER_MAJOR: u32 = 570;
    /// Ollama's scheduler subtracts this from free memory (server/sched.go).
    pub const OLLAMA_MIN_FREE_BYTES: u64 = 457 * 1024 * 1024;

    /// A host configuration the software GPU imitates, as the guest must
    /// see it.
    #[derive(Debug)]
    pub struct Host {
        pub profile: &'static str,
        pub name: &'static str,
        pub cc: (i32, i32),
        pub sm_count: i32,
        /// `cuDeviceTotalMem` of each device.
        pub total_mem: u64,
        /// NVML's total of each device (`nvidia-smi`), which on some boards
        /// counts memory CUDA does not.
        pub nvml_total_mem: u64,
        pub devices: usize,
        /// `cuDriverGetVersion`.
        pub cuda_driver_version: i32,
        /// The NVIDIA driver's major version (`nvmlSystemGetDriverVersion`).
        pub nvidia_major: u32,
    }

    impl Host {
        /// `cuDriverGetVersion` as CUDA prints it, e.g. "12.2".
        pub fn cuda_version_text(&self) -> String {
            let v = self.cuda_driver_version;
            format!("{}.{}", v / 1000, v % 1000 / 10)
        }

        /// The compute capability as "9.0".
        pub fn cc_text(&self) -> String {
            format!("{}.{}", self.cc.0, self.cc.1)
        }

        /// Whether a runtime of CUDA major `major` accepts this driver
        /// (a runtime refuses a driver of an older major version).
        pub fn runs_cudart(&self, major: i32) -> bool {
            self.cuda_driver_version / 1000 >= major
        }
    }

    const H100: &str = NAME;

    pub const HOSTS: &[Host] = &[
        Host {
            profile: "h100-pcie",
            name: H100,
            cc: (9, 0),
            sm_count: 114,
            total_mem: TOTAL_MEM_BYTES,
            nvml_total_mem: TOTAL_MEM_BYTES,
            devices: 1,
            cuda_driver_version: 13050,
            nvidia_major: 590,
        },
        Host {
            profile: "h100-cuda12.2",
            name: H100,
            cc: (9, 0),
            sm_count: 114,
            total_mem: TOTAL_MEM_BYTES,
            nvml_total_mem: TOTAL_MEM_BYTES,
            devices: 1,
            cuda_driver_version: 12020,
            nvidia_major: 535,
        },
        Host {
            profile: "h100-cuda13",
            name: H100,
            cc: (9, 0),
            sm_count: 114,
            total_mem: TOTAL_MEM_BYTES,
            nvml_total_mem: TOTAL_MEM_BYTES,
            devices: 1,
            cuda_driver_version: 13000,
            nvidia_major: 580,
        },
        Host {
            profile: "a100-80gb",
            name: "NVIDIA A100 80GB PCIe",
            cc: (8, 0),
            sm_count: 108,
            // 81049 MiB, a published mixbench run's totalGlobalMem.
            total_mem: 81_049 * 1024 * 1024,
            // `nvidia-smi` on A100 80GB.
            nvml_total_mem: 81_920 * 1024 * 1024,
            devices: 1,
            cuda_driver_version: 13050,
            nvidia_major: 590,
        },
        Host {
            profile: "l4",
            name: "NVIDIA L4",
            cc: (8, 9),
            sm_count: 58,
            // A published deviceQuery run's totalGlobalMem.
            total_mem: 23_583_784_960,
            // `nvidia-smi` on L4.
            nvml_total_mem: 23_034 * 1024 * 1024,
            devices: 1,
            cuda_driver_version: 13050,
            nvidia_major: 590,
        },
        Host {
            profile: "2x-h100",
            name: H100,
            cc: (9, 0),
            sm_count: 114,
            total_mem: TOTAL_MEM_BYTES,
            nvml_total_mem: TOTAL_MEM_BYTES,
            devices: 2,
            cuda_driver_version: 13050,
            nvidia_major: 590,
        },
    ];

    /// The host of this run, when it is the software GPU (a real driver's
    /// facts are not known in advance).
    pub fn host() -> Option<&'static Host> {
        let t = super::target();
        if !t.software_gpu() {
            return None;
        }
        let name = t.profile.as_deref().unwrap_or("h100-pcie");
        Some(
            HOSTS.iter().find(|h| h.profile == name).unwrap_or_else(|| {
                panic!("VGPU_TEST_PROFILE={name}: not a profile the tests know")
            }),
        )
    }

    /// [`host`], for tests that only run on the software GPU.
    #[track_caller]
    pub fn software_host() -> &'static Host {
        host().expect("a test of the software GPU's host (see requires_software_gpu)")
    }
}

// ---------------------------------------------------------------- target

/// What the end-to-end tests run against, from the environment:
///
/// * `VGPU_TEST_DRIVER`: `emulated` (the default: the software GPU), `auto`
///   (the real driver if one loads) or the path of a `libcuda.so.1` — what
///   `vgpu host --driver` takes. Set it to run the same `cargo test` on a
///   machine with a GPU (`scripts/gpu-check.sh` does).
/// * `VGPU_TEST_PROFILE`: with the software GPU, the host configuration it
///   imitates (`vgpu host --profile`); default its default profile.
#[derive(Debug)]
pub struct Target {
    pub driver: String,
    pub profile: Option<String>,
}

impl Target {
    pub fn software_gpu(&self) -> bool {
        matches!(self.driver.as_str(), "emulated" | "emu")
    }

    /// Whether this is the default mode, in which every test applies.
    pub fn is_default(&self) -> bool {
        self.software_gpu() && self.profile.is_none()
    }
}

pub fn target() -> &'static Target {
    static T: OnceLock<Target> = OnceLock::new();
    T.get_or_init(|| {
        let var = |k| {
            std::env::var(k)
                .ok()
                .filter(|v: &String| !v.trim().is_empty())
        };
        Target {
            driver: var("VGPU_TEST_DRIVER").unwrap_or_else(|| "emulated".into()),
            profile: var("VGPU_TEST_PROFILE").filter(|p| p != "h100-pcie"),
        }
    })
}

/// Says why the running test does not apply to this run and returns false.
/// Rust has no run-time "ignored", so the test must return after this: it
/// then passes without having checked anything, which is why a skip is only
/// possible in an opt-in mode (a real driver, a profile) and is printed to
/// stderr and appended to `target/<profile>/vgpu-test-skips.log`, where
/// `scripts/gpu-check.sh` lists it. The default mode never skips.
fn skip(why: &str) -> bool {
    let t = target();
    assert!(!t.is_default(), "a test skipped in the default mode: {why}");
    let test = thread::current().name().unwrap_or("?").to_string();
    let line = format!(
        "SKIP {test}: {why} (VGPU_TEST_DRIVER={}, VGPU_TEST_PROFILE={})",
        t.driver,
        t.profile.as_deref().unwrap_or("-")
    );
    eprintln!("{line}");
    let log = artifacts().dir.join("vgpu-test-skips.log");
    if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log) {
        use std::io::Write;
        let _ = writeln!(f, "{line}");
    }
    false
}

/// For a test of what only the software GPU does (its knobs, its exact
/// numbers): true unless the tests target a real driver, where it says why
/// the test does not apply. Use as `if !requires_software_gpu("...") { return; }`.
#[must_use]
pub fn requires_software_gpu(why: &str) -> bool {
    target().software_gpu() || skip(&format!("software GPU only: {why}"))
}

/// For a test that checks the exact numbers of an H100 PCIe ([`expected`]):
/// true on the software GPU with an H100 PCIe profile.
#[must_use]
pub fn requires_h100_pcie(why: &str) -> bool {
    match expected::host() {
        Some(h) if h.name == expected::NAME => true,
        Some(h) => skip(&format!(
            "needs an H100 PCIe, the profile has {}: {why}",
            h.name
        )),
        None => skip(&format!("software GPU only (H100 PCIe numbers): {why}")),
    }
}

/// For a test whose program carries PTX for compute capability `cc` only
/// (e.g. (9, 0)), which a board of a lower one cannot JIT: true unless the
/// software GPU imitates such a board (a real driver's board is only known
/// by running; there the program fails with "no kernel image").
#[must_use]
pub fn requires_cc(cc: (i32, i32), why: &str) -> bool {
    match expected::host() {
        Some(h) if h.cc < cc => skip(&format!(
            "needs compute capability {}.{}, the profile has {}: {why}",
            cc.0,
            cc.1,
            h.cc_text()
        )),
        _ => true,
    }
}

// ---------------------------------------------------------------- artifacts

/// Paths of the built artifacts, all in `target/<profile>/`.
#[derive(Debug)]
pub struct Artifacts {
    pub dir: PathBuf,
    pub vgpu: PathBuf,
    /// `libvgpu_cuda.so`, SONAME `libcuda.so.1`.
    pub cuda_shim: PathBuf,
    /// `libvgpu_nvml.so`, SONAME `libnvidia-ml.so.1`.
    pub nvml_shim: PathBuf,
    /// `libvgpu_emu.so`, the software GPU the daemon loads from its own dir.
    pub emu: PathBuf,
}

/// Locates the artifacts from the test executable's path
/// (`target/<profile>/deps/<test>` → `target/<profile>/`), which follows
/// `CARGO_TARGET_DIR` whichever package the test belongs to. Panics with
/// instructions when one is missing.
pub fn artifacts() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let deps = exe.parent().expect("test executable has a parent dir");
        let dir = if deps.file_name() == Some(OsStr::new("deps")) {
            deps.parent().unwrap().to_path_buf()
        } else {
            deps.to_path_buf()
        };
        let a = Artifacts {
            vgpu: dir.join("vgpu"),
            cuda_shim: dir.join("libvgpu_cuda.so"),
            nvml_shim: dir.join("libvgpu_nvml.so"),
            emu: dir.join("libvgpu_emu.so"),
            dir,
        };
        for p in [&a.vgpu, &a.cuda_shim, &a.nvml_shim, &a.emu] {
            assert!(
                p.is_file(),
                "missing artifact {}: build the workspace first with the same \
                 profile and CARGO_TARGET_DIR (scripts/test.sh runs \
                 `cargo build --workspace` then `cargo test --workspace`)",
                p.display()
            );
        }
        a
    })
}

/// The repository root: this crate lives in `<root>/crates/vgpu-test-support`.
pub fn repo_root() -> &'static Path {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let up = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        up.canonicalize().unwrap_or(up)
    })
}

// ---------------------------------------------------------------- temp dirs

/// A directory under the system temp dir, removed on drop (kept when
/// `VGPU_KEEP_TEST_DIRS` is set, for debugging).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        // Short: unix socket paths are limited to 107 bytes.
        let p = std::env::temp_dir().join(format!("vgpu-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("VGPU_KEEP_TEST_DIRS").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

// ---------------------------------------------------------------- daemon

/// A `vgpu host` process on a private unix socket, in a process group of its
/// own (with its workers); the group is killed and the daemon reaped on drop.
pub struct Daemon {
    /// `None` once [`Daemon::stop`] has reaped it.
    pub child: Option<Child>,
    pid: u32,
    pub socket: PathBuf,
    /// Its stdout and stderr, together.
    pub log: PathBuf,
    /// What it printed `listening on` for, in order: the private socket first,
    /// then any `--listen` of the extra arguments.
    pub endpoints: Vec<Endpoint>,
    _dir: TempDir,
}

impl Daemon {
    /// `vgpu host --listen unix:<tmp>/vgpu.sock --driver emulated` (with the
    /// [`target`]'s profile): for tests of the software GPU itself.
    #[track_caller]
    pub fn start_emulated() -> Daemon {
        Daemon::start(&["--driver", "emulated"])
    }

    /// `vgpu host` with the [`target`]'s driver and profile: the software
    /// GPU by default, a real GPU under `VGPU_TEST_DRIVER`.
    #[track_caller]
    pub fn start_target() -> Daemon {
        Daemon::start(&[])
    }

    /// `vgpu host --listen unix:<tmp>/vgpu.sock EXTRA...`, with the
    /// [`target`]'s driver unless EXTRA names a driver, and the target's
    /// profile on the software GPU unless EXTRA names one; waits until it
    /// has printed a `listening on` line for every `--listen`.
    #[track_caller]
    pub fn start(extra: &[&str]) -> Daemon {
        Daemon::start_with_env(extra, &[])
    }

    /// [`Daemon::start`] with extra environment for the daemon, which its
    /// workers (and so the software GPU) inherit, e.g.
    /// `VGPU_EMU_INIT_DELAY_MS`. `VGPU_LOG` is `debug` unless the test's
    /// environment or `env` sets it.
    #[track_caller]
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let a = artifacts();
        let dir = TempDir::new("host");
        let socket = dir.path().join("vgpu.sock");
        let log = dir.path().join("host.log");
        let out = File::create(&log).expect("create daemon log");
        let err = out.try_clone().expect("dup daemon log");
        let mut cmd = Command::new(&a.vgpu);
        cmd.arg("host")
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let t = target();
        let driver = match extra.iter().position(|a| *a == "--driver") {
            Some(i) => extra.get(i + 1).copied().unwrap_or(""),
            None => {
                cmd.args(["--driver", &t.driver]);
                t.driver.as_str()
            }
        };
        let emulated = matches!(driver, "emulated" | "emu");
        if emulated && !extra.contains(&"--profile") {
            if let Some(p) = &t.profile {
                cmd.args(["--profile", p]);
            }
        }
        if emulated {
            // The software GPU honours it as the real driver does; a value
            // in the developer's shell must not change what tests see.
            cmd.env_remove("CUDA_VISIBLE_DEVICES");
        }
        if std::env::var_os("VGPU_LOG").is_none() {
            cmd.env("VGPU_LOG", "debug");
        }
        cmd.envs(env.iter().copied());
        let wanted = 1 + extra.iter().filter(|a| **a == "--listen").count();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", a.vgpu.display()));
        let mut d = Daemon {
            pid: child.id(),
            child: Some(child),
            socket,
            log,
            endpoints: Vec::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + DAEMON_READY_TIMEOUT;
        loop {
            // The daemon's stdout contract: one `listening on ENDPOINT` line
            // per endpoint (its log lines have a timestamp first).
            let logs = d.logs();
            let listening: Vec<&str> = logs
                .lines()
                .filter_map(|l| l.strip_prefix("listening on "))
                .collect();
            if listening.len() >= wanted {
                d.endpoints = listening
                    .iter()
                    .map(|ep| {
                        ep.parse()
                            .unwrap_or_else(|e| panic!("daemon printed endpoint {ep:?}: {e}"))
                    })
                    .collect();
                return d;
            }
            if let Ok(Some(status)) = d.child_mut().try_wait() {
                panic!(
                    "daemon exited with {status} before printing `listening on` \
                     (its log is printed below)"
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "daemon did not print `listening on` within {DAEMON_READY_TIMEOUT:?} \
                     (its log is printed below)"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the daemon was stopped")
    }

    /// The daemon's pid (also its process group).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The value for the guest's `VGPU_HOST`.
    pub fn host_env(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// The private unix socket's endpoint.
    pub fn unix(&self) -> &Endpoint {
        &self.endpoints[0]
    }

    /// A protocol client admitted on the private socket.
    #[track_caller]
    pub fn connect(&self) -> Client {
        connect(self.unix(), None).expect("handshake")
    }

    /// Everything the daemon printed so far.
    pub fn logs(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the log has a line containing every one of `parts`, and
    /// returns it; panics with the log after `timeout`.
    #[track_caller]
    pub fn wait_log(&self, parts: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.logs();
            if let Some(l) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return l.to_string();
            }
            if Instant::now() > deadline {
                panic!("no log line with {parts:?}; log:\n{log}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Panics (with the daemon log) if the daemon has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child_mut().try_wait() {
            panic!("daemon died ({status}); its log is printed below");
        }
    }

    /// SIGTERM and wait (10 s at most); returns the exit status.
    #[track_caller]
    pub fn stop(&mut self) -> ExitStatus {
        let mut c = self.child.take().expect("the daemon was stopped");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("daemon ignored SIGTERM; log:\n{}", self.logs());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// (pid, session) of this daemon's workers, from /proc.
    pub fn workers(&self) -> Vec<(i32, u64)> {
        let me = self.pid as i32;
        let mut v = Vec::new();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // Field 4, after the parenthesized command name.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|s| s.parse::<i32>().ok());
            if ppid != Some(me) {
                continue;
            }
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmd
                .split(|b| *b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            if let Some(i) = args.iter().position(|a| a == "--session") {
                if let Some(s) = args.get(i + 1).and_then(|s| s.parse().ok()) {
                    v.push((pid, s));
                }
            }
        }
        v
    }

    /// The pid of the worker of `session` (waits 5 s for it to appear).
    #[track_caller]
    pub fn worker_of(&self, session: u64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some((pid, _)) = self.workers().into_iter().find(|(_, s)| *s == session) {
                return pid;
            }
            assert!(Instant::now() < deadline, "no worker for session {session}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The daemon leads its own process group (process_group(0)).
        kill_group(self.pid);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if thread::panicking() || std::env::var_os("VGPU_TEST_SHOW_LOG").is_some() {
            eprintln!(
                "---- vgpu host log ({}) ----\n{}",
                self.log.display(),
                self.logs()
            );
        }
    }
}

fn kill_group(leader: u32) {
    // SAFETY: kill(2) with a negative pid signals that group only.
    unsafe {
        libc::kill(-(leader as libc::pid_t), libc::SIGKILL);
    }
}

/// Connects to `ep` and does the guest handshake (with `token`, if any);
/// calls on the client time out after 20 s.
pub fn connect(ep: &Endpoint, token: Option<&str>) -> Result<Client, HandshakeError> {
    let s = ep
        .connect(Duration::from_secs(5))
        .map_err(|e| HandshakeError::Transport(e.into()))?;
    let c = Client::handshake(
        s,
        &Hello::new(vgpu_transport::BUILD_ID, 0, token.map(String::from)),
        Duration::from_secs(10),
    )?;
    c.set_timeout(Some(Duration::from_secs(20))).unwrap();
    Ok(c)
}

/// Lower-case hex of `b`, two digits a byte.
pub fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---------------------------------------------------------------- shims

/// `target/<profile>/vgpu-test-libdir/` with `libcuda.so.1`, `libcuda.so` →
/// `libvgpu_cuda.so` and `libnvidia-ml.so.1`, `libnvidia-ml.so` →
/// `libvgpu_nvml.so` (absolute symlinks, replaced atomically, so concurrent test
/// binaries may share it).
pub fn shim_libdir() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let a = artifacts();
        let dir = a.dir.join("vgpu-test-libdir");
        fs::create_dir_all(&dir).expect("create shim libdir");
        let links = [
            ("libcuda.so.1", &a.cuda_shim),
            ("libcuda.so", &a.cuda_shim),
            ("libnvidia-ml.so.1", &a.nvml_shim),
            ("libnvidia-ml.so", &a.nvml_shim),
        ];
        for (name, target) in links {
            let tmp = dir.join(format!(".{name}.{}", std::process::id()));
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp).expect("symlink");
            fs::rename(&tmp, dir.join(name)).expect("rename symlink");
        }
        dir
    })
}

// ---------------------------------------------------------------- C programs

/// Compiles `<repo>/tests/c/<src>`: [`compile_c_in`] for the root's C harness.
#[track_caller]
pub fn compile_c(src: &str, extra_args: &[&str]) -> PathBuf {
    compile_c_in(&repo_root().join("tests/c"), src, extra_args)
}

/// Compiles `<dir>/<src>` with `gcc -std=gnu11 -O1 -g -Wall -Wextra -Werror
/// -I <repo>/tests/c ... -ldl -lpthread` and returns the executable: every C
/// test can include the shared `vgpu_test.h`. Cached per test binary run (and
/// on disk by content hash, headers of `dir` and of `<repo>/tests/c` included,
/// under `target/<profile>/vgpu-test-c/`).
#[track_caller]
pub fn compile_c_in(dir: &Path, src: &str, extra_args: &[&str]) -> PathBuf {
    static CACHE: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let key = format!("{}\0{src}\0{}", dir.display(), extra_args.join("\0"));
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    if let Some(p) = cache.get(&key) {
        return p.clone();
    }
    let path = dir.join(src);
    let text = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let out_dir = artifacts().dir.join("vgpu-test-c");
    fs::create_dir_all(&out_dir).expect("create C output dir");
    let stem = Path::new(src).file_stem().unwrap().to_string_lossy();
    let shared = repo_root().join("tests/c");
    let mut header_paths: Vec<PathBuf> = [dir, shared.as_path()]
        .into_iter()
        .flat_map(|d| fs::read_dir(d).unwrap_or_else(|e| panic!("list {}: {e}", d.display())))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension() == Some(OsStr::new("h")))
        .collect();
    header_paths.sort();
    header_paths.dedup();
    let mut headers = Vec::new();
    for p in header_paths {
        headers.extend(fs::read(&p).expect("read header"));
    }
    let hash = fnv1a(&[&text, &headers, key.as_bytes()]);
    let exe = out_dir.join(format!("{stem}-{hash:016x}"));
    if !exe.is_file() {
        let tmp = out_dir.join(format!(".{stem}.{}", std::process::id()));
        let out = Command::new("gcc")
            .args(["-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Werror"])
            .arg("-I")
            .arg(&shared)
            .arg("-o")
            .arg(&tmp)
            .arg(&path)
            .args(extra_args)
            .args(["-ldl", "-lpthread"])
            .output()
            .unwrap_or_else(|e| panic!("gcc not runnable ({e}); run scripts/test-deps.sh"));
        assert!(
            out.status.success(),
            "gcc {} failed:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::rename(&tmp, &exe).expect("rename compiled program");
    }
    cache.insert(key, exe.clone());
    exe
}

fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

// ---------------------------------------------------------------- python

/// `${VGPU_CACHE:-<repo>/.cache}`, where scripts/test-deps.sh installs.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("VGPU_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"))
}

/// `nvidia/cu13` of the test venv: nvcc, its headers, libcudart.so.13.
pub fn cuda13() -> PathBuf {
    let nv = venv_site_packages().join("nvidia/cu13");
    assert!(
        nv.join("bin/nvcc").is_file(),
        "{}: run scripts/test-deps.sh nvcc",
        nv.display()
    );
    nv
}

/// The nvcc arguments of each way a test program is built: its kernels as
/// compute_90 PTX only or as sm_90 SASS plus that PTX, cudart static or
/// shared.
pub fn nvcc_variant_args(variant: &str) -> &'static [&'static str] {
    const PTX: &str = "arch=compute_90,code=compute_90";
    const SASS: &str = "arch=compute_90,code=sm_90";
    match variant {
        "ptx-static" => &["-gencode", PTX],
        "ptx-shared" => &["-gencode", PTX, "-cudart", "shared"],
        "sass-static" => &["-gencode", SASS, "-gencode", PTX],
        "sass-shared" => &["-gencode", SASS, "-gencode", PTX, "-cudart", "shared"],
        other => panic!("unknown nvcc variant {other}"),
    }
}

/// Every variant [`nvcc_variant_args`] knows.
pub const NVCC_VARIANTS: [&str; 4] = ["ptx-static", "ptx-shared", "sass-static", "sass-shared"];

/// `tests/cuda/<source>` built by the pinned nvcc 13 in `variant`, once per
/// test binary run. A failed build fails only the tests that need it (the
/// cache's lock is not poisoned by it).
pub fn nvcc_build(source: &str, variant: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<(String, String), PathBuf>>> = OnceLock::new();
    let key = (source.to_string(), variant.to_string());
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.get(&key) {
        return p.clone();
    }
    let nv = cuda13();
    let out_dir = artifacts().dir.join("vgpu-test-cuda");
    std::fs::create_dir_all(&out_dir).unwrap();
    let stem = source.trim_end_matches(".cu");
    let exe = out_dir.join(format!("{stem}-{variant}"));
    let out = Command::new(nv.join("bin/nvcc"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                nv.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .args(nvcc_variant_args(variant))
        .arg(format!("-Xlinker=-rpath,{}", nv.join("lib").display()))
        .arg("-o")
        .arg(&exe)
        .arg(repo_root().join("tests/cuda").join(source))
        .output()
        .expect("run nvcc");
    assert!(
        out.status.success(),
        "nvcc {source} {variant}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    built.insert(key, exe.clone());
    exe
}

/// `site-packages` of the test venv.
#[track_caller]
pub fn venv_site_packages() -> PathBuf {
    let lib = venv().parent().unwrap().join("lib");
    fs::read_dir(&lib)
        .unwrap_or_else(|e| panic!("{}: {e}", lib.display()))
        .map(|e| e.unwrap().path().join("site-packages"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no site-packages under {}", lib.display()))
}

/// `bin/` of the test venv (`${VGPU_CACHE:-<repo>/.cache}/venv`).
#[track_caller]
pub fn venv() -> PathBuf {
    let bin = cache_dir().join("venv/bin");
    assert!(
        bin.join("python").is_file(),
        "no test venv at {}: run scripts/test-deps.sh",
        bin.display()
    );
    bin
}

// ---------------------------------------------------------------- running

/// What a finished guest program produced.
pub struct GuestOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// The command line, for messages.
    pub command: String,
}

impl GuestOutput {
    /// Panics with the whole output unless the program exited with 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "guest failed:\n{self}");
        self
    }

    /// The first stdout line starting with `prefix`, or a panic showing the output.
    #[track_caller]
    pub fn line(&self, prefix: &str) -> &str {
        match self.stdout.lines().find(|l| l.starts_with(prefix)) {
            Some(l) => l,
            None => panic!("no stdout line starting with {prefix:?}:\n{self}"),
        }
    }
}

impl fmt::Display for GuestOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\nstatus: {} after {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` as a guest of `daemon`: `VGPU_HOST` set, `LD_LIBRARY_PATH` =
/// [`shim_libdir`] only, `VGPU_LOG=debug`, inherited `LD_PRELOAD`,
/// `VGPU_PCI_BUS_ID` and `CUDA_VISIBLE_DEVICES` removed; then `env` is applied
/// (so a test can override any of these, e.g. `("LD_LIBRARY_PATH", "")`).
/// Fails the test if it runs longer than [`GUEST_TIMEOUT`].
#[track_caller]
pub fn run_guest(cmd: Command, daemon: &Daemon, env: &[(&str, &str)]) -> GuestOutput {
    run_guest_at(cmd, &daemon.host_env(), env)
}

/// [`run_guest`] with an explicit `VGPU_HOST` value (e.g. an endpoint with no daemon).
#[track_caller]
pub fn run_guest_at(mut cmd: Command, vgpu_host: &str, env: &[(&str, &str)]) -> GuestOutput {
    guest_env(&mut cmd, vgpu_host, env);
    run_with_timeout(cmd, GUEST_TIMEOUT)
}

/// [`run_guest`] with its own deadline instead of [`GUEST_TIMEOUT`], for guests
/// that compile or import a lot first (numba's JIT, torch).
#[track_caller]
pub fn run_guest_with_timeout(
    mut cmd: Command,
    daemon: &Daemon,
    env: &[(&str, &str)],
    timeout: Duration,
) -> GuestOutput {
    guest_env(&mut cmd, &daemon.host_env(), env);
    run_with_timeout(cmd, timeout)
}

/// The guest environment of [`run_guest`].
fn guest_env(cmd: &mut Command, vgpu_host: &str, env: &[(&str, &str)]) {
    cmd.env("VGPU_HOST", vgpu_host)
        .env("LD_LIBRARY_PATH", shim_libdir())
        .env("VGPU_LOG", "debug")
        .env_remove("LD_PRELOAD")
        .env_remove("VGPU_PCI_BUS_ID")
        .env_remove("CUDA_VISIBLE_DEVICES");
    for (k, v) in env {
        cmd.env(k, v);
    }
}

/// Runs `cmd` in its own process group with stdin closed and output captured;
/// on timeout kills the whole group and panics with what it printed so far.
#[track_caller]
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> GuestOutput {
    let command = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command}: {e}"));
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > timeout {
            kill_group(child.id());
            let s = child.wait().expect("wait");
            let partial = GuestOutput {
                status: s,
                stdout: out.join().unwrap(),
                stderr: err.join().unwrap(),
                elapsed: start.elapsed(),
                command,
            };
            panic!("guest timed out after {timeout:?} (killed):\n{partial}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    // Grandchildren that kept the pipes open must not hang the test either.
    kill_group(child.id());
    GuestOutput {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed: start.elapsed(),
        command,
    }
}

fn reader(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

// ---------------------------------------------------------------- parsing

/// Parses `key=value` / `key="quoted value"` fields of one output line.
pub fn fields(line: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut rest = line;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].rsplit(' ').next().unwrap_or("").to_string();
        let after = &rest[eq + 1..];
        let (val, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (&q[..end], q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        m.insert(key, val.to_string());
        rest = next;
    }
    m
}

/// The field `key` of `line`, or a panic naming the line.
#[track_caller]
pub fn field(line: &str, key: &str) -> String {
    match fields(line).remove(key) {
        Some(v) => v,
        None => panic!("no field {key:?} in line {line:?}"),
    }
}

/// True for `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (lower-case hex) that is
/// not all zeros.
pub fn is_gpu_uuid(s: &str) -> bool {
    let Some(hex) = s.strip_prefix("GPU-") else {
        return false;
    };
    let groups: Vec<&str> = hex.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    lens == [8, 4, 4, 4, 12]
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        && groups.iter().any(|g| g.bytes().any(|b| b != b'0'))
}

/// Runs `readelf -d FILE` and returns its DT_SONAME.
pub fn soname(file: &Path) -> Option<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("readelf not runnable ({e}); run scripts/test-deps.sh"));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains("(SONAME)"))?;
    let start = line.find('[')? + 1;
    let end = line.rfind(']')?;
    Some(line[start..end].to_string())
}
