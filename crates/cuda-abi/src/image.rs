//! Module images (docs/call-path.md, "Module images"): what one is and how long it is, read
//! from its own headers, and the fatbin container and entry headers.
//!
//! `cuModuleLoadData` and friends take a bare pointer, so the shim must find
//! the end of an image by parsing it, while the PTX crate, the software GPU
//! and the host worker parse images that arrived as byte slices. Both go
//! through [`ImageBytes`]: a slice, or a [`RawImage`] whose length nobody
//! knows, which refuses to read past a cap so that garbage cannot turn into
//! a read across the address space.
//!
//! Decompression of entries ([`ContainerEntry::decompressed`]) needs
//! compression crates that the shim must not link: it exists only with the
//! `decompress` feature, which the host worker and the software GPU enable.

use std::fmt;

pub const WRAPPER_MAGIC: u32 = 0x4662_43b1;
pub const CONTAINER_MAGIC: u32 = 0xba55_ed50;
pub const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
pub const ARCHIVE_MAGIC: &[u8; 8] = b"!<arch>\n";

/// No real image comes near this; the transport refuses anything larger
/// than one frame anyway. The guest shim's bound on any length it reads
/// from a header behind a raw pointer.
pub const MAX_IMAGE: u64 = 1 << 30;

/// Entry kinds.
pub const KIND_PTX: u16 = 1;
pub const KIND_ELF: u16 = 2;
/// Entry flags: the payload's compression.
pub const FLAG_LZ4: u64 = 0x2000;
pub const FLAG_ZSTD: u64 = 0x8000;
/// Entries smaller than this cannot hold the fields of [`EntryHeader`].
pub const MIN_ENTRY_HEADER: usize = 64;

/// `SHT_NOBITS`: a section that occupies no bytes in the file (.bss,
/// `.nv.shared.*`), so its offset+size says nothing about the file's end.
const SHT_NOBITS: u32 = 8;
/// How many leading bytes must look like text before a NUL is searched
/// for: random binary data is refused instead of scanned to a distant zero.
const TEXT_PREFIX: usize = 64;

/// Bytes of an image, by offset.
pub trait ImageBytes {
    /// The `len` bytes at `off`, or `None` where the reader has no such
    /// bytes (past a slice's end, past a raw image's cap).
    fn get(&self, off: usize, len: usize) -> Option<&[u8]>;

    /// The offset of the first NUL in `from..limit`, reading byte by byte
    /// (a string must not be read past its NUL); `None` when there is none
    /// among the bytes the reader has.
    fn nul_at(&self, from: usize, limit: usize) -> Option<usize> {
        (from..limit).find_map(|i| match self.get(i, 1)? {
            [0] => Some(Some(i)),
            _ => None,
        })?
    }
}

impl ImageBytes for [u8] {
    fn get(&self, off: usize, len: usize) -> Option<&[u8]> {
        self.get(off..off.checked_add(len)?)
    }

    fn nul_at(&self, from: usize, limit: usize) -> Option<usize> {
        let end = limit.min(self.len());
        let i = self.get(from..end)?.iter().position(|&b| b == 0)?;
        Some(from + i)
    }
}

/// An image behind a pointer whose length is unknown: what an application
/// hands to `cuModuleLoadData`. Reads stop at `cap` bytes whatever a header
/// claims.
#[derive(Debug, Clone, Copy)]
pub struct RawImage {
    ptr: *const u8,
    cap: usize,
}

impl RawImage {
    /// # Safety
    /// `ptr` is non-NULL, and for as long as the reader is used, every byte
    /// below `cap` that the functions of this module ask for is readable and
    /// not written to. They ask only for what a valid image of the format
    /// they found announces: the headers and the tables those headers place,
    /// a wrapper's 24 bytes, or a NUL-terminated string up to its NUL. That
    /// is the promise the CUDA API demands of the application.
    pub unsafe fn new(ptr: *const u8, cap: usize) -> Self {
        RawImage { ptr, cap }
    }

    pub fn ptr(&self) -> *const u8 {
        self.ptr
    }
}

impl ImageBytes for RawImage {
    fn get(&self, off: usize, len: usize) -> Option<&[u8]> {
        if off.checked_add(len)? > self.cap {
            return None;
        }
        // SAFETY: below the cap, and asked for by a parser of this module,
        // which `new`'s caller promised readable.
        Some(unsafe { std::slice::from_raw_parts(self.ptr.add(off), len) })
    }

    fn nul_at(&self, from: usize, limit: usize) -> Option<usize> {
        // SAFETY: byte by byte, stopping at the first NUL of a string the
        // caller of `new` promised NUL-terminated, and below the cap.
        (from..limit.min(self.cap)).find(|&i| unsafe { *self.ptr.add(i) } == 0)
    }
}

fn array<const N: usize, R: ImageBytes + ?Sized>(r: &R, off: usize) -> Option<[u8; N]> {
    r.get(off, N)?.try_into().ok()
}
fn u16_at<R: ImageBytes + ?Sized>(r: &R, off: usize) -> Option<u16> {
    array(r, off).map(u16::from_le_bytes)
}
fn u32_at<R: ImageBytes + ?Sized>(r: &R, off: usize) -> Option<u32> {
    array(r, off).map(u32::from_le_bytes)
}
fn u64_at<R: ImageBytes + ?Sized>(r: &R, off: usize) -> Option<u64> {
    array(r, off).map(u64::from_le_bytes)
}

/// The little-endian u32 an image starts with, if it has 4 bytes.
pub fn magic<R: ImageBytes + ?Sized>(r: &R) -> Option<u32> {
    u32_at(r, 0)
}

/// What an image is, judged by its first bytes alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Wrapper,
    Container,
    Elf,
    /// Only an input to `cuLink*`, which passes sizes.
    Archive,
    Ptx,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// The first byte is NUL.
    Empty,
    Archive,
    /// Neither a binary magic nor text.
    NotText {
        byte: u8,
        at: usize,
    },
    /// PTX without a NUL within the cap (or the bytes there are).
    NoNul,
    NotContainer {
        magic: u32,
        header: u16,
    },
    Implausible {
        what: &'static str,
        len: u64,
    },
    ElfClass {
        class: u8,
        data: u8,
    },
    ElfEntrySizes {
        ph: u16,
        sh: u16,
    },
    ElfTables,
    /// A header or table the image announces is not among the bytes.
    Truncated,
    /// A compressed entry (its flags), and this build cannot decompress
    /// (the `decompress` feature is off).
    Compressed {
        flags: u64,
    },
    /// A compressed entry whose data does not decompress to the size its
    /// header announces.
    Decompress {
        codec: &'static str,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Empty => write!(f, "empty image"),
            ImageError::Archive => {
                write!(
                    f,
                    "an archive is only an input to cuLink*, not a module image"
                )
            }
            ImageError::NotText { byte, at } => write!(
                f,
                "not a fatbin, cubin or PTX text (byte {byte:#04x} at {at})"
            ),
            ImageError::NoNul => write!(f, "PTX without a NUL in its first {MAX_IMAGE} bytes"),
            ImageError::NotContainer { magic, header } => write!(
                f,
                "not a fatbin container (magic {magic:#x}, header {header})"
            ),
            ImageError::Implausible { what, len } => write!(f, "{what}: implausible length {len}"),
            ImageError::ElfClass { class, data } => {
                write!(f, "ELF class {class} data {data}, not a 64-bit LE cubin")
            }
            ImageError::ElfEntrySizes { ph, sh } => {
                write!(f, "ELF header entries too small ({ph}, {sh})")
            }
            ImageError::ElfTables => write!(f, "ELF header tables out of range"),
            ImageError::Truncated => write!(f, "image ends inside a header it announces"),
            ImageError::Compressed { flags } => write!(
                f,
                "compressed fatbin entry (flags {flags:#x}) in a build without decompression"
            ),
            ImageError::Decompress { codec } => {
                write!(f, "{codec} data of a fatbin entry does not decompress")
            }
        }
    }
}

impl std::error::Error for ImageError {}

fn text_prefix<R: ImageBytes + ?Sized>(r: &R) -> Result<(), ImageError> {
    let text = |b: u8| b.is_ascii_graphic() || b.is_ascii_whitespace();
    // The first bytes decide; later bytes may be anything but NUL
    // (comments, string literals in UTF-8).
    for at in 0..TEXT_PREFIX {
        match r.get(at, 1) {
            None | Some([0]) => break,
            Some(&[byte]) if !text(byte) => return Err(ImageError::NotText { byte, at }),
            _ => {}
        }
    }
    Ok(())
}

fn classify<R: ImageBytes + ?Sized>(r: &R) -> Result<ImageKind, ImageError> {
    if r.get(0, 1).is_none() {
        return Err(ImageError::Truncated);
    }
    // Byte by byte up to the first NUL: a PTX string may be shorter than
    // any magic number and must not be over-read. The binary magics have
    // no zero byte, so a NUL within them means text.
    match r.nul_at(0, 4) {
        Some(0) => return Err(ImageError::Empty),
        Some(_) => return text_prefix(r).map(|()| ImageKind::Ptx),
        None => {}
    }
    match magic(r) {
        Some(WRAPPER_MAGIC) => return Ok(ImageKind::Wrapper),
        Some(CONTAINER_MAGIC) => return Ok(ImageKind::Container),
        Some(m) if m.to_le_bytes() == ELF_MAGIC => return Ok(ImageKind::Elf),
        _ => {}
    }
    // "!<ar" is text: the bytes are readable up to 8 or the NUL.
    if r.nul_at(0, 8).is_none() && r.get(0, 8) == Some(&ARCHIVE_MAGIC[..]) {
        return Ok(ImageKind::Archive);
    }
    text_prefix(r).map(|()| ImageKind::Ptx)
}

/// What the image at the start of `r` is. PTX must start with text.
pub fn kind<R: ImageBytes + ?Sized>(r: &R) -> ImageKind {
    classify(r).unwrap_or(ImageKind::Unknown)
}

fn bounded(len: u64, cap: u64, what: &'static str) -> Result<usize, ImageError> {
    if len == 0 || len > cap {
        return Err(ImageError::Implausible { what, len });
    }
    usize::try_from(len).map_err(|_| ImageError::Implausible { what, len })
}

/// What [`measure`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    /// A wrapper's bytes are 24; the image it stands for is the container
    /// it points at, which only the process that owns the pointer can read.
    Wrapper(Wrapper),
    /// Container, ELF or PTX (counting its NUL), `len` bytes from the start.
    Image { kind: ImageKind, len: usize },
}

/// How long the image at the start of `r` is (docs/call-path.md, "Image length"). No
/// length read from a header may exceed `cap`.
pub fn measure<R: ImageBytes + ?Sized>(r: &R, cap: u64) -> Result<Measured, ImageError> {
    let kind = classify(r)?;
    let len = match kind {
        // A v2 wrapper's pre-linked array (+16) is left to the caller: the
        // nvcc 13.5 v2 wrappers observed (docs/call-path.md "Fatbin wrapper") run from their container.
        ImageKind::Wrapper => {
            return Wrapper::read(r)
                .map(Measured::Wrapper)
                .ok_or(ImageError::Truncated)
        }
        ImageKind::Container => container_len(r, cap)?,
        ImageKind::Elf => elf_len(r, cap)?,
        ImageKind::Archive => return Err(ImageError::Archive),
        ImageKind::Ptx => {
            let limit = usize::try_from(cap).unwrap_or(usize::MAX);
            r.nul_at(0, limit).ok_or(ImageError::NoNul)? + 1
        }
        ImageKind::Unknown => unreachable!("classify reports unknown bytes as errors"),
    };
    Ok(Measured::Image { kind, len })
}

/// The 24-byte `__fatBinC_Wrapper_t` (docs/call-path.md "Fatbin wrapper").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wrapper {
    pub version: u32,
    /// Address of the container in the process that registered it.
    pub container: u64,
    /// v2: address of a NULL-terminated array of pre-linked fatbins.
    pub prelinked: u64,
}

impl Wrapper {
    /// The fields, whatever the magic says (the caller matched it).
    pub fn read<R: ImageBytes + ?Sized>(r: &R) -> Option<Wrapper> {
        Some(Wrapper {
            version: u32_at(r, 4)?,
            container: u64_at(r, 8)?,
            prelinked: u64_at(r, 16)?,
        })
    }
}

/// A fatbin container's 16-byte header (docs/call-path.md "Fatbin container").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerHeader {
    pub magic: u32,
    pub version: u16,
    /// Where the entries start.
    pub header_size: u16,
    /// Bytes of entries after the header.
    pub fat_size: u64,
}

impl ContainerHeader {
    pub fn read<R: ImageBytes + ?Sized>(r: &R) -> Option<ContainerHeader> {
        Some(ContainerHeader {
            magic: u32_at(r, 0)?,
            version: u16_at(r, 4)?,
            header_size: u16_at(r, 6)?,
            fat_size: u64_at(r, 8)?,
        })
    }

    /// Header size + fatSize: the container's length.
    pub fn total(&self) -> Option<u64> {
        u64::from(self.header_size).checked_add(self.fat_size)
    }
}

/// The length of the container at the start of `r`.
pub fn container_len<R: ImageBytes + ?Sized>(r: &R, cap: u64) -> Result<usize, ImageError> {
    let h = ContainerHeader::read(r).ok_or(ImageError::Truncated)?;
    if h.magic != CONTAINER_MAGIC || h.header_size < 16 {
        return Err(ImageError::NotContainer {
            magic: h.magic,
            header: h.header_size,
        });
    }
    bounded(h.total().unwrap_or(u64::MAX), cap, "fatbin container")
}

/// An entry header inside a container (docs/call-path.md "Fatbin entries"); the payload follows at
/// `header_size` and the next entry at `header_size + payload_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryHeader {
    pub kind: u16,
    pub header_size: u32,
    /// On disk, padded to 8.
    pub payload_size: u64,
    /// Exact compressed size when compressed, else 0.
    pub compressed_size: u32,
    pub minor: u16,
    pub major: u16,
    pub arch: u32,
    pub flags: u64,
    pub uncompressed_size: u64,
}

impl EntryHeader {
    /// The fields of the first [`MIN_ENTRY_HEADER`] bytes.
    pub fn read<R: ImageBytes + ?Sized>(r: &R) -> Option<EntryHeader> {
        r.get(0, MIN_ENTRY_HEADER)?;
        Some(EntryHeader {
            kind: u16_at(r, 0)?,
            header_size: u32_at(r, 4)?,
            payload_size: u64_at(r, 8)?,
            compressed_size: u32_at(r, 16)?,
            minor: u16_at(r, 24)?,
            major: u16_at(r, 26)?,
            arch: u32_at(r, 28)?,
            flags: u64_at(r, 40)?,
            uncompressed_size: u64_at(r, 56)?,
        })
    }

    pub fn is_compressed(&self) -> bool {
        self.flags & (FLAG_LZ4 | FLAG_ZSTD) != 0
    }
}

/// One entry of a container: its header, and its payload as stored
/// (exactly the compressed bytes when compressed, else the padded payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerEntry<'a> {
    pub header: EntryHeader,
    pub payload: &'a [u8],
}

impl<'a> ContainerEntry<'a> {
    /// The payload, decompressed where the flags say it is compressed.
    /// Without the `decompress` feature a compressed entry is
    /// [`ImageError::Compressed`].
    pub fn decompressed(&self) -> Result<std::borrow::Cow<'a, [u8]>, ImageError> {
        use std::borrow::Cow;
        if !self.header.is_compressed() {
            return Ok(Cow::Borrowed(self.payload));
        }
        #[cfg(feature = "decompress")]
        {
            decompress(&self.header, self.payload).map(Cow::Owned)
        }
        #[cfg(not(feature = "decompress"))]
        {
            Err(ImageError::Compressed {
                flags: self.header.flags,
            })
        }
    }
}

/// Decompresses a payload to exactly the size the header announces, which
/// bounds the allocation (by [`MAX_IMAGE`]) before any byte is produced.
#[cfg(feature = "decompress")]
fn decompress(h: &EntryHeader, payload: &[u8]) -> Result<Vec<u8>, ImageError> {
    use std::io::Read;
    let size = bounded(h.uncompressed_size, MAX_IMAGE, "uncompressed fatbin entry")?;
    let (codec, out) = if h.flags & FLAG_ZSTD != 0 {
        let out = ruzstd::decoding::StreamingDecoder::new(payload)
            .ok()
            .and_then(|dec| {
                let mut out = Vec::with_capacity(size);
                // One byte more than announced, to see a longer stream.
                dec.take(size as u64 + 1).read_to_end(&mut out).ok()?;
                Some(out)
            });
        ("ZSTD", out)
    } else {
        ("LZ4", lz4_flex::block::decompress(payload, size).ok())
    };
    out.filter(|o| o.len() == size)
        .ok_or(ImageError::Decompress { codec })
}

/// The entries of the container at the start of `bytes`, in order. What
/// follows the container (another one, in a `.nv_fatbin` section) is not
/// read.
pub fn container_entries(bytes: &[u8]) -> Result<Vec<ContainerEntry<'_>>, ImageError> {
    let h = ContainerHeader::read(bytes).ok_or(ImageError::Truncated)?;
    if h.magic != CONTAINER_MAGIC || h.header_size < 16 {
        return Err(ImageError::NotContainer {
            magic: h.magic,
            header: h.header_size,
        });
    }
    let end = h
        .total()
        .and_then(|t| usize::try_from(t).ok())
        .filter(|&t| t <= bytes.len())
        .ok_or(ImageError::Truncated)?;
    let mut rest = &bytes[usize::from(h.header_size)..end];
    let mut out = Vec::new();
    while !rest.is_empty() {
        let e = EntryHeader::read(rest).ok_or(ImageError::Truncated)?;
        let start = e.header_size as usize;
        if start < MIN_ENTRY_HEADER {
            return Err(ImageError::Implausible {
                what: "fatbin entry header",
                len: u64::from(e.header_size),
            });
        }
        let next = usize::try_from(e.payload_size)
            .ok()
            .and_then(|p| p.checked_add(start))
            .filter(|&n| n <= rest.len())
            .ok_or(ImageError::Truncated)?;
        let mut payload = &rest[start..next];
        if e.is_compressed() && e.compressed_size != 0 {
            payload = payload
                .get(..e.compressed_size as usize)
                .ok_or(ImageError::Implausible {
                    what: "compressed fatbin entry",
                    len: u64::from(e.compressed_size),
                })?;
        }
        out.push(ContainerEntry { header: e, payload });
        rest = &rest[next..];
    }
    Ok(out)
}

/// The ELF64 header fields that place things in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfHeader {
    pub class: u8,
    pub data: u8,
    pub phoff: u64,
    pub shoff: u64,
    pub ehsize: u16,
    pub phentsize: u16,
    pub phnum: u16,
    pub shentsize: u16,
    pub shnum: u16,
}

impl ElfHeader {
    /// The fields, whatever the class says (check [`Self::is_cubin`]).
    pub fn read<R: ImageBytes + ?Sized>(r: &R) -> Option<ElfHeader> {
        let ident: [u8; 2] = array(r, 4)?;
        Some(ElfHeader {
            class: ident[0],
            data: ident[1],
            phoff: u64_at(r, 32)?,
            shoff: u64_at(r, 40)?,
            ehsize: u16_at(r, 52)?,
            phentsize: u16_at(r, 54)?,
            phnum: u16_at(r, 56)?,
            shentsize: u16_at(r, 58)?,
            shnum: u16_at(r, 60)?,
        })
    }

    /// cubins are ELFCLASS64, little-endian.
    pub fn is_cubin(&self) -> bool {
        self.class == 2 && self.data == 1
    }

    /// The end of the program header table, saturating.
    pub fn ph_end(&self) -> u64 {
        table_end(self.phoff, self.phnum, self.phentsize)
    }

    /// The end of the section header table, saturating.
    pub fn sh_end(&self) -> u64 {
        table_end(self.shoff, self.shnum, self.shentsize)
    }
}

fn table_end(off: u64, n: u16, size: u16) -> u64 {
    off.saturating_add(u64::from(n) * u64::from(size))
}

/// The end of the last thing an ELF file's headers place in the file:
/// its header, both tables, every segment and every section that occupies
/// file bytes (NOBITS ones do not).
pub fn elf_len<R: ImageBytes + ?Sized>(r: &R, cap: u64) -> Result<usize, ImageError> {
    let h = ElfHeader::read(r).ok_or(ImageError::Truncated)?;
    if !h.is_cubin() {
        return Err(ImageError::ElfClass {
            class: h.class,
            data: h.data,
        });
    }
    if (h.phnum > 0 && h.phentsize < 56) || (h.shnum > 0 && h.shentsize < 64) {
        return Err(ImageError::ElfEntrySizes {
            ph: h.phentsize,
            sh: h.shentsize,
        });
    }
    // Tables must lie within the bound before any entry is read.
    let (ph_end, sh_end) = (h.ph_end(), h.sh_end());
    if ph_end > cap || sh_end > cap {
        return Err(ImageError::ElfTables);
    }
    let field = |base: u64, i: u16, size: u16, at: u64, wide: bool| -> Result<u64, ImageError> {
        let off = base
            .checked_add(u64::from(i) * u64::from(size) + at)
            .and_then(|o| usize::try_from(o).ok())
            .ok_or(ImageError::Truncated)?;
        let v = if wide {
            u64_at(r, off)
        } else {
            u32_at(r, off).map(u64::from)
        };
        v.ok_or(ImageError::Truncated)
    };
    let mut end = u64::from(h.ehsize.max(64)).max(ph_end).max(sh_end);
    for i in 0..h.phnum {
        let off = field(h.phoff, i, h.phentsize, 8, true)?;
        let filesz = field(h.phoff, i, h.phentsize, 32, true)?;
        end = end.max(off.saturating_add(filesz));
    }
    for i in 0..h.shnum {
        if field(h.shoff, i, h.shentsize, 4, false)? == u64::from(SHT_NOBITS) {
            continue;
        }
        let off = field(h.shoff, i, h.shentsize, 24, true)?;
        let size = field(h.shoff, i, h.shentsize, 32, true)?;
        end = end.max(off.saturating_add(size));
    }
    bounded(end, cap, "ELF image")
}

#[cfg(test)]
mod tests;
