//! The emulated boards' UUIDs and serial numbers: stable for one host across
//! processes, builds and Rust releases (so std's `DefaultHasher`, whose
//! algorithm may change between releases, is not used), different between
//! hosts and between the devices of one host (the device's index is part of
//! the input). Device 0's identity does not depend on the profile, so a
//! host keeps its UUID when its profile changes.

use once_cell::sync::Lazy;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(salt: &[u8], data: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in salt.iter().chain(data) {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // FNV's low bits mix poorly for short inputs; a final avalanche
    // (the splitmix64 finalizer) spreads every input bit over the word.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// What identifies this host: systemd's machine id, else D-Bus's copy of it,
/// else the hostname.
fn host_identity() -> Vec<u8> {
    for path in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(s) = std::fs::read_to_string(path) {
            let s = s.trim();
            if !s.is_empty() {
                return s.as_bytes().to_vec();
            }
        }
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its full length, and one byte is
    // kept back so the result is always NUL-terminated.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        return buf[..end].to_vec();
    }
    b"vgpu-emu-unknown-host".to_vec()
}

pub struct Identity {
    pub uuid: [u8; 16],
    pub serial: String,
}

fn derive(host: &[u8], ordinal: u32) -> Identity {
    let ord = ordinal.to_le_bytes();
    let salted = [host, &ord[..]].concat();
    let hi = fnv1a(b"vgpu-emu/uuid/hi/v1", &salted);
    let lo = fnv1a(b"vgpu-emu/uuid/lo/v1", &salted);
    let mut uuid = [0u8; 16];
    uuid[..8].copy_from_slice(&hi.to_be_bytes());
    uuid[8..].copy_from_slice(&lo.to_be_bytes());
    if uuid.iter().all(|&b| b == 0) {
        uuid[15] = 1;
    }
    // H100 serial numbers are 13 decimal digits starting with 132.
    let s = fnv1a(b"vgpu-emu/serial/v1", &salted) % 10_000_000_000;
    Identity {
        uuid,
        serial: format!("132{s:010}"),
    }
}

static DEVICES: Lazy<Vec<Identity>> = Lazy::new(|| {
    let host = host_identity();
    (0..crate::profile::MAX_DEVICES as u32)
        .map(|i| derive(&host, i))
        .collect()
});

/// The identity of the device at `index` in driver (NVML) order.
pub fn device(index: usize) -> &'static Identity {
    &DEVICES[index]
}

/// NVML's spelling: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase.
pub fn uuid_string(uuid: &[u8; 16]) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_host_dependent() {
        let a = derive(b"3d1219c7c4c5404aaa1f6d2a48adfda4", 0);
        let b = derive(b"3d1219c7c4c5404aaa1f6d2a48adfda4", 0);
        let c = derive(b"3d1219c7c4c5404aaa1f6d2a48adfda5", 0);
        assert_eq!(a.uuid, b.uuid);
        assert_ne!(a.uuid, c.uuid);
        assert_eq!(a.serial.len(), 13);
        assert!(a.serial.bytes().all(|b| b.is_ascii_digit()));
        // Pinned: a change here would change every host's UUID.
        assert_eq!(
            uuid_string(&a.uuid),
            "GPU-a99a73d9-4c8c-91ac-4ebc-bf59be27e87b"
        );
    }

    #[test]
    fn devices_of_one_host_differ() {
        let a = derive(b"3d1219c7c4c5404aaa1f6d2a48adfda4", 0);
        let b = derive(b"3d1219c7c4c5404aaa1f6d2a48adfda4", 1);
        assert_ne!(a.uuid, b.uuid);
        assert_ne!(a.serial, b.serial);
        assert_ne!(device(0).uuid, device(1).uuid);
    }

    #[test]
    fn uuid_format() {
        let s = uuid_string(&[0xAB; 16]);
        assert_eq!(s, "GPU-abababab-abab-abab-abab-abababababab");
        assert_eq!(s.len(), 40);
    }
}
