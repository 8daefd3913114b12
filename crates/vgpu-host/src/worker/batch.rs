//! Batched calls, deferred errors and sticky context errors, and the
//! request loop that applies them to every op alike.
//!
//! A guest sends calls whose failure the application can only observe
//! later (launches, async copies, event records, stream waits) with
//! [`FLAG_NO_REPLY`] and does not wait for them. Their handlers run exactly
//! like any other; the loop, not the handler, decides what happens to the
//! result: a NO_REPLY call that fails becomes the session's *deferred*
//! error (the first one is kept, every one is logged), and the next call
//! that synchronizes — or `Flush`, which exists to collect it — answers
//! with it instead of success. That is when CUDA reports an asynchronous
//! error too.
//!
//! Errors that leave a context unusable on a real GPU (illegal address,
//! launch failure ...) are *sticky*: the driver returns them from every
//! later call in that context. The worker does the same by itself, so the
//! behaviour does not depend on the driver (the software GPU does not keep
//! such state) and a call that never reaches the driver still fails.
//! Contexts are marked where [`Session::enter`](super::Session::enter)
//! makes one current: the last context entered is the one the driver ran
//! the failing call in.

use super::{handle, Handler};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::ops::Range;
use vgpu_transport::frame::{
    write_frame, FrameError, Header, FLAG_NO_REPLY, HEADER_LEN, MAX_PAYLOAD,
};
use vgpu_transport::proto::{
    self, Call, CtxSynchronize, EventQuery, EventSynchronize, Flush, Memcpy2DDtoH, Memcpy2DHtoD,
    MemcpyDtoH, MemcpyHtoD, StreamQuery, StreamSynchronize,
};

pub const HANDLERS: &[(u16, Handler)] = &[
    // The loop substitutes the deferred error; by itself Flush succeeds.
    (Flush::OP, |_, p| handle(p, |_: Flush| Ok(()))),
];

const NOT_READY: u32 = cuda_types::cuda::CUresult::CUDA_ERROR_NOT_READY.0;

/// CUresults after which a real driver refuses every further call in the
/// context (the GPU state of the context is lost).
pub fn is_sticky(status: u32) -> bool {
    matches!(
        status,
        700 // ILLEGAL_ADDRESS
            | 702 // LAUNCH_TIMEOUT
            | 710 // ASSERT
            | 714 // HARDWARE_STACK_ERROR
            | 715 // ILLEGAL_INSTRUCTION
            | 716 // MISALIGNED_ADDRESS
            | 717 // INVALID_ADDRESS_SPACE
            | 718 // INVALID_PC
            | 719 // LAUNCH_FAILED
            | 999 // UNKNOWN
    )
}

/// Whether a reply-bearing call is one where CUDA reports earlier
/// asynchronous errors: it waits for the GPU, asks whether work is done,
/// or (Flush) exists to collect them. Synchronous copies that involve host
/// memory wait for the device; device-side copies and memsets do not.
pub fn collects_deferred(op: u16, payload: &[u8]) -> bool {
    match op {
        CtxSynchronize::OP
        | StreamSynchronize::OP
        | StreamQuery::OP
        | EventSynchronize::OP
        | EventQuery::OP
        | Flush::OP => true,
        // These begin with `ctx: u64, stream: u64`; stream 0 is the
        // synchronous form. Peeking avoids decoding a whole 8 MiB chunk.
        MemcpyHtoD::OP | MemcpyDtoH::OP | Memcpy2DHtoD::OP | Memcpy2DDtoH::OP => payload
            .get(8..16)
            .is_some_and(|b| b.iter().all(|&x| x == 0)),
        _ => false,
    }
}

/// One failed NO_REPLY call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferred {
    pub status: u32,
    pub op: u16,
    pub seq: u32,
}

/// The batching state of one session.
#[derive(Debug, Default)]
pub struct Batch {
    /// The first failure of a NO_REPLY call not yet reported.
    pub pending: Option<Deferred>,
    /// NO_REPLY calls that failed since the session began (for logs).
    pub failed: u64,
    /// Contexts (by handle) that hit a sticky error, and the error.
    broken: HashMap<u64, u32>,
    /// The context the driver thread is in (the last one entered).
    pub entered: Option<u64>,
}

impl Batch {
    /// Called before a context is made current: a broken one refuses with
    /// its sticky error (and counts as entered, so nothing else is blamed).
    pub fn admit(&mut self, ctx: u64) -> Result<(), u32> {
        match self.broken.get(&ctx) {
            Some(&code) => {
                self.entered = Some(ctx);
                Err(code)
            }
            None => Ok(()),
        }
    }

    /// The sticky error of a context, if it has one.
    pub fn broken(&self, ctx: u64) -> Option<u32> {
        self.broken.get(&ctx).copied()
    }

    /// The context is gone (destroyed, reset, released): a new one under
    /// the same handle starts clean.
    pub fn forget_ctx(&mut self, ctx: u64) {
        self.broken.remove(&ctx);
        if self.entered == Some(ctx) {
            self.entered = None;
        }
    }

    /// Teardown must reach the driver for every context to free what it
    /// holds, broken or not.
    pub fn forgive_all(&mut self) {
        self.broken.clear();
    }

    /// Decides what the guest hears about a call that returned `status`:
    /// `None` for no reply at all, else the status to reply with.
    pub fn settle(
        &mut self,
        session: u64,
        header: &Header,
        payload: &[u8],
        status: u32,
    ) -> Option<u32> {
        if is_sticky(status) {
            if let Some(ctx) = self.entered {
                if self.broken.insert(ctx, status).is_none() {
                    tracing::warn!(
                        "session {session}: context {ctx:#x} hit sticky CUresult {status}; \
                         every later call in it fails with it"
                    );
                }
            }
        }
        let op_name = || proto::op_name(header.op).unwrap_or("?");
        if header.flags & FLAG_NO_REPLY != 0 {
            if status != 0 {
                self.failed += 1;
                tracing::warn!(
                    "session {session}: batched {} (seq {}) failed with status {status}; \
                     deferred to the next synchronizing call{}",
                    op_name(),
                    header.seq,
                    match self.pending {
                        Some(p) => format!(" (status {} from seq {} goes first)", p.status, p.seq),
                        None => String::new(),
                    }
                );
                self.pending.get_or_insert(Deferred {
                    status,
                    op: header.op,
                    seq: header.seq,
                });
            }
            return None;
        }
        if !collects_deferred(header.op, payload) {
            return Some(status);
        }
        let Some(p) = self.pending else {
            return Some(status);
        };
        // The call's own failure (a bad handle, say) is its answer; the
        // deferred error waits for the next collector. Success and "not
        // ready yet" give way to it, as on CUDA.
        if status != 0 && status != NOT_READY {
            if status == p.status {
                self.pending = None;
            }
            return Some(status);
        }
        self.pending = None;
        tracing::debug!(
            "session {session}: {} reports deferred status {} of {} seq {}",
            op_name(),
            p.status,
            proto::op_name(p.op).unwrap_or("?"),
            p.seq
        );
        Some(p.status)
    }
}

/// Reads frames through one buffer: a burst of small batched frames costs
/// one `read` for many of them, and payloads are handed out in place.
pub struct FrameReader {
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    payload: Range<usize>,
}

/// Bytes asked of the socket at a time; a frame larger than this grows the
/// buffer, which shrinks back once it drains.
const READ_CHUNK: usize = 256 * 1024;

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::new()
    }
}

impl FrameReader {
    pub fn new() -> FrameReader {
        FrameReader {
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            payload: 0..0,
        }
    }

    /// The next frame's header; its payload is [`FrameReader::payload`]
    /// until the next call. Errors mean what `frame::read_frame`'s do.
    pub fn next(&mut self, r: &mut impl Read) -> Result<Header, FrameError> {
        self.start = self.payload.end.max(self.start);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > 4 * READ_CHUNK {
                self.buf.truncate(READ_CHUNK);
                self.buf.shrink_to_fit();
            }
        }
        self.payload = self.start..self.start;
        self.fill(r, HEADER_LEN, true)?;
        let mut hb = [0u8; HEADER_LEN];
        hb.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        let header = Header::from_bytes(&hb);
        if header.len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(header.len));
        }
        self.fill(r, HEADER_LEN + header.len as usize, false)?;
        let p = self.start + HEADER_LEN;
        self.payload = p..p + header.len as usize;
        Ok(header)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf[self.payload.clone()]
    }

    /// Until `need` unconsumed bytes are buffered. `between_frames`: an
    /// end of stream before any byte of this frame is a clean close.
    fn fill(
        &mut self,
        r: &mut impl Read,
        need: usize,
        between_frames: bool,
    ) -> Result<(), FrameError> {
        while self.end - self.start < need {
            if self.buf.len() - self.start < need {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                self.payload = 0..0;
                if self.buf.len() < need {
                    self.buf.resize(need, 0);
                }
            }
            match r.read(&mut self.buf[self.end..]) {
                Ok(0) if between_frames && self.end == self.start => {
                    return Err(FrameError::Closed)
                }
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// What the request loop needs of a session.
pub trait Served {
    fn id(&self) -> u64;
    fn batch(&mut self) -> &mut Batch;
}

/// Serves frames until the guest hangs up (0) or framing is lost (0 too:
/// either way the guest is gone and the session ends). `dispatch` runs one
/// call and returns its status and payload; whether and how to answer is
/// decided here, the same for every op.
pub fn serve_loop<T: Served, S: Read + Write>(
    t: &mut T,
    stream: &mut S,
    mut dispatch: impl FnMut(&mut T, &Header, &[u8]) -> (u32, Vec<u8>),
) -> i32 {
    let mut reader = FrameReader::new();
    loop {
        let header = match reader.next(stream) {
            Ok(h) => h,
            Err(FrameError::Closed) => {
                tracing::info!("session {}: guest disconnected", t.id());
                return 0;
            }
            Err(e) => {
                // Framing is lost (oversized header, truncated frame): there
                // is no way to find the next frame, so the session ends.
                tracing::warn!("session {}: dropping connection: {e}", t.id());
                return 0;
            }
        };
        let (status, mut payload) = dispatch(t, &header, reader.payload());
        if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace!(
                "session {}: {} seq {}{} -> status {status}",
                t.id(),
                proto::op_name(header.op).unwrap_or("?"),
                header.seq,
                if header.flags & FLAG_NO_REPLY != 0 {
                    " (no reply)"
                } else {
                    ""
                }
            );
        }
        let id = t.id();
        let Some(status) = t.batch().settle(id, &header, reader.payload(), status) else {
            continue;
        };
        if status != 0 {
            payload.clear();
        }
        let reply = Header {
            op: header.op,
            seq: header.seq,
            status,
            ..Default::default()
        };
        if let Err(e) = write_frame(stream, reply, &payload) {
            tracing::info!("session {}: guest gone while replying: {e}", t.id());
            return 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgpu_transport::frame::read_frame;
    use vgpu_transport::proto::{LaunchKernel, MemAlloc};

    /// A session stand-in: op `LaunchKernel` "enters" the context named by
    /// the payload's first u64 and returns the u32 after it; every other op
    /// returns the payload's first u32, and MemAlloc and MemcpyDtoH echo
    /// the payload as their reply.
    #[derive(Default)]
    struct Fake {
        batch: Batch,
        calls: u32,
    }

    impl Served for Fake {
        fn id(&self) -> u64 {
            7
        }
        fn batch(&mut self) -> &mut Batch {
            &mut self.batch
        }
    }

    fn fake_dispatch(f: &mut Fake, h: &Header, p: &[u8]) -> (u32, Vec<u8>) {
        f.calls += 1;
        let u32_at = |i: usize| u32::from_le_bytes(p[i..i + 4].try_into().unwrap());
        if h.op == LaunchKernel::OP {
            let ctx = u64::from_le_bytes(p[..8].try_into().unwrap());
            if let Err(code) = f.batch.admit(ctx) {
                return (code, Vec::new());
            }
            f.batch.entered = Some(ctx);
            return (u32_at(8), Vec::new());
        }
        let status = if p.len() >= 4 { u32_at(0) } else { 0 };
        let echo = matches!(h.op, MemAlloc::OP | MemcpyDtoH::OP);
        (status, if echo { p.to_vec() } else { Vec::new() })
    }

    /// A duplex byte stream: reads come from `input`, writes collect.
    struct Pipe {
        input: io::Cursor<Vec<u8>>,
        output: Vec<u8>,
        /// Largest read allowed, to exercise frames split across reads.
        max_read: usize,
        reads: u32,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let n = buf.len().min(self.max_read);
            self.input.read(&mut buf[..n])
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.output.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn frame(out: &mut Vec<u8>, op: u16, seq: u32, no_reply: bool, payload: &[u8]) {
        let h = Header {
            op,
            seq,
            flags: if no_reply { FLAG_NO_REPLY } else { 0 },
            ..Default::default()
        };
        write_frame(out, h, payload).unwrap();
    }

    fn launch(ctx: u64, status: u32) -> Vec<u8> {
        let mut v = ctx.to_le_bytes().to_vec();
        v.extend_from_slice(&status.to_le_bytes());
        v
    }

    fn run(input: Vec<u8>, max_read: usize) -> (Fake, Vec<(Header, Vec<u8>)>, u32) {
        let mut pipe = Pipe {
            input: io::Cursor::new(input),
            output: Vec::new(),
            max_read,
            reads: 0,
        };
        let mut fake = Fake::default();
        assert_eq!(serve_loop(&mut fake, &mut pipe, fake_dispatch), 0);
        let mut replies = Vec::new();
        let mut out = &pipe.output[..];
        while !out.is_empty() {
            let f = read_frame(&mut out).unwrap();
            replies.push((f.header, f.payload));
        }
        (fake, replies, pipe.reads)
    }

    #[test]
    fn no_reply_calls_are_silent_and_their_first_error_waits_for_a_collector() {
        let sync = CtxSynchronize::OP;
        let mut inp = Vec::new();
        frame(&mut inp, LaunchKernel::OP, 1, true, &launch(5, 0));
        frame(&mut inp, LaunchKernel::OP, 2, true, &launch(5, 1)); // INVALID_VALUE
        frame(&mut inp, LaunchKernel::OP, 3, true, &launch(5, 98)); // logged, not kept
                                                                    // A reply-bearing call that does not synchronize keeps its result.
        frame(&mut inp, MemAlloc::OP, 4, false, &[0, 0, 0, 0, 9]);
        // Not-ready gives way to the deferred error; then it is gone.
        frame(
            &mut inp,
            StreamQuery::OP,
            5,
            false,
            &NOT_READY.to_le_bytes(),
        );
        frame(&mut inp, sync, 6, false, &[0, 0, 0, 0]);
        // A collector's own error wins and the deferred one stays pending.
        frame(&mut inp, LaunchKernel::OP, 7, true, &launch(5, 1));
        frame(&mut inp, sync, 8, false, &400u32.to_le_bytes());
        frame(&mut inp, Flush::OP, 9, false, &[]);
        frame(&mut inp, Flush::OP, 10, false, &[]);
        // A synchronous copy (stream 0) collects; an async one does not.
        frame(&mut inp, LaunchKernel::OP, 11, true, &launch(5, 2));
        let mut async_copy = vec![0u8; 16];
        async_copy[8] = 1;
        frame(&mut inp, MemcpyDtoH::OP, 12, false, &async_copy);
        frame(&mut inp, MemcpyDtoH::OP, 13, false, &[0u8; 24]);
        let (fake, replies, _) = run(inp, usize::MAX);
        let got: Vec<(u32, u32, usize)> = replies
            .iter()
            .map(|(h, p)| (h.seq, h.status, p.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, 0, 5),
                (5, 1, 0),
                (6, 0, 0),
                (8, 400, 0),
                (9, 1, 0),
                (10, 0, 0),
                (12, 0, 16),
                // The deferred error replaces the copy's data.
                (13, 2, 0),
            ]
        );
        assert_eq!(fake.calls, 13);
        assert_eq!(fake.batch.failed, 4);
        assert_eq!(fake.batch.pending, None);
    }

    #[test]
    fn sticky_errors_break_their_context_only() {
        let mut inp = Vec::new();
        frame(&mut inp, LaunchKernel::OP, 1, true, &launch(5, 0));
        frame(&mut inp, LaunchKernel::OP, 2, true, &launch(5, 700));
        frame(&mut inp, CtxSynchronize::OP, 3, false, &[0, 0, 0, 0]);
        // Context 5 now refuses everything with 700, reply or not ...
        frame(&mut inp, LaunchKernel::OP, 4, false, &launch(5, 0));
        frame(&mut inp, LaunchKernel::OP, 5, true, &launch(5, 0));
        frame(&mut inp, Flush::OP, 6, false, &[]);
        // ... while context 6 works.
        frame(&mut inp, LaunchKernel::OP, 7, false, &launch(6, 0));
        frame(&mut inp, Flush::OP, 8, false, &[]);
        let (fake, replies, _) = run(inp, usize::MAX);
        let got: Vec<(u32, u32)> = replies.iter().map(|(h, _)| (h.seq, h.status)).collect();
        assert_eq!(got, vec![(3, 700), (4, 700), (6, 700), (7, 0), (8, 0)]);
        assert_eq!(fake.batch.broken(5), Some(700));
        assert_eq!(fake.batch.broken(6), None);
        let mut b = fake.batch;
        b.forget_ctx(5);
        assert_eq!(b.admit(5), Ok(()));
    }

    #[test]
    fn bursts_share_reads_and_split_frames_reassemble() {
        let mut inp = Vec::new();
        for i in 0..1000 {
            frame(&mut inp, LaunchKernel::OP, i, true, &launch(5, 0));
        }
        frame(&mut inp, Flush::OP, 1000, false, &[]);
        let (fake, replies, reads) = run(inp.clone(), usize::MAX);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].0.status, 0);
        assert_eq!(fake.calls, 1001);
        // Everything fits the first buffer: one read, one to see the end.
        assert!(reads <= 3, "{reads} reads for one burst");

        // Frames cut at every possible point, and one larger than the
        // buffer, arrive intact.
        let mut big = vec![0xAB; READ_CHUNK * 2 + 3];
        big[..4].fill(0);
        frame(&mut inp, MemAlloc::OP, 1001, false, &big);
        frame(&mut inp, MemAlloc::OP, 1002, false, &[0, 0, 0, 0, 1]);
        let (_, replies, _) = run(inp, 7);
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[1].1, big);
        assert_eq!(replies[2].1, vec![0, 0, 0, 0, 1]);
    }

    #[test]
    fn truncated_and_oversized_frames_end_the_session() {
        let mut inp = Vec::new();
        frame(&mut inp, Flush::OP, 1, false, &[]);
        frame(&mut inp, MemAlloc::OP, 2, false, &[1, 2, 3, 4, 5]);
        inp.truncate(inp.len() - 2);
        let (_, replies, _) = run(inp, usize::MAX);
        assert_eq!(replies.len(), 1);
        let huge = Header {
            len: MAX_PAYLOAD + 1,
            ..Default::default()
        };
        let (fake, replies, _) = run(huge.to_bytes().to_vec(), usize::MAX);
        assert!(replies.is_empty());
        assert_eq!(fake.calls, 0);
    }
}
