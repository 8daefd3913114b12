//! One thread waiting in a synchronizing call must not hold up the calls
//! of the others (docs/call-path.md, "Sending").
//!
//! A fake host withholds the reply to thread A's `StreamSynchronize` until
//! it has received launches and a `Ping` from thread B, sent after A's
//! request was on the wire. If A kept the session locked while it waits,
//! B could not queue a launch, the host would never see them, and the
//! host's deadline would answer A with an error instead: the test fails,
//! it does not hang, and nothing in it depends on timing.

use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::Duration;
use vgpu_guest::client::{self, GuestError};
use vgpu_transport::conn::{accept_hello, send_hello_reply, send_ok, send_reply, Admission};
use vgpu_transport::frame::{read_frame, Header, FLAG_NO_REPLY};
use vgpu_transport::proto::{
    GetInventory, HelloReply, Inventory, LaunchKernel, Ping, StreamSynchronize, PROTOCOL_VERSION,
};
use vgpu_transport::{Call, Peer, Stream};

/// Launches thread B queues while A waits.
const LAUNCHES: usize = 100;
/// How long the host waits for B before answering A with a failure.
const DEADLINE: Duration = Duration::from_secs(20);
/// The status the host answers A with when B's calls never came.
const STALLED: u32 = 999;

/// Serves one connection; tells `sync_seen` once A's synchronize arrived.
fn fake_host(listener: UnixListener, sync_seen: mpsc::Sender<()>) -> Result<(), String> {
    let (s, _) = listener.accept().map_err(|e| e.to_string())?;
    let mut s = Stream::Unix(s);
    let peer = Peer::Unix {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let adm = Admission {
        build_id: "test",
        token: None,
        allowed_uids: &[],
    };
    accept_hello(&mut s, &peer, &adm)?;
    let hello = HelloReply {
        version: PROTOCOL_VERSION,
        driver_kind: "emulated".into(),
        ..Default::default()
    };
    send_hello_reply(&mut s, &hello).map_err(|e| e.to_string())?;
    s.set_timeouts(Some(DEADLINE)).map_err(|e| e.to_string())?;
    let mut withheld: Option<Header> = None;
    let mut launches = 0;
    loop {
        let f = match read_frame(&mut s) {
            Ok(f) => f,
            Err(e) => {
                // B's calls never came: answer A, so that it fails.
                if let Some(h) = withheld.take() {
                    let _ = send_reply(&mut s, &h, STALLED, &[]);
                }
                return Err(format!("host: {e}"));
            }
        };
        match f.header.op {
            <GetInventory as Call>::OP => send_ok(&mut s, &f.header, &Inventory::default()),
            <StreamSynchronize as Call>::OP => {
                withheld = Some(f.header);
                let _ = sync_seen.send(());
                Ok(())
            }
            <LaunchKernel as Call>::OP if f.header.flags & FLAG_NO_REPLY != 0 => {
                launches += usize::from(withheld.is_some());
                Ok(())
            }
            <Ping as Call>::OP => {
                // In order: A's answer first, then B's.
                let Some(a) = withheld.take() else {
                    return Err("Ping before the synchronize".into());
                };
                let st = if launches == LAUNCHES { 0 } else { STALLED };
                send_reply(&mut s, &a, st, &[])
                    .and_then(|()| send_ok(&mut s, &f.header, &()))
                    .map_err(|e| e.to_string())?;
                return Ok(());
            }
            op => return Err(format!("unexpected op {op}")),
        }
        .map_err(|e| e.to_string())?;
    }
}

#[test]
fn a_thread_waiting_for_a_reply_does_not_stall_the_others() {
    let dir = std::env::temp_dir().join(format!("vgpu-concurrency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("host.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    std::env::set_var("VGPU_HOST", format!("unix:{}", path.display()));
    let (seen_tx, seen_rx) = mpsc::channel();
    let host = std::thread::spawn(move || fake_host(listener, seen_tx));

    client::inventory().expect("connected to the fake host");
    let a = std::thread::spawn(|| client::send(&StreamSynchronize { stream: 1 }));
    seen_rx
        .recv_timeout(DEADLINE)
        .expect("A's synchronize reached the host");
    // A is now blocked until the host has B's launches.
    for _ in 0..LAUNCHES {
        client::send(&LaunchKernel::default()).expect("launch queued");
    }
    // B's own round trip writes the launches out and waits behind A's.
    client::send(&Ping {}).expect("B's call answered");
    let got: Result<(), GuestError> = a.join().unwrap();
    assert_eq!(
        got,
        Ok(()),
        "A's synchronize (999: B was stalled behind it)"
    );
    host.join().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
