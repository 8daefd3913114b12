//! The emulated board: an NVIDIA H100 PCIe (GH100, 114 SMs, 80 GB HBM2e).
//!
//! Values come from `deviceQuery` / `cudaDeviceProp` / `nvidia-smi -q` output
//! of real H100 PCIe boards and the Hopper tuning guide. Where the hardware
//! supports a feature whose API the software GPU does not implement (pool
//! and legacy IPC, external semaphores, arrays, stream memory ops), the
//! attribute says 0: an application that believes a 1 takes a code path that
//! would then fail, which is worse than never taking it.

use cuda_types::cuda::CUdevice_attribute as A;
use cuda_types::cuda::CUresult;

pub const NAME: &str = "NVIDIA H100 PCIe";
pub const CC_MAJOR: i32 = 9;
pub const CC_MINOR: i32 = 0;
pub const SM_COUNT: i32 = 114;
const MIB: u64 = 1024 * 1024;
/// What `nvidia-smi` reports as the total of an H100 PCIe.
pub const TOTAL_MEMORY: u64 = 81559 * MIB;
/// Memory the driver itself keeps (page tables, context state): reported as
/// used and never available to allocations.
pub const RESERVED_MEMORY: u64 = 500 * MIB;

/// PCI identity: device 0x2331 from vendor 0x10DE, subsystem 0x16C1.
pub const PCI_DEVICE_ID: u32 = 0x2331_10DE;
pub const PCI_SUBSYSTEM_ID: u32 = 0x16C1_10DE;
pub const PCI_DOMAIN: u32 = 0;
pub const PCI_BUS: u32 = 0x01;
pub const PCI_DEVICE: u32 = 0;

/// Clocks in MHz: the boost clock of the board, its HBM2e clock, and where
/// the graphics and video clocks idle.
pub const MAX_GRAPHICS_CLOCK_MHZ: u32 = 1755;
pub const MAX_MEMORY_CLOCK_MHZ: u32 = 1593;
pub const MAX_VIDEO_CLOCK_MHZ: u32 = 1620;
pub const IDLE_GRAPHICS_CLOCK_MHZ: u32 = 345;
pub const IDLE_VIDEO_CLOCK_MHZ: u32 = 765;

/// Board power in milliwatts: 350 W TDP, 200 W lowest settable limit.
pub const POWER_LIMIT_MW: u32 = 350_000;
pub const POWER_LIMIT_MIN_MW: u32 = 200_000;
pub const IDLE_POWER_MW: u32 = 48_000;

/// A 590-series datacenter driver carrying CUDA 13.5 (`cuDriverGetVersion`).
pub const DRIVER_VERSION: &str = "590.48.01";
pub const NVML_VERSION: &str = "13.590.48.01";
pub const CUDA_DRIVER_VERSION: i32 = 13050;

/// [`CUDA_DRIVER_VERSION`], unless `VGPU_EMU_CUDA_VERSION` (e.g. `12020`)
/// asks for another, so tests can play an older driver that CUDA 13
/// runtimes refuse. Read once.
pub fn cuda_driver_version() -> i32 {
    static V: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("VGPU_EMU_CUDA_VERSION")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|v| *v > 0)
            .unwrap_or(CUDA_DRIVER_VERSION)
    })
}

const SHARED_PER_BLOCK: i32 = 48 * 1024;
const SHARED_PER_BLOCK_OPTIN: i32 = 227 * 1024;
const SHARED_PER_SM: i32 = 228 * 1024;

/// The attribute table without a fallback: `None` means the table does not
/// list the attribute, which the unit test forbids for every attribute the
/// pinned header declares.
fn listed(attr: A) -> Option<i32> {
    Some(match attr {
        A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK => 1024,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X => 1024,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y => 1024,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z => 64,
        A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X => i32::MAX,
        A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y => 65535,
        A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z => 65535,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK => SHARED_PER_BLOCK,
        A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY => 65536,
        A::CU_DEVICE_ATTRIBUTE_WARP_SIZE => 32,
        A::CU_DEVICE_ATTRIBUTE_MAX_PITCH => i32::MAX,
        A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK => 65536,
        A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE => (MAX_GRAPHICS_CLOCK_MHZ * 1000) as i32,
        A::CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT => 512,
        A::CU_DEVICE_ATTRIBUTE_GPU_OVERLAP => 1,
        A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT => SM_COUNT,
        A::CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT => 0,
        A::CU_DEVICE_ATTRIBUTE_INTEGRATED => 0,
        A::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY => 1,
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_MODE => 0,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_WIDTH => 131072,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_WIDTH => 131072,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_HEIGHT => 65536,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH => 16384,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT => 16384,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH => 16384,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_HEIGHT => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_LAYERS => 2048,
        A::CU_DEVICE_ATTRIBUTE_SURFACE_ALIGNMENT => 512,
        A::CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS => 1,
        A::CU_DEVICE_ATTRIBUTE_ECC_ENABLED => 1,
        A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID => PCI_BUS as i32,
        A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID => PCI_DEVICE as i32,
        A::CU_DEVICE_ATTRIBUTE_TCC_DRIVER => 0,
        A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE => (MAX_MEMORY_CLOCK_MHZ * 1000) as i32,
        A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH => 5120,
        // 50 MiB: what cudaDeviceProp.l2CacheSize reads on H100 ("50MB" in
        // PyTorch's device properties).
        A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE => 50 * 1024 * 1024,
        A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR => 2048,
        A::CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT => 3,
        A::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING => 1,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_LAYERS => 2048,
        A::CU_DEVICE_ATTRIBUTE_CAN_TEX2D_GATHER => 1,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_HEIGHT => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE => 8192,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE => 8192,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE => 32768,
        A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID => PCI_DOMAIN as i32,
        A::CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT => 32,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_LAYERED_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS => 2046,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_WIDTH => 131072,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_HEIGHT => 65536,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_WIDTH => 16384,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_HEIGHT => 16384,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE3D_DEPTH => 16384,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_LAYERED_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE1D_LAYERED_LAYERS => 2048,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_HEIGHT => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACE2D_LAYERED_LAYERS => 2048,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_LAYERED_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS => 2046,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LINEAR_WIDTH => 1 << 28,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_WIDTH => 131072,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_HEIGHT => 65000,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LINEAR_PITCH => (1 << 21) - 32,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_MIPMAPPED_HEIGHT => 32768,
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR => CC_MAJOR,
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR => CC_MINOR,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR => SHARED_PER_SM,
        A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR => 65536,
        A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY => 1,
        A::CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD => 0,
        A::CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD_GROUP_ID => 0,
        // A PCIe board in an x86 host: no coherent atomics over the link.
        A::CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO => 2,
        A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS => 0,
        A::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS => 1,
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_PREEMPTION_SUPPORTED => 1,
        // Registered memory's device pointer is its host address.
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM => 1,
        // Stream memory operations (cuStreamWaitValue*) are not implemented.
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_MEM_OPS_V1 => 0,
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS_V1 => 0,
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR_V1 => 0,
        A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH => 1,
        A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_MULTI_DEVICE_LAUNCH => 1,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN => SHARED_PER_BLOCK_OPTIN,
        A::CU_DEVICE_ATTRIBUTE_CAN_FLUSH_REMOTE_WRITES => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES => 0,
        A::CU_DEVICE_ATTRIBUTE_DIRECT_MANAGED_MEM_ACCESS_FROM_HOST => 0,
        // The cuMemCreate/cuMemMap family (same value as the older name
        // VIRTUAL_ADDRESS_MANAGEMENT), with POSIX fd export/import.
        A::CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_WIN32_HANDLE_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_WIN32_KMT_HANDLE_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR => 32,
        A::CU_DEVICE_ATTRIBUTE_GENERIC_COMPRESSION_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE => 31_457_280,
        A::CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE => 134_213_632,
        A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK => 1024,
        // CUDA arrays, external semaphores and IPC are not implemented, nor
        // read-only registration (device writes would have to fault).
        A::CU_DEVICE_ATTRIBUTE_SPARSE_CUDA_ARRAY_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_TIMELINE_SEMAPHORE_INTEROP_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS => 0,
        A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING => 0,
        // The board says POSIX_FD; exportable pools (cuMemPoolExport*) are
        // not implemented, so pools support no handle type.
        A::CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES => 0,
        A::CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH => 1,
        A::CU_DEVICE_ATTRIBUTE_DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS => 0,
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR => 0,
        A::CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_IPC_EVENT_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_MEM_SYNC_DOMAIN_COUNT => 4,
        A::CU_DEVICE_ATTRIBUTE_TENSOR_MAP_ACCESS_SUPPORTED => 1,
        // Fabric handles and multicast need NVSwitch; a PCIe board has none.
        A::CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_UNIFIED_FUNCTION_POINTERS => 0,
        A::CU_DEVICE_ATTRIBUTE_NUMA_CONFIG => 0,
        A::CU_DEVICE_ATTRIBUTE_NUMA_ID => -1,
        A::CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_MPS_ENABLED => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID => 0,
        A::CU_DEVICE_ATTRIBUTE_D3D12_CIG_SUPPORTED => 0,
        // Hardware decompression arrived with Blackwell.
        A::CU_DEVICE_ATTRIBUTE_MEM_DECOMPRESS_ALGORITHM_MASK => 0,
        A::CU_DEVICE_ATTRIBUTE_MEM_DECOMPRESS_MAXIMUM_LENGTH => 0,
        A::CU_DEVICE_ATTRIBUTE_VULKAN_CIG_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_GPU_PCI_DEVICE_ID => PCI_DEVICE_ID as i32,
        A::CU_DEVICE_ATTRIBUTE_GPU_PCI_SUBSYSTEM_ID => PCI_SUBSYSTEM_ID as i32,
        A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_MEMORY_POOLS_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_MULTINODE_IPC_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_MEMORY_POOLS_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_ALLOC_DMA_BUF_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED => 0,
        // Attributes newer than any H100 driver this profile imitates: 0, the
        // answer a driver gives for a capability the chip lacks.
        A::CU_DEVICE_ATTRIBUTE_ATOMIC_REDUCTION_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_LOCALITY_DOMAIN_COUNT => 0,
        A::CU_DEVICE_ATTRIBUTE_MAX_OVERSIZED_SHARED_MEMORY_PER_BLOCK => 0,
        A::CU_DEVICE_ATTRIBUTE_D3D12_CIG_STREAMS_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_DMA_BUF_MMAP_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_LOGICAL_ENDPOINT_UNICAST_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_LOGICAL_ENDPOINT_MULTICAST_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_LOGICAL_ENDPOINT_COUNTED_OPS_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_LOGICAL_ENDPOINT_UNICAST_ACCESS_ON_OWNER_DEVICE_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_LOCALITY_DOMAIN_MULTIPROCESSOR_COUNT => 0,
        A::CU_DEVICE_ATTRIBUTE_LOGICAL_ENDPOINT_SUPPORTED_HANDLE_TYPES => 0,
        A::CU_DEVICE_ATTRIBUTE_VULKAN_CIG_STREAMS_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_TENSOR_MAP_LARGE_TENSOR_MIN_SIZE => 0,
        A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_LOCALIZED_MEMORY_SUPPORTED => 0,
        _ => return None,
    })
}

/// `cuDeviceGetAttribute`'s answer. Attributes inside the header's range but
/// unknown to the table read 0, like a capability the chip does not have;
/// outside the range is an invalid value, as on the real driver.
pub fn attribute(attr: A) -> Result<i32, CUresult> {
    if attr.0 == 0 || attr.0 >= A::CU_DEVICE_ATTRIBUTE_MAX.0 {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    Ok(listed(attr).unwrap_or(0))
}

/// The legacy `CUdevprop` view of the same numbers.
pub fn legacy_properties() -> cuda_types::cuda::CUdevprop {
    let a = |x| listed(x).unwrap_or(0);
    cuda_types::cuda::CUdevprop {
        maxThreadsPerBlock: a(A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
        maxThreadsDim: [
            a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X),
            a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y),
            a(A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z),
        ],
        maxGridSize: [
            a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X),
            a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y),
            a(A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z),
        ],
        sharedMemPerBlock: a(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK),
        totalConstantMemory: a(A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY),
        SIMDWidth: a(A::CU_DEVICE_ATTRIBUTE_WARP_SIZE),
        memPitch: a(A::CU_DEVICE_ATTRIBUTE_MAX_PITCH),
        regsPerBlock: a(A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK),
        clockRate: a(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
        textureAlign: a(A::CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_header_attribute_is_listed() {
        let missing: Vec<u32> = (1..A::CU_DEVICE_ATTRIBUTE_MAX.0)
            .filter(|&i| listed(A(i)).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "attributes without a table entry: {missing:?}"
        );
    }

    #[test]
    fn out_of_range_is_invalid() {
        assert_eq!(attribute(A(0)), Err(CUresult::CUDA_ERROR_INVALID_VALUE));
        assert_eq!(
            attribute(A::CU_DEVICE_ATTRIBUTE_MAX),
            Err(CUresult::CUDA_ERROR_INVALID_VALUE)
        );
        assert_eq!(
            attribute(A(100_000)),
            Err(CUresult::CUDA_ERROR_INVALID_VALUE)
        );
    }

    #[test]
    fn headline_numbers() {
        assert_eq!(
            attribute(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
            Ok(114)
        );
        assert_eq!(
            attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            Ok(9)
        );
        assert_eq!(
            attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
            Ok(232448)
        );
        assert_eq!(
            attribute(A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR),
            Ok(233472)
        );
        assert_eq!(
            attribute(A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE),
            Ok(52428800)
        );
        assert_eq!(
            attribute(A::CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED),
            Ok(1)
        );
        assert_eq!(
            attribute(A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED),
            Ok(1)
        );
        assert_eq!(
            attribute(A::CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES),
            Ok(0)
        );
    }
}
