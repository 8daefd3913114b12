//! Stream-ordered allocation and the devices' default memory pools.
//!
//! Pools are per process in the driver and each guest has its own worker
//! process, so a guest tuning or trimming "the" default pool only affects
//! itself. Pool allocations join the session's memory like `cuMemAlloc`'s;
//! a stream-ordered free takes the range away at once, since the guest may
//! not touch it after the free is ordered anyway.

use super::memory::{Alloc, AllocKind, INVALID_VALUE};
use super::{cu, Session};
use cuda_types::cuda::{CUdeviceptr, CUmemPool_attribute, CUmemoryPool};
use std::ffi::c_void;
use vgpu_transport::proto::{
    DeviceGetDefaultMemPool, MemAllocAsync, MemAllocFromPoolAsync, MemFreeAsync,
    MemPoolGetAttribute, MemPoolSetAttribute, MemPoolTrimTo, Serve,
};
use vgpu_transport::Status;

pub struct Pool {
    pub raw: CUmemoryPool,
    pub device: i32,
}

/// Width in bytes of each `CUmemPool_attribute`'s value (cuda.h documents
/// each as int, an enum, or cuuint64_t); `None` for one this build does not
/// know, which is refused rather than handed a buffer of a guessed size.
fn attr_width(attr: u32) -> Option<usize> {
    match attr {
        // The reuse policies, allocation/location/handle types, the
        // decompression flag and the locality domain: int or enum.
        1..=3 | 9..=12 | 14 | 15 => Some(4),
        // Release threshold, reserved/used current/high, max pool size.
        4..=8 | 13 => Some(8),
        _ => None,
    }
}

impl Session {
    fn pool(&self, h: u64) -> Result<CUmemoryPool, Status> {
        match self.pools.find(h) {
            Some(p) => Ok(p.raw),
            None => {
                tracing::debug!("session {}: unknown pool handle {h:#x}", self.id);
                Err(Status::Cuda(
                    cuda_types::cuda::CUresult::CUDA_ERROR_INVALID_HANDLE,
                ))
            }
        }
    }
}

impl Serve<MemAllocAsync> for Session {
    fn serve(&mut self, c: MemAllocAsync) -> Result<u64, Status> {
        let stream = self.enter_stream(c.ctx, c.stream)?;
        self.quota.check_alloc(c.size)?;
        let mut p: CUdeviceptr = 0;
        cu!(self, cuMemAllocAsync(&mut p, c.size as usize, stream))?;
        // It was made in the stream's context, which need not be the named one.
        let owner = self.streams.find(c.stream).map_or(c.ctx, |s| s.ctx);
        self.add_alloc(
            p,
            Alloc {
                size: c.size,
                ctx: owner,
                kind: AllocKind::Async,
            },
        );
        Ok(p)
    }
}

impl Serve<MemAllocFromPoolAsync> for Session {
    fn serve(&mut self, c: MemAllocFromPoolAsync) -> Result<u64, Status> {
        let stream = self.enter_stream(c.ctx, c.stream)?;
        let pool = self.pool(c.pool)?;
        self.quota.check_alloc(c.size)?;
        let mut p: CUdeviceptr = 0;
        cu!(
            self,
            cuMemAllocFromPoolAsync(&mut p, c.size as usize, pool, stream)
        )?;
        let owner = self.streams.find(c.stream).map_or(c.ctx, |s| s.ctx);
        self.add_alloc(
            p,
            Alloc {
                size: c.size,
                ctx: owner,
                kind: AllocKind::Async,
            },
        );
        Ok(p)
    }
}

impl Serve<MemFreeAsync> for Session {
    fn serve(&mut self, c: MemFreeAsync) -> Result<(), Status> {
        let stream = self.enter_stream(c.ctx, c.stream)?;
        // Any allocation of the session may be freed in stream order (the
        // driver accepts cuMemAlloc memory too); what matters here is that
        // it is this session's and freed once.
        if !self.mem.allocs.contains_key(&c.ptr) {
            tracing::warn!(
                "session {}: MemFreeAsync of {:#x}, not an allocation of this session \
                 (never allocated, already freed, or not its start); refused",
                self.id,
                c.ptr
            );
            return Err(INVALID_VALUE);
        }
        cu!(self, cuMemFreeAsync(c.ptr, stream))?;
        self.drop_alloc(c.ptr);
        Ok(())
    }
}

impl Serve<DeviceGetDefaultMemPool> for Session {
    fn serve(&mut self, c: DeviceGetDefaultMemPool) -> Result<u64, Status> {
        let device = c.device;
        let dev = self.device(device)?;
        if let Some((h, _)) = self.pools.iter().find(|(_, p)| p.device == device) {
            return Ok(h);
        }
        let mut raw: CUmemoryPool = std::ptr::null_mut();
        cu!(self, cuDeviceGetDefaultMemPool(&mut raw, dev))?;
        Ok(self.pools.insert(Pool { raw, device }))
    }
}

impl Serve<MemPoolGetAttribute> for Session {
    fn serve(&mut self, c: MemPoolGetAttribute) -> Result<u64, Status> {
        let pool = self.pool(c.pool)?;
        let width = attr_width(c.attr).ok_or(INVALID_VALUE)?;
        // Eight zeroed bytes whatever the width: a 4-byte answer lands in
        // the low half (little-endian), the high half stays zero.
        let mut v: u64 = 0;
        cu!(
            self,
            cuMemPoolGetAttribute(
                pool,
                CUmemPool_attribute(c.attr),
                (&mut v as *mut u64).cast::<c_void>()
            )
        )?;
        Ok(if width == 4 { v & 0xFFFF_FFFF } else { v })
    }
}

impl Serve<MemPoolSetAttribute> for Session {
    fn serve(&mut self, c: MemPoolSetAttribute) -> Result<(), Status> {
        let pool = self.pool(c.pool)?;
        // The value always travels in eight bytes, narrowed to its low half
        // for 4-byte attributes: a driver that read more than cuda.h says
        // would still read only our own, initialized buffer.
        let mut v = match attr_width(c.attr) {
            Some(4) => u64::from(u32::try_from(c.value).map_err(|_| INVALID_VALUE)?),
            Some(_) => c.value,
            None => return Err(INVALID_VALUE),
        };
        cu!(
            self,
            cuMemPoolSetAttribute(
                pool,
                CUmemPool_attribute(c.attr),
                (&mut v as *mut u64).cast::<c_void>()
            )
        )
    }
}

impl Serve<MemPoolTrimTo> for Session {
    fn serve(&mut self, c: MemPoolTrimTo) -> Result<(), Status> {
        let pool = self.pool(c.pool)?;
        cu!(self, cuMemPoolTrimTo(pool, c.keep as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_widths_follow_cuda_h() {
        use cuda_types::cuda::CUmemPool_attribute as A;
        assert_eq!(
            attr_width(A::CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC.0),
            Some(4)
        );
        assert_eq!(attr_width(A::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD.0), Some(8));
        assert_eq!(attr_width(A::CU_MEMPOOL_ATTR_USED_MEM_HIGH.0), Some(8));
        assert_eq!(attr_width(A::CU_MEMPOOL_ATTR_MAX_POOL_SIZE.0), Some(8));
        assert_eq!(attr_width(A::CU_MEMPOOL_ATTR_LOCATION_TYPE.0), Some(4));
        assert_eq!(attr_width(0), None);
        assert_eq!(attr_width(99), None);
    }
}
