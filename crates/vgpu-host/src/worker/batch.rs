//! Deferred calls, deferred errors and sticky context errors, and the
//! request loop that applies them to every op alike.
//!
//! How an op travels is declared in the protocol's `calls!` table
//! ([`proto::Meta`]), not decided here. A [`Travel::Deferred`] op (launches,
//! async copies and memsets, event records, stream waits) arrives with
//! [`FLAG_NO_REPLY`] and is never answered: its handler runs exactly like
//! any other, and a failure becomes a *deferred* error of the stream it
//! was ordered on (the first one per stream is kept, every one is logged).
//! The next op that `collects` *for that stream* answers with it instead of
//! success: that stream's synchronization or query, a synchronization of
//! the whole context (`CtxSynchronize`, event waits and queries, `Flush`,
//! which exists to collect), and for the default streams a synchronous copy
//! through host memory too ([`Scope`]). That is when CUDA reports an
//! asynchronous error, and a successful copy is never replaced by the
//! failure of unrelated work on another stream. A frame whose
//! NO_REPLY flag contradicts its op's table entry is refused, not run, and
//! so is an op this host does not know; either refusal goes where the flag
//! says the guest listens (a reply, or the deferred error).
//!
//! Errors that leave a context unusable on a real GPU
//! ([`Status::is_sticky`]) are *sticky*: the driver returns them from every
//! later call in that context. The worker does the same by itself, so the
//! behaviour does not depend on the driver (the software GPU does not keep
//! such state) and a call that never reaches the driver still fails.
//! Contexts are marked where [`Session::enter`](super::Session::enter)
//! makes one current: the last context entered is the one the driver ran
//! the failing call in.
//!
//! Before the reply of an op the table marks `flushes` (where CUDA flushes
//! device `printf`), the loop sends the device output printed since the
//! last such reply as `DeviceOutput` notices ([`FLAG_NOTICE`] frames), in
//! the same write as the reply ([`Served::device_output`], see
//! [`super::output`]).

use super::Session;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::ops::Range;
use vgpu_transport::codec::to_bytes;
use vgpu_transport::frame::{
    encode_frame, FrameError, Header, FLAG_NOTICE, FLAG_NO_REPLY, HEADER_LEN, MAX_PAYLOAD,
};
use vgpu_transport::proto::{self, DeviceOutput, Flush, Serve, Travel, DEVICE_OUTPUT_OP};
use vgpu_transport::Status;

impl Serve<Flush> for Session {
    /// By itself Flush succeeds; the loop substitutes the deferred error.
    fn serve(&mut self, _: Flush) -> Result<(), Status> {
        Ok(())
    }
}

/// One failed deferred call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferred {
    pub status: Status,
    pub op: u16,
    pub seq: u32,
    pub scope: Scope,
}

/// What a deferred failure belongs to, and what a collecting call collects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A failure: of a call ordered on no stream. A collector: of a call
    /// that waits for everything (context synchronization, events, `Flush`).
    Any,
    /// The built-in streams (`0`, `CU_STREAM_LEGACY`,
    /// `CU_STREAM_PER_THREAD`), which synchronous copies are ordered on. As
    /// a collector it also collects the failures of blocking streams, which
    /// the legacy default stream waits for.
    DefaultStreams,
    /// A stream the application created, and whether it blocks (was created
    /// without `CU_STREAM_NON_BLOCKING`).
    Stream { handle: u64, blocking: bool },
}

impl Scope {
    /// The scope of a call of `meta` ordered on `stream` (its `stream`
    /// field, when it has one).
    pub fn of(
        meta: &proto::Meta,
        stream: Option<u64>,
        non_blocking: impl FnOnce(u64) -> bool,
    ) -> Scope {
        match stream {
            Some(s) if super::stream::is_builtin(s) => Scope::DefaultStreams,
            Some(s) => Scope::Stream {
                handle: s,
                blocking: !non_blocking(s),
            },
            None if meta.default_stream => Scope::DefaultStreams,
            None => Scope::Any,
        }
    }

    /// Whether a collector of this scope reports a failure of `failure`'s.
    fn collects(self, failure: Scope) -> bool {
        match (self, failure) {
            (Scope::Any, _) | (_, Scope::Any) => true,
            (Scope::DefaultStreams, Scope::Stream { blocking, .. }) => blocking,
            (a, b) => a == b,
        }
    }
}

/// Failures kept at once (one per stream); more are logged and dropped.
const MAX_PENDING: usize = 256;

/// The batching state of one session.
#[derive(Debug, Default)]
pub struct Batch {
    /// The first failure of a deferred call not yet reported, per scope,
    /// oldest first.
    pub pending: Vec<Deferred>,
    /// Deferred calls that failed since the session began (for logs).
    pub failed: u64,
    /// Contexts (by handle) that hit a sticky error, and the error.
    broken: HashMap<u64, Status>,
    /// The context the driver thread is in (the last one entered).
    pub entered: Option<u64>,
}

/// What the loop does with one frame's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handling {
    /// The guest waits for a reply.
    pub answered: bool,
    /// The reply reports the pending deferred error, if any.
    pub collects: bool,
    /// The op's metadata (`None`: unknown op).
    pub meta: Option<proto::Meta>,
    /// Device output printed so far goes out before the reply.
    pub flushes: bool,
}

impl Handling {
    /// How a frame is handled, and whether its op may run: from the op's
    /// table entry when the frame agrees with it; from the frame's flag
    /// alone (and not run) for an unknown op or a contradicting frame.
    pub fn of(header: &Header) -> (Handling, Result<(), Status>) {
        let wants_reply = header.flags & FLAG_NO_REPLY == 0;
        let by_flag = Handling {
            answered: wants_reply,
            collects: false,
            flushes: false,
            meta: None,
        };
        match proto::meta(header.op) {
            None => (by_flag, Err(Status::UNKNOWN_OP)),
            Some(m) if m.answered() != wants_reply => (by_flag, Err(Status::BAD_REQUEST)),
            Some(m) => (
                Handling {
                    answered: m.travel == Travel::Sync,
                    collects: m.collects,
                    flushes: m.flushes,
                    meta: Some(m),
                },
                Ok(()),
            ),
        }
    }
}

impl Batch {
    /// Called before a context is made current: a broken one refuses with
    /// its sticky error (and counts as entered, so nothing else is blamed).
    pub fn admit(&mut self, ctx: u64) -> Result<(), Status> {
        match self.broken.get(&ctx) {
            Some(&code) => {
                self.entered = Some(ctx);
                Err(code)
            }
            None => Ok(()),
        }
    }

    /// The sticky error of a context, if it has one.
    pub fn broken(&self, ctx: u64) -> Option<Status> {
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

    /// Decides what the guest hears about a call that produced `result`:
    /// `None` for no reply at all, else the reply. `scope` is the call's
    /// [`Scope`]; the loop works it out only when a deferred call failed or
    /// a collector finds failures pending (else it passes `Scope::Any`,
    /// which is then not looked at).
    pub fn settle(
        &mut self,
        session: u64,
        header: &Header,
        how: Handling,
        result: Result<Vec<u8>, Status>,
        scope: Scope,
    ) -> Option<Result<Vec<u8>, Status>> {
        if let Err(status) = result {
            if status.is_sticky() {
                if let Some(ctx) = self.entered {
                    if self.broken.insert(ctx, status).is_none() {
                        tracing::warn!(
                            "session {session}: context {ctx:#x} hit sticky {status}; \
                             every later call in it fails with it"
                        );
                    }
                }
            }
        }
        let op_name = || proto::op_name(header.op).unwrap_or("?");
        if !how.answered {
            if let Err(status) = result {
                self.failed += 1;
                let first = self.pending.iter().find(|p| p.scope == scope);
                tracing::warn!(
                    "session {session}: deferred {} (seq {}, {scope:?}) failed with {status}; \
                     reported where that stream is next synchronized{}",
                    op_name(),
                    header.seq,
                    match first {
                        Some(p) => format!(" ({} from seq {} goes first)", p.status, p.seq),
                        None => String::new(),
                    }
                );
                if first.is_none() && self.pending.len() < MAX_PENDING {
                    self.pending.push(Deferred {
                        status,
                        op: header.op,
                        seq: header.seq,
                        scope,
                    });
                }
            }
            return None;
        }
        if !how.collects || self.pending.is_empty() {
            return Some(result);
        }
        let collector = scope;
        let Some(index) = self
            .pending
            .iter()
            .position(|p| collector.collects(p.scope))
        else {
            return Some(result);
        };
        let p = self.pending[index];
        // The call's own failure (a bad handle, say) is its answer; the
        // deferred error waits for the next collector. Success and "not
        // ready yet" give way to it, as on CUDA.
        if let Err(own) = result {
            if !own.is_not_ready() {
                if own == p.status {
                    self.pending.remove(index);
                }
                return Some(result);
            }
        }
        // The oldest failure it collects is the answer, and the collector
        // has then reported every failure of its scope (first error wins,
        // as when the driver returns one status for all the work waited on).
        self.pending.retain(|f| !collector.collects(f.scope));
        tracing::debug!(
            "session {session}: {} reports deferred {} of {} seq {}",
            op_name(),
            p.status,
            proto::op_name(p.op).unwrap_or("?"),
            p.seq
        );
        Some(Err(p.status))
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
/// buffer, which shrinks back once it drains if it grew past [`KEEP_BYTES`].
const READ_CHUNK: usize = 256 * 1024;
/// The buffer size kept between frames: a copy piece and its fields.
const KEEP_BYTES: usize = vgpu_transport::proto::COPY_CHUNK as usize + 64 * 1024;

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
            // Large enough for a whole copy piece is kept: a fresh buffer
            // per piece would be page-faulted in every time.
            if self.buf.len() > KEEP_BYTES {
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
            // A large frame (a copy piece) is read up to its own end and no
            // further: bytes of the next frame read with it would have to be
            // moved to the buffer's start before that frame could grow in
            // place — a second copy of up to a whole piece.
            let limit = if need > READ_CHUNK {
                self.start + need
            } else {
                self.buf.len()
            };
            match r.read(&mut self.buf[self.end..limit]) {
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
    /// Whether stream handle `stream` names a stream created with
    /// `CU_STREAM_NON_BLOCKING` (see [`Scope`]).
    fn non_blocking(&self, _stream: u64) -> bool {
        false
    }
    /// A reply payload the loop has written out, back for reuse (a
    /// device-to-host copy's buffer need not be allocated per piece).
    fn recycle(&mut self, _buf: Vec<u8>) {}
    /// The device output printed since the last call, for the guest
    /// (nothing when it does not take device output).
    fn device_output(&mut self) -> Vec<DeviceOutput> {
        Vec::new()
    }
}

/// Serves frames until the guest hangs up (0) or framing is lost (0 too:
/// either way the guest is gone and the session ends). `dispatch` runs one
/// call of a known op (`op`, payload) and returns its encoded reply or
/// status; whether and how to answer is decided here from the op's table
/// entry, the same for every op.
pub fn serve_loop<T: Served, S: Read + Write>(
    t: &mut T,
    stream: &mut S,
    mut dispatch: impl FnMut(&mut T, u16, &[u8]) -> Result<Vec<u8>, Status>,
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
        let (how, runs) = Handling::of(&header);
        let result = match runs {
            Ok(()) => dispatch(t, header.op, reader.payload()),
            Err(refused) => {
                tracing::debug!(
                    "session {}: op {} seq {} ({} flag {:#x}): {refused}",
                    t.id(),
                    header.op,
                    header.seq,
                    proto::op_name(header.op).unwrap_or("unknown"),
                    header.flags
                );
                Err(refused)
            }
        };
        if result == Err(Status::BAD_REQUEST) && runs.is_ok() {
            tracing::debug!(
                "session {}: {} seq {}: undecodable request",
                t.id(),
                proto::op_name(header.op).unwrap_or("?"),
                header.seq
            );
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace!(
                "session {}: {} seq {}{} -> {}",
                t.id(),
                proto::op_name(header.op).unwrap_or("?"),
                header.seq,
                if how.answered { "" } else { " (no reply)" },
                match &result {
                    Ok(_) => "ok".to_string(),
                    Err(s) => s.to_string(),
                }
            );
        }
        let id = t.id();
        // Which stream the call belongs to matters only when a deferred
        // call failed or a collector finds failures pending.
        let needs_scope = match &result {
            Err(_) if !how.answered => true,
            _ => how.collects && !t.batch().pending.is_empty(),
        };
        let scope = match how.meta {
            Some(m) if needs_scope => {
                let stream = proto::stream_of(header.op, reader.payload());
                Scope::of(&m, stream, |h| t.non_blocking(h))
            }
            _ => Scope::Any,
        };
        let Some(reply) = t.batch().settle(id, &header, how, result, scope) else {
            continue;
        };
        let (status, payload) = match &reply {
            Ok(p) => (0, &p[..]),
            Err(s) => (s.code(), &[][..]),
        };
        let mut out = Vec::new();
        if how.flushes {
            for notice in t.device_output() {
                let h = Header {
                    op: DEVICE_OUTPUT_OP,
                    seq: header.seq,
                    flags: FLAG_NOTICE,
                    ..Default::default()
                };
                // A notice's data is bounded far below a frame's limit.
                let _ = encode_frame(&mut out, h, &to_bytes(&notice));
            }
        }
        let h = Header {
            op: header.op,
            seq: header.seq,
            status,
            ..Default::default()
        };
        // The payload (a copy's bytes, maybe) goes out from where it is,
        // after the headers, in one system call where the socket allows.
        out.extend_from_slice(
            &Header {
                len: payload.len() as u32,
                ..h
            }
            .to_bytes(),
        );
        let sent = vgpu_transport::endpoint::write_all_parts(stream, &[&out, payload])
            .and_then(|()| stream.flush());
        if let Err(e) = sent {
            tracing::info!("session {}: guest gone while replying: {e}", t.id());
            return 0;
        }
        if let Ok(p) = reply {
            t.recycle(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cuda_types::cuda::CUresult;
    use vgpu_transport::codec::{from_bytes, Bytes};
    use vgpu_transport::frame::{read_frame, write_frame};
    use vgpu_transport::proto::{
        Call, CtxSynchronize, LaunchKernel, MemAlloc, MemcpyDtoD, MemcpyDtoH, MemcpyDtoHAsync,
        MemcpyHtoD, MemcpyHtoDAsync, MemsetAsync, NvmlQuery, Ping, StreamQuery, StreamSynchronize,
    };

    const INVALID_VALUE: u32 = CUresult::CUDA_ERROR_INVALID_VALUE.0;
    const NOT_READY: u32 = CUresult::CUDA_ERROR_NOT_READY.0;
    const ILLEGAL_ADDRESS: u32 = CUresult::CUDA_ERROR_ILLEGAL_ADDRESS.0;
    const NOT_SUPPORTED: u32 = CUresult::CUDA_ERROR_NOT_SUPPORTED.0;

    /// A session stand-in. Every request's payload (whatever its op) is
    /// `ctx: u64, code: u32, rest`: a non-zero `ctx` is entered first (a
    /// broken one refuses), `code` is the handler's status in the op's
    /// domain, and on success MemAlloc and the DtoH copies echo the payload.
    #[derive(Default)]
    struct Fake {
        batch: Batch,
        calls: u32,
        /// Whether each call "prints" a line of device output.
        printing: bool,
        /// Device output printed and not yet taken.
        printed: Vec<u8>,
    }

    impl Served for Fake {
        fn id(&self) -> u64 {
            7
        }
        fn batch(&mut self) -> &mut Batch {
            &mut self.batch
        }
        /// Odd stream handles are non-blocking streams.
        fn non_blocking(&self, stream: u64) -> bool {
            stream & 1 == 1
        }
        fn device_output(&mut self) -> Vec<DeviceOutput> {
            if self.printed.is_empty() {
                return Vec::new();
            }
            vec![DeviceOutput {
                fd: 1,
                data: Bytes(std::mem::take(&mut self.printed)),
                dropped: 0,
            }]
        }
    }

    fn fake_dispatch(f: &mut Fake, op: u16, p: &[u8]) -> Result<Vec<u8>, Status> {
        f.calls += 1;
        if f.printing {
            let line = format!("call {}\n", f.calls);
            f.printed.extend_from_slice(line.as_bytes());
        }
        let ctx = p
            .get(..8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
        let code = p
            .get(8..12)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()));
        if ctx != 0 {
            f.batch.admit(ctx)?;
            f.batch.entered = Some(ctx);
        }
        let domain = proto::meta(op)
            .expect("only known ops are dispatched")
            .domain;
        if let Some(s) = Status::from_wire(domain, code) {
            return Err(s);
        }
        let echo = matches!(op, MemAlloc::OP | MemcpyDtoH::OP | MemcpyDtoHAsync::OP);
        Ok(if echo { p.to_vec() } else { Vec::new() })
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

    /// A frame of `op` flagged as its table entry says.
    fn frame(out: &mut Vec<u8>, op: u16, seq: u32, payload: &[u8]) {
        let answered = proto::meta(op).is_none_or(|m| m.answered());
        frame_flagged(out, op, seq, !answered, payload);
    }

    fn frame_flagged(out: &mut Vec<u8>, op: u16, seq: u32, no_reply: bool, payload: &[u8]) {
        let h = Header {
            op,
            seq,
            flags: if no_reply { FLAG_NO_REPLY } else { 0 },
            ..Default::default()
        };
        write_frame(out, h, payload).unwrap();
    }

    /// The fake's payload: context `ctx`, handler status `code`.
    fn req(ctx: u64, code: u32) -> Vec<u8> {
        let mut v = ctx.to_le_bytes().to_vec();
        v.extend_from_slice(&code.to_le_bytes());
        v
    }

    fn run(input: Vec<u8>, max_read: usize) -> (Fake, Vec<(Header, Vec<u8>)>, u32) {
        run_with(Fake::default(), input, max_read)
    }

    /// Every frame the loop wrote, replies and notices.
    fn run_with(
        mut fake: Fake,
        input: Vec<u8>,
        max_read: usize,
    ) -> (Fake, Vec<(Header, Vec<u8>)>, u32) {
        let mut pipe = Pipe {
            input: io::Cursor::new(input),
            output: Vec::new(),
            max_read,
            reads: 0,
        };
        assert_eq!(serve_loop(&mut fake, &mut pipe, fake_dispatch), 0);
        let mut replies = Vec::new();
        let mut out = &pipe.output[..];
        while !out.is_empty() {
            let f = read_frame(&mut out).unwrap();
            replies.push((f.header, f.payload));
        }
        (fake, replies, pipe.reads)
    }

    /// (seq, status) of every reply.
    fn statuses(replies: &[(Header, Vec<u8>)]) -> Vec<(u32, u32)> {
        replies.iter().map(|(h, _)| (h.seq, h.status)).collect()
    }

    #[test]
    fn deferred_errors_wait_for_a_collector_and_the_first_one_wins() {
        let mut inp = Vec::new();
        frame(&mut inp, LaunchKernel::OP, 1, &req(5, 0));
        frame(&mut inp, LaunchKernel::OP, 2, &req(5, INVALID_VALUE));
        frame(&mut inp, LaunchKernel::OP, 3, &req(5, 98)); // logged, not kept
                                                           // A reply-bearing call that does not collect keeps its result.
        frame(&mut inp, MemAlloc::OP, 4, &req(0, 0));
        // Not-ready gives way to the deferred error; then it is gone.
        frame(&mut inp, StreamQuery::OP, 5, &req(0, NOT_READY));
        frame(&mut inp, CtxSynchronize::OP, 6, &req(0, 0));
        // A collector's own error wins and the deferred one stays pending.
        frame(&mut inp, LaunchKernel::OP, 7, &req(5, INVALID_VALUE));
        frame(&mut inp, CtxSynchronize::OP, 8, &req(0, 400));
        frame(&mut inp, Flush::OP, 9, &[]);
        frame(&mut inp, Flush::OP, 10, &[]);
        let (fake, replies, _) = run(inp, usize::MAX);
        let got: Vec<(u32, u32, usize)> = replies
            .iter()
            .map(|(h, p)| (h.seq, h.status, p.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (4, 0, 12),
                (5, INVALID_VALUE, 0),
                (6, 0, 0),
                (8, 400, 0),
                (9, INVALID_VALUE, 0),
                (10, 0, 0),
            ]
        );
        assert_eq!(fake.calls, 10);
        assert_eq!(fake.batch.failed, 3);
        assert_eq!(fake.batch.pending, Vec::new());
    }

    #[test]
    fn an_async_copy_failing_is_reported_at_the_next_synchronize() {
        let mut inp = Vec::new();
        frame(&mut inp, MemcpyHtoDAsync::OP, 1, &req(5, INVALID_VALUE));
        // Neither a call that does not synchronize ...
        frame(&mut inp, Ping::OP, 2, &[]);
        // ... nor an async copy that has a reply reports it.
        frame(&mut inp, MemcpyDtoHAsync::OP, 3, &req(5, 0));
        frame(&mut inp, StreamSynchronize::OP, 4, &req(5, 0));
        frame(&mut inp, StreamSynchronize::OP, 5, &req(5, 0));
        let (fake, replies, _) = run(inp, usize::MAX);
        assert_eq!(
            statuses(&replies),
            vec![(2, 0), (3, 0), (4, INVALID_VALUE), (5, 0)]
        );
        assert_eq!(replies[1].1, req(5, 0));
        assert_eq!(fake.calls, 5);
    }

    #[test]
    fn a_sync_copy_collects_an_earlier_deferred_error() {
        let mut inp = Vec::new();
        frame(&mut inp, MemsetAsync::OP, 1, &req(5, INVALID_VALUE));
        // A device-side copy does not wait for the device: no report.
        frame(&mut inp, MemcpyDtoD::OP, 2, &req(5, 0));
        // A copy through host memory does, and its data gives way.
        frame(&mut inp, MemcpyDtoH::OP, 3, &req(5, 0));
        frame(&mut inp, MemsetAsync::OP, 4, &req(5, INVALID_VALUE));
        frame(&mut inp, MemcpyHtoD::OP, 5, &req(5, 0));
        frame(&mut inp, MemcpyHtoD::OP, 6, &req(5, 0));
        let (_, replies, _) = run(inp, usize::MAX);
        assert_eq!(
            statuses(&replies),
            vec![(2, 0), (3, INVALID_VALUE), (5, INVALID_VALUE), (6, 0)]
        );
        assert!(replies[1].1.is_empty());
    }

    /// A real launch request on `stream` whose fake status (the low half
    /// of `func`, see [`Fake`]) is `code`.
    fn launch_on(stream: u64, code: u32) -> Vec<u8> {
        to_bytes(&LaunchKernel {
            ctx: 5,
            func: u64::from(code),
            grid: [1; 3],
            block: [1; 3],
            shared_mem: 0,
            stream,
            params: Bytes(Vec::new()),
            cooperative: false,
            attrs: Vec::new(),
        })
    }

    #[test]
    fn deferred_errors_belong_to_their_stream() {
        // MINE is a non-blocking stream, OTHER a blocking one (see Fake).
        const MINE: u64 = 0x51;
        const OTHER: u64 = 0x52;
        let copy = to_bytes(&MemcpyHtoD {
            ctx: 5,
            dst: 0,
            data: Bytes(vec![1, 2, 3]),
        });
        let sync = |s: u64| to_bytes(&StreamSynchronize { stream: s });
        let mut inp = Vec::new();
        frame(
            &mut inp,
            LaunchKernel::OP,
            1,
            &launch_on(MINE, INVALID_VALUE),
        );
        // Neither a synchronous copy (the legacy stream does not wait for a
        // non-blocking stream) nor another stream's
        // synchronization is replaced by it ...
        frame(&mut inp, MemcpyHtoD::OP, 2, &copy);
        frame(&mut inp, StreamSynchronize::OP, 3, &sync(OTHER));
        frame(&mut inp, StreamSynchronize::OP, 4, &sync(0));
        // ... its own stream's is, once.
        frame(&mut inp, StreamSynchronize::OP, 5, &sync(MINE));
        frame(&mut inp, StreamSynchronize::OP, 6, &sync(MINE));
        // A default-stream failure is the next synchronous copy's.
        frame(&mut inp, LaunchKernel::OP, 7, &launch_on(0, INVALID_VALUE));
        frame(&mut inp, StreamSynchronize::OP, 8, &sync(OTHER));
        frame(&mut inp, MemcpyHtoD::OP, 9, &copy);
        frame(&mut inp, MemcpyHtoD::OP, 10, &copy);
        // The context's synchronization collects every stream's: the
        // oldest is its answer, and all of them are then reported.
        frame(
            &mut inp,
            LaunchKernel::OP,
            11,
            &launch_on(OTHER, NOT_SUPPORTED),
        );
        frame(
            &mut inp,
            LaunchKernel::OP,
            12,
            &launch_on(MINE, INVALID_VALUE),
        );
        frame(&mut inp, CtxSynchronize::OP, 13, &req(0, 0));
        frame(&mut inp, CtxSynchronize::OP, 14, &req(0, 0));
        frame(&mut inp, StreamSynchronize::OP, 15, &sync(MINE));
        // A blocking stream's failure is also a synchronous copy's: the
        // legacy default stream waits for that stream.
        frame(
            &mut inp,
            LaunchKernel::OP,
            16,
            &launch_on(OTHER, INVALID_VALUE),
        );
        frame(&mut inp, MemcpyHtoD::OP, 17, &copy);
        frame(&mut inp, StreamSynchronize::OP, 18, &sync(OTHER));
        let (fake, replies, _) = run(inp, usize::MAX);
        assert_eq!(
            statuses(&replies),
            vec![
                (2, 0),
                (3, 0),
                (4, 0),
                (5, INVALID_VALUE),
                (6, 0),
                (8, 0),
                (9, INVALID_VALUE),
                (10, 0),
                (13, NOT_SUPPORTED),
                (14, 0),
                (15, 0),
                (17, INVALID_VALUE),
                (18, 0),
            ]
        );
        assert_eq!(fake.batch.failed, 5);
        assert!(fake.batch.pending.is_empty());
    }

    #[test]
    fn an_op_declared_deferred_is_never_answered() {
        let deferred: Vec<u16> = proto::OPS
            .iter()
            .filter(|m| !m.answered())
            .map(|m| m.op)
            .collect();
        assert!(deferred.len() >= 5, "{deferred:?}");
        let mut inp = Vec::new();
        let mut seq = 0;
        for &op in &deferred {
            // Succeeding or failing, a deferred op gets no reply.
            for code in [0, INVALID_VALUE] {
                seq += 1;
                frame(&mut inp, op, seq, &req(5, code));
            }
        }
        frame(&mut inp, Ping::OP, 1000, &[]);
        let (fake, replies, _) = run(inp, usize::MAX);
        assert_eq!(statuses(&replies), vec![(1000, 0)]);
        assert_eq!(fake.calls, seq + 1);
        assert_eq!(fake.batch.failed, deferred.len() as u64);
    }

    #[test]
    fn frames_contradicting_the_table_and_unknown_ops_are_refused_unrun() {
        let mut inp = Vec::new();
        // A deferred op sent as a round trip is answered with the refusal.
        frame_flagged(&mut inp, LaunchKernel::OP, 1, false, &req(5, 0));
        // A sync op sent without wanting a reply: refused, deferred.
        frame_flagged(&mut inp, MemAlloc::OP, 2, true, &req(5, 0));
        frame(&mut inp, Flush::OP, 3, &[]);
        // Unknown ops, either way.
        frame_flagged(&mut inp, 0x7777, 4, false, &[]);
        frame_flagged(&mut inp, 0x7777, 5, true, &[]);
        frame(&mut inp, Flush::OP, 6, &[]);
        let (fake, replies, _) = run(inp, usize::MAX);
        assert_eq!(
            statuses(&replies),
            vec![
                (1, Status::BAD_REQUEST.code()),
                (3, Status::BAD_REQUEST.code()),
                (4, Status::UNKNOWN_OP.code()),
                (6, Status::UNKNOWN_OP.code()),
            ]
        );
        // Only the two Flushes ran.
        assert_eq!(fake.calls, 2);
    }

    #[test]
    fn sticky_errors_break_their_context_only() {
        let mut inp = Vec::new();
        frame(&mut inp, LaunchKernel::OP, 1, &req(5, 0));
        frame(&mut inp, LaunchKernel::OP, 2, &req(5, ILLEGAL_ADDRESS));
        frame(&mut inp, CtxSynchronize::OP, 3, &req(5, 0));
        // Context 5 now refuses everything with it, reply or not ...
        frame(&mut inp, MemAlloc::OP, 4, &req(5, 0));
        frame(&mut inp, LaunchKernel::OP, 5, &req(5, 0));
        frame(&mut inp, Flush::OP, 6, &[]);
        // ... while context 6 works.
        frame(&mut inp, MemAlloc::OP, 7, &req(6, 0));
        frame(&mut inp, Flush::OP, 8, &[]);
        // NVML's 999 (NVML_ERROR_UNKNOWN) is not CUDA's sticky 999.
        frame(&mut inp, NvmlQuery::OP, 9, &req(6, 999));
        frame(&mut inp, MemAlloc::OP, 10, &req(6, 0));
        let (fake, replies, _) = run(inp, usize::MAX);
        let sticky = ILLEGAL_ADDRESS;
        assert_eq!(
            statuses(&replies),
            vec![
                (3, sticky),
                (4, sticky),
                (6, sticky),
                (7, 0),
                (8, 0),
                (9, 999),
                (10, 0)
            ]
        );
        let illegal = Status::Cuda(CUresult::CUDA_ERROR_ILLEGAL_ADDRESS);
        assert_eq!(fake.batch.broken(5), Some(illegal));
        assert_eq!(fake.batch.broken(6), None);
        let mut b = fake.batch;
        b.forget_ctx(5);
        assert_eq!(b.admit(5), Ok(()));
    }

    #[test]
    fn bursts_share_reads_and_split_frames_reassemble() {
        let mut inp = Vec::new();
        for i in 0..1000 {
            frame(&mut inp, LaunchKernel::OP, i, &req(5, 0));
        }
        frame(&mut inp, Flush::OP, 1000, &[]);
        let (fake, replies, reads) = run(inp.clone(), usize::MAX);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].0.status, 0);
        assert_eq!(fake.calls, 1001);
        // Everything fits the first buffer: one read, one to see the end.
        assert!(reads <= 3, "{reads} reads for one burst");

        // Frames cut at every possible point, and one larger than the
        // buffer, arrive intact.
        let mut big = vec![0xAB; READ_CHUNK * 2 + 3];
        big[..12].copy_from_slice(&req(0, 0));
        frame(&mut inp, MemAlloc::OP, 1001, &big);
        frame(&mut inp, MemAlloc::OP, 1002, &req(0, 0));
        let (_, replies, _) = run(inp, 7);
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[1].1, big);
        assert_eq!(replies[2].1, req(0, 0));
    }

    #[test]
    fn device_output_precedes_the_replies_of_flushing_calls_only() {
        let mut inp = Vec::new();
        frame(&mut inp, LaunchKernel::OP, 1, &req(5, 0));
        frame(&mut inp, LaunchKernel::OP, 2, &req(5, 0));
        // Neither a reply that does not flush ...
        frame(&mut inp, MemAlloc::OP, 3, &req(0, 0));
        // ... nor a refused frame carries it; a synchronization does, and a
        // failing one too.
        frame_flagged(&mut inp, 0x7777, 4, false, &[]);
        frame(&mut inp, CtxSynchronize::OP, 5, &req(0, INVALID_VALUE));
        frame(&mut inp, LaunchKernel::OP, 6, &req(5, 0));
        frame(&mut inp, Flush::OP, 7, &[]);
        frame(&mut inp, Flush::OP, 8, &[]);
        let printing = Fake {
            printing: true,
            ..Default::default()
        };
        let (_, frames, _) = run_with(printing, inp, usize::MAX);
        let got: Vec<(u32, bool, String)> = frames
            .iter()
            .map(|(h, p)| {
                let notice = h.flags & FLAG_NOTICE != 0;
                let text = if notice {
                    assert_eq!(h.op, DEVICE_OUTPUT_OP);
                    let o: DeviceOutput = from_bytes(p).unwrap();
                    assert_eq!((o.fd, o.dropped), (1, 0));
                    String::from_utf8(o.data.0).unwrap()
                } else {
                    String::new()
                };
                (h.seq, notice, text)
            })
            .collect();
        let n = |seq, text: &str| (seq, true, text.to_string());
        let r = |seq| (seq, false, String::new());
        assert_eq!(
            got,
            [
                r(3),
                r(4),
                n(5, "call 1\ncall 2\ncall 3\ncall 4\n"),
                r(5),
                n(7, "call 5\ncall 6\n"),
                r(7),
                n(8, "call 7\n"),
                r(8)
            ]
        );
    }

    #[test]
    fn truncated_and_oversized_frames_end_the_session() {
        let mut inp = Vec::new();
        frame(&mut inp, Flush::OP, 1, &[]);
        frame(&mut inp, MemAlloc::OP, 2, &req(1, 2));
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
