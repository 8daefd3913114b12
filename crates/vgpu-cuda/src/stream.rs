//! Streams, as far as memory work needs them: creation and destruction go
//! to the host; flags, priority and context are answered from the guest's
//! stream object.
//!
//! A `CUstream` handed to an application is a handle the registry minted
//! for a [`Stream`]; a `CUstream` argument converts to a [`StreamArg`]
//! (an invented or destroyed handle is CUDA_ERROR_INVALID_HANDLE, never a
//! dereference). The special values NULL, `CU_STREAM_LEGACY` and
//! `CU_STREAM_PER_THREAD` are not objects: they reach the host as 0, 1 and
//! 2. Entry points with the `_ptsz`/`_ptds` suffix read NULL as
//! `CU_STREAM_PER_THREAD`.
//!
//! Work the application can only observe later (async copies, memsets,
//! frees) is a deferred op in the protocol's table: `check::host` queues
//! it, and its failure is reported at the next synchronizing call.

use crate::args::{self, Live};
use crate::check::{self, reject, INVALID_VALUE};
use crate::context::state::Context;
use cuda_types::cuda::{CUcontext, CUgreenCtx, CUresult, CUstream};
use std::ffi::{c_int, c_uint};
use std::sync::Arc;
use vgpu_ffi::{FromCuda, Mint, Out, Shared};
use vgpu_transport::proto::{
    CtxSynchronize, StreamCreate, StreamDestroy, StreamQuery, StreamSynchronize,
};

const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

pub const LEGACY: u64 = 0x1;
pub const PER_THREAD: u64 = 0x2;

/// `CU_STREAM_NON_BLOCKING`, the only creation flag there is.
pub const FLAG_NON_BLOCKING: u32 = 0x1;

/// `cuCtxGetStreamPriorityRange` of every GPU since Volta: 0 (least) down
/// to -5 (greatest). Priorities outside it are clamped, as the driver does.
pub const PRIORITY_LEAST: i32 = 0;
pub const PRIORITY_GREATEST: i32 = -5;

pub struct Stream {
    /// The value the application holds.
    handle: u64,
    /// The host's handle.
    pub remote: u64,
    pub ctx: Arc<Context>,
    pub flags: u32,
    pub priority: i32,
}

impl Stream {
    fn handle(&self) -> CUstream {
        args::handle(self.handle)
    }

    /// The handle's value (how capture state names the stream).
    pub fn raw_handle(&self) -> u64 {
        self.handle
    }
}

/// Created streams until `cuStreamDestroy` or their context's end.
pub(crate) static STREAMS: Shared<Arc<Stream>, CUresult> =
    Shared::new("stream", INVALID_HANDLE, Mint::Pointer);

/// A `CUstream` argument: one of the special values, or a live stream.
/// What NULL means depends on the entry point ([`Null`]), so it stays NULL
/// here and [`target`] decides.
#[derive(Clone)]
pub enum StreamArg {
    Null,
    /// `CU_STREAM_LEGACY`.
    Legacy,
    /// `CU_STREAM_PER_THREAD`.
    PerThread,
    Created(Arc<Stream>),
}

impl StreamArg {
    /// For handles that arrive inside structs (`CUlaunchConfig`) rather
    /// than as arguments.
    pub fn resolve(h: CUstream) -> Result<StreamArg, CUresult> {
        Ok(match h as u64 {
            0 => StreamArg::Null,
            LEGACY => StreamArg::Legacy,
            PER_THREAD => StreamArg::PerThread,
            _ => StreamArg::Created(Live::find(&STREAMS, h)?.into_arc()),
        })
    }

    /// The value the application passed.
    pub fn handle(&self) -> CUstream {
        match self {
            StreamArg::Null => std::ptr::null_mut(),
            StreamArg::Legacy => args::handle(LEGACY),
            StreamArg::PerThread => args::handle(PER_THREAD),
            StreamArg::Created(s) => s.handle(),
        }
    }
}

impl FromCuda<CUstream, CUresult> for StreamArg {
    unsafe fn from_cuda(h: CUstream) -> Result<Self, CUresult> {
        StreamArg::resolve(h)
    }
}

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

/// Where work on a stream the application named goes; `null` says what
/// NULL means.
pub fn target(s: &StreamArg, null: Null) -> Result<Target, CUresult> {
    let stream = match (s, null) {
        (StreamArg::Created(s), _) => {
            let ctx_remote = s.ctx.remote().map_err(|e| {
                reject(
                    e,
                    format_args!("stream {:p}: its context is destroyed", s.handle()),
                )
            })?;
            return Ok(Target {
                ctx: s.ctx.clone(),
                ctx_remote,
                stream: s.remote,
                object: Some(s.clone()),
            });
        }
        (StreamArg::Null, Null::Legacy) => 0,
        (StreamArg::Null, Null::PerThread) | (StreamArg::PerThread, _) => PER_THREAD,
        (StreamArg::Legacy, _) => LEGACY,
    };
    let (ctx, ctx_remote) = check::current()?;
    Ok(Target {
        ctx,
        ctx_remote,
        stream,
        object: None,
    })
}

/// `cuStreamCreateWithPriority`, and `cuStreamCreate` at [`PRIORITY_LEAST`].
pub fn create(ph: Out<CUstream>, flags: c_uint, priority: c_int) -> Result<(), CUresult> {
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
    let s = args::register(&STREAMS, |handle| Stream {
        handle,
        remote,
        ctx,
        flags,
        priority,
    });
    ph.write(s.handle());
    Ok(())
}

/// Only the thread that takes the stream out of the registry tells the
/// host, so racing destroys send one StreamDestroy. The special streams
/// are not in the registry: they cannot be destroyed.
pub fn destroy(h: CUstream) -> Result<(), CUresult> {
    let s = STREAMS.take(h as u64)?;
    crate::capture::forget_stream(s.handle);
    if s.ctx.is_destroyed() {
        // The host dropped it with its context.
        return Ok(());
    }
    check::host(&StreamDestroy { stream: s.remote })
}

/// The host's StreamSynchronize/StreamQuery name created streams only.
/// Waiting for a default stream is a context synchronisation there — a
/// superset of the wait, so never too early.
pub(crate) fn wait(t: &Target) -> Result<(), CUresult> {
    match &t.object {
        Some(s) => check::host(&StreamSynchronize { stream: s.remote }),
        None => check::host(&CtxSynchronize { ctx: t.ctx_remote }),
    }
}

/// Synchronizing a capturing stream (or, under the capture mode rules,
/// another one) is refused: see `capture.rs`.
pub fn synchronize(s: StreamArg, null: Null) -> Result<(), CUresult> {
    let t = target(&s, null)?;
    crate::capture::sync_stream(&t, "cuStreamSynchronize")?;
    wait(&t)
}

/// A default stream is queried by waiting for it: "idle" is then the true
/// answer, at the price of a blocking query.
pub fn query(s: StreamArg, null: Null) -> Result<(), CUresult> {
    let t = target(&s, null)?;
    crate::capture::sync_stream(&t, "cuStreamQuery")?;
    match &t.object {
        Some(s) => check::host(&StreamQuery { stream: s.remote }),
        None => wait(&t),
    }
}

/// The default streams have priority 0 and no flags; asking needs a
/// current context, as every question about them does.
pub fn get_priority(s: StreamArg, out: Out<c_int>, null: Null) -> Result<(), CUresult> {
    let t = target(&s, null)?;
    out.write(t.object.map_or(PRIORITY_LEAST, |s| s.priority));
    Ok(())
}

pub fn get_flags(s: StreamArg, out: Out<c_uint>, null: Null) -> Result<(), CUresult> {
    let t = target(&s, null)?;
    out.write(t.object.map_or(0, |s| s.flags));
    Ok(())
}

/// `cuStreamGetCtx_v2`, where either output may be NULL but not both; and
/// `cuStreamGetCtx`, with no green-context output (`None`), where `out` is
/// then required. vgpu has no green contexts, so a stream's green context
/// is always NULL.
pub fn get_ctx(
    s: StreamArg,
    out: Option<Out<CUcontext>>,
    green: Option<Out<CUgreenCtx>>,
    null: Null,
) -> Result<(), CUresult> {
    if out.is_none() && green.is_none() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuStreamGetCtx: no output"),
        ));
    }
    let t = target(&s, null)?;
    if let Some(out) = out {
        out.write(t.ctx.handle());
    }
    if let Some(green) = green {
        green.write(std::ptr::null_mut());
    }
    Ok(())
}

/// Forgets the streams of a destroyed context (the host dropped them).
pub fn forget_context(ctx: &Arc<Context>) {
    STREAMS.take_unless(|_, s| !Arc::ptr_eq(&s.ctx, ctx));
}

/// `cuCtxGetStreamPriorityRange`: the device's fixed range, answered
/// locally (PyTorch asks before its first allocation). Either output may be
/// NULL.
pub fn priority_range(
    least: Option<Out<c_int>>,
    greatest: Option<Out<c_int>>,
) -> Result<(), CUresult> {
    if let Some(least) = least {
        least.write(PRIORITY_LEAST);
    }
    if let Some(greatest) = greatest {
        greatest.write(PRIORITY_GREATEST);
    }
    Ok(())
}

/// A registered stream without a host (unit tests of other modules).
#[cfg(test)]
pub(crate) fn test_stream(ctx: &Arc<Context>, flags: u32) -> Arc<Stream> {
    args::register(&STREAMS, |handle| Stream {
        handle,
        remote: handle,
        ctx: ctx.clone(),
        flags,
        priority: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::state;

    #[test]
    fn unknown_handles_are_invalid() {
        let find = |h: CUstream| StreamArg::resolve(h).err();
        assert_eq!(find(0xdead_0000 as CUstream), Some(INVALID_HANDLE));
        let ctx = state::register(Context::new(
            state::Kind::Created,
            0,
            0,
            0,
            state::API_VERSION,
        ));
        let s = args::register(&STREAMS, |handle| Stream {
            handle,
            remote: 77,
            ctx: ctx.clone(),
            flags: 1,
            priority: -1,
        });
        let h = s.handle();
        match StreamArg::resolve(h) {
            Ok(StreamArg::Created(found)) => assert_eq!(found.remote, 77),
            _ => panic!("a created stream resolves to itself"),
        }
        assert_eq!(StreamArg::resolve(h).map(|a| a.handle()), Ok(h));
        for (special, value) in [
            (0u64, None),
            (LEGACY, Some(LEGACY)),
            (PER_THREAD, Some(PER_THREAD)),
        ] {
            let a = StreamArg::resolve(args::handle(special)).ok().unwrap();
            assert_eq!(a.handle() as u64, value.unwrap_or(0));
            assert!(!matches!(a, StreamArg::Created(_)));
        }
        forget_context(&ctx);
        assert_eq!(find(h), Some(INVALID_HANDLE));
    }
}
