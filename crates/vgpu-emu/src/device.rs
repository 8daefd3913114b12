//! cuInit, the driver version, device queries and what two devices can do
//! for each other.
//!
//! The profile's devices are numbered in driver order (NVML's indices); a
//! CUDA ordinal is a position in what `CUDA_VISIBLE_DEVICES` leaves, read
//! once as the real driver does (so `vgpu host --devices`, which sets it for
//! the worker, selects on the software GPU exactly as on a real one).

use crate::ffi::{buffer_len, driver_string, Saturate};
use crate::{identity, profile};
use cuda_types::cuda::{
    CUdevice, CUdevice_P2PAttribute, CUdevice_attribute, CUdevprop, CUresult, CUuuid,
};
use std::ffi::{c_char, c_int, c_uint, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Once, OnceLock};
use std::time::Duration;
use vgpu_ffi::log::Level;
use vgpu_ffi::{vlog, FromCuda, Out};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;

/// Milliseconds the first cuInit takes, to imitate a cold host (a driver
/// without persistence mode, many GPUs): tests of the guest's wait.
pub const INIT_DELAY_ENV: &str = "VGPU_EMU_INIT_DELAY_MS";

static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Driver-order index of each CUDA ordinal.
fn visible() -> &'static [usize] {
    static V: OnceLock<Vec<usize>> = OnceLock::new();
    V.get_or_init(|| {
        let uuids: Vec<String> = (0..profile::current().devices())
            .map(|i| identity::uuid_string(&identity::device(i).uuid))
            .collect();
        let env = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        cuda_abi::visible::visible_devices(env.as_deref(), &uuids)
    })
}

/// How many devices CUDA numbers.
pub fn count() -> c_int {
    visible().len() as c_int
}

/// The driver-order index of an existing ordinal (see [`check_device`]).
pub fn index_of(dev: CUdevice) -> usize {
    visible()[dev as usize]
}

/// The PCI bus of an existing ordinal.
pub fn bus_of(dev: CUdevice) -> u32 {
    profile::current().buses[index_of(dev)]
}

/// The CUDA ordinal of a driver-order index, if it is visible.
pub fn ordinal_of(index: usize) -> Option<CUdevice> {
    visible()
        .iter()
        .position(|&i| i == index)
        .map(|o| o as CUdevice)
}

pub fn init(flags: c_uint) -> Result<(), CUresult> {
    if flags != 0 {
        return Err(INVALID_VALUE);
    }
    if let Err(why) = profile::selected() {
        vlog!(Level::Error, "vgpu-emu: {why}");
        return Err(CUresult::CUDA_ERROR_NOT_INITIALIZED);
    }
    static COLD_START: Once = Once::new();
    // Every caller waits for the first one, as concurrent cuInits do.
    COLD_START.call_once(|| {
        let ms = std::env::var(INIT_DELAY_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        if ms > 0 {
            vlog!(
                Level::Info,
                "vgpu-emu: cuInit takes {ms} ms ({INIT_DELAY_ENV})"
            );
            std::thread::sleep(Duration::from_millis(ms));
        }
    });
    // CUDA_VISIBLE_DEVICES hiding every device: the driver has none to offer.
    if count() == 0 {
        return Err(CUresult::CUDA_ERROR_NO_DEVICE);
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
    if (0..count()).contains(&dev) {
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

pub fn get_count(n: Out<c_int>) -> Result<(), CUresult> {
    n.write(count());
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
    unsafe { driver_string(name, len, profile::board().name) };
    Ok(())
}

/// `cuDeviceGetUuid` and `_v2`.
pub fn get_uuid(uuid: Out<CUuuid>, dev: Device) -> Result<(), CUresult> {
    let bytes = identity::device(index_of(dev.0)).uuid.map(|b| b as c_char);
    uuid.write(CUuuid { bytes });
    Ok(())
}

/// `cuDeviceTotalMem` (32-bit, saturating) and `_v2`.
pub fn total_mem<T: Saturate>(bytes: Out<T>, _dev: Device) -> Result<(), CUresult> {
    bytes.write(T::saturate(profile::board().cuda_total));
    Ok(())
}

pub fn get_attribute(
    pi: Out<c_int>,
    attrib: CUdevice_attribute,
    dev: Device,
) -> Result<(), CUresult> {
    pi.write(profile::attribute_of(bus_of(dev.0), attrib)?);
    Ok(())
}

pub fn compute_capability(
    major: Out<c_int>,
    minor: Out<c_int>,
    _dev: Device,
) -> Result<(), CUresult> {
    let (ma, mi) = profile::board().cc;
    major.write(ma);
    minor.write(mi);
    Ok(())
}

pub fn get_properties(prop: Out<CUdevprop>, _dev: Device) -> Result<(), CUresult> {
    prop.write(profile::legacy_properties());
    Ok(())
}

/// The driver API's spelling of a bus's address (domain 0, device 0):
/// 4-digit domain, uppercase hex.
pub fn pci_bus_id_string(bus: u32) -> String {
    format!("0000:{bus:02X}:00.0")
}

pub unsafe fn get_pci_bus_id(buf: Out<c_char>, len: c_int, dev: CUdevice) -> Result<(), CUresult> {
    let len = buffer_len(len)?;
    check_device(dev)?;
    // SAFETY: the caller's buffer holds `len` bytes.
    unsafe { driver_string(buf, len, &pci_bus_id_string(bus_of(dev))) };
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

/// The driver-order index of the device at a PCI address, if any.
pub fn index_at_pci_address(s: &str) -> Option<usize> {
    let (domain, bus, device) = parse_pci_bus_id(s)?;
    if domain != 0 || device != 0 {
        return None;
    }
    profile::current().buses.iter().position(|&b| b == bus)
}

/// Only a visible device has an ordinal to answer with.
pub fn get_by_pci_bus_id(dev: Out<CUdevice>, id: &CStr) -> Result<(), CUresult> {
    let ordinal = index_at_pci_address(&id.to_string_lossy())
        .and_then(ordinal_of)
        .ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)?;
    dev.write(ordinal);
    Ok(())
}

/// Whether `dev` can map `peer`'s memory: two different devices of a
/// profile whose boards reach each other (a device is not its own peer).
pub fn peers(dev: CUdevice, peer: CUdevice) -> bool {
    dev != peer && profile::current().peer.access
}

pub fn can_access_peer(can: Out<c_int>, dev: Device, peer: Device) -> Result<(), CUresult> {
    can.write(c_int::from(peers(dev.0, peer.0)));
    Ok(())
}

/// `cuDeviceGetP2PAttribute`: the link between two different devices.
pub fn get_p2p_attribute(
    value: Out<c_int>,
    attr: CUdevice_P2PAttribute,
    src: Device,
    dst: Device,
) -> Result<(), CUresult> {
    use CUdevice_P2PAttribute as P;
    if src.0 == dst.0 {
        return Err(CUresult::CUDA_ERROR_INVALID_DEVICE);
    }
    let link = profile::current().peer;
    let v = match attr {
        P::CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK => link.performance_rank,
        P::CU_DEVICE_P2P_ATTRIBUTE_ACCESS_SUPPORTED => c_int::from(link.access),
        P::CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED => c_int::from(link.native_atomics),
        // CUDA arrays are not implemented at all.
        P::CU_DEVICE_P2P_ATTRIBUTE_CUDA_ARRAY_ACCESS_SUPPORTED
        | P::CU_DEVICE_P2P_ATTRIBUTE_ONLY_PARTIAL_NATIVE_ATOMIC_SUPPORTED => 0,
        _ => return Err(INVALID_VALUE),
    };
    value.write(v);
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
        assert_eq!(pci_bus_id_string(1), "0000:01:00.0");
        assert_eq!(pci_bus_id_string(0x3b), "0000:3B:00.0");
        assert_eq!(index_at_pci_address("0000:01:00.0"), Some(0));
        assert_eq!(index_at_pci_address("01:00.0"), Some(0));
        assert_eq!(index_at_pci_address("0000:02:00.0"), None, "one device");
        assert_eq!(index_at_pci_address("0000:01:01.0"), None);
    }
}
