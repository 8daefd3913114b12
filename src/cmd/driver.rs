//! How the CLI itself talks to driver libraries (`smi`, `bench`, `doctor`):
//! typed tables over the generated function lists, and one way to open a
//! library and learn which file the loader picked.

use std::ffi::{c_char, c_void, CStr, CString};

mod cuda_table {
    use cuda_types::cuda::*;
    cuda_types::with_cuda_functions!(api_macros::driver_table { name = Cuda });
}
mod nvml_table {
    use cuda_types::nvml::*;
    cuda_types::with_nvml_functions!(api_macros::driver_table { name = Nvml });
}
pub use cuda_table::Cuda;
pub use nvml_table::Nvml;

/// An opened library, kept for the life of the process (the CLI never
/// unloads one: its function pointers live in the tables).
pub struct Library(*mut c_void);

impl Library {
    /// `dlopen(name_or_path)`. `RTLD_LOCAL` keeps a shim's libc hooks and
    /// symbols out of this process's global scope.
    pub fn open(name: &[u8]) -> Result<Library, String> {
        let c = CString::new(name).map_err(|_| "a library name with a NUL byte".to_string())?;
        // SAFETY: dlopen with a valid C string.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            // SAFETY: dlerror returns null or a NUL-terminated string.
            let e = unsafe { libc::dlerror() };
            let why = if e.is_null() {
                "unknown error".to_string()
            } else {
                // SAFETY: non-null dlerror text.
                unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
            };
            return Err(why);
        }
        Ok(Library(h))
    }

    /// The file the loader actually mapped (symlinks resolved).
    pub fn path(&self) -> String {
        let mut map: *mut c_void = std::ptr::null_mut();
        // SAFETY: RTLD_DI_LINKMAP writes a `struct link_map *` into `map`.
        let rc = unsafe {
            libc::dlinfo(
                self.0,
                libc::RTLD_DI_LINKMAP,
                &mut map as *mut _ as *mut c_void,
            )
        };
        if rc != 0 || map.is_null() {
            return String::new();
        }
        // SAFETY: glibc's link_map starts with l_addr (pointer-sized)
        // followed by l_name (a NUL-terminated path).
        let name = unsafe { *(map as *const *const c_char).add(1) };
        if name.is_null() {
            return String::new();
        }
        // SAFETY: l_name is a valid C string for the object's lifetime.
        let p = unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
        std::fs::canonicalize(&p)
            .map(|c| c.display().to_string())
            .unwrap_or(p)
    }

    fn resolve(&self, name: &CStr) -> *mut c_void {
        // SAFETY: dlsym with a live handle and a C string.
        unsafe { libc::dlsym(self.0, name.as_ptr()) }
    }

    /// The CUDA driver API of this library (absent functions are `None`).
    pub fn cuda(&self) -> Cuda {
        // SAFETY: the names resolve in a CUDA driver library, whose
        // functions have the prototypes of the pinned cuda.h.
        unsafe { Cuda::load(|n| self.resolve(n)) }
    }

    /// The NVML API of this library (absent functions are `None`).
    pub fn nvml(&self) -> Nvml {
        // SAFETY: as for `cuda`, with nvml.h.
        unsafe { Nvml::load(|n| self.resolve(n)) }
    }
}

/// Calls an optional table function; `$missing` when the library lacks it.
/// Evaluates to the function's raw return value.
macro_rules! driver_call {
    ($table:expr, $f:ident ( $($a:expr),* $(,)? ), $missing:expr) => {
        match $table.$f {
            // SAFETY: arguments follow the header's prototype of the function.
            Some(f) => unsafe { f($($a),*) },
            None => $missing,
        }
    };
}
pub(crate) use driver_call;

/// A string out of a C buffer the library filled.
pub fn text(buf: &[c_char]) -> String {
    let bytes: Vec<u8> = buf
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
