//! Running compute / graphics processes in the three struct layouts NVML
//! has shipped, with its size protocol: a too-small `*infoCount` gets
//! NVML_ERROR_INSUFFICIENT_SIZE and the count needed.

use crate::device::resolve;
use crate::ffi::INVALID_ARGUMENT;
use crate::query::ask;
use cuda_types::nvml::*;
use std::ffi::c_uint;
use vgpu_transport::proto::{nvml_kind, ProcessInfo};

/// What the size protocol decides for `capacity` slots and `have` entries.
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Write `have` entries (possibly none) and set the count to `have`.
    Write(usize),
    /// Set the count to `have` and fail with INSUFFICIENT_SIZE.
    TooSmall,
}

fn plan(capacity: c_uint, have: usize, infos_null: bool) -> Result<Plan, nvmlReturn_t> {
    if have == 0 {
        // "No processes" succeeds even for the (0, NULL) count query.
        return Ok(Plan::Write(0));
    }
    if (capacity as usize) < have {
        return Ok(Plan::TooSmall);
    }
    if infos_null {
        return Err(INVALID_ARGUMENT);
    }
    Ok(Plan::Write(have))
}

/// # Safety
/// `info_count` must be null or readable and writable; a non-null `infos`
/// writable for `*info_count` entries of `T`.
unsafe fn list<T>(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut T,
    kind: u32,
    convert: fn(&ProcessInfo) -> T,
) -> Result<(), nvmlReturn_t> {
    let d = resolve(device)?;
    if info_count.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null and readable per the caller.
    let capacity = unsafe { info_count.read_unaligned() };
    let procs = ask(&d, kind, 0, 0)?.processes;
    let needed = c_uint::try_from(procs.len()).unwrap_or(c_uint::MAX);
    match plan(capacity, procs.len(), infos.is_null())? {
        Plan::TooSmall => {
            // SAFETY: non-null and writable per the caller.
            unsafe { info_count.write_unaligned(needed) };
            Err(nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE)
        }
        Plan::Write(n) => {
            for (i, p) in procs.iter().take(n).enumerate() {
                // SAFETY: `plan` allowed `n <= capacity` entries, which the
                // caller promised are writable; `infos` is non-null when n > 0.
                unsafe { infos.add(i).write_unaligned(convert(p)) };
            }
            // SAFETY: non-null and writable per the caller.
            unsafe { info_count.write_unaligned(n as c_uint) };
            Ok(())
        }
    }
}

fn v1(p: &ProcessInfo) -> nvmlProcessInfo_v1_t {
    nvmlProcessInfo_v1_t {
        pid: p.pid,
        usedGpuMemory: p.used_gpu_memory,
    }
}

fn v2(p: &ProcessInfo) -> nvmlProcessInfo_v2_t {
    nvmlProcessInfo_v2_t {
        pid: p.pid,
        usedGpuMemory: p.used_gpu_memory,
        gpuInstanceId: p.gpu_instance_id,
        computeInstanceId: p.compute_instance_id,
    }
}

/// # Safety
/// See [`list`].
pub unsafe fn compute_v1(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_v1_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { list(device, info_count, infos, nvml_kind::COMPUTE_PROCESSES, v1) }
}

/// # Safety
/// See [`list`].
pub unsafe fn compute_v2(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_v2_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { list(device, info_count, infos, nvml_kind::COMPUTE_PROCESSES, v2) }
}

/// `nvmlProcessInfo_t` (v3) has the v2 layout; only the entry point differs.
///
/// # Safety
/// See [`list`].
pub unsafe fn compute_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { list(device, info_count, infos, nvml_kind::COMPUTE_PROCESSES, v2) }
}

/// # Safety
/// See [`list`].
pub unsafe fn graphics_v1(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_v1_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { list(device, info_count, infos, nvml_kind::GRAPHICS_PROCESSES, v1) }
}

/// # Safety
/// See [`list`].
pub unsafe fn graphics_v2(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_v2_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { list(device, info_count, infos, nvml_kind::GRAPHICS_PROCESSES, v2) }
}

/// # Safety
/// See [`list`].
pub unsafe fn graphics_v3(
    device: nvmlDevice_t,
    info_count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> Result<(), nvmlReturn_t> {
    // SAFETY: forwarded from the caller.
    unsafe { list(device, info_count, infos, nvml_kind::GRAPHICS_PROCESSES, v2) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_protocol() {
        assert_eq!(plan(0, 0, true), Ok(Plan::Write(0)));
        assert_eq!(plan(5, 0, false), Ok(Plan::Write(0)));
        assert_eq!(plan(0, 2, true), Ok(Plan::TooSmall));
        assert_eq!(plan(1, 2, false), Ok(Plan::TooSmall));
        assert_eq!(plan(2, 2, false), Ok(Plan::Write(2)));
        assert_eq!(plan(8, 2, false), Ok(Plan::Write(2)));
        assert_eq!(plan(8, 2, true), Err(INVALID_ARGUMENT));
    }

    #[test]
    fn layouts() {
        assert_eq!(std::mem::size_of::<nvmlProcessInfo_v1_t>(), 16);
        assert_eq!(std::mem::size_of::<nvmlProcessInfo_v2_t>(), 24);
        assert_eq!(std::mem::size_of::<nvmlProcessInfo_t>(), 24);
        let p = ProcessInfo {
            pid: 7,
            used_gpu_memory: 9,
            gpu_instance_id: u32::MAX,
            compute_instance_id: u32::MAX,
        };
        assert_eq!(v1(&p).pid, 7);
        assert_eq!(v2(&p).computeInstanceId, u32::MAX);
    }
}
