//! `cuLink*`: the inputs are collected in the guest and linked on the host
//! in one round trip at `cuLinkComplete`. The linked image stays in the
//! link state until `cuLinkDestroy`, as the API promises the caller.

use crate::args::{self, Live};
use crate::check::{self, reject, INVALID_VALUE};
use crate::module;
use cuda_types::cuda::{CUjitInputType, CUjit_option, CUlinkState, CUresult};
use parking_lot::Mutex;
use std::ffi::{c_uint, c_void, CStr};
use std::sync::Arc;
use vgpu_ffi::{FromCuda, In, Mint, Out, Shared};
use vgpu_guest::log::Level;
use vgpu_guest::vlog;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{LinkComplete, LinkInput};

const INVALID_HANDLE: CUresult = CUresult::CUDA_ERROR_INVALID_HANDLE;

/// `CU_JIT_INPUT_CUBIN` .. `CU_JIT_INPUT_NVVM`.
const MAX_INPUT_TYPE: u32 = 5;

#[derive(Default)]
struct State {
    inputs: Vec<LinkInput>,
    /// The linked image, once complete; its address is what the caller got.
    image: Option<Box<[u8]>>,
    /// `cuLinkCreate`'s options (count, options, values) as addresses: the
    /// caller keeps them valid for the life of the link, and the outputs
    /// among them (logs, wall time) are written at `cuLinkComplete`.
    jit: (c_uint, usize, usize),
}

pub struct Link {
    state: Mutex<State>,
}

/// Link states until `cuLinkDestroy`.
pub(crate) static LINKS: Shared<Arc<Link>, CUresult> =
    Shared::new("link state", INVALID_HANDLE, Mint::Pointer);

impl FromCuda<CUlinkState, CUresult> for Live<Link> {
    unsafe fn from_cuda(h: CUlinkState) -> Result<Self, CUresult> {
        Live::find(&LINKS, h)
    }
}

fn log_options(what: &str, n: c_uint, options: *mut CUjit_option) {
    if n > 0 && !options.is_null() {
        // SAFETY: n entries (API contract).
        let opts = unsafe { std::slice::from_raw_parts(options, n as usize) };
        vlog!(
            Level::Debug,
            "{what}: JIT options {opts:?} left to the host driver's defaults"
        );
    }
}

/// `cuLinkCreate[_v2]`: the inputs among the options are logged, not
/// applied; the outputs are filled at completion.
pub fn create(
    n: c_uint,
    options: *mut CUjit_option,
    values: *mut *mut c_void,
    out: Out<CUlinkState>,
) -> Result<(), CUresult> {
    // The link runs in the current context at completion, but CUDA ties
    // the state to the context current now: insist there is one.
    check::current()?;
    log_options("cuLinkCreate", n, options);
    let h = LINKS.insert(Arc::new(Link {
        state: Mutex::new(State {
            jit: (n, options as usize, values as usize),
            ..State::default()
        }),
    }));
    out.write(args::handle(h));
    Ok(())
}

fn add(l: &Link, ty: CUjitInputType, name: String, data: Vec<u8>) -> Result<(), CUresult> {
    if ty.0 > MAX_INPUT_TYPE {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuLinkAdd*: input type {}", ty.0),
        ));
    }
    let mut st = l.state.lock();
    if st.image.is_some() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuLinkAdd*: link already complete"),
        ));
    }
    st.inputs.push(LinkInput {
        input_type: ty.0,
        name,
        data: Bytes(data),
    });
    Ok(())
}

fn input_name(name: Option<&CStr>, fallback: &str) -> String {
    name.map_or_else(|| fallback.to_owned(), |n| n.to_string_lossy().into_owned())
}

/// # Safety
/// `data` holds `size` readable bytes; `options` is NULL or holds `n`
/// entries (API contract).
#[allow(clippy::too_many_arguments)]
pub unsafe fn add_data(
    l: Live<Link>,
    ty: CUjitInputType,
    data: In<c_void>,
    size: usize,
    name: Option<&CStr>,
    n: c_uint,
    options: *mut CUjit_option,
    _values: *mut *mut c_void,
) -> Result<(), CUresult> {
    if size == 0 {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuLinkAddData: no data"),
        ));
    }
    if size as u64 > crate::image::MAX_IMAGE {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuLinkAddData: {size} bytes"),
        ));
    }
    log_options("cuLinkAddData", n, options);
    // SAFETY: `size` readable bytes (API contract).
    let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), size) }.to_vec();
    add(&l, ty, input_name(name, "data"), bytes)
}

pub fn add_file(
    l: Live<Link>,
    ty: CUjitInputType,
    path: &CStr,
    n: c_uint,
    options: *mut CUjit_option,
    _values: *mut *mut c_void,
) -> Result<(), CUresult> {
    log_options("cuLinkAddFile", n, options);
    let mut bytes = module::read_image_file(path)?;
    // A binary input's size is the file's; only PTX text needs the NUL.
    if ty != CUjitInputType::CU_JIT_INPUT_PTX {
        bytes.pop();
    }
    add(&l, ty, input_name(Some(path), "file"), bytes)
}

pub fn complete(
    l: Live<Link>,
    image_out: Out<*mut c_void>,
    size_out: Out<usize>,
) -> Result<(), CUresult> {
    let (_, ctx) = check::current()?;
    let mut st = l.state.lock();
    if st.image.is_none() {
        if st.inputs.is_empty() {
            return Err(reject(
                INVALID_VALUE,
                format_args!("cuLinkComplete: no inputs"),
            ));
        }
        let call = LinkComplete {
            ctx,
            inputs: std::mem::take(&mut st.inputs),
        };
        let (n, options, values) = st.jit;
        let jit = (n, options as *mut CUjit_option, values as *mut *mut c_void);
        // SAFETY: the options of cuLinkCreate, which the caller keeps valid
        // for the life of the link (API contract).
        let linked = unsafe { module::with_jit_outputs(jit, || check::host(&call)) };
        match linked {
            Ok(Bytes(image)) => st.image = Some(image.into_boxed_slice()),
            Err(e) => {
                // A failed link can be retried (say, after fixing the
                // context), with the same inputs.
                st.inputs = call.inputs;
                return Err(e);
            }
        }
    }
    // The image lives in the state until cuLinkDestroy.
    let image = st.image.as_ref().expect("just linked");
    image_out.write(image.as_ptr() as *mut c_void);
    size_out.write(image.len());
    Ok(())
}

pub fn destroy(h: CUlinkState) -> Result<(), CUresult> {
    LINKS.take(h as u64).map(drop)
}
