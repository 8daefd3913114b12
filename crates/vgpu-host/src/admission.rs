//! The supervisor's defences before a guest has a worker
//! (docs/security.md, "Admission"): one deadline for the whole handshake,
//! a small `Hello`, and bounded pending handshakes — per peer and in total
//! — where a connection that finds its peer's (or the host's) share full
//! evicts the oldest stalled handshake instead of being turned away, so
//! connections that trickle their `Hello` cannot keep a guest that sends it
//! at once from being admitted.

use parking_lot::Mutex;
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};
use vgpu_transport::frame::{Frame, Header, HEADER_LEN};
use vgpu_transport::{Peer, Stream};

/// Handshakes in progress at once, over all peers.
pub const MAX_PENDING: usize = 64;
/// Handshakes in progress at once from one peer (a uid, an IP address, a
/// VM).
pub const MAX_PENDING_PER_PEER: usize = 16;
/// A pending handshake is stalled, and may be evicted for a newcomer, once
/// it has waited this long with nothing unread on its socket.
pub const EVICT_AFTER: Duration = Duration::from_millis(200);

/// Bytes received on `fd` and not yet read.
fn unread(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
        return 0;
    }
    n.max(0) as usize
}

/// Who counts as one peer for the pending limits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PeerKey {
    Uid(u32),
    Ip(std::net::IpAddr),
    Cid(u32),
}

impl PeerKey {
    pub fn of(p: &Peer) -> PeerKey {
        match p {
            Peer::Unix { uid, .. } => PeerKey::Uid(*uid),
            Peer::Tcp { addr } => PeerKey::Ip(addr.ip()),
            Peer::Vsock { cid, .. } => PeerKey::Cid(*cid),
        }
    }
}

struct Entry {
    id: u64,
    key: PeerKey,
    fd: RawFd,
    since: Instant,
    evicted: bool,
}

/// Handshakes in progress.
#[derive(Default)]
pub struct Pending {
    entries: Mutex<(u64, Vec<Entry>)>,
}

/// A handshake's place in [`Pending`]; leaving it (or dropping it) frees
/// the place. Its stream must stay open while it is held (an eviction
/// shuts the descriptor down).
pub struct PendingGuard<'a> {
    pending: &'a Pending,
    id: u64,
    left: bool,
}

impl Pending {
    /// Takes a place for a new connection. When its peer's share (or the
    /// total) is full, the oldest pending handshake of that peer (or of
    /// anyone) that is stalled — pending for [`EVICT_AFTER`] with nothing
    /// unread on its socket, i.e. waiting for bytes its peer trickles — is
    /// evicted. A guest that sent its `Hello` is never evicted, however
    /// slowly the supervisor gets to it. Without a stalled one to evict,
    /// the caller waits for a place (the accept loop behind it waits too,
    /// so the kernel's backlog holds further connections) up to
    /// `deadline`; past it, `Err` with the reason for the refusal.
    pub fn enter<'a>(
        &'a self,
        key: PeerKey,
        stream: &Stream,
        deadline: Instant,
    ) -> Result<PendingGuard<'a>, String> {
        loop {
            let mut g = self.entries.lock();
            let live = |e: &&Entry| !e.evicted;
            let mine = g.1.iter().filter(live).filter(|e| e.key == key).count();
            let all = g.1.iter().filter(live).count();
            let full = mine >= MAX_PENDING_PER_PEER || all >= MAX_PENDING;
            if full {
                let now = Instant::now();
                let victim =
                    g.1.iter_mut()
                        .filter(|e| !e.evicted && (mine < MAX_PENDING_PER_PEER || e.key == key))
                        .filter(|e| now.duration_since(e.since) >= EVICT_AFTER && unread(e.fd) == 0)
                        .min_by_key(|e| e.since);
                match victim {
                    Some(v) => {
                        v.evicted = true;
                        // SAFETY: the descriptor is open: its handshake
                        // thread removes the entry (under this lock) before
                        // its stream is closed or handed on. shutdown only
                        // ends that thread's blocked read.
                        unsafe { libc::shutdown(v.fd, libc::SHUT_RDWR) };
                    }
                    None => {
                        drop(g);
                        if Instant::now() >= deadline {
                            return Err(if mine >= MAX_PENDING_PER_PEER {
                                format!(
                                    "{MAX_PENDING_PER_PEER} handshakes of this peer are in \
                                     progress"
                                )
                            } else {
                                format!("{MAX_PENDING} handshakes are in progress")
                            });
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
            }
            g.0 += 1;
            let id = g.0;
            g.1.push(Entry {
                id,
                key,
                fd: stream.as_raw_fd(),
                since: Instant::now(),
                evicted: false,
            });
            return Ok(PendingGuard {
                pending: self,
                id,
                left: false,
            });
        }
    }

    /// Handshakes in progress (tests, logs).
    pub fn len(&self) -> usize {
        self.entries.lock().1.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PendingGuard<'_> {
    /// Whether an eviction took this place (tests).
    pub fn evicted(&self) -> bool {
        let g = self.pending.entries.lock();
        g.1.iter().any(|e| e.id == self.id && e.evicted)
    }

    /// Frees the place; true if the handshake had been evicted.
    pub fn leave(mut self) -> bool {
        self.remove()
    }

    fn remove(&mut self) -> bool {
        if self.left {
            return false;
        }
        self.left = true;
        let mut g = self.pending.entries.lock();
        match g.1.iter().position(|e| e.id == self.id) {
            Some(i) => g.1.swap_remove(i).evicted,
            None => false,
        }
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Why no `Hello` frame was read.
#[derive(Debug)]
pub enum HelloReadError {
    /// The header announced a payload larger than allowed.
    TooLarge(u32),
    /// The deadline passed first.
    TimedOut,
    Io(std::io::Error),
}

/// Reads the first frame under one deadline for all of it (not per read),
/// refusing a header that announces more than `max` payload bytes before
/// reading any of the payload.
pub fn read_hello(
    stream: &mut Stream,
    deadline: Instant,
    max: u32,
) -> Result<Frame, HelloReadError> {
    let mut head = [0u8; HEADER_LEN];
    read_until(stream, &mut head, deadline)?;
    let header = Header::from_bytes(&head);
    if header.len > max {
        return Err(HelloReadError::TooLarge(header.len));
    }
    let mut payload = vec![0u8; header.len as usize];
    read_until(stream, &mut payload, deadline)?;
    Ok(Frame { header, payload })
}

fn read_until(
    stream: &mut Stream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<(), HelloReadError> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HelloReadError::TimedOut);
        }
        stream
            .set_timeouts(Some(left.max(Duration::from_millis(1))))
            .map_err(HelloReadError::Io)?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(HelloReadError::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(HelloReadError::Io(e)),
        }
    }
    Ok(())
}

/// The uid owning the other end of an accepted loopback TCP connection
/// (`fd`, from `peer`): the socket whose local address is `peer` and whose
/// remote address is ours, in /proc/net/tcp or tcp6 — the same table
/// `ss -e` reads.
pub fn loopback_uid(fd: RawFd, peer: std::net::SocketAddr) -> Option<u32> {
    let ours = local_port(fd)?;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        if let Some(u) = uid_in_table(&text, peer.port(), ours) {
            return Some(u);
        }
    }
    None
}

/// In a /proc/net/tcp table, the uid of the established socket with local
/// port `local` and remote port `remote`.
fn uid_in_table(text: &str, local: u16, remote: u16) -> Option<u32> {
    let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid ...
        if f.len() < 8 || f[3] != "01" {
            return None;
        }
        (port(f[1])? == local && port(f[2])? == remote).then(|| f[7].parse().ok())?
    })
}

fn local_port(fd: RawFd) -> Option<u16> {
    // SAFETY: sockaddr_storage is plain data; getsockname writes at most
    // `len` bytes into it.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: as above.
    let r = unsafe { libc::getsockname(fd, &mut ss as *mut _ as *mut libc::sockaddr, &mut len) };
    if r != 0 {
        return None;
    }
    match ss.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let a = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in) };
            Some(u16::from_be(a.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let a = unsafe { &*(&ss as *const _ as *const libc::sockaddr_in6) };
            Some(u16::from_be(a.sin6_port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
   1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 2 1\n\
   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n";
        assert_eq!(uid_in_table(t, 0xD431, 0x1F90), Some(1001));
        assert_eq!(uid_in_table(t, 0x1F90, 0xD431), Some(0));
        assert_eq!(uid_in_table(t, 1, 2), None);
    }

    #[test]
    fn loopback_owner_is_us() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        assert_eq!(loopback_uid(s.as_raw_fd(), peer), Some(me));
        drop(c);
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn eviction_keeps_room_for_newcomers() {
        let p = Pending::default();
        let key = PeerKey::Uid(5);
        let mut streams = Vec::new();
        let mut guards = Vec::new();
        for _ in 0..MAX_PENDING_PER_PEER {
            let (a, b) = Stream::pair().unwrap();
            guards.push(p.enter(key.clone(), &a, far()).unwrap());
            streams.push((a, b));
        }
        // Another peer's place costs this peer nothing.
        let (a, _b) = Stream::pair().unwrap();
        drop(p.enter(PeerKey::Uid(6), &a, far()).unwrap());
        assert!(guards.iter().all(|g| !g.evicted()));
        // The oldest has sent its Hello (unread): it is not stalled, and
        // is passed over for the next.
        streams[0].1.write_all(b"hello").unwrap();
        // Full and none stalled yet: a newcomer waits, and past its
        // deadline is refused.
        let t = Instant::now();
        assert!(p
            .enter(key.clone(), &a, Instant::now() + Duration::from_millis(50))
            .is_err());
        assert!(t.elapsed() >= Duration::from_millis(50));
        // Once stalled long enough, this peer's next evicts its oldest
        // stalled one: the second.
        std::thread::sleep(EVICT_AFTER);
        let g = p.enter(key.clone(), &a, far()).unwrap();
        assert!(!guards[0].evicted());
        let second = guards.remove(1);
        assert!(second.leave());
        let mut buf = [0u8; 1];
        assert_eq!(streams[1].0.read(&mut buf).unwrap(), 0);
        assert_eq!(guards.iter().filter(|g| g.evicted()).count(), 0);
        drop(g);
        drop(guards);
        assert!(p.is_empty());
    }

    #[test]
    fn the_total_is_bounded_over_peers() {
        let p = Pending::default();
        let (a, _b) = Stream::pair().unwrap();
        let mut guards: Vec<_> = (0..MAX_PENDING as u32)
            .map(|i| p.enter(PeerKey::Uid(i), &a, far()).unwrap())
            .collect();
        std::thread::sleep(EVICT_AFTER);
        guards.extend((0..10).map(|i| p.enter(PeerKey::Uid(1000 + i), &a, far()).unwrap()));
        assert_eq!(guards.iter().filter(|g| g.evicted()).count(), 10);
    }
}
