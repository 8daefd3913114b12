//! Live values: each call asks the host (`NvmlQuery`) so monitors see the
//! device change; nothing here is cached.

use crate::device::Device;
use crate::ffi::{uint, Answer};
use cuda_types::nvml::*;
use std::ffi::{c_int, c_uint};
use vgpu_ffi::{FromCuda, Out};
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

pub fn ask(d: &Device, kind: u32, arg0: u32, arg1: u32) -> Result<NvmlAnswer, nvmlReturn_t> {
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
    d: &Device,
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

/// An argument that selects what a query reads (a sensor, a clock type, a
/// fan, a counter): NVML's enums and indices are all `unsigned int`, which
/// is what the host's query takes.
pub struct Sel(u32);

impl FromCuda<c_uint, nvmlReturn_t> for Sel {
    unsafe fn from_cuda(c: c_uint) -> Result<Self, nvmlReturn_t> {
        Ok(Sel(c))
    }
}

macro_rules! enum_selectors {
    ($($t:ty),*) => {
        $(impl FromCuda<$t, nvmlReturn_t> for Sel {
            unsafe fn from_cuda(c: $t) -> Result<Self, nvmlReturn_t> {
                Ok(Sel(c.0))
            }
        })*
    };
}

enum_selectors!(
    nvmlTemperatureSensors_t,
    nvmlTemperatureThresholds_t,
    nvmlClockType_t,
    nvmlClockId_t,
    nvmlPcieUtilCounter_t,
    nvmlMemoryErrorType_t,
    nvmlEccCounterType_t
);

/// The single-value getters `(device, T *)`: the answer's first integer as
/// the C type of `out` (`kind` from the export list).
pub fn value<T: Answer>(d: Device, out: Out<T>, kind: u32) -> Result<(), nvmlReturn_t> {
    value_of2(d, Sel(0), Sel(0), out, kind)
}

/// `(device, selector, T *)`: temperature by sensor, clock by type, fan
/// speed by fan, PCIe throughput by counter.
pub fn value_of<T: Answer>(d: Device, a: Sel, out: Out<T>, kind: u32) -> Result<(), nvmlReturn_t> {
    value_of2(d, a, Sel(0), out, kind)
}

/// `(device, selector, selector, T *)`: clock by type and id, ECC errors
/// by error and counter type.
pub fn value_of2<T: Answer>(
    d: Device,
    a: Sel,
    b: Sel,
    out: Out<T>,
    kind: u32,
) -> Result<(), nvmlReturn_t> {
    let [v] = ints::<1>(&d, kind, a.0, b.0)?;
    out.write(T::from_answer(v));
    Ok(())
}

/// The two-value getters `(device, T *, T *)`: value + period, current +
/// pending, min + max.
pub fn pair<T: Answer>(d: Device, a: Out<T>, b: Out<T>, kind: u32) -> Result<(), nvmlReturn_t> {
    let [x, y] = ints::<2>(&d, kind, 0, 0)?;
    a.write(T::from_answer(x));
    b.write(T::from_answer(y));
    Ok(())
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

pub fn memory_info(d: Device, memory: Out<nvmlMemory_t>) -> Result<(), nvmlReturn_t> {
    let [total, free, used] = ints::<3>(&d, nvml_kind::MEMORY, 0, 0).map_err(memory_error)?;
    memory.write(nvmlMemory_t { total, free, used });
    Ok(())
}

/// `nvmlMemory_v2`: the struct size with the version in the top byte.
const MEMORY_V2: c_uint = std::mem::size_of::<nvmlMemory_v2_t>() as c_uint | (2 << 24);

pub fn memory_info_v2(d: Device, memory: Out<nvmlMemory_v2_t>) -> Result<(), nvmlReturn_t> {
    // SAFETY: non-null; the caller set `version` before the call (only
    // that field: the rest may be uninitialized, so it alone is read).
    let version = unsafe { std::ptr::addr_of!((*memory.as_ptr()).version).read_unaligned() };
    if version != MEMORY_V2 {
        return Err(nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    let [total, reserved, free, used] =
        ints::<4>(&d, nvml_kind::MEMORY_V2, 0, 0).map_err(memory_error)?;
    memory.write(nvmlMemory_v2_t {
        version,
        total,
        reserved,
        free,
        used,
    });
    Ok(())
}

/// `nvmlTemperature_v1`: the struct size with the version in the top byte.
const TEMPERATURE_V1: c_uint = std::mem::size_of::<nvmlTemperature_v1_t>() as c_uint | (1 << 24);

pub fn temperature_v(d: Device, temperature: Out<nvmlTemperature_t>) -> Result<(), nvmlReturn_t> {
    // The caller filled in version and sensor.
    let mut t = temperature.read();
    if t.version != TEMPERATURE_V1 {
        return Err(nvmlReturn_t::NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    let [v] = ints::<1>(&d, nvml_kind::TEMPERATURE, t.sensorType.0, 0)?;
    t.temperature = c_int::try_from(v).unwrap_or(c_int::MAX);
    temperature.write(t);
    Ok(())
}

pub fn utilization(d: Device, utilization: Out<nvmlUtilization_t>) -> Result<(), nvmlReturn_t> {
    let [gpu, memory] = ints::<2>(&d, nvml_kind::UTILIZATION, 0, 0)?;
    utilization.write(nvmlUtilization_t {
        gpu: uint(gpu),
        memory: uint(memory),
    });
    Ok(())
}

/// Which field of the `PCIE_LINK` answer an entry point reports, in the
/// answer's order.
#[derive(Clone, Copy)]
pub enum Link {
    CurrGeneration,
    MaxGeneration,
    CurrWidth,
    MaxWidth,
}

pub fn pcie_link(d: Device, out: Out<c_uint>, field: Link) -> Result<(), nvmlReturn_t> {
    let link = ints::<4>(&d, nvml_kind::PCIE_LINK, 0, 0)?;
    out.write(uint(link[field as usize]));
    Ok(())
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
