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
// The memory path: device/host tables, copies, streams, pools, VMM.
mod check;
mod copy2d;
pub mod devmem;
mod host_memory;
mod mempool;
mod pointer;
mod stream;
mod visible;
mod vmm;

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

        cuMemAlloc => memory::alloc_v1,
        cuMemAlloc_v2 => memory::alloc_v2,
        cuMemAllocPitch => memory::alloc_pitch_v1,
        cuMemAllocPitch_v2 => memory::alloc_pitch_v2,
        cuMemFree => memory::free_v1,
        cuMemFree_v2 => memory::free_v2,
        cuMemGetAddressRange => memory::get_address_range_v1,
        cuMemGetAddressRange_v2 => memory::get_address_range_v2,
        cuMemcpy => memory::memcpy,
        cuMemcpy_ptds => memory::memcpy,
        cuMemcpyAsync => memory::memcpy_async,
        cuMemcpyAsync_ptsz => memory::memcpy_async_ptsz,
        cuMemcpyHtoD => memory::htod_v1,
        cuMemcpyHtoD_v2 => memory::htod_v2,
        cuMemcpyHtoD_v2_ptds => memory::htod_v2,
        cuMemcpyHtoDAsync => memory::htod_async_v1,
        cuMemcpyHtoDAsync_v2 => memory::htod_async_v2,
        cuMemcpyHtoDAsync_v2_ptsz => memory::htod_async_v2_ptsz,
        cuMemcpyDtoH => memory::dtoh_v1,
        cuMemcpyDtoH_v2 => memory::dtoh_v2,
        cuMemcpyDtoH_v2_ptds => memory::dtoh_v2,
        cuMemcpyDtoHAsync => memory::dtoh_async_v1,
        cuMemcpyDtoHAsync_v2 => memory::dtoh_async_v2,
        cuMemcpyDtoHAsync_v2_ptsz => memory::dtoh_async_v2_ptsz,
        cuMemcpyDtoD => memory::dtod_v1,
        cuMemcpyDtoD_v2 => memory::dtod_v2,
        cuMemcpyDtoD_v2_ptds => memory::dtod_v2,
        cuMemcpyDtoDAsync => memory::dtod_async_v1,
        cuMemcpyDtoDAsync_v2 => memory::dtod_async_v2,
        cuMemcpyDtoDAsync_v2_ptsz => memory::dtod_async_v2_ptsz,
        cuMemcpyPeer => memory::peer_sync,
        cuMemcpyPeer_ptds => memory::peer_sync,
        cuMemcpyPeerAsync => memory::peer_async,
        cuMemcpyPeerAsync_ptsz => memory::peer_async_ptsz,
        cuMemcpy2D => copy2d::memcpy2d_v1,
        cuMemcpy2D_v2 => copy2d::memcpy2d_v2,
        cuMemcpy2D_v2_ptds => copy2d::memcpy2d_v2,
        cuMemcpy2DUnaligned => copy2d::memcpy2d_v1,
        cuMemcpy2DUnaligned_v2 => copy2d::memcpy2d_v2,
        cuMemcpy2DUnaligned_v2_ptds => copy2d::memcpy2d_v2,
        cuMemcpy2DAsync => copy2d::memcpy2d_async_v1,
        cuMemcpy2DAsync_v2 => copy2d::memcpy2d_async_v2,
        cuMemcpy2DAsync_v2_ptsz => copy2d::memcpy2d_async_v2_ptsz,
        cuMemcpy3D => copy2d::memcpy3d_v1,
        cuMemcpy3D_v2 => copy2d::memcpy3d_v2,
        cuMemcpy3D_v2_ptds => copy2d::memcpy3d_v2,
        cuMemcpy3DAsync => copy2d::memcpy3d_async_v1,
        cuMemcpy3DAsync_v2 => copy2d::memcpy3d_async_v2,
        cuMemcpy3DAsync_v2_ptsz => copy2d::memcpy3d_async_v2_ptsz,
        cuMemsetD8 => memory::memset_d8_v1,
        cuMemsetD8_v2 => memory::memset_d8,
        cuMemsetD8_v2_ptds => memory::memset_d8,
        cuMemsetD16 => memory::memset_d16_v1,
        cuMemsetD16_v2 => memory::memset_d16,
        cuMemsetD16_v2_ptds => memory::memset_d16,
        cuMemsetD32 => memory::memset_d32_v1,
        cuMemsetD32_v2 => memory::memset_d32,
        cuMemsetD32_v2_ptds => memory::memset_d32,
        cuMemsetD2D8 => memory::memset_d2d8_v1,
        cuMemsetD2D8_v2 => memory::memset_d2d8,
        cuMemsetD2D8_v2_ptds => memory::memset_d2d8,
        cuMemsetD2D16 => memory::memset_d2d16_v1,
        cuMemsetD2D16_v2 => memory::memset_d2d16,
        cuMemsetD2D16_v2_ptds => memory::memset_d2d16,
        cuMemsetD2D32 => memory::memset_d2d32_v1,
        cuMemsetD2D32_v2 => memory::memset_d2d32,
        cuMemsetD2D32_v2_ptds => memory::memset_d2d32,
        cuMemsetD8Async => memory::memset_d8_async,
        cuMemsetD8Async_ptsz => memory::memset_d8_async_ptsz,
        cuMemsetD16Async => memory::memset_d16_async,
        cuMemsetD16Async_ptsz => memory::memset_d16_async_ptsz,
        cuMemsetD32Async => memory::memset_d32_async,
        cuMemsetD32Async_ptsz => memory::memset_d32_async_ptsz,
        cuMemsetD2D8Async => memory::memset_d2d8_async,
        cuMemsetD2D8Async_ptsz => memory::memset_d2d8_async_ptsz,
        cuMemsetD2D16Async => memory::memset_d2d16_async,
        cuMemsetD2D16Async_ptsz => memory::memset_d2d16_async_ptsz,
        cuMemsetD2D32Async => memory::memset_d2d32_async,
        cuMemsetD2D32Async_ptsz => memory::memset_d2d32_async_ptsz,

        cuMemAllocHost => host_memory::alloc_host_v1,
        cuMemAllocHost_v2 => host_memory::alloc_host_v2,
        cuMemHostAlloc => host_memory::host_alloc_entry,
        cuMemFreeHost => host_memory::free_host,
        cuMemHostRegister => host_memory::register,
        cuMemHostRegister_v2 => host_memory::register,
        cuMemHostUnregister => host_memory::unregister,
        cuMemHostGetDevicePointer => host_memory::get_device_pointer_v1,
        cuMemHostGetDevicePointer_v2 => host_memory::get_device_pointer_v2,
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

        cuStreamCreate => stream::create_default,
        cuStreamCreateWithPriority => stream::create_with_priority,
        cuStreamDestroy => stream::destroy,
        cuStreamDestroy_v2 => stream::destroy,
        cuStreamSynchronize => stream::synchronize,
        cuStreamSynchronize_ptsz => stream::synchronize_ptsz,
        cuStreamQuery => stream::query,
        cuStreamQuery_ptsz => stream::query_ptsz,
        cuStreamGetPriority => stream::get_priority,
        cuStreamGetPriority_ptsz => stream::get_priority_ptsz,
        cuStreamGetFlags => stream::get_flags,
        cuStreamGetFlags_ptsz => stream::get_flags_ptsz,
        cuStreamGetCtx => stream::get_ctx,
        cuStreamGetCtx_ptsz => stream::get_ctx_ptsz,
        cuStreamGetCtx_v2 => stream::get_ctx_v2,
        cuStreamGetCtx_v2_ptsz => stream::get_ctx_v2_ptsz,

        cuMemAllocAsync => mempool::mem_alloc_async,
        cuMemAllocAsync_ptsz => mempool::mem_alloc_async_ptsz,
        cuMemFreeAsync => mempool::mem_free_async,
        cuMemFreeAsync_ptsz => mempool::mem_free_async_ptsz,
        cuDeviceGetDefaultMemPool => mempool::device_get_default_mem_pool,
        cuDeviceGetMemPool => mempool::device_get_mem_pool,
        cuMemPoolGetAttribute => mempool::get_attribute,
        cuMemPoolSetAttribute => mempool::set_attribute,
        cuMemPoolTrimTo => mempool::trim_to,

        cuGetProcAddress => procaddr::get_proc_address,
        cuGetProcAddress_v2 => procaddr::get_proc_address_v2,
        cuGetExportTable => darkapi::get_export_table,
        cuModuleGetLoadingMode => init::module_get_loading_mode,

        cuGetErrorName => error::get_error_name,
        cuGetErrorString => error::get_error_string,
    }
});
