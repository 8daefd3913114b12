//! Kernel parameter layouts read from the module image itself
//! (docs/call-path.md, "Kernel parameters").
//!
//! `kernelParams` carries one pointer per parameter and no sizes, so packing
//! a launch needs each parameter's offset and size. Host drivers from 12.4
//! answer `cuFuncGetParamInfo`; older ones (the R535 branch, CUDA 12.2) do
//! not, and then the layout must come from the image the kernel was loaded
//! from: the `.nv.info.<kernel>` attributes of a cubin ([`cubin_layouts`])
//! or the `.entry` signature of PTX ([`ptx_layouts`]). [`param_layouts`]
//! takes any module image and reads the entry the driver would load.
//!
//! The layout of a parameter list is fixed by the kernel's C++ signature,
//! not by the target: every entry of a fatbin gives the same layout for a
//! kernel they share, so when the preferred entry cannot be read another
//! one is as good.

mod cubin;
mod ptx;

use crate::image::{self, ContainerEntry, ImageError, ImageKind, Measured, KIND_ELF, KIND_PTX};
use std::collections::HashMap;
use std::fmt;

pub use cubin::cubin_layouts;
pub use ptx::ptx_layouts;

/// One kernel's parameters in declaration order: (offset, size) in bytes
/// within the packed argument buffer, as `cuFuncGetParamInfo` reports them.
pub type Layout = Vec<(u32, u32)>;

/// Each kernel of an image, by (mangled) name, with its layout or why it
/// has none. A kernel whose metadata is unreadable does not hide the others.
pub type KernelLayouts = HashMap<String, Result<Layout, LayoutError>>;

/// Which code the layouts were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A cubin; `arch` is the fatbin entry's SM when it came from one.
    Cubin { arch: Option<u32> },
    /// PTX text; `arch` is the fatbin entry's SM when it came from one.
    Ptx { arch: Option<u32> },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, arch) = match self {
            Source::Cubin { arch } => ("cubin", arch),
            Source::Ptx { arch } => ("PTX", arch),
        };
        match arch {
            Some(a) => write!(f, "{what} (fatbin entry for sm_{a})"),
            None => write!(f, "{what}"),
        }
    }
}

/// The parameter layouts of every kernel of a module image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layouts {
    pub source: Source,
    pub kernels: KernelLayouts,
}

impl Layouts {
    /// The layout of `kernel` (its mangled name, as given to
    /// `cuModuleGetFunction`), or why there is none: the kernel's own error,
    /// or [`LayoutError::NoKernel`].
    pub fn get(&self, kernel: &str) -> Result<&[(u32, u32)], LayoutError> {
        match self.kernels.get(kernel) {
            Some(Ok(layout)) => Ok(layout),
            Some(Err(e)) => Err(e.clone()),
            None => Err(LayoutError::NoKernel {
                kernel: kernel.to_owned(),
                source: self.source,
            }),
        }
    }
}

/// Why a layout could not be determined. Every one of them must fail the
/// launch: packing without the layout would launch with missing arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// The bytes are not a module image, or a container or entry in them
    /// is malformed or cannot be decompressed.
    Image(ImageError),
    /// A fatbin wrapper: it holds the address of its container, which only
    /// the process that registered it can follow.
    Wrapper,
    /// An archive is an input to `cuLink*`, not a module.
    Archive,
    /// A fatbin container with no cubin and no PTX entry.
    NoCode,
    /// The cubin's ELF structure is unreadable (the reader's words).
    Elf(String),
    /// An ELF that is not a CUDA cubin (its `e_machine`).
    NotCubin { machine: u16 },
    /// The kernel has no `.nv.info.<kernel>` section.
    NoInfo,
    /// An `.nv.info` record at this offset of its section is malformed
    /// (unknown format, runs past the section, payload too short).
    BadRecord { at: usize },
    /// The kernel has parameter bytes (`total`) but no parameter records.
    NoParamInfo { total: u32 },
    /// The parameter records are not one per ordinal 0..n.
    Ordinals,
    /// Parameter `ordinal` is empty, overlaps another, or ends past the
    /// parameter size the kernel declares.
    BadParam { ordinal: u32 },
    /// `EIATTR_CBANK_PARAM_SIZE` and `EIATTR_PARAM_CBANK` disagree.
    Inconsistent {
        cbank_param_size: u32,
        param_cbank: u32,
    },
    /// PTX the signature reader cannot follow, at a 1-based line.
    Ptx { line: u32, what: &'static str },
    /// Two declarations of one PTX entry with different parameters.
    Conflicting,
    /// The image has no kernel of that name.
    NoKernel { kernel: String, source: Source },
}

impl From<ImageError> for LayoutError {
    fn from(e: ImageError) -> Self {
        LayoutError::Image(e)
    }
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::Image(e) => write!(f, "{e}"),
            LayoutError::Wrapper => write!(
                f,
                "a fatbin wrapper: the parameter layout is in the container it points at"
            ),
            LayoutError::Archive => write!(f, "an archive is not a module image"),
            LayoutError::NoCode => write!(f, "the fatbin holds neither a cubin nor PTX"),
            LayoutError::Elf(e) => write!(f, "unreadable cubin: {e}"),
            LayoutError::NotCubin { machine } => {
                write!(f, "an ELF for machine {machine}, not a CUDA cubin")
            }
            LayoutError::NoInfo => write!(f, "the cubin has no .nv.info section for the kernel"),
            LayoutError::BadRecord { at } => {
                write!(f, "malformed .nv.info record at offset {at}")
            }
            LayoutError::NoParamInfo { total } => write!(
                f,
                "{total} bytes of parameters but no EIATTR_KPARAM_INFO records"
            ),
            LayoutError::Ordinals => {
                write!(f, "parameter records are not one per ordinal 0..n")
            }
            LayoutError::BadParam { ordinal } => write!(
                f,
                "parameter {ordinal} is empty, overlaps another or ends past the parameter size"
            ),
            LayoutError::Inconsistent {
                cbank_param_size,
                param_cbank,
            } => write!(
                f,
                "EIATTR_CBANK_PARAM_SIZE {cbank_param_size} and EIATTR_PARAM_CBANK size \
                 {param_cbank} disagree"
            ),
            LayoutError::Ptx { line, what } => write!(f, "PTX line {line}: {what}"),
            LayoutError::Conflicting => {
                write!(
                    f,
                    "the PTX declares the entry twice with different parameters"
                )
            }
            LayoutError::NoKernel { kernel, source } => {
                write!(f, "no kernel {kernel:?} in the {source}")
            }
        }
    }
}

impl std::error::Error for LayoutError {}

/// The parameter layouts of every kernel of a module image: a fatbin
/// container, a cubin or PTX text (NUL-terminated or not), as given to
/// `cuModuleLoadData` / `cuLibraryLoadData`.
///
/// From a container, the entry read is the one the driver would load on a
/// device of compute capability `sm` (major × 10 + minor, e.g. 90): the
/// newest cubin of the same major version not above `sm`, else the newest
/// PTX not above `sm`; when that one cannot be read (compressed in a build
/// without decompression, say), any other entry, since all give the same
/// layouts. `sm` is unused for a cubin or PTX.
pub fn param_layouts(image: &[u8], sm: u32) -> Result<Layouts, LayoutError> {
    match image::kind(image) {
        ImageKind::Container => container_layouts(image, sm),
        ImageKind::Elf => Ok(Layouts {
            source: Source::Cubin { arch: None },
            kernels: cubin_layouts(image)?,
        }),
        ImageKind::Ptx => Ok(Layouts {
            source: Source::Ptx { arch: None },
            kernels: ptx_layouts(image)?,
        }),
        ImageKind::Wrapper => Err(LayoutError::Wrapper),
        ImageKind::Archive => Err(LayoutError::Archive),
        // `measure` says why the bytes are no image; it cannot succeed
        // where `kind` found nothing.
        ImageKind::Unknown => Err(match image::measure(image, image.len() as u64) {
            Err(e) => LayoutError::Image(e),
            Ok(Measured::Wrapper(_)) => LayoutError::Wrapper,
            Ok(Measured::Image { .. }) => LayoutError::Image(ImageError::Truncated),
        }),
    }
}

fn container_layouts(image: &[u8], sm: u32) -> Result<Layouts, LayoutError> {
    let entries = image::container_entries(image)?;
    let mut first_error = None;
    for e in candidates(&entries, sm) {
        match entry_layouts(e) {
            Ok(l) => return Ok(l),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    Err(first_error.unwrap_or(LayoutError::NoCode))
}

fn entry_layouts(e: &ContainerEntry<'_>) -> Result<Layouts, LayoutError> {
    let arch = Some(e.header.arch);
    let data = e.decompressed()?;
    if e.header.kind == KIND_ELF {
        Ok(Layouts {
            source: Source::Cubin { arch },
            kernels: cubin_layouts(&data)?,
        })
    } else {
        Ok(Layouts {
            source: Source::Ptx { arch },
            kernels: ptx_layouts(&data)?,
        })
    }
}

/// The cubin and PTX entries in the order to try them for a device of
/// compute capability `sm`: what the driver would load first (a cubin of
/// the same major version not above `sm`, newest first; then PTX not above
/// `sm`, newest first), then every other cubin and PTX entry.
fn candidates<'e, 'a>(entries: &'e [ContainerEntry<'a>], sm: u32) -> Vec<&'e ContainerEntry<'a>> {
    let rank = |e: &ContainerEntry<'_>| {
        let arch = e.header.arch;
        let runs = match e.header.kind {
            KIND_ELF => arch / 10 == sm / 10 && arch <= sm,
            _ => arch <= sm,
        };
        // Loadable before not; cubin before PTX; newest first.
        (!runs, e.header.kind != KIND_ELF, std::cmp::Reverse(arch))
    };
    let mut c: Vec<_> = entries
        .iter()
        .filter(|e| matches!(e.header.kind, KIND_ELF | KIND_PTX))
        .collect();
    c.sort_by_key(|e| rank(e));
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::EntryHeader;

    fn entry(kind: u16, arch: u32) -> ContainerEntry<'static> {
        ContainerEntry {
            header: EntryHeader {
                kind,
                header_size: 64,
                payload_size: 0,
                compressed_size: 0,
                minor: 0,
                major: 0,
                arch,
                flags: 0x11,
                uncompressed_size: 0,
            },
            payload: &[],
        }
    }

    fn order(entries: &[ContainerEntry<'_>], sm: u32) -> Vec<(u16, u32)> {
        candidates(entries, sm)
            .iter()
            .map(|e| (e.header.kind, e.header.arch))
            .collect()
    }

    #[test]
    fn the_entry_the_driver_would_load_comes_first() {
        const E: u16 = KIND_ELF;
        const P: u16 = KIND_PTX;
        let entries = [
            entry(E, 80),
            entry(P, 80),
            entry(E, 90),
            entry(3, 90),
            entry(P, 90),
            entry(E, 86),
        ];
        // sm_90: its cubin, then PTX not above 90, then the rest.
        assert_eq!(
            order(&entries, 90),
            [(E, 90), (P, 90), (P, 80), (E, 86), (E, 80)]
        );
        // sm_89 runs sm_86 and sm_80 cubins, not sm_90's.
        assert_eq!(
            order(&entries, 89),
            [(E, 86), (E, 80), (P, 80), (E, 90), (P, 90)]
        );
        // sm_100 runs no cubin here: PTX, newest first.
        assert_eq!(
            order(&entries, 100),
            [(P, 90), (P, 80), (E, 90), (E, 86), (E, 80)]
        );
        // sm_75 runs nothing here; every entry still has the layouts.
        assert_eq!(
            order(&entries, 75),
            [(E, 90), (E, 86), (E, 80), (P, 90), (P, 80)]
        );
    }
}
