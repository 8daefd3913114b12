//! Copy figures (docs/protocol.md, "Bulk transfers"): this machine's
//! floors — `memcpy` of 64 MiB, a raw Unix-socket stream and a TCP
//! loopback stream between two threads — and 64 MiB host-to-device and
//! device-to-host copies through vgpu's data plane, as ratios to them:
//! over the Unix socket with the shared-memory region, over the same
//! socket without it, and over TCP when the daemon listens there (`--tcp`).
//!
//! The copies are the ones the CUDA shim makes (`Client::put` / `get`),
//! from and into ordinary process memory. Memory the guest allocates with
//! `cuMemAllocHost` takes the same path today (it is not carved from the
//! region), so "pinned" would measure the same thing and is not reported
//! separately.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use vgpu_transport::proto::{caps, CtxCreate, CtxDestroy, Hello, MemAlloc, MemFree};
use vgpu_transport::{Client, Endpoint};

/// Bytes per timed transfer.
pub const SIZE: usize = 64 << 20;
/// Timed repetitions; the best is reported (a shared machine's noise only
/// ever slows a run down).
const REPS: usize = 5;

fn gbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / t.as_secs_f64().max(1e-12) / 1e9
}

/// The best of `REPS` runs of `f`, in GB/s of `SIZE` bytes.
fn best(mut f: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    f()?; // warm: page faults, socket buffers
    let mut top = 0f64;
    for _ in 0..REPS {
        let t = Instant::now();
        f()?;
        top = top.max(gbps(SIZE, t.elapsed()));
    }
    Ok(top)
}

/// `memcpy` of 64 MiB between two buffers already faulted in.
pub fn memcpy_floor() -> f64 {
    let src = vec![1u8; SIZE];
    let mut dst = vec![0u8; SIZE];
    best(|| {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
        Ok(())
    })
    .unwrap_or(0.0)
}

/// 64 MiB from one thread to another through a connected pair, from a
/// 64 MiB buffer into another in 1 MiB writes and reads, as a copy moves
/// its bytes (the reader acknowledges each transfer with a byte).
fn stream_floor<S: Read + Write + Send + 'static>(a: S, mut b: S) -> Result<f64, String> {
    const PIECE: usize = 1 << 20;
    let total = (REPS + 1) * SIZE;
    let reader = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; SIZE];
        let mut left = total;
        let mut since_ack = 0;
        while left > 0 {
            let at = since_ack;
            let n = b.read(&mut buf[at..(at + PIECE).min(SIZE)])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            left -= n;
            since_ack += n;
            if since_ack == SIZE {
                b.write_all(&[1])?;
                since_ack = 0;
            }
        }
        Ok(())
    });
    let mut a = a;
    let buf = vec![7u8; SIZE];
    let r = best(|| {
        for piece in buf.chunks(PIECE) {
            a.write_all(piece).map_err(|e| e.to_string())?;
        }
        let mut ack = [0u8];
        a.read_exact(&mut ack).map_err(|e| e.to_string())
    });
    reader
        .join()
        .map_err(|_| "reader panicked".to_string())?
        .map_err(|e| e.to_string())?;
    r
}

pub fn unix_floor() -> Result<f64, String> {
    let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
    stream_floor(a, b)
}

pub fn tcp_floor() -> Result<f64, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let a = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let (b, _) = l.accept().map_err(|e| e.to_string())?;
    a.set_nodelay(true).map_err(|e| e.to_string())?;
    b.set_nodelay(true).map_err(|e| e.to_string())?;
    stream_floor(a, b)
}

/// Host-to-device and device-to-host GB/s of 64 MiB copies on a fresh
/// connection to `ep` (`shm`: ask for the shared-memory region), and
/// whether the region was in use.
pub fn vgpu_copies(ep: &Endpoint, shm: bool) -> Result<(f64, f64, bool), String> {
    let stream = ep
        .connect(Duration::from_secs(3))
        .map_err(|e| format!("{ep}: {e}"))?;
    let hello = Hello::new(
        vgpu_transport::BUILD_ID,
        caps::BATCH | if shm { caps::SHM } else { 0 },
        std::env::var("VGPU_TOKEN").ok(),
    );
    let mut c =
        Client::handshake(stream, &hello, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    let used = c.has_shm();
    let e = |e: vgpu_transport::CallError| e.to_string();
    let ctx = c
        .call(&CtxCreate {
            device: 0,
            flags: 0,
        })
        .map_err(e)?;
    let dev = c
        .call(&MemAlloc {
            ctx,
            size: SIZE as u64,
        })
        .map_err(e)?;
    let src = vec![3u8; SIZE];
    let mut dst = vec![0u8; SIZE];
    let h2d = best(|| c.put(ctx, None, dev, &src).map_err(e))?;
    let d2h = best(|| c.get(ctx, None, &mut dst, dev).map_err(e))?;
    if dst != src {
        return Err("the bytes read back differ from those written".into());
    }
    c.call(&MemFree { ctx, ptr: dev }).map_err(e)?;
    c.call(&CtxDestroy { ctx }).map_err(e)?;
    Ok((h2d, d2h, used))
}
