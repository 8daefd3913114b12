//! Events behind handles, and stream waits on them.
//!
//! An event belongs to the context it was created in. Records and waits
//! name a stream too; `0` / `CU_STREAM_LEGACY` / `CU_STREAM_PER_THREAD`
//! then mean the event's context's streams. Query and synchronize answer
//! `CUDA_ERROR_NOT_READY` or an earlier deferred error as the driver would
//! (the request loop substitutes the latter).

use super::{cu, Session};
use cuda_types::cuda::{CUevent, CUresult};
use vgpu_transport::proto::{
    EventCreate, EventDestroy, EventElapsedTime, EventQuery, EventRecord, EventSynchronize, Serve,
    StreamWaitEvent,
};
use vgpu_transport::Status;

pub struct Event {
    pub raw: CUevent,
    pub ctx: u64,
}

const INVALID_HANDLE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_HANDLE);

impl Session {
    fn event(&self, h: u64) -> Result<(CUevent, u64), Status> {
        match self.events.find(h) {
            Some(e) => Ok((e.raw, e.ctx)),
            None => {
                tracing::debug!("session {}: unknown event handle {h:#x}", self.id);
                Err(INVALID_HANDLE)
            }
        }
    }

    /// The event behind a handle, with its context current.
    fn enter_event(&mut self, h: u64) -> Result<CUevent, Status> {
        let (raw, ctx) = self.event(h)?;
        self.enter(ctx)?;
        Ok(raw)
    }
}

impl Serve<EventCreate> for Session {
    fn serve(&mut self, c: EventCreate) -> Result<u64, Status> {
        self.enter(c.ctx)?;
        self.admit_object(crate::account::Kind::Events)?;
        let mut raw: CUevent = std::ptr::null_mut();
        cu!(self, cuEventCreate(&mut raw, c.flags))?;
        Ok(self.events.insert(Event { raw, ctx: c.ctx }))
    }
}

impl Session {
    fn destroy_raw_event(&self, raw: CUevent) -> Result<(), Status> {
        if self.driver.cuda.cuEventDestroy_v2.is_some() {
            cu!(self, cuEventDestroy_v2(raw))
        } else {
            cu!(self, cuEventDestroy(raw))
        }
    }
}

impl Serve<EventDestroy> for Session {
    fn serve(&mut self, c: EventDestroy) -> Result<(), Status> {
        let h = c.event;
        let raw = self.enter_event(h)?;
        self.destroy_raw_event(raw)?;
        self.events.remove(h);
        Ok(())
    }
}

impl Serve<EventRecord> for Session {
    fn serve(&mut self, c: EventRecord) -> Result<(), Status> {
        let (raw, ctx) = self.event(c.event)?;
        let stream = self.enter_stream(ctx, c.stream)?;
        if c.flags == 0 {
            cu!(self, cuEventRecord(raw, stream))
        } else {
            cu!(self, cuEventRecordWithFlags(raw, stream, c.flags))
        }
    }
}

impl Serve<EventQuery> for Session {
    fn serve(&mut self, c: EventQuery) -> Result<(), Status> {
        let h = c.event;
        let raw = self.enter_event(h)?;
        cu!(self, cuEventQuery(raw))
    }
}

impl Serve<EventSynchronize> for Session {
    fn serve(&mut self, c: EventSynchronize) -> Result<(), Status> {
        let h = c.event;
        let raw = self.enter_event(h)?;
        cu!(self, cuEventSynchronize(raw))
    }
}

impl Serve<EventElapsedTime> for Session {
    fn serve(&mut self, c: EventElapsedTime) -> Result<u32, Status> {
        let end = self.event(c.end)?.0;
        let start = self.enter_event(c.start)?;
        let mut ms: f32 = 0.0;
        if self.driver.cuda.cuEventElapsedTime_v2.is_some() {
            cu!(self, cuEventElapsedTime_v2(&mut ms, start, end))?;
        } else {
            cu!(self, cuEventElapsedTime(&mut ms, start, end))?;
        }
        Ok(ms.to_bits())
    }
}

impl Serve<StreamWaitEvent> for Session {
    fn serve(&mut self, c: StreamWaitEvent) -> Result<(), Status> {
        let (raw, ctx) = self.event(c.event)?;
        let stream = self.enter_stream(ctx, c.stream)?;
        cu!(self, cuStreamWaitEvent(stream, raw, c.flags))
    }
}

impl Session {
    /// The driver destroyed a context and its events with it.
    pub(super) fn forget_events_of(&mut self, ctx: u64) -> usize {
        let dead: Vec<u64> = self
            .events
            .iter()
            .filter(|(_, e)| e.ctx == ctx)
            .map(|(h, _)| h)
            .collect();
        for h in &dead {
            self.events.remove(*h);
        }
        dead.len()
    }

    /// Session teardown: destroys every event still held.
    pub(super) fn release_events(&mut self) -> usize {
        let all: Vec<(u64, CUevent, u64)> =
            self.events.iter().map(|(h, e)| (h, e.raw, e.ctx)).collect();
        let mut n = 0;
        for (h, raw, ctx) in all {
            if self.enter(ctx).is_ok() {
                match self.destroy_raw_event(raw) {
                    Ok(()) => n += 1,
                    Err(e) => tracing::warn!("session {}: cuEventDestroy: {e}", self.id),
                }
            }
            self.events.remove(h);
        }
        n
    }
}
