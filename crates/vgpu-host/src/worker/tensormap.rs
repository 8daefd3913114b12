//! Tensor maps (TMA descriptors): encoded by the host's driver, returned to
//! the guest as the 128 opaque bytes it passes to kernels.
//!
//! A descriptor lets a kernel's TMA unit read and write a whole tensor, so
//! the tensor must lie in this session's memory: from the global address,
//! the last byte any element can have (every dimension's last index times
//! its stride, plus the innermost row) is checked like a copy's range.
//! `cuTensorMapReplaceAddress` only gets the descriptor, whose layout is
//! the driver's secret, so the worker remembers the extent of each
//! descriptor it encoded (the most recent [`REMEMBERED`] of them) and only
//! replaces the address of one it knows.

use super::memory::{Access, INVALID_VALUE};
use super::{cu, Session};
use cuda_types::cuda::{
    CUtensorMap, CUtensorMapDataType, CUtensorMapFloatOOBfill, CUtensorMapInterleave,
    CUtensorMapL2promotion, CUtensorMapSwizzle,
};
use std::collections::{HashMap, VecDeque};
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    Serve, TensorMapEncodeIm2col, TensorMapEncodeTiled, TensorMapReplaceAddress, TENSOR_MAP_BYTES,
};
use vgpu_transport::Status;

/// Descriptors whose extent is remembered for `TensorMapReplaceAddress`.
pub const REMEMBERED: usize = 1 << 16;

/// The most recent descriptors this session encoded, and what they span.
#[derive(Default)]
pub struct Known {
    extent: HashMap<[u8; TENSOR_MAP_BYTES], u64>,
    order: VecDeque<[u8; TENSOR_MAP_BYTES]>,
}

impl Known {
    fn remember(&mut self, map: [u8; TENSOR_MAP_BYTES], extent: u64) {
        if self.extent.insert(map, extent).is_none() {
            self.order.push_back(map);
            if self.order.len() > REMEMBERED {
                if let Some(old) = self.order.pop_front() {
                    self.extent.remove(&old);
                }
            }
        }
    }
}

fn to_bytes(map: &CUtensorMap) -> [u8; TENSOR_MAP_BYTES] {
    let mut b = [0u8; TENSOR_MAP_BYTES];
    for (chunk, word) in b.chunks_exact_mut(8).zip(map.opaque) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    b
}

fn from_bytes(b: &[u8; TENSOR_MAP_BYTES]) -> CUtensorMap {
    let mut map = CUtensorMap::default();
    for (word, chunk) in map.opaque.iter_mut().zip(b.chunks_exact(8)) {
        *word = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
    }
    map
}

/// The fields every encoding shares.
struct Tensor<'a> {
    data_type: u32,
    rank: u32,
    address: u64,
    dims: &'a [u64],
    strides: &'a [u64],
}

impl Session {
    /// Checks the arrays' lengths (`per_dim`: those with one entry per
    /// dimension) against the rank and the tensor against this session's
    /// memory → the tensor's extent.
    fn tensor_checked(&self, op: &str, t: Tensor<'_>, per_dim: &[usize]) -> Result<u64, Status> {
        let r = t.rank as usize;
        if !(1..=5).contains(&r)
            || t.dims.len() != r
            || t.strides.len() != r - 1
            || per_dim.iter().any(|&n| n != r)
        {
            tracing::debug!("session {}: {op}: arrays do not match rank {r}", self.id);
            return Err(INVALID_VALUE);
        }
        let extent =
            cuda_abi::tensor_map::extent(t.data_type, t.dims, t.strides).ok_or(INVALID_VALUE)?;
        self.check_range(op, t.address, extent, Access::Read)?;
        Ok(extent)
    }

    fn remember_map(&mut self, map: &CUtensorMap, extent: u64) -> Bytes {
        let b = to_bytes(map);
        self.tensor_maps.remember(b, extent);
        Bytes(b.to_vec())
    }
}

impl Serve<TensorMapEncodeTiled> for Session {
    fn serve(&mut self, c: TensorMapEncodeTiled) -> Result<Bytes, Status> {
        self.enter(c.ctx)?;
        let extent = self.tensor_checked(
            "TensorMapEncodeTiled",
            Tensor {
                data_type: c.data_type,
                rank: c.rank,
                address: c.global_address,
                dims: &c.global_dim,
                strides: &c.global_strides,
            },
            &[c.box_dim.len(), c.element_strides.len()],
        )?;
        let mut map = CUtensorMap::default();
        cu!(
            self,
            cuTensorMapEncodeTiled(
                &mut map,
                CUtensorMapDataType(c.data_type),
                c.rank,
                std::ptr::without_provenance_mut(c.global_address as usize),
                c.global_dim.as_ptr(),
                c.global_strides.as_ptr(),
                c.box_dim.as_ptr(),
                c.element_strides.as_ptr(),
                CUtensorMapInterleave(c.interleave),
                CUtensorMapSwizzle(c.swizzle),
                CUtensorMapL2promotion(c.l2_promotion),
                CUtensorMapFloatOOBfill(c.oob_fill)
            )
        )?;
        Ok(self.remember_map(&map, extent))
    }
}

impl Serve<TensorMapEncodeIm2col> for Session {
    fn serve(&mut self, c: TensorMapEncodeIm2col) -> Result<Bytes, Status> {
        self.enter(c.ctx)?;
        let extent = self.tensor_checked(
            "TensorMapEncodeIm2col",
            Tensor {
                data_type: c.data_type,
                rank: c.rank,
                address: c.global_address,
                dims: &c.global_dim,
                strides: &c.global_strides,
            },
            &[c.element_strides.len()],
        )?;
        // The corners cover the spatial dimensions: all but the innermost
        // (channels) and outermost (batch); rank 3 to 5 has 1 to 3.
        let spatial = (c.rank as usize).saturating_sub(2);
        if spatial == 0 || c.lower_corner.len() != spatial || c.upper_corner.len() != spatial {
            return Err(INVALID_VALUE);
        }
        let mut map = CUtensorMap::default();
        cu!(
            self,
            cuTensorMapEncodeIm2col(
                &mut map,
                CUtensorMapDataType(c.data_type),
                c.rank,
                std::ptr::without_provenance_mut(c.global_address as usize),
                c.global_dim.as_ptr(),
                c.global_strides.as_ptr(),
                c.lower_corner.as_ptr(),
                c.upper_corner.as_ptr(),
                c.channels_per_pixel,
                c.pixels_per_column,
                c.element_strides.as_ptr(),
                CUtensorMapInterleave(c.interleave),
                CUtensorMapSwizzle(c.swizzle),
                CUtensorMapL2promotion(c.l2_promotion),
                CUtensorMapFloatOOBfill(c.oob_fill)
            )
        )?;
        Ok(self.remember_map(&map, extent))
    }
}

impl Serve<TensorMapReplaceAddress> for Session {
    fn serve(&mut self, c: TensorMapReplaceAddress) -> Result<Bytes, Status> {
        self.enter(c.ctx)?;
        let old: [u8; TENSOR_MAP_BYTES] =
            c.map.0.as_slice().try_into().map_err(|_| INVALID_VALUE)?;
        let Some(&extent) = self.tensor_maps.extent.get(&old) else {
            tracing::warn!(
                "session {}: TensorMapReplaceAddress of a descriptor this session did not \
                 encode (or one of more than {REMEMBERED} ago); refused",
                self.id
            );
            return Err(INVALID_VALUE);
        };
        self.check_range(
            "TensorMapReplaceAddress",
            c.global_address,
            extent,
            Access::Read,
        )?;
        let mut map = from_bytes(&old);
        cu!(
            self,
            cuTensorMapReplaceAddress(
                &mut map,
                std::ptr::without_provenance_mut(c.global_address as usize)
            )
        )?;
        Ok(self.remember_map(&map, extent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_and_are_forgotten_oldest_first() {
        let mut map = CUtensorMap::default();
        for (i, w) in map.opaque.iter_mut().enumerate() {
            *w = 0x0101_0101_0101_0101 * i as u64;
        }
        assert_eq!(from_bytes(&to_bytes(&map)).opaque, map.opaque);
        let mut k = Known::default();
        for i in 0..=REMEMBERED {
            let mut b = [0u8; TENSOR_MAP_BYTES];
            b[..8].copy_from_slice(&(i as u64).to_le_bytes());
            k.remember(b, i as u64);
        }
        assert_eq!(k.extent.len(), REMEMBERED);
        let first = [0u8; TENSOR_MAP_BYTES];
        assert!(!k.extent.contains_key(&first));
        let mut last = [0u8; TENSOR_MAP_BYTES];
        last[..8].copy_from_slice(&(REMEMBERED as u64).to_le_bytes());
        assert_eq!(k.extent.get(&last), Some(&(REMEMBERED as u64)));
    }
}
