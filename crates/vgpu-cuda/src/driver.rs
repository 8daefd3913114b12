//! Process-wide driver state after a successful `cuInit`: the inventory,
//! the devices this process may see, their primary contexts — and the one
//! way to send a call to the host.
//!
//! [`require`] is the export list's initialisation check: every entry
//! point outside the list's `without_init` block runs it first. A
//! `CUdevice` argument converts to a [`Device`] (CUDA_ERROR_INVALID_DEVICE
//! for an ordinal this process cannot see).

use crate::context::state::{self, Context, Kind};
use cuda_abi::visible;
use cuda_types::cuda::{CUdevice, CUresult};
use parking_lot::{Mutex, MutexGuard, RwLockWriteGuard};
use std::cell::RefCell;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::{Arc, Once};
use vgpu_ffi::registry::Registry;
use vgpu_ffi::{FromCuda, Shared};
use vgpu_guest::client::{self, GuestDevice, GuestError, GuestInventory};
use vgpu_guest::log::Level;
use vgpu_guest::vlog;
use vgpu_transport::Call;
use vgpu_transport::Status;

pub struct Driver {
    /// The fork generation this state belongs to (see [`get`]).
    generation: u32,
    /// The process that ran cuInit.
    pid: u32,
    pub inventory: Arc<GuestInventory>,
    /// Host device index for each guest ordinal (CUDA_VISIBLE_DEVICES order).
    visible: Vec<usize>,
    /// One per guest ordinal, alive for the whole process.
    primaries: Vec<Arc<Context>>,
}

/// Set by a successful `cuInit`, never freed: callers hold `&'static`
/// references. A forked child's `cuInit` replaces it, leaking the parent's.
static DRIVER: AtomicPtr<Driver> = AtomicPtr::new(std::ptr::null_mut());
/// Bumped in every forked child (pthread_atfork), so state initialised
/// before the fork reads as "not initialised" there.
static GENERATION: AtomicU32 = AtomicU32::new(0);
/// Serialises first initialisations so two racing `cuInit`s connect once.
static INIT: Mutex<()> = Mutex::new(());
static ATFORK: Once = Once::new();

/// The state, or CUDA_ERROR_NOT_INITIALIZED before a successful `cuInit`
/// in this process. Two atomic loads and no system call: it guards calls
/// on the per-runtime-call hot path.
///
/// After `fork()` the child sees NOT_INITIALIZED until it calls `cuInit`
/// itself, which connects its own session: the parent's contexts,
/// allocations and host handles live in the parent's session. A real
/// driver is just as unusable in a forked child.
#[inline]
pub fn get() -> Result<&'static Driver, CUresult> {
    let p = DRIVER.load(Ordering::Acquire);
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_NOT_INITIALIZED);
    }
    // SAFETY: DRIVER only ever holds a leaked Box, never freed.
    let d = unsafe { &*p };
    if d.generation != GENERATION.load(Ordering::Relaxed) {
        return Err(CUresult::CUDA_ERROR_NOT_INITIALIZED);
    }
    Ok(d)
}

/// The export list's `require`: CUDA_ERROR_NOT_INITIALIZED before a
/// successful `cuInit` in this process.
#[inline]
pub fn require() -> Result<(), CUresult> {
    get().map(|_| ())
}

/// A registry's write guard, held across `fork()`.
trait Held {
    /// Forgets every object (in the child: they belong to the parent's
    /// host session).
    fn clear(&mut self);
}

impl<T, E: Copy> Held for RwLockWriteGuard<'static, Registry<T, E>> {
    fn clear(&mut self) {
        drop(self.take_all());
    }
}

/// A registry whose objects must not be dropped in a forked child: graph
/// objects free host memory and lock each other when they go, which the
/// child must not do with the parent's state. They are leaked instead.
struct Leaking<T: 'static, E: 'static>(RwLockWriteGuard<'static, Registry<T, E>>);

impl<T, E: Copy> Held for Leaking<T, E> {
    fn clear(&mut self) {
        std::mem::forget(self.0.take_all());
    }
}

/// A plain table behind a mutex (the capture table, graph memory by
/// address): emptied in the child, its contents leaked likewise.
impl<T> Held for MutexGuard<'static, Option<T>> {
    fn clear(&mut self) {
        std::mem::forget(self.take());
    }
}

thread_local! {
    /// The guards fork_prepare took, on the forking thread (the handlers
    /// of one fork all run on it).
    static HELD: RefCell<Vec<Box<dyn Held>>> = const { RefCell::new(Vec::new()) };
}

fn hold<T: Clone + 'static, E: Copy + 'static>(registry: &'static Shared<T, E>) {
    let guard = registry.write();
    // A thread whose TLS is already torn down cannot keep it: the lock is
    // then released at once, as before there were these handlers.
    let _ = HELD.try_with(|h| h.borrow_mut().push(Box::new(guard)));
}

fn hold_leaking<T: Clone + 'static, E: Copy + 'static>(registry: &'static Shared<T, E>) {
    let guard = Leaking(registry.write());
    let _ = HELD.try_with(|h| h.borrow_mut().push(Box::new(guard)));
}

fn hold_table<T: 'static>(table: &'static Mutex<Option<T>>) {
    let guard = table.lock();
    let _ = HELD.try_with(|h| h.borrow_mut().push(Box::new(guard)));
}

fn held() -> Vec<Box<dyn Held>> {
    HELD.try_with(|h| std::mem::take(&mut *h.borrow_mut()))
        .unwrap_or_default()
}

/// Before `fork()`: every handle registry's lock is held across it, so the
/// child never inherits one held by a thread it does not have. Taken one
/// after another, never two by one caller elsewhere, so this cannot
/// deadlock against a running call.
extern "C" fn fork_prepare() {
    std::mem::forget(INIT.lock());
    hold(&state::CONTEXTS);
    hold(&crate::stream::STREAMS);
    hold(&crate::event::EVENTS);
    hold(&crate::module::MODULES);
    hold(&crate::module::LIBRARIES);
    hold(&crate::module::FUNCTIONS);
    hold(&crate::link::LINKS);
    hold_leaking(&crate::graph::GRAPHS);
    hold_leaking(&crate::graph::NODES);
    hold_leaking(&crate::graph::exec::EXECS);
    hold_table(crate::capture::table_lock());
    hold_table(crate::graph::mem::live_lock());
}

extern "C" fn fork_parent() {
    drop(held());
    // SAFETY: fork_prepare locked INIT on this thread and leaked the guard.
    unsafe { INIT.force_unlock() };
}

/// In the child: the parent's objects belong to the parent's host session.
/// They are forgotten — unknown handles from now on — and the forking
/// thread (the child's only one) starts with no current context.
extern "C" fn fork_child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    for mut guard in held() {
        guard.clear();
    }
    state::fork_child();
    crate::capture::fork_child();
    // SAFETY: as in fork_parent.
    unsafe { INIT.force_unlock() };
}

/// `cuInit`'s work. A failed attempt leaves nothing behind, so a later
/// cuInit (say, once the daemon is up) tries again.
pub fn init() -> Result<&'static Driver, CUresult> {
    // The pid check also covers a child made without pthread_atfork
    // handlers running (a raw clone).
    let current = |d: &'static Driver| d.pid == std::process::id();
    if let Ok(d) = get() {
        if current(d) {
            return Ok(d);
        }
    }
    let _serial = INIT.lock();
    if let Ok(d) = get() {
        if current(d) {
            return Ok(d);
        }
    }
    ATFORK.call_once(|| {
        // SAFETY: the handlers are functions of this library that only take
        // and release its own locks and reset its own state.
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    });
    let inventory = client::inventory().map_err(|e| {
        vlog!(Level::Warn, "cuInit: {e}; reporting no CUDA device");
        CUresult::CUDA_ERROR_NO_DEVICE
    })?;
    let uuids: Vec<String> = inventory.devices.iter().map(|d| d.uuid_string()).collect();
    let env = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let visible = visible::visible_devices(env.as_deref(), &uuids);
    if env.is_some() {
        vlog!(
            Level::Debug,
            "CUDA_VISIBLE_DEVICES={:?}: host devices {visible:?}",
            env.as_deref().unwrap_or_default()
        );
    }
    let primaries = visible
        .iter()
        .enumerate()
        .map(|(ordinal, &host)| {
            state::register(Context::new(
                Kind::Primary,
                ordinal as CUdevice,
                host as i32,
                0,
                state::API_VERSION,
            ))
        })
        .collect();
    let driver = Box::leak(Box::new(Driver {
        generation: GENERATION.load(Ordering::Relaxed),
        pid: std::process::id(),
        inventory,
        visible,
        primaries,
    }));
    DRIVER.store(driver, Ordering::Release);
    Ok(driver)
}

impl Driver {
    pub fn device_count(&self) -> usize {
        self.visible.len()
    }

    /// An application's ordinal as an index into the per-ordinal tables
    /// (see [`Device`]).
    fn check(&self, dev: CUdevice) -> Result<usize, CUresult> {
        usize::try_from(dev)
            .ok()
            .filter(|&d| d < self.visible.len())
            .ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)
    }

    /// Guest ordinals with their devices, in the application's order.
    pub fn devices(&self) -> impl Iterator<Item = (CUdevice, &GuestDevice)> {
        self.visible
            .iter()
            .enumerate()
            .map(|(o, &h)| (o as CUdevice, &self.inventory.devices[h]))
    }
}

/// A `CUdevice` argument: an ordinal this process can see.
#[derive(Clone, Copy)]
pub struct Device {
    pub ordinal: CUdevice,
    /// `ordinal` as an index into the driver's per-ordinal tables.
    index: usize,
    driver: &'static Driver,
}

impl Device {
    /// CUDA_ERROR_INVALID_DEVICE for an ordinal this process cannot see.
    pub fn new(ordinal: CUdevice) -> Result<Device, CUresult> {
        let driver = get()?;
        let index = driver.check(ordinal)?;
        Ok(Device {
            ordinal,
            index,
            driver,
        })
    }

    pub fn info(&self) -> &'static GuestDevice {
        &self.driver.inventory.devices[self.driver.visible[self.index]]
    }

    /// The host's index of the device, what calls to the host carry.
    pub fn host(&self) -> i32 {
        self.driver.visible[self.index] as i32
    }

    pub fn primary(&self) -> &'static Arc<Context> {
        &self.driver.primaries[self.index]
    }
}

impl FromCuda<CUdevice, CUresult> for Device {
    unsafe fn from_cuda(ordinal: CUdevice) -> Result<Self, CUresult> {
        Device::new(ordinal)
    }
}

/// The CUresult an application sees for a failed host call.
pub fn to_cuda(e: GuestError) -> CUresult {
    match e {
        GuestError::Status(Status::Cuda(code)) => code,
        GuestError::Status(Status::UNKNOWN_OP) => CUresult::CUDA_ERROR_NOT_SUPPORTED,
        // A protocol failure, or an NVML code where none belongs.
        GuestError::Status(_) => CUresult::CUDA_ERROR_UNKNOWN,
        // The GPU went away under us (daemon restarted, network gone).
        GuestError::Unavailable(_) | GuestError::Lost(_) => CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE,
    }
}

/// One call to the host, with the answer as a CUresult; it travels as its
/// op is declared (a deferred op is queued and answers `()` at once).
pub fn call<C: Call>(c: &C) -> Result<C::Reply, CUresult> {
    client::send(c).map_err(|e| {
        if !matches!(e, GuestError::Status(_)) {
            vlog!(Level::Error, "{}: {e}", C::NAME);
        }
        to_cuda(e)
    })
}
