//! The data plane on the worker's side (docs/protocol.md, "Bulk
//! transfers"): copy pieces served without copying their bytes again,
//! the shared-memory region, staged images.
//!
//! - **Pieces over the socket** ([`Session::serve_in_place`]): a
//!   host-to-device piece is copied to the device from the request buffer
//!   itself, and a device-to-host piece is read from the device straight
//!   into a reply buffer that is reused from one reply to the next
//!   ([`Session::recycle`]). Stream-ordered host-to-device copies are not
//!   waited for: the request buffer is pageable memory to the driver,
//!   which stages it before `cuMemcpyHtoDAsync` returns (CUDA's documented
//!   behaviour for pageable sources), so the buffer may be reused at once.
//! - **The region** (`caps::SHM`): every offset and length from the guest
//!   is checked against the mapping ([`Region::range`]) before a byte is
//!   touched; the region is sealed against shrinking, so no access inside
//!   it can fault. On a real driver the region is registered with
//!   `cuMemHostRegister` at its first use, so copies are DMA from and to
//!   the shared pages; a stream-ordered copy from registered memory is then
//!   truly asynchronous and is waited for before its slot is handed back.
//!   (The software GPU reads host memory directly and needs no
//!   registration; the registered path cannot be tested without a GPU.)
//! - **Staged images**: an image too large for one frame arrives in
//!   pieces, appended to the session's staged image and consumed by the
//!   load that follows.

use super::memory::{Access, INVALID_VALUE};
use super::{cu, Session};
use crate::driver::DriverKind;
use cuda_types::cuda::CUstream;
use std::ffi::c_void;
use vgpu_transport::proto::{
    Call, ImageStage, ImageStageShm, MemcpyDtoH, MemcpyDtoHAsync, MemcpyHtoD, MemcpyHtoDAsync,
    MemcpyHtoDPart, Serve, ShmDtoH, ShmDtoHAsync, ShmHtoD, ShmHtoDAsync, COPY_CHUNK,
    MAX_STAGED_IMAGE,
};
use vgpu_transport::shm::Region;
use vgpu_transport::Status;

/// The data-plane state of a session.
#[derive(Default)]
pub struct Plane {
    /// The guest's shared-memory region, if it sent one the worker adopted.
    pub region: Option<Region>,
    /// Whether the region is registered with the driver (tried once).
    registered: Option<bool>,
    /// The image being staged in pieces; `Err` once a piece failed (the
    /// load reports it).
    staged: Option<Result<Vec<u8>, Status>>,
    /// A reply buffer kept between device-to-host replies.
    spare: Vec<u8>,
}

/// Reads a little-endian u64 at `at`.
fn u64_at(p: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(p.get(at..at + 8)?.try_into().ok()?))
}

/// The trailing `Bytes` of a payload whose other fields are `fixed` bytes
/// of u64s: `(the u64s, the bytes)`, or `None` when the payload is not
/// exactly that shape.
fn fields_and_bytes<const N: usize>(p: &[u8]) -> Option<([u64; N], &[u8])> {
    let mut f = [0u64; N];
    for (i, v) in f.iter_mut().enumerate() {
        *v = u64_at(p, i * 8)?;
    }
    let at = N * 8;
    let n = u32::from_le_bytes(p.get(at..at + 4)?.try_into().ok()?) as usize;
    let data = p.get(at + 4..)?;
    (data.len() == n).then_some((f, data))
}

impl Session {
    /// Serves a copy piece without decoding its bytes into a buffer of
    /// their own; `None` for every other op (and for a piece whose
    /// payload is malformed, which the ordinary decoder then refuses).
    pub(super) fn serve_in_place(&mut self, op: u16, p: &[u8]) -> Option<Result<Vec<u8>, Status>> {
        let unit = |r: Result<(), Status>| r.map(|()| Vec::new());
        match op {
            MemcpyHtoD::OP | MemcpyHtoDPart::OP => {
                let ([ctx, dst], data) = fields_and_bytes::<2>(p)?;
                Some(unit(self.htod(ctx, None, dst, data)))
            }
            MemcpyHtoDAsync::OP => {
                let ([ctx, stream, dst], data) = fields_and_bytes::<3>(p)?;
                Some(unit(self.htod(ctx, Some(stream), dst, data)))
            }
            MemcpyDtoH::OP | MemcpyDtoHAsync::OP => {
                let c = if op == MemcpyDtoH::OP {
                    let c: MemcpyDtoH = vgpu_transport::proto::decode_call(p).ok()?;
                    (c.ctx, None, c.src, c.size)
                } else {
                    let c: MemcpyDtoHAsync = vgpu_transport::proto::decode_call(p).ok()?;
                    (c.ctx, Some(c.stream), c.src, c.size)
                };
                Some(self.dtoh_reply(c.0, c.1, c.2, c.3))
            }
            ImageStage::OP => {
                let ([], data) = fields_and_bytes::<0>(p)?;
                Some(unit(self.stage(data)))
            }
            _ => None,
        }
    }

    /// A reply buffer the request loop is done with, kept for the next
    /// device-to-host reply.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if buf.capacity() > self.plane.spare.capacity() && buf.capacity() <= 2 * COPY_CHUNK as usize
        {
            self.plane.spare = buf;
        }
    }

    /// `data` to device memory at `dst`, synchronously or on `stream`.
    pub(super) fn htod(
        &mut self,
        ctx: u64,
        stream: Option<u64>,
        dst: u64,
        data: &[u8],
    ) -> Result<(), Status> {
        let stream = self.enter_copy_stream(ctx, stream)?;
        if data.len() as u64 > COPY_CHUNK {
            tracing::warn!(
                "session {}: a host-to-device piece of {} bytes exceeds the {COPY_CHUNK}-byte chunk",
                self.id,
                data.len()
            );
            return Err(INVALID_VALUE);
        }
        if data.is_empty() {
            return Ok(());
        }
        self.check_range("MemcpyHtoD", dst, data.len() as u64, Access::Write)?;
        self.htod_raw(stream, dst, data.as_ptr().cast(), data.len(), false)
    }

    /// The driver copy of a checked host-to-device range. `registered`:
    /// the source is registered memory, which an asynchronous copy reads
    /// later; it is waited for before the source is reused.
    fn htod_raw(
        &mut self,
        stream: Option<CUstream>,
        dst: u64,
        src: *const c_void,
        n: usize,
        registered: bool,
    ) -> Result<(), Status> {
        match stream {
            None => cu!(self, cuMemcpyHtoD_v2(dst, src, n)),
            Some(s) => {
                cu!(self, cuMemcpyHtoDAsync_v2(dst, src, n, s))?;
                if registered {
                    self.wait_stream(s).map_err(|(e, _)| e)?;
                }
                Ok(())
            }
        }
    }

    /// Device memory into a reply: the `Bytes` encoding (length, then the
    /// bytes) written in place into the kept reply buffer.
    fn dtoh_reply(
        &mut self,
        ctx: u64,
        stream: Option<u64>,
        src: u64,
        size: u64,
    ) -> Result<Vec<u8>, Status> {
        let stream = self.enter_copy_stream(ctx, stream)?;
        if size > COPY_CHUNK {
            tracing::warn!(
                "session {}: MemcpyDtoH of {size} bytes exceeds the {COPY_CHUNK}-byte chunk",
                self.id
            );
            return Err(INVALID_VALUE);
        }
        if size > 0 {
            self.check_range("MemcpyDtoH", src, size, Access::Read)?;
        }
        let mut buf = std::mem::take(&mut self.plane.spare);
        buf.clear();
        buf.extend_from_slice(&(size as u32).to_le_bytes());
        // Grows once to the largest piece and keeps that capacity: no page
        // is faulted in twice, and nothing is written twice (the driver
        // writes the bytes into the spare capacity).
        buf.reserve(size as usize);
        if size == 0 {
            return Ok(buf);
        }
        let dst = buf.spare_capacity_mut().as_mut_ptr().cast::<c_void>();
        let r = self.dtoh_raw(stream, dst, src, size as usize);
        match r {
            Ok(()) => {
                // SAFETY: the driver wrote all `size` bytes after the
                // length word (the copy completed), within the capacity
                // reserved above.
                unsafe { buf.set_len(4 + size as usize) };
                Ok(buf)
            }
            Err((e, settled)) => {
                if settled {
                    self.plane.spare = buf;
                } else {
                    tracing::error!(
                        "session {}: cannot confirm an async copy finished ({e}); keeping its \
                         buffer alive",
                        self.id
                    );
                    std::mem::forget(buf);
                }
                Err(e)
            }
        }
    }

    /// The driver copy of a checked device-to-host range; complete when it
    /// returns `Ok`. `Err((status, settled))` as [`Session::wait_stream`].
    fn dtoh_raw(
        &mut self,
        stream: Option<CUstream>,
        dst: *mut c_void,
        src: u64,
        n: usize,
    ) -> Result<(), (Status, bool)> {
        match stream {
            None => cu!(self, cuMemcpyDtoH_v2(dst, src, n)).map_err(|e| (e, true)),
            Some(s) => {
                cu!(self, cuMemcpyDtoHAsync_v2(dst, src, n, s)).map_err(|e| (e, true))?;
                self.wait_stream(s)
            }
        }
    }

    /// `len` bytes of the region at `offset`, checked against the mapping.
    fn region_range(&mut self, op: &str, offset: u64, len: u64) -> Result<*mut u8, Status> {
        let Some(region) = &self.plane.region else {
            tracing::warn!(
                "session {}: {op} without a shared-memory region; refused",
                self.id
            );
            return Err(INVALID_VALUE);
        };
        region.range(offset, len).ok_or_else(|| {
            tracing::warn!(
                "session {}: {op}: {len} byte(s) at offset {offset} are outside the {}-byte \
                 shared-memory region; refused",
                self.id,
                region.len()
            );
            INVALID_VALUE
        })
    }

    /// Registers the region with a real driver the first time a context
    /// is current for a copy through it (`cuMemHostRegister` needs one;
    /// `PORTABLE` makes it count in every context). Whether it is.
    fn register_region(&mut self) -> bool {
        if let Some(r) = self.plane.registered {
            return r;
        }
        let Some(region) = &self.plane.region else {
            return false;
        };
        let (base, len) = (region.base().cast::<c_void>(), region.len());
        let ok = self.driver.kind == DriverKind::Nvidia
            && self.driver.cuda.cuMemHostRegister_v2.is_some()
            && match cu!(
                self,
                cuMemHostRegister_v2(base, len, cuda_types::cuda::CU_MEMHOSTREGISTER_PORTABLE)
            ) {
                Ok(()) => true,
                Err(e) => {
                    tracing::info!(
                        "session {}: cuMemHostRegister of the shared region failed ({e}); \
                         copies through it are staged by the driver",
                        self.id
                    );
                    false
                }
            };
        self.plane.registered = Some(ok);
        ok
    }

    fn shm_htod(
        &mut self,
        ctx: u64,
        stream: Option<u64>,
        dst: u64,
        offset: u64,
        len: u64,
    ) -> Result<(), Status> {
        let stream = self.enter_copy_stream(ctx, stream)?;
        let src = self.region_range("ShmHtoD", offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.check_range("ShmHtoD", dst, len, Access::Write)?;
        let registered = self.register_region();
        self.htod_raw(stream, dst, src.cast(), len as usize, registered)
    }

    fn shm_dtoh(
        &mut self,
        ctx: u64,
        stream: Option<u64>,
        src: u64,
        offset: u64,
        len: u64,
    ) -> Result<(), Status> {
        let stream = self.enter_copy_stream(ctx, stream)?;
        let dst = self.region_range("ShmDtoH", offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.check_range("ShmDtoH", src, len, Access::Read)?;
        self.register_region();
        // A failed stream wait leaves the slot to a copy that may still
        // run; the guest reads nothing from it (the reply is an error) and
        // the region outlives every copy (it is unmapped at teardown, after
        // every context is synchronized).
        self.dtoh_raw(stream, dst.cast(), src, len as usize)
            .map_err(|(e, _)| e)
    }

    /// Appends `data` to the staged image.
    fn stage(&mut self, data: &[u8]) -> Result<(), Status> {
        let staged = self.plane.staged.get_or_insert_with(|| Ok(Vec::new()));
        let Ok(image) = staged else {
            return Err(INVALID_VALUE);
        };
        if image.len() as u64 + data.len() as u64 > MAX_STAGED_IMAGE {
            tracing::warn!(
                "session {}: a staged image past {MAX_STAGED_IMAGE} bytes; refused",
                self.id
            );
            *staged = Err(INVALID_VALUE);
            return Err(INVALID_VALUE);
        }
        image.extend_from_slice(data);
        Ok(())
    }

    /// Takes the staged image for a load.
    pub(super) fn take_staged(&mut self) -> Result<Vec<u8>, Status> {
        match self.plane.staged.take() {
            Some(r) => r,
            None => {
                tracing::warn!(
                    "session {}: load of a staged image, but none was staged",
                    self.id
                );
                Err(INVALID_VALUE)
            }
        }
    }
}

impl Serve<MemcpyHtoDPart> for Session {
    fn serve(&mut self, c: MemcpyHtoDPart) -> Result<(), Status> {
        self.htod(c.ctx, None, c.dst, &c.data.0)
    }
}

impl Serve<ShmHtoD> for Session {
    fn serve(&mut self, c: ShmHtoD) -> Result<(), Status> {
        self.shm_htod(c.ctx, None, c.dst, c.offset, c.len)
    }
}

impl Serve<ShmHtoDAsync> for Session {
    fn serve(&mut self, c: ShmHtoDAsync) -> Result<(), Status> {
        self.shm_htod(c.ctx, Some(c.stream), c.dst, c.offset, c.len)
    }
}

impl Serve<ShmDtoH> for Session {
    fn serve(&mut self, c: ShmDtoH) -> Result<(), Status> {
        self.shm_dtoh(c.ctx, None, c.src, c.offset, c.len)
    }
}

impl Serve<ShmDtoHAsync> for Session {
    fn serve(&mut self, c: ShmDtoHAsync) -> Result<(), Status> {
        self.shm_dtoh(c.ctx, Some(c.stream), c.src, c.offset, c.len)
    }
}

impl Serve<ImageStage> for Session {
    fn serve(&mut self, c: ImageStage) -> Result<(), Status> {
        self.stage(&c.data.0)
    }
}

impl Serve<ImageStageShm> for Session {
    fn serve(&mut self, c: ImageStageShm) -> Result<(), Status> {
        let p = self.region_range("ImageStageShm", c.offset, c.len)?;
        // SAFETY: `p` holds `c.len` bytes of the mapping (checked); the
        // guest may scribble on them meanwhile, which only changes data.
        let data = unsafe { std::slice::from_raw_parts(p, c.len as usize) };
        self.stage(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu_transport::codec::Bytes;

    #[test]
    fn in_place_fields_match_the_codec() {
        let c = MemcpyHtoDAsync {
            ctx: 1,
            stream: 2,
            dst: 3,
            data: Bytes(vec![9, 8, 7]),
        };
        let p = vgpu_transport::codec::to_bytes(&c);
        let (f, d) = fields_and_bytes::<3>(&p).unwrap();
        assert_eq!((f, d), ([1, 2, 3], &[9u8, 8, 7][..]));
        // A length that disagrees with the bytes present is not that shape.
        assert!(fields_and_bytes::<3>(&p[..p.len() - 1]).is_none());
        assert!(fields_and_bytes::<4>(&p).is_none());
        let s = vgpu_transport::codec::to_bytes(&ImageStage {
            data: Bytes(vec![1, 2]),
        });
        assert_eq!(fields_and_bytes::<0>(&s).unwrap().1, &[1, 2]);
    }
}
