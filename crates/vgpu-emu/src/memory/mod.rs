//! Device memory, pinned and registered host memory, and the table every
//! range an application passes is checked against.
//!
//! Device memory is anonymous host memory mapped with MAP_NORESERVE, so an
//! 80 GiB device fits on a much smaller machine until pages are touched, and
//! the device pointer is the host address (the interpreter dereferences it
//! directly). Every range is checked against the table before any byte moves.
//! All devices of a profile share that one address space (unified
//! addressing); each allocation is charged to its context's device, whose
//! capacity is the board's.
//!
//! The table sits behind a reader-writer lock: copies and memsets hold it
//! shared while bytes move (so copies on different threads run in parallel),
//! and only calls that change what is mapped (alloc, free, VMM map/unmap,
//! access changes) take it exclusively, which is what keeps a concurrent free
//! from unmapping a range mid-copy.

mod copy;
mod device_heap;
mod kernel_mem;
mod pointer;
mod pool;
mod vmm;

pub use copy::*;
pub(crate) use device_heap::{
    heap_size as device_heap_size, set_heap_size as set_device_heap_size,
};
pub(crate) use kernel_mem::{
    alloc_module_block, free_module_block, with_kernel_memory, with_launch_memory,
};
pub use pointer::*;
pub use pool::*;
pub use vmm::*;

use crate::context::current;
use crate::ffi::Saturate;
use crate::{device, profile};
use cuda_types::cuda::{CUdevice, CUdeviceptr, CUresult};
use once_cell::sync::Lazy;
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::ffi::{c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vgpu_ffi::Out;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const OUT_OF_MEMORY: CUresult = CUresult::CUDA_ERROR_OUT_OF_MEMORY;

/// The driver hands out device memory in 2 MiB pages; accounting in the same
/// unit makes cuMemGetInfo move the way it does on a real board. It is also
/// the VMM granularity.
pub const GRANULE: usize = 2 * 1024 * 1024;
const PAGE: usize = 4096;
/// The driver's sub-allocation step for allocations smaller than a
/// [`GRANULE`]: the board's texture alignment, 512 bytes.
pub const SMALL_GRANULE: usize = 512;

/// How many bytes of a device allocation of `len` bytes a kernel may touch
/// without faulting: what the driver sets aside for it. Small allocations
/// are carved from shared 2 MiB pages in [`SMALL_GRANULE`] steps, larger
/// ones own whole pages, so on a GPU an overrun within that span neither
/// faults nor touches another allocation (docs/software-gpu.md,
/// "Allocation granularity"). API calls (copies, memsets) are still held to
/// the requested size, as the driver holds them.
fn kernel_reach(len: usize) -> usize {
    let step = if len < GRANULE {
        SMALL_GRANULE
    } else {
        GRANULE
    };
    round_up(len, step).unwrap_or(len)
}
/// What allocations may use on one device: the board's total less the
/// driver's own share.
pub fn capacity() -> u64 {
    let b = profile::board();
    b.cuda_total - b.reserved
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Device,
    /// cuMemHostAlloc: mapped and owned here.
    PinnedHost,
    /// cuMemHostRegister: the application's memory, only tracked here.
    Registered,
}

struct Allocation {
    /// What the application asked for: the valid range.
    len: usize,
    /// What is mapped and accounted (0 for registered memory).
    mapped: usize,
    ctx: u64,
    ctx_handle: usize,
    /// The CUDA ordinal of the context's device, which device memory is
    /// charged to.
    device: CUdevice,
    kind: Kind,
    /// cuMemHostAlloc / cuMemHostRegister flags, for cuMemHostGetFlags.
    host_flags: c_uint,
    /// CU_POINTER_ATTRIBUTE_BUFFER_ID.
    buffer_id: u64,
    /// The stream-ordered pool it came from, which accounts for it.
    pool: Option<Arc<pool::Pool>>,
}

impl Allocation {
    /// The span a kernel may touch: device memory to the end of its
    /// granule (never past what is mapped), host memory exactly.
    fn kernel_len(&self) -> usize {
        match self.kind {
            Kind::Device => kernel_reach(self.len).min(self.mapped).max(self.len),
            Kind::PinnedHost | Kind::Registered => self.len,
        }
    }
}

/// What a range check is for: a range mapped read-only through the VMM API
/// may be copied from but not into.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

#[derive(Default)]
struct Heap {
    by_start: BTreeMap<usize, Allocation>,
    vmm: vmm::Vmm,
}

static HEAP: Lazy<RwLock<Heap>> = Lazy::new(Default::default);
/// Device bytes accounted per device (driver order), readable without the
/// heap lock (NVML, sensors).
static DEVICE_BYTES: [AtomicU64; profile::MAX_DEVICES] =
    [const { AtomicU64::new(0) }; profile::MAX_DEVICES];

/// Bytes in use on the device at driver-order `index`.
pub fn device_bytes_in_use(index: usize) -> u64 {
    DEVICE_BYTES[index].load(Ordering::Relaxed)
}

/// Bytes in use on every device together.
pub fn all_device_bytes_in_use() -> u64 {
    DEVICE_BYTES.iter().map(|b| b.load(Ordering::Relaxed)).sum()
}

fn next_buffer_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn round_up(n: usize, to: usize) -> Option<usize> {
    n.checked_add(to - 1).map(|v| v / to * to)
}

/// Reserves `bytes` of the capacity of device `dev` (a CUDA ordinal), or
/// fails without reserving.
fn charge(dev: CUdevice, bytes: usize) -> Result<(), CUresult> {
    let bytes = bytes as u64;
    let cap = capacity();
    DEVICE_BYTES[device::index_of(dev)]
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(bytes).filter(|&t| t <= cap)
        })
        .map(drop)
        .map_err(|_| OUT_OF_MEMORY)
}

fn uncharge(dev: CUdevice, bytes: usize) {
    DEVICE_BYTES[device::index_of(dev)].fetch_sub(bytes as u64, Ordering::Relaxed);
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

/// Ends an allocation that has just left the table.
fn release(start: usize, a: &Allocation) {
    if a.kind != Kind::Registered {
        // SAFETY: `start..start+mapped` is exactly a mapping this module made
        // and has just removed from the table (under the write lock), so no
        // copy can be using it and nothing can reach it any more.
        unsafe { libc::munmap(start as *mut c_void, a.mapped) };
    }
    if a.kind == Kind::Device {
        uncharge(a.device, a.mapped);
    }
    if let Some(p) = &a.pool {
        p.on_free(a.len, a.mapped);
    }
}

impl Heap {
    /// The allocation containing `ptr`, if any.
    fn containing(&self, ptr: usize) -> Option<(usize, &Allocation)> {
        let (&start, a) = self.by_start.range(..=ptr).next_back()?;
        (ptr < start + a.len).then_some((start, a))
    }

    /// `ptr..ptr+n` is device-accessible memory: inside one allocation
    /// (device, or host memory that unified addressing makes a device
    /// address too), or inside contiguous, accessible VMM mappings.
    fn check_range(&self, ptr: CUdeviceptr, n: usize, access: Access) -> Result<(), CUresult> {
        let ptr = usize::try_from(ptr).map_err(|_| INVALID_VALUE)?;
        let end = ptr.checked_add(n).ok_or(INVALID_VALUE)?;
        match self.containing(ptr) {
            Some((start, a)) if end <= start + a.len => Ok(()),
            Some(_) => Err(INVALID_VALUE),
            None => self.vmm.check_range(ptr, end, access),
        }
    }

    /// [`Heap::check_range`] for a kernel's access: device allocations
    /// reach to their granule's end ([`kernel_reach`]).
    fn check_kernel_range(
        &self,
        ptr: CUdeviceptr,
        n: usize,
        access: Access,
    ) -> Result<(), CUresult> {
        let p = usize::try_from(ptr).map_err(|_| INVALID_VALUE)?;
        let end = p.checked_add(n).ok_or(INVALID_VALUE)?;
        match self.containing_for_kernel(p) {
            Some((start, a)) if end <= start + a.kernel_len() => Ok(()),
            Some(_) => Err(INVALID_VALUE),
            None => self.vmm.check_range(p, end, access),
        }
    }

    /// The allocation whose kernel-visible span contains `ptr`.
    fn containing_for_kernel(&self, ptr: usize) -> Option<(usize, &Allocation)> {
        let (&start, a) = self.by_start.range(..=ptr).next_back()?;
        (ptr < start + a.kernel_len()).then_some((start, a))
    }

    /// Whether `ptr` belongs to anything this driver tracks. Reserved VMM
    /// address space counts even where nothing is mapped: it is PROT_NONE,
    /// so treating it as plain host memory would fault instead of failing.
    fn is_tracked(&self, ptr: usize) -> bool {
        self.containing(ptr).is_some() || self.vmm.overlaps(ptr, ptr + 1)
    }

    /// For the unified cuMemcpy: a tracked address must fit its range, any
    /// other non-null address is ordinary host memory.
    fn check_unified(&self, ptr: CUdeviceptr, n: usize, access: Access) -> Result<(), CUresult> {
        if ptr == 0 {
            return Err(INVALID_VALUE);
        }
        match usize::try_from(ptr) {
            Ok(p) if self.is_tracked(p) => self.check_range(ptr, n, access),
            _ => Ok(()),
        }
    }

    /// Whether `start..start+len` touches any tracked host or device range.
    fn overlaps(&self, start: usize, len: usize) -> bool {
        let end = start + len;
        let before = self
            .by_start
            .range(..end)
            .next_back()
            .is_some_and(|(&s, a)| s + a.len.max(a.mapped) > start);
        before || self.vmm.overlaps(start, end)
    }

    fn insert(&mut self, start: usize, a: Allocation) {
        self.by_start.insert(start, a);
    }

    fn free(&mut self, ptr: usize, kind: Kind) -> Result<(), CUresult> {
        match self.by_start.get(&ptr) {
            Some(a) if a.kind == kind => {}
            _ => return Err(INVALID_VALUE),
        }
        let a = self.by_start.remove(&ptr).expect("present: checked above");
        release(ptr, &a);
        Ok(())
    }
}

/// What an address belongs to, as far as a graph update must keep it:
/// the kind of memory and its owning context (VMM mappings belong to the
/// device and have neither).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Association {
    ctx: Option<u64>,
    kind: Option<Kind>,
}

/// The association of `ptr`, or `None` for an address nothing tracks.
pub(crate) fn association(ptr: CUdeviceptr) -> Option<Association> {
    let p = usize::try_from(ptr).ok()?;
    let heap = HEAP.read();
    if let Some((_, a)) = heap.containing(p) {
        return Some(Association {
            ctx: Some(a.ctx),
            kind: Some(a.kind),
        });
    }
    heap.vmm
        .overlaps(p, p.saturating_add(1))
        .then_some(Association {
            ctx: None,
            kind: None,
        })
}

/// Frees everything a context owned (destroy, primary release or reset).
/// VMM memory belongs to the device, not a context, and survives.
pub fn release_context(ctx: u64) {
    let mut heap = HEAP.write();
    // Under the write lock: no kernel of the context is running.
    device_heap::release_context(ctx);
    let doomed: Vec<usize> = heap
        .by_start
        .iter()
        .filter(|(_, a)| a.ctx == ctx)
        .map(|(&s, _)| s)
        .collect();
    for start in doomed {
        if let Some(a) = heap.by_start.remove(&start) {
            release(start, &a);
        }
    }
}

/// Maps and records `size` bytes of device memory for the current context.
fn alloc_device(size: usize, pool: Option<Arc<pool::Pool>>) -> Result<CUdeviceptr, CUresult> {
    let ctx = current()?;
    if size == 0 {
        return Err(INVALID_VALUE);
    }
    let mapped = round_up(size, GRANULE).ok_or(OUT_OF_MEMORY)?;
    if let Some(p) = &pool {
        p.reserve(mapped)?;
    }
    let dev = ctx.device;
    let mapping =
        charge(dev, mapped).and_then(|()| map(mapped, true).inspect_err(|_| uncharge(dev, mapped)));
    let start = match mapping {
        Ok(s) => s,
        Err(e) => {
            if let Some(p) = &pool {
                p.unreserve(mapped);
            }
            return Err(e);
        }
    };
    if let Some(p) = &pool {
        p.on_alloc(size);
    }
    HEAP.write().insert(
        start,
        Allocation {
            len: size,
            mapped,
            ctx: ctx.id,
            ctx_handle: ctx.handle() as usize,
            device: ctx.device,
            kind: Kind::Device,
            host_flags: 0,
            buffer_id: next_buffer_id(),
            pool,
        },
    );
    Ok(start as CUdeviceptr)
}

pub fn alloc(dptr: Out<CUdeviceptr>, size: usize) -> Result<(), CUresult> {
    dptr.write(alloc_device(size, None)?);
    Ok(())
}

pub fn free(dptr: CUdeviceptr) -> Result<(), CUresult> {
    current()?;
    let ptr = usize::try_from(dptr).map_err(|_| INVALID_VALUE)?;
    HEAP.write().free(ptr, Kind::Device)
}

/// Rows padded to the board's texture alignment (512 bytes), the pitch
/// cuMemAllocPitch hands out on real boards; it is also a multiple of the
/// 32-byte texture pitch alignment, so the pitch binds to textures too.
pub fn alloc_pitch(
    dptr: Out<CUdeviceptr>,
    pitch: Out<usize>,
    width: usize,
    height: usize,
    element_size: c_uint,
) -> Result<(), CUresult> {
    use cuda_types::cuda::CUdevice_attribute as A;
    if width == 0 || height == 0 {
        return Err(INVALID_VALUE);
    }
    if !matches!(element_size, 4 | 8 | 16) {
        return Err(INVALID_VALUE);
    }
    let align = profile::attribute(A::CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT)? as usize;
    let max_pitch = profile::attribute(A::CU_DEVICE_ATTRIBUTE_MAX_PITCH)? as usize;
    let p = round_up(width, align).ok_or(INVALID_VALUE)?;
    if p > max_pitch {
        return Err(INVALID_VALUE);
    }
    let bytes = p.checked_mul(height).ok_or(OUT_OF_MEMORY)?;
    let d = alloc_device(bytes, None)?;
    pitch.write(p);
    dptr.write(d);
    Ok(())
}

/// Both out-pointers are optional.
pub fn get_address_range(
    pbase: Option<Out<CUdeviceptr>>,
    psize: Option<Out<usize>>,
    dptr: CUdeviceptr,
) -> Result<(), CUresult> {
    current()?;
    let heap = HEAP.read();
    let p = usize::try_from(dptr).map_err(|_| CUresult::CUDA_ERROR_NOT_FOUND)?;
    let (start, len) = match heap.containing(p) {
        Some((s, a)) if a.kind == Kind::Device => (s, a.len),
        Some(_) => return Err(CUresult::CUDA_ERROR_NOT_FOUND),
        None => heap
            .vmm
            .mapping_range(p)
            .ok_or(CUresult::CUDA_ERROR_NOT_FOUND)?,
    };
    if let Some(b) = pbase {
        b.write(start as CUdeviceptr);
    }
    if let Some(s) = psize {
        s.write(len);
    }
    Ok(())
}

/// `cuMemGetInfo_v2`, and `cuMemGetInfo` whose 32-bit outputs saturate:
/// the current context's device.
pub fn get_info<T: Saturate>(free: Out<T>, total: Out<T>) -> Result<(), CUresult> {
    let c = current()?;
    let avail = capacity().saturating_sub(device_bytes_in_use(device::index_of(c.device)));
    free.write(T::saturate(avail));
    total.write(T::saturate(profile::board().cuda_total));
    Ok(())
}

// ---- pinned and registered host memory ---------------------------------------

const HOST_ALLOC_FLAGS: c_uint = cuda_types::cuda::CU_MEMHOSTALLOC_PORTABLE
    | cuda_types::cuda::CU_MEMHOSTALLOC_DEVICEMAP
    | cuda_types::cuda::CU_MEMHOSTALLOC_WRITECOMBINED;

/// `cuMemHostAlloc`, and `cuMemAllocHost` with no flags.
pub fn host_alloc(pp: Out<*mut c_void>, size: usize, flags: c_uint) -> Result<(), CUresult> {
    if flags & !HOST_ALLOC_FLAGS != 0 {
        return Err(INVALID_VALUE);
    }
    let ctx = current()?;
    if size == 0 {
        return Err(INVALID_VALUE);
    }
    let mapped = round_up(size, PAGE).ok_or(OUT_OF_MEMORY)?;
    // Pinned memory is real memory on a real driver too: no NORESERVE.
    let start = map(mapped, false)?;
    HEAP.write().insert(
        start,
        Allocation {
            len: size,
            mapped,
            ctx: ctx.id,
            ctx_handle: ctx.handle() as usize,
            device: ctx.device,
            kind: Kind::PinnedHost,
            host_flags: flags,
            buffer_id: next_buffer_id(),
            pool: None,
        },
    );
    pp.write(start as *mut c_void);
    Ok(())
}

pub fn free_host(p: *mut c_void) -> Result<(), CUresult> {
    current()?;
    HEAP.write().free(p as usize, Kind::PinnedHost)
}

/// PORTABLE | DEVICEMAP. IOMEMORY (a device BAR) and READ_ONLY (which would
/// need device writes to fault) are not emulated, and the device attributes
/// for them say so.
const HOST_REGISTER_FLAGS: c_uint =
    cuda_types::cuda::CU_MEMHOSTREGISTER_PORTABLE | cuda_types::cuda::CU_MEMHOSTREGISTER_DEVICEMAP;
const HOST_REGISTER_KNOWN: c_uint = HOST_REGISTER_FLAGS
    | cuda_types::cuda::CU_MEMHOSTREGISTER_IOMEMORY
    | cuda_types::cuda::CU_MEMHOSTREGISTER_READ_ONLY;

/// Whether every page of `start..start+len` is mapped in this process: the
/// real driver pins the pages and fails on a hole, so must registration.
fn host_range_is_mapped(start: usize, len: usize) -> bool {
    let first = start / PAGE * PAGE;
    let Some(end) = start.checked_add(len).and_then(|e| round_up(e, PAGE)) else {
        return false;
    };
    let mut residency = vec![0u8; (end - first) / PAGE];
    // SAFETY: mincore only reads the page tables for the range and writes one
    // byte per page into `residency`, which holds exactly that many bytes; it
    // fails with ENOMEM when any page of the range is unmapped.
    unsafe { libc::mincore(first as *mut c_void, end - first, residency.as_mut_ptr()) == 0 }
}

/// Registered memory is usable by the device at its own address: device
/// pointer == host pointer under unified addressing.
pub fn host_register(p: *mut c_void, size: usize, flags: c_uint) -> Result<(), CUresult> {
    if p.is_null() || size == 0 || flags & !HOST_REGISTER_KNOWN != 0 {
        return Err(INVALID_VALUE);
    }
    let ctx = current()?;
    if flags & !HOST_REGISTER_FLAGS != 0 {
        return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    let start = p as usize;
    if start.checked_add(size).is_none() || !host_range_is_mapped(start, size) {
        return Err(INVALID_VALUE);
    }
    let mut heap = HEAP.write();
    if heap.overlaps(start, size) {
        return Err(CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED);
    }
    heap.insert(
        start,
        Allocation {
            len: size,
            mapped: 0,
            ctx: ctx.id,
            ctx_handle: ctx.handle() as usize,
            device: ctx.device,
            kind: Kind::Registered,
            host_flags: flags,
            buffer_id: next_buffer_id(),
            pool: None,
        },
    );
    Ok(())
}

pub fn host_unregister(p: *mut c_void) -> Result<(), CUresult> {
    current()?;
    HEAP.write()
        .free(p as usize, Kind::Registered)
        .map_err(|_| CUresult::CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED)
}

/// The host memory (allocated or registered) containing `p`.
fn host_allocation(heap: &Heap, p: *mut c_void) -> Option<(usize, &Allocation)> {
    heap.containing(p as usize)
        .filter(|(_, a)| matches!(a.kind, Kind::PinnedHost | Kind::Registered))
}

pub fn host_get_device_pointer(
    pdptr: Out<CUdeviceptr>,
    p: *mut c_void,
    flags: c_uint,
) -> Result<(), CUresult> {
    if flags != 0 {
        return Err(INVALID_VALUE);
    }
    current()?;
    host_allocation(&HEAP.read(), p).ok_or(INVALID_VALUE)?;
    pdptr.write(p as CUdeviceptr);
    Ok(())
}

pub fn host_get_flags(pflags: Out<c_uint>, p: *mut c_void) -> Result<(), CUresult> {
    current()?;
    let flags = host_allocation(&HEAP.read(), p)
        .ok_or(INVALID_VALUE)?
        .1
        .host_flags;
    pflags.write(flags);
    Ok(())
}
