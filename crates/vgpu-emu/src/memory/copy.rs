//! Copies and memsets, synchronous and stream-ordered. Work runs at call
//! time, which is a valid schedule for in-order streams, so one body serves
//! both forms: the async entry points' stream is validated at the boundary
//! (an [`Order`]), the synchronous ones pass `Order::Sync` from the list.
//!
//! Bytes move under the shared heap lock (see the module root): a concurrent
//! free waits for the copy, a concurrent copy does not.

use super::{Access, HEAP};
use crate::context::{current, Context};
use crate::ffi::Live;
use crate::stream::Order;
use crate::{profile, sensors};
use cuda_types::cuda::{CUdeviceptr, CUmemorytype, CUresult, CUDA_MEMCPY2D, CUDA_MEMCPY3D};
use std::ffi::c_void;
use std::time::Instant;
use vgpu_ffi::In;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;

fn timed<T>(f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let r = f();
    sensors::record_memory_busy(t0.elapsed());
    r
}

pub unsafe fn copy_htod(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
    _order: Order,
) -> Result<(), CUresult> {
    current()?;
    if n == 0 {
        return Ok(());
    }
    if src.is_null() {
        return Err(INVALID_VALUE);
    }
    let heap = HEAP.read();
    heap.check_range(dst, n, Access::Write)?;
    // SAFETY: `dst..dst+n` lies in a live, writable mapping (checked, lock
    // held); the caller guarantees `src` is readable for `n` bytes. `copy`
    // tolerates a host buffer that is itself pinned memory overlapping dst.
    timed(|| unsafe { std::ptr::copy(src.cast::<u8>(), dst as *mut u8, n) });
    Ok(())
}

pub unsafe fn copy_dtoh(
    dst: *mut c_void,
    src: CUdeviceptr,
    n: usize,
    _order: Order,
) -> Result<(), CUresult> {
    current()?;
    if n == 0 {
        return Ok(());
    }
    if dst.is_null() {
        return Err(INVALID_VALUE);
    }
    let heap = HEAP.read();
    heap.check_range(src, n, Access::Read)?;
    // SAFETY: the source range is a live, readable mapping (checked, lock
    // held); the caller guarantees `dst` is writable for `n` bytes.
    timed(|| unsafe { std::ptr::copy(src as *const u8, dst.cast::<u8>(), n) });
    Ok(())
}

pub fn copy_dtod(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    _order: Order,
) -> Result<(), CUresult> {
    current()?;
    if n == 0 {
        return Ok(());
    }
    let heap = HEAP.read();
    heap.check_range(dst, n, Access::Write)?;
    heap.check_range(src, n, Access::Read)?;
    // SAFETY: both ranges are live mappings with the needed access (checked,
    // lock held); `copy` is memmove, so overlapping ranges are fine.
    timed(|| unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, n) });
    Ok(())
}

/// `cuMemcpy`: either side may be host or device memory.
pub unsafe fn copy_unified(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    _order: Order,
) -> Result<(), CUresult> {
    current()?;
    if n == 0 {
        return Ok(());
    }
    let heap = HEAP.read();
    heap.check_unified(dst, n, Access::Write)?;
    heap.check_unified(src, n, Access::Read)?;
    // SAFETY: tracked ranges were checked against live mappings; untracked
    // ones are host memory the caller vouches for, as with any host pointer.
    timed(|| unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, n) });
    Ok(())
}

/// `cuMemsetD8/16/32` and their async forms, by element type: `count`
/// elements of `T` at `dst`, after checking range and alignment.
pub fn memset<T: Copy>(
    dst: CUdeviceptr,
    value: T,
    count: usize,
    order: Order,
) -> Result<(), CUresult> {
    memset_2d(dst, 0, value, count, 1, order)
}

/// `cuMemsetD2D8/16/32` and their async forms, by element type: `height`
/// rows of `width` elements, `pitch` bytes apart.
pub fn memset_2d<T: Copy>(
    dst: CUdeviceptr,
    pitch: usize,
    value: T,
    width: usize,
    height: usize,
    _order: Order,
) -> Result<(), CUresult> {
    current()?;
    memset_box(dst, pitch, value, width, height, Run::Yes)
}

/// Whether a checked copy or memset moves its bytes or only validates
/// (a graph node is checked when it is added, and runs at every launch).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    Yes,
    CheckOnly,
}

/// A graph memset node (`CUDA_MEMSET_NODE_PARAMS`): `elem` is 1, 2 or 4
/// bytes, and the value keeps its low bits for the narrower widths, like
/// the typed entry points' C prototypes.
pub(crate) fn memset_node(
    dst: CUdeviceptr,
    pitch: usize,
    value: u32,
    elem: u32,
    width: usize,
    height: usize,
    run: Run,
) -> Result<(), CUresult> {
    match elem {
        1 => memset_box(dst, pitch, value as u8, width, height, run),
        2 => memset_box(dst, pitch, value as u16, width, height, run),
        4 => memset_box(dst, pitch, value, width, height, run),
        _ => Err(INVALID_VALUE),
    }
}

fn memset_box<T: Copy>(
    dst: CUdeviceptr,
    pitch: usize,
    value: T,
    width: usize,
    height: usize,
    run: Run,
) -> Result<(), CUresult> {
    let size = std::mem::size_of::<T>();
    // Element sizes are powers of two (1, 2, 4); rows must stay aligned too.
    let misaligned = |v: u64| v & (size as u64 - 1) != 0;
    if misaligned(dst) || (height > 1 && misaligned(pitch as u64)) {
        return Err(INVALID_VALUE);
    }
    let row = width.checked_mul(size).ok_or(INVALID_VALUE)?;
    if height > 1 && pitch < row {
        return Err(INVALID_VALUE);
    }
    if width == 0 || height == 0 {
        return Ok(());
    }
    let span = span(pitch, row, height, 1, 0)?;
    let heap = HEAP.read();
    heap.check_range(dst, span, Access::Write)?;
    if run == Run::CheckOnly {
        return Ok(());
    }
    timed(|| {
        for y in 0..height {
            let p = dst as usize + y * pitch;
            // SAFETY: every row lies inside the checked, writable, aligned
            // range (lock held), and no Rust reference aliases device memory.
            let s = unsafe { std::slice::from_raw_parts_mut(p as *mut T, width) };
            s.fill(value);
        }
    });
    Ok(())
}

// ---- peer copies ------------------------------------------------------------

/// Every device shares one address space here: a peer copy is a
/// device-to-device copy between two valid contexts, with or without peer
/// access enabled (the real driver stages it through the host then).
pub fn copy_peer(
    dst: CUdeviceptr,
    _dst_ctx: Live<Context>,
    src: CUdeviceptr,
    _src_ctx: Live<Context>,
    n: usize,
    order: Order,
) -> Result<(), CUresult> {
    copy_dtod(dst, src, n, order)
}

// ---- 2D and 3D copies -------------------------------------------------------

/// Bytes from the first to the last byte touched by `depth` slices of
/// `height` rows of `row` bytes, rows `pitch` apart and slices
/// `slice_pitch` apart.
fn span(
    pitch: usize,
    row: usize,
    height: usize,
    depth: usize,
    slice_pitch: usize,
) -> Result<usize, CUresult> {
    let last_slice = (depth - 1).checked_mul(slice_pitch);
    let last_row = (height - 1).checked_mul(pitch);
    last_slice
        .zip(last_row)
        .and_then(|(a, b)| a.checked_add(b))
        .and_then(|v| v.checked_add(row))
        .ok_or(INVALID_VALUE)
}

/// One side of a 2D/3D copy, resolved to an address.
struct Side {
    base: usize,
    pitch: usize,
    /// Rows per slice (3D only).
    height: usize,
    /// Device memory (checked against the table) or host memory (trusted,
    /// as every host pointer is).
    device: bool,
}

/// One side of a descriptor, as the application wrote it.
struct Desc {
    kind: CUmemorytype,
    host: usize,
    device: CUdeviceptr,
    x: usize,
    y: usize,
    z: usize,
    pitch: usize,
    height: usize,
}

fn side(d: Desc) -> Result<Side, CUresult> {
    let (base, is_device) = match d.kind {
        CUmemorytype::CU_MEMORYTYPE_HOST => (d.host, false),
        CUmemorytype::CU_MEMORYTYPE_DEVICE => (d.device as usize, true),
        // Unified: a device address if the table knows it, host otherwise.
        CUmemorytype::CU_MEMORYTYPE_UNIFIED => {
            (d.device as usize, HEAP.read().is_tracked(d.device as usize))
        }
        // CUDA arrays are not emulated.
        CUmemorytype::CU_MEMORYTYPE_ARRAY => return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED),
        _ => return Err(INVALID_VALUE),
    };
    if base == 0 {
        return Err(INVALID_VALUE);
    }
    let offset =
        d.z.checked_mul(d.height)
            .and_then(|r| r.checked_add(d.y))
            .and_then(|r| r.checked_mul(d.pitch))
            .and_then(|b| b.checked_add(d.x))
            .ok_or(INVALID_VALUE)?;
    Ok(Side {
        base: base.checked_add(offset).ok_or(INVALID_VALUE)?,
        pitch: d.pitch,
        height: d.height,
        device: is_device,
    })
}

/// Copies a `width` x `height` x `depth` box between two resolved sides.
fn copy_box(
    src: &Side,
    dst: &Side,
    width: usize,
    height: usize,
    depth: usize,
    run: Run,
) -> Result<(), CUresult> {
    if width == 0 || height == 0 || depth == 0 {
        return Ok(());
    }
    let max_pitch =
        profile::attribute(cuda_types::cuda::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_PITCH)?
            as usize;
    for s in [src, dst] {
        // Rows of a multi-row copy may not overlap each other.
        if (height > 1 || depth > 1) && s.pitch < width {
            return Err(INVALID_VALUE);
        }
        if depth > 1 && s.height < height {
            return Err(INVALID_VALUE);
        }
        if s.device && s.pitch > max_pitch {
            return Err(INVALID_VALUE);
        }
    }
    let slice = |s: &Side| s.pitch.checked_mul(s.height).ok_or(INVALID_VALUE);
    let (src_slice, dst_slice) = (slice(src)?, slice(dst)?);
    let heap = HEAP.read();
    if src.device {
        let n = span(src.pitch, width, height, depth, src_slice)?;
        heap.check_range(src.base as CUdeviceptr, n, Access::Read)?;
    }
    if dst.device {
        let n = span(dst.pitch, width, height, depth, dst_slice)?;
        heap.check_range(dst.base as CUdeviceptr, n, Access::Write)?;
    }
    if run == Run::CheckOnly {
        return Ok(());
    }
    let contiguous = |s: &Side| s.pitch == width && (depth == 1 || s.height == height);
    timed(|| {
        if contiguous(src) && contiguous(dst) {
            // SAFETY: both boxes are one run of width*height*depth bytes,
            // checked above (device sides, lock held) or vouched for by the
            // caller (host sides); `copy` is memmove.
            unsafe {
                std::ptr::copy(
                    src.base as *const u8,
                    dst.base as *mut u8,
                    width * height * depth,
                )
            };
            return;
        }
        for z in 0..depth {
            for y in 0..height {
                let s = src.base + z * src_slice + y * src.pitch;
                let d = dst.base + z * dst_slice + y * dst.pitch;
                // SAFETY: each row lies inside its side's box, checked above
                // (device) or vouched for by the caller (host).
                unsafe { std::ptr::copy(s as *const u8, d as *mut u8, width) };
            }
        }
    });
    Ok(())
}

/// `cuMemcpy2D` (and `Unaligned`: alignment is never needed here) and its
/// async form.
pub fn copy_2d(p: In<CUDA_MEMCPY2D>, _order: Order) -> Result<(), CUresult> {
    let c = p.read();
    let src = side(Desc {
        kind: c.srcMemoryType,
        host: c.srcHost as usize,
        device: c.srcDevice,
        x: c.srcXInBytes,
        y: c.srcY,
        z: 0,
        pitch: c.srcPitch,
        height: c.Height,
    })?;
    let dst = side(Desc {
        kind: c.dstMemoryType,
        host: c.dstHost as usize,
        device: c.dstDevice,
        x: c.dstXInBytes,
        y: c.dstY,
        z: 0,
        pitch: c.dstPitch,
        height: c.Height,
    })?;
    current()?;
    copy_box(&src, &dst, c.WidthInBytes, c.Height, 1, Run::Yes)
}

pub fn copy_3d(p: In<CUDA_MEMCPY3D>, _order: Order) -> Result<(), CUresult> {
    copy_3d_desc(&p.read(), Run::Yes, true)
}

/// A `CUDA_MEMCPY3D` copy, or only its checks; `needs_context`: whether
/// the calling thread must have a usable context (the entry points), or
/// the caller vouched for one (graph nodes carry theirs).
pub(crate) fn copy_3d_desc(
    c: &CUDA_MEMCPY3D,
    run: Run,
    needs_context: bool,
) -> Result<(), CUresult> {
    // Mipmap levels only exist for arrays; the reserved fields must be NULL.
    if c.srcLOD != 0 || c.dstLOD != 0 || !c.reserved0.is_null() || !c.reserved1.is_null() {
        return Err(INVALID_VALUE);
    }
    let src = side(Desc {
        kind: c.srcMemoryType,
        host: c.srcHost as usize,
        device: c.srcDevice,
        x: c.srcXInBytes,
        y: c.srcY,
        z: c.srcZ,
        pitch: c.srcPitch,
        height: c.srcHeight,
    })?;
    let dst = side(Desc {
        kind: c.dstMemoryType,
        host: c.dstHost as usize,
        device: c.dstDevice,
        x: c.dstXInBytes,
        y: c.dstY,
        z: c.dstZ,
        pitch: c.dstPitch,
        height: c.dstHeight,
    })?;
    if needs_context {
        current()?;
    }
    copy_box(&src, &dst, c.WidthInBytes, c.Height, c.Depth, run)
}
