//! Stream-ordered allocation and the device's default memory pool
//! (cudart's `cudaMallocAsync`, PyTorch's async allocator). A
//! `CUmemoryPool` the application holds is the host's u64 handle; the
//! guest only lets through handles the host gave it.

use crate::capture;
use crate::check::{self, reject, INVALID_VALUE};
use crate::devmem::{self, Kind, Range};
use crate::driver::Device;
use crate::graph::mem::{Alloc, GraphMem};
use crate::graph::node::Op;
use crate::stream::{self, Null, StreamArg};
use cuda_types::cuda::{CUdevice, CUdeviceptr, CUmemPool_attribute, CUmemoryPool, CUresult};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use vgpu_ffi::{FromCuda, In, Out};
use vgpu_transport::proto::{
    DeviceGetDefaultMemPool, MemAllocAsync, MemAllocFromPoolAsync, MemFreeAsync,
    MemPoolGetAttribute, MemPoolSetAttribute, MemPoolTrimTo,
};

/// Default pool per guest ordinal, once asked.
static DEFAULTS: Mutex<Option<HashMap<CUdevice, u64>>> = Mutex::new(None);

/// The device's default pool: fixed for the session, so asked once.
pub fn default_pool(dev: CUdevice) -> Result<u64, CUresult> {
    let host = Device::new(dev)?.host();
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

/// A `CUmemoryPool` argument: the host's handle of a pool this process
/// was given.
#[derive(Debug, Clone, Copy)]
pub struct Pool(u64);

impl FromCuda<CUmemoryPool, CUresult> for Pool {
    unsafe fn from_cuda(pool: CUmemoryPool) -> Result<Self, CUresult> {
        let h = pool as u64;
        let known = DEFAULTS
            .lock()
            .as_ref()
            .is_some_and(|m| m.values().any(|&p| p == h));
        if known {
            Ok(Pool(h))
        } else {
            Err(reject(
                INVALID_VALUE,
                format_args!("{pool:p} is not a memory pool of this process"),
            ))
        }
    }
}

/// `cuDeviceGetDefaultMemPool`, and `cuDeviceGetMemPool`: the only pool a
/// device can be given is its default (see [`device_set_mem_pool`]), so
/// the current pool is the default.
pub fn device_get_default_mem_pool(out: Out<CUmemoryPool>, dev: Device) -> Result<(), CUresult> {
    let p = default_pool(dev.ordinal)?;
    out.write(p as CUmemoryPool);
    Ok(())
}

/// `cuDeviceSetMemPool`. The pools a guest can name are the devices'
/// default pools ([`Pool`] admits no other: vgpu has no `cuMemPoolCreate`),
/// so making a device's own default pool current changes nothing, which is
/// what CuPy's `MemoryAsyncPool` does; another device's pool is refused as
/// the driver refuses a pool not local to the device. Nothing needs to
/// reach the host until pools can be created.
pub fn device_set_mem_pool(dev: Device, pool: Pool) -> Result<(), CUresult> {
    if default_pool(dev.ordinal)? == pool.0 {
        return Ok(());
    }
    Err(reject(
        INVALID_VALUE,
        format_args!(
            "cuDeviceSetMemPool: pool {:#x} is not local to device {}",
            pool.0, dev.ordinal
        ),
    ))
}

/// The attributes that are `int` (or an enum) in the API: the reuse
/// switches, allocation/handle/location types and ids, decompression. The
/// sizes and thresholds are `cuuint64_t`.
fn is_int_attribute(attr: CUmemPool_attribute) -> bool {
    matches!(attr.0, 1..=3 | 9..=12 | 14 | 15)
}

/// # Safety
/// `value` is valid for writing the attribute's type (API contract).
pub unsafe fn get_attribute(
    pool: Pool,
    attr: CUmemPool_attribute,
    value: Out<c_void>,
) -> Result<(), CUresult> {
    let v = check::host(&MemPoolGetAttribute {
        pool: pool.0,
        attr: attr.0,
    })?;
    let value = value.as_ptr();
    // SAFETY: non-null (converted); the API contract sizes `value` by the
    // attribute's type.
    unsafe {
        if is_int_attribute(attr) {
            value.cast::<c_int>().write_unaligned(v as c_int);
        } else {
            value.cast::<u64>().write_unaligned(v);
        }
    }
    Ok(())
}

/// # Safety
/// `value` is valid for reading the attribute's type (API contract).
pub unsafe fn set_attribute(
    pool: Pool,
    attr: CUmemPool_attribute,
    value: In<c_void>,
) -> Result<(), CUresult> {
    let value = value.as_ptr();
    // SAFETY: non-null (converted); the API contract sizes `value` by the
    // attribute.
    let v = unsafe {
        if is_int_attribute(attr) {
            value.cast::<c_int>().read_unaligned() as u32 as u64
        } else {
            value.cast::<u64>().read_unaligned()
        }
    };
    check::host(&MemPoolSetAttribute {
        pool: pool.0,
        attr: attr.0,
        value: v,
    })
}

pub fn trim_to(pool: Pool, keep: usize) -> Result<(), CUresult> {
    check::host(&MemPoolTrimTo {
        pool: pool.0,
        keep: keep as u64,
    })
}

pub fn mem_alloc_async(
    out: Out<CUdeviceptr>,
    size: usize,
    s: StreamArg,
    null: Null,
) -> Result<(), CUresult> {
    alloc_in_stream_order(out, size, None, s, null)
}

/// `cuMemAllocFromPoolAsync`: the same, from a pool the application names.
pub fn mem_alloc_from_pool_async(
    out: Out<CUdeviceptr>,
    size: usize,
    pool: Pool,
    s: StreamArg,
    null: Null,
) -> Result<(), CUresult> {
    alloc_in_stream_order(out, size, Some(pool), s, null)
}

/// Both stream-ordered allocations: the host answers with the address at
/// once; the memory is usable in stream order, which the host enforces.
fn alloc_in_stream_order(
    out: Out<CUdeviceptr>,
    size: usize,
    from: Option<Pool>,
    s: StreamArg,
    null: Null,
) -> Result<(), CUresult> {
    if size == 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("stream-ordered allocation of 0 bytes"),
        ));
    }
    let t = stream::target(&s, null)?;
    if let Some(sink) = capture::check(&t)? {
        // Graph memory: allocated now, the same address at every launch
        // (a pool the application named plays no part in a graph).
        let mem = GraphMem::allocate(t.ctx.clone(), size as u64)?;
        let ptr = mem.ptr;
        sink.add(Op::MemAlloc(Alloc::for_capture(mem)))?;
        out.write(ptr);
        return Ok(());
    }
    let (ctx, stream, size) = (t.ctx_remote, t.stream, size as u64);
    let device = t.ctx.device;
    let (ptr, pool) = match from {
        Some(Pool(pool)) => {
            let ptr = check::host(&MemAllocFromPoolAsync {
                ctx,
                stream,
                pool,
                size,
            })?;
            (ptr, pool)
        }
        None => {
            let ptr = check::host(&MemAllocAsync { ctx, stream, size })?;
            let pool = DEFAULTS
                .lock()
                .as_ref()
                .and_then(|m| m.get(&device).copied())
                .unwrap_or(0);
            (ptr, pool)
        }
    };
    devmem::record(Range::new(
        ptr,
        size,
        Kind::Async { pool },
        Some(t.ctx),
        device,
    ));
    out.write(ptr);
    Ok(())
}

/// Leaves the table at once: from the application's view the pointer is
/// gone when the call returns, even though the host frees it in stream
/// order.
pub fn mem_free_async(ptr: CUdeviceptr, s: StreamArg, null: Null) -> Result<(), CUresult> {
    let t = stream::target(&s, null)?;
    if let Some(sink) = capture::check(&t)? {
        // A free node; only memory a graph allocated can be freed in one.
        return match GraphMem::find(ptr) {
            Some(m) => sink.add(Op::MemFree(m)),
            None => Err(sink.refuse(INVALID_VALUE, "cuMemFreeAsync of memory no graph allocated")),
        };
    }
    if crate::graph::mem::free_outside(ptr) {
        return Ok(());
    }
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
