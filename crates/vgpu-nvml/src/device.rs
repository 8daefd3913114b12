//! Device enumeration, handles, lookups and the static facts of the
//! inventory (answered locally, no round trip).
//!
//! An `nvmlDevice_t` is the address of one byte of [`SLOTS`], the byte at the
//! device's index: stable for the life of the process, the same for every
//! lookup of one device (clients compare handles), and checkable — any
//! pointer outside the array, or past the device count, is rejected. That
//! check is [`Device`]'s conversion at the export boundary, so the bodies
//! here and in `query.rs` / `process.rs` take a live device.

use crate::busid;
use crate::ffi::{put_str, Answer};
use crate::init;
use cuda_types::nvml::*;
use std::borrow::Cow;
use std::ffi::{c_char, c_int, c_uint, CStr};
use std::sync::Arc;
use vgpu_ffi::{FromCuda, In, Out, Status};
use vgpu_guest::client::{GuestDevice, GuestInventory};
use vgpu_transport::proto::DeviceInfo;

const MAX_DEVICES: usize = 64;
static SLOTS: [u8; MAX_DEVICES] = [0; MAX_DEVICES];

fn handle_of(index: usize) -> nvmlDevice_t {
    SLOTS[index..].as_ptr().cast_mut().cast()
}

/// The slot index a pointer names, if it names one at all.
fn slot_of(h: nvmlDevice_t) -> Option<usize> {
    let off = (h as usize).wrapping_sub(SLOTS.as_ptr() as usize);
    (off < MAX_DEVICES).then_some(off)
}

/// A checked `nvmlDevice_t`: the inventory it belongs to and its index
/// there. Entry points take this instead of the raw handle, so a body only
/// ever sees a device that exists.
pub struct Device {
    inv: Arc<GuestInventory>,
    index: usize,
}

impl Device {
    /// NVML must be initialized and the handle one we gave out for a
    /// device that exists.
    fn resolve(h: nvmlDevice_t) -> Result<Device, nvmlReturn_t> {
        let inv = init::inventory()?;
        match slot_of(h) {
            Some(index) if index < inv.devices.len() => Ok(Device { inv, index }),
            _ => Err(nvmlReturn_t::INVALID_ARGUMENT),
        }
    }

    pub fn guest(&self) -> &GuestDevice {
        &self.inv.devices[self.index]
    }
    pub fn info(&self) -> &DeviceInfo {
        &self.guest().info
    }
    /// The host's device number (queries are addressed by it).
    pub fn host_index(&self) -> u32 {
        self.index as u32
    }
}

impl FromCuda<nvmlDevice_t, nvmlReturn_t> for Device {
    /// The handle is compared against our own table, never dereferenced.
    unsafe fn from_cuda(h: nvmlDevice_t) -> Result<Self, nvmlReturn_t> {
        Device::resolve(h)
    }
}

fn visible_count(inv: &GuestInventory) -> usize {
    inv.devices.len().min(MAX_DEVICES)
}

/// `nvmlDeviceGetCount` and its `_v2`.
pub fn count(device_count: Out<c_uint>) -> Result<(), nvmlReturn_t> {
    device_count.write(visible_count(&*init::inventory()?) as c_uint);
    Ok(())
}

/// `nvmlDeviceGetHandleByIndex` and its `_v2`.
pub fn by_index(index: c_uint, device: Out<nvmlDevice_t>) -> Result<(), nvmlReturn_t> {
    if index as usize >= visible_count(&*init::inventory()?) {
        return Err(nvmlReturn_t::INVALID_ARGUMENT);
    }
    device.write(handle_of(index as usize));
    Ok(())
}

/// Hands out the handle of the first device `matches` accepts.
fn find(
    device: Out<nvmlDevice_t>,
    matches: impl Fn(&GuestDevice) -> bool,
) -> Result<(), nvmlReturn_t> {
    let inv = init::inventory()?;
    let i = inv.devices[..visible_count(&inv)]
        .iter()
        .position(matches)
        .ok_or(nvmlReturn_t::NVML_ERROR_NOT_FOUND)?;
    device.write(handle_of(i));
    Ok(())
}

/// Text arguments are ASCII; anything that is not UTF-8 names no device.
fn utf8(s: &CStr) -> Result<&str, nvmlReturn_t> {
    s.to_str().map_err(|_| nvmlReturn_t::INVALID_ARGUMENT)
}

pub fn by_uuid(uuid: &CStr, device: Out<nvmlDevice_t>) -> Result<(), nvmlReturn_t> {
    let want = utf8(uuid)?.trim();
    find(device, |d| d.uuid_string().eq_ignore_ascii_case(want))
}

/// `nvmlUUID_v1`: the struct size with the version in the top byte.
const UUID_V1: c_uint = std::mem::size_of::<nvmlUUID_v1_t>() as c_uint | (1 << 24);

pub fn by_uuid_v(uuid: In<nvmlUUID_t>, device: Out<nvmlDevice_t>) -> Result<(), nvmlReturn_t> {
    let u = uuid.read();
    if u.version != UUID_V1 {
        return Err(nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    match nvmlUUIDType_t(u.type_) {
        nvmlUUIDType_t::NVML_UUID_TYPE_ASCII => {
            // SAFETY: the caller chose the ASCII member; every byte pattern
            // is a valid c_char array.
            let raw = unsafe { u.value.str_ };
            let bytes: Vec<u8> = raw
                .iter()
                .map(|&c| c as u8)
                .take_while(|&c| c != 0)
                .collect();
            let want = std::str::from_utf8(&bytes).map_err(|_| nvmlReturn_t::INVALID_ARGUMENT)?;
            find(device, |d| {
                d.uuid_string().eq_ignore_ascii_case(want.trim())
            })
        }
        nvmlUUIDType_t::NVML_UUID_TYPE_BINARY => {
            // SAFETY: the caller chose the binary member; any bytes are valid.
            let want = unsafe { u.value.bytes };
            find(device, |d| d.info.uuid == want)
        }
        _ => Err(nvmlReturn_t::INVALID_ARGUMENT),
    }
}

/// `nvmlDeviceGetHandleByPciBusId` and its `_v2`.
pub fn by_pci_bus_id(pci_bus_id: &CStr, device: Out<nvmlDevice_t>) -> Result<(), nvmlReturn_t> {
    let want = busid::parse(utf8(pci_bus_id)?).ok_or(nvmlReturn_t::INVALID_ARGUMENT)?;
    find(device, |d| d.pci == want)
}

pub fn by_serial(serial: &CStr, device: Out<nvmlDevice_t>) -> Result<(), nvmlReturn_t> {
    let want = utf8(serial)?.trim();
    if want.is_empty() {
        return Err(nvmlReturn_t::INVALID_ARGUMENT);
    }
    find(device, |d| {
        !d.info.serial.is_empty() && d.info.serial == want
    })
}

/// Which string of the inventory a `(device, char *, length)` getter
/// reports.
pub enum Text {
    Name,
    Uuid,
    /// GeForce boards have none: NVML_ERROR_NOT_SUPPORTED rather than "".
    Serial,
    VbiosVersion,
}

/// # Safety
/// `buf` must be writable for `length` bytes.
pub unsafe fn text(
    d: Device,
    buf: Out<c_char>,
    length: c_uint,
    which: Text,
) -> Result<(), nvmlReturn_t> {
    let info = d.info();
    let s: Cow<str> = match which {
        Text::Name => Cow::Borrowed(&info.name),
        Text::Uuid => Cow::Owned(d.guest().uuid_string()),
        Text::Serial if info.serial.is_empty() => {
            return Err(nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED)
        }
        Text::Serial => Cow::Borrowed(&info.serial),
        Text::VbiosVersion => Cow::Borrowed(&info.vbios_version),
    };
    // SAFETY: forwarded from the caller.
    unsafe { put_str(buf, length, &s) }
}

/// Which number of the inventory a `(device, T *)` getter reports.
pub enum Fact {
    Index,
    MinorNumber,
    Brand,
    Architecture,
    /// Handles we give out are whole GPUs, never MIG instances.
    IsMigDeviceHandle,
}

pub fn fact<T: Answer>(d: Device, out: Out<T>, which: Fact) -> Result<(), nvmlReturn_t> {
    let info = d.info();
    let v = match which {
        Fact::Index => d.guest().index,
        Fact::MinorNumber => info.minor_number,
        // The host reports the enumerator as the C int it is.
        Fact::Brand => info.brand as c_uint,
        Fact::Architecture => info.architecture,
        Fact::IsMigDeviceHandle => 0,
    };
    out.write(T::from_answer(v.into()));
    Ok(())
}

/// Writes a string into a fixed C char array, NUL-terminated and truncated
/// to fit (the arrays are sized for the longest PCI id form).
fn fill(dst: &mut [c_char], s: &str) {
    dst.fill(0);
    let room = dst.len() - 1;
    for (d, b) in dst.iter_mut().zip(s.bytes().take(room)) {
        *d = b as c_char;
    }
}

/// The guest-visible PCI identity; the host's own address never leaks, so
/// NVML, the driver API and sysfs all agree inside the guest.
fn guest_pci(d: &Device) -> nvmlPciInfo_t {
    let g = d.guest();
    let mut p = nvmlPciInfo_t {
        domain: g.pci.domain,
        bus: g.pci.bus.into(),
        device: g.pci.device.into(),
        pciDeviceId: g.info.pci_device_id,
        pciSubSystemId: g.info.pci_subsystem_id,
        ..Default::default()
    };
    // Real NVML prints both ids with upper-case hex digits.
    fill(&mut p.busIdLegacy, &g.pci.cuda_bus_id());
    fill(&mut p.busId, &g.pci.nvml_bus_id());
    p
}

/// `nvmlDeviceGetPciInfo_v2` and `_v3` (the same struct).
pub fn pci_info(d: Device, pci: Out<nvmlPciInfo_t>) -> Result<(), nvmlReturn_t> {
    pci.write(guest_pci(&d));
    Ok(())
}

/// The struct the unversioned `nvmlDeviceGetPciInfo` fills: binaries built
/// against old headers pass this smaller layout (a 16-byte `busId`, then the
/// same five fields, then reserved words), so the v2 struct must not be
/// written into it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PciInfoV1 {
    bus_id: [c_char; 16],
    domain: c_uint,
    bus: c_uint,
    device: c_uint,
    pci_device_id: c_uint,
    pci_subsystem_id: c_uint,
    reserved: [c_uint; 4],
}

/// # Safety
/// `pci` must be writable for the legacy struct, which the v2+
/// `nvmlPciInfo_t` a current header declares is larger than.
pub unsafe fn pci_info_v1(d: Device, pci: Out<nvmlPciInfo_t>) -> Result<(), nvmlReturn_t> {
    let p = guest_pci(&d);
    let mut v1 = PciInfoV1 {
        bus_id: [0; 16],
        domain: p.domain,
        bus: p.bus,
        device: p.device,
        pci_device_id: p.pciDeviceId,
        pci_subsystem_id: p.pciSubSystemId,
        reserved: [0; 4],
    };
    fill(&mut v1.bus_id, &d.guest().pci.cuda_bus_id());
    // SAFETY: non-null and writable for the legacy struct per the caller,
    // which is a prefix-sized subset of the declared one.
    unsafe { pci.as_ptr().cast::<PciInfoV1>().write_unaligned(v1) };
    Ok(())
}

pub fn compute_capability(
    d: Device,
    major: Out<c_int>,
    minor: Out<c_int>,
) -> Result<(), nvmlReturn_t> {
    let (ma, mi) = d.info().nvml_cc;
    major.write(ma);
    minor.write(mi);
    Ok(())
}

/// Driver models are a Windows notion; Linux NVML answers NOT_SUPPORTED
/// (explicitly here, so it is not logged as a vgpu gap). The pointers are
/// not looked at, so they are taken raw.
pub fn driver_model(
    _d: Device,
    _current: *mut nvmlDriverModel_t,
    _pending: *mut nvmlDriverModel_t,
) -> Result<(), nvmlReturn_t> {
    Err(nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_map_back_to_their_index() {
        for i in [0, 1, MAX_DEVICES - 1] {
            assert_eq!(slot_of(handle_of(i)), Some(i));
        }
        assert_eq!(slot_of(std::ptr::null_mut()), None);
        let past = (SLOTS.as_ptr() as usize + MAX_DEVICES) as nvmlDevice_t;
        assert_eq!(slot_of(past), None);
        let before = (SLOTS.as_ptr() as usize).wrapping_sub(1) as nvmlDevice_t;
        assert_eq!(slot_of(before), None);
    }

    #[test]
    fn legacy_pci_struct_is_a_prefix_of_the_current_one() {
        assert_eq!(std::mem::size_of::<PciInfoV1>(), 52);
        assert!(std::mem::size_of::<PciInfoV1>() <= std::mem::size_of::<nvmlPciInfo_t>());
        assert_eq!(
            std::mem::offset_of!(PciInfoV1, domain),
            std::mem::offset_of!(nvmlPciInfo_t, domain)
        );
        assert_eq!(
            std::mem::offset_of!(PciInfoV1, pci_subsystem_id),
            std::mem::offset_of!(nvmlPciInfo_t, pciSubSystemId)
        );
    }

    #[test]
    fn fixed_array_fill_terminates() {
        let mut a = [1 as c_char; 4];
        fill(&mut a, "abcdef");
        assert_eq!(a, [b'a' as c_char, b'b' as c_char, b'c' as c_char, 0]);
    }

    #[test]
    fn uninitialized_calls_say_so() {
        let mut n: c_uint = 0;
        // SAFETY: a valid local.
        let out = unsafe { vgpu_ffi::from_cuda::<_, Out<c_uint>, nvmlReturn_t>(&mut n as *mut _) };
        assert_eq!(
            count(out.unwrap()),
            Err(nvmlReturn_t::NVML_ERROR_UNINITIALIZED)
        );
        assert!(matches!(
            Device::resolve(handle_of(0)),
            Err(nvmlReturn_t::NVML_ERROR_UNINITIALIZED)
        ));
    }
}
