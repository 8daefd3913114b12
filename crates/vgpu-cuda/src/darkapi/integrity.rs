//! INTEGRITY_CHECK (3 slots, slot 0 = 24): cudart's proof that it talks to
//! the driver it expects (docs/call-path.md, "Integrity check"). Everything hashed is a value
//! of this process — its pid, thread, the table addresses it was handed, the
//! devices as this shim reports them — so the answer is computed here, never
//! on the host.

use super::{fun, stubs, Slot, Table, T_INTEGRITY};
use crate::{driver, init};
use cuda_types::cuda::CUresult;
use hmac::{Hmac, KeyInit, Mac};
use std::sync::OnceLock;

pub static TABLE: Table<3> = {
    let s = stubs!(T_INTEGRITY; 2);
    Table([Slot::word(24), fun!(check), s[0]])
};

const KEY: [u8; 16] = [
    0x14, 0x6a, 0xdd, 0xae, 0x53, 0xa9, 0xa7, 0x52, 0xaa, 0x08, 0x41, 0x36, 0x0b, 0xf5, 0x5a, 0x9f,
];

/// The answers to `version % 10 == 0` and `== 1`: fixed values, checked
/// only by cudart 11.x.
const ANSWER_0: [u8; 16] = [
    0x5c, 0x67, 0xcb, 0x03, 0x1c, 0x18, 0x41, 0x33, 0xe8, 0xd1, 0x4c, 0x1f, 0xaa, 0x83, 0xd3, 0x8e,
];
const ANSWER_1: [u8; 16] = {
    let mut a = ANSWER_0;
    a[7] = 0x18;
    a
};

/// One device's part of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRecord {
    pub uuid: [u8; 16],
    pub pci_domain: i32,
    pub pci_bus: i32,
    pub pci_device: i32,
}

/// Everything the hash covers, in message order (all little-endian).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub driver_version: u32,
    pub version: u32,
    pub pid: u32,
    pub tid: u32,
    pub cudart_table: u64,
    pub integrity_table: u64,
    pub check_fn: u64,
    pub unix_seconds: u64,
    pub devices: Vec<DeviceRecord>,
}

impl Message {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(48 + 28 * self.devices.len());
        for w in [self.driver_version, self.version, self.pid, self.tid] {
            m.extend_from_slice(&w.to_le_bytes());
        }
        for q in [
            self.cudart_table,
            self.integrity_table,
            self.check_fn,
            self.unix_seconds,
        ] {
            m.extend_from_slice(&q.to_le_bytes());
        }
        for d in &self.devices {
            m.extend_from_slice(&d.uuid);
            for v in [d.pci_domain, d.pci_bus, d.pci_device] {
                m.extend_from_slice(&v.to_le_bytes());
            }
        }
        m
    }

    pub fn digest(&self) -> [u8; 16] {
        let mut mac = Hmac::<md2::Md2>::new_from_slice(&KEY).expect("HMAC takes any key length");
        mac.update(&self.to_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// The answer for `version`, given a way to build the message (only the
/// third call of each triple needs it).
fn answer(version: u32, message: impl FnOnce() -> Message) -> [u8; 16] {
    match version % 10 {
        0 => ANSWER_0,
        1 => ANSWER_1,
        _ => message().digest(),
    }
}

/// `VGPU_TEST_CORRUPT_INTEGRITY=1` makes the computed (HMAC) answer wrong
/// and leaves the two constants alone: the end-to-end tests use it to prove
/// that every cudart version checks the hash this computes.
fn corrupt() -> bool {
    static CORRUPT: OnceLock<bool> = OnceLock::new();
    *CORRUPT
        .get_or_init(|| std::env::var_os("VGPU_TEST_CORRUPT_INTEGRITY").is_some_and(|v| v == "1"))
}

/// This process's message. Devices come from the same inventory (and in
/// the same CUDA_VISIBLE_DEVICES order) as cuDeviceGetUuid and the PCI
/// attributes, so cudart's own view of them matches what is hashed.
fn message(version: u32, unix_seconds: u64) -> Message {
    let devices = match driver::get() {
        Ok(d) => d
            .devices()
            .map(|(_, g)| DeviceRecord {
                uuid: g.info.uuid,
                pci_domain: g.attribute(50).unwrap_or(0),
                pci_bus: g.attribute(33).unwrap_or(0),
                pci_device: g.attribute(34).unwrap_or(0),
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    Message {
        driver_version: init::current_driver_version() as u32,
        version,
        // SAFETY: getpid and pthread_self cannot fail and touch no memory of ours.
        pid: unsafe { libc::getpid() } as u32,
        // The thread id is hashed truncated to 32 bits, as cudart does.
        // SAFETY: as above.
        tid: unsafe { libc::pthread_self() } as u32,
        cudart_table: super::cudart::TABLE.as_ptr() as u64,
        integrity_table: TABLE.as_ptr() as u64,
        check_fn: TABLE.0[1].addr() as u64,
        unix_seconds,
        devices,
    }
}

/// Slot 1: `CUresult (uint32_t version, uint64_t unix_seconds, uint64_t
/// result[2])`. cudart calls it three times with version = CUDART_VERSION
/// + 0, + 1, + 2.
unsafe extern "C" fn check(version: u32, unix_seconds: u64, result: *mut u64) -> CUresult {
    vgpu_ffi::boundary("INTEGRITY_CHECK[1]", || {
        if result.is_null() {
            return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
        }
        let mut a = answer(version, || message(version, unix_seconds));
        if corrupt() && version % 10 == 2 {
            a[0] ^= 1;
        }
        // SAFETY: non-null; the slot's contract makes it two writable u64s.
        unsafe { std::ptr::copy_nonoverlapping(a.as_ptr(), result.cast::<u8>(), 16) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn vector1() -> Message {
        Message {
            driver_version: 12090,
            version: 12092,
            pid: 4242,
            tid: 0xdead_beef,
            cudart_table: 0x7f00_0000_1000,
            integrity_table: 0x7f00_0000_2000,
            check_fn: 0x7f00_0000_3000,
            unix_seconds: 1_795_625_437,
            devices: vec![DeviceRecord {
                uuid: core::array::from_fn(|i| i as u8 + 1),
                pci_domain: 0,
                pci_bus: 1,
                pci_device: 0,
            }],
        }
    }

    #[test]
    fn md2_itself() {
        use md2::Digest;
        assert_eq!(
            hex(&md2::Md2::digest(b"")),
            "8350e5a3e24c153df2275c9f80692773"
        );
        assert_eq!(
            hex(&md2::Md2::digest(b"abc")),
            "da853b0d3f88d99b30283a69e6ded6bb"
        );
    }

    #[test]
    fn reference_vectors() {
        let m1 = vector1();
        assert_eq!(m1.to_bytes().len(), 76);
        assert_eq!(hex(&m1.digest()), "7f6f275a27abeb4f44243dc2a2be3245");

        let mut m2 = vector1();
        m2.driver_version = 13000;
        m2.version = 13002;
        m2.devices[0].pci_domain = 3;
        m2.devices[0].pci_bus = 0x41;
        m2.devices[0].pci_device = 5;
        assert_eq!(hex(&m2.digest()), "1483dd83474f43a460a4979ce37e767e");

        let mut m3 = m2.clone();
        m3.devices.push(DeviceRecord {
            uuid: core::array::from_fn(|i| i as u8 + 0x11),
            pci_domain: 0,
            pci_bus: 0x81,
            pci_device: 0,
        });
        assert_eq!(m3.to_bytes().len(), 104);
        assert_eq!(hex(&m3.digest()), "70233f53b21da7bec7e4c00e322781fb");
    }

    #[test]
    fn fixed_answers() {
        let never = || -> Message { panic!("constants need no message") };
        assert_eq!(
            hex(&answer(11080, never)),
            "5c67cb031c184133e8d14c1faa83d38e"
        );
        assert_eq!(
            hex(&answer(11081, never)),
            "5c67cb031c184118e8d14c1faa83d38e"
        );
        assert_eq!(
            u64::from_le_bytes(answer(12090, never)[..8].try_into().unwrap()),
            0x3341_181C_03CB_675C
        );
        assert_eq!(
            u64::from_le_bytes(answer(12091, never)[8..].try_into().unwrap()),
            0x8ED3_83AA_1F4C_D1E8
        );
        assert_eq!(answer(12092, vector1), vector1().digest());
    }

    #[test]
    fn slot_writes_this_process_answer() {
        let mut r = [0u64; 2];
        // SAFETY: a valid two-element array.
        let st = unsafe { check(12092, 1_795_625_437, r.as_mut_ptr()) };
        assert_eq!(st, CUresult::CUDA_SUCCESS);
        let mut want = message(12092, 1_795_625_437).digest();
        if corrupt() {
            want[0] ^= 1;
        }
        let got: Vec<u8> = r.iter().flat_map(|q| q.to_le_bytes()).collect();
        assert_eq!(got, want);
        // SAFETY: NULL is checked.
        let st = unsafe { check(12092, 0, std::ptr::null_mut()) };
        assert_eq!(st, CUresult::CUDA_ERROR_INVALID_VALUE);
        let m = message(12092, 5);
        assert_eq!(m.check_fn, check as *const () as u64);
        assert_eq!(m.integrity_table, TABLE.as_ptr() as u64);
        assert_eq!(m.pid, std::process::id());
    }
}
