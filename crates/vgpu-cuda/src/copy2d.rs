//! `cuMemcpy2D*` and `cuMemcpy3D*` between guest and device memory.
//!
//! Rows travel packed: a 2D copy to or from the device sends only
//! `width` bytes per row (never the pitch gaps), as many rows per message
//! as fit in [`COPY_CHUNK`]. A row wider than a chunk goes as 1D chunks. A
//! 3D copy is one 2D copy per slice. CUDA arrays are not remoted: a copy
//! naming one is CUDA_ERROR_NOT_SUPPORTED.
//!
//! The descriptor argument converts to its `_v2` layout ([`Desc2D`],
//! [`Desc3D`]), the legacy 32-bit descriptors widened, so every form of a
//! copy (plain, `_v2`, `_ptds`, `Async`, `Unaligned`) has one body.

use crate::check::{self, reject, INVALID_VALUE, NOT_SUPPORTED};
use crate::devmem;
use crate::memory::{self, chunks, route, Route, When};
use crate::stream::Null;
use cuda_types::cuda::{
    CUDA_MEMCPY2D_v1, CUDA_MEMCPY3D_v1, CUarray, CUmemorytype, CUresult, CUDA_MEMCPY2D,
    CUDA_MEMCPY3D,
};
use std::ffi::c_void;
use vgpu_ffi::FromCuda;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{Memcpy2DDtoD, Memcpy2DDtoH, Memcpy2DHtoD, COPY_CHUNK};

/// Where one side of a copy starts (its x, y and z already applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mem {
    Host(usize),
    Device(u64),
}

#[derive(Debug, Clone, Copy)]
struct Side {
    mem: Mem,
    pitch: u64,
}

impl Side {
    fn at(self, delta: u64) -> Mem {
        match self.mem {
            Mem::Host(p) => Mem::Host(p + delta as usize),
            Mem::Device(p) => Mem::Device(p + delta),
        }
    }
}

/// One side of a copy as the descriptor gives it.
struct Desc {
    ty: CUmemorytype,
    host: usize,
    device: u64,
    array: CUarray,
    /// Byte offset of the first element: x + (z * height + y) * pitch.
    offset: u64,
    pitch: u64,
}

fn side(d: &Desc, what: &str) -> Result<Side, CUresult> {
    let mem = match d.ty {
        CUmemorytype::CU_MEMORYTYPE_HOST => Mem::Host(d.host),
        CUmemorytype::CU_MEMORYTYPE_DEVICE => Mem::Device(d.device),
        CUmemorytype::CU_MEMORYTYPE_UNIFIED if devmem::is_device(d.device) => Mem::Device(d.device),
        CUmemorytype::CU_MEMORYTYPE_UNIFIED => Mem::Host(d.device as usize),
        CUmemorytype::CU_MEMORYTYPE_ARRAY => {
            return Err(reject(
                NOT_SUPPORTED,
                format_args!(
                    "{what}: CUDA arrays ({:p}) are not supported by vgpu",
                    d.array
                ),
            ))
        }
        t => {
            return Err(reject(
                INVALID_VALUE,
                format_args!("{what}: memory type {}", t.0),
            ))
        }
    };
    let mem = match mem {
        Mem::Host(0) | Mem::Device(0) => {
            return Err(reject(INVALID_VALUE, format_args!("{what}: NULL pointer")))
        }
        Mem::Host(p) => Mem::Host(
            p.checked_add(d.offset as usize)
                .ok_or_else(|| reject(INVALID_VALUE, format_args!("{what}: offset overflows")))?,
        ),
        Mem::Device(p) => Mem::Device(
            p.checked_add(d.offset)
                .ok_or_else(|| reject(INVALID_VALUE, format_args!("{what}: offset overflows")))?,
        ),
    };
    Ok(Side {
        mem,
        pitch: d.pitch,
    })
}

/// `x + (z * height + y) * pitch`, or INVALID_VALUE on overflow.
fn offset(x: u64, y: u64, z: u64, height: u64, pitch: u64) -> Result<u64, CUresult> {
    z.checked_mul(height)
        .and_then(|r| r.checked_add(y))
        .and_then(|r| r.checked_mul(pitch))
        .and_then(|r| r.checked_add(x))
        .ok_or_else(|| {
            reject(
                INVALID_VALUE,
                format_args!("cuMemcpy2D/3D: offset overflows"),
            )
        })
}

/// How many bytes a `height`-row copy spans with this pitch.
fn extent(pitch: u64, width: u64, height: u64) -> Result<u64, CUresult> {
    (height - 1)
        .checked_mul(pitch)
        .and_then(|v| v.checked_add(width))
        .ok_or_else(|| reject(INVALID_VALUE, format_args!("cuMemcpy2D: extent overflows")))
}

/// Rows of `width` bytes per message, or `None` when one row alone is
/// larger than a chunk (it then goes as 1D pieces).
fn rows_per_message(width: u64, chunk: u64) -> Option<u64> {
    (width <= chunk).then(|| chunk / width.max(1))
}

/// Gathers `rows` rows of `width` bytes, `pitch` apart, into one buffer.
///
/// # Safety
/// `base` must be readable for `(rows - 1) * pitch + width` bytes.
unsafe fn pack(base: *const u8, pitch: usize, width: usize, rows: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(width * rows);
    for r in 0..rows {
        // SAFETY: row r lies within the extent the caller vouched for.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(base.add(r * pitch), width) });
    }
    out
}

/// Scatters packed rows back out, `pitch` apart.
///
/// # Safety
/// `base` must be writable for `(rows - 1) * pitch + width` bytes, with
/// `rows = packed.len() / width`.
unsafe fn unpack(packed: &[u8], base: *mut u8, pitch: usize, width: usize) {
    for (r, row) in packed.chunks_exact(width).enumerate() {
        // SAFETY: row r lies within the extent the caller vouched for.
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), base.add(r * pitch), width) };
    }
}

struct Copy2D {
    src: Side,
    dst: Side,
    width: u64,
    height: u64,
}

/// # Safety
/// Host sides must be valid for the extent the descriptor describes (the
/// entry point's contract).
unsafe fn run(c: &Copy2D, route: &Route, what: &str) -> Result<(), CUresult> {
    let (w, h) = (c.width, c.height);
    if w == 0 || h == 0 {
        return Ok(());
    }
    if h > 1 && (c.src.pitch < w || c.dst.pitch < w) {
        return Err(reject(
            INVALID_VALUE,
            format_args!(
                "{what}: pitch ({}, {}) below width {w}",
                c.src.pitch, c.dst.pitch
            ),
        ));
    }
    let src_extent = extent(c.src.pitch, w, h)?;
    let dst_extent = extent(c.dst.pitch, w, h)?;
    let (wu, sp, dp) = (w as usize, c.src.pitch as usize, c.dst.pitch as usize);
    match (c.src.mem, c.dst.mem) {
        (Mem::Host(s), Mem::Host(d)) => {
            check::end_of(s as u64, src_extent, what)?;
            check::end_of(d as u64, dst_extent, what)?;
            for r in 0..h as usize {
                // SAFETY: both rows lie within extents the app vouched for.
                unsafe { std::ptr::copy((s + r * sp) as *const u8, (d + r * dp) as *mut u8, wu) };
            }
            Ok(())
        }
        (Mem::Host(s), Mem::Device(d)) => {
            check::end_of(s as u64, src_extent, what)?;
            memory::check_device_span(d, dst_extent, what)?;
            let Some(per) = rows_per_message(w, COPY_CHUNK) else {
                for r in 0..h {
                    // SAFETY: row r of the source extent.
                    let row = unsafe {
                        memory::host_slice((s + r as usize * sp) as *const c_void, w, what)?
                    };
                    memory::put(route, d + r * c.dst.pitch, row)?;
                }
                return Ok(());
            };
            for (row0, rows) in chunks(h, per) {
                // SAFETY: rows row0.. of the source extent.
                let data =
                    unsafe { pack((s + row0 as usize * sp) as *const u8, sp, wu, rows as usize) };
                route.send(Memcpy2DHtoD {
                    ctx: route.ctx,
                    dst: d + row0 * c.dst.pitch,
                    dst_pitch: c.dst.pitch,
                    width: w,
                    height: rows,
                    data: Bytes(data),
                })?;
            }
            Ok(())
        }
        (Mem::Device(s), Mem::Host(d)) => {
            memory::check_device_span(s, src_extent, what)?;
            check::end_of(d as u64, dst_extent, what)?;
            let Some(per) = rows_per_message(w, COPY_CHUNK) else {
                for r in 0..h {
                    // SAFETY: row r of the destination extent.
                    let row = unsafe {
                        memory::host_slice_mut((d + r as usize * dp) as *mut c_void, w, what)?
                    };
                    memory::get(route, row, s + r * c.src.pitch)?;
                }
                return Ok(());
            };
            for (row0, rows) in chunks(h, per) {
                let Bytes(data) = route.send(Memcpy2DDtoH {
                    ctx: route.ctx,
                    src: s + row0 * c.src.pitch,
                    src_pitch: c.src.pitch,
                    width: w,
                    height: rows,
                })?;
                if data.len() as u64 != w * rows {
                    return Err(reject(
                        CUresult::CUDA_ERROR_UNKNOWN,
                        format_args!(
                            "Memcpy2DDtoH: asked {} bytes, the host sent {}",
                            w * rows,
                            data.len()
                        ),
                    ));
                }
                // SAFETY: rows row0.. of the destination extent.
                unsafe { unpack(&data, (d + row0 as usize * dp) as *mut u8, dp, wu) };
            }
            Ok(())
        }
        (Mem::Device(s), Mem::Device(d)) => {
            memory::check_device_span(s, src_extent, what)?;
            memory::check_device_span(d, dst_extent, what)?;
            route.send(Memcpy2DDtoD {
                ctx: route.ctx,
                dst: d,
                dst_pitch: c.dst.pitch,
                src: s,
                src_pitch: c.src.pitch,
                width: w,
                height: h,
            })
        }
    }
}

/// A 2D copy descriptor, in the `_v2` layout.
pub struct Desc2D(CUDA_MEMCPY2D);

/// A 3D copy descriptor, in the `_v2` layout.
pub struct Desc3D(pub CUDA_MEMCPY3D);

/// Reads the application's descriptor.
///
/// # Safety
/// `p` must be null or point to a readable `T`.
unsafe fn read<T: Copy>(p: *const T, what: &str) -> Result<T, CUresult> {
    if p.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: NULL descriptor"),
        ));
    }
    // SAFETY: non-null; readable by API contract.
    Ok(unsafe { p.read_unaligned() })
}

impl FromCuda<*const CUDA_MEMCPY2D, CUresult> for Desc2D {
    unsafe fn from_cuda(p: *const CUDA_MEMCPY2D) -> Result<Self, CUresult> {
        // SAFETY: forwarded caller contract.
        unsafe { read(p, "cuMemcpy2D") }.map(Desc2D)
    }
}

impl FromCuda<*const CUDA_MEMCPY2D_v1, CUresult> for Desc2D {
    unsafe fn from_cuda(p: *const CUDA_MEMCPY2D_v1) -> Result<Self, CUresult> {
        // SAFETY: forwarded caller contract.
        let p = unsafe { read(p, "cuMemcpy2D") }?;
        Ok(Desc2D(CUDA_MEMCPY2D {
            srcXInBytes: p.srcXInBytes as usize,
            srcY: p.srcY as usize,
            srcMemoryType: p.srcMemoryType,
            srcHost: p.srcHost,
            srcDevice: p.srcDevice.into(),
            srcArray: p.srcArray,
            srcPitch: p.srcPitch as usize,
            dstXInBytes: p.dstXInBytes as usize,
            dstY: p.dstY as usize,
            dstMemoryType: p.dstMemoryType,
            dstHost: p.dstHost,
            dstDevice: p.dstDevice.into(),
            dstArray: p.dstArray,
            dstPitch: p.dstPitch as usize,
            WidthInBytes: p.WidthInBytes as usize,
            Height: p.Height as usize,
        }))
    }
}

impl FromCuda<*const CUDA_MEMCPY3D, CUresult> for Desc3D {
    unsafe fn from_cuda(p: *const CUDA_MEMCPY3D) -> Result<Self, CUresult> {
        // SAFETY: forwarded caller contract.
        unsafe { read(p, "cuMemcpy3D") }.map(Desc3D)
    }
}

impl FromCuda<*const CUDA_MEMCPY3D_v1, CUresult> for Desc3D {
    unsafe fn from_cuda(p: *const CUDA_MEMCPY3D_v1) -> Result<Self, CUresult> {
        // SAFETY: forwarded caller contract.
        let p = unsafe { read(p, "cuMemcpy3D") }?;
        Ok(Desc3D(CUDA_MEMCPY3D {
            srcXInBytes: p.srcXInBytes as usize,
            srcY: p.srcY as usize,
            srcZ: p.srcZ as usize,
            srcLOD: p.srcLOD as usize,
            srcMemoryType: p.srcMemoryType,
            srcHost: p.srcHost,
            srcDevice: p.srcDevice.into(),
            srcArray: p.srcArray,
            reserved0: p.reserved0,
            srcPitch: p.srcPitch as usize,
            srcHeight: p.srcHeight as usize,
            dstXInBytes: p.dstXInBytes as usize,
            dstY: p.dstY as usize,
            dstZ: p.dstZ as usize,
            dstLOD: p.dstLOD as usize,
            dstMemoryType: p.dstMemoryType,
            dstHost: p.dstHost,
            dstDevice: p.dstDevice.into(),
            dstArray: p.dstArray,
            reserved1: p.reserved1,
            dstPitch: p.dstPitch as usize,
            dstHeight: p.dstHeight as usize,
            WidthInBytes: p.WidthInBytes as usize,
            Height: p.Height as usize,
            Depth: p.Depth as usize,
        }))
    }
}

/// `cuMemcpy2D*` and `cuMemcpy2DUnaligned*` (every copy here is done
/// unaligned).
///
/// # Safety
/// Host sides of the descriptor are valid for the extent it describes
/// (API contract).
pub unsafe fn memcpy2d(p: Desc2D, when: When, null: Null) -> Result<(), CUresult> {
    let p = &p.0;
    let what = "cuMemcpy2D";
    let route = route(&when, null)?;
    let src = side(
        &Desc {
            ty: p.srcMemoryType,
            host: p.srcHost as usize,
            device: p.srcDevice,
            array: p.srcArray,
            offset: offset(p.srcXInBytes as u64, p.srcY as u64, 0, 0, p.srcPitch as u64)?,
            pitch: p.srcPitch as u64,
        },
        what,
    )?;
    let dst = side(
        &Desc {
            ty: p.dstMemoryType,
            host: p.dstHost as usize,
            device: p.dstDevice,
            array: p.dstArray,
            offset: offset(p.dstXInBytes as u64, p.dstY as u64, 0, 0, p.dstPitch as u64)?,
            pitch: p.dstPitch as u64,
        },
        what,
    )?;
    let c = Copy2D {
        src,
        dst,
        width: p.WidthInBytes as u64,
        height: p.Height as u64,
    };
    if c.width > 0 && c.height > 0 {
        if let Some(r) = capture_copy(&route, &desc_from_2d(p)) {
            return r;
        }
    }
    // SAFETY: host sides come from the app's descriptor (its contract).
    unsafe { run(&c, &route, what) }
}

/// A 3D copy, validated and resolved: where each side starts, the
/// extents, and how far apart slices are. What `cuMemcpy3D*` runs and what
/// a graph memcpy node keeps.
#[derive(Debug, Clone, Copy)]
pub struct Plan3D {
    src: Side,
    dst: Side,
    width: u64,
    height: u64,
    depth: u64,
    /// Bytes between slices on each side.
    src_slice: u64,
    dst_slice: u64,
}

/// A device-to-device 3D copy as the host runs it (offsets applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCopy {
    pub dst: u64,
    pub dst_pitch: u64,
    pub dst_height: u64,
    pub src: u64,
    pub src_pitch: u64,
    pub src_height: u64,
    pub width: u64,
    pub height: u64,
    pub depth: u64,
}

/// Checks and resolves a 3D copy descriptor (`what` names the caller in
/// log lines). A copy with a zero extent is an empty plan, checked no
/// further, as `cuMemcpy3D` does nothing for it.
pub fn plan3d(p: &CUDA_MEMCPY3D, what: &str) -> Result<Plan3D, CUresult> {
    if p.srcLOD != 0 || p.dstLOD != 0 || !p.reserved0.is_null() || !p.reserved1.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: LOD or reserved fields set"),
        ));
    }
    let (w, h, depth) = (p.WidthInBytes as u64, p.Height as u64, p.Depth as u64);
    let empty = Side {
        mem: Mem::Host(0),
        pitch: 0,
    };
    if w == 0 || h == 0 || depth == 0 {
        return Ok(Plan3D {
            src: empty,
            dst: empty,
            width: 0,
            height: 0,
            depth: 0,
            src_slice: 0,
            dst_slice: 0,
        });
    }
    if depth > 1 && (p.srcHeight < p.Height || p.dstHeight < p.Height) {
        return Err(reject(
            INVALID_VALUE,
            format_args!(
                "{what}: slice heights ({}, {}) below height {h}",
                p.srcHeight, p.dstHeight
            ),
        ));
    }
    let (sp, dp) = (p.srcPitch as u64, p.dstPitch as u64);
    let src = side(
        &Desc {
            ty: p.srcMemoryType,
            host: p.srcHost as usize,
            device: p.srcDevice,
            array: p.srcArray,
            offset: offset(
                p.srcXInBytes as u64,
                p.srcY as u64,
                p.srcZ as u64,
                p.srcHeight as u64,
                sp,
            )?,
            pitch: sp,
        },
        what,
    )?;
    let dst = side(
        &Desc {
            ty: p.dstMemoryType,
            host: p.dstHost as usize,
            device: p.dstDevice,
            array: p.dstArray,
            offset: offset(
                p.dstXInBytes as u64,
                p.dstY as u64,
                p.dstZ as u64,
                p.dstHeight as u64,
                dp,
            )?,
            pitch: dp,
        },
        what,
    )?;
    Ok(Plan3D {
        src,
        dst,
        width: w,
        height: h,
        depth,
        src_slice: sp * p.srcHeight as u64,
        dst_slice: dp * p.dstHeight as u64,
    })
}

impl Plan3D {
    /// Nothing to copy.
    pub fn is_empty(&self) -> bool {
        self.width == 0 || self.height == 0 || self.depth == 0
    }

    /// The copy, when both sides are device memory.
    pub fn device(&self) -> Option<DeviceCopy> {
        let (Mem::Device(src), Mem::Device(dst)) = (self.src.mem, self.dst.mem) else {
            return None;
        };
        // One row needs no pitch; a single slice no slice height.
        let pitch = |p: u64| {
            if self.height > 1 || self.depth > 1 {
                p
            } else {
                self.width
            }
        };
        let slice_rows = |slice: u64, p: u64| {
            if self.depth > 1 && p > 0 {
                slice / p
            } else {
                self.height
            }
        };
        Some(DeviceCopy {
            dst,
            dst_pitch: pitch(self.dst.pitch),
            dst_height: slice_rows(self.dst_slice, self.dst.pitch),
            src,
            src_pitch: pitch(self.src.pitch),
            src_height: slice_rows(self.src_slice, self.src.pitch),
            width: self.width,
            height: self.height,
            depth: self.depth,
        })
    }

    /// "Host" or "Device" for each side (DOT labels).
    pub fn sides(&self) -> (&'static str, &'static str) {
        let name = |m: Mem| match m {
            Mem::Host(_) => "Host",
            Mem::Device(_) => "Device",
        };
        (name(self.src.mem), name(self.dst.mem))
    }

    /// Runs the copy on `route`, one 2D copy per slice.
    ///
    /// # Safety
    /// Host sides are valid for the extent the descriptor described (the
    /// API contract of the call, or of the graph node, that made it).
    pub unsafe fn run(&self, route: &Route, what: &str) -> Result<(), CUresult> {
        if self.is_empty() {
            return Ok(());
        }
        let (sp, dp) = (self.src.pitch, self.dst.pitch);
        for z in 0..self.depth {
            let c = Copy2D {
                src: Side {
                    mem: self.src.at(z * self.src_slice),
                    pitch: sp,
                },
                dst: Side {
                    mem: self.dst.at(z * self.dst_slice),
                    pitch: dp,
                },
                width: self.width,
                height: self.height,
            };
            // SAFETY: forwarded contract.
            unsafe { run(&c, route, what)? };
        }
        Ok(())
    }
}

/// A 2D copy descriptor as the one-slice 3D copy it is.
pub fn desc_from_2d(p: &CUDA_MEMCPY2D) -> CUDA_MEMCPY3D {
    CUDA_MEMCPY3D {
        srcXInBytes: p.srcXInBytes,
        srcY: p.srcY,
        srcZ: 0,
        srcLOD: 0,
        srcMemoryType: p.srcMemoryType,
        srcHost: p.srcHost,
        srcDevice: p.srcDevice,
        srcArray: p.srcArray,
        reserved0: std::ptr::null_mut(),
        srcPitch: p.srcPitch,
        srcHeight: p.Height,
        dstXInBytes: p.dstXInBytes,
        dstY: p.dstY,
        dstZ: 0,
        dstLOD: 0,
        dstMemoryType: p.dstMemoryType,
        dstHost: p.dstHost,
        dstDevice: p.dstDevice,
        dstArray: p.dstArray,
        reserved1: std::ptr::null_mut(),
        dstPitch: p.dstPitch,
        dstHeight: p.Height,
        WidthInBytes: p.WidthInBytes,
        Height: p.Height,
        Depth: 1,
    }
}

/// A 1D copy of `n` bytes as a descriptor (a capture's memcpy node):
/// `src`/`dst` are device addresses or guest pointers as their memory
/// types say.
pub fn desc_1d(dst: (CUmemorytype, u64), src: (CUmemorytype, u64), n: u64) -> CUDA_MEMCPY3D {
    let host = |(t, a): (CUmemorytype, u64)| {
        if t == CUmemorytype::CU_MEMORYTYPE_HOST {
            a as usize as *mut c_void
        } else {
            std::ptr::null_mut()
        }
    };
    let device = |(t, a): (CUmemorytype, u64)| {
        if t == CUmemorytype::CU_MEMORYTYPE_HOST {
            0
        } else {
            a
        }
    };
    CUDA_MEMCPY3D {
        srcXInBytes: 0,
        srcY: 0,
        srcZ: 0,
        srcLOD: 0,
        srcMemoryType: src.0,
        srcHost: host(src),
        srcDevice: device(src),
        srcArray: std::ptr::null_mut(),
        reserved0: std::ptr::null_mut(),
        srcPitch: n as usize,
        srcHeight: 1,
        dstXInBytes: 0,
        dstY: 0,
        dstZ: 0,
        dstLOD: 0,
        dstMemoryType: dst.0,
        dstHost: host(dst),
        dstDevice: device(dst),
        dstArray: std::ptr::null_mut(),
        reserved1: std::ptr::null_mut(),
        dstPitch: n as usize,
        dstHeight: 1,
        WidthInBytes: n as usize,
        Height: 1,
        Depth: 1,
    }
}

/// In a capture, a copy becomes a memcpy node in the capture's context.
pub fn capture_copy(route: &Route, desc: &CUDA_MEMCPY3D) -> Option<Result<(), CUresult>> {
    let sink = route.capture.as_ref()?;
    Some(
        crate::graph::node::copy_from(desc, sink.context().clone())
            .and_then(|c| sink.add(crate::graph::node::Op::Memcpy(c))),
    )
}

/// `cuMemcpy3D*`.
///
/// # Safety
/// As [`memcpy2d`].
pub unsafe fn memcpy3d(p: Desc3D, when: When, null: Null) -> Result<(), CUresult> {
    let what = "cuMemcpy3D";
    let route = route(&when, null)?;
    let plan = plan3d(&p.0, what)?;
    if plan.is_empty() {
        return Ok(());
    }
    if let Some(r) = capture_copy(&route, &p.0) {
        return r;
    }
    // SAFETY: host sides come from the app's descriptor (its contract).
    unsafe { plan.run(&route, what) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_per_message_math() {
        assert_eq!(rows_per_message(1, COPY_CHUNK), Some(COPY_CHUNK));
        assert_eq!(rows_per_message(1000, 4096), Some(4));
        assert_eq!(rows_per_message(4096, 4096), Some(1));
        assert_eq!(rows_per_message(4097, 4096), None);
        // A 4 KiB-wide, 4096-row copy: 2 messages of 8 MiB.
        let per = rows_per_message(4096, COPY_CHUNK).unwrap();
        assert_eq!(chunks(4096, per).count(), 2);
    }

    #[test]
    fn pack_and_unpack_rows() {
        // 3 rows of 4 bytes at pitch 6.
        let src: Vec<u8> = (0..18).collect();
        // SAFETY: (3 - 1) * 6 + 4 = 16 <= 18 bytes.
        let packed = unsafe { pack(src.as_ptr(), 6, 4, 3) };
        assert_eq!(packed, [0, 1, 2, 3, 6, 7, 8, 9, 12, 13, 14, 15]);
        let mut dst = vec![0xffu8; 15];
        // SAFETY: (3 - 1) * 5 + 4 = 14 <= 15 bytes.
        unsafe { unpack(&packed, dst.as_mut_ptr(), 5, 4) };
        assert_eq!(
            dst,
            [0, 1, 2, 3, 0xff, 6, 7, 8, 9, 0xff, 12, 13, 14, 15, 0xff]
        );
    }

    #[test]
    fn offsets_and_extents() {
        assert_eq!(offset(3, 2, 0, 0, 100), Ok(203));
        assert_eq!(offset(3, 2, 4, 10, 100), Ok(4203));
        assert_eq!(offset(0, 1, 0, 0, u64::MAX), Ok(u64::MAX));
        assert_eq!(offset(1, 1, 0, 0, u64::MAX), Err(INVALID_VALUE));
        assert_eq!(extent(100, 10, 1), Ok(10));
        assert_eq!(extent(100, 10, 3), Ok(210));
    }

    #[test]
    fn host_to_host_with_pitches() {
        let src: Vec<u8> = (0..40).collect();
        let mut dst = vec![0u8; 30];
        let c = Copy2D {
            src: Side {
                mem: Mem::Host(src.as_ptr() as usize + 1),
                pitch: 10,
            },
            dst: Side {
                mem: Mem::Host(dst.as_mut_ptr() as usize),
                pitch: 7,
            },
            width: 5,
            height: 4,
        };
        let route = Route {
            ctx: 0,
            stream: 0,
            asynchronous: false,
            capture: None,
        };
        // SAFETY: both extents lie within the vectors.
        unsafe { run(&c, &route, "t").unwrap() };
        assert_eq!(&dst[0..5], &[1, 2, 3, 4, 5]);
        assert_eq!(&dst[7..12], &[11, 12, 13, 14, 15]);
        assert_eq!(&dst[21..26], &[31, 32, 33, 34, 35]);
        assert_eq!(dst[5], 0);
        let bad = Copy2D {
            src: Side {
                mem: Mem::Host(src.as_ptr() as usize),
                pitch: 4,
            },
            ..c
        };
        // SAFETY: refused before any access.
        assert_eq!(unsafe { run(&bad, &route, "t") }, Err(INVALID_VALUE));
    }

    #[test]
    fn arrays_are_not_supported() {
        let d = Desc {
            ty: CUmemorytype::CU_MEMORYTYPE_ARRAY,
            host: 0,
            device: 0,
            array: std::ptr::null_mut(),
            offset: 0,
            pitch: 0,
        };
        assert_eq!(side(&d, "t").err(), Some(NOT_SUPPORTED));
        let d = Desc {
            ty: CUmemorytype(9),
            ..d
        };
        assert_eq!(side(&d, "t").err(), Some(INVALID_VALUE));
        let d = Desc {
            ty: CUmemorytype::CU_MEMORYTYPE_UNIFIED,
            host: 0,
            device: 0x1234,
            offset: 4,
            ..d
        };
        // Not in the device table: guest memory.
        assert_eq!(side(&d, "t").unwrap().mem, Mem::Host(0x1238));
    }
}
