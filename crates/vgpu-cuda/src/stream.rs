//! Streams, as far as memory work needs them: creation and destruction go
//! to the host; flags, priority and context are answered from the guest's
//! stream object.
//!
//! A `CUstream` handed to an application is the address of a [`Stream`] in
//! the registry, found there before it is used, so an invented or destroyed
//! handle is CUDA_ERROR_INVALID_HANDLE, never a dereference. The special
//! values NULL, `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD` are not
//! objects: they reach the host as 0, 1 and 2. Entry points with the
//! `_ptsz`/`_ptds` suffix read NULL as `CU_STREAM_PER_THREAD`.
//!
//! Work the application can only observe later (async copies, memsets,
//! frees) is a deferred op in the protocol's table: `check::host` queues
//! it, and its failure is reported at the next synchronizing call.

use crate::check::{self, reject, INVALID_VALUE};
use crate::contexts::Context;
use crate::driver;
use cuda_types::cuda::{CUcontext, CUgreenCtx, CUresult, CUstream};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::ffi::{c_int, c_uint};
use std::sync::Arc;
use vgpu_guest::ffi::OutPtr;
use vgpu_transport::proto::{
    CtxSynchronize, StreamCreate, StreamDestroy, StreamQuery, StreamSynchronize,
};

const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

pub const LEGACY: u64 = 0x1;
pub const PER_THREAD: u64 = 0x2;

/// `CU_STREAM_NON_BLOCKING`, the only creation flag there is.
const FLAG_NON_BLOCKING: u32 = 0x1;

/// `cuCtxGetStreamPriorityRange` of every GPU since Volta: 0 (least) down
/// to -5 (greatest). Priorities outside it are clamped, as the driver does.
pub const PRIORITY_LEAST: i32 = 0;
pub const PRIORITY_GREATEST: i32 = -5;

/// "vgpustr!" — guards against a registry bug handing out a foreign object.
const MAGIC: u64 = 0x2172_7473_7570_6776;

pub struct Stream {
    magic: u64,
    /// The host's handle.
    pub remote: u64,
    pub ctx: Arc<Context>,
    pub flags: u32,
    pub priority: i32,
}

impl Stream {
    fn handle(self: &Arc<Self>) -> CUstream {
        Arc::as_ptr(self) as CUstream
    }
}

static LIVE: RwLock<BTreeMap<usize, Arc<Stream>>> = RwLock::new(BTreeMap::new());

/// Which default stream a NULL handle means at this entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Null {
    /// The plain entry points: NULL is the legacy default stream.
    Legacy,
    /// `_ptsz` / `_ptds`: NULL is this thread's default stream.
    PerThread,
}

/// Where stream-ordered work goes: the context it runs in and the stream
/// value the host receives.
pub struct Target {
    pub ctx: Arc<Context>,
    pub ctx_remote: u64,
    pub stream: u64,
    /// The guest object, for a created stream.
    pub object: Option<Arc<Stream>>,
}

fn lookup(h: CUstream) -> Result<Arc<Stream>, CUresult> {
    let found = LIVE.read().get(&(h as usize)).cloned();
    match found {
        Some(s) if s.magic == MAGIC => Ok(s),
        _ => Err(reject(
            INVALID_HANDLE,
            format_args!("stream {h:p} is not a live stream of this process"),
        )),
    }
}

/// Resolves a handle an application passed; `null` says what NULL means.
pub fn target(h: CUstream, null: Null) -> Result<Target, CUresult> {
    driver::get()?;
    let special = match (h as u64, null) {
        (0, Null::Legacy) => Some(0),
        (0, Null::PerThread) => Some(PER_THREAD),
        (LEGACY, _) => Some(LEGACY),
        (PER_THREAD, _) => Some(PER_THREAD),
        _ => None,
    };
    if let Some(stream) = special {
        let (ctx, ctx_remote) = check::current()?;
        return Ok(Target {
            ctx,
            ctx_remote,
            stream,
            object: None,
        });
    }
    let s = lookup(h)?;
    let ctx_remote = s
        .ctx
        .remote()
        .map_err(|e| reject(e, format_args!("stream {h:p}: its context is destroyed")))?;
    Ok(Target {
        ctx: s.ctx.clone(),
        ctx_remote,
        stream: s.remote,
        object: Some(s),
    })
}

/// `cuStreamCreateWithPriority`, and `cuStreamCreate` at [`PRIORITY_LEAST`].
pub unsafe fn create(ph: *mut CUstream, flags: c_uint, priority: c_int) -> Result<(), CUresult> {
    driver::get()?;
    if ph.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuStreamCreate: NULL out-pointer"),
        ));
    }
    if flags & !FLAG_NON_BLOCKING != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuStreamCreate: flags {flags:#x}"),
        ));
    }
    let priority = priority.clamp(PRIORITY_GREATEST, PRIORITY_LEAST);
    let (ctx, ctx_remote) = check::current()?;
    let remote = check::host(&StreamCreate {
        ctx: ctx_remote,
        flags,
        priority,
    })?;
    let s = Arc::new(Stream {
        magic: MAGIC,
        remote,
        ctx,
        flags,
        priority,
    });
    let handle = s.handle();
    LIVE.write().insert(handle as usize, s);
    // SAFETY: checked non-null; writable by API contract.
    unsafe { ph.write_or(handle, INVALID_VALUE) }
}

/// Only the thread that takes the stream out of the registry tells the
/// host, so racing destroys send one StreamDestroy. The special streams
/// cannot be destroyed.
pub fn destroy(h: CUstream) -> Result<(), CUresult> {
    driver::get()?;
    let s = LIVE
        .write()
        .remove(&(h as usize))
        .filter(|s| s.magic == MAGIC)
        .ok_or_else(|| {
            reject(
                INVALID_HANDLE,
                format_args!("cuStreamDestroy: {h:p} is not a live stream"),
            )
        })?;
    if s.ctx.is_destroyed() {
        // The host dropped it with its context.
        return Ok(());
    }
    check::host(&StreamDestroy { stream: s.remote })
}

/// The host's StreamSynchronize/StreamQuery name created streams only.
/// Waiting for a default stream is a context synchronisation there — a
/// superset of the wait, so never too early.
fn wait(t: &Target) -> Result<(), CUresult> {
    match &t.object {
        Some(s) => check::host(&StreamSynchronize { stream: s.remote }),
        None => check::host(&CtxSynchronize { ctx: t.ctx_remote }),
    }
}

pub fn synchronize(h: CUstream, null: Null) -> Result<(), CUresult> {
    wait(&target(h, null)?)
}

/// A default stream is queried by waiting for it: "idle" is then the true
/// answer, at the price of a blocking query.
pub fn query(h: CUstream, null: Null) -> Result<(), CUresult> {
    let t = target(h, null)?;
    match &t.object {
        Some(s) => check::host(&StreamQuery { stream: s.remote }),
        None => wait(&t),
    }
}

/// The default streams have priority 0 and no flags; asking needs a
/// current context, as every question about them does.
pub unsafe fn get_priority(h: CUstream, out: *mut c_int, null: Null) -> Result<(), CUresult> {
    let t = target(h, null)?;
    let p = t.object.map_or(PRIORITY_LEAST, |s| s.priority);
    // SAFETY: API contract: out is writable or null.
    unsafe { out.write_or(p, INVALID_VALUE) }
}

pub unsafe fn get_flags(h: CUstream, out: *mut c_uint, null: Null) -> Result<(), CUresult> {
    let t = target(h, null)?;
    let f = t.object.map_or(0, |s| s.flags);
    // SAFETY: API contract: out is writable or null.
    unsafe { out.write_or(f, INVALID_VALUE) }
}

pub unsafe fn get_ctx(h: CUstream, out: *mut CUcontext, null: Null) -> Result<(), CUresult> {
    let t = target(h, null)?;
    // SAFETY: API contract: out is writable or null.
    unsafe { out.write_or(t.ctx.handle(), INVALID_VALUE) }
}

/// vgpu has no green contexts, so a stream's green context is always NULL.
pub unsafe fn get_ctx_v2(
    h: CUstream,
    out: *mut CUcontext,
    green: *mut CUgreenCtx,
    null: Null,
) -> Result<(), CUresult> {
    if out.is_null() && green.is_null() {
        driver::get()?;
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuStreamGetCtx_v2: both outputs NULL"),
        ));
    }
    let t = target(h, null)?;
    // SAFETY: API contract: each output is writable or null.
    unsafe {
        if !out.is_null() {
            out.write_or(t.ctx.handle(), INVALID_VALUE)?;
        }
        if !green.is_null() {
            green.write_or(std::ptr::null_mut(), INVALID_VALUE)?;
        }
    }
    Ok(())
}

/// Forgets the streams of a destroyed context (the host dropped them).
pub fn forget_context(ctx: &Arc<Context>) {
    LIVE.write().retain(|_, s| !Arc::ptr_eq(&s.ctx, ctx));
}

/// `cuCtxGetStreamPriorityRange`: the device's fixed range, answered
/// locally (PyTorch asks before its first allocation). Either output may be
/// NULL.
pub unsafe fn priority_range(least: *mut c_int, greatest: *mut c_int) -> Result<(), CUresult> {
    driver::get()?;
    // SAFETY: each output is NULL or writable (API contract).
    unsafe {
        if !least.is_null() {
            least.write_unaligned(PRIORITY_LEAST);
        }
        if !greatest.is_null() {
            greatest.write_unaligned(PRIORITY_GREATEST);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contexts;

    #[test]
    fn unknown_handles_are_invalid() {
        assert_eq!(lookup(0xdead_0000 as CUstream).err(), Some(INVALID_HANDLE));
        let ctx = contexts::register(Context::new(
            contexts::Kind::Created,
            0,
            0,
            0,
            contexts::API_VERSION,
        ));
        let s = Arc::new(Stream {
            magic: MAGIC,
            remote: 77,
            ctx: ctx.clone(),
            flags: 1,
            priority: -1,
        });
        let h = s.handle();
        LIVE.write().insert(h as usize, s);
        assert_eq!(lookup(h).unwrap().remote, 77);
        forget_context(&ctx);
        assert_eq!(lookup(h).err(), Some(INVALID_HANDLE));
    }
}
