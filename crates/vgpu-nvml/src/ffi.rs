//! NVML's rules for what the shim writes back to C, where `vgpu_ffi` leaves
//! the rule to each API: strings into caller buffers, and host integers
//! into C types (`vgpu_ffi::convert` checks the pointers themselves).

use cuda_types::nvml::*;
use std::ffi::{c_char, c_uint, c_ulonglong};
use std::ptr::NonNull;
use vgpu_ffi::convert::copy_fitting;
use vgpu_ffi::Out;

/// The text part of a host string: NVML strings end at the first NUL.
fn text(s: &str) -> &[u8] {
    let b = s.as_bytes();
    match b.iter().position(|&c| c == 0) {
        Some(n) => &b[..n],
        None => b,
    }
}

/// Copies `s` into the caller's buffer of `length` bytes by NVML's rule:
/// the text and its NUL must fit, else INSUFFICIENT_SIZE and nothing is
/// written.
///
/// # Safety
/// `buf` must be writable for `length` bytes (the entry point's contract
/// for the pair; the conversion only checked it is not NULL).
pub unsafe fn put_str(buf: Out<c_char>, length: c_uint, s: &str) -> Result<(), nvmlReturn_t> {
    // SAFETY: an `Out` is never NULL; the caller promised `length` bytes.
    unsafe {
        copy_fitting(
            NonNull::new_unchecked(buf.as_ptr()),
            length as usize,
            text(s),
        )
    }
    .map_err(|_| nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE)
}

/// A host value into a C `unsigned int`; out-of-range values saturate
/// rather than wrap into something plausible-looking.
pub fn uint(v: u64) -> c_uint {
    c_uint::try_from(v).unwrap_or(c_uint::MAX)
}

/// A C type a single-value getter writes, made from the host's 64-bit
/// answer (or a fact of the inventory widened to 64 bits).
pub trait Answer {
    fn from_answer(v: u64) -> Self;
}

impl Answer for c_uint {
    fn from_answer(v: u64) -> Self {
        uint(v)
    }
}

impl Answer for c_ulonglong {
    fn from_answer(v: u64) -> Self {
        v
    }
}

/// NVML's enums are `unsigned int`s in C (bindgen newtypes here).
macro_rules! enum_answers {
    ($($t:ty),*) => {
        $(impl Answer for $t {
            fn from_answer(v: u64) -> Self {
                Self(uint(v))
            }
        })*
    };
}

enum_answers!(
    nvmlEnableState_t,
    nvmlPstates_t,
    nvmlComputeMode_t,
    nvmlBrandType_t
);

#[cfg(test)]
mod tests {
    use super::*;

    fn out(buf: &mut [c_char]) -> Out<'_, c_char> {
        // SAFETY: a live local buffer.
        unsafe { vgpu_ffi::from_cuda::<_, Out<c_char>, nvmlReturn_t>(buf.as_mut_ptr()) }.unwrap()
    }

    #[test]
    fn string_copy_follows_nvml_size_rule() {
        let mut buf = [0x55 as c_char; 8];
        // SAFETY: each buffer is a local at least as long as the length passed.
        unsafe {
            assert_eq!(put_str(out(&mut buf), 8, "1234567"), Ok(()));
            assert_eq!(buf[7], 0);
            assert_eq!(buf[6], b'7' as c_char);
            let mut small = [0x55 as c_char; 8];
            assert_eq!(
                put_str(out(&mut small), 7, "1234567"),
                Err(nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE)
            );
            assert!(small.iter().all(|&c| c == 0x55), "nothing written");
            assert_eq!(
                put_str(out(&mut small), 0, ""),
                Err(nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE)
            );
            assert_eq!(put_str(out(&mut buf), 1, ""), Ok(()));
            assert_eq!(buf[0], 0);
            // An embedded NUL ends the string, as it would for a C reader.
            let mut two = [0x55 as c_char; 3];
            assert_eq!(put_str(out(&mut two), 2, "a\0bcdef"), Ok(()));
            assert_eq!(two, [b'a' as c_char, 0, 0x55]);
        }
    }

    #[test]
    fn answers_saturate_into_c_widths() {
        assert_eq!(uint(7), 7);
        assert_eq!(uint(u64::MAX), c_uint::MAX);
        assert_eq!(<c_uint as Answer>::from_answer(1 << 40), c_uint::MAX);
        assert_eq!(<c_ulonglong as Answer>::from_answer(1 << 40), 1 << 40);
        assert_eq!(
            nvmlEnableState_t::from_answer(1),
            nvmlEnableState_t::NVML_FEATURE_ENABLED
        );
    }
}
