//! Streams. Work is executed at call time, which is a valid schedule for
//! in-order streams: every stream is therefore always complete, and
//! synchronize/query/wait only have to validate their arguments. What must be
//! real is the bookkeeping applications observe: handles, flags, priorities,
//! ids, owning contexts, and invalid-handle errors for destroyed streams.

use crate::context::{current, Context};
use crate::event::Event;
use crate::ffi::Live;
use cuda_types::cuda::{CUcontext, CUdevice, CUgreenCtx, CUresult, CUstream};
use std::ffi::{c_int, c_uint, c_ulonglong};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vgpu_ffi::{FromCuda, Mint, Out, Shared};

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

/// What any call taking a `CUstream` needs to know about it: the converted
/// form of every stream argument, built-in or created.
#[derive(Clone)]
pub struct Stream {
    pub ctx: Arc<Context>,
    pub id: u64,
    pub flags: c_uint,
    pub priority: c_int,
}

/// Created streams. The built-in handles (0, 1, 2) are below anything the
/// registry mints, so they are never found here.
static STREAMS: Shared<Stream, CUresult> = Shared::new("stream", INVALID_HANDLE, Mint::Pointer);

thread_local! {
    static PER_THREAD_ID: u64 = NEXT_ID.fetch_add(1, Ordering::Relaxed);
}

/// Validates a stream argument. The built-in streams (NULL, legacy,
/// per-thread) belong to the calling thread's current context.
pub fn resolve(stream: CUstream) -> Result<Stream, CUresult> {
    let builtin = |id| {
        Ok(Stream {
            ctx: current()?,
            id,
            flags: 0,
            priority: 0,
        })
    };
    match stream as usize {
        0 | LEGACY => builtin(LEGACY_ID),
        PER_THREAD => builtin(PER_THREAD_ID.with(|id| *id)),
        h => STREAMS.get(h as u64),
    }
}

impl FromCuda<CUstream, CUresult> for Stream {
    unsafe fn from_cuda(stream: CUstream) -> Result<Self, CUresult> {
        resolve(stream)
    }
}

/// How a call that comes in a synchronous and a stream-ordered form is
/// ordered: the list passes `Order::Sync` for the synchronous entry points;
/// a stream argument is validated at the boundary and then needs nothing
/// more, since work runs at call time either way.
pub enum Order {
    Sync,
    Stream,
}

impl FromCuda<CUstream, CUresult> for Order {
    unsafe fn from_cuda(stream: CUstream) -> Result<Self, CUresult> {
        resolve(stream).map(|_| Order::Stream)
    }
}

/// A context's streams die with it (destroy, primary release or reset).
pub fn release_context(ctx: u64) {
    STREAMS.take_unless(|_, s| s.ctx.id != ctx);
}

/// `cuStreamCreateWithPriority`, and `cuStreamCreate` at priority 0.
pub fn stream_create_with_priority(
    out: Out<CUstream>,
    flags: c_uint,
    priority: c_int,
) -> Result<(), CUresult> {
    if flags & !NON_BLOCKING != 0 {
        return Err(INVALID_VALUE);
    }
    let ctx = current()?;
    let s = Stream {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        ctx,
        flags,
        priority: priority.clamp(GREATEST_PRIORITY, LEAST_PRIORITY),
    };
    out.write(STREAMS.insert(s) as CUstream);
    Ok(())
}

/// The built-in streams cannot be destroyed: they are not in the registry.
pub fn stream_destroy(stream: CUstream) -> Result<(), CUresult> {
    STREAMS.take(stream as u64).map(drop)
}

/// `cuStreamSynchronize` and `cuStreamQuery`: work already ran when it was
/// enqueued, so the stream is valid, idle and complete.
pub fn stream_synchronize(_stream: Stream) -> Result<(), CUresult> {
    Ok(())
}

pub fn stream_get_priority(stream: Stream, out: Out<c_int>) -> Result<(), CUresult> {
    out.write(stream.priority);
    Ok(())
}

pub fn stream_get_flags(stream: Stream, out: Out<c_uint>) -> Result<(), CUresult> {
    out.write(stream.flags);
    Ok(())
}

pub fn stream_get_ctx(stream: Stream, out: Out<CUcontext>) -> Result<(), CUresult> {
    out.write(stream.ctx.handle());
    Ok(())
}

/// No green contexts exist, so a stream's green context is always NULL.
pub fn stream_get_ctx_v2(
    stream: Stream,
    out: Option<Out<CUcontext>>,
    green: Option<Out<CUgreenCtx>>,
) -> Result<(), CUresult> {
    if out.is_none() && green.is_none() {
        return Err(INVALID_VALUE);
    }
    if let Some(o) = out {
        o.write(stream.ctx.handle());
    }
    if let Some(g) = green {
        g.write(std::ptr::null_mut());
    }
    Ok(())
}

pub fn stream_get_id(stream: Stream, out: Out<c_ulonglong>) -> Result<(), CUresult> {
    out.write(stream.id);
    Ok(())
}

pub fn stream_get_device(stream: Stream, out: Out<CUdevice>) -> Result<(), CUresult> {
    out.write(stream.ctx.device);
    Ok(())
}

/// The event's work is complete by construction, so waiting is validation.
pub fn stream_wait_event(
    _stream: Stream,
    _event: Live<Event>,
    flags: c_uint,
) -> Result<(), CUresult> {
    // CU_EVENT_WAIT_DEFAULT or CU_EVENT_WAIT_EXTERNAL.
    if flags > 1 {
        return Err(INVALID_VALUE);
    }
    Ok(())
}

/// Both out-pointers are optional, as in cuda.h.
pub fn ctx_get_stream_priority_range(
    least: Option<Out<c_int>>,
    greatest: Option<Out<c_int>>,
) -> Result<(), CUresult> {
    current()?;
    if let Some(l) = least {
        l.write(LEAST_PRIORITY);
    }
    if let Some(g) = greatest {
        g.write(GREATEST_PRIORITY);
    }
    Ok(())
}
