//! Bulk transfers on a guest's [`Client`]: copies between guest memory and
//! device memory of any size, and images too large for one frame
//! (docs/protocol.md, "Bulk transfers").
//!
//! Every transfer is cut into pieces and pipelined — no piece waits for the
//! previous one's reply before it is sent — and no piece is copied into a
//! buffer of its own on the guest:
//! - **over the socket**, a host-to-device piece is written straight from
//!   the caller's buffer (`sendmsg` of header, fixed fields and the bytes);
//!   every piece but the last of a synchronous copy is queued
//!   (`MemcpyHtoDPart`) and the last one's reply reports them all; a
//!   stream-ordered copy is all queued. Device-to-host pieces are asked
//!   for a few at a time ([`WINDOW`]) and each reply is read straight into
//!   the caller's buffer.
//! - **through the shared-memory region** (`caps::SHM`), pieces go through
//!   its slots: the guest fills a slot (HtoD) while the worker empties the
//!   previous one, or copies a filled slot out (DtoH) while the worker
//!   fills the next. A slot is reused only after the reply that frees it.

use crate::codec::{to_bytes, Bytes, Wire};
use crate::conn::{CallError, Client};
use crate::frame::{FrameError, FLAG_NO_REPLY};
use crate::proto::{
    Call, Domain, ImageStage, ImageStageShm, MemcpyDtoH, MemcpyDtoHAsync, MemcpyHtoD,
    MemcpyHtoDAsync, MemcpyHtoDPart, ShmDtoH, ShmDtoHAsync, ShmHtoD, ShmHtoDAsync, COPY_CHUNK,
};
use crate::status::Status;
use std::collections::VecDeque;

/// Device-to-host pieces asked for ahead of the one being read.
pub const WINDOW: usize = 3;

/// `(offset, len)` of each piece of a `total`-byte transfer cut at `chunk`.
pub fn pieces(total: usize, chunk: usize) -> impl Iterator<Item = (usize, usize)> {
    let chunk = chunk.max(1);
    (0..total.div_ceil(chunk)).map(move |i| {
        let off = i * chunk;
        (off, chunk.min(total - off))
    })
}

/// The encoding of `call` (whose last field is an empty `Bytes`) as the
/// prefix of a payload whose last `len` bytes follow it: the length word
/// of that field says `len`.
fn prefix<C: Wire>(call: &C, len: usize) -> Vec<u8> {
    let mut p = to_bytes(call);
    let n = p.len();
    debug_assert!(
        n >= 4 && p[n - 4..] == [0; 4],
        "the bytes field must be last"
    );
    p[n - 4..].copy_from_slice(&(len as u32).to_le_bytes());
    p
}

fn status(code: u32) -> Option<CallError> {
    Status::from_wire(Domain::Cuda, code).map(CallError::Status)
}

/// The first failure of a transfer's pieces; the transfer goes on (its
/// replies must all be read) and reports it at the end.
#[derive(Default)]
struct First(Option<CallError>);

impl First {
    fn note(&mut self, code: u32) {
        if self.0.is_none() {
            self.0 = status(code);
        }
    }
    fn result(self) -> Result<(), CallError> {
        self.0.map_or(Ok(()), Err)
    }
}

impl Client {
    /// `src` to device memory at `dst` in context `ctx`: synchronously, or
    /// ordered on `stream` (the host has taken every byte when this
    /// returns, so `src` may be reused, as after a driver's pageable
    /// `cuMemcpyHtoDAsync`).
    pub fn put(
        &mut self,
        ctx: u64,
        stream: Option<u64>,
        dst: u64,
        src: &[u8],
    ) -> Result<(), CallError> {
        if src.is_empty() {
            return Ok(());
        }
        if self.shm.is_some() {
            return self.through_slots(src, |off, offset, len| match stream {
                None => (
                    ShmHtoD::OP,
                    to_bytes(&ShmHtoD {
                        ctx,
                        dst: dst + off as u64,
                        offset,
                        len,
                    }),
                ),
                Some(stream) => (
                    ShmHtoDAsync::OP,
                    to_bytes(&ShmHtoDAsync {
                        ctx,
                        stream,
                        dst: dst + off as u64,
                        offset,
                        len,
                    }),
                ),
            });
        }
        let chunk = COPY_CHUNK as usize;
        for (off, len) in pieces(src.len(), chunk) {
            let piece = &src[off..off + len];
            let to = dst + off as u64;
            let data = Bytes(Vec::new());
            let last = off + len == src.len();
            match stream {
                Some(stream) => {
                    let call = MemcpyHtoDAsync {
                        ctx,
                        stream,
                        dst: to,
                        data,
                    };
                    let p = prefix(&call, len);
                    self.send_parts(MemcpyHtoDAsync::OP, FLAG_NO_REPLY, &[&p, piece])?;
                }
                None if !last => {
                    let p = prefix(&MemcpyHtoDPart { ctx, dst: to, data }, len);
                    self.send_parts(MemcpyHtoDPart::OP, FLAG_NO_REPLY, &[&p, piece])?;
                }
                None => {
                    let p = prefix(&MemcpyHtoD { ctx, dst: to, data }, len);
                    let seq = self.send_parts(MemcpyHtoD::OP, 0, &[&p, piece])?;
                    let f = self.read_reply(seq)?;
                    if let Some(e) = status(f.header.status) {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Device memory at `src` into `dst`: synchronously, or ordered on
    /// `stream` (complete when this returns either way: the bytes are the
    /// replies).
    pub fn get(
        &mut self,
        ctx: u64,
        stream: Option<u64>,
        dst: &mut [u8],
        src: u64,
    ) -> Result<(), CallError> {
        if dst.is_empty() {
            return Ok(());
        }
        if self.shm.is_some() {
            return self.get_shm(ctx, stream, dst, src);
        }
        let all: Vec<(usize, usize)> = pieces(dst.len(), COPY_CHUNK as usize).collect();
        let mut asked = VecDeque::new();
        let mut next = 0;
        let mut first = First::default();
        let ask = |c: &mut Client, i: usize| -> Result<u32, CallError> {
            let (off, len) = all[i];
            let from = src + off as u64;
            let size = len as u64;
            match stream {
                None => {
                    let p = to_bytes(&MemcpyDtoH {
                        ctx,
                        src: from,
                        size,
                    });
                    c.send_parts(MemcpyDtoH::OP, 0, &[&p])
                }
                Some(stream) => {
                    let p = to_bytes(&MemcpyDtoHAsync {
                        ctx,
                        stream,
                        src: from,
                        size,
                    });
                    c.send_parts(MemcpyDtoHAsync::OP, 0, &[&p])
                }
            }
        };
        while next < all.len() && asked.len() < WINDOW {
            asked.push_back((ask(self, next)?, next));
            next += 1;
        }
        while let Some((seq, i)) = asked.pop_front() {
            // The worker gets the next request before this reply is read,
            // so it never waits for the guest.
            if next < all.len() {
                asked.push_back((ask(self, next)?, next));
                next += 1;
            }
            let (off, len) = all[i];
            first.note(self.read_reply_into(seq, &mut dst[off..off + len])?);
        }
        first.result()
    }

    fn get_shm(
        &mut self,
        ctx: u64,
        stream: Option<u64>,
        dst: &mut [u8],
        src: u64,
    ) -> Result<(), CallError> {
        let (slot, slots) = self.slots();
        let all: Vec<(usize, usize)> = pieces(dst.len(), slot).collect();
        let ask = |c: &mut Client, i: usize| -> Result<u32, CallError> {
            let (off, len) = all[i];
            let offset = ((i % slots) * slot) as u64;
            let (from, len) = (src + off as u64, len as u64);
            let (op, p) = match stream {
                None => (
                    ShmDtoH::OP,
                    to_bytes(&ShmDtoH {
                        ctx,
                        src: from,
                        offset,
                        len,
                    }),
                ),
                Some(stream) => (
                    ShmDtoHAsync::OP,
                    to_bytes(&ShmDtoHAsync {
                        ctx,
                        stream,
                        src: from,
                        offset,
                        len,
                    }),
                ),
            };
            c.send_parts(op, 0, &[&p])
        };
        let mut asked = VecDeque::new();
        let mut next = 0;
        while next < all.len() && asked.len() < slots {
            asked.push_back((ask(self, next)?, next));
            next += 1;
        }
        let mut first = First::default();
        while let Some((seq, i)) = asked.pop_front() {
            let f = self.read_reply(seq)?;
            let (off, len) = all[i];
            if f.header.status == 0 {
                let region = self.shm.as_ref().expect("checked by the caller");
                let from = region
                    .range(((i % slots) * slot) as u64, len as u64)
                    .ok_or(CallError::Transport(FrameError::TooLarge(len as u32)))?;
                // SAFETY: `from` holds `len` bytes of the mapping (checked
                // by `range`); the worker filled them and touches this slot
                // again only for a request not yet sent.
                unsafe { std::ptr::copy_nonoverlapping(from, dst[off..].as_mut_ptr(), len) };
            } else {
                first.note(f.header.status);
            }
            // The slot is free again.
            if next < all.len() {
                asked.push_back((ask(self, next)?, next));
                next += 1;
            }
        }
        first.result()
    }

    /// Sends `image` to the host's staged image (a load op naming the
    /// staged image follows): in pieces, through the region when there is
    /// one.
    pub fn stage_image(&mut self, image: &[u8]) -> Result<(), CallError> {
        if self.shm.is_some() {
            return self.through_slots(image, |_, offset, len| {
                (ImageStageShm::OP, to_bytes(&ImageStageShm { offset, len }))
            });
        }
        for (off, len) in pieces(image.len(), COPY_CHUNK as usize) {
            let p = prefix(
                &ImageStage {
                    data: Bytes(Vec::new()),
                },
                len,
            );
            self.send_parts(ImageStage::OP, FLAG_NO_REPLY, &[&p, &image[off..off + len]])?;
        }
        Ok(())
    }

    /// `(slot size, slots)` of the region.
    fn slots(&self) -> (usize, usize) {
        let region = self.shm.as_ref().expect("only with a region");
        let slot = crate::shm::SLOT as usize;
        (slot, (region.len() / slot).max(1))
    }

    /// Moves `src` through the region's slots: each piece is copied into
    /// the next free slot and announced by the request `request(offset in
    /// src, offset in the region, len)` builds; a slot is reused after the
    /// reply of the request that used it.
    fn through_slots(
        &mut self,
        src: &[u8],
        request: impl Fn(usize, u64, u64) -> (u16, Vec<u8>),
    ) -> Result<(), CallError> {
        let (slot, slots) = self.slots();
        let mut sent: VecDeque<u32> = VecDeque::new();
        let mut first = First::default();
        for (i, (off, len)) in pieces(src.len(), slot).enumerate() {
            if sent.len() == slots {
                let seq = sent.pop_front().expect("full");
                let f = self.read_reply(seq)?;
                first.note(f.header.status);
            }
            let offset = ((i % slots) * slot) as u64;
            let region = self.shm.as_ref().expect("only with a region");
            let to = region
                .range(offset, len as u64)
                .ok_or(CallError::Transport(FrameError::TooLarge(len as u32)))?;
            // SAFETY: `to` holds `len` bytes of the mapping; the slot is
            // free (its last request was answered, or it was never used in
            // this transfer, and transfers finish before the next starts).
            unsafe { std::ptr::copy_nonoverlapping(src[off..].as_ptr(), to, len) };
            let (op, p) = request(off, offset, len as u64);
            sent.push_back(self.send_parts(op, 0, &[&p])?);
        }
        while let Some(seq) = sent.pop_front() {
            let f = self.read_reply(seq)?;
            first.note(f.header.status);
        }
        first.result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_tile_the_transfer() {
        assert_eq!(pieces(0, 8).count(), 0);
        assert_eq!(pieces(1, 8).collect::<Vec<_>>(), [(0, 1)]);
        assert_eq!(pieces(8, 8).collect::<Vec<_>>(), [(0, 8)]);
        assert_eq!(pieces(9, 8).collect::<Vec<_>>(), [(0, 8), (8, 1)]);
        assert_eq!(pieces(7, 8).collect::<Vec<_>>(), [(0, 7)]);
    }

    #[test]
    fn a_prefix_and_its_bytes_decode_as_the_call() {
        let data = b"hello bytes".to_vec();
        let p = prefix(
            &MemcpyHtoD {
                ctx: 3,
                dst: 0x1000,
                data: Bytes(Vec::new()),
            },
            data.len(),
        );
        let mut whole = p.clone();
        whole.extend_from_slice(&data);
        let c: MemcpyHtoD = crate::proto::decode_call(&whole).unwrap();
        assert_eq!((c.ctx, c.dst, c.data.0), (3, 0x1000, data));
    }
}
