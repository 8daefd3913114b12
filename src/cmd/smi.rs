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

fn or_na<T>(r: nvmlReturn_t, v: T, f: impl FnOnce(T) -> String) -> String {
    if r == nvmlReturn_t::NVML_SUCCESS {
        f(v)
    } else {
        "N/A".into()
    }
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
        // SAFETY: nvmlErrorString takes a code and returns a static string.
        Some(f) => {
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

fn print_table(nvml: &NvmlDriver) -> Result<(), String> {
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
    let driver = or_na(r, &drv, |d| text(d));
    let mut cuda = 0i32;
    let r = call!(nvml, nvmlSystemGetCudaDriverVersion_v2(&mut cuda));
    let cuda = or_na(r, cuda, |v| format!("{}.{}", v / 1000, (v % 1000) / 10));
    let mut count: c_uint = 0;
    let r = call!(nvml, nvmlDeviceGetCount_v2(&mut count));
    if r != nvmlReturn_t::NVML_SUCCESS {
        return Err(format!("nvmlDeviceGetCount: {}", error_string(nvml, r)));
    }

    let line = "+-----------------------------------------+------------------------+----------------------+";
    println!("{}", "+".to_string() + &"-".repeat(89) + "+");
    println!(
        "| {:<87} |",
        format!(
            "VGPU-SMI {}   Driver Version: {driver}   CUDA Version: {cuda}",
            env!("CARGO_PKG_VERSION")
        )
    );
    println!("{line}");
    println!("| GPU  Name                               | Bus-Id          Disp.A | Volatile Uncorr. ECC |");
    println!("| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |");
    println!("|=========================================+========================+======================|");
    let mut processes = Vec::new();
    for i in 0..count {
        let mut dev: nvmlDevice_t = std::ptr::null_mut();
        let r = call!(nvml, nvmlDeviceGetHandleByIndex_v2(i, &mut dev));
        if r != nvmlReturn_t::NVML_SUCCESS {
            println!(
                "| {i:>3}  {:<82} |",
                format!("unavailable: {}", error_string(nvml, r))
            );
            continue;
        }
        let mut name = [0 as c_char; 96];
        let r = call!(
            nvml,
            nvmlDeviceGetName(dev, name.as_mut_ptr(), name.len() as c_uint)
        );
        let name = or_na(r, &name, |n| text(n));
        let mut pci = nvmlPciInfo_t::default();
        let r = call!(nvml, nvmlDeviceGetPciInfo_v3(dev, &mut pci));
        let bus = or_na(r, &pci, |p| text(&p.busId));
        let mut disp = nvmlEnableState_t::NVML_FEATURE_DISABLED;
        let r = call!(nvml, nvmlDeviceGetDisplayActive(dev, &mut disp));
        let disp = or_na(r, disp, |d| {
            if d == nvmlEnableState_t::NVML_FEATURE_ENABLED {
                "On"
            } else {
                "Off"
            }
            .into()
        });
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
        let ecc = or_na(r, ecc, |e| e.to_string());
        let mut fan: c_uint = 0;
        let r = call!(nvml, nvmlDeviceGetFanSpeed(dev, &mut fan));
        let fan = or_na(r, fan, |f| format!("{f}%"));
        let mut temp: c_uint = 0;
        let r = call!(
            nvml,
            nvmlDeviceGetTemperature(
                dev,
                nvmlTemperatureSensors_t::NVML_TEMPERATURE_GPU,
                &mut temp
            )
        );
        let temp = or_na(r, temp, |t| format!("{t}C"));
        let mut pstate = nvmlPstates_t::NVML_PSTATE_UNKNOWN;
        let r = call!(nvml, nvmlDeviceGetPerformanceState(dev, &mut pstate));
        let perf = or_na(r, pstate, |p| format!("P{}", p.0));
        let mut usage: c_uint = 0;
        let r = call!(nvml, nvmlDeviceGetPowerUsage(dev, &mut usage));
        let usage = or_na(r, usage, |u| format!("{}W", u / 1000));
        let mut cap: c_uint = 0;
        let r = call!(nvml, nvmlDeviceGetEnforcedPowerLimit(dev, &mut cap));
        let cap = or_na(r, cap, |c| format!("{}W", c / 1000));
        let mut mem = nvmlMemory_t::default();
        let r = call!(nvml, nvmlDeviceGetMemoryInfo(dev, &mut mem));
        let memory = or_na(r, mem, |m| {
            format!("{}MiB / {}MiB", m.used >> 20, m.total >> 20)
        });
        let mut util = nvmlUtilization_t::default();
        let r = call!(nvml, nvmlDeviceGetUtilizationRates(dev, &mut util));
        let util = or_na(r, util, |u| format!("{}%", u.gpu));
        let mut mode = nvmlComputeMode_t::NVML_COMPUTEMODE_DEFAULT;
        let r = call!(nvml, nvmlDeviceGetComputeMode(dev, &mut mode));
        let mode = or_na(r, mode, |m| match m {
            nvmlComputeMode_t::NVML_COMPUTEMODE_DEFAULT => "Default".into(),
            nvmlComputeMode_t::NVML_COMPUTEMODE_PROHIBITED => "Prohibited".into(),
            nvmlComputeMode_t::NVML_COMPUTEMODE_EXCLUSIVE_PROCESS => "E. Process".into(),
            other => format!("mode {}", other.0),
        });
        let mut uuid = [0 as c_char; 96];
        let r = call!(
            nvml,
            nvmlDeviceGetUUID(dev, uuid.as_mut_ptr(), uuid.len() as c_uint)
        );
        let uuid = or_na(r, &uuid, |u| text(u));

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
        println!("{line}");

        let mut n: c_uint = 0;
        let r = call!(
            nvml,
            nvmlDeviceGetComputeRunningProcesses_v3(dev, &mut n, std::ptr::null_mut())
        );
        if r == nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE && n > 0 {
            let mut list = vec![nvmlProcessInfo_t::default(); n as usize + 4];
            let mut cap = list.len() as c_uint;
            let r = call!(
                nvml,
                nvmlDeviceGetComputeRunningProcesses_v3(dev, &mut cap, list.as_mut_ptr())
            );
            if r == nvmlReturn_t::NVML_SUCCESS {
                processes.extend(list.into_iter().take(cap as usize).map(|p| (i, p)));
            }
        }
    }
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
    let _ = call!(nvml, nvmlShutdown());
    Ok(())
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
