//! Contexts: a registry of live context objects, a per-thread context stack
//! and one primary context per device.
//!
//! A `CUcontext` is the address of an `Arc<Context>`'s payload, but it is never
//! dereferenced: handles are looked up in the registry, so a stale or forged
//! handle is an error code, not a crash. Thread stacks hold `Arc`s, which keeps
//! a destroyed context's address from being reused while another thread still
//! has it current (that thread then gets CUDA_ERROR_CONTEXT_IS_DESTROYED).

use crate::device::{check_device, ensure_init};
use crate::ffi::write_out;
use crate::{event, memory, stream};
use cuda_types::cuda::{
    CUcontext, CUctxCreateParams, CUctx_flags, CUdevice, CUexecAffinityParam, CUresult,
};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_ulonglong};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const INVALID_CONTEXT: CUresult = CUresult::CUDA_ERROR_INVALID_CONTEXT;
const MAGIC: u64 = 0x7667_7075_6374_7821; // "vgpuctx!"
/// The API version a context created through the `_v2` entry points reports.
const CONTEXT_API_VERSION: c_uint = 3020;

pub struct Context {
    magic: u64,
    pub id: u64,
    pub device: CUdevice,
    flags: AtomicU32,
    primary: bool,
    /// Ordinary contexts: not yet destroyed. Primary: retained at least once
    /// since the last release to zero or reset.
    alive: AtomicBool,
}

impl Context {
    fn new(device: CUdevice, flags: u32, primary: bool, alive: bool) -> Arc<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Arc::new(Context {
            magic: MAGIC,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            device,
            flags: AtomicU32::new(flags),
            primary,
            alive: AtomicBool::new(alive),
        })
    }

    pub fn handle(self: &Arc<Self>) -> CUcontext {
        Arc::as_ptr(self) as CUcontext
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

static REGISTRY: Lazy<Mutex<HashMap<usize, Arc<Context>>>> = Lazy::new(Default::default);

thread_local! {
    static STACK: RefCell<Vec<Arc<Context>>> = const { RefCell::new(Vec::new()) };
}

/// A handle an application passed in, if it names a live context.
pub fn lookup(ctx: CUcontext) -> Result<Arc<Context>, CUresult> {
    if ctx.is_null() {
        return Err(INVALID_CONTEXT);
    }
    let found = REGISTRY.lock().get(&(ctx as usize)).cloned();
    let c = found.ok_or(INVALID_CONTEXT)?;
    if c.magic != MAGIC {
        return Err(INVALID_CONTEXT);
    }
    c.usable()?;
    Ok(c)
}

fn register(c: &Arc<Context>) {
    REGISTRY.lock().insert(c.handle() as usize, c.clone());
}

/// The calling thread's current context, for every call that needs one.
pub fn current() -> Result<Arc<Context>, CUresult> {
    ensure_init()?;
    let top = STACK.with(|s| s.borrow().last().cloned());
    let c = top.ok_or(INVALID_CONTEXT)?;
    c.usable()?;
    // A kernel fault makes the context answer every call with its error.
    crate::launch::sticky_error(c.id)?;
    Ok(c)
}

/// `ctx`, or the current context where the API lets null mean "current".
fn explicit_or_current(ctx: CUcontext) -> Result<Arc<Context>, CUresult> {
    ensure_init()?;
    if ctx.is_null() {
        current()
    } else {
        lookup(ctx)
    }
}

/// Whether any context of this process is alive (NVML reports the process).
pub fn any_alive() -> bool {
    REGISTRY.lock().values().any(|c| c.is_alive())
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

fn create(pctx: *mut CUcontext, flags: c_uint, dev: CUdevice) -> Result<(), CUresult> {
    if pctx.is_null() {
        return Err(INVALID_VALUE);
    }
    check_device(dev)?;
    let flags = check_flags(flags)?;
    let c = Context::new(dev, flags, false, true);
    register(&c);
    let handle = c.handle();
    STACK.with(|s| s.borrow_mut().push(c));
    // SAFETY: checked non-null; the caller passes a writable CUcontext.
    unsafe { write_out(pctx, handle, INVALID_VALUE) }
}

pub unsafe fn ctx_create(
    pctx: *mut CUcontext,
    flags: c_uint,
    dev: CUdevice,
) -> Result<(), CUresult> {
    create(pctx, flags, dev)
}

pub unsafe fn ctx_create_v3(
    pctx: *mut CUcontext,
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
        ensure_init()?;
        return Err(CUresult::CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY);
    }
    create(pctx, flags, dev)
}

pub unsafe fn ctx_create_v4(
    pctx: *mut CUcontext,
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
            ensure_init()?;
            return Err(CUresult::CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY);
        }
        // Compute-in-graphics sharing needs a graphics API; there is none.
        if !p.cigParams.is_null() {
            ensure_init()?;
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
    }
    create(pctx, flags, dev)
}

pub unsafe fn ctx_destroy(ctx: CUcontext) -> Result<(), CUresult> {
    ensure_init()?;
    let c = lookup(ctx)?;
    // The primary context belongs to cuDevicePrimaryCtx*.
    if c.primary {
        return Err(INVALID_CONTEXT);
    }
    REGISTRY.lock().remove(&(ctx as usize));
    c.alive.store(false, Ordering::Release);
    STACK.with(|s| s.borrow_mut().retain(|x| !Arc::ptr_eq(x, &c)));
    release_objects(c.id);
    Ok(())
}

pub unsafe fn ctx_get_current(pctx: *mut CUcontext) -> Result<(), CUresult> {
    if pctx.is_null() {
        return Err(INVALID_VALUE);
    }
    ensure_init()?;
    let top = STACK.with(|s| s.borrow().last().map(|c| c.handle()));
    // SAFETY: checked non-null; the caller passes a writable CUcontext.
    unsafe { write_out(pctx, top.unwrap_or(std::ptr::null_mut()), INVALID_VALUE) }
}

pub unsafe fn ctx_set_current(ctx: CUcontext) -> Result<(), CUresult> {
    ensure_init()?;
    if ctx.is_null() {
        STACK.with(|s| s.borrow_mut().pop());
        return Ok(());
    }
    let c = lookup(ctx)?;
    STACK.with(|s| {
        let mut s = s.borrow_mut();
        s.pop();
        s.push(c);
    });
    Ok(())
}

pub unsafe fn ctx_push_current(ctx: CUcontext) -> Result<(), CUresult> {
    ensure_init()?;
    let c = lookup(ctx)?;
    STACK.with(|s| s.borrow_mut().push(c));
    Ok(())
}

pub unsafe fn ctx_pop_current(pctx: *mut CUcontext) -> Result<(), CUresult> {
    ensure_init()?;
    let popped = STACK
        .with(|s| s.borrow_mut().pop())
        .ok_or(INVALID_CONTEXT)?;
    if !pctx.is_null() {
        // SAFETY: non-null; the caller passes a writable CUcontext.
        unsafe { pctx.write_unaligned(popped.handle()) };
    }
    Ok(())
}

pub unsafe fn ctx_get_device(device: *mut CUdevice) -> Result<(), CUresult> {
    if device.is_null() {
        return Err(INVALID_VALUE);
    }
    let c = current()?;
    // SAFETY: checked non-null; the caller passes a writable CUdevice.
    unsafe { write_out(device, c.device, INVALID_VALUE) }
}

pub unsafe fn ctx_get_device_v2(device: *mut CUdevice, ctx: CUcontext) -> Result<(), CUresult> {
    if device.is_null() {
        return Err(INVALID_VALUE);
    }
    let c = explicit_or_current(ctx)?;
    // SAFETY: checked non-null; the caller passes a writable CUdevice.
    unsafe { write_out(device, c.device, INVALID_VALUE) }
}

/// Work runs synchronously, so a context is always idle when asked.
pub fn ctx_synchronize() -> Result<(), CUresult> {
    current().map(drop)
}

pub unsafe fn ctx_synchronize_v2(ctx: CUcontext) -> Result<(), CUresult> {
    explicit_or_current(ctx).map(drop)
}

pub unsafe fn ctx_get_flags(flags: *mut c_uint) -> Result<(), CUresult> {
    if flags.is_null() {
        return Err(INVALID_VALUE);
    }
    let c = current()?;
    // SAFETY: checked non-null; the caller passes a writable uint.
    unsafe { write_out(flags, c.flags.load(Ordering::Relaxed), INVALID_VALUE) }
}

pub unsafe fn ctx_get_api_version(ctx: CUcontext, version: *mut c_uint) -> Result<(), CUresult> {
    if version.is_null() {
        return Err(INVALID_VALUE);
    }
    explicit_or_current(ctx)?;
    // SAFETY: checked non-null; the caller passes a writable uint.
    unsafe { write_out(version, CONTEXT_API_VERSION, INVALID_VALUE) }
}

pub unsafe fn ctx_get_id(ctx: CUcontext, id: *mut c_ulonglong) -> Result<(), CUresult> {
    if id.is_null() {
        return Err(INVALID_VALUE);
    }
    let c = explicit_or_current(ctx)?;
    // SAFETY: checked non-null; the caller passes a writable u64.
    unsafe { write_out(id, c.id, INVALID_VALUE) }
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
        (0..crate::device::DEVICE_COUNT)
            .map(|dev| {
                let ctx = Context::new(dev, 0, true, false);
                register(&ctx);
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
    p.ctx.alive.store(false, Ordering::Release);
    release_objects(p.ctx.id);
}

pub unsafe fn primary_retain(pctx: *mut CUcontext, dev: CUdevice) -> Result<(), CUresult> {
    if pctx.is_null() {
        return Err(INVALID_VALUE);
    }
    check_device(dev)?;
    let mut slots = PRIMARY.lock();
    let p = &mut slots[dev as usize];
    if p.refcount == 0 {
        p.ctx.flags.store(p.flags, Ordering::Relaxed);
        p.ctx.alive.store(true, Ordering::Release);
    }
    p.refcount += 1;
    // SAFETY: checked non-null; the caller passes a writable CUcontext.
    unsafe { write_out(pctx, p.ctx.handle(), INVALID_VALUE) }
}

pub fn primary_release(dev: CUdevice) -> Result<(), CUresult> {
    check_device(dev)?;
    let mut slots = PRIMARY.lock();
    let p = &mut slots[dev as usize];
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
pub fn primary_reset(dev: CUdevice) -> Result<(), CUresult> {
    check_device(dev)?;
    let mut slots = PRIMARY.lock();
    let p = &mut slots[dev as usize];
    deactivate(p);
    p.flags = 0;
    Ok(())
}

pub fn primary_set_flags(dev: CUdevice, flags: c_uint) -> Result<(), CUresult> {
    check_device(dev)?;
    let flags = check_flags(flags)?;
    let mut slots = PRIMARY.lock();
    let p = &mut slots[dev as usize];
    p.flags = flags;
    if p.refcount > 0 {
        p.ctx.flags.store(flags, Ordering::Relaxed);
    }
    Ok(())
}

pub unsafe fn primary_get_state(
    dev: CUdevice,
    flags: *mut c_uint,
    active: *mut c_int,
) -> Result<(), CUresult> {
    if flags.is_null() || active.is_null() {
        return Err(INVALID_VALUE);
    }
    check_device(dev)?;
    let slots = PRIMARY.lock();
    let p = &slots[dev as usize];
    // SAFETY: both checked non-null; the caller passes writable out-params.
    unsafe {
        write_out(flags, p.flags, INVALID_VALUE)?;
        write_out(active, c_int::from(p.refcount > 0), INVALID_VALUE)
    }
}
