//! The supervisor: listens, admits connections, and hands each admitted
//! guest to a fresh worker process. It never initializes the driver itself,
//! so nothing a guest does can wedge or crash it.
//!
//! Threads: one accept loop per listener; a short-lived handshake thread per
//! connection (bounded in number and by one deadline, so silent clients
//! cannot pin resources); one spawner thread that forks every worker (a worker's
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
//! Admission policy (docs/security.md, "Admission" and "Guest principals
//! and limits"):
//! - Unix sockets: a token of a guest file makes the peer that principal;
//!   otherwise the peer's uid (SO_PEERCRED) must be named by a guest file,
//!   or be the daemon's own or root, plus any `--allow-uid`;
//!   `--allow-all-users` lifts the uid check (the socket file's
//!   permissions then decide).
//! - TCP/vsock: when any token is configured (`--token-file`, guest
//!   files), every such peer must present one, loopback included (any
//!   local user can reach loopback). Without a token only loopback TCP
//!   listeners are allowed, and a loopback peer is the uid owning its
//!   socket, under the Unix policy.
//! - Handshakes are bounded by [`admission`]; an identified guest is then
//!   held to its connection limit and the host's, and its worker gets the
//!   principal's account page ([`crate::account`]) and limits.

use crate::account::{Account, MAX_SLOTS};
use crate::admission::{self, PeerKey, Pending};
use crate::driver::{self, DriverChoice, DriverKind, ResolvedDriver};
use crate::principal::{GuestSpec, GuestsDir, Limits};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::io::Write;
use std::net::ToSocketAddrs;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vgpu_transport::codec::to_bytes;
use vgpu_transport::conn::check_hello;
use vgpu_transport::endpoint::Listener;
use vgpu_transport::frame::{write_frame, Header};
use vgpu_transport::proto::{refusal, Hello, HELLO_OP};
use vgpu_transport::{Endpoint, Peer, Stream};

/// How long a new connection may take to send its whole handshake (one
/// deadline for all of it, not per read).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest handshake frame read; a `Hello` is a few hundred bytes.
pub const MAX_HELLO: u32 = 4096;
/// Connections (workers) the host serves at once, over all guests, unless
/// `--max-connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Connections one guest may hold at once unless its limits say otherwise.
pub const DEFAULT_GUEST_CONNECTIONS: u64 = 64;

pub struct HostConfig {
    pub listen: Vec<Endpoint>,
    /// Contents of `--token-file`, trimmed.
    pub token: Option<String>,
    pub driver: DriverChoice,
    /// Unix peers allowed; `None` = any uid.
    pub allowed_uids: Option<Vec<u32>>,
    /// Limits of every guest without its own in `guests_dir`
    /// (`--guest-memory-mib`, ...).
    pub defaults: Limits,
    /// `--guests-dir`: one `<name>.conf` per principal.
    pub guests_dir: Option<PathBuf>,
    /// Connections served at once, over all guests.
    pub max_connections: usize,
    /// The mode of Unix socket files (`--socket-mode`), set explicitly
    /// rather than left to the umask.
    pub socket_mode: u32,
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

/// Reads a token file: its contents without surrounding whitespace. A
/// file other users may read is refused: the token is the credential.
pub fn read_token_file(p: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(p)
        .map_err(|e| format!("{}: {e}", p.display()))?
        .permissions()
        .mode();
    if mode & 0o004 != 0 {
        return Err(format!(
            "{}: every user may read this token file (mode {:o}); chmod o-r it",
            p.display(),
            mode & 0o777
        ));
    }
    let s = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("{}: token file is empty", p.display()));
    }
    Ok(t.to_string())
}

/// Refuses configurations that would expose the GPU without a token.
fn check_exposure(cfg: &HostConfig) -> Result<(), String> {
    // With a guests dir, network guests need a token of its files.
    if cfg.token.is_some() || cfg.guests_dir.is_some() {
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
    principal: String,
    slot: usize,
}

/// A principal with connections (or recently with some).
struct PrincipalState {
    account: Arc<Account>,
    /// Connection slots in use (rows of `account`).
    slots: Vec<bool>,
}

/// A connection slot reserved for an admitted guest.
struct Slot {
    index: usize,
    account: Arc<Account>,
}

struct Shared {
    driver: ResolvedDriver,
    token: Option<String>,
    allowed_uids: Vec<u32>,
    guests: Option<Mutex<GuestsDir>>,
    defaults: Limits,
    max_connections: usize,
    principals: Mutex<HashMap<String, PrincipalState>>,
    /// Unreaped workers by pid. The reaper removes an entry in the same
    /// critical section that reaps it, so a pid found here is never a
    /// recycled one — signalling it is safe.
    children: Mutex<HashMap<i32, ChildInfo>>,
    child_added: Condvar,
    next_session: AtomicU64,
    pending: Pending,
    exe: PathBuf,
    profile: Option<String>,
    devices: Option<DeviceSelection>,
}

struct SpawnJob {
    stream: Stream,
    hello: Hello,
    peer: Peer,
    principal: String,
    limits: Limits,
    slot: Slot,
}

impl Shared {
    /// The guest files, re-read if the directory changed.
    fn policy(&self) -> Policy {
        let guests = match &self.guests {
            Some(g) => {
                let mut g = g.lock();
                g.refresh();
                g.guests.clone()
            }
            None => Vec::new(),
        };
        Policy { guests }
    }

    /// Reserves a connection slot of `name`, or says which limit is full.
    fn reserve(&self, name: &str, limits: &Limits) -> Result<Slot, String> {
        let mut all = self.principals.lock();
        let serving: usize = all
            .values()
            .map(|p| p.slots.iter().filter(|s| **s).count())
            .sum();
        if serving >= self.max_connections {
            return Err(format!(
                "the host serves its maximum of {} connections",
                self.max_connections
            ));
        }
        let cap = limits
            .connections
            .unwrap_or(DEFAULT_GUEST_CONNECTIONS)
            .min(MAX_SLOTS as u64) as usize;
        let st = match all.get_mut(name) {
            Some(s) => s,
            None => {
                let account = Account::create(name)
                    .map_err(|e| format!("host cannot account for a new guest: {e}"))?;
                all.entry(name.to_string()).or_insert(PrincipalState {
                    account: Arc::new(account),
                    slots: vec![false; MAX_SLOTS],
                })
            }
        };
        let held = st.slots.iter().filter(|s| **s).count();
        if held >= cap {
            return Err(format!(
                "guest {name} already has {held} connection(s), its limit"
            ));
        }
        let index = st.slots.iter().position(|s| !*s).expect("below MAX_SLOTS");
        st.slots[index] = true;
        st.account.clear(index);
        Ok(Slot {
            index,
            account: st.account.clone(),
        })
    }

    /// Gives a slot back: what its worker held no longer counts.
    fn release(&self, name: &str, index: usize) {
        let mut all = self.principals.lock();
        if let Some(st) = all.get_mut(name) {
            st.account.clear(index);
            st.slots[index] = false;
        }
    }
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
    let mut defaults = cfg.defaults;
    // The software GPU has no legitimate kernel that runs for minutes; a
    // real GPU's may (docs/security.md, "Runaway work").
    if driver.kind == DriverKind::Emulated && defaults.kernel_time_ms.is_none() {
        defaults.kernel_time_ms = Some(crate::worker::watchdog::DEFAULT_SOFTWARE_GPU_LIMIT_MS);
    }
    if let Some(ms) = defaults.kernel_time_ms.filter(|ms| *ms > 0) {
        tracing::info!("kernel time limit: {ms} ms per request");
    }
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
            use std::os::unix::fs::PermissionsExt;
            // Until this the umask decided; a connect needs write access,
            // and the uid policy is checked on top.
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(cfg.socket_mode))
                .map_err(|e| format!("{ep}: chmod {:o}: {e}", cfg.socket_mode))?;
            socket_files.push(p.clone());
        }
        listeners.push(l);
    }
    let guests = cfg.guests_dir.map(|d| {
        let mut g = GuestsDir::new(d);
        g.refresh();
        Mutex::new(g)
    });
    let shared = Arc::new(Shared {
        driver,
        token: cfg.token,
        allowed_uids: cfg.allowed_uids.unwrap_or_default(),
        guests,
        defaults,
        max_connections: cfg.max_connections,
        principals: Mutex::new(HashMap::new()),
        children: Mutex::new(HashMap::new()),
        child_added: Condvar::new(),
        next_session: AtomicU64::new(1),
        pending: Pending::default(),
        exe,
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
        let sh2 = sh.clone();
        let tx = tx.clone();
        // The place is taken here, before the thread exists, so a burst of
        // connections cannot start more threads than there are places.
        let (tx_ready, rx_ready) = mpsc::sync_channel::<()>(1);
        let r = std::thread::Builder::new()
            .name("handshake".into())
            .spawn(move || {
                let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
                let entered = sh2.pending.enter(PeerKey::of(&peer), &stream, deadline);
                let _ = tx_ready.send(());
                match entered {
                    Ok(guard) => admit(stream, peer, guard, deadline, &sh2, &tx),
                    Err(why) => {
                        let mut stream = stream;
                        refuse_logged(&mut stream, &peer, refusal::LIMIT_REACHED, &why);
                    }
                }
            });
        match r {
            Ok(_) => {
                let _ = rx_ready.recv();
            }
            Err(e) => tracing::warn!("cannot start a handshake thread: {e}"),
        }
    }
}

fn refuse(stream: &mut Stream, code: u32, why: &str) {
    // A refusal must not block the thread on a peer that does not read.
    let _ = stream.set_timeouts(Some(Duration::from_millis(200)));
    let h = Header {
        op: HELLO_OP,
        status: code,
        ..Default::default()
    };
    let _ = write_frame(stream, h, &to_bytes(&why.to_string()));
}

/// Refuses, with the reason in the host log and in the guest's error.
fn refuse_logged(stream: &mut Stream, peer: &Peer, code: u32, why: &str) {
    tracing::warn!("{peer}: refused: {why}");
    refuse(stream, code, why);
}

/// Checks a new connection's handshake and identifies its principal; an
/// admitted one goes to the spawner with its connection slot reserved.
fn admit(
    mut stream: Stream,
    peer: Peer,
    pending: admission::PendingGuard,
    deadline: Instant,
    sh: &Shared,
    tx: &mpsc::Sender<SpawnJob>,
) {
    if let Stream::Tcp(t) = &stream {
        keepalive(t.as_raw_fd());
    }
    let policy = sh.policy();
    // Peer credentials before reading anything: a Unix peer that neither
    // its uid nor any token could admit is refused at once.
    if let Peer::Unix { uid, .. } = &peer {
        if policy.uid_principal(*uid, &sh.allowed_uids).is_none()
            && !policy.any_token_with(&sh.token)
        {
            drop(pending);
            refuse_logged(
                &mut stream,
                &peer,
                refusal::PEER_NOT_ALLOWED,
                &format!("uid {uid} is not allowed"),
            );
            return;
        }
    }
    let frame = admission::read_hello(&mut stream, deadline, MAX_HELLO);
    // Past this point the stream may leave this thread; it must not stay
    // where an eviction could shut it down.
    let evicted = pending.leave();
    let frame = match frame {
        Ok(f) => f,
        Err(admission::HelloReadError::TooLarge(n)) => {
            refuse_logged(
                &mut stream,
                &peer,
                refusal::BAD_MAGIC,
                &format!("handshake frame of {n} bytes (at most {MAX_HELLO})"),
            );
            return;
        }
        Err(admission::HelloReadError::TimedOut) => {
            let why = format!(
                "handshake not completed within {} s",
                HANDSHAKE_TIMEOUT.as_secs()
            );
            refuse_logged(&mut stream, &peer, refusal::TIMED_OUT, &why);
            return;
        }
        Err(admission::HelloReadError::Io(e)) => {
            if evicted {
                tracing::warn!(
                    "{peer}: handshake evicted (held a pending slot while newer connections \
                     waited)"
                );
            } else {
                tracing::info!("{peer}: no handshake: {e}");
            }
            return;
        }
    };
    let hello = match check_hello(&frame, vgpu_transport::BUILD_ID) {
        Ok(h) => h,
        Err((code, why)) => {
            refuse_logged(&mut stream, &peer, code, &why);
            return;
        }
    };
    let who = match identify(&stream, &peer, hello.token.as_deref(), &policy, sh) {
        Ok(w) => w,
        Err((code, why)) => {
            refuse_logged(&mut stream, &peer, code, &why);
            return;
        }
    };
    let limits = who.limits.over(&sh.defaults);
    let slot = match sh.reserve(&who.name, &limits) {
        Ok(s) => s,
        Err(why) => {
            refuse_logged(&mut stream, &peer, refusal::LIMIT_REACHED, &why);
            return;
        }
    };
    if let Err(e) = stream.set_timeouts(None) {
        tracing::debug!("{peer}: {e}");
        sh.release(&who.name, slot.index);
        return;
    }
    let _ = tx.send(SpawnJob {
        stream,
        hello,
        peer,
        principal: who.name,
        limits,
        slot,
    });
}

/// Who a connection is.
struct Who {
    name: String,
    /// The principal's own limits (from its guest file), before defaults.
    limits: Limits,
}

/// The principal of a connection: the guest file whose token it presents
/// (or the `--token-file` token, principal [`TOKEN_PRINCIPAL`]); without a
/// token, a Unix peer's uid (a guest file naming the uid, else `uid-N` if
/// the uid policy admits it). A loopback TCP peer without a token is the
/// uid that owns its socket, under the same uid policy.
fn identify(
    stream: &Stream,
    peer: &Peer,
    token: Option<&str>,
    policy: &Policy,
    sh: &Shared,
) -> Result<Who, (u32, String)> {
    if let Some(t) = token {
        if let Some(w) = policy.token_principal(t, sh.token.as_deref()) {
            return Ok(w);
        }
        // A Unix guest's stray token does not matter: its uid decides.
        if !matches!(peer, Peer::Unix { .. }) {
            return Err((refusal::BAD_TOKEN, "missing or wrong token".into()));
        }
    }
    let uid = match peer {
        Peer::Unix { uid, .. } => *uid,
        Peer::Tcp { addr } if addr.ip().is_loopback() && !policy.any_token_with(&sh.token) => {
            match admission::loopback_uid(stream.as_raw_fd(), *addr) {
                Some(u) => u,
                None => {
                    return Err((
                        refusal::PEER_NOT_ALLOWED,
                        "cannot tell which user owns this loopback connection".into(),
                    ))
                }
            }
        }
        _ => return Err((refusal::BAD_TOKEN, "missing or wrong token".into())),
    };
    policy.uid_principal(uid, &sh.allowed_uids).ok_or_else(|| {
        (
            refusal::PEER_NOT_ALLOWED,
            format!("uid {uid} is not allowed"),
        )
    })
}

/// The principal of the `--token-file` token.
pub const TOKEN_PRINCIPAL: &str = "token";

/// The guest files as of this connection.
struct Policy {
    guests: Vec<GuestSpec>,
}

impl Policy {
    /// Whether any token (a guest file's or `--token-file`'s) exists.
    fn any_token_with(&self, file_token: &Option<String>) -> bool {
        file_token.is_some() || self.guests.iter().any(|g| g.token.is_some())
    }

    fn token_principal(&self, t: &str, file_token: Option<&str>) -> Option<Who> {
        // Every candidate is compared (in constant time each), so timing
        // says nothing about which files exist.
        let mut found = None;
        for g in &self.guests {
            if let Some(want) = &g.token {
                if same_secret(want.as_bytes(), t.as_bytes()) && found.is_none() {
                    found = Some(Who {
                        name: g.name.clone(),
                        limits: g.limits.clone(),
                    });
                }
            }
        }
        if let Some(want) = file_token {
            if same_secret(want.as_bytes(), t.as_bytes()) && found.is_none() {
                found = Some(Who {
                    name: TOKEN_PRINCIPAL.into(),
                    limits: Limits::default(),
                });
            }
        }
        found
    }

    /// A uid's principal, if the uid is admitted: a guest file naming it,
    /// else `uid-N` when the uid policy allows it (empty = any uid).
    fn uid_principal(&self, uid: u32, allowed: &[u32]) -> Option<Who> {
        if let Some(g) = self.guests.iter().find(|g| g.uid == Some(uid)) {
            return Some(Who {
                name: g.name.clone(),
                limits: g.limits.clone(),
            });
        }
        (allowed.is_empty() || allowed.contains(&uid)).then(|| Who {
            name: format!("uid-{uid}"),
            limits: Limits::default(),
        })
    }
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
        let account_fd = job.slot.account.raw_fd();
        cmd.args(["--principal", &job.principal])
            .args(["--account-fd", &account_fd.to_string()])
            .args(["--account-slot", &job.slot.index.to_string()])
            .args(["--limits", &job.limits.to_list()]);
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
                // The connection and the guest's account page are the
                // descriptors the worker inherits:
                // the child's own fd table is edited, not the supervisor's.
                for fd in [fd, account_fd] {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // A worker must not outlive a supervisor killed outright.
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Nothing the worker runs (the driver, its JIT) gains
                // privileges through exec; and no core file holds a
                // guest's data.
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let no_core = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &no_core);
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
                    "session {session}: {} (guest {}, pid {}) -> worker pid {pid}",
                    job.peer,
                    job.principal,
                    job.hello.pid
                );
                children.insert(
                    pid,
                    ChildInfo {
                        session,
                        peer: job.peer.to_string(),
                        started: Instant::now(),
                        principal: job.principal,
                        slot: job.slot.index,
                    },
                );
                sh.child_added.notify_all();
                // Reaping is the reaper's job (waitpid), not Child's.
                drop(child);
            }
            Err(e) => {
                drop(children);
                sh.release(&job.principal, job.slot.index);
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
            Some(c) => {
                sh.release(&c.principal, c.slot);
                tracing::info!(
                    "session {}: worker pid {pid} ({}, guest {}) {how} after {:.1}s",
                    c.session,
                    c.peer,
                    c.principal,
                    c.started.elapsed().as_secs_f64()
                )
            }
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
            defaults: Limits::default(),
            guests_dir: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            socket_mode: 0o666,
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
