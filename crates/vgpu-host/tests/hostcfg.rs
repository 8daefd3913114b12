//! Host configurations end to end, over the raw protocol: the software GPU's
//! profiles (`vgpu host --profile`), the host's device selection
//! (`--devices`), peer access and peer copies between two devices of one
//! guest, what the inventory masks, and the cold start (the handshake
//! answered at once, the inventory when the driver is ready).
//!
//! Every test here drives the software GPU's profiles or knobs, so each one
//! first asks [`requires_software_gpu`] (a real driver has neither).

use cuda_types::cuda::{CUdevice_attribute as A, CUresult};
use std::time::{Duration, Instant};
use vgpu_host::worker::inventory::MASKED;
use vgpu_test_support::{connect, expected, requires_software_gpu, Daemon};
use vgpu_transport::codec::Bytes;
use vgpu_transport::proto::{
    CtxDisablePeerAccess, CtxEnablePeerAccess, Flush, GetInventory, Inventory, MemAlloc,
    MemGetInfo, MemcpyDtoH, MemcpyHtoD, MemcpyPeer, MemcpyPeerAsync, PrimaryCtxRetain,
    StreamCreate, StreamSynchronize,
};
use vgpu_transport::{CallError, Client, Status};

fn inventory(c: &mut Client) -> Inventory {
    c.call(&GetInventory {}).expect("inventory")
}

#[track_caller]
fn status<T: std::fmt::Debug>(r: Result<T, CallError>) -> Status {
    match r {
        Err(CallError::Status(s)) => s,
        other => panic!("expected an error status, got {other:?}"),
    }
}

fn cuda(r: CUresult) -> Status {
    Status::Cuda(r)
}

fn attr(d: &vgpu_transport::proto::DeviceInfo, a: A) -> Option<i32> {
    d.attributes
        .iter()
        .find(|(k, _)| *k == a.0 as i32)
        .map(|&(_, v)| v)
}

fn uuids(inv: &Inventory) -> Vec<[u8; 16]> {
    inv.devices.iter().map(|d| d.uuid).collect()
}

/// Every profile's devices, driver version and board reach the guest as
/// published (the expectations are the test harness's own table).
#[test]
fn every_profile_reaches_the_inventory() {
    if !requires_software_gpu("profiles are the software GPU's") {
        return;
    }
    for h in expected::HOSTS {
        let d = Daemon::start(&["--driver", "emulated", "--profile", h.profile]);
        let inv = inventory(&mut d.connect());
        assert_eq!(inv.driver_kind, "emulated", "{}", h.profile);
        assert_eq!(
            inv.cuda_driver_version, h.cuda_driver_version,
            "{}",
            h.profile
        );
        let major: u32 = inv
            .system_driver_version
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(major, h.nvidia_major, "{}", h.profile);
        assert_eq!(inv.devices.len(), h.devices, "{}", h.profile);
        for dev in &inv.devices {
            assert_eq!(dev.name, h.name, "{}", h.profile);
            assert_eq!(dev.nvml_cc, h.cc, "{}", h.profile);
            let cc = (
                attr(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).unwrap(),
                attr(dev, A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).unwrap(),
            );
            assert_eq!(cc, h.cc, "{}", h.profile);
        }
        let mut u = uuids(&inv);
        u.dedup();
        assert_eq!(u.len(), h.devices, "{}: devices share a UUID", h.profile);
    }
}

/// A 12.2 driver does not know the attributes CUDA added after it: they are
/// refused by the driver and so absent from the inventory.
#[test]
fn an_old_driver_lacks_newer_attributes() {
    if !requires_software_gpu("profiles are the software GPU's") {
        return;
    }
    let old = Daemon::start(&["--driver", "emulated", "--profile", "h100-cuda12.2"]);
    let new = Daemon::start(&["--driver", "emulated"]);
    let (old, new) = (inventory(&mut old.connect()), inventory(&mut new.connect()));
    let pci_id = A::CU_DEVICE_ATTRIBUTE_GPU_PCI_DEVICE_ID;
    assert_eq!(attr(&old.devices[0], pci_id), None);
    assert_eq!(attr(&new.devices[0], pci_id), Some(0x2331_10DE));
    // What 12.2 knows is there on both.
    let numa = A::CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID;
    assert!(attr(&old.devices[0], numa).is_some());
    assert!(attr(&new.devices[0], numa).is_some());
}

#[test]
fn an_unknown_profile_is_refused_at_startup() {
    if !requires_software_gpu("profiles are the software GPU's") {
        return;
    }
    let out = std::process::Command::new(&vgpu_test_support::artifacts().vgpu)
        .args([
            "host",
            "--listen",
            "unix:/nonexistent/s",
            "--driver",
            "emulated",
        ])
        .args(["--profile", "h100"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no such profile") && err.contains("h100-cuda12.2") && err.contains("2x-h100"),
        "{err}"
    );
}

/// `--devices` picks and orders the host's devices, by ordinal or UUID
/// prefix, on the two-device profile.
#[test]
fn devices_select_and_order_host_devices() {
    if !requires_software_gpu("the two-device host is a software GPU profile") {
        return;
    }
    let two = ["--driver", "emulated", "--profile", "2x-h100"];
    let all = uuids(&inventory(&mut Daemon::start(&two).connect()));
    assert_eq!(all.len(), 2);
    let with = |sel: &str| {
        let args: Vec<&str> = two.iter().copied().chain(["--devices", sel]).collect();
        let d = Daemon::start(&args);
        let u = uuids(&inventory(&mut d.connect()));
        (d, u)
    };
    assert_eq!(with("1,0").1, vec![all[1], all[0]]);
    assert_eq!(with("1").1, vec![all[1]]);
    let prefix = format!("GPU-{}", vgpu_test_support::hexs(&all[1][..4]));
    assert_eq!(with(&prefix).1, vec![all[1]]);
    // The driver's rule: the list ends at an entry naming no device.
    let (d, u) = with("0,7");
    assert_eq!(u, vec![all[0]]);
    d.wait_log(
        &["CUDA_VISIBLE_DEVICES=0,7", "only the first 1 of 2"],
        Duration::from_secs(5),
    );
    // Naming none at all: the driver has no device, the guest is told so.
    let (d, _) = {
        let args: Vec<&str> = two.iter().copied().chain(["--devices", "5"]).collect();
        (Daemon::start(&args), ())
    };
    let mut c = d.connect();
    assert_eq!(status(c.call(&GetInventory {})), Status::HOST_ERROR);
    d.wait_log(
        &["driver unavailable", "cuInit failed"],
        Duration::from_secs(5),
    );
}

#[test]
fn a_malformed_device_list_is_refused_by_the_cli() {
    let out = std::process::Command::new(&vgpu_test_support::artifacts().vgpu)
        .args([
            "host",
            "--listen",
            "unix:/nonexistent/s",
            "--devices",
            "0,zero",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`zero`") && err.contains("UUID"), "{err}");
}

/// The inventory's peer links, peer access between the two devices'
/// contexts with the driver's errors, and peer copies (synchronous and on a
/// stream) that the worker range-checks like every copy.
#[test]
fn peer_access_and_copies_between_two_devices() {
    if !requires_software_gpu("the two-device host is a software GPU profile") {
        return;
    }
    let d = Daemon::start(&["--driver", "emulated", "--profile", "2x-h100"]);
    let mut c = d.connect();
    let inv = inventory(&mut c);
    for (i, dev) in inv.devices.iter().enumerate() {
        assert_eq!(dev.peers.len(), 1, "{:?}", dev.peers);
        let p = &dev.peers[0];
        assert_eq!(p.peer as usize, 1 - i);
        assert!(p.can_access);
        // ACCESS_SUPPORTED yes, NATIVE_ATOMIC_SUPPORTED no (PCIe).
        assert!(p.attributes.contains(&(2, 1)), "{:?}", p.attributes);
        assert!(p.attributes.contains(&(3, 0)), "{:?}", p.attributes);
    }
    let c0 = c.call(&PrimaryCtxRetain { device: 0 }).unwrap();
    let c1 = c.call(&PrimaryCtxRetain { device: 1 }).unwrap();
    assert_ne!(c0, c1);

    let enable =
        |c: &mut Client, ctx, peer, flags| c.call(&CtxEnablePeerAccess { ctx, peer, flags });
    enable(&mut c, c0, c1, 0).unwrap();
    assert_eq!(
        status(enable(&mut c, c0, c1, 0)),
        cuda(CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED)
    );
    // A device is not its own peer; flags must be 0; the other way round is
    // a separate grant.
    assert_eq!(
        status(enable(&mut c, c0, c0, 0)),
        cuda(CUresult::CUDA_ERROR_INVALID_DEVICE)
    );
    assert_eq!(
        status(enable(&mut c, c1, c0, 1)),
        cuda(CUresult::CUDA_ERROR_INVALID_VALUE)
    );
    enable(&mut c, c1, c0, 0).unwrap();
    c.call(&CtxDisablePeerAccess { ctx: c0, peer: c1 }).unwrap();
    assert_eq!(
        status(c.call(&CtxDisablePeerAccess { ctx: c0, peer: c1 })),
        cuda(CUresult::CUDA_ERROR_PEER_ACCESS_NOT_ENABLED)
    );
    assert_eq!(
        status(c.call(&CtxDisablePeerAccess {
            ctx: c0,
            peer: 0x1234
        })),
        cuda(CUresult::CUDA_ERROR_INVALID_CONTEXT)
    );

    // Memory is per device: what device 0 allocates leaves device 1 alone.
    let (free1, total1) = c.call(&MemGetInfo { ctx: c1 }).unwrap();
    const N: u64 = 3 << 20;
    let a = c.call(&MemAlloc { ctx: c0, size: N }).unwrap();
    let b = c.call(&MemAlloc { ctx: c1, size: N }).unwrap();
    let (free0_after, _) = c.call(&MemGetInfo { ctx: c0 }).unwrap();
    assert_eq!(
        c.call(&MemGetInfo { ctx: c1 }).unwrap(),
        (free1 - (4 << 20), total1)
    );
    assert!(free0_after < total1);

    let data: Vec<u8> = (0..N).map(|i| (i * 7 % 251) as u8).collect();
    c.call(&MemcpyHtoD {
        ctx: c0,
        dst: a,
        data: Bytes(data.clone()),
    })
    .unwrap();
    // Without peer access enabled, as the driver allows.
    c.call(&MemcpyPeer {
        ctx: c1,
        dst: b,
        dst_ctx: c1,
        src: a,
        src_ctx: c0,
        size: N,
    })
    .unwrap();
    let back = c
        .call(&MemcpyDtoH {
            ctx: c1,
            src: b,
            size: N,
        })
        .unwrap();
    assert!(back.0 == data, "peer copy corrupted the data");

    // On a stream of device 0, back the other way, offset by one byte.
    let s = c
        .call(&StreamCreate {
            ctx: c0,
            flags: 0,
            priority: 0,
        })
        .unwrap();
    c.call(&MemcpyPeerAsync {
        ctx: c0,
        stream: s,
        dst: a,
        dst_ctx: c0,
        src: b + 1,
        src_ctx: c1,
        size: N - 1,
    })
    .unwrap();
    c.call(&StreamSynchronize { stream: s }).unwrap();
    let back = c
        .call(&MemcpyDtoH {
            ctx: c0,
            src: a,
            size: N - 1,
        })
        .unwrap();
    assert!(back.0 == data[1..], "async peer copy corrupted the data");

    // Past the end of the source: refused before the driver sees it.
    let past = MemcpyPeer {
        ctx: c1,
        dst: b,
        dst_ctx: c1,
        src: a + 1,
        src_ctx: c0,
        size: N,
    };
    assert_eq!(
        status(c.call(&past)),
        cuda(CUresult::CUDA_ERROR_INVALID_VALUE)
    );
    c.call(&Flush {}).unwrap();
}

/// One device has no peers to list.
#[test]
fn a_single_device_has_no_peers() {
    let d = Daemon::start(&[]);
    let inv = inventory(&mut d.connect());
    assert!(inv
        .devices
        .iter()
        .all(|dev| dev.peers.len() == inv.devices.len() - 1));
}

/// Whatever the driver says, masked attributes read 0 in the inventory; the
/// software GPU says 1 for several (it implements them itself).
#[test]
fn masked_attributes_read_zero() {
    let d = Daemon::start(&[]);
    let inv = inventory(&mut d.connect());
    let dev = &inv.devices[0];
    for (a, _) in MASKED {
        if let Some(v) = attr(dev, *a) {
            assert_eq!(v, 0, "{a:?}");
        }
    }
    if !requires_software_gpu("which attributes the software GPU sets") {
        return;
    }
    for a in [
        A::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY,
        A::CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED,
    ] {
        assert_eq!(attr(dev, a), Some(0), "{a:?}");
    }
    // Not masked: what the guest can use stays as the driver says.
    assert_eq!(
        attr(dev, A::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED),
        Some(1)
    );
    assert_eq!(
        attr(dev, A::CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED),
        Some(1)
    );
    // The shim forwards the tensor map encoders: TMA is a compute
    // capability 9.0 feature.
    let hopper = expected::software_host().cc.0 >= 9;
    assert_eq!(
        attr(dev, A::CU_DEVICE_ATTRIBUTE_TENSOR_MAP_ACCESS_SUPPORTED),
        Some(i32::from(hopper))
    );
}

/// A cold host: the handshake comes back at once, the inventory when the
/// driver has initialized (here 3 s, the software GPU's knob).
#[test]
fn the_handshake_does_not_wait_for_the_driver() {
    if !requires_software_gpu("the init delay is the software GPU's knob") {
        return;
    }
    let d = Daemon::start_with_env(&[], &[("VGPU_EMU_INIT_DELAY_MS", "3000")]);
    let t = Instant::now();
    let mut c = connect(d.unix(), None).expect("handshake");
    let handshake = t.elapsed();
    assert!(
        handshake < Duration::from_millis(1500),
        "handshake took {handshake:?}"
    );
    let inv = inventory(&mut c);
    let total = t.elapsed();
    assert!(
        total >= Duration::from_millis(2900),
        "inventory after {total:?}"
    );
    assert_eq!(inv.devices.len(), 1);
    d.wait_log(&["driver initialized in 3."], Duration::from_secs(5));
}
