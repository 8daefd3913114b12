//! The bootstrap surface libcudart relies on — cuGetProcAddress_v2, the
//! CUDART_INTERFACE and context-local-storage tables, CLS destructors, a
//! forked child — driven by `tests/c/darkapi.c` against a real
//! `vgpu host --driver emulated`.
//!
//! Needs the workspace's artifacts next to this test's executable
//! (`cargo build --workspace` first) and a C compiler (`cc`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn artifact(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let p = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: run cargo build --workspace first",
        p.display()
    );
    p
}

/// Kills and reaps the daemon, and removes its directory, however the test
/// ends.
struct Host {
    child: Child,
    dir: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_host(dir: &Path) -> (Host, String) {
    let endpoint = format!("unix:{}", dir.join("s").display());
    let mut child = Command::new(artifact("vgpu"))
        .args(["host", "--listen", &endpoint, "--driver", "emulated"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning vgpu host");
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let host = Host {
        child,
        dir: dir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains("listening on") => return (host, endpoint),
            Ok(line) => seen.push(line),
            Err(_) => panic!("vgpu host did not start:\n{}", seen.join("\n")),
        }
    }
}

#[test]
fn bootstrap_tables_cls_and_fork() {
    artifact("libvgpu_emu.so");
    let dir = std::env::temp_dir().join(format!("vgpu-darkapi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let exe = dir.join("darkapi");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/darkapi.c");
    let st = Command::new("cc")
        .args(["-Wall", "-Werror", "-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-ldl")
        .status()
        .expect("running cc");
    assert!(st.success(), "cc failed on {}", src.display());

    let (_host, endpoint) = start_host(&dir);
    let out = Command::new(&exe)
        .arg(artifact("libvgpu_cuda.so"))
        .env("VGPU_HOST", &endpoint)
        .env_remove("CUDA_VISIBLE_DEVICES")
        .env_remove("VGPU_TEST_CORRUPT_INTEGRITY")
        .output()
        .expect("running darkapi probe");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success() && failed.is_empty(),
        "failed: {failed:#?}"
    );
    assert!(text.contains("ok child passed"), "{text}");
    assert!(text.contains("done failures=0"), "{text}");
}
