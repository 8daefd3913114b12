//! Tensor maps (TMA descriptors): `cuTensorMapEncodeTiled`,
//! `cuTensorMapEncodeIm2col` and `cuTensorMapReplaceAddress`.
//!
//! A `CUtensorMap` is opaque to applications, so the software GPU defines
//! its own 128-byte layout (only its interpreter is meant to read it); the
//! arguments are validated as the driver documents them, and what the
//! driver refuses is `CUDA_ERROR_INVALID_VALUE` here too. The layout, in
//! little-endian 64-bit words:
//!
//! | word | contents |
//! |---|---|
//! | 0 | bits 0–31 [`MAGIC`], 32–39 kind (1 tiled, 2 im2col), 40–43 rank, 44–47 data type, 48–49 interleave, 50–52 swizzle, 53–54 L2 promotion, 55 out-of-bounds fill |
//! | 1 | global address |
//! | 2–6 | global dimensions (unused ones 0) |
//! | 7–10 | global strides in bytes of dimensions 1–4 |
//! | 11 | box dimensions 0–3, 16 bits each (tiled) |
//! | 12 | bits 0–15 box dimension 4, 16–35 element strides, 4 bits each |
//! | 13 | im2col lower corner, 3 × 16-bit signed |
//! | 14 | im2col upper corner, 3 × 16-bit signed |
//! | 15 | bits 0–15 channels per pixel, 16–31 pixels per column (im2col) |

use crate::context::current;
use cuda_abi::tensor_map::{element_bits, is_float};
use cuda_types::cuda::{
    cuuint32_t, cuuint64_t, CUresult, CUtensorMap, CUtensorMapDataType, CUtensorMapFloatOOBfill,
    CUtensorMapInterleave, CUtensorMapL2promotion, CUtensorMapSwizzle,
};
use std::ffi::{c_int, c_void};
use vgpu_ffi::Out;

const INVALID_VALUE: CUresult = CUresult::CUDA_ERROR_INVALID_VALUE;

/// Marks a descriptor this library encoded ("VTMA").
pub const MAGIC: u32 = u32::from_le_bytes(*b"VTMA");
const TILED: u64 = 1;
const IM2COL: u64 = 2;

// The enums' values, from cuda.h.
const INTERLEAVE_NONE: u32 = 0;
const INTERLEAVE_32B: u32 = 2;
const SWIZZLE_NONE: u32 = 0;
const SWIZZLE_32B: u32 = 1;
const SWIZZLE_64B: u32 = 2;
const SWIZZLE_128B: u32 = 3;
const SWIZZLE_128B_ATOM_32B: u32 = 4;
const SWIZZLE_128B_ATOM_64B: u32 = 6;
const U4_ALIGN8B: u32 = 13;
const U4_ALIGN16B: u32 = 14;
const U6_ALIGN16B: u32 = 15;

/// The fields both encodings share, as the application passed them.
struct Common<'a> {
    data_type: u32,
    rank: usize,
    address: u64,
    dims: &'a [u64],
    strides: &'a [u64],
    element_strides: &'a [u32],
    interleave: u32,
    swizzle: u32,
    l2: u32,
    oob: u32,
}

/// An application's array of `n` values, or INVALID_VALUE for NULL.
///
/// # Safety
/// A non-null `p` points to `n` readable values.
unsafe fn array<'a, T>(p: *const T, n: usize) -> Result<&'a [T], CUresult> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(INVALID_VALUE);
    }
    // SAFETY: per the caller.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// The packed types need 32-byte alignment of address and strides.
fn packed_16b(data_type: u32) -> bool {
    matches!(data_type, U4_ALIGN16B | U6_ALIGN16B)
}

/// The alignment the global address needs.
fn address_alignment(data_type: u32, interleave: u32) -> u64 {
    if interleave == INTERLEAVE_32B || packed_16b(data_type) {
        32
    } else {
        16
    }
}

/// The largest bounding-box inner dimension, in bytes, a swizzle allows.
fn swizzle_span(swizzle: u32) -> u64 {
    match swizzle {
        SWIZZLE_32B => 32,
        SWIZZLE_64B => 64,
        _ => 128,
    }
}

/// The driver's requirements common to both encodings. `max_dim` is the
/// largest global dimension; `inner_box` the bounding box's innermost
/// extent in elements (tiled: `boxDim[0]`; im2col: `channelsPerPixel`).
fn check_common(
    out: *mut CUtensorMap,
    c: &Common<'_>,
    max_dim: u64,
    inner_box: u64,
) -> Result<(), CUresult> {
    let bits = element_bits(c.data_type).ok_or(INVALID_VALUE)?;
    let bad_enum = c.interleave > 2 || c.swizzle > 6 || c.l2 > 3 || c.oob > 1;
    if !(out as usize).is_multiple_of(64) || bad_enum {
        return Err(INVALID_VALUE);
    }
    if c.interleave != INTERLEAVE_NONE && c.rank < 3 {
        return Err(INVALID_VALUE);
    }
    if !c
        .address
        .is_multiple_of(address_alignment(c.data_type, c.interleave))
    {
        return Err(INVALID_VALUE);
    }
    if c.dims.iter().any(|&d| d == 0 || d > max_dim) {
        return Err(INVALID_VALUE);
    }
    let d0 = c.dims[0];
    if (packed_16b(c.data_type) && !d0.is_multiple_of(128))
        || (c.data_type == U4_ALIGN8B && !d0.is_multiple_of(2))
    {
        return Err(INVALID_VALUE);
    }
    let stride_align = if c.interleave == INTERLEAVE_32B || packed_16b(c.data_type) {
        32
    } else {
        16
    };
    if c.strides
        .iter()
        .any(|&s| !s.is_multiple_of(stride_align) || s >= 1 << 40)
    {
        return Err(INVALID_VALUE);
    }
    if c.element_strides.iter().any(|&s| s == 0 || s > 8) {
        return Err(INVALID_VALUE);
    }
    let inner_bytes = (inner_box * bits).div_ceil(8);
    if c.interleave == INTERLEAVE_NONE
        && c.swizzle != SWIZZLE_NONE
        && inner_bytes > swizzle_span(c.swizzle)
    {
        return Err(INVALID_VALUE);
    }
    if c.interleave == INTERLEAVE_32B && c.swizzle != SWIZZLE_32B {
        return Err(INVALID_VALUE);
    }
    let swizzles_ok = match c.data_type {
        U6_ALIGN16B => {
            c.interleave == INTERLEAVE_NONE
                && matches!(
                    c.swizzle,
                    SWIZZLE_NONE | SWIZZLE_128B | SWIZZLE_128B_ATOM_32B | SWIZZLE_128B_ATOM_64B
                )
        }
        U4_ALIGN16B => matches!(
            c.swizzle,
            SWIZZLE_NONE | SWIZZLE_128B | SWIZZLE_128B_ATOM_32B
        ),
        _ => true,
    };
    // The NaN fill (1) only for floating-point types.
    if !swizzles_ok || (c.oob == 1 && !is_float(c.data_type)) {
        return Err(INVALID_VALUE);
    }
    Ok(())
}

/// The descriptor's common words.
fn encode_common(kind: u64, c: &Common<'_>) -> [u64; 16] {
    let mut w = [0u64; 16];
    w[0] = u64::from(MAGIC)
        | kind << 32
        | (c.rank as u64) << 40
        | u64::from(c.data_type) << 44
        | u64::from(c.interleave) << 48
        | u64::from(c.swizzle) << 50
        | u64::from(c.l2) << 53
        | u64::from(c.oob) << 55;
    w[1] = c.address;
    w[2..2 + c.rank].copy_from_slice(c.dims);
    w[7..7 + c.strides.len()].copy_from_slice(c.strides);
    for (i, &s) in c.element_strides.iter().enumerate() {
        w[12] |= u64::from(s) << (16 + 4 * i);
    }
    w
}

/// `cuTensorMapEncodeTiled`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn encode_tiled(
    out: Out<CUtensorMap>,
    data_type: CUtensorMapDataType,
    rank: cuuint32_t,
    address: *mut c_void,
    dims: *const cuuint64_t,
    strides: *const cuuint64_t,
    box_dim: *const cuuint32_t,
    element_strides: *const cuuint32_t,
    interleave: CUtensorMapInterleave,
    swizzle: CUtensorMapSwizzle,
    l2: CUtensorMapL2promotion,
    oob: CUtensorMapFloatOOBfill,
) -> Result<(), CUresult> {
    current()?;
    let r = rank as usize;
    if !(1..=5).contains(&r) {
        return Err(INVALID_VALUE);
    }
    // SAFETY: arrays of `rank` (strides: `rank - 1`) values, per the API.
    let c = unsafe {
        Common {
            data_type: data_type.0,
            rank: r,
            address: address as u64,
            dims: array(dims, r)?,
            strides: array(strides, r - 1)?,
            element_strides: array(element_strides, r)?,
            interleave: interleave.0,
            swizzle: swizzle.0,
            l2: l2.0,
            oob: oob.0,
        }
    };
    // SAFETY: as above.
    let boxes = unsafe { array(box_dim, r) }?;
    if boxes.iter().any(|&b| b == 0 || b > 256) {
        return Err(INVALID_VALUE);
    }
    let bits = element_bits(c.data_type).ok_or(INVALID_VALUE)?;
    if c.interleave == INTERLEAVE_NONE && !(u64::from(boxes[0]) * bits / 8).is_multiple_of(16) {
        return Err(INVALID_VALUE);
    }
    if packed_16b(c.data_type) && boxes[0] != 128 {
        return Err(INVALID_VALUE);
    }
    check_common(out.as_ptr(), &c, 1 << 32, u64::from(boxes[0]))?;
    let mut w = encode_common(TILED, &c);
    for (i, &b) in boxes.iter().enumerate() {
        if i < 4 {
            w[11] |= u64::from(b) << (16 * i);
        } else {
            w[12] |= u64::from(b);
        }
    }
    out.write(CUtensorMap { opaque: w });
    Ok(())
}

/// `cuTensorMapEncodeIm2col`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn encode_im2col(
    out: Out<CUtensorMap>,
    data_type: CUtensorMapDataType,
    rank: cuuint32_t,
    address: *mut c_void,
    dims: *const cuuint64_t,
    strides: *const cuuint64_t,
    lower: *const c_int,
    upper: *const c_int,
    channels_per_pixel: cuuint32_t,
    pixels_per_column: cuuint32_t,
    element_strides: *const cuuint32_t,
    interleave: CUtensorMapInterleave,
    swizzle: CUtensorMapSwizzle,
    l2: CUtensorMapL2promotion,
    oob: CUtensorMapFloatOOBfill,
) -> Result<(), CUresult> {
    current()?;
    let r = rank as usize;
    if !(3..=5).contains(&r) {
        return Err(INVALID_VALUE);
    }
    // SAFETY: arrays of `rank` (strides: `rank - 1`, corners: `rank - 2`)
    // values, per the API.
    let (c, lower, upper) = unsafe {
        (
            Common {
                data_type: data_type.0,
                rank: r,
                address: address as u64,
                dims: array(dims, r)?,
                strides: array(strides, r - 1)?,
                element_strides: array(element_strides, r)?,
                interleave: interleave.0,
                swizzle: swizzle.0,
                l2: l2.0,
                oob: oob.0,
            },
            array(lower, r - 2)?,
            array(upper, r - 2)?,
        )
    };
    // Corner offsets: 16 bits for one spatial dimension, 8 for two, 5 for
    // three.
    let reach: c_int = match r {
        3 => 1 << 15,
        4 => 1 << 7,
        _ => 1 << 4,
    };
    if lower.iter().chain(upper).any(|&v| v < -reach || v >= reach) {
        return Err(INVALID_VALUE);
    }
    if channels_per_pixel == 0
        || channels_per_pixel > 256
        || (packed_16b(c.data_type) && channels_per_pixel != 128)
        || pixels_per_column == 0
        || pixels_per_column > 1024
    {
        return Err(INVALID_VALUE);
    }
    // The box must not be empty: some spatial dimension has room between
    // its corners (lower offset from the front, upper from the back).
    let spatial = &c.dims[1..r - 1];
    let empty = spatial
        .iter()
        .rev()
        .zip(lower.iter().zip(upper))
        .any(|(&d, (&lo, &hi))| d as i64 - i64::from(lo) + i64::from(hi) <= 0);
    if empty {
        return Err(INVALID_VALUE);
    }
    check_common(out.as_ptr(), &c, 1 << 31, u64::from(channels_per_pixel))?;
    let mut w = encode_common(IM2COL, &c);
    for (i, (&lo, &hi)) in lower.iter().zip(upper).enumerate() {
        w[13] |= u64::from(lo as u16) << (16 * i);
        w[14] |= u64::from(hi as u16) << (16 * i);
    }
    w[15] = u64::from(channels_per_pixel) | u64::from(pixels_per_column) << 16;
    out.write(CUtensorMap { opaque: w });
    Ok(())
}

/// `cuTensorMapReplaceAddress`: the new address must be aligned as the
/// descriptor's encoding required; a descriptor this library did not
/// encode is refused.
pub fn replace_address(map: Out<CUtensorMap>, address: *mut c_void) -> Result<(), CUresult> {
    current()?;
    if !(map.as_ptr() as usize).is_multiple_of(64) {
        return Err(INVALID_VALUE);
    }
    let mut m = map.read();
    let w0 = m.opaque[0];
    if w0 as u32 != MAGIC || !matches!((w0 >> 32) & 0xff, TILED | IM2COL) {
        return Err(INVALID_VALUE);
    }
    let data_type = ((w0 >> 44) & 0xf) as u32;
    let interleave = ((w0 >> 48) & 0x3) as u32;
    if !(address as u64).is_multiple_of(address_alignment(data_type, interleave)) {
        return Err(INVALID_VALUE);
    }
    m.opaque[1] = address as u64;
    map.write(m);
    Ok(())
}
