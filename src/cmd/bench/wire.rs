//! How many messages a graph launch sends, counted on the wire.
//!
//! The count has to come from outside the shim: a guest's connection is
//! opened once per process and goes straight to the host, and the host's
//! trace log belongs to whoever runs the daemon. So `vgpu bench` starts a
//! copy of itself (`vgpu bench --wire-child`, hidden) whose `VGPU_HOST` is a
//! socket of this process, and relays every byte between that child and the
//! real host, reading the headers of the frames the child sends. The relay
//! is never in the path of the timed figures: those are taken in this
//! process, over its own direct connection.
//!
//! The child captures the same graph as the timed run and then sends
//!
//! ```text
//! Ping · cuGraphLaunch · Ping · the same kernels one by one · Ping
//! ```
//!
//! `Ping` is a message no CUDA call sends, and a round trip (it writes out
//! the queued launches before it), so the frames between the markers are
//! exactly what each way of launching sent.

use super::shim::{Graph, Shim};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vgpu_transport::frame::{Header, HEADER_LEN, MAX_PAYLOAD};
use vgpu_transport::proto::{op_name, Ping};
use vgpu_transport::{Call, Endpoint, Stream};

/// How long the child may take: a context, a 256-kernel capture and a few
/// hundred launches.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// One frame the guest sent.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub op: u16,
    /// Header and payload.
    pub bytes: usize,
}

/// The frames of one way of launching.
#[derive(Debug)]
pub struct Window {
    pub frames: Vec<Sent>,
}

impl Window {
    pub fn bytes(&self) -> usize {
        self.frames.iter().map(|f| f.bytes).sum()
    }

    /// "GraphLaunch" or "LaunchKernel ×256, ...", in order of first use.
    pub fn ops(&self) -> String {
        let mut order: Vec<u16> = Vec::new();
        let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
        for f in &self.frames {
            if !counts.contains_key(&f.op) {
                order.push(f.op);
            }
            *counts.entry(f.op).or_default() += 1;
        }
        order
            .iter()
            .map(|op| {
                let name = op_name(*op).map_or_else(|| format!("op {op}"), str::to_string);
                match counts[op] {
                    1 => name,
                    n => format!("{name} x{n}"),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub struct Counted {
    pub graph: Window,
    pub one_by_one: Window,
}

/// Splits what the child sent at its three `Ping` markers.
pub fn split(frames: &[Sent]) -> Result<Counted, String> {
    let marks: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.op == Ping::OP)
        .map(|(i, _)| i)
        .collect();
    let [a, b, c] = marks[..] else {
        return Err(format!(
            "expected 3 marker pings on the wire, saw {}",
            marks.len()
        ));
    };
    Ok(Counted {
        graph: Window {
            frames: frames[a + 1..b].to_vec(),
        },
        one_by_one: Window {
            frames: frames[b + 1..c].to_vec(),
        },
    })
}

/// Runs the child through a counting relay to the host at `ep`.
pub fn count(ep: &Endpoint, kernels: usize) -> Result<Counted, String> {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("vgpu-bench-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let result = relay_child(&listener, &path, ep, kernels);
    let _ = std::fs::remove_file(&path);
    result
}

fn relay_child(
    listener: &UnixListener,
    path: &std::path::Path,
    ep: &Endpoint,
    kernels: usize,
) -> Result<Counted, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(exe)
        .args(["bench", "--wire-child", "--graph-kernels"])
        .arg(kernels.to_string())
        .env("VGPU_HOST", format!("unix:{}", path.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting vgpu bench --wire-child: {e}"))?;
    let stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = { stderr }.read_to_string(&mut s);
        s
    });

    // The child connects once, at its cuInit. Accept with a deadline so a
    // child that dies first does not hang us.
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("relay: {e}"))?;
    let start = Instant::now();
    let guest = loop {
        match listener.accept() {
            Ok((s, _)) => break Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if start.elapsed() > CHILD_TIMEOUT || child.try_wait().ok().flatten().is_some() {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("relay accept: {e}")),
        }
    };
    let frames = Arc::new(Mutex::new(Vec::new()));
    let relayed = match guest {
        Some(guest) => relay(guest, ep, frames.clone()),
        None => Err("the child never connected".to_string()),
    };
    let status = wait(&mut child, CHILD_TIMEOUT.saturating_sub(start.elapsed()));
    let errors = errors.join().unwrap_or_default();
    let tail = errors.lines().rev().take(5).collect::<Vec<_>>();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join(" | ");
    match status {
        Some(st) if st.success() => {}
        Some(st) => return Err(format!("vgpu bench --wire-child: {st}: {tail}")),
        None => return Err(format!("vgpu bench --wire-child timed out: {tail}")),
    }
    relayed?;
    let frames = frames.lock().expect("relay threads ended").clone();
    split(&frames)
}

/// Relays one guest connection to the host until either side closes,
/// recording the guest's frames.
fn relay(guest: UnixStream, ep: &Endpoint, frames: Arc<Mutex<Vec<Sent>>>) -> Result<(), String> {
    guest
        .set_nonblocking(false)
        .map_err(|e| format!("relay: {e}"))?;
    // A child that hangs while connected ends the relay, then is killed.
    guest
        .set_read_timeout(Some(CHILD_TIMEOUT))
        .map_err(|e| format!("relay: {e}"))?;
    let host = ep
        .connect(Duration::from_secs(3))
        .map_err(|e| format!("{ep}: {e}"))?;
    // SAFETY: dup returns a new descriptor for the same connected socket,
    // owned from here on by the second Stream alone.
    let host_in = unsafe {
        let fd = libc::dup(host.as_raw_fd());
        if fd < 0 {
            return Err(format!("dup: {}", std::io::Error::last_os_error()));
        }
        Stream::from_raw_fd(fd).map_err(|e| format!("relay: {e}"))?
    };
    let guest_out = guest.try_clone().map_err(|e| format!("relay: {e}"))?;
    // Host to guest: bytes as they come.
    let back = std::thread::spawn(move || {
        let (mut from, mut to) = (host_in, guest_out);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
    let forward = forward_frames(guest, host, &frames);
    let _ = back.join();
    forward
}

/// Guest to host, frame by frame, recording each header.
fn forward_frames(
    mut guest: UnixStream,
    mut host: Stream,
    frames: &Mutex<Vec<Sent>>,
) -> Result<(), String> {
    let mut payload = Vec::new();
    let result = loop {
        let mut h = [0u8; HEADER_LEN];
        match read_full(&mut guest, &mut h) {
            Ok(false) => break Ok(()),
            Ok(true) => {}
            Err(e) => break Err(format!("relay read: {e}")),
        }
        let header = Header::from_bytes(&h);
        if header.len > MAX_PAYLOAD {
            break Err(format!("relay: a frame of {} bytes", header.len));
        }
        payload.resize(header.len as usize, 0);
        if let Err(e) = guest.read_exact(&mut payload) {
            break Err(format!("relay read: {e}"));
        }
        frames.lock().expect("one writer").push(Sent {
            op: header.op,
            bytes: HEADER_LEN + payload.len(),
        });
        if let Err(e) = host.write_all(&h).and_then(|_| host.write_all(&payload)) {
            break Err(format!("relay write: {e}"));
        }
    };
    host.shutdown();
    result
}

/// Fills `buf`; `Ok(false)` on a clean end of stream before its first byte.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Waits at most `limit`; kills the child (this process started it) past it.
fn wait(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// The child's side (`vgpu bench --wire-child`): the marked sequence.
pub fn child(kernels: usize) -> Result<(), String> {
    let shim = Shim::open()?;
    let g = Graph::capture(&shim, kernels)?;
    shim.marker()?;
    g.launch()?;
    shim.marker()?;
    g.launch_one_by_one()?;
    shim.marker()?;
    g.sync()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(op: u16) -> Sent {
        Sent { op, bytes: 16 }
    }

    #[test]
    fn split_at_the_three_markers() {
        let p = Ping::OP;
        let frames: Vec<Sent> = [1, 3, p, 121, p, 50, 50, 50, p, 9]
            .into_iter()
            .map(sent)
            .collect();
        let c = split(&frames).unwrap();
        assert_eq!(c.graph.frames.len(), 1);
        assert_eq!(c.graph.frames[0].op, 121);
        assert_eq!(c.one_by_one.frames.len(), 3);
        assert_eq!(c.one_by_one.bytes(), 48);
        assert!(split(&frames[..8]).is_err());
    }

    #[test]
    fn ops_are_named_and_counted_in_order() {
        let w = Window {
            frames: [121, 121, 7].into_iter().map(sent).collect(),
        };
        let g = op_name(121).unwrap();
        let seven = op_name(7).map_or("op 7".to_string(), str::to_string);
        assert_eq!(w.ops(), format!("{g} x2, {seven}"));
    }
}
