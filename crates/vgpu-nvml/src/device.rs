//! Device enumeration, handles, lookups and the static facts of the
//! inventory (answered locally, no round trip).
//!
//! An `nvmlDevice_t` is the address of one byte of [`SLOTS`], the byte at the
//! device's index: stable for the life of the process, the same for every
//! lookup of one device (clients compare handles), and checkable — any
//! pointer outside the array, or past the device count, is rejected.

use crate::busid;
use crate::ffi::{arg_str, copy_str, put, INVALID_ARGUMENT};
use crate::init;
use cuda_types::nvml::*;
use std::ffi::{c_char, c_int, c_uint};
use std::sync::Arc;
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

/// A validated handle: the inventory it belongs to and its index there.
pub struct Dev {
    inv: Arc<GuestInventory>,
    index: usize,
}

impl Dev {
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

/// Checks a handle the caller passed: NVML must be initialized and the
/// handle one we gave out for a device that exists.
pub fn resolve(h: nvmlDevice_t) -> Result<Dev, nvmlReturn_t> {
    let inv = init::inventory()?;
    match slot_of(h) {
        Some(index) if index < inv.devices.len() => Ok(Dev { inv, index }),
        _ => Err(INVALID_ARGUMENT),
    }
}

fn visible_count(inv: &GuestInventory) -> usize {
    inv.devices.len().min(MAX_DEVICES)
}

/// # Safety
/// `device_count` must be null or writable.
pub unsafe fn count(device_count: *mut c_uint) -> Result<(), nvmlReturn_t> {
    let inv = init::inventory()?;
    // SAFETY: forwarded from the caller.
    unsafe { put(device_count, visible_count(&inv) as c_uint) }
}

/// # Safety
/// `device` must be null or writable.
pub unsafe fn by_index(index: c_uint, device: *mut nvmlDevice_t) -> Result<(), nvmlReturn_t> {
    let inv = init::inventory()?;
    if index as usize >= visible_count(&inv) {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: forwarded from the caller.
    unsafe { put(device, handle_of(index as usize)) }
}

/// Hands out the handle of the first device `matches` accepts.
///
/// # Safety
/// `device` must be null or writable.
unsafe fn find(
    device: *mut nvmlDevice_t,
    matches: impl Fn(&GuestDevice) -> bool,
) -> Result<(), nvmlReturn_t> {
    let inv = init::inventory()?;
    if device.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let i = inv.devices[..visible_count(&inv)]
        .iter()
        .position(matches)
        .ok_or(nvmlReturn_t::NVML_ERROR_NOT_FOUND)?;
    // SAFETY: forwarded from the caller.
    unsafe { put(device, handle_of(i)) }
}

/// # Safety
/// `uuid` must be null or a C string; `device` null or writable.
pub unsafe fn by_uuid(uuid: *const c_char, device: *mut nvmlDevice_t) -> Result<(), nvmlReturn_t> {
    init::inventory()?;
    // SAFETY: forwarded from the caller.
    let want = unsafe { arg_str(uuid) }?.trim();
    // SAFETY: forwarded from the caller.
    unsafe { find(device, |d| d.uuid_string().eq_ignore_ascii_case(want)) }
}

/// `nvmlUUID_v1`: the struct size with the version in the top byte.
const UUID_V1: c_uint = std::mem::size_of::<nvmlUUID_v1_t>() as c_uint | (1 << 24);

/// # Safety
/// `uuid` must be null or a readable `nvmlUUID_t`; `device` null or writable.
pub unsafe fn by_uuid_v(
    uuid: *const nvmlUUID_t,
    device: *mut nvmlDevice_t,
) -> Result<(), nvmlReturn_t> {
    init::inventory()?;
    if uuid.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null and readable per the caller.
    let u = unsafe { uuid.read_unaligned() };
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
            let want = std::str::from_utf8(&bytes).map_err(|_| INVALID_ARGUMENT)?;
            // SAFETY: forwarded from the caller.
            unsafe {
                find(device, |d| {
                    d.uuid_string().eq_ignore_ascii_case(want.trim())
                })
            }
        }
        nvmlUUIDType_t::NVML_UUID_TYPE_BINARY => {
            // SAFETY: the caller chose the binary member; any bytes are valid.
            let want = unsafe { u.value.bytes };
            // SAFETY: forwarded from the caller.
            unsafe { find(device, |d| d.info.uuid == want) }
        }
        _ => Err(INVALID_ARGUMENT),
    }
}

/// # Safety
/// `pci_bus_id` must be null or a C string; `device` null or writable.
pub unsafe fn by_pci_bus_id(
    pci_bus_id: *const c_char,
    device: *mut nvmlDevice_t,
) -> Result<(), nvmlReturn_t> {
    init::inventory()?;
    // SAFETY: forwarded from the caller.
    let text = unsafe { arg_str(pci_bus_id) }?;
    let want = busid::parse(text).ok_or(INVALID_ARGUMENT)?;
    // SAFETY: forwarded from the caller.
    unsafe { find(device, |d| d.pci == want) }
}

/// # Safety
/// `serial` must be null or a C string; `device` null or writable.
pub unsafe fn by_serial(
    serial: *const c_char,
    device: *mut nvmlDevice_t,
) -> Result<(), nvmlReturn_t> {
    init::inventory()?;
    // SAFETY: forwarded from the caller.
    let want = unsafe { arg_str(serial) }?.trim();
    if want.is_empty() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        find(device, |d| {
            !d.info.serial.is_empty() && d.info.serial == want
        })
    }
}

/// # Safety
/// `name` must be null or writable for `length` bytes.
pub unsafe fn name(
    device: nvmlDevice_t,
    name: *mut c_char,
    length: c_uint,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    // SAFETY: forwarded from the caller.
    unsafe { copy_str(name, length, &d.info().name) }
}

/// # Safety
/// `uuid` must be null or writable for `length` bytes.
pub unsafe fn uuid(
    device: nvmlDevice_t,
    uuid: *mut c_char,
    length: c_uint,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    // SAFETY: forwarded from the caller.
    unsafe { copy_str(uuid, length, &d.guest().uuid_string()) }
}

/// # Safety
/// `serial` must be null or writable for `length` bytes.
pub unsafe fn serial(
    device: nvmlDevice_t,
    serial: *mut c_char,
    length: c_uint,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    if d.info().serial.is_empty() {
        // GeForce boards have no serial; NVML says so rather than "".
        return Err(nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED);
    }
    // SAFETY: forwarded from the caller.
    unsafe { copy_str(serial, length, &d.info().serial) }
}

/// # Safety
/// `version` must be null or writable for `length` bytes.
pub unsafe fn vbios_version(
    device: nvmlDevice_t,
    version: *mut c_char,
    length: c_uint,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    // SAFETY: forwarded from the caller.
    unsafe { copy_str(version, length, &d.info().vbios_version) }
}

/// # Safety
/// `index` must be null or writable.
pub unsafe fn index(device: nvmlDevice_t, index: *mut c_uint) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    // SAFETY: forwarded from the caller.
    unsafe { put(index, d.guest().index) }
}

/// # Safety
/// `minor_number` must be null or writable.
pub unsafe fn minor_number(
    device: nvmlDevice_t,
    minor_number: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    // SAFETY: forwarded from the caller.
    unsafe { put(minor_number, d.info().minor_number) }
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
fn guest_pci(d: &Dev) -> nvmlPciInfo_t {
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

/// # Safety
/// `pci` must be null or writable for an `nvmlPciInfo_t`.
pub unsafe fn pci_info(device: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    // SAFETY: forwarded from the caller.
    unsafe { put(pci, guest_pci(&d)) }
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
/// `pci` must be null or writable for the legacy struct, which the v2+
/// `nvmlPciInfo_t` a current header declares is larger than.
pub unsafe fn pci_info_v1(
    device: nvmlDevice_t,
    pci: *mut nvmlPciInfo_t,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
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
    // SAFETY: forwarded from the caller; the legacy struct is a prefix-sized
    // subset of the declared one.
    unsafe { put(pci.cast::<PciInfoV1>(), v1) }
}

/// # Safety
/// `major`, `minor` must be null or writable.
pub unsafe fn compute_capability(
    device: nvmlDevice_t,
    major: *mut c_int,
    minor: *mut c_int,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    if major.is_null() || minor.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let (ma, mi) = d.info().nvml_cc;
    // SAFETY: both non-null and writable per the caller.
    unsafe {
        put(major, ma)?;
        put(minor, mi)
    }
}

/// # Safety
/// `type_` must be null or writable.
pub unsafe fn brand(device: nvmlDevice_t, type_: *mut nvmlBrandType_t) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    // SAFETY: forwarded from the caller.
    unsafe { put(type_, nvmlBrandType_t(d.info().brand as c_uint)) }
}

/// # Safety
/// `arch` must be null or writable.
pub unsafe fn architecture(
    device: nvmlDevice_t,
    arch: *mut nvmlDeviceArchitecture_t,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    // SAFETY: forwarded from the caller.
    unsafe { put(arch, d.info().architecture) }
}

/// Handles we give out are whole GPUs, never MIG instances.
///
/// # Safety
/// `is_mig_device` must be null or writable.
pub unsafe fn is_mig_device_handle(
    device: nvmlDevice_t,
    is_mig_device: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    resolve(device)?;
    // SAFETY: forwarded from the caller.
    unsafe { put(is_mig_device, 0) }
}

/// Driver models are a Windows notion; Linux NVML answers NOT_SUPPORTED
/// (explicitly here, so it is not logged as a vgpu gap).
pub fn driver_model(
    device: nvmlDevice_t,
    _current: *mut nvmlDriverModel_t,
    _pending: *mut nvmlDriverModel_t,
) -> Result<(), nvmlReturn_t> {
    resolve(device)?;
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
        let mut n = 0;
        // SAFETY: a valid local.
        assert_eq!(
            unsafe { count(&mut n) },
            Err(nvmlReturn_t::NVML_ERROR_UNINITIALIZED)
        );
        assert!(matches!(
            resolve(handle_of(0)),
            Err(nvmlReturn_t::NVML_ERROR_UNINITIALIZED)
        ));
    }
}
