//! libvgpu_cuda.so against a real `vgpu host --driver emulated`, driven by
//! a C program that dlopens it like an application would.
//!
//! Needs the workspace's artifacts next to this test's executable
//! (`cargo build --workspace` first) and a C compiler (`cc`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// target/<profile>/, from target/<profile>/deps/e2e-<hash>.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

fn artifact(name: &str) -> PathBuf {
    let p = profile_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run cargo build --workspace first",
        p.display()
    );
    p
}

fn scratch_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "vgpu-shim-cuda-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// Compiles the probe once per test process.
fn probe() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/probe.c");
            let out = scratch_dir().join("probe");
            let st = Command::new("cc")
                .args(["-Wall", "-Werror", "-O1", "-o"])
                .arg(&out)
                .arg(&src)
                .args(["-ldl", "-pthread"])
                .status()
                .expect("running cc");
            assert!(st.success(), "cc failed on {}", src.display());
            out
        })
        .clone()
}

/// A daemon on a private Unix socket, killed on drop.
struct Host {
    child: Child,
    endpoint: String,
    dir: PathBuf,
}

impl Host {
    fn start() -> Host {
        let vgpu = artifact("vgpu");
        artifact("libvgpu_emu.so");
        let dir = scratch_dir();
        let endpoint = format!("unix:{}", dir.join("s").display());
        let mut child = Command::new(&vgpu)
            .args(["host", "--listen", &endpoint, "--driver", "emulated"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning vgpu host");
        // The ready line may come on either stream; watch both.
        let (tx, rx) = mpsc::channel::<String>();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err) as Box<dyn std::io::Read + Send>,
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("listening on") => break,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "vgpu host did not print `listening on`; its output:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
        Host {
            child,
            endpoint,
            dir,
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_probe(host: &str, mode: &str, env: &[(&str, &str)]) -> (Output, String) {
    let lib = artifact("libvgpu_cuda.so");
    let mut cmd = Command::new(probe());
    cmd.arg(&lib)
        .arg(mode)
        .env("VGPU_HOST", host)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .env_remove("VGPU_PCI_BUS_ID");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running probe");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "--- probe {mode} {env:?}\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn failures(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("FAIL")).collect()
}

#[test]
fn discovery_and_contexts() {
    let host = Host::start();
    let (out, text) = run_probe(&host.endpoint, "full", &[]);
    assert!(
        out.status.success() && failures(&text).is_empty(),
        "failed checks: {:#?}",
        failures(&text)
    );
    assert!(text.lines().filter(|l| l.starts_with("ok ")).count() > 60);
}

#[test]
fn configured_pci_address() {
    let host = Host::start();
    let (out, text) = run_probe(
        &host.endpoint,
        "full",
        &[
            ("VGPU_PCI_BUS_ID", "0000:00:07.0"),
            ("PROBE_BUS_ID", "0000:00:07.0"),
        ],
    );
    assert!(
        out.status.success() && failures(&text).is_empty(),
        "failed checks: {:#?}",
        failures(&text)
    );
}

#[test]
fn cuda_visible_devices() {
    let host = Host::start();
    let (_, full) = run_probe(&host.endpoint, "full", &[]);
    let uuid = full
        .lines()
        .find_map(|l| l.strip_prefix("uuid "))
        .expect("probe printed the uuid")
        .to_string();
    let first8 = format!("GPU-{}", &uuid[..8]);
    for (value, want) in [
        ("-1", 0),
        ("", 0),
        ("1", 0),
        ("0", 1),
        ("0,-1", 1),
        (first8.as_str(), 1),
        ("GPU-00000000", 0),
    ] {
        let (_, text) = run_probe(&host.endpoint, "count", &[("CUDA_VISIBLE_DEVICES", value)]);
        assert!(
            text.contains(&format!("init 0 count {want} rc 0")),
            "CUDA_VISIBLE_DEVICES={value:?}: {text}"
        );
    }
}

#[test]
fn no_daemon_is_no_device_quickly() {
    let dir = scratch_dir();
    let endpoint = format!("unix:{}", dir.join("nobody-listens").display());
    let start = Instant::now();
    let (_, text) = run_probe(&endpoint, "nohost", &[]);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    // cuInit: NO_DEVICE; cuDriverGetVersion still answers (13.x); other
    // calls: NOT_INITIALIZED.
    assert!(text.starts_with("init 100 "), "{text}");
    assert!(text.contains(" rc 0 count-rc 3"), "{text}");
    let version: i32 = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("version printed");
    assert!(version >= 13000, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Compiles tests/c/<name>.c once per test process.
fn c_program(name: &'static str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(&str, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(n, _)| *n == name) {
        return p.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let out = scratch_dir().join(name);
    let st = Command::new("cc")
        .args(["-Wall", "-Werror", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .args(["-ldl", "-pthread"])
        .status()
        .expect("running cc");
    assert!(st.success(), "cc failed on {}", src.display());
    built.push((name, out.clone()));
    out
}

/// The memory path against the software GPU: copies of every size class
/// (256 MiB is 32 chunks), memsets, unified and 2D copies, page-locked
/// guest memory, pointer attributes, cuMemGetInfo, rejected ranges and
/// double frees, streams and async copies, stream-ordered allocation, VMM,
/// and 8 threads at once.
#[test]
fn memory_path() {
    let host = Host::start();
    let out = Command::new(c_program("memory"))
        .arg(artifact("libvgpu_cuda.so"))
        .env("VGPU_HOST", &host.endpoint)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .output()
        .expect("running the memory program");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("--- memory\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && failures(&text).is_empty(),
        "failed checks: {:#?}",
        failures(&text)
    );
    assert!(text.contains("vmm-attribute 1"), "{text}");
    assert!(text.lines().filter(|l| l.starts_with("ok ")).count() > 150);
}
