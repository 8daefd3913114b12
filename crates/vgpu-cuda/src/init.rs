//! `cuInit` and `cuDriverGetVersion` (both work before `cuInit`), and
//! `cuModuleGetLoadingMode`.

use crate::driver;
use cuda_types::cuda::{CUmoduleLoadingMode, CUresult, CUDA_VERSION};
use std::ffi::{c_int, c_uint};
use vgpu_ffi::Out;
use vgpu_guest::client;

/// No host → CUDA_ERROR_NO_DEVICE (what Ollama and cudart read as "no
/// NVIDIA GPU"), quickly: connecting is bounded by the guest client.
pub fn init(flags: c_uint) -> Result<(), CUresult> {
    if flags != 0 {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    driver::init().map(|_| ())
}

/// The host driver's CUDA version. Callable before `cuInit` (cudart 13.5
/// asks right after dlopen), so it connects on its own if needed.
///
/// Without a host it still succeeds, with the version of the header this
/// shim implements: a real driver on a machine without a usable GPU also
/// answers its version and lets `cuInit` report CUDA_ERROR_NO_DEVICE. Apps
/// then say "no CUDA-capable device" (cudaErrorNoDevice) instead of
/// "insufficient driver" (what a 0 or an error here would make cudart say).
pub fn driver_get_version(driver_version: Out<c_int>) -> Result<(), CUresult> {
    driver_version.write(current_driver_version());
    Ok(())
}

/// What `cuDriverGetVersion` reports; the integrity check hashes the same
/// number, so the two cannot disagree.
pub fn current_driver_version() -> c_int {
    match driver::get() {
        Ok(d) => d.inventory.host.cuda_driver_version,
        Err(_) => match client::inventory() {
            Ok(inv) => inv.host.cuda_driver_version,
            Err(_) => CUDA_VERSION as c_int,
        },
    }
}

/// Lazy: cudart then loads only the fatbins whose kernels actually launch,
/// so a program ships no code it does not run.
pub fn module_get_loading_mode(mode: Out<CUmoduleLoadingMode>) -> Result<(), CUresult> {
    mode.write(CUmoduleLoadingMode::CU_MODULE_LAZY_LOADING);
    Ok(())
}
