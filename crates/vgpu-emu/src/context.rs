//! Contexts: a registry of live context objects, a per-thread context stack,
//! one primary context per device, and which contexts may map which other
//! devices' memory (peer access).
//!
//! A `CUcontext` is a handle minted by the registry and never dereferenced,
//! so a stale or forged handle is an error code, not a crash. Thread stacks
//! hold `Arc`s, so a context destroyed while another thread still has it
//! current stays recognisable there (that thread then gets
//! CUDA_ERROR_CONTEXT_IS_DESTROYED).

use crate::device::{check_device, Device};
use crate::ffi::{insert_new, Live};
use crate::{event, memory, stream};
use cuda_types::cuda::{
    CUcontext, CUctxCreateParams, CUctx_flags, CUdevice, CUexecAffinityParam, CUresult,
};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::cell::RefCell;
use std::ffi::{c_int, c_uint, c_ulonglong};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use vgpu_ffi::{FromCuda, Mint, Out, Shared};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const INVALID_CONTEXT: CUresult = CUresult::CUDA_ERROR_INVALID_CONTEXT;
/// The API version a context created through the `_v2` entry points reports.
const CONTEXT_API_VERSION: c_uint = 3020;

pub struct Context {
    handle: u64,
    pub id: u64,
    pub device: CUdevice,
    flags: AtomicU32,
    primary: bool,
    /// Ordinary contexts: not yet destroyed. Primary: retained at least once
    /// since the last release to zero or reset.
    alive: AtomicBool,
    /// Ids of the contexts whose memory this one has peer access to.
    peers: Mutex<Vec<u64>>,
    /// `cuCtxSetLimit` values (the heap size lives with the device heap).
    pub(crate) limits: Mutex<crate::limits::Limits>,
}

static REGISTRY: Shared<Arc<Context>, CUresult> =
    Shared::new("context", INVALID_CONTEXT, Mint::Pointer);

impl Context {
    /// A new context, registered.
    fn new(device: CUdevice, flags: u32, primary: bool, alive: bool) -> Arc<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        insert_new(&REGISTRY, |handle| Context {
            handle,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            device,
            flags: AtomicU32::new(flags),
            primary,
            alive: AtomicBool::new(alive),
            peers: Mutex::new(Vec::new()),
            limits: Mutex::new(Default::default()),
        })
    }

    pub fn handle(&self) -> CUcontext {
        self.handle as CUcontext
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// The error a call on this context gets when it is no longer usable.
    fn usable(&self) -> Result<(), CUresult> {
        if self.is_alive() {
            Ok(())
        } else if self.primary {
            Err(INVALID_CONTEXT)
        } else {
            Err(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED)
        }
    }
}

thread_local! {
    static STACK: RefCell<Vec<Arc<Context>>> = const { RefCell::new(Vec::new()) };
}

/// A handle an application passed in, if it names a usable context.
fn lookup(ctx: CUcontext) -> Result<Arc<Context>, CUresult> {
    let c = REGISTRY.get(ctx as u64)?;
    c.usable()?;
    Ok(c)
}

/// A `CUcontext` argument that must name a usable context.
impl FromCuda<CUcontext, CUresult> for Live<Context> {
    unsafe fn from_cuda(ctx: CUcontext) -> Result<Self, CUresult> {
        lookup(ctx).map(Live)
    }
}

/// A `CUcontext` argument for which NULL has a meaning of its own: the
/// current context (most calls, see [`MaybeCtx::or_current`]) or none
/// (cuCtxSetCurrent).
pub struct MaybeCtx(Option<Arc<Context>>);

impl MaybeCtx {
    /// The NULL handle, for the list entries that have no context argument
    /// (`cuCtxSynchronize`, `cuCtxGetDevice`) and mean the current one.
    pub const NULL: MaybeCtx = MaybeCtx(None);

    pub fn or_current(self) -> Result<Arc<Context>, CUresult> {
        self.0.map_or_else(current, Ok)
    }
}

impl FromCuda<CUcontext, CUresult> for MaybeCtx {
    unsafe fn from_cuda(ctx: CUcontext) -> Result<Self, CUresult> {
        if ctx.is_null() {
            Ok(MaybeCtx(None))
        } else {
            lookup(ctx).map(|c| MaybeCtx(Some(c)))
        }
    }
}

/// The calling thread's current context, for every call that needs one.
pub fn current() -> Result<Arc<Context>, CUresult> {
    let top = STACK.with(|s| s.borrow().last().cloned());
    let c = top.ok_or(INVALID_CONTEXT)?;
    c.usable()?;
    // A kernel fault makes the context answer every call with its error.
    crate::launch::sticky_error(c.id)?;
    Ok(c)
}

/// The device of the context with id `id`, if it still exists.
pub(crate) fn device_of(id: u64) -> Option<CUdevice> {
    REGISTRY
        .values()
        .iter()
        .find(|c| c.id == id && c.is_alive())
        .map(|c| c.device)
}

/// Whether any context of this process is alive (NVML reports the process).
pub fn any_alive() -> bool {
    REGISTRY.values().iter().any(|c| c.is_alive())
}

fn check_flags(flags: c_uint) -> Result<u32, CUresult> {
    if flags & !CUctx_flags::CU_CTX_FLAGS_MASK.0 != 0 {
        return Err(INVALID_VALUE);
    }
    // At most one scheduling policy.
    match flags & CUctx_flags::CU_CTX_SCHED_MASK.0 {
        0 | 1 | 2 | 4 => Ok(flags),
        _ => Err(INVALID_VALUE),
    }
}

/// `cuCtxCreate` and `_v2`. The ordinal is a plain value so that the `_v3`
/// and `_v4` forms report their own argument errors before a bad device.
pub fn ctx_create(pctx: Out<CUcontext>, flags: c_uint, dev: CUdevice) -> Result<(), CUresult> {
    check_device(dev)?;
    let flags = check_flags(flags)?;
    let c = Context::new(dev, flags, false, true);
    pctx.write(c.handle());
    STACK.with(|s| s.borrow_mut().push(c));
    Ok(())
}

pub unsafe fn ctx_create_v3(
    pctx: Out<CUcontext>,
    params: *mut CUexecAffinityParam,
    num_params: c_int,
    flags: c_uint,
    dev: CUdevice,
) -> Result<(), CUresult> {
    if num_params < 0 || (num_params > 0 && params.is_null()) {
        return Err(INVALID_VALUE);
    }
    // SM-count affinity only exists under MPS, which is not emulated.
    if num_params > 0 {
        return Err(CUresult::CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY);
    }
    ctx_create(pctx, flags, dev)
}

/// `params` may be NULL (no parameters).
pub unsafe fn ctx_create_v4(
    pctx: Out<CUcontext>,
    params: *mut CUctxCreateParams,
    flags: c_uint,
    dev: CUdevice,
) -> Result<(), CUresult> {
    if !params.is_null() {
        // SAFETY: non-null, and the caller passes a readable struct.
        let p = unsafe { params.read_unaligned() };
        if p.numExecAffinityParams < 0
            || (p.numExecAffinityParams > 0 && p.execAffinityParams.is_null())
        {
            return Err(INVALID_VALUE);
        }
        if p.numExecAffinityParams > 0 {
            return Err(CUresult::CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY);
        }
        // Compute-in-graphics sharing needs a graphics API; there is none.
        if !p.cigParams.is_null() {
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
    }
    ctx_create(pctx, flags, dev)
}

pub fn ctx_destroy(c: Live<Context>) -> Result<(), CUresult> {
    // The primary context belongs to cuDevicePrimaryCtx*.
    if c.primary {
        return Err(INVALID_CONTEXT);
    }
    // Taken once: of two racing destroys, one tears the context down.
    let c = REGISTRY.take(c.handle)?;
    c.alive.store(false, Ordering::Release);
    STACK.with(|s| s.borrow_mut().retain(|x| !Arc::ptr_eq(x, &c)));
    release_objects(c.id);
    Ok(())
}

pub fn ctx_get_current(pctx: Out<CUcontext>) -> Result<(), CUresult> {
    let top = STACK.with(|s| s.borrow().last().map(|c| c.handle()));
    pctx.write(top.unwrap_or(std::ptr::null_mut()));
    Ok(())
}

/// NULL unbinds the current context.
pub fn ctx_set_current(ctx: MaybeCtx) -> Result<(), CUresult> {
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        s.extend(ctx.0);
    });
    Ok(())
}

pub fn ctx_push_current(c: Live<Context>) -> Result<(), CUresult> {
    STACK.with(|s| s.borrow_mut().push(c.0));
    Ok(())
}

pub fn ctx_pop_current(pctx: Option<Out<CUcontext>>) -> Result<(), CUresult> {
    let popped = STACK
        .with(|s| s.borrow_mut().pop())
        .ok_or(INVALID_CONTEXT)?;
    if let Some(p) = pctx {
        p.write(popped.handle());
    }
    Ok(())
}

/// `cuCtxGetDevice_v2`; `cuCtxGetDevice` is this at NULL.
pub fn ctx_get_device(device: Out<CUdevice>, ctx: MaybeCtx) -> Result<(), CUresult> {
    device.write(ctx.or_current()?.device);
    Ok(())
}

/// `cuCtxSynchronize_v2`: work runs synchronously, so a context is always
/// idle when asked. `cuCtxSynchronize` is this at NULL.
pub fn ctx_synchronize(ctx: MaybeCtx) -> Result<(), CUresult> {
    ctx.or_current().map(drop)
}

pub fn ctx_get_flags(flags: Out<c_uint>) -> Result<(), CUresult> {
    flags.write(current()?.flags.load(Ordering::Relaxed));
    Ok(())
}

pub fn ctx_get_api_version(ctx: MaybeCtx, version: Out<c_uint>) -> Result<(), CUresult> {
    ctx.or_current()?;
    version.write(CONTEXT_API_VERSION);
    Ok(())
}

pub fn ctx_get_id(ctx: MaybeCtx, id: Out<c_ulonglong>) -> Result<(), CUresult> {
    id.write(ctx.or_current()?.id);
    Ok(())
}

// ---- peer access ------------------------------------------------------------

/// `cuCtxEnablePeerAccess`: the current context may map `peer`'s memory
/// from now on. Only a device that can access the peer's device may
/// (CUDA_ERROR_INVALID_DEVICE otherwise, a device's own contexts included);
/// enabling twice is CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED.
pub fn ctx_enable_peer_access(peer: Live<Context>, flags: c_uint) -> Result<(), CUresult> {
    if flags != 0 {
        return Err(INVALID_VALUE);
    }
    let c = current()?;
    if !crate::device::peers(c.device, peer.device) {
        return Err(CUresult::CUDA_ERROR_INVALID_DEVICE);
    }
    let mut peers = c.peers.lock();
    if peers.contains(&peer.id) {
        return Err(CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED);
    }
    peers.push(peer.id);
    Ok(())
}

/// `cuCtxDisablePeerAccess`: CUDA_ERROR_PEER_ACCESS_NOT_ENABLED unless
/// enabled.
pub fn ctx_disable_peer_access(peer: Live<Context>) -> Result<(), CUresult> {
    let c = current()?;
    let mut peers = c.peers.lock();
    let at = peers
        .iter()
        .position(|&id| id == peer.id)
        .ok_or(CUresult::CUDA_ERROR_PEER_ACCESS_NOT_ENABLED)?;
    peers.remove(at);
    Ok(())
}

/// What a context owns dies with it: streams, events, memory.
fn release_objects(ctx: u64) {
    stream::release_context(ctx);
    event::release_context(ctx);
    // Before memory: running kernels are stopped and module records dropped
    // before the context's memory goes.
    crate::launch::release_context(ctx);
    memory::release_context(ctx);
}

// ---- primary contexts -------------------------------------------------------

struct Primary {
    ctx: Arc<Context>,
    refcount: u32,
    flags: u32,
}

/// One slot per device; the context object is made once and keeps its handle
/// across release and reset, so a handle cached by a runtime stays
/// recognisable (and usable again once retained).
static PRIMARY: Lazy<Mutex<Vec<Primary>>> = Lazy::new(|| {
    Mutex::new(
        (0..crate::device::count())
            .map(|dev| {
                let ctx = Context::new(dev, 0, true, false);
                Primary {
                    ctx,
                    refcount: 0,
                    flags: 0,
                }
            })
            .collect(),
    )
});

fn deactivate(p: &mut Primary) {
    p.refcount = 0;
    p.ctx.peers.lock().clear();
    // A primary context made again starts with the driver's limits.
    *p.ctx.limits.lock() = Default::default();
    p.ctx.alive.store(false, Ordering::Release);
    release_objects(p.ctx.id);
}

pub fn primary_retain(pctx: Out<CUcontext>, dev: Device) -> Result<(), CUresult> {
    let mut slots = PRIMARY.lock();
    let p = &mut slots[dev.0 as usize];
    if p.refcount == 0 {
        p.ctx.flags.store(p.flags, Ordering::Relaxed);
        p.ctx.alive.store(true, Ordering::Release);
    }
    p.refcount += 1;
    pctx.write(p.ctx.handle());
    Ok(())
}

/// `cuDevicePrimaryCtxRelease` and `_v2`.
pub fn primary_release(dev: Device) -> Result<(), CUresult> {
    let mut slots = PRIMARY.lock();
    let p = &mut slots[dev.0 as usize];
    match p.refcount {
        0 => Err(INVALID_CONTEXT),
        1 => {
            deactivate(p);
            Ok(())
        }
        _ => {
            p.refcount -= 1;
            Ok(())
        }
    }
}

/// Destroys the primary context's allocations and state whatever its
/// refcount, as cudaDeviceReset needs.
pub fn primary_reset(dev: Device) -> Result<(), CUresult> {
    let mut slots = PRIMARY.lock();
    let p = &mut slots[dev.0 as usize];
    deactivate(p);
    p.flags = 0;
    Ok(())
}

pub fn primary_set_flags(dev: Device, flags: c_uint) -> Result<(), CUresult> {
    let flags = check_flags(flags)?;
    let mut slots = PRIMARY.lock();
    let p = &mut slots[dev.0 as usize];
    p.flags = flags;
    if p.refcount > 0 {
        p.ctx.flags.store(flags, Ordering::Relaxed);
    }
    Ok(())
}

/// The ordinal is checked after the out-pointers, as it always was.
pub fn primary_get_state(
    dev: CUdevice,
    flags: Out<c_uint>,
    active: Out<c_int>,
) -> Result<(), CUresult> {
    check_device(dev)?;
    let slots = PRIMARY.lock();
    let p = &slots[dev as usize];
    flags.write(p.flags);
    active.write(c_int::from(p.refcount > 0));
    Ok(())
}
