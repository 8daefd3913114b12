//! Frames: a fixed 16-byte header, then the payload.
//!
//! ```text
//! 0  u32 payload length      8  u32 sequence
//! 4  u16 op   6 u16 flags   12  u32 status (replies; 0 in requests)
//! ```
//! A reply echoes the op and sequence of its request; a host frame flagged
//! [`FLAG_NOTICE`] is not a reply but a notice the host sends unasked.
//! Lengths above [`MAX_PAYLOAD`] are refused before anything is allocated.

use std::io::{self, Read, Write};

pub const HEADER_LEN: usize = 16;
/// Largest payload either side accepts. Bulk copies are cut into chunks well
/// below this, so no single message holds a whole large buffer.
pub const MAX_PAYLOAD: u32 = 64 * 1024 * 1024 + 4096;

/// Request flag: the sender does not wait for a reply (batched calls). The
/// receiver never replies to such a frame; a failure becomes the session's
/// pending error, returned by the next synchronizing call.
pub const FLAG_NO_REPLY: u16 = 1;

/// Host frame flag: not a reply but a notice, sent unasked just before a
/// reply (today only device output, `proto::DEVICE_OUTPUT_OP`, to a guest
/// that announced `caps::DEVICE_OUTPUT`). Its op names the notice; its
/// sequence number is that of the request about to be answered. The guest
/// handles it and goes on reading for its reply; a guest never sends one.
pub const FLAG_NOTICE: u16 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub len: u32,
    pub op: u16,
    pub flags: u16,
    pub seq: u32,
    pub status: u32,
}

impl Header {
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&self.len.to_le_bytes());
        b[4..6].copy_from_slice(&self.op.to_le_bytes());
        b[6..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.seq.to_le_bytes());
        b[12..16].copy_from_slice(&self.status.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; HEADER_LEN]) -> Header {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header {
            len: u32_at(0),
            op: u16::from_le_bytes([b[4], b[5]]),
            flags: u16::from_le_bytes([b[6], b[7]]),
            seq: u32_at(8),
            status: u32_at(12),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the stream between frames.
    Closed,
    /// A header announced more than [`MAX_PAYLOAD`] bytes.
    TooLarge(u32),
    Io(io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Closed => write!(f, "connection closed"),
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds {MAX_PAYLOAD}"),
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Reads one frame. A stream that ends exactly between frames is `Closed`;
/// one that ends inside a frame is an I/O error (`UnexpectedEof`).
pub fn read_frame(r: &mut impl Read) -> Result<Frame, FrameError> {
    let mut hb = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut hb[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let header = Header::from_bytes(&hb);
    if header.len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(header.len));
    }
    let mut payload = vec![0u8; header.len as usize];
    r.read_exact(&mut payload)?;
    Ok(Frame { header, payload })
}

/// Writes header and payload with one `write_all` each, so a frame is never
/// interleaved with another writer's as long as callers serialize writes.
pub fn write_frame(w: &mut impl Write, header: Header, payload: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_frame(&mut buf, header, payload)?;
    w.write_all(&buf)?;
    w.flush()
}

/// Appends one frame to `out` (several frames can then go out in one write).
pub fn encode_frame(out: &mut Vec<u8>, mut header: Header, payload: &[u8]) -> io::Result<()> {
    if payload.len() > MAX_PAYLOAD as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "payload too large",
        ));
    }
    header.len = payload.len() as u32;
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = Header {
            len: 5,
            op: 7,
            flags: 1,
            seq: 99,
            status: 3,
        };
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
    }

    #[test]
    fn frame_round_trip_and_limits() {
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            Header {
                op: 2,
                seq: 1,
                ..Default::default()
            },
            b"abc",
        )
        .unwrap();
        let f = read_frame(&mut &buf[..]).unwrap();
        assert_eq!(f.payload, b"abc");
        assert_eq!(f.header.len, 3);

        assert!(matches!(
            read_frame(&mut &buf[..0]),
            Err(FrameError::Closed)
        ));
        assert!(matches!(
            read_frame(&mut &buf[..10]),
            Err(FrameError::Io(_))
        ));
        assert!(matches!(
            read_frame(&mut &buf[..18]),
            Err(FrameError::Io(_))
        ));

        let huge = Header {
            len: u32::MAX,
            ..Default::default()
        }
        .to_bytes();
        assert!(matches!(
            read_frame(&mut &huge[..]),
            Err(FrameError::TooLarge(u32::MAX))
        ));
    }
}
