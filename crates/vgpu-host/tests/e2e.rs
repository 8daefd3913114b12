//! End-to-end: the real `vgpu` binary as daemon, the software GPU as driver,
//! `vgpu_transport::Client` as guest.

use cuda_types::cuda::CUresult;
use std::time::Duration;
use vgpu_test_support::{artifacts, connect, Daemon, TempDir};
use vgpu_transport::proto::{
    nvml_kind, CtxCreate, CtxDestroy, CtxSynchronize, GetInventory, MemGetInfo, NvmlAnswer,
    NvmlQuery, Ping, PrimaryCtxGetState, PrimaryCtxRelease, PrimaryCtxRetain,
};
use vgpu_transport::{CallError, Status};

const INVALID_CONTEXT: Status = Status::Cuda(CUresult::CUDA_ERROR_INVALID_CONTEXT);
const MIB: u64 = 1 << 20;

#[test]
fn inventory_nvml_and_contexts() {
    if !vgpu_test_support::requires_h100_pcie("the software GPU's log line and H100 PCIe numbers") {
        return;
    }
    let d = Daemon::start(&[]);
    let first = d.logs().lines().next().unwrap_or_default().to_string();
    assert!(
        first.contains("driver: emulated (software GPU, ") && first.contains("libvgpu_emu.so"),
        "first log line: {first}"
    );
    let mut c = d.connect();
    assert_eq!(c.hello.driver_kind, "emulated");
    c.call(&Ping {}).unwrap();

    let inv = c.call(&GetInventory {}).unwrap();
    assert_eq!(inv.driver_kind, "emulated");
    assert!(
        inv.cuda_driver_version >= 13000,
        "{}",
        inv.cuda_driver_version
    );
    assert!(!inv.system_driver_version.is_empty());
    assert_eq!(inv.devices.len(), 1);
    let dev = &inv.devices[0];
    assert_eq!(dev.name, "NVIDIA H100 PCIe");
    assert_eq!(dev.total_mem, 81559 * MIB);
    assert_ne!(dev.uuid, [0u8; 16]);
    let attr = |a: i32| {
        dev.attributes
            .iter()
            .find(|(k, _)| *k == a)
            .map(|(_, v)| *v)
    };
    assert_eq!(attr(75), Some(9), "CC major");
    assert_eq!(attr(76), Some(0), "CC minor");
    assert!(
        dev.attributes.len() > 100,
        "{} attributes",
        dev.attributes.len()
    );
    assert_eq!(dev.nvml_cc, (9, 0));
    assert!(!dev.host_pci_bus_id.is_empty());

    let m: NvmlAnswer = c
        .call(&NvmlQuery {
            device: 0,
            kind: nvml_kind::MEMORY,
            arg0: 0,
            arg1: 0,
        })
        .unwrap();
    assert_eq!(m.ints.len(), 3);
    assert_eq!(m.ints[0], 81559 * MIB);
    // A device that does not exist: an NVML error status, not a crash.
    match c.call(&NvmlQuery {
        device: 7,
        kind: nvml_kind::MEMORY,
        arg0: 0,
        arg1: 0,
    }) {
        Err(CallError::Status(s)) => assert!(matches!(s, Status::Nvml(_)), "{s}"),
        other => panic!("{other:?}"),
    }

    let ctx = c
        .call(&CtxCreate {
            device: 0,
            flags: 0,
        })
        .unwrap();
    assert_ne!(ctx, 0);
    let (free, total) = c.call(&MemGetInfo { ctx }).unwrap();
    assert_eq!(total, 81559 * MIB);
    assert!(free <= total && free > 0);
    c.call(&CtxSynchronize { ctx }).unwrap();
    c.call(&CtxDestroy { ctx }).unwrap();
    // Stale, bogus and foreign-kind handles are errors, and the session lives on.
    for bogus in [ctx, 0, 1, 0xdead_beef, ctx ^ 1] {
        match c.call(&MemGetInfo { ctx: bogus }) {
            Err(CallError::Status(s)) => assert_eq!(s, INVALID_CONTEXT, "{bogus:#x}"),
            other => panic!("{bogus:#x}: {other:?}"),
        }
    }
    match c.call(&CtxDestroy { ctx }) {
        Err(CallError::Status(s)) => assert_eq!(s, INVALID_CONTEXT),
        other => panic!("{other:?}"),
    }
    match c.call(&CtxCreate {
        device: 5,
        flags: 0,
    }) {
        Err(CallError::Status(s)) => {
            assert_eq!(s, Status::Cuda(CUresult::CUDA_ERROR_INVALID_DEVICE))
        }
        other => panic!("{other:?}"),
    }

    // Primary context: one stable handle per device within the session.
    let p1 = c.call(&PrimaryCtxRetain { device: 0 }).unwrap();
    let p2 = c.call(&PrimaryCtxRetain { device: 0 }).unwrap();
    assert_eq!(p1, p2);
    let (_, active) = c.call(&PrimaryCtxGetState { device: 0 }).unwrap();
    assert!(active);
    c.call(&MemGetInfo { ctx: p1 }).unwrap();
    c.call(&PrimaryCtxRelease { device: 0 }).unwrap();
    c.call(&PrimaryCtxRelease { device: 0 }).unwrap();
    match c.call(&PrimaryCtxRelease { device: 0 }) {
        Err(CallError::Status(s)) => assert_eq!(s, INVALID_CONTEXT),
        other => panic!("{other:?}"),
    }
    match c.call(&MemGetInfo { ctx: p1 }) {
        Err(CallError::Status(s)) => assert_eq!(s, INVALID_CONTEXT),
        other => panic!("{other:?}"),
    }
    c.call(&Ping {}).unwrap();
}

#[test]
fn disconnect_ends_the_worker_and_releases_its_contexts() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let session = c.hello.session;
    let pid = d.worker_of(session);
    c.call(&CtxCreate {
        device: 0,
        flags: 0,
    })
    .unwrap();
    c.call(&PrimaryCtxRetain { device: 0 }).unwrap();
    drop(c);
    d.wait_log(
        &[&format!(
            "session {session}: released 1 context(s), 1 primary"
        )],
        Duration::from_secs(10),
    );
    d.wait_log(
        &[
            &format!("session {session}: worker pid {pid}"),
            "exited with status 0",
        ],
        Duration::from_secs(10),
    );
    assert!(!d.workers().iter().any(|(p, _)| *p == pid));
}

#[test]
fn killing_a_worker_only_affects_its_guest() {
    let d = Daemon::start(&[]);
    let mut a = d.connect();
    let mut b = d.connect();
    assert_ne!(a.hello.session, b.hello.session);
    let ca = a
        .call(&CtxCreate {
            device: 0,
            flags: 0,
        })
        .unwrap();
    let cb = b
        .call(&CtxCreate {
            device: 0,
            flags: 0,
        })
        .unwrap();
    // Sessions are separate processes: a handle from one means nothing in
    // the other.
    match b.call(&MemGetInfo { ctx: ca }) {
        Err(CallError::Status(s)) => assert_eq!(s, INVALID_CONTEXT),
        other => panic!("{other:?}"),
    }
    let pa = d.worker_of(a.hello.session);
    // SAFETY: signalling a worker process of the daemon under test.
    assert_eq!(unsafe { libc::kill(pa, libc::SIGKILL) }, 0);
    match a.call(&MemGetInfo { ctx: ca }) {
        Err(CallError::Transport(_)) => {}
        other => panic!("call to a killed worker: {other:?}"),
    }
    b.call(&MemGetInfo { ctx: cb }).unwrap();
    d.wait_log(
        &[&format!("worker pid {pa}"), "killed by signal 9"],
        Duration::from_secs(10),
    );
    // The daemon still admits new guests.
    let mut c = d.connect();
    c.call(&Ping {}).unwrap();
    b.call(&CtxDestroy { ctx: cb }).unwrap();
}

#[test]
fn sigterm_stops_workers_and_removes_the_socket() {
    let mut d = Daemon::start(&[]);
    let mut c = d.connect();
    c.call(&Ping {}).unwrap();
    let pid = d.worker_of(c.hello.session);
    let sock = match d.unix() {
        vgpu_transport::Endpoint::Unix(p) => p.clone(),
        _ => unreachable!(),
    };
    assert!(sock.exists());
    let st = d.stop();
    assert!(st.success(), "{st:?}");
    assert!(!sock.exists(), "socket file left behind");
    assert!(c.call(&Ping {}).is_err());
    // The worker is gone (not merely a zombie of a live parent).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z") || stat.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker {pid} survived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exposed_tcp_without_token_is_refused_at_startup() {
    let out = std::process::Command::new(&artifacts().vgpu)
        .args(["host", "--listen", "tcp:0.0.0.0:0", "--driver", "emulated"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-file"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_driver_the_worker_cannot_load_is_a_refusal_not_a_hang() {
    let tmp = TempDir::new("drv");
    let lib = tmp.0.join("libvgpu_emu.so");
    std::fs::copy(&artifacts().emu, &lib).unwrap();
    let lib_arg = lib.display().to_string();
    let d = Daemon::start(&["--driver", &lib_arg]);
    d.connect().call(&Ping {}).unwrap();
    // Workers load the driver afresh; take it away from under them.
    std::fs::remove_file(&lib).unwrap();
    match connect(d.unix(), None) {
        Err(vgpu_transport::HandshakeError::Refused(code, why)) => {
            assert_eq!(code, vgpu_transport::proto::refusal::HOST_UNAVAILABLE);
            assert!(why.contains("libvgpu_emu.so"), "{why}");
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("admitted without a driver"),
    }
    d.wait_log(&["exited with status 1"], Duration::from_secs(10));
}

#[test]
fn a_vgpu_shim_is_never_used_as_the_driver() {
    // artifacts() fails the test when the shim is not built.
    let shim = &artifacts().cuda_shim;
    let out = std::process::Command::new(&artifacts().vgpu)
        .args(["host", "--listen", "unix:/nonexistent/s", "--driver"])
        .arg(shim)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a vgpu shim"), "{err}");
}

#[test]
fn every_nvml_kind_answers_with_an_nvml_status() {
    let d = Daemon::start(&[]);
    let mut c = d.connect();
    let mut answered = Vec::new();
    for kind in 1..=30u32 {
        let q = NvmlQuery {
            device: 0,
            kind,
            arg0: 0,
            arg1: 0,
        };
        match c.call(&q) {
            Ok(a) => {
                answered.push(kind);
                let want_processes = matches!(
                    kind,
                    nvml_kind::COMPUTE_PROCESSES | nvml_kind::GRAPHICS_PROCESSES
                );
                assert!(want_processes || !a.ints.is_empty(), "kind {kind}: {a:?}");
            }
            // An nvmlReturn_t (the emulator may not have every getter), never
            // a protocol-level failure.
            Err(CallError::Status(s)) => assert!(matches!(s, Status::Nvml(_)), "kind {kind}: {s}"),
            Err(e) => panic!("kind {kind}: {e}"),
        }
    }
    for must in [
        nvml_kind::MEMORY,
        nvml_kind::TEMPERATURE,
        nvml_kind::UTILIZATION,
        nvml_kind::COMPUTE_PROCESSES,
    ] {
        assert!(
            answered.contains(&must),
            "kind {must} failed; answered {answered:?}"
        );
    }
    match c.call(&NvmlQuery {
        device: 0,
        kind: 999,
        arg0: 0,
        arg1: 0,
    }) {
        Err(CallError::Status(s)) => {
            assert_eq!(
                s,
                Status::Nvml(cuda_types::nvml::nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT)
            )
        }
        other => panic!("{other:?}"),
    }
    c.call(&Ping {}).unwrap();
}
