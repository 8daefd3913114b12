//! The host half of graphs, behind one small interface: a phase's device
//! nodes become one [`HostGraph`] (the protocol's `GraphInstantiate`),
//! launched, uploaded, updated and destroyed as a whole; graph memory is
//! allocated and freed here too.
//!
//! INTERIM: the host's graph ops (`GraphInstantiate`, `GraphLaunch`,
//! `GraphUpload`, `GraphExecSetNodes`, `GraphExecSetEnabled`,
//! `GraphExecDestroy`, `GraphMemAlloc`/`GraphMemFree`) are being added on
//! the `graphs-host` branch. Until they land, a [`HostGraph`] keeps its
//! nodes in the guest and a launch replays them, in a topological order, as
//! the ordinary stream-ordered ops on the launch stream (one queued
//! message per enabled node instead of one per launch); graph memory is an
//! ordinary allocation. Everything above this module — the graph model,
//! capture, phases, updates, enable flags — is the same either way.

use crate::check::{self, reject};
use cuda_types::cuda::CUresult;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    EventRecord, LaunchKernel, MemAlloc, MemFree, Memcpy2DDtoDAsync, MemcpyDtoDAsync, MemsetAsync,
    StreamWaitEvent,
};

/// A node the host runs, with host handles and real device addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceOp {
    Kernel {
        func: u64,
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem: u32,
        params: Vec<u8>,
        cooperative: bool,
    },
    Memset {
        dst: u64,
        pitch: u64,
        value: u32,
        elem_size: u32,
        width: u64,
        height: u64,
    },
    /// Device to device, `depth` slices of `height` rows of `width` bytes.
    Memcpy {
        dst: u64,
        dst_pitch: u64,
        dst_height: u64,
        src: u64,
        src_pitch: u64,
        src_height: u64,
        width: u64,
        height: u64,
        depth: u64,
    },
    EventRecord {
        event: u64,
    },
    EventWait {
        event: u64,
    },
    Empty,
}

/// One instantiated phase on the host.
pub struct HostGraph {
    ctx: u64,
    nodes: Vec<DeviceOp>,
    enabled: Vec<bool>,
    /// A topological order of `nodes` (interim replay).
    order: Vec<usize>,
}

impl HostGraph {
    /// Instantiates `nodes` with `edges` (indices) in host context `ctx`.
    /// The edges must form no cycle (the caller sorted the whole graph).
    pub fn instantiate(
        ctx: u64,
        nodes: Vec<DeviceOp>,
        edges: &[(u32, u32)],
        _flags: u64,
    ) -> Result<HostGraph, CUresult> {
        let order = topological(nodes.len(), edges).ok_or_else(|| {
            reject(
                CUresult::CUDA_ERROR_INVALID_VALUE,
                format_args!("graph phase: the edges form a cycle"),
            )
        })?;
        let enabled = vec![true; nodes.len()];
        Ok(HostGraph {
            ctx,
            nodes,
            enabled,
            order,
        })
    }

    /// Runs the phase on `stream` (after the work queued there before).
    pub fn launch(&self, stream: u64) -> Result<(), CUresult> {
        for &i in &self.order {
            if self.enabled[i] {
                replay(self.ctx, stream, &self.nodes[i])?;
            }
        }
        Ok(())
    }

    /// `cuGraphUpload`: nothing to prepare ahead of a replay.
    pub fn upload(&self, _stream: u64) -> Result<(), CUresult> {
        Ok(())
    }

    /// New parameters for nodes, by index.
    pub fn set_nodes(&mut self, updates: Vec<(u32, DeviceOp)>) -> Result<(), CUresult> {
        for (i, op) in updates {
            *self
                .nodes
                .get_mut(i as usize)
                .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)? = op;
        }
        Ok(())
    }

    pub fn set_enabled(&mut self, node: u32, enabled: bool) -> Result<(), CUresult> {
        *self
            .enabled
            .get_mut(node as usize)
            .ok_or(CUresult::CUDA_ERROR_INVALID_VALUE)? = enabled;
        Ok(())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

/// Kahn's algorithm, lowest index first among the ready.
fn topological(n: usize, edges: &[(u32, u32)]) -> Option<Vec<usize>> {
    let mut indegree = vec![0usize; n];
    let mut out = vec![Vec::new(); n];
    for &(a, b) in edges {
        let (a, b) = (a as usize, b as usize);
        if a >= n || b >= n {
            return None;
        }
        indegree[b] += 1;
        out[a].push(b);
    }
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &j in &out[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                ready.insert(j);
            }
        }
    }
    (order.len() == n).then_some(order)
}

/// One node as the stream-ordered op it is.
fn replay(ctx: u64, stream: u64, op: &DeviceOp) -> Result<(), CUresult> {
    match op.clone() {
        DeviceOp::Kernel {
            func,
            grid,
            block,
            shared_mem,
            params,
            cooperative,
        } => check::host(&LaunchKernel {
            ctx,
            func,
            grid,
            block,
            shared_mem,
            stream,
            params: Bytes(params),
            cooperative,
        }),
        DeviceOp::Memset {
            dst,
            pitch,
            value,
            elem_size,
            width,
            height,
        } => check::host(&MemsetAsync {
            ctx,
            stream,
            dst,
            pitch,
            value,
            elem_size,
            width,
            height,
        }),
        DeviceOp::Memcpy {
            dst,
            dst_pitch,
            dst_height,
            src,
            src_pitch,
            src_height,
            width,
            height,
            depth,
        } => {
            if height == 1 && depth == 1 {
                return check::host(&MemcpyDtoDAsync {
                    ctx,
                    stream,
                    dst,
                    src,
                    size: width,
                });
            }
            for z in 0..depth {
                check::host(&Memcpy2DDtoDAsync {
                    ctx,
                    stream,
                    dst: dst + z * dst_pitch * dst_height,
                    dst_pitch,
                    src: src + z * src_pitch * src_height,
                    src_pitch,
                    width,
                    height,
                })?;
            }
            Ok(())
        }
        DeviceOp::EventRecord { event } => check::host(&EventRecord {
            event,
            stream,
            flags: 0,
        }),
        DeviceOp::EventWait { event } => check::host(&StreamWaitEvent {
            stream,
            event,
            flags: 0,
        }),
        DeviceOp::Empty => Ok(()),
    }
}

/// Graph memory of `size` bytes in host context `ctx`.
pub fn mem_alloc(ctx: u64, size: u64) -> Result<u64, CUresult> {
    check::host(&MemAlloc { ctx, size })
}

pub fn mem_free(ctx: u64, ptr: u64) -> Result<(), CUresult> {
    check::host(&MemFree { ctx, ptr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topological_orders_and_refuses_cycles() {
        assert_eq!(topological(3, &[(2, 0), (0, 1)]), Some(vec![2, 0, 1]));
        assert_eq!(topological(3, &[]), Some(vec![0, 1, 2]));
        assert_eq!(topological(2, &[(0, 1), (1, 0)]), None);
        assert_eq!(topological(2, &[(0, 2)]), None);
    }
}
