//! The attributes the worker masks for guests ([`MASKED`]) are masked for
//! the reason they give: every entry point an entry names is a
//! NOT_SUPPORTED stub of the guest shim. When the shim implements one,
//! this fails, and the entry must go (or name what is still missing).

use vgpu_host::worker::inventory::{Lacks, MASKED};

#[test]
fn masked_functions_are_not_implemented_by_the_shim() {
    let mut checked = 0;
    for (attr, why) in MASKED {
        if let Lacks::Functions(names) = why {
            assert!(!names.is_empty(), "{attr:?}: no function named");
            for n in *names {
                assert!(
                    !vgpu_cuda::IMPLEMENTED.contains(n),
                    "{attr:?} is masked for {n}, which the shim implements"
                );
                assert!(
                    vgpu_cuda::NOT_SUPPORTED.contains(n),
                    "{attr:?}: {n} is not a function of cuda.h"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 20, "only {checked} functions checked");
}

#[test]
fn no_attribute_is_masked_twice() {
    for (i, (a, _)) in MASKED.iter().enumerate() {
        assert!(MASKED[..i].iter().all(|(b, _)| b != a), "{a:?} twice");
    }
}
