//! Streams. Work is executed at call time, which is a valid schedule for
//! in-order streams: every stream is therefore always complete, and
//! synchronize/query/wait only have to validate their arguments. What must be
//! real is the bookkeeping applications observe: handles, flags, priorities,
//! ids, owning contexts, and invalid-handle errors for destroyed streams.

use crate::context::{current, Context};
use crate::device::ensure_init;
use crate::event;
use crate::ffi::{mint_handle, write_out};
use cuda_types::cuda::{CUcontext, CUdevice, CUevent, CUgreenCtx, CUresult, CUstream};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{c_int, c_uint, c_ulonglong};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

/// `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD` from cuda.h.
const LEGACY: usize = 0x1;
const PER_THREAD: usize = 0x2;
const NON_BLOCKING: c_uint = 1;

/// Hopper's range as `cuCtxGetStreamPriorityRange` reports it: 0 is the
/// lowest priority, -5 the highest; requests outside are clamped.
pub const LEAST_PRIORITY: c_int = 0;
pub const GREATEST_PRIORITY: c_int = -5;

/// Stream ids: the legacy stream has its own; created and per-thread streams
/// draw from one counter so no two streams share an id.
const LEGACY_ID: u64 = 1;
static NEXT_ID: AtomicU64 = AtomicU64::new(LEGACY_ID + 1);

struct Stream {
    id: u64,
    ctx: Arc<Context>,
    flags: c_uint,
    priority: c_int,
}

static STREAMS: Lazy<Mutex<HashMap<usize, Arc<Stream>>>> = Lazy::new(Default::default);

thread_local! {
    static PER_THREAD_ID: u64 = NEXT_ID.fetch_add(1, Ordering::Relaxed);
}

/// What any call taking a `CUstream` needs to know about it.
pub struct Resolved {
    pub ctx: Arc<Context>,
    pub id: u64,
    pub flags: c_uint,
    pub priority: c_int,
}

/// Validates a stream argument. The built-in streams (NULL, legacy,
/// per-thread) belong to the calling thread's current context.
pub fn resolve(stream: CUstream) -> Result<Resolved, CUresult> {
    let builtin = |id| {
        Ok(Resolved {
            ctx: current()?,
            id,
            flags: 0,
            priority: 0,
        })
    };
    match stream as usize {
        0 | LEGACY => builtin(LEGACY_ID),
        PER_THREAD => builtin(PER_THREAD_ID.with(|id| *id)),
        h => {
            ensure_init()?;
            let s = STREAMS.lock().get(&h).cloned().ok_or(INVALID_HANDLE)?;
            Ok(Resolved {
                ctx: s.ctx.clone(),
                id: s.id,
                flags: s.flags,
                priority: s.priority,
            })
        }
    }
}

/// For the memory calls: a valid stream, nothing more.
pub fn check(stream: CUstream) -> Result<(), CUresult> {
    resolve(stream).map(drop)
}

/// A context's streams die with it (destroy, primary release or reset).
pub fn release_context(ctx: u64) {
    STREAMS.lock().retain(|_, s| s.ctx.id != ctx);
}

/// `cuStreamCreateWithPriority`, and `cuStreamCreate` at priority 0.
pub unsafe fn stream_create_with_priority(
    out: *mut CUstream,
    flags: c_uint,
    priority: c_int,
) -> Result<(), CUresult> {
    if out.is_null() || flags & !NON_BLOCKING != 0 {
        return Err(INVALID_VALUE);
    }
    let ctx = current()?;
    let handle = mint_handle();
    let s = Stream {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        ctx,
        flags,
        priority: priority.clamp(GREATEST_PRIORITY, LEAST_PRIORITY),
    };
    STREAMS.lock().insert(handle, Arc::new(s));
    // SAFETY: checked non-null; the caller passes a writable CUstream.
    unsafe { write_out(out, handle as CUstream, INVALID_VALUE) }
}

/// The built-in streams cannot be destroyed.
pub fn stream_destroy(stream: CUstream) -> Result<(), CUresult> {
    ensure_init()?;
    match stream as usize {
        0 | LEGACY | PER_THREAD => Err(INVALID_HANDLE),
        h => STREAMS.lock().remove(&h).map(drop).ok_or(INVALID_HANDLE),
    }
}

/// Work already ran when it was enqueued.
pub fn stream_synchronize(stream: CUstream) -> Result<(), CUresult> {
    check(stream)
}

pub fn stream_query(stream: CUstream) -> Result<(), CUresult> {
    check(stream)
}

pub unsafe fn stream_get_priority(stream: CUstream, out: *mut c_int) -> Result<(), CUresult> {
    if out.is_null() {
        return Err(INVALID_VALUE);
    }
    let s = resolve(stream)?;
    // SAFETY: checked non-null; the caller passes a writable int.
    unsafe { write_out(out, s.priority, INVALID_VALUE) }
}

pub unsafe fn stream_get_flags(stream: CUstream, out: *mut c_uint) -> Result<(), CUresult> {
    if out.is_null() {
        return Err(INVALID_VALUE);
    }
    let s = resolve(stream)?;
    // SAFETY: checked non-null; the caller passes a writable uint.
    unsafe { write_out(out, s.flags, INVALID_VALUE) }
}

pub unsafe fn stream_get_ctx(stream: CUstream, out: *mut CUcontext) -> Result<(), CUresult> {
    if out.is_null() {
        return Err(INVALID_VALUE);
    }
    let s = resolve(stream)?;
    // SAFETY: checked non-null; the caller passes a writable CUcontext.
    unsafe { write_out(out, s.ctx.handle(), INVALID_VALUE) }
}

/// No green contexts exist, so a stream's green context is always NULL.
pub unsafe fn stream_get_ctx_v2(
    stream: CUstream,
    out: *mut CUcontext,
    green: *mut CUgreenCtx,
) -> Result<(), CUresult> {
    if out.is_null() && green.is_null() {
        return Err(INVALID_VALUE);
    }
    let s = resolve(stream)?;
    // SAFETY: each out-pointer is optional; non-null ones are writable.
    unsafe {
        if !out.is_null() {
            out.write_unaligned(s.ctx.handle());
        }
        if !green.is_null() {
            green.write_unaligned(std::ptr::null_mut());
        }
    }
    Ok(())
}

pub unsafe fn stream_get_id(stream: CUstream, out: *mut c_ulonglong) -> Result<(), CUresult> {
    if out.is_null() {
        return Err(INVALID_VALUE);
    }
    let s = resolve(stream)?;
    // SAFETY: checked non-null; the caller passes a writable u64.
    unsafe { write_out(out, s.id, INVALID_VALUE) }
}

pub unsafe fn stream_get_device(stream: CUstream, out: *mut CUdevice) -> Result<(), CUresult> {
    if out.is_null() {
        return Err(INVALID_VALUE);
    }
    let s = resolve(stream)?;
    // SAFETY: checked non-null; the caller passes a writable CUdevice.
    unsafe { write_out(out, s.ctx.device, INVALID_VALUE) }
}

/// The event's work is complete by construction, so waiting is validation.
pub fn stream_wait_event(stream: CUstream, ev: CUevent, flags: c_uint) -> Result<(), CUresult> {
    // CU_EVENT_WAIT_DEFAULT or CU_EVENT_WAIT_EXTERNAL.
    if flags > 1 {
        return Err(INVALID_VALUE);
    }
    check(stream)?;
    event::check(ev)
}

/// Both out-pointers are optional, as in cuda.h.
pub unsafe fn ctx_get_stream_priority_range(
    least: *mut c_int,
    greatest: *mut c_int,
) -> Result<(), CUresult> {
    current()?;
    // SAFETY: each out-pointer is optional; non-null ones are writable.
    unsafe {
        if !least.is_null() {
            least.write_unaligned(LEAST_PRIORITY);
        }
        if !greatest.is_null() {
            greatest.write_unaligned(GREATEST_PRIORITY);
        }
    }
    Ok(())
}
