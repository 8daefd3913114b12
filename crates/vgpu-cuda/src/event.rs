//! Events: guest objects around the host's event handles.
//!
//! Records and stream waits are queued (no round trip): like a launch they
//! only take effect in stream order, and a failure surfaces at the next
//! synchronizing call. Queries, synchronizations and elapsed times are
//! round trips, and as such write out the queue first — the record they
//! are about is on the host before the question is.

use crate::check::{self, reject, INVALID_VALUE};
use crate::contexts::Context;
use crate::driver;
use crate::stream::{self, Null};
use cuda_types::cuda::{CUevent, CUresult, CUstream};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::ffi::c_uint;
use std::sync::Arc;
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
    pub remote: u64,
    pub ctx: Arc<Context>,
    pub flags: u32,
}

impl Event {
    fn handle(self: &Arc<Self>) -> CUevent {
        Arc::as_ptr(self) as CUevent
    }
}

static LIVE: RwLock<BTreeMap<usize, Arc<Event>>> = RwLock::new(BTreeMap::new());

fn lookup(h: CUevent) -> Result<Arc<Event>, CUresult> {
    let found = LIVE.read().get(&(h as usize)).cloned();
    let e = found.ok_or_else(|| {
        reject(
            INVALID_HANDLE,
            format_args!("event {h:p} is not a live event of this process"),
        )
    })?;
    if e.ctx.is_destroyed() {
        return Err(reject(
            CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED,
            format_args!("event {h:p}: its context is destroyed"),
        ));
    }
    Ok(e)
}

pub unsafe fn create(out: *mut CUevent, flags: c_uint) -> Result<(), CUresult> {
    driver::get()?;
    if out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuEventCreate: NULL out-pointer"),
        ));
    }
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
    let e = Arc::new(Event { remote, ctx, flags });
    let h = e.handle();
    LIVE.write().insert(h as usize, e);
    // SAFETY: checked non-null; writable by contract.
    unsafe { out.write(h) };
    Ok(())
}

/// Destroying an event whose record is still pending is allowed: the host
/// releases it once the record completes. Only the thread that takes it
/// out of the registry tells the host.
pub fn destroy(h: CUevent) -> Result<(), CUresult> {
    driver::get()?;
    let e = LIVE.write().remove(&(h as usize)).ok_or_else(|| {
        reject(
            INVALID_HANDLE,
            format_args!("cuEventDestroy: {h:p} is not a live event"),
        )
    })?;
    if e.ctx.is_destroyed() {
        return Ok(());
    }
    check::host(&EventDestroy { event: e.remote })
}

pub fn record(h: CUevent, s: CUstream, flags: c_uint, null: Null) -> Result<(), CUresult> {
    driver::get()?;
    if flags & !RECORD_FLAGS != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuEventRecord: flags {flags:#x}"),
        ));
    }
    let e = lookup(h)?;
    let t = stream::target(s, null)?;
    if !Arc::ptr_eq(&e.ctx, &t.ctx) {
        return Err(reject(
            INVALID_HANDLE,
            format_args!("cuEventRecord: event and stream are in different contexts"),
        ));
    }
    check::host(&EventRecord {
        event: e.remote,
        stream: t.stream,
        flags,
    })
}

/// CUDA_ERROR_NOT_READY while the record is pending (an answer, not a
/// failure; `check::host` does not log it).
pub fn query(h: CUevent) -> Result<(), CUresult> {
    driver::get()?;
    let e = lookup(h)?;
    check::host(&EventQuery { event: e.remote })
}

pub fn synchronize(h: CUevent) -> Result<(), CUresult> {
    driver::get()?;
    let e = lookup(h)?;
    check::host(&EventSynchronize { event: e.remote })
}

/// The v2 entry point (CUDA 12.8+) has the v1 signature; only its
/// behaviour with never-recorded events differs in the real driver, and
/// the host driver's answer is what both return here.
pub unsafe fn elapsed_time(ms: *mut f32, start: CUevent, end: CUevent) -> Result<(), CUresult> {
    driver::get()?;
    if ms.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuEventElapsedTime: NULL out-pointer"),
        ));
    }
    let (s, e) = (lookup(start)?, lookup(end)?);
    if (s.flags | e.flags) & DISABLE_TIMING != 0 {
        return Err(reject(
            INVALID_HANDLE,
            format_args!("cuEventElapsedTime: an event was created without timing"),
        ));
    }
    let bits = check::host(&EventElapsedTime {
        start: s.remote,
        end: e.remote,
    })?;
    // SAFETY: checked non-null; writable by contract.
    unsafe { ms.write_unaligned(f32::from_bits(bits)) };
    Ok(())
}

pub fn stream_wait(s: CUstream, h: CUevent, flags: c_uint, null: Null) -> Result<(), CUresult> {
    driver::get()?;
    if flags & !WAIT_FLAGS != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuStreamWaitEvent: flags {flags:#x}"),
        ));
    }
    let e = lookup(h)?;
    // The event may belong to another context (of the same device): a
    // cross-context wait is legal.
    let t = stream::target(s, null)?;
    check::host(&StreamWaitEvent {
        stream: t.stream,
        event: e.remote,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contexts;

    #[test]
    fn unknown_and_orphaned_events() {
        assert_eq!(lookup(0xbad0 as CUevent).err(), Some(INVALID_HANDLE));
        let ctx = contexts::register(Context::new(
            contexts::Kind::Created,
            0,
            0,
            0,
            contexts::API_VERSION,
        ));
        let e = Arc::new(Event {
            remote: 9,
            ctx: ctx.clone(),
            flags: 0,
        });
        let h = e.handle();
        LIVE.write().insert(h as usize, e);
        assert_eq!(lookup(h).unwrap().remote, 9);
        contexts::unregister(&ctx);
        assert_eq!(
            lookup(h).err(),
            Some(CUresult::CUDA_ERROR_CONTEXT_IS_DESTROYED)
        );
        LIVE.write().remove(&(h as usize));
    }
}
