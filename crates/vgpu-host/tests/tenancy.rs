//! Many guests on one host (docs/security.md): admission under slow or
//! oversized handshakes, guests as principals with limits counted over all
//! their connections, the guests directory read at run time.
//! The real `vgpu` daemon with the software GPU; `vgpu_transport::Client`
//! as guest.

use cuda_types::cuda::CUresult;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use vgpu_test_support::{connect, Daemon, TempDir};
use vgpu_transport::codec::Bytes;
use vgpu_transport::codec::{from_bytes, to_bytes};
use vgpu_transport::frame::{read_frame, Header};
use vgpu_transport::proto::{
    refusal, CtxCreate, CtxSynchronize, EventCreate, GetInventory, Hello, LaunchKernel, MemAlloc,
    MemFree, MemGetInfo, ModuleGetFunction, ModuleLoadData, PrimaryCtxRetain, StreamCreate,
    HELLO_OP,
};
use vgpu_transport::{CallError, Client, Endpoint, HandshakeError, Status};

const MIB: u64 = 1 << 20;
const OUT_OF_MEMORY: Status = Status::Cuda(CUresult::CUDA_ERROR_OUT_OF_MEMORY);

fn ctx(c: &mut Client) -> u64 {
    c.call(&CtxCreate {
        device: 0,
        flags: 0,
    })
    .unwrap()
}

#[track_caller]
fn refused(r: Result<Client, HandshakeError>) -> (u32, String) {
    match r {
        Err(HandshakeError::Refused(code, why)) => (code, why),
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, was admitted"),
    }
}

/// A whole `Hello` frame as a guest sends it.
fn hello_bytes() -> Vec<u8> {
    let payload = to_bytes(&Hello::new(vgpu_transport::BUILD_ID, 0, None));
    let h = Header {
        len: payload.len() as u32,
        op: HELLO_OP,
        ..Default::default()
    };
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(&payload);
    v
}

/// 64 connections that send one byte of their `Hello` and then nothing
/// hold every pending place a peer may have; a guest that sends its
/// `Hello` at once is still admitted within a second (the oldest trickler
/// is evicted for it).
#[test]
fn drip_handshakes_do_not_lock_out_a_guest() {
    let d = Daemon::start_emulated();
    let first = hello_bytes();
    let mut drips = Vec::new();
    for _ in 0..64 {
        let mut s = d.unix().connect(Duration::from_secs(2)).unwrap();
        s.write_all(&first[..1]).unwrap();
        drips.push(s);
    }
    // Old enough to be evicted (admission::EVICT_AFTER).
    std::thread::sleep(Duration::from_millis(400));
    let t = Instant::now();
    let mut c = connect(d.unix(), None).expect("a well-behaved guest is admitted");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "admitted after {took:?}");
    c.call(&GetInventory {}).unwrap();
    d.wait_log(&["handshake evicted"], Duration::from_secs(5));
    drop(drips);
}

/// The handshake has one deadline for all of it, not one per read: a
/// `Hello` trickled a byte every 300 ms is refused after the deadline (3 s)
/// with a reason, though no single read waits long.
#[test]
fn trickled_hello_hits_the_overall_deadline() {
    let d = Daemon::start_emulated();
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    let bytes = hello_bytes();
    let t = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        for b in bytes {
            if rx.try_recv().is_ok() || w.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let f = read_frame(&mut s).expect("a refusal frame");
    let took = t.elapsed();
    let _ = tx.send(());
    writer.join().unwrap();
    assert_eq!(f.header.status, refusal::TIMED_OUT);
    let why: String = from_bytes(&f.payload).unwrap();
    assert!(why.contains("within 3 s"), "{why}");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

/// A header announcing a large `Hello` is refused from the header alone.
#[test]
fn oversized_hello_is_refused_unread() {
    let d = Daemon::start_emulated();
    let mut s = d.unix().connect(Duration::from_secs(2)).unwrap();
    let h = Header {
        len: 64 * 1024,
        op: HELLO_OP,
        ..Default::default()
    };
    s.write_all(&h.to_bytes()).unwrap();
    s.set_timeouts(Some(Duration::from_secs(5))).unwrap();
    let f = read_frame(&mut s).expect("a refusal frame");
    assert_eq!(f.header.status, refusal::BAD_MAGIC);
    let why: String = from_bytes(&f.payload).unwrap();
    assert!(why.contains("65536 bytes"), "{why}");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

fn guests_dir(files: &[(&str, &str)]) -> TempDir {
    let dir = TempDir::new("guests");
    for (name, text) in files {
        std::fs::write(dir.path().join(format!("{name}.conf")), text).unwrap();
    }
    dir
}

fn tcp(d: &Daemon) -> &Endpoint {
    d.endpoints
        .iter()
        .find(|e| matches!(e, Endpoint::Tcp(_)))
        .expect("a tcp listener")
}

/// 200 connections of one guest (this test's uid) get its limit of 4 and a
/// clear refusal each after that, while another guest (a token's name) is
/// served; closing one lets the next in.
#[test]
fn connections_are_capped_per_guest() {
    let dir = guests_dir(&[("other", "token = other-secret\n")]);
    let d = Daemon::start(&[
        "--driver",
        "emulated",
        "--guest-connections",
        "4",
        "--listen",
        "tcp:127.0.0.1:0",
        "--guests-dir",
        dir.path().to_str().unwrap(),
    ]);
    let mut admitted = Vec::new();
    let mut refusals = 0;
    for _ in 0..200 {
        match connect(d.unix(), None) {
            Ok(c) => admitted.push(c),
            Err(HandshakeError::Refused(code, why)) => {
                assert_eq!(code, refusal::LIMIT_REACHED, "{why}");
                assert!(why.contains("its limit"), "{why}");
                refusals += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((admitted.len(), refusals), (4, 196));
    d.wait_log(
        &["refused", "already has 4 connection(s), its limit"],
        Duration::from_secs(2),
    );
    // Another guest is served meanwhile.
    let mut other = connect(tcp(&d), Some("other-secret")).expect("another guest");
    other.call(&GetInventory {}).unwrap();
    d.wait_log(&["guest other"], Duration::from_secs(5));
    // A wrong token is no guest at all.
    let (code, _) = refused(connect(tcp(&d), Some("nobody")));
    assert_eq!(code, refusal::BAD_TOKEN);
    // One closes; once its worker is gone the next is admitted.
    drop(admitted.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    let next = loop {
        match connect(d.unix(), None) {
            Ok(c) => break c,
            Err(HandshakeError::Refused(refusal::LIMIT_REACHED, _)) => {
                assert!(Instant::now() < deadline, "no place after a close");
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("{e}"),
        }
    };
    drop(next);
}

/// A guest's memory limit holds over all its connections, and each sees
/// the whole guest's use: 64 MiB over four connections, not 64 MiB each.
#[test]
fn memory_limit_spans_a_guests_connections() {
    let d = Daemon::start(&["--driver", "emulated", "--guest-memory-mib", "64"]);
    let mut cs: Vec<Client> = (0..4).map(|_| d.connect()).collect();
    let ctxs: Vec<u64> = cs.iter_mut().map(ctx).collect();
    let a = cs[0]
        .call(&MemAlloc {
            ctx: ctxs[0],
            size: 40 * MIB,
        })
        .unwrap();
    // The others see it.
    let (free, total) = cs[1].call(&MemGetInfo { ctx: ctxs[1] }).unwrap();
    assert_eq!((free, total), (24 * MIB, 64 * MIB));
    let b = cs[1]
        .call(&MemAlloc {
            ctx: ctxs[1],
            size: 16 * MIB,
        })
        .unwrap();
    for (c, &ctx) in cs.iter_mut().zip(&ctxs).skip(2) {
        let r = c.call(&MemAlloc {
            ctx,
            size: 16 * MIB,
        });
        assert!(
            matches!(r, Err(CallError::Status(s)) if s == OUT_OF_MEMORY),
            "{r:?}"
        );
    }
    cs[1]
        .call(&MemFree {
            ctx: ctxs[1],
            ptr: b,
        })
        .unwrap();
    cs[2]
        .call(&MemAlloc {
            ctx: ctxs[2],
            size: 16 * MIB,
        })
        .unwrap();
    let _ = a;
    // A connection that goes away gives its share back.
    drop(cs.remove(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // cs[1] is the third connection now, with ctxs[2].
        let (free, _) = cs[1].call(&MemGetInfo { ctx: ctxs[2] }).unwrap();
        if free == 48 * MIB {
            break;
        }
        assert!(Instant::now() < deadline, "free stays {free}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Guest files are read when a connection arrives after the directory
/// changed: a token added at run time admits its guest with its limits;
/// object limits count over the guest's connections.
#[test]
fn guests_dir_is_reread_and_its_limits_apply() {
    let dir = guests_dir(&[("broken", "token = x\nnot a line\n")]);
    let d = Daemon::start(&[
        "--driver",
        "emulated",
        "--listen",
        "tcp:127.0.0.1:0",
        "--guests-dir",
        dir.path().to_str().unwrap(),
    ]);
    d.wait_log(
        &["broken.conf", "line 2", "ignored"],
        Duration::from_secs(5),
    );
    let (code, _) = refused(connect(tcp(&d), Some("late-secret")));
    assert_eq!(code, refusal::BAD_TOKEN);
    std::fs::write(
        dir.path().join("late.conf.tmp"),
        "token = late-secret\nmemory_mib = 32\nstreams = 2\nevents = 1\nconnections = 2\n",
    )
    .unwrap();
    std::fs::rename(
        dir.path().join("late.conf.tmp"),
        dir.path().join("late.conf"),
    )
    .unwrap();
    let mut a = connect(tcp(&d), Some("late-secret")).expect("admitted once its file exists");
    let mut b = connect(tcp(&d), Some("late-secret")).expect("second connection");
    let (code, why) = refused(connect(tcp(&d), Some("late-secret")));
    assert_eq!(code, refusal::LIMIT_REACHED, "{why}");
    assert!(why.contains("guest late"), "{why}");
    let inv = a.call(&GetInventory {}).unwrap();
    assert_eq!(inv.devices[0].total_mem, 32 * MIB);
    let (ca, cb) = (ctx(&mut a), ctx(&mut b));
    a.call(&StreamCreate {
        ctx: ca,
        flags: 0,
        priority: 0,
    })
    .unwrap();
    b.call(&StreamCreate {
        ctx: cb,
        flags: 0,
        priority: 0,
    })
    .unwrap();
    let r = a.call(&StreamCreate {
        ctx: ca,
        flags: 0,
        priority: 0,
    });
    assert!(
        matches!(r, Err(CallError::Status(s)) if s == OUT_OF_MEMORY),
        "{r:?}"
    );
    b.call(&EventCreate { ctx: cb, flags: 0 }).unwrap();
    let r = a.call(&EventCreate { ctx: ca, flags: 0 });
    assert!(
        matches!(r, Err(CallError::Status(s)) if s == OUT_OF_MEMORY),
        "{r:?}"
    );
    d.wait_log(&["limit of 2 Streams"], Duration::from_secs(2));
}

/// A kernel that never ends.
const SPIN_PTX: &str = r#"
.version 7.0
.target sm_80
.address_size 64

.visible .entry spin()
{
$L_top:
	bra.uni $L_top;
}
"#;

/// A guest holding 32 MiB with an endless kernel queued and sent; its
/// worker's pid.
fn spin(d: &Daemon, c: &mut Client) -> (u64, i32) {
    let ctx = c.call(&PrimaryCtxRetain { device: 0 }).unwrap();
    c.call(&MemAlloc {
        ctx,
        size: 32 * MIB,
    })
    .unwrap();
    let module = c
        .call(&ModuleLoadData {
            ctx,
            image: Bytes(SPIN_PTX.as_bytes().to_vec()),
        })
        .unwrap();
    let func = c
        .call(&ModuleGetFunction {
            module,
            name: "spin".into(),
        })
        .unwrap()
        .handle;
    c.call(&LaunchKernel {
        ctx,
        func,
        grid: [1, 1, 1],
        block: [1, 1, 1],
        ..Default::default()
    })
    .unwrap();
    c.flush_queued().unwrap();
    (ctx, d.worker_of(c.hello.session))
}

/// Waits until the guest's whole memory limit (`limit` MiB) is free again,
/// as another connection of the same guest sees it.
#[track_caller]
fn memory_comes_back(d: &Daemon, limit: u64) {
    let mut c = d.connect();
    let ctx = ctx(&mut c);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (free, total) = c.call(&MemGetInfo { ctx }).unwrap();
        assert_eq!(total, limit * MIB);
        if free == limit * MIB {
            return;
        }
        assert!(Instant::now() < deadline, "free stays {free}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[track_caller]
fn wait_gone(pid: i32, within: Duration) {
    let deadline = Instant::now() + within;
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "worker {pid} still there");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Past the kernel time limit the worker is ended: the guest's waiting
/// call fails (the shim answers CUDA_ERROR_DEVICE_UNAVAILABLE), the host
/// log says why, and the guest's memory is free again.
#[test]
fn a_runaway_kernel_ends_at_the_time_limit() {
    let d = Daemon::start(&[
        "--driver",
        "emulated",
        "--guest-memory-mib",
        "64",
        "--guest-kernel-time-ms",
        "500",
    ]);
    let mut c = d.connect();
    let (ctx, pid) = spin(&d, &mut c);
    let t = Instant::now();
    let r = c.call(&CtxSynchronize { ctx });
    assert!(matches!(r, Err(CallError::Transport(_))), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    d.wait_log(
        &["past the guest's kernel time limit of 500 ms"],
        Duration::from_secs(2),
    );
    wait_gone(pid, Duration::from_secs(5));
    memory_comes_back(&d, 64);
}

/// With no time limit (a real driver's default), a guest killed while its
/// endless kernel runs does not leave its worker behind: after the grace
/// period the worker is ended and the memory is back.
#[test]
fn an_endless_kernel_is_cleaned_up_after_the_guest_is_killed() {
    let d = Daemon::start(&[
        "--driver",
        "emulated",
        "--guest-memory-mib",
        "64",
        "--guest-kernel-time-ms",
        "0",
    ]);
    let mut c = d.connect();
    let (_, pid) = spin(&d, &mut c);
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    wait_gone(pid, Duration::from_secs(10));
    let line = d.wait_log(&["ending the worker"], Duration::from_secs(1));
    assert!(
        line.contains("the guest left while") || line.contains("the teardown has waited"),
        "{line}"
    );
    memory_comes_back(&d, 64);
}

/// 20,000 failing batched calls leave a bounded log: each log statement
/// writes a burst, and the rest is one "N more like this" line when the
/// worker ends. Names a guest sends cannot start a line of their own.
#[test]
fn a_flood_of_failing_calls_leaves_a_bounded_log() {
    use vgpu_transport::proto::{EventRecord, Flush};
    let d = Daemon::start_with_env(&["--driver", "emulated"], &[("VGPU_LOG", "info")]);
    let mut c = d.connect();
    for _ in 0..20_000 {
        c.call(&EventRecord {
            event: 0xdead_beef,
            stream: 0,
            flags: 0,
        })
        .unwrap();
    }
    assert!(c.call(&Flush {}).is_err());
    // A build id with a forged log line in it, in a refused handshake
    // (the refusal is logged with it).
    let mut h = Hello::new("x\n2026-01-01T00:00:00.000000Z ERROR forged line", 0, None);
    h.version += 7;
    let s = d.unix().connect(Duration::from_secs(2)).unwrap();
    let r = Client::handshake(s, &h, Duration::from_secs(5));
    assert!(matches!(
        r,
        Err(HandshakeError::Refused(refusal::VERSION_MISMATCH, _))
    ));
    d.wait_log(&["forged line"], Duration::from_secs(5));
    drop(c);
    d.wait_log(&["more like this", "batch.rs"], Duration::from_secs(10));
    let log = d.logs();
    let lines = log
        .lines()
        .filter(|l| l.contains("deferred EventRecord"))
        .count();
    assert!(lines <= 20, "{lines} lines about the failed calls");
    assert!(log.len() < 200_000, "{} bytes of log", log.len());
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00")),
        "a guest forged a log line"
    );
}

/// The host's own hardening: a token file every user may read is refused
/// at start; the socket's mode is set, not left to the umask; workers run
/// with no_new_privs and no core dumps.
#[test]
fn token_file_socket_mode_and_worker_privileges() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("hard");
    let tok = dir.path().join("token");
    std::fs::write(&tok, "secret\n").unwrap();
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(&vgpu_test_support::artifacts().vgpu)
        .args([
            "host",
            "--driver",
            "emulated",
            "--listen",
            "tcp:127.0.0.1:0",
        ])
        .arg("--token-file")
        .arg(&tok)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("chmod o-r"), "{err}");

    let d = Daemon::start(&["--driver", "emulated", "--socket-mode", "0660"]);
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let c = d.connect();
    let pid = d.worker_of(c.hello.session);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.lines().any(|l| l == "NoNewPrivs:\t1"), "{status}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(core.split_whitespace().nth(4), Some("0"), "{core}");
}

/// Guests that vanish while holding memory (the connection cut, as when a
/// guest is killed with SIGKILL): every worker goes, and the guest's whole
/// limit is free again — nothing leaks in the daemon's accounting.
fn kill_cycles(n: usize) {
    // Room for a few workers still exiting while the next guest allocates.
    let d = Daemon::start(&["--driver", "emulated", "--guest-memory-mib", "256"]);
    for i in 0..n {
        let mut c = d.connect();
        let ctx = ctx(&mut c);
        for _ in 0..2 {
            c.call(&MemAlloc {
                ctx,
                size: 16 * MIB,
            })
            .unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        }
        drop(c);
    }
    memory_comes_back(&d, 256);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.workers().len() > 1 {
        assert!(
            Instant::now() < deadline,
            "{} workers left",
            d.workers().len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killed_guests_leave_nothing_behind() {
    kill_cycles(20);
}

#[test]
#[ignore = "long (about 30 s on 2 cores): cargo test -p vgpu-host --test tenancy -- --ignored"]
fn killed_guests_leave_nothing_behind_1000_cycles() {
    kill_cycles(1000);
}

const FILL_PTX: &str = r#"
.version 7.0
.target sm_80
.address_size 64

.visible .entry fill(.param .u64 p, .param .u32 v)
{
	.reg .b32 %r<4>;
	.reg .b64 %rd<4>;
	ld.param.u64 %rd1, [p];
	ld.param.u32 %r1, [v];
	mov.u32 %r2, %tid.x;
	cvta.to.global.u64 %rd2, %rd1;
	mul.wide.u32 %rd3, %r2, 4;
	add.s64 %rd2, %rd2, %rd3;
	add.u32 %r3, %r1, %r2;
	st.global.u32 [%rd2], %r3;
	ret;
}
"#;

/// One stress thread's connection: its context and the fill kernel.
fn stress_session(ep: &Endpoint, token: &str) -> (Client, u64, u64) {
    // A guest (or the host) at its connection limit is refused until the
    // workers of its cut connections are gone: wait as a guest would.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut c = loop {
        match connect(ep, Some(token)) {
            Ok(c) => break c,
            Err(HandshakeError::Refused(refusal::LIMIT_REACHED, why)) => {
                assert!(Instant::now() < deadline, "{why}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{token}: {e}"),
        }
    };
    let ctx = c.call(&PrimaryCtxRetain { device: 0 }).unwrap();
    let module = c
        .call(&ModuleLoadData {
            ctx,
            image: Bytes(FILL_PTX.as_bytes().to_vec()),
        })
        .unwrap();
    let func = c
        .call(&ModuleGetFunction {
            module,
            name: "fill".into(),
        })
        .unwrap()
        .handle;
    (c, ctx, func)
}

/// `guests` principals (tokens over TCP) × `threads` connections each, for
/// `run`: allocations, copies checked byte for byte, launches checked
/// element by element, and connections cut while holding memory; at the
/// end every guest's whole limit is free again.
fn stress(guests: usize, threads: usize, run: Duration) {
    use vgpu_transport::proto::{MemcpyDtoH, MemcpyHtoD};
    let files: Vec<(String, String)> = (0..guests)
        .map(|g| {
            (
                format!("g{g}"),
                format!("token = tok-{g}\nmemory_mib = 256\n"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = guests_dir(&refs);
    let d = Daemon::start_with_env(
        &[
            "--driver",
            "emulated",
            "--listen",
            "tcp:127.0.0.1:0",
            "--guests-dir",
            dir.path().to_str().unwrap(),
        ],
        &[("VGPU_LOG", "info")],
    );
    let ep = tcp(&d).clone();
    let end = Instant::now() + run;
    let mut handles = Vec::new();
    for g in 0..guests {
        for t in 0..threads {
            let ep = ep.clone();
            handles.push(std::thread::spawn(move || {
                let token = format!("tok-{g}");
                let mut seed = (g * 131 + t * 7 + 1) as u64;
                let mut rnd = move || {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u32
                };
                let (mut c, mut ctx, mut func) = stress_session(&ep, &token);
                let mut ops = 0u64;
                while Instant::now() < end {
                    match rnd() % 3 {
                        0 => {
                            let n = 4096 + (rnd() % (1 << 20)) as usize;
                            let data: Vec<u8> = (0..n).map(|i| (i as u32 ^ rnd()) as u8).collect();
                            let p = c
                                .call(&MemAlloc {
                                    ctx,
                                    size: n as u64,
                                })
                                .unwrap();
                            c.call(&MemcpyHtoD {
                                ctx,
                                dst: p,
                                data: Bytes(data.clone()),
                            })
                            .unwrap();
                            let back = c
                                .call(&MemcpyDtoH {
                                    ctx,
                                    src: p,
                                    size: n as u64,
                                })
                                .unwrap();
                            assert!(back.0 == data, "guest {g} thread {t}: copy differs");
                            c.call(&MemFree { ctx, ptr: p }).unwrap();
                        }
                        1 => {
                            let v = rnd() % 1000;
                            let p = c.call(&MemAlloc { ctx, size: 1024 }).unwrap();
                            let mut params = p.to_le_bytes().to_vec();
                            params.extend_from_slice(&v.to_le_bytes());
                            c.call(&LaunchKernel {
                                ctx,
                                func,
                                grid: [1, 1, 1],
                                block: [256, 1, 1],
                                params: Bytes(params),
                                ..Default::default()
                            })
                            .unwrap();
                            c.call(&CtxSynchronize { ctx }).unwrap();
                            let back = c
                                .call(&MemcpyDtoH {
                                    ctx,
                                    src: p,
                                    size: 1024,
                                })
                                .unwrap();
                            for (i, w) in back.0.chunks(4).enumerate() {
                                let got = u32::from_le_bytes(w.try_into().unwrap());
                                assert_eq!(got, v + i as u32, "guest {g} thread {t}: element {i}");
                            }
                            c.call(&MemFree { ctx, ptr: p }).unwrap();
                        }
                        _ => {
                            // Cut while holding memory, as a killed guest.
                            c.call(&MemAlloc { ctx, size: 1 << 20 }).unwrap();
                            (c, ctx, func) = stress_session(&ep, &token);
                        }
                    }
                    ops += 1;
                }
                ops
            }));
        }
    }
    let ops: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("a stress thread failed"))
        .sum();
    assert!(ops > 0);
    for g in 0..guests {
        let mut c = connect(&ep, Some(&format!("tok-{g}"))).unwrap();
        let ctx = ctx(&mut c);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (free, total) = c.call(&MemGetInfo { ctx }).unwrap();
            assert_eq!(total, 256 * MIB);
            if free == total {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "guest {g}: {free} of {total} free"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn many_guests_stress_short() {
    stress(3, 2, Duration::from_secs(2));
}

#[test]
#[ignore = "long (16 guests x 8 threads, 30 s, 128 workers): cargo test -p vgpu-host --test tenancy -- --ignored"]
fn many_guests_stress_16x8() {
    stress(16, 8, Duration::from_secs(30));
}
