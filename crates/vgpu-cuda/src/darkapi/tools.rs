//! The tools tables: profiler callback hooks, tools TLS, and 13.5's tools
//! context table. vgpu runs no profiler, so every hook stays disabled.

use super::{fun, stubs, Slot, Table, T_HOOKS, T_TLS, T_TOOLS_CONTEXT};
use std::ffi::c_void;
use std::sync::atomic::AtomicU32;

/// The callback-enable arrays cudart reads at init: all zero means no
/// callback is enabled, so the slots that would issue callbacks are never
/// called. Atomics so they live in writable memory should a tool flip an
/// entry.
static CALLBACKS_ENABLED: [AtomicU32; 1024] = [const { AtomicU32::new(0) }; 1024];
static CALLBACK_DOMAINS: [AtomicU32; 14] = [const { AtomicU32::new(0) }; 14];

/// TOOLS_RUNTIME_CALLBACK_HOOKS: 7 slots, slot 0 = 56.
pub static HOOKS: Table<7> = {
    let s = stubs!(T_HOOKS; 1 3 4 5);
    Table([
        Slot::word(56),
        s[0],
        fun!(callbacks_enabled),
        s[1],
        s[2],
        s[3],
        fun!(callback_domains),
    ])
};

/// Writes a static array's address and length through the out-pointers
/// cudart passes (`void **buffer, size_t *count`).
///
/// # Safety
/// Each pointer is null or writable.
unsafe fn hand_out(buffer: *mut *mut c_void, count: *mut usize, array: &'static [AtomicU32]) {
    // SAFETY: caller contract; null pointers are skipped.
    unsafe {
        if !buffer.is_null() {
            buffer.write_unaligned(array.as_ptr().cast_mut().cast());
        }
        if !count.is_null() {
            count.write_unaligned(array.len());
        }
    }
}

/// Slot 2.
unsafe extern "C" fn callbacks_enabled(buffer: *mut *mut c_void, count: *mut usize) {
    // SAFETY: forwarded caller contract.
    unsafe { hand_out(buffer, count, &CALLBACKS_ENABLED) }
}

/// Slot 6.
unsafe extern "C" fn callback_domains(buffer: *mut *mut c_void, count: *mut usize) {
    // SAFETY: forwarded caller contract.
    unsafe { hand_out(buffer, count, &CALLBACK_DOMAINS) }
}

/// TOOLS_TLS: 4 slots, slot 0 = 32; never called in any observed run, but
/// cudart refuses to start without it.
pub static TLS: Table<4> = {
    let s = stubs!(T_TLS; 1 2 3);
    Table([Slot::word(32), s[0], s[1], s[2]])
};

/// TOOLS_CONTEXT (13.5): 64 slots, slot 0 = 512; no slot was seen called.
pub static CONTEXT: Table<64> = {
    let s = stubs!(T_TOOLS_CONTEXT;
        1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
        32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59
        60 61 62 63);
    let mut slots = [Slot::word(512); 64];
    let mut i = 1;
    while i < 64 {
        slots[i] = s[i - 1];
        i += 1;
    }
    Table(slots)
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_arrays() {
        let mut buf: *mut c_void = std::ptr::null_mut();
        let mut n = 0usize;
        // SAFETY: valid locals.
        unsafe { callbacks_enabled(&mut buf, &mut n) };
        assert_eq!(n, 1024);
        // SAFETY: the static array just handed out, 1024 u32s.
        let a = unsafe { std::slice::from_raw_parts(buf.cast::<u32>(), n) };
        assert!(a.iter().all(|&x| x == 0));
        // SAFETY: valid locals; NULL count is skipped.
        unsafe { callback_domains(&mut buf, &mut n) };
        assert_eq!(n, 14);
        assert_eq!(buf.cast_const(), CALLBACK_DOMAINS.as_ptr().cast());
        // SAFETY: NULLs are skipped.
        unsafe { callback_domains(std::ptr::null_mut(), std::ptr::null_mut()) };
        assert!(CONTEXT.0[1..]
            .iter()
            .all(|s| s.addr() != 512 && s.addr() != 0));
    }
}
