//! Where the built shims are, and the names they must be found under.

use std::path::{Path, PathBuf};

/// One shim: its built file and the names applications look for.
pub struct Shim {
    pub file: PathBuf,
    /// The SONAME, what `dlopen("libcuda.so.1")` asks for.
    pub soname: &'static str,
    /// The development link (`libcuda.so`), which cudarc, numba and Ollama's
    /// globbing try first.
    pub devlink: &'static str,
}

pub const CUDA_FILE: &str = "libvgpu_cuda.so";
pub const NVML_FILE: &str = "libvgpu_nvml.so";
/// Exported by both shims so tools can tell them from NVIDIA's libraries.
pub const SHIM_MARKER: &[u8] = b"vgpu_shim_marker";

/// Directories searched for the shims: `VGPU_LIB_DIR`, the directory of the
/// `vgpu` executable (a cargo build), and `../lib/vgpu` beside it (an
/// installed tree).
fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("VGPU_LIB_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            dirs.push(d.to_path_buf());
            dirs.push(d.join("../lib/vgpu"));
        }
    }
    dirs
}

pub fn find_shims() -> Result<[Shim; 2], String> {
    let dirs = search_dirs();
    let find = |name: &str| -> Result<PathBuf, String> {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                let tried: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
                format!(
                    "{name} not found (looked in {}); build with `cargo build --workspace`",
                    tried.join(", ")
                )
            })
    };
    Ok([
        Shim {
            file: find(CUDA_FILE)?,
            soname: "libcuda.so.1",
            devlink: "libcuda.so",
        },
        Shim {
            file: find(NVML_FILE)?,
            soname: "libnvidia-ml.so.1",
            devlink: "libnvidia-ml.so",
        },
    ])
}

/// Whether a library file is one of vgpu's shims (it exports the marker).
pub fn is_vgpu_shim(path: &Path) -> bool {
    match std::fs::read(path) {
        Ok(bytes) => bytes.windows(SHIM_MARKER.len()).any(|w| w == SHIM_MARKER),
        Err(_) => false,
    }
}
