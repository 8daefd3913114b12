//! `libcuda.so.1` for machines without a GPU: the CUDA driver API, answered
//! from a vgpu host's inventory where it can be and forwarded to the host
//! where work must happen.
//!
//! The list below is the status of every driver entry point: a name listed
//! under `implemented` forwards to the function named; every other name of
//! the pinned cuda.h is exported as a CUDA_ERROR_NOT_SUPPORTED stub. Nothing
//! runs at load time; the host is contacted by the first `cuInit` (or
//! `cuDriverGetVersion`).

use cuda_types::cuda::*;

mod context;
pub mod contexts;
mod darkapi;
mod device;
pub mod driver;
mod error;
mod init;
mod memory;
mod procaddr;
mod visible;

// The host-refusal marker and the virtual files' provider registration.
vgpu_guest::shim_glue!();

cuda_types::with_cuda_functions!(api_macros::export_functions {
    boundary = vgpu_guest::ffi::cuda_boundary,
    not_supported = vgpu_guest::ffi::cuda_not_supported,
    lookup = exported_symbol,
    implemented {
        cuInit => init::init,
        cuDriverGetVersion => init::driver_get_version,

        cuDeviceGet => device::get,
        cuDeviceGetCount => device::get_count,
        cuDeviceGetName => device::get_name,
        cuDeviceGetUuid => device::get_uuid,
        cuDeviceGetUuid_v2 => device::get_uuid_v2,
        cuDeviceTotalMem => device::total_mem,
        cuDeviceTotalMem_v2 => device::total_mem_v2,
        cuDeviceGetAttribute => device::get_attribute,
        cuDeviceComputeCapability => device::compute_capability,
        cuDeviceGetProperties => device::get_properties,
        cuDeviceGetPCIBusId => device::get_pci_bus_id,
        cuDeviceGetByPCIBusId => device::get_by_pci_bus_id,

        cuDevicePrimaryCtxRetain => context::primary_retain,
        cuDevicePrimaryCtxRelease => context::primary_release,
        cuDevicePrimaryCtxRelease_v2 => context::primary_release,
        cuDevicePrimaryCtxReset => context::primary_reset,
        cuDevicePrimaryCtxReset_v2 => context::primary_reset,
        cuDevicePrimaryCtxSetFlags => context::primary_set_flags_v1,
        cuDevicePrimaryCtxSetFlags_v2 => context::primary_set_flags,
        cuDevicePrimaryCtxGetState => context::primary_get_state,

        cuCtxCreate => context::create_v1,
        cuCtxCreate_v2 => context::create_v2,
        cuCtxCreate_v3 => context::create_v3,
        cuCtxCreate_v4 => context::create_v4,
        cuCtxDestroy => context::destroy,
        cuCtxDestroy_v2 => context::destroy,
        cuCtxGetCurrent => context::get_current,
        cuCtxSetCurrent => context::set_current,
        cuCtxPushCurrent => context::push_current,
        cuCtxPushCurrent_v2 => context::push_current,
        cuCtxPopCurrent => context::pop_current,
        cuCtxPopCurrent_v2 => context::pop_current,
        cuCtxGetDevice => context::get_device,
        cuCtxGetDevice_v2 => context::get_device_v2,
        cuCtxGetFlags => context::get_flags,
        cuCtxGetApiVersion => context::get_api_version,
        cuCtxGetId => context::get_id,
        cuCtxSynchronize => context::synchronize,
        cuCtxSynchronize_v2 => context::synchronize_v2,

        cuMemGetInfo => memory::get_info,
        cuMemGetInfo_v2 => memory::get_info_v2,

        cuGetProcAddress => procaddr::get_proc_address,
        cuGetProcAddress_v2 => procaddr::get_proc_address_v2,
        cuGetExportTable => darkapi::get_export_table,
        cuModuleGetLoadingMode => init::module_get_loading_mode,

        cuGetErrorName => error::get_error_name,
        cuGetErrorString => error::get_error_string,
    }
});
