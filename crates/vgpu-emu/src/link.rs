//! The JIT linker, for PTX: cuLinkCreate / AddData / AddFile / Complete.
//!
//! There is no machine code to link, so the "cubin" cuLinkComplete hands
//! back is PTX text that cuModuleLoadData accepts. One PTX input passes
//! through unchanged. Several are merged into one module: the first keeps its
//! header, the others lose their `.version`/`.target`/`.address_size` lines
//! (a module has one header), and the parser resolves `.extern` declarations
//! against definitions elsewhere in the merged text.

use crate::ffi::Live;
use crate::module::{image_ptx, jit_options, no_ptx, parse_ptx, read_file, warn, JitLogs};
use cuda_types::cuda::{CUjitInputType, CUjit_option, CUlinkState, CUresult};
use parking_lot::Mutex;
use std::ffi::{c_uint, c_void, CStr};
use std::sync::Arc;
use vgpu_ffi::{FromCuda, Mint, Out, Shared};

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;
const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

pub struct Link {
    state: Mutex<State>,
}

struct State {
    logs: JitLogs,
    values: usize,
    inputs: Vec<String>,
    /// The merged image, kept until cuLinkDestroy (the API's lifetime).
    output: Option<Vec<u8>>,
}

static LINKS: Shared<Arc<Link>, CUresult> = Shared::new("link", INVALID_HANDLE, Mint::Pointer);

impl FromCuda<CUlinkState, CUresult> for Live<Link> {
    unsafe fn from_cuda(h: CUlinkState) -> Result<Self, CUresult> {
        LINKS.get(h as u64).map(Live)
    }
}

pub unsafe fn link_create(
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
    out: Out<CUlinkState>,
) -> Result<(), CUresult> {
    // SAFETY: the arrays hold `n` entries per the API.
    let logs = unsafe { jit_options(n, options, values) }?;
    let h = LINKS.insert(Arc::new(Link {
        state: Mutex::new(State {
            logs,
            values: values as usize,
            inputs: Vec::new(),
            output: None,
        }),
    }));
    out.write(h as CUlinkState);
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

fn add(link: &Link, kind: CUjitInputType, bytes: &[u8], name: &str) -> Result<(), CUresult> {
    if let Some(ptx) = input_ptx(kind, bytes, name)? {
        link.state.lock().inputs.push(ptx);
    }
    Ok(())
}

/// `name` may be NULL.
#[allow(clippy::too_many_arguments)]
pub unsafe fn link_add_data(
    link: Live<Link>,
    kind: CUjitInputType,
    data: *mut c_void,
    size: usize,
    name: Option<&CStr>,
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
    let name = name.map(CStr::to_string_lossy).unwrap_or_default();
    add(&link, kind, bytes, &name)
}

pub unsafe fn link_add_file(
    link: Live<Link>,
    kind: CUjitInputType,
    path: &CStr,
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
) -> Result<(), CUresult> {
    // SAFETY: the arrays hold `n` entries per the API.
    unsafe { jit_options(n, options, values) }?;
    let bytes = read_file(path)?;
    add(&link, kind, &bytes, &path.to_string_lossy())
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

pub fn link_complete(
    link: Live<Link>,
    cubin: Out<*mut c_void>,
    size: Out<usize>,
) -> Result<(), CUresult> {
    let mut l = link.state.lock();
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
    // The image lives in the link state until cuLinkDestroy.
    cubin.write(out.as_mut_ptr().cast());
    size.write(out.len());
    Ok(())
}

pub fn link_destroy(h: CUlinkState) -> Result<(), CUresult> {
    LINKS.take(h as u64).map(drop)
}
