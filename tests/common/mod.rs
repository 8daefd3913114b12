//! The end-to-end harness of `tests/*.rs` (`mod common;`): it lives in
//! `crates/vgpu-test-support`, shared with the other packages' tests.
#![allow(unused_imports)] // each test binary uses a different subset

pub use vgpu_test_support::*;
