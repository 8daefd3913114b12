//! `vgpu smi`: an nvidia-smi-like table, read through the NVML shim exactly
//! as any NVML client would (so it also shows what the guest sees).

use super::libs::find_shims;
use clap::Args;
use cuda_types::nvml::*;
use std::ffi::{c_char, c_uint, CStr};
use std::process::ExitCode;

use super::driver::{text, Library, NvmlDriver};

#[derive(Args)]
pub struct SmiArgs {
    /// NVML library to read (default: vgpu's shim next to this binary).
    #[arg(long)]
    pub library: Option<std::path::PathBuf>,
}

macro_rules! call {
    ($nvml:expr, $f:ident ( $($a:expr),* )) => {
        super::driver::driver_call!($nvml, $f($($a),*), nvmlReturn_t::NVML_ERROR_FUNCTION_NOT_FOUND)
    };
}

pub fn smi(args: SmiArgs) -> ExitCode {
    let path = match args.library {
        Some(p) => p,
        None => match find_shims() {
            Ok([_, nvml]) => nvml.file,
            Err(e) => {
                eprintln!("vgpu smi: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let nvml = match Library::open_any(&path) {
        Ok(l) => l.nvml(),
        Err(e) => {
            eprintln!("vgpu smi: {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    match print_table(&nvml) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vgpu smi: {e}");
            ExitCode::FAILURE
        }
    }
}

fn error_string(nvml: &NvmlDriver, r: nvmlReturn_t) -> String {
    match nvml.nvmlErrorString {
        Some(f) => {
            // SAFETY: nvmlErrorString takes a code and returns a static string.
            let p = unsafe { f(r) };
            if p.is_null() {
                format!("error {}", r.0)
            } else {
                // SAFETY: NVML returns a NUL-terminated static string.
                unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
            }
        }
        None => format!("error {}", r.0),
    }
}

/// Reads everything the table shows, printing each part once it is read:
/// the system line, one row per device, then the processes.
fn print_table(nvml: &NvmlDriver) -> Result<(), String> {
    let system = query_system(nvml)?;
    print_header(&system);
    let mut processes = Vec::new();
    for i in 0..system.count {
        match query_device(nvml, i) {
            Ok(d) => {
                print_device(i, &d);
                processes.extend(d.processes.iter().map(|&p| (i, p)));
            }
            Err(why) => print_unavailable(i, &why),
        }
    }
    print_processes(&processes);
    let _ = call!(nvml, nvmlShutdown());
    Ok(())
}

// ---------------------------------------------------------------- gathering

/// What NVML says about the system; `None` where a query failed.
struct System {
    driver: Option<String>,
    /// `nvmlSystemGetCudaDriverVersion_v2`, e.g. 13050 for 13.5.
    cuda: Option<i32>,
    count: c_uint,
}

/// What NVML says about one device; `None` where a query failed.
struct Device {
    name: Option<String>,
    bus_id: Option<String>,
    display_active: Option<nvmlEnableState_t>,
    ecc_uncorrected: Option<u64>,
    fan_percent: Option<c_uint>,
    temperature_c: Option<c_uint>,
    pstate: Option<nvmlPstates_t>,
    power_mw: Option<c_uint>,
    power_limit_mw: Option<c_uint>,
    memory: Option<nvmlMemory_t>,
    utilization: Option<nvmlUtilization_t>,
    compute_mode: Option<nvmlComputeMode_t>,
    uuid: Option<String>,
    processes: Vec<nvmlProcessInfo_t>,
}

/// `v` as the call left it, if the call succeeded.
fn answered<T>(r: nvmlReturn_t, v: T) -> Option<T> {
    (r == nvmlReturn_t::NVML_SUCCESS).then_some(v)
}

/// Initializes NVML and reads the system facts; an error ends the command.
fn query_system(nvml: &NvmlDriver) -> Result<System, String> {
    let r = call!(nvml, nvmlInit_v2());
    if r != nvmlReturn_t::NVML_SUCCESS {
        return Err(format!(
            "NVML initialization failed: {} (is `vgpu host` running and VGPU_HOST set?)",
            error_string(nvml, r)
        ));
    }
    let mut drv = [0 as c_char; 96];
    let r = call!(
        nvml,
        nvmlSystemGetDriverVersion(drv.as_mut_ptr(), drv.len() as c_uint)
    );
    let driver = answered(r, &drv).map(|d| text(d));
    let mut cuda = 0i32;
    let r = call!(nvml, nvmlSystemGetCudaDriverVersion_v2(&mut cuda));
    let cuda = answered(r, cuda);
    let mut count: c_uint = 0;
    let r = call!(nvml, nvmlDeviceGetCount_v2(&mut count));
    if r != nvmlReturn_t::NVML_SUCCESS {
        return Err(format!("nvmlDeviceGetCount: {}", error_string(nvml, r)));
    }
    Ok(System {
        driver,
        cuda,
        count,
    })
}

/// Reads device `i`; `Err` (NVML's error text) when it has no handle.
fn query_device(nvml: &NvmlDriver, i: c_uint) -> Result<Device, String> {
    let mut dev: nvmlDevice_t = std::ptr::null_mut();
    let r = call!(nvml, nvmlDeviceGetHandleByIndex_v2(i, &mut dev));
    if r != nvmlReturn_t::NVML_SUCCESS {
        return Err(error_string(nvml, r));
    }
    let mut name = [0 as c_char; 96];
    let r = call!(
        nvml,
        nvmlDeviceGetName(dev, name.as_mut_ptr(), name.len() as c_uint)
    );
    let name = answered(r, &name).map(|n| text(n));
    let mut pci = nvmlPciInfo_t::default();
    let r = call!(nvml, nvmlDeviceGetPciInfo_v3(dev, &mut pci));
    let bus_id = answered(r, &pci).map(|p| text(&p.busId));
    let mut disp = nvmlEnableState_t::NVML_FEATURE_DISABLED;
    let r = call!(nvml, nvmlDeviceGetDisplayActive(dev, &mut disp));
    let display_active = answered(r, disp);
    let mut ecc = 0u64;
    let r = call!(
        nvml,
        nvmlDeviceGetTotalEccErrors(
            dev,
            nvmlMemoryErrorType_t::NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
            nvmlEccCounterType_t::NVML_VOLATILE_ECC,
            &mut ecc
        )
    );
    let ecc_uncorrected = answered(r, ecc);
    let mut fan: c_uint = 0;
    let r = call!(nvml, nvmlDeviceGetFanSpeed(dev, &mut fan));
    let fan_percent = answered(r, fan);
    let mut temp: c_uint = 0;
    let r = call!(
        nvml,
        nvmlDeviceGetTemperature(
            dev,
            nvmlTemperatureSensors_t::NVML_TEMPERATURE_GPU,
            &mut temp
        )
    );
    let temperature_c = answered(r, temp);
    let mut pstate = nvmlPstates_t::NVML_PSTATE_UNKNOWN;
    let r = call!(nvml, nvmlDeviceGetPerformanceState(dev, &mut pstate));
    let pstate = answered(r, pstate);
    let mut usage: c_uint = 0;
    let r = call!(nvml, nvmlDeviceGetPowerUsage(dev, &mut usage));
    let power_mw = answered(r, usage);
    let mut limit: c_uint = 0;
    let r = call!(nvml, nvmlDeviceGetEnforcedPowerLimit(dev, &mut limit));
    let power_limit_mw = answered(r, limit);
    let mut mem = nvmlMemory_t::default();
    let r = call!(nvml, nvmlDeviceGetMemoryInfo(dev, &mut mem));
    let memory = answered(r, mem);
    let mut util = nvmlUtilization_t::default();
    let r = call!(nvml, nvmlDeviceGetUtilizationRates(dev, &mut util));
    let utilization = answered(r, util);
    let mut mode = nvmlComputeMode_t::NVML_COMPUTEMODE_DEFAULT;
    let r = call!(nvml, nvmlDeviceGetComputeMode(dev, &mut mode));
    let compute_mode = answered(r, mode);
    let mut uuid = [0 as c_char; 96];
    let r = call!(
        nvml,
        nvmlDeviceGetUUID(dev, uuid.as_mut_ptr(), uuid.len() as c_uint)
    );
    let uuid = answered(r, &uuid).map(|u| text(u));
    Ok(Device {
        name,
        bus_id,
        display_active,
        ecc_uncorrected,
        fan_percent,
        temperature_c,
        pstate,
        power_mw,
        power_limit_mw,
        memory,
        utilization,
        compute_mode,
        uuid,
        processes: query_processes(nvml, dev),
    })
}

/// The device's compute processes (none when NVML cannot list them): a
/// count query first, then the list with room for a few newcomers.
fn query_processes(nvml: &NvmlDriver, dev: nvmlDevice_t) -> Vec<nvmlProcessInfo_t> {
    let mut n: c_uint = 0;
    let r = call!(
        nvml,
        nvmlDeviceGetComputeRunningProcesses_v3(dev, &mut n, std::ptr::null_mut())
    );
    if r != nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE || n == 0 {
        return Vec::new();
    }
    let mut list = vec![nvmlProcessInfo_t::default(); n as usize + 4];
    let mut cap = list.len() as c_uint;
    let r = call!(
        nvml,
        nvmlDeviceGetComputeRunningProcesses_v3(dev, &mut cap, list.as_mut_ptr())
    );
    if r != nvmlReturn_t::NVML_SUCCESS {
        return Vec::new();
    }
    list.truncate(cap as usize);
    list
}

// ---------------------------------------------------------------- formatting

/// The rule between the table's sections, its `+` at the column borders.
const RULE: &str =
    "+-----------------------------------------+------------------------+----------------------+";

/// `f(v)`, or nvidia-smi's "N/A" for a value NVML did not give.
fn na<T>(v: Option<T>, f: impl FnOnce(T) -> String) -> String {
    v.map_or_else(|| "N/A".into(), f)
}

fn print_header(s: &System) {
    let driver = na(s.driver.as_deref(), str::to_string);
    let cuda = na(s.cuda, |v| format!("{}.{}", v / 1000, (v % 1000) / 10));
    println!("{}", "+".to_string() + &"-".repeat(89) + "+");
    println!(
        "| {:<87} |",
        format!(
            "VGPU-SMI {}   Driver Version: {driver}   CUDA Version: {cuda}",
            env!("CARGO_PKG_VERSION")
        )
    );
    println!("{RULE}");
    println!("| GPU  Name                               | Bus-Id          Disp.A | Volatile Uncorr. ECC |");
    println!("| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |");
    println!("|=========================================+========================+======================|");
}

fn print_unavailable(i: c_uint, why: &str) {
    println!("| {i:>3}  {:<82} |", format!("unavailable: {why}"));
}

fn print_device(i: c_uint, d: &Device) {
    let name = na(d.name.as_deref(), str::to_string);
    let bus = na(d.bus_id.as_deref(), str::to_string);
    let disp = na(d.display_active, |d| {
        if d == nvmlEnableState_t::NVML_FEATURE_ENABLED {
            "On"
        } else {
            "Off"
        }
        .into()
    });
    let ecc = na(d.ecc_uncorrected, |e| e.to_string());
    let fan = na(d.fan_percent, |f| format!("{f}%"));
    let temp = na(d.temperature_c, |t| format!("{t}C"));
    let perf = na(d.pstate, |p| format!("P{}", p.0));
    let usage = na(d.power_mw, |u| format!("{}W", u / 1000));
    let cap = na(d.power_limit_mw, |c| format!("{}W", c / 1000));
    let memory = na(d.memory, |m| {
        format!("{}MiB / {}MiB", m.used >> 20, m.total >> 20)
    });
    let util = na(d.utilization, |u| format!("{}%", u.gpu));
    let mode = na(d.compute_mode, |m| match m {
        nvmlComputeMode_t::NVML_COMPUTEMODE_DEFAULT => "Default".into(),
        nvmlComputeMode_t::NVML_COMPUTEMODE_PROHIBITED => "Prohibited".into(),
        nvmlComputeMode_t::NVML_COMPUTEMODE_EXCLUSIVE_PROCESS => "E. Process".into(),
        other => format!("mode {}", other.0),
    });
    let uuid = na(d.uuid.as_deref(), str::to_string);
    println!(
        "| {:>3}  {:<34} | {:<16} {:>5} | {:>20} |",
        i,
        fit(&name, 34),
        bus,
        disp,
        ecc
    );
    println!(
        "| {:<4} {:>5}   {:<4} {:>21} | {:>22} | {:>8} {:>11} |",
        fan,
        temp,
        perf,
        format!("{usage} / {cap}"),
        memory,
        util,
        mode
    );
    println!("| {:<87} |", format!("     {uuid}"));
    println!("{RULE}");
}

/// The processes section: (device index, process) pairs.
fn print_processes(processes: &[(c_uint, nvmlProcessInfo_t)]) {
    println!();
    println!("Processes:");
    println!(
        "  GPU        PID   Type   Process name                              GPU Memory Usage"
    );
    if processes.is_empty() {
        println!("  No running processes found");
    }
    for (gpu, p) in processes {
        let name = std::fs::read_to_string(format!("/proc/{}/comm", p.pid)).unwrap_or_default();
        println!(
            "  {:>3} {:>10}      C   {:<40} {:>10}MiB",
            gpu,
            p.pid,
            name.trim(),
            p.usedGpuMemory >> 20
        );
    }
}

/// `s` cut to `width` characters, as nvidia-smi cuts long product names, so
/// a long value cannot push the table's columns out of line.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width - 3).collect();
        t.push_str("...");
        t
    }
}
