//! The vgpu host daemon: a supervisor that admits guests and one worker
//! process per guest connection that runs its calls on the GPU driver (the
//! real NVIDIA driver or the software GPU).

pub mod driver;
pub mod supervisor;
pub mod worker;

pub use driver::{DriverChoice, DriverKind, ResolvedDriver};
pub use supervisor::{HostConfig, HANDSHAKE_TIMEOUT};
pub use worker::WorkerConfig;
