//! Kernel arguments (docs/call-path.md, "Kernel parameters"): `kernelParams` is one pointer per
//! parameter with no sizes, so packing needs the kernel's (offset, size)
//! layout; `extra` is `{CU_LAUNCH_PARAM_BUFFER_POINTER, buf,
//! CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END}` with the
//! arguments already packed. Both directions live here: the guest side and
//! the software GPU read these arrays, the host worker builds them.

use cuda_types::cuda::{
    CU_LAUNCH_PARAM_BUFFER_POINTER_AS_INT, CU_LAUNCH_PARAM_BUFFER_SIZE_AS_INT,
    CU_LAUNCH_PARAM_END_AS_INT,
};
use std::ffi::c_void;

const END: usize = CU_LAUNCH_PARAM_END_AS_INT as usize;
const BUFFER_POINTER: usize = CU_LAUNCH_PARAM_BUFFER_POINTER_AS_INT as usize;
const BUFFER_SIZE: usize = CU_LAUNCH_PARAM_BUFFER_SIZE_AS_INT as usize;

/// Bytes a packed buffer needs for a layout: the end of the parameter that
/// ends last (the layout need not be sorted).
pub fn params_size(layout: &[(u32, u32)]) -> usize {
    layout
        .iter()
        .map(|&(o, s)| o as usize + s as usize)
        .max()
        .unwrap_or(0)
}

/// What a NULL entry of `kernelParams` means to the caller. The real
/// driver would dereference it; callers differ in how they survive that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NullArgs {
    /// Leave the parameter's bytes zero.
    Zero,
    /// Refuse the launch.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackError {
    /// The kernel has parameters but `kernelParams` is NULL.
    NullArray,
    /// `kernelParams[index]` is NULL (only under [`NullArgs::Reject`]).
    NullArgument { index: usize },
}

/// Copies the value `kernel_params[i]` points at to the i-th layout entry's
/// offset in a zeroed buffer of `len` bytes. A kernel without parameters
/// never reads `kernel_params`.
///
/// # Panics
/// If a layout entry ends past `len`: layouts come from the kernel's own
/// metadata, which never does that.
///
/// # Safety
/// When the layout is not empty, `kernel_params` is NULL or holds one
/// readable pointer per layout entry, each non-NULL one to at least that
/// entry's size of readable bytes (the cuLaunchKernel contract).
pub unsafe fn pack<I>(
    layout: I,
    len: usize,
    kernel_params: *const *const c_void,
    nulls: NullArgs,
) -> Result<Vec<u8>, PackError>
where
    I: IntoIterator<Item = (u32, u32)>,
{
    let mut buf = Vec::new();
    // SAFETY: forwarded contract.
    unsafe { pack_into(&mut buf, layout, len, kernel_params, nulls) }?;
    Ok(buf)
}

/// [`pack`] into a buffer the caller keeps (its old contents replaced), so
/// that a caller launching again and again allocates nothing.
///
/// # Safety
/// As [`pack`].
pub unsafe fn pack_into<I>(
    buf: &mut Vec<u8>,
    layout: I,
    len: usize,
    kernel_params: *const *const c_void,
    nulls: NullArgs,
) -> Result<(), PackError>
where
    I: IntoIterator<Item = (u32, u32)>,
{
    buf.clear();
    buf.resize(len, 0);
    let mut layout = layout.into_iter().peekable();
    if layout.peek().is_none() {
        return Ok(());
    }
    if kernel_params.is_null() {
        return Err(PackError::NullArray);
    }
    for (index, (off, size)) in layout.enumerate() {
        // SAFETY: the caller's contract: one pointer per parameter.
        let arg = unsafe { *kernel_params.add(index) }.cast::<u8>();
        if arg.is_null() {
            match nulls {
                NullArgs::Zero => continue,
                NullArgs::Reject => return Err(PackError::NullArgument { index }),
            }
        }
        let dst = &mut buf[off as usize..off as usize + size as usize];
        // SAFETY: a non-NULL argument is `size` readable bytes (contract).
        dst.copy_from_slice(unsafe { std::slice::from_raw_parts(arg, size as usize) });
    }
    Ok(())
}

/// A real `extra` array has at most the two pairs and END; a caller that
/// passes this as the limit treats a longer one as a missing terminator
/// instead of walking on through whatever memory follows.
pub const EXTRA_WORDS: usize = 16;

/// The two values an `extra` array gave, as given: either may be missing
/// and the buffer may be NULL; what is acceptable is the caller's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extra {
    pub buffer: Option<*const u8>,
    /// The `size_t` that BUFFER_SIZE's value points at.
    pub size: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtraError {
    /// BUFFER_SIZE's value is NULL.
    NullSize,
    UnknownKey(usize),
    /// No END within the caller's limit.
    NoEnd,
}

/// Walks an `extra` array to its END, in whatever order the keys come; a
/// key given twice keeps its last value.
///
/// # Safety
/// `extra` is non-NULL and readable up to its END or `max_words` pointers,
/// whichever comes first; every key but END is followed by its value;
/// BUFFER_SIZE's value, when not NULL, points at a readable `size_t`.
pub unsafe fn parse_extra(
    extra: *const *const c_void,
    max_words: usize,
) -> Result<Extra, ExtraError> {
    let mut found = Extra {
        buffer: None,
        size: None,
    };
    for i in (0..max_words).step_by(2) {
        // SAFETY: the array continues until END (contract).
        let key = unsafe { *extra.add(i) } as usize;
        match key {
            END => return Ok(found),
            // SAFETY: a key's value follows it.
            BUFFER_POINTER => found.buffer = Some(unsafe { *extra.add(i + 1) }.cast::<u8>()),
            BUFFER_SIZE => {
                // SAFETY: a key's value follows it.
                let p = unsafe { *extra.add(i + 1) }.cast::<usize>();
                if p.is_null() {
                    return Err(ExtraError::NullSize);
                }
                // SAFETY: BUFFER_SIZE's value points at a size_t (contract);
                // the application need not have aligned it.
                found.size = Some(unsafe { p.read_unaligned() });
            }
            _ => return Err(ExtraError::UnknownKey(key)),
        }
    }
    Err(ExtraError::NoEnd)
}

/// The `extra` array that hands a packed buffer to cuLaunchKernel.
///
/// The pointers are only stored: the array is valid for as long as
/// `buffer` and `size` are.
pub fn extra_array(buffer: *mut c_void, size: *mut usize) -> [*mut c_void; 5] {
    // cuda.h's keys are these small integers cast to pointers.
    let key = std::ptr::without_provenance_mut::<c_void>;
    [
        key(BUFFER_POINTER),
        buffer,
        key(BUFFER_SIZE),
        size.cast(),
        key(END),
    ]
}

/// The `kernelParams` array that points into a packed buffer, one pointer
/// per layout entry: what a call without `extra`
/// (cuLaunchCooperativeKernel) needs.
///
/// The pointers are computed, not dereferenced: they are valid to read
/// where the caller checked that the buffer holds [`params_size`] bytes.
pub fn arg_pointers(buf: &mut [u8], layout: &[(u32, u32)]) -> Vec<*mut c_void> {
    let base = buf.as_mut_ptr();
    layout
        .iter()
        .map(|&(off, _)| base.wrapping_add(off as usize).cast())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_size_is_the_furthest_end() {
        let l = [(0, 24), (24, 1), (32, 32), (64, 2), (72, 8), (80, 8)];
        assert_eq!(params_size(&l), 88);
        assert_eq!(params_size(&[]), 0);
        assert_eq!(params_size(&[(8, 8), (0, 4)]), 16);
    }

    #[test]
    fn packs_struct_by_value_layout() {
        // docs/call-path.md "Parameter layout from PTX": (struct{float;double;char[3]}, char, struct(16){int[5]},
        // short, const float*, double).
        let layout = [(0, 24), (24, 1), (32, 32), (64, 2), (72, 8), (80, 8)];
        let p0: Vec<u8> = (1..=24).collect();
        let p1 = [0x7fu8];
        let p2: Vec<u8> = (100..132).collect();
        let p3 = 0xbeefu16.to_le_bytes();
        let p4 = 0x7000_0000_1234u64.to_le_bytes();
        let p5 = 2.5f64.to_le_bytes();
        let ptrs: [*const c_void; 6] = [
            p0.as_ptr().cast(),
            p1.as_ptr().cast(),
            p2.as_ptr().cast(),
            p3.as_ptr().cast(),
            p4.as_ptr().cast(),
            p5.as_ptr().cast(),
        ];
        // SAFETY: one live argument of the right size per parameter.
        let buf = unsafe { pack(layout, params_size(&layout), ptrs.as_ptr(), NullArgs::Zero) };
        let buf = buf.unwrap();
        assert_eq!(buf.len(), 88);
        assert_eq!(&buf[0..24], &p0[..]);
        assert_eq!(buf[24], 0x7f);
        assert_eq!(&buf[25..32], &[0; 7]);
        assert_eq!(&buf[32..64], &p2[..]);
        assert_eq!(&buf[64..66], &p3);
        assert_eq!(&buf[72..80], &p4);
        assert_eq!(&buf[80..88], &p5);
    }

    #[test]
    fn null_arguments_follow_the_policy() {
        let layout = [(0, 4), (8, 8)];
        let a = 7u32.to_le_bytes();
        let ptrs: [*const c_void; 2] = [a.as_ptr().cast(), std::ptr::null()];
        let run = |nulls, params: *const *const c_void| {
            // SAFETY: one pointer per parameter, live, or a NULL array.
            unsafe { pack(layout, 16, params, nulls) }
        };
        let mut want = vec![0u8; 16];
        want[..4].copy_from_slice(&a);
        assert_eq!(run(NullArgs::Zero, ptrs.as_ptr()), Ok(want));
        assert_eq!(
            run(NullArgs::Reject, ptrs.as_ptr()),
            Err(PackError::NullArgument { index: 1 })
        );
        assert_eq!(
            run(NullArgs::Reject, std::ptr::null()),
            Err(PackError::NullArray)
        );
        // SAFETY: no parameters: the array is never read.
        let none = unsafe { pack([], 0, std::ptr::null(), NullArgs::Reject) };
        assert_eq!(none, Ok(vec![]));
    }

    fn extra(items: &[usize], max_words: usize) -> Result<Extra, ExtraError> {
        let v: Vec<*const c_void> = items.iter().map(|&i| i as *const c_void).collect();
        // SAFETY: test arrays follow the protocol or end within the limit.
        unsafe { parse_extra(v.as_ptr(), max_words) }
    }

    #[test]
    fn extra_protocol() {
        let size: usize = 8;
        let (a, s) = (0x1000usize, &size as *const usize as usize);
        let both = Extra {
            buffer: Some(a as *const u8),
            size: Some(8),
        };
        assert_eq!(extra(&[1, a, 2, s, 0], EXTRA_WORDS), Ok(both));
        assert_eq!(extra(&[2, s, 1, a, 0], EXTRA_WORDS), Ok(both));
        assert_eq!(
            extra(&[1, a, 0], EXTRA_WORDS),
            Ok(Extra {
                buffer: Some(a as *const u8),
                size: None
            })
        );
        assert_eq!(
            extra(&[0], EXTRA_WORDS),
            Ok(Extra {
                buffer: None,
                size: None
            })
        );
        assert_eq!(
            extra(&[3, a, 2, s, 0], EXTRA_WORDS),
            Err(ExtraError::UnknownKey(3))
        );
        assert_eq!(
            extra(&[1, a, 2, 0, 0], EXTRA_WORDS),
            Err(ExtraError::NullSize)
        );
        let endless: Vec<usize> = [1, a].repeat(9);
        assert_eq!(extra(&endless, EXTRA_WORDS), Err(ExtraError::NoEnd));
        let mut long = endless.clone();
        long.push(0);
        assert_eq!(extra(&long, usize::MAX).map(|e| e.size), Ok(None));
    }

    #[test]
    fn built_arrays_parse_back() {
        let mut args = [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let mut size = args.len();
        let e = extra_array(args.as_mut_ptr().cast(), &mut size);
        // SAFETY: a five-word array that ends in END; `size` is live.
        let parsed = unsafe { parse_extra(e.as_ptr().cast(), EXTRA_WORDS) };
        assert_eq!(
            parsed,
            Ok(Extra {
                buffer: Some(args.as_ptr()),
                size: Some(12)
            })
        );
        let layout = [(0, 4), (8, 4)];
        let ptrs = arg_pointers(&mut args, &layout);
        let consts: Vec<*const c_void> = ptrs.iter().map(|&p| p.cast_const()).collect();
        // SAFETY: the pointers are into `args`, which holds params_size bytes.
        let packed = unsafe { pack(layout, 12, consts.as_ptr(), NullArgs::Reject) };
        assert_eq!(packed, Ok(vec![1, 2, 3, 4, 0, 0, 0, 0, 9, 10, 11, 12]));
    }
}
