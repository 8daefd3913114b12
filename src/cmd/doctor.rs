//! `vgpu doctor`: explains, check by check, why a CUDA application in this
//! environment would or would not see the GPU.
//!
//! Everything that depends on which libraries the loader picks runs in a
//! child (`vgpu doctor --probe`) with this process's environment, so the
//! answer is what an application started from here would get — including
//! LD_PRELOAD and LD_LIBRARY_PATH — and this process is not changed by
//! loading a driver.

use super::driver::{text, CudaDriver, Library, NvmlDriver};
use super::libs::is_vgpu_shim;
use clap::Args;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, CString};
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;
use vgpu_transport::proto::{caps, Hello};
use vgpu_transport::{Client, Endpoint};

#[derive(Args)]
pub struct DoctorArgs {
    /// Internal: load the driver libraries as an application would and
    /// report what happened, one `key=value` line per fact.
    #[arg(long, hide = true)]
    pub probe: bool,
    /// Internal: read the virtual files as a libc reader would.
    #[arg(long, hide = true)]
    pub probe_files: bool,
}

/// Compute capabilities Ollama's CUDA runners are built for (its
/// `CMAKE_CUDA_ARCHITECTURES`, v0.32.15); a device outside a list is
/// skipped by that runner.
const OLLAMA_CUDA_V12: &[&str] = &[
    "5.0", "5.2", "6.0", "6.1", "7.0", "7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0",
];
const OLLAMA_CUDA_V13: &[&str] = &[
    "7.5", "8.0", "8.6", "8.7", "8.9", "9.0", "10.0", "10.3", "11.0", "12.0", "12.1",
];

enum Outcome {
    Pass(String),
    /// What is wrong, and what to do about it.
    Fail(String, String),
    /// Not fatal for CUDA, but worth knowing (with a suggestion).
    Warn(String, String),
}

struct Report {
    failed: bool,
}

impl Report {
    fn show(&mut self, name: &str, o: Outcome) {
        match o {
            Outcome::Pass(d) => println!("PASS  {name}: {d}"),
            Outcome::Fail(d, fix) => {
                self.failed = true;
                println!("FAIL  {name}: {d}\n      fix: {fix}");
            }
            Outcome::Warn(d, fix) => println!("WARN  {name}: {d}\n      hint: {fix}"),
        }
    }
}

pub fn doctor(args: DoctorArgs) -> ExitCode {
    if args.probe {
        probe();
        return ExitCode::SUCCESS;
    }
    if args.probe_files {
        probe_files();
        return ExitCode::SUCCESS;
    }
    let mut r = Report { failed: false };
    let host = std::env::var("VGPU_HOST")
        .unwrap_or_else(|_| vgpu_transport::endpoint::DEFAULT_ENDPOINT.into());
    let daemon = check_daemon(&host);
    let daemon_ok = matches!(daemon, Outcome::Pass(_));
    r.show("daemon", daemon);

    let mut facts = run_probe(&["--probe"], None);
    // The files are the shim's libc hooks' work: read them the way a tool
    // under a preloaded shim would.
    if facts.get("cuda.shim").map(String::as_str) == Some("1") {
        let shim = facts.get("cuda.path").cloned().unwrap_or_default();
        facts.extend(run_probe(&["--probe-files"], Some(&shim)));
    }
    r.show(
        "libcuda.so.1",
        check_library(&facts, "cuda", "libcuda.so.1"),
    );
    r.show(
        "libnvidia-ml.so.1",
        check_library(&facts, "nvml", "libnvidia-ml.so.1"),
    );
    r.show("LD_PRELOAD", check_preload());
    if daemon_ok {
        r.show("cuInit", check_init(&facts));
        r.show("driver version", check_driver_version(&facts));
        r.show("device identity", check_identity(&facts));
        r.show("compute capability", check_cc(&facts));
        r.show("VMM", check_vmm(&facts));
        r.show("NVML memory", check_nvml_memory(&facts));
        r.show("virtual files", check_files(&facts));
    } else {
        println!("SKIP  device checks: no daemon to ask");
    }
    r.show("raw-syscall view", check_raw_syscalls());
    if r.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn check_daemon(host: &str) -> Outcome {
    let ep: Endpoint = match host.parse() {
        Ok(e) => e,
        Err(e) => {
            return Outcome::Fail(
                format!("VGPU_HOST: {e}"),
                "set VGPU_HOST=unix:PATH, tcp:HOST:PORT or vsock:CID:PORT".into(),
            )
        }
    };
    let stream = match ep.connect(Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Fail(
                format!("nothing answers at {ep}: {e}"),
                format!("start the daemon (`vgpu host --listen {ep}`) or point VGPU_HOST at it"),
            )
        }
    };
    // The shims' own reading of VGPU_TOKEN / VGPU_TOKEN_FILE and
    // VGPU_INIT_TIMEOUT, so the token and the wait are a guest's.
    let config = match vgpu_guest::config::Config::from_env() {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(e, "fix the variable named".into()),
    };
    let hello = Hello::new(vgpu_transport::BUILD_ID, caps::BATCH, config.token);
    let mut client = match Client::handshake(stream, &hello, Duration::from_secs(5)) {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Fail(
                format!("{ep} refused the connection: {e}"),
                "use the same vgpu version on host and guest; for TCP set VGPU_TOKEN".into(),
            )
        }
    };
    let limit = config.init_timeout;
    let mut initializing = false;
    let start = std::time::Instant::now();
    let got = vgpu_guest::client::fetch_inventory(&mut client, limit, || {
        initializing = true;
        // stderr: stdout is one line per check.
        eprintln!(
            "vgpu doctor: host is initializing (its GPU driver is starting); waiting up to \
             {:.1} s ({})",
            limit.as_secs_f64(),
            vgpu_guest::config::INIT_TIMEOUT_ENV
        );
    });
    let waited = if initializing {
        format!(
            "; host was initializing: devices after {:.1} s",
            start.elapsed().as_secs_f64()
        )
    } else {
        String::new()
    };
    match got {
        Ok(inv) => Outcome::Pass(format!(
            "{ep}: host build {}, driver {} (CUDA {}, NVIDIA {}), {} device(s){waited}",
            client.hello.build_id,
            inv.driver_kind,
            fmt_cuda(inv.cuda_driver_version),
            inv.system_driver_version,
            inv.devices.len()
        )),
        Err(e) if initializing => Outcome::Fail(
            format!("{ep}: host is initializing: {e}"),
            format!(
                "wait and run doctor again, or give the host longer with {}=SECONDS; \
                 the daemon's log says what its driver is doing",
                vgpu_guest::config::INIT_TIMEOUT_ENV
            ),
        ),
        Err(e) => Outcome::Fail(
            format!("{ep}: inventory failed: {e}"),
            "check the daemon's log".into(),
        ),
    }
}

fn fmt_cuda(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Runs `vgpu doctor <flag>` with our environment (plus `preload` in front
/// of LD_PRELOAD) and parses its facts.
fn run_probe(flag: &[&str], preload: Option<&str>) -> HashMap<String, String> {
    let exe = std::env::current_exe().unwrap_or_else(|_| "vgpu".into());
    let mut cmd = Command::new(exe);
    cmd.arg("doctor").args(flag);
    if let Some(p) = preload {
        let old = std::env::var("LD_PRELOAD").unwrap_or_default();
        cmd.env(
            "LD_PRELOAD",
            if old.is_empty() {
                p.to_string()
            } else {
                format!("{p}:{old}")
            },
        );
    }
    let out = cmd.output();
    let mut facts = HashMap::new();
    match out {
        Ok(o) => {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                if let Some((k, v)) = line.split_once('=') {
                    facts.insert(k.to_string(), v.to_string());
                }
            }
            if !o.status.success() {
                facts.insert("probe.crashed".into(), format!("{}", o.status));
            }
        }
        Err(e) => {
            facts.insert("probe.crashed".into(), e.to_string());
        }
    }
    facts
}

fn check_library(f: &HashMap<String, String>, key: &str, soname: &str) -> Outcome {
    if let Some(c) = f.get("probe.crashed") {
        return Outcome::Fail(
            format!("the probe process died ({c}) while loading the libraries"),
            "run with VGPU_LOG=debug and report the output".into(),
        );
    }
    let path = f.get(&format!("{key}.path")).cloned().unwrap_or_default();
    if path.is_empty() {
        let err = f.get(&format!("{key}.error")).cloned().unwrap_or_default();
        return Outcome::Fail(
            format!("dlopen(\"{soname}\") failed: {err}"),
            "install the shims (`vgpu install`) or start the program with `vgpu run -- ...`".into(),
        );
    }
    if f.get(&format!("{key}.shim")).map(String::as_str) == Some("1") {
        Outcome::Pass(format!(
            "dlopen(\"{soname}\") resolves to vgpu's shim at {path}"
        ))
    } else {
        Outcome::Fail(
            format!("dlopen(\"{soname}\") resolves to {path}, which is not vgpu's shim; it comes first in the loader's search order"),
            format!("remove or rename it, put vgpu's library directory first in LD_LIBRARY_PATH, or `vgpu install --force` (it backs up {path})"),
        )
    }
}

fn check_preload() -> Outcome {
    let mine = std::env::var("LD_PRELOAD").unwrap_or_default();
    if mine.is_empty() {
        return Outcome::Pass("not set (the shims are found through the library path)".into());
    }
    let child = Command::new("/bin/sh")
        .args(["-c", "printf %s \"$LD_PRELOAD\""])
        .output();
    match child {
        Ok(o) if String::from_utf8_lossy(&o.stdout) == mine => {
            let missing: Vec<&str> = mine.split([':', ' ']).filter(|p| !p.is_empty() && !Path::new(p).exists()).collect();
            if missing.is_empty() {
                Outcome::Pass(format!("{mine} (inherited by child processes)"))
            } else {
                Outcome::Fail(format!("LD_PRELOAD names missing files: {}", missing.join(", ")), "fix the paths".into())
            }
        }
        Ok(o) => Outcome::Fail(
            format!("a child process sees LD_PRELOAD={:?}, not {mine:?}", String::from_utf8_lossy(&o.stdout)),
            "something between here and the application rewrites the environment; set it where the application starts".into(),
        ),
        Err(e) => Outcome::Warn(format!("could not start /bin/sh to check inheritance: {e}"), "none".into()),
    }
}

fn check_init(f: &HashMap<String, String>) -> Outcome {
    match f.get("cuda.init").map(String::as_str) {
        Some("0") => Outcome::Pass(format!(
            "CUDA_SUCCESS, {} device(s)",
            f.get("cuda.count").cloned().unwrap_or_default()
        )),
        Some(rc) => Outcome::Fail(
            format!("cuInit returned {rc}"),
            "see the shim's log with VGPU_LOG=debug; 100 means the shim could not reach the daemon"
                .into(),
        ),
        None => Outcome::Fail(
            "cuInit was not reached".into(),
            "fix the libcuda.so.1 check first".into(),
        ),
    }
}

fn check_driver_version(f: &HashMap<String, String>) -> Outcome {
    let v: i32 = match f.get("cuda.driver_version").and_then(|v| v.parse().ok()) {
        Some(v) => v,
        None => {
            return Outcome::Fail(
                "cuDriverGetVersion gave no answer".into(),
                "fix the checks above".into(),
            )
        }
    };
    let (ok, no): (Vec<i32>, Vec<i32>) = [11, 12, 13].iter().partition(|m| v / 1000 >= **m);
    let list = |l: &[i32]| {
        l.iter()
            .map(|m| format!("{m}.x"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let list = |l: &[i32]| {
        if l.is_empty() {
            "no".to_string()
        } else {
            list(l)
        }
    };
    if v / 1000 >= 13 {
        Outcome::Pass(format!(
            "CUDA {}: libcudart {} accept it",
            fmt_cuda(v),
            list(&ok)
        ))
    } else {
        Outcome::Fail(
            format!("CUDA {}: libcudart {} accept it, {} refuse it with cudaErrorInsufficientDriver (Ollama's cuda_v13 runner needs 13.0)", fmt_cuda(v), list(&ok), list(&no)),
            "run the daemon on a host whose NVIDIA driver supports CUDA 13 (driver 580 or newer)".into(),
        )
    }
}

fn check_identity(f: &HashMap<String, String>) -> Outcome {
    let uuid = f.get("cuda.uuid").cloned().unwrap_or_default();
    if uuid.is_empty() || uuid == "GPU-00000000-0000-0000-0000-000000000000" {
        return Outcome::Fail(
            format!("cuDeviceGetUuid gave {uuid:?}"),
            "a zero UUID makes Ollama drop the device; check the daemon's driver".into(),
        );
    }
    match f.get("nvml.by_uuid").map(String::as_str) {
        Some("0") => Outcome::Pass(format!(
            "{} {uuid}, found by NVML under the same UUID",
            f.get("cuda.name").cloned().unwrap_or_default()
        )),
        Some(rc) => Outcome::Fail(
            format!("nvmlDeviceGetHandleByUUID({uuid}) returned {rc}"),
            "the CUDA and NVML libraries disagree; make both resolve to vgpu's shims".into(),
        ),
        None => Outcome::Fail(
            "NVML was not reachable".into(),
            "fix the libnvidia-ml.so.1 check first".into(),
        ),
    }
}

fn check_cc(f: &HashMap<String, String>) -> Outcome {
    let cc = f.get("cuda.cc").cloned().unwrap_or_default();
    let v12 = OLLAMA_CUDA_V12.contains(&cc.as_str());
    let v13 = OLLAMA_CUDA_V13.contains(&cc.as_str());
    match (v12, v13) {
        (true, true) => Outcome::Pass(format!(
            "{cc}: in Ollama's cuda_v12 and cuda_v13 architecture lists"
        )),
        (true, false) | (false, true) => Outcome::Warn(
            format!(
                "{cc}: only in Ollama's {} list",
                if v12 { "cuda_v12" } else { "cuda_v13" }
            ),
            "the other runner skips the device".into(),
        ),
        _ => Outcome::Fail(
            format!("{cc:?}: in none of Ollama's architecture lists"),
            "Ollama skips this device".into(),
        ),
    }
}

fn check_vmm(f: &HashMap<String, String>) -> Outcome {
    let vmm = f.get("cuda.vmm").cloned().unwrap_or_default();
    let gran = f.get("cuda.granularity_rc").cloned().unwrap_or_default();
    match (vmm.as_str(), gran.as_str()) {
        ("0", _) => Outcome::Pass("VMM not advertised (ggml uses cudaMalloc)".into()),
        ("1", "0") => Outcome::Pass("VMM advertised and cuMemGetAllocationGranularity works".into()),
        ("1", rc) => Outcome::Fail(
            format!("VMM advertised but cuMemGetAllocationGranularity returned {rc}; ggml aborts on that"),
            "update vgpu on the host and guest to matching versions".into(),
        ),
        _ => Outcome::Fail(format!("attribute 102 unanswered ({vmm:?})"), "fix the checks above".into()),
    }
}

fn check_nvml_memory(f: &HashMap<String, String>) -> Outcome {
    match f.get("nvml.memory").map(String::as_str) {
        Some("0") => Outcome::Pass(format!(
            "total {} bytes",
            f.get("nvml.total").cloned().unwrap_or_default()
        )),
        Some("3") => Outcome::Fail(
            "nvmlDeviceGetMemoryInfo is NOT_SUPPORTED: Ollama then reports host RAM as GPU memory"
                .into(),
            "make libnvidia-ml.so.1 resolve to vgpu's shim".into(),
        ),
        Some(rc) => Outcome::Fail(
            format!("nvmlDeviceGetMemoryInfo returned {rc}"),
            "check the daemon's log".into(),
        ),
        None => Outcome::Fail(
            "NVML was not reachable".into(),
            "fix the libnvidia-ml.so.1 check first".into(),
        ),
    }
}

fn check_files(f: &HashMap<String, String>) -> Outcome {
    let uuid = f.get("cuda.uuid").cloned().unwrap_or_default();
    let busid = f.get("cuda.busid").cloned().unwrap_or_default();
    match f.get("files.info_uuid") {
        Some(u) if !u.is_empty() && u.eq_ignore_ascii_case(&uuid) => Outcome::Pass(format!(
            "/proc/driver/nvidia/gpus/{busid}/information names {uuid}{}",
            shadowed_device(&busid)
        )),
        Some(u) if !u.is_empty() => Outcome::Fail(
            format!("the information file names {u}, NVML {uuid}"),
            "restart the application (the files are made once per process)".into(),
        ),
        _ => Outcome::Warn(
            "the /proc/driver/nvidia files are not visible to libc readers here".into(),
            "preload a shim (`vgpu run -- CMD` does) for tools that read them".into(),
        ),
    }
}

/// A note when the virtual function's address belongs to another device in
/// the file system this process sees (a virtio function in many VMs), which
/// the virtual files then hide from the guest process.
fn shadowed_device(busid: &str) -> String {
    let attr = |name: &str| raw_read(&format!("/sys/bus/pci/devices/{busid}/{name}"));
    match (attr("vendor"), attr("device")) {
        (Some(v), Some(d)) if !busid.is_empty() && v.trim() != "0x10de" => format!(
            "; it shadows the machine's own PCI device {} {}:{} at that address for CUDA \
             programs (set VGPU_PCI_BUS_ID to use a free address)",
            busid,
            v.trim(),
            d.trim()
        ),
        _ => String::new(),
    }
}

/// A small file read with raw system calls: this process may have the
/// shim's hooks preloaded, and the real file is what is asked for.
fn raw_read(path: &str) -> Option<String> {
    let c = CString::new(path).ok()?;
    // SAFETY: a raw openat with a NUL-terminated path.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    } as c_int;
    if fd < 0 {
        return None;
    }
    let mut buf = [0u8; 256];
    // SAFETY: reads at most buf.len() bytes into buf, from the descriptor
    // just opened, which is then closed.
    let n = unsafe {
        let n = libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len());
        libc::syscall(libc::SYS_close, fd);
        n
    };
    (n >= 0).then(|| String::from_utf8_lossy(&buf[..n as usize]).into_owned())
}

fn check_raw_syscalls() -> Outcome {
    let path = c"/proc/driver/nvidia/version";
    // SAFETY: a raw openat with a valid NUL-terminated path; the descriptor
    // is closed right away.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY,
        )
    } as c_int;
    if fd >= 0 {
        // SAFETY: closing the descriptor just opened.
        unsafe { libc::close(fd) };
        Outcome::Pass("/proc/driver/nvidia/version exists for raw system calls too".into())
    } else {
        Outcome::Warn(
            "programs that bypass libc (Go, such as Ollama) do not see the virtual files here"
                .into(),
            "run them with `vgpu run --isolate -- CMD`".into(),
        )
    }
}

// ---------------------------------------------------------------- probe

fn say(k: &str, v: impl std::fmt::Display) {
    println!("{k}={v}");
}

/// Opens a driver library by SONAME, as an application would, and reports
/// which file the loader picked.
fn open_reported(key: &str, soname: &str) -> Option<Library> {
    match Library::open_any(Path::new(soname)) {
        Ok(lib) => {
            say(&format!("{key}.path"), lib.path.display());
            say(&format!("{key}.shim"), is_vgpu_shim(&lib.path) as u8);
            Some(lib)
        }
        Err(e) => {
            say(&format!("{key}.error"), e);
            None
        }
    }
}

/// What an application started from this environment gets from the loader
/// and the driver libraries.
fn probe() {
    let cuda = open_reported("cuda", "libcuda.so.1");
    let nvml = open_reported("nvml", "libnvidia-ml.so.1");
    let uuid = cuda.and_then(|l| probe_cuda(&l.cuda()));
    if let Some(l) = nvml {
        probe_nvml(&l.nvml(), uuid);
    }
}

/// Reports the CUDA facts; returns device 0's UUID in NVML's form.
fn probe_cuda(t: &CudaDriver) -> Option<String> {
    use cuda_types::cuda::*;
    macro_rules! cu {
        ($f:ident ( $($a:expr),* )) => {
            super::driver::driver_call!(t, $f($($a),*), CUresult::CUDA_ERROR_NOT_FOUND)
        };
    }
    say("cuda.init", cu!(cuInit(0)).0);
    let mut v = 0;
    if cu!(cuDriverGetVersion(&mut v)).0 == 0 {
        say("cuda.driver_version", v);
    }
    let mut n = 0;
    if cu!(cuDeviceGetCount(&mut n)).0 != 0 || n < 1 {
        say("cuda.count", 0);
        return None;
    }
    say("cuda.count", n);
    let attr = |a: CUdevice_attribute| -> Option<c_int> {
        let mut v = 0;
        (cu!(cuDeviceGetAttribute(&mut v, a, 0)).0 == 0).then_some(v)
    };
    if let (Some(ma), Some(mi)) = (
        attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
        attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
    ) {
        say("cuda.cc", format!("{ma}.{mi}"));
    }
    if let Some(v) =
        attr(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED)
    {
        say("cuda.vmm", v);
    }
    let mut b = [0 as c_char; 128];
    if cu!(cuDeviceGetName(b.as_mut_ptr(), 128, 0)).0 == 0 {
        say("cuda.name", text(&b));
    }
    let mut b = [0 as c_char; 32];
    if cu!(cuDeviceGetPCIBusId(b.as_mut_ptr(), 32, 0)).0 == 0 {
        say("cuda.busid", text(&b).to_lowercase());
    }
    let mut uuid = None;
    let mut u = CUuuid::default();
    if cu!(cuDeviceGetUuid(&mut u, 0)).0 == 0 {
        let hex: String = u
            .bytes
            .iter()
            .map(|b| format!("{:02x}", *b as u8))
            .collect();
        let s = format!(
            "GPU-{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        say("cuda.uuid", &s);
        uuid = Some(s);
    }
    // What ggml asks before using VMM: pinned device memory on device 0.
    let prop = CUmemAllocationProp {
        type_: CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED,
        location: CUmemLocation {
            type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
            __bindgen_anon_1: CUmemLocation_st__bindgen_ty_1 { id: 0 },
        },
        ..Default::default()
    };
    let mut g = 0usize;
    let rc = cu!(cuMemGetAllocationGranularity(
        &mut g,
        &prop,
        CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_RECOMMENDED
    ));
    say("cuda.granularity_rc", rc.0);
    uuid
}

fn probe_nvml(t: &NvmlDriver, uuid: Option<String>) {
    use cuda_types::nvml::*;
    macro_rules! nv {
        ($f:ident ( $($a:expr),* )) => {
            super::driver::driver_call!(t, $f($($a),*), nvmlReturn_t::NVML_ERROR_FUNCTION_NOT_FOUND)
        };
    }
    let rc = nv!(nvmlInit_v2());
    say("nvml.init", rc.0);
    if rc.0 != 0 {
        return;
    }
    let mut dev: nvmlDevice_t = std::ptr::null_mut();
    if let Some(u) = uuid {
        let c = std::ffi::CString::new(u).expect("a UUID string has no NUL");
        say(
            "nvml.by_uuid",
            nv!(nvmlDeviceGetHandleByUUID(c.as_ptr(), &mut dev)).0,
        );
    }
    if dev.is_null() {
        nv!(nvmlDeviceGetHandleByIndex_v2(0, &mut dev));
    }
    let mut m = nvmlMemory_t::default();
    let rc = nv!(nvmlDeviceGetMemoryInfo(dev, &mut m));
    say("nvml.memory", rc.0);
    if rc.0 == 0 {
        say("nvml.total", m.total);
    }
}

fn probe_files() {
    let Ok(dir) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return;
    };
    for e in dir.flatten() {
        if let Ok(text) = std::fs::read_to_string(e.path().join("information")) {
            for line in text.lines() {
                if let Some(u) = line.strip_prefix("GPU UUID:") {
                    say("files.info_uuid", u.trim());
                }
            }
        }
    }
}
