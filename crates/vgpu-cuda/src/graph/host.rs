//! The host half of graphs, behind one small interface: a phase's device
//! nodes become one [`HostGraph`] — one `GraphInstantiate` round trip —
//! launched (`GraphLaunch`: one queued message whatever the graph's size),
//! uploaded, updated node by node (`GraphExecSetNodes`,
//! `GraphExecSetEnabled`) and destroyed (`GraphExecDestroy`) as a whole;
//! graph memory is `GraphMemAlloc` / `GraphMemFree`. The worker builds the
//! same graph with the driver's graph API (crates/vgpu-host, worker
//! `graph.rs`), on the real driver and the software GPU alike.

use crate::check;
use cuda_types::cuda::CUresult;
use vgpu_transport::proto::{
    GraphExecDestroy, GraphExecSetEnabled, GraphExecSetNodes, GraphInstantiate, GraphLaunch,
    GraphMemAlloc, GraphMemFree, GraphNode, GraphUpload,
};

/// `CUDA_GRAPH_INSTANTIATE_FLAG_USE_NODE_PRIORITY`: the only instantiation
/// flag that means something to a host graph. Auto-free concerns graph
/// memory, whose nodes never reach the host; upload is its own op; device
/// launch is refused before this.
const HOST_FLAGS: u64 = 8;

/// One instantiated phase on the host.
pub struct HostGraph {
    exec: u64,
    #[cfg(test)]
    len: usize,
}

impl HostGraph {
    /// Instantiates `nodes` with `edges` (indices into `nodes`, forming no
    /// cycle) in host context `ctx`: one round trip.
    pub fn instantiate(
        ctx: u64,
        nodes: Vec<GraphNode>,
        edges: &[(u32, u32)],
        flags: u64,
    ) -> Result<HostGraph, CUresult> {
        #[cfg(test)]
        let len = nodes.len();
        let mut edges = edges.to_vec();
        // The host refuses a repeated edge; one edge is enough.
        edges.sort_unstable();
        edges.dedup();
        let exec = check::host(&GraphInstantiate {
            ctx,
            nodes,
            edges,
            flags: flags & HOST_FLAGS,
        })?;
        Ok(HostGraph {
            exec,
            #[cfg(test)]
            len,
        })
    }

    /// Runs the phase on `stream` (after the work queued there before):
    /// one queued message.
    pub fn launch(&self, stream: u64) -> Result<(), CUresult> {
        check::host(&GraphLaunch {
            exec: self.exec,
            stream,
        })
    }

    pub fn upload(&self, stream: u64) -> Result<(), CUresult> {
        check::host(&GraphUpload {
            exec: self.exec,
            stream,
        })
    }

    /// New parameters for nodes, by index: one queued message.
    pub fn set_nodes(&mut self, updates: Vec<(u32, GraphNode)>) -> Result<(), CUresult> {
        check::host(&GraphExecSetNodes {
            exec: self.exec,
            updates,
        })
    }

    pub fn set_enabled(&mut self, index: u32, enabled: bool) -> Result<(), CUresult> {
        check::host(&GraphExecSetEnabled {
            exec: self.exec,
            index,
            enabled,
        })
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for HostGraph {
    /// The host releases an exec still running once it completes; a
    /// session already gone took it along.
    fn drop(&mut self) {
        let _ = check::host(&GraphExecDestroy { exec: self.exec });
    }
}

/// Graph memory of `size` bytes in host context `ctx`.
pub fn mem_alloc(ctx: u64, size: u64) -> Result<u64, CUresult> {
    check::host(&GraphMemAlloc { ctx, size })
}

pub fn mem_free(ctx: u64, ptr: u64) -> Result<(), CUresult> {
    check::host(&GraphMemFree { ctx, ptr })
}
