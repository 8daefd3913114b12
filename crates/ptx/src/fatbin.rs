//! Fatbinary parsing: the wrapper nvcc places in `.nvFatBinSegment`, the
//! container (`.nv_fatbin`), and its entries (PTX text or ELF cubins,
//! optionally LZ4- or ZSTD-compressed). See cuda-runtime.md §8.

use std::fmt;
use std::io::Read;

pub const WRAPPER_MAGIC: u32 = 0x466243B1;
pub const CONTAINER_MAGIC: u32 = 0xBA55ED50;
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

pub const KIND_PTX: u16 = 1;
pub const KIND_ELF: u16 = 2;

pub const FLAG_LZ4: u64 = 0x2000;
pub const FLAG_ZSTD: u64 = 0x8000;

/// Entries smaller than this cannot hold the fields we read.
const MIN_ENTRY_HEADER: usize = 64;
/// Decompressed PTX larger than this is treated as corrupt rather than
/// allocated (a hostile header could otherwise ask for terabytes).
const MAX_UNCOMPRESSED: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FatbinError {
    /// Bytes end before a header or payload says they should.
    Truncated {
        what: &'static str,
    },
    BadMagic {
        found: u32,
    },
    /// The container has no PTX entry; the caller reports
    /// `CUDA_ERROR_NO_BINARY_FOR_GPU`.
    NoPtx,
    Decompress {
        what: String,
    },
    /// PTX payload is not UTF-8 text.
    NotText,
    /// A wrapper holds a pointer, which only the process that owns it can
    /// follow; parse the container it points at instead.
    IsWrapper {
        container_addr: u64,
    },
}

impl fmt::Display for FatbinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FatbinError::Truncated { what } => write!(f, "fatbin truncated in {what}"),
            FatbinError::BadMagic { found } => write!(f, "not a fatbin (magic {found:#010x})"),
            FatbinError::NoPtx => write!(f, "fatbin holds no PTX"),
            FatbinError::Decompress { what } => {
                write!(f, "fatbin entry decompression failed: {what}")
            }
            FatbinError::NotText => write!(f, "PTX entry is not UTF-8 text"),
            FatbinError::IsWrapper { container_addr } => {
                write!(f, "fatbin wrapper pointing at {container_addr:#x}")
            }
        }
    }
}

impl std::error::Error for FatbinError {}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// What an image handed to `cuModuleLoadData` and friends is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Wrapper,
    Container,
    Elf,
    Archive,
    Ptx,
    Unknown,
}

pub fn image_kind(bytes: &[u8]) -> ImageKind {
    match bytes.get(..4) {
        Some(m) if u32::from_le_bytes(m.try_into().unwrap()) == WRAPPER_MAGIC => ImageKind::Wrapper,
        Some(m) if u32::from_le_bytes(m.try_into().unwrap()) == CONTAINER_MAGIC => {
            ImageKind::Container
        }
        Some(m) if m == ELF_MAGIC => ImageKind::Elf,
        _ if bytes.starts_with(b"!<arch>\n") => ImageKind::Archive,
        _ if bytes
            .iter()
            .take(16)
            .take_while(|&&c| c != 0)
            .all(|&c| c.is_ascii_graphic() || c.is_ascii_whitespace())
            && bytes.first().is_some_and(|&c| c != 0) =>
        {
            ImageKind::Ptx
        }
        _ => ImageKind::Unknown,
    }
}

/// Length in bytes of the image at the start of `bytes` (cuda-runtime.md §8.4).
///
/// A wrapper is 24 bytes itself; the container it points at lives elsewhere
/// (see [`Wrapper`]). PTX text counts its NUL terminator. Returns `None` when
/// the format is unknown (archives carry no length of their own) or when the
/// headers claim more bytes than `bytes` holds for ELF/PTX scanning.
pub fn image_len(bytes: &[u8]) -> Option<usize> {
    match image_kind(bytes) {
        ImageKind::Wrapper => Some(24),
        ImageKind::Container => {
            let hsize = u16_at(bytes, 6)? as u64;
            let fat = u64_at(bytes, 8)?;
            usize::try_from(hsize.checked_add(fat)?).ok()
        }
        ImageKind::Elf => elf_len(bytes),
        ImageKind::Ptx => bytes.iter().position(|&c| c == 0).map(|n| n + 1),
        ImageKind::Archive | ImageKind::Unknown => None,
    }
}

fn elf_len(b: &[u8]) -> Option<usize> {
    // Only ELF64 little-endian: every CUDA cubin since 64-bit hosts.
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return None;
    }
    let phoff = u64_at(b, 0x20)?;
    let shoff = u64_at(b, 0x28)?;
    let ehsize = u16_at(b, 0x34)? as u64;
    let phentsize = u16_at(b, 0x36)? as u64;
    let phnum = u16_at(b, 0x38)? as u64;
    let shentsize = u16_at(b, 0x3a)? as u64;
    let shnum = u16_at(b, 0x3c)? as u64;
    let mut end = ehsize.max(64);
    if phnum > 0 {
        end = end.max(phoff.checked_add(phnum * phentsize)?);
        for i in 0..phnum {
            let p = usize::try_from(phoff + i * phentsize).ok()?;
            let off = u64_at(b, p + 8)?;
            let filesz = u64_at(b, p + 32)?;
            end = end.max(off.checked_add(filesz)?);
        }
    }
    if shnum > 0 {
        end = end.max(shoff.checked_add(shnum * shentsize)?);
        for i in 0..shnum {
            let s = usize::try_from(shoff + i * shentsize).ok()?;
            let ty = u32_at(b, s + 4)?;
            // NOBITS sections (.bss, .nv.shared.*) occupy no file bytes.
            if ty == 8 {
                continue;
            }
            let off = u64_at(b, s + 24)?;
            let size = u64_at(b, s + 32)?;
            end = end.max(off.checked_add(size)?);
        }
    }
    usize::try_from(end).ok()
}

/// The 24-byte `__fatBinC_Wrapper_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wrapper {
    pub version: u32,
    /// Address of the container in the process that registered it.
    pub container: u64,
    /// v2: address of a NULL-terminated array of pre-linked fatbins.
    pub prelinked: u64,
}

pub fn parse_wrapper(bytes: &[u8]) -> Result<Wrapper, FatbinError> {
    let magic = u32_at(bytes, 0).ok_or(FatbinError::Truncated { what: "wrapper" })?;
    if magic != WRAPPER_MAGIC {
        return Err(FatbinError::BadMagic { found: magic });
    }
    let t = FatbinError::Truncated { what: "wrapper" };
    Ok(Wrapper {
        version: u32_at(bytes, 4).ok_or(t.clone())?,
        container: u64_at(bytes, 8).ok_or(t.clone())?,
        prelinked: u64_at(bytes, 16).ok_or(t)?,
    })
}

/// One entry of a container, payload still as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub kind: u16,
    /// PTX ISA version for PTX entries (major, minor).
    pub version: (u16, u16),
    pub arch: u32,
    pub flags: u64,
    /// Uncompressed size when compressed.
    pub uncompressed_size: u64,
    /// Exactly the compressed bytes when compressed, else the padded payload.
    pub payload: &'a [u8],
}

impl Entry<'_> {
    pub fn is_ptx(&self) -> bool {
        self.kind == KIND_PTX
    }

    /// The payload, decompressed if needed.
    pub fn data(&self) -> Result<Vec<u8>, FatbinError> {
        if self.flags & FLAG_ZSTD != 0 {
            let mut dec = ruzstd::decoding::StreamingDecoder::new(self.payload).map_err(|e| {
                FatbinError::Decompress {
                    what: format!("zstd: {e}"),
                }
            })?;
            let mut out = Vec::new();
            (&mut dec)
                .take(MAX_UNCOMPRESSED)
                .read_to_end(&mut out)
                .map_err(|e| FatbinError::Decompress {
                    what: format!("zstd: {e}"),
                })?;
            Ok(out)
        } else if self.flags & FLAG_LZ4 != 0 {
            if self.uncompressed_size > MAX_UNCOMPRESSED {
                return Err(FatbinError::Decompress {
                    what: format!("lz4: implausible size {}", self.uncompressed_size),
                });
            }
            lz4_flex::block::decompress(self.payload, self.uncompressed_size as usize).map_err(
                |e| FatbinError::Decompress {
                    what: format!("lz4: {e}"),
                },
            )
        } else {
            Ok(self.payload.to_vec())
        }
    }

    /// PTX text without the NUL padding nvcc appends.
    pub fn ptx_text(&self) -> Result<String, FatbinError> {
        let mut data = self.data()?;
        if let Some(n) = data.iter().position(|&c| c == 0) {
            data.truncate(n);
        }
        String::from_utf8(data).map_err(|_| FatbinError::NotText)
    }
}

/// Walks every container laid back to back in `bytes` (a `.nv_fatbin` section
/// holds several, 8-byte aligned) and returns all entries.
pub fn parse_entries(bytes: &[u8]) -> Result<Vec<Entry<'_>>, FatbinError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        let rest = &bytes[pos..];
        let magic = u32_at(rest, 0).ok_or(FatbinError::Truncated { what: "container" })?;
        if magic != CONTAINER_MAGIC {
            if magic == WRAPPER_MAGIC {
                let w = parse_wrapper(rest)?;
                return Err(FatbinError::IsWrapper {
                    container_addr: w.container,
                });
            }
            return Err(FatbinError::BadMagic { found: magic });
        }
        let hsize = u16_at(rest, 6).ok_or(FatbinError::Truncated { what: "container" })? as usize;
        let fat = u64_at(rest, 8).ok_or(FatbinError::Truncated { what: "container" })?;
        let end = usize::try_from(fat)
            .ok()
            .and_then(|f| f.checked_add(hsize))
            .filter(|&e| e <= rest.len() && hsize >= 16)
            .ok_or(FatbinError::Truncated { what: "container" })?;
        parse_container_entries(&rest[hsize..end], &mut out)?;
        pos += end;
        // Further containers start at the next 8-byte boundary, if any.
        pos = (pos + 7) & !7;
        if pos + 16 > bytes.len() || u32_at(bytes, pos) != Some(CONTAINER_MAGIC) {
            break;
        }
    }
    Ok(out)
}

fn parse_container_entries<'a>(
    mut b: &'a [u8],
    out: &mut Vec<Entry<'a>>,
) -> Result<(), FatbinError> {
    let t = FatbinError::Truncated { what: "entry" };
    while !b.is_empty() {
        let kind = u16_at(b, 0).ok_or(t.clone())?;
        let hsize = u32_at(b, 4).ok_or(t.clone())? as usize;
        let psize = u64_at(b, 8).ok_or(t.clone())?;
        if hsize < MIN_ENTRY_HEADER || hsize > b.len() {
            return Err(t);
        }
        let pend = usize::try_from(psize)
            .ok()
            .and_then(|p| p.checked_add(hsize))
            .filter(|&e| e <= b.len())
            .ok_or(t.clone())?;
        let csize = u32_at(b, 16).ok_or(t.clone())? as usize;
        let minor = u16_at(b, 24).ok_or(t.clone())?;
        let major = u16_at(b, 26).ok_or(t.clone())?;
        let arch = u32_at(b, 28).ok_or(t.clone())?;
        let flags = u64_at(b, 40).ok_or(t.clone())?;
        let usize_ = u64_at(b, 56).ok_or(t.clone())?;
        let compressed = flags & (FLAG_LZ4 | FLAG_ZSTD) != 0;
        let payload = &b[hsize..pend];
        let payload = if compressed && csize > 0 && csize <= payload.len() {
            &payload[..csize]
        } else {
            payload
        };
        out.push(Entry {
            kind,
            version: (major, minor),
            arch,
            flags,
            uncompressed_size: usize_,
            payload,
        });
        b = &b[pend..];
    }
    Ok(())
}

/// Picks the PTX entry best suited to a device of compute capability `sm`
/// (e.g. 90): the highest arch not above `sm`, else the lowest one above it.
pub fn best_ptx<'e, 'a>(entries: &'e [Entry<'a>], sm: u32) -> Option<&'e Entry<'a>> {
    let ptx = entries.iter().filter(|e| e.is_ptx());
    ptx.clone()
        .filter(|e| e.arch <= sm)
        .max_by_key(|e| e.arch)
        .or_else(|| ptx.min_by_key(|e| e.arch))
}

/// Given the bytes of a container (or PTX text, or a bare image), returns the
/// PTX to interpret for a device of compute capability `sm`.
pub fn extract_ptx(bytes: &[u8], sm: u32) -> Result<String, FatbinError> {
    match image_kind(bytes) {
        ImageKind::Ptx => {
            let n = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
            String::from_utf8(bytes[..n].to_vec()).map_err(|_| FatbinError::NotText)
        }
        ImageKind::Container | ImageKind::Wrapper => {
            let entries = parse_entries(bytes)?;
            best_ptx(&entries, sm).ok_or(FatbinError::NoPtx)?.ptx_text()
        }
        // A cubin or archive carries SASS only, which the interpreter can't run.
        _ => Err(FatbinError::NoPtx),
    }
}
