//! The CUDA binary conventions that the shim, the software GPU, the PTX
//! crate and the host worker must all read the same way: how long a module
//! image is and what it holds (docs/call-path.md, "Module images"), how a launch's
//! arguments are laid out ("Kernel parameters"), where each kernel's parameters go, read
//! from the image itself for host drivers that cannot say ("Kernel parameters"); how far
//! a tensor map's tensor reaches from its address; and which devices
//! `CUDA_VISIBLE_DEVICES` leaves a process, which the guest shim and the
//! software GPU must decide alike.
//!
//! Pure functions only: no exports, no threads, no I/O, no logging. Callers
//! turn the errors into their own CUresult and diagnostics, so each keeps
//! the codes and messages it always had while the parsing itself exists once.

pub mod image;
pub mod launch;
pub mod params;
pub mod tensor_map;
pub mod visible;
