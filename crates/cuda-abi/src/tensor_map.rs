//! Tensor map (TMA descriptor) geometry as `cuTensorMapEncodeTiled` and
//! `cuTensorMapEncodeIm2col` describe it: how many bits an element of each
//! `CUtensorMapDataType` takes in memory, and how far a tensor reaches from
//! its global address. The host worker checks that reach against a guest's
//! memory; the software GPU checks the box sizes the driver requires.

/// Bits one element takes in memory, by `CUtensorMapDataType` value; the
/// packed types as stored (16 4-bit values in 8 bytes, or 16 4- or 6-bit
/// values in 16 bytes). `None` for a value the header does not define.
pub fn element_bits(data_type: u32) -> Option<u64> {
    Some(match data_type {
        // UINT8
        0 => 8,
        // UINT16, FLOAT16, BFLOAT16
        1 | 6 | 9 => 16,
        // UINT32, INT32, FLOAT32, FLOAT32_FTZ, TFLOAT32, TFLOAT32_FTZ
        2 | 3 | 7 | 10..=12 => 32,
        // UINT64, INT64, FLOAT64
        4 | 5 | 8 => 64,
        // 16U4_ALIGN8B
        13 => 4,
        // 16U4_ALIGN16B, 16U6_ALIGN16B
        14 | 15 => 8,
        _ => return None,
    })
}

/// Whether a data type holds floating-point values (the NaN fill for
/// out-of-bounds elements applies to those only).
pub fn is_float(data_type: u32) -> bool {
    matches!(data_type, 6..=12)
}

/// Bytes from a tensor's global address to just past its last element:
/// the innermost dimension is contiguous, each outer dimension `i` is
/// `strides[i - 1]` bytes apart. `None` when a dimension is 0, the stride
/// count is not one less than the dimension count, the type is unknown or
/// the arithmetic overflows.
pub fn extent(data_type: u32, dims: &[u64], strides: &[u64]) -> Option<u64> {
    let (&inner, outer) = dims.split_first()?;
    if dims.contains(&0) || strides.len() != outer.len() {
        return None;
    }
    let mut end = inner.checked_mul(element_bits(data_type)?)?.div_ceil(8);
    for (&d, &s) in outer.iter().zip(strides) {
        end = end.checked_add((d - 1).checked_mul(s)?)?;
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cuda_types::cuda::CUtensorMapDataType as T;

    #[test]
    fn element_sizes_follow_the_header() {
        assert_eq!(element_bits(T::CU_TENSOR_MAP_DATA_TYPE_UINT8.0), Some(8));
        assert_eq!(
            element_bits(T::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16.0),
            Some(16)
        );
        assert_eq!(
            element_bits(T::CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ.0),
            Some(32)
        );
        assert_eq!(element_bits(T::CU_TENSOR_MAP_DATA_TYPE_FLOAT64.0), Some(64));
        assert_eq!(
            element_bits(T::CU_TENSOR_MAP_DATA_TYPE_16U4_ALIGN8B.0),
            Some(4)
        );
        assert_eq!(
            element_bits(T::CU_TENSOR_MAP_DATA_TYPE_16U6_ALIGN16B.0),
            Some(8)
        );
        assert_eq!(element_bits(16), None);
        assert!(is_float(T::CU_TENSOR_MAP_DATA_TYPE_FLOAT16.0));
        assert!(is_float(T::CU_TENSOR_MAP_DATA_TYPE_TFLOAT32_FTZ.0));
        assert!(!is_float(T::CU_TENSOR_MAP_DATA_TYPE_INT64.0));
        assert!(!is_float(T::CU_TENSOR_MAP_DATA_TYPE_16U4_ALIGN8B.0));
    }

    #[test]
    fn extents() {
        // 1D: 100 floats.
        assert_eq!(extent(7, &[100], &[]), Some(400));
        // 2D: 3 rows of 10 halves, rows 32 bytes apart: 2 * 32 + 20.
        assert_eq!(extent(6, &[10, 3], &[32]), Some(84));
        // 3D: 2 planes of 4 rows of 8 bytes; rows 16 apart, planes 64.
        assert_eq!(extent(0, &[8, 4, 2], &[16, 64]), Some(64 + 3 * 16 + 8));
        // Packed 4-bit values: 128 of them in 64 bytes, or in 128 with gaps.
        assert_eq!(extent(13, &[128], &[]), Some(64));
        assert_eq!(extent(14, &[128], &[]), Some(128));
        assert_eq!(extent(16, &[1], &[]), None);
        assert_eq!(extent(0, &[0], &[]), None);
        assert_eq!(extent(0, &[4, 2], &[]), None);
        assert_eq!(extent(8, &[1, u64::MAX], &[u64::MAX]), None);
    }
}
