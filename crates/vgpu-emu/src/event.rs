//! Events. Because work runs when it is enqueued, an event is complete the
//! moment it is recorded, and the monotonic clock read at that moment is
//! exactly when the preceding work on its stream finished.

use crate::ffi::Live;
use crate::stream::Stream;
use cuda_types::cuda::{CUevent, CUresult};
use parking_lot::Mutex;
use std::ffi::c_uint;
use std::sync::Arc;
use std::time::Instant;
use vgpu_ffi::{FromCuda, Mint, Out, Shared};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

/// CU_EVENT_BLOCKING_SYNC | DISABLE_TIMING | INTERPROCESS.
const FLAGS_MASK: c_uint = 0x1 | 0x2 | 0x4;
const DISABLE_TIMING: c_uint = 0x2;
const INTERPROCESS: c_uint = 0x4;
/// CU_EVENT_RECORD_EXTERNAL.
const RECORD_FLAGS_MASK: c_uint = 0x1;

pub struct Event {
    ctx: u64,
    flags: c_uint,
    recorded: Mutex<Option<Instant>>,
}

static EVENTS: Shared<Arc<Event>, CUresult> = Shared::new("event", INVALID_HANDLE, Mint::Pointer);

impl FromCuda<CUevent, CUresult> for Live<Event> {
    unsafe fn from_cuda(ev: CUevent) -> Result<Self, CUresult> {
        EVENTS.get(ev as u64).map(Live)
    }
}

/// A context's events die with it.
pub fn release_context(ctx: u64) {
    EVENTS.take_unless(|_, e| e.ctx != ctx);
}

pub fn event_create(out: Out<CUevent>, flags: c_uint) -> Result<(), CUresult> {
    if flags & !FLAGS_MASK != 0 {
        return Err(INVALID_VALUE);
    }
    // An interprocess event must not time, as cuda.h requires.
    if flags & INTERPROCESS != 0 && flags & DISABLE_TIMING == 0 {
        return Err(INVALID_VALUE);
    }
    let ctx = crate::context::current()?;
    let e = Event {
        ctx: ctx.id,
        flags,
        recorded: Mutex::new(None),
    };
    out.write(EVENTS.insert(Arc::new(e)) as CUevent);
    Ok(())
}

/// `cuEventRecordWithFlags`, and `cuEventRecord` with no flags.
pub fn event_record_with_flags(e: Live<Event>, s: Stream, flags: c_uint) -> Result<(), CUresult> {
    if flags & !RECORD_FLAGS_MASK != 0 {
        return Err(INVALID_VALUE);
    }
    // An event records work of its own context only.
    if s.ctx.id != e.ctx {
        return Err(INVALID_HANDLE);
    }
    record_now(&e);
    Ok(())
}

/// Records an event now: the work before it has completed (launch
/// attributes and graph nodes record events too).
pub(crate) fn record_now(e: &Event) {
    *e.recorded.lock() = Some(Instant::now());
}

/// The id of the context an event belongs to.
pub(crate) fn context_of(e: &Event) -> u64 {
    e.ctx
}

/// Whether the device may record the event for a launch attribute: the
/// driver wants one that does not time and is not interprocess.
pub(crate) fn usable_by_device(e: &Event) -> bool {
    e.flags & DISABLE_TIMING != 0 && e.flags & INTERPROCESS == 0
}

/// `cuEventQuery` and `cuEventSynchronize`: complete whether or not it was
/// recorded, as the driver documents.
pub fn event_query(_e: Live<Event>) -> Result<(), CUresult> {
    Ok(())
}

pub fn event_destroy(ev: CUevent) -> Result<(), CUresult> {
    EVENTS.take(ev as u64).map(drop)
}

/// Milliseconds between two recorded events; negative when `end` was
/// recorded first. Unrecorded or non-timing events are invalid handles here,
/// as on the real driver.
pub fn event_elapsed_time(
    ms: Out<f32>,
    start: Live<Event>,
    end: Live<Event>,
) -> Result<(), CUresult> {
    if (start.flags | end.flags) & DISABLE_TIMING != 0 {
        return Err(INVALID_HANDLE);
    }
    let ta = (*start.recorded.lock()).ok_or(INVALID_HANDLE)?;
    let tb = (*end.recorded.lock()).ok_or(INVALID_HANDLE)?;
    let v = if tb >= ta {
        (tb - ta).as_secs_f64() * 1e3
    } else {
        -((ta - tb).as_secs_f64() * 1e3)
    };
    ms.write(v as f32);
    Ok(())
}
