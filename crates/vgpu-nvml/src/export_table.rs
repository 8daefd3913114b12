//! `nvmlInternalGetExportTable`, NVML's private counterpart of the CUDA
//! driver's `cuGetExportTable` (docs/call-path.md, "Export tables").
//!
//! nvidia-smi 535.309.01 loads libnvidia-ml.so.1, calls `nvmlInitWithFlags`
//! and then `dlsym("nvmlInternalGetExportTable")`; without that symbol it
//! prints "Mismatch in versions between nvidia-smi and NVML" and exits 255.
//! The function is in no public header, so it is not part of the generated
//! export list and is exported here by hand.
//!
//! What is known, and what is inferred:
//! * Signature **(inference, from public reimplementations: lupinemachines/
//!   lupine `nvml_client.cpp`, NVIDIA/k8s-test-infra's mock NVML, Wine's nvml
//!   thunk)**: `nvmlReturn_t nvmlInternalGetExportTable(const void
//!   **ppExportTable, const nvmlExportTableId_t *pId)`, the id being 16 bytes
//!   compared like a `CUuuid`.
//! * The only id in the nvidia-smi 535 binary is [`NVIDIA_SMI_TABLE_ID`]
//!   (observed, docs/clients.md "nvidia-smi").
//! * Table layout **(inference)**: like the driver's tables, an array of
//!   pointer-sized slots whose slot 0 holds the table's size in bytes. The
//!   k8s-test-infra mock notes that nvidia-smi 580 requires that size to be
//!   above 648 (it calls slot 81); lupine answers with 512 slots. We hand out
//!   [`SLOTS`] = 512 slots, size word 4096.
//! * No slot's meaning is implemented. Every slot is a function that logs its
//!   slot number once and returns `NVML_ERROR_NOT_SUPPORTED` without touching
//!   its arguments, so a caller that checks the status never reads an output
//!   we did not write (the k8s-test-infra mock found that returning SUCCESS
//!   from a process-list slot without writing the count makes nvidia-smi
//!   print its uninitialised buffer). Which slots a given nvidia-smi calls
//!   shows up in the log (`VGPU_LOG=debug`); that is the list to implement
//!   from.
//!
//! An unknown id gets `NVML_ERROR_INVALID_ARGUMENT`, `*ppExportTable = NULL`,
//! and one warning naming the id.

use cuda_types::nvml::nvmlReturn_t;
use parking_lot::Mutex;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use vgpu_ffi::log::Level;
use vgpu_ffi::{from_cuda, vlog, In, Out, Status};

/// The table nvidia-smi asks for, in the byte order a `memcmp` against the
/// argument must match.
pub const NVIDIA_SMI_TABLE_ID: [u8; 16] = [
    0xc4, 0xfe, 0x3e, 0x6c, 0xc9, 0x8f, 0x6c, 0x4e, 0xa3, 0x27, 0xee, 0x69, 0x6e, 0x12, 0xf7, 0xc4,
];

/// Slots of the table, slot 0 (the size word) included.
pub const SLOTS: usize = 512;

/// One pointer-sized slot: a function address or the size word.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct Slot(*const c_void);

// SAFETY: every slot is fixed at compile time (a function address or an
// integer) and never written afterwards, so sharing it is sharing a constant.
unsafe impl Sync for Slot {}

/// The table as handed out: the address of slot 0.
#[repr(C)]
pub struct Table(pub [Slot; SLOTS]);

type StubFn = extern "C" fn() -> nvmlReturn_t;

/// One bit per slot already logged.
static LOGGED: [AtomicU64; SLOTS / 64] = [const { AtomicU64::new(0) }; SLOTS / 64];

/// Slot `SLOT` of the table. Callers may pass any arguments: under the C
/// calling convention a callee that ignores them is safe, and the status is
/// returned in the return register whatever the caller's prototype.
pub extern "C" fn stub<const SLOT: usize>() -> nvmlReturn_t {
    let bit = 1u64 << (SLOT % 64);
    if LOGGED[SLOT / 64].fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        vlog!(
            Level::Warn,
            "nvmlInternalGetExportTable slot {SLOT} called: not supported by vgpu \
             (NVML_ERROR_NOT_SUPPORTED)"
        );
    }
    nvmlReturn_t::NOT_SUPPORTED
}

/// Sixteen stubs, slots `16*hi .. 16*hi+15`.
macro_rules! row {
    ($hi:literal) => {
        [
            stub::<{ $hi * 16 }> as StubFn,
            stub::<{ $hi * 16 + 1 }>,
            stub::<{ $hi * 16 + 2 }>,
            stub::<{ $hi * 16 + 3 }>,
            stub::<{ $hi * 16 + 4 }>,
            stub::<{ $hi * 16 + 5 }>,
            stub::<{ $hi * 16 + 6 }>,
            stub::<{ $hi * 16 + 7 }>,
            stub::<{ $hi * 16 + 8 }>,
            stub::<{ $hi * 16 + 9 }>,
            stub::<{ $hi * 16 + 10 }>,
            stub::<{ $hi * 16 + 11 }>,
            stub::<{ $hi * 16 + 12 }>,
            stub::<{ $hi * 16 + 13 }>,
            stub::<{ $hi * 16 + 14 }>,
            stub::<{ $hi * 16 + 15 }>,
        ]
    };
}

/// All [`SLOTS`] stubs in rows of sixteen (32 rows).
const STUBS: [[StubFn; 16]; SLOTS / 16] = [
    row!(0),
    row!(1),
    row!(2),
    row!(3),
    row!(4),
    row!(5),
    row!(6),
    row!(7),
    row!(8),
    row!(9),
    row!(10),
    row!(11),
    row!(12),
    row!(13),
    row!(14),
    row!(15),
    row!(16),
    row!(17),
    row!(18),
    row!(19),
    row!(20),
    row!(21),
    row!(22),
    row!(23),
    row!(24),
    row!(25),
    row!(26),
    row!(27),
    row!(28),
    row!(29),
    row!(30),
    row!(31),
];

/// The table for [`NVIDIA_SMI_TABLE_ID`]; a `static`, so its address never
/// changes between calls.
pub static NVIDIA_SMI_TABLE: Table = {
    let mut slots = [Slot(std::ptr::null()); SLOTS];
    slots[0] = Slot(std::ptr::without_provenance(
        SLOTS * std::mem::size_of::<Slot>(),
    ));
    let mut i = 1;
    while i < SLOTS {
        slots[i] = Slot(STUBS[i / 16][i % 16] as *const c_void);
        i += 1;
    }
    Table(slots)
};

/// Unknown ids already logged (a caller may retry one in a loop).
static REFUSED: Mutex<Vec<[u8; 16]>> = Mutex::new(Vec::new());

fn hex(id: &[u8; 16]) -> String {
    id.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The body, with its arguments converted at the boundary: a NULL table
/// pointer or id is NVML_ERROR_INVALID_ARGUMENT before anything is read.
fn get(table: Out<*const c_void>, id: In<[u8; 16]>) -> Result<(), nvmlReturn_t> {
    let id = id.read();
    if id == NVIDIA_SMI_TABLE_ID {
        table.write((&NVIDIA_SMI_TABLE as *const Table).cast());
        vlog!(
            Level::Debug,
            "nvmlInternalGetExportTable({}) -> table of {SLOTS} stub slots",
            hex(&id)
        );
        return Ok(());
    }
    table.write(std::ptr::null());
    let mut refused = REFUSED.lock();
    if !refused.contains(&id) {
        refused.push(id);
        vlog!(
            Level::Warn,
            "nvmlInternalGetExportTable: unknown table id {} (NVML_ERROR_INVALID_ARGUMENT)",
            hex(&id)
        );
    }
    Err(nvmlReturn_t::INVALID_ARGUMENT)
}

/// `nvmlReturn_t nvmlInternalGetExportTable(const void **ppExportTable,
/// const nvmlExportTableId_t *pId)` — see the module documentation. Exported
/// by hand, but through the same boundary and conversions as the generated
/// exports.
///
/// # Safety
/// `pp_export_table` must be null or writable; `p_id` null or readable for
/// 16 bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlInternalGetExportTable(
    pp_export_table: *mut *const c_void,
    p_id: *const c_void,
) -> nvmlReturn_t {
    vgpu_ffi::boundary("nvmlInternalGetExportTable", || {
        // SAFETY: the caller's promise for both pointers, passed on to the
        // conversions, which check them for NULL.
        unsafe {
            get(
                from_cuda::<_, _, nvmlReturn_t>(pp_export_table)?,
                from_cuda::<_, _, nvmlReturn_t>(p_id.cast::<[u8; 16]>())?,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(table: *const c_void, i: usize) -> usize {
        // SAFETY: `table` is NVIDIA_SMI_TABLE, SLOTS slots long.
        unsafe { table.cast::<usize>().add(i).read() }
    }

    #[test]
    fn answers_the_nvidia_smi_id_with_a_sized_table() {
        let mut table: *const c_void = std::ptr::null();
        // SAFETY: valid out-pointer and a 16-byte id.
        let r =
            unsafe { nvmlInternalGetExportTable(&mut table, NVIDIA_SMI_TABLE_ID.as_ptr().cast()) };
        assert_eq!(r, nvmlReturn_t::NVML_SUCCESS);
        assert!(!table.is_null());
        assert_eq!(slot(table, 0), SLOTS * 8);
        // The same table every time (callers may keep the pointer).
        let mut again: *const c_void = std::ptr::null();
        // SAFETY: as above.
        let r =
            unsafe { nvmlInternalGetExportTable(&mut again, NVIDIA_SMI_TABLE_ID.as_ptr().cast()) };
        assert_eq!(r, nvmlReturn_t::NVML_SUCCESS);
        assert_eq!(table, again);
    }

    #[test]
    fn every_slot_is_a_distinct_not_supported_stub() {
        let mut seen = std::collections::HashSet::new();
        for i in 1..SLOTS {
            let addr = slot(NVIDIA_SMI_TABLE.0.as_ptr().cast(), i);
            assert_ne!(addr, 0, "slot {i}");
            assert!(seen.insert(addr), "slot {i} shares its function");
        }
        for i in [1usize, 81, 213, 511] {
            let addr = slot(NVIDIA_SMI_TABLE.0.as_ptr().cast(), i);
            // SAFETY: every slot >= 1 holds a `StubFn`; arguments are ignored.
            let f: StubFn = unsafe { std::mem::transmute::<usize, StubFn>(addr) };
            assert_eq!(f(), nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED, "slot {i}");
            assert_eq!(
                f(),
                nvmlReturn_t::NVML_ERROR_NOT_SUPPORTED,
                "slot {i} again"
            );
        }
    }

    #[test]
    fn refuses_other_ids_and_null_arguments() {
        let mut wrong = NVIDIA_SMI_TABLE_ID;
        wrong[15] ^= 1;
        let mut table: *const c_void = std::ptr::dangling();
        // SAFETY: valid out-pointer and a 16-byte id.
        let r = unsafe { nvmlInternalGetExportTable(&mut table, wrong.as_ptr().cast()) };
        assert_eq!(r, nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
        assert!(table.is_null());
        // The CUDART_INTERFACE id of the CUDA driver is not an NVML table.
        let cudart: [u8; 16] = [
            0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a, 0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd,
            0x9d, 0xf9,
        ];
        // SAFETY: as above.
        let r = unsafe { nvmlInternalGetExportTable(&mut table, cudart.as_ptr().cast()) };
        assert_eq!(r, nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT);
        // SAFETY: null arguments are checked, never dereferenced.
        unsafe {
            assert_eq!(
                nvmlInternalGetExportTable(
                    std::ptr::null_mut(),
                    NVIDIA_SMI_TABLE_ID.as_ptr().cast()
                ),
                nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT
            );
            assert_eq!(
                nvmlInternalGetExportTable(&mut table, std::ptr::null()),
                nvmlReturn_t::NVML_ERROR_INVALID_ARGUMENT
            );
        }
    }
}
