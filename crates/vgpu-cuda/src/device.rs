//! Device queries, all answered from the inventory fetched at `cuInit`.

use crate::driver;
use cuda_types::cuda::{CUdevice, CUdevice_attribute, CUdevprop, CUresult, CUuuid};
use std::ffi::{c_char, c_int, c_uint, CStr};
use vgpu_guest::client::GuestDevice;
use vgpu_guest::ffi::OutPtr;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;

const ATTR_CC_MAJOR: i32 = 75;
const ATTR_CC_MINOR: i32 = 76;

fn device(dev: CUdevice) -> Result<&'static GuestDevice, CUresult> {
    driver::get()?.device(dev)
}

/// Copies `text` into a caller buffer of `len` bytes, truncating and always
/// NUL-terminating, as the driver does for names and bus ids.
unsafe fn write_text(buf: *mut c_char, len: c_int, text: &str) -> Result<(), CUresult> {
    if buf.is_null() || len <= 0 {
        return Err(INVALID_VALUE);
    }
    let n = text.len().min(len as usize - 1);
    // SAFETY: the caller's buffer holds `len` bytes (API contract) and
    // n + 1 <= len; the source is a live &str of at least n bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
        *buf.add(n) = 0;
    }
    Ok(())
}

pub unsafe fn get_count(count: *mut c_int) -> Result<(), CUresult> {
    let n = driver::get()?.device_count() as c_int;
    // SAFETY: API contract: count is writable or null.
    unsafe { count.write_or(n, INVALID_VALUE) }
}

pub unsafe fn get(out: *mut CUdevice, ordinal: c_int) -> Result<(), CUresult> {
    let d = driver::get()?;
    if out.is_null() {
        return Err(INVALID_VALUE);
    }
    d.device(ordinal)?;
    // SAFETY: API contract: out is writable (checked non-null).
    unsafe { out.write_or(ordinal, INVALID_VALUE) }
}

pub unsafe fn get_name(name: *mut c_char, len: c_int, dev: CUdevice) -> Result<(), CUresult> {
    let d = device(dev)?;
    // SAFETY: API contract: `name` holds `len` bytes.
    unsafe { write_text(name, len, &d.info.name) }
}

pub unsafe fn get_uuid(uuid: *mut CUuuid, dev: CUdevice) -> Result<(), CUresult> {
    let d = device(dev)?;
    let value = CUuuid {
        bytes: d.info.uuid.map(|b| b as c_char),
    };
    // SAFETY: API contract: uuid is writable or null.
    unsafe { uuid.write_or(value, INVALID_VALUE) }
}

pub unsafe fn get_uuid_v2(uuid: *mut CUuuid, dev: CUdevice) -> Result<(), CUresult> {
    // Both report the physical GPU's UUID; they differ only for MIG
    // instances, which vgpu does not expose.
    // SAFETY: forwarded caller contract.
    unsafe { get_uuid(uuid, dev) }
}

pub unsafe fn total_mem_v2(bytes: *mut usize, dev: CUdevice) -> Result<(), CUresult> {
    let d = device(dev)?;
    // SAFETY: API contract: bytes is writable or null.
    unsafe { bytes.write_or(d.info.total_mem as usize, INVALID_VALUE) }
}

/// The 32-bit original; saturates rather than wrapping, so a large device
/// never looks tiny.
pub unsafe fn total_mem(bytes: *mut c_uint, dev: CUdevice) -> Result<(), CUresult> {
    let d = device(dev)?;
    let v = d.info.total_mem.min(c_uint::MAX as u64) as c_uint;
    // SAFETY: API contract: bytes is writable or null.
    unsafe { bytes.write_or(v, INVALID_VALUE) }
}

pub unsafe fn get_attribute(
    pi: *mut c_int,
    attrib: CUdevice_attribute,
    dev: CUdevice,
) -> Result<(), CUresult> {
    let d = device(dev)?;
    let attr = i32::try_from(attrib.0).map_err(|_| INVALID_VALUE)?;
    let value = d.attribute(attr).ok_or(INVALID_VALUE)?;
    let value = crate::vmm::adjust_attribute(dev, attr, value);
    // SAFETY: API contract: pi is writable or null.
    unsafe { pi.write_or(value, INVALID_VALUE) }
}

pub unsafe fn compute_capability(
    major: *mut c_int,
    minor: *mut c_int,
    dev: CUdevice,
) -> Result<(), CUresult> {
    let d = device(dev)?;
    if major.is_null() || minor.is_null() {
        return Err(INVALID_VALUE);
    }
    let ma = d.attribute(ATTR_CC_MAJOR).ok_or(INVALID_VALUE)?;
    let mi = d.attribute(ATTR_CC_MINOR).ok_or(INVALID_VALUE)?;
    // SAFETY: both checked non-null; writable by API contract.
    unsafe {
        major.write_or(ma, INVALID_VALUE)?;
        minor.write_or(mi, INVALID_VALUE)
    }
}

/// The pre-4.0 property block, from the same attributes; one the host did
/// not answer reads as 0 (the struct has no way to say "unknown").
pub unsafe fn get_properties(prop: *mut CUdevprop, dev: CUdevice) -> Result<(), CUresult> {
    let d = device(dev)?;
    let a = |n: i32| d.attribute(n).unwrap_or(0);
    let value = CUdevprop {
        maxThreadsPerBlock: a(1),
        maxThreadsDim: [a(2), a(3), a(4)],
        maxGridSize: [a(5), a(6), a(7)],
        sharedMemPerBlock: a(8),
        totalConstantMemory: a(9),
        SIMDWidth: a(10),
        memPitch: a(11),
        regsPerBlock: a(12),
        clockRate: a(13),
        textureAlign: a(14),
    };
    // SAFETY: API contract: prop is writable or null.
    unsafe { prop.write_or(value, INVALID_VALUE) }
}

pub unsafe fn get_pci_bus_id(
    pci_bus_id: *mut c_char,
    len: c_int,
    dev: CUdevice,
) -> Result<(), CUresult> {
    let d = device(dev)?;
    // SAFETY: API contract: the buffer holds `len` bytes.
    unsafe { write_text(pci_bus_id, len, &d.pci.cuda_bus_id()) }
}

pub unsafe fn get_by_pci_bus_id(
    dev: *mut CUdevice,
    pci_bus_id: *const c_char,
) -> Result<(), CUresult> {
    let drv = driver::get()?;
    if dev.is_null() || pci_bus_id.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: non-null, and the API takes a NUL-terminated string.
    let text = unsafe { CStr::from_ptr(pci_bus_id) };
    let wanted = text
        .to_str()
        .ok()
        .and_then(parse_bus_id)
        .ok_or(INVALID_VALUE)?;
    let (ordinal, _) = drv
        .devices()
        .find(|(_, d)| wanted.matches(d))
        .ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)?;
    // SAFETY: checked non-null; writable by API contract.
    unsafe { dev.write_or(ordinal, INVALID_VALUE) }
}

/// A bus id as `cuDeviceGetByPCIBusId` accepts it.
#[derive(Debug, PartialEq, Eq)]
pub struct BusId {
    domain: u32,
    bus: u8,
    device: u8,
    function: Option<u8>,
}

impl BusId {
    fn matches(&self, d: &GuestDevice) -> bool {
        self.domain == d.pci.domain
            && self.bus == d.pci.bus
            && self.device == d.pci.device
            && self.function.is_none_or(|f| f == d.pci.function)
    }
}

/// The driver's three forms, hex in any case: `domain:bus:device.function`
/// (domain of 1–8 digits, so both the CUDA `0000:` and the NVML `00000000:`
/// spellings), `domain:bus:device` and `bus:device.function`.
pub fn parse_bus_id(s: &str) -> Option<BusId> {
    fn hex<T: TryFrom<u32>>(s: &str, max_digits: usize) -> Option<T> {
        if s.is_empty() || s.len() > max_digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        T::try_from(u32::from_str_radix(s, 16).ok()?).ok()
    }
    let s = s.trim_end_matches('\0').trim();
    let parts: Vec<&str> = s.split(':').collect();
    let (domain, bus, rest) = match parts.as_slice() {
        [d, b, rest] => (hex::<u32>(d, 8)?, hex::<u8>(b, 2)?, *rest),
        [b, rest] if rest.contains('.') => (0, hex::<u8>(b, 2)?, *rest),
        _ => return None,
    };
    let (device, function) = match rest.split_once('.') {
        Some((dv, f)) => (hex::<u8>(dv, 2)?, Some(hex::<u8>(f, 1)?)),
        None => (hex::<u8>(rest, 2)?, None),
    };
    if device > 0x1f || function.is_some_and(|f| f > 7) {
        return None;
    }
    Some(BusId {
        domain,
        bus,
        device,
        function,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(domain: u32, bus: u8, device: u8, function: Option<u8>) -> Option<BusId> {
        Some(BusId {
            domain,
            bus,
            device,
            function,
        })
    }

    #[test]
    fn bus_id_forms() {
        assert_eq!(parse_bus_id("0000:00:05.0"), id(0, 0, 5, Some(0)));
        assert_eq!(parse_bus_id("00000000:00:05.0"), id(0, 0, 5, Some(0)));
        assert_eq!(parse_bus_id("0000:41:1F.7"), id(0, 0x41, 0x1f, Some(7)));
        assert_eq!(parse_bus_id("0001:a1:1f.0"), id(1, 0xa1, 0x1f, Some(0)));
        assert_eq!(parse_bus_id("0000:00:07"), id(0, 0, 7, None));
        assert_eq!(parse_bus_id("00:05.0"), id(0, 0, 5, Some(0)));
        assert_eq!(parse_bus_id(" 0000:00:05.0 "), id(0, 0, 5, Some(0)));
    }

    #[test]
    fn bad_bus_ids() {
        for bad in [
            "",
            "00:05",
            "0000:00:20.0",
            "0000:00:05.8",
            "000000000:00:05.0",
            "0000:000:05.0",
            "0000:00:05.0.0",
            "g000:00:05.0",
            "0000:00:05.",
            "0000::05.0",
            "1:2:3:4.0",
            "0000:+1:05.0",
        ] {
            assert_eq!(parse_bus_id(bad), None, "{bad:?}");
        }
    }
}
