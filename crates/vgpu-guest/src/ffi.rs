//! The panic boundary and the NOT_SUPPORTED stub behaviour every export of
//! both shims goes through (named in their `export_functions!` lists).

use crate::log::Level;
use crate::vlog;
use cuda_types::cuda::CUresult;
use cuda_types::nvml::nvmlReturn_t;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs an implementation; a panic becomes `CUDA_ERROR_UNKNOWN` and a log
/// line instead of unwinding into C.
pub fn cuda_boundary(name: &'static str, f: impl FnOnce() -> Result<(), CUresult>) -> CUresult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CUresult::CUDA_SUCCESS,
        Ok(Err(e)) => {
            vlog!(Level::Trace, "{name} -> {}", e.0);
            e
        }
        Err(p) => {
            vlog!(Level::Error, "{name}: internal panic: {}", panic_text(&p));
            CUresult::CUDA_ERROR_UNKNOWN
        }
    }
}

pub fn cuda_not_supported(name: &'static str, logged: &AtomicBool) -> CUresult {
    if !logged.swap(true, Ordering::Relaxed) {
        vlog!(
            Level::Warn,
            "{name} is not supported by vgpu (CUDA_ERROR_NOT_SUPPORTED)"
        );
    }
    CUresult::CUDA_ERROR_NOT_SUPPORTED
}

pub fn nvml_boundary(
    name: &'static str,
    f: impl FnOnce() -> Result<(), nvmlReturn_t>,
) -> nvmlReturn_t {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => nvmlReturn_t::NVML_SUCCESS,
        Ok(Err(e)) => {
            vlog!(Level::Trace, "{name} -> {}", e.0);
            e
        }
        Err(p) => {
            vlog!(Level::Error, "{name}: internal panic: {}", panic_text(&p));
            nvmlReturn_t::NVML_ERROR_UNKNOWN
        }
    }
}

pub fn nvml_not_supported(name: &'static str, logged: &AtomicBool) -> nvmlReturn_t {
    if !logged.swap(true, Ordering::Relaxed) {
        vlog!(
            Level::Warn,
            "{name} is not supported by vgpu (NVML_ERROR_NOT_SUPPORTED)"
        );
    }
    nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".into()
    }
}

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
    fn panics_become_codes() {
        let r = cuda_boundary("t", || panic!("boom"));
        assert_eq!(r, CUresult::CUDA_ERROR_UNKNOWN);
        let r = nvml_boundary("t", || Err(nvmlReturn_t::NVML_ERROR_NOT_FOUND));
        assert_eq!(r, nvmlReturn_t::NVML_ERROR_NOT_FOUND);
        static L: AtomicBool = AtomicBool::new(false);
        assert_eq!(
            cuda_not_supported("x", &L),
            CUresult::CUDA_ERROR_NOT_SUPPORTED
        );
        assert!(L.load(Ordering::Relaxed));
        let mut v = 0u32;
        // SAFETY: a valid local and a null pointer.
        unsafe {
            assert_eq!((&mut v as *mut u32).write_or(7, ()), Ok(()));
            assert_eq!((std::ptr::null_mut::<u32>()).write_or(7, 1), Err(1));
        }
        assert_eq!(v, 7);
    }
}
