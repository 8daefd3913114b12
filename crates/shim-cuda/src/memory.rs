//! Memory queries of the current context. Allocation comes with the next
//! issues; only `cuMemGetInfo` lives here so far.

use crate::contexts;
use crate::driver;
use cuda_types::cuda::CUresult;
use std::ffi::c_uint;
use vgpu_guest::ffi::OutPtr;
use vgpu_transport::proto::MemGetInfo;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;

/// `(free, total)` of the current context's device, as the host reports it
/// (its quota, if one applies, is already the total).
fn mem_info() -> Result<(u64, u64), CUresult> {
    driver::get()?;
    let (_, remote) = contexts::current_remote()?;
    driver::call(&MemGetInfo { ctx: remote })
}

pub unsafe fn get_info_v2(free: *mut usize, total: *mut usize) -> Result<(), CUresult> {
    if free.is_null() || total.is_null() {
        driver::get()?;
        return Err(INVALID_VALUE);
    }
    let (f, t) = mem_info()?;
    // SAFETY: both checked non-null; writable by API contract.
    unsafe {
        free.write_or(f as usize, INVALID_VALUE)?;
        total.write_or(t as usize, INVALID_VALUE)
    }
}

/// The 32-bit original; values saturate so a big device never looks full.
pub unsafe fn get_info(free: *mut c_uint, total: *mut c_uint) -> Result<(), CUresult> {
    if free.is_null() || total.is_null() {
        driver::get()?;
        return Err(INVALID_VALUE);
    }
    let (f, t) = mem_info()?;
    let clamp = |v: u64| v.min(c_uint::MAX as u64) as c_uint;
    // SAFETY: both checked non-null; writable by API contract.
    unsafe {
        free.write_or(clamp(f), INVALID_VALUE)?;
        total.write_or(clamp(t), INVALID_VALUE)
    }
}
