//! Links vgpu-guest so that its `#[no_mangle]` libc hooks become exports of a
//! preloadable library. Nothing else: the hooks are enabled with
//! `VGPU_VFILES_TEST=1`, as the shims enable them with a provider.

pub use vgpu_guest::{hooks, vfiles};

vgpu_guest::__vgpu_export_libc_hooks!();
