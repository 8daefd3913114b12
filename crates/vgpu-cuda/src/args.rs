//! What this library's C arguments become before a body runs, for the
//! kinds every family shares (`vgpu_ffi::FromCuda`, see
//! `crates/vgpu-ffi/src/convert.rs`):
//!
//! - [`Wide`]: an unsigned integer the API passes at more than one width
//!   (the legacy 32-bit `CUdeviceptr_v1`/`unsigned int` sizes, 64-bit
//!   device pointers, `size_t`), so the 32-bit and 64-bit exports of one
//!   function share one body;
//! - [`Word`]: the same for results, written through `Out<T>` at the width
//!   the export declares;
//! - [`Live`]: a live object of one handle kind, found in its registry.
//!   Each kind converts beside its registry (`context/state.rs`,
//!   `stream.rs`, `event.rs`, `module.rs`, `link.rs`).
//!
//! Handles are minted by `vgpu_ffi::Shared` registries ([`Mint::Pointer`]):
//! never an object's address, never reused, so a stale or invented handle
//! is simply not found and nothing is dereferenced.
//!
//! [`Mint::Pointer`]: vgpu_ffi::Mint::Pointer

use cuda_types::cuda::CUresult;
use std::ops::Deref;
use std::sync::Arc;
use vgpu_ffi::{FromCuda, Shared};

/// An unsigned integer argument, widened to 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wide(pub u64);

impl FromCuda<u32, CUresult> for Wide {
    unsafe fn from_cuda(v: u32) -> Result<Self, CUresult> {
        Ok(Wide(v.into()))
    }
}

impl FromCuda<u64, CUresult> for Wide {
    unsafe fn from_cuda(v: u64) -> Result<Self, CUresult> {
        Ok(Wide(v))
    }
}

impl FromCuda<usize, CUresult> for Wide {
    unsafe fn from_cuda(v: usize) -> Result<Self, CUresult> {
        Ok(Wide(v as u64))
    }
}

/// An unsigned integer result type: a body computes 64 bits and writes
/// them at the width its export's out-pointer has.
pub trait Word: Copy {
    /// `v`, if it fits.
    fn exact(v: u64) -> Option<Self>;
    /// `v`, or the largest value when it does not fit (sizes, so that a
    /// big device never looks small through a 32-bit interface).
    fn saturating(v: u64) -> Self;
}

impl Word for u32 {
    fn exact(v: u64) -> Option<Self> {
        u32::try_from(v).ok()
    }
    fn saturating(v: u64) -> Self {
        u32::try_from(v).unwrap_or(u32::MAX)
    }
}

impl Word for u64 {
    fn exact(v: u64) -> Option<Self> {
        Some(v)
    }
    fn saturating(v: u64) -> Self {
        v
    }
}

impl Word for usize {
    fn exact(v: u64) -> Option<Self> {
        usize::try_from(v).ok()
    }
    fn saturating(v: u64) -> Self {
        usize::try_from(v).unwrap_or(usize::MAX)
    }
}

/// A live object of kind `T`, as a handle argument converts to it.
#[derive(Debug)]
pub struct Live<T>(pub Arc<T>);

impl<T> Live<T> {
    /// The object behind handle `h`, or the registry's error for its kind.
    pub fn find<H>(registry: &Shared<Arc<T>, CUresult>, h: *mut H) -> Result<Self, CUresult> {
        registry.get(h as u64).map(Live)
    }

    pub fn into_arc(self) -> Arc<T> {
        self.0
    }
}

impl<T> Deref for Live<T> {
    type Target = Arc<T>;
    fn deref(&self) -> &Arc<T> {
        &self.0
    }
}

/// Makes an object from its freshly minted handle (objects hand their own
/// handle back to the application) and registers it.
pub fn register<T>(registry: &Shared<Arc<T>, CUresult>, make: impl FnOnce(u64) -> T) -> Arc<T> {
    let mut made = None;
    registry.insert_with(|h| {
        let obj = Arc::new(make(h));
        made = Some(obj.clone());
        obj
    });
    made.expect("insert_with calls make exactly once")
}

/// A registry handle as the C pointer type the application holds.
pub fn handle<H>(h: u64) -> *mut H {
    h as usize as *mut H
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu_ffi::{from_cuda, Mint};

    #[test]
    fn widths() {
        // SAFETY: plain integers.
        unsafe {
            assert_eq!(
                from_cuda::<u32, Wide, CUresult>(u32::MAX),
                Ok(Wide(0xffff_ffff))
            );
            assert_eq!(from_cuda::<usize, Wide, CUresult>(7), Ok(Wide(7)));
            assert_eq!(
                from_cuda::<u64, Wide, CUresult>(u64::MAX),
                Ok(Wide(u64::MAX))
            );
        }
        assert_eq!(u32::exact(0xffff_ffff), Some(u32::MAX));
        assert_eq!(u32::exact(0x1_0000_0000), None);
        assert_eq!(u32::saturating(0x1_0000_0000), u32::MAX);
        assert_eq!(u32::saturating(5), 5);
        assert_eq!(usize::exact(u64::MAX), Some(usize::MAX));
    }

    #[test]
    fn registered_objects_know_their_handle() {
        static R: Shared<Arc<(u64, &str)>, CUresult> =
            Shared::new("thing", CUresult::CUDA_ERROR_INVALID_HANDLE, Mint::Pointer);
        let a = register(&R, |h| (h, "a"));
        let found = Live::find(&R, handle::<u8>(a.0)).unwrap();
        assert!(Arc::ptr_eq(&found, &a));
        assert_eq!(found.1, "a");
        assert_eq!(
            Live::find(&R, std::ptr::null_mut::<u8>()).err(),
            Some(CUresult::CUDA_ERROR_INVALID_HANDLE)
        );
    }
}
