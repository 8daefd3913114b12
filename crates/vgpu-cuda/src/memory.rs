//! Device memory: allocation, free, memset and 1D copies, forwarded to the
//! host (which checks every range against the session's allocations) with
//! the guest's table ([`crate::devmem`]) kept in step.
//!
//! Copies carry at most [`COPY_CHUNK`] bytes per message, so a 256 MiB copy
//! is 32 calls and never one 256 MiB buffer. A copy of 0 bytes succeeds
//! without a round trip, as on the real driver. Guest ("host") memory is
//! plain process memory: copies read or write it directly, whatever
//! allocated it.
//!
//! The legacy 32-bit entry points (`cuMemAlloc`, `cuMemcpyHtoD` without
//! `_v2` ...) are served too: their arguments widen; an address that does
//! not fit their 32-bit result is refused with CUDA_ERROR_NOT_SUPPORTED.

use crate::check::{self, end_of, reject, INVALID_VALUE, NOT_SUPPORTED};
use crate::contexts;
use crate::devmem::{self, Kind, Range, Span};
use crate::driver;
use crate::stream::{self, Null};
use cuda_types::cuda::{CUcontext, CUdeviceptr, CUdeviceptr_v1, CUresult, CUstream};
use std::ffi::{c_uchar, c_uint, c_ushort, c_void};
use vgpu_guest::ffi::OutPtr;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    MemAlloc, MemAllocPitch, MemFree, MemGetInfo, MemcpyDtoD, MemcpyDtoH, MemcpyHtoD, Memset,
    OnStream, COPY_CHUNK,
};

// ---- copy plumbing shared with the 2D/3D and host-memory code ----

/// Whether a call must finish before the entry point returns, or is
/// ordered on a stream.
#[derive(Debug, Clone, Copy)]
pub enum When {
    Sync,
    Async(CUstream, Null),
}

/// Where a copy goes: the context, and whether it is stream-ordered on the
/// stream value the host receives (then it travels as the `...Async` op).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub ctx: u64,
    pub stream: u64,
    pub asynchronous: bool,
}

pub fn route(when: When) -> Result<Route, CUresult> {
    match when {
        When::Sync => {
            let (_, ctx) = check::current()?;
            Ok(Route {
                ctx,
                stream: 0,
                asynchronous: false,
            })
        }
        When::Async(h, null) => {
            let t = stream::target(h, null)?;
            Ok(Route {
                ctx: t.ctx_remote,
                stream: t.stream,
                asynchronous: true,
            })
        }
    }
}

impl Route {
    /// Sends a copy or memset: as the synchronous op, or ordered on the
    /// route's stream as its `...Async` twin when the app asked for stream
    /// order (the protocol's table says how each travels).
    pub fn send<C: OnStream>(&self, call: C) -> Result<C::Reply, CUresult> {
        if self.asynchronous {
            check::host(&call.on_stream(self.stream))
        } else {
            check::host(&call)
        }
    }
}

/// `(offset, len)` of each piece of a `total`-byte copy cut at `chunk`.
pub fn chunks(total: u64, chunk: u64) -> impl Iterator<Item = (u64, u64)> {
    let chunk = chunk.max(1);
    (0..total.div_ceil(chunk)).map(move |i| {
        let off = i * chunk;
        (off, chunk.min(total - off))
    })
}

/// A fast refusal for a device span the guest knows is wrong: one that
/// starts inside a known allocation and runs past its end, or wraps. Spans
/// starting in memory the guest does not know go to the host, which has
/// the final word (module globals, for one, are not all in the table).
pub fn check_device_span(ptr: u64, len: u64, what: &str) -> Result<(), CUresult> {
    end_of(ptr, len, what)?;
    if ptr == 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: NULL device pointer"),
        ));
    }
    match devmem::TABLE.read().span(ptr, len) {
        Span::Overrun { base, size } => Err(reject(
            INVALID_VALUE,
            format_args!(
                "{what}: {len} bytes at {ptr:#x} run past the allocation {base:#x}+{size}"
            ),
        )),
        Span::Inside | Span::Unknown => Ok(()),
    }
}

/// Guest bytes to device memory, chunked.
pub fn put(route: &Route, dst: u64, src: &[u8]) -> Result<(), CUresult> {
    for (off, len) in chunks(src.len() as u64, COPY_CHUNK) {
        let piece = &src[off as usize..(off + len) as usize];
        route.send(MemcpyHtoD {
            ctx: route.ctx,
            dst: dst + off,
            data: Bytes(piece.to_vec()),
        })?;
    }
    Ok(())
}

/// Device memory into guest bytes, chunked. The reply is the data, so this
/// waits even on a stream: a stream-ordered read completes before the
/// entry point returns, which is one valid schedule of it.
pub fn get(route: &Route, dst: &mut [u8], src: u64) -> Result<(), CUresult> {
    for (off, len) in chunks(dst.len() as u64, COPY_CHUNK) {
        let Bytes(data) = route.send(MemcpyDtoH {
            ctx: route.ctx,
            src: src + off,
            size: len,
        })?;
        if data.len() as u64 != len {
            return Err(reject(
                CUresult::CUDA_ERROR_UNKNOWN,
                format_args!(
                    "MemcpyDtoH: asked {len} bytes, the host sent {}",
                    data.len()
                ),
            ));
        }
        dst[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
    Ok(())
}

/// Device to device needs no payload, so it is one call whatever its size.
pub fn dtod(route: &Route, dst: u64, src: u64, len: u64) -> Result<(), CUresult> {
    route.send(MemcpyDtoD {
        ctx: route.ctx,
        dst,
        src,
        size: len,
    })
}

/// A guest buffer the application passed, as a slice.
///
/// # Safety
/// `p` must be valid for reading `len` bytes (the entry point's contract).
pub unsafe fn host_slice<'a>(p: *const c_void, len: u64, what: &str) -> Result<&'a [u8], CUresult> {
    if p.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: NULL host pointer"),
        ));
    }
    let len =
        usize::try_from(len).map_err(|_| reject(INVALID_VALUE, format_args!("{what}: size")))?;
    // SAFETY: non-null; the caller vouches for `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// # Safety
/// `p` must be valid for writing `len` bytes (the entry point's contract).
pub unsafe fn host_slice_mut<'a>(
    p: *mut c_void,
    len: u64,
    what: &str,
) -> Result<&'a mut [u8], CUresult> {
    if p.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: NULL host pointer"),
        ));
    }
    let len =
        usize::try_from(len).map_err(|_| reject(INVALID_VALUE, format_args!("{what}: size")))?;
    // SAFETY: non-null; the caller vouches for `len` writable bytes.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
}

// ---- 1D copies ----

unsafe fn htod(dst: u64, src: *const c_void, n: u64, when: When) -> Result<(), CUresult> {
    let route = route(when)?;
    if n == 0 {
        return Ok(());
    }
    check_device_span(dst, n, "cuMemcpyHtoD")?;
    // SAFETY: the caller's buffer holds n bytes (API contract).
    let src = unsafe { host_slice(src, n, "cuMemcpyHtoD")? };
    put(&route, dst, src)
}

unsafe fn dtoh(dst: *mut c_void, src: u64, n: u64, when: When) -> Result<(), CUresult> {
    let route = route(when)?;
    if n == 0 {
        return Ok(());
    }
    check_device_span(src, n, "cuMemcpyDtoH")?;
    // SAFETY: the caller's buffer holds n bytes (API contract).
    let dst = unsafe { host_slice_mut(dst, n, "cuMemcpyDtoH")? };
    get(&route, dst, src)
}

fn dtod_checked(dst: u64, src: u64, n: u64, when: When) -> Result<(), CUresult> {
    let route = route(when)?;
    if n == 0 {
        return Ok(());
    }
    check_device_span(src, n, "cuMemcpyDtoD source")?;
    check_device_span(dst, n, "cuMemcpyDtoD destination")?;
    dtod(&route, dst, src, n)
}

/// Unified addressing: an address in the device table is device memory,
/// anything else is this process's memory.
unsafe fn unified(dst: u64, src: u64, n: u64, when: When) -> Result<(), CUresult> {
    let route = route(when)?;
    if n == 0 {
        return Ok(());
    }
    match (devmem::is_device(dst), devmem::is_device(src)) {
        (true, true) => {
            check_device_span(src, n, "cuMemcpy source")?;
            check_device_span(dst, n, "cuMemcpy destination")?;
            dtod(&route, dst, src, n)
        }
        (true, false) => {
            check_device_span(dst, n, "cuMemcpy destination")?;
            // SAFETY: a guest address the app passed with n bytes behind it.
            let s = unsafe { host_slice(src as *const c_void, n, "cuMemcpy")? };
            put(&route, dst, s)
        }
        (false, true) => {
            check_device_span(src, n, "cuMemcpy source")?;
            // SAFETY: a guest address the app passed with n bytes behind it.
            let d = unsafe { host_slice_mut(dst as *mut c_void, n, "cuMemcpy")? };
            get(&route, d, src)
        }
        (false, false) => {
            if dst == 0 || src == 0 {
                return Err(reject(
                    INVALID_VALUE,
                    format_args!("cuMemcpy: NULL pointer"),
                ));
            }
            // SAFETY: both are guest buffers of n bytes (API contract);
            // `copy` tolerates overlap.
            unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, n as usize) };
            Ok(())
        }
    }
}

pub unsafe fn memcpy(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { unified(dst, src, n as u64, When::Sync) }
}

pub unsafe fn memcpy_async(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    s: CUstream,
    null: Null,
) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { unified(dst, src, n as u64, When::Async(s, null)) }
}

pub unsafe fn htod_v2(dst: CUdeviceptr, src: *const c_void, n: usize) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { htod(dst, src, n as u64, When::Sync) }
}

pub unsafe fn htod_v1(dst: CUdeviceptr_v1, src: *const c_void, n: c_uint) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { htod(dst.into(), src, n.into(), When::Sync) }
}

pub unsafe fn htod_async_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
    s: CUstream,
    null: Null,
) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { htod(dst, src, n as u64, When::Async(s, null)) }
}

pub unsafe fn htod_async_v1(
    dst: CUdeviceptr_v1,
    src: *const c_void,
    n: c_uint,
    s: CUstream,
) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { htod(dst.into(), src, n.into(), When::Async(s, Null::Legacy)) }
}

pub unsafe fn dtoh_v2(dst: *mut c_void, src: CUdeviceptr, n: usize) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { dtoh(dst, src, n as u64, When::Sync) }
}

pub unsafe fn dtoh_v1(dst: *mut c_void, src: CUdeviceptr_v1, n: c_uint) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { dtoh(dst, src.into(), n.into(), When::Sync) }
}

pub unsafe fn dtoh_async_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    n: usize,
    s: CUstream,
    null: Null,
) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { dtoh(dst, src, n as u64, When::Async(s, null)) }
}

pub unsafe fn dtoh_async_v1(
    dst: *mut c_void,
    src: CUdeviceptr_v1,
    n: c_uint,
    s: CUstream,
) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { dtoh(dst, src.into(), n.into(), When::Async(s, Null::Legacy)) }
}

pub fn dtod_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> Result<(), CUresult> {
    dtod_checked(dst, src, n as u64, When::Sync)
}

pub fn dtod_v1(dst: CUdeviceptr_v1, src: CUdeviceptr_v1, n: c_uint) -> Result<(), CUresult> {
    dtod_checked(dst.into(), src.into(), n.into(), When::Sync)
}

pub fn dtod_async_v2(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    s: CUstream,
    null: Null,
) -> Result<(), CUresult> {
    dtod_checked(dst, src, n as u64, When::Async(s, null))
}

pub fn dtod_async_v1(
    dst: CUdeviceptr_v1,
    src: CUdeviceptr_v1,
    n: c_uint,
    s: CUstream,
) -> Result<(), CUresult> {
    dtod_checked(
        dst.into(),
        src.into(),
        n.into(),
        When::Async(s, Null::Legacy),
    )
}

/// Peer copies: every device of a session sits behind one host driver with
/// unified addressing, so a copy between contexts is a device-to-device
/// copy in the destination's context.
fn peer(
    dst: u64,
    dst_ctx: CUcontext,
    src: u64,
    src_ctx: CUcontext,
    n: u64,
    when: When,
) -> Result<(), CUresult> {
    driver::get()?;
    let d = contexts::lookup(dst_ctx)?;
    let s = contexts::lookup(src_ctx)?;
    let d_remote = d.remote()?;
    s.remote()?;
    let mut route = route(when)?;
    if matches!(when, When::Sync) {
        route.ctx = d_remote;
    }
    if n == 0 {
        return Ok(());
    }
    check_device_span(src, n, "cuMemcpyPeer source")?;
    check_device_span(dst, n, "cuMemcpyPeer destination")?;
    dtod(&route, dst, src, n)
}

pub fn peer_sync(
    dst: CUdeviceptr,
    dc: CUcontext,
    src: CUdeviceptr,
    sc: CUcontext,
    n: usize,
) -> Result<(), CUresult> {
    peer(dst, dc, src, sc, n as u64, When::Sync)
}

pub fn peer_async(
    dst: CUdeviceptr,
    dc: CUcontext,
    src: CUdeviceptr,
    sc: CUcontext,
    n: usize,
    s: CUstream,
    null: Null,
) -> Result<(), CUresult> {
    peer(dst, dc, src, sc, n as u64, When::Async(s, null))
}

// ---- memset ----

/// `height` rows of `width` elements of `elem` bytes, rows `pitch` apart.
fn memset(
    dst: u64,
    pitch: u64,
    value: u32,
    elem: u32,
    width: u64,
    height: u64,
    when: When,
) -> Result<(), CUresult> {
    let route = route(when)?;
    if width == 0 || height == 0 {
        return Ok(());
    }
    let what = "cuMemset";
    let row = width.checked_mul(elem.into()).ok_or_else(|| {
        reject(
            INVALID_VALUE,
            format_args!("{what}: width {width} overflows"),
        )
    })?;
    let elem64 = u64::from(elem);
    if !dst.is_multiple_of(elem64) || (height > 1 && !pitch.is_multiple_of(elem64)) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: {dst:#x} (pitch {pitch}) is not {elem}-byte aligned"),
        ));
    }
    if height > 1 && pitch < row {
        return Err(reject(
            INVALID_VALUE,
            format_args!("{what}: pitch {pitch} < row {row}"),
        ));
    }
    let span = (height - 1)
        .checked_mul(pitch)
        .and_then(|v| v.checked_add(row))
        .ok_or_else(|| reject(INVALID_VALUE, format_args!("{what}: extent overflows")))?;
    check_device_span(dst, span, what)?;
    route.send(Memset {
        ctx: route.ctx,
        dst,
        pitch: if height > 1 { pitch } else { row },
        value,
        elem_size: elem,
        width,
        height,
    })
}

/// The 1D and 2D memsets of one element size, synchronous or (with the
/// stream and its NULL convention after the C arguments) stream-ordered.
macro_rules! memset_entry_points {
    (@when) => { When::Sync };
    (@when $s:ident, $null:ident) => { When::Async($s, $null) };
    ($($name:ident, $name2d:ident, $value:ty, $elem:literal $(, $s:ident, $null:ident)?);* $(;)?) => {$(
        pub fn $name(dst: CUdeviceptr, v: $value, n: usize $(, $s: CUstream, $null: Null)?) -> Result<(), CUresult> {
            let when = memset_entry_points!(@when $($s, $null)?);
            memset(dst, 0, u32::from(v), $elem, n as u64, 1, when)
        }
        pub fn $name2d(dst: CUdeviceptr, pitch: usize, v: $value, w: usize, h: usize $(, $s: CUstream, $null: Null)?) -> Result<(), CUresult> {
            let when = memset_entry_points!(@when $($s, $null)?);
            memset(dst, pitch as u64, u32::from(v), $elem, w as u64, h as u64, when)
        }
    )*};
}

memset_entry_points! {
    memset_d8, memset_d2d8, c_uchar, 1;
    memset_d16, memset_d2d16, c_ushort, 2;
    memset_d32, memset_d2d32, c_uint, 4;
    memset_d8_async, memset_d2d8_async, c_uchar, 1, s, null;
    memset_d16_async, memset_d2d16_async, c_ushort, 2, s, null;
    memset_d32_async, memset_d2d32_async, c_uint, 4, s, null;
}

pub fn memset_d8_v1(dst: CUdeviceptr_v1, v: c_uchar, n: c_uint) -> Result<(), CUresult> {
    memset(dst.into(), 0, v.into(), 1, n.into(), 1, When::Sync)
}

pub fn memset_d16_v1(dst: CUdeviceptr_v1, v: c_ushort, n: c_uint) -> Result<(), CUresult> {
    memset(dst.into(), 0, v.into(), 2, n.into(), 1, When::Sync)
}

pub fn memset_d32_v1(dst: CUdeviceptr_v1, v: c_uint, n: c_uint) -> Result<(), CUresult> {
    memset(dst.into(), 0, v, 4, n.into(), 1, When::Sync)
}

pub fn memset_d2d8_v1(
    dst: CUdeviceptr_v1,
    p: c_uint,
    v: c_uchar,
    w: c_uint,
    h: c_uint,
) -> Result<(), CUresult> {
    memset(
        dst.into(),
        p.into(),
        v.into(),
        1,
        w.into(),
        h.into(),
        When::Sync,
    )
}

pub fn memset_d2d16_v1(
    dst: CUdeviceptr_v1,
    p: c_uint,
    v: c_ushort,
    w: c_uint,
    h: c_uint,
) -> Result<(), CUresult> {
    memset(
        dst.into(),
        p.into(),
        v.into(),
        2,
        w.into(),
        h.into(),
        When::Sync,
    )
}

pub fn memset_d2d32_v1(
    dst: CUdeviceptr_v1,
    p: c_uint,
    v: c_uint,
    w: c_uint,
    h: c_uint,
) -> Result<(), CUresult> {
    memset(dst.into(), p.into(), v, 4, w.into(), h.into(), When::Sync)
}

// ---- allocation ----

/// A 64-bit address for a legacy 32-bit result.
fn narrow(v: u64, what: &str) -> Result<u32, CUresult> {
    u32::try_from(v).map_err(|_| {
        reject(
            NOT_SUPPORTED,
            format_args!("{what}: {v:#x} does not fit the legacy 32-bit interface"),
        )
    })
}

fn alloc(size: u64) -> Result<u64, CUresult> {
    let (ctx, remote) = check::current()?;
    if size == 0 {
        return Err(reject(INVALID_VALUE, format_args!("cuMemAlloc: 0 bytes")));
    }
    let ptr = check::host(&MemAlloc { ctx: remote, size })?;
    let device = ctx.device;
    devmem::record(Range::new(ptr, size, Kind::Alloc, Some(ctx), device));
    Ok(ptr)
}

pub unsafe fn alloc_v2(dptr: *mut CUdeviceptr, size: usize) -> Result<(), CUresult> {
    driver::get()?;
    if dptr.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemAlloc: NULL out-pointer"),
        ));
    }
    let p = alloc(size as u64)?;
    // SAFETY: checked non-null; writable by API contract.
    unsafe { dptr.write_or(p, INVALID_VALUE) }
}

pub unsafe fn alloc_v1(dptr: *mut CUdeviceptr_v1, size: c_uint) -> Result<(), CUresult> {
    driver::get()?;
    if dptr.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemAlloc: NULL out-pointer"),
        ));
    }
    let p = alloc(size.into())?;
    let small = narrow(p, "cuMemAlloc").inspect_err(|_| {
        let _ = free(p);
    })?;
    // SAFETY: checked non-null; writable by API contract.
    unsafe { dptr.write_or(small, INVALID_VALUE) }
}

fn alloc_pitch(width: u64, height: u64, elem: u32) -> Result<(u64, u64), CUresult> {
    let (ctx, remote) = check::current()?;
    if width == 0 || height == 0 || !matches!(elem, 4 | 8 | 16) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemAllocPitch: {width}x{height}, element size {elem}"),
        ));
    }
    let (ptr, pitch) = check::host(&MemAllocPitch {
        ctx: remote,
        width,
        height,
        elem_size: elem,
    })?;
    let size = pitch.saturating_mul(height);
    let device = ctx.device;
    devmem::record(Range::new(ptr, size, Kind::Alloc, Some(ctx), device));
    Ok((ptr, pitch))
}

pub unsafe fn alloc_pitch_v2(
    dptr: *mut CUdeviceptr,
    pitch: *mut usize,
    w: usize,
    h: usize,
    elem: c_uint,
) -> Result<(), CUresult> {
    driver::get()?;
    if dptr.is_null() || pitch.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemAllocPitch: NULL out-pointer"),
        ));
    }
    let (p, pt) = alloc_pitch(w as u64, h as u64, elem)?;
    // SAFETY: both checked non-null; writable by API contract.
    unsafe {
        dptr.write_or(p, INVALID_VALUE)?;
        pitch.write_or(pt as usize, INVALID_VALUE)
    }
}

pub unsafe fn alloc_pitch_v1(
    dptr: *mut CUdeviceptr_v1,
    pitch: *mut c_uint,
    w: c_uint,
    h: c_uint,
    elem: c_uint,
) -> Result<(), CUresult> {
    driver::get()?;
    if dptr.is_null() || pitch.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemAllocPitch: NULL out-pointer"),
        ));
    }
    let (p, pt) = alloc_pitch(w.into(), h.into(), elem)?;
    let small = narrow(p, "cuMemAllocPitch").inspect_err(|_| {
        let _ = free(p);
    })?;
    // SAFETY: both checked non-null; writable by API contract.
    unsafe {
        dptr.write_or(small, INVALID_VALUE)?;
        pitch.write_or(pt as c_uint, INVALID_VALUE)
    }
}

/// Takes the allocation out of the table first, so racing frees of one
/// pointer send one MemFree and the loser gets INVALID_VALUE; a refusal by
/// the host puts it back.
pub fn free(ptr: u64) -> Result<(), CUresult> {
    driver::get()?;
    if ptr == 0 {
        return Ok(());
    }
    let taken = devmem::take_base(ptr, |r| matches!(r.kind, Kind::Alloc | Kind::Async { .. }));
    let Some(range) = taken else {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemFree: {ptr:#x} is not the start of a live allocation"),
        ));
    };
    let ctx = match range.ctx.as_ref().map(|c| c.remote()) {
        Some(Ok(h)) => h,
        _ => check::current()?.1,
    };
    check::host(&MemFree { ctx, ptr }).inspect_err(|_| devmem::record(range.clone()))
}

pub fn free_v2(ptr: CUdeviceptr) -> Result<(), CUresult> {
    free(ptr)
}

pub fn free_v1(ptr: CUdeviceptr_v1) -> Result<(), CUresult> {
    free(ptr.into())
}

/// Answered from the table: it holds every range the host handed out.
fn address_range(ptr: u64) -> Result<(u64, u64), CUresult> {
    check::current()?;
    devmem::find(ptr).map(|r| (r.base, r.size)).ok_or_else(|| {
        reject(
            CUresult::CUDA_ERROR_NOT_FOUND,
            format_args!("cuMemGetAddressRange: {ptr:#x} is in no allocation"),
        )
    })
}

pub unsafe fn get_address_range_v2(
    base: *mut CUdeviceptr,
    size: *mut usize,
    ptr: CUdeviceptr,
) -> Result<(), CUresult> {
    let (b, s) = address_range(ptr)?;
    // SAFETY: API contract: each output is writable or null (both optional).
    unsafe {
        if !base.is_null() {
            base.write_or(b, INVALID_VALUE)?;
        }
        if !size.is_null() {
            size.write_or(s as usize, INVALID_VALUE)?;
        }
    }
    Ok(())
}

pub unsafe fn get_address_range_v1(
    base: *mut CUdeviceptr_v1,
    size: *mut c_uint,
    ptr: CUdeviceptr_v1,
) -> Result<(), CUresult> {
    let (b, s) = address_range(ptr.into())?;
    let b = narrow(b, "cuMemGetAddressRange")?;
    // SAFETY: API contract: each output is writable or null (both optional).
    unsafe {
        if !base.is_null() {
            base.write_or(b, INVALID_VALUE)?;
        }
        if !size.is_null() {
            size.write_or(s.min(c_uint::MAX.into()) as c_uint, INVALID_VALUE)?;
        }
    }
    Ok(())
}

/// A context is gone on the host (destroyed, reset, last primary release)
/// and took its allocations and streams with it; the guest forgets them
/// too, so their addresses stop counting as device memory.
pub fn context_gone(ctx: &std::sync::Arc<contexts::Context>) {
    devmem::forget_context(ctx);
    stream::forget_context(ctx);
}

// ---- cuMemGetInfo ----

/// `(free, total)` of the current context's device, as the host reports it
/// (its quota, if one applies, is already the total).
fn mem_info() -> Result<(u64, u64), CUresult> {
    driver::get()?;
    let (_, remote) = contexts::current_remote()?;
    driver::call(&MemGetInfo { ctx: remote })
}

pub unsafe fn get_info_v2(free: *mut usize, total: *mut usize) -> Result<(), CUresult> {
    if free.is_null() || total.is_null() {
        driver::get()?;
        return Err(INVALID_VALUE);
    }
    let (f, t) = mem_info()?;
    // SAFETY: both checked non-null; writable by API contract.
    unsafe {
        free.write_or(f as usize, INVALID_VALUE)?;
        total.write_or(t as usize, INVALID_VALUE)
    }
}

/// The 32-bit original; values saturate so a big device never looks full.
pub unsafe fn get_info(free: *mut c_uint, total: *mut c_uint) -> Result<(), CUresult> {
    if free.is_null() || total.is_null() {
        driver::get()?;
        return Err(INVALID_VALUE);
    }
    let (f, t) = mem_info()?;
    let clamp = |v: u64| v.min(c_uint::MAX as u64) as c_uint;
    // SAFETY: both checked non-null; writable by API contract.
    unsafe {
        free.write_or(clamp(f), INVALID_VALUE)?;
        total.write_or(clamp(t), INVALID_VALUE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking() {
        let c: Vec<_> = chunks(0, COPY_CHUNK).collect();
        assert!(c.is_empty());
        assert_eq!(chunks(1, COPY_CHUNK).collect::<Vec<_>>(), [(0, 1)]);
        assert_eq!(
            chunks(4097, 4096).collect::<Vec<_>>(),
            [(0, 4096), (4096, 1)]
        );
        let big: Vec<_> = chunks(256 << 20, COPY_CHUNK).collect();
        assert_eq!(big.len(), 32);
        assert!(big.iter().all(|&(_, l)| l == COPY_CHUNK));
        assert_eq!(big.last().unwrap().0, 248 << 20);
        let odd: Vec<_> = chunks(COPY_CHUNK * 2 + 3, COPY_CHUNK).collect();
        assert_eq!(
            odd,
            [
                (0, COPY_CHUNK),
                (COPY_CHUNK, COPY_CHUNK),
                (2 * COPY_CHUNK, 3)
            ]
        );
        // Pieces tile the copy exactly.
        for total in [1u64, 7, 8, 9, 63, 64, 65] {
            let v: Vec<_> = chunks(total, 8).collect();
            assert_eq!(v.iter().map(|p| p.1).sum::<u64>(), total);
            assert!(v.windows(2).all(|w| w[0].0 + w[0].1 == w[1].0));
        }
    }

    #[test]
    fn narrowing() {
        assert_eq!(narrow(0xffff_ffff, "t"), Ok(0xffff_ffff));
        assert_eq!(narrow(0x1_0000_0000, "t"), Err(NOT_SUPPORTED));
    }
}
