//! Entry points whose behaviour is the same in every cdylib that exports
//! them — the shims and the software GPU name these in their lists instead
//! of implementing them again.

use crate::convert::Out;
use crate::status::Status;
use cuda_types::cuda::CUresult;
use cuda_types::nvml::nvmlReturn_t;
use std::ffi::c_char;

/// `cuGetErrorName`. Works before `cuInit` (applications call it to
/// report a failed one). An unknown code is CUDA_ERROR_INVALID_VALUE with
/// `*pStr = NULL`, as the driver does.
pub fn cu_get_error_name(error: CUresult, out: Out<*const c_char>) -> Result<(), CUresult> {
    describe(error.name(), out)
}

/// `cuGetErrorString`, with the driver's texts.
pub fn cu_get_error_string(error: CUresult, out: Out<*const c_char>) -> Result<(), CUresult> {
    describe(error.text(), out)
}

fn describe(
    found: Option<&'static std::ffi::CStr>,
    out: Out<*const c_char>,
) -> Result<(), CUresult> {
    match found {
        Some(s) => {
            out.write(s.as_ptr());
            Ok(())
        }
        None => {
            out.write(std::ptr::null());
            Err(CUresult::CUDA_ERROR_INVALID_VALUE)
        }
    }
}

/// `nvmlErrorString`: static text, so it works before `nvmlInit`, after a
/// failed one (Ollama calls it exactly then) and after `nvmlShutdown`.
pub fn nvml_error_string(result: nvmlReturn_t) -> *const c_char {
    result.text().unwrap_or(c"Unknown Error").as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::from_cuda;
    use std::ffi::CStr;

    fn name_of(
        f: fn(CUresult, Out<*const c_char>) -> Result<(), CUresult>,
        e: CUresult,
    ) -> (Result<(), CUresult>, Option<String>) {
        let mut p: *const c_char = c"sentinel".as_ptr();
        // SAFETY: `p` is a live local.
        let out =
            unsafe { from_cuda::<_, Out<*const c_char>, CUresult>(&mut p as *mut _) }.unwrap();
        let r = f(e, out);
        // SAFETY: the function stored NULL or a static C string.
        let s = (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
        (r, s)
    }

    #[test]
    fn cuda_names_and_texts() {
        assert_eq!(
            name_of(cu_get_error_name, CUresult::CUDA_ERROR_OUT_OF_MEMORY),
            (Ok(()), Some("CUDA_ERROR_OUT_OF_MEMORY".into()))
        );
        assert_eq!(
            name_of(cu_get_error_string, CUresult::CUDA_ERROR_OUT_OF_MEMORY),
            (Ok(()), Some("out of memory".into()))
        );
        assert_eq!(
            name_of(cu_get_error_name, CUresult(4242)),
            (Err(CUresult::CUDA_ERROR_INVALID_VALUE), None)
        );
    }

    #[test]
    fn nvml_texts() {
        let t = |r| {
            // SAFETY: static C strings.
            unsafe { CStr::from_ptr(nvml_error_string(r)) }
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            t(nvmlReturn_t::NVML_ERROR_DRIVER_NOT_LOADED),
            "Driver Not Loaded"
        );
        assert_eq!(t(nvmlReturn_t(4242)), "Unknown Error");
    }
}
