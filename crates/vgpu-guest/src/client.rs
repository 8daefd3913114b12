//! The guest's one connection to its host, shared by both shims.
//!
//! Opened lazily by the first call that needs it (cuInit, nvmlInit, a
//! virtual file), never in a constructor. If the host cannot be reached the
//! caller gets [`GuestError::Unavailable`] at once (connect and handshake are
//! bounded by a couple of seconds), so no API call hangs. The host answers
//! the handshake at once and its inventory when its driver is ready, which
//! on a cold host takes a while: that wait has its own, generous deadline
//! (`VGPU_INIT_TIMEOUT`), and a wait longer than a second is logged as "host
//! is initializing" (see [`fetch_inventory`]). After `fork()` the child
//! drops the parent's connection at once (an atfork handler) and opens its
//! own on first use. Every call has a deadline (`VGPU_CALL_TIMEOUT`); a
//! session that breaks or passes it is lost for good in this process —
//! every later call fails with the same error, as after a device loss.
//!
//! Device output — what the guest's kernels `printf`, and the messages of
//! failed device asserts — arrives from the host just before the reply of a
//! call where CUDA flushes it (a synchronization, say) and is written to
//! this process's stdout and stderr ([`write_device_output`]) before that
//! call returns, as a local GPU's driver would print it.

use crate::config::{Config, PciAddress};
use crate::log::Level;
use crate::vlog;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::c_void;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};
use vgpu_transport::codec::{from_bytes, to_bytes};
use vgpu_transport::conn::Replies;
use vgpu_transport::frame::FLAG_NO_REPLY;
use vgpu_transport::proto::{caps, DeviceInfo, DeviceOutput, GetInventory, Hello, Inventory};
use vgpu_transport::{Call, Client, HandshakeError, Status};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestError {
    /// There is no host to talk to: bad configuration, nothing listening,
    /// or the host refused the handshake.
    Unavailable(String),
    /// The host executed the call and answered with this status.
    Status(Status),
    /// The connection broke during the call; the session is gone.
    Lost(String),
}

impl std::fmt::Display for GuestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GuestError::Unavailable(s) => write!(f, "vgpu host unavailable: {s}"),
            GuestError::Status(s) => write!(f, "host answered {s}"),
            GuestError::Lost(s) => write!(f, "connection to vgpu host lost: {s}"),
        }
    }
}

/// One device as this guest presents it: the host's facts with the
/// guest-visible PCI address substituted.
#[derive(Debug, Clone)]
pub struct GuestDevice {
    pub index: u32,
    pub info: DeviceInfo,
    pub pci: PciAddress,
    attributes: HashMap<i32, i32>,
}

/// `CU_DEVICE_ATTRIBUTE_PCI_BUS_ID`, `..._PCI_DEVICE_ID`, `..._PCI_DOMAIN_ID`.
const ATTR_PCI_BUS: i32 = 33;
const ATTR_PCI_DEVICE: i32 = 34;
const ATTR_PCI_DOMAIN: i32 = 50;

impl GuestDevice {
    fn new(index: u32, info: DeviceInfo, pci: PciAddress) -> GuestDevice {
        let mut attributes: HashMap<i32, i32> = info.attributes.iter().copied().collect();
        attributes.insert(ATTR_PCI_BUS, pci.bus as i32);
        attributes.insert(ATTR_PCI_DEVICE, pci.device as i32);
        attributes.insert(ATTR_PCI_DOMAIN, pci.domain as i32);
        GuestDevice {
            index,
            info,
            pci,
            attributes,
        }
    }

    /// A `CUdevice_attribute` value; `None` when the host driver did not
    /// answer it (the real driver then says CUDA_ERROR_INVALID_VALUE).
    pub fn attribute(&self, attr: i32) -> Option<i32> {
        self.attributes.get(&attr).copied()
    }

    /// NVML's form of the UUID: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn uuid_string(&self) -> String {
        format_uuid(&self.info.uuid)
    }
}

pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What the host reported, as the guest shows it.
#[derive(Debug, Clone)]
pub struct GuestInventory {
    pub host: Inventory,
    pub devices: Vec<GuestDevice>,
    pub driver_kind: String,
    pub session: u64,
}

impl GuestInventory {
    fn new(host: Inventory, base: PciAddress, driver_kind: String, session: u64) -> GuestInventory {
        let devices = host
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                // Further devices sit next to the first on the same bus.
                let pci = PciAddress {
                    device: base.device.wrapping_add(i as u8) & 0x1f,
                    ..base
                };
                GuestDevice::new(i as u32, d.clone(), pci)
            })
            .collect();
        GuestInventory {
            host,
            devices,
            driver_kind,
            session,
        }
    }
}

struct Session {
    link: Link,
    pid: u32,
    inventory: Arc<GuestInventory>,
}

/// How this shim reaches the host.
enum Link {
    /// Its own connection.
    Own(Client),
    /// Through the CUDA shim's connection, so a process that loads both
    /// shims holds one session (one worker, one view of its memory).
    Shared(SharedCall),
}

/// `vgpu_guest_call_v1` of the shim that owns the connection: `op` with an
/// encoded payload; `flags` as in a frame header (`FLAG_NO_REPLY` queues);
/// op 0 flushes the queue. The reply payload goes to `sink(ctx, ..)`; the
/// return value is the host's status, or [`SHARED_UNAVAILABLE`] /
/// [`SHARED_LOST`].
pub type SharedCall = unsafe extern "C" fn(
    op: u16,
    flags: u16,
    payload: *const u8,
    len: usize,
    sink: extern "C" fn(*mut c_void, *const u8, usize),
    ctx: *mut c_void,
) -> u32;

/// The owner has no host to offer (nothing listening, refused).
pub const SHARED_UNAVAILABLE: u32 = 0xFFFF_FFFE;
/// The owner's connection broke during the call.
pub const SHARED_LOST: u32 = 0xFFFF_FFFF;

/// A request on its way: written, its reply not read yet.
enum Pending {
    /// On this shim's own connection: the reply is read without the
    /// session lock, so other threads queue and send meanwhile.
    Own { replies: Arc<Replies>, seq: u32 },
    /// Through the other shim, which did the whole round trip.
    Done(u32, Vec<u8>),
}

impl Pending {
    /// Waits for the reply → (status, reply payload).
    fn finish(self) -> Result<(u32, Vec<u8>), GuestError> {
        match self {
            Pending::Own { replies, seq } => replies
                .wait(seq)
                .map(|f| (f.header.status, f.payload))
                .map_err(|e| GuestError::Lost(e.to_string())),
            Pending::Done(st, reply) => Ok((st, reply)),
        }
    }
}

impl Link {
    /// Sends a request (queued calls go first, in the same write).
    fn start(&mut self, op: u16, payload: &[u8]) -> Result<Pending, GuestError> {
        match self {
            Link::Own(c) => {
                let seq = c
                    .send_request(op, payload)
                    .map_err(|e| GuestError::Lost(e.to_string()))?;
                Ok(Pending::Own {
                    replies: c.replies(),
                    seq,
                })
            }
            Link::Shared(call) => {
                shared(*call, op, 0, payload).map(|(st, reply)| Pending::Done(st, reply))
            }
        }
    }

    /// One round trip → (status, reply payload), the lock held throughout
    /// (only while a session is being opened).
    fn round_trip(&mut self, op: u16, payload: &[u8]) -> Result<(u32, Vec<u8>), GuestError> {
        self.start(op, payload)?.finish()
    }

    fn queue(&mut self, op: u16, payload: &[u8]) -> Result<(), GuestError> {
        match self {
            Link::Own(c) => c
                .queue_raw(op, payload)
                .map_err(|e| GuestError::Lost(e.to_string())),
            Link::Shared(call) => shared(*call, op, FLAG_NO_REPLY, payload).map(drop),
        }
    }

    /// Queues a deferred call; on the own connection it is encoded
    /// straight into the queue's buffer (no allocation, no syscall).
    fn queue_call<C: Call>(&mut self, c: &C) -> Result<(), GuestError> {
        match self {
            Link::Own(client) => client
                .queue_call(c)
                .map_err(|e| GuestError::Lost(e.to_string())),
            Link::Shared(call) => shared(*call, C::OP, FLAG_NO_REPLY, &to_bytes(c)).map(drop),
        }
    }

    fn flush(&mut self) -> Result<(), GuestError> {
        match self {
            Link::Own(c) => c
                .flush_queued()
                .map_err(|e| GuestError::Lost(e.to_string())),
            Link::Shared(call) => shared(*call, 0, 0, &[]).map(drop),
        }
    }

    fn is(&self, replies: &Arc<Replies>) -> bool {
        matches!(self, Link::Own(c) if Arc::ptr_eq(&c.replies(), replies))
    }
}

/// One round trip on the session, connecting first if needed. The session
/// lock is held only to write the request: the reply is waited for
/// without it, so a thread blocked in a synchronization does not stall
/// the launches and calls of the others (their requests go out behind
/// this one, and the host answers in order).
fn round_trip(op: u16, payload: &[u8]) -> Result<(u32, Vec<u8>), GuestError> {
    let pending = with_session(|s| s.link.start(op, payload))?;
    let lost_on = match &pending {
        Pending::Own { replies, .. } => Some(replies.clone()),
        Pending::Done(..) => None,
    };
    let r = pending.finish();
    if let (Err(GuestError::Lost(why)), Some(replies)) = (&r, lost_on) {
        // The connection broke while waiting without the lock: the session
        // is lost, unless another thread already dealt with it.
        let mut guard = SESSION.lock();
        if guard.as_ref().is_some_and(|s| s.link.is(&replies)) {
            lose(&mut guard, why);
        }
    }
    r
}

/// The session is lost for good in this process ([`LOST`]): it is dropped
/// and every later call fails the same way.
fn lose(session: &mut Option<Session>, why: &str) {
    if session
        .as_ref()
        .is_some_and(|s| matches!(s.link, Link::Own(_)))
    {
        OWN_FD.store(-1, Ordering::Relaxed);
    }
    vlog!(
        Level::Error,
        "the session with the host is lost ({why}); every call of this process fails from \
         now on"
    );
    *LOST.lock() = Some((current_pid(), why.to_string()));
    *session = None;
}

extern "C" fn collect(ctx: *mut c_void, data: *const u8, len: usize) {
    // SAFETY: `ctx` is the `Vec<u8>` `shared` passed; `data` holds `len`
    // bytes for the duration of this call (the owner's contract).
    unsafe {
        let out = &mut *(ctx as *mut Vec<u8>);
        out.extend_from_slice(std::slice::from_raw_parts(data, len));
    }
}

fn shared(
    call: SharedCall,
    op: u16,
    flags: u16,
    payload: &[u8],
) -> Result<(u32, Vec<u8>), GuestError> {
    let mut reply = Vec::new();
    // SAFETY: the owner's exported function, with a payload valid for its
    // length and a sink that copies into `reply`.
    let st = unsafe {
        call(
            op,
            flags,
            payload.as_ptr(),
            payload.len(),
            collect,
            &mut reply as *mut Vec<u8> as *mut c_void,
        )
    };
    match st {
        SHARED_UNAVAILABLE => Err(GuestError::Unavailable(
            "the CUDA shim's host is unavailable".into(),
        )),
        SHARED_LOST => Err(GuestError::Lost("the CUDA shim's connection broke".into())),
        st => Ok((st, reply)),
    }
}

const ROLE_OWNER: u8 = 0;
const ROLE_DELEGATE: u8 = 1;
static ROLE: AtomicU8 = AtomicU8::new(ROLE_OWNER);

/// Makes this shim use the CUDA shim's connection whenever that shim is
/// loaded (the NVML shim calls it at load time). Only one side delegates,
/// so two shims can never wait on each other.
pub fn delegate_to_cuda_shim() {
    ROLE.store(ROLE_DELEGATE, Ordering::Relaxed);
}

/// Distinguishes this copy of the client from the other shim's.
pub fn identity() -> usize {
    &SESSION as *const _ as usize
}

/// The CUDA shim's `vgpu_guest_call_v1`, if that shim is loaded in this
/// process (found by SONAME, whatever scope it was loaded into).
fn find_owner() -> Option<SharedCall> {
    // SAFETY: RTLD_NOLOAD only looks up an already loaded object; the
    // handle is kept (never closed) because its functions are kept.
    let h = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    if h.is_null() {
        return None;
    }
    // SAFETY: dlsym on a live handle.
    let id = unsafe { libc::dlsym(h, c"vgpu_guest_id_v1".as_ptr()) };
    // SAFETY: as above.
    let call = unsafe { libc::dlsym(h, c"vgpu_guest_call_v1".as_ptr()) };
    if id.is_null() || call.is_null() {
        // NVIDIA's libcuda, or an older shim.
        return None;
    }
    // SAFETY: the shim exports `vgpu_guest_id_v1` as `extern "C" fn() -> usize`.
    let id: extern "C" fn() -> usize = unsafe { std::mem::transmute(id) };
    if id() == identity() {
        return None;
    }
    // SAFETY: exported with exactly the `SharedCall` signature.
    Some(unsafe { std::mem::transmute::<*mut c_void, SharedCall>(call) })
}

/// The owner's side of [`SharedCall`] (exported by `shim_glue!`).
///
/// # Safety
/// `payload` is valid for `len` bytes; `sink` may be called with `ctx`.
pub unsafe fn serve_shared(
    op: u16,
    flags: u16,
    payload: *const u8,
    len: usize,
    sink: extern "C" fn(*mut c_void, *const u8, usize),
    ctx: *mut c_void,
) -> u32 {
    let run = || {
        let payload = if len == 0 {
            &[][..]
        } else {
            // SAFETY: the caller's contract: `payload` holds `len` bytes.
            unsafe { std::slice::from_raw_parts(payload, len) }
        };
        if op == 0 {
            with_session(|s| s.link.flush().map(|_| 0))
        } else if flags & FLAG_NO_REPLY != 0 {
            with_session(|s| s.link.queue(op, payload).map(|_| 0))
        } else {
            let (st, reply) = round_trip(op, payload)?;
            sink(ctx, reply.as_ptr(), reply.len());
            Ok(st)
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(st)) => st,
        Ok(Err(GuestError::Status(st))) => st.code(),
        Ok(Err(GuestError::Unavailable(_))) => SHARED_UNAVAILABLE,
        Ok(Err(GuestError::Lost(_))) | Err(_) => SHARED_LOST,
    }
}

static SESSION: Mutex<Option<Session>> = Mutex::new(None);
static ATFORK: Once = Once::new();
/// The descriptor of this process's own connection (-1: none), readable
/// without SESSION's lock: the child of a fork closes its copy at once.
static OWN_FD: AtomicI32 = AtomicI32::new(-1);

// `child_after_fork` resets SESSION's lock by its state byte.
const _: () = assert!(std::mem::size_of::<parking_lot::RawMutex>() == 1);

/// In the child of a fork, before `fork()` returns there: the parent's
/// connection is dropped at once, without waiting for (or touching the
/// buffers of) a call another thread of the parent had in flight — that
/// thread does not exist here. `fork()` itself never waits: no handler runs
/// before it. The inherited session is forgotten (its memory leaks once,
/// in the child), its descriptor closed so the parent's worker sees the
/// parent's exit however long the child lives, and the lock is reset to
/// unlocked; the child opens its own session on first use
/// (docs/security.md, "Lifetime in the guest").
extern "C" fn child_after_fork() {
    let fd = OWN_FD.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: the child's copy of the connection; the session that
        // owns it is forgotten below and never closes it.
        unsafe { libc::close(fd) };
    }
    // SAFETY: the child has one thread, this one: nothing else can hold or
    // wait for the lock or look at the data. The state byte is all of a
    // parking_lot RawMutex (asserted above); storing 0 unlocks it without
    // waking threads that exist only in the parent. The old value is
    // overwritten without being dropped.
    unsafe {
        let state = &*(SESSION.raw() as *const parking_lot::RawMutex as *const AtomicU8);
        state.store(0, Ordering::Release);
        std::ptr::write(SESSION.data_ptr(), None);
    }
}

fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: the handler is a plain function of this library that
        // runs in the single-threaded child only.
        unsafe {
            libc::pthread_atfork(None, None, Some(child_after_fork));
        }
    });
}

/// Why this process's session was lost (its pid, the reason): every later
/// call fails the same way, as after a device loss, instead of opening a
/// new session in which the application's handles do not exist. A new
/// process (a forked child too) starts afresh.
static LOST: Mutex<Option<(u32, String)>> = Mutex::new(None);

fn lost_before() -> Option<String> {
    let g = LOST.lock();
    let (pid, why) = g.as_ref()?;
    (*pid == std::process::id()).then(|| why.clone())
}

/// How long the inventory may take before a wait counts as the host
/// initializing (and is said so).
pub const INITIALIZING_NOTICE: Duration = Duration::from_secs(1);
/// How long the inventory's frame may take to arrive once it has started.
const REPLY_TRANSFER: Duration = Duration::from_secs(10);

/// Waits until `fd` has something to read (data or hang-up), at most `t`.
fn wait_readable(fd: std::os::fd::RawFd, t: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + t;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, for the duration of the call.
        match unsafe { libc::poll(&mut p, 1, ms) } {
            n if n > 0 => return Ok(true),
            0 if Instant::now() >= deadline => return Ok(false),
            0 => continue,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Seconds as a person reads them: "60", "2.5".
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

/// The last time this process gave up waiting for an initializing host,
/// and why: a new connection within as long again fails at once with the
/// same reason instead of starting another worker that waits for its driver
/// too (an application retrying, or the virtual files asked call by call,
/// would otherwise pile up cold workers on the host).
static GAVE_UP: Mutex<Option<(u32, Instant, Duration, String)>> = Mutex::new(None);

fn recently_gave_up() -> Option<String> {
    let g = GAVE_UP.lock();
    let (pid, at, window, why) = g.as_ref()?;
    (*pid == std::process::id() && at.elapsed() < *window).then(|| why.clone())
}

/// The host's inventory on a fresh connection, waiting up to `limit` for
/// the host to initialize its driver. If it is not there within
/// [`INITIALIZING_NOTICE`], `initializing` is called once (to say so) and
/// the wait goes on. Past `limit` the connection is given up.
pub fn fetch_inventory(
    client: &mut Client,
    limit: Duration,
    initializing: impl FnOnce(),
) -> Result<Inventory, GuestError> {
    let start = Instant::now();
    let mut gave_up = false;
    let got = client.call_after(&GetInventory {}, |stream| {
        let fd = stream.as_raw_fd();
        if wait_readable(fd, INITIALIZING_NOTICE.min(limit))? {
            return Ok(());
        }
        initializing();
        if wait_readable(fd, limit.saturating_sub(start.elapsed()))? {
            return Ok(());
        }
        gave_up = true;
        Err(std::io::ErrorKind::TimedOut.into())
    });
    if gave_up {
        let why = format!(
            "the host did not finish initializing its GPU driver within {} s \
             ({} sets how long to wait)",
            seconds(limit),
            crate::config::INIT_TIMEOUT_ENV
        );
        let window = limit.max(INITIALIZING_NOTICE);
        *GAVE_UP.lock() = Some((std::process::id(), Instant::now(), window, why.clone()));
        return Err(GuestError::Unavailable(why));
    }
    got.map_err(|e| GuestError::Unavailable(format!("inventory: {e}")))
}

fn open_session() -> Result<Session, GuestError> {
    let config = Config::from_env().map_err(GuestError::Unavailable)?;
    if ROLE.load(Ordering::Relaxed) == ROLE_DELEGATE {
        if let Some(call) = find_owner() {
            return open_shared(call, &config);
        }
    }
    if let Some(why) = recently_gave_up() {
        return Err(GuestError::Unavailable(format!(
            "{why}; not asked again yet"
        )));
    }
    let stream = config
        .endpoint
        .connect(config.connect_timeout)
        .map_err(|e| GuestError::Unavailable(format!("connect {}: {e}", config.endpoint)))?;
    let hello = Hello::new(
        vgpu_transport::BUILD_ID,
        caps::BATCH | caps::DEVICE_OUTPUT | shm_cap(&config.endpoint),
        config.token.clone(),
    );
    let mut client =
        Client::handshake(stream, &hello, Duration::from_secs(2)).map_err(|e| match e {
            HandshakeError::Refused(_, why) => {
                GuestError::Unavailable(format!("{}: {why}", config.endpoint))
            }
            e => GuestError::Unavailable(format!("{}: {e}", config.endpoint)),
        })?;
    // The wait for the reply is the host initializing (see fetch_inventory);
    // once it arrives, reading it is bounded.
    let bounded = |c: &Client, t| {
        c.set_timeout(t)
            .map_err(|e| GuestError::Unavailable(e.to_string()))
    };
    bounded(&client, Some(REPLY_TRANSFER))?;
    let endpoint = &config.endpoint;
    let limit = config.init_timeout;
    let host = fetch_inventory(&mut client, limit, || {
        vlog!(
            Level::Warn,
            "host {endpoint} is initializing (its GPU driver is starting); waiting up to \
             {} s for its devices ({})",
            seconds(limit),
            crate::config::INIT_TIMEOUT_ENV
        )
    })?;
    // Every call from now on has a deadline (VGPU_CALL_TIMEOUT): a host
    // that stops answering makes the session lost, not the application hang.
    bounded(&client, config.call_timeout)?;
    if let Some(why) = &client.shm_refused {
        vlog!(Level::Info, "no shared memory with the host: {why}");
    }
    client.set_output_sink(Box::new(write_device_output));
    client.wake_idle_host();
    let inventory = Arc::new(GuestInventory::new(
        host,
        config.pci_address,
        client.hello.driver_kind.clone(),
        client.hello.session,
    ));
    vlog!(
        Level::Info,
        "connected to {} (session {:x}, driver {}, {} device(s))",
        config.endpoint,
        inventory.session,
        inventory.driver_kind,
        inventory.devices.len()
    );
    register_atfork();
    OWN_FD.store(client.stream().as_raw_fd(), Ordering::Relaxed);
    Ok(Session {
        link: Link::Own(client),
        pid: std::process::id(),
        inventory,
    })
}

/// A session on the CUDA shim's connection: only the inventory is fetched
/// (this shim keeps its own guest-visible view of it).
fn open_shared(call: SharedCall, config: &Config) -> Result<Session, GuestError> {
    let mut link = Link::Shared(call);
    let (st, bytes) = link.round_trip(<GetInventory as Call>::OP, &to_bytes(&GetInventory {}))?;
    if st != 0 {
        return Err(GuestError::Unavailable(format!(
            "inventory: host status {st}"
        )));
    }
    let host: Inventory =
        from_bytes(&bytes).map_err(|e| GuestError::Unavailable(format!("inventory: {e}")))?;
    let kind = host.driver_kind.clone();
    let inventory = Arc::new(GuestInventory::new(host, config.pci_address, kind, 0));
    vlog!(
        Level::Info,
        "sharing the CUDA shim's connection ({} device(s))",
        inventory.devices.len()
    );
    register_atfork();
    Ok(Session {
        link,
        pid: std::process::id(),
        inventory,
    })
}

thread_local! {
    /// This thread holds SESSION (opening or using it).
    static IN_SESSION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the thread as inside [`with_session`] until dropped.
struct InSession;

impl InSession {
    fn enter() -> InSession {
        IN_SESSION.with(|f| f.set(true));
        InSession
    }
}

impl Drop for InSession {
    fn drop(&mut self) {
        IN_SESSION.with(|f| f.set(false));
    }
}

fn with_session<R>(f: impl FnOnce(&mut Session) -> Result<R, GuestError>) -> Result<R, GuestError> {
    session_then(true, f).unwrap_or_else(|| unreachable!("a blocking lock always returns"))
}

/// Runs `f` on the session, opening it first if needed. With `wait` false,
/// returns `None` instead of waiting for a lock another thread holds.
fn session_then<R>(
    wait: bool,
    f: impl FnOnce(&mut Session) -> Result<R, GuestError>,
) -> Option<Result<R, GuestError>> {
    // A thread already inside can come back here through a libc hook (the
    // virtual files ask for the inventory) while the session is being
    // opened — possibly by way of the other shim. The lock is not
    // re-entrant: waiting would never end, and there is no session to give.
    if IN_SESSION.with(|f| f.get()) {
        return Some(Err(GuestError::Unavailable(
            "the connection is being opened on this thread".into(),
        )));
    }
    let mut guard = if wait {
        SESSION.lock()
    } else {
        SESSION.try_lock()?
    };
    let _inside = InSession::enter();
    let pid = current_pid();
    if guard.as_ref().is_some_and(|s| s.pid != pid) {
        // A forked child: the socket is the parent's. Dropping our copy of
        // the descriptor leaves the parent's connection intact.
        vlog!(Level::Debug, "fork detected; opening a new connection");
        *guard = None;
    }
    if guard.is_none() {
        if let Some(why) = lost_before() {
            return Some(Err(GuestError::Lost(why)));
        }
        match open_session() {
            Ok(s) => {
                *OPENED.lock() = Some((s.pid, s.inventory.clone()));
                *guard = Some(s);
            }
            Err(e) => return Some(Err(e)),
        }
    }
    let session = guard.as_mut().expect("just set");
    let r = f(session);
    if let Err(GuestError::Lost(why)) = &r {
        lose(&mut guard, why);
    }
    Some(r)
}

/// This process's id as [`current_pid`] last read it; 0 until read, and
/// again in a child right after `fork`.
static PID: AtomicU32 = AtomicU32::new(0);
static PID_ATFORK: Once = Once::new();

extern "C" fn pid_in_child() {
    PID.store(0, Ordering::Relaxed);
}

/// The process id, for noticing a forked child on every call without a
/// system call each time (glibc no longer caches `getpid`, and the call
/// cost more than the rest of a queued launch). A child made by `fork`
/// runs the atfork handler and reads its own id afresh; one made by a raw
/// `clone` without the handlers (`posix_spawn`'s, which only execs) keeps
/// the parent's until it execs.
fn current_pid() -> u32 {
    let p = PID.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    PID_ATFORK.call_once(|| {
        // SAFETY: the handler is a plain function of this library that
        // only stores to an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(pid_in_child)) };
    });
    let p = std::process::id();
    PID.store(p, Ordering::Relaxed);
    p
}

extern "C" {
    /// C's standard streams (glibc and musl export the `FILE *` under
    /// these names).
    static stdout: *mut libc::FILE;
    static stderr: *mut libc::FILE;
}

/// Writes device output where a local GPU's driver prints it: `printf`
/// text to this process's stdout, assert messages to its stderr. What the
/// application has buffered in C's stream for that descriptor goes first,
/// so its own `printf` before the synchronization comes out before the
/// kernel's, as with a driver printing through C's `stdout`. The bytes are
/// written with write(2), unchanged; a descriptor the application closed
/// takes nothing. Output the host had to drop is reported in the log.
fn write_device_output(out: DeviceOutput) {
    if out.dropped > 0 {
        vlog!(
            Level::Warn,
            "{} byte(s) of device output for fd {} were dropped: more was printed between two \
             synchronizations than the host holds (VGPU_DEVICE_OUTPUT_LIMIT on the host)",
            out.dropped,
            out.fd
        );
    }
    // SAFETY: reading the C library's stream pointers, which it sets up
    // before any constructor runs and applications only ever replace with
    // other valid streams (freopen).
    let stream = unsafe {
        match out.fd {
            1 => stdout,
            2 => stderr,
            // Only the two descriptors a driver prints to.
            _ => return,
        }
    };
    if !stream.is_null() {
        // SAFETY: a valid stream; fflush takes its lock, which this thread
        // (inside a CUDA call) does not hold.
        unsafe { libc::fflush(stream) };
    }
    let mut data = &out.data.0[..];
    while !data.is_empty() {
        // SAFETY: `data` is valid for its length.
        let n = unsafe { libc::write(out.fd.into(), data.as_ptr().cast(), data.len()) };
        if n > 0 {
            data = &data[n as usize..];
        } else if n == 0
            || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            return;
        }
    }
}

/// The inventory for the virtual files: like [`inventory`], but never waits
/// for a session lock another thread holds. The files are asked for from
/// inside libc hooks, on threads that may hold the other shim's session
/// lock; waiting here could close a cycle between the two shims' locks. A
/// host that could not be reached is not asked again by the files for
/// [`PROBE_RETRY`]: a program probing many paths (`ls` of the GPU files)
/// would otherwise wait for a mute host at every one. API calls
/// (`cuInit`) always try again.
pub fn inventory_nowait() -> Option<Arc<GuestInventory>> {
    let pid = std::process::id();
    if let Some((p, inv)) = OPENED.lock().as_ref() {
        if *p == pid {
            return Some(inv.clone());
        }
    }
    if let Some((p, at)) = *PROBE_MISS.lock() {
        if p == pid && at.elapsed() < PROBE_RETRY {
            return None;
        }
    }
    match session_then(false, |s| Ok(s.inventory.clone()))? {
        Ok(inv) => Some(inv),
        Err(_) => {
            *PROBE_MISS.lock() = Some((pid, Instant::now()));
            None
        }
    }
}

/// How long the virtual files do without a host they could not reach.
pub const PROBE_RETRY: Duration = Duration::from_secs(5);
static PROBE_MISS: Mutex<Option<(u32, Instant)>> = Mutex::new(None);

/// The inventory of the last session opened (and by which process), under a
/// lock never held across I/O, so the virtual files can have it while
/// another thread is in a long call on the session itself.
static OPENED: Mutex<Option<(u32, Arc<GuestInventory>)>> = Mutex::new(None);

/// The inventory, connecting first if needed.
pub fn inventory() -> Result<Arc<GuestInventory>, GuestError> {
    with_session(|s| Ok(s.inventory.clone()))
}

/// The inventory if a session is already open; never connects.
pub fn inventory_if_connected() -> Option<Arc<GuestInventory>> {
    let guard = SESSION.lock();
    guard
        .as_ref()
        .filter(|s| s.pid == std::process::id())
        .map(|s| s.inventory.clone())
}

/// One call to the host, connecting first if needed, travelling as its op
/// is declared in the protocol's `calls!` table: a sync op is a round trip
/// and returns the host's reply; a deferred op (launches, async copies,
/// event records) is queued with no round trip and returns `()` at once —
/// the queue goes out before the next round trip (or when it grows large),
/// and the host reports a deferred failure through the next call that
/// collects them, as CUDA reports asynchronous errors.
pub fn send<C: Call>(c: &C) -> Result<C::Reply, GuestError> {
    let log = |e: &GuestError| vlog!(Level::Error, "{}: {e}", C::NAME);
    if let Some(reply) = C::unanswered() {
        with_session(|s| s.link.queue_call(c)).inspect_err(log)?;
        return Ok(reply);
    }
    let (st, reply) = round_trip(C::OP, &to_bytes(c)).inspect_err(log)?;
    if let Some(status) = Status::from_wire(C::META.domain, st) {
        return Err(GuestError::Status(status));
    }
    from_bytes::<C::Reply>(&reply).map_err(|e| {
        vlog!(Level::Error, "{}: bad reply: {e}", C::NAME);
        GuestError::Lost(format!("bad reply: {e}"))
    })
}

// ---- bulk transfers (docs/protocol.md, "Bulk transfers") ----

/// `caps::SHM` for a host on this machine (a Unix socket), unless
/// `VGPU_SHM=0` asks for the socket alone.
fn shm_cap(endpoint: &vgpu_transport::Endpoint) -> u64 {
    let off = std::env::var_os("VGPU_SHM").is_some_and(|v| v == "0");
    if matches!(endpoint, vgpu_transport::Endpoint::Unix(_)) && !off {
        caps::SHM
    } else {
        0
    }
}

/// Runs a bulk transfer (`Client::put`, `get`, `stage_image`) on this
/// process's own connection, connecting first if needed. A shim that
/// shares the other's connection has none of its own to stream on.
pub fn bulk<R>(
    f: impl FnOnce(&mut Client) -> Result<R, vgpu_transport::CallError>,
) -> Result<R, GuestError> {
    with_session(|s| match &mut s.link {
        Link::Own(c) => f(c).map_err(|e| match e {
            vgpu_transport::CallError::Status(st) => GuestError::Status(st),
            e => {
                vlog!(Level::Error, "bulk transfer: {e}");
                GuestError::Lost(e.to_string())
            }
        }),
        Link::Shared(_) => Err(GuestError::Unavailable(
            "bulk transfers need a connection of this shim's own".into(),
        )),
    })
}

/// Writes out queued calls without waiting (e.g. before blocking on
/// something the host must first execute).
pub fn flush() -> Result<(), GuestError> {
    with_session(|s| s.link.flush())
}

/// Drops the connection (tests; `nvmlShutdown` does not need it).
pub fn disconnect() {
    let mut g = SESSION.lock();
    if matches!(g.as_ref().map(|s| &s.link), Some(Link::Own(_))) {
        OWN_FD.store(-1, Ordering::Relaxed);
    }
    *g = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_read_naturally() {
        assert_eq!(seconds(Duration::from_secs(60)), "60");
        assert_eq!(seconds(Duration::from_millis(2500)), "2.5");
        assert_eq!(seconds(Duration::from_millis(500)), "0.5");
    }

    #[test]
    fn uuid_format() {
        let u: [u8; 16] = core::array::from_fn(|i| i as u8 + 1);
        assert_eq!(format_uuid(&u), "GPU-01020304-0506-0708-090a-0b0c0d0e0f10");
    }

    #[test]
    fn guest_pci_overrides_host_attributes() {
        let info = DeviceInfo {
            attributes: vec![(ATTR_PCI_BUS, 1), (75, 9)],
            ..Default::default()
        };
        let inv = Inventory {
            devices: vec![info.clone(), info],
            ..Default::default()
        };
        let g = GuestInventory::new(
            inv,
            PciAddress::parse("0000:00:05.0").unwrap(),
            "emulated".into(),
            1,
        );
        assert_eq!(g.devices[0].attribute(ATTR_PCI_BUS), Some(0));
        assert_eq!(g.devices[0].attribute(ATTR_PCI_DEVICE), Some(5));
        assert_eq!(g.devices[1].attribute(ATTR_PCI_DEVICE), Some(6));
        assert_eq!(g.devices[0].attribute(75), Some(9));
        assert_eq!(g.devices[0].attribute(1234), None);
    }

    /// Tests that set VGPU_HOST for this process run one at a time.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn no_host_fails_fast() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        std::env::set_var("VGPU_HOST", "unix:/nonexistent/vgpu-test.sock");
        let t = std::time::Instant::now();
        assert!(matches!(inventory(), Err(GuestError::Unavailable(_))));
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    /// A mute host (it accepts, never answers) costs the virtual files one
    /// handshake deadline, not one per probed path.
    #[test]
    fn a_mute_host_is_probed_once() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let dir = std::env::temp_dir().join(format!("vgpu-mute-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let sock = dir.join("mute.sock");
        let _ = std::fs::remove_file(&sock);
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        std::env::set_var("VGPU_HOST", format!("unix:{}", sock.display()));
        *PROBE_MISS.lock() = None;
        let t = Instant::now();
        assert!(inventory_nowait().is_none());
        let first = t.elapsed();
        assert!(first >= Duration::from_secs(1), "{first:?}");
        let t = Instant::now();
        for _ in 0..4 {
            assert!(inventory_nowait().is_none());
        }
        assert!(
            t.elapsed() < Duration::from_millis(100),
            "{:?}",
            t.elapsed()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
