//! Device memory: allocation, free, memset and 1D copies, forwarded to the
//! host (which checks every range against the session's allocations) with
//! the guest's table ([`crate::devmem`]) kept in step.
//!
//! Copies go in pieces of at most `COPY_CHUNK` bytes, pipelined and
//! without a copy of their own in the guest (`vgpu_transport::bulk`;
//! through the shared-memory region on a Unix socket), so a 256 MiB copy
//! never makes one 256 MiB buffer nor waits 32 round trips. A copy of 0
//! bytes succeeds without a round trip, as on the real driver. Guest ("host") memory is
//! plain process memory: copies read or write it directly, whatever
//! allocated it.
//!
//! Each family has one body for all its exports: the legacy 32-bit entry
//! points (`cuMemAlloc`, `cuMemcpyHtoD` without `_v2` ...) widen their
//! arguments ([`Wide`]) and write results at their width ([`Word`]; an
//! address that does not fit is refused with CUDA_ERROR_NOT_SUPPORTED);
//! synchronous and stream-ordered forms differ in a [`When`]; `_ptds`/
//! `_ptsz` forms in a [`Null`].

use crate::args::{Live, Wide, Word};
use crate::capture::{self, Sink};
use crate::check::{self, end_of, reject, INVALID_VALUE, NOT_SUPPORTED};
use crate::context::state::{self, Context};
use crate::copy2d;
use crate::devmem::{self, Kind, Range, Span};
use crate::driver;
use crate::stream::{self, Null, StreamArg};
use cuda_types::cuda::{CUmemorytype, CUresult, CUstream};
use std::ffi::{c_uint, c_void};
use vgpu_ffi::{FromCuda, Out};
use vgpu_guest::log::Level;
use vgpu_guest::vlog;
use vgpu_transport::proto::{
    MemAlloc, MemAllocPitch, MemFree, MemGetInfo, MemcpyDtoD, MemcpyPeer, Memset, OnStream,
};

// ---- copy plumbing shared with the 2D/3D and host-memory code ----

/// Whether a call must finish before the entry point returns, or is
/// ordered on a stream. An `...Async` export's `CUstream` argument converts
/// to `Async`; the synchronous exports pass [`When::Sync`] as a constant
/// in its place.
#[derive(Clone)]
pub enum When {
    Sync,
    Async(StreamArg),
}

impl FromCuda<CUstream, CUresult> for When {
    unsafe fn from_cuda(h: CUstream) -> Result<Self, CUresult> {
        StreamArg::resolve(h).map(When::Async)
    }
}

/// Where a copy goes: the context, and whether it is stream-ordered on the
/// stream value the host receives (then it travels as the `...Async` op)
/// — or, when that stream is capturing, into the capture as a node.
#[derive(Clone)]
pub struct Route {
    pub ctx: u64,
    pub stream: u64,
    pub asynchronous: bool,
    pub capture: Option<Sink>,
}

/// `null` says what a NULL stream means at the entry point. A synchronous
/// call passes the capture rules for calls outside streams
/// ([`capture::sync_work`]); a stream-ordered one finds out whether its
/// stream captures ([`capture::check`]).
pub fn route(when: &When, null: Null) -> Result<Route, CUresult> {
    match when {
        When::Sync => {
            let (ctx_obj, ctx) = check::current()?;
            capture::sync_work(&ctx_obj, null, "synchronous copy or memset")?;
            Ok(Route {
                ctx,
                stream: 0,
                asynchronous: false,
                capture: None,
            })
        }
        When::Async(s) => {
            let t = stream::target(s, null)?;
            let capture = capture::check(&t)?;
            Ok(Route {
                ctx: t.ctx_remote,
                stream: t.stream,
                asynchronous: true,
                capture,
            })
        }
    }
}

/// A 1D copy in a capture: a memcpy node (`None` outside captures).
fn captured(
    route: &Route,
    dst: (CUmemorytype, u64),
    src: (CUmemorytype, u64),
    n: u64,
) -> Option<Result<(), CUresult>> {
    copy2d::capture_copy(route, &copy2d::desc_1d(dst, src, n))
}

const HOST: CUmemorytype = CUmemorytype::CU_MEMORYTYPE_HOST;
const DEVICE: CUmemorytype = CUmemorytype::CU_MEMORYTYPE_DEVICE;
const UNIFIED: CUmemorytype = CUmemorytype::CU_MEMORYTYPE_UNIFIED;

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

/// A bulk transfer on the connection (pieces pipelined, through shared
/// memory where there is some: `vgpu_transport::bulk`), its failure as
/// the CUresult the application sees.
fn bulk(
    what: &str,
    f: impl FnOnce(&mut vgpu_transport::Client) -> Result<(), vgpu_transport::CallError>,
) -> Result<(), CUresult> {
    vgpu_guest::client::bulk(f).map_err(|e| {
        let code = driver::to_cuda(e);
        vlog!(Level::Debug, "{what}: CUresult {}", code.0);
        code
    })
}

/// Guest bytes to device memory, in pipelined pieces.
pub fn put(route: &Route, dst: u64, src: &[u8]) -> Result<(), CUresult> {
    let stream = route.asynchronous.then_some(route.stream);
    bulk("copy to the device", |c| c.put(route.ctx, stream, dst, src))
}

/// Device memory into guest bytes, in pipelined pieces. The replies are
/// the data, so this waits even on a stream: a stream-ordered read
/// completes before the entry point returns, which is one valid schedule
/// of it.
pub fn get(route: &Route, dst: &mut [u8], src: u64) -> Result<(), CUresult> {
    let stream = route.asynchronous.then_some(route.stream);
    bulk("copy from the device", |c| {
        c.get(route.ctx, stream, dst, src)
    })
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
//
// Each body serves its copy's plain, `_v2`, `_v2_ptds` and `Async` forms.

/// `cuMemcpyHtoD*`.
///
/// # Safety
/// `src` holds `n` readable bytes (API contract).
pub unsafe fn memcpy_htod(
    dst: Wide,
    src: *const c_void,
    n: Wide,
    when: When,
    null: Null,
) -> Result<(), CUresult> {
    let (dst, n) = (dst.0, n.0);
    let route = route(&when, null)?;
    if n == 0 {
        return Ok(());
    }
    check_device_span(dst, n, "cuMemcpyHtoD")?;
    // SAFETY: the caller's buffer holds n bytes (API contract).
    let src = unsafe { host_slice(src, n, "cuMemcpyHtoD")? };
    if let Some(r) = captured(&route, (DEVICE, dst), (HOST, src.as_ptr() as u64), n) {
        return r;
    }
    put(&route, dst, src)
}

/// `cuMemcpyDtoH*`.
///
/// # Safety
/// `dst` holds `n` writable bytes (API contract).
pub unsafe fn memcpy_dtoh(
    dst: *mut c_void,
    src: Wide,
    n: Wide,
    when: When,
    null: Null,
) -> Result<(), CUresult> {
    let (src, n) = (src.0, n.0);
    let route = route(&when, null)?;
    if n == 0 {
        return Ok(());
    }
    check_device_span(src, n, "cuMemcpyDtoH")?;
    // SAFETY: the caller's buffer holds n bytes (API contract).
    let dst = unsafe { host_slice_mut(dst, n, "cuMemcpyDtoH")? };
    if let Some(r) = captured(&route, (HOST, dst.as_ptr() as u64), (DEVICE, src), n) {
        return r;
    }
    get(&route, dst, src)
}

/// `cuMemcpyDtoD*`.
pub fn memcpy_dtod(dst: Wide, src: Wide, n: Wide, when: When, null: Null) -> Result<(), CUresult> {
    let (dst, src, n) = (dst.0, src.0, n.0);
    let route = route(&when, null)?;
    if n == 0 {
        return Ok(());
    }
    check_device_span(src, n, "cuMemcpyDtoD source")?;
    check_device_span(dst, n, "cuMemcpyDtoD destination")?;
    if let Some(r) = captured(&route, (DEVICE, dst), (DEVICE, src), n) {
        return r;
    }
    dtod(&route, dst, src, n)
}

/// `cuMemcpy[Async]`, with unified addressing: an address in the device
/// table is device memory, anything else is this process's memory.
///
/// # Safety
/// A guest address holds `n` bytes, readable (source) or writable
/// (destination), per the API contract.
pub unsafe fn memcpy(
    dst: Wide,
    src: Wide,
    n: Wide,
    when: When,
    null: Null,
) -> Result<(), CUresult> {
    let (dst, src, n) = (dst.0, src.0, n.0);
    let route = route(&when, null)?;
    if n == 0 {
        return Ok(());
    }
    if route.capture.is_some() {
        if dst == 0 || src == 0 {
            return Err(reject(
                INVALID_VALUE,
                format_args!("cuMemcpy: NULL pointer"),
            ));
        }
        if let Some(r) = captured(&route, (UNIFIED, dst), (UNIFIED, src), n) {
            return r;
        }
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

/// `cuMemcpyPeer[Async]`: the host's driver copies between the two
/// contexts (which may be on different devices), issued in the current
/// context or ordered on the stream. In a capture it is a device-to-device
/// memcpy node: every device of a session sits behind one host driver with
/// unified addressing.
#[allow(clippy::too_many_arguments)]
pub fn memcpy_peer(
    dst: Wide,
    dst_ctx: Live<Context>,
    src: Wide,
    src_ctx: Live<Context>,
    n: Wide,
    when: When,
    null: Null,
) -> Result<(), CUresult> {
    let (dst, src, n) = (dst.0, src.0, n.0);
    let d_remote = dst_ctx.remote()?;
    let s_remote = src_ctx.remote()?;
    let route = route(&when, null)?;
    if n == 0 {
        return Ok(());
    }
    check_device_span(src, n, "cuMemcpyPeer source")?;
    check_device_span(dst, n, "cuMemcpyPeer destination")?;
    if let Some(r) = captured(&route, (DEVICE, dst), (DEVICE, src), n) {
        return r;
    }
    route.send(MemcpyPeer {
        ctx: route.ctx,
        dst,
        dst_ctx: d_remote,
        src,
        src_ctx: s_remote,
        size: n,
    })
}

// ---- memset ----

/// A memset's value, with its element size from the export's C type
/// (`unsigned char`, `short`, `int`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    value: u32,
    elem: u32,
}

impl FromCuda<u8, CUresult> for Fill {
    unsafe fn from_cuda(v: u8) -> Result<Self, CUresult> {
        Ok(Fill {
            value: v.into(),
            elem: 1,
        })
    }
}

impl FromCuda<u16, CUresult> for Fill {
    unsafe fn from_cuda(v: u16) -> Result<Self, CUresult> {
        Ok(Fill {
            value: v.into(),
            elem: 2,
        })
    }
}

impl FromCuda<u32, CUresult> for Fill {
    unsafe fn from_cuda(value: u32) -> Result<Self, CUresult> {
        Ok(Fill { value, elem: 4 })
    }
}

/// `cuMemsetD{8,16,32}[_v2][_ptds]` and their `Async[_ptsz]` forms: one
/// row of `n` elements.
pub fn memset_1d(dst: Wide, fill: Fill, n: Wide, when: When, null: Null) -> Result<(), CUresult> {
    memset_2d(dst, Wide(0), fill, n, Wide(1), when, null)
}

/// `cuMemsetD2D{8,16,32}[_v2][_ptds]` and their `Async[_ptsz]` forms:
/// `height` rows of `width` elements, rows `pitch` bytes apart.
pub fn memset_2d(
    dst: Wide,
    pitch: Wide,
    fill: Fill,
    width: Wide,
    height: Wide,
    when: When,
    null: Null,
) -> Result<(), CUresult> {
    let (dst, pitch, width, height) = (dst.0, pitch.0, width.0, height.0);
    let Fill { value, elem } = fill;
    let route = route(&when, null)?;
    if width == 0 || height == 0 {
        return Ok(());
    }
    let pitch = memset_extent(dst, pitch, elem, width, height, "cuMemset")?;
    if let Some(sink) = &route.capture {
        let f = crate::graph::node::Fill {
            dst,
            pitch,
            value,
            elem,
            width,
            height,
            ctx: sink.context().clone(),
        };
        return sink.add(crate::graph::node::Op::Memset(f));
    }
    route.send(Memset {
        ctx: route.ctx,
        dst,
        pitch,
        value,
        elem_size: elem,
        width,
        height,
    })
}

/// Checks a memset's shape: `elem`-aligned destination (and pitch, for
/// more than one row), a pitch of at least a row, inside its allocation as
/// far as the guest knows. Returns the pitch the host gets: the row's
/// width for one row.
pub fn memset_extent(
    dst: u64,
    pitch: u64,
    elem: u32,
    width: u64,
    height: u64,
    what: &str,
) -> Result<u64, CUresult> {
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
    Ok(if height > 1 { pitch } else { row })
}

// ---- allocation ----

/// A 64-bit address for a result of the export's width: a legacy 32-bit
/// one refuses what it cannot hold.
fn narrow<P: Word>(v: u64, what: &str) -> Result<P, CUresult> {
    P::exact(v).ok_or_else(|| {
        reject(
            NOT_SUPPORTED,
            format_args!("{what}: {v:#x} does not fit the legacy 32-bit interface"),
        )
    })
}

fn alloc_bytes(size: u64) -> Result<u64, CUresult> {
    let (ctx, remote) = check::current()?;
    capture::unsafe_call("cuMemAlloc")?;
    if size == 0 {
        return Err(reject(INVALID_VALUE, format_args!("cuMemAlloc: 0 bytes")));
    }
    let ptr = check::host(&MemAlloc { ctx: remote, size })?;
    let device = ctx.device;
    devmem::record(Range::new(ptr, size, Kind::Alloc, Some(ctx), device));
    Ok(ptr)
}

/// `cuMemAlloc[_v2]`. An allocation the 32-bit form cannot return is freed
/// again.
pub fn alloc<P: Word>(dptr: Out<P>, size: Wide) -> Result<(), CUresult> {
    let p = alloc_bytes(size.0)?;
    let p = narrow(p, "cuMemAlloc").inspect_err(|_| {
        let _ = free(Wide(p));
    })?;
    dptr.write(p);
    Ok(())
}

/// `cuMemAllocPitch[_v2]`.
pub fn alloc_pitch<P: Word, Q: Word>(
    dptr: Out<P>,
    pitch: Out<Q>,
    width: Wide,
    height: Wide,
    elem: c_uint,
) -> Result<(), CUresult> {
    let (width, height) = (width.0, height.0);
    let (ctx, remote) = check::current()?;
    capture::unsafe_call("cuMemAllocPitch")?;
    if width == 0 || height == 0 || !matches!(elem, 4 | 8 | 16) {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemAllocPitch: {width}x{height}, element size {elem}"),
        ));
    }
    let (ptr, pt) = check::host(&MemAllocPitch {
        ctx: remote,
        width,
        height,
        elem_size: elem,
    })?;
    let size = pt.saturating_mul(height);
    let device = ctx.device;
    devmem::record(Range::new(ptr, size, Kind::Alloc, Some(ctx), device));
    let p = narrow(ptr, "cuMemAllocPitch").inspect_err(|_| {
        let _ = free(Wide(ptr));
    })?;
    dptr.write(p);
    pitch.write(Q::saturating(pt));
    Ok(())
}

/// `cuMemFree[_v2]`. Takes the allocation out of the table first, so
/// racing frees of one pointer send one MemFree and the loser gets
/// INVALID_VALUE; a refusal by the host puts it back.
pub fn free(ptr: Wide) -> Result<(), CUresult> {
    let ptr = ptr.0;
    if ptr == 0 {
        return Ok(());
    }
    capture::unsafe_call("cuMemFree")?;
    if crate::graph::mem::free_outside(ptr) {
        // Graph memory stays with its graph; freeing it outside a graph
        // only ends this launch's use of it.
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

/// `cuMemGetAddressRange[_v2]`, answered from the table: it holds every
/// range the host handed out. Either output may be NULL; a base the 32-bit
/// form cannot hold is refused, a size saturates.
pub fn get_address_range<B: Word, S: Word>(
    base: Option<Out<B>>,
    size: Option<Out<S>>,
    ptr: Wide,
) -> Result<(), CUresult> {
    let ptr = ptr.0;
    check::current()?;
    let (b, s) = devmem::find(ptr).map(|r| (r.base, r.size)).ok_or_else(|| {
        reject(
            CUresult::CUDA_ERROR_NOT_FOUND,
            format_args!("cuMemGetAddressRange: {ptr:#x} is in no allocation"),
        )
    })?;
    let b = narrow(b, "cuMemGetAddressRange")?;
    if let Some(out) = base {
        out.write(b);
    }
    if let Some(out) = size {
        out.write(S::saturating(s));
    }
    Ok(())
}

/// A context is gone on the host (destroyed, reset, last primary release)
/// and took its allocations and streams with it; the guest forgets them
/// too, so their addresses stop counting as device memory.
pub fn context_gone(ctx: &std::sync::Arc<Context>) {
    devmem::forget_context(ctx);
    stream::forget_context(ctx);
}

// ---- cuMemGetInfo ----

/// `cuMemGetInfo[_v2]`: `(free, total)` of the current context's device,
/// as the host reports it (its quota, if one applies, is already the
/// total). The 32-bit form saturates, so a big device never looks full.
pub fn get_info<T: Word>(free: Out<T>, total: Out<T>) -> Result<(), CUresult> {
    let (_, remote) = state::current_remote()?;
    let (f, t) = driver::call(&MemGetInfo { ctx: remote })?;
    free.write(T::saturating(f));
    total.write(T::saturating(t));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu_transport::proto::COPY_CHUNK;

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
        assert_eq!(narrow::<u32>(0xffff_ffff, "t"), Ok(0xffff_ffff));
        assert_eq!(narrow::<u32>(0x1_0000_0000, "t"), Err(NOT_SUPPORTED));
        assert_eq!(narrow::<u64>(0x1_0000_0000, "t"), Ok(0x1_0000_0000));
    }

    #[test]
    fn fill_sizes_come_from_the_c_type() {
        let fill = |f: Result<Fill, CUresult>| f.map(|f| (f.value, f.elem));
        // SAFETY: plain integers.
        unsafe {
            assert_eq!(fill(vgpu_ffi::from_cuda(0xabu8)), Ok((0xab, 1)));
            assert_eq!(fill(vgpu_ffi::from_cuda(0xabcdu16)), Ok((0xabcd, 2)));
            assert_eq!(fill(vgpu_ffi::from_cuda(7u32)), Ok((7, 4)));
        }
    }
}
