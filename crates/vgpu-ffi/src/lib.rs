//! The runtime vgpu's three cdylibs — `libcuda.so.1` and
//! `libnvidia-ml.so.1` (the shims) and the software GPU — share at the C
//! boundary, so that none of them solves the same problem its own way:
//!
//! - [`status`]: `CUresult` and `nvmlReturn_t` as one [`Status`] trait,
//!   with names generated from the headers' enumerators and the drivers'
//!   texts;
//! - [`boundary`]: the panic boundary around every export and the
//!   behaviour of unimplemented entry points;
//! - [`convert`]: C arguments converted once, before a body runs
//!   ([`FromCuda`]: NULL out-pointers, strings, each cdylib's handles);
//! - [`registry`]: one handle registry for every kind of object;
//! - [`entry`]: entry points identical in every cdylib (error names and
//!   texts);
//! - [`log`]: the small logger (`VGPU_LOG`, `VGPU_LOG_FILE`);
//! - [`settings`]: the environment as the shims may read it (nothing of
//!   `VGPU_*` in setuid programs).
//!
//! `api_macros::export_functions!` generates the exports that use all this;
//! `docs/adding-a-function.md` shows the whole path of one function.
//!
//! Nothing here runs at load time, spawns a thread or allocates before it
//! is called.

pub mod boundary;
pub mod convert;
pub mod entry;
pub mod log;
pub mod registry;
pub mod settings;
pub mod status;

pub use boundary::{boundary, boundary_value, not_supported};
pub use convert::{from_cuda, FromCuda, In, Out};
pub use registry::{Mint, Registry, Shared};
pub use status::Status;
