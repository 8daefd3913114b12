//! `CUDA_VISIBLE_DEVICES` as the NVIDIA driver reads it: a comma-separated
//! list of device ordinals or `GPU-<uuid prefix>` entries, in the order the
//! process will number them. The list ends at the first entry that is
//! malformed, out of range, ambiguous or a repeat, so `-1` (or any garbage
//! first entry) hides every device. Unset means every device, in order.
//!
//! The guest shim applies it to the host's devices a guest was given, and
//! the software GPU to the devices of its profile (so `vgpu host --devices`,
//! which sets it for the worker, selects alike on both kinds of driver).

/// Indices into `uuids` the process sees, in the order it numbers them.
/// `uuids` are the devices' `GPU-xxxxxxxx-...` strings in driver order.
pub fn visible_devices(value: Option<&str>, uuids: &[String]) -> Vec<usize> {
    let Some(value) = value else {
        return (0..uuids.len()).collect();
    };
    let mut out = Vec::new();
    for entry in value.split(',') {
        match entry_index(entry.trim(), uuids) {
            Some(i) if !out.contains(&i) => out.push(i),
            _ => break,
        }
    }
    out
}

/// The device one entry names, if it names exactly one.
fn entry_index(entry: &str, uuids: &[String]) -> Option<usize> {
    let is_uuid = entry.len() > 4
        && entry
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("GPU-"));
    if is_uuid {
        let prefix = entry.to_ascii_lowercase();
        let mut named = uuids
            .iter()
            .enumerate()
            .filter(|(_, u)| u.to_ascii_lowercase().starts_with(&prefix))
            .map(|(i, _)| i);
        let first = named.next()?;
        // A prefix that two devices share names neither.
        return named.next().is_none().then_some(first);
    }
    if entry.is_empty() || !entry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    entry.parse::<usize>().ok().filter(|&i| i < uuids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Vec<String> {
        [
            "GPU-11111111-2222-3333-4444-555555555555",
            "GPU-11112222-aaaa-bbbb-cccc-dddddddddddd",
            "GPU-abcdef01-0000-0000-0000-000000000000",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn unset_is_every_device_in_order() {
        assert_eq!(visible_devices(None, &three()), [0, 1, 2]);
        assert!(visible_devices(None, &[]).is_empty());
    }

    #[test]
    fn ordinals_reorder_and_the_list_ends_at_the_first_bad_entry() {
        let u = three();
        assert_eq!(visible_devices(Some("2,0"), &u), [2, 0]);
        assert_eq!(visible_devices(Some(" 1 , 2 "), &u), [1, 2]);
        assert_eq!(visible_devices(Some("0,2,-1,1"), &u), [0, 2]);
        assert_eq!(visible_devices(Some("0,7,1"), &u), [0]);
        assert_eq!(visible_devices(Some("1,1,2"), &u), [1]);
        assert_eq!(visible_devices(Some("0,x"), &u), [0]);
        assert_eq!(visible_devices(Some("0,,1"), &u), [0]);
        for hidden in ["-1", "", "none", "3", "NoDevFiles", ","] {
            assert!(visible_devices(Some(hidden), &u).is_empty(), "{hidden:?}");
        }
    }

    #[test]
    fn uuid_prefixes_name_one_device_or_none() {
        let u = three();
        assert_eq!(visible_devices(Some("GPU-abcdef01"), &u), [2]);
        assert_eq!(visible_devices(Some("gpu-ABCDEF"), &u), [2]);
        assert_eq!(visible_devices(Some("GPU-11112222-aaaa,0"), &u), [1, 0]);
        assert!(visible_devices(Some("GPU-1111"), &u).is_empty(), "shared");
        assert!(visible_devices(Some("GPU-ffff"), &u).is_empty());
        assert!(visible_devices(Some("GPU-"), &u).is_empty());
        assert_eq!(visible_devices(Some(&u[0]), &u), [0], "a whole UUID");
    }
}
