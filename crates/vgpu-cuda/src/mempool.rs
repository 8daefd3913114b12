//! Stream-ordered allocation and the device's default memory pool
//! (cudart's `cudaMallocAsync`, PyTorch's async allocator). A
//! `CUmemoryPool` the application holds is the host's u64 handle; the
//! guest only lets through handles the host gave it.

use crate::check::{self, reject, INVALID_VALUE};
use crate::devmem::{self, Kind, Range};
use crate::driver;
use crate::stream::{self, Null};
use cuda_types::cuda::{
    CUdevice, CUdeviceptr, CUmemPool_attribute, CUmemoryPool, CUresult, CUstream,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use vgpu_guest::ffi::OutPtr;
use vgpu_transport::proto::{
    DeviceGetDefaultMemPool, MemAllocAsync, MemFreeAsync, MemPoolGetAttribute, MemPoolSetAttribute,
    MemPoolTrimTo,
};

/// Default pool per guest ordinal, once asked.
static DEFAULTS: Mutex<Option<HashMap<CUdevice, u64>>> = Mutex::new(None);

/// The device's default pool: fixed for the session, so asked once.
pub fn default_pool(dev: CUdevice) -> Result<u64, CUresult> {
    let d = driver::get()?;
    let host = d.host_device(dev)?;
    if let Some(p) = DEFAULTS.lock().as_ref().and_then(|m| m.get(&dev).copied()) {
        return Ok(p);
    }
    let p = check::host(&DeviceGetDefaultMemPool { device: host })?;
    DEFAULTS
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(dev, p);
    Ok(p)
}

fn known_pool(pool: CUmemoryPool, what: &str) -> Result<u64, CUresult> {
    driver::get()?;
    let h = pool as u64;
    let known = DEFAULTS
        .lock()
        .as_ref()
        .is_some_and(|m| m.values().any(|&p| p == h));
    if known {
        Ok(h)
    } else {
        Err(reject(
            INVALID_VALUE,
            format_args!("{what}: {pool:p} is not a pool of this process"),
        ))
    }
}

pub unsafe fn device_get_default_mem_pool(
    out: *mut CUmemoryPool,
    dev: CUdevice,
) -> Result<(), CUresult> {
    driver::get()?.device(dev)?;
    if out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuDeviceGetDefaultMemPool: NULL out-pointer"),
        ));
    }
    let p = default_pool(dev)?;
    // SAFETY: checked non-null; writable by API contract.
    unsafe { out.write_or(p as CUmemoryPool, INVALID_VALUE) }
}

/// vgpu has no `cuDeviceSetMemPool`, so the current pool is the default.
pub unsafe fn device_get_mem_pool(out: *mut CUmemoryPool, dev: CUdevice) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { device_get_default_mem_pool(out, dev) }
}

/// The attributes that are `int` (or an enum) in the API: the reuse
/// switches, allocation/handle/location types and ids, decompression. The
/// sizes and thresholds are `cuuint64_t`.
fn is_int_attribute(attr: CUmemPool_attribute) -> bool {
    matches!(attr.0, 1..=3 | 9..=12 | 14 | 15)
}

pub unsafe fn get_attribute(
    pool: CUmemoryPool,
    attr: CUmemPool_attribute,
    value: *mut c_void,
) -> Result<(), CUresult> {
    let h = known_pool(pool, "cuMemPoolGetAttribute")?;
    if value.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemPoolGetAttribute: NULL value"),
        ));
    }
    let v = check::host(&MemPoolGetAttribute {
        pool: h,
        attr: attr.0,
    })?;
    // SAFETY: checked non-null; the API contract sizes `value` by the
    // attribute's type.
    unsafe {
        if is_int_attribute(attr) {
            value.cast::<c_int>().write_or(v as c_int, INVALID_VALUE)
        } else {
            value.cast::<u64>().write_or(v, INVALID_VALUE)
        }
    }
}

pub unsafe fn set_attribute(
    pool: CUmemoryPool,
    attr: CUmemPool_attribute,
    value: *mut c_void,
) -> Result<(), CUresult> {
    let h = known_pool(pool, "cuMemPoolSetAttribute")?;
    if value.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemPoolSetAttribute: NULL value"),
        ));
    }
    // SAFETY: non-null; the API contract sizes `value` by the attribute.
    let v = unsafe {
        if is_int_attribute(attr) {
            value.cast::<c_int>().read_unaligned() as u32 as u64
        } else {
            value.cast::<u64>().read_unaligned()
        }
    };
    check::host(&MemPoolSetAttribute {
        pool: h,
        attr: attr.0,
        value: v,
    })
}

pub fn trim_to(pool: CUmemoryPool, keep: usize) -> Result<(), CUresult> {
    let h = known_pool(pool, "cuMemPoolTrimTo")?;
    check::host(&MemPoolTrimTo {
        pool: h,
        keep: keep as u64,
    })
}

pub unsafe fn mem_alloc_async(
    out: *mut CUdeviceptr,
    size: usize,
    h: CUstream,
    null: Null,
) -> Result<(), CUresult> {
    driver::get()?;
    if out.is_null() || size == 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemAllocAsync: out {out:p}, {size} bytes"),
        ));
    }
    let t = stream::target(h, null)?;
    // The host answers with the address at once; the memory is usable in
    // stream order, which the host enforces.
    let ptr = check::host(&MemAllocAsync {
        ctx: t.ctx_remote,
        stream: t.stream,
        size: size as u64,
    })?;
    let device = t.ctx.device;
    let pool = DEFAULTS
        .lock()
        .as_ref()
        .and_then(|m| m.get(&device).copied())
        .unwrap_or(0);
    devmem::record(Range::new(
        ptr,
        size as u64,
        Kind::Async { pool },
        Some(t.ctx),
        device,
    ));
    // SAFETY: checked non-null; writable by API contract.
    unsafe { out.write_or(ptr, INVALID_VALUE) }
}

/// Leaves the table at once: from the application's view the pointer is
/// gone when the call returns, even though the host frees it in stream
/// order.
pub fn mem_free_async(ptr: CUdeviceptr, h: CUstream, null: Null) -> Result<(), CUresult> {
    let t = stream::target(h, null)?;
    let taken = devmem::take_base(ptr, |r| matches!(r.kind, Kind::Alloc | Kind::Async { .. }));
    let Some(range) = taken else {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuMemFreeAsync: {ptr:#x} is not the start of a live allocation"),
        ));
    };
    check::host(&MemFreeAsync {
        ctx: t.ctx_remote,
        stream: t.stream,
        ptr,
    })
    .inspect_err(|_| devmem::record(range.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_widths() {
        for a in [1, 2, 3] {
            assert!(is_int_attribute(CUmemPool_attribute(a)));
        }
        for a in [4, 5, 6, 7, 8, 13] {
            assert!(!is_int_attribute(CUmemPool_attribute(a)));
        }
    }
}
