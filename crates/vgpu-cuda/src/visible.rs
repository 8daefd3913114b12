//! `CUDA_VISIBLE_DEVICES`, interpreted the way the NVIDIA driver does it:
//! a comma-separated list of host ordinals or `GPU-<uuid prefix>` entries;
//! the list ends at the first entry that is invalid, out of range, ambiguous
//! or a repeat, so `-1` (or any garbage first entry) hides every device.
//! Unset means all devices in host order.

/// Host device indices the process sees, in the order it numbers them.
/// `uuids` are the host devices' `GPU-xxxxxxxx-...` strings in host order.
pub fn visible_devices(value: Option<&str>, uuids: &[String]) -> Vec<usize> {
    let Some(value) = value else {
        return (0..uuids.len()).collect();
    };
    let mut out = Vec::new();
    for entry in value.split(',') {
        match resolve(entry.trim(), uuids) {
            Some(i) if !out.contains(&i) => out.push(i),
            _ => break,
        }
    }
    out
}

fn resolve(entry: &str, uuids: &[String]) -> Option<usize> {
    if entry.len() > 4
        && entry
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("GPU-"))
    {
        let prefix = entry.to_ascii_lowercase();
        let mut hits = uuids
            .iter()
            .enumerate()
            .filter(|(_, u)| u.to_ascii_lowercase().starts_with(&prefix));
        let (first, _) = hits.next()?;
        // A prefix naming two devices identifies neither.
        return match hits.next() {
            Some(_) => None,
            None => Some(first),
        };
    }
    if entry.is_empty() || !entry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let i: usize = entry.parse().ok()?;
    (i < uuids.len()).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuids() -> Vec<String> {
        vec![
            "GPU-11111111-2222-3333-4444-555555555555".into(),
            "GPU-11112222-aaaa-bbbb-cccc-dddddddddddd".into(),
            "GPU-abcdef01-0000-0000-0000-000000000000".into(),
        ]
    }

    #[test]
    fn unset_is_everything() {
        assert_eq!(visible_devices(None, &uuids()), vec![0, 1, 2]);
    }

    #[test]
    fn indices_reorder_and_stop_at_first_invalid() {
        let u = uuids();
        assert_eq!(visible_devices(Some("2,0"), &u), vec![2, 0]);
        assert_eq!(visible_devices(Some(" 1 , 2 "), &u), vec![1, 2]);
        assert_eq!(visible_devices(Some("0,2,-1,1"), &u), vec![0, 2]);
        assert_eq!(visible_devices(Some("0,7,1"), &u), vec![0]);
        assert_eq!(visible_devices(Some("1,1,2"), &u), vec![1]);
        assert_eq!(visible_devices(Some("0,x"), &u), vec![0]);
        assert_eq!(visible_devices(Some("0,,1"), &u), vec![0]);
    }

    #[test]
    fn hiding_everything() {
        let u = uuids();
        for v in ["-1", "", "none", "3", "NoDevFiles", ","] {
            assert!(visible_devices(Some(v), &u).is_empty(), "{v:?}");
        }
    }

    #[test]
    fn uuid_prefixes() {
        let u = uuids();
        assert_eq!(visible_devices(Some("GPU-abcdef01"), &u), vec![2]);
        assert_eq!(visible_devices(Some("gpu-ABCDEF"), &u), vec![2]);
        assert_eq!(visible_devices(Some("GPU-11112222-aaaa,0"), &u), vec![1, 0]);
        // Ambiguous prefix: both of the first two devices start with it.
        assert!(visible_devices(Some("GPU-1111"), &u).is_empty());
        assert!(visible_devices(Some("GPU-ffff"), &u).is_empty());
        assert!(visible_devices(Some("GPU-"), &u).is_empty());
        assert_eq!(
            visible_devices(Some(&u[0].clone()), &u),
            vec![0],
            "a full UUID is its own prefix"
        );
    }
}
