//! Both ends of a connection once the stream exists: the guest's
//! request/reply client and the host's handshake check.

use crate::codec::{from_bytes, to_bytes, DecodeError, Wire};
use crate::endpoint::{Peer, Stream};
use crate::frame::{
    encode_frame, read_frame, write_frame, Frame, FrameError, Header, FLAG_NOTICE, HEADER_LEN,
    MAX_PAYLOAD,
};
use crate::proto::{
    caps, refusal, Call, DeviceOutput, Hello, HelloReply, ShmAttach, DEVICE_OUTPUT_OP, HELLO_OP,
    MAGIC, PROTOCOL_VERSION, SHM_ATTACH_OP,
};
use crate::shm::Region;
use crate::status::Status;
use std::fmt;
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Why a call did not produce a reply value.
#[derive(Debug)]
pub enum CallError {
    /// The host answered with this status.
    Status(Status),
    /// The connection failed; the session is gone.
    Transport(FrameError),
    /// The host's reply did not decode.
    Decode(DecodeError),
    /// A reply for another request arrived.
    OutOfOrder { expected: u32, got: u32 },
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Status(s) => write!(f, "host returned {s}"),
            CallError::Transport(e) => write!(f, "transport: {e}"),
            CallError::Decode(e) => write!(f, "bad reply: {e}"),
            CallError::OutOfOrder { expected, got } => {
                write!(f, "reply {got} while waiting for {expected}")
            }
        }
    }
}

impl std::error::Error for CallError {}

impl From<FrameError> for CallError {
    fn from(e: FrameError) -> Self {
        CallError::Transport(e)
    }
}

/// Why the handshake failed.
#[derive(Debug)]
pub enum HandshakeError {
    /// The host refused: a `refusal::*` code and its reason.
    Refused(u32, String),
    Transport(FrameError),
    Decode(DecodeError),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Refused(c, why) => {
                write!(f, "host refused the connection ({c}): {why}")
            }
            HandshakeError::Transport(e) => write!(f, "handshake: {e}"),
            HandshakeError::Decode(e) => write!(f, "handshake reply: {e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// Where a [`Client`] hands the device output notices it reads.
pub type OutputSink = Box<dyn FnMut(DeviceOutput) + Send>;

/// A guest's connection. Requests are written by whoever holds the
/// `Client` (callers share it behind a lock); replies are read through its
/// [`Replies`], which needs no `&mut Client`: a caller can write its
/// request, let go of the lock, and wait for its reply while other threads
/// queue and send calls of their own (a `cuStreamSynchronize` on one
/// thread does not hold up launches on another).
pub struct Client {
    stream: Arc<Stream>,
    next_seq: u32,
    /// Frames of queued calls (sent with `FLAG_NO_REPLY`) not yet written.
    /// Its capacity is kept across writes: queuing allocates nothing.
    queued: Vec<u8>,
    queued_calls: usize,
    /// When bytes last went to the host.
    last_write: Instant,
    /// Whether an idle host is woken at once ([`Client::wake_idle_host`]).
    wake_idle: bool,
    replies: Arc<Replies>,
    /// The shared-memory region, when both sides use one (`caps::SHM`).
    pub(crate) shm: Option<Region>,
    /// Why the region is not in use, when the guest asked for one.
    pub shm_refused: Option<String>,
    pub hello: HelloReply,
}

/// The reading side of a [`Client`]'s connection: replies matched to their
/// requests by sequence number, for any number of threads waiting at once.
/// One waiting thread at a time reads the stream, without holding a lock;
/// the host answers in the order it was asked, so a reply it reads for
/// another thread's request is set aside and that thread woken at once (it
/// does not wait for the reader's own, perhaps long, call). A reply to no
/// outstanding request is an error, not a wait.
pub struct Replies {
    stream: Arc<Stream>,
    /// Requests written whose reply has not been taken yet. Never held
    /// across I/O: a request is registered while another thread may be
    /// blocked reading.
    outstanding: Mutex<Vec<u32>>,
    state: Mutex<Reading>,
    /// Signalled when a reply is set aside or the reader steps down.
    arrived: Condvar,
}

struct Reading {
    /// Replies read for other threads' requests.
    stash: Vec<Frame>,
    /// A thread is reading the stream.
    reader: bool,
    /// Threads waiting on `arrived` (a wake-up is a system call: skipped
    /// when nobody waits, which is the single-threaded round trip).
    waiting: usize,
    /// Receives device output notices; without one they are dropped.
    output: Option<OutputSink>,
}

fn relock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The locked state stays consistent if a holder panicked (every
    // change is a single push, remove or flag).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Replies {
    fn new(stream: Arc<Stream>) -> Replies {
        Replies {
            stream,
            outstanding: Mutex::new(Vec::new()),
            state: Mutex::new(Reading {
                stash: Vec::new(),
                reader: false,
                waiting: 0,
                output: None,
            }),
            arrived: Condvar::new(),
        }
    }

    fn expect(&self, seq: u32) {
        relock(&self.outstanding).push(seq);
    }

    fn settled(&self, seq: u32) {
        relock(&self.outstanding).retain(|&s| s != seq);
    }

    /// The reply to request `seq` (written by [`Client::send_request`]).
    pub fn wait(&self, seq: u32) -> Result<Frame, CallError> {
        self.wait_after(seq, |_| Ok(()))
    }

    /// [`Replies::wait`], running `before_reply` on the stream before
    /// reading if the reply is not in yet (see [`Client::call_after`]).
    pub fn wait_after(
        &self,
        seq: u32,
        before_reply: impl FnOnce(&Stream) -> std::io::Result<()>,
    ) -> Result<Frame, CallError> {
        let r = self.take(seq, before_reply);
        self.settled(seq);
        r
    }

    fn take(
        &self,
        seq: u32,
        before_reply: impl FnOnce(&Stream) -> std::io::Result<()>,
    ) -> Result<Frame, CallError> {
        if let Some(f) = self.stashed_or_reader(seq) {
            return Ok(f);
        }
        // This thread reads until its own reply comes, then steps down
        // (on any exit, so the others never wait for a reader that left).
        let _step_down = StepDown(self);
        self.read_until(seq, before_reply)
    }

    /// Waits until the reply to `seq` was set aside by another reader
    /// (returned), or no thread reads the stream: then this one becomes
    /// the reader (`None`) and must step down when done.
    fn stashed_or_reader(&self, seq: u32) -> Option<Frame> {
        let mut st = relock(&self.state);
        loop {
            if let Some(i) = st.stash.iter().position(|f| f.header.seq == seq) {
                return Some(st.stash.swap_remove(i));
            }
            if !st.reader {
                st.reader = true;
                return None;
            }
            st.waiting += 1;
            st = self.arrived.wait(st).unwrap_or_else(|e| e.into_inner());
            st.waiting -= 1;
        }
    }

    /// Reads as the one reader (`state.reader` set by this thread).
    fn read_until(
        &self,
        seq: u32,
        before_reply: impl FnOnce(&Stream) -> std::io::Result<()>,
    ) -> Result<Frame, CallError> {
        before_reply(&self.stream).map_err(FrameError::Io)?;
        loop {
            let f = read_frame(&mut &*self.stream)?;
            if f.header.flags & FLAG_NOTICE == 0 && f.header.seq == seq {
                return Ok(f);
            }
            self.set_aside(f, seq)?;
        }
    }

    /// A frame the reader (waiting for `seq`) read that is not its reply:
    /// a notice goes to the sink, another thread's reply to the stash (and
    /// that thread is woken); a reply to no outstanding request is an error.
    fn set_aside(&self, f: Frame, seq: u32) -> Result<(), CallError> {
        if f.header.flags & FLAG_NOTICE != 0 {
            return notice(&mut relock(&self.state).output, f);
        }
        if !relock(&self.outstanding).contains(&f.header.seq) {
            return Err(CallError::OutOfOrder {
                expected: seq,
                got: f.header.seq,
            });
        }
        let mut st = relock(&self.state);
        st.stash.push(f);
        if st.waiting > 0 {
            self.arrived.notify_all();
        }
        Ok(())
    }
}

impl Replies {
    /// [`Replies::wait`] for a reply whose value is a `Bytes` of exactly
    /// `dst.len()` bytes: read by this thread, its data goes from the
    /// socket straight into `dst`; read by another (set aside whole), it is
    /// copied. Returns the reply's status; on a non-zero status `dst` is
    /// untouched.
    pub fn wait_into(&self, seq: u32, dst: &mut [u8]) -> Result<u32, CallError> {
        let r = self.take_into(seq, dst);
        self.settled(seq);
        r
    }

    fn take_into(&self, seq: u32, dst: &mut [u8]) -> Result<u32, CallError> {
        if let Some(f) = self.stashed_or_reader(seq) {
            return bytes_reply_into(&f, dst);
        }
        let _step_down = StepDown(self);
        let mut stream: &Stream = &self.stream;
        loop {
            let mut hb = [0u8; HEADER_LEN];
            read_exact_framed(&mut stream, &mut hb)?;
            let h = Header::from_bytes(&hb);
            if h.len > MAX_PAYLOAD {
                return Err(FrameError::TooLarge(h.len).into());
            }
            if h.flags & FLAG_NOTICE == 0 && h.seq == seq {
                return read_bytes_into(&mut stream, h, dst);
            }
            let mut payload = vec![0u8; h.len as usize];
            stream.read_exact(&mut payload).map_err(FrameError::Io)?;
            self.set_aside(Frame { header: h, payload }, seq)?;
        }
    }
}

/// The payload of a `Bytes` reply with header `h`, read from `stream` into
/// `dst` (see [`Replies::wait_into`]). A failure, or data of another size,
/// is read off so the connection stays in step.
fn read_bytes_into(stream: &mut &Stream, h: Header, dst: &mut [u8]) -> Result<u32, CallError> {
    if h.status != 0 || h.len as usize != 4 + dst.len() {
        let mut rest = vec![0u8; h.len as usize];
        stream.read_exact(&mut rest).map_err(FrameError::Io)?;
        if h.status != 0 {
            return Ok(h.status);
        }
        return Err(CallError::Decode(DecodeError::Truncated));
    }
    let mut n = [0u8; 4];
    stream.read_exact(&mut n).map_err(FrameError::Io)?;
    if u32::from_le_bytes(n) as usize != dst.len() {
        let mut rest = vec![0u8; dst.len()];
        stream.read_exact(&mut rest).map_err(FrameError::Io)?;
        return Err(CallError::Decode(DecodeError::Truncated));
    }
    stream.read_exact(dst).map_err(FrameError::Io)?;
    Ok(0)
}

/// [`read_bytes_into`] for a reply another thread set aside whole.
fn bytes_reply_into(f: &Frame, dst: &mut [u8]) -> Result<u32, CallError> {
    if f.header.status != 0 {
        return Ok(f.header.status);
    }
    let data = from_bytes::<crate::codec::Bytes>(&f.payload).map_err(CallError::Decode)?;
    if data.0.len() != dst.len() {
        return Err(CallError::Decode(DecodeError::Truncated));
    }
    dst.copy_from_slice(&data.0);
    Ok(0)
}

struct StepDown<'a>(&'a Replies);

impl Drop for StepDown<'_> {
    fn drop(&mut self) {
        let mut st = relock(&self.0.state);
        st.reader = false;
        if st.waiting > 0 {
            self.0.arrived.notify_all();
        }
    }
}

/// A notice read while waiting for a reply: device output goes to the
/// sink; a notice this version does not know is skipped, so a newer host
/// can add kinds.
fn notice(output: &mut Option<OutputSink>, f: Frame) -> Result<(), CallError> {
    if f.header.op != DEVICE_OUTPUT_OP {
        return Ok(());
    }
    let out = from_bytes::<DeviceOutput>(&f.payload).map_err(CallError::Decode)?;
    if let Some(sink) = output.as_mut() {
        sink(out);
    }
    Ok(())
}

/// A queue this large is written out even without a synchronizing call, so
/// memory stays bounded and the host starts on the work while the guest
/// goes on queuing (a few hundred launches; one write for all of them).
const QUEUE_FLUSH_BYTES: usize = 64 * 1024;

/// A deferred call that finds the queue empty and nothing written for this
/// long goes out at once: the host has most likely run out of work (and a
/// GPU sits idle) while the application computes, so waking it now is worth
/// a syscall. Calls that follow within the window are queued as usual, so
/// a burst of launches costs one write at its start and one per
/// [`QUEUE_FLUSH_BYTES`].
const IDLE_AFTER: Duration = Duration::from_micros(200);

impl Client {
    /// Sends `hello` and waits (at most `timeout`) for the host's answer.
    pub fn handshake(
        stream: Stream,
        hello: &Hello,
        timeout: Duration,
    ) -> Result<Client, HandshakeError> {
        let mut stream = stream;
        stream
            .set_timeouts(Some(timeout))
            .map_err(|e| HandshakeError::Transport(e.into()))?;
        let header = Header {
            op: HELLO_OP,
            ..Default::default()
        };
        write_frame(&mut stream, header, &to_bytes(hello))
            .map_err(|e| HandshakeError::Transport(e.into()))?;
        let f = read_frame(&mut stream).map_err(HandshakeError::Transport)?;
        if f.header.status != 0 {
            let why = from_bytes::<String>(&f.payload).unwrap_or_default();
            return Err(HandshakeError::Refused(f.header.status, why));
        }
        let reply = from_bytes::<HelloReply>(&f.payload).map_err(HandshakeError::Decode)?;
        let (shm, shm_refused) = if hello.capabilities & reply.capabilities & caps::SHM != 0 {
            attach_shm(&mut stream).map_err(HandshakeError::Transport)?
        } else if hello.capabilities & caps::SHM != 0 {
            (None, Some("the host does not offer shared memory".into()))
        } else {
            (None, None)
        };
        stream.tune_for_bulk();
        stream
            .set_timeouts(None)
            .map_err(|e| HandshakeError::Transport(e.into()))?;
        let stream = Arc::new(stream);
        Ok(Client {
            replies: Arc::new(Replies::new(stream.clone())),
            stream,
            next_seq: 1,
            queued: Vec::with_capacity(QUEUE_FLUSH_BYTES + 4096),
            queued_calls: 0,
            last_write: Instant::now(),
            wake_idle: false,
            shm,
            shm_refused,
            hello: reply,
        })
    }

    /// Whether bulk bytes travel through shared memory.
    pub fn has_shm(&self) -> bool {
        self.shm.is_some()
    }

    /// Hands every [`DeviceOutput`] notice read from now on to `sink`, in
    /// the order the host sent them, before the reply they precede is
    /// returned. (The host sends them only if the `Hello` announced
    /// `caps::DEVICE_OUTPUT`.)
    pub fn set_output_sink(&mut self, sink: OutputSink) {
        relock(&self.replies.state).output = Some(sink);
    }

    /// From now on, a deferred call queued after a quiet spell is written
    /// at once (see [`IDLE_AFTER`]) instead of waiting for the next
    /// round trip or a full queue. Off by default, so that tools and tests
    /// see the queue fill exactly as they queue.
    pub fn wake_idle_host(&mut self) {
        self.wake_idle = true;
    }

    /// The reading side, for waiting on a reply without the `Client`.
    pub fn replies(&self) -> Arc<Replies> {
        self.replies.clone()
    }

    /// One call, travelling as its op's [`crate::proto::Meta`] says: a
    /// round trip for a sync op; a deferred op is queued (it goes out with
    /// the next round trip) and its `()` reply is immediate.
    pub fn call<C: Call>(&mut self, call: &C) -> Result<C::Reply, CallError> {
        self.call_after(call, |_| Ok(()))
    }

    /// [`Client::call`], running `before_reply` on the stream once a sync
    /// op's request is written and before its reply is read: a caller can
    /// wait for the reply its own way (poll with a deadline, say why it
    /// waits) without consuming any of it. An error from `before_reply`
    /// leaves the reply unread, so the connection is then unusable.
    pub fn call_after<C: Call>(
        &mut self,
        call: &C,
        before_reply: impl FnOnce(&Stream) -> std::io::Result<()>,
    ) -> Result<C::Reply, CallError> {
        if let Some(reply) = C::unanswered() {
            self.queue_call(call)?;
            return Ok(reply);
        }
        let seq = self.send_request(C::OP, &to_bytes(call))?;
        let f = self.replies.wait_after(seq, before_reply)?;
        match Status::from_wire(C::META.domain, f.header.status) {
            Some(s) => Err(CallError::Status(s)),
            None => from_bytes::<C::Reply>(&f.payload).map_err(CallError::Decode),
        }
    }

    /// Sends raw bytes under an op and returns the raw reply (tests and tools).
    /// Queued calls go out first, in the same write.
    pub fn round_trip(&mut self, op: u16, payload: &[u8]) -> Result<Frame, CallError> {
        let seq = self.send_request(op, payload)?;
        self.replies.wait(seq)
    }

    /// Writes the queued calls and a request of `op` in one write and
    /// returns its sequence number, for [`Replies::wait`]: the reply can be
    /// waited for by a thread that no longer holds the `Client`.
    pub fn send_request(&mut self, op: u16, payload: &[u8]) -> Result<u32, CallError> {
        self.send_parts(op, 0, &[payload])
    }

    /// Writes one frame whose payload is `parts` in order, queued calls
    /// first, in one system call. A small request is appended to the queue
    /// and written with it; a large one goes out vectored, so a copy's
    /// bytes go from the caller's buffer to the socket without being copied
    /// together. Returns its sequence number, registered with [`Replies`]
    /// before it can be answered. Requests are answered strictly in order,
    /// so several may be in flight ([`Client::read_reply`] each).
    pub fn send_parts(&mut self, op: u16, flags: u16, parts: &[&[u8]]) -> Result<u32, CallError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > MAX_PAYLOAD as usize {
            return Err(CallError::Transport(FrameError::TooLarge(len as u32)));
        }
        let seq = self.take_seq();
        let header = Header {
            op,
            seq,
            flags,
            len: len as u32,
            ..Default::default()
        }
        .to_bytes();
        self.queued_calls = 0;
        // Registered before it can be answered: the reader of another
        // thread then keeps the reply for this one. A request sent without
        // wanting a reply (a queued copy piece) is never answered.
        let answered = flags & crate::frame::FLAG_NO_REPLY == 0;
        if answered {
            self.replies.expect(seq);
        }
        let written = if len <= INLINE_REQUEST {
            self.queued.extend_from_slice(&header);
            for p in parts {
                self.queued.extend_from_slice(p);
            }
            (&*self.stream).write_all(&self.queued)
        } else {
            let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 2);
            all.push(&self.queued);
            all.push(&header);
            all.extend_from_slice(parts);
            crate::endpoint::write_all_parts(&mut &*self.stream, &all)
        };
        self.last_write = Instant::now();
        self.queued.clear();
        if let Err(e) = written {
            if answered {
                self.replies.settled(seq);
            }
            return Err(FrameError::Io(e).into());
        }
        Ok(seq)
    }

    /// Reads the reply to request `seq` (notices before it go to the
    /// sink), as [`Replies::wait`].
    pub fn read_reply(&mut self, seq: u32) -> Result<Frame, CallError> {
        self.replies.wait(seq)
    }

    /// Reads the reply to request `seq`, whose value is a `Bytes` of
    /// exactly `dst.len()` bytes, straight into `dst` when this thread
    /// reads it off the socket (no intermediate buffer). Returns the
    /// reply's status; on a non-zero status `dst` is untouched.
    pub fn read_reply_into(&mut self, seq: u32, dst: &mut [u8]) -> Result<u32, CallError> {
        self.replies.wait_into(seq, dst)
    }

    /// Queues a deferred call, encoded straight into the queue (no
    /// allocation, no syscall until the queue fills).
    pub fn queue_call<C: Call>(&mut self, call: &C) -> Result<(), CallError> {
        self.queue_with(C::OP, |out| call.encode(out))
    }

    /// Queues a frame of `op` whose payload `encode` appends.
    pub fn queue_with(
        &mut self,
        op: u16,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), CallError> {
        let seq = self.take_seq();
        let start = self.queued.len();
        self.queued.extend_from_slice(&[0; HEADER_LEN]);
        encode(&mut self.queued);
        let len = self.queued.len() - start - HEADER_LEN;
        if len > MAX_PAYLOAD as usize {
            self.queued.truncate(start);
            return Err(CallError::Transport(FrameError::TooLarge(len as u32)));
        }
        let header = Header {
            len: len as u32,
            op,
            seq,
            flags: crate::frame::FLAG_NO_REPLY,
            ..Default::default()
        };
        self.queued[start..start + HEADER_LEN].copy_from_slice(&header.to_bytes());
        self.queued_calls += 1;
        let idle = self.wake_idle && start == 0 && self.last_write.elapsed() >= IDLE_AFTER;
        if idle || self.queued.len() >= QUEUE_FLUSH_BYTES {
            self.flush_queued()?;
        }
        Ok(())
    }

    /// Queues an encoded call with `FLAG_NO_REPLY`: no round trip now; the
    /// host reports a failure at the next call that collects deferred
    /// errors. Only for ops the table declares deferred ([`Client::call`]
    /// picks this by itself); the host refuses any other without reply.
    pub fn queue_raw(&mut self, op: u16, payload: &[u8]) -> Result<(), CallError> {
        self.queue_with(op, |out| out.extend_from_slice(payload))
    }

    /// Writes out every queued call without waiting for anything.
    pub fn flush_queued(&mut self) -> Result<(), CallError> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let r = (&*self.stream).write_all(&self.queued);
        self.last_write = Instant::now();
        self.queued.clear();
        self.queued_calls = 0;
        r.map_err(|e| CallError::Transport(FrameError::Io(e)))
    }

    /// Calls queued and not yet written.
    pub fn queued_calls(&self) -> usize {
        self.queued_calls
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        seq
    }

    /// Bounds every later read and write (a vanished host then surfaces as
    /// an error instead of a hang).
    pub fn set_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.stream.set_timeouts(t)
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }
}

/// After a handshake where both sides set `caps::SHM`: creates the region
/// and sends it (`SHM_ATTACH_OP`); the host's answer says whether it is
/// used. A region that cannot be created, or one the host refuses, leaves
/// the socket carrying everything (the reason is returned); only a broken
/// connection is an error.
fn attach_shm(stream: &mut Stream) -> Result<(Option<Region>, Option<String>), FrameError> {
    let region = Region::create(crate::shm::REGION as usize);
    let attach = ShmAttach {
        size: if region.is_ok() {
            crate::shm::REGION
        } else {
            0
        },
        slot: crate::shm::SLOT,
    };
    let mut frame = Vec::new();
    let header = Header {
        op: SHM_ATTACH_OP,
        ..Default::default()
    };
    encode_frame(&mut frame, header, &to_bytes(&attach))?;
    match &region {
        Ok(r) => stream.send_with_fd(&frame, r.fd())?,
        Err(_) => stream.write_all(&frame)?,
    }
    let f = read_frame(stream)?;
    Ok(match region {
        Ok(r) if f.header.status == 0 => (Some(r), None),
        Ok(_) => {
            let why = from_bytes::<String>(&f.payload).unwrap_or_default();
            (None, Some(format!("the host refused the region: {why}")))
        }
        Err(e) => (None, Some(format!("no memfd: {e}"))),
    })
}

/// A request at most this large is copied behind the queued calls and
/// written with them in one plain write; a larger one (a copy's data) is
/// written vectored from where it lies.
const INLINE_REQUEST: usize = 64 * 1024;

/// `read_exact` where an end of stream before the first byte is `Closed`.
fn read_exact_framed(r: &mut impl std::io::Read, buf: &mut [u8]) -> Result<(), FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// What the host requires of a new connection.
pub struct Admission<'a> {
    pub build_id: &'a str,
    /// Token required of non-local peers; `None` refuses them all.
    pub token: Option<&'a str>,
    /// Unix peers: uids allowed (empty = any).
    pub allowed_uids: &'a [u32],
}

/// Reads and checks the guest's `Hello`. On refusal the reason has already
/// been sent to the guest; the caller just drops the stream.
pub fn accept_hello(
    stream: &mut Stream,
    peer: &Peer,
    adm: &Admission<'_>,
) -> Result<Hello, String> {
    let f = read_frame(stream).map_err(|e| format!("no handshake: {e}"))?;
    let refuse = |stream: &mut Stream, code: u32, why: String| -> String {
        let h = Header {
            op: HELLO_OP,
            seq: f.header.seq,
            status: code,
            ..Default::default()
        };
        let _ = write_frame(stream, h, &to_bytes(&why));
        why
    };
    let hello = check_hello(&f, adm.build_id).map_err(|(code, why)| refuse(stream, code, why))?;
    match peer {
        Peer::Unix { uid, .. } => {
            if !adm.allowed_uids.is_empty() && !adm.allowed_uids.contains(uid) {
                return Err(refuse(
                    stream,
                    refusal::PEER_NOT_ALLOWED,
                    format!("uid {uid} is not allowed"),
                ));
            }
        }
        _ if peer.is_local() => {}
        _ => {
            let ok = match (adm.token, hello.token.as_deref()) {
                (Some(want), Some(got)) => constant_time_eq(want.as_bytes(), got.as_bytes()),
                _ => false,
            };
            if !ok {
                return Err(refuse(
                    stream,
                    refusal::BAD_TOKEN,
                    "missing or wrong token".into(),
                ));
            }
        }
    }
    Ok(hello)
}

/// Checks a handshake frame's form: the op, the encoding, the magic and
/// the protocol version. `Err` is the `refusal::*` code and the reason.
pub fn check_hello(f: &Frame, host_build_id: &str) -> Result<Hello, (u32, String)> {
    if f.header.op != HELLO_OP {
        return Err((
            refusal::BAD_MAGIC,
            format!("expected a handshake, got op {}", f.header.op),
        ));
    }
    let hello = from_bytes::<Hello>(&f.payload)
        .map_err(|e| (refusal::BAD_MAGIC, format!("malformed handshake: {e}")))?;
    if hello.magic != MAGIC {
        return Err((refusal::BAD_MAGIC, "bad magic".into()));
    }
    if hello.version != PROTOCOL_VERSION {
        return Err((
            refusal::VERSION_MISMATCH,
            format!(
                "protocol version {} (guest build {}) is not {} (host build {})",
                hello.version, hello.build_id, PROTOCOL_VERSION, host_build_id
            ),
        ));
    }
    Ok(hello)
}

/// Sends the acceptance reply.
pub fn send_hello_reply(stream: &mut Stream, reply: &HelloReply) -> std::io::Result<()> {
    write_frame(
        stream,
        Header {
            op: HELLO_OP,
            ..Default::default()
        },
        &to_bytes(reply),
    )
}

/// The worker's side of [`SHM_ATTACH_OP`], right after a `HelloReply` that
/// offered `caps::SHM` to a guest that asked for it: reads the guest's
/// `ShmAttach` and its descriptor, adopts the region if it is safe to map
/// ([`Region::adopt`]) and answers. `Ok(None)`: the guest sent no region,
/// or one that was refused (answered with the reason); the socket then
/// carries everything. `Err`: the connection failed.
pub fn accept_shm(stream: &mut Stream) -> Result<(Option<Region>, String), String> {
    let mut hb = [0u8; crate::frame::HEADER_LEN];
    let fd = stream
        .recv_with_fd(&mut hb)
        .map_err(|e| format!("no shared-memory frame: {e}"))?;
    let h = Header::from_bytes(&hb);
    if h.op != SHM_ATTACH_OP || h.len > 4096 {
        return Err(format!(
            "expected the shared-memory frame, got op {} of {} bytes",
            h.op, h.len
        ));
    }
    let mut payload = vec![0u8; h.len as usize];
    stream
        .read_exact(&mut payload)
        .map_err(|e| format!("shared-memory frame: {e}"))?;
    let adopted = match (from_bytes::<ShmAttach>(&payload), fd) {
        (Err(e), _) => Err(format!("malformed: {e}")),
        (Ok(a), _) if a.size == 0 => Err("the guest has no region".to_string()),
        (Ok(_), None) => Err("no descriptor arrived with it".to_string()),
        (Ok(a), Some(fd)) => Region::adopt(fd, a.size),
    };
    let (status, why, region) = match adopted {
        Ok(r) => (0, format!("{} bytes", r.len()), Some(r)),
        Err(why) => (1, why, None),
    };
    let reply = if status == 0 {
        Vec::new()
    } else {
        to_bytes(&why)
    };
    send_reply(stream, &h, status, &reply).map_err(|e| e.to_string())?;
    Ok((region, why))
}

/// Sends one reply frame for `request`.
pub fn send_reply(
    stream: &mut Stream,
    request: &Header,
    status: u32,
    payload: &[u8],
) -> std::io::Result<()> {
    let h = Header {
        op: request.op,
        seq: request.seq,
        status,
        ..Default::default()
    };
    write_frame(stream, h, payload)
}

/// Sends a successful reply carrying `value`.
pub fn send_ok<T: Wire>(stream: &mut Stream, request: &Header, value: &T) -> std::io::Result<()> {
    send_reply(stream, request, 0, &to_bytes(value))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{GetInventory, Inventory, LaunchKernel, Ping};

    fn serve_one(
        mut s: Stream,
        peer: Peer,
        token: Option<&'static str>,
    ) -> std::thread::JoinHandle<Result<(), String>> {
        std::thread::spawn(move || {
            let adm = Admission {
                build_id: "test",
                token,
                allowed_uids: &[],
            };
            accept_hello(&mut s, &peer, &adm)?;
            send_hello_reply(
                &mut s,
                &HelloReply {
                    version: PROTOCOL_VERSION,
                    driver_kind: "emulated".into(),
                    ..Default::default()
                },
            )
            .map_err(|e| e.to_string())?;
            loop {
                let f = match read_frame(&mut s) {
                    Ok(f) => f,
                    Err(FrameError::Closed) => return Ok(()),
                    Err(e) => return Err(e.to_string()),
                };
                if f.header.flags & crate::frame::FLAG_NO_REPLY != 0 {
                    continue;
                }
                match f.header.op {
                    <Ping as Call>::OP => send_ok(&mut s, &f.header, &()).unwrap(),
                    <GetInventory as Call>::OP => send_ok(
                        &mut s,
                        &f.header,
                        &Inventory {
                            driver_kind: "emulated".into(),
                            cuda_driver_version: 13050,
                            ..Default::default()
                        },
                    )
                    .unwrap(),
                    _ => {
                        send_reply(&mut s, &f.header, crate::proto::STATUS_UNKNOWN_OP, &[]).unwrap()
                    }
                }
            }
        })
    }

    #[test]
    fn handshake_and_calls() {
        let (a, b) = Stream::pair().unwrap();
        let t = serve_one(
            b,
            Peer::Unix {
                pid: 1,
                uid: 0,
                gid: 0,
            },
            None,
        );
        let mut c =
            Client::handshake(a, &Hello::new("test", 0, None), Duration::from_secs(5)).unwrap();
        assert_eq!(c.hello.driver_kind, "emulated");
        c.call(&Ping {}).unwrap();
        assert_eq!(c.call(&GetInventory {}).unwrap().cuda_driver_version, 13050);
        // Deferred calls are queued and get no reply; the next call's
        // reply is its own.
        for _ in 0..3 {
            c.call(&LaunchKernel::default()).unwrap();
        }
        assert_eq!(c.queued_calls(), 3);
        assert_eq!(c.call(&GetInventory {}).unwrap().cuda_driver_version, 13050);
        assert_eq!(c.queued_calls(), 0);
        c.call(&LaunchKernel::default()).unwrap();
        assert_eq!(c.queued_calls(), 1);
        c.flush_queued().unwrap();
        c.call(&Ping {}).unwrap();
        let f = c.round_trip(999, b"junk").unwrap();
        assert_eq!(f.header.status, crate::proto::STATUS_UNKNOWN_OP);
        // Pieces sent without wanting a reply, small (written with the
        // queue) and large (vectored), are never waited for.
        let big = vec![7u8; INLINE_REQUEST + 1];
        let no_reply = crate::frame::FLAG_NO_REPLY;
        c.send_parts(LaunchKernel::OP, no_reply, &[b"small"])
            .unwrap();
        c.send_parts(LaunchKernel::OP, no_reply, &[b"x", &big])
            .unwrap();
        c.call(&Ping {}).unwrap();
        assert!(relock(&c.replies.outstanding).is_empty());
        drop(c);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn notices_before_a_reply_go_to_the_sink() {
        use crate::codec::Bytes;
        use std::sync::{Arc, Mutex};
        let (a, mut b) = Stream::pair().unwrap();
        let host = std::thread::spawn(move || {
            accept_hello(
                &mut b,
                &Peer::Tcp {
                    addr: "127.0.0.1:1".parse().unwrap(),
                },
                &Admission {
                    build_id: "test",
                    token: Some("t"),
                    allowed_uids: &[],
                },
            )
            .unwrap();
            send_hello_reply(&mut b, &HelloReply::default()).unwrap();
            // Two requests; before each reply, notices: output for both
            // descriptors, a kind this version does not know, and output
            // whose bytes look like a frame header.
            for round in 0..2u8 {
                let f = read_frame(&mut b).unwrap();
                let notice = |op: u16, payload: &[u8]| {
                    let h = Header {
                        op,
                        seq: f.header.seq,
                        flags: FLAG_NOTICE,
                        ..Default::default()
                    };
                    let mut v = Vec::new();
                    encode_frame(&mut v, h, payload).unwrap();
                    v
                };
                let out = |fd, data: &[u8]| {
                    to_bytes(&DeviceOutput {
                        fd,
                        data: Bytes(data.to_vec()),
                        dropped: u64::from(round),
                    })
                };
                let mut burst = notice(DEVICE_OUTPUT_OP, &out(1, &[b'a' + round; 3]));
                burst.extend(notice(0x7ff0, b"later"));
                burst.extend(notice(DEVICE_OUTPUT_OP, &out(2, &f.header.to_bytes())));
                encode_frame(&mut burst, f.header, &[round]).unwrap();
                b.write_all(&burst).unwrap();
            }
        });
        let mut c = Client::handshake(
            a,
            &Hello::new("test", 0, Some("t".into())),
            Duration::from_secs(5),
        )
        .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        c.set_output_sink(Box::new(move |o| {
            sink.lock().unwrap().push((o.fd, o.data.0, o.dropped))
        }));
        // The replies are the requests' own (the op and payload echo).
        for round in 0..2u8 {
            let f = c.round_trip(DEVICE_OUTPUT_OP, b"req").unwrap();
            assert_eq!(f.payload, [round]);
            assert_eq!(f.header.op, DEVICE_OUTPUT_OP);
        }
        host.join().unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[0], (1, b"aaa".to_vec(), 0));
        assert_eq!((seen[1].0, seen[1].1.len(), seen[1].2), (2, 16, 0));
        assert_eq!(seen[2], (1, b"bbb".to_vec(), 1));
    }

    #[test]
    fn a_reply_read_by_another_waiter_is_handed_over_at_once() {
        use std::sync::mpsc;
        let (a, mut b) = Stream::pair().unwrap();
        let (b_done_tx, b_done_rx) = mpsc::channel::<()>();
        let host = std::thread::spawn(move || -> Result<(), String> {
            accept_hello(
                &mut b,
                &Peer::Unix {
                    pid: 1,
                    uid: 0,
                    gid: 0,
                },
                &Admission {
                    build_id: "test",
                    token: None,
                    allowed_uids: &[],
                },
            )?;
            send_hello_reply(&mut b, &HelloReply::default()).map_err(|e| e.to_string())?;
            let first = read_frame(&mut b).map_err(|e| e.to_string())?;
            let second = read_frame(&mut b).map_err(|e| e.to_string())?;
            send_ok(&mut b, &first.header, &()).map_err(|e| e.to_string())?;
            // The second reply only once the first one's thread has it.
            let handed = b_done_rx.recv_timeout(Duration::from_secs(20));
            send_ok(&mut b, &second.header, &()).map_err(|e| e.to_string())?;
            handed.map_err(|_| "the first reply was held back".to_string())
        });
        let mut c =
            Client::handshake(a, &Hello::new("test", 0, None), Duration::from_secs(5)).unwrap();
        let replies = c.replies();
        let first = c.send_request(Ping::OP, &[]).unwrap();
        let second = c.send_request(Ping::OP, &[]).unwrap();
        // The second request's thread reads the stream ...
        let r = replies.clone();
        let long = std::thread::spawn(move || r.wait(second).map(|f| f.header.seq));
        while !relock(&replies.state).reader {
            std::thread::yield_now();
        }
        // ... and the first reply, which it reads, reaches this thread
        // before the second exists.
        assert_eq!(replies.wait(first).unwrap().header.seq, first);
        b_done_tx.send(()).unwrap();
        assert_eq!(long.join().unwrap().unwrap(), second);
        host.join().unwrap().unwrap();
        assert!(relock(&replies.outstanding).is_empty());
    }

    #[test]
    fn refusals() {
        let remote = Peer::Tcp {
            addr: "10.0.0.1:5".parse().unwrap(),
        };
        // Wrong protocol version.
        let (a, b) = Stream::pair().unwrap();
        let t = serve_one(
            b,
            Peer::Unix {
                pid: 1,
                uid: 0,
                gid: 0,
            },
            None,
        );
        let mut h = Hello::new("test", 0, None);
        h.version = PROTOCOL_VERSION + 1;
        match Client::handshake(a, &h, Duration::from_secs(5)) {
            Err(HandshakeError::Refused(refusal::VERSION_MISMATCH, why)) => {
                assert!(why.contains("protocol version"))
            }
            other => panic!("{other:?}", other = other.err()),
        }
        assert!(t.join().unwrap().is_err());
        // Remote peer without / with the wrong / with the right token.
        for (tok, ok) in [(None, false), (Some("nope"), false), (Some("s3cret"), true)] {
            let (a, b) = Stream::pair().unwrap();
            let t = serve_one(b, remote.clone(), Some("s3cret"));
            let r = Client::handshake(
                a,
                &Hello::new("test", 0, tok.map(String::from)),
                Duration::from_secs(5),
            );
            assert_eq!(r.is_ok(), ok, "token {tok:?}");
            drop(r);
            let _ = t.join();
        }
    }
}
