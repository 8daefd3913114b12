//! The NVML subset: inventory, identity and live telemetry of the emulated
//! board.

use crate::ffi::{read_c_string, write_c_string, write_out};
use crate::{context, device, identity, memory, profile, sensors};
use cuda_types::nvml::*;
use parking_lot::Mutex;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong};

const INVALID_ARGUMENT: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
const INSUFFICIENT_SIZE: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE;
const NOT_FOUND: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_NOT_FOUND;
const NOT_SUPPORTED: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED;

type R = Result<(), nvmlReturn_t>;

/// nvmlInit / nvmlShutdown pair up: the library stays initialized until the
/// last shutdown.
static REFCOUNT: Mutex<u32> = Mutex::new(0);

/// The one device's handle is the address of this static: unique, stable and
/// never dereferenced.
static DEVICE0: u8 = 0;

fn handle0() -> nvmlDevice_t {
    std::ptr::addr_of!(DEVICE0) as nvmlDevice_t
}

fn ensure_init() -> R {
    if *REFCOUNT.lock() > 0 {
        Ok(())
    } else {
        Err(nvmlReturn_t::NVML_ERROR_UNINITIALIZED)
    }
}

/// An initialized library and a handle this library gave out.
fn check(device: nvmlDevice_t) -> R {
    ensure_init()?;
    if device == handle0() {
        Ok(())
    } else {
        Err(INVALID_ARGUMENT)
    }
}

/// # Safety: `p` null or writable.
unsafe fn out<T>(p: *mut T, v: T) -> R {
    // SAFETY: forwarded with the caller's guarantee.
    unsafe { write_out(p, v, INVALID_ARGUMENT) }
}

/// NVML's string protocol: a too-small buffer is INSUFFICIENT_SIZE.
unsafe fn out_str(buf: *mut c_char, len: c_uint, s: &str) -> R {
    if buf.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: the caller's buffer holds `len` bytes.
    unsafe { write_c_string(buf, len as usize, s) }.map_err(|_| INSUFFICIENT_SIZE)
}

/// `nvmlInitWithFlags`, and `nvmlInit` with no flags: NO_GPUS (1) and
/// NO_ATTACH (2) change nothing for a software device.
pub fn init(_flags: c_uint) -> R {
    *REFCOUNT.lock() += 1;
    Ok(())
}

pub fn shutdown() -> R {
    let mut n = REFCOUNT.lock();
    if *n == 0 {
        return Err(nvmlReturn_t::NVML_ERROR_UNINITIALIZED);
    }
    *n -= 1;
    Ok(())
}

pub unsafe fn system_get_driver_version(buf: *mut c_char, len: c_uint) -> R {
    ensure_init()?;
    // SAFETY: the caller's buffer holds `len` bytes.
    unsafe { out_str(buf, len, profile::DRIVER_VERSION) }
}

pub unsafe fn system_get_nvml_version(buf: *mut c_char, len: c_uint) -> R {
    // NVML answers this one even before nvmlInit.
    // SAFETY: the caller's buffer holds `len` bytes.
    unsafe { out_str(buf, len, profile::NVML_VERSION) }
}

pub unsafe fn system_get_cuda_driver_version(v: *mut c_int) -> R {
    // SAFETY: the caller passes null or a writable int.
    unsafe { out(v, profile::cuda_driver_version()) }
}

pub unsafe fn device_get_count(count: *mut c_uint) -> R {
    ensure_init()?;
    // SAFETY: the caller passes null or a writable uint.
    unsafe { out(count, device::DEVICE_COUNT as c_uint) }
}

pub unsafe fn handle_by_index(index: c_uint, dev: *mut nvmlDevice_t) -> R {
    ensure_init()?;
    if dev.is_null() || index >= device::DEVICE_COUNT as c_uint {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: checked non-null; the caller passes a writable handle slot.
    unsafe { out(dev, handle0()) }
}

/// The lookups by identifier share their protocol: a bad argument is
/// INVALID_ARGUMENT, a well-formed one that names no device NOT_FOUND.
unsafe fn handle_by(
    key: *const c_char,
    dev: *mut nvmlDevice_t,
    matches: impl Fn(&str) -> bool,
) -> R {
    ensure_init()?;
    if dev.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: the caller passes null or a NUL-terminated string.
    let key = unsafe { read_c_string(key) }.ok_or(INVALID_ARGUMENT)?;
    if !matches(key.trim()) {
        return Err(NOT_FOUND);
    }
    // SAFETY: checked non-null; the caller passes a writable handle slot.
    unsafe { out(dev, handle0()) }
}

pub unsafe fn handle_by_uuid(uuid: *const c_char, dev: *mut nvmlDevice_t) -> R {
    let ours = identity::uuid_string(&identity::device0().uuid);
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { handle_by(uuid, dev, |s| s.eq_ignore_ascii_case(&ours)) }
}

pub unsafe fn handle_by_pci_bus_id(id: *const c_char, dev: *mut nvmlDevice_t) -> R {
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { handle_by(id, dev, device::is_our_pci_address) }
}

pub unsafe fn handle_by_serial(serial: *const c_char, dev: *mut nvmlDevice_t) -> R {
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { handle_by(serial, dev, |s| s == identity::device0().serial) }
}

pub unsafe fn get_name(d: nvmlDevice_t, buf: *mut c_char, len: c_uint) -> R {
    check(d)?;
    // SAFETY: the caller's buffer holds `len` bytes.
    unsafe { out_str(buf, len, profile::NAME) }
}

pub unsafe fn get_uuid(d: nvmlDevice_t, buf: *mut c_char, len: c_uint) -> R {
    check(d)?;
    let s = identity::uuid_string(&identity::device0().uuid);
    // SAFETY: the caller's buffer holds `len` bytes.
    unsafe { out_str(buf, len, &s) }
}

pub unsafe fn get_serial(d: nvmlDevice_t, buf: *mut c_char, len: c_uint) -> R {
    check(d)?;
    // SAFETY: the caller's buffer holds `len` bytes.
    unsafe { out_str(buf, len, &identity::device0().serial) }
}

pub unsafe fn get_index(d: nvmlDevice_t, index: *mut c_uint) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable uint.
    unsafe { out(index, 0) }
}

/// The N of /dev/nvidiaN.
pub unsafe fn get_minor_number(d: nvmlDevice_t, minor: *mut c_uint) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable uint.
    unsafe { out(minor, 0) }
}

fn c_chars<const N: usize>(s: &str) -> [c_char; N] {
    let mut a = [0 as c_char; N];
    for (dst, &b) in a.iter_mut().zip(s.as_bytes().iter().take(N - 1)) {
        *dst = b as c_char;
    }
    a
}

fn pci_info() -> nvmlPciInfo_t {
    let (d, b, dv) = (profile::PCI_DOMAIN, profile::PCI_BUS, profile::PCI_DEVICE);
    nvmlPciInfo_t {
        busIdLegacy: c_chars(&format!("{d:04X}:{b:02X}:{dv:02X}.0")),
        domain: d,
        bus: b,
        device: dv,
        pciDeviceId: profile::PCI_DEVICE_ID,
        pciSubSystemId: profile::PCI_SUBSYSTEM_ID,
        busId: c_chars(&format!("{d:08X}:{b:02X}:{dv:02X}.0")),
    }
}

/// Every version of the call fills the same current struct layout.
pub unsafe fn get_pci_info(d: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable nvmlPciInfo_t.
    unsafe { out(pci, pci_info()) }
}

struct MemoryView {
    total: u64,
    reserved: u64,
    used: u64,
    free: u64,
}

fn memory_view() -> MemoryView {
    let used = memory::device_bytes_in_use();
    MemoryView {
        total: profile::TOTAL_MEMORY,
        reserved: profile::RESERVED_MEMORY,
        used,
        free: memory::CAPACITY.saturating_sub(used),
    }
}

/// v1 has no `reserved` field and counts the driver's share as used.
pub unsafe fn get_memory_info(d: nvmlDevice_t, mem: *mut nvmlMemory_t) -> R {
    check(d)?;
    let m = memory_view();
    let v = nvmlMemory_t {
        total: m.total,
        free: m.free,
        used: m.used + m.reserved,
    };
    // SAFETY: the caller passes null or a writable nvmlMemory_t.
    unsafe { out(mem, v) }
}

/// `nvmlMemory_v2` from nvml.h: NVML_STRUCT_VERSION(Memory, 2).
pub const NVML_MEMORY_V2: c_uint = std::mem::size_of::<nvmlMemory_v2_t>() as c_uint | (2 << 24);
/// `nvmlTemperature_v1`: NVML_STRUCT_VERSION(Temperature, 1).
pub const NVML_TEMPERATURE_V1: c_uint =
    std::mem::size_of::<nvmlTemperature_t>() as c_uint | (1 << 24);

pub unsafe fn get_memory_info_v2(d: nvmlDevice_t, mem: *mut nvmlMemory_v2_t) -> R {
    check(d)?;
    if mem.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null; the caller passes a readable struct whose first field
    // is the version the caller set.
    let version = unsafe { std::ptr::addr_of!((*mem).version).read_unaligned() };
    if version != NVML_MEMORY_V2 {
        return Err(nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    let m = memory_view();
    let v = nvmlMemory_v2_t {
        version,
        total: m.total,
        reserved: m.reserved,
        free: m.free,
        used: m.used,
    };
    // SAFETY: checked non-null; writable per the caller.
    unsafe { out(mem, v) }
}

pub unsafe fn get_cuda_compute_capability(
    d: nvmlDevice_t,
    major: *mut c_int,
    minor: *mut c_int,
) -> R {
    check(d)?;
    if major.is_null() || minor.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: both checked non-null; writable per the caller.
    unsafe {
        out(major, profile::CC_MAJOR)?;
        out(minor, profile::CC_MINOR)
    }
}

/// Datacenter boards since A100 report the plain "NVIDIA" brand.
pub unsafe fn get_brand(d: nvmlDevice_t, brand: *mut nvmlBrandType_t) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable enum.
    unsafe { out(brand, nvmlBrandType_t::NVML_BRAND_NVIDIA) }
}

pub unsafe fn get_architecture(d: nvmlDevice_t, arch: *mut nvmlDeviceArchitecture_t) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable uint.
    unsafe { out(arch, NVML_DEVICE_ARCH_HOPPER) }
}

fn temperature_of(sensor: nvmlTemperatureSensors_t) -> Result<u32, nvmlReturn_t> {
    if sensor == nvmlTemperatureSensors_t::NVML_TEMPERATURE_GPU {
        Ok(sensors::temperature_c())
    } else if sensor.0 < nvmlTemperatureSensors_t::NVML_TEMPERATURE_COUNT.0 {
        Err(NOT_SUPPORTED)
    } else {
        Err(INVALID_ARGUMENT)
    }
}

pub unsafe fn get_temperature(
    d: nvmlDevice_t,
    sensor: nvmlTemperatureSensors_t,
    temp: *mut c_uint,
) -> R {
    check(d)?;
    if temp.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let t = temperature_of(sensor)?;
    // SAFETY: checked non-null; writable per the caller.
    unsafe { out(temp, t) }
}

pub unsafe fn get_temperature_v(d: nvmlDevice_t, t: *mut nvmlTemperature_t) -> R {
    check(d)?;
    if t.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null; the caller filled in version and sensor type.
    let req = unsafe { t.read_unaligned() };
    if req.version != NVML_TEMPERATURE_V1 {
        return Err(nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    let v = temperature_of(req.sensorType)?;
    let reply = nvmlTemperature_t {
        temperature: v as c_int,
        ..req
    };
    // SAFETY: checked non-null; writable per the caller.
    unsafe { out(t, reply) }
}

pub unsafe fn get_temperature_threshold(
    d: nvmlDevice_t,
    kind: nvmlTemperatureThresholds_t,
    temp: *mut c_uint,
) -> R {
    use nvmlTemperatureThresholds_t as T;
    check(d)?;
    if temp.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // H100 PCIe, from `nvidia-smi -q`.
    let v = match kind {
        T::NVML_TEMPERATURE_THRESHOLD_SHUTDOWN => 92,
        T::NVML_TEMPERATURE_THRESHOLD_SLOWDOWN => 89,
        T::NVML_TEMPERATURE_THRESHOLD_GPU_MAX => 87,
        T::NVML_TEMPERATURE_THRESHOLD_MEM_MAX => 95,
        k if k.0 < T::NVML_TEMPERATURE_THRESHOLD_COUNT.0 => return Err(NOT_SUPPORTED),
        _ => return Err(INVALID_ARGUMENT),
    };
    // SAFETY: checked non-null; writable per the caller.
    unsafe { out(temp, v) }
}

pub unsafe fn get_power_usage(d: nvmlDevice_t, mw: *mut c_uint) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable uint.
    unsafe { out(mw, sensors::power_mw()) }
}

/// The limit as set, enforced and by default: all the TDP.
pub unsafe fn get_power_limit(d: nvmlDevice_t, mw: *mut c_uint) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable uint.
    unsafe { out(mw, profile::POWER_LIMIT_MW) }
}

pub unsafe fn get_power_limit_constraints(
    d: nvmlDevice_t,
    min: *mut c_uint,
    max: *mut c_uint,
) -> R {
    check(d)?;
    if min.is_null() || max.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: both checked non-null; writable per the caller.
    unsafe {
        out(min, profile::POWER_LIMIT_MIN_MW)?;
        out(max, profile::POWER_LIMIT_MW)
    }
}

pub unsafe fn get_utilization_rates(d: nvmlDevice_t, u: *mut nvmlUtilization_t) -> R {
    check(d)?;
    let now = sensors::utilization();
    // SAFETY: the caller passes null or a writable struct.
    unsafe {
        out(
            u,
            nvmlUtilization_t {
                gpu: now.gpu,
                memory: now.memory,
            },
        )
    }
}

fn max_clock(kind: nvmlClockType_t) -> Result<u32, nvmlReturn_t> {
    use nvmlClockType_t as C;
    match kind {
        C::NVML_CLOCK_GRAPHICS | C::NVML_CLOCK_SM => Ok(profile::MAX_GRAPHICS_CLOCK_MHZ),
        C::NVML_CLOCK_MEM => Ok(profile::MAX_MEMORY_CLOCK_MHZ),
        C::NVML_CLOCK_VIDEO => Ok(profile::MAX_VIDEO_CLOCK_MHZ),
        _ => Err(INVALID_ARGUMENT),
    }
}

fn current_clock(kind: nvmlClockType_t) -> Result<u32, nvmlReturn_t> {
    use nvmlClockType_t as C;
    let max = max_clock(kind)?;
    // HBM runs at one clock; the others drop to idle values between bursts.
    Ok(match kind {
        C::NVML_CLOCK_MEM => max,
        _ if sensors::boosted() => max,
        C::NVML_CLOCK_VIDEO => profile::IDLE_VIDEO_CLOCK_MHZ,
        _ => profile::IDLE_GRAPHICS_CLOCK_MHZ,
    })
}

pub unsafe fn get_clock_info(d: nvmlDevice_t, kind: nvmlClockType_t, mhz: *mut c_uint) -> R {
    check(d)?;
    if mhz.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let v = current_clock(kind)?;
    // SAFETY: checked non-null; writable per the caller.
    unsafe { out(mhz, v) }
}

pub unsafe fn get_max_clock_info(d: nvmlDevice_t, kind: nvmlClockType_t, mhz: *mut c_uint) -> R {
    check(d)?;
    if mhz.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let v = max_clock(kind)?;
    // SAFETY: checked non-null; writable per the caller.
    unsafe { out(mhz, v) }
}

pub unsafe fn get_clock(
    d: nvmlDevice_t,
    kind: nvmlClockType_t,
    id: nvmlClockId_t,
    mhz: *mut c_uint,
) -> R {
    use nvmlClockId_t as I;
    check(d)?;
    if mhz.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let v = match id {
        I::NVML_CLOCK_ID_CURRENT => current_clock(kind)?,
        I::NVML_CLOCK_ID_APP_CLOCK_TARGET
        | I::NVML_CLOCK_ID_APP_CLOCK_DEFAULT
        | I::NVML_CLOCK_ID_CUSTOMER_BOOST_MAX => max_clock(kind)?,
        _ => return Err(INVALID_ARGUMENT),
    };
    // SAFETY: checked non-null; writable per the caller.
    unsafe { out(mhz, v) }
}

/// Datacenter Hopper boards stay in P0 while the driver is loaded.
pub unsafe fn get_performance_state(d: nvmlDevice_t, p: *mut nvmlPstates_t) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable enum.
    unsafe { out(p, nvmlPstates_t::NVML_PSTATE_0) }
}

unsafe fn out_state(d: nvmlDevice_t, p: *mut nvmlEnableState_t, v: nvmlEnableState_t) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable enum.
    unsafe { out(p, v) }
}

pub unsafe fn get_persistence_mode(d: nvmlDevice_t, p: *mut nvmlEnableState_t) -> R {
    // SAFETY: forwarded with the caller's guarantee.
    unsafe { out_state(d, p, nvmlEnableState_t::NVML_FEATURE_DISABLED) }
}

/// No display engine output on a datacenter board.
pub unsafe fn get_display_mode(d: nvmlDevice_t, p: *mut nvmlEnableState_t) -> R {
    // SAFETY: forwarded with the caller's guarantee.
    unsafe { out_state(d, p, nvmlEnableState_t::NVML_FEATURE_DISABLED) }
}

pub unsafe fn get_compute_mode(d: nvmlDevice_t, p: *mut nvmlComputeMode_t) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable enum.
    unsafe { out(p, nvmlComputeMode_t::NVML_COMPUTEMODE_DEFAULT) }
}

pub unsafe fn get_mig_mode(d: nvmlDevice_t, current: *mut c_uint, pending: *mut c_uint) -> R {
    check(d)?;
    if current.is_null() || pending.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: both checked non-null; writable per the caller.
    unsafe {
        out(current, NVML_DEVICE_MIG_DISABLE)?;
        out(pending, NVML_DEVICE_MIG_DISABLE)
    }
}

pub unsafe fn is_mig_device_handle(d: nvmlDevice_t, is_mig: *mut c_uint) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable uint.
    unsafe { out(is_mig, 0) }
}

pub unsafe fn get_ecc_mode(
    d: nvmlDevice_t,
    current: *mut nvmlEnableState_t,
    pending: *mut nvmlEnableState_t,
) -> R {
    check(d)?;
    if current.is_null() || pending.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: both checked non-null; writable per the caller.
    unsafe {
        out(current, nvmlEnableState_t::NVML_FEATURE_ENABLED)?;
        out(pending, nvmlEnableState_t::NVML_FEATURE_ENABLED)
    }
}

pub unsafe fn get_total_ecc_errors(
    d: nvmlDevice_t,
    kind: nvmlMemoryErrorType_t,
    counter: nvmlEccCounterType_t,
    count: *mut c_ulonglong,
) -> R {
    check(d)?;
    if count.is_null()
        || kind.0 >= nvmlMemoryErrorType_t::NVML_MEMORY_ERROR_TYPE_COUNT.0
        || counter.0 >= nvmlEccCounterType_t::NVML_ECC_COUNTER_TYPE_COUNT.0
    {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: checked non-null; writable per the caller.
    unsafe { out(count, 0) }
}

/// NVENC/NVDEC are never used by the software GPU: 0 over NVML's usual
/// sampling period.
pub unsafe fn get_codec_utilization(d: nvmlDevice_t, u: *mut c_uint, period_us: *mut c_uint) -> R {
    check(d)?;
    if u.is_null() || period_us.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: both checked non-null; writable per the caller.
    unsafe {
        out(u, 0)?;
        out(period_us, 167_000)
    }
}

pub unsafe fn get_memory_bus_width(d: nvmlDevice_t, w: *mut c_uint) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable uint.
    unsafe { out(w, 5120) }
}

/// PCIe Gen5 x16.
pub unsafe fn get_pcie_generation(d: nvmlDevice_t, g: *mut c_uint) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable uint.
    unsafe { out(g, 5) }
}

pub unsafe fn get_pcie_width(d: nvmlDevice_t, w: *mut c_uint) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable uint.
    unsafe { out(w, 16) }
}

/// 114 SMs × 128 FP32 cores.
pub unsafe fn get_num_gpu_cores(d: nvmlDevice_t, n: *mut c_uint) -> R {
    check(d)?;
    // SAFETY: the caller passes null or a writable uint.
    unsafe { out(n, profile::SM_COUNT as c_uint * 128) }
}

/// `nvmlClocksEventReasonGpuIdle` while nothing runs, none otherwise.
pub unsafe fn get_clocks_event_reasons(d: nvmlDevice_t, r: *mut c_ulonglong) -> R {
    check(d)?;
    let reasons = if sensors::boosted() { 0 } else { 0x1 };
    // SAFETY: the caller passes null or a writable u64.
    unsafe { out(r, reasons) }
}

// ---- processes --------------------------------------------------------------

/// This process, when it holds a live context: the only client the software
/// GPU can see.
fn compute_processes() -> Vec<(u32, u64)> {
    if context::any_alive() {
        vec![(std::process::id(), memory::device_bytes_in_use())]
    } else {
        Vec::new()
    }
}

/// NVML's sizing protocol: `*count` in is the capacity of `infos`; when the
/// list does not fit, `*count` out is the size needed and the status
/// INSUFFICIENT_SIZE (asking with `*count == 0` is how callers size it).
unsafe fn fill_processes<T>(
    d: nvmlDevice_t,
    count: *mut c_uint,
    infos: *mut T,
    list: &[(u32, u64)],
    make: impl Fn(u32, u64) -> T,
) -> R {
    check(d)?;
    if count.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null; readable and writable per the caller.
    let capacity = unsafe { count.read_unaligned() } as usize;
    let n = list.len() as c_uint;
    if capacity < list.len() {
        // SAFETY: as above.
        unsafe { count.write_unaligned(n) };
        return Err(INSUFFICIENT_SIZE);
    }
    if !list.is_empty() && infos.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    for (i, &(pid, mem)) in list.iter().enumerate() {
        // SAFETY: `i < list.len() <= capacity`, the caller's array length.
        unsafe { infos.add(i).write_unaligned(make(pid, mem)) };
    }
    // SAFETY: as above.
    unsafe { count.write_unaligned(n) };
    Ok(())
}

fn v1(pid: u32, mem: u64) -> nvmlProcessInfo_v1_t {
    nvmlProcessInfo_v1_t {
        pid,
        usedGpuMemory: mem,
    }
}

/// MIG is off, so the instance ids are NVML_VALUE_NOT_AVAILABLE.
fn v2(pid: u32, mem: u64) -> nvmlProcessInfo_v2_t {
    nvmlProcessInfo_v2_t {
        pid,
        usedGpuMemory: mem,
        gpuInstanceId: u32::MAX,
        computeInstanceId: u32::MAX,
    }
}

pub unsafe fn compute_processes_v1(
    d: nvmlDevice_t,
    c: *mut c_uint,
    i: *mut nvmlProcessInfo_v1_t,
) -> R {
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { fill_processes(d, c, i, &compute_processes(), v1) }
}

pub unsafe fn compute_processes_v2(
    d: nvmlDevice_t,
    c: *mut c_uint,
    i: *mut nvmlProcessInfo_v2_t,
) -> R {
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { fill_processes(d, c, i, &compute_processes(), v2) }
}

/// The software GPU has no graphics clients.
pub unsafe fn graphics_processes_v1(
    d: nvmlDevice_t,
    c: *mut c_uint,
    i: *mut nvmlProcessInfo_v1_t,
) -> R {
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { fill_processes(d, c, i, &[], v1) }
}

pub unsafe fn graphics_processes_v2(
    d: nvmlDevice_t,
    c: *mut c_uint,
    i: *mut nvmlProcessInfo_v2_t,
) -> R {
    // SAFETY: forwarded with the caller's guarantees.
    unsafe { fill_processes(d, c, i, &[], v2) }
}
