//! Linear device memory: allocation, free, copies and memsets.
//!
//! Device pointers are the driver's real values, so the guest could name
//! any address of this worker's GPU address space. Every range a call would
//! make the driver read or write is therefore checked first against what
//! this session owns: its allocations (readable and writable) and its VMM
//! mappings with access granted (see [`super::vmm`]). Anything else is
//! `CUDA_ERROR_INVALID_VALUE` with a log line, and the driver never sees it.
//!
//! Every copy and memset op has a synchronous form and a stream-ordered
//! `...Async` twin (the same fields plus `stream`, see `proto::OnStream`),
//! served by one method.
//! Stream-ordered copies into a host buffer (DtoH's reply) wait for their
//! stream before returning: the bytes must be in the reply. Those from a
//! host buffer (HtoD's payload) do not: the buffer is pageable memory to
//! the driver, which stages it before the call returns (see
//! [`super::bulk`]), so stream order alone keeps them in place.

use super::ranges::{span, RangeSet};
use super::{cu, Session};
use cuda_types::cuda::{CUdeviceptr, CUmemorytype, CUresult, CUstream, CUDA_MEMCPY2D};
use std::collections::BTreeMap;
use std::ffi::c_void;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    MemAlloc, MemAllocPitch, MemFree, MemGetAddressRange, Memcpy2DDtoD, Memcpy2DDtoDAsync,
    Memcpy2DDtoH, Memcpy2DDtoHAsync, Memcpy2DHtoD, Memcpy2DHtoDAsync, MemcpyDtoD, MemcpyDtoDAsync,
    MemcpyDtoH, MemcpyDtoHAsync, MemcpyHtoD, MemcpyHtoDAsync, Memset, MemsetAsync, OnStream, Serve,
    COPY_CHUNK,
};
use vgpu_transport::Status;

pub(super) const INVALID_VALUE: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_VALUE);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocKind {
    /// `cuMemAlloc`.
    Linear,
    /// `cuMemAllocPitch`; `size` is pitch × height.
    Pitched,
    /// `cuMemAllocAsync` from the device's pool.
    Async,
    /// Graph memory (`GraphMemAlloc`, see [`super::graph`]).
    Graph,
}

#[derive(Debug, Clone)]
pub struct Alloc {
    pub size: u64,
    /// The context handle it was allocated in; its destruction frees it.
    pub ctx: u64,
    pub kind: AllocKind,
}

/// What linear memory this session owns and which bytes it may touch.
#[derive(Debug, Default)]
pub struct MemState {
    /// Allocations by base pointer.
    pub allocs: BTreeMap<u64, Alloc>,
    /// Bytes the driver may read on the guest's behalf.
    pub readable: RangeSet,
    /// Bytes the driver may write on the guest's behalf.
    pub writable: RangeSet,
}

/// Which way a checked range is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Bytes a pitched region spans: `height` rows of `width` bytes, `pitch`
/// apart; `None` when it is empty (nothing to check or do), `Err` when the
/// geometry is impossible (rows overlap, arithmetic overflows).
pub(super) fn footprint(width: u64, height: u64, pitch: u64) -> Result<Option<u64>, Status> {
    if width == 0 || height == 0 {
        return Ok(None);
    }
    if height > 1 && pitch < width {
        return Err(INVALID_VALUE);
    }
    pitch
        .checked_mul(height - 1)
        .and_then(|v| v.checked_add(width))
        .map(Some)
        .ok_or(INVALID_VALUE)
}

/// Bytes a 3D box spans: `depth` slices of `height` rows of `width`
/// bytes, rows `pitch` apart and slices `slice_height` rows apart (unused
/// for one slice). `None` when empty, `Err` when slices or rows overlap or
/// the arithmetic overflows.
pub(super) fn footprint_3d(
    width: u64,
    height: u64,
    depth: u64,
    pitch: u64,
    slice_height: u64,
) -> Result<Option<u64>, Status> {
    if depth == 0 {
        return Ok(None);
    }
    let Some(slice) = footprint(width, height, pitch)? else {
        return Ok(None);
    };
    if depth == 1 {
        return Ok(Some(slice));
    }
    if pitch < width || slice_height < height {
        return Err(INVALID_VALUE);
    }
    pitch
        .checked_mul(slice_height)
        .and_then(|s| s.checked_mul(depth - 1))
        .and_then(|v| v.checked_add(slice))
        .map(Some)
        .ok_or(INVALID_VALUE)
}

impl Session {
    /// Refuses unless every byte of [ptr, ptr+len) is this session's to
    /// read or write. `len` 0 is never asked (empty ops succeed untouched).
    pub(super) fn check_range(
        &self,
        op: &str,
        ptr: u64,
        len: u64,
        how: Access,
    ) -> Result<(), Status> {
        let set = match how {
            Access::Read => &self.mem.readable,
            Access::Write => &self.mem.writable,
        };
        match span(ptr, len) {
            Some((s, e)) if set.covers(s, e) => Ok(()),
            _ => {
                tracing::warn!(
                    "session {}: {op}: {how:?} of {len} byte(s) at {ptr:#x} is outside this \
                     session's memory; refused",
                    self.id
                );
                Err(INVALID_VALUE)
            }
        }
    }

    /// Records a new allocation and charges it to the quota.
    pub(super) fn add_alloc(&mut self, ptr: u64, a: Alloc) {
        let end = ptr.saturating_add(a.size);
        self.mem.readable.insert(ptr, end);
        self.mem.writable.insert(ptr, end);
        self.quota.used = self.quota.used.saturating_add(a.size);
        self.mem.allocs.insert(ptr, a);
    }

    /// Forgets an allocation (freed, or gone with its context).
    pub(super) fn drop_alloc(&mut self, ptr: u64) -> Option<Alloc> {
        let a = self.mem.allocs.remove(&ptr)?;
        let end = ptr.saturating_add(a.size);
        self.mem.readable.remove(ptr, end);
        self.mem.writable.remove(ptr, end);
        self.quota.used = self.quota.used.saturating_sub(a.size);
        Some(a)
    }
}

impl Serve<MemAlloc> for Session {
    fn serve(&mut self, c: MemAlloc) -> Result<u64, Status> {
        self.enter(c.ctx)?;
        self.quota.check_alloc(c.size)?;
        let mut p: CUdeviceptr = 0;
        cu!(self, cuMemAlloc_v2(&mut p, c.size as usize))?;
        self.add_alloc(
            p,
            Alloc {
                size: c.size,
                ctx: c.ctx,
                kind: AllocKind::Linear,
            },
        );
        Ok(p)
    }
}

impl Serve<MemAllocPitch> for Session {
    fn serve(&mut self, c: MemAllocPitch) -> Result<(u64, u64), Status> {
        self.enter(c.ctx)?;
        // The pitch is only known afterwards; the unpadded size is the
        // cheapest early refusal, the padded one is checked again below.
        let least = c.width.checked_mul(c.height).ok_or(INVALID_VALUE)?;
        self.quota.check_alloc(least)?;
        let mut p: CUdeviceptr = 0;
        let mut pitch: usize = 0;
        cu!(
            self,
            cuMemAllocPitch_v2(
                &mut p,
                &mut pitch,
                c.width as usize,
                c.height as usize,
                c.elem_size
            )
        )?;
        let size = (pitch as u64).saturating_mul(c.height);
        if let Err(e) = self.quota.check_alloc(size) {
            let _ = cu!(self, cuMemFree_v2(p));
            return Err(e);
        }
        self.add_alloc(
            p,
            Alloc {
                size,
                ctx: c.ctx,
                kind: AllocKind::Pitched,
            },
        );
        Ok((p, pitch as u64))
    }
}

impl Serve<MemFree> for Session {
    fn serve(&mut self, c: MemFree) -> Result<(), Status> {
        self.enter(c.ctx)?;
        if !self.mem.allocs.contains_key(&c.ptr) {
            tracing::warn!(
                "session {}: MemFree of {:#x}, which is not an allocation of this session \
                 (never allocated, already freed, or not its start); refused",
                self.id,
                c.ptr
            );
            return Err(INVALID_VALUE);
        }
        cu!(self, cuMemFree_v2(c.ptr))?;
        self.drop_alloc(c.ptr);
        Ok(())
    }
}

impl Serve<MemGetAddressRange> for Session {
    fn serve(&mut self, c: MemGetAddressRange) -> Result<(u64, u64), Status> {
        self.enter(c.ctx)?;
        let owned = self
            .mem
            .allocs
            .range(..=c.ptr)
            .next_back()
            .is_some_and(|(&b, a)| c.ptr - b < a.size)
            || self.vmm_is_mapped(c.ptr);
        if !owned {
            tracing::debug!(
                "session {}: MemGetAddressRange of {:#x}: not this session's",
                self.id,
                c.ptr
            );
            return Err(Status::Cuda(CUresult::CUDA_ERROR_NOT_FOUND));
        }
        let mut base: CUdeviceptr = 0;
        let mut size: usize = 0;
        cu!(self, cuMemGetAddressRange_v2(&mut base, &mut size, c.ptr))?;
        Ok((base, size as u64))
    }
}

impl Session {
    /// After an async copy into or out of `buf`: waits, and on failure
    /// leaks `buf` unless the driver is known to be done with it.
    fn settle(&self, stream: CUstream, buf: Vec<u8>) -> Result<Vec<u8>, Status> {
        match self.wait_stream(stream) {
            Ok(()) => Ok(buf),
            Err((e, settled)) => {
                if !settled {
                    tracing::error!(
                        "session {}: cannot confirm an async copy finished ({e}); \
                         keeping its {}-byte buffer alive",
                        self.id,
                        buf.len()
                    );
                    std::mem::forget(buf);
                }
                Err(e)
            }
        }
    }

    /// `MemcpyHtoD`, or on `stream` its `...Async` twin (normally served
    /// in place, see [`super::bulk`]).
    fn memcpy_htod(&mut self, c: MemcpyHtoD, stream: Option<u64>) -> Result<(), Status> {
        self.htod(c.ctx, stream, c.dst, &c.data.0)
    }

    /// `MemcpyDtoH`, or on `stream` its `...Async` twin.
    fn memcpy_dtoh(&mut self, c: MemcpyDtoH, stream: Option<u64>) -> Result<Bytes, Status> {
        let stream = self.enter_copy_stream(c.ctx, stream)?;
        if c.size > COPY_CHUNK {
            tracing::warn!(
                "session {}: MemcpyDtoH of {} bytes exceeds the {COPY_CHUNK}-byte chunk",
                self.id,
                c.size
            );
            return Err(INVALID_VALUE);
        }
        if c.size == 0 {
            return Ok(Bytes(Vec::new()));
        }
        self.check_range("MemcpyDtoH", c.src, c.size, Access::Read)?;
        let mut buf = vec![0u8; c.size as usize];
        let dst = buf.as_mut_ptr().cast::<c_void>();
        match stream {
            None => {
                cu!(self, cuMemcpyDtoH_v2(dst, c.src, buf.len()))?;
                Ok(Bytes(buf))
            }
            Some(s) => {
                cu!(self, cuMemcpyDtoHAsync_v2(dst, c.src, buf.len(), s))?;
                self.settle(s, buf).map(Bytes)
            }
        }
    }

    /// `MemcpyDtoD`, or on `stream` its `...Async` twin.
    fn memcpy_dtod(&mut self, c: MemcpyDtoD, stream: Option<u64>) -> Result<(), Status> {
        let stream = self.enter_copy_stream(c.ctx, stream)?;
        if c.size == 0 {
            return Ok(());
        }
        self.check_range("MemcpyDtoD", c.src, c.size, Access::Read)?;
        self.check_range("MemcpyDtoD", c.dst, c.size, Access::Write)?;
        let n = c.size as usize;
        match stream {
            None => cu!(self, cuMemcpyDtoD_v2(c.dst, c.src, n)),
            // No host memory involved: the stream may run it whenever.
            Some(s) => cu!(self, cuMemcpyDtoDAsync_v2(c.dst, c.src, n, s)),
        }
    }

    /// `Memset`, or on `stream` its `...Async` twin.
    fn memset(&mut self, c: Memset, stream: Option<u64>) -> Result<(), Status> {
        let stream = self.enter_copy_stream(c.ctx, stream)?;
        if !matches!(c.elem_size, 1 | 2 | 4) {
            return Err(INVALID_VALUE);
        }
        let row = c
            .width
            .checked_mul(c.elem_size as u64)
            .ok_or(INVALID_VALUE)?;
        let Some(len) = footprint(row, c.height, c.pitch)? else {
            return Ok(());
        };
        self.check_range("Memset", c.dst, len, Access::Write)?;
        let (d, p, w, h, v) = (
            c.dst,
            c.pitch as usize,
            c.width as usize,
            c.height as usize,
            c.value,
        );
        // The value arrives widened to u32; like the C prototypes, the 8-
        // and 16-bit forms keep its low bits.
        match (c.elem_size, c.height == 1, stream) {
            (1, true, None) => cu!(self, cuMemsetD8_v2(d, v as u8, w)),
            (2, true, None) => cu!(self, cuMemsetD16_v2(d, v as u16, w)),
            (_, true, None) => cu!(self, cuMemsetD32_v2(d, v, w)),
            (1, false, None) => cu!(self, cuMemsetD2D8_v2(d, p, v as u8, w, h)),
            (2, false, None) => cu!(self, cuMemsetD2D16_v2(d, p, v as u16, w, h)),
            (_, false, None) => cu!(self, cuMemsetD2D32_v2(d, p, v, w, h)),
            (1, true, Some(s)) => cu!(self, cuMemsetD8Async(d, v as u8, w, s)),
            (2, true, Some(s)) => cu!(self, cuMemsetD16Async(d, v as u16, w, s)),
            (_, true, Some(s)) => cu!(self, cuMemsetD32Async(d, v, w, s)),
            (1, false, Some(s)) => cu!(self, cuMemsetD2D8Async(d, p, v as u8, w, h, s)),
            (2, false, Some(s)) => cu!(self, cuMemsetD2D16Async(d, p, v as u16, w, h, s)),
            (_, false, Some(s)) => cu!(self, cuMemsetD2D32Async(d, p, v, w, h, s)),
        }
    }

    /// Runs a 2D copy synchronously or on `stream`; `buf` is the host side
    /// (if any), kept alive until the copy is known to be done.
    fn copy2d(
        &self,
        desc: &CUDA_MEMCPY2D,
        stream: Option<CUstream>,
        buf: Vec<u8>,
    ) -> Result<Vec<u8>, Status> {
        match stream {
            None => cu!(self, cuMemcpy2D_v2(desc)).map(|()| buf),
            Some(s) => {
                cu!(self, cuMemcpy2DAsync_v2(desc, s))?;
                // A host source is pageable memory to the driver, which
                // stages it before returning (see super::bulk): only a
                // host destination must be waited for.
                if buf.is_empty() || desc.dstMemoryType != CUmemorytype::CU_MEMORYTYPE_HOST {
                    return Ok(buf);
                }
                self.settle(s, buf)
            }
        }
    }

    /// `Memcpy2DHtoD`, or on `stream` its `...Async` twin.
    fn memcpy2d_htod(&mut self, c: Memcpy2DHtoD, stream: Option<u64>) -> Result<(), Status> {
        let stream = self.enter_copy_stream(c.ctx, stream)?;
        let packed = c.width.checked_mul(c.height).ok_or(INVALID_VALUE)?;
        if packed > COPY_CHUNK || packed != c.data.0.len() as u64 {
            tracing::warn!(
                "session {}: Memcpy2DHtoD of {}x{} with a {}-byte payload; refused",
                self.id,
                c.width,
                c.height,
                c.data.0.len()
            );
            return Err(INVALID_VALUE);
        }
        let Some(len) = footprint(c.width, c.height, c.dst_pitch)? else {
            return Ok(());
        };
        self.check_range("Memcpy2DHtoD", c.dst, len, Access::Write)?;
        let buf = c.data.0;
        let desc = CUDA_MEMCPY2D {
            srcMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
            srcHost: buf.as_ptr().cast(),
            srcPitch: c.width as usize,
            dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
            dstDevice: c.dst,
            dstPitch: c.dst_pitch as usize,
            WidthInBytes: c.width as usize,
            Height: c.height as usize,
            ..Default::default()
        };
        self.copy2d(&desc, stream, buf).map(drop)
    }

    /// `Memcpy2DDtoH`, or on `stream` its `...Async` twin.
    fn memcpy2d_dtoh(&mut self, c: Memcpy2DDtoH, stream: Option<u64>) -> Result<Bytes, Status> {
        let stream = self.enter_copy_stream(c.ctx, stream)?;
        let packed = c.width.checked_mul(c.height).ok_or(INVALID_VALUE)?;
        if packed > COPY_CHUNK {
            tracing::warn!(
                "session {}: Memcpy2DDtoH of {}x{} exceeds the {COPY_CHUNK}-byte chunk",
                self.id,
                c.width,
                c.height
            );
            return Err(INVALID_VALUE);
        }
        let Some(len) = footprint(c.width, c.height, c.src_pitch)? else {
            return Ok(Bytes(Vec::new()));
        };
        self.check_range("Memcpy2DDtoH", c.src, len, Access::Read)?;
        let mut buf = vec![0u8; packed as usize];
        let desc = CUDA_MEMCPY2D {
            srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcDevice: c.src,
            srcPitch: c.src_pitch as usize,
            dstMemoryType: CUmemorytype::CU_MEMORYTYPE_HOST,
            dstHost: buf.as_mut_ptr().cast(),
            dstPitch: c.width as usize,
            WidthInBytes: c.width as usize,
            Height: c.height as usize,
            ..Default::default()
        };
        self.copy2d(&desc, stream, buf).map(Bytes)
    }

    /// `Memcpy2DDtoD`, or on `stream` its `...Async` twin.
    fn memcpy2d_dtod(&mut self, c: Memcpy2DDtoD, stream: Option<u64>) -> Result<(), Status> {
        let stream = self.enter_copy_stream(c.ctx, stream)?;
        let Some(src_len) = footprint(c.width, c.height, c.src_pitch)? else {
            return Ok(());
        };
        let dst_len = footprint(c.width, c.height, c.dst_pitch)?.unwrap_or(0);
        self.check_range("Memcpy2DDtoD", c.src, src_len, Access::Read)?;
        self.check_range("Memcpy2DDtoD", c.dst, dst_len, Access::Write)?;
        let desc = CUDA_MEMCPY2D {
            srcMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcDevice: c.src,
            srcPitch: c.src_pitch as usize,
            dstMemoryType: CUmemorytype::CU_MEMORYTYPE_DEVICE,
            dstDevice: c.dst,
            dstPitch: c.dst_pitch as usize,
            WidthInBytes: c.width as usize,
            Height: c.height as usize,
            ..Default::default()
        };
        self.copy2d(&desc, stream, Vec::new()).map(drop)
    }

    /// The driver destroyed a context, and the allocations made in it with
    /// it: their ranges must stop being usable (the addresses may be
    /// handed out again). Returns how many were forgotten.
    pub(super) fn forget_allocs_of(&mut self, ctx: u64) -> usize {
        let dead: Vec<u64> = self
            .mem
            .allocs
            .iter()
            .filter(|(_, a)| a.ctx == ctx)
            .map(|(p, _)| *p)
            .collect();
        for p in &dead {
            self.drop_alloc(*p);
        }
        dead.len()
    }

    /// Session teardown: frees every allocation still held. Returns how
    /// many the driver took back.
    pub(super) fn release_allocs(&mut self) -> usize {
        let all: Vec<(u64, u64, AllocKind)> = self
            .mem
            .allocs
            .iter()
            .map(|(p, a)| (*p, a.ctx, a.kind))
            .collect();
        let mut n = 0;
        for (p, ctx, kind) in all {
            // A dead context's memory already went with it; any live one
            // can free unified addresses, the owning one is the natural pick.
            if self.enter(ctx).is_err() {
                self.drop_alloc(p);
                continue;
            }
            let mut r = cu!(self, cuMemFree_v2(p));
            if r.is_err() && kind == AllocKind::Async {
                r = cu!(self, cuMemFreeAsync(p, std::ptr::null_mut()))
                    .and_then(|()| cu!(self, cuCtxSynchronize()));
            }
            match r {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!("session {}: free {p:#x}: {e}", self.id),
            }
            self.drop_alloc(p);
        }
        n
    }
}

/// Serves a synchronous copy op and its `...Async` twin ([`OnStream`])
/// through one method taking the synchronous form and an optional stream.
macro_rules! sync_and_async {
    ($($sync:ident / $twin:ident => $method:ident -> $reply:ty;)*) => {$(
        impl Serve<$sync> for Session {
            fn serve(&mut self, c: $sync) -> Result<$reply, Status> {
                self.$method(c, None)
            }
        }

        impl Serve<$twin> for Session {
            fn serve(&mut self, c: $twin) -> Result<$reply, Status> {
                let (c, stream) = $sync::split(c);
                self.$method(c, Some(stream))
            }
        }
    )*};
}

sync_and_async! {
    MemcpyHtoD / MemcpyHtoDAsync => memcpy_htod -> ();
    MemcpyDtoH / MemcpyDtoHAsync => memcpy_dtoh -> Bytes;
    MemcpyDtoD / MemcpyDtoDAsync => memcpy_dtod -> ();
    Memset / MemsetAsync => memset -> ();
    Memcpy2DHtoD / Memcpy2DHtoDAsync => memcpy2d_htod -> ();
    Memcpy2DDtoH / Memcpy2DDtoHAsync => memcpy2d_dtoh -> Bytes;
    Memcpy2DDtoD / Memcpy2DDtoDAsync => memcpy2d_dtod -> ();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprints() {
        assert_eq!(footprint(0, 5, 0), Ok(None));
        assert_eq!(footprint(5, 0, 0), Ok(None));
        assert_eq!(footprint(10, 1, 0), Ok(Some(10)));
        assert_eq!(footprint(10, 3, 16), Ok(Some(42)));
        assert_eq!(footprint(10, 3, 8), Err(INVALID_VALUE));
        assert_eq!(footprint(10, u64::MAX, u64::MAX), Err(INVALID_VALUE));
    }

    #[test]
    fn box_footprints() {
        assert_eq!(footprint_3d(10, 3, 0, 16, 3), Ok(None));
        assert_eq!(footprint_3d(10, 3, 1, 16, 0), Ok(Some(42)));
        // Two slices of 4 rows of 16: the second starts at 64.
        assert_eq!(footprint_3d(10, 3, 2, 16, 4), Ok(Some(64 + 42)));
        // Slices closer than their rows overlap.
        assert_eq!(footprint_3d(10, 3, 2, 16, 2), Err(INVALID_VALUE));
        assert_eq!(footprint_3d(10, 1, 2, 8, 1), Err(INVALID_VALUE));
        assert_eq!(
            footprint_3d(1, 1, u64::MAX, u64::MAX, 1),
            Err(INVALID_VALUE)
        );
    }
}
