//! Live NVML values ([`NvmlQuery`]): one arm per `proto::nvml_kind`, each
//! the matching NVML getter on the device's handle. The reply status is the
//! `nvmlReturn_t`.

use super::{nv, Session};
use cuda_types::nvml::*;
use std::ffi::{c_uint, c_ulonglong};
use vgpu_transport::proto::{nvml_kind as k, NvmlAnswer, NvmlQuery, ProcessInfo, Serve};
use vgpu_transport::Status;

/// Most processes accepted from one listing; a driver reporting more is
/// treated as broken rather than allowed to size our allocation.
const MAX_PROCESSES: u32 = 4096;

const INVALID_ARGUMENT: Status = Status::Nvml(nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
const INSUFFICIENT_SIZE: nvmlReturn_t = nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE;

/// NVML_STRUCT_VERSION(Memory, 2): the struct's size with the version in
/// the top byte, as nvml.h computes it.
const NVML_MEMORY_V2: u32 = std::mem::size_of::<nvmlMemory_v2_t>() as u32 | (2 << 24);

/// Out-values NVML getters write: plain integers and enum newtypes.
trait Out: Copy {
    fn zero() -> Self;
    fn to_u64(self) -> u64;
}

impl Out for c_uint {
    fn zero() -> Self {
        0
    }
    fn to_u64(self) -> u64 {
        self as u64
    }
}

impl Out for c_ulonglong {
    fn zero() -> Self {
        0
    }
    fn to_u64(self) -> u64 {
        self
    }
}

macro_rules! enum_out {
    ($($t:ty),*) => {$(
        impl Out for $t {
            fn zero() -> Self {
                Self(0)
            }
            fn to_u64(self) -> u64 {
                self.0 as u64
            }
        }
    )*};
}
enum_out!(nvmlEnableState_t, nvmlPstates_t, nvmlComputeMode_t);

type Get1<T> = Option<unsafe extern "C" fn(nvmlDevice_t, *mut T) -> nvmlReturn_t>;
type Get2<A, B> = Option<unsafe extern "C" fn(nvmlDevice_t, *mut A, *mut B) -> nvmlReturn_t>;
type GetArg<P, T> = Option<unsafe extern "C" fn(nvmlDevice_t, P, *mut T) -> nvmlReturn_t>;

fn missing() -> Status {
    Status::Nvml(nvmlReturn_t::NVML_ERROR_FUNCTION_NOT_FOUND)
}

/// `f(dev, &out)` → `[out]`.
fn get1<T: Out>(f: Get1<T>, dev: nvmlDevice_t) -> Result<Vec<u64>, Status> {
    let f = f.ok_or_else(missing)?;
    let mut v = T::zero();
    // SAFETY: `f` has this prototype (the table's type), `dev` is a handle
    // NVML gave this process, `v` is a live out-value of the right type.
    unsafe { f(dev, &mut v) }.ok().map_err(Status::Nvml)?;
    Ok(vec![v.to_u64()])
}

/// `f(dev, &a, &b)` → `[a, b]`.
fn get2<A: Out, B: Out>(f: Get2<A, B>, dev: nvmlDevice_t) -> Result<Vec<u64>, Status> {
    let f = f.ok_or_else(missing)?;
    let (mut a, mut b) = (A::zero(), B::zero());
    // SAFETY: as in `get1`, with two out-values.
    unsafe { f(dev, &mut a, &mut b) }
        .ok()
        .map_err(Status::Nvml)?;
    Ok(vec![a.to_u64(), b.to_u64()])
}

/// `f(dev, arg, &out)` → `[out]`.
fn get_arg<P, T: Out>(f: GetArg<P, T>, dev: nvmlDevice_t, arg: P) -> Result<Vec<u64>, Status> {
    let f = f.ok_or_else(missing)?;
    let mut v = T::zero();
    // SAFETY: as in `get1`; `arg` is passed by value (an enum NVML checks).
    unsafe { f(dev, arg, &mut v) }.ok().map_err(Status::Nvml)?;
    Ok(vec![v.to_u64()])
}

type ListFn<T> = unsafe extern "C" fn(nvmlDevice_t, *mut c_uint, *mut T) -> nvmlReturn_t;

/// NVML's size protocol: ask with no buffer for the count, then fetch into
/// a buffer of that size (plus slack, since processes come and go between
/// the two calls), retrying a few times if it still grew.
fn list<T: Default + Clone>(f: ListFn<T>, dev: nvmlDevice_t) -> Result<Vec<T>, Status> {
    let mut count: c_uint = 0;
    // SAFETY: a null buffer with count 0 is NVML's documented size query.
    let r = unsafe { f(dev, &mut count, std::ptr::null_mut()) };
    match r {
        nvmlReturn_t::NVML_SUCCESS if count == 0 => return Ok(Vec::new()),
        // Some implementations report the count with SUCCESS; fetch anyway.
        nvmlReturn_t::NVML_SUCCESS => {}
        r if r == INSUFFICIENT_SIZE => {}
        r => return Err(Status::Nvml(r)),
    }
    for _ in 0..4 {
        let cap = count.saturating_add(8).min(MAX_PROCESSES);
        let mut buf = vec![T::default(); cap as usize];
        let mut n = cap;
        // SAFETY: `buf` holds `n` elements of the type `f` writes.
        let r = unsafe { f(dev, &mut n, buf.as_mut_ptr()) };
        if r == nvmlReturn_t::NVML_SUCCESS {
            buf.truncate(n.min(cap) as usize);
            return Ok(buf);
        }
        if r != INSUFFICIENT_SIZE || cap == MAX_PROCESSES {
            return Err(Status::Nvml(r));
        }
        count = n;
    }
    Err(Status::Nvml(INSUFFICIENT_SIZE))
}

fn from_v2(p: &nvmlProcessInfo_v2_t) -> ProcessInfo {
    ProcessInfo {
        pid: p.pid,
        used_gpu_memory: p.usedGpuMemory,
        gpu_instance_id: p.gpuInstanceId,
        compute_instance_id: p.computeInstanceId,
    }
}

fn from_v1(p: &nvmlProcessInfo_v1_t) -> ProcessInfo {
    ProcessInfo {
        pid: p.pid,
        used_gpu_memory: p.usedGpuMemory,
        // v1 predates MIG: "no instance" in NVML's encoding.
        gpu_instance_id: u32::MAX,
        compute_instance_id: u32::MAX,
    }
}

/// The newest process-listing entry point the driver has: v3, v2, v1.
fn processes(
    v3: Option<ListFn<nvmlProcessInfo_t>>,
    v2: Option<ListFn<nvmlProcessInfo_v2_t>>,
    v1: Option<ListFn<nvmlProcessInfo_v1_t>>,
    dev: nvmlDevice_t,
) -> Result<Vec<ProcessInfo>, Status> {
    if let Some(f) = v3 {
        return Ok(list(f, dev)?.iter().map(from_v2).collect());
    }
    if let Some(f) = v2 {
        return Ok(list(f, dev)?.iter().map(from_v2).collect());
    }
    if let Some(f) = v1 {
        return Ok(list(f, dev)?.iter().map(from_v1).collect());
    }
    Err(missing())
}

/// The tenant view (docs/security.md): the driver knows this guest's work
/// as the worker's process, the guest knows itself by its own pid; every
/// other entry (other guests' workers, host processes, with their host
/// pids) is another tenant's business and is left out.
fn as_guest(list: Vec<ProcessInfo>, guest_pid: u32) -> Vec<ProcessInfo> {
    let me = std::process::id();
    list.into_iter()
        .filter(|p| p.pid == me)
        .map(|mut p| {
            p.pid = guest_pid;
            p
        })
        .collect()
}

/// NVML's text form of a CUDA UUID, "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
pub fn nvml_uuid_string(u: &[u8; 16]) -> String {
    let mut s = String::from("GPU-");
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Session {
    /// The NVML handle of the device the guest knows as CUDA ordinal
    /// `index`. CUDA and NVML may order devices differently, so the match
    /// is by UUID, with NVML's index only as a fallback.
    pub fn nvml_device(&mut self, index: u32) -> Result<nvmlDevice_t, Status> {
        if let Some(e) = self.nvml_error {
            return Err(e);
        }
        if self.nvml_devices.is_none() {
            let mut v = Vec::new();
            for (i, &dev) in self.devices.iter().enumerate() {
                let mut h: nvmlDevice_t = std::ptr::null_mut();
                let by_uuid = self.cuda_uuid(dev).and_then(|u| {
                    let s = std::ffi::CString::new(nvml_uuid_string(&u)).ok()?;
                    nv!(self, nvmlDeviceGetHandleByUUID(s.as_ptr(), &mut h)).ok()
                });
                if by_uuid.is_none()
                    && nv!(self, nvmlDeviceGetHandleByIndex_v2(i as u32, &mut h)).is_err()
                {
                    tracing::warn!("no NVML handle for CUDA device {i}");
                    v.push(None);
                    continue;
                }
                v.push(Some(h));
            }
            self.nvml_devices = Some(v);
        }
        self.nvml_devices
            .as_ref()
            .and_then(|v| v.get(index as usize).copied().flatten())
            .ok_or(INVALID_ARGUMENT)
    }
}

impl Serve<NvmlQuery> for Session {
    fn serve(&mut self, q: NvmlQuery) -> Result<NvmlAnswer, Status> {
        let d = self.nvml_device(q.device)?;
        let guest_pid = self.guest_pid;
        let n = &self.driver.nvml;
        let (a0, a1) = (q.arg0, q.arg1);
        let mut ans = NvmlAnswer::default();
        ans.ints = match q.kind {
            k::TEMPERATURE => get_arg(n.nvmlDeviceGetTemperature, d, nvmlTemperatureSensors_t(a0))?,
            k::POWER_USAGE => get1(n.nvmlDeviceGetPowerUsage, d)?,
            k::POWER_LIMIT => get1(n.nvmlDeviceGetPowerManagementLimit, d)?,
            k::ENFORCED_POWER_LIMIT => get1(n.nvmlDeviceGetEnforcedPowerLimit, d)?,
            k::POWER_DEFAULT_LIMIT => get1(n.nvmlDeviceGetPowerManagementDefaultLimit, d)?,
            k::POWER_LIMIT_CONSTRAINTS => {
                get2::<c_uint, c_uint>(n.nvmlDeviceGetPowerManagementLimitConstraints, d)?
            }
            k::CLOCK_INFO => get_arg(n.nvmlDeviceGetClockInfo, d, nvmlClockType_t(a0))?,
            k::MAX_CLOCK_INFO => get_arg(n.nvmlDeviceGetMaxClockInfo, d, nvmlClockType_t(a0))?,
            k::CLOCK => {
                let f = n.nvmlDeviceGetClock.ok_or_else(missing)?;
                let mut mhz: c_uint = 0;
                // SAFETY: as in `get1`; both enums are passed by value.
                unsafe { f(d, nvmlClockType_t(a0), nvmlClockId_t(a1), &mut mhz) }
                    .ok()
                    .map_err(Status::Nvml)?;
                vec![mhz as u64]
            }
            k::UTILIZATION => {
                let mut u = nvmlUtilization_t::default();
                nv!(self, nvmlDeviceGetUtilizationRates(d, &mut u))?;
                vec![u.gpu as u64, u.memory as u64]
            }
            k::ENCODER_UTILIZATION => get2::<c_uint, c_uint>(n.nvmlDeviceGetEncoderUtilization, d)?,
            k::DECODER_UTILIZATION => get2::<c_uint, c_uint>(n.nvmlDeviceGetDecoderUtilization, d)?,
            k::MEMORY => {
                let mut m = nvmlMemory_t::default();
                nv!(self, nvmlDeviceGetMemoryInfo(d, &mut m))?;
                let (free, total) = self.quota.report(m.free, m.total);
                if self.quota.limit.is_some() {
                    vec![total, free, total - free]
                } else {
                    vec![m.total, m.free, m.used]
                }
            }
            k::MEMORY_V2 => {
                let mut m = nvmlMemory_v2_t {
                    version: NVML_MEMORY_V2,
                    ..Default::default()
                };
                nv!(self, nvmlDeviceGetMemoryInfo_v2(d, &mut m))?;
                let (free, total) = self.quota.report(m.free, m.total);
                if self.quota.limit.is_some() {
                    // The driver's reservation is not the guest's concern
                    // under a quota: its share is all the guest may have.
                    vec![total, 0, free, total - free]
                } else {
                    vec![m.total, m.reserved, m.free, m.used]
                }
            }
            k::PERFORMANCE_STATE => get1(n.nvmlDeviceGetPerformanceState, d)?,
            k::FAN_SPEED => get1(n.nvmlDeviceGetFanSpeed, d)?,
            k::PERSISTENCE_MODE => get1(n.nvmlDeviceGetPersistenceMode, d)?,
            k::COMPUTE_MODE => get1(n.nvmlDeviceGetComputeMode, d)?,
            k::MIG_MODE => get2::<c_uint, c_uint>(n.nvmlDeviceGetMigMode, d)?,
            k::DISPLAY_MODE => get1(n.nvmlDeviceGetDisplayMode, d)?,
            k::DISPLAY_ACTIVE => get1(n.nvmlDeviceGetDisplayActive, d)?,
            k::ECC_MODE => get2::<nvmlEnableState_t, nvmlEnableState_t>(n.nvmlDeviceGetEccMode, d)?,
            k::TOTAL_ECC_ERRORS => {
                let f = n.nvmlDeviceGetTotalEccErrors.ok_or_else(missing)?;
                let mut c: c_ulonglong = 0;
                // SAFETY: as in `get1`; both enums are passed by value.
                unsafe {
                    f(
                        d,
                        nvmlMemoryErrorType_t(a0),
                        nvmlEccCounterType_t(a1),
                        &mut c,
                    )
                }
                .ok()
                .map_err(Status::Nvml)?;
                vec![c]
            }
            k::COMPUTE_PROCESSES => {
                ans.processes = as_guest(
                    processes(
                        n.nvmlDeviceGetComputeRunningProcesses_v3,
                        n.nvmlDeviceGetComputeRunningProcesses_v2,
                        n.nvmlDeviceGetComputeRunningProcesses,
                        d,
                    )?,
                    guest_pid,
                );
                Vec::new()
            }
            k::GRAPHICS_PROCESSES => {
                ans.processes = as_guest(
                    processes(
                        n.nvmlDeviceGetGraphicsRunningProcesses_v3,
                        n.nvmlDeviceGetGraphicsRunningProcesses_v2,
                        n.nvmlDeviceGetGraphicsRunningProcesses,
                        d,
                    )?,
                    guest_pid,
                );
                Vec::new()
            }
            k::TEMPERATURE_THRESHOLD => get_arg(
                n.nvmlDeviceGetTemperatureThreshold,
                d,
                nvmlTemperatureThresholds_t(a0),
            )?,
            k::CLOCKS_EVENT_REASONS => match n.nvmlDeviceGetCurrentClocksEventReasons {
                Some(_) => get1(n.nvmlDeviceGetCurrentClocksEventReasons, d)?,
                None => get1(n.nvmlDeviceGetCurrentClocksThrottleReasons, d)?,
            },
            k::PCIE_THROUGHPUT => {
                get_arg(n.nvmlDeviceGetPcieThroughput, d, nvmlPcieUtilCounter_t(a0))?
            }
            k::PCIE_LINK => {
                let mut v = get1(n.nvmlDeviceGetCurrPcieLinkGeneration, d)?;
                v.extend(get1(n.nvmlDeviceGetMaxPcieLinkGeneration, d)?);
                v.extend(get1(n.nvmlDeviceGetCurrPcieLinkWidth, d)?);
                v.extend(get1(n.nvmlDeviceGetMaxPcieLinkWidth, d)?);
                v
            }
            k::TOTAL_ENERGY => get1(n.nvmlDeviceGetTotalEnergyConsumption, d)?,
            _ => return Err(INVALID_ARGUMENT),
        };
        Ok(ans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_sees_only_its_own_process() {
        let me = std::process::id();
        let p = |pid| ProcessInfo {
            pid,
            ..Default::default()
        };
        let list = as_guest(vec![p(1), p(me), p(4242)], 77);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].pid, 77);
        assert!(as_guest(vec![p(1)], 77).is_empty());
    }

    #[test]
    fn uuid_text_form() {
        let u = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        assert_eq!(
            nvml_uuid_string(&u),
            "GPU-12345678-9abc-def0-0123-456789abcdef"
        );
    }

    #[test]
    fn memory_v2_version_matches_nvml_h() {
        // sizeof(nvmlMemory_v2_t) is 40 on LP64.
        assert_eq!(NVML_MEMORY_V2, 40 | (2 << 24));
    }
}
