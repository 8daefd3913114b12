//! The context entry points: creation and destruction go to the host, the
//! per-thread bookkeeping stays here (see [`crate::contexts`]).
//!
//! Primary contexts: the guest object of each device exists from `cuInit`
//! on (cudart obtains and sets it current before retaining it). Its host
//! handle comes with the first retain and goes with the last release or a
//! reset; in between — and before any retain — it is what the driver calls
//! "a primary context which has not yet been initialized": queries about it
//! (device, flags, id) answer, work in it fails with
//! CUDA_ERROR_CONTEXT_IS_DESTROYED. It is never retained implicitly, so the
//! retain count the app sees is exactly its own.

use crate::contexts::{self, Context, Kind};
use crate::driver;
use cuda_types::cuda::{CUcontext, CUctxCreateParams, CUdevice, CUexecAffinityParam, CUresult};
use std::ffi::{c_int, c_uint, c_ulonglong};
use std::sync::Arc;
use vgpu_guest::ffi::OutPtr;
use vgpu_transport::proto::{
    CtxCreate, CtxDestroy, CtxSynchronize, PrimaryCtxRelease, PrimaryCtxReset, PrimaryCtxRetain,
    PrimaryCtxSetFlags,
};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const INVALID_CONTEXT: CUresult = CUresult::CUDA_ERROR_INVALID_CONTEXT;

/// `CU_CTX_FLAGS_MASK`.
const FLAGS_MASK: u32 = 0xff;
/// `CU_CTX_SCHED_MASK`; at most one scheduling policy may be named.
const SCHED_MASK: u32 = 0x07;

fn check_flags(flags: u32) -> Result<(), CUresult> {
    let sched = flags & SCHED_MASK;
    if flags & !FLAGS_MASK != 0 || !matches!(sched, 0 | 1 | 2 | 4) {
        return Err(INVALID_VALUE);
    }
    Ok(())
}

/// A context the caller named (or the current one, for NULL) that may
/// still be asked about: one destroyed while current on this thread is not.
fn queryable(ctx: CUcontext) -> Result<Arc<Context>, CUresult> {
    let c = contexts::lookup_or_current(ctx)?;
    if c.is_destroyed() {
        return Err(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED);
    }
    Ok(c)
}

unsafe fn create(
    pctx: *mut CUcontext,
    flags: c_uint,
    dev: CUdevice,
    api: u32,
) -> Result<(), CUresult> {
    let d = driver::get()?;
    if pctx.is_null() {
        return Err(INVALID_VALUE);
    }
    check_flags(flags)?;
    let host_device = d.host_device(dev)?;
    let remote = driver::call(&CtxCreate {
        device: host_device,
        flags,
    })?;
    let ctx = Context::new(Kind::Created, dev, host_device, flags, api);
    ctx.set_remote(remote);
    let ctx = contexts::register(ctx);
    let handle = ctx.handle();
    contexts::push(ctx);
    // SAFETY: checked non-null; writable by API contract.
    unsafe { pctx.write_or(handle, INVALID_VALUE) }
}

pub unsafe fn create_v1(
    pctx: *mut CUcontext,
    flags: c_uint,
    dev: CUdevice,
) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { create(pctx, flags, dev, contexts::API_VERSION_LEGACY) }
}

pub unsafe fn create_v2(
    pctx: *mut CUcontext,
    flags: c_uint,
    dev: CUdevice,
) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { create(pctx, flags, dev, contexts::API_VERSION) }
}

/// Execution affinity (an SM-count limit) is a property of a real GPU's
/// partitioning that vgpu cannot honour, so asking for any is refused the
/// way a driver without the capability refuses it.
fn check_affinity(params: *const CUexecAffinityParam, n: c_int) -> Result<(), CUresult> {
    match n {
        0 => Ok(()),
        n if n < 0 || params.is_null() => Err(INVALID_VALUE),
        _ => Err(CUresult::CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY),
    }
}

pub unsafe fn create_v3(
    pctx: *mut CUcontext,
    params: *mut CUexecAffinityParam,
    num_params: c_int,
    flags: c_uint,
    dev: CUdevice,
) -> Result<(), CUresult> {
    driver::get()?;
    check_affinity(params, num_params)?;
    // SAFETY: forwarded caller contract.
    unsafe { create(pctx, flags, dev, contexts::API_VERSION) }
}

pub unsafe fn create_v4(
    pctx: *mut CUcontext,
    params: *mut CUctxCreateParams,
    flags: c_uint,
    dev: CUdevice,
) -> Result<(), CUresult> {
    driver::get()?;
    if !params.is_null() {
        // SAFETY: non-null; the API contract makes it a readable struct.
        let p = unsafe { params.read_unaligned() };
        check_affinity(p.execAffinityParams, p.numExecAffinityParams)?;
        if !p.cigParams.is_null() {
            // CUDA-in-graphics shares a D3D/Vulkan queue that only exists
            // next to a local GPU.
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
    }
    // SAFETY: forwarded caller contract.
    unsafe { create(pctx, flags, dev, contexts::API_VERSION) }
}

pub fn destroy(ctx: CUcontext) -> Result<(), CUresult> {
    driver::get()?;
    let c = contexts::lookup(ctx)?;
    if c.kind == Kind::Primary {
        return Err(INVALID_CONTEXT);
    }
    // Destructors first, while the context still works: they may release
    // what they keep in it.
    c.cls_destroy();
    let remote = c.remote();
    // Only the thread that takes it out of the registry tells the host, so
    // racing destroys send one CtxDestroy.
    if !contexts::unregister(&c) {
        return Err(INVALID_CONTEXT);
    }
    contexts::pop_if_current(&c);
    crate::memory::context_gone(&c);
    match remote {
        Ok(h) => driver::call(&CtxDestroy { ctx: h }),
        Err(_) => Ok(()),
    }
}

pub unsafe fn get_current(pctx: *mut CUcontext) -> Result<(), CUresult> {
    driver::get()?;
    // SAFETY: API contract: pctx is writable or null.
    unsafe { pctx.write_or(contexts::current_handle(), INVALID_VALUE) }
}

pub fn set_current(ctx: CUcontext) -> Result<(), CUresult> {
    driver::get()?;
    if ctx.is_null() {
        contexts::set_current(None);
    } else {
        contexts::set_current(Some(contexts::lookup(ctx)?));
    }
    Ok(())
}

pub fn push_current(ctx: CUcontext) -> Result<(), CUresult> {
    driver::get()?;
    contexts::push(contexts::lookup(ctx)?);
    Ok(())
}

pub unsafe fn pop_current(pctx: *mut CUcontext) -> Result<(), CUresult> {
    driver::get()?;
    let c = contexts::pop().ok_or(INVALID_CONTEXT)?;
    if !pctx.is_null() {
        // SAFETY: non-null; writable by API contract.
        unsafe { pctx.write_or(c.handle(), INVALID_VALUE)? };
    }
    Ok(())
}

pub unsafe fn get_device(device: *mut CUdevice) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { get_device_v2(device, std::ptr::null_mut()) }
}

pub unsafe fn get_device_v2(device: *mut CUdevice, ctx: CUcontext) -> Result<(), CUresult> {
    driver::get()?;
    let c = queryable(ctx)?;
    // SAFETY: API contract: device is writable or null.
    unsafe { device.write_or(c.device, INVALID_VALUE) }
}

pub unsafe fn get_flags(flags: *mut c_uint) -> Result<(), CUresult> {
    driver::get()?;
    let c = queryable(std::ptr::null_mut())?;
    // SAFETY: API contract: flags is writable or null.
    unsafe { flags.write_or(c.flags(), INVALID_VALUE) }
}

pub unsafe fn get_api_version(ctx: CUcontext, version: *mut c_uint) -> Result<(), CUresult> {
    driver::get()?;
    let c = queryable(ctx)?;
    // SAFETY: API contract: version is writable or null.
    unsafe { version.write_or(c.api_version, INVALID_VALUE) }
}

pub unsafe fn get_id(ctx: CUcontext, id: *mut c_ulonglong) -> Result<(), CUresult> {
    driver::get()?;
    let c = queryable(ctx)?;
    // SAFETY: API contract: id is writable or null.
    unsafe { id.write_or(c.id, INVALID_VALUE) }
}

pub fn synchronize() -> Result<(), CUresult> {
    driver::get()?;
    let (_, remote) = contexts::current_remote()?;
    driver::call(&CtxSynchronize { ctx: remote })
}

pub fn synchronize_v2(ctx: CUcontext) -> Result<(), CUresult> {
    driver::get()?;
    let remote = contexts::lookup_or_current(ctx)?.remote()?;
    driver::call(&CtxSynchronize { ctx: remote })
}

// ---- primary contexts ----

pub unsafe fn primary_retain(pctx: *mut CUcontext, dev: CUdevice) -> Result<(), CUresult> {
    let p = driver::get()?.primary(dev)?;
    if pctx.is_null() {
        return Err(INVALID_VALUE);
    }
    {
        let mut count = p.primary.lock();
        if *count == 0 {
            let remote = driver::call(&PrimaryCtxRetain {
                device: p.host_device,
            })?;
            p.set_remote(remote);
        }
        *count += 1;
    }
    // SAFETY: checked non-null; writable by API contract.
    unsafe { pctx.write_or(p.handle(), INVALID_VALUE) }
}

/// Releasing a context nobody holds (or one a reset already tore down) is
/// accepted quietly: the driver documents release after reset as safe, and
/// cudart releases once at exit whatever happened before.
///
/// The last release runs the CLS destructors: the driver documents that
/// the context "is automatically reset once the last reference to it is
/// released", and a reset destroys its storage. (cudart deletes its own
/// entry before its final release, so it never sees this.)
pub fn primary_release(dev: CUdevice) -> Result<(), CUresult> {
    let p = driver::get()?.primary(dev)?;
    if *p.primary.lock() == 1 {
        // Not under the count lock: a destructor may call into the driver.
        // A retain racing in meanwhile finds the storage empty, as it would
        // after a reset.
        p.cls_destroy();
    }
    let mut count = p.primary.lock();
    match *count {
        0 => Ok(()),
        1 => {
            driver::call(&PrimaryCtxRelease {
                device: p.host_device,
            })?;
            p.set_remote(0);
            crate::memory::context_gone(p);
            *count = 0;
            Ok(())
        }
        _ => {
            *count -= 1;
            Ok(())
        }
    }
}

/// Destroys the host context and everything in it; the guest object stays
/// (handles held by the app remain valid, and inactive) and the next retain
/// starts afresh.
pub fn primary_reset(dev: CUdevice) -> Result<(), CUresult> {
    let p = driver::get()?.primary(dev)?;
    p.cls_destroy();
    let mut count = p.primary.lock();
    driver::call(&PrimaryCtxReset {
        device: p.host_device,
    })?;
    p.set_remote(0);
    crate::memory::context_gone(p);
    *count = 0;
    Ok(())
}

pub fn primary_set_flags(dev: CUdevice, flags: c_uint) -> Result<(), CUresult> {
    let p = driver::get()?.primary(dev)?;
    check_flags(flags)?;
    let _count = p.primary.lock();
    driver::call(&PrimaryCtxSetFlags {
        device: p.host_device,
        flags,
    })?;
    p.set_flags(flags);
    Ok(())
}

/// The pre-11.1 form refused to change an active primary context.
pub fn primary_set_flags_v1(dev: CUdevice, flags: c_uint) -> Result<(), CUresult> {
    let p = driver::get()?.primary(dev)?;
    if *p.primary.lock() > 0 {
        return Err(CUresult::CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE);
    }
    primary_set_flags(dev, flags)
}

/// Answered locally: every retain, release, reset and flag change of this
/// process's session passes through this guest.
pub unsafe fn primary_get_state(
    dev: CUdevice,
    flags: *mut c_uint,
    active: *mut c_int,
) -> Result<(), CUresult> {
    let p = driver::get()?.primary(dev)?;
    if flags.is_null() || active.is_null() {
        return Err(INVALID_VALUE);
    }
    let is_active = *p.primary.lock() > 0;
    // SAFETY: both checked non-null; writable by API contract.
    unsafe {
        flags.write_or(p.flags(), INVALID_VALUE)?;
        active.write_or(c_int::from(is_active), INVALID_VALUE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_validation() {
        for ok in [0, 1, 2, 4, 8, 0x10, 0x80, 0x84, 0xf8] {
            assert_eq!(check_flags(ok), Ok(()), "{ok:#x}");
        }
        for bad in [3, 5, 6, 7, 0x100, 0x8000_0000] {
            assert_eq!(check_flags(bad), Err(INVALID_VALUE), "{bad:#x}");
        }
    }

    #[test]
    fn affinity() {
        assert_eq!(check_affinity(std::ptr::null(), 0), Ok(()));
        assert_eq!(check_affinity(std::ptr::null(), -1), Err(INVALID_VALUE));
        assert_eq!(check_affinity(std::ptr::null(), 1), Err(INVALID_VALUE));
        let p = CUexecAffinityParam::default();
        assert_eq!(
            check_affinity(&p, 1),
            Err(CUresult::CUDA_ERROR_UNSUPPORTED_EXEC_AFFINITY)
        );
    }
}
