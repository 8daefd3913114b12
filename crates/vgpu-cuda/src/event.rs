//! Events: guest objects around the host's event handles.
//!
//! Records and stream waits are queued (no round trip): like a launch they
//! only take effect in stream order, and a failure surfaces at the next
//! synchronizing call. Queries, synchronizations and elapsed times are
//! round trips, and as such write out the queue first — the record they
//! are about is on the host before the question is.

use crate::args::{self, Live};
use crate::capture::{self, Mark, Record};
use crate::check::{self, reject, INVALID_VALUE};
use crate::context::state::Context;
use crate::stream::{self, Null, StreamArg};
use cuda_types::cuda::{CUevent, CUresult};
use parking_lot::Mutex;
use std::ffi::c_uint;
use std::sync::Arc;
use vgpu_ffi::{FromCuda, Mint, Out, Shared};
use vgpu_transport::proto::{
    EventCreate, EventDestroy, EventElapsedTime, EventQuery, EventRecord, EventSynchronize,
    StreamWaitEvent,
};

const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

/// `CU_EVENT_DEFAULT | BLOCKING_SYNC | DISABLE_TIMING | INTERPROCESS`.
const CREATE_FLAGS: u32 = 0x1 | 0x2 | 0x4;
const DISABLE_TIMING: u32 = 0x2;
/// `CU_EVENT_RECORD_EXTERNAL` (graphs only; accepted and passed on).
const RECORD_FLAGS: u32 = 0x1;
/// `CU_EVENT_WAIT_EXTERNAL`.
const WAIT_FLAGS: u32 = 0x1;

pub struct Event {
    /// The value the application holds.
    handle: u64,
    pub remote: u64,
    pub ctx: Arc<Context>,
    pub flags: u32,
    /// Set while the event's last record was into a stream capture (no
    /// record reached the host): see `capture.rs`.
    mark: Mutex<Option<Mark>>,
}

impl Event {
    pub fn handle(&self) -> CUevent {
        args::handle(self.handle)
    }

    pub(crate) fn mark(&self) -> Option<Mark> {
        self.mark.lock().clone()
    }
}

/// Events until `cuEventDestroy` (or a fork: see `driver.rs`).
pub(crate) static EVENTS: Shared<Arc<Event>, CUresult> =
    Shared::new("event", INVALID_HANDLE, Mint::Pointer);

/// A `CUevent` argument: a live event whose context still exists.
impl FromCuda<CUevent, CUresult> for Live<Event> {
    unsafe fn from_cuda(h: CUevent) -> Result<Self, CUresult> {
        let e = Live::find(&EVENTS, h)?;
        if e.ctx.is_destroyed() {
            return Err(reject(
                CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED,
                format_args!("event {h:p}: its context is destroyed"),
            ));
        }
        Ok(e)
    }
}

pub fn create(out: Out<CUevent>, flags: c_uint) -> Result<(), CUresult> {
    if flags & !CREATE_FLAGS != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuEventCreate: flags {flags:#x}"),
        ));
    }
    let (ctx, ctx_remote) = check::current()?;
    let remote = check::host(&EventCreate {
        ctx: ctx_remote,
        flags,
    })?;
    let e = args::register(&EVENTS, |handle| Event {
        handle,
        remote,
        ctx,
        flags,
        mark: Mutex::new(None),
    });
    out.write(e.handle());
    Ok(())
}

/// Destroying an event whose record is still pending is allowed: the host
/// releases it once the record completes. Only the thread that takes it
/// out of the registry tells the host.
pub fn destroy(h: CUevent) -> Result<(), CUresult> {
    let e = EVENTS.take(h as u64)?;
    if e.ctx.is_destroyed() {
        return Ok(());
    }
    check::host(&EventDestroy { event: e.remote })
}

/// `cuEventRecordWithFlags[_ptsz]`, and `cuEventRecord[_ptsz]` with flags 0.
pub fn record(e: Live<Event>, s: StreamArg, flags: c_uint, null: Null) -> Result<(), CUresult> {
    if flags & !RECORD_FLAGS != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuEventRecord: flags {flags:#x}"),
        ));
    }
    let t = stream::target(&s, null)?;
    if !Arc::ptr_eq(&e.ctx, &t.ctx) {
        return Err(reject(
            INVALID_HANDLE,
            format_args!("cuEventRecord: event and stream are in different contexts"),
        ));
    }
    // A record into a capture makes no node: the event remembers the
    // capture for the waits that fork or join streams (or, EXTERNAL, is a
    // record node).
    let record = capture::record_event(&t, flags, &e)?;
    let mut mark = e.mark.lock();
    match record {
        Record::Mark(m) => {
            *mark = Some(m);
            return Ok(());
        }
        Record::Node => {
            *mark = None;
            return Ok(());
        }
        Record::Send => *mark = None,
    }
    drop(mark);
    check::host(&EventRecord {
        event: e.remote,
        stream: t.stream,
        flags,
    })
}

/// An event a launch on `t` records through a launch attribute
/// (programmatic or launch-completion event), after the launch went out:
/// outside a capture the host's launch recorded it; in a capture it is
/// recorded like `cuEventRecord` after the kernel node, which a wait then
/// depends on.
pub(crate) fn recorded_by_launch(e: &Arc<Event>, t: &stream::Target) -> Result<(), CUresult> {
    let record = capture::record_event(t, 0, e)?;
    *e.mark.lock() = match record {
        Record::Mark(m) => Some(m),
        Record::Send | Record::Node => None,
    };
    Ok(())
}

/// CUDA_ERROR_NOT_READY while the record is pending (an answer, not a
/// failure; `check::host` does not log it).
pub fn query(e: Live<Event>) -> Result<(), CUresult> {
    capture::event_use(e.mark(), "cuEventQuery")?;
    check::host(&EventQuery { event: e.remote })
}

pub fn synchronize(e: Live<Event>) -> Result<(), CUresult> {
    capture::event_use(e.mark(), "cuEventSynchronize")?;
    check::host(&EventSynchronize { event: e.remote })
}

/// The v2 entry point (CUDA 12.8+) has the v1 signature; only its
/// behaviour with never-recorded events differs in the real driver, and
/// the host driver's answer is what both return here.
pub fn elapsed_time(ms: Out<f32>, s: Live<Event>, e: Live<Event>) -> Result<(), CUresult> {
    if (s.flags | e.flags) & DISABLE_TIMING != 0 {
        return Err(reject(
            INVALID_HANDLE,
            format_args!("cuEventElapsedTime: an event was created without timing"),
        ));
    }
    capture::event_use(s.mark(), "cuEventElapsedTime")?;
    capture::event_use(e.mark(), "cuEventElapsedTime")?;
    let bits = check::host(&EventElapsedTime {
        start: s.remote,
        end: e.remote,
    })?;
    ms.write(f32::from_bits(bits));
    Ok(())
}

pub fn stream_wait(
    s: StreamArg,
    e: Live<Event>,
    flags: c_uint,
    null: Null,
) -> Result<(), CUresult> {
    if flags & !WAIT_FLAGS != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuStreamWaitEvent: flags {flags:#x}"),
        ));
    }
    // The event may belong to another context (of the same device): a
    // cross-context wait is legal.
    let t = stream::target(&s, null)?;
    // Forks, joins and wait nodes are capture's.
    if capture::wait_event(&t, e.mark(), flags, &e)? {
        return Ok(());
    }
    check::host(&StreamWaitEvent {
        stream: t.stream,
        event: e.remote,
        flags,
    })
}

/// A registered event without a host (unit tests of other modules).
#[cfg(test)]
pub(crate) fn test_event(ctx: &Arc<Context>) -> Arc<Event> {
    args::register(&EVENTS, |handle| Event {
        handle,
        remote: handle,
        ctx: ctx.clone(),
        flags: 0,
        mark: Mutex::new(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::state;
    use vgpu_ffi::from_cuda;

    fn find(h: CUevent) -> Result<Live<Event>, CUresult> {
        // SAFETY: a plain handle value; nothing is dereferenced.
        unsafe { from_cuda::<_, Live<Event>, CUresult>(h) }
    }

    #[test]
    fn unknown_and_orphaned_events() {
        assert_eq!(find(0xbad0 as CUevent).err(), Some(INVALID_HANDLE));
        let ctx = state::register(Context::new(
            state::Kind::Created,
            0,
            0,
            0,
            state::API_VERSION,
        ));
        let e = args::register(&EVENTS, |handle| Event {
            handle,
            remote: 9,
            ctx: ctx.clone(),
            flags: 0,
            mark: Mutex::new(None),
        });
        let h = e.handle();
        assert_eq!(find(h).unwrap().remote, 9);
        state::unregister(&ctx);
        assert_eq!(
            find(h).err(),
            Some(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED)
        );
        assert!(EVENTS.take(h as u64).is_ok());
        assert_eq!(find(h).err(), Some(INVALID_HANDLE));
    }
}
