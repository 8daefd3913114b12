//! `nvmlInternalGetExportTable` as nvidia-smi reaches it: `dlsym` on the built
//! `libvgpu_nvml.so` (it is in no header, so the generated export list does
//! not cover it). No daemon: the table is answered in the guest. Needs the
//! workspace built first (`cargo build --workspace`, same CARGO_TARGET_DIR).

use std::ffi::{c_void, CString};
use vgpu_test_support::artifacts;

type GetExportTable = unsafe extern "C" fn(*mut *const c_void, *const c_void) -> u32;
type SlotFn = unsafe extern "C" fn() -> u32;

const NVML_SUCCESS: u32 = 0;
const NVML_ERROR_INVALID_ARGUMENT: u32 = 2;
const NVML_ERROR_NOT_SUPPORTED: u32 = 3;
/// The only export-table id in the nvidia-smi 535 binary.
const SMI_ID: [u8; 16] = [
    0xc4, 0xfe, 0x3e, 0x6c, 0xc9, 0x8f, 0x6c, 0x4e, 0xa3, 0x27, 0xee, 0x69, 0x6e, 0x12, 0xf7, 0xc4,
];

/// dlopen the shim and dlsym the entry point, as nvidia-smi does.
fn entry_point() -> GetExportTable {
    let path = CString::new(artifacts().nvml_shim.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; the handle is kept for the process.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen {path:?} failed");
    // SAFETY: a valid handle and a NUL-terminated name.
    let sym = unsafe { libc::dlsym(handle, c"nvmlInternalGetExportTable".as_ptr()) };
    assert!(
        !sym.is_null(),
        "libvgpu_nvml.so does not export nvmlInternalGetExportTable"
    );
    // SAFETY: the symbol is the function with this prototype.
    unsafe { std::mem::transmute::<*mut c_void, GetExportTable>(sym) }
}

#[test]
fn nvidia_smi_table_id_gets_a_table_of_not_supported_slots() {
    let get = entry_point();
    let mut table: *const c_void = std::ptr::null();
    // SAFETY: a valid out-pointer and a 16-byte id.
    let r = unsafe { get(&mut table, SMI_ID.as_ptr().cast()) };
    assert_eq!(r, NVML_SUCCESS);
    assert!(!table.is_null());
    let slots = table.cast::<usize>();
    // SAFETY: slot 0 of a returned table is its size in bytes.
    let size = unsafe { slots.read() };
    assert!(
        size > 648,
        "nvidia-smi 580 needs more than 81 slots; size {size}"
    );
    assert_eq!(size % 8, 0);
    for i in 1..size / 8 {
        // SAFETY: `i` is below the size the table reports.
        let f = unsafe { slots.add(i).read() };
        assert_ne!(f, 0, "slot {i} is empty");
    }
    for i in [1, 81, size / 8 - 1] {
        // SAFETY: every slot after 0 is a function that ignores its arguments.
        let f: SlotFn = unsafe { std::mem::transmute::<usize, SlotFn>(slots.add(i).read()) };
        // SAFETY: as above.
        assert_eq!(unsafe { f() }, NVML_ERROR_NOT_SUPPORTED, "slot {i}");
    }
}

#[test]
fn other_ids_are_refused() {
    let get = entry_point();
    let mut wrong = SMI_ID;
    wrong[0] = 0;
    let mut table: *const c_void = std::ptr::dangling();
    // SAFETY: a valid out-pointer and a 16-byte id.
    let r = unsafe { get(&mut table, wrong.as_ptr().cast()) };
    assert_eq!(r, NVML_ERROR_INVALID_ARGUMENT);
    assert!(
        table.is_null(),
        "a refused id must not leave a table pointer"
    );
    // SAFETY: null arguments are rejected, never dereferenced.
    let r = unsafe { get(std::ptr::null_mut(), SMI_ID.as_ptr().cast()) };
    assert_eq!(r, NVML_ERROR_INVALID_ARGUMENT);
}
