//! Virtual memory management: physical allocations (`cuMemCreate`) behind
//! handles, reserved address ranges, mappings and access.
//!
//! The worker keeps its own picture of the session's VMM state so that
//! (a) copies reach only mapped ranges whose access was granted — a mapping
//! starts inaccessible, and touching it would fault the GPU; (b) a guest can
//! map only into a range it reserved, unmap or free only what it mapped or
//! reserved, never someone else's; (c) disconnect returns everything in the
//! order the driver needs: unmap, release, free the address ranges.
//!
//! Access is tracked per range, not per device: a range counts as readable
//! (writable) when the last `cuMemSetAccess` covering it granted read
//! (read-write) to at least one device. On a single-GPU host that is exact.

use super::memory::INVALID_VALUE;
use super::ranges::{span, RangeSet};
use super::{cu, Session};
use cuda_types::cuda::{
    CUdeviceptr, CUmemAccessDesc, CUmemAccess_flags, CUmemAllocationGranularity_flags,
    CUmemAllocationHandleType, CUmemAllocationProp, CUmemAllocationProp_st__bindgen_ty_1,
    CUmemAllocationType, CUmemGenericAllocationHandle, CUmemLocation, CUmemLocationType,
    CUmemLocation_st__bindgen_ty_1,
};
use std::collections::BTreeMap;
use vgpu_transport::proto::{
    MemAccess, MemAddressFree, MemAddressReserve, MemAllocProp, MemCreate, MemGetAccess,
    MemGetAllocationGranularity, MemMap, MemRelease, MemSetAccess, MemUnmap, Serve,
};
use vgpu_transport::Status;

/// A physical allocation from `cuMemCreate`.
#[derive(Debug)]
pub struct Physical {
    pub raw: CUmemGenericAllocationHandle,
    pub size: u64,
    /// Live mappings of it; the driver frees it once released and unmapped.
    pub mappings: u32,
    /// `cuMemRelease` was called: the handle is dead to the guest, the
    /// memory lives on until its last mapping goes.
    pub released: bool,
}

#[derive(Debug, Clone)]
pub struct Mapping {
    pub size: u64,
    /// The session handle of the physical allocation behind it.
    pub handle: u64,
}

#[derive(Debug, Default)]
pub struct VmmState {
    /// Reserved address ranges: start → size.
    pub reserved: BTreeMap<u64, u64>,
    /// Mappings: start → mapping.
    pub mapped: BTreeMap<u64, Mapping>,
    /// Every mapped byte, for "is this range fully mapped" questions.
    pub mapped_set: RangeSet,
}

const DEVICE_LOCATION: u32 = CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE.0;
const PROT_READ: u32 = CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READ.0;
const PROT_READWRITE: u32 = CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE.0;
const PROT_NONE: u32 = CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_NONE.0;

fn location(location_type: u32, id: i32) -> CUmemLocation {
    CUmemLocation {
        type_: CUmemLocationType(location_type),
        __bindgen_anon_1: CUmemLocation_st__bindgen_ty_1 { id },
    }
}

fn to_prop(p: &MemAllocProp) -> CUmemAllocationProp {
    CUmemAllocationProp {
        type_: CUmemAllocationType(p.alloc_type),
        requestedHandleTypes: CUmemAllocationHandleType(p.requested_handle_types),
        location: location(p.location_type, p.location_id),
        // Windows-only; no pointer from a guest is ever passed on.
        win32HandleMetaData: std::ptr::null_mut(),
        allocFlags: CUmemAllocationProp_st__bindgen_ty_1 {
            compressionType: p.compression_type,
            gpuDirectRDMACapable: p.gpu_direct_rdma_capable,
            usage: p.usage,
            reserved: [0; 4],
        },
    }
}

impl Session {
    /// A device location must name one of this worker's devices: the id is
    /// a guest ordinal, and guest ordinals are the host's.
    fn check_location(&self, location_type: u32, id: i32) -> Result<(), Status> {
        if location_type == DEVICE_LOCATION {
            self.device(id)?;
        }
        Ok(())
    }

    /// Whether `ptr` lies in one of this session's mappings.
    pub(super) fn vmm_is_mapped(&self, ptr: u64) -> bool {
        self.vmm.mapped_set.covers(ptr, ptr.saturating_add(1))
    }
}

impl Serve<MemGetAllocationGranularity> for Session {
    fn serve(&mut self, c: MemGetAllocationGranularity) -> Result<u64, Status> {
        self.check_location(c.prop.location_type, c.prop.location_id)?;
        let prop = to_prop(&c.prop);
        let mut g: usize = 0;
        cu!(
            self,
            cuMemGetAllocationGranularity(
                &mut g,
                &prop,
                CUmemAllocationGranularity_flags(c.option)
            )
        )?;
        Ok(g as u64)
    }
}

impl Serve<MemCreate> for Session {
    fn serve(&mut self, c: MemCreate) -> Result<u64, Status> {
        self.check_location(c.prop.location_type, c.prop.location_id)?;
        self.quota.check_alloc(c.size)?;
        let prop = to_prop(&c.prop);
        let mut raw: CUmemGenericAllocationHandle = 0;
        cu!(self, cuMemCreate(&mut raw, c.size as usize, &prop, c.flags))?;
        self.quota.used = self.quota.used.saturating_add(c.size);
        Ok(self.physical.insert(Physical {
            raw,
            size: c.size,
            mappings: 0,
            released: false,
        }))
    }
}

impl Session {
    /// The driver frees a physical allocation once it is released and
    /// unmapped; then its handle goes and its bytes leave the quota.
    fn reap_physical(&mut self, h: u64) {
        if let Some(p) = self.physical.find(h) {
            if p.released && p.mappings == 0 {
                let size = p.size;
                self.physical.remove(h);
                self.quota.used = self.quota.used.saturating_sub(size);
            }
        }
    }
}

impl Serve<MemRelease> for Session {
    fn serve(&mut self, c: MemRelease) -> Result<(), Status> {
        let h = c.handle;
        let raw = match self.physical.find(h) {
            Some(p) if !p.released => p.raw,
            _ => {
                tracing::warn!(
                    "session {}: MemRelease of unknown or released handle {h:#x}",
                    self.id
                );
                return Err(INVALID_VALUE);
            }
        };
        cu!(self, cuMemRelease(raw))?;
        if let Some(p) = self.physical.find_mut(h) {
            p.released = true;
        }
        self.reap_physical(h);
        Ok(())
    }
}

impl Serve<MemAddressReserve> for Session {
    fn serve(&mut self, c: MemAddressReserve) -> Result<u64, Status> {
        // `addr` is only a hint to the driver, which never hands out a range
        // that is already in use, so it needs no check.
        let mut p: CUdeviceptr = 0;
        cu!(
            self,
            cuMemAddressReserve(
                &mut p,
                c.size as usize,
                c.alignment as usize,
                c.addr,
                c.flags
            )
        )?;
        self.vmm.reserved.insert(p, c.size);
        Ok(p)
    }
}

impl Serve<MemAddressFree> for Session {
    fn serve(&mut self, c: MemAddressFree) -> Result<(), Status> {
        if self.vmm.reserved.get(&c.ptr) != Some(&c.size) {
            tracing::warn!(
                "session {}: MemAddressFree({:#x}, {}) is not a range this session reserved",
                self.id,
                c.ptr,
                c.size
            );
            return Err(INVALID_VALUE);
        }
        let end = c.ptr.saturating_add(c.size);
        if self.vmm.mapped_set.overlaps(c.ptr, end) {
            tracing::warn!(
                "session {}: MemAddressFree({:#x}) while mappings remain in it",
                self.id,
                c.ptr
            );
            return Err(INVALID_VALUE);
        }
        cu!(self, cuMemAddressFree(c.ptr, c.size as usize))?;
        self.vmm.reserved.remove(&c.ptr);
        Ok(())
    }
}

impl Session {
    /// Whether [start, end) lies inside one reservation of this session.
    fn in_reservation(&self, start: u64, end: u64) -> bool {
        matches!(
            self.vmm.reserved.range(..=start).next_back(),
            Some((&b, &n)) if b.checked_add(n).is_some_and(|e| e >= end)
        )
    }
}

impl Serve<MemMap> for Session {
    fn serve(&mut self, c: MemMap) -> Result<(), Status> {
        let (start, end) = match span(c.ptr, c.size) {
            Some(r) if c.size > 0 => r,
            _ => return Err(INVALID_VALUE),
        };
        let (raw, phys_size) = match self.physical.find(c.handle) {
            Some(p) if !p.released => (p.raw, p.size),
            _ => {
                tracing::warn!(
                    "session {}: MemMap with unknown or released handle {:#x}",
                    self.id,
                    c.handle
                );
                return Err(INVALID_VALUE);
            }
        };
        if !self.in_reservation(start, end) || self.vmm.mapped_set.overlaps(start, end) {
            tracing::warn!(
                "session {}: MemMap of [{start:#x}, {end:#x}) outside this session's free \
                 reserved address space; refused",
                self.id
            );
            return Err(INVALID_VALUE);
        }
        if c.offset.checked_add(c.size).is_none_or(|e| e > phys_size) {
            return Err(INVALID_VALUE);
        }
        cu!(
            self,
            cuMemMap(c.ptr, c.size as usize, c.offset as usize, raw, c.flags)
        )?;
        self.vmm.mapped.insert(
            start,
            Mapping {
                size: c.size,
                handle: c.handle,
            },
        );
        self.vmm.mapped_set.insert(start, end);
        if let Some(p) = self.physical.find_mut(c.handle) {
            p.mappings += 1;
        }
        Ok(())
    }
}

impl Session {
    /// The mappings that exactly tile [start, end), or `None` when the range
    /// cuts through a mapping or has a hole (the driver only unmaps whole
    /// mappings).
    fn tiling(&self, start: u64, end: u64) -> Option<Vec<u64>> {
        let mut at = start;
        let mut v = Vec::new();
        for (&s, m) in self.vmm.mapped.range(start..end) {
            if s != at {
                return None;
            }
            at = s.checked_add(m.size)?;
            v.push(s);
        }
        (at == end && !v.is_empty()).then_some(v)
    }
}

impl Serve<MemUnmap> for Session {
    fn serve(&mut self, c: MemUnmap) -> Result<(), Status> {
        let tiles = span(c.ptr, c.size).and_then(|(s, e)| self.tiling(s, e));
        let Some(tiles) = tiles else {
            tracing::warn!(
                "session {}: MemUnmap({:#x}, {}) is not a whole set of this session's \
                 mappings; refused",
                self.id,
                c.ptr,
                c.size
            );
            return Err(INVALID_VALUE);
        };
        cu!(self, cuMemUnmap(c.ptr, c.size as usize))?;
        for s in tiles {
            self.forget_mapping(s);
        }
        Ok(())
    }
}

impl Session {
    fn forget_mapping(&mut self, start: u64) {
        let Some(m) = self.vmm.mapped.remove(&start) else {
            return;
        };
        let end = start.saturating_add(m.size);
        self.vmm.mapped_set.remove(start, end);
        self.mem.readable.remove(start, end);
        self.mem.writable.remove(start, end);
        if let Some(p) = self.physical.find_mut(m.handle) {
            p.mappings = p.mappings.saturating_sub(1);
        }
        self.reap_physical(m.handle);
    }
}

impl Serve<MemSetAccess> for Session {
    fn serve(&mut self, c: MemSetAccess) -> Result<(), Status> {
        let (start, end) = match span(c.ptr, c.size) {
            Some(r) if c.size > 0 && self.vmm.mapped_set.covers(r.0, r.1) => r,
            _ => {
                tracing::warn!(
                    "session {}: MemSetAccess({:#x}, {}) is not mapped by this session; refused",
                    self.id,
                    c.ptr,
                    c.size
                );
                return Err(INVALID_VALUE);
            }
        };
        let mut descs = Vec::with_capacity(c.access.len());
        for a in &c.access {
            self.check_location(a.location_type, a.location_id)?;
            if !matches!(a.flags, PROT_NONE | PROT_READ | PROT_READWRITE) {
                return Err(INVALID_VALUE);
            }
            descs.push(CUmemAccessDesc {
                location: location(a.location_type, a.location_id),
                flags: CUmemAccess_flags(a.flags),
            });
        }
        cu!(
            self,
            cuMemSetAccess(c.ptr, c.size as usize, descs.as_ptr(), descs.len())
        )?;
        let granted = |f: u32| {
            c.access
                .iter()
                .any(|a: &MemAccess| a.location_type == DEVICE_LOCATION && a.flags == f)
        };
        let rw = granted(PROT_READWRITE);
        let r = rw || granted(PROT_READ);
        for (set, on) in [(&mut self.mem.readable, r), (&mut self.mem.writable, rw)] {
            if on {
                set.insert(start, end);
            } else {
                set.remove(start, end);
            }
        }
        Ok(())
    }
}

impl Serve<MemGetAccess> for Session {
    fn serve(&mut self, c: MemGetAccess) -> Result<u64, Status> {
        self.check_location(c.location_type, c.location_id)?;
        if !self.vmm_is_mapped(c.ptr) {
            tracing::warn!(
                "session {}: MemGetAccess at {:#x}, not mapped by this session",
                self.id,
                c.ptr
            );
            return Err(INVALID_VALUE);
        }
        let loc = location(c.location_type, c.location_id);
        let mut flags: u64 = 0;
        cu!(self, cuMemGetAccess(&mut flags, &loc, c.ptr))?;
        Ok(flags)
    }
}

impl Session {
    /// Session teardown: unmaps every mapping, releases every physical
    /// allocation, frees every reservation — the order the driver needs.
    /// Returns (unmapped, released, reservations freed).
    pub(super) fn release_vmm(&mut self) -> (usize, usize, usize) {
        let maps: Vec<(u64, u64)> = self.vmm.mapped.iter().map(|(&s, m)| (s, m.size)).collect();
        let mut unmapped = 0;
        for (s, n) in maps {
            match cu!(self, cuMemUnmap(s, n as usize)) {
                Ok(()) => unmapped += 1,
                Err(e) => tracing::warn!("session {}: cuMemUnmap({s:#x}): {e}", self.id),
            }
            self.forget_mapping(s);
        }
        let handles: Vec<(u64, CUmemGenericAllocationHandle, bool)> = self
            .physical
            .iter()
            .map(|(h, p)| (h, p.raw, p.released))
            .collect();
        let mut released = 0;
        for (h, raw, already) in handles {
            if !already {
                match cu!(self, cuMemRelease(raw)) {
                    Ok(()) => released += 1,
                    Err(e) => tracing::warn!("session {}: cuMemRelease: {e}", self.id),
                }
            }
            if let Some(p) = self.physical.remove(h) {
                self.quota.used = self.quota.used.saturating_sub(p.size);
            }
        }
        let ranges: Vec<(u64, u64)> = self.vmm.reserved.iter().map(|(&s, &n)| (s, n)).collect();
        let mut freed = 0;
        for (s, n) in ranges {
            match cu!(self, cuMemAddressFree(s, n as usize)) {
                Ok(()) => freed += 1,
                Err(e) => {
                    tracing::warn!("session {}: cuMemAddressFree({s:#x}): {e}", self.id)
                }
            }
        }
        self.vmm.reserved.clear();
        (unmapped, released, freed)
    }
}
