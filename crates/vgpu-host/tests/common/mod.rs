//! A `vgpu host` daemon under test, and clients for it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vgpu_transport::proto::Hello;
use vgpu_transport::{Client, Endpoint, HandshakeError};

/// target/<profile>/, where the `vgpu` binary and libvgpu_emu.so are.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .to_path_buf();
    for f in ["vgpu", "libvgpu_emu.so"] {
        assert!(
            dir.join(f).is_file(),
            "{} is missing: run cargo build --workspace first (with the same \
             CARGO_TARGET_DIR and profile as this test)",
            dir.join(f).display()
        );
    }
    dir
}

pub fn vgpu_bin() -> PathBuf {
    target_dir().join("vgpu")
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("vgpu-host-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Daemon {
    pub child: Option<Child>,
    pub endpoints: Vec<Endpoint>,
    pub log: PathBuf,
    pub dir: TempDir,
}

impl Daemon {
    /// `vgpu host --listen unix:<tmp>/s [extra...]`, up and listening.
    pub fn start(extra: &[&str]) -> Daemon {
        let dir = TempDir::new("d");
        let sock = dir.0.join("s");
        let mut args: Vec<String> = vec![
            "host".into(),
            "--listen".into(),
            format!("unix:{}", sock.display()),
        ];
        args.extend(
            extra
                .iter()
                .map(|s| s.replace("{dir}", &dir.0.display().to_string())),
        );
        if !extra.contains(&"--driver") {
            args.extend(["--driver".into(), "emulated".into()]);
        }
        Daemon::spawn(dir, &args)
    }

    pub fn spawn(dir: TempDir, args: &[String]) -> Daemon {
        let log = dir.0.join("daemon.log");
        let mut child = Command::new(vgpu_bin())
            .args(args)
            .env("VGPU_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start vgpu host");
        let wanted = args.iter().filter(|a| *a == "--listen").count();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut endpoints = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while endpoints.len() < wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    if let Some(ep) = l.strip_prefix("listening on ") {
                        endpoints.push(ep.parse().unwrap());
                    }
                }
                Err(_) => panic!(
                    "daemon did not print `listening on` ({:?}); log:\n{}",
                    child.try_wait(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        }
        Daemon {
            child: Some(child),
            endpoints,
            log,
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has a line containing every one of `parts`.
    pub fn wait_log(&self, parts: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(l) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return l.to_string();
            }
            if Instant::now() > deadline {
                panic!("no log line with {parts:?}; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn unix(&self) -> &Endpoint {
        &self.endpoints[0]
    }

    pub fn connect(&self) -> Client {
        connect(self.unix(), None).expect("handshake")
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("daemon ignored SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Pids of this daemon's workers, from /proc.
    pub fn workers(&self) -> Vec<(i32, u64)> {
        let me = self.pid() as i32;
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
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
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
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

    pub fn worker_of(&self, session: u64) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some((pid, _)) = self.workers().into_iter().find(|(_, s)| *s == session) {
                return pid;
            }
            assert!(Instant::now() < deadline, "no worker for session {session}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("VGPU_TEST_SHOW_LOG").is_some() {
            eprintln!("---- daemon log ----\n{}", self.log());
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

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

pub fn hexs(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
