//! How long an image is, from its bytes alone.
//!
//! `cuModuleLoadData`, `cuModuleLoadFatBinary` and `cuLibraryLoadData` take
//! a bare pointer: the driver finds the end by parsing. A remoting driver
//! must do the same before it can ship the bytes (reference §8.4). The
//! formats: a fatbin wrapper (cudart's `__fatBinC_Wrapper_t`, pointing at a
//! container), a fatbin container, a cubin ELF, NUL-terminated PTX.
//!
//! Nothing here can prove that a pointer is readable, so every length read
//! from a header is bounded by [`MAX_IMAGE`]: garbage is refused with
//! CUDA_ERROR_INVALID_IMAGE instead of turning into a read across the
//! address space.

use cuda_types::cuda::CUresult;
use std::ffi::c_void;

pub const INVALID_IMAGE: CUresult = CUresult::CUDA_ERROR_INVALID_IMAGE;

/// No real image comes near this; the transport refuses anything larger
/// than one frame anyway.
pub const MAX_IMAGE: u64 = 1 << 30;

pub const WRAPPER_MAGIC: u32 = 0x4662_43b1;
pub const CONTAINER_MAGIC: u32 = 0xba55_ed50;
const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const ARCHIVE_MAGIC: &[u8; 8] = b"!<arch>\n";

/// `SHT_NOBITS`: a section that occupies no bytes in the file (.bss,
/// `.nv.shared.*`), so its offset+size says nothing about the file's end.
const SHT_NOBITS: u32 = 8;

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

/// # Safety
/// `p` must be readable for `n` bytes.
unsafe fn read<const N: usize>(p: *const u8) -> [u8; N] {
    // SAFETY: forwarded; unaligned because images need not be.
    unsafe { (p as *const [u8; N]).read_unaligned() }
}

/// # Safety
/// `p + off` must be readable for 2 bytes.
unsafe fn u16_at(p: *const u8, off: u64) -> u16 {
    // SAFETY: forwarded.
    u16::from_le_bytes(unsafe { read(p.add(off as usize)) })
}

/// # Safety
/// `p + off` must be readable for 4 bytes.
unsafe fn u32_at(p: *const u8, off: u64) -> u32 {
    // SAFETY: forwarded.
    u32::from_le_bytes(unsafe { read(p.add(off as usize)) })
}

/// # Safety
/// `p + off` must be readable for 8 bytes.
unsafe fn u64_at(p: *const u8, off: u64) -> u64 {
    // SAFETY: forwarded.
    u64::from_le_bytes(unsafe { read(p.add(off as usize)) })
}

fn bounded(len: u64, what: &str) -> Result<usize, CUresult> {
    if len == 0 || len > MAX_IMAGE {
        return Err(crate::check::reject(
            INVALID_IMAGE,
            format_args!("{what}: implausible length {len}"),
        ));
    }
    Ok(len as usize)
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
    // Read byte by byte up to the first NUL: a PTX string may be shorter
    // than any magic number, and must not be over-read. The binary magics
    // have no zero byte, so a NUL within them means text.
    // SAFETY: stops at the first NUL; a valid image is at least that long.
    match unsafe { ptx_prefix_nul(p, 4) } {
        Some(0) => {
            return Err(crate::check::reject(
                INVALID_IMAGE,
                format_args!("empty image"),
            ))
        }
        // SAFETY: a short string, NUL-terminated (just read).
        Some(_) => return unsafe { ptx(p) },
        None => {}
    }
    // SAFETY: 4 non-NUL bytes were just read.
    let head: [u8; 4] = unsafe { read(p) };
    let magic = u32::from_le_bytes(head);
    match magic {
        // A v2 wrapper's pre-linked array (+16) is not shipped: the wire
        // carries one image, and the nvcc 13.5 v2 wrappers observed (§8.1)
        // run from their container alone.
        WRAPPER_MAGIC => {
            // SAFETY: a wrapper is 24 bytes; +8 holds the container pointer.
            let container = unsafe { u64_at(p, 8) } as *const u8;
            if container.is_null() {
                return Err(crate::check::reject(
                    INVALID_IMAGE,
                    format_args!("fatbin wrapper {p:p} has no container"),
                ));
            }
            // SAFETY: the wrapper's contract: +8 points at a container.
            let c = unsafe { container_len(container) }?;
            Ok(Image {
                format: Format::Wrapper,
                ptr: container,
                len: c,
            })
        }
        CONTAINER_MAGIC => Ok(Image {
            format: Format::Container,
            ptr: p,
            // SAFETY: a container header is 16 bytes.
            len: unsafe { container_len(p) }?,
        }),
        _ if head == ELF_MAGIC => Ok(Image {
            format: Format::Elf,
            ptr: p,
            // SAFETY: the ELF header announces the rest.
            len: unsafe { elf_len(p) }?,
        }),
        // SAFETY: "!<ar" is text: the NUL-terminated string is readable up
        // to 8 bytes or its NUL, whichever comes first.
        _ if unsafe { ptx_prefix_nul(p, 8) }.is_none()
            && unsafe { read::<8>(p) } == *ARCHIVE_MAGIC =>
        {
            Err(crate::check::reject(
                INVALID_IMAGE,
                format_args!("an archive is only an input to cuLink*, not a module image"),
            ))
        }
        // SAFETY: anything else must be NUL-terminated PTX.
        _ => unsafe { ptx(p) },
    }
}

/// The length of a string shorter than `max`, if there is a NUL in its
/// first `max` bytes; reads byte by byte so a short PTX string is never
/// over-read.
///
/// # Safety
/// `p` is readable up to its first NUL or `max` bytes.
unsafe fn ptx_prefix_nul(p: *const u8, max: usize) -> Option<usize> {
    // SAFETY: forwarded; stops at the first NUL.
    (0..max).find(|&i| unsafe { *p.add(i) } == 0)
}

/// PTX: text up to its NUL, the NUL included. The first bytes must look
/// like text, so random binary data is refused instead of scanned to some
/// distant zero.
///
/// # Safety
/// `p` is NUL-terminated.
unsafe fn ptx(p: *const u8) -> Result<Image, CUresult> {
    let text = |b: u8| b.is_ascii_graphic() || b.is_ascii_whitespace();
    // The first bytes decide; later bytes may be anything but NUL
    // (comments, string literals in UTF-8).
    for i in 0..64 {
        // SAFETY: stops at the NUL the caller promises.
        let b = unsafe { *p.add(i) };
        if b == 0 {
            break;
        }
        if !text(b) {
            return Err(crate::check::reject(
                INVALID_IMAGE,
                format_args!("image {p:p}: not a fatbin, cubin or PTX text (byte {b:#04x} at {i})"),
            ));
        }
    }
    // SAFETY: NUL-terminated (caller), and strnlen reads no further.
    let n = unsafe { libc::strnlen(p as *const libc::c_char, MAX_IMAGE as usize) };
    if n as u64 >= MAX_IMAGE {
        return Err(crate::check::reject(
            INVALID_IMAGE,
            format_args!("PTX at {p:p}: no NUL in the first {MAX_IMAGE} bytes"),
        ));
    }
    Ok(Image {
        format: Format::Ptx,
        ptr: p,
        len: n + 1,
    })
}

/// # Safety
/// `p` points at a 16-byte container header.
unsafe fn container_len(p: *const u8) -> Result<usize, CUresult> {
    // SAFETY: the caller's contract.
    let (magic, header, fat) = unsafe { (u32_at(p, 0), u16_at(p, 6), u64_at(p, 8)) };
    if magic != CONTAINER_MAGIC || header < 16 {
        return Err(crate::check::reject(
            INVALID_IMAGE,
            format_args!("{p:p}: not a fatbin container (magic {magic:#x}, header {header})"),
        ));
    }
    bounded(u64::from(header).saturating_add(fat), "fatbin container")
}

/// The end of the last thing an ELF file's headers place in the file.
///
/// # Safety
/// `p` points at a complete ELF header and the tables it announces.
unsafe fn elf_len(p: *const u8) -> Result<usize, CUresult> {
    // SAFETY: e_ident is 16 bytes, checked as ELF by the caller.
    let ident: [u8; 16] = unsafe { read(p) };
    // cubins are ELFCLASS64, little-endian.
    if ident[4] != 2 || ident[5] != 1 {
        return Err(crate::check::reject(
            INVALID_IMAGE,
            format_args!(
                "ELF at {p:p}: class {} data {}, not a 64-bit LE cubin",
                ident[4], ident[5]
            ),
        ));
    }
    // SAFETY: the 64-byte ELF64 header.
    let (phoff, shoff, ehsize, phentsize, phnum, shentsize, shnum) = unsafe {
        (
            u64_at(p, 32),
            u64_at(p, 40),
            u16_at(p, 52),
            u16_at(p, 54),
            u16_at(p, 56),
            u16_at(p, 58),
            u16_at(p, 60),
        )
    };
    let bad = |why: std::fmt::Arguments<'_>| crate::check::reject(INVALID_IMAGE, why);
    if (phnum > 0 && phentsize < 56) || (shnum > 0 && shentsize < 64) {
        return Err(bad(format_args!(
            "ELF at {p:p}: header entries too small ({phentsize}, {shentsize})"
        )));
    }
    // Tables must lie within the bound before any entry is read.
    let table_end =
        |off: u64, n: u16, size: u16| off.saturating_add(u64::from(n) * u64::from(size));
    let ph_end = table_end(phoff, phnum, phentsize);
    let sh_end = table_end(shoff, shnum, shentsize);
    if ph_end > MAX_IMAGE || sh_end > MAX_IMAGE {
        return Err(bad(format_args!(
            "ELF at {p:p}: header tables out of range"
        )));
    }
    let mut end = u64::from(ehsize.max(64)).max(ph_end).max(sh_end);
    for i in 0..u64::from(phnum) {
        let e = phoff + i * u64::from(phentsize);
        // SAFETY: inside the program header table the header announced.
        let (off, filesz) = unsafe { (u64_at(p, e + 8), u64_at(p, e + 32)) };
        end = end.max(off.saturating_add(filesz));
    }
    for i in 0..u64::from(shnum) {
        let e = shoff + i * u64::from(shentsize);
        // SAFETY: inside the section header table the header announced.
        let (ty, off, size) = unsafe { (u32_at(p, e + 4), u64_at(p, e + 24), u64_at(p, e + 32)) };
        if ty != SHT_NOBITS {
            end = end.max(off.saturating_add(size));
        }
    }
    bounded(end, "ELF image")
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
