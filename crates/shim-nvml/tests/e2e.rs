//! libvgpu_nvml.so against a real `vgpu host --driver emulated`, driven by
//! the C client in tests/c/nvml_e2e.c (dlopen by path, as ctypes and Ollama
//! do). Needs the workspace built first: `cargo test` does not build other
//! packages' binaries or this package's cdylib into target/<profile>/.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};
use vgpu_transport::proto::{GetInventory, Hello, Inventory};
use vgpu_transport::{Client, Endpoint};

const NAME: &str = "NVIDIA H100 PCIe";
const TOTAL_MIB: u64 = 81_559;

/// target/<profile>/, from this test executable's path (deps/ is below it).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

fn artifact(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: run cargo build --workspace first (same profile and CARGO_TARGET_DIR)",
        p.display()
    );
    p
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        // Short: a unix socket path must fit in 108 bytes.
        let p = std::env::temp_dir().join(format!(
            "vgpu-nvml-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("mkdir temp");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The C client, compiled once per test binary run.
fn client_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/nvml_e2e.c");
        // Built under a private name, then renamed into place: a concurrent
        // run may be executing the previous binary.
        let out = target_dir().join("nvml_e2e_client");
        let tmp = target_dir().join(format!("nvml_e2e_client.{}", std::process::id()));
        let st = Command::new("cc")
            .args(["-Wall", "-Werror", "-O1", "-o"])
            .arg(&tmp)
            .arg(&src)
            .arg("-ldl")
            .status()
            .expect("run cc");
        assert!(st.success(), "cc failed for {}", src.display());
        std::fs::rename(&tmp, &out).expect("rename client");
        out
    })
}

/// `vgpu host --driver emulated` on a private socket; killed on drop.
struct Daemon {
    child: Child,
    host: String,
    log: mpsc::Receiver<String>,
    _dir: TempDir,
}

impl Daemon {
    fn start() -> Daemon {
        let vgpu = artifact("vgpu");
        artifact("libvgpu_emu.so");
        let dir = TempDir::new();
        let host = format!("unix:{}", dir.0.join("s").display());
        let mut child = Command::new(vgpu)
            .args(["host", "--listen", &host, "--driver", "emulated"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vgpu host");
        let (tx, rx) = mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut d = Daemon {
            child,
            host,
            log: rx,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match d.log.recv_timeout(left) {
                Ok(line) => {
                    let ready = line.contains("listening on");
                    seen.push(line);
                    if ready {
                        return d;
                    }
                }
                Err(_) => {
                    let status = d.child.try_wait().ok().flatten();
                    panic!(
                        "vgpu host did not print `listening on` (exit: {status:?}); output:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
    }

    /// What the host reports, asked over the protocol directly.
    fn inventory(&self) -> Inventory {
        let ep: Endpoint = self.host.parse().expect("endpoint");
        let stream = ep.connect(Duration::from_secs(5)).expect("connect");
        let hello = Hello::new(vgpu_transport::BUILD_ID, 0, None);
        let mut c = Client::handshake(stream, &hello, Duration::from_secs(5)).expect("handshake");
        c.call(&GetInventory {}).expect("inventory")
    }

    fn log_so_far(&self) -> String {
        self.log.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the C client with a deadline, so a hang fails instead of blocking.
fn run_client(mode: &str, env: &[(&str, &str)]) -> (Output, HashMap<String, String>) {
    let mut cmd = Command::new(client_exe());
    cmd.arg(artifact("libvgpu_nvml.so"))
        .arg(mode)
        .env_remove("VGPU_PCI_BUS_ID")
        .env_remove("VGPU_LOG_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn client");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nvml client timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let kv = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (out, kv)
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[test]
fn full_client_against_emulated_host() {
    let d = Daemon::start();
    let inv = d.inventory();
    let (out, kv) = run_client("full", &[("VGPU_HOST", &d.host)]);
    let ctx = || format!("{}\n--- host log\n{}", show(&out), d.log_so_far());
    assert!(out.status.success(), "{}", ctx());
    let get = |k: &str| {
        kv.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("no {k}=\n{}", ctx()))
    };
    let num = |k: &str| -> u64 { get(k).parse().unwrap_or_else(|_| panic!("{k}\n{}", ctx())) };

    assert_eq!(get("count"), "1", "{}", ctx());
    assert_eq!(get("name"), NAME);
    let uuid = get("uuid");
    assert_eq!(
        uuid,
        format_uuid(&inv.devices[0].uuid),
        "UUID must be the inventory's bytes"
    );
    assert_eq!(num("memory_total") / (1024 * 1024), TOTAL_MIB);
    assert_eq!(num("memory_total"), inv.devices[0].total_mem);
    assert!(num("memory_used") + num("memory_free") <= num("memory_total"));
    assert_eq!(num("memory_v2_total"), num("memory_total"));
    assert_eq!(get("pci_bus_id"), "00000000:00:05.0");
    assert_eq!(get("pci_bus_id_legacy"), "0000:00:05.0");
    assert_eq!(get("pci_v1_bus_id"), "0000:00:05.0");
    assert_eq!(
        get("pci_device_id"),
        format!("0x{:08x}", inv.devices[0].pci_device_id)
    );
    assert_eq!(
        get("pci_subsystem_id"),
        format!("0x{:08x}", inv.devices[0].pci_subsystem_id)
    );
    assert_eq!(get("driver_version"), inv.system_driver_version);
    assert_eq!(
        get("cuda_driver_version"),
        inv.cuda_driver_version.to_string()
    );
    let (ma, mi) = inv.devices[0].nvml_cc;
    assert_eq!(get("compute_capability"), format!("{ma}.{mi}"));
    assert!((1..=120).contains(&num("temperature")), "{}", ctx());
    assert!(num("utilization_gpu") <= 100);
    assert_eq!(get("compute_v3_count"), get("compute_v3_query_count"));
}

#[test]
fn guest_pci_address_is_configurable() {
    let d = Daemon::start();
    let (out, kv) = run_client(
        "full",
        &[("VGPU_HOST", &d.host), ("VGPU_PCI_BUS_ID", "0000:00:07.0")],
    );
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(kv["pci_bus_id"], "00000000:00:07.0");
    assert_eq!(kv["pci_bus_id_legacy"], "0000:00:07.0");
    assert_eq!(kv["pci_device"], "7");
}

#[test]
fn no_daemon_is_driver_not_loaded_quickly() {
    let dir = TempDir::new();
    let host = format!("unix:{}", dir.0.join("nobody-listens").display());
    let t = Instant::now();
    let (out, kv) = run_client("nodaemon", &[("VGPU_HOST", &host)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(kv["init_rc"], "9", "{}", show(&out));
    assert_eq!(kv["init_error"], "Driver Not Loaded");
    assert_eq!(
        kv["count_rc"], "1",
        "calls after a failed init are uninitialized"
    );
    assert_eq!(kv["shutdown_rc"], "1");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

/// A socket file with nobody accepting (a crashed daemon leaves one behind).
#[test]
fn stale_socket_is_driver_not_loaded_quickly() {
    let dir = TempDir::new();
    let path = dir.0.join("stale");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let host = format!("unix:{}", path.display());
    let (out, kv) = run_client("nodaemon", &[("VGPU_HOST", &host)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(kv["init_rc"], "9", "{}", show(&out));
    let ms: f64 = kv["init_ms"].parse().unwrap();
    assert!(ms < 5000.0, "init took {ms} ms");
}

/// A listener that never answers the handshake (a wedged daemon): init must
/// still give up within 5 s.
#[test]
#[ignore = "the guest client's handshake timeout alone is 5 s (crates/guest/src/client.rs)"]
fn stalled_listener_is_driver_not_loaded_within_5s() {
    let dir = TempDir::new();
    let path = dir.0.join("stall");
    let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let host = format!("unix:{}", path.display());
    let (out, kv) = run_client("nodaemon", &[("VGPU_HOST", &host)]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(kv["init_rc"], "9", "{}", show(&out));
    let ms: f64 = kv["init_ms"].parse().unwrap();
    assert!(ms < 5000.0, "init took {ms} ms");
}
