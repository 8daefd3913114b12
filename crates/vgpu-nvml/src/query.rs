//! Live values: each call asks the host (`NvmlQuery`) so monitors see the
//! device change; nothing here is cached.

use crate::device::{resolve, Dev};
use crate::ffi::{put, uint, INVALID_ARGUMENT};
use cuda_types::nvml::*;
use std::ffi::{c_int, c_uint, c_ulonglong};
use vgpu_guest::client::{self, GuestError};
use vgpu_transport::proto::{nvml_kind, NvmlAnswer, NvmlQuery};
use vgpu_transport::Status;

/// How a failed host call reads to an NVML caller.
pub fn host_error(e: &GuestError) -> nvmlReturn_t {
    match e {
        // The host NVML's own answer.
        GuestError::Status(Status::Nvml(r)) => *r,
        // An older host that has no such query: the feature is absent.
        GuestError::Status(Status::UNKNOWN_OP) => nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED,
        GuestError::Status(_) => nvmlReturn_t::NVML_ERROR_UNKNOWN,
        // The session broke after init: for the caller the GPU went away.
        GuestError::Lost(_) | GuestError::Unavailable(_) => nvmlReturn_t::NVML_ERROR_GPU_IS_LOST,
    }
}

pub fn ask(d: &Dev, kind: u32, arg0: u32, arg1: u32) -> Result<NvmlAnswer, nvmlReturn_t> {
    client::send(&NvmlQuery {
        device: d.host_index(),
        kind,
        arg0,
        arg1,
    })
    .map_err(|e| host_error(&e))
}

/// The first `N` integers of an answer; a short answer is a host bug,
/// reported as UNKNOWN rather than as made-up zeros.
fn ints<const N: usize>(
    d: &Dev,
    kind: u32,
    arg0: u32,
    arg1: u32,
) -> Result<[u64; N], nvmlReturn_t> {
    let a = ask(d, kind, arg0, arg1)?;
    a.ints
        .get(..N)
        .and_then(|s| <[u64; N]>::try_from(s).ok())
        .ok_or(nvmlReturn_t::NVML_ERROR_UNKNOWN)
}

/// One answer written to `out` as `conv` makes it (validated before the
/// round trip).
///
/// # Safety
/// `out` must be null or writable.
unsafe fn one<T>(
    device: nvmlDevice_t,
    out: *mut T,
    kind: u32,
    arg0: u32,
    arg1: u32,
    conv: impl FnOnce(u64) -> T,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    if out.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let [v] = ints::<1>(&d, kind, arg0, arg1)?;
    // SAFETY: forwarded from the caller.
    unsafe { put(out, conv(v)) }
}

/// One `unsigned int` answer written to `out`.
///
/// # Safety
/// `out` must be null or writable.
unsafe fn one_uint(
    device: nvmlDevice_t,
    out: *mut c_uint,
    kind: u32,
    arg0: u32,
    arg1: u32,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one(device, out, kind, arg0, arg1, uint) }
}

/// Two `unsigned int` answers (value + period, current + pending, ...).
///
/// # Safety
/// `a`, `b` must be null or writable.
unsafe fn two_uints(
    device: nvmlDevice_t,
    a: *mut c_uint,
    b: *mut c_uint,
    kind: u32,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    if a.is_null() || b.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let [x, y] = ints::<2>(&d, kind, 0, 0)?;
    // SAFETY: both non-null and writable per the caller.
    unsafe {
        put(a, uint(x))?;
        put(b, uint(y))
    }
}

/// An `nvmlEnableState_t` answer.
///
/// # Safety
/// `out` must be null or writable.
unsafe fn enable_state(
    device: nvmlDevice_t,
    out: *mut nvmlEnableState_t,
    kind: u32,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: nvmlEnableState_t is a transparent c_uint.
    unsafe { one_uint(device, out.cast::<c_uint>(), kind, 0, 0) }
}

/// Memory must never read as NOT_SUPPORTED: Ollama would then take host RAM
/// for the GPU's. NOT_FOUND sends it to `cudaMemGetInfo` instead.
fn memory_error(e: nvmlReturn_t) -> nvmlReturn_t {
    if e == nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED {
        nvmlReturn_t::NVML_ERROR_NOT_FOUND
    } else {
        e
    }
}

/// # Safety
/// `memory` must be null or writable.
pub unsafe fn memory_info(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_t,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    if memory.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let [total, free, used] = ints::<3>(&d, nvml_kind::MEMORY, 0, 0).map_err(memory_error)?;
    // SAFETY: forwarded from the caller.
    unsafe { put(memory, nvmlMemory_t { total, free, used }) }
}

/// `nvmlMemory_v2`: the struct size with the version in the top byte.
const MEMORY_V2: c_uint = std::mem::size_of::<nvmlMemory_v2_t>() as c_uint | (2 << 24);

/// # Safety
/// `memory` must be null or a readable and writable `nvmlMemory_v2_t`.
pub unsafe fn memory_info_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    if memory.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null; the caller set `version` before the call.
    let version = unsafe { std::ptr::addr_of!((*memory).version).read_unaligned() };
    if version != MEMORY_V2 {
        return Err(nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    let [total, reserved, free, used] =
        ints::<4>(&d, nvml_kind::MEMORY_V2, 0, 0).map_err(memory_error)?;
    let v = nvmlMemory_v2_t {
        version,
        total,
        reserved,
        free,
        used,
    };
    // SAFETY: forwarded from the caller.
    unsafe { put(memory, v) }
}

/// # Safety
/// `temp` must be null or writable.
pub unsafe fn temperature(
    device: nvmlDevice_t,
    sensor_type: nvmlTemperatureSensors_t,
    temp: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one_uint(device, temp, nvml_kind::TEMPERATURE, sensor_type.0, 0) }
}

/// `nvmlTemperature_v1`: the struct size with the version in the top byte.
const TEMPERATURE_V1: c_uint = std::mem::size_of::<nvmlTemperature_v1_t>() as c_uint | (1 << 24);

/// # Safety
/// `temperature` must be null or a readable and writable `nvmlTemperature_t`.
pub unsafe fn temperature_v(
    device: nvmlDevice_t,
    temperature: *mut nvmlTemperature_t,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    if temperature.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null; the caller filled in version and sensor.
    let mut t = unsafe { temperature.read_unaligned() };
    if t.version != TEMPERATURE_V1 {
        return Err(nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    let [v] = ints::<1>(&d, nvml_kind::TEMPERATURE, t.sensorType.0, 0)?;
    t.temperature = c_int::try_from(v).unwrap_or(c_int::MAX);
    // SAFETY: forwarded from the caller.
    unsafe { put(temperature, t) }
}

/// # Safety
/// `temp` must be null or writable.
pub unsafe fn temperature_threshold(
    device: nvmlDevice_t,
    threshold_type: nvmlTemperatureThresholds_t,
    temp: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe {
        one_uint(
            device,
            temp,
            nvml_kind::TEMPERATURE_THRESHOLD,
            threshold_type.0,
            0,
        )
    }
}

/// # Safety
/// `power` must be null or writable.
pub unsafe fn power_usage(device: nvmlDevice_t, power: *mut c_uint) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one_uint(device, power, nvml_kind::POWER_USAGE, 0, 0) }
}

/// # Safety
/// `limit` must be null or writable.
pub unsafe fn power_limit(device: nvmlDevice_t, limit: *mut c_uint) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one_uint(device, limit, nvml_kind::POWER_LIMIT, 0, 0) }
}

/// # Safety
/// `limit` must be null or writable.
pub unsafe fn enforced_power_limit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one_uint(device, limit, nvml_kind::ENFORCED_POWER_LIMIT, 0, 0) }
}

/// # Safety
/// `limit` must be null or writable.
pub unsafe fn default_power_limit(
    device: nvmlDevice_t,
    limit: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one_uint(device, limit, nvml_kind::POWER_DEFAULT_LIMIT, 0, 0) }
}

/// # Safety
/// `min_limit`, `max_limit` must be null or writable.
pub unsafe fn power_limit_constraints(
    device: nvmlDevice_t,
    min_limit: *mut c_uint,
    max_limit: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe {
        two_uints(
            device,
            min_limit,
            max_limit,
            nvml_kind::POWER_LIMIT_CONSTRAINTS,
        )
    }
}

/// # Safety
/// `energy` must be null or writable.
pub unsafe fn total_energy(
    device: nvmlDevice_t,
    energy: *mut c_ulonglong,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one(device, energy, nvml_kind::TOTAL_ENERGY, 0, 0, |v| v) }
}

/// # Safety
/// `utilization` must be null or writable.
pub unsafe fn utilization(
    device: nvmlDevice_t,
    utilization: *mut nvmlUtilization_t,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    if utilization.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let [gpu, memory] = ints::<2>(&d, nvml_kind::UTILIZATION, 0, 0)?;
    let u = nvmlUtilization_t {
        gpu: uint(gpu),
        memory: uint(memory),
    };
    // SAFETY: forwarded from the caller.
    unsafe { put(utilization, u) }
}

/// # Safety
/// `utilization`, `sampling_period_us` must be null or writable.
pub unsafe fn encoder_utilization(
    device: nvmlDevice_t,
    utilization: *mut c_uint,
    sampling_period_us: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe {
        two_uints(
            device,
            utilization,
            sampling_period_us,
            nvml_kind::ENCODER_UTILIZATION,
        )
    }
}

/// # Safety
/// `utilization`, `sampling_period_us` must be null or writable.
pub unsafe fn decoder_utilization(
    device: nvmlDevice_t,
    utilization: *mut c_uint,
    sampling_period_us: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe {
        two_uints(
            device,
            utilization,
            sampling_period_us,
            nvml_kind::DECODER_UTILIZATION,
        )
    }
}

/// # Safety
/// `clock` must be null or writable.
pub unsafe fn clock_info(
    device: nvmlDevice_t,
    type_: nvmlClockType_t,
    clock: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one_uint(device, clock, nvml_kind::CLOCK_INFO, type_.0, 0) }
}

/// # Safety
/// `clock` must be null or writable.
pub unsafe fn max_clock_info(
    device: nvmlDevice_t,
    type_: nvmlClockType_t,
    clock: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one_uint(device, clock, nvml_kind::MAX_CLOCK_INFO, type_.0, 0) }
}

/// # Safety
/// `clock_mhz` must be null or writable.
pub unsafe fn clock(
    device: nvmlDevice_t,
    clock_type: nvmlClockType_t,
    clock_id: nvmlClockId_t,
    clock_mhz: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe {
        one_uint(
            device,
            clock_mhz,
            nvml_kind::CLOCK,
            clock_type.0,
            clock_id.0,
        )
    }
}

/// Also `nvmlDeviceGetPowerState`, its deprecated alias.
///
/// # Safety
/// `p_state` must be null or writable.
pub unsafe fn performance_state(
    device: nvmlDevice_t,
    p_state: *mut nvmlPstates_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: nvmlPstates_t is a transparent c_uint.
    unsafe {
        one_uint(
            device,
            p_state.cast::<c_uint>(),
            nvml_kind::PERFORMANCE_STATE,
            0,
            0,
        )
    }
}

/// Also the deprecated `...ThrottleReasons` name of the same bitmask.
///
/// # Safety
/// `reasons` must be null or writable.
pub unsafe fn clocks_event_reasons(
    device: nvmlDevice_t,
    reasons: *mut c_ulonglong,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe {
        one(
            device,
            reasons,
            nvml_kind::CLOCKS_EVENT_REASONS,
            0,
            0,
            |v| v,
        )
    }
}

/// # Safety
/// `speed` must be null or writable.
pub unsafe fn fan_speed(device: nvmlDevice_t, speed: *mut c_uint) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one_uint(device, speed, nvml_kind::FAN_SPEED, 0, 0) }
}

/// # Safety
/// `speed` must be null or writable.
pub unsafe fn fan_speed_v2(
    device: nvmlDevice_t,
    fan: c_uint,
    speed: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one_uint(device, speed, nvml_kind::FAN_SPEED, fan, 0) }
}

/// # Safety
/// `mode` must be null or writable.
pub unsafe fn persistence_mode(
    device: nvmlDevice_t,
    mode: *mut nvmlEnableState_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { enable_state(device, mode, nvml_kind::PERSISTENCE_MODE) }
}

/// # Safety
/// `mode` must be null or writable.
pub unsafe fn compute_mode(
    device: nvmlDevice_t,
    mode: *mut nvmlComputeMode_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: nvmlComputeMode_t is a transparent c_uint.
    unsafe { one_uint(device, mode.cast::<c_uint>(), nvml_kind::COMPUTE_MODE, 0, 0) }
}

/// # Safety
/// `current`, `pending` must be null or writable.
pub unsafe fn mig_mode(
    device: nvmlDevice_t,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { two_uints(device, current, pending, nvml_kind::MIG_MODE) }
}

/// # Safety
/// `display` must be null or writable.
pub unsafe fn display_mode(
    device: nvmlDevice_t,
    display: *mut nvmlEnableState_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { enable_state(device, display, nvml_kind::DISPLAY_MODE) }
}

/// # Safety
/// `is_active` must be null or writable.
pub unsafe fn display_active(
    device: nvmlDevice_t,
    is_active: *mut nvmlEnableState_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { enable_state(device, is_active, nvml_kind::DISPLAY_ACTIVE) }
}

/// # Safety
/// `current`, `pending` must be null or writable.
pub unsafe fn ecc_mode(
    device: nvmlDevice_t,
    current: *mut nvmlEnableState_t,
    pending: *mut nvmlEnableState_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: nvmlEnableState_t is a transparent c_uint.
    unsafe { two_uints(device, current.cast(), pending.cast(), nvml_kind::ECC_MODE) }
}

/// # Safety
/// `ecc_counts` must be null or writable.
pub unsafe fn total_ecc_errors(
    device: nvmlDevice_t,
    error_type: nvmlMemoryErrorType_t,
    counter_type: nvmlEccCounterType_t,
    ecc_counts: *mut c_ulonglong,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe {
        one(
            device,
            ecc_counts,
            nvml_kind::TOTAL_ECC_ERRORS,
            error_type.0,
            counter_type.0,
            |v| v,
        )
    }
}

/// # Safety
/// `value` must be null or writable.
pub unsafe fn pcie_throughput(
    device: nvmlDevice_t,
    counter: nvmlPcieUtilCounter_t,
    value: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { one_uint(device, value, nvml_kind::PCIE_THROUGHPUT, counter.0, 0) }
}

/// One field of the `PCIE_LINK` answer [cur gen, max gen, cur width, max width].
///
/// # Safety
/// `out` must be null or writable.
unsafe fn pcie_link(
    device: nvmlDevice_t,
    out: *mut c_uint,
    field: usize,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    if out.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let link = ints::<4>(&d, nvml_kind::PCIE_LINK, 0, 0)?;
    // SAFETY: forwarded from the caller.
    unsafe { put(out, uint(link[field])) }
}

/// # Safety
/// `v` must be null or writable.
pub unsafe fn curr_pcie_link_generation(
    device: nvmlDevice_t,
    v: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { pcie_link(device, v, 0) }
}

/// # Safety
/// `v` must be null or writable.
pub unsafe fn max_pcie_link_generation(
    device: nvmlDevice_t,
    v: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { pcie_link(device, v, 1) }
}

/// # Safety
/// `v` must be null or writable.
pub unsafe fn curr_pcie_link_width(
    device: nvmlDevice_t,
    v: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { pcie_link(device, v, 2) }
}

/// # Safety
/// `v` must be null or writable.
pub unsafe fn max_pcie_link_width(
    device: nvmlDevice_t,
    v: *mut c_uint,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { pcie_link(device, v, 3) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_failures_map_to_nvml_codes() {
        assert_eq!(
            host_error(&GuestError::Status(Status::Nvml(nvmlReturn_t(3)))),
            nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED
        );
        assert_eq!(
            host_error(&GuestError::Status(Status::Nvml(nvmlReturn_t(999)))),
            nvmlReturn_t::NVML_ERROR_UNKNOWN
        );
        assert_eq!(
            host_error(&GuestError::Status(Status::UNKNOWN_OP)),
            nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED
        );
        assert_eq!(
            host_error(&GuestError::Status(Status::HOST_ERROR)),
            nvmlReturn_t::NVML_ERROR_UNKNOWN
        );
        assert_eq!(
            host_error(&GuestError::Lost("x".into())),
            nvmlReturn_t::NVML_ERROR_GPU_IS_LOST
        );
    }

    #[test]
    fn memory_never_reads_not_supported() {
        assert_eq!(
            memory_error(nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED),
            nvmlReturn_t::NVML_ERROR_NOT_FOUND
        );
        assert_eq!(
            memory_error(nvmlReturn_t::NVML_ERROR_GPU_IS_LOST),
            nvmlReturn_t::NVML_ERROR_GPU_IS_LOST
        );
    }

    #[test]
    fn struct_versions_match_the_header_macros() {
        // nvmlMemory_v2 and nvmlTemperature_v1 as pynvml computes them.
        assert_eq!(MEMORY_V2, 40 | (2 << 24));
        assert_eq!(TEMPERATURE_V1, 12 | (1 << 24));
    }
}
