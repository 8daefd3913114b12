//! Arguments converted once, at the boundary, before an implementation
//! runs.
//!
//! The generated export of an implemented entry point passes every C
//! argument through [`FromCuda`] into the type the implementation's
//! parameter declares, and returns the conversion's error before the body
//! runs. So a body that takes [`Out<T>`] never sees a NULL out-pointer, one
//! that takes `&CStr` never sees a NULL string, and one that takes a cdylib's
//! own handle type (a live stream, a resolved NVML device) never sees a
//! stale handle; a body that wants the raw value declares the raw C type,
//! which passes through unchanged.
//!
//! Each cdylib adds conversions for its own handle types by implementing
//! `FromCuda<CHandle, Status> for TheirType` (orphan rules require the
//! target to be a local type, so wrap an `Arc` in a local newtype).

use crate::status::Status;
use std::ffi::{c_char, CStr};
use std::marker::PhantomData;
use std::ptr::NonNull;

/// One C argument → what an implementation takes, or the status the call
/// fails with.
pub trait FromCuda<C, S: Status>: Sized {
    /// # Safety
    /// `c` is an argument an application passed under the entry point's C
    /// contract: a non-null pointer is valid for the accesses the API
    /// documents for it, for the duration of the call.
    unsafe fn from_cuda(c: C) -> Result<Self, S>;
}

/// What the generated exports call: `from_cuda::<_, _, CUresult>(arg)?`
/// (the status type is named because `?` cannot infer it).
///
/// # Safety
/// As [`FromCuda::from_cuda`].
#[inline]
pub unsafe fn from_cuda<C, T: FromCuda<C, S>, S: Status>(c: C) -> Result<T, S> {
    // SAFETY: forwarded from the caller.
    unsafe { T::from_cuda(c) }
}

/// Plain values (integers, enums, raw pointers an implementation checks
/// itself) pass through.
impl<T, S: Status> FromCuda<T, S> for T {
    #[inline]
    unsafe fn from_cuda(c: T) -> Result<T, S> {
        Ok(c)
    }
}

/// A non-NULL out-pointer (NULL is the API's invalid-argument code). Writes
/// and reads are unaligned: a C caller may hand any address.
pub struct Out<'a, T> {
    ptr: NonNull<T>,
    _borrow: PhantomData<&'a mut T>,
}

impl<T> Out<'_, T> {
    /// Stores the result.
    #[inline]
    pub fn write(&self, v: T) {
        // SAFETY: non-null, and writable for the call per `from_cuda`'s
        // contract; unaligned because C does not promise alignment.
        unsafe { self.ptr.as_ptr().write_unaligned(v) }
    }

    /// Reads what the caller put there (versioned in/out structs carry
    /// their version in).
    #[inline]
    pub fn read(&self) -> T
    where
        T: Copy,
    {
        // SAFETY: as in `write`; in/out parameters are readable too.
        unsafe { self.ptr.as_ptr().read_unaligned() }
    }

    /// The pointer, for handing on to code that takes raw pointers.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }
}

impl<T, S: Status> FromCuda<*mut T, S> for Out<'_, T> {
    #[inline]
    unsafe fn from_cuda(c: *mut T) -> Result<Self, S> {
        NonNull::new(c)
            .map(|ptr| Out {
                ptr,
                _borrow: PhantomData,
            })
            .ok_or(S::INVALID_ARGUMENT)
    }
}

/// An out-pointer the API allows to be NULL (the result is then not
/// wanted).
impl<T, S: Status> FromCuda<*mut T, S> for Option<Out<'_, T>> {
    #[inline]
    unsafe fn from_cuda(c: *mut T) -> Result<Self, S> {
        Ok(NonNull::new(c).map(|ptr| Out {
            ptr,
            _borrow: PhantomData,
        }))
    }
}

/// A non-NULL pointer to an input the implementation reads (a struct of
/// parameters).
pub struct In<'a, T> {
    ptr: NonNull<T>,
    _borrow: PhantomData<&'a T>,
}

impl<T: Copy> In<'_, T> {
    #[inline]
    pub fn read(&self) -> T {
        // SAFETY: non-null and readable per `from_cuda`'s contract.
        unsafe { self.ptr.as_ptr().read_unaligned() }
    }
}

impl<T> In<'_, T> {
    pub fn as_ptr(&self) -> *const T {
        self.ptr.as_ptr()
    }
}

impl<T, S: Status> FromCuda<*const T, S> for In<'_, T> {
    #[inline]
    unsafe fn from_cuda(c: *const T) -> Result<Self, S> {
        NonNull::new(c.cast_mut())
            .map(|ptr| In {
                ptr,
                _borrow: PhantomData,
            })
            .ok_or(S::INVALID_ARGUMENT)
    }
}

/// An input pointer the API allows to be NULL (optional parameters).
impl<T, S: Status> FromCuda<*const T, S> for Option<In<'_, T>> {
    #[inline]
    unsafe fn from_cuda(c: *const T) -> Result<Self, S> {
        Ok(NonNull::new(c.cast_mut()).map(|ptr| In {
            ptr,
            _borrow: PhantomData,
        }))
    }
}

impl<T, S: Status> FromCuda<*mut T, S> for Option<In<'_, T>> {
    #[inline]
    unsafe fn from_cuda(c: *mut T) -> Result<Self, S> {
        // SAFETY: forwarded from the caller.
        unsafe { <Self as FromCuda<*const T, S>>::from_cuda(c.cast_const()) }
    }
}

impl<T, S: Status> FromCuda<*mut T, S> for In<'_, T> {
    #[inline]
    unsafe fn from_cuda(c: *mut T) -> Result<Self, S> {
        // SAFETY: forwarded from the caller.
        unsafe { <Self as FromCuda<*const T, S>>::from_cuda(c.cast_const()) }
    }
}

/// A NUL-terminated string argument.
impl<S: Status> FromCuda<*const c_char, S> for &CStr {
    #[inline]
    unsafe fn from_cuda(c: *const c_char) -> Result<Self, S> {
        if c.is_null() {
            return Err(S::INVALID_ARGUMENT);
        }
        // SAFETY: non-null and NUL-terminated per the C contract.
        Ok(unsafe { CStr::from_ptr(c) })
    }
}

/// A string argument the API allows to be NULL.
impl<S: Status> FromCuda<*const c_char, S> for Option<&CStr> {
    #[inline]
    unsafe fn from_cuda(c: *const c_char) -> Result<Self, S> {
        if c.is_null() {
            return Ok(None);
        }
        // SAFETY: non-null and NUL-terminated per the C contract.
        Ok(Some(unsafe { CStr::from_ptr(c) }))
    }
}

/// Copies as much of `s` as fits in `len` bytes plus a NUL — the driver's
/// rule for `cuDeviceGetName` and friends. Nothing is written when `len` is
/// 0.
///
/// # Safety
/// `buf` must be valid for writing `len` bytes.
pub unsafe fn copy_truncated(buf: NonNull<c_char>, len: usize, s: &[u8]) {
    if len == 0 {
        return;
    }
    let n = s.len().min(len - 1);
    // SAFETY: `n + 1 <= len` bytes into a buffer of `len` bytes; `s` is
    // Rust memory, so the ranges cannot overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.as_ptr().cast::<u8>(), n);
        buf.as_ptr().add(n).write(0);
    }
}

/// Copies `s` and its NUL when both fit in `len` bytes — NVML's rule —
/// else writes nothing and returns the size needed.
///
/// # Safety
/// `buf` must be valid for writing `len` bytes.
pub unsafe fn copy_fitting(buf: NonNull<c_char>, len: usize, s: &[u8]) -> Result<(), usize> {
    let needed = s.len() + 1;
    if len < needed {
        return Err(needed);
    }
    // SAFETY: `needed <= len`.
    unsafe { copy_truncated(buf, len, s) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cuda_types::cuda::CUresult;
    use cuda_types::nvml::nvmlReturn_t;

    fn conv<C, T: FromCuda<C, CUresult>>(c: C) -> Result<T, CUresult> {
        // SAFETY: the tests pass NULL or pointers to live locals.
        unsafe { from_cuda::<C, T, CUresult>(c) }
    }

    #[test]
    fn out_pointers() {
        let mut v = 0u64;
        let out: Out<u64> = conv(&mut v as *mut u64).unwrap();
        out.write(7);
        assert_eq!(out.read(), 7);
        assert_eq!(v, 7);
        assert_eq!(
            conv::<_, Out<u64>>(std::ptr::null_mut::<u64>()).err(),
            Some(CUresult::CUDA_ERROR_INVALID_VALUE)
        );
        let none: Option<Out<u64>> = conv(std::ptr::null_mut::<u64>()).unwrap();
        assert!(none.is_none());
        // SAFETY: NULL, refused before any access.
        let nv = unsafe { from_cuda::<_, Out<u32>, nvmlReturn_t>(std::ptr::null_mut::<u32>()) };
        assert_eq!(nv.err(), Some(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT));
    }

    #[test]
    fn unaligned_out_pointer() {
        let mut bytes = [0u8; 16];
        let p = bytes.as_mut_ptr().wrapping_add(1).cast::<u64>();
        let out: Out<u64> = conv(p).unwrap();
        out.write(u64::MAX);
        assert_eq!(&bytes[1..9], &[0xff; 8]);
        assert_eq!(bytes[0], 0);
        assert_eq!(bytes[9], 0);
    }

    #[test]
    fn inputs_strings_and_plain_values() {
        let x = 5i32;
        let i: In<i32> = conv(&x as *const i32).unwrap();
        assert_eq!(i.read(), 5);
        assert!(conv::<_, In<i32>>(std::ptr::null::<i32>()).is_err());
        let none: Option<In<i32>> = conv(std::ptr::null::<i32>()).unwrap();
        assert!(none.is_none());
        let some: Option<In<i32>> = conv(&x as *const i32).unwrap();
        assert_eq!(some.map(|i| i.read()), Some(5));
        let s: &CStr = conv(c"abc".as_ptr()).unwrap();
        assert_eq!(s, c"abc");
        assert!(conv::<_, &CStr>(std::ptr::null::<c_char>()).is_err());
        let o: Option<&CStr> = conv(std::ptr::null::<c_char>()).unwrap();
        assert!(o.is_none());
        let raw: *mut u8 = conv(std::ptr::null_mut::<u8>()).unwrap();
        assert!(raw.is_null());
        assert_eq!(conv::<_, u32>(9u32), Ok(9));
    }

    #[test]
    fn string_copies() {
        let mut buf = [0x55 as c_char; 8];
        let p = NonNull::new(buf.as_mut_ptr()).unwrap();
        // SAFETY: `buf` has the lengths passed.
        unsafe {
            copy_truncated(p, 4, b"abcdef");
            assert_eq!(&buf[..5], &[97, 98, 99, 0, 0x55]);
            assert_eq!(copy_fitting(p, 6, b"abcdef"), Err(7));
            assert_eq!(buf[3], 0, "nothing written on refusal");
            assert_eq!(copy_fitting(p, 8, b"abcdef"), Ok(()));
            assert_eq!(buf[6], 0);
            copy_truncated(p, 0, b"x");
            assert_eq!(buf[0], 97);
        }
    }
}
