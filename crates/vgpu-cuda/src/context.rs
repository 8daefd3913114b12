//! The context entry points (`cuCtx*`, `cuDevicePrimaryCtx*`): creation
//! and destruction go to the host; the objects, their registry and the
//! per-thread stacks are in [`state`].
//!
//! Primary contexts: the guest object of each device exists from `cuInit`
//! on (cudart obtains and sets it current before retaining it). Its host
//! handle comes with the first retain and goes with the last release or a
//! reset; in between — and before any retain — it is what the driver calls
//! "a primary context which has not yet been initialized": queries about it
//! (device, flags, id) answer, work in it fails with
//! CUDA_ERROR_CONTEXT_IS_DESTROYED. It is never retained implicitly, so the
//! retain count the app sees is exactly its own.

pub mod state;

use crate::args::Live;
use crate::driver::{self, Device};
use cuda_types::cuda::{
    CUcontext, CUctxCreateParams, CUdevice, CUexecAffinityParam, CUlimit, CUresult,
};
use state::{Context, CtxArg, Kind};
use std::ffi::{c_int, c_uint, c_ulonglong};
use std::sync::Arc;
use vgpu_ffi::{In, Out};
use vgpu_transport::proto::{
    CtxCreate, CtxDestroy, CtxDisablePeerAccess, CtxEnablePeerAccess, CtxGetLimit, CtxSetLimit,
    CtxSynchronize, PrimaryCtxRelease, PrimaryCtxReset, PrimaryCtxRetain, PrimaryCtxSetFlags,
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
fn queryable(ctx: CtxArg) -> Result<Arc<Context>, CUresult> {
    let c = ctx.or_current()?;
    if c.is_destroyed() {
        return Err(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED);
    }
    Ok(c)
}

/// `cuCtxCreate` (at [`state::API_VERSION_LEGACY`]) and `cuCtxCreate_v2`
/// (at [`state::API_VERSION`]); the `_v3`/`_v4` forms after their checks.
pub fn create(pctx: Out<CUcontext>, flags: c_uint, dev: Device, api: u32) -> Result<(), CUresult> {
    check_flags(flags)?;
    let remote = driver::call(&CtxCreate {
        device: dev.host(),
        flags,
    })?;
    let ctx = Context::new(Kind::Created, dev.ordinal, dev.host(), flags, api);
    ctx.set_remote(remote);
    let ctx = state::register(ctx);
    pctx.write(ctx.handle());
    state::push(ctx);
    Ok(())
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

pub fn create_v3(
    pctx: Out<CUcontext>,
    params: *mut CUexecAffinityParam,
    num_params: c_int,
    flags: c_uint,
    dev: Device,
) -> Result<(), CUresult> {
    check_affinity(params, num_params)?;
    create(pctx, flags, dev, state::API_VERSION)
}

/// `params` may be NULL (no parameters).
///
/// # Safety
/// The affinity array `params` points to is readable for its count.
pub unsafe fn create_v4(
    pctx: Out<CUcontext>,
    params: Option<In<CUctxCreateParams>>,
    flags: c_uint,
    dev: Device,
) -> Result<(), CUresult> {
    if let Some(params) = params {
        let p = params.read();
        check_affinity(p.execAffinityParams, p.numExecAffinityParams)?;
        if !p.cigParams.is_null() {
            // CUDA-in-graphics shares a D3D/Vulkan queue that only exists
            // next to a local GPU.
            return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
        }
    }
    create(pctx, flags, dev, state::API_VERSION)
}

pub fn destroy(c: Live<Context>) -> Result<(), CUresult> {
    if c.kind == Kind::Primary {
        return Err(INVALID_CONTEXT);
    }
    // Destructors first, while the context still works: they may release
    // what they keep in it.
    c.cls_destroy();
    let remote = c.remote();
    // Only the thread that takes it out of the registry tells the host, so
    // racing destroys send one CtxDestroy.
    if !state::unregister(&c) {
        return Err(INVALID_CONTEXT);
    }
    state::pop_if_current(&c);
    crate::memory::context_gone(&c);
    match remote {
        Ok(h) => driver::call(&CtxDestroy { ctx: h }),
        Err(_) => Ok(()),
    }
}

pub fn get_current(pctx: Out<CUcontext>) -> Result<(), CUresult> {
    pctx.write(state::current_handle());
    Ok(())
}

/// NULL pops the current context.
pub fn set_current(ctx: CtxArg) -> Result<(), CUresult> {
    state::set_current(match ctx {
        CtxArg::Null => None,
        CtxArg::Given(c) => Some(c),
    });
    Ok(())
}

pub fn push_current(ctx: Live<Context>) -> Result<(), CUresult> {
    state::push(ctx.into_arc());
    Ok(())
}

/// The popped context is written where the caller wants it (NULL: not
/// wanted).
pub fn pop_current(pctx: Option<Out<CUcontext>>) -> Result<(), CUresult> {
    let c = state::pop().ok_or(INVALID_CONTEXT)?;
    if let Some(out) = pctx {
        out.write(c.handle());
    }
    Ok(())
}

/// `cuCtxGetDevice_v2`, and `cuCtxGetDevice` with [`CtxArg::Null`].
pub fn get_device(device: Out<CUdevice>, ctx: CtxArg) -> Result<(), CUresult> {
    device.write(queryable(ctx)?.device);
    Ok(())
}

pub fn get_flags(flags: Out<c_uint>) -> Result<(), CUresult> {
    flags.write(queryable(CtxArg::Null)?.flags());
    Ok(())
}

pub fn get_api_version(ctx: CtxArg, version: Out<c_uint>) -> Result<(), CUresult> {
    version.write(queryable(ctx)?.api_version);
    Ok(())
}

pub fn get_id(ctx: CtxArg, id: Out<c_ulonglong>) -> Result<(), CUresult> {
    id.write(queryable(ctx)?.id);
    Ok(())
}

/// `cuCtxSynchronize_v2`, and `cuCtxSynchronize` with [`CtxArg::Null`].
/// Refused while a stream of the context captures (see `capture.rs`).
pub fn synchronize(ctx: CtxArg) -> Result<(), CUresult> {
    let ctx = ctx.or_current()?;
    let remote = ctx.remote()?;
    crate::capture::sync_context(&ctx)?;
    driver::call(&CtxSynchronize { ctx: remote })
}

// ---- limits ----
//
// Forwarded for every `CUlimit`: the host's driver keeps them per context
// and knows which it supports (CUDA_ERROR_UNSUPPORTED_LIMIT) and how it
// clamps a value; the software GPU's device `malloc` uses the heap size.

/// `cuCtxGetLimit` in the current context.
pub fn get_limit(value: Out<usize>, limit: CUlimit) -> Result<(), CUresult> {
    let (_, ctx) = crate::check::current()?;
    let v = driver::call(&CtxGetLimit {
        ctx,
        limit: limit.0,
    })?;
    value.write(usize::try_from(v).unwrap_or(usize::MAX));
    Ok(())
}

/// `cuCtxSetLimit` in the current context.
pub fn set_limit(limit: CUlimit, value: usize) -> Result<(), CUresult> {
    let (_, ctx) = crate::check::current()?;
    driver::call(&CtxSetLimit {
        ctx,
        limit: limit.0,
        value: value as u64,
    })
}

// ---- primary contexts ----

// ---- peer access ----
//
// cuda.h's codes: a NULL or unknown `peerContext` and no current context
// are CUDA_ERROR_INVALID_CONTEXT (the conversion and `check::current`),
// as is the current context naming itself; non-zero flags
// CUDA_ERROR_INVALID_VALUE; devices that cannot reach each other (a device
// and itself included: cuDeviceCanAccessPeer says 0) are
// CUDA_ERROR_PEER_ACCESS_UNSUPPORTED, known from the inventory. Whether
// access is already enabled (or not yet) the host's driver knows:
// CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED / _NOT_ENABLED come from there.

/// `cuCtxEnablePeerAccess`: the current context may map `peer`'s memory.
pub fn enable_peer_access(peer: Live<Context>, flags: c_uint) -> Result<(), CUresult> {
    if flags != 0 {
        return Err(INVALID_VALUE);
    }
    let (cur, ctx) = crate::check::current()?;
    if Arc::ptr_eq(&cur, &peer) {
        return Err(INVALID_CONTEXT);
    }
    let peer_remote = peer.remote()?;
    if !crate::device::can_access(&Device::new(cur.device)?, &Device::new(peer.device)?) {
        return Err(CUresult::CUDA_ERROR_PEER_ACCESS_UNSUPPORTED);
    }
    driver::call(&CtxEnablePeerAccess {
        ctx,
        peer: peer_remote,
        flags,
    })
}

/// `cuCtxDisablePeerAccess`.
pub fn disable_peer_access(peer: Live<Context>) -> Result<(), CUresult> {
    let (_, ctx) = crate::check::current()?;
    driver::call(&CtxDisablePeerAccess {
        ctx,
        peer: peer.remote()?,
    })
}

pub fn primary_retain(pctx: Out<CUcontext>, dev: Device) -> Result<(), CUresult> {
    let p = dev.primary();
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
    pctx.write(p.handle());
    Ok(())
}

/// Releasing a context nobody holds (or one a reset already tore down) is
/// accepted quietly: the driver documents release after reset as safe, and
/// cudart releases once at exit whatever happened before.
///
/// The last release runs the CLS destructors: the driver documents that
/// the context "is automatically reset once the last reference to it is
/// released", and a reset destroys its storage. (cudart deletes its own
/// entry before its final release, so it never sees this.)
pub fn primary_release(dev: Device) -> Result<(), CUresult> {
    let p = dev.primary();
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
pub fn primary_reset(dev: Device) -> Result<(), CUresult> {
    let p = dev.primary();
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

/// `cuDevicePrimaryCtxSetFlags_v2`; with `active_ok` false, the pre-11.1
/// form, which refused to change an active primary context.
pub fn primary_set_flags(dev: Device, flags: c_uint, active_ok: bool) -> Result<(), CUresult> {
    let p = dev.primary();
    if !active_ok && *p.primary.lock() > 0 {
        return Err(CUresult::CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE);
    }
    check_flags(flags)?;
    let _count = p.primary.lock();
    driver::call(&PrimaryCtxSetFlags {
        device: p.host_device,
        flags,
    })?;
    p.set_flags(flags);
    Ok(())
}

/// Answered locally: every retain, release, reset and flag change of this
/// process's session passes through this guest.
pub fn primary_get_state(
    dev: Device,
    flags: Out<c_uint>,
    active: Out<c_int>,
) -> Result<(), CUresult> {
    let p = dev.primary();
    let is_active = *p.primary.lock() > 0;
    flags.write(p.flags());
    active.write(c_int::from(is_active));
    Ok(())
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
