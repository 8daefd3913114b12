//! System-wide facts: the host driver's versions, from the inventory.
//!
//! Only `nvmlSystemGetDriverVersion` needs `nvmlInit` (the export list's
//! `require`); the NVML and CUDA driver versions work before it, as in
//! real NVML, so they read [`init::host_facts`].

use crate::ffi::put_str;
use crate::init;
use cuda_types::nvml::nvmlReturn_t;
use std::ffi::{c_char, c_int, c_uint};
use vgpu_ffi::Out;

/// Which version string a `nvmlSystemGet*Version` entry point reports.
pub enum Version {
    /// `nvmlSystemGetDriverVersion`. Ollama 0.30+ takes the text before
    /// the first `.` as the driver major and drops CUDA devices below 570,
    /// so this is the host's string unaltered.
    Driver,
    /// `nvmlSystemGetNVMLVersion`.
    Nvml,
}

/// # Safety
/// `version` must be writable for `length` bytes.
pub unsafe fn version(
    version: Out<c_char>,
    length: c_uint,
    which: Version,
) -> Result<(), nvmlReturn_t> {
    let inv = init::host_facts()?;
    let s = match which {
        Version::Driver => &inv.host.system_driver_version,
        Version::Nvml => &inv.host.nvml_version,
    };
    // SAFETY: forwarded from the caller.
    unsafe { put_str(version, length, s) }
}

/// `nvmlSystemGetCudaDriverVersion` and its `_v2`.
pub fn cuda_driver_version(cuda_driver_version: Out<c_int>) -> Result<(), nvmlReturn_t> {
    cuda_driver_version.write(init::host_facts()?.host.cuda_driver_version);
    Ok(())
}
