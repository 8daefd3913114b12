//! `cuLink*`: the inputs are collected in the guest and linked on the host
//! in one round trip at `cuLinkComplete`. The linked image stays in the
//! link state until `cuLinkDestroy`, as the API promises the caller.

use crate::check::{self, reject, INVALID_VALUE};
use crate::driver;
use crate::module;
use cuda_types::cuda::{CUjitInputType, CUjit_option, CUlinkState, CUresult};
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::ffi::{c_char, c_uint, c_void, CStr};
use std::sync::Arc;
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
}

struct Link {
    state: Mutex<State>,
}

static LIVE: RwLock<BTreeMap<usize, Arc<Link>>> = RwLock::new(BTreeMap::new());

fn lookup(h: CUlinkState) -> Result<Arc<Link>, CUresult> {
    LIVE.read().get(&(h as usize)).cloned().ok_or_else(|| {
        reject(
            INVALID_HANDLE,
            format_args!("{h:p} is not a live link state"),
        )
    })
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

pub unsafe fn create(
    n: c_uint,
    options: *mut CUjit_option,
    _values: *mut *mut c_void,
    out: *mut CUlinkState,
) -> Result<(), CUresult> {
    driver::get()?;
    if out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuLinkCreate: NULL out-pointer"),
        ));
    }
    // The link runs in the current context at completion, but CUDA ties
    // the state to the context current now: insist there is one.
    check::current()?;
    log_options("cuLinkCreate", n, options);
    let l = Arc::new(Link {
        state: Mutex::new(State::default()),
    });
    let h = Arc::as_ptr(&l) as CUlinkState;
    LIVE.write().insert(h as usize, l);
    // SAFETY: checked non-null; writable by contract.
    unsafe { out.write(h) };
    Ok(())
}

fn add(h: CUlinkState, ty: CUjitInputType, name: String, data: Vec<u8>) -> Result<(), CUresult> {
    if ty.0 > MAX_INPUT_TYPE {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuLinkAdd*: input type {}", ty.0),
        ));
    }
    let l = lookup(h)?;
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

fn input_name(name: *const c_char, fallback: &str) -> String {
    if name.is_null() {
        return fallback.to_owned();
    }
    // SAFETY: a NUL-terminated name (API contract).
    unsafe { CStr::from_ptr(name) }
        .to_string_lossy()
        .into_owned()
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn add_data(
    h: CUlinkState,
    ty: CUjitInputType,
    data: *mut c_void,
    size: usize,
    name: *const c_char,
    n: c_uint,
    options: *mut CUjit_option,
    _values: *mut *mut c_void,
) -> Result<(), CUresult> {
    driver::get()?;
    if data.is_null() || size == 0 {
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
    let bytes = unsafe { std::slice::from_raw_parts(data as *const u8, size) }.to_vec();
    add(h, ty, input_name(name, "data"), bytes)
}

pub unsafe fn add_file(
    h: CUlinkState,
    ty: CUjitInputType,
    path: *const c_char,
    n: c_uint,
    options: *mut CUjit_option,
    _values: *mut *mut c_void,
) -> Result<(), CUresult> {
    driver::get()?;
    log_options("cuLinkAddFile", n, options);
    // SAFETY: a NUL-terminated path (API contract).
    let mut bytes = unsafe { module::read_image_file(path) }?;
    // A binary input's size is the file's; only PTX text needs the NUL.
    if ty != CUjitInputType::CU_JIT_INPUT_PTX {
        bytes.pop();
    }
    add(h, ty, input_name(path, "file"), bytes)
}

pub unsafe fn complete(
    h: CUlinkState,
    image_out: *mut *mut c_void,
    size_out: *mut usize,
) -> Result<(), CUresult> {
    driver::get()?;
    if image_out.is_null() || size_out.is_null() {
        return Err(reject(
            INVALID_VALUE,
            format_args!("cuLinkComplete: NULL out-pointer"),
        ));
    }
    let l = lookup(h)?;
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
        match check::host(&call) {
            Ok(Bytes(image)) => st.image = Some(image.into_boxed_slice()),
            Err(e) => {
                // A failed link can be retried (say, after fixing the
                // context), with the same inputs.
                st.inputs = call.inputs;
                return Err(e);
            }
        }
    }
    let image = st.image.as_ref().expect("just linked");
    // SAFETY: checked non-null; writable by contract. The image lives in
    // the state until cuLinkDestroy.
    unsafe {
        image_out.write(image.as_ptr() as *mut c_void);
        size_out.write(image.len());
    }
    Ok(())
}

pub fn destroy(h: CUlinkState) -> Result<(), CUresult> {
    driver::get()?;
    LIVE.write()
        .remove(&(h as usize))
        .map(drop)
        .ok_or_else(|| reject(INVALID_HANDLE, format_args!("cuLinkDestroy: {h:p}")))
}
