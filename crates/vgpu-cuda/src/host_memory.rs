//! "Page-locked" host memory, which in a guest is simply guest memory.
//!
//! `cuMemAllocHost`/`cuMemHostAlloc` map fresh anonymous pages here and
//! `cuMemHostRegister` only records a range; nothing reaches the host.
//! Copies from and to such memory behave exactly like copies of pageable
//! memory (the bytes travel in the call), so they are correct, just not
//! DMA-fast.
//!
//! Device-side access is what a remote GPU cannot have: its kernels cannot
//! reach guest RAM. So `cuMemHostGetDevicePointer` is
//! CUDA_ERROR_NOT_SUPPORTED, `CU_POINTER_ATTRIBUTE_DEVICE_POINTER` of such
//! memory likewise, and the device attributes that promise mapped host
//! memory (`CAN_MAP_HOST_MEMORY`, `CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM`)
//! read 0 (the host masks them: `MASKED` in the worker's inventory). Asking for
//! `CU_MEMHOSTALLOC_DEVICEMAP` is still accepted: the allocation itself is
//! fine, only the device pointer cannot exist.

use crate::args::{Wide, Word};
use crate::check::{self, reject, INVALID_VALUE, NOT_SUPPORTED};
use crate::context::state::Context;
use cuda_types::cuda::{
    CUresult, CU_MEMHOSTALLOC_DEVICEMAP, CU_MEMHOSTALLOC_PORTABLE, CU_MEMHOSTALLOC_WRITECOMBINED,
    CU_MEMHOSTREGISTER_DEVICEMAP, CU_MEMHOSTREGISTER_IOMEMORY, CU_MEMHOSTREGISTER_PORTABLE,
    CU_MEMHOSTREGISTER_READ_ONLY,
};
use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::ffi::{c_uint, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use vgpu_ffi::Out;

const ALLOC_FLAGS: u32 =
    CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED;
const REGISTER_FLAGS: u32 = CU_MEMHOSTREGISTER_PORTABLE
    | CU_MEMHOSTREGISTER_DEVICEMAP
    | CU_MEMHOSTREGISTER_IOMEMORY
    | CU_MEMHOSTREGISTER_READ_ONLY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Mapped here; `cuMemFreeHost` unmaps it.
    Allocated,
    /// The application's own memory; `cuMemHostUnregister` forgets it.
    Registered,
}

#[derive(Clone)]
pub struct HostRange {
    pub base: usize,
    pub size: usize,
    pub flags: u32,
    pub origin: Origin,
    /// The context current when it was made.
    pub ctx: Arc<Context>,
    /// `CU_POINTER_ATTRIBUTE_BUFFER_ID`.
    pub id: u64,
}

impl HostRange {
    fn end(&self) -> usize {
        self.base.saturating_add(self.size)
    }
}

static TABLE: RwLock<BTreeMap<usize, HostRange>> = RwLock::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1 << 48);

fn find_in(t: &BTreeMap<usize, HostRange>, p: usize) -> Option<&HostRange> {
    t.range(..=p)
        .next_back()
        .map(|(_, r)| r)
        .filter(|r| p < r.end())
}

/// The host allocation or registration holding `p`.
pub fn find(p: usize) -> Option<HostRange> {
    find_in(&TABLE.read(), p).cloned()
}

fn overlaps(t: &BTreeMap<usize, HostRange>, base: usize, size: usize) -> bool {
    let end = base.saturating_add(size);
    t.range(..end)
        .next_back()
        .is_some_and(|(_, r)| r.end() > base)
}

fn record(r: HostRange) -> Result<(), CUresult> {
    let mut t = TABLE.write();
    if overlaps(&t, r.base, r.size) {
        return Err(reject(
            CUresult::CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED,
            format_args!(
                "host range {:#x}+{} overlaps a registered one",
                r.base, r.size
            ),
        ));
    }
    t.insert(r.base, r);
    Ok(())
}

fn new_range(base: usize, size: usize, flags: u32, origin: Origin, ctx: Arc<Context>) -> HostRange {
    HostRange {
        base,
        size,
        flags,
        origin,
        ctx,
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
    }
}

/// `cuMemHostAlloc`, and `cuMemAllocHost[_v2]` with flags 0.
pub fn host_alloc(pp: Out<*mut c_void>, size: Wide, flags: c_uint) -> Result<(), CUresult> {
    let size = size.0 as usize;
    let (ctx, _) = check::current()?;
    crate::capture::unsafe_call("cuMemHostAlloc")?;
    if size == 0 || flags & !ALLOC_FLAGS != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemHostAlloc: {size} bytes, flags {flags:#x}"),
        ));
    }
    // SAFETY: a fresh private anonymous mapping; no existing memory is
    // touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(reject(
            CUresult::CUDA_ERROR_OUT_OF_MEMORY,
            format_args!("cuMemHostAlloc: mmap of {size} bytes failed"),
        ));
    }
    record(new_range(p as usize, size, flags, Origin::Allocated, ctx)).inspect_err(|_| {
        // SAFETY: the mapping made just above, never handed out.
        unsafe { libc::munmap(p, size) };
    })?;
    pp.write(p);
    Ok(())
}

pub fn free_host(p: *mut c_void) -> Result<(), CUresult> {
    crate::capture::unsafe_call("cuMemFreeHost")?;
    let taken = {
        let mut t = TABLE.write();
        match t.get(&(p as usize)) {
            Some(r) if r.origin == Origin::Allocated => t.remove(&(p as usize)),
            _ => None,
        }
    };
    let r = taken.ok_or_else(|| {
        reject(
            INVALID_VALUE,
            format_args!("cuMemFreeHost: {p:p} is not the start of a host allocation"),
        )
    })?;
    // SAFETY: a mapping host_alloc made, now out of the table so no other
    // call can unmap it again.
    unsafe { libc::munmap(r.base as *mut c_void, r.size) };
    Ok(())
}

pub fn register(p: *mut c_void, size: usize, flags: c_uint) -> Result<(), CUresult> {
    let (ctx, _) = check::current()?;
    crate::capture::unsafe_call("cuMemHostRegister")?;
    if p.is_null() || size == 0 || flags & !REGISTER_FLAGS != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemHostRegister: {p:p}, {size} bytes, flags {flags:#x}"),
        ));
    }
    if flags & CU_MEMHOSTREGISTER_IOMEMORY != 0 {
        // I/O memory is only meaningful next to a local GPU.
        return Err(reject(
            NOT_SUPPORTED,
            format_args!("cuMemHostRegister: IOMEMORY cannot be remoted"),
        ));
    }
    record(new_range(p as usize, size, flags, Origin::Registered, ctx))
}

pub fn unregister(p: *mut c_void) -> Result<(), CUresult> {
    crate::capture::unsafe_call("cuMemHostUnregister")?;
    let mut t = TABLE.write();
    match t.get(&(p as usize)) {
        Some(r) if r.origin == Origin::Registered => {
            t.remove(&(p as usize));
            Ok(())
        }
        _ => Err(reject(
            CUresult::CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED,
            format_args!("cuMemHostUnregister: {p:p} is not a registered base address"),
        )),
    }
}

/// `cuMemHostGetDevicePointer[_v2]`: the decision documented at the top,
/// no device can reach guest memory, so nothing is ever written.
pub fn get_device_pointer<P: Word>(
    _out: Out<P>,
    p: *mut c_void,
    flags: c_uint,
) -> Result<(), CUresult> {
    if flags != 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemHostGetDevicePointer: flags {flags}"),
        ));
    }
    match find(p as usize) {
        Some(_) => Err(reject(
            NOT_SUPPORTED,
            format_args!(
                "cuMemHostGetDevicePointer: {p:p} is guest memory, which the remote GPU cannot access"
            ),
        )),
        None => Err(reject(
            INVALID_VALUE,
            format_args!("cuMemHostGetDevicePointer: {p:p} is not page-locked host memory"),
        )),
    }
}

pub fn get_flags(out: Out<c_uint>, p: *mut c_void) -> Result<(), CUresult> {
    let r = find(p as usize).ok_or_else(|| {
        reject(
            INVALID_VALUE,
            format_args!("cuMemHostGetFlags: {p:p} is not page-locked host memory"),
        )
    })?;
    out.write(r.flags);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::state::{register as reg_ctx, Kind, API_VERSION};

    #[test]
    fn table_lookups_and_overlaps() {
        let ctx = reg_ctx(Context::new(Kind::Created, 0, 0, 0, API_VERSION));
        let mut t = BTreeMap::new();
        let r = new_range(0x10_000, 0x100, 2, Origin::Registered, ctx.clone());
        t.insert(r.base, r);
        assert!(find_in(&t, 0xffff).is_none());
        assert_eq!(find_in(&t, 0x10_000).unwrap().flags, 2);
        assert!(find_in(&t, 0x10_0ff).is_some());
        assert!(find_in(&t, 0x10_100).is_none());
        assert!(overlaps(&t, 0x10_0ff, 1));
        assert!(overlaps(&t, 0xff00, 0x101));
        assert!(!overlaps(&t, 0xff00, 0x100));
        assert!(!overlaps(&t, 0x10_100, 0x100));
    }
}
