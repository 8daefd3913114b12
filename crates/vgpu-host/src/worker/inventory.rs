//! The device inventory a guest fetches once, and the liveness probe.
//!
//! The inventory is what the guest answers device queries from, so it must
//! promise only what a guest can use: [`MASKED`] is the one list of device
//! attributes that read 0 to guests whatever the host driver says, each
//! with the reason (the guest shim's missing entry points, checked against
//! its export list by `tests/masked_attributes.rs`, or the guest's memory
//! being out of the host GPU's reach).

use super::{c_buf_to_string, cu, nv, Session};
use cuda_types::cuda::{CUdevice, CUdevice_P2PAttribute, CUdevice_attribute as A, CUuuid};
use cuda_types::nvml::{nvmlBrandType_t, nvmlDevice_t, nvmlPciInfo_t};
use std::ffi::c_char;
use vgpu_transport::proto::{DeviceInfo, GetInventory, Inventory, PeerInfo, Ping, Serve};
use vgpu_transport::Status;

/// Why guests must not see a capability.
#[derive(Debug, Clone, Copy)]
pub enum Lacks {
    /// The guest shim does not implement these entry points (they are
    /// CUDA_ERROR_NOT_SUPPORTED stubs there); an attribute promising them
    /// would send applications down a path that fails.
    Functions(&'static [&'static str]),
    /// The capability is about the guest's own memory or devices (pageable
    /// or pinned host memory, host NUMA memory, third-party PCIe devices),
    /// which are on another machine than the GPU.
    GuestIsRemote,
}

/// Device attributes guests see as 0 (if the driver answers them at all),
/// for every host driver.
pub const MASKED: &[(A, Lacks)] = &[
    (
        A::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY,
        Lacks::Functions(&["cuMemAllocManaged"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS,
        Lacks::Functions(&[
            "cuMemAllocManaged",
            "cuMemPrefetchAsync_v2",
            "cuMemAdvise_v2",
        ]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_DIRECT_MANAGED_MEM_ACCESS_FROM_HOST,
        Lacks::Functions(&["cuMemAllocManaged"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_IPC_EVENT_SUPPORTED,
        Lacks::Functions(&["cuIpcGetEventHandle", "cuIpcOpenEventHandle"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
        Lacks::Functions(&[
            "cuMemExportToShareableHandle",
            "cuMemImportFromShareableHandle",
        ]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED,
        Lacks::Functions(&[
            "cuMemExportToShareableHandle",
            "cuMemImportFromShareableHandle",
        ]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES,
        Lacks::Functions(&[
            "cuMemPoolExportToShareableHandle",
            "cuMemPoolImportFromShareableHandle",
        ]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED,
        Lacks::Functions(&["cuMemGetHandleForAddressRange"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_MEM_OPS_V1,
        Lacks::Functions(&["cuStreamWaitValue32_v2", "cuStreamWriteValue32_v2"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS,
        Lacks::Functions(&["cuStreamWaitValue64_v2", "cuStreamWriteValue64_v2"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR,
        Lacks::Functions(&["cuStreamWaitValue32_v2", "cuStreamBatchMemOp_v2"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_TIMELINE_SEMAPHORE_INTEROP_SUPPORTED,
        Lacks::Functions(&[
            "cuImportExternalSemaphore",
            "cuSignalExternalSemaphoresAsync",
            "cuWaitExternalSemaphoresAsync",
        ]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_SPARSE_CUDA_ARRAY_SUPPORTED,
        Lacks::Functions(&["cuMemMapArrayAsync"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED,
        Lacks::Functions(&["cuMemMapArrayAsync"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_COOPERATIVE_MULTI_DEVICE_LAUNCH,
        Lacks::Functions(&["cuLaunchCooperativeKernelMultiDevice"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED,
        Lacks::Functions(&["cuMulticastCreate", "cuMulticastBindMem"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_CAN_FLUSH_REMOTE_WRITES,
        Lacks::Functions(&["cuFlushGPUDirectRDMAWrites"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_SUPPORTED,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_MEMORY_POOLS_SUPPORTED,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_MULTINODE_IPC_SUPPORTED,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_HOST_MEMORY_POOLS_SUPPORTED,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_HOST_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_HOST_ALLOC_DMA_BUF_SUPPORTED,
        Lacks::GuestIsRemote,
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_MEM_DECOMPRESS_ALGORITHM_MASK,
        Lacks::Functions(&["cuMemBatchDecompressAsync"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_MEM_DECOMPRESS_MAXIMUM_LENGTH,
        Lacks::Functions(&["cuMemBatchDecompressAsync"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_LOGICAL_ENDPOINT_UNICAST_SUPPORTED,
        Lacks::Functions(&["cuLogicalEndpointCreate"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_LOGICAL_ENDPOINT_MULTICAST_SUPPORTED,
        Lacks::Functions(&["cuLogicalEndpointCreate"]),
    ),
    (
        A::CU_DEVICE_ATTRIBUTE_LOGICAL_ENDPOINT_SUPPORTED_HANDLE_TYPES,
        Lacks::Functions(&["cuLogicalEndpointCreate"]),
    ),
];

/// The value guests see for `attr` given the driver's.
pub fn guest_value(attr: i32, value: i32) -> i32 {
    if MASKED.iter().any(|(a, _)| a.0 as i32 == attr) {
        0
    } else {
        value
    }
}

/// `CUdevice_P2PAttribute`s the inventory asks for (PERFORMANCE_RANK ..
/// ONLY_PARTIAL_NATIVE_ATOMIC_SUPPORTED).
const P2P_ATTRIBUTES: std::ops::RangeInclusive<u32> = 1..=5;

impl Serve<Ping> for Session {
    fn serve(&mut self, _: Ping) -> Result<(), Status> {
        Ok(())
    }
}

impl Serve<GetInventory> for Session {
    fn serve(&mut self, _: GetInventory) -> Result<Inventory, Status> {
        Ok(self.inventory())
    }
}

/// NVML's buffer sizes (NVML_DEVICE_SERIAL_BUFFER_SIZE etc. are all ≤ 96).
const TEXT_BUF: usize = 96;

impl Session {
    pub fn inventory(&mut self) -> Inventory {
        let mut v: i32 = 0;
        let cuda_driver_version = match cu!(self, cuDriverGetVersion(&mut v)) {
            Ok(()) => v,
            Err(e) => {
                tracing::warn!("cuDriverGetVersion: {e}");
                0
            }
        };
        let mut inv = Inventory {
            driver_kind: self.driver.kind.as_str().to_string(),
            cuda_driver_version,
            system_driver_version: self
                .nvml_text(|s, b, n| nv!(s, nvmlSystemGetDriverVersion(b, n))),
            nvml_version: self.nvml_text(|s, b, n| nv!(s, nvmlSystemGetNVMLVersion(b, n))),
            devices: Vec::new(),
        };
        for ordinal in 0..self.devices.len() {
            let d = self.device_info(ordinal);
            inv.devices.push(d);
        }
        inv
    }

    fn device_info(&mut self, ordinal: usize) -> DeviceInfo {
        let dev: CUdevice = self.devices[ordinal];
        let mut info = DeviceInfo::default();
        let mut name = [0 as c_char; 256];
        match cu!(
            self,
            cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, dev)
        ) {
            Ok(()) => info.name = c_buf_to_string(&name),
            Err(e) => tracing::warn!("cuDeviceGetName({ordinal}): {e}"),
        }
        info.uuid = self.cuda_uuid(dev).unwrap_or_default();
        let mut bytes: usize = 0;
        match cu!(self, cuDeviceTotalMem_v2(&mut bytes, dev)) {
            // A guest under a quota sees the quota as the device's size.
            Ok(()) => info.total_mem = self.quota.report(bytes as u64, bytes as u64).1,
            Err(e) => tracing::warn!("cuDeviceTotalMem_v2({ordinal}): {e}"),
        }
        let max = A::CU_DEVICE_ATTRIBUTE_MAX.0;
        for a in 1..max {
            let mut val: i32 = 0;
            if cu!(self, cuDeviceGetAttribute(&mut val, A(a), dev)).is_ok() {
                info.attributes.push((a as i32, guest_value(a as i32, val)));
            }
        }
        info.peers = (0..self.devices.len())
            .filter(|&p| p != ordinal)
            .map(|p| self.peer_info(dev, p))
            .collect();
        match self.nvml_device(ordinal as u32) {
            Ok(h) => self.nvml_device_info(h, &mut info),
            Err(e) => tracing::warn!("NVML has no device for ordinal {ordinal} ({e})"),
        }
        info
    }

    /// What `dev` can do with the memory of the device at ordinal `peer`.
    fn peer_info(&self, dev: CUdevice, peer: usize) -> PeerInfo {
        let other = self.devices[peer];
        let mut can: i32 = 0;
        if let Err(e) = cu!(self, cuDeviceCanAccessPeer(&mut can, dev, other)) {
            tracing::debug!("cuDeviceCanAccessPeer: {e}");
        }
        let mut attributes = Vec::new();
        for a in P2P_ATTRIBUTES {
            let mut v: i32 = 0;
            let asked = CUdevice_P2PAttribute(a);
            if cu!(self, cuDeviceGetP2PAttribute(&mut v, asked, dev, other)).is_ok() {
                attributes.push((a as i32, v));
            }
        }
        PeerInfo {
            peer: peer as u32,
            can_access: can != 0,
            attributes,
        }
    }

    /// `cuDeviceGetUuid_v2` (MIG-aware) when present, else the original.
    pub fn cuda_uuid(&self, dev: CUdevice) -> Option<[u8; 16]> {
        let mut u = CUuuid::default();
        let r = if self.driver.cuda.cuDeviceGetUuid_v2.is_some() {
            cu!(self, cuDeviceGetUuid_v2(&mut u, dev))
        } else {
            cu!(self, cuDeviceGetUuid(&mut u, dev))
        };
        match r {
            Ok(()) => Some(u.bytes.map(|b| b as u8)),
            Err(e) => {
                tracing::warn!("cuDeviceGetUuid: {e}");
                None
            }
        }
    }

    /// The NVML half of a device's facts; each missing one is logged and
    /// left empty, since a guest can live without any of them.
    fn nvml_device_info(&mut self, h: nvmlDevice_t, info: &mut DeviceInfo) {
        let mut pci = nvmlPciInfo_t::default();
        let r = if self.driver.nvml.nvmlDeviceGetPciInfo_v3.is_some() {
            nv!(self, nvmlDeviceGetPciInfo_v3(h, &mut pci))
        } else {
            nv!(self, nvmlDeviceGetPciInfo_v2(h, &mut pci))
        };
        match r {
            Ok(()) => {
                info.host_pci_bus_id = c_buf_to_string(&pci.busId);
                info.pci_device_id = pci.pciDeviceId;
                info.pci_subsystem_id = pci.pciSubSystemId;
            }
            Err(e) => tracing::warn!("nvmlDeviceGetPciInfo: {e}"),
        }
        info.serial = self.nvml_text(|s, b, n| nv!(s, nvmlDeviceGetSerial(h, b, n)));
        info.vbios_version = self.nvml_text(|s, b, n| nv!(s, nvmlDeviceGetVbiosVersion(h, b, n)));
        let mut minor: u32 = 0;
        match nv!(self, nvmlDeviceGetMinorNumber(h, &mut minor)) {
            Ok(()) => info.minor_number = minor,
            Err(e) => tracing::debug!("nvmlDeviceGetMinorNumber: {e}"),
        }
        let mut brand = nvmlBrandType_t(0);
        match nv!(self, nvmlDeviceGetBrand(h, &mut brand)) {
            Ok(()) => info.brand = brand.0 as i32,
            Err(e) => tracing::debug!("nvmlDeviceGetBrand: {e}"),
        }
        let mut arch: u32 = 0;
        match nv!(self, nvmlDeviceGetArchitecture(h, &mut arch)) {
            Ok(()) => info.architecture = arch,
            Err(e) => tracing::debug!("nvmlDeviceGetArchitecture: {e}"),
        }
        let (mut major, mut minor) = (0i32, 0i32);
        match nv!(
            self,
            nvmlDeviceGetCudaComputeCapability(h, &mut major, &mut minor)
        ) {
            Ok(()) => info.nvml_cc = (major, minor),
            Err(e) => tracing::debug!("nvmlDeviceGetCudaComputeCapability: {e}"),
        }
    }

    /// Runs an NVML getter that fills a text buffer; failures are logged and
    /// give an empty string.
    fn nvml_text(
        &mut self,
        f: impl FnOnce(&Session, *mut c_char, u32) -> Result<(), Status>,
    ) -> String {
        if !self.driver.nvml_ok {
            return String::new();
        }
        let mut buf = [0 as c_char; TEXT_BUF];
        match f(self, buf.as_mut_ptr(), buf.len() as u32) {
            Ok(()) => c_buf_to_string(&buf),
            Err(e) => {
                tracing::debug!("NVML text query: {e}");
                String::new()
            }
        }
    }
}
