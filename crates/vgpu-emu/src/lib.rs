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
mod event;
mod ffi;
mod identity;
mod launch;
mod link;
mod memory;
mod module;
mod nvml;
pub mod profile;
mod sensors;
mod stream;

/// The CUDA driver API exports.
pub mod cuda_exports {
    use crate::{context, device, event, launch, link, memory, module, stream};
    use cuda_types::cuda::*;

    cuda_types::with_cuda_functions!(api_macros::export_functions {
        lookup = exported_cuda_symbol,
        implemented {
            // Initialization, version, errors
            cuInit => device::init,
            cuDriverGetVersion => device::driver_get_version,
            cuGetErrorName => vgpu_ffi::entry::cu_get_error_name,
            cuGetErrorString => vgpu_ffi::entry::cu_get_error_string,

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

            // Memory: pitched, 2D/3D and peer copies, 2D memsets
            cuMemAllocPitch_v2 => memory::alloc_pitch,
            cuMemcpy2D_v2 => memory::copy_2d,
            cuMemcpy2D_v2_ptds => memory::copy_2d,
            cuMemcpy2DUnaligned_v2 => memory::copy_2d,
            cuMemcpy2DUnaligned_v2_ptds => memory::copy_2d,
            cuMemcpy2DAsync_v2 => memory::copy_2d_async,
            cuMemcpy2DAsync_v2_ptsz => memory::copy_2d_async,
            cuMemcpy3D_v2 => memory::copy_3d,
            cuMemcpy3D_v2_ptds => memory::copy_3d,
            cuMemcpy3DAsync_v2 => memory::copy_3d_async,
            cuMemcpy3DAsync_v2_ptsz => memory::copy_3d_async,
            cuMemcpyPeer => memory::copy_peer,
            cuMemcpyPeer_ptds => memory::copy_peer,
            cuMemcpyPeerAsync => memory::copy_peer_async,
            cuMemcpyPeerAsync_ptsz => memory::copy_peer_async,
            cuMemsetD2D8_v2 => memory::memset_d2d8,
            cuMemsetD2D8_v2_ptds => memory::memset_d2d8,
            cuMemsetD2D16_v2 => memory::memset_d2d16,
            cuMemsetD2D16_v2_ptds => memory::memset_d2d16,
            cuMemsetD2D32_v2 => memory::memset_d2d32,
            cuMemsetD2D32_v2_ptds => memory::memset_d2d32,
            cuMemsetD2D8Async => memory::memset_d2d8_async,
            cuMemsetD2D8Async_ptsz => memory::memset_d2d8_async,
            cuMemsetD2D16Async => memory::memset_d2d16_async,
            cuMemsetD2D16Async_ptsz => memory::memset_d2d16_async,
            cuMemsetD2D32Async => memory::memset_d2d32_async,
            cuMemsetD2D32Async_ptsz => memory::memset_d2d32_async,

            // Memory: registered host memory
            cuMemHostRegister => memory::host_register,
            cuMemHostRegister_v2 => memory::host_register,
            cuMemHostUnregister => memory::host_unregister,
            cuMemHostGetDevicePointer_v2 => memory::host_get_device_pointer,
            cuMemHostGetFlags => memory::host_get_flags,

            // Memory: pointer attributes
            cuPointerGetAttribute => memory::pointer_get_attribute,
            cuPointerGetAttributes => memory::pointer_get_attributes,

            // Memory: virtual memory management
            cuMemGetAllocationGranularity => memory::get_allocation_granularity,
            cuMemCreate => memory::mem_create,
            cuMemRelease => memory::mem_release,
            cuMemRetainAllocationHandle => memory::retain_allocation_handle,
            cuMemGetAllocationPropertiesFromHandle => memory::get_allocation_properties_from_handle,
            cuMemAddressReserve => memory::address_reserve,
            cuMemAddressFree => memory::address_free,
            cuMemMap => memory::mem_map,
            cuMemUnmap => memory::mem_unmap,
            cuMemSetAccess => memory::set_access,
            cuMemGetAccess => memory::get_access,
            cuMemExportToShareableHandle => memory::export_to_shareable_handle,
            cuMemImportFromShareableHandle => memory::import_from_shareable_handle,

            // Memory: stream-ordered allocation and pools
            cuMemAllocAsync => memory::alloc_async,
            cuMemAllocAsync_ptsz => memory::alloc_async,
            cuMemAllocFromPoolAsync => memory::alloc_from_pool_async,
            cuMemAllocFromPoolAsync_ptsz => memory::alloc_from_pool_async,
            cuMemFreeAsync => memory::free_async,
            cuMemFreeAsync_ptsz => memory::free_async,
            cuDeviceGetDefaultMemPool => memory::device_get_default_mem_pool,
            cuDeviceGetMemPool => memory::device_get_mem_pool,
            cuDeviceSetMemPool => memory::device_set_mem_pool,
            cuMemPoolCreate => memory::pool_create,
            cuMemPoolDestroy => memory::pool_destroy,
            cuMemPoolTrimTo => memory::pool_trim_to,
            cuMemPoolGetAttribute => memory::pool_get_attribute,
            cuMemPoolSetAttribute => memory::pool_set_attribute,

            // Streams (work runs when enqueued: every stream is complete)
            cuStreamCreate => stream::stream_create_with_priority[0],
            cuStreamCreateWithPriority => stream::stream_create_with_priority,
            cuStreamDestroy => stream::stream_destroy,
            cuStreamDestroy_v2 => stream::stream_destroy,
            cuStreamSynchronize => stream::stream_synchronize,
            cuStreamSynchronize_ptsz => stream::stream_synchronize,
            cuStreamQuery => stream::stream_query,
            cuStreamQuery_ptsz => stream::stream_query,
            cuStreamGetPriority => stream::stream_get_priority,
            cuStreamGetPriority_ptsz => stream::stream_get_priority,
            cuStreamGetFlags => stream::stream_get_flags,
            cuStreamGetFlags_ptsz => stream::stream_get_flags,
            cuStreamGetCtx => stream::stream_get_ctx,
            cuStreamGetCtx_ptsz => stream::stream_get_ctx,
            cuStreamGetCtx_v2 => stream::stream_get_ctx_v2,
            cuStreamGetCtx_v2_ptsz => stream::stream_get_ctx_v2,
            cuStreamGetId => stream::stream_get_id,
            cuStreamGetId_ptsz => stream::stream_get_id,
            cuStreamGetDevice => stream::stream_get_device,
            cuStreamGetDevice_ptsz => stream::stream_get_device,
            cuStreamWaitEvent => stream::stream_wait_event,
            cuStreamWaitEvent_ptsz => stream::stream_wait_event,
            cuCtxGetStreamPriorityRange => stream::ctx_get_stream_priority_range,

            // Events
            cuEventCreate => event::event_create,
            cuEventRecord => event::event_record_with_flags[0],
            cuEventRecord_ptsz => event::event_record_with_flags[0],
            cuEventRecordWithFlags => event::event_record_with_flags,
            cuEventRecordWithFlags_ptsz => event::event_record_with_flags,
            cuEventQuery => event::event_query,
            cuEventSynchronize => event::event_synchronize,
            cuEventDestroy => event::event_destroy,
            cuEventDestroy_v2 => event::event_destroy,
            cuEventElapsedTime => event::event_elapsed_time,
            cuEventElapsedTime_v2 => event::event_elapsed_time,

            // Modules (PTX only: the software GPU interprets it)
            cuModuleLoad => module::module_load,
            cuModuleLoadData => module::module_load_data,
            cuModuleLoadDataEx => module::module_load_data_ex,
            cuModuleLoadFatBinary => module::module_load_fat_binary,
            cuModuleUnload => module::module_unload,
            cuModuleGetFunction => module::module_get_function,
            cuModuleGetGlobal_v2 => module::module_get_global,
            cuModuleGetLoadingMode => module::module_get_loading_mode,
            cuModuleGetFunctionCount => module::module_get_function_count,
            cuModuleEnumerateFunctions => module::module_enumerate_functions,

            // Libraries and kernels (a CUkernel is accepted wherever a
            // CUfunction is)
            cuLibraryLoadData => module::library_load_data,
            cuLibraryLoadFromFile => module::library_load_from_file,
            cuLibraryUnload => module::library_unload,
            cuLibraryGetModule => module::library_get_module,
            cuLibraryGetKernel => module::library_get_kernel,
            cuLibraryGetGlobal => module::library_get_global,
            cuLibraryGetKernelCount => module::library_get_kernel_count,
            cuLibraryEnumerateKernels => module::library_enumerate_kernels,
            cuKernelGetFunction => module::kernel_get_function,
            cuKernelGetLibrary => module::kernel_get_library,
            cuKernelGetName => module::kernel_get_name,
            cuKernelGetAttribute => module::kernel_get_attribute,
            cuKernelSetAttribute => module::kernel_set_attribute,
            cuKernelSetCacheConfig => module::kernel_set_cache_config,
            cuKernelGetParamInfo => module::kernel_get_param_info,
            cuKernelGetParamCount => module::kernel_get_param_count,

            // Functions
            cuFuncGetAttribute => module::func_get_attribute,
            cuFuncSetAttribute => module::func_set_attribute,
            cuFuncSetCacheConfig => module::func_set_cache_config,
            cuFuncSetSharedMemConfig => module::func_set_shared_mem_config,
            cuFuncGetName => module::func_get_name,
            cuFuncGetModule => module::func_get_module,
            cuFuncGetParamInfo => module::func_get_param_info,
            cuFuncGetParamCount => module::func_get_param_count,
            cuFuncIsLoaded => module::func_is_loaded,
            cuFuncLoad => module::func_load,

            // Launches (synchronous on the calling thread) and occupancy
            cuLaunchKernel => launch::launch_kernel,
            cuLaunchKernel_ptsz => launch::launch_kernel,
            cuLaunchKernelEx => launch::launch_kernel_ex,
            cuLaunchKernelEx_ptsz => launch::launch_kernel_ex,
            cuLaunchCooperativeKernel => launch::launch_cooperative_kernel,
            cuLaunchCooperativeKernel_ptsz => launch::launch_cooperative_kernel,
            cuOccupancyMaxActiveBlocksPerMultiprocessor => launch::occupancy_max_active_blocks_with_flags[0],
            cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags => launch::occupancy_max_active_blocks_with_flags,
            cuOccupancyMaxPotentialBlockSize => launch::occupancy_max_potential_block_size_with_flags[0],
            cuOccupancyMaxPotentialBlockSizeWithFlags => launch::occupancy_max_potential_block_size_with_flags,
            cuOccupancyAvailableDynamicSMemPerBlock => launch::occupancy_available_dynamic_smem,

            // The JIT linker (PTX inputs; the output is PTX)
            cuLinkCreate => link::link_create,
            cuLinkCreate_v2 => link::link_create,
            cuLinkAddData => link::link_add_data,
            cuLinkAddData_v2 => link::link_add_data,
            cuLinkAddFile => link::link_add_file,
            cuLinkAddFile_v2 => link::link_add_file,
            cuLinkComplete => link::link_complete,
            cuLinkDestroy => link::link_destroy,
        }
    });
}

/// The NVML exports.
pub mod nvml_exports {
    use crate::nvml;
    use cuda_types::nvml::*;

    cuda_types::with_nvml_functions!(api_macros::export_functions {
        lookup = exported_nvml_symbol,
        implemented {
            // Library
            nvmlInit => nvml::init[0],
            nvmlInit_v2 => nvml::init[0],
            nvmlInitWithFlags => nvml::init,
            nvmlShutdown => nvml::shutdown,
            nvmlErrorString => vgpu_ffi::entry::nvml_error_string,
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
