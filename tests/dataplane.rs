//! The data plane end to end (docs/protocol.md, "Bulk transfers"):
//! `tests/c/dataplane.c` through the CUDA shim on the software GPU, over a
//! Unix socket with the shared-memory region, over the same socket without
//! it (`VGPU_SHM=0`), and over TCP loopback — copies of every size class
//! both ways, synchronous and stream-ordered, pageable and pinned; copies
//! from four threads on their own streams; a module image larger than a
//! frame; a guest killed in the middle of a large copy; and a region that
//! is out of bounds or not sealed. Correctness only, nothing timed.
mod common;

use common::Daemon;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::Duration;
use vgpu_transport::codec::{from_bytes, to_bytes};
use vgpu_transport::frame::{encode_frame, read_frame, Header};
use vgpu_transport::proto::{
    caps, Call, Hello, ImageStageShm, Ping, ShmAttach, HELLO_OP, SHM_ATTACH_OP,
};
use vgpu_transport::Client;

/// How a guest reaches the daemon.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Way {
    Shm,
    Socket,
    Tcp,
}

/// The software GPU, listening on its Unix socket and on TCP loopback.
fn daemon() -> Daemon {
    Daemon::start(&["--driver", "emulated", "--listen", "tcp:127.0.0.1:0"])
}

fn guest(d: &Daemon, way: Way, args: &[&str]) -> common::GuestOutput {
    let mut cmd = Command::new(common::compile_c("dataplane.c", &[]));
    cmd.args(args);
    let host = match way {
        Way::Tcp => d.endpoints[1].to_string(),
        _ => d.host_env(),
    };
    let shm = if way == Way::Socket { "0" } else { "1" };
    // Debug logging of every piece would dominate; the guest's own checks
    // are what count. Over a gigabyte crosses in `sizes`: on a loaded
    // machine with unoptimized test builds that takes a while.
    let env = [
        ("VGPU_HOST", host.as_str()),
        ("VGPU_SHM", shm),
        ("VGPU_LOG", "info"),
    ];
    common::run_guest_with_timeout(cmd, d, &env, Duration::from_secs(600))
}

/// Whether the daemon's log says a worker adopted a shared-memory region.
fn regions(d: &Daemon) -> usize {
    d.logs().matches("shared-memory region of").count()
}

fn sizes(way: Way) {
    let d = daemon();
    let out = guest(&d, way, &["sizes"]);
    out.assert_success();
    assert_eq!(out.line("sizes ok=1"), "sizes ok=1 n=50");
    // The path asked for is the path taken.
    assert_eq!(regions(&d), usize::from(way == Way::Shm), "{}", d.logs());
}

#[test]
fn every_size_both_ways_unix_shared_memory() {
    sizes(Way::Shm);
}

#[test]
fn every_size_both_ways_unix_socket_only() {
    sizes(Way::Socket);
}

#[test]
fn every_size_both_ways_tcp() {
    sizes(Way::Tcp);
}

#[test]
fn concurrent_copies_from_threads_and_streams() {
    let d = daemon();
    for way in [Way::Shm, Way::Tcp] {
        guest(&d, way, &["threads"])
            .assert_success()
            .line("threads ok=1");
    }
}

#[test]
fn an_image_larger_than_a_frame_loads_and_runs() {
    // 70 MiB: more than the 64 MiB frame limit.
    let d = daemon();
    for way in [Way::Shm, Way::Socket] {
        guest(&d, way, &["image", "70"])
            .assert_success()
            .line("image ok=1");
    }
}

/// A guest killed while a 300 MiB copy streams: its worker ends and
/// cleans up, and the daemon goes on serving others.
fn killed_mid_copy(way: Way) {
    let mut d = daemon();
    let mut cmd = Command::new(common::compile_c("dataplane.c", &[]));
    cmd.arg("forever")
        .env("VGPU_HOST", d.host_env())
        .env("LD_LIBRARY_PATH", common::shim_libdir())
        .env("VGPU_LOG", "info")
        .env("VGPU_SHM", if way == Way::Shm { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn the copying guest");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "copying");
    // Well inside a copy: each takes longer than this on the software GPU.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    d.wait_log(
        &["session 1:", "freed 1 allocation(s)"],
        Duration::from_secs(30),
    );
    assert!(!d.logs().contains("panicked"), "{}", d.logs());
    d.assert_alive();
    guest(&d, way, &["threads"])
        .assert_success()
        .line("threads ok=1");
}

#[test]
fn guest_killed_mid_copy_shared_memory() {
    killed_mid_copy(Way::Shm);
}

#[test]
fn guest_killed_mid_copy_socket() {
    killed_mid_copy(Way::Socket);
}

const INVALID_VALUE: u32 = 1;

/// A client that asked for shared memory.
fn shm_client(d: &Daemon) -> Client {
    let s = d.unix().connect(Duration::from_secs(5)).unwrap();
    let hello = Hello::new(vgpu_transport::BUILD_ID, caps::SHM | caps::BATCH, None);
    let c = Client::handshake(s, &hello, Duration::from_secs(10)).unwrap();
    c.set_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}

#[test]
fn region_descriptors_outside_the_region_are_refused() {
    let mut d = daemon();
    let mut c = shm_client(&d);
    assert!(c.has_shm(), "{:?}", c.shm_refused);
    let size = vgpu_transport::shm::REGION;
    for (offset, len) in [
        (size - 1, 2),
        (size, 1),
        (u64::MAX, 2),
        (0, u64::MAX),
        (1, size),
    ] {
        let err = c.call(&ImageStageShm { offset, len }).unwrap_err();
        assert!(
            matches!(err, vgpu_transport::CallError::Status(s) if s.code() == INVALID_VALUE),
            "offset {offset} len {len}: {err}"
        );
    }
    // Inside is fine, and the worker still serves.
    c.call(&ImageStageShm { offset: 0, len: 16 }).unwrap();
    c.call(&Ping {}).unwrap();
    drop(c);
    d.assert_alive();
    assert!(d
        .logs()
        .contains("outside the 16777216-byte shared-memory region"));
}

/// The handshake by hand, so the region can be one the worker must refuse.
fn attach_by_hand(
    d: &Daemon,
    fd: Option<OwnedFd>,
    size: u64,
) -> (vgpu_transport::Stream, u32, String) {
    let mut s = d.unix().connect(Duration::from_secs(5)).unwrap();
    s.set_timeouts(Some(Duration::from_secs(20))).unwrap();
    let hello = Hello::new(vgpu_transport::BUILD_ID, caps::SHM, None);
    let h = Header {
        op: HELLO_OP,
        ..Default::default()
    };
    let mut f = Vec::new();
    encode_frame(&mut f, h, &to_bytes(&hello)).unwrap();
    s.write_all(&f).unwrap();
    let reply = read_frame(&mut s).unwrap();
    assert_eq!(reply.header.status, 0);
    let mut f = Vec::new();
    let h = Header {
        op: SHM_ATTACH_OP,
        ..Default::default()
    };
    encode_frame(&mut f, h, &to_bytes(&ShmAttach { size, slot: 4096 })).unwrap();
    match &fd {
        Some(fd) => s.send_with_fd(&f, fd.as_raw_fd()).unwrap(),
        None => s.write_all(&f).unwrap(),
    }
    let r = read_frame(&mut s).unwrap();
    let why = from_bytes::<String>(&r.payload).unwrap_or_default();
    (s, r.header.status, why)
}

fn memfd(seal: bool, len: i64) -> OwnedFd {
    let flags = libc::MFD_CLOEXEC | if seal { libc::MFD_ALLOW_SEALING } else { 0 };
    // SAFETY: a fresh memfd, owned here.
    let fd = unsafe { OwnedFd::from_raw_fd(libc::memfd_create(c"t".as_ptr(), flags)) };
    // SAFETY: plain calls on our descriptor.
    unsafe {
        assert_eq!(libc::ftruncate(fd.as_raw_fd(), len), 0);
        if seal {
            assert_eq!(
                libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK),
                0
            );
        }
    }
    fd
}

#[test]
fn a_region_that_could_shrink_or_is_too_small_is_refused() {
    let mut d = daemon();
    // Not sealed: the guest could truncate it under the worker (SIGBUS).
    let (mut s, st, why) = attach_by_hand(&d, Some(memfd(false, 1 << 20)), 1 << 20);
    assert_ne!(st, 0);
    assert!(why.contains("F_SEAL_SHRINK"), "{why}");
    // The session goes on over the socket.
    let mut f = Vec::new();
    let h = Header {
        op: Ping::OP,
        seq: 1,
        ..Default::default()
    };
    encode_frame(&mut f, h, &to_bytes(&Ping {})).unwrap();
    s.write_all(&f).unwrap();
    let r = read_frame(&mut s).unwrap();
    assert_eq!((r.header.seq, r.header.status), (1, 0));
    // Sealed, but smaller than announced.
    let (_s, st, why) = attach_by_hand(&d, Some(memfd(true, 4096)), 1 << 20);
    assert_ne!(st, 0);
    assert!(why.contains("announced"), "{why}");
    // A good region the guest then tries to shrink and lets go of: the
    // seal refuses the shrink, and the worker's mapping stays whole.
    let good = memfd(true, 1 << 20);
    let dup = good.try_clone().unwrap();
    let (mut s, st, why) = attach_by_hand(&d, Some(dup), 1 << 20);
    assert_eq!(st, 0, "{why}");
    // SAFETY: a plain call on our descriptor.
    assert_ne!(unsafe { libc::ftruncate(good.as_raw_fd(), 0) }, 0);
    drop(good);
    let mut f = Vec::new();
    let h = Header {
        op: ImageStageShm::OP,
        seq: 1,
        ..Default::default()
    };
    let last = ImageStageShm {
        offset: (1 << 20) - 16,
        len: 16,
    };
    encode_frame(&mut f, h, &to_bytes(&last)).unwrap();
    s.write_all(&f).unwrap();
    let r = read_frame(&mut s).unwrap();
    assert_eq!((r.header.seq, r.header.status), (1, 0));
    // No descriptor at all.
    let (_s, st, why) = attach_by_hand(&d, None, 1 << 20);
    assert_ne!(st, 0);
    assert!(why.contains("descriptor"), "{why}");
    d.assert_alive();
}
