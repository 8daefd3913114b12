//! The panic boundary every export goes through, and the behaviour of the
//! entry points a cdylib does not implement.
//!
//! `api_macros::export_functions!` wraps each implemented function in
//! [`boundary`] (or [`boundary_value`] for the one export that returns no
//! status, `nvmlErrorString`) and makes every other name a stub calling
//! [`not_supported`]. A Rust panic never unwinds into the C caller: it
//! becomes the API's "unknown error" and a log line.

use crate::log::Level;
use crate::status::Status;
use crate::vlog;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

/// Runs an implementation and turns its outcome into the C return value.
/// Failures are logged at Trace with the entry point's name, so
/// `VGPU_LOG=trace` shows why an application got the code it got.
pub fn boundary<S: Status>(name: &'static str, f: impl FnOnce() -> Result<(), S>) -> S {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => S::SUCCESS,
        Ok(Err(e)) => {
            vlog!(Level::Trace, "{name} -> {} {}", S::KIND, e.code());
            e
        }
        Err(p) => {
            vlog!(Level::Error, "{name}: internal panic: {}", panic_text(&*p));
            S::INTERNAL
        }
    }
}

/// A C return value that is not a status: what a panic turns into.
pub trait Fallback {
    fn fallback() -> Self;
}

impl Fallback for *const std::ffi::c_char {
    /// `nvmlErrorString`'s text for an unknown code: a caller that prints
    /// the result unconditionally still gets a string.
    fn fallback() -> Self {
        c"Unknown Error".as_ptr()
    }
}

/// [`boundary`] for an export whose return value is not a status.
pub fn boundary_value<R: Fallback>(name: &'static str, f: impl FnOnce() -> R) -> R {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        vlog!(Level::Error, "{name}: internal panic: {}", panic_text(&*p));
        R::fallback()
    })
}

/// An entry point vgpu does not implement: NOT_SUPPORTED, and its name
/// logged once per process so the missing capability is easy to find.
pub fn not_supported<S: Status>(name: &'static str, logged: &AtomicBool) -> S {
    if !logged.swap(true, Ordering::Relaxed) {
        vlog!(
            Level::Warn,
            "{name} is not supported by vgpu ({} {})",
            S::KIND,
            S::NOT_SUPPORTED.code()
        );
    }
    S::NOT_SUPPORTED
}

fn panic_text(p: &(dyn Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "non-string panic"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cuda_types::cuda::CUresult;
    use cuda_types::nvml::nvmlReturn_t;
    use std::ffi::{c_char, CStr};

    #[test]
    fn outcomes_become_codes() {
        assert_eq!(boundary::<CUresult>("t", || Ok(())), CUresult::CUDA_SUCCESS);
        assert_eq!(
            boundary("t", || Err(nvmlReturn_t::NVML_ERROR_NOT_FOUND)),
            nvmlReturn_t::NVML_ERROR_NOT_FOUND
        );
        assert_eq!(
            boundary::<CUresult>("t", || panic!("boom")),
            CUresult::CUDA_ERROR_UNKNOWN
        );
        assert_eq!(
            boundary::<nvmlReturn_t>("t", || panic!("boom")),
            nvmlReturn_t::NVML_ERROR_UNKNOWN
        );
    }

    #[test]
    fn value_boundary_falls_back_on_panic() {
        let p: *const c_char = boundary_value("t", || panic!("boom"));
        // SAFETY: the fallback is a static NUL-terminated string.
        assert_eq!(unsafe { CStr::from_ptr(p) }, c"Unknown Error");
        let q: *const c_char = boundary_value("t", || c"Success".as_ptr());
        // SAFETY: as above.
        assert_eq!(unsafe { CStr::from_ptr(q) }, c"Success");
    }

    #[test]
    fn stubs_log_once_and_refuse() {
        static LOGGED: AtomicBool = AtomicBool::new(false);
        assert_eq!(
            not_supported::<CUresult>("cuX", &LOGGED),
            CUresult::CUDA_ERROR_NOT_SUPPORTED
        );
        assert!(LOGGED.load(Ordering::Relaxed));
        assert_eq!(
            not_supported::<nvmlReturn_t>("nvmlX", &LOGGED),
            nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED
        );
    }
}
