//! Handle values the worker gives guests instead of driver pointers.
//!
//! Every kind of object has its own table, a `vgpu_ffi::Registry` (the one
//! registry type of the project) minting keyed handles: `tag << 56 | 56
//! random-looking bits`. The tag makes a handle of one kind useless as
//! another (a stream handle passed as a context is simply not in the context
//! table); the keyed bits make handles unguessable, so a guest cannot probe
//! for another kind's objects or reuse a stale value and hit a recycled one.
//! Tables are per session, so a handle from another session is never found.

use vgpu_ffi::{Mint, Registry};
use vgpu_transport::Status;

/// The objects of one kind by handle; a miss fails with the kind's status.
pub type HandleTable<T> = Registry<T, Status>;

/// Per-kind tags (top byte). Later families add theirs here.
pub mod tag {
    pub const CONTEXT: u8 = 0xC7;
    pub const STREAM: u8 = 0x57;
    pub const EVENT: u8 = 0xE7;
    pub const MODULE: u8 = 0x3D;
    pub const FUNCTION: u8 = 0xF7;
    pub const LIBRARY: u8 = 0x1B;
    pub const KERNEL: u8 = 0x6E;
    /// A `cuMemCreate` physical allocation.
    pub const MEM_HANDLE: u8 = 0x4D;
    pub const MEM_POOL: u8 = 0x9E;
    /// An instantiated graph (see `worker::graph`).
    pub const GRAPH_EXEC: u8 = 0x6A;
}

/// An empty table for handles of `kind` (for log lines) tagged `tag`.
pub fn table<T>(kind: &'static str, tag: u8, missing: Status) -> HandleTable<T> {
    Registry::new(kind, missing, Mint::Keyed { tag })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cuda_types::cuda::CUresult;

    const INVALID_CONTEXT: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_CONTEXT);

    #[test]
    fn handles_are_tagged_distinct_and_unpredictable() {
        let mut t = table("context", tag::CONTEXT, INVALID_CONTEXT);
        let hs: Vec<u64> = (0..1000).map(|i| t.insert(i)).collect();
        assert!(hs.iter().all(|h| (h >> 56) as u8 == tag::CONTEXT));
        let set: std::collections::HashSet<_> = hs.iter().collect();
        assert_eq!(set.len(), 1000);
        // Consecutive handles are not consecutive numbers.
        assert!(hs.windows(2).all(|w| w[1].wrapping_sub(w[0]) != 1));
        // Two sessions mint different values.
        let mut t2 = table("context", tag::CONTEXT, INVALID_CONTEXT);
        assert_ne!(t2.insert(0), hs[0]);
        assert_eq!(t.find(hs[7]), Some(&7));
        assert_eq!(t.find(hs[7] ^ 1), None);
        assert_eq!(t.get(hs[7] ^ 1), Err(INVALID_CONTEXT));
        assert_eq!(t.remove(hs[7]), Some(7));
        assert_eq!(t.find(hs[7]), None);
    }
}
