//! The JIT linker, for PTX: cuLinkCreate / AddData / AddFile / Complete.
//!
//! There is no machine code to link, so the "cubin" cuLinkComplete hands
//! back is PTX text that cuModuleLoadData accepts. One PTX input passes
//! through unchanged. Several are merged into one module: the first keeps its
//! header, the others lose their `.version`/`.target`/`.address_size` lines
//! (a module has one header), and the parser resolves `.extern` declarations
//! against definitions elsewhere in the merged text.

use crate::device::ensure_init;
use crate::ffi::{mint_handle, read_c_string};
use crate::module::{image_ptx, jit_options, no_ptx, parse_ptx, read_file, warn, JitLogs};
use cuda_types::cuda::{CUjitInputType, CUjit_option, CUlinkState, CUresult};
use once_cell::sync::Lazy;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::ffi::{c_char, c_uint, c_void};
use std::sync::Arc;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

struct Link {
    logs: JitLogs,
    values: usize,
    inputs: Vec<String>,
    /// The merged image, kept until cuLinkDestroy (the API's lifetime).
    output: Option<Vec<u8>>,
}

static LINKS: Lazy<Mutex<HashMap<usize, Arc<Mutex<Link>>>>> = Lazy::new(Default::default);

fn state(h: CUlinkState) -> Result<Arc<Mutex<Link>>, CUresult> {
    ensure_init()?;
    LINKS
        .lock()
        .get(&(h as usize))
        .cloned()
        .ok_or(INVALID_HANDLE)
}

pub unsafe fn link_create(
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
    out: *mut CUlinkState,
) -> Result<(), CUresult> {
    if out.is_null() {
        return Err(INVALID_VALUE);
    }
    ensure_init()?;
    // SAFETY: the arrays hold `n` entries per the API.
    let logs = unsafe { jit_options(n, options, values) }?;
    let h = mint_handle();
    LINKS.lock().insert(
        h,
        Arc::new(Mutex::new(Link {
            logs,
            values: values as usize,
            inputs: Vec::new(),
            output: None,
        })),
    );
    // SAFETY: checked non-null; writable per the API.
    unsafe { out.write_unaligned(h as CUlinkState) };
    Ok(())
}

/// One input's PTX, or None for an input that is accepted and ignored.
fn input_ptx(kind: CUjitInputType, bytes: &[u8], name: &str) -> Result<Option<String>, CUresult> {
    match kind {
        CUjitInputType::CU_JIT_INPUT_PTX => {
            let end = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
            let text = std::str::from_utf8(&bytes[..end]).map_err(|_| INVALID_VALUE)?;
            Ok(Some(text.to_owned()))
        }
        CUjitInputType::CU_JIT_INPUT_FATBINARY => {
            let mut owned = bytes.to_vec();
            owned.push(0);
            // SAFETY: a complete fatbin copied into `owned`, NUL-terminated
            // in case it is really PTX text.
            unsafe { image_ptx(owned.as_ptr().cast()) }
                .map(Some)
                .map_err(no_ptx)
        }
        // numba and cupy add libcudadevrt for device-side launches, which the
        // interpreter doesn't do; kernels not using it link without it.
        CUjitInputType::CU_JIT_INPUT_LIBRARY => {
            warn(format_args!(
                "link input `{name}` (a device library) is ignored: the software GPU links PTX only"
            ));
            Ok(None)
        }
        k => {
            warn(format_args!(
                "link input `{name}` of type {} is not PTX; the software GPU links PTX only",
                k.0
            ));
            Err(CUresult::CUDA_ERROR_NOT_SUPPORTED)
        }
    }
}

fn add(h: CUlinkState, kind: CUjitInputType, bytes: &[u8], name: &str) -> Result<(), CUresult> {
    let link = state(h)?;
    if let Some(ptx) = input_ptx(kind, bytes, name)? {
        link.lock().inputs.push(ptx);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn link_add_data(
    h: CUlinkState,
    kind: CUjitInputType,
    data: *mut c_void,
    size: usize,
    name: *const c_char,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> Result<(), CUresult> {
    if data.is_null() || size == 0 {
        return Err(INVALID_VALUE);
    }
    // SAFETY: the arrays hold `n` entries per the API.
    unsafe { jit_options(n, options, values) }?;
    // SAFETY: `data` holds `size` bytes per the API.
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) };
    // SAFETY: NUL-terminated or null per the API.
    let name = unsafe { read_c_string(name) }.unwrap_or_default();
    add(h, kind, bytes, &name)
}

pub unsafe fn link_add_file(
    h: CUlinkState,
    kind: CUjitInputType,
    path: *const c_char,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> Result<(), CUresult> {
    // SAFETY: the arrays hold `n` entries per the API.
    unsafe { jit_options(n, options, values) }?;
    state(h)?;
    // SAFETY: NUL-terminated or null per the API.
    let name = unsafe { read_c_string(path) }.unwrap_or_default();
    let bytes = read_file(path)?;
    add(h, kind, &bytes, &name)
}

fn is_header(line: &str) -> bool {
    let t = line.trim_start();
    [".version", ".target", ".address_size"]
        .iter()
        .any(|d| t.starts_with(d))
}

/// Merges PTX inputs into one module's text.
fn merge(inputs: &[String]) -> String {
    let mut out = String::new();
    for (i, text) in inputs.iter().enumerate() {
        if i == 0 {
            out.push_str(text);
        } else {
            for line in text.lines().filter(|l| !is_header(l)) {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}

pub unsafe fn link_complete(
    h: CUlinkState,
    cubin: *mut *mut c_void,
    size: *mut usize,
) -> Result<(), CUresult> {
    if cubin.is_null() || size.is_null() {
        return Err(INVALID_VALUE);
    }
    let link = state(h)?;
    let mut l = link.lock();
    if l.inputs.is_empty() {
        return Err(INVALID_VALUE);
    }
    let text = merge(&l.inputs);
    let checked = parse_ptx(&text);
    let error = checked.as_ref().err().map_or("", |(_, m)| m.as_str());
    // SAFETY: the option arrays given at cuLinkCreate stay valid until
    // cuLinkDestroy, as the API requires.
    unsafe { l.logs.fill(l.values as *mut *mut c_void, "", error) };
    checked.map_err(|(e, _)| e)?;
    let mut image = text.into_bytes();
    image.push(0);
    let out = l.output.insert(image);
    // SAFETY: both checked non-null; writable per the API. The image lives in
    // the link state until cuLinkDestroy.
    unsafe {
        cubin.write_unaligned(out.as_mut_ptr().cast());
        size.write_unaligned(out.len());
    }
    Ok(())
}

pub fn link_destroy(h: CUlinkState) -> Result<(), CUresult> {
    ensure_init()?;
    LINKS
        .lock()
        .remove(&(h as usize))
        .map(drop)
        .ok_or(INVALID_HANDLE)
}
