//! Events. Because work runs when it is enqueued, an event is complete the
//! moment it is recorded, and the monotonic clock read at that moment is
//! exactly when the preceding work on its stream finished.

use crate::device::ensure_init;
use crate::ffi::{mint_handle, write_out};
use crate::stream;
use cuda_types::cuda::{CUevent, CUresult, CUstream};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::c_uint;
use std::sync::Arc;
use std::time::Instant;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

/// CU_EVENT_BLOCKING_SYNC | DISABLE_TIMING | INTERPROCESS.
const FLAGS_MASK: c_uint = 0x1 | 0x2 | 0x4;
const DISABLE_TIMING: c_uint = 0x2;
const INTERPROCESS: c_uint = 0x4;
/// CU_EVENT_RECORD_EXTERNAL.
const RECORD_FLAGS_MASK: c_uint = 0x1;

struct Event {
    ctx: u64,
    flags: c_uint,
    recorded: Mutex<Option<Instant>>,
}

static EVENTS: Lazy<Mutex<HashMap<usize, Arc<Event>>>> = Lazy::new(Default::default);

fn lookup(ev: CUevent) -> Result<Arc<Event>, CUresult> {
    ensure_init()?;
    EVENTS
        .lock()
        .get(&(ev as usize))
        .cloned()
        .ok_or(INVALID_HANDLE)
}

pub fn check(ev: CUevent) -> Result<(), CUresult> {
    lookup(ev).map(drop)
}

/// A context's events die with it.
pub fn release_context(ctx: u64) {
    EVENTS.lock().retain(|_, e| e.ctx != ctx);
}

pub unsafe fn event_create(out: *mut CUevent, flags: c_uint) -> Result<(), CUresult> {
    if out.is_null() || flags & !FLAGS_MASK != 0 {
        return Err(INVALID_VALUE);
    }
    // An interprocess event must not time, as cuda.h requires.
    if flags & INTERPROCESS != 0 && flags & DISABLE_TIMING == 0 {
        return Err(INVALID_VALUE);
    }
    let ctx = crate::context::current()?;
    let handle = mint_handle();
    let e = Event {
        ctx: ctx.id,
        flags,
        recorded: Mutex::new(None),
    };
    EVENTS.lock().insert(handle, Arc::new(e));
    // SAFETY: checked non-null; the caller passes a writable CUevent.
    unsafe { write_out(out, handle as CUevent, INVALID_VALUE) }
}

pub fn event_record_with_flags(ev: CUevent, s: CUstream, flags: c_uint) -> Result<(), CUresult> {
    if flags & !RECORD_FLAGS_MASK != 0 {
        return Err(INVALID_VALUE);
    }
    let e = lookup(ev)?;
    let s = stream::resolve(s)?;
    // An event records work of its own context only.
    if s.ctx.id != e.ctx {
        return Err(INVALID_HANDLE);
    }
    *e.recorded.lock() = Some(Instant::now());
    Ok(())
}

/// Complete whether or not it was recorded, as the driver documents.
pub fn event_query(ev: CUevent) -> Result<(), CUresult> {
    check(ev)
}

pub fn event_synchronize(ev: CUevent) -> Result<(), CUresult> {
    check(ev)
}

pub fn event_destroy(ev: CUevent) -> Result<(), CUresult> {
    ensure_init()?;
    EVENTS
        .lock()
        .remove(&(ev as usize))
        .map(drop)
        .ok_or(INVALID_HANDLE)
}

/// Milliseconds between two recorded events; negative when `end` was
/// recorded first. Unrecorded or non-timing events are invalid handles here,
/// as on the real driver.
pub unsafe fn event_elapsed_time(
    ms: *mut f32,
    start: CUevent,
    end: CUevent,
) -> Result<(), CUresult> {
    if ms.is_null() {
        return Err(INVALID_VALUE);
    }
    let (a, b) = (lookup(start)?, lookup(end)?);
    if (a.flags | b.flags) & DISABLE_TIMING != 0 {
        return Err(INVALID_HANDLE);
    }
    let ta = (*a.recorded.lock()).ok_or(INVALID_HANDLE)?;
    let tb = (*b.recorded.lock()).ok_or(INVALID_HANDLE)?;
    let v = if tb >= ta {
        (tb - ta).as_secs_f64() * 1e3
    } else {
        -((ta - tb).as_secs_f64() * 1e3)
    };
    // SAFETY: checked non-null; the caller passes a writable float.
    unsafe { write_out(ms, v as f32, INVALID_VALUE) }
}
