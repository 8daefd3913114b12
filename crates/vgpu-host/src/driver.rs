//! Finding and loading the GPU driver: the real NVIDIA pair
//! (`libcuda.so.1` + `libnvidia-ml.so.1`) or vgpu's software GPU
//! (`libvgpu_emu.so`, one library exporting both APIs).
//!
//! The supervisor only *resolves* the driver (dlopen + dlsym, never a call
//! into it); each worker then loads the resolved paths and initializes them
//! in its own process, so a driver that misbehaves touches one guest only.
//!
//! The CLI (`vgpu smi`, `bench`, `doctor`) opens driver libraries and the
//! shims through the same [`Library`] and typed tables ([`Library::cuda`],
//! [`Library::nvml`]).

use std::ffi::{c_void, CStr, CString};
use std::fmt;
use std::path::{Path, PathBuf};

#[allow(clippy::missing_safety_doc)]
mod cuda_table {
    use cuda_types::cuda::*;
    cuda_types::with_cuda_functions!(api_macros::driver_table { name = CudaDriver });
}

#[allow(clippy::missing_safety_doc)]
mod nvml_table {
    use cuda_types::nvml::*;
    cuda_types::with_nvml_functions!(api_macros::driver_table { name = NvmlDriver });
}

pub use cuda_table::CudaDriver;
pub use nvml_table::NvmlDriver;

/// Symbol every vgpu shim exports. A library that has it is vgpu itself
/// (an installed shim named `libcuda.so.1`); serving guests from it would
/// loop the daemon back into itself.
pub const SHIM_MARKER: &CStr = c"vgpu_shim_marker";

/// Environment override for the software GPU's location.
pub const EMU_LIB_ENV: &str = "VGPU_EMU_LIB";
pub const EMU_LIB_NAME: &str = "libvgpu_emu.so";
/// The environment variable through which workers hand the software GPU its
/// profile (`vgpu host --profile`).
pub const EMU_PROFILE_ENV: &str = "VGPU_EMU_PROFILE";
/// The software GPU's answer to "does the driver you imitate export this
/// name": `int vgpu_emu_exports(const char *name)`.
pub const EMU_EXPORTS: &CStr = c"vgpu_emu_exports";
type EmuExports = unsafe extern "C" fn(*const std::ffi::c_char) -> std::ffi::c_int;

/// The profiles a software GPU library offers (`vgpu_emu_profiles`), default
/// first. Calls nothing that initializes the library.
pub fn emu_profiles(lib: &Path) -> Result<Vec<String>, String> {
    let lib = Library::open(lib, c"vgpu_emu_profiles")?;
    let f = lib.sym(c"vgpu_emu_profiles");
    // SAFETY: exported by the software GPU with this prototype; it returns a
    // static NUL-terminated string.
    let names = unsafe {
        let f = std::mem::transmute::<*mut c_void, extern "C" fn() -> *const std::ffi::c_char>(f);
        CStr::from_ptr(f())
    };
    Ok(names
        .to_string_lossy()
        .split(',')
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect())
}

/// What `--driver` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverChoice {
    /// The real driver when one loads, else the software GPU.
    Auto,
    Emulated,
    /// A specific `libcuda.so.1` (or a library exporting both APIs).
    Path(PathBuf),
}

impl std::str::FromStr for DriverChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DriverChoice::Auto),
            "emulated" | "emu" => Ok(DriverChoice::Emulated),
            "" => Err("empty --driver".into()),
            p => Ok(DriverChoice::Path(PathBuf::from(p))),
        }
    }
}

/// Which family of driver serves guests; `HelloReply::driver_kind` and
/// `Inventory::driver_kind` carry [`DriverKind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    Nvidia,
    Emulated,
}

impl DriverKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriverKind::Nvidia => "nvidia",
            DriverKind::Emulated => "emulated",
        }
    }
}

impl std::str::FromStr for DriverKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nvidia" => Ok(DriverKind::Nvidia),
            "emulated" => Ok(DriverKind::Emulated),
            _ => Err(format!("unknown driver kind `{s}`")),
        }
    }
}

/// A driver the supervisor located: absolute paths a worker can load
/// without searching again (so every worker gets the same library).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDriver {
    pub kind: DriverKind,
    pub cuda_lib: PathBuf,
    /// `None`: the real driver loaded but NVML did not; NVML queries then
    /// answer `NVML_ERROR_LIBRARY_NOT_FOUND`.
    pub nvml_lib: Option<PathBuf>,
}

impl fmt::Display for ResolvedDriver {
    /// The form of the daemon's first log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            DriverKind::Nvidia => write!(
                f,
                "nvidia ({}, {})",
                self.cuda_lib.display(),
                self.nvml_lib
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "no NVML".into())
            ),
            DriverKind::Emulated => {
                write!(f, "emulated (software GPU, {})", self.cuda_lib.display())
            }
        }
    }
}

/// A dlopen'ed library. Never closed: drivers keep threads and global state
/// alive that do not survive an unload.
pub struct Library {
    handle: *mut c_void,
    /// Where the dynamic loader actually found it.
    pub path: PathBuf,
}

// SAFETY: a dlopen handle is a process-global token; dlsym on it is
// thread-safe.
unsafe impl Send for Library {}
// SAFETY: as above; the handle is never mutated.
unsafe impl Sync for Library {}

impl Library {
    /// `dlopen(name, RTLD_NOW | RTLD_LOCAL)`: a name is searched for as an
    /// application's would be, and `RTLD_LOCAL` keeps the library's symbols
    /// (a shim's libc hooks) out of this process's global scope. `path` is
    /// the file the loader mapped, symlinks resolved.
    pub fn open_any(name: &Path) -> Result<Library, String> {
        let c = CString::new(name.as_os_str().as_encoded_bytes())
            .map_err(|_| format!("{}: path contains a NUL byte", name.display()))?;
        // SAFETY: `c` is a valid C string; dlopen runs the library's
        // constructors, which is the point of loading a driver.
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            // dlerror already names the file.
            return Err(dlerror());
        }
        let path = mapped_file(handle).unwrap_or_else(|| name.to_path_buf());
        Ok(Library { handle, path })
    }

    /// [`Library::open_any`], for a library that must export `probe`; the
    /// file that defines `probe` is then `path`.
    pub fn open(name: &Path, probe: &CStr) -> Result<Library, String> {
        let mut lib = Library::open_any(name)?;
        let sym = lib.sym(probe);
        if sym.is_null() {
            return Err(format!(
                "{}: does not export {}",
                name.display(),
                probe.to_string_lossy()
            ));
        }
        if let Some(p) = path_of(sym) {
            lib.path = p;
        }
        Ok(lib)
    }

    pub fn sym(&self, name: &CStr) -> *mut c_void {
        // SAFETY: `handle` came from a successful dlopen; `name` is a C string.
        unsafe { libc::dlsym(self.handle, name.as_ptr()) }
    }

    /// Whether this library is one of vgpu's own shims.
    pub fn is_vgpu_shim(&self) -> bool {
        !self.sym(SHIM_MARKER).is_null()
    }

    /// The CUDA driver API this library exports (absent functions `None`).
    /// The software GPU exports every function but imitates drivers that
    /// lack some: what it says its driver does not export (see
    /// [`EMU_EXPORTS`]) stays `None` too, exactly as on a real old driver.
    pub fn cuda(&self) -> CudaDriver {
        let exports = self.sym(EMU_EXPORTS);
        let exported = (!exports.is_null()).then(|| {
            // SAFETY: the software GPU exports this name with exactly this
            // prototype (vgpu_emu::loader).
            unsafe { std::mem::transmute::<*mut c_void, EmuExports>(exports) }
        });
        let resolve = |n: &CStr| match exported {
            // SAFETY: `n` is a NUL-terminated name for the call's duration.
            Some(f) if unsafe { f(n.as_ptr()) } == 0 => std::ptr::null_mut(),
            _ => self.sym(n),
        };
        // SAFETY: the resolver returns null or dlsym results of this
        // library, whose exports follow the pinned cuda.h's prototypes by
        // name.
        unsafe { CudaDriver::load(resolve) }
    }

    /// The NVML API this library exports (absent functions `None`).
    pub fn nvml(&self) -> NvmlDriver {
        // SAFETY: as for `cuda`, with the pinned nvml.h.
        unsafe { NvmlDriver::load(|n| self.sym(n)) }
    }
}

fn dlerror() -> String {
    // SAFETY: dlerror returns null or a C string valid until the next dl* call
    // on this thread; we copy it at once.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown dlopen error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// The file the loader mapped for `handle` (its link-map entry), symlinks
/// resolved.
fn mapped_file(handle: *mut c_void) -> Option<PathBuf> {
    let mut map: *mut c_void = std::ptr::null_mut();
    // SAFETY: `handle` is a live dlopen handle; RTLD_DI_LINKMAP writes one
    // `struct link_map *` into `map`.
    let rc = unsafe {
        libc::dlinfo(
            handle,
            libc::RTLD_DI_LINKMAP,
            &mut map as *mut *mut c_void as *mut c_void,
        )
    };
    if rc != 0 || map.is_null() {
        return None;
    }
    // SAFETY: glibc's `struct link_map` starts with `l_addr` (pointer-sized)
    // and then `l_name`, a C string valid while the object stays loaded
    // (forever, see `Library`).
    let name = unsafe { *(map as *const *const std::ffi::c_char).add(1) };
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null `l_name`, as above.
    let p = PathBuf::from(
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned(),
    );
    std::fs::canonicalize(&p).ok().or(Some(p))
}

/// The file that contains `addr`, from the dynamic loader.
fn path_of(addr: *mut c_void) -> Option<PathBuf> {
    // SAFETY: Dl_info is plain old data.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads loader tables and fills `info`.
    let ok = unsafe { libc::dladdr(addr, &mut info) };
    if ok == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname points into the loader's link map, valid while the
    // library stays loaded (forever, see `Library`).
    let s = unsafe { CStr::from_ptr(info.dli_fname) };
    let p = PathBuf::from(s.to_string_lossy().into_owned());
    std::fs::canonicalize(&p).ok().or(Some(p))
}

/// Where the software GPU library is: `$VGPU_EMU_LIB`, else next to the
/// running executable (both live in `target/<profile>/` or the install dir).
pub fn emu_library_path() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(EMU_LIB_ENV) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(format!("{EMU_LIB_ENV}={}: no such file", p.display()));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut tried = Vec::new();
    // `cargo test` runs binaries from target/<profile>/deps.
    for d in [dir.to_path_buf(), dir.join(".."), dir.join("../lib")] {
        let p = d.join(EMU_LIB_NAME);
        if p.is_file() {
            return Ok(std::fs::canonicalize(&p).unwrap_or(p));
        }
        tried.push(p.display().to_string());
    }
    Err(format!(
        "the software GPU ({EMU_LIB_NAME}) was not found (looked at {}); \
         build it with `cargo build -p vgpu-emu` or set {EMU_LIB_ENV}",
        tried.join(", ")
    ))
}

/// Something driver resolution found worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub text: String,
}

impl Note {
    fn info(text: String) -> Note {
        Note {
            warning: false,
            text,
        }
    }
    fn warn(text: String) -> Note {
        Note {
            warning: true,
            text,
        }
    }
}

/// Decides which driver serves guests. Loads candidates with dlopen and
/// inspects their symbols; calls no driver function. Besides the driver it
/// returns notes worth logging (e.g. why NVML is missing) — the caller logs
/// them after the line that names the driver, which must come first.
pub fn resolve(choice: &DriverChoice) -> Result<(ResolvedDriver, Vec<Note>), String> {
    let mut notes = Vec::new();
    let d = match choice {
        DriverChoice::Emulated => resolve_emulated()?,
        DriverChoice::Path(p) => resolve_path(p, &mut notes)?,
        DriverChoice::Auto => match resolve_nvidia(Path::new("libcuda.so.1"), &mut notes) {
            Ok(d) => d,
            Err(why) => {
                let d =
                    resolve_emulated().map_err(|e| format!("{e} (and no real driver: {why})"))?;
                // The normal case on a machine without a GPU: not a warning.
                notes.push(Note::info(format!("no real NVIDIA driver: {why}")));
                d
            }
        },
    };
    Ok((d, notes))
}

fn resolve_emulated() -> Result<ResolvedDriver, String> {
    let p = emu_library_path()?;
    let lib = Library::open(&p, c"cuInit")?;
    if lib.sym(c"nvmlInit_v2").is_null() {
        return Err(format!("{}: exports no NVML", lib.path.display()));
    }
    Ok(ResolvedDriver {
        kind: DriverKind::Emulated,
        cuda_lib: lib.path.clone(),
        nvml_lib: Some(lib.path),
    })
}

fn resolve_path(p: &Path, notes: &mut Vec<Note>) -> Result<ResolvedDriver, String> {
    let lib = Library::open(p, c"cuInit")?;
    if lib.is_vgpu_shim() {
        return Err(format!(
            "{} is a vgpu shim, not a driver (it would forward to this daemon)",
            lib.path.display()
        ));
    }
    // One library with both APIs is the software GPU (or a test double).
    if !lib.sym(c"nvmlInit_v2").is_null() {
        let emu = lib
            .path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains("vgpu_emu"));
        return Ok(ResolvedDriver {
            kind: if emu {
                DriverKind::Emulated
            } else {
                DriverKind::Nvidia
            },
            cuda_lib: lib.path.clone(),
            nvml_lib: Some(lib.path),
        });
    }
    // A real libcuda: NVML normally sits in the same directory.
    let beside = lib.path.parent().map(|d| d.join("libnvidia-ml.so.1"));
    let nvml = beside
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("libnvidia-ml.so.1"));
    Ok(ResolvedDriver {
        kind: DriverKind::Nvidia,
        cuda_lib: lib.path,
        nvml_lib: open_nvml(&nvml, notes),
    })
}

fn resolve_nvidia(cuda: &Path, notes: &mut Vec<Note>) -> Result<ResolvedDriver, String> {
    let lib = Library::open(cuda, c"cuInit")?;
    if lib.is_vgpu_shim() {
        return Err(format!("{} is a vgpu shim", lib.path.display()));
    }
    Ok(ResolvedDriver {
        kind: DriverKind::Nvidia,
        cuda_lib: lib.path,
        nvml_lib: open_nvml(Path::new("libnvidia-ml.so.1"), notes),
    })
}

/// NVML is optional for a real driver: without it guests still compute,
/// only monitoring answers fail.
fn open_nvml(p: &Path, notes: &mut Vec<Note>) -> Option<PathBuf> {
    match Library::open(p, c"nvmlInit_v2") {
        Ok(l) if l.is_vgpu_shim() => {
            notes.push(Note::warn(format!(
                "{} is a vgpu shim; NVML disabled",
                l.path.display()
            )));
            None
        }
        Ok(l) => Some(l.path),
        Err(e) => {
            notes.push(Note::warn(format!("NVML unavailable: {e}")));
            None
        }
    }
}

/// A driver loaded in a worker: both function tables.
pub struct Driver {
    pub kind: DriverKind,
    pub cuda: CudaDriver,
    pub nvml: NvmlDriver,
    /// Whether NVML initialized; if not, NVML queries fail, driver calls work.
    pub nvml_ok: bool,
}

impl Driver {
    /// Loads the resolved libraries. Functions a library lacks stay `None`.
    pub fn load(d: &ResolvedDriver) -> Result<Driver, String> {
        let cuda_lib = Library::open(&d.cuda_lib, c"cuInit")?;
        if cuda_lib.is_vgpu_shim() {
            return Err(format!("{} is a vgpu shim", cuda_lib.path.display()));
        }
        let cuda = cuda_lib.cuda();
        let nvml_lib = match &d.nvml_lib {
            Some(p) if *p == d.cuda_lib => Some(cuda_lib),
            Some(p) => match Library::open(p, c"nvmlInit_v2") {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!("NVML unavailable: {e}");
                    None
                }
            },
            None => None,
        };
        let nvml = match &nvml_lib {
            Some(l) => l.nvml(),
            // SAFETY: every entry resolves to null and stays `None`.
            None => unsafe { NvmlDriver::load(|_| std::ptr::null_mut()) },
        };
        // The handles stay open for the life of the process on purpose.
        std::mem::forget(nvml_lib);
        Ok(Driver {
            kind: d.kind,
            cuda,
            nvml,
            nvml_ok: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_choice_parses() {
        assert_eq!("auto".parse(), Ok(DriverChoice::Auto));
        assert_eq!("emulated".parse(), Ok(DriverChoice::Emulated));
        assert_eq!(
            "/x/libcuda.so.1".parse(),
            Ok(DriverChoice::Path("/x/libcuda.so.1".into()))
        );
        assert!("".parse::<DriverChoice>().is_err());
    }

    #[test]
    fn missing_library_is_an_error_not_a_crash() {
        let e = Library::open(Path::new("/nonexistent/libcuda.so.1"), c"cuInit")
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/libcuda.so.1"), "{e}");
        // libc is loaded but is not a driver.
        let e = resolve_path(Path::new("libc.so.6"), &mut Vec::new())
            .err()
            .unwrap();
        assert!(e.contains("cuInit"), "{e}");
    }

    #[test]
    fn open_any_reports_the_file_the_loader_mapped() {
        // Searched for by SONAME, as an application would.
        let lib = Library::open_any(Path::new("libc.so.6")).unwrap();
        assert!(lib.path.is_absolute(), "{}", lib.path.display());
        assert_eq!(
            lib.path,
            std::fs::canonicalize(&lib.path).unwrap(),
            "symlinks resolved"
        );
        let name = lib.path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("libc"), "{name}");
        assert!(!lib.sym(c"getpid").is_null());
        assert!(!lib.is_vgpu_shim());
        // Not a driver: every table entry is absent.
        assert!(lib.cuda().cuInit.is_none());
        assert!(lib.nvml().nvmlInit_v2.is_none());
        let e = Library::open_any(Path::new("/nonexistent/libnvidia-ml.so.1"))
            .err()
            .unwrap();
        assert!(e.contains("/nonexistent/libnvidia-ml.so.1"), "{e}");
    }

    #[test]
    fn display_forms() {
        let d = ResolvedDriver {
            kind: DriverKind::Emulated,
            cuda_lib: "/t/libvgpu_emu.so".into(),
            nvml_lib: Some("/t/libvgpu_emu.so".into()),
        };
        assert_eq!(d.to_string(), "emulated (software GPU, /t/libvgpu_emu.so)");
        let d = ResolvedDriver {
            kind: DriverKind::Nvidia,
            cuda_lib: "/usr/lib/libcuda.so.1".into(),
            nvml_lib: Some("/usr/lib/libnvidia-ml.so.1".into()),
        };
        assert_eq!(
            d.to_string(),
            "nvidia (/usr/lib/libcuda.so.1, /usr/lib/libnvidia-ml.so.1)"
        );
    }
}
