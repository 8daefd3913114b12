//! System-wide facts: the host driver's versions, from the inventory.

use crate::ffi::{copy_str, put};
use crate::init;
use cuda_types::nvml::nvmlReturn_t;
use std::ffi::{c_char, c_int, c_uint};

/// Ollama 0.30+ takes the text before the first `.` as the driver major and
/// drops CUDA devices below 570, so this is the host's string unaltered.
///
/// # Safety
/// `version` must be null or writable for `length` bytes.
pub unsafe fn driver_version(version: *mut c_char, length: c_uint) -> Result<(), nvmlReturn_t> {
    let inv = init::inventory()?;
    // SAFETY: forwarded from the caller.
    unsafe { copy_str(version, length, &inv.host.system_driver_version) }
}

/// # Safety
/// `version` must be null or writable for `length` bytes.
pub unsafe fn nvml_version(version: *mut c_char, length: c_uint) -> Result<(), nvmlReturn_t> {
    let inv = init::inventory()?;
    // SAFETY: forwarded from the caller.
    unsafe { copy_str(version, length, &inv.host.nvml_version) }
}

/// # Safety
/// `cuda_driver_version` must be null or writable.
pub unsafe fn cuda_driver_version(cuda_driver_version: *mut c_int) -> Result<(), nvmlReturn_t> {
    let inv = init::inventory()?;
    // SAFETY: forwarded from the caller.
    unsafe { put(cuda_driver_version, inv.host.cuda_driver_version) }
}
