//! Device output: the text a GPU prints for the guest's kernels, delivered
//! to the guest process's own stdout and stderr.
//!
//! A GPU driver prints device `printf` output to its process's stdout when
//! it flushes the printf FIFO (at synchronizations, blocking copies, module
//! load and unload, context destruction), and the message of a failed
//! device `assert` to its stderr. In a worker that process is the worker,
//! so [`Capture::install`] makes the worker's descriptors 1 and 2 the write
//! ends of two pipes before the driver is loaded, and moves the worker's
//! own log to a duplicate of the original stderr ([`log_writer`]), so it
//! still reaches the daemon's log and never the guest. The software GPU
//! prints the same way (vgpu-emu's `launch.rs`).
//!
//! A thread drains both pipes as they fill, so a driver printing a lot
//! never blocks on a guest that is slow to read: it keeps at most
//! [`limit`] bytes per descriptor between two flushes and counts the rest
//! as dropped (the guest says so). What reaches the guest:
//! - stdout: every byte, in order (nothing else in a worker writes there);
//! - stderr: only the lines shaped like CUDA's assert message
//!   ([`cuda_abi::device_output::is_assert_message`]). Everything else on
//!   the worker's stderr is the host's — the software GPU's log lines, a
//!   panic message — and goes to the daemon's log, line by line, with the
//!   session's number.
//!
//! The request loop takes what was printed ([`Capture::collect`]) before
//! the reply of every call the protocol marks `flushes`, and sends it as
//! `DeviceOutput` notices ([`super::batch::serve_loop`]). Since each guest
//! has a worker process of its own, one guest's output can never reach
//! another.

use cuda_abi::device_output::is_assert_message;
use parking_lot::Mutex;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::DeviceOutput;

/// Bytes of device output held per descriptor between two flushes, past
/// which the rest is dropped (and counted): `VGPU_DEVICE_OUTPUT_LIMIT` in
/// the daemon's environment, else [`DEFAULT_LIMIT`].
pub const LIMIT_ENV: &str = "VGPU_DEVICE_OUTPUT_LIMIT";

/// 8 MiB: eight times the default printf FIFO of a GPU
/// (`cudaLimitPrintfFifoSize`).
pub const DEFAULT_LIMIT: usize = 8 << 20;

/// Largest data of one notice; more output goes in several.
const NOTICE_CHUNK: usize = 1 << 20;

/// Longest stderr line held while waiting for its newline; a longer one
/// is taken as complete (and, not being an assert message, logged).
const MAX_LINE: usize = 64 << 10;

/// The bound on held output, from the environment.
pub fn limit() -> usize {
    std::env::var(LIMIT_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_LIMIT)
}

extern "C" {
    /// C's standard streams (glibc and musl export the `FILE *` under
    /// these names).
    static stdout: *mut libc::FILE;
    static stderr: *mut libc::FILE;
}

/// Where this process's log goes: descriptor 2 until [`Capture::install`]
/// moves it to a saved duplicate; -1 when there is none.
static LOG_FD: AtomicI32 = AtomicI32::new(2);

/// The worker's log writer (`tracing_subscriber`'s `with_writer`): the
/// original stderr, even once descriptor 2 belongs to the guest.
pub fn log_writer() -> LogWriter {
    LogWriter
}

/// See [`log_writer`].
pub struct LogWriter;

impl io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let fd = LOG_FD.load(Ordering::Relaxed);
        // SAFETY: `buf` is valid for its length; a stale or -1 descriptor
        // makes write(2) fail, nothing worse.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes one whole line to the log descriptor (retrying short writes).
fn log_line(line: &[u8]) {
    let _ = io::Write::write_all(&mut LogWriter, line);
}

/// One descriptor's output waiting for the next flush.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Held {
    data: Vec<u8>,
    dropped: u64,
}

/// What the pipes delivered, sorted: held for the guest or logged.
#[derive(Debug)]
struct Sink {
    limit: usize,
    /// The guest's stdout (0) and stderr (1).
    held: [Held; 2],
    /// Worker stderr bytes after its last newline.
    line: Vec<u8>,
    session: u64,
}

impl Sink {
    fn new(limit: usize, session: u64) -> Sink {
        Sink {
            limit,
            held: Default::default(),
            line: Vec::new(),
            session,
        }
    }

    /// Bytes the worker's descriptor `fd` (1 or 2) received; lines for the
    /// daemon's log go to `log`.
    fn accept(&mut self, fd: usize, bytes: &[u8], log: &mut impl FnMut(&[u8])) {
        if fd == 1 {
            self.hold(0, bytes);
            return;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = MAX_LINE - self.line.len();
            let take = match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i < room => i + 1,
                _ => rest.len().min(room),
            };
            self.line.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.line.ends_with(b"\n") || self.line.len() >= MAX_LINE {
                let line = std::mem::take(&mut self.line);
                self.route_line(&line, log);
            }
        }
    }

    /// One complete stderr line: a device assert message is the guest's,
    /// anything else the host's.
    fn route_line(&mut self, line: &[u8], log: &mut impl FnMut(&[u8])) {
        let text = String::from_utf8_lossy(line);
        if is_assert_message(&text) {
            self.hold(1, line);
            return;
        }
        let text = text.strip_suffix('\n').unwrap_or(&text);
        // Control characters (a guest's kernel name in a message, say)
        // must not reach a terminal showing the log.
        let clean: String = text
            .chars()
            .map(|c| {
                if c.is_control() && c != '\t' {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect();
        log(format!("session {}: {clean}\n", self.session).as_bytes());
    }

    /// Keeps `bytes` for the guest's descriptor `i` if they fit. Past the
    /// limit, what is kept ends at its last whole line and everything else
    /// until the next flush is dropped, so the guest gets a prefix of whole
    /// lines and then nothing, never a line cut short or a gap.
    fn hold(&mut self, i: usize, bytes: &[u8]) {
        let h = &mut self.held[i];
        if h.dropped > 0 {
            h.dropped += bytes.len() as u64;
            return;
        }
        let room = self.limit.saturating_sub(h.data.len());
        if bytes.len() <= room {
            h.data.extend_from_slice(bytes);
            return;
        }
        let keep = h
            .data
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |n| n + 1);
        let keep = bytes[..room]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(keep, |n| h.data.len() + n + 1);
        h.data.extend_from_slice(&bytes[..room]);
        h.dropped = (h.data.len() - keep + bytes.len() - room) as u64;
        h.data.truncate(keep);
    }

    /// Everything held, as notices: stdout's before stderr's.
    fn take(&mut self) -> Vec<DeviceOutput> {
        let mut notices = Vec::new();
        for (i, fd) in [(0, 1u8), (1, 2u8)] {
            let Held { data, dropped } = std::mem::take(&mut self.held[i]);
            if data.is_empty() && dropped == 0 {
                continue;
            }
            if data.is_empty() {
                notices.push(DeviceOutput {
                    fd,
                    data: Bytes(Vec::new()),
                    dropped,
                });
            }
            for (k, chunk) in data.chunks(NOTICE_CHUNK).enumerate() {
                notices.push(DeviceOutput {
                    fd,
                    data: Bytes(chunk.to_vec()),
                    dropped: if k == 0 { dropped } else { 0 },
                });
            }
        }
        notices
    }
}

/// The worker's captured stdout and stderr.
pub struct Capture {
    shared: Arc<Shared>,
}

struct Shared {
    /// Read ends of the pipes behind descriptors 1 and 2 (non-blocking).
    read: [OwnedFd; 2],
    /// Most bytes a pipe holds: all a drain can find in it at once.
    capacity: usize,
    sink: Mutex<Sink>,
}

/// Why a drain stopped.
#[derive(PartialEq)]
enum Drained {
    Empty,
    /// Every write end is closed (something closed descriptor 1 or 2).
    Closed,
    /// Read `budget` bytes and stopped.
    Budget,
}

impl Capture {
    /// Captures this process's descriptors 1 and 2 (see the module) and
    /// starts the thread that drains them. Call once, early, before the
    /// driver is loaded. On an error nothing is captured, and the log
    /// stays on descriptor 2.
    pub fn install(session: u64) -> io::Result<Capture> {
        let [(out_r, out_w, out_cap), (err_r, err_w, err_cap)] = [pipe()?, pipe()?];
        // SAFETY: fcntl duplicates whatever descriptors 1 and 2 are; -1
        // (one was closed) is handled below.
        let (saved_out, log) = unsafe {
            (
                libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3),
                libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3),
            )
        };
        LOG_FD.store(log, Ordering::Relaxed);
        // SAFETY: dup2 onto the standard descriptors; the pipe ends stay
        // owned here (closed when dropped), their copies on 1 and 2 remain.
        let failed =
            unsafe { libc::dup2(out_w.as_raw_fd(), 1) < 0 || libc::dup2(err_w.as_raw_fd(), 2) < 0 };
        let failure = failed.then(io::Error::last_os_error);
        // SAFETY: restoring the saved originals and closing the one
        // duplicate no longer needed, all owned by this function.
        unsafe {
            if let Some(e) = failure {
                for (saved, target) in [(saved_out, 1), (log, 2)] {
                    if saved >= 0 {
                        libc::dup2(saved, target);
                        libc::close(saved);
                    }
                }
                LOG_FD.store(2, Ordering::Relaxed);
                return Err(e);
            }
            if saved_out >= 0 {
                libc::close(saved_out);
            }
        }
        drop((out_w, err_w));
        let shared = Arc::new(Shared {
            read: [out_r, err_r],
            capacity: out_cap.min(err_cap),
            sink: Mutex::new(Sink::new(limit(), session)),
        });
        let pump = shared.clone();
        std::thread::Builder::new()
            .name("device-output".into())
            .spawn(move || pump.run())?;
        Ok(Capture { shared })
    }

    /// Everything printed so far, as notices for the guest (stdout's, then
    /// stderr's). First flushes C's `stdout` and `stderr`, since a driver
    /// may print through them (into a full buffer: descriptor 1 is a pipe).
    pub fn collect(&self) -> Vec<DeviceOutput> {
        // SAFETY: the C library's own stream pointers, valid for the whole
        // process; fflush takes the stream's lock, which this thread does
        // not hold.
        unsafe {
            libc::fflush(stdout);
            libc::fflush(stderr);
        }
        let mut sink = self.shared.sink.lock();
        for (i, fd) in self.shared.read.iter().enumerate() {
            // Whatever was written before now is in the pipe, at most its
            // capacity: a writer that keeps writing cannot hold us here.
            drain(fd.as_raw_fd(), i + 1, &mut sink, self.shared.capacity);
        }
        sink.take()
    }
}

impl Shared {
    /// The draining thread: waits for either pipe, moves what arrived into
    /// the sink.
    fn run(&self) {
        let mut open = [true; 2];
        while open.iter().any(|&o| o) {
            let mut fds: Vec<libc::pollfd> = self
                .read
                .iter()
                .zip(open)
                .map(|(fd, o)| libc::pollfd {
                    fd: if o { fd.as_raw_fd() } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            // SAFETY: `fds` is a live array of two pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("device output: poll failed ({e}); no more output is forwarded");
                return;
            }
            // The lock is taken before reading, so a `collect` that holds
            // it knows no bytes are between the pipe and the sink.
            let mut sink = self.sink.lock();
            for (i, p) in fds.iter().enumerate() {
                if p.revents != 0 && drain(p.fd, i + 1, &mut sink, self.capacity) == Drained::Closed
                {
                    open[i] = false;
                }
            }
        }
    }
}

/// Reads what pipe `fd` (behind descriptor `which`) holds, at most
/// `budget` bytes, into the sink.
fn drain(fd: RawFd, which: usize, sink: &mut Sink, budget: usize) -> Drained {
    let mut buf = [0u8; 16 << 10];
    let mut got = 0;
    while got < budget {
        // SAFETY: reading into a live buffer of its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return Drained::Closed,
            n if n > 0 => {
                got += n as usize;
                sink.accept(which, &buf[..n as usize], &mut log_line);
            }
            _ => match io::Error::last_os_error().kind() {
                io::ErrorKind::Interrupted => {}
                _ => return Drained::Empty,
            },
        }
    }
    Drained::Budget
}

/// A pipe: (non-blocking read end, blocking write end, capacity). Both
/// close on exec; the write end's copies on 1 and 2 are what the driver
/// writes to.
fn pipe() -> io::Result<(OwnedFd, OwnedFd, usize)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills two descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just created and are owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on descriptors this function owns.
    unsafe {
        let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        if fl < 0 || libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
        // A larger pipe means fewer wakeups for a printing kernel; the
        // system's limit may refuse it, which is fine.
        libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
    // SAFETY: as above.
    let cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) };
    Ok((r, w, if cap > 0 { cap as usize } else { 64 << 10 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ASSERT: &str =
        "k.cu:3: void k(): block: [1,0,0], thread: [2,0,0] Assertion `x` failed.\n";

    fn feed(sink: &mut Sink, parts: &[(usize, &[u8])]) -> Vec<String> {
        let mut logged = Vec::new();
        for &(fd, b) in parts {
            sink.accept(fd, b, &mut |l: &[u8]| {
                logged.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        logged
    }

    #[test]
    fn stdout_is_the_guests_and_stderr_only_its_assert_lines() {
        let mut s = Sink::new(1 << 20, 7);
        // An assert line split across reads, around a log line of the
        // software GPU and one with a control character.
        let (a, b) = ASSERT.split_at(20);
        let logged = feed(
            &mut s,
            &[
                (1, b"x=1\ny="),
                (2, b"vgpu[9] WARN something\n"),
                (2, a.as_bytes()),
                (1, b"2\n"),
                (2, b.as_bytes()),
                (2, b"evil \x1b[2J\n"),
                (2, b"partial"),
            ],
        );
        assert_eq!(
            logged,
            [
                "session 7: vgpu[9] WARN something\n",
                "session 7: evil \\u{1b}[2J\n"
            ]
        );
        let n = s.take();
        assert_eq!(n.len(), 2);
        assert_eq!(
            (n[0].fd, &n[0].data.0[..], n[0].dropped),
            (1, &b"x=1\ny=2\n"[..], 0)
        );
        assert_eq!((n[1].fd, &n[1].data.0[..]), (2, ASSERT.as_bytes()));
        // Taken means gone; the partial line waits for its end.
        assert!(s.take().is_empty());
        assert_eq!(
            feed(&mut s, &[(2, b" line\n")]),
            ["session 7: partial line\n"]
        );
    }

    #[test]
    fn output_past_the_limit_is_counted_not_kept() {
        let mut s = Sink::new(10, 1);
        // 16 bytes for a limit of 10: the whole lines within it stay; the
        // rest, and everything until the next flush, is counted.
        feed(
            &mut s,
            &[
                (1, b"0123\n56"),
                (1, b"789\nabc"),
                (1, b"d\n"),
                (2, ASSERT.as_bytes()),
            ],
        );
        let n = s.take();
        assert_eq!(&n[0].data.0[..], b"0123\n");
        assert_eq!(n[0].dropped, 16 - 5);
        // An assert line that does not fit is dropped whole.
        assert!(n[1].data.0.is_empty());
        assert_eq!(n[1].dropped, ASSERT.len() as u64);
        // The next flush starts afresh.
        feed(&mut s, &[(1, b"ok\n")]);
        let n = s.take();
        assert_eq!((&n[0].data.0[..], n[0].dropped), (&b"ok\n"[..], 0));
        // A line ending inside the room is kept.
        let mut s = Sink::new(10, 1);
        feed(&mut s, &[(1, b"ab\ncd\nefghij")]);
        assert_eq!(&s.take()[0].data.0[..], b"ab\ncd\n");
        // Nothing kept but something dropped: the guest still hears of it.
        let mut s = Sink::new(0, 1);
        feed(&mut s, &[(1, b"abc")]);
        let n = s.take();
        assert_eq!((n.len(), n[0].data.0.len(), n[0].dropped), (1, 0, 3));
    }

    #[test]
    fn a_line_without_end_is_cut_at_the_bound() {
        let mut s = Sink::new(1 << 20, 3);
        let long = vec![b'y'; MAX_LINE + 5];
        let logged = feed(&mut s, &[(2, &long), (2, b"\n")]);
        assert_eq!(logged.len(), 2);
        assert_eq!(logged[0].len(), "session 3: \n".len() + MAX_LINE);
        assert_eq!(logged[1], "session 3: yyyyy\n");
    }

    #[test]
    fn large_output_is_cut_into_notices() {
        let mut s = Sink::new(3 * NOTICE_CHUNK, 1);
        let big = vec![b'z'; 2 * NOTICE_CHUNK + 1];
        feed(&mut s, &[(1, &big)]);
        let n = s.take();
        let sizes: Vec<usize> = n.iter().map(|o| o.data.0.len()).collect();
        assert_eq!(sizes, [NOTICE_CHUNK, NOTICE_CHUNK, 1]);
        assert!(n.iter().all(|o| o.fd == 1 && o.dropped == 0));
    }
}
