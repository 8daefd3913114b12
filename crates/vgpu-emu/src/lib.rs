//! vgpu-emu, the software GPU: a cdylib exporting the same C ABI as the
//! NVIDIA driver (`libcuda.so.1`) and NVML (`libnvidia-ml.so.1`), running on
//! the CPU. The host worker dlopen()s it where no GPU exists, so one worker
//! code path serves both.
//!
//! Every function of the pinned headers is exported. The two lists below are
//! the status of the port: a name listed here is implemented by the function
//! it points to; every other name is a stub returning NOT_SUPPORTED (and
//! logging its name once when `VGPU_LOG` is set).

// The Rust side is private: the crate's interface is the C ABI below (the
// rlib exposes the same `extern "C"` functions for in-process tests).
mod context;
mod device;
mod errors;
mod ffi;
mod identity;
mod memory;
mod nvml;
pub mod profile;
mod sensors;
mod stream;

/// The CUDA driver API exports.
pub mod cuda_exports {
    use crate::{context, device, errors, memory};
    use cuda_types::cuda::*;

    cuda_types::with_cuda_functions!(api_macros::export_functions {
        boundary = crate::ffi::cuda_boundary,
        not_supported = crate::ffi::cuda_not_supported,
        lookup = exported_cuda_symbol,
        implemented {
            // Initialization, version, errors
            cuInit => device::init,
            cuDriverGetVersion => device::driver_get_version,
            cuGetErrorName => errors::get_error_name,
            cuGetErrorString => errors::get_error_string,

            // Devices
            cuDeviceGetCount => device::get_count,
            cuDeviceGet => device::get,
            cuDeviceGetName => device::get_name,
            cuDeviceGetUuid => device::get_uuid,
            cuDeviceGetUuid_v2 => device::get_uuid,
            cuDeviceTotalMem => device::total_mem_v1,
            cuDeviceTotalMem_v2 => device::total_mem_v2,
            cuDeviceGetAttribute => device::get_attribute,
            cuDeviceComputeCapability => device::compute_capability,
            cuDeviceGetProperties => device::get_properties,
            cuDeviceGetPCIBusId => device::get_pci_bus_id,
            cuDeviceGetByPCIBusId => device::get_by_pci_bus_id,

            // Primary contexts
            cuDevicePrimaryCtxRetain => context::primary_retain,
            cuDevicePrimaryCtxRelease => context::primary_release,
            cuDevicePrimaryCtxRelease_v2 => context::primary_release,
            cuDevicePrimaryCtxReset => context::primary_reset,
            cuDevicePrimaryCtxReset_v2 => context::primary_reset,
            cuDevicePrimaryCtxSetFlags => context::primary_set_flags,
            cuDevicePrimaryCtxSetFlags_v2 => context::primary_set_flags,
            cuDevicePrimaryCtxGetState => context::primary_get_state,

            // Contexts
            cuCtxCreate => context::ctx_create,
            cuCtxCreate_v2 => context::ctx_create,
            cuCtxCreate_v3 => context::ctx_create_v3,
            cuCtxCreate_v4 => context::ctx_create_v4,
            cuCtxDestroy => context::ctx_destroy,
            cuCtxDestroy_v2 => context::ctx_destroy,
            cuCtxGetCurrent => context::ctx_get_current,
            cuCtxSetCurrent => context::ctx_set_current,
            cuCtxPushCurrent => context::ctx_push_current,
            cuCtxPushCurrent_v2 => context::ctx_push_current,
            cuCtxPopCurrent => context::ctx_pop_current,
            cuCtxPopCurrent_v2 => context::ctx_pop_current,
            cuCtxGetDevice => context::ctx_get_device,
            cuCtxGetDevice_v2 => context::ctx_get_device_v2,
            cuCtxSynchronize => context::ctx_synchronize,
            cuCtxSynchronize_v2 => context::ctx_synchronize_v2,
            cuCtxGetFlags => context::ctx_get_flags,
            cuCtxGetApiVersion => context::ctx_get_api_version,
            cuCtxGetId => context::ctx_get_id,

            // Memory: allocation and information
            cuMemGetInfo => memory::get_info_v1,
            cuMemGetInfo_v2 => memory::get_info_v2,
            cuMemAlloc_v2 => memory::alloc,
            cuMemFree_v2 => memory::free,
            cuMemGetAddressRange_v2 => memory::get_address_range,
            cuMemAllocHost_v2 => memory::alloc_host,
            cuMemHostAlloc => memory::host_alloc,
            cuMemFreeHost => memory::free_host,

            // Memory: copies (the _ptds/_ptsz forms are the same calls with
            // per-thread default stream semantics, equal here: work is
            // synchronous)
            cuMemcpy => memory::copy_unified,
            cuMemcpy_ptds => memory::copy_unified,
            cuMemcpyHtoD_v2 => memory::copy_htod,
            cuMemcpyHtoD_v2_ptds => memory::copy_htod,
            cuMemcpyDtoH_v2 => memory::copy_dtoh,
            cuMemcpyDtoH_v2_ptds => memory::copy_dtoh,
            cuMemcpyDtoD_v2 => memory::copy_dtod,
            cuMemcpyDtoD_v2_ptds => memory::copy_dtod,
            cuMemcpyAsync => memory::copy_unified_async,
            cuMemcpyAsync_ptsz => memory::copy_unified_async,
            cuMemcpyHtoDAsync_v2 => memory::copy_htod_async,
            cuMemcpyHtoDAsync_v2_ptsz => memory::copy_htod_async,
            cuMemcpyDtoHAsync_v2 => memory::copy_dtoh_async,
            cuMemcpyDtoHAsync_v2_ptsz => memory::copy_dtoh_async,
            cuMemcpyDtoDAsync_v2 => memory::copy_dtod_async,
            cuMemcpyDtoDAsync_v2_ptsz => memory::copy_dtod_async,

            // Memory: memsets
            cuMemsetD8_v2 => memory::memset_d8,
            cuMemsetD8_v2_ptds => memory::memset_d8,
            cuMemsetD16_v2 => memory::memset_d16,
            cuMemsetD16_v2_ptds => memory::memset_d16,
            cuMemsetD32_v2 => memory::memset_d32,
            cuMemsetD32_v2_ptds => memory::memset_d32,
            cuMemsetD8Async => memory::memset_d8_async,
            cuMemsetD8Async_ptsz => memory::memset_d8_async,
            cuMemsetD16Async => memory::memset_d16_async,
            cuMemsetD16Async_ptsz => memory::memset_d16_async,
            cuMemsetD32Async => memory::memset_d32_async,
            cuMemsetD32Async_ptsz => memory::memset_d32_async,
        }
    });
}

/// The NVML exports.
pub mod nvml_exports {
    use crate::{errors, nvml};
    use cuda_types::nvml::*;

    cuda_types::with_nvml_functions!(api_macros::export_functions {
        boundary = crate::ffi::nvml_boundary,
        not_supported = crate::ffi::nvml_not_supported,
        lookup = exported_nvml_symbol,
        implemented {
            // Library
            nvmlInit => nvml::init,
            nvmlInit_v2 => nvml::init,
            nvmlInitWithFlags => nvml::init_with_flags,
            nvmlShutdown => nvml::shutdown,
            nvmlErrorString => errors::nvml_error_string,
            nvmlSystemGetDriverVersion => nvml::system_get_driver_version,
            nvmlSystemGetNVMLVersion => nvml::system_get_nvml_version,
            nvmlSystemGetCudaDriverVersion => nvml::system_get_cuda_driver_version,
            nvmlSystemGetCudaDriverVersion_v2 => nvml::system_get_cuda_driver_version,

            // Inventory and identity
            nvmlDeviceGetCount => nvml::device_get_count,
            nvmlDeviceGetCount_v2 => nvml::device_get_count,
            nvmlDeviceGetHandleByIndex => nvml::handle_by_index,
            nvmlDeviceGetHandleByIndex_v2 => nvml::handle_by_index,
            nvmlDeviceGetHandleByUUID => nvml::handle_by_uuid,
            nvmlDeviceGetHandleByPciBusId => nvml::handle_by_pci_bus_id,
            nvmlDeviceGetHandleByPciBusId_v2 => nvml::handle_by_pci_bus_id,
            nvmlDeviceGetHandleBySerial => nvml::handle_by_serial,
            nvmlDeviceGetName => nvml::get_name,
            nvmlDeviceGetUUID => nvml::get_uuid,
            nvmlDeviceGetSerial => nvml::get_serial,
            nvmlDeviceGetIndex => nvml::get_index,
            nvmlDeviceGetMinorNumber => nvml::get_minor_number,
            nvmlDeviceGetPciInfo => nvml::get_pci_info,
            nvmlDeviceGetPciInfo_v2 => nvml::get_pci_info,
            nvmlDeviceGetPciInfo_v3 => nvml::get_pci_info,
            nvmlDeviceGetCudaComputeCapability => nvml::get_cuda_compute_capability,
            nvmlDeviceGetBrand => nvml::get_brand,
            nvmlDeviceGetArchitecture => nvml::get_architecture,
            nvmlDeviceGetMemoryBusWidth => nvml::get_memory_bus_width,
            nvmlDeviceGetNumGpuCores => nvml::get_num_gpu_cores,
            nvmlDeviceGetCurrPcieLinkGeneration => nvml::get_pcie_generation,
            nvmlDeviceGetMaxPcieLinkGeneration => nvml::get_pcie_generation,
            nvmlDeviceGetCurrPcieLinkWidth => nvml::get_pcie_width,
            nvmlDeviceGetMaxPcieLinkWidth => nvml::get_pcie_width,

            // Memory
            nvmlDeviceGetMemoryInfo => nvml::get_memory_info,
            nvmlDeviceGetMemoryInfo_v2 => nvml::get_memory_info_v2,

            // Telemetry
            nvmlDeviceGetTemperature => nvml::get_temperature,
            nvmlDeviceGetTemperatureV => nvml::get_temperature_v,
            nvmlDeviceGetTemperatureThreshold => nvml::get_temperature_threshold,
            nvmlDeviceGetPowerUsage => nvml::get_power_usage,
            nvmlDeviceGetPowerManagementLimit => nvml::get_power_limit,
            nvmlDeviceGetEnforcedPowerLimit => nvml::get_power_limit,
            nvmlDeviceGetPowerManagementDefaultLimit => nvml::get_power_limit,
            nvmlDeviceGetPowerManagementLimitConstraints => nvml::get_power_limit_constraints,
            nvmlDeviceGetUtilizationRates => nvml::get_utilization_rates,
            nvmlDeviceGetEncoderUtilization => nvml::get_codec_utilization,
            nvmlDeviceGetDecoderUtilization => nvml::get_codec_utilization,
            nvmlDeviceGetClockInfo => nvml::get_clock_info,
            nvmlDeviceGetMaxClockInfo => nvml::get_max_clock_info,
            nvmlDeviceGetClock => nvml::get_clock,
            nvmlDeviceGetCurrentClocksThrottleReasons => nvml::get_clocks_event_reasons,
            nvmlDeviceGetCurrentClocksEventReasons => nvml::get_clocks_event_reasons,
            nvmlDeviceGetPerformanceState => nvml::get_performance_state,
            nvmlDeviceGetPowerState => nvml::get_performance_state,

            // Modes
            nvmlDeviceGetPersistenceMode => nvml::get_persistence_mode,
            nvmlDeviceGetComputeMode => nvml::get_compute_mode,
            nvmlDeviceGetMigMode => nvml::get_mig_mode,
            nvmlDeviceIsMigDeviceHandle => nvml::is_mig_device_handle,
            nvmlDeviceGetDisplayMode => nvml::get_display_mode,
            nvmlDeviceGetDisplayActive => nvml::get_display_mode,
            nvmlDeviceGetEccMode => nvml::get_ecc_mode,
            nvmlDeviceGetTotalEccErrors => nvml::get_total_ecc_errors,

            // Processes
            nvmlDeviceGetComputeRunningProcesses => nvml::compute_processes_v1,
            nvmlDeviceGetComputeRunningProcesses_v2 => nvml::compute_processes_v2,
            nvmlDeviceGetComputeRunningProcesses_v3 => nvml::compute_processes_v2,
            nvmlDeviceGetGraphicsRunningProcesses => nvml::graphics_processes_v1,
            nvmlDeviceGetGraphicsRunningProcesses_v2 => nvml::graphics_processes_v2,
            nvmlDeviceGetGraphicsRunningProcesses_v3 => nvml::graphics_processes_v2,

            // Deliberately absent, so they answer NOT_SUPPORTED as a real
            // H100 PCIe on Linux does: nvmlDeviceGetFanSpeed(_v2) (passively
            // cooled), nvmlDeviceGetDriverModel(_v2) (Windows only).
        }
    });
}

#[cfg(test)]
mod tests;
