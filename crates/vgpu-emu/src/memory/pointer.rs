//! cuPointerGetAttribute(s): what the driver knows about an address.
//!
//! Device pointer == host address for every kind of memory here (unified
//! addressing), so DEVICE_POINTER is the pointer itself, and HOST_POINTER is
//! too wherever the memory is host memory.

use super::{Kind, HEAP};
use cuda_types::cuda::{CUdeviceptr, CUmemorytype, CUpointer_attribute as A, CUresult};
use std::ffi::{c_int, c_uint, c_void};
use vgpu_ffi::{In, Out};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const READWRITE: c_uint = 3;

#[derive(PartialEq, Eq)]
enum Class {
    Device,
    Host,
    Vmm,
}

/// Everything the attributes are computed from, copied out under the lock.
struct Info {
    class: Class,
    base: usize,
    len: usize,
    ctx: usize,
    buffer_id: u64,
    access: c_uint,
    handle_types: u64,
    pool: usize,
    /// CUDA ordinal of the device the memory belongs to.
    ordinal: c_int,
}

fn info(ptr: usize) -> Option<Info> {
    let heap = HEAP.read();
    if let Some((base, a)) = heap.containing(ptr) {
        return Some(Info {
            class: if a.kind == Kind::Device {
                Class::Device
            } else {
                Class::Host
            },
            base,
            len: a.len,
            ctx: a.ctx_handle,
            buffer_id: a.buffer_id,
            access: READWRITE,
            handle_types: 0,
            pool: a.pool.as_ref().map_or(0, |p| p.handle() as usize),
            ordinal: a.device,
        });
    }
    let v = heap.vmm.info(ptr)?;
    Some(Info {
        class: Class::Vmm,
        base: v.origin,
        len: v.origin_len,
        // VMM memory belongs to the device, not to a context.
        ctx: 0,
        buffer_id: v.handle,
        access: v.access,
        handle_types: u64::from(v.handle_types),
        pool: 0,
        ordinal: v.device,
    })
}

/// One attribute value, in the C type cuda.h gives it.
enum Value {
    Int(c_int),
    Uint(c_uint),
    U64(u64),
    /// Pointers, CUdeviceptr and size_t: all pointer-sized on LP64.
    Word(usize),
}

impl Value {
    /// # Safety
    /// `data` must be valid for a write of this value's C type.
    unsafe fn write(self, data: *mut c_void) {
        // SAFETY: per the caller, `data` fits the type written.
        unsafe {
            match self {
                Value::Int(v) => data.cast::<c_int>().write_unaligned(v),
                Value::Uint(v) => data.cast::<c_uint>().write_unaligned(v),
                Value::U64(v) => data.cast::<u64>().write_unaligned(v),
                Value::Word(v) => data.cast::<usize>().write_unaligned(v),
            }
        }
    }
}

/// The value for an address no allocation contains (cuPointerGetAttributes
/// reports those as zeros rather than failing), or an error for attributes
/// this driver does not answer at all.
fn zero(attr: A) -> Result<Value, CUresult> {
    Ok(match attr {
        A::CU_POINTER_ATTRIBUTE_CONTEXT
        | A::CU_POINTER_ATTRIBUTE_DEVICE_POINTER
        | A::CU_POINTER_ATTRIBUTE_HOST_POINTER
        | A::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR
        | A::CU_POINTER_ATTRIBUTE_RANGE_SIZE
        | A::CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE
        | A::CU_POINTER_ATTRIBUTE_MAPPING_SIZE
        | A::CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR => Value::Word(0),
        A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE | A::CU_POINTER_ATTRIBUTE_ACCESS_FLAGS => {
            Value::Uint(0)
        }
        A::CU_POINTER_ATTRIBUTE_BUFFER_ID
        | A::CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID
        // A 64-bit mask of CUmemAllocationHandleType.
        | A::CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES => Value::U64(0),
        A::CU_POINTER_ATTRIBUTE_SYNC_MEMOPS
        | A::CU_POINTER_ATTRIBUTE_IS_MANAGED
        | A::CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE
        | A::CU_POINTER_ATTRIBUTE_MAPPED
        | A::CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE
        | A::CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE => Value::Int(0),
        A::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL => Value::Int(-1),
        // nv-p2p tokens need the kernel interface of a real board.
        A::CU_POINTER_ATTRIBUTE_P2P_TOKENS => return Err(CUresult::CUDA_ERROR_NOT_SUPPORTED),
        _ => return Err(INVALID_VALUE),
    })
}

fn value(attr: A, ptr: usize, i: &Info) -> Result<Value, CUresult> {
    Ok(match attr {
        A::CU_POINTER_ATTRIBUTE_CONTEXT => Value::Word(i.ctx),
        A::CU_POINTER_ATTRIBUTE_MEMORY_TYPE => Value::Uint(match i.class {
            Class::Host => CUmemorytype::CU_MEMORYTYPE_HOST.0,
            Class::Device | Class::Vmm => CUmemorytype::CU_MEMORYTYPE_DEVICE.0,
        }),
        A::CU_POINTER_ATTRIBUTE_DEVICE_POINTER => Value::Word(ptr),
        // Device memory has no host mapping an application may use.
        A::CU_POINTER_ATTRIBUTE_HOST_POINTER if i.class == Class::Host => Value::Word(ptr),
        A::CU_POINTER_ATTRIBUTE_HOST_POINTER => return Err(INVALID_VALUE),
        A::CU_POINTER_ATTRIBUTE_BUFFER_ID | A::CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID => {
            Value::U64(i.buffer_id)
        }
        A::CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL => Value::Int(i.ordinal),
        A::CU_POINTER_ATTRIBUTE_RANGE_START_ADDR | A::CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR => {
            Value::Word(i.base)
        }
        A::CU_POINTER_ATTRIBUTE_RANGE_SIZE | A::CU_POINTER_ATTRIBUTE_MAPPING_SIZE => {
            Value::Word(i.len)
        }
        A::CU_POINTER_ATTRIBUTE_MAPPED => Value::Int(1),
        A::CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES => Value::U64(i.handle_types),
        A::CU_POINTER_ATTRIBUTE_ACCESS_FLAGS => Value::Uint(i.access),
        A::CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE => Value::Word(i.pool),
        // Not managed, no legacy IPC (cuIpcGetMemHandle is not emulated), no
        // RDMA, no decompression, no synchronous memops requested: the
        // zeros say exactly that.
        other => zero(other)?,
    })
}

/// `data` points to storage of the attribute's type.
pub unsafe fn pointer_get_attribute(
    data: Out<c_void>,
    attr: A,
    ptr: CUdeviceptr,
) -> Result<(), CUresult> {
    zero(attr)?;
    let p = usize::try_from(ptr).map_err(|_| INVALID_VALUE)?;
    let i = info(p).ok_or(INVALID_VALUE)?;
    let v = value(attr, p, &i)?;
    // SAFETY: non-null; the caller passes storage of the attribute's type.
    unsafe { v.write(data.as_ptr()) };
    Ok(())
}

/// `attrs` and `data` hold `count` entries; each slot of `data` points to
/// storage of its attribute's type.
pub unsafe fn pointer_get_attributes(
    count: c_uint,
    attrs: In<A>,
    data: In<*mut c_void>,
    ptr: CUdeviceptr,
) -> Result<(), CUresult> {
    if count == 0 {
        return Err(INVALID_VALUE);
    }
    let found = usize::try_from(ptr).ok().and_then(info);
    for k in 0..count as usize {
        // SAFETY: the caller passes `count` attributes and `count` slots.
        let (attr, slot) = unsafe {
            (
                attrs.as_ptr().add(k).read_unaligned(),
                data.as_ptr().add(k).read_unaligned(),
            )
        };
        if slot.is_null() {
            return Err(INVALID_VALUE);
        }
        let v = match &found {
            // An attribute a known pointer lacks (a device pointer's host
            // address) reads as its zero, as for unknown pointers.
            Some(i) => value(attr, ptr as usize, i).or_else(|_| zero(attr))?,
            None => zero(attr)?,
        };
        // SAFETY: non-null; the caller passes storage of the attribute's type.
        unsafe { v.write(slot) };
    }
    Ok(())
}
