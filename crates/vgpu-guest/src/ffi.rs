//! The out-pointer writer the shims' bodies use where an argument is not
//! converted at the boundary (see `vgpu_ffi::convert`).

/// Pointer arguments are checked in one place: a null out-pointer is the
/// caller's error, reported with the API's own code.
pub trait OutPtr<T> {
    /// Writes `v` through the pointer, or fails with `err` when it is null.
    ///
    /// # Safety
    /// A non-null pointer must be valid for writing a `T` (the API contract
    /// of the entry point that received it).
    unsafe fn write_or<E>(self, v: T, err: E) -> Result<(), E>;
}

impl<T> OutPtr<T> for *mut T {
    unsafe fn write_or<E>(self, v: T, err: E) -> Result<(), E> {
        if self.is_null() {
            return Err(err);
        }
        // SAFETY: the caller guarantees a non-null pointer is writable.
        unsafe { self.write_unaligned(v) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_pointer_writes_or_refuses() {
        let mut v = 0u32;
        // SAFETY: a valid local and a null pointer.
        unsafe {
            assert_eq!((&mut v as *mut u32).write_or(7, ()), Ok(()));
            assert_eq!((std::ptr::null_mut::<u32>()).write_or(7, 1), Err(1));
        }
        assert_eq!(v, 7);
    }
}
