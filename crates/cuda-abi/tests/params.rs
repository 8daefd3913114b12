//! Parameter layouts read from images nvcc made (tests/data, rebuilt by
//! tests/data/make.sh), against layouts computed independently: Rust's
//! `#[repr(C)]` layout of each kernel's parameter list, with the CUDA types'
//! sizes and alignments (CUDA lays parameters out like struct members).
//! Then malformed images: cut short, mutated, or not images at all.

use cuda_abi::image::{self, ImageError};
use cuda_abi::params::{
    cubin_layouts, param_layouts, ptx_layouts, KernelLayouts, Layout, LayoutError, Layouts, Source,
};
use std::collections::HashMap;
use std::mem::{offset_of, size_of};

/// (offset, size) of each field of a `#[repr(C)]` struct with these fields.
macro_rules! c_layout {
    ($($name:ident : $t:ty),* $(,)?) => {{
        #[repr(C)]
        #[allow(dead_code)]
        struct Args { $($name: $t),* }
        vec![$((offset_of!(Args, $name) as u32, size_of::<$t>() as u32)),*]
    }};
}

// The structs of params.cu and big.cu, and CUDA's vector types
// (vector_types.h: float4 is 16-aligned, int2 8-aligned, short2 4-aligned).
#[repr(C)]
struct S12([i32; 3]);
#[repr(C)]
struct S40 {
    _d: [f64; 4],
    _c: i8,
}
#[repr(C, align(16))]
struct A16([i32; 5]);
#[repr(C, align(16))]
struct Float4([f32; 4]);
#[repr(C, align(8))]
struct Int2([i32; 2]);
#[repr(C, align(4))]
struct Short2([i16; 2]);
#[repr(C)]
struct Big([u8; 16400]);

/// Every kernel of params.cu with its layout.
fn params_cu() -> HashMap<String, Layout> {
    let k = |name: &str, l: Layout| (name.to_owned(), l);
    HashMap::from([
        k(
            "mixed",
            c_layout!(c: i8, s: i16, i: i32, d: f64, p: *mut f32, s12: S12, s40: S40, tail: i8),
        ),
        k("grid_const", c_layout!(g: S40, out: *mut i32, a: A16)),
        k(
            "vectors",
            c_layout!(b: bool, v: Float4, w: Int2, r: *const f32, x: i64, h: Short2),
        ),
        k("no_params", vec![]),
        k("unused", c_layout!(a: i32, b: f64, c: i8)),
        k(
            "_Z5scaleIfEvPT_S0_y",
            c_layout!(x: *mut f32, k: f32, n: u64),
        ),
        k(
            "_Z5scaleIsEvPT_S0_y",
            c_layout!(x: *mut i16, k: i16, n: u64),
        ),
    ])
}

fn big_cu() -> HashMap<String, Layout> {
    HashMap::from([(
        "big".to_owned(),
        c_layout!(a: i32, b: Big, s: Short2, out: *mut f64),
    )])
}

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every layout Ok, and exactly the kernels expected.
fn all_ok(kernels: &KernelLayouts) -> HashMap<String, Layout> {
    kernels
        .iter()
        .map(|(k, l)| (k.clone(), l.clone().unwrap_or_else(|e| panic!("{k}: {e}"))))
        .collect()
}

fn layouts(name: &str, sm: u32) -> Layouts {
    param_layouts(&data(name), sm).unwrap_or_else(|e| panic!("{name} for sm_{sm}: {e}"))
}

#[test]
fn the_oracle_lays_parameters_out_like_c() {
    // The oracle itself, against offsets worked out by hand.
    let mixed = &params_cu()["mixed"];
    assert_eq!(
        mixed,
        &[
            (0, 1),
            (2, 2),
            (4, 4),
            (8, 8),
            (16, 8),
            (24, 12),
            (40, 40),
            (80, 1)
        ]
    );
    assert_eq!(params_cu()["vectors"][1], (16, 16));
}

#[test]
fn cubins_for_sm_80_and_sm_90() {
    for name in ["params.sm_80.cubin", "params.sm_90.cubin"] {
        let l = layouts(name, 90);
        assert_eq!(l.source, Source::Cubin { arch: None }, "{name}");
        assert_eq!(all_ok(&l.kernels), params_cu(), "{name}");
    }
}

#[test]
fn ptx_with_and_without_its_nul() {
    let mut ptx = data("params.sm_80.ptx");
    let l = param_layouts(&ptx, 90).unwrap();
    assert_eq!(l.source, Source::Ptx { arch: None });
    assert_eq!(all_ok(&l.kernels), params_cu());
    ptx.push(0);
    ptx.extend_from_slice(b".entry after_the_nul() {}");
    assert_eq!(
        all_ok(&param_layouts(&ptx, 90).unwrap().kernels),
        params_cu()
    );
}

#[test]
fn parameters_too_large_for_the_first_record_format() {
    let cubin = data("big.sm_90.cubin");
    assert_eq!(all_ok(&cubin_layouts(&cubin).unwrap()), big_cu());
    let ptx = data("big.sm_90.ptx");
    assert_eq!(all_ok(&ptx_layouts(&ptx).unwrap()), big_cu());
}

#[test]
fn fatbin_with_sass_and_compressed_ptx_reads_what_the_device_loads() {
    // sm_90 SASS and compute_90 PTX (ZSTD-compressed by nvcc's default).
    for (sm, source) in [
        (90, Source::Cubin { arch: Some(90) }),
        // No sm_10x cubin: the driver would JIT the PTX.
        (100, Source::Ptx { arch: Some(90) }),
        // Nothing an sm_80 device runs: any entry has the layouts.
        (80, Source::Cubin { arch: Some(90) }),
    ] {
        let l = layouts("params.fatbin", sm);
        assert_eq!(l.source, source, "sm_{sm}");
        assert_eq!(all_ok(&l.kernels), params_cu(), "sm_{sm}");
    }
}

#[test]
fn fatbins_compressed_with_zstd_and_lz4() {
    for (name, sm, source) in [
        ("params.zstd.fatbin", 90, Source::Cubin { arch: Some(90) }),
        ("params.zstd.fatbin", 86, Source::Cubin { arch: Some(80) }),
        ("params.zstd.fatbin", 120, Source::Ptx { arch: Some(90) }),
        ("params.lz4.fatbin", 90, Source::Cubin { arch: Some(90) }),
        ("params.lz4.fatbin", 100, Source::Ptx { arch: Some(90) }),
        ("params.ptx_only.fatbin", 90, Source::Ptx { arch: Some(80) }),
    ] {
        let l = layouts(name, sm);
        assert_eq!(l.source, source, "{name} sm_{sm}");
        assert_eq!(all_ok(&l.kernels), params_cu(), "{name} sm_{sm}");
    }
    // The compression the test images are meant to have.
    let flags = |name| -> Vec<u64> {
        image::container_entries(&data(name))
            .unwrap()
            .iter()
            .map(|e| e.header.flags & (image::FLAG_LZ4 | image::FLAG_ZSTD))
            .collect()
    };
    assert_eq!(flags("params.fatbin"), [0, image::FLAG_ZSTD]);
    assert_eq!(flags("params.zstd.fatbin"), [image::FLAG_ZSTD; 3]);
    assert_eq!(flags("params.lz4.fatbin"), [image::FLAG_LZ4; 2]);
    assert_eq!(flags("params.ptx_only.fatbin"), [0]);
}

#[test]
fn cubin_and_ptx_agree_kernel_by_kernel() {
    // Both readers, on the same source, without the oracle.
    let cubin = cubin_layouts(&data("params.sm_90.cubin")).unwrap();
    let ptx = ptx_layouts(&data("params.sm_80.ptx")).unwrap();
    assert_eq!(cubin, ptx);
}

#[test]
fn a_kernel_that_is_not_there_is_named_in_the_error() {
    let l = layouts("params.sm_90.cubin", 90);
    assert_eq!(l.get("mixed").map(<[_]>::len), Ok(8));
    assert_eq!(l.get("no_params"), Ok(&[][..]));
    let e = l.get("_Z5scaleIdEvPT_S0_y").unwrap_err();
    assert_eq!(
        e,
        LayoutError::NoKernel {
            kernel: "_Z5scaleIdEvPT_S0_y".into(),
            source: Source::Cubin { arch: None }
        }
    );
    assert!(e.to_string().contains("_Z5scaleIdEvPT_S0_y"), "{e}");
}

#[test]
fn what_is_not_a_module_image_is_refused() {
    let wrapper = [
        0xb1, 0x43, 0x62, 0x46, 1, 0, 0, 0, 0x10, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(param_layouts(&wrapper, 90), Err(LayoutError::Wrapper));
    assert_eq!(
        param_layouts(b"!<arch>\nmember", 90),
        Err(LayoutError::Archive)
    );
    assert_eq!(
        param_layouts(&[], 90),
        Err(LayoutError::Image(ImageError::Truncated))
    );
    assert_eq!(
        param_layouts(&[0], 90),
        Err(LayoutError::Image(ImageError::Empty))
    );
    assert!(matches!(
        param_layouts(&[0x01, 0x02, 0x03, 0xff, 0x80], 90),
        Err(LayoutError::Image(ImageError::NotText { .. }))
    ));
    // A 32-bit ELF, and an x86-64 one.
    let mut elf = data("params.sm_90.cubin");
    elf[4] = 1;
    assert!(matches!(param_layouts(&elf, 90), Err(LayoutError::Elf(_))));
    let mut elf = data("params.sm_90.cubin");
    elf[18..20].copy_from_slice(&62u16.to_le_bytes());
    assert_eq!(
        param_layouts(&elf, 90),
        Err(LayoutError::NotCubin { machine: 62 })
    );
    // A container with no entries, and one with a data entry only.
    let mut empty = image::CONTAINER_MAGIC.to_le_bytes().to_vec();
    empty.extend_from_slice(&1u16.to_le_bytes());
    empty.extend_from_slice(&16u16.to_le_bytes());
    empty.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(param_layouts(&empty, 90), Err(LayoutError::NoCode));
}

#[test]
fn a_corrupt_compressed_entry_is_an_error_of_that_entry() {
    // The only entry the sm_86 device reads from is the sm_80 cubin; with
    // its payload corrupt, the others still give the layouts.
    let mut fb = data("params.zstd.fatbin");
    let entries = image::container_entries(&fb).unwrap();
    let sm80 = entries.iter().position(|e| e.header.arch == 80).unwrap();
    let at = entries[sm80].payload.as_ptr() as usize - fb.as_ptr() as usize;
    let len = entries[sm80].payload.len();
    for b in &mut fb[at + 8..at + len] {
        *b ^= 0x5a;
    }
    let l = param_layouts(&fb, 86).unwrap();
    assert_eq!(l.source, Source::Cubin { arch: Some(90) });
    assert_eq!(all_ok(&l.kernels), params_cu());
    // With every entry corrupt, the error is the preferred entry's.
    let mut fb = data("params.lz4.fatbin");
    let spans: Vec<(usize, usize)> = image::container_entries(&fb)
        .unwrap()
        .iter()
        .map(|e| {
            (
                e.payload.as_ptr() as usize - fb.as_ptr() as usize,
                e.payload.len(),
            )
        })
        .collect();
    for (at, len) in spans {
        fb[at..at + len].fill(0xff);
    }
    assert_eq!(
        param_layouts(&fb, 90),
        Err(LayoutError::Image(ImageError::Decompress { codec: "LZ4" }))
    );
}

/// A small deterministic generator (xorshift64*), so that failures repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Byte edits: flip, overwrite with a byte PTX and ELF readers care about,
/// delete a range, duplicate a range.
fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    const INTERESTING: &[u8] = b"(){}[],;.0\n\"/*\x00\xff\x04\x17\x45";
    let mut b = bytes.to_vec();
    for _ in 0..1 + rng.below(4) {
        if b.is_empty() {
            break;
        }
        let at = rng.below(b.len());
        match rng.below(4) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => b[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => {
                let end = (at + rng.below(64)).min(b.len());
                b.drain(at..end);
            }
            _ => {
                let end = (at + rng.below(64)).min(b.len());
                let copy = b[at..end].to_vec();
                b.splice(at..at, copy);
            }
        }
    }
    b
}

/// What any layout a reader returns must satisfy, whatever it was fed:
/// non-empty parameters that do not overlap, within 4 GiB.
fn assert_sane(kernels: &KernelLayouts, what: &str) {
    for (name, l) in kernels {
        let Ok(l) = l else { continue };
        let mut by_offset = l.clone();
        by_offset.sort_unstable();
        for w in by_offset.windows(2) {
            assert!(
                u64::from(w[0].0) + u64::from(w[0].1) <= u64::from(w[1].0),
                "{what}: {name}: overlapping {l:?}"
            );
        }
        assert!(l.iter().all(|&(_, s)| s > 0), "{what}: {name}: {l:?}");
    }
}

/// Cut short anywhere, an image gives either an error or, for a kernel it
/// still describes, the layout the whole image gives: never a shorter one.
#[test]
fn cut_short_anywhere_never_gives_a_wrong_layout() {
    for (name, step) in [
        ("params.sm_80.ptx", 1),
        ("params.sm_90.cubin", 7),
        ("params.zstd.fatbin", 5),
        ("params.fatbin", 11),
    ] {
        let whole = data(name);
        let want = params_cu();
        let mut seen = 0;
        for len in (0..whole.len()).step_by(step) {
            let Ok(l) = param_layouts(&whole[..len], 90) else {
                continue;
            };
            for (kernel, layout) in &l.kernels {
                if let Ok(layout) = layout {
                    assert_eq!(
                        Some(layout),
                        want.get(kernel),
                        "{name} cut at {len}: {kernel}"
                    );
                    seen += 1;
                }
            }
        }
        // Cut PTX still describes the kernels before the cut, and a cut
        // cubin those whose records lie before it (its headers come first);
        // a container announces its length and refuses any cut.
        assert_eq!(
            seen > 0,
            !name.ends_with(".fatbin"),
            "{name}: {seen} layouts"
        );
    }
}

#[test]
fn mutated_images_never_panic_and_give_sane_layouts() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (name, rounds) in [
        ("params.sm_80.ptx", 3000),
        ("big.sm_90.ptx", 500),
        ("params.sm_90.cubin", 3000),
        ("params.zstd.fatbin", 500),
        ("params.lz4.fatbin", 500),
        ("params.ptx_only.fatbin", 500),
    ] {
        let whole = data(name);
        for round in 0..rounds {
            let m = mutate(&mut rng, &whole);
            if let Ok(l) = param_layouts(&m, 90) {
                assert_sane(&l.kernels, &format!("{name} round {round}"));
            }
        }
    }
}

#[test]
fn mutated_nv_info_sections_never_give_overlapping_parameters() {
    // Mutations aimed at the parameter records themselves: every byte of
    // every .nv.info.<kernel> section of the cubin, one at a time.
    let whole = data("params.sm_90.cubin");
    let mut rng = Rng(7);
    let mut hit = 0;
    for pos in 0..whole.len() {
        // The records of a kernel start with EIATTR_LANGUAGE (04 66 04 00).
        if !whole[pos..].starts_with(&[0x04, 0x66, 0x04, 0x00]) {
            continue;
        }
        hit += 1;
        for i in pos..(pos + 0xd0).min(whole.len()) {
            let mut m = whole.clone();
            m[i] = rng.next() as u8;
            let l = cubin_layouts(&m).expect("the ELF structure is intact");
            assert_sane(&l, &format!("byte {i}"));
        }
    }
    assert_eq!(hit, params_cu().len(), "one info section per kernel");
}
