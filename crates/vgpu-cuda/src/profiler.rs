//! The profiler control API of `cudaProfiler.h` (`cuProfilerStart`,
//! `cuProfilerStop`, `cuProfilerInitialize`), which the generated lists of
//! `cuda.h` do not cover: exported here by hand, and found by
//! `cuGetProcAddress` through [`symbol`] at the versions the headers'
//! typedefs name (`UNMAPPED` in the generated table).
//!
//! No profiler is attached to a vgpu guest, so starting and stopping data
//! collection changes nothing; like a driver without a profiler attached,
//! the calls succeed once the library is initialized and a context is
//! current (cudart's `cudaProfilerStart`, used by matrixMul and other
//! samples, must not fail). Initialization (the deprecated output-file
//! form) is refused as not supported, since no file would ever be written.

use crate::driver;
use cuda_types::cuda::CUresult;
use std::ffi::{c_char, c_void};
use std::sync::atomic::AtomicBool;
use vgpu_ffi::{boundary, not_supported};

fn collect() -> Result<(), CUresult> {
    driver::require()?;
    crate::check::current()?;
    Ok(())
}

#[no_mangle]
pub extern "C" fn cuProfilerStart() -> CUresult {
    boundary("cuProfilerStart", collect)
}

#[no_mangle]
pub extern "C" fn cuProfilerStop() -> CUresult {
    boundary("cuProfilerStop", collect)
}

/// # Safety
/// Never dereferences its arguments.
#[no_mangle]
pub unsafe extern "C" fn cuProfilerInitialize(
    _config_file: *const c_char,
    _output_file: *const c_char,
    _output_mode: u32,
) -> CUresult {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    boundary("cuProfilerInitialize", || {
        driver::require()?;
        Err(not_supported("cuProfilerInitialize", &LOGGED))
    })
}

/// The address of a profiler entry point, for `cuGetProcAddress`.
pub fn symbol(name: &[u8]) -> Option<*const c_void> {
    Some(match name {
        b"cuProfilerStart" => cuProfilerStart as *const c_void,
        b"cuProfilerStop" => cuProfilerStop as *const c_void,
        b"cuProfilerInitialize" => cuProfilerInitialize as *const c_void,
        _ => return None,
    })
}
