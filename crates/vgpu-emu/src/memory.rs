//! Device and pinned host memory.
//!
//! Device memory is anonymous host memory mapped with MAP_NORESERVE, so an
//! 80 GiB device fits on a much smaller machine until pages are touched, and
//! the device pointer is the host address (the interpreter dereferences it
//! directly). Every range an application passes is checked against the
//! allocation table before any byte moves.

use crate::context::current;
use crate::ffi::write_out;
use crate::{profile, sensors, stream};
use cuda_types::cuda::{CUdeviceptr, CUresult, CUstream};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::ffi::{c_uchar, c_uint, c_ushort, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const OUT_OF_MEMORY: CUresult = CUresult::CUDA_ERROR_OUT_OF_MEMORY;

/// The driver hands out device memory in 2 MiB pages; accounting in the same
/// unit makes cuMemGetInfo move the way it does on a real board.
const GRANULE: usize = 2 * 1024 * 1024;
const PAGE: usize = 4096;
/// What allocations may use: the board's total less the driver's own share.
pub const CAPACITY: u64 = profile::TOTAL_MEMORY - profile::RESERVED_MEMORY;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Device,
    PinnedHost,
}

struct Allocation {
    /// What the application asked for: the valid range.
    len: usize,
    /// What is mapped and accounted.
    mapped: usize,
    ctx: u64,
    kind: Kind,
}

#[derive(Default)]
struct Heap {
    by_start: BTreeMap<usize, Allocation>,
}

static HEAP: Lazy<Mutex<Heap>> = Lazy::new(Default::default);
/// Device bytes accounted, readable without the heap lock (NVML, sensors).
static DEVICE_BYTES: AtomicU64 = AtomicU64::new(0);

pub fn device_bytes_in_use() -> u64 {
    DEVICE_BYTES.load(Ordering::Relaxed)
}

fn round_up(n: usize, to: usize) -> Option<usize> {
    n.checked_add(to - 1).map(|v| v / to * to)
}

fn map(len: usize, noreserve: bool) -> Result<usize, CUresult> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    if noreserve {
        flags |= libc::MAP_NORESERVE;
    }
    // SAFETY: a fresh anonymous mapping touches no existing memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(OUT_OF_MEMORY)
    } else {
        Ok(p as usize)
    }
}

fn unmap(start: usize, a: &Allocation) {
    // SAFETY: `start..start+mapped` is exactly a mapping this module made and
    // has just removed from the table, so nothing can reach it any more.
    unsafe { libc::munmap(start as *mut c_void, a.mapped) };
    if a.kind == Kind::Device {
        DEVICE_BYTES.fetch_sub(a.mapped as u64, Ordering::Relaxed);
    }
}

impl Heap {
    /// The allocation containing `ptr`, if any.
    fn containing(&self, ptr: usize) -> Option<(usize, &Allocation)> {
        let (&start, a) = self.by_start.range(..=ptr).next_back()?;
        (ptr < start + a.len).then_some((start, a))
    }

    /// `ptr..ptr+n` lies inside one allocation (device, or pinned host memory,
    /// which unified addressing makes a device address too).
    fn check_range(&self, ptr: CUdeviceptr, n: usize) -> Result<(), CUresult> {
        let ptr = usize::try_from(ptr).map_err(|_| INVALID_VALUE)?;
        let (start, a) = self.containing(ptr).ok_or(INVALID_VALUE)?;
        let end = ptr.checked_add(n).ok_or(INVALID_VALUE)?;
        if end <= start + a.len {
            Ok(())
        } else {
            Err(INVALID_VALUE)
        }
    }

    /// For the unified cuMemcpy: a tracked address must fit its allocation,
    /// any other non-null address is ordinary host memory.
    fn check_unified(&self, ptr: CUdeviceptr, n: usize) -> Result<(), CUresult> {
        if ptr == 0 {
            return Err(INVALID_VALUE);
        }
        match usize::try_from(ptr).ok().and_then(|p| self.containing(p)) {
            Some(_) => self.check_range(ptr, n),
            None => Ok(()),
        }
    }

    fn insert(&mut self, start: usize, a: Allocation) {
        if a.kind == Kind::Device {
            DEVICE_BYTES.fetch_add(a.mapped as u64, Ordering::Relaxed);
        }
        self.by_start.insert(start, a);
    }

    fn free(&mut self, ptr: usize, kind: Kind) -> Result<(), CUresult> {
        match self.by_start.get(&ptr) {
            Some(a) if a.kind == kind => {}
            _ => return Err(INVALID_VALUE),
        }
        let a = self.by_start.remove(&ptr).expect("present: checked above");
        unmap(ptr, &a);
        Ok(())
    }
}

/// Frees everything a context owned (destroy, primary release or reset).
pub fn release_context(ctx: u64) {
    let mut heap = HEAP.lock();
    let doomed: Vec<usize> = heap
        .by_start
        .iter()
        .filter(|(_, a)| a.ctx == ctx)
        .map(|(&s, _)| s)
        .collect();
    for start in doomed {
        if let Some(a) = heap.by_start.remove(&start) {
            unmap(start, &a);
        }
    }
}

pub unsafe fn alloc(dptr: *mut CUdeviceptr, size: usize) -> Result<(), CUresult> {
    if dptr.is_null() {
        return Err(INVALID_VALUE);
    }
    let ctx = current()?;
    if size == 0 {
        return Err(INVALID_VALUE);
    }
    let mapped = round_up(size, GRANULE).ok_or(OUT_OF_MEMORY)?;
    let mut heap = HEAP.lock();
    if device_bytes_in_use() + mapped as u64 > CAPACITY {
        return Err(OUT_OF_MEMORY);
    }
    let start = map(mapped, true)?;
    heap.insert(
        start,
        Allocation {
            len: size,
            mapped,
            ctx: ctx.id,
            kind: Kind::Device,
        },
    );
    // SAFETY: checked non-null; the caller passes a writable CUdeviceptr.
    unsafe { write_out(dptr, start as CUdeviceptr, INVALID_VALUE) }
}

pub fn free(dptr: CUdeviceptr) -> Result<(), CUresult> {
    current()?;
    let ptr = usize::try_from(dptr).map_err(|_| INVALID_VALUE)?;
    HEAP.lock().free(ptr, Kind::Device)
}

pub unsafe fn get_address_range(
    pbase: *mut CUdeviceptr,
    psize: *mut usize,
    dptr: CUdeviceptr,
) -> Result<(), CUresult> {
    current()?;
    let heap = HEAP.lock();
    let (start, a) = usize::try_from(dptr)
        .ok()
        .and_then(|p| heap.containing(p))
        .filter(|(_, a)| a.kind == Kind::Device)
        .ok_or(CUresult::CUDA_ERROR_NOT_FOUND)?;
    // SAFETY: each out-pointer is optional; non-null ones are writable.
    unsafe {
        if !pbase.is_null() {
            pbase.write_unaligned(start as CUdeviceptr);
        }
        if !psize.is_null() {
            psize.write_unaligned(a.len);
        }
    }
    Ok(())
}

pub unsafe fn get_info_v2(free: *mut usize, total: *mut usize) -> Result<(), CUresult> {
    if free.is_null() || total.is_null() {
        return Err(INVALID_VALUE);
    }
    current()?;
    let avail = CAPACITY.saturating_sub(device_bytes_in_use());
    // SAFETY: both checked non-null; the caller passes writable size_ts.
    unsafe {
        write_out(free, avail as usize, INVALID_VALUE)?;
        write_out(total, profile::TOTAL_MEMORY as usize, INVALID_VALUE)
    }
}

/// The 32-bit legacy form saturates instead of wrapping.
pub unsafe fn get_info_v1(free: *mut c_uint, total: *mut c_uint) -> Result<(), CUresult> {
    let (mut f, mut t) = (0usize, 0usize);
    // SAFETY: both are local, writable.
    unsafe { get_info_v2(&mut f, &mut t) }?;
    if free.is_null() || total.is_null() {
        return Err(INVALID_VALUE);
    }
    let clamp = |v: usize| v.min(c_uint::MAX as usize) as c_uint;
    // SAFETY: both checked non-null; the caller passes writable uints.
    unsafe {
        write_out(free, clamp(f), INVALID_VALUE)?;
        write_out(total, clamp(t), INVALID_VALUE)
    }
}

// ---- copies and memsets ---------------------------------------------------
//
// The heap lock is held while bytes move, so a concurrent cuMemFree cannot
// unmap the range mid-copy.

fn timed<T>(f: impl FnOnce() -> T) -> T {
    let t0 = Instant::now();
    let r = f();
    sensors::record_memory_busy(t0.elapsed());
    r
}

pub unsafe fn copy_htod(dst: CUdeviceptr, src: *const c_void, n: usize) -> Result<(), CUresult> {
    current()?;
    if n == 0 {
        return Ok(());
    }
    if src.is_null() {
        return Err(INVALID_VALUE);
    }
    let heap = HEAP.lock();
    heap.check_range(dst, n)?;
    // SAFETY: `dst..dst+n` lies in a live mapping (checked, lock held); the
    // caller guarantees `src` is readable for `n` bytes. `copy` tolerates a
    // host buffer that is itself pinned memory overlapping the target.
    timed(|| unsafe { std::ptr::copy(src.cast::<u8>(), dst as *mut u8, n) });
    Ok(())
}

pub unsafe fn copy_dtoh(dst: *mut c_void, src: CUdeviceptr, n: usize) -> Result<(), CUresult> {
    current()?;
    if n == 0 {
        return Ok(());
    }
    if dst.is_null() {
        return Err(INVALID_VALUE);
    }
    let heap = HEAP.lock();
    heap.check_range(src, n)?;
    // SAFETY: the source range is a live mapping (checked, lock held); the
    // caller guarantees `dst` is writable for `n` bytes.
    timed(|| unsafe { std::ptr::copy(src as *const u8, dst.cast::<u8>(), n) });
    Ok(())
}

pub fn copy_dtod(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> Result<(), CUresult> {
    current()?;
    if n == 0 {
        return Ok(());
    }
    let heap = HEAP.lock();
    heap.check_range(dst, n)?;
    heap.check_range(src, n)?;
    // SAFETY: both ranges are live mappings (checked, lock held); `copy` is
    // memmove, so overlapping ranges are fine.
    timed(|| unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, n) });
    Ok(())
}

pub unsafe fn copy_unified(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> Result<(), CUresult> {
    current()?;
    if n == 0 {
        return Ok(());
    }
    let heap = HEAP.lock();
    heap.check_unified(dst, n)?;
    heap.check_unified(src, n)?;
    // SAFETY: tracked ranges were checked against live mappings; untracked
    // ones are host memory the caller vouches for, as with any host pointer.
    timed(|| unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, n) });
    Ok(())
}

/// Fills `count` elements of `T` at `dst` after checking range and alignment.
fn fill<T: Copy>(dst: CUdeviceptr, value: T, count: usize) -> Result<(), CUresult> {
    current()?;
    let size = std::mem::size_of::<T>();
    // Element sizes are powers of two (1, 2, 4).
    if dst & (size as u64 - 1) != 0 {
        return Err(INVALID_VALUE);
    }
    if count == 0 {
        return Ok(());
    }
    let bytes = count.checked_mul(size).ok_or(INVALID_VALUE)?;
    let heap = HEAP.lock();
    heap.check_range(dst, bytes)?;
    timed(|| {
        // SAFETY: the range is a live, aligned mapping of `count` Ts (checked
        // with the lock held), and no Rust reference aliases device memory.
        let s = unsafe { std::slice::from_raw_parts_mut(dst as *mut T, count) };
        s.fill(value);
    });
    Ok(())
}

pub fn memset_d8(dst: CUdeviceptr, v: c_uchar, n: usize) -> Result<(), CUresult> {
    fill(dst, v, n)
}

pub fn memset_d16(dst: CUdeviceptr, v: c_ushort, n: usize) -> Result<(), CUresult> {
    fill(dst, v, n)
}

pub fn memset_d32(dst: CUdeviceptr, v: c_uint, n: usize) -> Result<(), CUresult> {
    fill(dst, v, n)
}

pub unsafe fn copy_htod_async(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
    s: CUstream,
) -> Result<(), CUresult> {
    stream::check(s)?;
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { copy_htod(dst, src, n) }
}

pub unsafe fn copy_dtoh_async(
    dst: *mut c_void,
    src: CUdeviceptr,
    n: usize,
    s: CUstream,
) -> Result<(), CUresult> {
    stream::check(s)?;
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { copy_dtoh(dst, src, n) }
}

pub fn copy_dtod_async(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    s: CUstream,
) -> Result<(), CUresult> {
    stream::check(s)?;
    copy_dtod(dst, src, n)
}

pub unsafe fn copy_unified_async(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    s: CUstream,
) -> Result<(), CUresult> {
    stream::check(s)?;
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { copy_unified(dst, src, n) }
}

pub fn memset_d8_async(
    dst: CUdeviceptr,
    v: c_uchar,
    n: usize,
    s: CUstream,
) -> Result<(), CUresult> {
    stream::check(s)?;
    memset_d8(dst, v, n)
}

pub fn memset_d16_async(
    dst: CUdeviceptr,
    v: c_ushort,
    n: usize,
    s: CUstream,
) -> Result<(), CUresult> {
    stream::check(s)?;
    memset_d16(dst, v, n)
}

pub fn memset_d32_async(
    dst: CUdeviceptr,
    v: c_uint,
    n: usize,
    s: CUstream,
) -> Result<(), CUresult> {
    stream::check(s)?;
    memset_d32(dst, v, n)
}

// ---- pinned host memory -----------------------------------------------------

const HOST_ALLOC_FLAGS: c_uint = cuda_types::cuda::CU_MEMHOSTALLOC_PORTABLE
    | cuda_types::cuda::CU_MEMHOSTALLOC_DEVICEMAP
    | cuda_types::cuda::CU_MEMHOSTALLOC_WRITECOMBINED;

pub unsafe fn host_alloc(pp: *mut *mut c_void, size: usize, flags: c_uint) -> Result<(), CUresult> {
    if pp.is_null() || flags & !HOST_ALLOC_FLAGS != 0 {
        return Err(INVALID_VALUE);
    }
    let ctx = current()?;
    if size == 0 {
        return Err(INVALID_VALUE);
    }
    let mapped = round_up(size, PAGE).ok_or(OUT_OF_MEMORY)?;
    // Pinned memory is real memory on a real driver too: no NORESERVE.
    let start = map(mapped, false)?;
    HEAP.lock().insert(
        start,
        Allocation {
            len: size,
            mapped,
            ctx: ctx.id,
            kind: Kind::PinnedHost,
        },
    );
    // SAFETY: checked non-null; the caller passes a writable pointer slot.
    unsafe { write_out(pp, start as *mut c_void, INVALID_VALUE) }
}

pub unsafe fn alloc_host(pp: *mut *mut c_void, size: usize) -> Result<(), CUresult> {
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { host_alloc(pp, size, 0) }
}

pub unsafe fn free_host(p: *mut c_void) -> Result<(), CUresult> {
    current()?;
    HEAP.lock().free(p as usize, Kind::PinnedHost)
}
