//! Device queries, all answered from the inventory fetched at `cuInit`.

use crate::args::Word;
use crate::driver::{self, Device};
use cuda_types::cuda::{
    CUdevice, CUdevice_P2PAttribute, CUdevice_attribute, CUdevprop, CUresult, CUuuid,
};
use std::ffi::{c_char, c_int, CStr};
use std::ptr::NonNull;
use vgpu_ffi::Out;
use vgpu_guest::client::GuestDevice;
use vgpu_transport::proto::PeerInfo;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;

const ATTR_CC_MAJOR: i32 = 75;
const ATTR_CC_MINOR: i32 = 76;

/// Copies `text` into a caller buffer of `len` bytes, truncating and always
/// NUL-terminating, as the driver does for names and bus ids; a buffer of
/// no bytes is INVALID_VALUE.
///
/// # Safety
/// `buf` holds `len` writable bytes (API contract).
unsafe fn write_text(buf: Out<c_char>, len: c_int, text: &str) -> Result<(), CUresult> {
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l > 0)
        .ok_or(INVALID_VALUE)?;
    // SAFETY: `Out` is never NULL; the buffer holds `len` bytes (caller).
    unsafe {
        vgpu_ffi::convert::copy_truncated(
            NonNull::new_unchecked(buf.as_ptr()),
            len,
            text.as_bytes(),
        )
    };
    Ok(())
}

pub fn get_count(count: Out<c_int>) -> Result<(), CUresult> {
    count.write(driver::get()?.device_count() as c_int);
    Ok(())
}

pub fn get(out: Out<CUdevice>, ordinal: Device) -> Result<(), CUresult> {
    out.write(ordinal.ordinal);
    Ok(())
}

/// # Safety
/// `name` holds `len` writable bytes (API contract).
pub unsafe fn get_name(name: Out<c_char>, len: c_int, dev: Device) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { write_text(name, len, &dev.info().info.name) }
}

/// `cuDeviceGetUuid` and `cuDeviceGetUuid_v2`: both report the physical
/// GPU's UUID; they differ only for MIG instances, which vgpu does not
/// expose.
pub fn get_uuid(uuid: Out<CUuuid>, dev: Device) -> Result<(), CUresult> {
    uuid.write(CUuuid {
        bytes: dev.info().info.uuid.map(|b| b as c_char),
    });
    Ok(())
}

/// `cuDeviceTotalMem_v2`, and the 32-bit original, which saturates rather
/// than wrapping, so a large device never looks tiny.
pub fn total_mem<T: Word>(bytes: Out<T>, dev: Device) -> Result<(), CUresult> {
    bytes.write(T::saturating(dev.info().info.total_mem));
    Ok(())
}

pub fn get_attribute(
    pi: Out<c_int>,
    attrib: CUdevice_attribute,
    dev: Device,
) -> Result<(), CUresult> {
    let attr = i32::try_from(attrib.0).map_err(|_| INVALID_VALUE)?;
    let value = dev.info().attribute(attr).ok_or(INVALID_VALUE)?;
    pi.write(crate::vmm::adjust_attribute(dev.ordinal, attr, value));
    Ok(())
}

pub fn compute_capability(
    major: Out<c_int>,
    minor: Out<c_int>,
    dev: Device,
) -> Result<(), CUresult> {
    let d = dev.info();
    let ma = d.attribute(ATTR_CC_MAJOR).ok_or(INVALID_VALUE)?;
    let mi = d.attribute(ATTR_CC_MINOR).ok_or(INVALID_VALUE)?;
    major.write(ma);
    minor.write(mi);
    Ok(())
}

/// The pre-4.0 property block, from the same attributes; one the host did
/// not answer reads as 0 (the struct has no way to say "unknown").
pub fn get_properties(prop: Out<CUdevprop>, dev: Device) -> Result<(), CUresult> {
    let d = dev.info();
    let a = |n: i32| d.attribute(n).unwrap_or(0);
    prop.write(CUdevprop {
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
    });
    Ok(())
}

// ---- peers ----

/// What `dev` can do with `peer`'s memory, from the inventory: each device
/// lists a link to every other device of the host, named by the *host's*
/// ordinal, which CUDA_VISIBLE_DEVICES may have renumbered for this
/// process. A device has no link to itself.
fn link(dev: &Device, peer: &Device) -> Option<&'static PeerInfo> {
    let host = u32::try_from(peer.host()).ok()?;
    dev.info().info.peers.iter().find(|l| l.peer == host)
}

/// Whether contexts on `dev` may map `peer`'s memory.
pub(crate) fn can_access(dev: &Device, peer: &Device) -> bool {
    link(dev, peer).is_some_and(|l| l.can_access)
}

/// `cuDeviceCanAccessPeer`: 0 for a device and itself, as on the driver.
pub fn can_access_peer(can: Out<c_int>, dev: Device, peer: Device) -> Result<(), CUresult> {
    can.write(c_int::from(can_access(&dev, &peer)));
    Ok(())
}

/// `cuDeviceGetP2PAttribute`: the same device twice is
/// CUDA_ERROR_INVALID_DEVICE, an attribute the host's driver did not
/// answer CUDA_ERROR_INVALID_VALUE (cuda.h).
pub fn get_p2p_attribute(
    value: Out<c_int>,
    attr: CUdevice_P2PAttribute,
    src: Device,
    dst: Device,
) -> Result<(), CUresult> {
    let l = link(&src, &dst).ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)?;
    let v = l
        .attributes
        .iter()
        .find(|&&(a, _)| u32::try_from(a) == Ok(attr.0))
        .map(|&(_, v)| v)
        .ok_or(INVALID_VALUE)?;
    value.write(v);
    Ok(())
}

/// # Safety
/// `pci_bus_id` holds `len` writable bytes (API contract).
pub unsafe fn get_pci_bus_id(
    pci_bus_id: Out<c_char>,
    len: c_int,
    dev: Device,
) -> Result<(), CUresult> {
    // SAFETY: forwarded caller contract.
    unsafe { write_text(pci_bus_id, len, &dev.info().pci.cuda_bus_id()) }
}

pub fn get_by_pci_bus_id(dev: Out<CUdevice>, pci_bus_id: &CStr) -> Result<(), CUresult> {
    let wanted = pci_bus_id
        .to_str()
        .ok()
        .and_then(parse_bus_id)
        .ok_or(INVALID_VALUE)?;
    let (ordinal, _) = driver::get()?
        .devices()
        .find(|(_, d)| wanted.matches(d))
        .ok_or(CUresult::CUDA_ERROR_INVALID_DEVICE)?;
    dev.write(ordinal);
    Ok(())
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
