//! Running compute / graphics processes in the three struct layouts NVML
//! has shipped, with its size protocol: a too-small `*infoCount` gets
//! NVML_ERROR_INSUFFICIENT_SIZE and the count needed.

use crate::device::Device;
use crate::query::ask;
use cuda_types::nvml::*;
use std::ffi::c_uint;
use vgpu_ffi::{Out, Status};
use vgpu_transport::proto::ProcessInfo;

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
        return Err(nvmlReturn_t::INVALID_ARGUMENT);
    }
    Ok(Plan::Write(have))
}

/// A process-info struct layout NVML has shipped; the entry point's C
/// prototype picks it.
pub trait Layout {
    fn from_process(p: &ProcessInfo) -> Self;
}

impl Layout for nvmlProcessInfo_v1_t {
    fn from_process(p: &ProcessInfo) -> Self {
        nvmlProcessInfo_v1_t {
            pid: p.pid,
            usedGpuMemory: p.used_gpu_memory,
        }
    }
}

/// Also `nvmlProcessInfo_t` (v3): the same struct, only the entry point
/// differs.
impl Layout for nvmlProcessInfo_v2_t {
    fn from_process(p: &ProcessInfo) -> Self {
        nvmlProcessInfo_v2_t {
            pid: p.pid,
            usedGpuMemory: p.used_gpu_memory,
            gpuInstanceId: p.gpu_instance_id,
            computeInstanceId: p.compute_instance_id,
        }
    }
}

/// `nvmlDeviceGet{Compute,Graphics}RunningProcesses{,_v2,_v3}`; `kind` (from
/// the export list) says which processes.
///
/// # Safety
/// A non-null `infos` must be writable for `*info_count` entries of `T`.
pub unsafe fn list<T: Layout>(
    d: Device,
    info_count: Out<c_uint>,
    infos: *mut T,
    kind: u32,
) -> Result<(), nvmlReturn_t> {
    let capacity = info_count.read();
    let procs = ask(&d, kind, 0, 0)?.processes;
    let needed = c_uint::try_from(procs.len()).unwrap_or(c_uint::MAX);
    match plan(capacity, procs.len(), infos.is_null())? {
        Plan::TooSmall => {
            info_count.write(needed);
            Err(nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE)
        }
        Plan::Write(n) => {
            for (i, p) in procs.iter().take(n).enumerate() {
                // SAFETY: `plan` allowed `n <= capacity` entries, which the
                // caller promised are writable; `infos` is non-null when n > 0.
                unsafe { infos.add(i).write_unaligned(T::from_process(p)) };
            }
            info_count.write(n as c_uint);
            Ok(())
        }
    }
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
        assert_eq!(plan(8, 2, true), Err(nvmlReturn_t::INVALID_ARGUMENT));
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
        assert_eq!(nvmlProcessInfo_v1_t::from_process(&p).pid, 7);
        assert_eq!(
            nvmlProcessInfo_t::from_process(&p).computeInstanceId,
            u32::MAX
        );
    }
}
