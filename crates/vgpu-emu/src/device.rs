//! cuInit, the driver version and device queries.

use crate::ffi::{read_c_string, write_c_string_truncated, write_out};
use crate::{identity, profile};
use cuda_types::cuda::{CUdevice, CUdevice_attribute, CUdevprop, CUresult, CUuuid};
use std::ffi::{c_char, c_int, c_uint};
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Every call but a handful needs cuInit first, as on the real driver.
pub fn ensure_init() -> Result<(), CUresult> {
    if INITIALIZED.load(Ordering::Acquire) {
        Ok(())
    } else {
        Err(CUresult::CUDA_ERROR_NOT_INITIALIZED)
    }
}

/// An initialized driver and an existing ordinal.
pub fn check_device(dev: CUdevice) -> Result<(), CUresult> {
    ensure_init()?;
    if (0..DEVICE_COUNT).contains(&dev) {
        Ok(())
    } else {
        Err(CUresult::CUDA_ERROR_INVALID_DEVICE)
    }
}

/// The driver version needs no cuInit: applications ask it before deciding
/// whether to initialize at all.
pub unsafe fn driver_get_version(version: *mut c_int) -> Result<(), CUresult> {
    // SAFETY: the caller passes null or a writable int.
    unsafe { write_out(version, profile::cuda_driver_version(), INVALID_VALUE) }
}

pub unsafe fn get_count(count: *mut c_int) -> Result<(), CUresult> {
    if count.is_null() {
        return Err(INVALID_VALUE);
    }
    ensure_init()?;
    // SAFETY: checked non-null above; the caller passes a writable int.
    unsafe { write_out(count, DEVICE_COUNT, INVALID_VALUE) }
}

pub unsafe fn get(device: *mut CUdevice, ordinal: c_int) -> Result<(), CUresult> {
    if device.is_null() {
        return Err(INVALID_VALUE);
    }
    check_device(ordinal)?;
    // SAFETY: checked non-null; the caller passes a writable CUdevice.
    unsafe { write_out(device, ordinal, INVALID_VALUE) }
}

pub unsafe fn get_name(name: *mut c_char, len: c_int, dev: CUdevice) -> Result<(), CUresult> {
    if name.is_null() || len <= 0 {
        return Err(INVALID_VALUE);
    }
    check_device(dev)?;
    // SAFETY: the caller's buffer holds `len` (> 0) bytes.
    unsafe { write_c_string_truncated(name, len as usize, profile::NAME) };
    Ok(())
}

pub unsafe fn get_uuid(uuid: *mut CUuuid, dev: CUdevice) -> Result<(), CUresult> {
    if uuid.is_null() {
        return Err(INVALID_VALUE);
    }
    check_device(dev)?;
    let bytes = identity::device0().uuid.map(|b| b as c_char);
    // SAFETY: checked non-null; the caller passes a writable CUuuid.
    unsafe { write_out(uuid, CUuuid { bytes }, INVALID_VALUE) }
}

pub unsafe fn total_mem_v2(bytes: *mut usize, dev: CUdevice) -> Result<(), CUresult> {
    if bytes.is_null() {
        return Err(INVALID_VALUE);
    }
    check_device(dev)?;
    // SAFETY: checked non-null; the caller passes a writable size_t.
    unsafe { write_out(bytes, profile::TOTAL_MEMORY as usize, INVALID_VALUE) }
}

/// The 32-bit legacy entry point cannot hold 80 GiB; it saturates rather
/// than wrapping to a small, misleading number.
pub unsafe fn total_mem_v1(bytes: *mut c_uint, dev: CUdevice) -> Result<(), CUresult> {
    if bytes.is_null() {
        return Err(INVALID_VALUE);
    }
    check_device(dev)?;
    let v = profile::TOTAL_MEMORY.min(u64::from(c_uint::MAX)) as c_uint;
    // SAFETY: checked non-null; the caller passes a writable uint.
    unsafe { write_out(bytes, v, INVALID_VALUE) }
}

pub unsafe fn get_attribute(
    pi: *mut c_int,
    attrib: CUdevice_attribute,
    dev: CUdevice,
) -> Result<(), CUresult> {
    if pi.is_null() {
        return Err(INVALID_VALUE);
    }
    check_device(dev)?;
    let v = profile::attribute(attrib)?;
    // SAFETY: checked non-null; the caller passes a writable int.
    unsafe { write_out(pi, v, INVALID_VALUE) }
}

pub unsafe fn compute_capability(
    major: *mut c_int,
    minor: *mut c_int,
    dev: CUdevice,
) -> Result<(), CUresult> {
    if major.is_null() || minor.is_null() {
        return Err(INVALID_VALUE);
    }
    check_device(dev)?;
    // SAFETY: both checked non-null; the caller passes writable ints.
    unsafe {
        write_out(major, profile::CC_MAJOR, INVALID_VALUE)?;
        write_out(minor, profile::CC_MINOR, INVALID_VALUE)
    }
}

pub unsafe fn get_properties(prop: *mut CUdevprop, dev: CUdevice) -> Result<(), CUresult> {
    if prop.is_null() {
        return Err(INVALID_VALUE);
    }
    check_device(dev)?;
    // SAFETY: checked non-null; the caller passes a writable CUdevprop.
    unsafe { write_out(prop, profile::legacy_properties(), INVALID_VALUE) }
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

pub unsafe fn get_pci_bus_id(buf: *mut c_char, len: c_int, dev: CUdevice) -> Result<(), CUresult> {
    if buf.is_null() || len <= 0 {
        return Err(INVALID_VALUE);
    }
    check_device(dev)?;
    // SAFETY: the caller's buffer holds `len` (> 0) bytes.
    unsafe { write_c_string_truncated(buf, len as usize, &pci_bus_id_string()) };
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

pub unsafe fn get_by_pci_bus_id(dev: *mut CUdevice, id: *const c_char) -> Result<(), CUresult> {
    if dev.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: the caller passes null or a NUL-terminated string.
    let s = unsafe { read_c_string(id) }.ok_or(INVALID_VALUE)?;
    ensure_init()?;
    if !is_our_pci_address(&s) {
        return Err(CUresult::CUDA_ERROR_INVALID_DEVICE);
    }
    // SAFETY: checked non-null; the caller passes a writable CUdevice.
    unsafe { write_out(dev, 0, INVALID_VALUE) }
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
