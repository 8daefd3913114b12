//! How long an image is, from its bytes alone.
//!
//! `cuModuleLoadData`, `cuModuleLoadFatBinary` and `cuLibraryLoadData` take
//! a bare pointer: the driver finds the end by parsing. A remoting driver
//! must do the same before it can ship the bytes (docs/call-path.md "Image length"). The
//! formats: a fatbin wrapper (cudart's `__fatBinC_Wrapper_t`, pointing at a
//! container), a fatbin container, a cubin ELF, NUL-terminated PTX.
//!
//! The formats are parsed by `cuda_abi::image`, the same code the software
//! GPU and the host read images with; this module points it at the
//! application's memory, follows a wrapper's pointer and turns refusals
//! into CUDA_ERROR_INVALID_IMAGE. Nothing can prove that a pointer is
//! readable, so the reader never goes past [`MAX_IMAGE`] bytes and no length
//! read from a header may exceed it: garbage is refused instead of turning
//! into a read across the address space.

use cuda_abi::image::{self as abi, ImageError, ImageKind, Measured, RawImage};
use cuda_types::cuda::CUresult;
use std::ffi::c_void;

pub use cuda_abi::image::MAX_IMAGE;

pub const INVALID_IMAGE: CUresult = CUresult::CUDA_ERROR_INVALID_IMAGE;

/// What a pointer passed as an image turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A wrapper; the bytes to ship are its container's.
    Wrapper,
    Container,
    Elf,
    Ptx,
}

/// The bytes of an image: where they start (for a wrapper, the container
/// it points at, not the wrapper) and how many there are.
#[derive(Debug, Clone, Copy)]
pub struct Image {
    pub format: Format,
    pub ptr: *const u8,
    pub len: usize,
}

impl Image {
    /// # Safety
    /// The image must still be the one [`find`] measured, and alive.
    pub unsafe fn bytes<'a>(&self) -> &'a [u8] {
        // SAFETY: `find` measured `len` readable bytes at `ptr`; the caller
        // keeps them alive.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

fn refuse(p: *const u8, e: ImageError) -> CUresult {
    crate::check::reject(INVALID_IMAGE, format_args!("image {p:p}: {e}"))
}

/// # Safety
/// `p` is non-NULL and holds an image as [`RawImage::new`] requires.
unsafe fn raw(p: *const u8) -> RawImage {
    // SAFETY: forwarded; the cap keeps a garbage header from announcing
    // more than MAX_IMAGE bytes.
    unsafe { RawImage::new(p, MAX_IMAGE as usize) }
}

/// Measures the image at `p`.
///
/// # Safety
/// `p` must be NULL or point at an image the caller promises is valid (the
/// API contract); only headers it announces are read.
pub unsafe fn find(p: *const c_void) -> Result<Image, CUresult> {
    let p = p as *const u8;
    if p.is_null() {
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: non-NULL, and a valid image per the caller.
    let r = unsafe { raw(p) };
    let (kind, len) = match abi::measure(&r, MAX_IMAGE).map_err(|e| refuse(p, e))? {
        // A v2 wrapper's pre-linked array (+16) is not shipped: the wire
        // carries one image, and the nvcc 13.5 v2 wrappers observed (docs/call-path.md "Fatbin wrapper")
        // run from their container alone.
        Measured::Wrapper(w) => {
            let container = w.container as *const u8;
            if container.is_null() {
                return Err(crate::check::reject(
                    INVALID_IMAGE,
                    format_args!("fatbin wrapper {p:p} has no container"),
                ));
            }
            // SAFETY: the wrapper's contract: +8 points at a container.
            let c = unsafe { raw(container) };
            let len = abi::container_len(&c, MAX_IMAGE).map_err(|e| refuse(container, e))?;
            return Ok(Image {
                format: Format::Wrapper,
                ptr: container,
                len,
            });
        }
        Measured::Image { kind, len } => (kind, len),
    };
    let format = match kind {
        ImageKind::Container => Format::Container,
        ImageKind::Elf => Format::Elf,
        _ => Format::Ptx,
    };
    Ok(Image {
        format,
        ptr: p,
        len,
    })
}

/// FNV-1a over the bytes: tells apart two images that happen to sit at
/// the same address with the same length (a buffer reused for another
/// PTX string) without keeping a copy of either.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

// How each format is measured is tested in cuda-abi; these test what this
// module adds: the wrapper's pointer followed, the format each kind ships
// as, and every refusal as the CUresult an application sees.
#[cfg(test)]
mod tests {
    use super::*;
    use cuda_abi::image::{CONTAINER_MAGIC, ELF_MAGIC, WRAPPER_MAGIC};

    /// A container header announcing 24 bytes of entries, then those bytes
    /// and 8 that are not the container's.
    fn container() -> [u8; 48] {
        let mut c = [0xab; 48];
        c[..4].copy_from_slice(&CONTAINER_MAGIC.to_le_bytes());
        c[4..8].copy_from_slice(&[1, 0, 16, 0]);
        c[8..16].copy_from_slice(&24u64.to_le_bytes());
        c
    }

    fn measure(p: *const u8) -> Result<(Format, *const u8, usize), CUresult> {
        // SAFETY: every test image is a complete, live buffer.
        unsafe { find(p as *const c_void) }.map(|i| (i.format, i.ptr, i.len))
    }

    #[test]
    fn formats_ship_from_their_own_address() {
        let c = container();
        assert_eq!(measure(c.as_ptr()), Ok((Format::Container, c.as_ptr(), 40)));
        let mut e = [0u8; 80];
        e[..4].copy_from_slice(&ELF_MAGIC);
        e[4] = 2;
        e[5] = 1;
        assert_eq!(measure(e.as_ptr()), Ok((Format::Elf, e.as_ptr(), 64)));
        let ptx = b".version 8.0\n.target sm_80\n.address_size 64\n\0junk";
        assert_eq!(measure(ptx.as_ptr()), Ok((Format::Ptx, ptx.as_ptr(), 45)));
    }

    #[test]
    fn wrapper_ships_its_container() {
        let c = container();
        for version in [1u32, 2] {
            let prelinked: [u64; 1] = [0];
            let mut w = Vec::new();
            w.extend_from_slice(&WRAPPER_MAGIC.to_le_bytes());
            w.extend_from_slice(&version.to_le_bytes());
            w.extend_from_slice(&(c.as_ptr() as u64).to_le_bytes());
            let extra = if version == 2 {
                prelinked.as_ptr() as u64
            } else {
                0
            };
            w.extend_from_slice(&extra.to_le_bytes());
            assert_eq!(measure(w.as_ptr()), Ok((Format::Wrapper, c.as_ptr(), 40)));
        }
        let mut w = [0u8; 24];
        w[..4].copy_from_slice(&WRAPPER_MAGIC.to_le_bytes());
        assert_eq!(measure(w.as_ptr()).err(), Some(INVALID_IMAGE));
        // A container pointer to something else.
        let other = [0x5au8; 16];
        w[8..16].copy_from_slice(&(other.as_ptr() as u64).to_le_bytes());
        assert_eq!(measure(w.as_ptr()).err(), Some(INVALID_IMAGE));
    }

    #[test]
    fn garbage_is_refused() {
        let mut e = [0u8; 64];
        e[..4].copy_from_slice(&ELF_MAGIC);
        e[4] = 1;
        assert_eq!(measure(e.as_ptr()).err(), Some(INVALID_IMAGE));
        assert_eq!(measure(c"".as_ptr().cast()).err(), Some(INVALID_IMAGE));
        assert_eq!(
            measure(c"\x01\x02\x03\x04\x05\x06\x07\x08\x09".as_ptr().cast()).err(),
            Some(INVALID_IMAGE)
        );
        assert_eq!(
            measure(c"!<arch>\nabc".as_ptr().cast()).err(),
            Some(INVALID_IMAGE)
        );
        assert_eq!(
            measure(std::ptr::null()).err(),
            Some(CUresult::CUDA_ERROR_INVALID_VALUE)
        );
    }

    #[test]
    fn hash_tells_contents_apart() {
        assert_ne!(fnv1a(b"abc"), fnv1a(b"abd"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
