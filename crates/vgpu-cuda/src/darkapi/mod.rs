//! `cuGetExportTable`: the undocumented tables ("dark API") libcudart
//! cannot start without, all answered in the guest (docs/call-path.md, "Export tables").
//!
//! A table is an array of pointer-sized slots, usually with its own size in
//! bytes in slot 0. The tables are `static`s so their addresses never change:
//! the integrity check hashes the addresses cudart was handed.
//!
//! Slots whose meaning nobody has observed are [`stub`]s: they return 0 and
//! log their table and slot once, so a library that starts calling one
//! shows up in the log instead of misbehaving silently.

mod checks;
mod cls;
mod cudart;
pub mod integrity;
mod tools;

use cuda_types::cuda::{CUresult, CUuuid};
use parking_lot::Mutex;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use vgpu_ffi::{In, Out};
use vgpu_guest::log::Level;
use vgpu_guest::vlog;

/// One slot: a function's address or a size word.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct Slot(*const c_void);

// SAFETY: a slot is written once, at compile time, with a function address
// or an integer; nothing ever mutates it, so sharing it between threads is
// sharing a constant.
unsafe impl Sync for Slot {}

impl Slot {
    /// A size (or other plain number) stored where a pointer would be.
    pub const fn word(n: usize) -> Slot {
        Slot(std::ptr::without_provenance(n))
    }

    pub const fn fun(f: *const c_void) -> Slot {
        Slot(f)
    }

    pub fn addr(self) -> usize {
        self.0 as usize
    }
}

/// A table as handed out: the address of its first slot.
#[repr(C)]
pub struct Table<const N: usize>(pub [Slot; N]);

impl<const N: usize> Table<N> {
    pub fn as_ptr(&'static self) -> *const c_void {
        (self as *const Self).cast()
    }
}

/// Puts a function into a slot, whatever its signature.
macro_rules! fun {
    ($f:expr) => {
        $crate::darkapi::Slot::fun($f as *const ::std::ffi::c_void)
    };
}
pub(crate) use fun;

/// Stub slots `$n...` of table `$t` (an index into [`TABLE_NAMES`]).
macro_rules! stubs {
    ($t:expr; $($n:literal)*) => {
        [$($crate::darkapi::fun!($crate::darkapi::stub::<{ $t }, $n>)),*]
    };
}
pub(crate) use stubs;

/// Table names for the log, indexed by the `TABLE` of [`stub`].
const TABLE_NAMES: [&str; 7] = [
    "CUDART_INTERFACE",
    "TOOLS_RUNTIME_CALLBACK_HOOKS",
    "TOOLS_TLS",
    "TOOLS_CONTEXT",
    "CONTEXT_LOCAL_STORAGE",
    "CONTEXT_CHECKS",
    "INTEGRITY_CHECK",
];
const T_CUDART: usize = 0;
const T_HOOKS: usize = 1;
const T_TLS: usize = 2;
const T_TOOLS_CONTEXT: usize = 3;
const T_CHECKS: usize = 5;
const T_INTEGRITY: usize = 6;

/// One bit per (table, slot < 64) already logged.
static STUB_LOGGED: [AtomicU64; TABLE_NAMES.len()] = [const { AtomicU64::new(0) }; 7];

/// A slot whose meaning is unknown. Callers may pass any arguments: under
/// the C calling convention a callee that ignores them is safe, and 0 in
/// the return register reads as CUDA_SUCCESS, a zero count, or nothing for
/// a `void` function.
pub extern "C" fn stub<const TABLE: usize, const SLOT: usize>() -> usize {
    let bit = 1u64 << (SLOT % 64);
    if STUB_LOGGED[TABLE].fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        vlog!(
            Level::Debug,
            "export table {}[{SLOT}] called (stub, returns 0)",
            TABLE_NAMES[TABLE]
        );
    }
    0
}

/// Table ids in `CUuuid.bytes` order (what a memcmp against the argument
/// must match).
const CUDART_INTERFACE: [u8; 16] =
    *b"\x6b\xd5\xfb\x6c\x5b\xf4\xe7\x4a\x89\x87\xd9\x39\x12\xfd\x9d\xf9";
const TOOLS_RUNTIME_CALLBACK_HOOKS: [u8; 16] =
    *b"\xa0\x94\x79\x8c\x2e\x74\x2e\x74\x93\xf2\x08\x00\x20\x0c\x0a\x66";
const TOOLS_TLS: [u8; 16] = *b"\x42\xd8\x5a\x81\x23\xf6\xcb\x47\x82\x98\xf6\xe7\x8a\x3a\xec\xdc";
const TOOLS_CONTEXT: [u8; 16] =
    *b"\x21\x31\x8c\x60\x97\x14\x32\x48\x8c\xa6\x41\xff\x73\x24\xc8\xf2";
const CONTEXT_LOCAL_STORAGE: [u8; 16] =
    *b"\xc6\x93\x33\x6e\x11\x21\xdf\x11\xa8\xc3\x68\xf3\x55\xd8\x95\x93";
const CONTEXT_CHECKS: [u8; 16] =
    *b"\x26\x3e\x88\x60\x7c\xd2\x61\x43\x92\xf6\xbb\xd5\x00\x6d\xfa\x7e";
const INTEGRITY_CHECK: [u8; 16] =
    *b"\xd4\x08\x20\x55\xbd\xe6\x70\x4b\x8d\x34\xba\x12\x3c\x66\xe1\xf2";

/// The table with this id, if vgpu has one.
pub fn table(id: &[u8; 16]) -> Option<*const c_void> {
    Some(match *id {
        CUDART_INTERFACE => cudart::TABLE.as_ptr(),
        TOOLS_RUNTIME_CALLBACK_HOOKS => tools::HOOKS.as_ptr(),
        TOOLS_TLS => tools::TLS.as_ptr(),
        TOOLS_CONTEXT => tools::CONTEXT.as_ptr(),
        CONTEXT_LOCAL_STORAGE => cls::TABLE.as_ptr(),
        CONTEXT_CHECKS => checks::TABLE.as_ptr(),
        INTEGRITY_CHECK => integrity::TABLE.as_ptr(),
        _ => return None,
    })
}

fn format_id(id: &[u8; 16]) -> String {
    let h: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Ids refused so far, so each is logged once: the tables other libraries
/// ask for are how vgpu learns what to implement next. cudart 12.9+ asks
/// `f8cff951-…` and NVRTC `da9151d3-…` on every start and need no answer.
fn log_refused(id: &[u8; 16]) {
    static REFUSED: Mutex<Vec<[u8; 16]>> = Mutex::new(Vec::new());
    let mut seen = REFUSED.lock();
    if !seen.contains(id) {
        seen.push(*id);
        vlog!(
            Level::Info,
            "cuGetExportTable: unknown table {} refused (CUDA_ERROR_INVALID_VALUE)",
            format_id(id)
        );
    }
}

/// Needs no `cuInit`: cudart 12.9+ asks for a table before initialising.
pub fn get_export_table(out: Out<*const c_void>, id: In<CUuuid>) -> Result<(), CUresult> {
    let id: [u8; 16] = id.read().bytes.map(|b| b as u8);
    let found = table(&id);
    out.write(found.unwrap_or(std::ptr::null()));
    if found.is_none() {
        log_refused(&id);
        return Err(CUresult::CUDA_ERROR_INVALID_VALUE);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through the export, as cudart calls it (before cuInit).
    fn export(out: *mut *const c_void, id: *const CUuuid) -> Result<(), CUresult> {
        // SAFETY: the tests pass live locals or NULL.
        match unsafe { crate::cuGetExportTable(out, id) } {
            CUresult::CUDA_SUCCESS => Ok(()),
            e => Err(e),
        }
    }

    fn get(id: [u8; 16]) -> (Result<(), CUresult>, *const c_void) {
        let mut out: *const c_void = std::ptr::dangling::<c_void>();
        let uuid = CUuuid {
            bytes: id.map(|b| b as std::ffi::c_char),
        };
        let r = export(&mut out, &uuid);
        (r, out)
    }

    /// Slot 0 of the sized tables, read as cudart reads it.
    fn size_word(id: [u8; 16]) -> usize {
        let (r, p) = get(id);
        r.unwrap();
        // SAFETY: a table we handed out; slot 0 is a usize-sized word.
        unsafe { p.cast::<usize>().read() }
    }

    #[test]
    fn sized_tables() {
        assert_eq!(size_word(CUDART_INTERFACE), 104);
        assert_eq!(size_word(TOOLS_RUNTIME_CALLBACK_HOOKS), 56);
        assert_eq!(size_word(TOOLS_TLS), 32);
        assert_eq!(size_word(TOOLS_CONTEXT), 512);
        assert_eq!(size_word(CONTEXT_CHECKS), 72);
        assert_eq!(size_word(INTEGRITY_CHECK), 24);
        // Each size matches the static's real length.
        assert_eq!(size_of_val(&cudart::TABLE), 104);
        assert_eq!(size_of_val(&tools::HOOKS), 56);
        assert_eq!(size_of_val(&tools::TLS), 32);
        assert_eq!(size_of_val(&tools::CONTEXT), 512);
        assert_eq!(size_of_val(&checks::TABLE), 72);
        assert_eq!(size_of_val(&integrity::TABLE), 24);
        assert_eq!(size_of_val(&cls::TABLE), 24);
        // Same address every time.
        assert_eq!(get(INTEGRITY_CHECK).1, get(INTEGRITY_CHECK).1);
        assert_eq!(get(CONTEXT_LOCAL_STORAGE).1, cls::TABLE.as_ptr());
    }

    #[test]
    fn unknown_tables_are_refused() {
        for id in [
            *b"\xf8\xcf\xf9\x51\x21\x46\x8b\x4e\xb9\xe2\xfb\x46\x9e\x7c\x0d\xd9",
            *b"\xda\x91\x51\xd3\x3a\xe6\xcc\x41\xa5\xc0\x4f\x26\xd5\x33\xe3\x28",
            [0; 16],
        ] {
            for _ in 0..2 {
                let (r, p) = get(id);
                assert_eq!(r, Err(CUresult::CUDA_ERROR_INVALID_VALUE));
                assert!(p.is_null());
            }
        }
        let mut out = std::ptr::null();
        assert_eq!(
            export(&mut out, std::ptr::null()),
            Err(CUresult::CUDA_ERROR_INVALID_VALUE)
        );
        let id = CUuuid { bytes: [0; 16] };
        assert_eq!(
            export(std::ptr::null_mut(), &id),
            Err(CUresult::CUDA_ERROR_INVALID_VALUE)
        );
        assert_eq!(
            format_id(b"\xf8\xcf\xf9\x51\x21\x46\x8b\x4e\xb9\xe2\xfb\x46\x9e\x7c\x0d\xd9"),
            "f8cff951-2146-8b4e-b9e2-fb469e7c0dd9"
        );
    }

    #[test]
    fn stubs_return_zero() {
        assert_eq!(stub::<T_TOOLS_CONTEXT, 5>(), 0);
        assert_eq!(stub::<T_TOOLS_CONTEXT, 5>(), 0);
    }
}
