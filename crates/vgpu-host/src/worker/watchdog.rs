//! Runaway work (docs/security.md, "Runaway work"): a thread of the worker
//! that ends the worker process when
//! - one request has run longer than the guest's kernel time limit
//!   (`kernel_time_ms`: a launch that runs at once, or the synchronization
//!   that waits for it);
//! - the guest has hung up while a request is still running, for longer
//!   than [`GRACE`] (a guest killed during an endless kernel);
//! - the teardown after the guest left takes longer than [`GRACE`]
//!   (it synchronizes every context first, which would wait forever).
//!
//! A kernel cannot be taken back from a GPU except by ending its process:
//! the exit returns the process's device memory to the driver, and the
//! supervisor, reaping the worker, forgets what it held in the guest's
//! account. The guest's connection closes; its shim answers
//! `CUDA_ERROR_DEVICE_UNAVAILABLE` from then on, and the reason is in the
//! host log.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a session may go on working after its guest hung up, and how
/// long its teardown may take.
pub const GRACE: Duration = Duration::from_secs(3);
/// The kernel time limit on the software GPU when none is configured; 0
/// turns it off. A real driver has none unless configured (its long
/// kernels are legitimate).
pub const DEFAULT_SOFTWARE_GPU_LIMIT_MS: u64 = 300_000;
const TICK: Duration = Duration::from_millis(50);
/// The pseudo-op of the teardown.
const TEARDOWN: u32 = u32::MAX;

/// When the current request began (ms since `EPOCH`, +1; 0 = idle) and
/// which op it is.
static BUSY_SINCE: AtomicU64 = AtomicU64::new(0);
static BUSY_OP: AtomicU32 = AtomicU32::new(0);
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn now_ms() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Marks a request as running until dropped.
pub struct Busy;

impl Busy {
    pub fn op(op: u16) -> Busy {
        BUSY_OP.store(op.into(), Ordering::Relaxed);
        BUSY_SINCE.store(now_ms(), Ordering::Release);
        Busy
    }

    /// The session's teardown (held to [`GRACE`]).
    pub fn teardown() -> Busy {
        BUSY_OP.store(TEARDOWN, Ordering::Relaxed);
        BUSY_SINCE.store(now_ms(), Ordering::Release);
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY_SINCE.store(0, Ordering::Release);
    }
}

/// Starts the watchdog of session `session` on the guest's socket `fd`;
/// `limit` is the kernel time limit (`None`: off).
pub fn start(session: u64, fd: RawFd, limit: Option<Duration>) {
    let _ = EPOCH.get_or_init(Instant::now);
    let r = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || watch(session, fd, limit));
    if let Err(e) = r {
        tracing::error!("session {session}: cannot start the watchdog: {e}");
    }
}

fn what(op: u32) -> String {
    if op == TEARDOWN {
        "the teardown".into()
    } else {
        vgpu_transport::proto::op_name(op as u16)
            .unwrap_or("a request")
            .to_string()
    }
}

fn watch(session: u64, fd: RawFd, limit: Option<Duration>) {
    let mut gone_since: Option<Instant> = None;
    loop {
        std::thread::sleep(TICK);
        let since = BUSY_SINCE.load(Ordering::Acquire);
        if since == 0 {
            gone_since = None;
            continue;
        }
        let op = BUSY_OP.load(Ordering::Relaxed);
        let ran = Duration::from_millis(now_ms().saturating_sub(since));
        if op == TEARDOWN {
            if ran > GRACE {
                end(
                    session,
                    &format!(
                        "the teardown has waited {:.1} s for the device (a kernel that does not \
                         end?)",
                        ran.as_secs_f64()
                    ),
                );
            }
            continue;
        }
        if let Some(l) = limit {
            if ran > l {
                end(
                    session,
                    &format!(
                        "{} has run for {} ms, past the guest's kernel time limit of {} ms \
                         (kernel_time_ms)",
                        what(op),
                        ran.as_millis(),
                        l.as_millis()
                    ),
                );
            }
        }
        if hung_up(fd) {
            let t = *gone_since.get_or_insert_with(Instant::now);
            if t.elapsed() > GRACE {
                end(
                    session,
                    &format!(
                        "the guest left while {} was still running ({:.1} s)",
                        what(op),
                        ran.as_secs_f64()
                    ),
                );
            }
        }
    }
}

/// Whether the guest closed its end (data it sent before may be unread).
fn hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

fn end(session: u64, why: &str) -> ! {
    tracing::error!("session {session}: {why}; ending the worker (its device memory is returned)");
    // SAFETY: _exit ends the process at once, without running destructors
    // or atexit handlers that could wait on the stuck driver.
    unsafe { libc::_exit(3) }
}
