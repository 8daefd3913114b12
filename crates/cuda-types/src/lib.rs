//! FFI types of the pinned CUDA driver and NVML headers, and the one list of
//! every function those headers declare.
//!
//! Everything under `generated/` is written by `scripts/gen-bindings.sh`; this
//! file only arranges it. The function lists are `macro_rules!` that hand every
//! prototype to a callback macro, so the shims' exports, the software GPU's
//! exports and the host's driver table all derive from the same list.

#[allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code, clippy::all)]
pub mod cuda {
    include!("generated/cuda.rs");
}

#[allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code, clippy::all)]
pub mod nvml {
    include!("generated/nvml.rs");
}

/// The `cuGetProcAddress` input table, see [`pfn::PFN_TYPEDEFS`].
pub mod pfn {
    include!("generated/cuda_pfn.rs");
}

#[doc(hidden)]
pub mod lists {
    include!("generated/cuda_functions.rs");
    include!("generated/nvml_functions.rs");
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
