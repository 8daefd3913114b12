//! The export boundary and the C-argument helpers every family shares.

use cuda_types::nvml::nvmlReturn_t;
use std::ffi::{c_char, c_uint};

pub const INVALID_ARGUMENT: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
pub const INSUFFICIENT_SIZE: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE;

/// The text part of a host string: NVML strings end at the first NUL.
fn text(s: &str) -> &[u8] {
    let b = s.as_bytes();
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// NVML's rule for caller buffers: the text and its NUL must fit, else
/// INSUFFICIENT_SIZE and nothing is written.
pub fn fits(length: c_uint, s: &str) -> Result<(), nvmlReturn_t> {
    if (length as usize) < text(s).len() + 1 {
        Err(INSUFFICIENT_SIZE)
    } else {
        Ok(())
    }
}

/// Copies `s` NUL-terminated into the caller's `buf` of `length` bytes.
///
/// # Safety
/// A non-null `buf` must be writable for `length` bytes.
pub unsafe fn copy_str(buf: *mut c_char, length: c_uint, s: &str) -> Result<(), nvmlReturn_t> {
    if buf.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    fits(length, s)?;
    let t = text(s);
    // SAFETY: `fits` checked that `t.len() + 1 <= length`, the writable size
    // the caller promised; `t` is our own memory, so they cannot overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(t.as_ptr(), buf.cast::<u8>(), t.len());
        buf.add(t.len()).write(0);
    }
    Ok(())
}

/// Writes `v` through an out-pointer; null is the caller's error.
///
/// # Safety
/// A non-null `p` must be valid for writing a `T`.
pub unsafe fn put<T>(p: *mut T, v: T) -> Result<(), nvmlReturn_t> {
    use vgpu_guest::ffi::OutPtr;
    // SAFETY: forwarded from the caller.
    unsafe { p.write_or(v, INVALID_ARGUMENT) }
}

/// Reads a NUL-terminated C string argument; null or non-UTF-8 text is an
/// invalid argument.
///
/// # Safety
/// A non-null `p` must point to a NUL-terminated string.
pub unsafe fn arg_str<'a>(p: *const c_char) -> Result<&'a str, nvmlReturn_t> {
    if p.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null and NUL-terminated per the caller.
    let c = unsafe { std::ffi::CStr::from_ptr(p) };
    c.to_str().map_err(|_| INVALID_ARGUMENT)
}

/// A host value into a C `unsigned int`; out-of-range values saturate
/// rather than wrap into something plausible-looking.
pub fn uint(v: u64) -> c_uint {
    c_uint::try_from(v).unwrap_or(c_uint::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_copy_follows_nvml_size_rule() {
        let mut buf = [0x55 as c_char; 8];
        // SAFETY: `buf` is a local of the length passed.
        unsafe {
            assert_eq!(copy_str(buf.as_mut_ptr(), 8, "1234567"), Ok(()));
            assert_eq!(buf[7], 0);
            assert_eq!(buf[6], b'7' as c_char);
            let mut small = [0x55 as c_char; 8];
            assert_eq!(
                copy_str(small.as_mut_ptr(), 7, "1234567"),
                Err(INSUFFICIENT_SIZE)
            );
            assert!(small.iter().all(|&c| c == 0x55), "nothing written");
            assert_eq!(
                copy_str(std::ptr::null_mut(), 80, "x"),
                Err(INVALID_ARGUMENT)
            );
            assert_eq!(copy_str(buf.as_mut_ptr(), 1, ""), Ok(()));
            assert_eq!(buf[0], 0);
        }
        assert_eq!(fits(0, ""), Err(INSUFFICIENT_SIZE));
        // An embedded NUL ends the string, as it would for a C reader.
        assert_eq!(fits(2, "a\0bcdef"), Ok(()));
    }

    #[test]
    fn uint_saturates() {
        assert_eq!(uint(7), 7);
        assert_eq!(uint(u64::MAX), c_uint::MAX);
    }

    #[test]
    fn out_pointer_null_is_invalid_argument() {
        let mut v = 0u32;
        // SAFETY: a valid local and a null pointer.
        unsafe {
            assert_eq!(put(&mut v as *mut u32, 3), Ok(()));
            assert_eq!(put(std::ptr::null_mut::<u32>(), 3), Err(INVALID_ARGUMENT));
        }
        assert_eq!(v, 3);
    }
}
