//! cuInit, the driver version and device queries.

use crate::ffi::{buffer_len, driver_string, Saturate};
use crate::{identity, profile};
use cuda_types::cuda::{CUdevice, CUdevice_attribute, CUdevprop, CUresult, CUuuid};
use std::ffi::{c_char, c_int, c_uint, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use vgpu_ffi::{FromCuda, Out};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;

/// How many devices the software GPU exposes.
pub const DEVICE_COUNT: c_int = 1;

static INITIALIZED: AtomicBool = AtomicBool::new(false);

pub fn init(flags: c_uint) -> Result<(), CUresult> {
    if flags != 0 {
        return Err(INVALID_VALUE);
    }
    INITIALIZED.store(true, Ordering::Release);
    Ok(())
}

/// The export list's `require`: every call but a handful needs cuInit
/// first, as on the real driver.
pub fn ensure_init() -> Result<(), CUresult> {
    if INITIALIZED.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(CUresult::CUDA_ERROR_NOT_INITIALIZED)
    }
}

/// An existing ordinal.
pub fn check_device(dev: CUdevice) -> Result<(), CUresult> {
    if (0..DEVICE_COUNT).contains(&dev) {
        Ok(())
    } else {
        Err(CUresult::CUDA_ERROR_INVALID_DEVICE)
    }
}

/// A device ordinal argument that names an existing device
/// (CUDA_ERROR_INVALID_DEVICE otherwise).
#[derive(Clone, Copy)]
pub struct Device(pub CUdevice);

impl FromCuda<CUdevice, CUresult> for Device {
    unsafe fn from_cuda(dev: CUdevice) -> Result<Self, CUresult> {
        check_device(dev).map(|()| Device(dev))
    }
}

/// The driver version needs no cuInit: applications ask it before deciding
/// whether to initialize at all.
pub fn driver_get_version(version: Out<c_int>) -> Result<(), CUresult> {
    version.write(profile::cuda_driver_version());
    Ok(())
}

pub fn get_count(count: Out<c_int>) -> Result<(), CUresult> {
    count.write(DEVICE_COUNT);
    Ok(())
}

pub fn get(device: Out<CUdevice>, ordinal: Device) -> Result<(), CUresult> {
    device.write(ordinal.0);
    Ok(())
}

/// The ordinal stays a plain value here and in `get_pci_bus_id` so that a
/// bad length is reported before a bad device, as it always was.
pub unsafe fn get_name(name: Out<c_char>, len: c_int, dev: CUdevice) -> Result<(), CUresult> {
    let len = buffer_len(len)?;
    check_device(dev)?;
    // SAFETY: the caller's buffer holds `len` bytes.
    unsafe { driver_string(name, len, profile::NAME) };
    Ok(())
}

/// `cuDeviceGetUuid` and `_v2`.
pub fn get_uuid(uuid: Out<CUuuid>, _dev: Device) -> Result<(), CUresult> {
    let bytes = identity::device0().uuid.map(|b| b as c_char);
    uuid.write(CUuuid { bytes });
    Ok(())
}

/// `cuDeviceTotalMem` (32-bit, saturating) and `_v2`.
pub fn total_mem<T: Saturate>(bytes: Out<T>, _dev: Device) -> Result<(), CUresult> {
    bytes.write(T::saturate(profile::TOTAL_MEMORY));
    Ok(())
}

pub fn get_attribute(
    pi: Out<c_int>,
    attrib: CUdevice_attribute,
    _dev: Device,
) -> Result<(), CUresult> {
    pi.write(profile::attribute(attrib)?);
    Ok(())
}

pub fn compute_capability(
    major: Out<c_int>,
    minor: Out<c_int>,
    _dev: Device,
) -> Result<(), CUresult> {
    major.write(profile::CC_MAJOR);
    minor.write(profile::CC_MINOR);
    Ok(())
}

pub fn get_properties(prop: Out<CUdevprop>, _dev: Device) -> Result<(), CUresult> {
    prop.write(profile::legacy_properties());
    Ok(())
}

/// The driver API's spelling of the address: 4-digit domain, uppercase hex.
pub fn pci_bus_id_string() -> String {
    format!(
        "{:04X}:{:02X}:{:02X}.0",
        profile::PCI_DOMAIN,
        profile::PCI_BUS,
        profile::PCI_DEVICE
    )
}

pub unsafe fn get_pci_bus_id(buf: Out<c_char>, len: c_int, dev: CUdevice) -> Result<(), CUresult> {
    let len = buffer_len(len)?;
    check_device(dev)?;
    // SAFETY: the caller's buffer holds `len` bytes.
    unsafe { driver_string(buf, len, &pci_bus_id_string()) };
    Ok(())
}

/// Parses `[domain:]bus:device[.function]` in hex, the forms both the driver
/// API and NVML accept.
pub fn parse_pci_bus_id(s: &str) -> Option<(u32, u32, u32)> {
    let s = s.trim();
    let (rest, _function) = match s.rsplit_once('.') {
        Some((r, f)) => (r, u32::from_str_radix(f, 16).ok()?),
        None => (s, 0),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let hex = |p: &str| u32::from_str_radix(p, 16).ok();
    match parts.as_slice() {
        [d, b, dv] => Some((hex(d)?, hex(b)?, hex(dv)?)),
        [b, dv] => Some((0, hex(b)?, hex(dv)?)),
        _ => None,
    }
}

pub fn is_our_pci_address(s: &str) -> bool {
    parse_pci_bus_id(s) == Some((profile::PCI_DOMAIN, profile::PCI_BUS, profile::PCI_DEVICE))
}

pub fn get_by_pci_bus_id(dev: Out<CUdevice>, id: &CStr) -> Result<(), CUresult> {
    if !is_our_pci_address(&id.to_string_lossy()) {
        return Err(CUresult::CUDA_ERROR_INVALID_DEVICE);
    }
    dev.write(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_parsing() {
        assert_eq!(parse_pci_bus_id("0000:01:00.0"), Some((0, 1, 0)));
        assert_eq!(parse_pci_bus_id("00000000:01:00.0"), Some((0, 1, 0)));
        assert_eq!(parse_pci_bus_id("01:00.0"), Some((0, 1, 0)));
        assert_eq!(parse_pci_bus_id("0000:3b:00.0"), Some((0, 0x3b, 0)));
        assert_eq!(parse_pci_bus_id("garbage"), None);
        assert_eq!(pci_bus_id_string(), "0000:01:00.0");
    }
}
