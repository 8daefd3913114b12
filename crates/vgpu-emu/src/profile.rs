//! The host configurations the software GPU imitates: a [`Board`] (one GPU
//! model's published numbers), a driver [`Release`] (its versions and the
//! entry points it exports), and how many boards the host has. A profile is
//! chosen by name through `VGPU_EMU_PROFILE` (`vgpu host --profile NAME`
//! sets it for the workers); unset is [`DEFAULT_PROFILE`], the H100 PCIe on
//! a current driver the software GPU always imitated.
//!
//! Where the numbers come from, per board below: "verified" values were
//! read off published `deviceQuery` / `cudaDeviceProp` / `nvidia-smi`
//! output or NVIDIA's datasheets and the CUDA programming guide's
//! compute-capability tables; "estimate" values are plausible for the board
//! but not confirmed from a public source (idle clocks, idle power, lowest
//! power limit, subsystem ids, thermal thresholds, copy engines). The
//! texture/surface limits are the same on every board here (deviceQuery
//! prints identical limits for Ampere, Ada and Hopper).
//!
//! Where the hardware supports a feature whose API the software GPU does not
//! implement (managed memory, pool and legacy IPC, external semaphores,
//! arrays, stream memory ops, multi-device cooperative launches), the
//! attribute says 0: an application that believes a 1 takes a code path
//! that would then fail, which is worse than never taking it. (The host
//! worker additionally masks what the guest shim lacks, for any driver.)

use cuda_types::cuda::CUdevice_attribute as A;
use cuda_types::cuda::CUresult;
use cuda_types::nvml::{NVML_DEVICE_ARCH_ADA, NVML_DEVICE_ARCH_AMPERE, NVML_DEVICE_ARCH_HOPPER};
use std::sync::OnceLock;

const MIB: u64 = 1024 * 1024;
const KIB: i32 = 1024;

/// The environment variable that names the profile.
pub const PROFILE_ENV: &str = "VGPU_EMU_PROFILE";
/// The profile when none is named.
pub const DEFAULT_PROFILE: &str = "h100-pcie";
/// Devices a profile may have (the per-device tables are this long).
pub const MAX_DEVICES: usize = 8;

/// One GPU model.
#[derive(Debug)]
pub struct Board {
    pub name: &'static str,
    pub cc: (i32, i32),
    pub sm_count: i32,
    /// `cuDeviceTotalMem` / `cudaDeviceProp.totalGlobalMem`.
    pub cuda_total: u64,
    /// `nvidia-smi`'s / NVML's total, which on some boards includes memory
    /// CUDA never reports.
    pub nvml_total: u64,
    /// Memory the driver itself keeps (page tables, context state): reported
    /// as used and never available to allocations.
    pub reserved: u64,
    /// NVML `pciDeviceId` (device << 16 | vendor) and `pciSubSystemId`.
    pub pci_device_id: u32,
    pub pci_subsystem_id: u32,
    /// MHz: boost clocks, and where graphics and video clocks idle.
    pub max_graphics_clock: u32,
    pub max_memory_clock: u32,
    pub max_video_clock: u32,
    pub idle_graphics_clock: u32,
    pub idle_video_clock: u32,
    /// Milliwatts: the default (= maximum) limit, the lowest settable one,
    /// the idle draw.
    pub power_limit: u32,
    pub power_limit_min: u32,
    pub idle_power: u32,
    pub bus_width: i32,
    pub l2_bytes: i32,
    pub shared_per_block_optin: i32,
    pub shared_per_sm: i32,
    pub max_threads_per_sm: i32,
    pub max_blocks_per_sm: i32,
    pub copy_engines: i32,
    pub persisting_l2_max: i32,
    pub access_policy_window_max: i32,
    pub fp32_per_fp64: i32,
    /// Hopper's thread-block clusters, TMA and memory sync domains.
    pub cluster_launch: bool,
    pub tensor_map: bool,
    pub mem_sync_domains: i32,
    pub ecc: bool,
    pub nvml_arch: u32,
    pub fp32_cores_per_sm: u32,
    pub pcie_generation: u32,
    pub pcie_width: u32,
    /// °C: shutdown, slowdown, GPU max operating, memory max.
    pub thresholds: [u32; 4],
}

/// A driver release.
#[derive(Debug)]
pub struct Release {
    /// `nvmlSystemGetDriverVersion`.
    pub driver: &'static str,
    /// `nvmlSystemGetNVMLVersion`.
    pub nvml: &'static str,
    /// `cuDriverGetVersion`.
    pub cuda: i32,
    /// The first `CUdevice_attribute` this release does not know: asking
    /// for it is CUDA_ERROR_INVALID_VALUE, as on a real older driver.
    pub attribute_limit: u32,
}

/// Peer-to-peer between the devices of one host.
#[derive(Debug, Clone, Copy)]
pub struct PeerLink {
    pub access: bool,
    pub native_atomics: bool,
    pub performance_rank: i32,
}

/// One host configuration.
#[derive(Debug)]
pub struct Profile {
    pub name: &'static str,
    pub summary: &'static str,
    pub board: &'static Board,
    pub release: &'static Release,
    /// PCI bus of each device, in driver order (its length is the count).
    pub buses: &'static [u32],
    pub peer: PeerLink,
}

impl Profile {
    pub fn devices(&self) -> usize {
        self.buses.len()
    }
}

/// NVIDIA H100 PCIe (GH100, 114 SMs, 80 GB HBM2e). Verified: every value
/// but the estimates named — from deviceQuery / cudaDeviceProp /
/// `nvidia-smi -q` of real boards and the Hopper tuning guide (L2 50 MiB as
/// PyTorch reports it, 227 KiB opt-in shared memory). Estimates: idle
/// clocks and power, the 200 W lowest power limit.
pub static H100_PCIE: Board = Board {
    name: "NVIDIA H100 PCIe",
    cc: (9, 0),
    sm_count: 114,
    cuda_total: 81559 * MIB,
    nvml_total: 81559 * MIB,
    reserved: 500 * MIB,
    pci_device_id: 0x2331_10DE,
    pci_subsystem_id: 0x16C1_10DE,
    max_graphics_clock: 1755,
    max_memory_clock: 1593,
    max_video_clock: 1620,
    idle_graphics_clock: 345,
    idle_video_clock: 765,
    power_limit: 350_000,
    power_limit_min: 200_000,
    idle_power: 48_000,
    bus_width: 5120,
    l2_bytes: 50 * 1024 * 1024,
    shared_per_block_optin: 227 * KIB,
    shared_per_sm: 228 * KIB,
    max_threads_per_sm: 2048,
    max_blocks_per_sm: 32,
    copy_engines: 3,
    persisting_l2_max: 31_457_280,
    access_policy_window_max: 134_213_632,
    fp32_per_fp64: 2,
    cluster_launch: true,
    tensor_map: true,
    mem_sync_domains: 4,
    ecc: true,
    nvml_arch: NVML_DEVICE_ARCH_HOPPER,
    fp32_cores_per_sm: 128,
    pcie_generation: 5,
    pcie_width: 16,
    thresholds: [92, 89, 87, 95],
};

/// NVIDIA A100 80GB PCIe (GA100, 108 SMs, 80 GB HBM2e). Verified: the name,
/// 108 SMs, 1410 MHz, 5120-bit bus, 40 MiB L2, ECC and 81049 MiB CUDA total
/// (a published mixbench run on this board); the 1512 MHz memory clock (its
/// 1935 GB/s over 5120 bits); NVML's 81920 MiB (`nvidia-smi` on A100 80GB);
/// 300 W (datasheet); 164/163 KiB shared memory per SM/block, 2048 threads
/// and 32 blocks per SM, 64 FP32 cores per SM (programming guide, GA100
/// whitepaper); PCI device 0x20B5. Estimates: subsystem id, copy engines,
/// video and idle clocks, lowest power limit, idle power, persisting-L2
/// maximum, thresholds.
pub static A100_80GB_PCIE: Board = Board {
    name: "NVIDIA A100 80GB PCIe",
    cc: (8, 0),
    sm_count: 108,
    cuda_total: 81049 * MIB,
    nvml_total: 81920 * MIB,
    reserved: 500 * MIB,
    pci_device_id: 0x20B5_10DE,
    pci_subsystem_id: 0x1533_10DE,
    max_graphics_clock: 1410,
    max_memory_clock: 1512,
    max_video_clock: 1290,
    idle_graphics_clock: 210,
    idle_video_clock: 795,
    power_limit: 300_000,
    power_limit_min: 150_000,
    idle_power: 45_000,
    bus_width: 5120,
    l2_bytes: 40 * 1024 * 1024,
    shared_per_block_optin: 163 * KIB,
    shared_per_sm: 164 * KIB,
    max_threads_per_sm: 2048,
    max_blocks_per_sm: 32,
    copy_engines: 3,
    persisting_l2_max: 31_457_280,
    access_policy_window_max: 134_213_632,
    fp32_per_fp64: 2,
    cluster_launch: false,
    tensor_map: false,
    mem_sync_domains: 1,
    ecc: true,
    nvml_arch: NVML_DEVICE_ARCH_AMPERE,
    fp32_cores_per_sm: 64,
    pcie_generation: 4,
    pcie_width: 16,
    thresholds: [92, 89, 85, 95],
};

/// NVIDIA L4 (AD104, 58 SMs, 24 GB GDDR6). Verified: the name, 58 SMs,
/// 2040 MHz and 23583784960 bytes CUDA total (a published deviceQuery run),
/// NVML's 23034 MiB (`nvidia-smi`), 192-bit bus, 48 MB L2, 72 W
/// (datasheet); 100/99 KiB shared memory per SM/block, 1536 threads and 24
/// blocks per SM, FP64 at 1/64 of FP32 (programming guide, compute
/// capability 8.9); PCI device 0x27B8. Estimates: the 6251 MHz memory
/// clock (300 GB/s over 192 bits), subsystem id, copy engines, video and
/// idle clocks, lowest power limit, idle power, persisting-L2 maximum,
/// thresholds, ECC on.
pub static L4: Board = Board {
    name: "NVIDIA L4",
    cc: (8, 9),
    sm_count: 58,
    cuda_total: 23_583_784_960,
    nvml_total: 23034 * MIB,
    reserved: 400 * MIB,
    pci_device_id: 0x27B8_10DE,
    pci_subsystem_id: 0x16CA_10DE,
    max_graphics_clock: 2040,
    max_memory_clock: 6251,
    max_video_clock: 1770,
    idle_graphics_clock: 210,
    idle_video_clock: 765,
    power_limit: 72_000,
    power_limit_min: 40_000,
    idle_power: 16_000,
    bus_width: 192,
    l2_bytes: 48 * 1024 * 1024,
    shared_per_block_optin: 99 * KIB,
    shared_per_sm: 100 * KIB,
    max_threads_per_sm: 1536,
    max_blocks_per_sm: 24,
    copy_engines: 2,
    persisting_l2_max: 37_748_736,
    access_policy_window_max: 134_213_632,
    fp32_per_fp64: 64,
    cluster_launch: false,
    tensor_map: false,
    mem_sync_domains: 1,
    ecc: true,
    nvml_arch: NVML_DEVICE_ARCH_ADA,
    fp32_cores_per_sm: 128,
    pcie_generation: 4,
    pcie_width: 16,
    thresholds: [96, 93, 87, 95],
};

/// A 590-series datacenter driver carrying CUDA 13.5: every attribute and
/// entry point of the pinned headers.
pub static R590: Release = Release {
    driver: "590.48.01",
    nvml: "13.590.48.01",
    cuda: 13050,
    attribute_limit: A::CU_DEVICE_ATTRIBUTE_MAX.0,
};

/// The R580 branch that introduced CUDA 13.0 (580.65.06 is its first
/// release, verified). Attribute limit: an estimate — the attributes of
/// CUDA 12.9 plus ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED (147).
pub static R580: Release = Release {
    driver: "580.65.06",
    nvml: "13.580.65.06",
    cuda: 13000,
    attribute_limit: A::CU_DEVICE_ATTRIBUTE_ATOMIC_REDUCTION_SUPPORTED.0,
};

/// The R535 long-term branch, CUDA 12.2 (`nvidia-smi` prints "CUDA Version:
/// 12.2"; 535.230.02 is one of its releases). Attribute limit: HOST_NUMA_ID
/// (134) is 12.2's last attribute, D3D12_CIG_SUPPORTED (135) came later —
/// from the headers' order, an estimate of where 12.2 stops.
pub static R535: Release = Release {
    driver: "535.230.02",
    nvml: "12.535.230.02",
    cuda: 12020,
    attribute_limit: A::CU_DEVICE_ATTRIBUTE_D3D12_CIG_SUPPORTED.0,
};

/// Two boards on PCIe in one host: peer access over the switch, no atomics
/// across it (no NVLink bridge).
const PCIE_PEERS: PeerLink = PeerLink {
    access: true,
    native_atomics: false,
    performance_rank: 0,
};

/// Every profile `--profile` accepts, the default first.
pub static PROFILES: &[Profile] = &[
    Profile {
        name: DEFAULT_PROFILE,
        summary: "one H100 PCIe, CUDA 13.5 driver (590)",
        board: &H100_PCIE,
        release: &R590,
        buses: &[0x01],
        peer: PCIE_PEERS,
    },
    Profile {
        name: "h100-cuda12.2",
        summary: "one H100 PCIe, CUDA 12.2 driver (R535): no cuFuncGetParamInfo and later",
        board: &H100_PCIE,
        release: &R535,
        buses: &[0x01],
        peer: PCIE_PEERS,
    },
    Profile {
        name: "h100-cuda13",
        summary: "one H100 PCIe, CUDA 13.0 driver (580)",
        board: &H100_PCIE,
        release: &R580,
        buses: &[0x01],
        peer: PCIE_PEERS,
    },
    Profile {
        name: "a100-80gb",
        summary: "one A100 80GB PCIe (cc 8.0), CUDA 13.5 driver",
        board: &A100_80GB_PCIE,
        release: &R590,
        buses: &[0x01],
        peer: PCIE_PEERS,
    },
    Profile {
        name: "l4",
        summary: "one L4 (cc 8.9, 24 GB), CUDA 13.5 driver",
        board: &L4,
        release: &R590,
        buses: &[0x01],
        peer: PCIE_PEERS,
    },
    Profile {
        name: "2x-h100",
        summary: "two H100 PCIe with peer access, CUDA 13.5 driver",
        board: &H100_PCIE,
        release: &R590,
        buses: &[0x01, 0x02],
        peer: PCIE_PEERS,
    },
];

/// The profile of that name.
pub fn find(name: &str) -> Option<&'static Profile> {
    PROFILES.iter().find(|p| p.name == name)
}

/// The names, for messages and `vgpu_emu_profiles`.
pub fn names() -> String {
    PROFILES
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `VGPU_EMU_PROFILE`, read once: the profile, or why it names none.
pub fn selected() -> &'static Result<&'static Profile, String> {
    static S: OnceLock<Result<&'static Profile, String>> = OnceLock::new();
    S.get_or_init(|| match std::env::var(PROFILE_ENV) {
        Err(_) => Ok(&PROFILES[0]),
        Ok(name) => find(name.trim())
            .ok_or_else(|| format!("{PROFILE_ENV}={name}: no such profile (known: {})", names())),
    })
}

/// The profile in force. An unknown name makes cuInit and nvmlInit fail
/// (see [`selected`]); until then the default's numbers answer.
pub fn current() -> &'static Profile {
    selected().as_ref().copied().unwrap_or(&PROFILES[0])
}

pub fn board() -> &'static Board {
    current().board
}

pub fn release() -> &'static Release {
    current().release
}

/// `cuDriverGetVersion` (and NVML's CUDA driver version).
pub fn cuda_driver_version() -> i32 {
    release().cuda
}

/// The CUDA version whose headers first declare `symbol`: the oldest
/// `PFN_*` typedef that resolves to it. `None` for a symbol without one
/// (it is as old as the driver API).
fn introduced(symbol: &str) -> Option<u32> {
    cuda_types::pfn::PROC_TABLE
        .iter()
        .filter(|e| e.symbol == symbol)
        .map(|e| e.version)
        .min()
}

/// Whether the imitated driver exports `symbol`: a driver has the entry
/// points of its CUDA version and older. NVML functions are always there.
pub fn exports(symbol: &str) -> bool {
    introduced(symbol).is_none_or(|v| v <= release().cuda as u32)
}

/// The attribute table without a fallback: `None` means the table does not
/// list the attribute, which the unit test forbids for every attribute the
/// pinned header declares.
fn listed(b: &Board, bus: u32, attr: A) -> Option<i32> {
    let yes = |f: bool| i32::from(f);
    Some(match attr {
        A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK => 1024,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X => 1024,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y => 1024,
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z => 64,
        A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X => i32::MAX,
        A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y => 65535,
        A::CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z => 65535,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK => 48 * KIB,
        A::CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY => 65536,
        A::CU_DEVICE_ATTRIBUTE_WARP_SIZE => 32,
        A::CU_DEVICE_ATTRIBUTE_MAX_PITCH => i32::MAX,
        A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK => 65536,
        A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE => (b.max_graphics_clock * 1000) as i32,
        A::CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT => 512,
        A::CU_DEVICE_ATTRIBUTE_GPU_OVERLAP => 1,
        A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT => b.sm_count,
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
        A::CU_DEVICE_ATTRIBUTE_ECC_ENABLED => yes(b.ecc),
        A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID => bus as i32,
        A::CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID => 0,
        A::CU_DEVICE_ATTRIBUTE_TCC_DRIVER => 0,
        A::CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE => (b.max_memory_clock * 1000) as i32,
        A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH => b.bus_width,
        A::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE => b.l2_bytes,
        A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR => b.max_threads_per_sm,
        A::CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT => b.copy_engines,
        A::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING => 1,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_LAYERS => 2048,
        A::CU_DEVICE_ATTRIBUTE_CAN_TEX2D_GATHER => 1,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_GATHER_HEIGHT => 32768,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE => 8192,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT_ALTERNATE => 8192,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE => 32768,
        A::CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID => 0,
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
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR => b.cc.0,
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR => b.cc.1,
        A::CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH => 32768,
        A::CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED => 1,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR => b.shared_per_sm,
        A::CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR => 65536,
        // cuMemAllocManaged and its prefetch/advise family are not
        // implemented.
        A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY => 0,
        A::CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD => 0,
        A::CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD_GROUP_ID => 0,
        // A PCIe board in an x86 host: no coherent atomics over the link.
        A::CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO => b.fp32_per_fp64,
        A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS => 0,
        A::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS => 0,
        A::CU_DEVICE_ATTRIBUTE_COMPUTE_PREEMPTION_SUPPORTED => 1,
        // Registered memory's device pointer is its host address.
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM => 1,
        // Stream memory operations (cuStreamWaitValue*) are not implemented.
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_MEM_OPS_V1 => 0,
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS_V1 => 0,
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR_V1 => 0,
        A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH => 1,
        // cuLaunchCooperativeKernelMultiDevice is not implemented.
        A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_MULTI_DEVICE_LAUNCH => 0,
        A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN => b.shared_per_block_optin,
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
        A::CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR => b.max_blocks_per_sm,
        A::CU_DEVICE_ATTRIBUTE_GENERIC_COMPRESSION_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE => b.persisting_l2_max,
        A::CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE => b.access_policy_window_max,
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
        A::CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH => yes(b.cluster_launch),
        A::CU_DEVICE_ATTRIBUTE_DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS => 0,
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR => 0,
        A::CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_IPC_EVENT_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_MEM_SYNC_DOMAIN_COUNT => b.mem_sync_domains,
        A::CU_DEVICE_ATTRIBUTE_TENSOR_MAP_ACCESS_SUPPORTED => yes(b.tensor_map),
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
        A::CU_DEVICE_ATTRIBUTE_GPU_PCI_DEVICE_ID => b.pci_device_id as i32,
        A::CU_DEVICE_ATTRIBUTE_GPU_PCI_SUBSYSTEM_ID => b.pci_subsystem_id as i32,
        A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_MEMORY_POOLS_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_MULTINODE_IPC_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_MEMORY_POOLS_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_HOST_ALLOC_DMA_BUF_SUPPORTED => 0,
        A::CU_DEVICE_ATTRIBUTE_ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED => 0,
        // Capabilities none of these boards has.
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

/// `cuDeviceGetAttribute`'s answer for the device on PCI bus `bus`.
/// Attributes the release does not know, or outside the header's range, are
/// CUDA_ERROR_INVALID_VALUE, as on the real driver; attributes inside the
/// range but unknown to the table read 0, like a capability the chip lacks.
pub fn attribute_of(bus: u32, attr: A) -> Result<i32, CUresult> {
    if attr.0 == 0 || attr.0 >= A::CU_DEVICE_ATTRIBUTE_MAX.0 || attr.0 >= release().attribute_limit
    {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    Ok(listed(board(), bus, attr).unwrap_or(0))
}

/// An attribute every device of the profile shares (all but the PCI bus).
pub fn attribute(attr: A) -> Result<i32, CUresult> {
    attribute_of(current().buses[0], attr)
}

/// The legacy `CUdevprop` view of the same numbers.
pub fn legacy_properties() -> cuda_types::cuda::CUdevprop {
    let a = |x| attribute(x).unwrap_or(0);
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
    fn every_header_attribute_is_listed_for_every_board() {
        for b in [&H100_PCIE, &A100_80GB_PCIE, &L4] {
            let missing: Vec<u32> = (1..A::CU_DEVICE_ATTRIBUTE_MAX.0)
                .filter(|&i| listed(b, 1, A(i)).is_none())
                .collect();
            assert!(missing.is_empty(), "{}: no entry for {missing:?}", b.name);
        }
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

    /// The default profile (the unit tests run without VGPU_EMU_PROFILE).
    #[test]
    fn headline_numbers() {
        assert_eq!(current().name, "h100-pcie");
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

    /// What the software GPU lacks reads 0 whatever the board can do.
    #[test]
    fn unimplemented_capabilities_read_zero() {
        for attr in [
            A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY,
            A::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS,
            A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS,
            A::CU_DEVICE_ATTRIBUTE_IPC_EVENT_SUPPORTED,
            A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_MULTI_DEVICE_LAUNCH,
            A::CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES,
            A::CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR,
        ] {
            assert_eq!(attribute(attr), Ok(0), "{attr:?}");
        }
    }

    #[test]
    fn boards_differ_where_the_hardware_does() {
        let a = |b: &Board, x| listed(b, 1, x).unwrap();
        assert_eq!(
            a(&A100_80GB_PCIE, A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
            108
        );
        assert_eq!(
            a(
                &A100_80GB_PCIE,
                A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
            ),
            0
        );
        assert_eq!(a(&A100_80GB_PCIE, A::CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH), 0);
        assert_eq!(
            a(
                &A100_80GB_PCIE,
                A::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
            ),
            166912
        );
        assert_eq!(a(&L4, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR), 9);
        assert_eq!(a(&L4, A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT), 58);
        assert_eq!(
            a(&L4, A::CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR),
            1536
        );
        assert_eq!(a(&L4, A::CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH), 192);
        assert_eq!(a(&H100_PCIE, A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID), 1);
        assert_eq!(
            listed(&H100_PCIE, 2, A::CU_DEVICE_ATTRIBUTE_PCI_BUS_ID),
            Some(2)
        );
    }

    #[test]
    fn profiles_are_unique_and_well_formed() {
        assert_eq!(PROFILES[0].name, DEFAULT_PROFILE);
        for (i, p) in PROFILES.iter().enumerate() {
            assert!(PROFILES[..i].iter().all(|q| q.name != p.name), "{}", p.name);
            assert!((1..=MAX_DEVICES).contains(&p.devices()), "{}", p.name);
            assert!(p.board.reserved < p.board.cuda_total);
            assert!(p.board.cuda_total <= p.board.nvml_total);
            let mut buses = p.buses.to_vec();
            buses.dedup();
            assert_eq!(buses.len(), p.devices(), "{}: a bus twice", p.name);
        }
        assert_eq!(find("2x-h100").unwrap().devices(), 2);
        assert!(find("h100").is_none());
    }

    /// A 12.2 driver lacks what 12.3+ added, by the typedefs' versions;
    /// 13.5 has everything; symbols without a typedef are always there.
    #[test]
    fn entry_points_follow_the_release() {
        let has = |r: &Release, s: &str| introduced(s).is_none_or(|v| v <= r.cuda as u32);
        for s in [
            "cuFuncGetParamInfo",
            "cuKernelGetParamInfo",
            "cuKernelGetName",
            "cuFuncGetName",
            "cuLibraryGetKernelCount",
            "cuCtxCreate_v4",
        ] {
            assert!(!has(&R535, s), "{s} is newer than 12.2");
            assert!(has(&R590, s), "{s}");
        }
        for s in [
            "cuInit",
            "cuLibraryLoadData",
            "cuLaunchKernelEx",
            "cuGetExportTable",
        ] {
            assert!(has(&R535, s), "{s} exists in 12.2");
        }
        assert!(has(&R580, "cuFuncGetParamInfo"));
        assert!(exports("cuFuncGetParamInfo"), "the default exports all");
    }

    #[test]
    fn older_releases_refuse_newer_attributes() {
        let limit = |r: &Release, x: A| x.0 < r.attribute_limit;
        assert!(limit(&R535, A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID));
        assert!(!limit(&R535, A::CU_DEVICE_ATTRIBUTE_GPU_PCI_DEVICE_ID));
        assert!(limit(&R580, A::CU_DEVICE_ATTRIBUTE_GPU_PCI_DEVICE_ID));
        assert!(limit(
            &R590,
            A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_LOCALIZED_MEMORY_SUPPORTED
        ));
    }
}
