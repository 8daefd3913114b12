//! Hand-written PTX through libvgpu_cuda.so's driver API against a real
//! `vgpu host --driver emulated`: tests/c/kernels.c dlopens the library the
//! way an application would and checks every result itself.
//!
//! Needs `cargo build --workspace` first (the daemon, the software GPU and
//! the cdylib next to this test's executable) and `cc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// target/<profile>/, from target/<profile>/deps/kernels-<hash>.
fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

fn artifact(name: &str) -> PathBuf {
    let p = artifacts().join(name);
    assert!(
        p.exists(),
        "{}: run cargo build --workspace first",
        p.display()
    );
    p
}

/// The emulated daemon on a socket of its own; killed when dropped.
struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    fn start() -> Daemon {
        artifact("libvgpu_emu.so");
        let dir = std::env::temp_dir().join(format!("vgpu-shim-kernels-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let sock = dir.join("s");
        let child = Command::new(artifact("vgpu"))
            .args(["host", "--driver", "emulated", "--listen"])
            .arg(format!("unix:{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vgpu host");
        // The socket appears once the daemon listens.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            assert!(Instant::now() < deadline, "vgpu host never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, dir }
    }

    fn endpoint(&self) -> String {
        format!("unix:{}", self.dir.join("s").display())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn hand_written_ptx_end_to_end() {
    let daemon = Daemon::start();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/kernels.c");
    let exe = daemon.dir.join("kernels");
    let st = Command::new("cc")
        .args(["-Wall", "-Werror", "-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("cc");
    assert!(st.success(), "cc failed on {}", src.display());
    let out = Command::new(&exe)
        .arg(artifact("libvgpu_cuda.so"))
        .env("VGPU_HOST", daemon.endpoint())
        .env("VGPU_LOG", "warn")
        .env_remove("CUDA_VISIBLE_DEVICES")
        .output()
        .expect("run kernels");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "failed checks: {failed:#?}");
    assert!(out.status.success() && text.contains("done failures=0"));
}
