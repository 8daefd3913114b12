//! `cuPointerGetAttribute(s)`, answered from the guest's tables: device
//! ranges the host handed out (VMM mappings included) and host memory the
//! guest allocated or registered. No round trip.
//!
//! Value types follow cuda.h; the "boolean" attributes are written as
//! `unsigned int`, the width applications pass for them.

use crate::check::{reject, INVALID_VALUE, NOT_SUPPORTED};
use crate::devmem::{self, Kind};
use crate::host_memory::{self, HostRange};
use crate::mempool;
use cuda_types::cuda::{CUdeviceptr, CUpointer_attribute, CUresult};
use std::ffi::{c_uint, c_void};
use vgpu_ffi::{In, Out};

const MEMORYTYPE_HOST: u32 = 1;
const MEMORYTYPE_DEVICE: u32 = 2;
/// `CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE`.
const ACCESS_FLAG_READWRITE: u32 = 3;

/// A value and the C type it is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    U32(u32),
    I32(i32),
    U64(u64),
    Ptr(usize),
}

impl Value {
    /// # Safety
    /// `out` must be non-null and valid for writing the value's type.
    unsafe fn write(self, out: *mut c_void) {
        // SAFETY: forwarded caller contract; unaligned, as C promises no
        // alignment.
        unsafe {
            match self {
                Value::U32(v) => out.cast::<u32>().write_unaligned(v),
                Value::I32(v) => out.cast::<i32>().write_unaligned(v),
                Value::U64(v) => out.cast::<u64>().write_unaligned(v),
                Value::Ptr(v) => out.cast::<usize>().write_unaligned(v),
            }
        }
    }
}

/// What an address is, as far as this process knows.
pub enum Owner {
    Device(devmem::Range),
    Host(HostRange),
}

pub fn owner(ptr: u64) -> Option<Owner> {
    if let Some(r) = devmem::find(ptr) {
        return Some(Owner::Device(r));
    }
    host_memory::find(ptr as usize).map(Owner::Host)
}

/// The zero value of an attribute's type: what the plural call reports for
/// memory CUDA does not know.
fn null_of(attr: u32) -> Option<Value> {
    Some(match attr {
        1 | 3 | 4 | 11 | 17 | 19 => Value::Ptr(0),
        7 | 12 | 14 | 18 | 20 => Value::U64(0),
        9 | 22 => Value::I32(0),
        2 | 6 | 8 | 10 | 13 | 15 | 16 | 21 => Value::U32(0),
        _ => return None,
    })
}

/// One attribute of a known pointer.
pub fn value(o: &Owner, ptr: u64, attr: u32) -> Result<Value, CUresult> {
    let what = "cuPointerGetAttribute";
    match o {
        Owner::Device(r) => {
            let vmm = matches!(r.kind, Kind::Mapped { .. });
            Ok(match attr {
                1 => Value::Ptr(r.ctx.as_ref().map_or(0, |c| c.handle() as usize)),
                2 => Value::U32(MEMORYTYPE_DEVICE),
                3 => Value::U64(ptr),
                4 => {
                    return Err(reject(
                        INVALID_VALUE,
                        format_args!("{what}: device memory {ptr:#x} has no host pointer"),
                    ))
                }
                6 | 8 | 10 | 15 | 21 => Value::U32(0),
                7 | 20 => Value::U64(r.id),
                9 => Value::I32(r.device),
                11 | 19 => Value::Ptr(r.base as usize),
                12 | 18 => Value::U64(r.size),
                13 => Value::U32(1),
                14 => Value::U64(0),
                16 if vmm => Value::U32(r.access),
                16 => Value::U32(ACCESS_FLAG_READWRITE),
                17 => match r.kind {
                    Kind::Async { pool: 0 } => {
                        Value::Ptr(mempool::default_pool(r.device).unwrap_or(0) as usize)
                    }
                    Kind::Async { pool } => Value::Ptr(pool as usize),
                    _ => Value::Ptr(0),
                },
                5 => {
                    return Err(reject(
                        NOT_SUPPORTED,
                        format_args!("{what}: P2P tokens need a local GPU"),
                    ))
                }
                a => return Err(reject(INVALID_VALUE, format_args!("{what}: attribute {a}"))),
            })
        }
        Owner::Host(h) => Ok(match attr {
            1 => Value::Ptr(h.ctx.handle() as usize),
            2 => Value::U32(MEMORYTYPE_HOST),
            3 => {
                return Err(reject(
                    NOT_SUPPORTED,
                    format_args!(
                        "{what}: guest memory {ptr:#x} has no device pointer on a remote GPU"
                    ),
                ))
            }
            4 => Value::Ptr(ptr as usize),
            6 | 8 | 10 | 15 | 21 => Value::U32(0),
            7 | 20 => Value::U64(h.id),
            9 => Value::I32(h.ctx.device),
            11 | 19 => Value::Ptr(h.base),
            12 | 18 => Value::U64(h.size as u64),
            13 => Value::U32(1),
            14 => Value::U64(0),
            16 => Value::U32(ACCESS_FLAG_READWRITE),
            17 => Value::Ptr(0),
            5 => {
                return Err(reject(
                    NOT_SUPPORTED,
                    format_args!("{what}: P2P tokens need a local GPU"),
                ))
            }
            a => return Err(reject(INVALID_VALUE, format_args!("{what}: attribute {a}"))),
        }),
    }
}

/// Unknown memory is CUDA_ERROR_INVALID_VALUE, as on the real driver.
///
/// # Safety
/// `data` is valid for writing the attribute's type (API contract).
pub unsafe fn get_attribute(
    data: Out<c_void>,
    attr: CUpointer_attribute,
    ptr: CUdeviceptr,
) -> Result<(), CUresult> {
    let o = owner(ptr).ok_or_else(|| {
        reject(
            INVALID_VALUE,
            format_args!(
                "cuPointerGetAttribute: {ptr:#x} is neither device nor page-locked memory"
            ),
        )
    })?;
    let v = value(&o, ptr, attr.0)?;
    // SAFETY: non-null (converted); the API contract sizes `data` by
    // attribute.
    unsafe { v.write(data.as_ptr()) };
    Ok(())
}

/// Unlike the singular call, unknown memory is not an error: every
/// attribute reads as its type's zero, and an attribute that does not
/// apply to this memory (a host pointer of device memory) likewise — this
/// is how cudart's `cudaPointerGetAttributes` learns "unregistered".
///
/// # Safety
/// `attrs` and `data` hold `n` entries, each `data[i]` NULL or valid for
/// writing its attribute's type (API contract).
pub unsafe fn get_attributes(
    n: c_uint,
    attrs: In<CUpointer_attribute>,
    data: In<*mut c_void>,
    ptr: CUdeviceptr,
) -> Result<(), CUresult> {
    if n == 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuPointerGetAttributes: 0 attributes"),
        ));
    }
    let o = owner(ptr);
    for i in 0..n as usize {
        // SAFETY: the app passes n attributes and n data pointers (API
        // contract).
        let (a, out) = unsafe { ((*attrs.as_ptr().add(i)).0, *data.as_ptr().add(i)) };
        if out.is_null() {
            return Err(reject(
                INVALID_VALUE,
                format_args!("cuPointerGetAttributes: NULL data[{i}]"),
            ));
        }
        let v = match &o {
            Some(o) => match value(o, ptr, a) {
                Ok(v) => v,
                Err(e) if e == NOT_SUPPORTED && a == 5 => return Err(e),
                Err(_) => null_of(a).ok_or(INVALID_VALUE)?,
            },
            None => null_of(a).ok_or_else(|| {
                reject(
                    INVALID_VALUE,
                    format_args!("cuPointerGetAttributes: attribute {a}"),
                )
            })?,
        };
        // SAFETY: non-null; sized by the attribute (API contract).
        unsafe { v.write(out) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::state::{register, Context, Kind as CtxKind, API_VERSION};
    use crate::devmem::Range;

    #[test]
    fn device_attributes() {
        let ctx = register(Context::new(CtxKind::Created, 0, 0, 0, API_VERSION));
        let r = Range::new(0x10_000, 0x1000, Kind::Alloc, Some(ctx.clone()), 0);
        let id = r.id;
        let o = Owner::Device(r);
        let p = 0x10_010;
        assert_eq!(value(&o, p, 1), Ok(Value::Ptr(ctx.handle() as usize)));
        assert_eq!(value(&o, p, 2), Ok(Value::U32(MEMORYTYPE_DEVICE)));
        assert_eq!(value(&o, p, 3), Ok(Value::U64(p)));
        assert_eq!(value(&o, p, 4), Err(INVALID_VALUE));
        assert_eq!(value(&o, p, 5), Err(NOT_SUPPORTED));
        assert_eq!(value(&o, p, 7), Ok(Value::U64(id)));
        assert_eq!(value(&o, p, 8), Ok(Value::U32(0)));
        assert_eq!(value(&o, p, 9), Ok(Value::I32(0)));
        assert_eq!(value(&o, p, 11), Ok(Value::Ptr(0x10_000)));
        assert_eq!(value(&o, p, 12), Ok(Value::U64(0x1000)));
        assert_eq!(value(&o, p, 16), Ok(Value::U32(ACCESS_FLAG_READWRITE)));
        assert_eq!(value(&o, p, 99), Err(INVALID_VALUE));
        let mut m = Range::new(
            0x20_000,
            0x200_000,
            Kind::Mapped {
                handle: 5,
                offset: 0,
            },
            None,
            0,
        );
        m.access = 1;
        let o = Owner::Device(m);
        assert_eq!(value(&o, 0x20_000, 1), Ok(Value::Ptr(0)));
        assert_eq!(value(&o, 0x20_000, 16), Ok(Value::U32(1)));
        assert_eq!(value(&o, 0x20_000, 18), Ok(Value::U64(0x200_000)));
    }

    #[test]
    fn null_values_cover_the_plural_defaults() {
        for a in 1..=22 {
            if a == 5 {
                assert_eq!(null_of(a), None);
            } else {
                assert!(null_of(a).is_some(), "{a}");
            }
        }
        assert_eq!(null_of(23), None);
    }

    #[test]
    fn values_are_written_at_their_width() {
        let mut buf = [0xffu8; 9];
        // SAFETY: a 9-byte local buffer fits every value type at offset 1.
        unsafe {
            Value::U32(7).write(buf.as_mut_ptr().cast());
            assert_eq!(buf[..8], [7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
            Value::U64(0x0102).write(buf.as_mut_ptr().add(1).cast());
            assert_eq!(buf, [7, 2, 1, 0, 0, 0, 0, 0, 0]);
        }
    }
}
