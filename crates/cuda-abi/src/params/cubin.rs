//! Parameter layouts from a cubin's `.nv.info.<kernel>` sections.
//!
//! The format, as observed in nvcc 13.5 cubins for sm_80 and sm_90 and read
//! back with cuobjdump (docs/call-path.md "Kernel parameters" and the tests' data):
//! - the kernels are the `STT_FUNC` symbols with the CUDA entry bit
//!   (`0x10`) in `st_other`; each has a section `.nv.info.<name>` of type
//!   `SHT_CUDA_INFO` (`0x7000_0000`);
//! - the section is a sequence of records `u8 format, u8 attribute, u16 x`:
//!   format 1 (NVAL) has no value, 2 (BVAL) a byte in `x`, 3 (HVAL) the
//!   u16 `x`, and 4 (SVAL) `x` bytes of payload that follow;
//! - `EIATTR_KPARAM_INFO` (0x17, SVAL 12): u32 index, u16 ordinal, u16
//!   offset, u32 whose bits 18–31 are the size (the low bits hold the
//!   pointee's log-alignment, its space and the constant bank);
//!   one record per parameter, in descending ordinal order;
//! - `EIATTR_KPARAM_INFO_V2` (0x45, SVAL 12): the same with a plain u16
//!   size followed by a u16 of flags; ptxas uses it for kernels whose
//!   parameters do not fit the 14-bit size (a 20,000-byte struct by value);
//! - `EIATTR_CBANK_PARAM_SIZE` (0x19, HVAL): the parameters' total size;
//! - `EIATTR_PARAM_CBANK` (0x0a, SVAL 8): u32 symbol index of the kernel's
//!   `.nv.constant0` section, u16 offset of the parameters in constant
//!   bank 0 (0x160 on sm_80, 0x210 on sm_90), u16 total size.
//!
//! A kernel without parameters has none of the parameter records.

use super::{KernelLayouts, Layout, LayoutError};
use object::elf::{FileHeader64, EM_CUDA, SHT_SYMTAB, STT_FUNC};
use object::read::elf::{FileHeader, SectionHeader, Sym};
use object::LittleEndian;
use std::collections::HashMap;

/// `SHT_CUDA_INFO`: the type of `.nv.info` sections.
const SHT_CUDA_INFO: u32 = 0x7000_0000;
/// `st_other` bit of a kernel (cuobjdump's "ENTRY").
const STO_CUDA_ENTRY: u8 = 0x10;
const INFO_PREFIX: &[u8] = b".nv.info.";

const FMT_NVAL: u8 = 1;
const FMT_BVAL: u8 = 2;
const FMT_HVAL: u8 = 3;
const FMT_SVAL: u8 = 4;

const EIATTR_PARAM_CBANK: u8 = 0x0a;
const EIATTR_KPARAM_INFO: u8 = 0x17;
const EIATTR_CBANK_PARAM_SIZE: u8 = 0x19;
const EIATTR_KPARAM_INFO_V2: u8 = 0x45;

/// Bits 18–31 of `EIATTR_KPARAM_INFO`'s last word.
const KPARAM_SIZE_SHIFT: u32 = 18;

/// The layouts of every kernel of a cubin (64-bit little-endian ELF for
/// `EM_CUDA`). Kernels are found by their entry symbols, and also by any
/// `.nv.info.<name>` section that describes parameters.
pub fn cubin_layouts(elf: &[u8]) -> Result<KernelLayouts, LayoutError> {
    let bad = |e: object::read::Error| LayoutError::Elf(e.to_string());
    let header = FileHeader64::<LittleEndian>::parse(elf).map_err(bad)?;
    let endian = header.endian().map_err(bad)?;
    let machine = header.e_machine(endian);
    if machine != EM_CUDA {
        return Err(LayoutError::NotCubin { machine: machine.0 });
    }
    let sections = header.sections(endian, elf).map_err(bad)?;

    // The info section of each function, by name.
    let mut info: HashMap<&[u8], Result<&[u8], LayoutError>> = HashMap::new();
    for s in sections.iter() {
        if s.sh_type(endian).0 != SHT_CUDA_INFO {
            continue;
        }
        let Some(name) = sections
            .section_name(endian, s)
            .ok()
            .and_then(|n| n.strip_prefix(INFO_PREFIX))
        else {
            continue;
        };
        info.insert(name, s.data(endian, elf).map_err(bad));
    }

    let mut kernels: Vec<&[u8]> = Vec::new();
    let symbols = sections.symbols(endian, elf, SHT_SYMTAB).map_err(bad)?;
    for sym in symbols.iter() {
        if sym.st_type() == STT_FUNC && sym.st_other().0 & STO_CUDA_ENTRY != 0 {
            kernels.push(symbols.symbol_name(endian, sym).map_err(bad)?);
        }
    }
    // A kernel whose entry bit this reader does not know about still has
    // parameter records; a device function never has them.
    for (&name, data) in &info {
        if let Ok(data) = data {
            if has_param_records(data) {
                kernels.push(name);
            }
        }
    }

    let mut out = KernelLayouts::new();
    for name in kernels {
        let layout = match info.get(name) {
            None => Err(LayoutError::NoInfo),
            Some(Err(e)) => Err(e.clone()),
            Some(Ok(data)) => kernel_layout(data),
        };
        out.insert(String::from_utf8_lossy(name).into_owned(), layout);
    }
    Ok(out)
}

/// One `.nv.info` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record<'a> {
    /// Offset of the record in its section.
    at: usize,
    format: u8,
    attr: u8,
    /// HVAL's value, BVAL's byte; SVAL's payload length.
    value: u16,
    /// SVAL's payload; empty for the other formats.
    payload: &'a [u8],
}

/// The records of an info section, stopping at the first malformed one.
fn records(data: &[u8]) -> impl Iterator<Item = Result<Record<'_>, LayoutError>> {
    let mut at = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= data.len() {
            return None;
        }
        let bad = LayoutError::BadRecord { at };
        let rec = (|| {
            let head = data.get(at..at.checked_add(4)?)?;
            let (format, attr) = (head[0], head[1]);
            let value = u16::from_le_bytes([head[2], head[3]]);
            let len = match format {
                FMT_NVAL | FMT_BVAL | FMT_HVAL => 0,
                FMT_SVAL => usize::from(value),
                _ => return None,
            };
            let payload = data.get(at + 4..at + 4 + len)?;
            Some(Record {
                at,
                format,
                attr,
                value,
                payload,
            })
        })();
        match rec {
            Some(r) => {
                at += 4 + r.payload.len();
                Some(Ok(r))
            }
            None => {
                failed = true;
                Some(Err(bad))
            }
        }
    })
}

fn has_param_records(data: &[u8]) -> bool {
    records(data).any(|r| {
        r.is_ok_and(|r| {
            matches!(
                r.attr,
                EIATTR_KPARAM_INFO | EIATTR_KPARAM_INFO_V2 | EIATTR_CBANK_PARAM_SIZE
            )
        })
    })
}

fn u16_at(p: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([p[off], p[off + 1]])
}

/// One kernel's layout from its info section, checked for consistency:
/// one record per ordinal, no empty or overlapping parameter, none past
/// the declared total.
fn kernel_layout(data: &[u8]) -> Result<Layout, LayoutError> {
    // (ordinal, offset, size)
    let mut params: Vec<(u32, u32, u32)> = Vec::new();
    let mut cbank_param_size = None;
    let mut param_cbank = None;
    for r in records(data) {
        let r = r?;
        let bad = LayoutError::BadRecord { at: r.at };
        match r.attr {
            EIATTR_KPARAM_INFO | EIATTR_KPARAM_INFO_V2 => {
                let p = r.payload;
                if r.format != FMT_SVAL || p.len() < 12 {
                    return Err(bad);
                }
                let ordinal = u32::from(u16_at(p, 4));
                let offset = u32::from(u16_at(p, 6));
                let size = if r.attr == EIATTR_KPARAM_INFO {
                    u32::from_le_bytes([p[8], p[9], p[10], p[11]]) >> KPARAM_SIZE_SHIFT
                } else {
                    u32::from(u16_at(p, 8))
                };
                params.push((ordinal, offset, size));
            }
            EIATTR_CBANK_PARAM_SIZE => {
                if r.format != FMT_HVAL {
                    return Err(bad);
                }
                cbank_param_size = Some(u32::from(r.value));
            }
            EIATTR_PARAM_CBANK => {
                if r.format != FMT_SVAL || r.payload.len() < 8 {
                    return Err(bad);
                }
                param_cbank = Some(u32::from(u16_at(r.payload, 6)));
            }
            _ => {}
        }
    }
    let total = match (cbank_param_size, param_cbank) {
        (Some(a), Some(b)) if a != b => {
            return Err(LayoutError::Inconsistent {
                cbank_param_size: a,
                param_cbank: b,
            })
        }
        (a, b) => a.or(b),
    };
    if params.is_empty() {
        return match total {
            None | Some(0) => Ok(Vec::new()),
            Some(total) => Err(LayoutError::NoParamInfo { total }),
        };
    }
    params.sort_unstable_by_key(|&(ordinal, ..)| ordinal);
    if params
        .iter()
        .enumerate()
        .any(|(i, &(ordinal, ..))| ordinal as usize != i)
    {
        return Err(LayoutError::Ordinals);
    }
    let end = |&(_, offset, size): &(u32, u32, u32)| offset + size;
    if let Some(p) = params
        .iter()
        .find(|p| p.2 == 0 || total.is_some_and(|t| end(p) > t))
    {
        return Err(LayoutError::BadParam { ordinal: p.0 });
    }
    let mut by_offset = params.clone();
    by_offset.sort_unstable_by_key(|&(_, offset, _)| offset);
    if let Some(w) = by_offset.windows(2).find(|w| end(&w[0]) > w[1].1) {
        return Err(LayoutError::BadParam { ordinal: w[1].0 });
    }
    Ok(params.iter().map(|&(_, o, s)| (o, s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SVAL record.
    fn sval(attr: u8, payload: &[u8]) -> Vec<u8> {
        let mut r = vec![FMT_SVAL, attr];
        r.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        r.extend_from_slice(payload);
        r
    }

    fn hval(attr: u8, v: u16) -> Vec<u8> {
        let mut r = vec![FMT_HVAL, attr];
        r.extend_from_slice(&v.to_le_bytes());
        r
    }

    /// `EIATTR_KPARAM_INFO` as ptxas writes it: size in bits 18–31 and
    /// 0x1f000 (constant bank 0x1f) below.
    fn kparam(ordinal: u16, offset: u16, size: u32) -> Vec<u8> {
        let mut p = vec![0u8; 4];
        p.extend_from_slice(&ordinal.to_le_bytes());
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&((size << 18) | 0x1f000).to_le_bytes());
        sval(EIATTR_KPARAM_INFO, &p)
    }

    fn kparam_v2(ordinal: u16, offset: u16, size: u16) -> Vec<u8> {
        let mut p = vec![0u8; 4];
        p.extend_from_slice(&ordinal.to_le_bytes());
        p.extend_from_slice(&offset.to_le_bytes());
        p.extend_from_slice(&size.to_le_bytes());
        p.extend_from_slice(&0x0500u16.to_le_bytes());
        sval(EIATTR_KPARAM_INFO_V2, &p)
    }

    fn param_cbank(size: u16) -> Vec<u8> {
        let mut p = 0x18u32.to_le_bytes().to_vec();
        p.extend_from_slice(&0x210u16.to_le_bytes());
        p.extend_from_slice(&size.to_le_bytes());
        sval(EIATTR_PARAM_CBANK, &p)
    }

    fn section(records: &[Vec<u8>]) -> Vec<u8> {
        records.concat()
    }

    #[test]
    fn records_in_any_order_give_the_layout_by_ordinal() {
        let s = section(&[
            sval(0x66, &[3, 0, 0, 0]),
            kparam(2, 16, 1),
            kparam(0, 0, 4),
            vec![FMT_NVAL, 0x35, 0, 0],
            kparam(1, 8, 8),
            vec![FMT_BVAL, 0x6d, 0, 0],
            hval(EIATTR_CBANK_PARAM_SIZE, 17),
            param_cbank(17),
        ]);
        assert_eq!(kernel_layout(&s), Ok(vec![(0, 4), (8, 8), (16, 1)]));
    }

    #[test]
    fn v2_records_carry_a_plain_size() {
        let s = section(&[
            kparam_v2(1, 4, 20000),
            kparam_v2(0, 0, 4),
            hval(EIATTR_CBANK_PARAM_SIZE, 20004),
        ]);
        assert_eq!(kernel_layout(&s), Ok(vec![(0, 4), (4, 20000)]));
    }

    #[test]
    fn no_records_is_no_parameters_unless_a_size_says_otherwise() {
        assert_eq!(kernel_layout(&[]), Ok(vec![]));
        let zero = section(&[sval(0x1c, &[0x10, 0, 0, 0])]);
        assert_eq!(kernel_layout(&zero), Ok(vec![]));
        let sized = section(&[hval(EIATTR_CBANK_PARAM_SIZE, 8)]);
        assert_eq!(
            kernel_layout(&sized),
            Err(LayoutError::NoParamInfo { total: 8 })
        );
    }

    #[test]
    fn inconsistent_records_are_refused() {
        let missing = section(&[kparam(0, 0, 4), kparam(2, 8, 4)]);
        assert_eq!(kernel_layout(&missing), Err(LayoutError::Ordinals));
        let twice = section(&[kparam(0, 0, 4), kparam(0, 8, 4)]);
        assert_eq!(kernel_layout(&twice), Err(LayoutError::Ordinals));
        let overlap = section(&[kparam(0, 0, 8), kparam(1, 4, 4)]);
        assert_eq!(
            kernel_layout(&overlap),
            Err(LayoutError::BadParam { ordinal: 1 })
        );
        let empty = section(&[kparam(0, 0, 0)]);
        assert_eq!(
            kernel_layout(&empty),
            Err(LayoutError::BadParam { ordinal: 0 })
        );
        let past = section(&[kparam(0, 0, 8), hval(EIATTR_CBANK_PARAM_SIZE, 4)]);
        assert_eq!(
            kernel_layout(&past),
            Err(LayoutError::BadParam { ordinal: 0 })
        );
        let sizes = section(&[
            kparam(0, 0, 4),
            hval(EIATTR_CBANK_PARAM_SIZE, 4),
            param_cbank(8),
        ]);
        assert_eq!(
            kernel_layout(&sizes),
            Err(LayoutError::Inconsistent {
                cbank_param_size: 4,
                param_cbank: 8
            })
        );
    }

    #[test]
    fn malformed_records_are_refused_where_they_start() {
        let head = kparam(0, 0, 4);
        // Unknown format byte.
        let mut unknown = head.clone();
        unknown.extend_from_slice(&[9, 0x17, 0, 0]);
        assert_eq!(
            kernel_layout(&unknown),
            Err(LayoutError::BadRecord { at: head.len() })
        );
        // An SVAL whose payload runs past the section.
        let mut cut = head.clone();
        cut.extend_from_slice(&kparam(1, 4, 4)[..10]);
        assert_eq!(
            kernel_layout(&cut),
            Err(LayoutError::BadRecord { at: head.len() })
        );
        // A parameter record too short, or in the wrong format.
        let short = sval(EIATTR_KPARAM_INFO, &[0; 8]);
        assert_eq!(kernel_layout(&short), Err(LayoutError::BadRecord { at: 0 }));
        let as_hval = hval(EIATTR_KPARAM_INFO, 4);
        assert_eq!(
            kernel_layout(&as_hval),
            Err(LayoutError::BadRecord { at: 0 })
        );
        // Three bytes are not a record header.
        assert_eq!(
            kernel_layout(&[FMT_HVAL, 0x19, 0]),
            Err(LayoutError::BadRecord { at: 0 })
        );
    }
}
