//! The vgpu host daemon: a supervisor that admits guests and one worker
//! process per guest connection that runs its calls on the GPU driver (the
//! real NVIDIA driver or the software GPU).
//!
//! - [`driver`]: which driver (`auto` / `emulated` / a path), found with
//!   dlopen + dlsym only; vgpu's own shims (they export `vgpu_shim_marker`)
//!   are never taken for a driver. The software GPU says which entry points
//!   the driver it imitates lacks (`--profile`); those load as absent.
//! - [`supervisor`]: listeners, admission (peer uid for Unix sockets, token
//!   for TCP/vsock — see the module for the policy; [`admission`] bounds
//!   handshakes), principals and their limits ([`principal`], counted
//!   across a principal's workers in [`account`]), worker spawning
//!   (`vgpu worker --fd N ...` inheriting exactly the connection's
//!   descriptor, killed with the supervisor via PR_SET_PDEATHSIG), reaping
//!   and shutdown.
//! - [`worker`]: loads the driver library, answers the handshake at once
//!   (or refuses with `HOST_UNAVAILABLE` and the reason), initializes the
//!   driver while the guest waits for its inventory, serves requests through the
//!   dispatch the protocol's `calls!` table generates (one `Serve` impl per
//!   op), and returns every context to the driver when the guest leaves.
//!   Handles given to guests are minted per session: a kind tag in the top
//!   byte and 56 keyed-random bits ([`worker::handles`]). Device pointers
//!   are the driver's, but every range a copy, memset or free names is
//!   checked against the session's own allocations and accessible VMM
//!   mappings first ([`worker::memory`], [`worker::vmm`]); the per-guest
//!   principal's memory limit (`--guest-memory-mib`) caps allocations and is
//!   the total guests see.

pub mod account;
pub mod admission;
pub mod driver;
pub mod principal;
pub mod supervisor;
pub mod worker;

pub use driver::{DriverChoice, DriverKind, ResolvedDriver};
pub use supervisor::{DeviceSelection, HostConfig, HANDSHAKE_TIMEOUT};
pub use worker::WorkerConfig;
