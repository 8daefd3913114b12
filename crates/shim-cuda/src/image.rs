//! How long an image is, from its bytes alone.
//!
//! `cuModuleLoadData`, `cuModuleLoadFatBinary` and `cuLibraryLoadData` take
//! a bare pointer: the driver finds the end by parsing. A remoting driver
//! must do the same before it can ship the bytes (reference §8.4). The
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
        // carries one image, and the nvcc 13.5 v2 wrappers observed (§8.1)
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

#[cfg(test)]
mod tests {
    use super::*;
    use cuda_abi::image::{CONTAINER_MAGIC, ELF_MAGIC, WRAPPER_MAGIC};

    const SHT_NOBITS: u32 = 8;

    fn container(payload: usize) -> Vec<u8> {
        let mut c = Vec::new();
        c.extend_from_slice(&CONTAINER_MAGIC.to_le_bytes());
        c.extend_from_slice(&1u16.to_le_bytes());
        c.extend_from_slice(&16u16.to_le_bytes());
        c.extend_from_slice(&(payload as u64).to_le_bytes());
        c.extend(std::iter::repeat_n(0xabu8, payload));
        // Whatever follows in .nv_fatbin must not count.
        c.extend_from_slice(&[0x11; 32]);
        c
    }

    fn measure(p: *const u8) -> Result<(Format, *const u8, usize), CUresult> {
        // SAFETY: every test image is a complete, live buffer.
        unsafe { find(p as *const c_void) }.map(|i| (i.format, i.ptr, i.len))
    }

    #[test]
    fn container_is_header_plus_fat_size() {
        let c = container(40);
        assert_eq!(measure(c.as_ptr()), Ok((Format::Container, c.as_ptr(), 56)));
    }

    #[test]
    fn wrapper_ships_its_container() {
        let c = container(24);
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
    }

    /// A 64-bit ELF: header, 1 program header, 3 sections, one of them
    /// NOBITS reaching far past the file, the section table last.
    fn elf() -> Vec<u8> {
        let mut e = vec![0u8; 64];
        e[..4].copy_from_slice(&ELF_MAGIC);
        e[4] = 2;
        e[5] = 1;
        let phoff = 64u64;
        let data_off = phoff + 56;
        let data_len = 100u64;
        let shoff = data_off + data_len + 4;
        e[32..40].copy_from_slice(&phoff.to_le_bytes());
        e[40..48].copy_from_slice(&shoff.to_le_bytes());
        e[52..54].copy_from_slice(&64u16.to_le_bytes());
        e[54..56].copy_from_slice(&56u16.to_le_bytes());
        e[56..58].copy_from_slice(&1u16.to_le_bytes());
        e[58..60].copy_from_slice(&64u16.to_le_bytes());
        e[60..62].copy_from_slice(&3u16.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[8..16].copy_from_slice(&data_off.to_le_bytes());
        ph[32..40].copy_from_slice(&data_len.to_le_bytes());
        e.extend_from_slice(&ph);
        e.extend(std::iter::repeat_n(0x5au8, (data_len + 4) as usize));
        let section = |ty: u32, off: u64, size: u64| {
            let mut s = vec![0u8; 64];
            s[4..8].copy_from_slice(&ty.to_le_bytes());
            s[24..32].copy_from_slice(&off.to_le_bytes());
            s[32..40].copy_from_slice(&size.to_le_bytes());
            s
        };
        e.extend(section(0, 0, 0));
        e.extend(section(1, data_off, data_len + 4));
        e.extend(section(SHT_NOBITS, data_off, 1 << 20));
        assert_eq!(e.len() as u64, shoff + 3 * 64);
        e.extend_from_slice(&[0x77; 16]);
        e
    }

    #[test]
    fn elf_ignores_nobits_and_trailing_bytes() {
        let e = elf();
        let len = e.len() - 16;
        assert_eq!(measure(e.as_ptr()), Ok((Format::Elf, e.as_ptr(), len)));
    }

    #[test]
    fn elf_section_past_the_tables_counts() {
        let mut e = elf();
        // The data section now ends after the section table.
        let shoff = u64::from_le_bytes(e[40..48].try_into().unwrap()) as usize;
        let s1 = shoff + 64;
        let off = u64::from_le_bytes(e[s1 + 24..s1 + 32].try_into().unwrap());
        let new_size = (e.len() as u64 - off) + 8;
        e[s1 + 32..s1 + 40].copy_from_slice(&new_size.to_le_bytes());
        e.extend_from_slice(&[0; 8]);
        let want = (off + new_size) as usize;
        assert_eq!(measure(e.as_ptr()).unwrap().2, want);
    }

    #[test]
    fn elf_garbage_is_refused() {
        let mut e = elf();
        e[4] = 1;
        assert_eq!(measure(e.as_ptr()).err(), Some(INVALID_IMAGE));
        let mut e = elf();
        e[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(measure(e.as_ptr()).err(), Some(INVALID_IMAGE));
    }

    #[test]
    fn ptx_is_strlen_plus_one() {
        let ptx = b".version 8.0\n.target sm_80\n.address_size 64\n\0junk";
        assert_eq!(measure(ptx.as_ptr()), Ok((Format::Ptx, ptx.as_ptr(), 45)));
        let tiny = b"x\0";
        assert_eq!(measure(tiny.as_ptr()).unwrap().2, 2);
    }

    #[test]
    fn garbage_is_refused() {
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
