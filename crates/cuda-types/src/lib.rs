//! FFI types of the pinned CUDA driver and NVML headers, and the one list of
//! every function those headers declare.
//!
//! Everything under `generated/` is written by `scripts/gen-bindings.sh`; this
//! file only arranges it. The function lists are `macro_rules!` that hand every
//! prototype to a callback macro, so the shims' exports, the software GPU's
//! exports and the host's driver table all derive from the same list.

#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
pub mod cuda {
    include!("generated/cuda.rs");
}

#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    clippy::all,
    clippy::undocumented_unsafe_blocks
)]
pub mod nvml {
    include!("generated/nvml.rs");
}

/// The `cuGetProcAddress` table, see [`pfn::PROC_TABLE`].
pub mod pfn {
    include!("generated/cuda_pfn.rs");
}

#[doc(hidden)]
pub mod lists {
    include!("generated/cuda_functions.rs");
    include!("generated/nvml_functions.rs");
    include!("generated/results.rs");
}

pub use lists::{CUDA_FUNCTIONS_COUNT, NVML_FUNCTIONS_COUNT};

impl cuda::CUresult {
    /// `Ok(())` for `CUDA_SUCCESS`, the code otherwise, so `?` works.
    pub fn ok(self) -> Result<(), cuda::CUresult> {
        if self == cuda::CUresult::CUDA_SUCCESS {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl nvml::nvmlReturn_t {
    /// `Ok(())` for `NVML_SUCCESS`, the code otherwise, so `?` works.
    pub fn ok(self) -> Result<(), nvml::nvmlReturn_t> {
        if self == nvml::nvmlReturn_t::NVML_SUCCESS {
            Ok(())
        } else {
            Err(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pfn::PROC_TABLE;

    /// The ABIs the reference names must come out of the generated table.
    #[test]
    fn proc_table_maps_known_abis() {
        let find = |name: &str, version: u32, pt: bool| {
            PROC_TABLE
                .iter()
                .find(|e| e.name == name && e.version == version && e.per_thread == pt)
                .map(|e| e.symbol)
        };
        assert_eq!(find("cuMemAlloc", 3020, false), Some("cuMemAlloc_v2"));
        assert_eq!(find("cuMemAlloc", 2000, false), Some("cuMemAlloc"));
        assert_eq!(find("cuCtxCreate", 11040, false), Some("cuCtxCreate_v3"));
        assert_eq!(find("cuCtxCreate", 12050, false), Some("cuCtxCreate_v4"));
        assert_eq!(
            find("cuMemcpyHtoD", 7000, true),
            Some("cuMemcpyHtoD_v2_ptds")
        );
        assert_eq!(
            find("cuLaunchKernel", 7000, true),
            Some("cuLaunchKernel_ptsz")
        );
        assert_eq!(
            find("cuEventElapsedTime", 12080, false),
            Some("cuEventElapsedTime_v2")
        );
        assert_eq!(
            find("cuGetProcAddress", 12000, false),
            Some("cuGetProcAddress_v2")
        );
        assert_eq!(
            find("cuCtxSynchronize", 13000, false),
            Some("cuCtxSynchronize_v2")
        );
        assert_eq!(
            find("cuStreamGetCaptureInfo", 12030, true),
            Some("cuStreamGetCaptureInfo_v3_ptsz")
        );
    }
}
