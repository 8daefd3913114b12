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
mod graph;
mod identity;
mod launch;
mod limits;
mod link;
pub mod loader;
mod memory;
mod module;
mod nvml;
pub mod profile;
mod sensors;
mod stream;
mod tensormap;

/// The CUDA driver API exports. Every entry but those under `without_init`
/// needs cuInit first (`require`); arguments are converted at the boundary
/// (`vgpu_ffi::FromCuda`): out-pointers, strings, devices and handles.
/// Bracketed values are constants appended to the C arguments: the plain
/// form of a call that has flags, the synchronous form of a stream-ordered
/// one (`Order::Sync`); the widths of a family (memset elements, 32-bit
/// legacy outputs) are the body's type parameter.
pub mod cuda_exports {
    use crate::context::MaybeCtx;
    use crate::stream::Order;
    use crate::{
        context, device, event, graph, launch, limits, link, memory, module, stream, tensormap,
    };
    use cuda_types::cuda::*;
    use std::ffi::{c_uchar, c_uint, c_ushort};
    use std::ptr::null_mut;

    cuda_types::with_cuda_functions!(api_macros::export_functions {
        lookup = exported_cuda_symbol,
        require = crate::device::ensure_init,
        implemented {
            // Devices
            cuDeviceGetCount => device::get_count,
            cuDeviceGet => device::get,
            cuDeviceGetName => device::get_name,
            cuDeviceGetUuid => device::get_uuid,
            cuDeviceGetUuid_v2 => device::get_uuid,
            cuDeviceTotalMem => device::total_mem::<c_uint>,
            cuDeviceTotalMem_v2 => device::total_mem::<usize>,
            cuDeviceGetAttribute => device::get_attribute,
            cuDeviceComputeCapability => device::compute_capability,
            cuDeviceGetProperties => device::get_properties,
            cuDeviceGetPCIBusId => device::get_pci_bus_id,
            cuDeviceGetByPCIBusId => device::get_by_pci_bus_id,
            cuDeviceCanAccessPeer => device::can_access_peer,
            cuDeviceGetP2PAttribute => device::get_p2p_attribute,

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
            cuCtxGetDevice => context::ctx_get_device[MaybeCtx::NULL],
            cuCtxGetDevice_v2 => context::ctx_get_device,
            cuCtxSynchronize => context::ctx_synchronize[MaybeCtx::NULL],
            cuCtxSynchronize_v2 => context::ctx_synchronize,
            cuCtxGetFlags => context::ctx_get_flags,
            cuCtxGetApiVersion => context::ctx_get_api_version,
            cuCtxGetId => context::ctx_get_id,
            cuCtxEnablePeerAccess => context::ctx_enable_peer_access,
            cuCtxDisablePeerAccess => context::ctx_disable_peer_access,
            cuCtxGetLimit => limits::get_limit,
            cuCtxSetLimit => limits::set_limit,

            // Memory: allocation and information
            cuMemGetInfo => memory::get_info::<c_uint>,
            cuMemGetInfo_v2 => memory::get_info::<usize>,
            cuMemAlloc_v2 => memory::alloc,
            cuMemFree_v2 => memory::free,
            cuMemGetAddressRange_v2 => memory::get_address_range,
            cuMemAllocHost_v2 => memory::host_alloc[0],
            cuMemHostAlloc => memory::host_alloc,
            cuMemFreeHost => memory::free_host,

            // Memory: copies (the _ptds/_ptsz forms are the same calls with
            // per-thread default stream semantics, equal here: work is
            // synchronous)
            cuMemcpy => memory::copy_unified[Order::Sync],
            cuMemcpy_ptds => memory::copy_unified[Order::Sync],
            cuMemcpyHtoD_v2 => memory::copy_htod[Order::Sync],
            cuMemcpyHtoD_v2_ptds => memory::copy_htod[Order::Sync],
            cuMemcpyDtoH_v2 => memory::copy_dtoh[Order::Sync],
            cuMemcpyDtoH_v2_ptds => memory::copy_dtoh[Order::Sync],
            cuMemcpyDtoD_v2 => memory::copy_dtod[Order::Sync],
            cuMemcpyDtoD_v2_ptds => memory::copy_dtod[Order::Sync],
            cuMemcpyAsync => memory::copy_unified,
            cuMemcpyAsync_ptsz => memory::copy_unified,
            cuMemcpyHtoDAsync_v2 => memory::copy_htod,
            cuMemcpyHtoDAsync_v2_ptsz => memory::copy_htod,
            cuMemcpyDtoHAsync_v2 => memory::copy_dtoh,
            cuMemcpyDtoHAsync_v2_ptsz => memory::copy_dtoh,
            cuMemcpyDtoDAsync_v2 => memory::copy_dtod,
            cuMemcpyDtoDAsync_v2_ptsz => memory::copy_dtod,

            // Memory: memsets
            cuMemsetD8_v2 => memory::memset::<c_uchar>[Order::Sync],
            cuMemsetD8_v2_ptds => memory::memset::<c_uchar>[Order::Sync],
            cuMemsetD16_v2 => memory::memset::<c_ushort>[Order::Sync],
            cuMemsetD16_v2_ptds => memory::memset::<c_ushort>[Order::Sync],
            cuMemsetD32_v2 => memory::memset::<c_uint>[Order::Sync],
            cuMemsetD32_v2_ptds => memory::memset::<c_uint>[Order::Sync],
            cuMemsetD8Async => memory::memset::<c_uchar>,
            cuMemsetD8Async_ptsz => memory::memset::<c_uchar>,
            cuMemsetD16Async => memory::memset::<c_ushort>,
            cuMemsetD16Async_ptsz => memory::memset::<c_ushort>,
            cuMemsetD32Async => memory::memset::<c_uint>,
            cuMemsetD32Async_ptsz => memory::memset::<c_uint>,

            // Memory: pitched, 2D/3D and peer copies, 2D memsets
            cuMemAllocPitch_v2 => memory::alloc_pitch,
            cuMemcpy2D_v2 => memory::copy_2d[Order::Sync],
            cuMemcpy2D_v2_ptds => memory::copy_2d[Order::Sync],
            cuMemcpy2DUnaligned_v2 => memory::copy_2d[Order::Sync],
            cuMemcpy2DUnaligned_v2_ptds => memory::copy_2d[Order::Sync],
            cuMemcpy2DAsync_v2 => memory::copy_2d,
            cuMemcpy2DAsync_v2_ptsz => memory::copy_2d,
            cuMemcpy3D_v2 => memory::copy_3d[Order::Sync],
            cuMemcpy3D_v2_ptds => memory::copy_3d[Order::Sync],
            cuMemcpy3DAsync_v2 => memory::copy_3d,
            cuMemcpy3DAsync_v2_ptsz => memory::copy_3d,
            cuMemcpyPeer => memory::copy_peer[Order::Sync],
            cuMemcpyPeer_ptds => memory::copy_peer[Order::Sync],
            cuMemcpyPeerAsync => memory::copy_peer,
            cuMemcpyPeerAsync_ptsz => memory::copy_peer,
            cuMemsetD2D8_v2 => memory::memset_2d::<c_uchar>[Order::Sync],
            cuMemsetD2D8_v2_ptds => memory::memset_2d::<c_uchar>[Order::Sync],
            cuMemsetD2D16_v2 => memory::memset_2d::<c_ushort>[Order::Sync],
            cuMemsetD2D16_v2_ptds => memory::memset_2d::<c_ushort>[Order::Sync],
            cuMemsetD2D32_v2 => memory::memset_2d::<c_uint>[Order::Sync],
            cuMemsetD2D32_v2_ptds => memory::memset_2d::<c_uint>[Order::Sync],
            cuMemsetD2D8Async => memory::memset_2d::<c_uchar>,
            cuMemsetD2D8Async_ptsz => memory::memset_2d::<c_uchar>,
            cuMemsetD2D16Async => memory::memset_2d::<c_ushort>,
            cuMemsetD2D16Async_ptsz => memory::memset_2d::<c_ushort>,
            cuMemsetD2D32Async => memory::memset_2d::<c_uint>,
            cuMemsetD2D32Async_ptsz => memory::memset_2d::<c_uint>,

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
            cuStreamQuery => stream::stream_synchronize,
            cuStreamQuery_ptsz => stream::stream_synchronize,
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
            cuEventSynchronize => event::event_query,
            cuEventDestroy => event::event_destroy,
            cuEventDestroy_v2 => event::event_destroy,
            cuEventElapsedTime => event::event_elapsed_time,
            cuEventElapsedTime_v2 => event::event_elapsed_time,

            // Modules (PTX only: the software GPU interprets it)
            cuModuleLoad => module::module_load,
            cuModuleLoadData => module::module_load_data[0, null_mut(), null_mut()],
            cuModuleLoadDataEx => module::module_load_data,
            cuModuleLoadFatBinary => module::module_load_data[0, null_mut(), null_mut()],
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

            // Launches (synchronous on the calling thread) and occupancy;
            // a cooperative launch has no `extra`.
            cuLaunchKernel => launch::launch_kernel[false],
            cuLaunchKernel_ptsz => launch::launch_kernel[false],
            cuLaunchKernelEx => launch::launch_kernel_ex,
            cuLaunchKernelEx_ptsz => launch::launch_kernel_ex,
            cuLaunchCooperativeKernel => launch::launch_kernel[null_mut(), true],
            cuLaunchCooperativeKernel_ptsz => launch::launch_kernel[null_mut(), true],
            cuOccupancyMaxActiveBlocksPerMultiprocessor => launch::occupancy_max_active_blocks_with_flags[0],
            cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags => launch::occupancy_max_active_blocks_with_flags,
            cuOccupancyMaxPotentialBlockSize => launch::occupancy_max_potential_block_size_with_flags[0],
            cuOccupancyMaxPotentialBlockSizeWithFlags => launch::occupancy_max_potential_block_size_with_flags,
            cuOccupancyAvailableDynamicSMemPerBlock => launch::occupancy_available_dynamic_smem,
            cuOccupancyMaxActiveClusters => launch::occupancy_max_active_clusters,
            cuOccupancyMaxPotentialClusterSize => launch::occupancy_max_potential_cluster_size,

            // Graphs (the explicit API the host worker builds graphs with;
            // launches run the nodes in dependency order at call time). The
            // v1 kernel-node parameters convert to the current layout.
            cuGraphCreate => graph::graph_create,
            cuGraphDestroy => graph::graph_destroy,
            cuGraphAddKernelNode => graph::add_kernel_node,
            cuGraphAddKernelNode_v2 => graph::add_kernel_node,
            cuGraphAddMemsetNode => graph::add_memset_node,
            cuGraphAddMemcpyNode => graph::add_memcpy_node,
            cuGraphAddEventRecordNode => graph::add_event_record_node,
            cuGraphAddEventWaitNode => graph::add_event_wait_node,
            cuGraphAddEmptyNode => graph::add_empty_node,
            cuGraphKernelNodeSetAttribute => graph::kernel_node_set_attribute,
            cuGraphInstantiate => graph::instantiate_logged,
            cuGraphInstantiate_v2 => graph::instantiate_logged,
            cuGraphInstantiateWithFlags => graph::instantiate_with_flags,
            cuGraphInstantiateWithParams => graph::instantiate_with_params,
            cuGraphInstantiateWithParams_ptsz => graph::instantiate_with_params,
            cuGraphLaunch => graph::launch,
            cuGraphLaunch_ptsz => graph::launch,
            cuGraphUpload => graph::upload,
            cuGraphUpload_ptsz => graph::upload,
            cuGraphExecDestroy => graph::exec_destroy,
            cuGraphExecKernelNodeSetParams => graph::exec_kernel_node_set_params,
            cuGraphExecKernelNodeSetParams_v2 => graph::exec_kernel_node_set_params,
            cuGraphExecMemsetNodeSetParams => graph::exec_memset_node_set_params,
            cuGraphExecMemcpyNodeSetParams => graph::exec_memcpy_node_set_params,
            cuGraphExecEventRecordNodeSetEvent => graph::exec_event_record_node_set_event,
            cuGraphExecEventWaitNodeSetEvent => graph::exec_event_wait_node_set_event,
            cuGraphNodeSetEnabled => graph::node_set_enabled,
            cuGraphNodeGetEnabled => graph::node_get_enabled,

            // Tensor maps (the software GPU's own descriptor layout)
            cuTensorMapEncodeTiled => tensormap::encode_tiled,
            cuTensorMapEncodeIm2col => tensormap::encode_im2col,
            cuTensorMapReplaceAddress => tensormap::replace_address,

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
        without_init {
            cuInit => device::init,
            cuDriverGetVersion => device::driver_get_version,
            cuGetErrorName => vgpu_ffi::entry::cu_get_error_name,
            cuGetErrorString => vgpu_ffi::entry::cu_get_error_string,
        }
    });
}

/// The NVML exports. Every entry but those under `without_init` needs
/// nvmlInit first (`require`). Bracketed values are constants appended to
/// the C arguments: the answer of a query whose value never changes (a
/// property of the profile's board or driver release), which string or
/// clock a call asks for.
pub mod nvml_exports {
    use crate::nvml::{self, Clients, Key, Text};
    use crate::profile;
    use cuda_types::nvml::*;

    cuda_types::with_nvml_functions!(api_macros::export_functions {
        lookup = exported_nvml_symbol,
        require = crate::nvml::ensure_init,
        implemented {
            // Library
            // The library's version strings (NVML's own is answered before
            // nvmlInit, the driver's is not).
            nvmlSystemGetDriverVersion => crate::ffi::nvml_string[profile::release().driver],

            // Inventory and identity
            nvmlDeviceGetCount => nvml::device_get_count,
            nvmlDeviceGetCount_v2 => nvml::device_get_count,
            nvmlDeviceGetHandleByIndex => nvml::handle_by_index,
            nvmlDeviceGetHandleByIndex_v2 => nvml::handle_by_index,
            nvmlDeviceGetHandleByUUID => nvml::handle_by[Key::Uuid],
            nvmlDeviceGetHandleByPciBusId => nvml::handle_by[Key::PciBusId],
            nvmlDeviceGetHandleByPciBusId_v2 => nvml::handle_by[Key::PciBusId],
            nvmlDeviceGetHandleBySerial => nvml::handle_by[Key::Serial],
            nvmlDeviceGetName => nvml::get_string[Text::Name],
            nvmlDeviceGetUUID => nvml::get_string[Text::Uuid],
            nvmlDeviceGetSerial => nvml::get_string[Text::Serial],
            nvmlDeviceGetIndex => nvml::get_index,
            // The N of /dev/nvidiaN: the index.
            nvmlDeviceGetMinorNumber => nvml::get_index,
            // Every version fills the same current struct layout.
            nvmlDeviceGetPciInfo => nvml::get_pci_info,
            nvmlDeviceGetPciInfo_v2 => nvml::get_pci_info,
            nvmlDeviceGetPciInfo_v3 => nvml::get_pci_info,
            nvmlDeviceGetCudaComputeCapability => nvml::get_cuda_compute_capability,
            // Datacenter boards since A100 report the plain "NVIDIA" brand.
            nvmlDeviceGetBrand => nvml::answer[nvmlBrandType_t::NVML_BRAND_NVIDIA],
            nvmlDeviceGetArchitecture => nvml::answer[profile::board().nvml_arch],
            nvmlDeviceGetMemoryBusWidth => nvml::answer[profile::board().bus_width as u32],
            // SMs x FP32 cores per SM.
            nvmlDeviceGetNumGpuCores => nvml::answer[profile::board().sm_count as u32 * profile::board().fp32_cores_per_sm],
            nvmlDeviceGetCurrPcieLinkGeneration => nvml::answer[profile::board().pcie_generation],
            nvmlDeviceGetMaxPcieLinkGeneration => nvml::answer[profile::board().pcie_generation],
            nvmlDeviceGetCurrPcieLinkWidth => nvml::answer[profile::board().pcie_width],
            nvmlDeviceGetMaxPcieLinkWidth => nvml::answer[profile::board().pcie_width],

            // Memory
            nvmlDeviceGetMemoryInfo => nvml::get_memory_info,
            nvmlDeviceGetMemoryInfo_v2 => nvml::get_memory_info_v2,

            // Telemetry
            nvmlDeviceGetTemperature => nvml::get_temperature,
            nvmlDeviceGetTemperatureV => nvml::get_temperature_v,
            nvmlDeviceGetTemperatureThreshold => nvml::get_temperature_threshold,
            nvmlDeviceGetPowerUsage => nvml::get_power_usage,
            // The limit as set, enforced and by default: all the TDP.
            nvmlDeviceGetPowerManagementLimit => nvml::answer[profile::board().power_limit],
            nvmlDeviceGetEnforcedPowerLimit => nvml::answer[profile::board().power_limit],
            nvmlDeviceGetPowerManagementDefaultLimit => nvml::answer[profile::board().power_limit],
            nvmlDeviceGetPowerManagementLimitConstraints => nvml::get_power_limit_constraints,
            nvmlDeviceGetUtilizationRates => nvml::get_utilization_rates,
            nvmlDeviceGetEncoderUtilization => nvml::get_codec_utilization,
            nvmlDeviceGetDecoderUtilization => nvml::get_codec_utilization,
            nvmlDeviceGetClockInfo => nvml::get_clock_info[nvmlClockId_t::NVML_CLOCK_ID_CURRENT],
            nvmlDeviceGetMaxClockInfo => nvml::get_clock_info[nvmlClockId_t::NVML_CLOCK_ID_CUSTOMER_BOOST_MAX],
            nvmlDeviceGetClock => nvml::get_clock,
            nvmlDeviceGetCurrentClocksThrottleReasons => nvml::get_clocks_event_reasons,
            nvmlDeviceGetCurrentClocksEventReasons => nvml::get_clocks_event_reasons,
            // Datacenter Hopper boards stay in P0 while the driver is loaded.
            nvmlDeviceGetPerformanceState => nvml::answer[nvmlPstates_t::NVML_PSTATE_0],
            nvmlDeviceGetPowerState => nvml::answer[nvmlPstates_t::NVML_PSTATE_0],

            // Modes (no display engine output on a datacenter board)
            nvmlDeviceGetPersistenceMode => nvml::answer[nvmlEnableState_t::NVML_FEATURE_DISABLED],
            nvmlDeviceGetComputeMode => nvml::answer[nvmlComputeMode_t::NVML_COMPUTEMODE_DEFAULT],
            nvmlDeviceGetMigMode => nvml::get_mig_mode,
            nvmlDeviceIsMigDeviceHandle => nvml::answer[0],
            nvmlDeviceGetDisplayMode => nvml::answer[nvmlEnableState_t::NVML_FEATURE_DISABLED],
            nvmlDeviceGetDisplayActive => nvml::answer[nvmlEnableState_t::NVML_FEATURE_DISABLED],
            nvmlDeviceGetEccMode => nvml::get_ecc_mode,
            nvmlDeviceGetTotalEccErrors => nvml::get_total_ecc_errors,

            // Processes
            nvmlDeviceGetComputeRunningProcesses => nvml::processes::<nvmlProcessInfo_v1_t>[Clients::Compute],
            nvmlDeviceGetComputeRunningProcesses_v2 => nvml::processes::<nvmlProcessInfo_v2_t>[Clients::Compute],
            nvmlDeviceGetComputeRunningProcesses_v3 => nvml::processes::<nvmlProcessInfo_v2_t>[Clients::Compute],
            nvmlDeviceGetGraphicsRunningProcesses => nvml::processes::<nvmlProcessInfo_v1_t>[Clients::Graphics],
            nvmlDeviceGetGraphicsRunningProcesses_v2 => nvml::processes::<nvmlProcessInfo_v2_t>[Clients::Graphics],
            nvmlDeviceGetGraphicsRunningProcesses_v3 => nvml::processes::<nvmlProcessInfo_v2_t>[Clients::Graphics],

            // Deliberately absent, so they answer NOT_SUPPORTED as a real
            // H100 PCIe on Linux does: nvmlDeviceGetFanSpeed(_v2) (passively
            // cooled), nvmlDeviceGetDriverModel(_v2) (Windows only).
        }
        without_init {
            nvmlInit => nvml::init[0],
            nvmlInit_v2 => nvml::init[0],
            nvmlInitWithFlags => nvml::init,
            // Checks the count itself, under the same lock it decrements.
            nvmlShutdown => nvml::shutdown,
            nvmlErrorString => vgpu_ffi::entry::nvml_error_string,
            nvmlSystemGetNVMLVersion => crate::ffi::nvml_string[profile::release().nvml],
            nvmlSystemGetCudaDriverVersion => nvml::system_get_cuda_driver_version,
            nvmlSystemGetCudaDriverVersion_v2 => nvml::system_get_cuda_driver_version,
        }
    });
}

#[cfg(test)]
mod tests;
