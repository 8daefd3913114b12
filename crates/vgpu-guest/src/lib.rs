//! Guest-side code both shims share: configuration, the one connection to
//! the host, logging, the FFI boundary, and the virtual files GPU software
//! probes. Linked into `libcuda.so.1` and `libnvidia-ml.so.1` alike, so
//! either one loaded is enough.

pub mod client;
pub mod config;
pub mod hooks;
// The logger lives in the FFI runtime the three cdylibs share.
pub use vgpu_ffi::{log, vlog};
pub mod provider;
pub mod vfiles;
