//! Small helpers the software GPU's entry points share (the panic boundary
//! and statuses are the FFI runtime's, `vgpu-ffi`).

use std::ffi::{c_char, CStr};
use std::sync::atomic::Ordering;

/// Writes `value` through a C out-pointer, or fails with `null_error` when the
/// caller passed null.
///
/// # Safety
/// `ptr` must be null or valid for a write of `T`.
pub unsafe fn write_out<T, E>(ptr: *mut T, value: T, null_error: E) -> Result<(), E> {
    if ptr.is_null() {
        return Err(null_error);
    }
    // SAFETY: non-null, and the caller guarantees it is writable.
    unsafe { ptr.write_unaligned(value) };
    Ok(())
}

/// Copies `s` plus a NUL into a C buffer of `len` bytes. `Err(needed)` when it
/// does not fit, so each API can map that to its own error code.
///
/// # Safety
/// `buf` must be valid for `len` bytes of writes.
pub unsafe fn write_c_string(buf: *mut c_char, len: usize, s: &str) -> Result<(), usize> {
    let needed = s.len() + 1;
    if buf.is_null() || len < needed {
        return Err(needed);
    }
    // SAFETY: `buf` holds at least `needed` bytes per the check above and the
    // caller's guarantee; the source is a distinct Rust string.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), s.len());
        *buf.add(s.len()) = 0;
    }
    Ok(())
}

/// Copies as much of `s` as fits plus a NUL, as `cuDeviceGetName` does.
///
/// # Safety
/// `buf` must be valid for `len` bytes of writes; `len` must be at least 1.
pub unsafe fn write_c_string_truncated(buf: *mut c_char, len: usize, s: &str) {
    let n = s.len().min(len - 1);
    // SAFETY: `n + 1 <= len` bytes are written into a buffer of `len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
}

/// Reads a NUL-terminated C string argument as UTF-8 (lossy is fine for the
/// identifiers it is used on, which are ASCII).
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string.
pub unsafe fn read_c_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated per the caller.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// A fresh opaque handle for an object the application names by pointer
/// (streams, events, memory pools). Handles are minted from one counter and
/// never reused, so a stale handle can never alias a newer object the way a
/// recycled heap address could; they are looked up, never dereferenced.
pub fn mint_handle() -> usize {
    use std::sync::atomic::AtomicUsize;
    /// Far above 0x1/0x2 (the built-in stream handles) and 16-aligned, so
    /// minted handles look like the pointers applications expect.
    const BASE: usize = 0x7e50_0000_0000;
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    BASE + NEXT.fetch_add(1, Ordering::Relaxed) * 16
}
