//! `libcuda.so.1` for machines without a GPU: the CUDA driver API, answered
//! from a vgpu host's inventory where it can be and forwarded to the host
//! where work must happen.
//!
//! The list below is the status of every driver entry point: a name listed
//! under `implemented` forwards to the function named; every other name of
//! the pinned cuda.h is exported as a CUDA_ERROR_NOT_SUPPORTED stub. Every
//! entry point outside `without_init` answers CUDA_ERROR_NOT_INITIALIZED
//! before a successful `cuInit` (`driver::require`); every C argument is
//! converted before a body runs (`vgpu_ffi::FromCuda`: out-pointers,
//! strings, this library's handles — see `args.rs`). Nothing runs at load
//! time; the host is contacted by the first `cuInit` (or
//! `cuDriverGetVersion`).

use context::state::{CtxArg, API_VERSION, API_VERSION_LEGACY};
use cuda_types::cuda::*;
use memory::When;
use std::ptr::null_mut;
use stream::Null;

mod args;
mod capture;
pub mod context;
mod darkapi;
mod device;
pub mod driver;
mod init;
mod procaddr;
// The memory path: device/host tables, copies, streams, pools, VMM.
mod check;
mod copy2d;
pub mod devmem;
mod host_memory;
mod memory;
mod mempool;
mod pointer;
mod stream;
mod vmm;
// Kernels: images, modules/libraries, launches, events, host functions, cuLink*.
mod event;
// Stream capture and graphs: recorded in the guest, sent at instantiation.
mod graph;
mod image;
mod launch;
mod link;
mod module;
mod profiler;
mod tensormap;

// The host-refusal marker and the virtual files' provider registration.
vgpu_guest::shim_glue!(owner);

// One body per family: the legacy 32-bit, `_v2`, `_ptds`/`_ptsz` and
// `Async` forms of an entry point differ in argument widths (converted,
// see `args.rs`) or in the constants in brackets: a synchronous copy's
// `When::Sync` where an `...Async` form has its stream, the meaning of a
// NULL stream (`Null`), a flag the older form lacks.
cuda_types::with_cuda_functions!(api_macros::export_functions {
    lookup = exported_symbol,
    require = driver::require,
    implemented {
        cuDeviceGet => device::get,
        cuDeviceGetCount => device::get_count,
        cuDeviceGetName => device::get_name,
        cuDeviceGetUuid => device::get_uuid,
        cuDeviceGetUuid_v2 => device::get_uuid,
        cuDeviceTotalMem => device::total_mem,
        cuDeviceTotalMem_v2 => device::total_mem,
        cuDeviceGetAttribute => device::get_attribute,
        cuDeviceComputeCapability => device::compute_capability,
        cuDeviceGetProperties => device::get_properties,
        cuDeviceGetPCIBusId => device::get_pci_bus_id,
        cuDeviceGetByPCIBusId => device::get_by_pci_bus_id,
        cuDeviceCanAccessPeer => device::can_access_peer,
        cuDeviceGetP2PAttribute => device::get_p2p_attribute,

        cuDevicePrimaryCtxRetain => context::primary_retain,
        cuDevicePrimaryCtxRelease => context::primary_release,
        cuDevicePrimaryCtxRelease_v2 => context::primary_release,
        cuDevicePrimaryCtxReset => context::primary_reset,
        cuDevicePrimaryCtxReset_v2 => context::primary_reset,
        cuDevicePrimaryCtxSetFlags => context::primary_set_flags[false],
        cuDevicePrimaryCtxSetFlags_v2 => context::primary_set_flags[true],
        cuDevicePrimaryCtxGetState => context::primary_get_state,

        cuCtxCreate => context::create[API_VERSION_LEGACY],
        cuCtxCreate_v2 => context::create[API_VERSION],
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
        cuCtxGetDevice => context::get_device[CtxArg::Null],
        cuCtxGetDevice_v2 => context::get_device,
        cuCtxGetFlags => context::get_flags,
        cuCtxGetApiVersion => context::get_api_version,
        cuCtxGetId => context::get_id,
        cuCtxGetLimit => context::get_limit,
        cuCtxSetLimit => context::set_limit,
        cuCtxSynchronize => context::synchronize[CtxArg::Null],
        cuCtxSynchronize_v2 => context::synchronize,
        cuCtxEnablePeerAccess => context::enable_peer_access,
        cuCtxDisablePeerAccess => context::disable_peer_access,

        cuMemGetInfo => memory::get_info,
        cuMemGetInfo_v2 => memory::get_info,

        cuMemAlloc => memory::alloc,
        cuMemAlloc_v2 => memory::alloc,
        cuMemAllocPitch => memory::alloc_pitch,
        cuMemAllocPitch_v2 => memory::alloc_pitch,
        cuMemFree => memory::free,
        cuMemFree_v2 => memory::free,
        cuMemGetAddressRange => memory::get_address_range,
        cuMemGetAddressRange_v2 => memory::get_address_range,
        cuMemcpy => memory::memcpy[When::Sync, Null::Legacy],
        cuMemcpy_ptds => memory::memcpy[When::Sync, Null::PerThread],
        cuMemcpyAsync => memory::memcpy[Null::Legacy],
        cuMemcpyAsync_ptsz => memory::memcpy[Null::PerThread],
        cuMemcpyHtoD => memory::memcpy_htod[When::Sync, Null::Legacy],
        cuMemcpyHtoD_v2 => memory::memcpy_htod[When::Sync, Null::Legacy],
        cuMemcpyHtoD_v2_ptds => memory::memcpy_htod[When::Sync, Null::PerThread],
        cuMemcpyHtoDAsync => memory::memcpy_htod[Null::Legacy],
        cuMemcpyHtoDAsync_v2 => memory::memcpy_htod[Null::Legacy],
        cuMemcpyHtoDAsync_v2_ptsz => memory::memcpy_htod[Null::PerThread],
        cuMemcpyDtoH => memory::memcpy_dtoh[When::Sync, Null::Legacy],
        cuMemcpyDtoH_v2 => memory::memcpy_dtoh[When::Sync, Null::Legacy],
        cuMemcpyDtoH_v2_ptds => memory::memcpy_dtoh[When::Sync, Null::PerThread],
        cuMemcpyDtoHAsync => memory::memcpy_dtoh[Null::Legacy],
        cuMemcpyDtoHAsync_v2 => memory::memcpy_dtoh[Null::Legacy],
        cuMemcpyDtoHAsync_v2_ptsz => memory::memcpy_dtoh[Null::PerThread],
        cuMemcpyDtoD => memory::memcpy_dtod[When::Sync, Null::Legacy],
        cuMemcpyDtoD_v2 => memory::memcpy_dtod[When::Sync, Null::Legacy],
        cuMemcpyDtoD_v2_ptds => memory::memcpy_dtod[When::Sync, Null::PerThread],
        cuMemcpyDtoDAsync => memory::memcpy_dtod[Null::Legacy],
        cuMemcpyDtoDAsync_v2 => memory::memcpy_dtod[Null::Legacy],
        cuMemcpyDtoDAsync_v2_ptsz => memory::memcpy_dtod[Null::PerThread],
        cuMemcpyPeer => memory::memcpy_peer[When::Sync, Null::Legacy],
        cuMemcpyPeer_ptds => memory::memcpy_peer[When::Sync, Null::PerThread],
        cuMemcpyPeerAsync => memory::memcpy_peer[Null::Legacy],
        cuMemcpyPeerAsync_ptsz => memory::memcpy_peer[Null::PerThread],
        cuMemcpy2D => copy2d::memcpy2d[When::Sync, Null::Legacy],
        cuMemcpy2D_v2 => copy2d::memcpy2d[When::Sync, Null::Legacy],
        cuMemcpy2D_v2_ptds => copy2d::memcpy2d[When::Sync, Null::PerThread],
        cuMemcpy2DUnaligned => copy2d::memcpy2d[When::Sync, Null::Legacy],
        cuMemcpy2DUnaligned_v2 => copy2d::memcpy2d[When::Sync, Null::Legacy],
        cuMemcpy2DUnaligned_v2_ptds => copy2d::memcpy2d[When::Sync, Null::PerThread],
        cuMemcpy2DAsync => copy2d::memcpy2d[Null::Legacy],
        cuMemcpy2DAsync_v2 => copy2d::memcpy2d[Null::Legacy],
        cuMemcpy2DAsync_v2_ptsz => copy2d::memcpy2d[Null::PerThread],
        cuMemcpy3D => copy2d::memcpy3d[When::Sync, Null::Legacy],
        cuMemcpy3D_v2 => copy2d::memcpy3d[When::Sync, Null::Legacy],
        cuMemcpy3D_v2_ptds => copy2d::memcpy3d[When::Sync, Null::PerThread],
        cuMemcpy3DAsync => copy2d::memcpy3d[Null::Legacy],
        cuMemcpy3DAsync_v2 => copy2d::memcpy3d[Null::Legacy],
        cuMemcpy3DAsync_v2_ptsz => copy2d::memcpy3d[Null::PerThread],
        cuMemsetD8 => memory::memset_1d[When::Sync, Null::Legacy],
        cuMemsetD8_v2 => memory::memset_1d[When::Sync, Null::Legacy],
        cuMemsetD8_v2_ptds => memory::memset_1d[When::Sync, Null::PerThread],
        cuMemsetD16 => memory::memset_1d[When::Sync, Null::Legacy],
        cuMemsetD16_v2 => memory::memset_1d[When::Sync, Null::Legacy],
        cuMemsetD16_v2_ptds => memory::memset_1d[When::Sync, Null::PerThread],
        cuMemsetD32 => memory::memset_1d[When::Sync, Null::Legacy],
        cuMemsetD32_v2 => memory::memset_1d[When::Sync, Null::Legacy],
        cuMemsetD32_v2_ptds => memory::memset_1d[When::Sync, Null::PerThread],
        cuMemsetD2D8 => memory::memset_2d[When::Sync, Null::Legacy],
        cuMemsetD2D8_v2 => memory::memset_2d[When::Sync, Null::Legacy],
        cuMemsetD2D8_v2_ptds => memory::memset_2d[When::Sync, Null::PerThread],
        cuMemsetD2D16 => memory::memset_2d[When::Sync, Null::Legacy],
        cuMemsetD2D16_v2 => memory::memset_2d[When::Sync, Null::Legacy],
        cuMemsetD2D16_v2_ptds => memory::memset_2d[When::Sync, Null::PerThread],
        cuMemsetD2D32 => memory::memset_2d[When::Sync, Null::Legacy],
        cuMemsetD2D32_v2 => memory::memset_2d[When::Sync, Null::Legacy],
        cuMemsetD2D32_v2_ptds => memory::memset_2d[When::Sync, Null::PerThread],
        cuMemsetD8Async => memory::memset_1d[Null::Legacy],
        cuMemsetD8Async_ptsz => memory::memset_1d[Null::PerThread],
        cuMemsetD16Async => memory::memset_1d[Null::Legacy],
        cuMemsetD16Async_ptsz => memory::memset_1d[Null::PerThread],
        cuMemsetD32Async => memory::memset_1d[Null::Legacy],
        cuMemsetD32Async_ptsz => memory::memset_1d[Null::PerThread],
        cuMemsetD2D8Async => memory::memset_2d[Null::Legacy],
        cuMemsetD2D8Async_ptsz => memory::memset_2d[Null::PerThread],
        cuMemsetD2D16Async => memory::memset_2d[Null::Legacy],
        cuMemsetD2D16Async_ptsz => memory::memset_2d[Null::PerThread],
        cuMemsetD2D32Async => memory::memset_2d[Null::Legacy],
        cuMemsetD2D32Async_ptsz => memory::memset_2d[Null::PerThread],

        cuMemAllocHost => host_memory::host_alloc[0],
        cuMemAllocHost_v2 => host_memory::host_alloc[0],
        cuMemHostAlloc => host_memory::host_alloc,
        cuMemFreeHost => host_memory::free_host,
        cuMemHostRegister => host_memory::register,
        cuMemHostRegister_v2 => host_memory::register,
        cuMemHostUnregister => host_memory::unregister,
        cuMemHostGetDevicePointer => host_memory::get_device_pointer,
        cuMemHostGetDevicePointer_v2 => host_memory::get_device_pointer,
        cuMemHostGetFlags => host_memory::get_flags,
        cuPointerGetAttribute => pointer::get_attribute,
        cuPointerGetAttributes => pointer::get_attributes,

        cuMemGetAllocationGranularity => vmm::get_allocation_granularity,
        cuMemCreate => vmm::create,
        cuMemRelease => vmm::release,
        cuMemAddressReserve => vmm::address_reserve,
        cuMemAddressFree => vmm::address_free,
        cuMemMap => vmm::map,
        cuMemUnmap => vmm::unmap,
        cuMemSetAccess => vmm::set_access,
        cuMemGetAccess => vmm::get_access,

        cuCtxGetStreamPriorityRange => stream::priority_range,
        cuStreamIsCapturing => capture::is_capturing[Null::Legacy],
        cuStreamIsCapturing_ptsz => capture::is_capturing[Null::PerThread],
        cuStreamGetCaptureInfo => capture::info_v1[Null::Legacy],
        cuStreamGetCaptureInfo_ptsz => capture::info_v1[Null::PerThread],
        cuStreamGetCaptureInfo_v2 => capture::info_v2[Null::Legacy],
        cuStreamGetCaptureInfo_v2_ptsz => capture::info_v2[Null::PerThread],
        cuStreamGetCaptureInfo_v3 => capture::info_v3[Null::Legacy],
        cuStreamGetCaptureInfo_v3_ptsz => capture::info_v3[Null::PerThread],
        // The v1 forms have no mode: the default one.
        cuStreamBeginCapture => capture::begin[capture::DEFAULT_MODE, Null::Legacy],
        cuStreamBeginCapture_ptsz => capture::begin[capture::DEFAULT_MODE, Null::PerThread],
        cuStreamBeginCapture_v2 => capture::begin[Null::Legacy],
        cuStreamBeginCapture_v2_ptsz => capture::begin[Null::PerThread],
        cuStreamBeginCaptureToGraph => capture::begin_to_graph[Null::Legacy],
        cuStreamBeginCaptureToGraph_ptsz => capture::begin_to_graph[Null::PerThread],
        cuStreamEndCapture => capture::end_capture[Null::Legacy],
        cuStreamEndCapture_ptsz => capture::end_capture[Null::PerThread],
        cuStreamUpdateCaptureDependencies => capture::update_dependencies_v1[Null::Legacy],
        cuStreamUpdateCaptureDependencies_ptsz => capture::update_dependencies_v1[Null::PerThread],
        cuStreamUpdateCaptureDependencies_v2 => capture::update_dependencies[Null::Legacy],
        cuStreamUpdateCaptureDependencies_v2_ptsz => capture::update_dependencies[Null::PerThread],
        cuStreamCreate => stream::create[stream::PRIORITY_LEAST],
        cuStreamCreateWithPriority => stream::create,
        cuStreamDestroy => stream::destroy,
        cuStreamDestroy_v2 => stream::destroy,
        cuStreamSynchronize => stream::synchronize[Null::Legacy],
        cuStreamSynchronize_ptsz => stream::synchronize[Null::PerThread],
        cuStreamQuery => stream::query[Null::Legacy],
        cuStreamQuery_ptsz => stream::query[Null::PerThread],
        cuStreamGetPriority => stream::get_priority[Null::Legacy],
        cuStreamGetPriority_ptsz => stream::get_priority[Null::PerThread],
        cuStreamGetFlags => stream::get_flags[Null::Legacy],
        cuStreamGetFlags_ptsz => stream::get_flags[Null::PerThread],
        // The v1 form has no green-context output (and needs its context
        // output).
        cuStreamGetCtx => stream::get_ctx[None, Null::Legacy],
        cuStreamGetCtx_ptsz => stream::get_ctx[None, Null::PerThread],
        cuStreamGetCtx_v2 => stream::get_ctx[Null::Legacy],
        cuStreamGetCtx_v2_ptsz => stream::get_ctx[Null::PerThread],

        cuMemAllocAsync => mempool::mem_alloc_async[Null::Legacy],
        cuMemAllocAsync_ptsz => mempool::mem_alloc_async[Null::PerThread],
        cuMemAllocFromPoolAsync => mempool::mem_alloc_from_pool_async[Null::Legacy],
        cuMemAllocFromPoolAsync_ptsz => mempool::mem_alloc_from_pool_async[Null::PerThread],
        cuMemFreeAsync => mempool::mem_free_async[Null::Legacy],
        cuMemFreeAsync_ptsz => mempool::mem_free_async[Null::PerThread],
        cuDeviceGetDefaultMemPool => mempool::device_get_default_mem_pool,
        cuDeviceGetMemPool => mempool::device_get_default_mem_pool,
        cuDeviceSetMemPool => mempool::device_set_mem_pool,
        cuMemPoolGetAttribute => mempool::get_attribute,
        cuMemPoolSetAttribute => mempool::set_attribute,
        cuMemPoolTrimTo => mempool::trim_to,

        cuModuleLoad => module::load_file,
        cuModuleLoadData => module::load_data[0, null_mut(), null_mut()],
        cuModuleLoadDataEx => module::load_data,
        cuModuleLoadFatBinary => module::load_data[0, null_mut(), null_mut()],
        cuModuleUnload => module::unload,
        cuModuleGetFunction => module::get_function,
        cuModuleGetGlobal => module::get_global,
        cuModuleGetGlobal_v2 => module::get_global,
        cuLibraryLoadData => module::library_load_data,
        cuLibraryLoadFromFile => module::library_load_from_file,
        cuLibraryUnload => module::library_unload,
        cuLibraryGetKernel => module::library_get_kernel,
        cuLibraryGetModule => module::library_get_module,
        cuLibraryGetGlobal => module::library_get_global,
        cuKernelGetFunction => module::kernel_get_function,
        cuKernelGetLibrary => module::kernel_get_library,
        cuKernelGetName => module::get_name,
        cuKernelGetParamInfo => module::get_param_info,
        cuKernelGetParamCount => module::get_param_count,
        cuKernelGetAttribute => module::kernel_get_attribute,
        cuKernelSetAttribute => module::kernel_set_attribute,
        cuKernelSetCacheConfig => module::kernel_set_cache_config,
        cuFuncGetModule => module::func_get_module,
        cuFuncGetName => module::get_name,
        cuFuncGetParamInfo => module::get_param_info,
        cuFuncGetParamCount => module::get_param_count,
        cuFuncIsLoaded => module::func_is_loaded,
        cuFuncLoad => module::func_load,
        cuFuncGetAttribute => module::func_get_attribute,
        cuFuncSetAttribute => module::func_set_attribute,
        cuFuncSetCacheConfig => module::func_set_cache_config,

        cuLaunchKernel => launch::launch_kernel[Null::Legacy, false],
        cuLaunchKernel_ptsz => launch::launch_kernel[Null::PerThread, false],
        cuLaunchKernelEx => launch::launch_kernel_ex[Null::Legacy],
        cuLaunchKernelEx_ptsz => launch::launch_kernel_ex[Null::PerThread],
        // No `extra` argument: the constant takes its place.
        cuLaunchCooperativeKernel => launch::launch_kernel[null_mut(), Null::Legacy, true],
        cuLaunchCooperativeKernel_ptsz => launch::launch_kernel[null_mut(), Null::PerThread, true],
        cuOccupancyMaxActiveBlocksPerMultiprocessor => launch::max_active_blocks[0],
        cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags => launch::max_active_blocks,
        cuOccupancyMaxPotentialBlockSize => launch::max_potential_block_size[0],
        cuOccupancyMaxPotentialBlockSizeWithFlags => launch::max_potential_block_size,
        cuOccupancyAvailableDynamicSMemPerBlock => launch::available_dynamic_smem,
        cuOccupancyMaxActiveClusters => launch::max_active_clusters,
        cuOccupancyMaxPotentialClusterSize => launch::max_potential_cluster_size,
        cuLaunchHostFunc => launch::launch_host_func[0, Null::Legacy],
        cuLaunchHostFunc_ptsz => launch::launch_host_func[0, Null::PerThread],
        cuLaunchHostFunc_v2 => launch::launch_host_func[Null::Legacy],
        cuLaunchHostFunc_v2_ptsz => launch::launch_host_func[Null::PerThread],
        cuStreamAddCallback => launch::add_callback[Null::Legacy],
        cuStreamAddCallback_ptsz => launch::add_callback[Null::PerThread],

        cuEventCreate => event::create,
        cuEventDestroy => event::destroy,
        cuEventDestroy_v2 => event::destroy,
        cuEventRecord => event::record[0, Null::Legacy],
        cuEventRecord_ptsz => event::record[0, Null::PerThread],
        cuEventRecordWithFlags => event::record[Null::Legacy],
        cuEventRecordWithFlags_ptsz => event::record[Null::PerThread],
        cuEventQuery => event::query,
        cuEventSynchronize => event::synchronize,
        cuEventElapsedTime => event::elapsed_time,
        cuEventElapsedTime_v2 => event::elapsed_time,
        cuStreamWaitEvent => event::stream_wait[Null::Legacy],
        cuStreamWaitEvent_ptsz => event::stream_wait[Null::PerThread],

        // Graphs (graph/): the `_v1` bodies of queries whose edge data sits
        // before the count are thin forms of the `_v2` ones.
        cuGraphCreate => graph::create,
        cuGraphDestroy => graph::destroy,
        cuGraphClone => graph::clone,
        cuGraphNodeFindInClone => graph::find_in_clone,
        cuGraphGetId => graph::get_id,
        cuGraphGetNodes => graph::get_nodes,
        cuGraphGetRootNodes => graph::get_root_nodes,
        cuGraphGetEdges => graph::get_edges_v1,
        cuGraphGetEdges_v2 => graph::get_edges,
        cuGraphNodeGetDependencies => graph::node_neighbours_v1[false],
        cuGraphNodeGetDependencies_v2 => graph::node_neighbours[false],
        cuGraphNodeGetDependentNodes => graph::node_neighbours_v1[true],
        cuGraphNodeGetDependentNodes_v2 => graph::node_neighbours[true],
        cuGraphAddDependencies => graph::add_dependencies_v1,
        cuGraphAddDependencies_v2 => graph::add_dependencies,
        cuGraphRemoveDependencies => graph::remove_dependencies_v1,
        cuGraphRemoveDependencies_v2 => graph::remove_dependencies,
        cuGraphDestroyNode => graph::destroy_node,
        cuGraphNodeGetType => graph::node_get_type,
        cuGraphNodeGetContainingGraph => graph::node_get_containing_graph,
        cuGraphNodeGetLocalId => graph::node_get_local_id,
        cuGraphNodeGetToolsId => graph::node_get_tools_id,
        cuGraphChildGraphNodeGetGraph => graph::child_graph_node_get_graph,
        cuGraphDebugDotPrint => graph::dot::debug_dot_print,

        cuGraphAddKernelNode => graph::node::add_kernel_node,
        cuGraphAddKernelNode_v2 => graph::node::add_kernel_node,
        cuGraphKernelNodeGetParams => graph::node::kernel_get_params,
        cuGraphKernelNodeGetParams_v2 => graph::node::kernel_get_params,
        cuGraphKernelNodeSetParams => graph::node::kernel_set_params,
        cuGraphKernelNodeSetParams_v2 => graph::node::kernel_set_params,
        cuGraphKernelNodeGetAttribute => graph::node::kernel_get_attribute,
        cuGraphKernelNodeSetAttribute => graph::node::kernel_set_attribute,
        cuGraphKernelNodeCopyAttributes => graph::node::kernel_copy_attributes,
        cuGraphAddMemcpyNode => graph::node::add_memcpy_node,
        cuGraphMemcpyNodeGetParams => graph::node::memcpy_get_params,
        cuGraphMemcpyNodeSetParams => graph::node::memcpy_set_params,
        cuGraphAddMemsetNode => graph::node::add_memset_node,
        cuGraphMemsetNodeGetParams => graph::node::memset_get_params,
        cuGraphMemsetNodeSetParams => graph::node::memset_set_params,
        cuGraphAddHostNode => graph::node::add_host_node,
        cuGraphHostNodeGetParams => graph::node::host_get_params,
        cuGraphHostNodeSetParams => graph::node::host_set_params,
        cuGraphAddChildGraphNode => graph::node::add_child_graph_node,
        cuGraphAddEmptyNode => graph::node::add_empty_node,
        cuGraphAddEventRecordNode => graph::node::add_event_node[false],
        cuGraphAddEventWaitNode => graph::node::add_event_node[true],
        cuGraphEventRecordNodeGetEvent => graph::node::event_get[false],
        cuGraphEventWaitNodeGetEvent => graph::node::event_get[true],
        cuGraphEventRecordNodeSetEvent => graph::node::event_set[false],
        cuGraphEventWaitNodeSetEvent => graph::node::event_set[true],
        cuGraphAddMemAllocNode => graph::node::add_mem_alloc_node,
        cuGraphMemAllocNodeGetParams => graph::node::mem_alloc_get_params,
        cuGraphAddMemFreeNode => graph::node::add_mem_free_node,
        cuGraphMemFreeNodeGetParams => graph::node::mem_free_get_params,
        cuGraphAddNode => graph::node::add_node_v1,
        cuGraphAddNode_v2 => graph::node::add_node,
        cuGraphAddNode_v3 => graph::node::add_node,
        cuGraphNodeGetParams => graph::node::node_get_params,
        cuGraphNodeSetParams => graph::node::node_set_params,
        cuGraphNodeSetParams_v2 => graph::node::node_set_params,
        cuDeviceGetGraphMemAttribute => graph::mem::get_attribute,
        cuDeviceSetGraphMemAttribute => graph::mem::set_attribute,
        cuDeviceGraphMemTrim => graph::mem::trim,

        cuGraphInstantiate => graph::exec::instantiate_v1,
        cuGraphInstantiate_v2 => graph::exec::instantiate_v1,
        cuGraphInstantiateWithFlags => graph::exec::instantiate_with_flags,
        cuGraphInstantiateWithParams => graph::exec::instantiate_with_params[Null::Legacy],
        cuGraphInstantiateWithParams_ptsz => graph::exec::instantiate_with_params[Null::PerThread],
        cuGraphExecGetFlags => graph::exec::get_flags,
        cuGraphExecGetId => graph::exec::get_id,
        cuGraphUpload => graph::exec::upload[Null::Legacy],
        cuGraphUpload_ptsz => graph::exec::upload[Null::PerThread],
        cuGraphLaunch => graph::exec::launch[Null::Legacy],
        cuGraphLaunch_ptsz => graph::exec::launch[Null::PerThread],
        cuGraphExecDestroy => graph::exec::destroy,
        cuGraphExecUpdate => graph::exec::update_v1,
        cuGraphExecUpdate_v2 => graph::exec::update_v2,
        cuGraphExecKernelNodeSetParams => graph::exec::kernel_set_params,
        cuGraphExecKernelNodeSetParams_v2 => graph::exec::kernel_set_params,
        cuGraphExecMemcpyNodeSetParams => graph::exec::memcpy_set_params,
        cuGraphExecMemsetNodeSetParams => graph::exec::memset_set_params,
        cuGraphExecHostNodeSetParams => graph::exec::host_set_params,
        cuGraphExecChildGraphNodeSetParams => graph::exec::child_set_params,
        cuGraphExecEventRecordNodeSetEvent => graph::exec::event_set[false],
        cuGraphExecEventWaitNodeSetEvent => graph::exec::event_set[true],
        cuGraphExecNodeSetParams => graph::exec::node_set_params,
        cuGraphNodeSetEnabled => graph::exec::set_enabled,
        cuGraphNodeGetEnabled => graph::exec::get_enabled,

        cuTensorMapEncodeTiled => tensormap::encode_tiled,
        cuTensorMapEncodeIm2col => tensormap::encode_im2col,
        cuTensorMapReplaceAddress => tensormap::replace_address,

        cuLinkCreate => link::create,
        cuLinkCreate_v2 => link::create,
        cuLinkAddData => link::add_data,
        cuLinkAddData_v2 => link::add_data,
        cuLinkAddFile => link::add_file,
        cuLinkAddFile_v2 => link::add_file,
        cuLinkComplete => link::complete,
        cuLinkDestroy => link::destroy,

        cuModuleGetLoadingMode => init::module_get_loading_mode,
    }
    // What works before `cuInit` on the real driver, and did here before
    // the list had a `require` (cudart asks for the driver version, the
    // export tables and entry points first; applications name a failed
    // cuInit's error).
    without_init {
        cuInit => init::init,
        cuDriverGetVersion => init::driver_get_version,
        cuGetProcAddress => procaddr::get_proc_address,
        cuGetProcAddress_v2 => procaddr::get_proc_address_v2,
        cuGetExportTable => darkapi::get_export_table,
        cuGetErrorName => vgpu_ffi::entry::cu_get_error_name,
        cuGetErrorString => vgpu_ffi::entry::cu_get_error_string,
        cuThreadExchangeStreamCaptureMode => capture::exchange_mode,
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    /// The list's `require`: no test process runs cuInit (there is no
    /// host), so every entry point outside `without_init` refuses before
    /// it looks at its arguments, and those inside still answer.
    #[test]
    fn initialisation_check_comes_first() {
        const NOT_INITIALIZED: CUresult = CUresult::CUDA_ERROR_NOT_INITIALIZED;
        let mut n = 0;
        let mut name: *const std::ffi::c_char = std::ptr::null();
        let mut mode = CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_GLOBAL;
        // SAFETY: live locals or NULL, which the checks refuse before any
        // access.
        unsafe {
            assert_eq!(cuDeviceGetCount(&mut n), NOT_INITIALIZED);
            assert_eq!(cuMemAlloc_v2(null_mut(), 0), NOT_INITIALIZED);
            assert_eq!(cuMemcpy2D_v2(std::ptr::null()), NOT_INITIALIZED);
            assert_eq!(cuStreamSynchronize(null_mut()), NOT_INITIALIZED);
            assert_eq!(
                cuDriverGetVersion(null_mut()),
                CUresult::CUDA_ERROR_INVALID_VALUE
            );
            assert_eq!(
                cuGetErrorName(NOT_INITIALIZED, &mut name),
                CUresult::CUDA_SUCCESS
            );
            assert_eq!(
                cuThreadExchangeStreamCaptureMode(&mut mode),
                CUresult::CUDA_SUCCESS
            );
        }
    }
}
