//! The NVML subset: inventory, identity and live telemetry of the emulated
//! boards. NVML numbers every device of the profile in driver order and
//! ignores `CUDA_VISIBLE_DEVICES`, as the real library does. The sensors
//! (temperature, power, utilization) are one board's, shared by all.

use crate::ffi::nvml_string;
use crate::{context, device, identity, memory, profile, sensors};
use cuda_types::nvml::*;
use parking_lot::Mutex;
use std::ffi::{c_char, c_int, c_uint, c_ulonglong, CStr};
use vgpu_ffi::{FromCuda, Out};

const INVALID_ARGUMENT: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT;
const INSUFFICIENT_SIZE: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE;
const NOT_FOUND: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_NOT_FOUND;
const NOT_SUPPORTED: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED;

type R = Result<(), nvmlReturn_t>;

/// nvmlInit / nvmlShutdown pair up: the library stays initialized until the
/// last shutdown.
static REFCOUNT: Mutex<u32> = Mutex::new(0);

/// A device's handle is the address of its byte of this static: unique,
/// stable and never dereferenced. One handle per device for the life of the
/// process, so it needs no registry.
static HANDLES: [u8; profile::MAX_DEVICES] = [0; profile::MAX_DEVICES];

fn handle(index: usize) -> nvmlDevice_t {
    std::ptr::addr_of!(HANDLES[index]) as nvmlDevice_t
}

fn device_count() -> usize {
    profile::current().devices()
}

/// The export list's `require`: everything but the library calls needs
/// nvmlInit first.
pub fn ensure_init() -> R {
    if *REFCOUNT.lock() > 0 {
        Ok(())
    } else {
        Err(nvmlReturn_t::NVML_ERROR_UNINITIALIZED)
    }
}

/// A device handle argument this library gave out (INVALID_ARGUMENT
/// otherwise): the device's driver-order index.
pub struct Device(usize);

impl FromCuda<nvmlDevice_t, nvmlReturn_t> for Device {
    unsafe fn from_cuda(d: nvmlDevice_t) -> Result<Self, nvmlReturn_t> {
        (0..device_count())
            .find(|&i| handle(i) == d)
            .map(Device)
            .ok_or(INVALID_ARGUMENT)
    }
}

/// `nvmlInitWithFlags`, and `nvmlInit` with no flags: NO_GPUS (1) and
/// NO_ATTACH (2) change nothing for a software device. A profile name that
/// names none is a driver that cannot load.
pub fn init(_flags: c_uint) -> R {
    if let Err(why) = profile::selected() {
        vgpu_ffi::vlog!(vgpu_ffi::log::Level::Error, "vgpu-emu: {why}");
        return Err(nvmlReturn_t::NVML_ERROR_DRIVER_NOT_LOADED);
    }
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

/// The answer of every query whose value never changes: the list gives it
/// (a property of the profile's board).
pub fn answer<T>(_d: Device, out: Out<T>, value: T) -> R {
    out.write(value);
    Ok(())
}

/// `nvmlSystemGetCudaDriverVersion` and `_v2`; answered before nvmlInit.
pub fn system_get_cuda_driver_version(v: Out<c_int>) -> R {
    v.write(profile::cuda_driver_version());
    Ok(())
}

pub fn device_get_count(count: Out<c_uint>) -> R {
    count.write(device_count() as c_uint);
    Ok(())
}

pub fn handle_by_index(index: c_uint, dev: Out<nvmlDevice_t>) -> R {
    let i = index as usize;
    if i >= device_count() {
        return Err(INVALID_ARGUMENT);
    }
    dev.write(handle(i));
    Ok(())
}

/// `nvmlDeviceGetIndex`.
pub fn get_index(d: Device, index: Out<c_uint>) -> R {
    index.write(d.0 as c_uint);
    Ok(())
}

/// What `nvmlDeviceGetHandleBy*` looks a device up by.
pub enum Key {
    Uuid,
    PciBusId,
    Serial,
}

/// The lookups by identifier share their protocol: a bad argument is
/// INVALID_ARGUMENT, a well-formed one that names no device NOT_FOUND.
pub fn handle_by(key: &CStr, dev: Out<nvmlDevice_t>, kind: Key) -> R {
    let key = key.to_string_lossy();
    let key = key.trim();
    let matches = |i: usize| {
        let id = identity::device(i);
        match kind {
            Key::Uuid => key.eq_ignore_ascii_case(&identity::uuid_string(&id.uuid)),
            Key::PciBusId => device::index_at_pci_address(key) == Some(i),
            Key::Serial => key == id.serial,
        }
    };
    let i = (0..device_count()).find(|&i| matches(i)).ok_or(NOT_FOUND)?;
    dev.write(handle(i));
    Ok(())
}

/// The device's strings.
pub enum Text {
    Name,
    Uuid,
    Serial,
}

/// `nvmlDeviceGetName`, `GetUUID` and `GetSerial`, by `which`.
///
/// # Safety
/// `buf` holds `len` bytes.
pub unsafe fn get_string(d: Device, buf: Out<c_char>, len: c_uint, which: Text) -> R {
    let id = identity::device(d.0);
    let s = match which {
        Text::Name => profile::board().name.to_string(),
        Text::Uuid => identity::uuid_string(&id.uuid),
        Text::Serial => id.serial.clone(),
    };
    // SAFETY: per the caller.
    unsafe { nvml_string(buf, len, &s) }
}

fn c_chars<const N: usize>(s: &str) -> [c_char; N] {
    let mut a = [0 as c_char; N];
    for (dst, &b) in a.iter_mut().zip(s.as_bytes().iter().take(N - 1)) {
        *dst = b as c_char;
    }
    a
}

/// Domain 0, device 0 on the device's own bus.
fn pci_info(index: usize) -> nvmlPciInfo_t {
    let b = profile::current().buses[index];
    let board = profile::board();
    nvmlPciInfo_t {
        busIdLegacy: c_chars(&format!("0000:{b:02X}:00.0")),
        domain: 0,
        bus: b,
        device: 0,
        pciDeviceId: board.pci_device_id,
        pciSubSystemId: board.pci_subsystem_id,
        busId: c_chars(&format!("00000000:{b:02X}:00.0")),
    }
}

/// Every version of the call fills the same current struct layout.
pub fn get_pci_info(d: Device, pci: Out<nvmlPciInfo_t>) -> R {
    pci.write(pci_info(d.0));
    Ok(())
}

struct MemoryView {
    total: u64,
    reserved: u64,
    used: u64,
    free: u64,
}

/// What NVML's total holds beyond CUDA's counts as reserved, with the
/// driver's own share.
fn memory_view(index: usize) -> MemoryView {
    let b = profile::board();
    let used = memory::device_bytes_in_use(index);
    MemoryView {
        total: b.nvml_total,
        reserved: b.reserved + (b.nvml_total - b.cuda_total),
        used,
        free: memory::capacity().saturating_sub(used),
    }
}

/// v1 has no `reserved` field and counts the driver's share as used.
pub fn get_memory_info(d: Device, mem: Out<nvmlMemory_t>) -> R {
    let m = memory_view(d.0);
    mem.write(nvmlMemory_t {
        total: m.total,
        free: m.free,
        used: m.used + m.reserved,
    });
    Ok(())
}

/// `nvmlMemory_v2` from nvml.h: NVML_STRUCT_VERSION(Memory, 2).
pub const NVML_MEMORY_V2: c_uint = std::mem::size_of::<nvmlMemory_v2_t>() as c_uint | (2 << 24);
/// `nvmlTemperature_v1`: NVML_STRUCT_VERSION(Temperature, 1).
pub const NVML_TEMPERATURE_V1: c_uint =
    std::mem::size_of::<nvmlTemperature_t>() as c_uint | (1 << 24);

/// The caller sets the struct's version.
pub fn get_memory_info_v2(d: Device, mem: Out<nvmlMemory_v2_t>) -> R {
    let version = mem.read().version;
    if version != NVML_MEMORY_V2 {
        return Err(nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    let m = memory_view(d.0);
    mem.write(nvmlMemory_v2_t {
        version,
        total: m.total,
        reserved: m.reserved,
        free: m.free,
        used: m.used,
    });
    Ok(())
}

pub fn get_cuda_compute_capability(_d: Device, major: Out<c_int>, minor: Out<c_int>) -> R {
    let (ma, mi) = profile::board().cc;
    major.write(ma);
    minor.write(mi);
    Ok(())
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

pub fn get_temperature(_d: Device, sensor: nvmlTemperatureSensors_t, temp: Out<c_uint>) -> R {
    temp.write(temperature_of(sensor)?);
    Ok(())
}

/// The caller fills in the version and the sensor type.
pub fn get_temperature_v(_d: Device, t: Out<nvmlTemperature_t>) -> R {
    let req = t.read();
    if req.version != NVML_TEMPERATURE_V1 {
        return Err(nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    let v = temperature_of(req.sensorType)?;
    t.write(nvmlTemperature_t {
        temperature: v as c_int,
        ..req
    });
    Ok(())
}

pub fn get_temperature_threshold(
    _d: Device,
    kind: nvmlTemperatureThresholds_t,
    temp: Out<c_uint>,
) -> R {
    use nvmlTemperatureThresholds_t as T;
    // The board's, as `nvidia-smi -q` lists them.
    let [shutdown, slowdown, gpu_max, mem_max] = profile::board().thresholds;
    let v = match kind {
        T::NVML_TEMPERATURE_THRESHOLD_SHUTDOWN => shutdown,
        T::NVML_TEMPERATURE_THRESHOLD_SLOWDOWN => slowdown,
        T::NVML_TEMPERATURE_THRESHOLD_GPU_MAX => gpu_max,
        T::NVML_TEMPERATURE_THRESHOLD_MEM_MAX => mem_max,
        k if k.0 < T::NVML_TEMPERATURE_THRESHOLD_COUNT.0 => return Err(NOT_SUPPORTED),
        _ => return Err(INVALID_ARGUMENT),
    };
    temp.write(v);
    Ok(())
}

pub fn get_power_usage(_d: Device, mw: Out<c_uint>) -> R {
    mw.write(sensors::power_mw());
    Ok(())
}

pub fn get_power_limit_constraints(_d: Device, min: Out<c_uint>, max: Out<c_uint>) -> R {
    min.write(profile::board().power_limit_min);
    max.write(profile::board().power_limit);
    Ok(())
}

pub fn get_utilization_rates(_d: Device, u: Out<nvmlUtilization_t>) -> R {
    let now = sensors::utilization();
    u.write(nvmlUtilization_t {
        gpu: now.gpu,
        memory: now.memory,
    });
    Ok(())
}

fn max_clock(kind: nvmlClockType_t) -> Result<u32, nvmlReturn_t> {
    use nvmlClockType_t as C;
    let b = profile::board();
    match kind {
        C::NVML_CLOCK_GRAPHICS | C::NVML_CLOCK_SM => Ok(b.max_graphics_clock),
        C::NVML_CLOCK_MEM => Ok(b.max_memory_clock),
        C::NVML_CLOCK_VIDEO => Ok(b.max_video_clock),
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
        C::NVML_CLOCK_VIDEO => profile::board().idle_video_clock,
        _ => profile::board().idle_graphics_clock,
    })
}

/// `nvmlDeviceGetClock`.
pub fn get_clock(d: Device, kind: nvmlClockType_t, id: nvmlClockId_t, mhz: Out<c_uint>) -> R {
    get_clock_info(d, kind, mhz, id)
}

/// `nvmlDeviceGetClockInfo` (the current clock) and `GetMaxClockInfo`, by
/// the clock id the list gives (the argument order is theirs).
pub fn get_clock_info(_d: Device, kind: nvmlClockType_t, mhz: Out<c_uint>, id: nvmlClockId_t) -> R {
    use nvmlClockId_t as I;
    let v = match id {
        I::NVML_CLOCK_ID_CURRENT => current_clock(kind)?,
        I::NVML_CLOCK_ID_APP_CLOCK_TARGET
        | I::NVML_CLOCK_ID_APP_CLOCK_DEFAULT
        | I::NVML_CLOCK_ID_CUSTOMER_BOOST_MAX => max_clock(kind)?,
        _ => return Err(INVALID_ARGUMENT),
    };
    mhz.write(v);
    Ok(())
}

pub fn get_mig_mode(_d: Device, current: Out<c_uint>, pending: Out<c_uint>) -> R {
    current.write(NVML_DEVICE_MIG_DISABLE);
    pending.write(NVML_DEVICE_MIG_DISABLE);
    Ok(())
}

pub fn get_ecc_mode(
    _d: Device,
    current: Out<nvmlEnableState_t>,
    pending: Out<nvmlEnableState_t>,
) -> R {
    let state = if profile::board().ecc {
        nvmlEnableState_t::NVML_FEATURE_ENABLED
    } else {
        nvmlEnableState_t::NVML_FEATURE_DISABLED
    };
    current.write(state);
    pending.write(state);
    Ok(())
}

pub fn get_total_ecc_errors(
    _d: Device,
    kind: nvmlMemoryErrorType_t,
    counter: nvmlEccCounterType_t,
    count: Out<c_ulonglong>,
) -> R {
    if kind.0 >= nvmlMemoryErrorType_t::NVML_MEMORY_ERROR_TYPE_COUNT.0
        || counter.0 >= nvmlEccCounterType_t::NVML_ECC_COUNTER_TYPE_COUNT.0
    {
        return Err(INVALID_ARGUMENT);
    }
    count.write(0);
    Ok(())
}

/// NVENC/NVDEC are never used by the software GPU: 0 over NVML's usual
/// sampling period.
pub fn get_codec_utilization(_d: Device, u: Out<c_uint>, period_us: Out<c_uint>) -> R {
    u.write(0);
    period_us.write(167_000);
    Ok(())
}

/// `nvmlClocksEventReasonGpuIdle` while nothing runs, none otherwise.
pub fn get_clocks_event_reasons(_d: Device, r: Out<c_ulonglong>) -> R {
    r.write(if sensors::boosted() { 0 } else { 0x1 });
    Ok(())
}

// ---- processes --------------------------------------------------------------

/// Which processes a list is asked for.
pub enum Clients {
    Compute,
    /// The software GPU has none.
    Graphics,
}

/// This process, when it holds a live context: the only client the software
/// GPU can see (on every device; what it holds is per device).
fn compute_processes(index: usize) -> Vec<(u32, u64)> {
    if context::any_alive() {
        vec![(std::process::id(), memory::device_bytes_in_use(index))]
    } else {
        Vec::new()
    }
}

/// The process info struct of each version of the calls.
pub trait ProcessInfo {
    fn new(pid: u32, mem: u64) -> Self;
}

impl ProcessInfo for nvmlProcessInfo_v1_t {
    fn new(pid: u32, mem: u64) -> Self {
        nvmlProcessInfo_v1_t {
            pid,
            usedGpuMemory: mem,
        }
    }
}

/// MIG is off, so the instance ids are NVML_VALUE_NOT_AVAILABLE.
impl ProcessInfo for nvmlProcessInfo_v2_t {
    fn new(pid: u32, mem: u64) -> Self {
        nvmlProcessInfo_v2_t {
            pid,
            usedGpuMemory: mem,
            gpuInstanceId: u32::MAX,
            computeInstanceId: u32::MAX,
        }
    }
}

/// `nvmlDeviceGet{Compute,Graphics}RunningProcesses` in every version, by
/// struct type and `which`. NVML's sizing protocol: `*count` in is the
/// capacity of `infos`; when the list does not fit, `*count` out is the size
/// needed and the status INSUFFICIENT_SIZE (asking with `*count == 0` is how
/// callers size it). `infos` may be NULL when nothing is to be written.
///
/// # Safety
/// `infos` is NULL or holds `*count` entries.
pub unsafe fn processes<T: ProcessInfo>(
    d: Device,
    count: Out<c_uint>,
    infos: *mut T,
    which: Clients,
) -> R {
    let list = match which {
        Clients::Compute => compute_processes(d.0),
        Clients::Graphics => Vec::new(),
    };
    let capacity = count.read() as usize;
    let n = list.len() as c_uint;
    if capacity < list.len() {
        count.write(n);
        return Err(INSUFFICIENT_SIZE);
    }
    if !list.is_empty() && infos.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    for (i, &(pid, mem)) in list.iter().enumerate() {
        // SAFETY: `i < list.len() <= capacity`, the caller's array length.
        unsafe { infos.add(i).write_unaligned(T::new(pid, mem)) };
    }
    count.write(n);
    Ok(())
}
