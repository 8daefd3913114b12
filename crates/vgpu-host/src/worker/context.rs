//! Contexts: created ones and retained primary ones, both behind handles.
//!
//! The worker's thread runs every guest call, so which context is current
//! on it is ours to control: a newly created context is popped right away,
//! and each call that works in a context makes it current first.

use super::{cu, handle, Handler, Session};
use cuda_types::cuda::{CUcontext, CUresult};
use vgpu_transport::proto::{
    Call, CtxCreate, CtxDestroy, CtxSynchronize, MemGetInfo, PrimaryCtxGetState, PrimaryCtxRelease,
    PrimaryCtxReset, PrimaryCtxRetain, PrimaryCtxSetFlags,
};

pub const HANDLERS: &[(u16, Handler)] = &[
    (CtxCreate::OP, |s, p| {
        handle(p, |c: CtxCreate| s.ctx_create(c))
    }),
    (CtxDestroy::OP, |s, p| {
        handle(p, |c: CtxDestroy| s.ctx_destroy(c.ctx))
    }),
    (PrimaryCtxRetain::OP, |s, p| {
        handle(p, |c: PrimaryCtxRetain| s.primary_retain(c.device))
    }),
    (PrimaryCtxRelease::OP, |s, p| {
        handle(p, |c: PrimaryCtxRelease| s.primary_release(c.device))
    }),
    (PrimaryCtxReset::OP, |s, p| {
        handle(p, |c: PrimaryCtxReset| s.primary_reset(c.device))
    }),
    (PrimaryCtxSetFlags::OP, |s, p| {
        handle(p, |c: PrimaryCtxSetFlags| s.primary_set_flags(c))
    }),
    (PrimaryCtxGetState::OP, |s, p| {
        handle(p, |c: PrimaryCtxGetState| s.primary_get_state(c.device))
    }),
    (CtxSynchronize::OP, |s, p| {
        handle(p, |c: CtxSynchronize| s.ctx_synchronize(c.ctx))
    }),
    (MemGetInfo::OP, |s, p| {
        handle(p, |c: MemGetInfo| s.mem_get_info(c.ctx))
    }),
];

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

const INVALID_CONTEXT: u32 = CUresult::CUDA_ERROR_INVALID_CONTEXT.0;

impl Session {
    /// The driver context behind a handle of this session.
    pub fn ctx(&self, h: u64) -> Result<CUcontext, u32> {
        match self.contexts.get(h) {
            Some(c) if c.live => Ok(c.raw),
            _ => Err(INVALID_CONTEXT),
        }
    }

    /// Makes the handle's context current on the worker thread.
    pub fn enter(&mut self, h: u64) -> Result<CUcontext, u32> {
        // A context that hit a sticky error refuses everything, as on a GPU.
        self.batch.admit(h)?;
        let raw = self.ctx(h)?;
        self.batch.entered = Some(h);
        cu!(self, cuCtxSetCurrent(raw))?;
        Ok(raw)
    }

    fn ctx_create(&mut self, c: CtxCreate) -> Result<u64, u32> {
        let dev = self.device(c.device)?;
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
        let h = self.contexts.insert(
            &mut self.minter,
            Ctx {
                raw,
                kind: CtxKind::Created,
                live: true,
            },
        );
        Ok(h)
    }

    fn ctx_destroy(&mut self, h: u64) -> Result<(), u32> {
        match self.contexts.get(h) {
            Some(Ctx {
                kind: CtxKind::Created,
                ..
            }) => {}
            // Primary contexts are released, never destroyed.
            _ => return Err(INVALID_CONTEXT),
        }
        let raw = self.ctx(h)?;
        cu!(self, cuCtxDestroy_v2(raw))?;
        self.contexts.remove(h);
        self.forget_objects_of(h);
        Ok(())
    }

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

    fn primary_retain(&mut self, device: i32) -> Result<u64, u32> {
        let dev = self.device(device)?;
        let mut raw: CUcontext = std::ptr::null_mut();
        cu!(self, cuDevicePrimaryCtxRetain(&mut raw, dev))?;
        if let Some(p) = self.primary.get_mut(&device) {
            p.retains += 1;
            let h = p.handle;
            if let Some(c) = self.contexts.get_mut(h) {
                // After a release to zero the driver may hand out a new one.
                c.raw = raw;
                c.live = true;
            }
            return Ok(h);
        }
        let handle = self.contexts.insert(
            &mut self.minter,
            Ctx {
                raw,
                kind: CtxKind::Primary { device },
                live: true,
            },
        );
        self.primary.insert(device, Primary { handle, retains: 1 });
        Ok(handle)
    }

    fn primary_release(&mut self, device: i32) -> Result<(), u32> {
        let dev = self.device(device)?;
        // Only what this session retained may be released, so one guest can
        // never drop a reference another part of the worker depends on.
        match self.primary.get(&device) {
            Some(p) if p.retains > 0 => {}
            _ => return Err(INVALID_CONTEXT),
        }
        self.release_primary_once(dev)?;
        let p = self.primary.get_mut(&device).expect("checked above");
        p.retains -= 1;
        if p.retains == 0 {
            let h = p.handle;
            if let Some(c) = self.contexts.get_mut(h) {
                c.live = false;
            }
            // This worker is the process's only user, so the last release
            // destroyed the primary context.
            self.forget_objects_of(h);
        }
        Ok(())
    }

    fn release_primary_once(&mut self, dev: i32) -> Result<(), u32> {
        if self.driver.cuda.cuDevicePrimaryCtxRelease_v2.is_some() {
            cu!(self, cuDevicePrimaryCtxRelease_v2(dev))
        } else {
            cu!(self, cuDevicePrimaryCtxRelease(dev))
        }
    }

    fn primary_reset(&mut self, device: i32) -> Result<(), u32> {
        let dev = self.device(device)?;
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

    fn primary_set_flags(&mut self, c: PrimaryCtxSetFlags) -> Result<(), u32> {
        let dev = self.device(c.device)?;
        if self.driver.cuda.cuDevicePrimaryCtxSetFlags_v2.is_some() {
            cu!(self, cuDevicePrimaryCtxSetFlags_v2(dev, c.flags))
        } else {
            cu!(self, cuDevicePrimaryCtxSetFlags(dev, c.flags))
        }
    }

    fn primary_get_state(&mut self, device: i32) -> Result<(u32, bool), u32> {
        let dev = self.device(device)?;
        let mut flags: u32 = 0;
        let mut active: i32 = 0;
        cu!(
            self,
            cuDevicePrimaryCtxGetState(dev, &mut flags, &mut active)
        )?;
        Ok((flags, active != 0))
    }

    fn ctx_synchronize(&mut self, h: u64) -> Result<(), u32> {
        self.enter(h)?;
        cu!(self, cuCtxSynchronize())
    }

    fn mem_get_info(&mut self, h: u64) -> Result<(u64, u64), u32> {
        self.enter(h)?;
        let mut free: usize = 0;
        let mut total: usize = 0;
        cu!(self, cuMemGetInfo_v2(&mut free, &mut total))?;
        Ok(self.quota.report(free as u64, total as u64))
    }

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
                Err(e) => tracing::warn!("session {}: cuCtxDestroy: CUresult {e}", self.id),
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
                        tracing::warn!(
                            "session {}: cuDevicePrimaryCtxRelease: CUresult {e}",
                            self.id
                        );
                        break;
                    }
                }
            }
        }
        self.primary.clear();
        for _ in self.contexts.drain() {}
        (destroyed, released)
    }
}
