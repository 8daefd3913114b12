//! Streams behind handles, and how every stream-taking call picks its
//! stream and context.
//!
//! A stream belongs to the context it was created in; work ordered on it
//! runs in that context, so a call naming a stream handle enters the
//! stream's context (after checking the context the call names is one of
//! this session's) — as CUDA runs a copy issued to another context's stream
//! in that stream's context. `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`
//! are the driver's own well-known values and mean the named context's
//! stream; `StreamSynchronize`/`StreamQuery`, which name no context, apply
//! them (and 0) to every context of the session.

use super::{cu, Session};
use cuda_types::cuda::{CUresult, CUstream};
use vgpu_transport::proto::{Serve, StreamCreate, StreamDestroy, StreamQuery, StreamSynchronize};
use vgpu_transport::Status;

/// The wire values of the driver's built-in streams (cuda.h's
/// `CU_STREAM_LEGACY` / `CU_STREAM_PER_THREAD` are these pointer values).
pub const WIRE_LEGACY: u64 = 1;
pub const WIRE_PER_THREAD: u64 = 2;

pub struct Strm {
    pub raw: CUstream,
    /// The handle of the context it was created in.
    pub ctx: u64,
    /// Created with `CU_STREAM_NON_BLOCKING`: the legacy default stream
    /// does not wait for it (so a synchronous copy does not report its
    /// deferred failures, docs/protocol.md "Batching and deferred errors").
    pub non_blocking: bool,
}

/// `CU_STREAM_NON_BLOCKING`.
const STREAM_NON_BLOCKING: u32 = 0x1;

const INVALID_HANDLE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_HANDLE);

/// The wire values that name the driver's own streams, not handles.
pub(crate) fn is_builtin(v: u64) -> bool {
    matches!(v, 0 | WIRE_LEGACY | WIRE_PER_THREAD)
}

fn builtin(v: u64) -> CUstream {
    std::ptr::without_provenance_mut(v as usize)
}

impl Session {
    /// Enters the context a stream-ordered call runs in and returns the
    /// driver stream: `0` is the context's NULL stream, 1/2 the built-in
    /// ones, anything else must be a live stream handle of this session.
    pub(super) fn enter_stream(&mut self, ctx: u64, stream: u64) -> Result<CUstream, Status> {
        // The named context must be ours even when the stream decides where
        // the work runs: a stale context handle is an error either way.
        self.ctx(ctx)?;
        match stream {
            0 => {
                self.enter(ctx)?;
                Ok(std::ptr::null_mut())
            }
            WIRE_LEGACY | WIRE_PER_THREAD => {
                self.enter(ctx)?;
                Ok(builtin(stream))
            }
            h => {
                let (raw, owner) = match self.streams.find(h) {
                    Some(s) => (s.raw, s.ctx),
                    None => {
                        tracing::debug!("session {}: unknown stream handle {h:#x}", self.id);
                        return Err(INVALID_HANDLE);
                    }
                };
                self.enter(owner)?;
                Ok(raw)
            }
        }
    }

    /// For copies and memsets: `None` (the synchronous op) enters `ctx`
    /// and runs without a stream; a stream (the `...Async` op) is picked as
    /// [`Session::enter_stream`] picks it.
    pub(super) fn enter_copy_stream(
        &mut self,
        ctx: u64,
        stream: Option<u64>,
    ) -> Result<Option<CUstream>, Status> {
        match stream {
            None => {
                self.enter(ctx)?;
                Ok(None)
            }
            Some(s) => self.enter_stream(ctx, s).map(Some),
        }
    }

    /// Waits for `stream` after an async copy that uses a host buffer of
    /// ours. A driver without `cuStreamSynchronize` is waited for with
    /// `cuCtxSynchronize` (a superset). `Err(status, settled)`: `settled`
    /// is whether the driver is known to be done with the buffer; if not,
    /// the caller must leak it rather than free memory a copy may still use.
    pub(super) fn wait_stream(&self, stream: CUstream) -> Result<(), (Status, bool)> {
        match cu!(self, cuStreamSynchronize(stream)) {
            Ok(()) => Ok(()),
            Err(e) => match cu!(self, cuCtxSynchronize()) {
                Ok(()) if e == Status::Cuda(CUresult::CUDA_ERROR_NOT_SUPPORTED) => Ok(()),
                Ok(()) => Err((e, true)),
                Err(_) => Err((e, false)),
            },
        }
    }
}

impl Serve<StreamCreate> for Session {
    fn serve(&mut self, c: StreamCreate) -> Result<u64, Status> {
        self.enter(c.ctx)?;
        self.admit_object(crate::account::Kind::Streams)?;
        let mut raw: CUstream = std::ptr::null_mut();
        if self.driver.cuda.cuStreamCreateWithPriority.is_some() {
            cu!(
                self,
                cuStreamCreateWithPriority(&mut raw, c.flags, c.priority)
            )?;
        } else {
            cu!(self, cuStreamCreate(&mut raw, c.flags))?;
        }
        Ok(self.streams.insert(Strm {
            raw,
            ctx: c.ctx,
            non_blocking: c.flags & STREAM_NON_BLOCKING != 0,
        }))
    }
}

impl Session {
    /// The stream behind a handle, with its context made current.
    fn enter_own_stream(&mut self, h: u64) -> Result<CUstream, Status> {
        let (raw, ctx) = match self.streams.find(h) {
            Some(s) => (s.raw, s.ctx),
            None => return Err(INVALID_HANDLE),
        };
        self.enter(ctx)?;
        Ok(raw)
    }
}

impl Serve<StreamDestroy> for Session {
    fn serve(&mut self, c: StreamDestroy) -> Result<(), Status> {
        let h = c.stream;
        let raw = self.enter_own_stream(h)?;
        self.destroy_raw_stream(raw)?;
        self.streams.remove(h);
        Ok(())
    }
}

impl Session {
    fn destroy_raw_stream(&self, raw: CUstream) -> Result<(), Status> {
        if self.driver.cuda.cuStreamDestroy_v2.is_some() {
            cu!(self, cuStreamDestroy_v2(raw))
        } else {
            cu!(self, cuStreamDestroy(raw))
        }
    }
}

impl Serve<StreamSynchronize> for Session {
    fn serve(&mut self, c: StreamSynchronize) -> Result<(), Status> {
        let h = c.stream;
        if is_builtin(h) {
            return self.each_builtin(h, |s, raw| cu!(s, cuStreamSynchronize(raw)));
        }
        let raw = self.enter_own_stream(h)?;
        cu!(self, cuStreamSynchronize(raw))
    }
}

impl Serve<StreamQuery> for Session {
    fn serve(&mut self, c: StreamQuery) -> Result<(), Status> {
        let h = c.stream;
        if is_builtin(h) {
            return self.each_builtin(h, |s, raw| cu!(s, cuStreamQuery(raw)));
        }
        let raw = self.enter_own_stream(h)?;
        cu!(self, cuStreamQuery(raw))
    }
}

impl Session {
    /// Runs `f` on the built-in stream `wire` (0, legacy or per-thread) of
    /// every live context of the session. These calls carry no context, and
    /// the guest's current one is not known here; asking all of them is
    /// never wrong, only sometimes more: a sync waits for every context's
    /// NULL stream, a query reports not-ready while any has work. The first
    /// error wins, after all were asked.
    fn each_builtin(
        &mut self,
        wire: u64,
        f: impl Fn(&Session, CUstream) -> Result<(), Status>,
    ) -> Result<(), Status> {
        let live: Vec<u64> = self
            .contexts
            .iter()
            .filter(|(_, c)| c.live)
            .map(|(h, _)| h)
            .collect();
        if live.is_empty() {
            return Err(Status::Cuda(CUresult::CUDA_ERROR_INVALID_CONTEXT));
        }
        let raw = if wire == 0 {
            std::ptr::null_mut()
        } else {
            builtin(wire)
        };
        let mut first = Ok(());
        for h in live {
            let r = self.enter(h).and_then(|_| f(self, raw));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// The driver destroyed a context (destroy, reset, last release): its
    /// streams went with it, so their handles must stop resolving.
    pub(super) fn forget_streams_of(&mut self, ctx: u64) -> usize {
        let dead: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.ctx == ctx)
            .map(|(h, _)| h)
            .collect();
        for h in &dead {
            self.streams.remove(*h);
        }
        dead.len()
    }

    /// Session teardown: destroys every stream still held. Returns how many
    /// the driver accepted.
    pub(super) fn release_streams(&mut self) -> usize {
        let all: Vec<(u64, CUstream, u64)> = self
            .streams
            .iter()
            .map(|(h, s)| (h, s.raw, s.ctx))
            .collect();
        let mut n = 0;
        for (h, raw, ctx) in all {
            if self.enter(ctx).is_ok() {
                match self.destroy_raw_stream(raw) {
                    Ok(()) => n += 1,
                    Err(e) => {
                        tracing::warn!("session {}: cuStreamDestroy: {e}", self.id)
                    }
                }
            }
            self.streams.remove(h);
        }
        n
    }
}
