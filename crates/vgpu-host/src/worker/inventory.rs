//! The device inventory a guest fetches once, and the liveness probe.

use super::{c_buf_to_string, cu, nv, Session};
use cuda_types::cuda::{CUdevice, CUdevice_attribute, CUuuid};
use cuda_types::nvml::{nvmlBrandType_t, nvmlDevice_t, nvmlPciInfo_t};
use std::ffi::c_char;
use vgpu_transport::proto::{DeviceInfo, GetInventory, Inventory, Ping, Serve};
use vgpu_transport::Status;

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
        let max = CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX.0;
        for a in 1..max {
            let mut val: i32 = 0;
            if cu!(
                self,
                cuDeviceGetAttribute(&mut val, CUdevice_attribute(a), dev)
            )
            .is_ok()
            {
                info.attributes.push((a as i32, val));
            }
        }
        match self.nvml_device(ordinal as u32) {
            Ok(h) => self.nvml_device_info(h, &mut info),
            Err(e) => tracing::warn!("NVML has no device for ordinal {ordinal} ({e})"),
        }
        info
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
