//! The supervisor: listens, admits connections, and hands each admitted
//! guest to a fresh worker process. It never initializes the driver itself,
//! so nothing a guest does can wedge or crash it.
//!
//! Threads: one accept loop per listener; a short-lived handshake thread per
//! connection (bounded, with a read timeout, so silent clients cannot pin
//! resources); one spawner thread that forks every worker (a worker's
//! parent-death signal is tied to the thread that forked it, so that thread
//! must live as long as the daemon); one reaper; the main thread waits for
//! SIGTERM/SIGINT/SIGHUP.
//!
//! Host configuration handed to every worker through its environment: the
//! software GPU's profile (`--profile`, as `VGPU_EMU_PROFILE`) and the
//! devices guests see (`--devices`, as `CUDA_VISIBLE_DEVICES`, which the
//! real driver and the software GPU both apply — so ordinals, peer access
//! and every device-numbered call inside the worker are the guest's).
//!
//! Admission policy:
//! - Unix sockets: the peer's uid (SO_PEERCRED) must be the daemon's own or
//!   root, plus any `--allow-uid`; `--allow-all-users` lifts the check (the
//!   socket file's permissions then decide).
//! - TCP/vsock: when a token is configured, every such peer must present
//!   it, loopback included (any local user can reach loopback). Without a
//!   token only loopback TCP listeners are allowed, and only loopback peers
//!   are admitted.

use crate::driver::{self, DriverChoice, DriverKind, ResolvedDriver};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::io::Write;
use std::net::ToSocketAddrs;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vgpu_transport::codec::to_bytes;
use vgpu_transport::conn::{accept_hello, Admission};
use vgpu_transport::endpoint::Listener;
use vgpu_transport::frame::{write_frame, Header, HEADER_LEN};
use vgpu_transport::proto::{refusal, Hello, HELLO_OP};
use vgpu_transport::{Endpoint, Peer, Stream};

/// How long a new connection may take to send its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once; connections beyond it are dropped.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Largest handshake frame read; a `Hello` is a few hundred bytes, and this
/// keeps a hostile header from making the supervisor allocate megabytes.
pub const MAX_HELLO: u32 = 64 * 1024;

pub struct HostConfig {
    pub listen: Vec<Endpoint>,
    /// Contents of `--token-file`, trimmed.
    pub token: Option<String>,
    pub driver: DriverChoice,
    /// Unix peers allowed; `None` = any uid.
    pub allowed_uids: Option<Vec<u32>>,
    /// Device memory each guest may hold, in bytes; `None` = no cap.
    pub quota: Option<u64>,
    /// The software GPU's profile (`--profile`); only with that driver.
    pub profile: Option<String>,
    /// Which host devices guests see, in that order (`--devices`).
    pub devices: Option<DeviceSelection>,
}

/// `--devices 0,2` or `--devices GPU-8d2c...,GPU-1f0e...`: host devices by
/// CUDA ordinal or by (a prefix of) their UUID, in the order guests number
/// them. Applied as the workers' `CUDA_VISIBLE_DEVICES`, so the NVIDIA
/// driver's own rules pick the devices (MIG-... UUIDs included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSelection(pub Vec<String>);

impl std::str::FromStr for DeviceSelection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut v: Vec<String> = Vec::new();
        for e in s.split(',').map(str::trim) {
            let uuid = ["GPU-", "MIG-"]
                .iter()
                .any(|p| e.len() > 4 && e[..4].eq_ignore_ascii_case(p));
            let ordinal = !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit());
            if !uuid && !ordinal {
                return Err(format!(
                    "`{e}`: a device is a CUDA ordinal (0, 1, ...) or a UUID (GPU-...)"
                ));
            }
            if v.iter().any(|x| x.eq_ignore_ascii_case(e)) {
                return Err(format!("`{e}` is listed twice"));
            }
            v.push(e.to_string());
        }
        Ok(DeviceSelection(v))
    }
}

impl std::fmt::Display for DeviceSelection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// Refuses a profile the driver cannot take: profiles belong to the
/// software GPU, and the name must be one its library knows.
fn check_profile(driver: &ResolvedDriver, profile: &str) -> Result<(), String> {
    if driver.kind != DriverKind::Emulated {
        return Err(format!(
            "--profile {profile}: profiles are host configurations of the software GPU, \
             and the driver is {driver}; use --driver emulated"
        ));
    }
    let known = driver::emu_profiles(&driver.cuda_lib)?;
    if !known.iter().any(|k| k == profile) {
        return Err(format!(
            "--profile {profile}: no such profile (known: {})",
            known.join(", ")
        ));
    }
    Ok(())
}

impl HostConfig {
    /// The default Unix policy: this daemon's uid and root.
    pub fn default_uids() -> Vec<u32> {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let mut v = vec![me];
        if me != 0 {
            v.push(0);
        }
        v
    }
}

/// Reads a token file: its contents without surrounding whitespace.
pub fn read_token_file(p: &std::path::Path) -> Result<String, String> {
    let s = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("{}: token file is empty", p.display()));
    }
    Ok(t.to_string())
}

/// Refuses configurations that would expose the GPU without a token.
fn check_exposure(cfg: &HostConfig) -> Result<(), String> {
    if cfg.token.is_some() {
        return Ok(());
    }
    for ep in &cfg.listen {
        match ep {
            Endpoint::Unix(_) => {}
            Endpoint::Tcp(a) => {
                let addrs: Vec<_> = a
                    .to_socket_addrs()
                    .map_err(|e| format!("{ep}: {e}"))?
                    .collect();
                if addrs.is_empty() || addrs.iter().any(|s| !s.ip().is_loopback()) {
                    return Err(format!(
                        "{ep} accepts connections from other machines, which would give \
                         anyone who can reach it your GPU: pass --token-file FILE (guests \
                         then need the same token), or listen on 127.0.0.1 / a unix socket"
                    ));
                }
            }
            Endpoint::Vsock { .. } => {
                return Err(format!(
                    "{ep}: vsock peers are other machines (VMs); pass --token-file FILE"
                ))
            }
        }
    }
    Ok(())
}

/// A running worker, as the supervisor remembers it.
struct ChildInfo {
    session: u64,
    peer: String,
    started: Instant,
}

struct Shared {
    driver: ResolvedDriver,
    token: Option<String>,
    allowed_uids: Vec<u32>,
    /// Unreaped workers by pid. The reaper removes an entry in the same
    /// critical section that reaps it, so a pid found here is never a
    /// recycled one — signalling it is safe.
    children: Mutex<HashMap<i32, ChildInfo>>,
    child_added: Condvar,
    next_session: AtomicU64,
    pending: AtomicUsize,
    exe: PathBuf,
    quota: Option<u64>,
    profile: Option<String>,
    devices: Option<DeviceSelection>,
}

struct SpawnJob {
    stream: Stream,
    hello: Hello,
    peer: Peer,
}

/// Runs the daemon until SIGTERM/SIGINT/SIGHUP.
pub fn run(cfg: HostConfig) -> Result<(), String> {
    let (driver, notes) = driver::resolve(&cfg.driver)?;
    tracing::info!("driver: {driver}");
    for n in notes {
        if n.warning {
            tracing::warn!("{}", n.text);
        } else {
            tracing::info!("{}", n.text);
        }
    }
    if let Some(p) = &cfg.profile {
        check_profile(&driver, p)?;
        tracing::info!("profile: {p}");
    }
    if let Some(d) = &cfg.devices {
        tracing::info!("devices: {d} (the workers' CUDA_VISIBLE_DEVICES)");
    }
    check_exposure(&cfg)?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;

    // Before any thread exists, so every thread inherits the mask and only
    // the main thread's sigwait sees these signals.
    let sigs = termination_signals();
    // SAFETY: `sigs` is an initialized sigset; blocking signals in this
    // thread has no memory-safety effect.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &sigs, std::ptr::null_mut()) };

    let mut listeners = Vec::new();
    let mut socket_files = Vec::new();
    for ep in &cfg.listen {
        let l = ep.listen().map_err(|e| format!("{ep}: {e}"))?;
        if let Endpoint::Unix(p) = ep {
            socket_files.push(p.clone());
        }
        listeners.push(l);
    }
    let shared = Arc::new(Shared {
        driver,
        token: cfg.token,
        allowed_uids: cfg.allowed_uids.unwrap_or_default(),
        children: Mutex::new(HashMap::new()),
        child_added: Condvar::new(),
        next_session: AtomicU64::new(1),
        pending: AtomicUsize::new(0),
        exe,
        quota: cfg.quota,
        profile: cfg.profile,
        devices: cfg.devices,
    });

    let (tx, rx) = mpsc::channel::<SpawnJob>();
    {
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || spawner(sh, rx))
            .map_err(|e| e.to_string())?;
        let sh = shared.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || reaper(sh))
            .map_err(|e| e.to_string())?;
    }
    let mut out = std::io::stdout().lock();
    for l in listeners {
        let ep = l.local_endpoint().map_err(|e| e.to_string())?;
        let sh = shared.clone();
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("accept {ep}"))
            .spawn(move || accept_loop(l, sh, tx))
            .map_err(|e| e.to_string())?;
        tracing::info!("listening on {ep}");
        let _ = writeln!(out, "listening on {ep}");
        let _ = out.flush();
    }
    drop(out);
    drop(tx);

    let sig = wait_for_signal(&sigs);
    tracing::info!("signal {sig}: shutting down");
    shutdown(&shared);
    for p in socket_files {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialize and fill a sigset we own.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        libc::sigaddset(&mut s, libc::SIGTERM);
        libc::sigaddset(&mut s, libc::SIGINT);
        libc::sigaddset(&mut s, libc::SIGHUP);
        s
    }
}

fn wait_for_signal(sigs: &libc::sigset_t) -> i32 {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `sigs` is initialized; `sig` is a valid out-pointer.
        if unsafe { libc::sigwait(sigs, &mut sig) } == 0 {
            return sig;
        }
    }
}

/// Terminates every worker: SIGTERM, then SIGKILL for any still there.
fn shutdown(sh: &Shared) {
    let signal_all = |sig: i32| -> usize {
        let children = sh.children.lock();
        for pid in children.keys() {
            // SAFETY: kill has no memory effects; the pid is an unreaped
            // child of ours (see `Shared::children`), never a recycled pid.
            unsafe { libc::kill(*pid, sig) };
        }
        children.len()
    };
    if signal_all(libc::SIGTERM) == 0 {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if sh.children.lock().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let n = signal_all(libc::SIGKILL);
    tracing::warn!("{n} worker(s) ignored SIGTERM; killed");
    std::thread::sleep(Duration::from_millis(100));
}

fn accept_loop(l: Listener, sh: Arc<Shared>, tx: mpsc::Sender<SpawnJob>) {
    loop {
        let (stream, peer) = match l.accept() {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if sh.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING_HANDSHAKES {
            sh.pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("{peer}: too many handshakes in progress; dropped");
            continue;
        }
        let sh2 = sh.clone();
        let tx = tx.clone();
        let r = std::thread::Builder::new()
            .name("handshake".into())
            .spawn(move || {
                admit(stream, peer, &sh2, &tx);
                sh2.pending.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = r {
            sh.pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("cannot start a handshake thread: {e}");
        }
    }
}

fn refuse(stream: &mut Stream, code: u32, why: &str) {
    let h = Header {
        op: HELLO_OP,
        status: code,
        ..Default::default()
    };
    let _ = write_frame(stream, h, &to_bytes(&why.to_string()));
}

/// Checks a new connection's handshake; an admitted one goes to the spawner.
fn admit(mut stream: Stream, peer: Peer, sh: &Shared, tx: &mpsc::Sender<SpawnJob>) {
    if let Stream::Tcp(t) = &stream {
        keepalive(t.as_raw_fd());
    }
    if let Err(e) = stream.set_timeouts(Some(HANDSHAKE_TIMEOUT)) {
        tracing::debug!("{peer}: {e}");
        return;
    }
    match peek_len(&stream) {
        Ok(n) if n <= MAX_HELLO => {}
        Ok(n) => {
            tracing::warn!("{peer}: refused: handshake frame of {n} bytes");
            refuse(&mut stream, refusal::BAD_MAGIC, "handshake frame too large");
            return;
        }
        Err(e) => {
            tracing::info!("{peer}: no handshake: {e}");
            return;
        }
    }
    let adm = Admission {
        build_id: vgpu_transport::BUILD_ID,
        token: sh.token.as_deref(),
        allowed_uids: &sh.allowed_uids,
    };
    let hello = match accept_hello(&mut stream, &peer, &adm) {
        Ok(h) => h,
        Err(why) => {
            tracing::warn!("{peer}: refused: {why}");
            return;
        }
    };
    // accept_hello lets loopback TCP in without a token; with a token
    // configured we require it from every network peer (see module docs).
    if !matches!(peer, Peer::Unix { .. }) {
        if let Some(want) = &sh.token {
            let ok = hello
                .token
                .as_deref()
                .is_some_and(|got| same_secret(want.as_bytes(), got.as_bytes()));
            if !ok {
                tracing::warn!("{peer}: refused: missing or wrong token");
                refuse(&mut stream, refusal::BAD_TOKEN, "missing or wrong token");
                return;
            }
        }
    }
    if let Err(e) = stream.set_timeouts(None) {
        tracing::debug!("{peer}: {e}");
        return;
    }
    let _ = tx.send(SpawnJob {
        stream,
        hello,
        peer,
    });
}

/// TCP keepalive on a guest connection: a remote guest that vanishes without
/// closing (a crashed VM, a cut network) is then noticed within about two
/// minutes, and its worker exits and frees the GPU memory it held. The
/// option lives on the socket, so the worker inherits it.
fn keepalive(fd: std::os::fd::RawFd) {
    let set = |level: i32, opt: i32, v: i32| {
        // SAFETY: setsockopt with an int we own, of the size passed.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                &v as *const i32 as *const libc::c_void,
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 60);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 10);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6);
}

/// Constant-time comparison, so response timing does not leak the token.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The payload length the first frame announces, without consuming it.
fn peek_len(stream: &Stream) -> std::io::Result<u32> {
    let mut b = [0u8; HEADER_LEN];
    loop {
        // SAFETY: `b` is valid for HEADER_LEN writable bytes.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                b.as_mut_ptr() as *mut libc::c_void,
                HEADER_LEN,
                libc::MSG_PEEK | libc::MSG_WAITALL,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if (n as usize) < HEADER_LEN {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        return Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    }
}

fn spawner(sh: Arc<Shared>, rx: mpsc::Receiver<SpawnJob>) {
    // SAFETY: getpid has no preconditions.
    let supervisor = unsafe { libc::getpid() };
    for mut job in rx {
        let session = sh.next_session.fetch_add(1, Ordering::SeqCst);
        let mut hello = job.hello.clone();
        // The token is the supervisor's business; keep it off command lines.
        hello.token = None;
        let fd = job.stream.as_raw_fd();
        let mut cmd = Command::new(&sh.exe);
        cmd.arg("worker")
            .args(["--fd", &fd.to_string()])
            .args(["--session", &session.to_string()])
            .args(["--driver", sh.driver.kind.as_str()])
            .arg("--cuda-lib")
            .arg(&sh.driver.cuda_lib);
        if let Some(p) = &sh.driver.nvml_lib {
            cmd.arg("--nvml-lib").arg(p);
        }
        if let Some(q) = sh.quota {
            cmd.args(["--quota-bytes", &q.to_string()]);
        }
        if let Some(p) = &sh.profile {
            cmd.env(driver::EMU_PROFILE_ENV, p);
        }
        if let Some(d) = &sh.devices {
            cmd.env("CUDA_VISIBLE_DEVICES", d.to_string());
        }
        cmd.args(["--hello", &hex(&to_bytes(&hello))])
            .stdin(Stdio::null())
            // stdout belongs to the daemon's "listening on" contract.
            .stdout(Stdio::null());
        let unblock = termination_signals();
        // SAFETY: the closure runs between fork and exec and calls only
        // async-signal-safe functions (fcntl, prctl, getppid, sigprocmask);
        // it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                // The connection is the one descriptor the worker inherits:
                // the child's own fd table is edited, not the supervisor's.
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // A worker must not outlive a supervisor killed outright.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != supervisor {
                    return Err(std::io::Error::other("supervisor exited"));
                }
                // The supervisor blocks these for sigwait; a worker must die
                // of them normally.
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &unblock, std::ptr::null_mut());
                Ok(())
            });
        }
        // Held across spawn + insert so the reaper cannot reap a worker that
        // exits at once before it is registered.
        let mut children = sh.children.lock();
        match cmd.spawn() {
            Ok(child) => {
                let pid = child.id() as i32;
                tracing::info!(
                    "session {session}: {} (guest pid {}) -> worker pid {pid}",
                    job.peer,
                    job.hello.pid
                );
                children.insert(
                    pid,
                    ChildInfo {
                        session,
                        peer: job.peer.to_string(),
                        started: Instant::now(),
                    },
                );
                sh.child_added.notify_all();
                // Reaping is the reaper's job (waitpid), not Child's.
                drop(child);
            }
            Err(e) => {
                drop(children);
                tracing::error!("session {session}: cannot start a worker: {e}");
                refuse(
                    &mut job.stream,
                    refusal::HOST_UNAVAILABLE,
                    &format!("host could not start a worker: {e}"),
                );
            }
        }
        // The supervisor's copy of the connection closes here; the worker
        // holds its own.
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes the supervisor's hex encoding of the worker's `--hello`.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn reaper(sh: Arc<Shared>) {
    loop {
        // SAFETY: siginfo_t is plain old data.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // Wait without reaping, so the pid stays ours until the lock below.
        // SAFETY: `info` is a valid out-pointer.
        let r = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => {}
                Some(libc::ECHILD) => {
                    let mut c = sh.children.lock();
                    if c.is_empty() {
                        sh.child_added.wait_for(&mut c, Duration::from_secs(1));
                    }
                }
                _ => {
                    tracing::error!("waitid: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            continue;
        }
        // SAFETY: waitid succeeded with WEXITED, so si_pid is set.
        let pid = unsafe { info.si_pid() };
        let mut children = sh.children.lock();
        let mut status: libc::c_int = 0;
        // SAFETY: reaps exactly the child waitid reported.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        let child = children.remove(&pid);
        drop(children);
        if r != pid {
            continue;
        }
        let how = if libc::WIFEXITED(status) {
            format!("exited with status {}", libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("ended (wait status {status:#x})")
        };
        match child {
            Some(c) => tracing::info!(
                "session {}: worker pid {pid} ({}) {how} after {:.1}s",
                c.session,
                c.peer,
                c.started.elapsed().as_secs_f64()
            ),
            None => tracing::info!("child pid {pid} {how}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(listen: &[&str], token: Option<&str>) -> HostConfig {
        HostConfig {
            listen: listen.iter().map(|s| s.parse().unwrap()).collect(),
            token: token.map(String::from),
            driver: DriverChoice::Emulated,
            allowed_uids: None,
            quota: None,
            profile: None,
            devices: None,
        }
    }

    #[test]
    fn exposure_policy() {
        assert!(check_exposure(&cfg(&["unix:/tmp/x", "tcp:127.0.0.1:1"], None)).is_ok());
        let e = check_exposure(&cfg(&["tcp:0.0.0.0:7070"], None)).unwrap_err();
        assert!(e.contains("--token-file"), "{e}");
        assert!(check_exposure(&cfg(&["vsock:3:7070"], None)).is_err());
        assert!(check_exposure(&cfg(&["tcp:0.0.0.0:7070"], Some("t"))).is_ok());
    }

    #[test]
    fn device_selections() {
        let d: DeviceSelection = "0, 2".parse().unwrap();
        assert_eq!(d.to_string(), "0,2");
        let d: DeviceSelection = "GPU-8d2c1a,gpu-00ff,MIG-abc/1/2".parse().unwrap();
        assert_eq!(d.0.len(), 3);
        for bad in ["", "0,,1", "-1", "x", "0,0", "GPU-", "1.5"] {
            assert!(bad.parse::<DeviceSelection>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn profiles_need_the_software_gpu() {
        let real = ResolvedDriver {
            kind: DriverKind::Nvidia,
            cuda_lib: "/usr/lib/libcuda.so.1".into(),
            nvml_lib: None,
        };
        let e = check_profile(&real, "l4").unwrap_err();
        assert!(e.contains("--driver emulated"), "{e}");
    }

    #[test]
    fn hex_round_trip() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn secrets_compare() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
