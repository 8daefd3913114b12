//! The wire is hostile: malformed input gets an error reply or a closed
//! connection, and never disturbs another guest.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vgpu_test_support::{connect, hexs, Daemon, TempDir};
use vgpu_transport::codec::to_bytes;
use vgpu_transport::frame::{read_frame, write_frame, Header};
use vgpu_transport::proto::{
    refusal, CtxCreate, Flush, Hello, LaunchKernel, MemGetInfo, Ping, HELLO_OP, PROTOCOL_VERSION,
    STATUS_BAD_REQUEST, STATUS_UNKNOWN_OP,
};
use vgpu_transport::{Call, Client, Endpoint, HandshakeError, Stream};

/// xorshift: reproducible "random" bytes without a dependency.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn raw(ep: &Endpoint) -> Stream {
    let s = ep.connect(Duration::from_secs(5)).unwrap();
    s.set_timeouts(Some(Duration::from_secs(15))).unwrap();
    s
}

/// After abuse the host must either answer (error status) or close; reads
/// until EOF / error and returns what came back.
fn drain(mut s: Stream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        assert!(
            Instant::now() < deadline,
            "host neither answered nor closed"
        );
    }
}

/// The raw stream of an admitted guest, for writing garbage to its worker.
fn into_stream(c: Client) -> Stream {
    // SAFETY: dup of a descriptor the client owns; the copy is ours alone.
    let fd = unsafe { libc::dup(c.stream().as_raw_fd()) };
    assert!(fd >= 0);
    drop(c);
    // SAFETY: `fd` is a fresh, connected socket owned by nobody else.
    unsafe { Stream::from_raw_fd(fd) }.unwrap()
}

fn shutdown_write(s: &Stream) {
    // SAFETY: shutdown on a socket we own.
    unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) };
}

fn admitted(ep: &Endpoint) -> Client {
    connect(ep, None).expect("handshake")
}

#[test]
fn hostile_input_never_disturbs_a_well_behaved_guest() {
    let d = Daemon::start(&[]);
    let ep = d.unix().clone();

    // The well-behaved guest calls continuously through all the abuse.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let good = {
        let (ep, stop, calls) = (ep.clone(), stop.clone(), calls.clone());
        std::thread::spawn(move || {
            let mut c = admitted(&ep);
            let ctx = c
                .call(&CtxCreate {
                    device: 0,
                    flags: 0,
                })
                .unwrap();
            while !stop.load(Ordering::SeqCst) {
                c.call(&Ping {}).expect("good guest: ping");
                c.call(&MemGetInfo { ctx }).expect("good guest: mem info");
                calls.fetch_add(1, Ordering::SeqCst);
            }
            c
        })
    };

    // 1. Random bytes instead of a handshake.
    for seed in 1..6u64 {
        let mut s = raw(&ep);
        let _ = s.write_all(&noise(seed, 64 + seed as usize * 100));
        drain(s);
    }
    // 2. Random bytes after a successful handshake (straight into a worker).
    for seed in 10..15u64 {
        let c = admitted(&ep);
        let mut s = into_stream(c);
        let _ = s.write_all(&noise(seed, 5000));
        drain(s);
    }
    // 3. Truncated frames: a partial header, and a header promising more
    //    than is sent, before and after the handshake.
    for admitted_first in [false, true] {
        for cut in [5usize, 16 + 3] {
            let mut s = if admitted_first {
                into_stream(admitted(&ep))
            } else {
                raw(&ep)
            };
            let h = Header {
                op: if admitted_first { 2 } else { HELLO_OP },
                len: 0,
                ..Default::default()
            };
            let mut b = h.to_bytes().to_vec();
            b[0..4].copy_from_slice(&100u32.to_le_bytes());
            b.extend_from_slice(&[0u8; 20]);
            let _ = s.write_all(&b[..cut]);
            shutdown_write(&s);
            drain(s);
        }
    }
    // 4. A header claiming a 4 GiB payload, before and after the handshake.
    for admitted_first in [false, true] {
        let mut s = if admitted_first {
            into_stream(admitted(&ep))
        } else {
            raw(&ep)
        };
        let mut b = Header {
            op: if admitted_first { 2 } else { HELLO_OP },
            ..Default::default()
        }
        .to_bytes();
        b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let _ = s.write_all(&b);
        let back = drain(s);
        // Either closed, or one refusal frame: never a success.
        if back.len() >= 16 {
            let st = u32::from_le_bytes([back[12], back[13], back[14], back[15]]);
            assert_ne!(st, 0);
        }
    }
    // 5. Unknown ops and undecodable payloads: error replies, session lives.
    {
        let mut c = admitted(&ep);
        for op in [0u16, 999, 0xffff, HELLO_OP] {
            let f = c.round_trip(op, b"whatever").unwrap();
            assert_eq!(f.header.status, STATUS_UNKNOWN_OP, "op {op}");
            assert!(f.payload.is_empty());
        }
        for (op, payload) in [
            (16u16, vec![1u8]),
            (16, noise(3, 40)),
            (24, vec![]),
            (3, vec![0]),
            (4, noise(4, 15)),
        ] {
            let f = c.round_trip(op, &payload).unwrap();
            assert_eq!(f.header.status, STATUS_BAD_REQUEST, "op {op}");
        }
        // A deferred op is never answered, even undecodable: its refusal
        // waits for the next collecting call. Sent as a round trip, it is
        // refused without running.
        c.queue_raw(LaunchKernel::OP, &[1, 2, 3]).unwrap();
        let f = c.round_trip(Flush::OP, &[]).unwrap();
        assert_eq!(f.header.status, STATUS_BAD_REQUEST);
        let launch = to_bytes(&LaunchKernel::default());
        let f = c.round_trip(LaunchKernel::OP, &launch).unwrap();
        assert_eq!(f.header.status, STATUS_BAD_REQUEST);
        c.call(&Flush {}).unwrap();
        c.call(&Ping {}).unwrap();
    }
    // 6. Wrong protocol version and wrong magic.
    {
        let mut h = Hello::new(vgpu_transport::BUILD_ID, 0, None);
        h.version = PROTOCOL_VERSION + 7;
        match Client::handshake(raw(&ep), &h, Duration::from_secs(5)) {
            Err(HandshakeError::Refused(code, why)) => {
                assert_eq!(code, refusal::VERSION_MISMATCH);
                assert!(why.contains("protocol version"), "{why}");
            }
            other => panic!("{:?}", other.err()),
        }
        let mut h = Hello::new(vgpu_transport::BUILD_ID, 0, None);
        h.magic = *b"NOPE";
        assert!(matches!(
            Client::handshake(raw(&ep), &h, Duration::from_secs(5)),
            Err(HandshakeError::Refused(refusal::BAD_MAGIC, _))
        ));
        // A call before the handshake.
        let mut s = raw(&ep);
        write_frame(
            &mut s,
            Header {
                op: 3,
                ..Default::default()
            },
            &[],
        )
        .unwrap();
        let f = read_frame(&mut s).unwrap();
        assert_eq!(f.header.status, refusal::BAD_MAGIC);
    }
    // 7. Many connections at once, abandoned half-way.
    let mut held = Vec::new();
    for i in 0..20u64 {
        let mut s = raw(&ep);
        let _ = s.write_all(&noise(100 + i, 7));
        held.push(s);
    }
    // A new guest is still admitted promptly while those hang around.
    let t = Instant::now();
    admitted(&ep).call(&Ping {}).unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    drop(held);

    let before = calls.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    let mut c = good.join().expect("the good guest failed");
    assert!(calls.load(Ordering::SeqCst) > before, "good guest stalled");
    c.call(&Ping {}).unwrap();
    assert!(d.child.is_some());
    assert!(!d.logs().contains("panicked"), "{}", d.logs());
}

#[test]
fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let d = Daemon::start(&[]);
    let mut s = raw(d.unix());
    let t = Instant::now();
    // The refusal names the deadline (one for the whole handshake).
    let f = read_frame(&mut s).expect("a refusal");
    assert_eq!(f.header.status, refusal::TIMED_OUT);
    let e = t.elapsed();
    assert!(
        e >= Duration::from_millis(2500) && e < Duration::from_secs(8),
        "{e:?}"
    );
    assert!(drain(s).is_empty());
    admitted(d.unix()).call(&Ping {}).unwrap();
}

#[test]
fn tcp_requires_the_token() {
    let tmp = TempDir::new("tok");
    let tok = tmp.0.join("token");
    std::fs::write(&tok, "s3cret-token\n").unwrap();
    // A token file others may read is refused (tests/tenancy.rs).
    std::fs::set_permissions(&tok, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let tok_arg = tok.display().to_string();
    let d = Daemon::start(&["--listen", "tcp:127.0.0.1:0", "--token-file", &tok_arg]);
    let tcp = d.endpoints[1].clone();
    assert!(matches!(tcp, Endpoint::Tcp(_)));
    for bad in [None, Some("wrong"), Some("s3cret-toke")] {
        match connect(&tcp, bad) {
            Err(HandshakeError::Refused(code, _)) => assert_eq!(code, refusal::BAD_TOKEN),
            Err(e) => panic!("{bad:?}: {e}"),
            Ok(_) => panic!("{bad:?} admitted"),
        }
    }
    let mut c = connect(&tcp, Some("s3cret-token")).unwrap();
    c.call(&Ping {}).unwrap();
    // Unix peers are checked by credentials, not the token.
    d.connect().call(&Ping {}).unwrap();
    // The token never reaches a worker's command line.
    for (pid, _) in d.workers() {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let hay = String::from_utf8_lossy(&cmd).to_string();
        assert!(!hay.contains("s3cret"), "{hay}");
        assert!(!hay.contains(&hexs(b"s3cret")), "{hay}");
    }
}
