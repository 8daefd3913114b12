//! The vgpu wire protocol, shared by the guest shims and the host daemon.
//!
//! - [`codec`]: a total little-endian codec (no input panics or allocates
//!   beyond what was received);
//! - [`frame`]: length/op/flags/sequence/status frames with a size cap;
//! - [`proto`]: the handshake and every call with its reply type and how
//!   it travels;
//! - [`status`]: the typed status a reply carries;
//! - [`endpoint`]: `unix:` / `tcp:` / `vsock:` endpoints, streams, listeners;
//! - [`conn`]: the guest's client and the host's admission check.
//!
//! The contract each backend keeps: a [`endpoint::Stream`] is a reliable,
//! ordered byte stream that reports the peer's disappearance as an error or
//! EOF; nothing above it depends on which kind it is.

pub mod bulk;
pub mod codec;
pub mod conn;
pub mod endpoint;
pub mod frame;
mod launch_attr;
pub mod proto;
pub mod shm;
pub mod status;

pub use codec::{Bytes, DecodeError, Wire};
pub use conn::{CallError, Client, HandshakeError};
pub use endpoint::{Endpoint, Peer, Stream};
pub use proto::Call;
pub use status::Status;

/// Identifies this build in handshakes and logs.
pub const BUILD_ID: &str = concat!(env!("CARGO_PKG_VERSION"), "+proto", "1");
