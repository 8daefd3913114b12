//! How the CLI itself talks to driver libraries (`smi`, `bench`, `doctor`):
//! the host's loader and typed tables ([`vgpu_host::driver::Library`], which
//! dlopens with `RTLD_LOCAL` and knows which file the loader picked), plus a
//! call macro and C-string helper for the commands' reports.

pub use vgpu_host::driver::{CudaDriver, Library, NvmlDriver};

use std::ffi::c_char;

/// Calls an optional table function; `$missing` when the library lacks it.
/// Evaluates to the function's raw return value.
macro_rules! driver_call {
    ($table:expr, $f:ident ( $($a:expr),* $(,)? ), $missing:expr) => {
        match $table.$f {
            // SAFETY: arguments follow the header's prototype of the function.
            Some(f) => unsafe { f($($a),*) },
            None => $missing,
        }
    };
}
pub(crate) use driver_call;

/// A string out of a C buffer the library filled.
pub fn text(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
