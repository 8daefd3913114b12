//! Contexts: created ones and retained primary ones, both behind handles.
//!
//! The worker's thread runs every guest call, so which context is current
//! on it is ours to control: a newly created context is popped right away,
//! and each call that works in a context makes it current first.

use super::{cu, Session};
use cuda_types::cuda::{CUcontext, CUlimit, CUresult};
use vgpu_transport::proto::{
    CtxCreate, CtxDestroy, CtxGetLimit, CtxSetLimit, CtxSynchronize, MemGetInfo,
    PrimaryCtxGetState, PrimaryCtxRelease, PrimaryCtxReset, PrimaryCtxRetain, PrimaryCtxSetFlags,
    Serve,
};
use vgpu_transport::Status;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtxKind {
    /// From `cuCtxCreate`; destroyed with the session at the latest.
    Created,
    /// A device's primary context, valid while this session retains it.
    Primary { device: i32 },
}

#[derive(Debug)]
pub struct Ctx {
    pub raw: CUcontext,
    pub kind: CtxKind,
    /// False for a primary context released down to zero retains: the
    /// handle stays reserved for the device but refers to nothing.
    pub live: bool,
}

/// A primary context this session retained.
#[derive(Debug)]
pub struct Primary {
    pub handle: u64,
    pub retains: u32,
}

const INVALID_CONTEXT: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_CONTEXT);

impl Session {
    /// The driver context behind a handle of this session.
    pub fn ctx(&self, h: u64) -> Result<CUcontext, Status> {
        match self.contexts.find(h) {
            Some(c) if c.live => Ok(c.raw),
            _ => Err(INVALID_CONTEXT),
        }
    }

    /// Makes the handle's context current on the worker thread.
    pub fn enter(&mut self, h: u64) -> Result<CUcontext, Status> {
        // A context that hit a sticky error refuses everything, as on a GPU.
        self.batch.admit(h)?;
        let raw = self.ctx(h)?;
        self.batch.entered = Some(h);
        cu!(self, cuCtxSetCurrent(raw))?;
        Ok(raw)
    }
}

impl Serve<CtxCreate> for Session {
    fn serve(&mut self, c: CtxCreate) -> Result<u64, Status> {
        let dev = self.device(c.device)?;
        self.admit_object(crate::account::Kind::Contexts)?;
        let mut raw: CUcontext = std::ptr::null_mut();
        if self.driver.cuda.cuCtxCreate_v2.is_some() {
            cu!(self, cuCtxCreate_v2(&mut raw, c.flags, dev))?;
        } else {
            // CUDA 13 drivers may only have v4; null params mean defaults.
            cu!(
                self,
                cuCtxCreate_v4(&mut raw, std::ptr::null_mut(), c.flags, dev)
            )?;
        }
        // cuCtxCreate pushed it; keep the thread's stack empty so contexts
        // only become current through `enter`.
        let mut popped: CUcontext = std::ptr::null_mut();
        if let Err(e) = cu!(self, cuCtxPopCurrent_v2(&mut popped)) {
            tracing::debug!("session {}: cuCtxPopCurrent after create: {e}", self.id);
        }
        let h = self.contexts.insert(Ctx {
            raw,
            kind: CtxKind::Created,
            live: true,
        });
        Ok(h)
    }
}

impl Serve<CtxDestroy> for Session {
    fn serve(&mut self, c: CtxDestroy) -> Result<(), Status> {
        let h = c.ctx;
        match self.contexts.find(h) {
            Some(Ctx {
                kind: CtxKind::Created,
                ..
            }) => {}
            // Primary contexts are released, never destroyed.
            _ => return Err(INVALID_CONTEXT),
        }
        let raw = self.ctx(h)?;
        // Graph execs hold resources of their context: they go before it.
        self.release_graphs(Some(h));
        cu!(self, cuCtxDestroy_v2(raw))?;
        self.contexts.remove(h);
        self.forget_objects_of(h);
        Ok(())
    }
}

impl Session {
    /// A context the driver destroyed took its allocations and streams with
    /// it; their addresses and handles must stop working for the guest.
    fn forget_objects_of(&mut self, h: u64) {
        let allocs = self.forget_allocs_of(h);
        let streams = self.forget_streams_of(h);
        let events = self.forget_events_of(h);
        let modules = self.forget_code_of(h);
        self.batch.forget_ctx(h);
        if events + modules > 0 {
            tracing::debug!(
                "session {}: context {h:#x} gone with {events} event(s), {modules} module(s)",
                self.id
            );
        }
        if allocs + streams > 0 {
            tracing::debug!(
                "session {}: context {h:#x} gone with {allocs} allocation(s), {streams} stream(s)",
                self.id
            );
        }
    }
}

impl Serve<PrimaryCtxRetain> for Session {
    fn serve(&mut self, c: PrimaryCtxRetain) -> Result<u64, Status> {
        let device = c.device;
        let dev = self.device(device)?;
        if !self.primary.contains_key(&device) {
            self.admit_object(crate::account::Kind::Contexts)?;
        }
        let mut raw: CUcontext = std::ptr::null_mut();
        cu!(self, cuDevicePrimaryCtxRetain(&mut raw, dev))?;
        if let Some(p) = self.primary.get_mut(&device) {
            p.retains += 1;
            let h = p.handle;
            if let Some(c) = self.contexts.find_mut(h) {
                // After a release to zero the driver may hand out a new one.
                c.raw = raw;
                c.live = true;
            }
            return Ok(h);
        }
        let handle = self.contexts.insert(Ctx {
            raw,
            kind: CtxKind::Primary { device },
            live: true,
        });
        self.primary.insert(device, Primary { handle, retains: 1 });
        Ok(handle)
    }
}

impl Serve<PrimaryCtxRelease> for Session {
    fn serve(&mut self, c: PrimaryCtxRelease) -> Result<(), Status> {
        let device = c.device;
        let dev = self.device(device)?;
        // Only what this session retained may be released, so one guest can
        // never drop a reference another part of the worker depends on.
        match self.primary.get(&device) {
            Some(p) if p.retains > 0 => {}
            _ => return Err(INVALID_CONTEXT),
        }
        if let Some(p) = self.primary.get(&device).filter(|p| p.retains == 1) {
            // The last release destroys the context: its graphs go first.
            let h = p.handle;
            self.release_graphs(Some(h));
        }
        self.release_primary_once(dev)?;
        let p = self.primary.get_mut(&device).expect("checked above");
        p.retains -= 1;
        if p.retains == 0 {
            let h = p.handle;
            if let Some(c) = self.contexts.find_mut(h) {
                c.live = false;
            }
            // This worker is the process's only user, so the last release
            // destroyed the primary context.
            self.forget_objects_of(h);
        }
        Ok(())
    }
}

impl Session {
    fn release_primary_once(&mut self, dev: i32) -> Result<(), Status> {
        if self.driver.cuda.cuDevicePrimaryCtxRelease_v2.is_some() {
            cu!(self, cuDevicePrimaryCtxRelease_v2(dev))
        } else {
            cu!(self, cuDevicePrimaryCtxRelease(dev))
        }
    }
}

impl Serve<PrimaryCtxReset> for Session {
    fn serve(&mut self, c: PrimaryCtxReset) -> Result<(), Status> {
        let device = c.device;
        let dev = self.device(device)?;
        if let Some(h) = self.primary.get(&device).map(|p| p.handle) {
            self.release_graphs(Some(h));
        }
        if self.driver.cuda.cuDevicePrimaryCtxReset_v2.is_some() {
            cu!(self, cuDevicePrimaryCtxReset_v2(dev))?;
        } else {
            cu!(self, cuDevicePrimaryCtxReset(dev))?;
        }
        // A reset frees everything allocated in the primary context.
        if let Some(h) = self.primary.get(&device).map(|p| p.handle) {
            self.forget_objects_of(h);
        }
        Ok(())
    }
}

impl Serve<PrimaryCtxSetFlags> for Session {
    fn serve(&mut self, c: PrimaryCtxSetFlags) -> Result<(), Status> {
        let dev = self.device(c.device)?;
        if self.driver.cuda.cuDevicePrimaryCtxSetFlags_v2.is_some() {
            cu!(self, cuDevicePrimaryCtxSetFlags_v2(dev, c.flags))
        } else {
            cu!(self, cuDevicePrimaryCtxSetFlags(dev, c.flags))
        }
    }
}

impl Serve<PrimaryCtxGetState> for Session {
    fn serve(&mut self, c: PrimaryCtxGetState) -> Result<(u32, bool), Status> {
        let device = c.device;
        let dev = self.device(device)?;
        let mut flags: u32 = 0;
        let mut active: i32 = 0;
        cu!(
            self,
            cuDevicePrimaryCtxGetState(dev, &mut flags, &mut active)
        )?;
        Ok((flags, active != 0))
    }
}

impl Serve<CtxSynchronize> for Session {
    fn serve(&mut self, c: CtxSynchronize) -> Result<(), Status> {
        self.enter(c.ctx)?;
        cu!(self, cuCtxSynchronize())
    }
}

impl Serve<MemGetInfo> for Session {
    fn serve(&mut self, c: MemGetInfo) -> Result<(u64, u64), Status> {
        self.enter(c.ctx)?;
        let mut free: usize = 0;
        let mut total: usize = 0;
        cu!(self, cuMemGetInfo_v2(&mut free, &mut total))?;
        Ok(self.quota.report(free as u64, total as u64))
    }
}

impl Serve<CtxGetLimit> for Session {
    fn serve(&mut self, c: CtxGetLimit) -> Result<u64, Status> {
        self.enter(c.ctx)?;
        let mut v: usize = 0;
        cu!(self, cuCtxGetLimit(&mut v, CUlimit(c.limit)))?;
        Ok(v as u64)
    }
}

impl Serve<CtxSetLimit> for Session {
    fn serve(&mut self, c: CtxSetLimit) -> Result<(), Status> {
        self.enter(c.ctx)?;
        // The device heap and the printf buffer are device memory the
        // driver sets aside for the context: a guest under a quota may not
        // ask for more than it could allocate.
        if matches!(
            CUlimit(c.limit),
            CUlimit::CU_LIMIT_MALLOC_HEAP_SIZE | CUlimit::CU_LIMIT_PRINTF_FIFO_SIZE
        ) {
            self.quota.check_alloc(c.value)?;
        }
        let value = usize::try_from(c.value)
            .map_err(|_| Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE))?;
        cu!(self, cuCtxSetLimit(CUlimit(c.limit), value))
    }
}

impl Session {
    /// Session teardown: destroys created contexts and drops every primary
    /// retain. Returns how many of each were returned to the driver.
    pub(super) fn release_contexts(&mut self) -> (usize, u32) {
        // Nothing of ours should stay current while it is being destroyed.
        let _ = cu!(self, cuCtxSetCurrent(std::ptr::null_mut()));
        let created: Vec<(u64, CUcontext)> = self
            .contexts
            .iter()
            .filter(|(_, c)| c.kind == CtxKind::Created)
            .map(|(h, c)| (h, c.raw))
            .collect();
        let mut destroyed = 0;
        for (h, raw) in created {
            match cu!(self, cuCtxDestroy_v2(raw)) {
                Ok(()) => destroyed += 1,
                Err(e) => tracing::warn!("session {}: cuCtxDestroy: {e}", self.id),
            }
            self.contexts.remove(h);
        }
        let prims: Vec<(i32, u32)> = self.primary.iter().map(|(d, p)| (*d, p.retains)).collect();
        let mut released = 0;
        for (device, n) in prims {
            let Ok(dev) = self.device(device) else {
                continue;
            };
            for _ in 0..n {
                match self.release_primary_once(dev) {
                    Ok(()) => released += 1,
                    Err(e) => {
                        tracing::warn!("session {}: cuDevicePrimaryCtxRelease: {e}", self.id);
                        break;
                    }
                }
            }
        }
        self.primary.clear();
        self.contexts.take_all();
        (destroyed, released)
    }
}
