//! Tensor maps (TMA descriptors, compute capability 9.0):
//! `cuTensorMapEncodeTiled`, `cuTensorMapEncodeIm2col` and
//! `cuTensorMapReplaceAddress`.
//!
//! A `CUtensorMap` is 128 bytes whose layout is the driver's own, and a
//! kernel hands it to the driver's TMA unit, so the host's driver encodes
//! it (in the calling thread's current context, where the tensor lives)
//! and the guest copies the bytes it returns to the application. The
//! arrays are read here at the lengths the rank gives them (a rank outside
//! what cuda.h allows is CUDA_ERROR_INVALID_VALUE before any is read);
//! every other rule is the host driver's.

use crate::check::{self, reject, INVALID_VALUE};
use cuda_types::cuda::{
    cuuint32_t, cuuint64_t, CUresult, CUtensorMap, CUtensorMapDataType, CUtensorMapFloatOOBfill,
    CUtensorMapInterleave, CUtensorMapL2promotion, CUtensorMapSwizzle,
};
use std::ffi::{c_int, c_void};
use vgpu_ffi::Out;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    TensorMapEncodeIm2col, TensorMapEncodeTiled, TensorMapReplaceAddress, TENSOR_MAP_BYTES,
};

/// Ranks cuda.h allows: tiled 1–5, im2col 3–5 (it needs a channel, at
/// least one spatial and a batch dimension).
const TILED_RANKS: std::ops::RangeInclusive<u32> = 1..=5;
const IM2COL_RANKS: std::ops::RangeInclusive<u32> = 3..=5;

/// `n` entries of an application's array; NULL is refused unless it has
/// none to give (the strides of a rank-1 tensor).
///
/// # Safety
/// A non-NULL `p` holds `n` readable entries (API contract).
unsafe fn array<T: Copy>(p: *const T, n: usize, what: &str) -> Result<Vec<T>, CUresult> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(reject(INVALID_VALUE, format_args!("{what}: NULL array")));
    }
    // SAFETY: `n` readable entries (contract); read unaligned, as the
    // application's array is only as aligned as it made it.
    Ok((0..n)
        .map(|i| unsafe { p.add(i).read_unaligned() })
        .collect())
}

fn rank_in(rank: u32, ranks: std::ops::RangeInclusive<u32>, what: &str) -> Result<usize, CUresult> {
    if ranks.contains(&rank) {
        Ok(rank as usize)
    } else {
        Err(reject(INVALID_VALUE, format_args!("{what}: rank {rank}")))
    }
}

/// The descriptor the host returned, as the application's struct.
fn descriptor(bytes: Bytes) -> Result<CUtensorMap, CUresult> {
    let b: [u8; TENSOR_MAP_BYTES] = bytes.0.as_slice().try_into().map_err(|_| {
        reject(
            CUresult::CUDA_ERROR_UNKNOWN,
            format_args!("tensor map: the host sent {} bytes", bytes.0.len()),
        )
    })?;
    let mut map = CUtensorMap::default();
    for (word, chunk) in map.opaque.iter_mut().zip(b.chunks_exact(8)) {
        *word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
    }
    Ok(map)
}

fn bytes_of(map: &CUtensorMap) -> Bytes {
    Bytes(map.opaque.iter().flat_map(|w| w.to_le_bytes()).collect())
}

/// `cuTensorMapEncodeTiled`.
///
/// # Safety
/// The arrays hold as many entries as `rank` gives them (API contract).
#[allow(clippy::too_many_arguments)]
pub unsafe fn encode_tiled(
    map: Out<CUtensorMap>,
    data_type: CUtensorMapDataType,
    rank: cuuint32_t,
    address: *mut c_void,
    global_dim: *const cuuint64_t,
    global_strides: *const cuuint64_t,
    box_dim: *const cuuint32_t,
    element_strides: *const cuuint32_t,
    interleave: CUtensorMapInterleave,
    swizzle: CUtensorMapSwizzle,
    l2_promotion: CUtensorMapL2promotion,
    oob_fill: CUtensorMapFloatOOBfill,
) -> Result<(), CUresult> {
    let what = "cuTensorMapEncodeTiled";
    let r = rank_in(rank, TILED_RANKS, what)?;
    let (_, ctx) = check::current()?;
    // SAFETY: the lengths cuda.h gives each array (contract).
    let call = unsafe {
        TensorMapEncodeTiled {
            ctx,
            data_type: data_type.0,
            rank,
            global_address: address as u64,
            global_dim: array(global_dim, r, what)?,
            global_strides: array(global_strides, r - 1, what)?,
            box_dim: array(box_dim, r, what)?,
            element_strides: array(element_strides, r, what)?,
            interleave: interleave.0,
            swizzle: swizzle.0,
            l2_promotion: l2_promotion.0,
            oob_fill: oob_fill.0,
        }
    };
    map.write(descriptor(check::host(&call)?)?);
    Ok(())
}

/// `cuTensorMapEncodeIm2col`: the pixel box corners cover the spatial
/// dimensions, `rank - 2` of them.
///
/// # Safety
/// The arrays hold as many entries as `rank` gives them (API contract).
#[allow(clippy::too_many_arguments)]
pub unsafe fn encode_im2col(
    map: Out<CUtensorMap>,
    data_type: CUtensorMapDataType,
    rank: cuuint32_t,
    address: *mut c_void,
    global_dim: *const cuuint64_t,
    global_strides: *const cuuint64_t,
    lower_corner: *const c_int,
    upper_corner: *const c_int,
    channels_per_pixel: cuuint32_t,
    pixels_per_column: cuuint32_t,
    element_strides: *const cuuint32_t,
    interleave: CUtensorMapInterleave,
    swizzle: CUtensorMapSwizzle,
    l2_promotion: CUtensorMapL2promotion,
    oob_fill: CUtensorMapFloatOOBfill,
) -> Result<(), CUresult> {
    let what = "cuTensorMapEncodeIm2col";
    let r = rank_in(rank, IM2COL_RANKS, what)?;
    let (_, ctx) = check::current()?;
    // SAFETY: the lengths cuda.h gives each array (contract).
    let call = unsafe {
        TensorMapEncodeIm2col {
            ctx,
            data_type: data_type.0,
            rank,
            global_address: address as u64,
            global_dim: array(global_dim, r, what)?,
            global_strides: array(global_strides, r - 1, what)?,
            lower_corner: array(lower_corner, r - 2, what)?,
            upper_corner: array(upper_corner, r - 2, what)?,
            channels_per_pixel,
            pixels_per_column,
            element_strides: array(element_strides, r, what)?,
            interleave: interleave.0,
            swizzle: swizzle.0,
            l2_promotion: l2_promotion.0,
            oob_fill: oob_fill.0,
        }
    };
    map.write(descriptor(check::host(&call)?)?);
    Ok(())
}

/// `cuTensorMapReplaceAddress`: the descriptor goes to the host, which
/// only changes one its session encoded, and comes back changed.
pub fn replace_address(map: Out<CUtensorMap>, address: *mut c_void) -> Result<(), CUresult> {
    let (_, ctx) = check::current()?;
    let new = check::host(&TensorMapReplaceAddress {
        ctx,
        map: bytes_of(&map.read()),
        global_address: address as u64,
    })?;
    map.write(descriptor(new)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_cross_as_little_endian_words() {
        let mut map = CUtensorMap::default();
        for (i, w) in map.opaque.iter_mut().enumerate() {
            *w = 0x0102_0304_0506_0700 | i as u64;
        }
        let b = bytes_of(&map);
        assert_eq!(b.0.len(), TENSOR_MAP_BYTES);
        assert_eq!(b.0[..8], [0, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(b.0[8], 1);
        assert_eq!(descriptor(b).unwrap().opaque, map.opaque);
        assert_eq!(
            descriptor(Bytes(vec![0; 64])).err(),
            Some(CUresult::CUDA_ERROR_UNKNOWN)
        );
    }

    #[test]
    fn arrays_and_ranks() {
        let dims = [4u64, 5, 6];
        // SAFETY: a live local array of 3 entries, or NULL with none read.
        unsafe {
            assert_eq!(array(dims.as_ptr(), 3, "t"), Ok(dims.to_vec()));
            assert_eq!(array::<u64>(std::ptr::null(), 0, "t"), Ok(vec![]));
            assert_eq!(array::<u64>(std::ptr::null(), 1, "t"), Err(INVALID_VALUE));
        }
        assert_eq!(rank_in(1, TILED_RANKS, "t"), Ok(1));
        assert_eq!(rank_in(0, TILED_RANKS, "t"), Err(INVALID_VALUE));
        assert_eq!(rank_in(6, TILED_RANKS, "t"), Err(INVALID_VALUE));
        assert_eq!(rank_in(2, IM2COL_RANKS, "t"), Err(INVALID_VALUE));
        assert_eq!(rank_in(5, IM2COL_RANKS, "t"), Ok(5));
    }
}
