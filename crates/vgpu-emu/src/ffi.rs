//! What the software GPU adds to the FFI runtime (`vgpu-ffi`) at its C
//! boundary: [`Live`], the type every handle argument is converted into, and
//! the two string-output rules.
//!
//! Each family module implements `FromCuda<ItsHandle, CUresult>` for
//! `Live<ItsObject>` next to its registry (a `vgpu_ffi::Shared`), so a body
//! that declares `Live<Event>` receives an event that was live when the call
//! began and never looks a handle up itself.

use cuda_types::cuda::CUresult;
use cuda_types::nvml::nvmlReturn_t;
use std::ffi::{c_char, c_int, c_uint};
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;
use vgpu_ffi::{Out, Shared};

/// A live object named by a handle argument. It is an `Arc`, so the object
/// outlives a destroy racing with the call that received it; a later call
/// with the same handle is refused by the registry.
///
/// A local type, because the orphan rules only allow `FromCuda` impls whose
/// target is defined in this crate.
pub struct Live<T>(pub Arc<T>);

impl<T> Deref for Live<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Registers the object `make` builds from its freshly minted handle, for
/// objects that must know their own handle, and returns it.
pub fn insert_new<T, E: Copy>(registry: &Shared<Arc<T>, E>, make: impl FnOnce(u64) -> T) -> Arc<T> {
    let mut made = None;
    registry.insert_with(|h| made.insert(Arc::new(make(h))).clone());
    made.expect("insert_with calls its closure")
}

/// A value narrowed to an output's C width, saturating: the legacy 32-bit
/// entry points (`cuDeviceTotalMem`, `cuMemGetInfo`) cannot hold 80 GiB and
/// report the largest value they can rather than a small, wrapped one.
pub trait Saturate: Sized {
    fn saturate(v: u64) -> Self;
}

impl Saturate for c_uint {
    fn saturate(v: u64) -> Self {
        v.min(u64::from(c_uint::MAX)) as c_uint
    }
}

impl Saturate for usize {
    fn saturate(v: u64) -> Self {
        usize::try_from(v).unwrap_or(usize::MAX)
    }
}

/// A driver string buffer's length: 0 or less is INVALID_VALUE.
pub fn buffer_len(len: c_int) -> Result<usize, CUresult> {
    usize::try_from(len)
        .ok()
        .filter(|&l| l > 0)
        .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)
}

/// The driver's string rule (`cuDeviceGetName`, `cuDeviceGetPCIBusId`): a
/// short buffer truncates.
///
/// # Safety
/// `buf` is valid for writing `len` bytes.
pub unsafe fn driver_string(buf: Out<c_char>, len: usize, s: &str) {
    // SAFETY: an `Out` is never NULL; `len` bytes are writable per the caller.
    unsafe {
        vgpu_ffi::convert::copy_truncated(NonNull::new_unchecked(buf.as_ptr()), len, s.as_bytes())
    }
}

/// NVML's string rule: a buffer too short for the text and its NUL is
/// NVML_ERROR_INSUFFICIENT_SIZE and nothing is written.
///
/// # Safety
/// `buf` is valid for writing `len` bytes.
pub unsafe fn nvml_string(buf: Out<c_char>, len: c_uint, s: &str) -> Result<(), nvmlReturn_t> {
    // SAFETY: an `Out` is never NULL; `len` bytes are writable per the caller.
    unsafe {
        vgpu_ffi::convert::copy_fitting(
            NonNull::new_unchecked(buf.as_ptr()),
            len as usize,
            s.as_bytes(),
        )
    }
    .map_err(|_| nvmlReturn_t::NVML_ERROR_INSUFFICIENT_SIZE)
}
