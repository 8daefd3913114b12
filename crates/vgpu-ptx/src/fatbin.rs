//! Fatbinary parsing: the wrapper nvcc places in `.nvFatBinSegment`, the
//! container (`.nv_fatbin`), and its entries (PTX text or ELF cubins,
//! optionally LZ4- or ZSTD-compressed). See docs/call-path.md "Module images".

use cuda_abi::image::{self as abi, ContainerHeader, EntryHeader, Measured, MIN_ENTRY_HEADER};
use std::fmt;
use std::io::Read;

pub use cuda_abi::image::{
    ImageKind, Wrapper, CONTAINER_MAGIC, FLAG_LZ4, FLAG_ZSTD, KIND_ELF, KIND_PTX, WRAPPER_MAGIC,
};

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

pub fn image_kind(bytes: &[u8]) -> ImageKind {
    abi::kind(bytes)
}

/// Length in bytes of the image at the start of `bytes` (docs/call-path.md "Image length").
///
/// A wrapper is 24 bytes itself; the container it points at lives elsewhere
/// (see [`Wrapper`]). PTX text counts its NUL terminator. Returns `None` when
/// the format is unknown (archives carry no length of their own) or when the
/// headers claim more bytes than `bytes` holds for ELF/PTX scanning.
pub fn image_len(bytes: &[u8]) -> Option<usize> {
    // A slice bounds every read; lengths are bounded only by the address
    // space, as the headers of an image already in memory may claim.
    match abi::measure(bytes, u64::MAX).ok()? {
        Measured::Wrapper(_) => Some(24),
        Measured::Image { len, .. } => Some(len),
    }
}

pub fn parse_wrapper(bytes: &[u8]) -> Result<Wrapper, FatbinError> {
    let t = FatbinError::Truncated { what: "wrapper" };
    let magic = abi::magic(bytes).ok_or(t.clone())?;
    if magic != WRAPPER_MAGIC {
        return Err(FatbinError::BadMagic { found: magic });
    }
    Wrapper::read(bytes).ok_or(t)
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
        let t = FatbinError::Truncated { what: "container" };
        let magic = abi::magic(rest).ok_or(t.clone())?;
        if magic != CONTAINER_MAGIC {
            if magic == WRAPPER_MAGIC {
                let w = parse_wrapper(rest)?;
                return Err(FatbinError::IsWrapper {
                    container_addr: w.container,
                });
            }
            return Err(FatbinError::BadMagic { found: magic });
        }
        let h = ContainerHeader::read(rest).ok_or(t.clone())?;
        let hsize = usize::from(h.header_size);
        let end = h
            .total()
            .and_then(|e| usize::try_from(e).ok())
            .filter(|&e| e <= rest.len() && hsize >= 16)
            .ok_or(t)?;
        parse_container_entries(&rest[hsize..end], &mut out)?;
        pos += end;
        // Further containers start at the next 8-byte boundary, if any.
        pos = (pos + 7) & !7;
        if pos + 16 > bytes.len() || abi::magic(&bytes[pos..]) != Some(CONTAINER_MAGIC) {
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
        let h = EntryHeader::read(b).ok_or(t.clone())?;
        let hsize = h.header_size as usize;
        if hsize < MIN_ENTRY_HEADER || hsize > b.len() {
            return Err(t);
        }
        let pend = usize::try_from(h.payload_size)
            .ok()
            .and_then(|p| p.checked_add(hsize))
            .filter(|&e| e <= b.len())
            .ok_or(t.clone())?;
        let csize = h.compressed_size as usize;
        let payload = &b[hsize..pend];
        let payload = if h.is_compressed() && csize > 0 && csize <= payload.len() {
            &payload[..csize]
        } else {
            payload
        };
        out.push(Entry {
            kind: h.kind,
            version: (h.major, h.minor),
            arch: h.arch,
            flags: h.flags,
            uncompressed_size: h.uncompressed_size,
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
