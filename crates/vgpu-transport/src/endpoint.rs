//! Where a guest finds its host: `unix:PATH`, `tcp:HOST:PORT`,
//! `vsock:CID:PORT` (the `VGPU_HOST` syntax), and the streams and listeners
//! behind each. All three are byte streams carrying the same frames; only
//! peer identification differs.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub const DEFAULT_ENDPOINT: &str = "unix:/run/vgpu.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port` as given; resolved at connect/bind time.
    Tcp(String),
    Vsock {
        cid: u32,
        port: u32,
    },
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("`{s}`: expected unix:PATH, tcp:HOST:PORT or vsock:CID:PORT"))?;
        match scheme {
            "unix" if !rest.is_empty() => Ok(Endpoint::Unix(PathBuf::from(rest))),
            "tcp" => {
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| format!("`{s}`: expected tcp:HOST:PORT"))?;
                port.parse::<u16>()
                    .map_err(|_| format!("`{s}`: bad port `{port}`"))?;
                if host.is_empty() {
                    return Err(format!("`{s}`: empty host"));
                }
                Ok(Endpoint::Tcp(rest.to_string()))
            }
            "vsock" => {
                let (cid, port) = rest
                    .split_once(':')
                    .ok_or_else(|| format!("`{s}`: expected vsock:CID:PORT"))?;
                let cid = cid.parse().map_err(|_| format!("`{s}`: bad CID `{cid}`"))?;
                let port = port
                    .parse()
                    .map_err(|_| format!("`{s}`: bad port `{port}`"))?;
                Ok(Endpoint::Vsock { cid, port })
            }
            _ => Err(format!(
                "`{s}`: expected unix:PATH, tcp:HOST:PORT or vsock:CID:PORT"
            )),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp:{a}"),
            Endpoint::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

/// A connected byte stream of any kind.
#[derive(Debug)]
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
    Vsock(OwnedFd),
}

impl Stream {
    /// Two connected in-process ends, for tests of code above the transport.
    pub fn pair() -> io::Result<(Stream, Stream)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Stream::Unix(a), Stream::Unix(b)))
    }

    pub fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Vsock(fd) => {
                set_fd_timeout(fd.as_raw_fd(), libc::SO_RCVTIMEO, t)?;
                set_fd_timeout(fd.as_raw_fd(), libc::SO_SNDTIMEO, t)
            }
        }
    }

    /// Rebuilds a stream from an inherited descriptor (the worker side).
    ///
    /// # Safety
    /// `fd` must be an open, connected stream socket owned by nobody else.
    pub unsafe fn from_raw_fd(fd: RawFd) -> io::Result<Stream> {
        let mut domain: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: plain getsockopt into a c_int-sized buffer we own.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_DOMAIN,
                &mut domain as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the caller hands over sole ownership of `fd`.
        Ok(unsafe {
            match domain {
                libc::AF_UNIX => Stream::Unix(UnixStream::from_raw_fd(fd)),
                libc::AF_INET | libc::AF_INET6 => Stream::Tcp(TcpStream::from_raw_fd(fd)),
                _ => Stream::Vsock(OwnedFd::from_raw_fd(fd)),
            }
        })
    }

    pub fn into_raw_fd(self) -> RawFd {
        match self {
            Stream::Unix(s) => s.into_raw_fd(),
            Stream::Tcp(s) => s.into_raw_fd(),
            Stream::Vsock(fd) => fd.into_raw_fd(),
        }
    }

    pub fn shutdown(&self) {
        // SAFETY: shutdown on a descriptor we own; errors are irrelevant here.
        unsafe {
            libc::shutdown(self.as_raw_fd(), libc::SHUT_RDWR);
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Vsock(fd) => fd.as_raw_fd(),
        }
    }
}

fn fd_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` writable bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn fd_write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` readable bytes; MSG_NOSIGNAL
    // keeps a vanished peer from killing the process with SIGPIPE.
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr() as *const libc::c_void,
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Through a shared reference, so that one thread can wait for a reply
/// while another writes requests (as for `&UnixStream`).
impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => {
                let mut s: &TcpStream = s;
                s.read(buf)
            }
            // Unix and vsock: plain read(2) on the descriptor.
            _ => fd_read(self.as_raw_fd(), buf),
        }
    }
}

/// sendmsg(2) of several buffers (MSG_NOSIGNAL, as [`fd_write`]), with
/// `fd` passed as SCM_RIGHTS when given (Unix sockets only).
fn fd_sendmsg(fd: RawFd, bufs: &[io::IoSlice<'_>], pass: Option<RawFd>) -> io::Result<usize> {
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
    // Room for one descriptor's control message, aligned for cmsghdr.
    let mut control = [0u64; 8];
    if let Some(pass) = pass {
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `msg` points at `control`, which holds `space` bytes
        // (asserted below), so the first header and its data fit.
        unsafe {
            assert!(space <= std::mem::size_of_val(&control));
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), pass);
        }
    }
    // SAFETY: `msg` describes buffers valid for reading (IoSlice is
    // ABI-compatible with iovec) and a control buffer we own.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes every byte of `bufs` in order, in as few system calls as the
/// socket allows (a frame's header, its fixed fields and a caller's
/// buffer go out without being copied together first).
pub fn write_all_parts(w: &mut impl Write, parts: &[&[u8]]) -> io::Result<()> {
    let mut slices: Vec<io::IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| io::IoSlice::new(p))
        .collect();
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Stream {
    /// Sends `bytes` (one small frame) with `fd` attached as SCM_RIGHTS:
    /// how a guest hands its shared-memory region to the worker. Unix
    /// sockets only.
    pub fn send_with_fd(&mut self, bytes: &[u8], fd: RawFd) -> io::Result<()> {
        if !matches!(self, Stream::Unix(_)) {
            return Err(io::ErrorKind::Unsupported.into());
        }
        let n = fd_sendmsg(self.as_raw_fd(), &[io::IoSlice::new(bytes)], Some(fd))?;
        // The descriptor went with the first byte; the rest is plain data.
        self.write_all(&bytes[n..])
    }

    /// Reads exactly `buf.len()` bytes; a descriptor passed with them
    /// (SCM_RIGHTS) is returned, owned and close-on-exec. Any further
    /// descriptors, or truncated control data, are closed and ignored.
    pub fn recv_with_fd(&mut self, buf: &mut [u8]) -> io::Result<Option<OwnedFd>> {
        let mut got = 0;
        let mut passed: Option<OwnedFd> = None;
        while got < buf.len() {
            let mut iov = libc::iovec {
                iov_base: buf[got..].as_mut_ptr().cast(),
                iov_len: buf.len() - got,
            };
            let mut control = [0u64; 16];
            // SAFETY: msghdr is plain old data.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: `msg` describes buffers we own, valid for writing.
            let n = unsafe { libc::recvmsg(self.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += n as usize;
            // SAFETY: walking the control buffer the kernel filled, with
            // the CMSG_* accessors, within `msg_controllen`.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                        let data = libc::CMSG_DATA(c);
                        let bytes = (*c).cmsg_len as usize - (data as usize - c as usize);
                        for i in 0..bytes / std::mem::size_of::<RawFd>() {
                            let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                            let owned = OwnedFd::from_raw_fd(fd);
                            if passed.is_none() {
                                passed = Some(owned);
                            }
                        }
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
        }
        Ok(passed)
    }

    /// Socket buffers for bulk transfers: as large as the system allows
    /// (`net.core.wmem_max`/`rmem_max` cap the request), so a multi-MiB
    /// chunk streams without the writer waiting on every few hundred KiB.
    /// TCP keeps the kernel's autotuning, which grows further than a fixed
    /// size would.
    pub fn tune_for_bulk(&self) {
        if !matches!(self, Stream::Unix(_)) {
            return;
        }
        let size: libc::c_int = 4 << 20;
        for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
            // SAFETY: setsockopt with a c_int we own; failure only means
            // smaller buffers.
            unsafe {
                libc::setsockopt(
                    self.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &size as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // send(MSG_NOSIGNAL) for every kind: a guest application must not
        // die of SIGPIPE because the host went away.
        fd_write(self.as_raw_fd(), buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        fd_sendmsg(self.as_raw_fd(), bufs, None)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn set_fd_timeout(fd: RawFd, opt: libc::c_int, t: Option<Duration>) -> io::Result<()> {
    let tv = match t {
        Some(d) => libc::timeval {
            tv_sec: d.as_secs() as libc::time_t,
            tv_usec: d.subsec_micros() as libc::suseconds_t,
        },
        None => libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
    };
    // SAFETY: setsockopt with a timeval we own, of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn vsock_addr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
    let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    a.svm_cid = cid;
    a.svm_port = port;
    a
}

fn vsock_socket() -> io::Result<OwnedFd> {
    // SAFETY: creating a socket has no memory-safety preconditions.
    let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Endpoint {
    /// Connects, failing within about `timeout` when nothing answers.
    pub fn connect(&self, timeout: Duration) -> io::Result<Stream> {
        match self {
            Endpoint::Unix(p) => Ok(Stream::Unix(UnixStream::connect(p)?)),
            Endpoint::Tcp(a) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{a}: no address"));
                for addr in a.to_socket_addrs()? {
                    match TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            s.set_nodelay(true)?;
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            Endpoint::Vsock { cid, port } => {
                let fd = vsock_socket()?;
                set_fd_timeout(fd.as_raw_fd(), libc::SO_SNDTIMEO, Some(timeout))?;
                let addr = vsock_addr(*cid, *port);
                // SAFETY: `addr` is a valid sockaddr_vm of the size passed.
                let rc = unsafe {
                    libc::connect(
                        fd.as_raw_fd(),
                        &addr as *const _ as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
                    )
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(Stream::Vsock(fd))
            }
        }
    }

    /// Binds and listens. A stale Unix socket file (nobody accepting) is
    /// replaced; a live one is an error, so two daemons never share a path.
    pub fn listen(&self) -> io::Result<Listener> {
        match self {
            Endpoint::Unix(p) => {
                if p.exists() {
                    if UnixStream::connect(p).is_ok() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("{}: another daemon is listening", p.display()),
                        ));
                    }
                    std::fs::remove_file(p)?;
                }
                Ok(Listener::Unix(UnixListener::bind(p)?, p.clone()))
            }
            Endpoint::Tcp(a) => Ok(Listener::Tcp(TcpListener::bind(a.as_str())?)),
            Endpoint::Vsock { cid, port } => {
                let fd = vsock_socket()?;
                let addr = vsock_addr(*cid, *port);
                // SAFETY: `addr` is a valid sockaddr_vm of the size passed.
                let rc = unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        &addr as *const _ as *const libc::sockaddr,
                        std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
                    )
                };
                // SAFETY: listen on a descriptor we own.
                if rc != 0 || unsafe { libc::listen(fd.as_raw_fd(), 64) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(Listener::Vsock(fd))
            }
        }
    }
}

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Same host; credentials from SO_PEERCRED.
    Unix {
        pid: i32,
        uid: u32,
        gid: u32,
    },
    Tcp {
        addr: std::net::SocketAddr,
    },
    Vsock {
        cid: u32,
        port: u32,
    },
}

impl Peer {
    /// Whether the peer is on this machine (no token needed).
    pub fn is_local(&self) -> bool {
        match self {
            Peer::Unix { .. } => true,
            Peer::Tcp { addr } => addr.ip().is_loopback(),
            Peer::Vsock { .. } => false,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Unix { pid, uid, .. } => write!(f, "unix pid {pid} uid {uid}"),
            Peer::Tcp { addr } => write!(f, "tcp {addr}"),
            Peer::Vsock { cid, port } => write!(f, "vsock {cid}:{port}"),
        }
    }
}

#[derive(Debug)]
pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
    Vsock(OwnedFd),
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Unix(l, _) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Vsock(fd) => fd.as_raw_fd(),
        }
    }
}

impl Listener {
    /// The address actually bound (a TCP port 0 becomes the real port).
    pub fn local_endpoint(&self) -> io::Result<Endpoint> {
        match self {
            Listener::Unix(_, p) => Ok(Endpoint::Unix(p.clone())),
            Listener::Tcp(l) => Ok(Endpoint::Tcp(l.local_addr()?.to_string())),
            Listener::Vsock(fd) => {
                // SAFETY: sockaddr_vm is plain old data.
                let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
                // SAFETY: getsockname into a buffer of the size passed.
                let rc = unsafe {
                    libc::getsockname(
                        fd.as_raw_fd(),
                        &mut a as *mut _ as *mut libc::sockaddr,
                        &mut len,
                    )
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(Endpoint::Vsock {
                    cid: a.svm_cid,
                    port: a.svm_port,
                })
            }
        }
    }

    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Unix(l, _) => {
                let (s, _) = l.accept()?;
                let peer = unix_peer(&s)?;
                Ok((Stream::Unix(s), peer))
            }
            Listener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), Peer::Tcp { addr }))
            }
            Listener::Vsock(fd) => {
                // SAFETY: sockaddr_vm is plain old data.
                let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;
                // SAFETY: accept4 writes at most `len` bytes into `a`.
                let c = unsafe {
                    libc::accept4(
                        fd.as_raw_fd(),
                        &mut a as *mut _ as *mut libc::sockaddr,
                        &mut len,
                        libc::SOCK_CLOEXEC,
                    )
                };
                if c < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: `c` is a fresh descriptor owned by nobody else.
                let s = Stream::Vsock(unsafe { OwnedFd::from_raw_fd(c) });
                Ok((
                    s,
                    Peer::Vsock {
                        cid: a.svm_cid,
                        port: a.svm_port,
                    },
                ))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, p) = self {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn unix_peer(s: &UnixStream) -> io::Result<Peer> {
    // SAFETY: ucred is plain old data.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Peer::Unix {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(
            "unix:/run/vgpu.sock".parse(),
            Ok(Endpoint::Unix("/run/vgpu.sock".into()))
        );
        assert_eq!(
            "tcp:127.0.0.1:7070".parse(),
            Ok(Endpoint::Tcp("127.0.0.1:7070".into()))
        );
        assert_eq!(
            "tcp:[::1]:7070".parse(),
            Ok(Endpoint::Tcp("[::1]:7070".into()))
        );
        assert_eq!(
            "vsock:2:7070".parse(),
            Ok(Endpoint::Vsock { cid: 2, port: 7070 })
        );
        for bad in [
            "",
            "unix:",
            "tcp:host",
            "tcp::1",
            "tcp:h:99999",
            "vsock:x:1",
            "udp:1",
            "/run/x",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
        let e: Endpoint = "vsock:3:9".parse().unwrap();
        assert_eq!(e.to_string(), "vsock:3:9");
    }

    #[test]
    fn unix_listen_accept_and_credentials() {
        let dir = std::env::temp_dir().join(format!("vgpu-ep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ep = Endpoint::Unix(dir.join("s"));
        let l = ep.listen().unwrap();
        let mut c = ep.connect(Duration::from_secs(1)).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        assert_eq!(
            peer,
            Peer::Unix {
                pid: std::process::id() as i32,
                uid,
                gid
            }
        );
        c.write_all(b"hi").unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        assert!(ep.listen().is_err(), "a live socket must not be stolen");
        drop(l);
        assert!(!dir.join("s").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tcp_port_zero_reports_real_port() {
        let l = Endpoint::Tcp("127.0.0.1:0".into()).listen().unwrap();
        let ep = l.local_endpoint().unwrap();
        assert_ne!(ep, Endpoint::Tcp("127.0.0.1:0".into()));
        let _c = ep.connect(Duration::from_secs(1)).unwrap();
        let (_, peer) = l.accept().unwrap();
        assert!(peer.is_local());
    }
}
