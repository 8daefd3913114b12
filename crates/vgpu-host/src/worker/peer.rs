//! Two devices of one guest: peer access between their contexts and copies
//! between their memory. Both contexts must be this session's; the copied
//! ranges are checked against the session's memory like every other copy.
//! What a device can do for another (`cuDeviceCanAccessPeer`, the P2P
//! attributes) is static and travels in the inventory.

use super::memory::Access;
use super::{cu, Session};
use vgpu_transport::proto::{
    CtxDisablePeerAccess, CtxEnablePeerAccess, MemcpyPeer, MemcpyPeerAsync, OnStream, Serve,
};
use vgpu_transport::Status;

impl Serve<CtxEnablePeerAccess> for Session {
    fn serve(&mut self, c: CtxEnablePeerAccess) -> Result<(), Status> {
        let peer = self.ctx(c.peer)?;
        self.enter(c.ctx)?;
        cu!(self, cuCtxEnablePeerAccess(peer, c.flags))
    }
}

impl Serve<CtxDisablePeerAccess> for Session {
    fn serve(&mut self, c: CtxDisablePeerAccess) -> Result<(), Status> {
        let peer = self.ctx(c.peer)?;
        self.enter(c.ctx)?;
        cu!(self, cuCtxDisablePeerAccess(peer))
    }
}

impl Session {
    /// `MemcpyPeer`, or on `stream` its `...Async` twin.
    fn memcpy_peer(&mut self, c: MemcpyPeer, stream: Option<u64>) -> Result<(), Status> {
        let dst_ctx = self.ctx(c.dst_ctx)?;
        let src_ctx = self.ctx(c.src_ctx)?;
        let stream = self.enter_copy_stream(c.ctx, stream)?;
        if c.size == 0 {
            return Ok(());
        }
        self.check_range("MemcpyPeer", c.src, c.size, Access::Read)?;
        self.check_range("MemcpyPeer", c.dst, c.size, Access::Write)?;
        let n = c.size as usize;
        match stream {
            None => cu!(self, cuMemcpyPeer(c.dst, dst_ctx, c.src, src_ctx, n)),
            // Device memory only: the stream may run it whenever.
            Some(s) => cu!(
                self,
                cuMemcpyPeerAsync(c.dst, dst_ctx, c.src, src_ctx, n, s)
            ),
        }
    }
}

impl Serve<MemcpyPeer> for Session {
    fn serve(&mut self, c: MemcpyPeer) -> Result<(), Status> {
        self.memcpy_peer(c, None)
    }
}

impl Serve<MemcpyPeerAsync> for Session {
    fn serve(&mut self, c: MemcpyPeerAsync) -> Result<(), Status> {
        let (c, stream) = MemcpyPeer::split(c);
        self.memcpy_peer(c, Some(stream))
    }
}
