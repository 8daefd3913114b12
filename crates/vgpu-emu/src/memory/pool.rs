//! Stream-ordered allocation: cuMemAllocAsync / cuMemFreeAsync and the
//! cuMemPool* family.
//!
//! Every stream is complete the moment work is enqueued, so memory freed
//! into a pool is immediately past its last use and can go straight back to
//! the device: a pool never holds freed memory, whatever its release
//! threshold (the threshold permits keeping memory, it never requires it).
//! Reserved and used figures are therefore exact and the watermarks real.

use super::{alloc_device, vmm::check_location, Kind, HEAP};
use crate::device::Device;
use crate::ffi::{insert_new, Live};
use crate::stream::Stream;
use cuda_types::cuda::{
    CUdevice, CUdeviceptr, CUmemAllocationHandleType, CUmemAllocationType, CUmemLocationType,
    CUmemPoolProps, CUmemPool_attribute as Attr, CUmemoryPool, CUresult,
};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::ffi::{c_int, c_void};
use std::sync::Arc;
use vgpu_ffi::{FromCuda, In, Mint, Out, Shared};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;

#[derive(Default)]
struct State {
    release_threshold: u64,
    reuse_follow_event_dependencies: c_int,
    reuse_allow_opportunistic: c_int,
    reuse_allow_internal_dependencies: c_int,
    reserved: u64,
    reserved_high: u64,
    used: u64,
    used_high: u64,
}

pub struct Pool {
    handle: u64,
    device: CUdevice,
    /// CU_MEMPOOL_ATTR_MAX_POOL_SIZE; 0 means only the device limits it.
    max_size: u64,
    state: Mutex<State>,
}

impl Pool {
    /// A new pool, registered.
    fn new(device: CUdevice, max_size: u64) -> Arc<Self> {
        insert_new(&POOLS, |handle| Pool {
            handle,
            device,
            max_size,
            // The driver's defaults: every reuse policy on, threshold 0.
            state: Mutex::new(State {
                reuse_follow_event_dependencies: 1,
                reuse_allow_opportunistic: 1,
                reuse_allow_internal_dependencies: 1,
                ..Default::default()
            }),
        })
    }

    pub fn handle(&self) -> CUmemoryPool {
        self.handle as CUmemoryPool
    }

    pub(super) fn reserve(&self, mapped: usize) -> Result<(), CUresult> {
        let mut s = self.state.lock();
        let next = s.reserved + mapped as u64;
        if self.max_size != 0 && next > self.max_size {
            return Err(CUresult::CUDA_ERROR_OUT_OF_MEMORY);
        }
        s.reserved = next;
        s.reserved_high = s.reserved_high.max(next);
        Ok(())
    }

    pub(super) fn unreserve(&self, mapped: usize) {
        self.state.lock().reserved -= mapped as u64;
    }

    pub(super) fn on_alloc(&self, len: usize) {
        let mut s = self.state.lock();
        s.used += len as u64;
        s.used_high = s.used_high.max(s.used);
    }

    pub(super) fn on_free(&self, len: usize, mapped: usize) {
        let mut s = self.state.lock();
        s.used -= len as u64;
        s.reserved -= mapped as u64;
    }
}

struct DevicePools {
    default: Arc<Pool>,
    current: Arc<Pool>,
}

/// An unknown pool is CUDA_ERROR_INVALID_VALUE, as on the driver.
static POOLS: Shared<Arc<Pool>, CUresult> =
    Shared::new("memory pool", INVALID_VALUE, Mint::Pointer);
static DEVICE: Lazy<Mutex<Vec<DevicePools>>> = Lazy::new(|| {
    Mutex::new(
        (0..crate::device::count())
            .map(|dev| {
                let p = Pool::new(dev, 0);
                DevicePools {
                    default: p.clone(),
                    current: p,
                }
            })
            .collect(),
    )
});

impl FromCuda<CUmemoryPool, CUresult> for Live<Pool> {
    unsafe fn from_cuda(pool: CUmemoryPool) -> Result<Self, CUresult> {
        // The default pools exist once anyone can name them.
        Lazy::force(&DEVICE);
        POOLS.get(pool as u64).map(Live)
    }
}

fn is_default(p: &Pool) -> bool {
    DEVICE.lock()[p.device as usize].default.handle == p.handle
}

pub fn device_get_default_mem_pool(out: Out<CUmemoryPool>, dev: Device) -> Result<(), CUresult> {
    out.write(DEVICE.lock()[dev.0 as usize].default.handle());
    Ok(())
}

pub fn device_get_mem_pool(out: Out<CUmemoryPool>, dev: Device) -> Result<(), CUresult> {
    out.write(DEVICE.lock()[dev.0 as usize].current.handle());
    Ok(())
}

pub fn device_set_mem_pool(dev: Device, p: Live<Pool>) -> Result<(), CUresult> {
    if p.device != dev.0 {
        return Err(INVALID_VALUE);
    }
    DEVICE.lock()[dev.0 as usize].current = p.0;
    Ok(())
}

pub fn pool_create(out: Out<CUmemoryPool>, props: In<CUmemPoolProps>) -> Result<(), CUresult> {
    let p = props.read();
    if p.allocType != CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED
        || p.reserved.iter().any(|&b| b != 0)
    {
        return Err(INVALID_VALUE);
    }
    check_location(&p.location)?;
    // Pool IPC (exportable pools) and hardware decompression are not
    // emulated; CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES says 0.
    if p.handleTypes != CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE || p.usage != 0 {
        return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED);
    }
    // SAFETY: `id` is the union member for DEVICE locations (checked above).
    let dev = unsafe { p.location.__bindgen_anon_1.id };
    out.write(Pool::new(dev, p.maxSize as u64).handle());
    Ok(())
}

/// A device's current pool, once destroyed, falls back to its default.
/// Outstanding allocations stay valid until freed.
pub fn pool_destroy(p: Live<Pool>) -> Result<(), CUresult> {
    if is_default(&p) {
        return Err(INVALID_VALUE);
    }
    // Taken once: of two racing destroys, one succeeds.
    POOLS.take(p.handle)?;
    let mut dev = DEVICE.lock();
    let d = &mut dev[p.device as usize];
    if d.current.handle == p.handle {
        d.current = d.default.clone();
    }
    Ok(())
}

/// Nothing freed is ever held (see the module comment), so there is never
/// anything to trim.
pub fn pool_trim_to(_pool: Live<Pool>, _keep: usize) -> Result<(), CUresult> {
    Ok(())
}

/// `value` points to an int or a cuuint64_t, depending on the attribute.
pub unsafe fn pool_get_attribute(
    p: Live<Pool>,
    attr: Attr,
    value: Out<c_void>,
) -> Result<(), CUresult> {
    let value = value.as_ptr();
    let s = p.state.lock();
    let int = |v: c_int| {
        // SAFETY: non-null; for this attribute the caller passes an int.
        unsafe { value.cast::<c_int>().write_unaligned(v) }
    };
    let u64_ = |v: u64| {
        // SAFETY: non-null; for this attribute the caller passes a cuuint64_t.
        unsafe { value.cast::<u64>().write_unaligned(v) }
    };
    match attr {
        Attr::CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES => {
            int(s.reuse_follow_event_dependencies)
        }
        Attr::CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC => int(s.reuse_allow_opportunistic),
        Attr::CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES => {
            int(s.reuse_allow_internal_dependencies)
        }
        Attr::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD => u64_(s.release_threshold),
        Attr::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT => u64_(s.reserved),
        Attr::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH => u64_(s.reserved_high),
        Attr::CU_MEMPOOL_ATTR_USED_MEM_CURRENT => u64_(s.used),
        Attr::CU_MEMPOOL_ATTR_USED_MEM_HIGH => u64_(s.used_high),
        Attr::CU_MEMPOOL_ATTR_ALLOCATION_TYPE => {
            int(CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED.0 as c_int)
        }
        Attr::CU_MEMPOOL_ATTR_EXPORT_HANDLE_TYPES => int(0),
        Attr::CU_MEMPOOL_ATTR_LOCATION_ID => int(p.device),
        Attr::CU_MEMPOOL_ATTR_LOCATION_TYPE => {
            int(CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE.0 as c_int)
        }
        Attr::CU_MEMPOOL_ATTR_MAX_POOL_SIZE => u64_(p.max_size),
        Attr::CU_MEMPOOL_ATTR_HW_DECOMPRESS_ENABLED => int(0),
        _ => return Err(INVALID_VALUE),
    }
    Ok(())
}

/// `value` points to an int or a cuuint64_t, depending on the attribute.
pub unsafe fn pool_set_attribute(
    p: Live<Pool>,
    attr: Attr,
    value: In<c_void>,
) -> Result<(), CUresult> {
    let value = value.as_ptr();
    let mut s = p.state.lock();
    // SAFETY: non-null; for the int attributes the caller passes an int.
    let int = || unsafe { value.cast::<c_int>().read_unaligned() };
    // SAFETY: non-null; for the 64-bit attributes the caller passes a u64.
    let u64_ = || unsafe { value.cast::<u64>().read_unaligned() };
    match attr {
        Attr::CU_MEMPOOL_ATTR_REUSE_FOLLOW_EVENT_DEPENDENCIES => {
            s.reuse_follow_event_dependencies = c_int::from(int() != 0)
        }
        Attr::CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC => {
            s.reuse_allow_opportunistic = c_int::from(int() != 0)
        }
        Attr::CU_MEMPOOL_ATTR_REUSE_ALLOW_INTERNAL_DEPENDENCIES => {
            s.reuse_allow_internal_dependencies = c_int::from(int() != 0)
        }
        Attr::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD => s.release_threshold = u64_(),
        // Watermarks can only be reset, to the current value.
        Attr::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH if u64_() == 0 => s.reserved_high = s.reserved,
        Attr::CU_MEMPOOL_ATTR_USED_MEM_HIGH if u64_() == 0 => s.used_high = s.used,
        _ => return Err(INVALID_VALUE),
    }
    Ok(())
}

pub fn alloc_from_pool_async(
    dptr: Out<CUdeviceptr>,
    size: usize,
    p: Live<Pool>,
    s: Stream,
) -> Result<(), CUresult> {
    if p.device != s.ctx.device {
        return Err(INVALID_VALUE);
    }
    dptr.write(alloc_device(size, Some(p.0))?);
    Ok(())
}

/// From the current pool of the stream's device.
pub fn alloc_async(dptr: Out<CUdeviceptr>, size: usize, s: Stream) -> Result<(), CUresult> {
    let p = DEVICE.lock()[s.ctx.device as usize].current.clone();
    dptr.write(alloc_device(size, Some(p))?);
    Ok(())
}

/// Any device allocation may be freed in stream order; it is past its last
/// use already, since its stream is complete.
pub fn free_async(dptr: CUdeviceptr, _s: Stream) -> Result<(), CUresult> {
    let ptr = usize::try_from(dptr).map_err(|_| INVALID_VALUE)?;
    HEAP.write().free(ptr, Kind::Device)
}
