//! Fatbin parsing: hand-built containers and a real nvcc 13.5 fatbin.

use vgpu_ptx::fatbin::*;
use vgpu_ptx::Module;

fn entry(kind: u16, arch: u32, flags: u64, payload: &[u8], uncompressed: u64) -> Vec<u8> {
    let hsize = 64u32;
    let padded = payload.len().next_multiple_of(8);
    let mut e = vec![0u8; hsize as usize];
    e[0..2].copy_from_slice(&kind.to_le_bytes());
    e[2..4].copy_from_slice(&0x0101u16.to_le_bytes());
    e[4..8].copy_from_slice(&hsize.to_le_bytes());
    e[8..16].copy_from_slice(&(padded as u64).to_le_bytes());
    if flags & (FLAG_LZ4 | FLAG_ZSTD) != 0 {
        e[16..20].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    }
    e[24..26].copy_from_slice(&5u16.to_le_bytes());
    e[26..28].copy_from_slice(&9u16.to_le_bytes());
    e[28..32].copy_from_slice(&arch.to_le_bytes());
    e[40..48].copy_from_slice(&(flags | 0x11).to_le_bytes());
    e[56..64].copy_from_slice(&uncompressed.to_le_bytes());
    e.extend_from_slice(payload);
    e.resize(hsize as usize + padded, 0);
    e
}

fn container(entries: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = entries.concat();
    let mut c = Vec::new();
    c.extend_from_slice(&CONTAINER_MAGIC.to_le_bytes());
    c.extend_from_slice(&1u16.to_le_bytes());
    c.extend_from_slice(&16u16.to_le_bytes());
    c.extend_from_slice(&(body.len() as u64).to_le_bytes());
    c.extend_from_slice(&body);
    c
}

const PTX_A: &str = ".version 8.0\n.target sm_75\n.address_size 64\n.visible .entry a() { ret; }\n";
const PTX_B: &str = ".version 8.0\n.target sm_86\n.address_size 64\n.visible .entry b() { ret; }\n";
const PTX_C: &str =
    ".version 8.0\n.target sm_100\n.address_size 64\n.visible .entry c() { ret; }\n";

fn nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

#[test]
fn hand_built_container_with_zstd_lz4_and_plain_entries() {
    let zstd = ruzstd::encoding::compress_to_vec(
        &nul(PTX_B)[..],
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    assert_eq!(&zstd[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    let lz4 = lz4_flex::block::compress(&nul(PTX_C));
    let elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    let c = container(&[
        entry(KIND_ELF, 90, 0, &elf, 0),
        entry(KIND_PTX, 75, 0, &nul(PTX_A), 0),
        entry(KIND_PTX, 86, FLAG_ZSTD, &zstd, nul(PTX_B).len() as u64),
        entry(KIND_PTX, 100, FLAG_LZ4, &lz4, nul(PTX_C).len() as u64),
    ]);
    assert_eq!(image_kind(&c), ImageKind::Container);
    let mut with_trailer = c.clone();
    with_trailer.extend_from_slice(&[0xAA; 40]);
    assert_eq!(image_len(&with_trailer), Some(c.len()));

    let es = parse_entries(&c).unwrap();
    assert_eq!(es.len(), 4);
    assert_eq!(es[0].kind, KIND_ELF);
    assert_eq!(es[2].payload.len(), zstd.len(), "compressed size is exact");
    assert_eq!(es[2].version, (9, 5));
    assert_eq!(es[1].ptx_text().unwrap(), PTX_A);
    assert_eq!(es[2].ptx_text().unwrap(), PTX_B);
    assert_eq!(es[3].ptx_text().unwrap(), PTX_C);

    // sm_90: highest PTX arch not above 90 is 86 (the ZSTD one).
    assert_eq!(best_ptx(&es, 90).unwrap().arch, 86);
    assert_eq!(best_ptx(&es, 80).unwrap().arch, 75);
    // Nothing at or below 70: fall back to the lowest.
    assert_eq!(best_ptx(&es, 70).unwrap().arch, 75);
    let text = extract_ptx(&c, 90).unwrap();
    assert_eq!(text, PTX_B);
    assert!(Module::parse(&text).unwrap().entry("b").is_some());
}

#[test]
fn container_without_ptx_is_no_ptx() {
    let elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    let c = container(&[entry(KIND_ELF, 80, 0, &elf, 0)]);
    assert_eq!(extract_ptx(&c, 90), Err(FatbinError::NoPtx));
}

#[test]
fn corrupt_inputs_are_errors_not_panics() {
    let zstd = ruzstd::encoding::compress_to_vec(
        &nul(PTX_A)[..],
        ruzstd::encoding::CompressionLevel::Fastest,
    );
    let mut bad = zstd.clone();
    for b in bad.iter_mut().skip(6) {
        *b ^= 0x5a;
    }
    let c = container(&[entry(KIND_PTX, 80, FLAG_ZSTD, &bad, 100)]);
    assert!(matches!(
        extract_ptx(&c, 90),
        Err(FatbinError::Decompress { .. }) | Err(FatbinError::NotText)
    ));
    let good = container(&[entry(KIND_PTX, 80, 0, &nul(PTX_A), 0)]);
    for cut in [4, 15, 16, 40, good.len() - 1] {
        assert!(parse_entries(&good[..cut]).is_err(), "cut at {cut}");
    }
    assert!(matches!(
        parse_entries(b"garbage!garbage!"),
        Err(FatbinError::BadMagic { .. })
    ));
}

#[test]
fn wrapper_ptx_and_elf_lengths() {
    let mut w = Vec::new();
    w.extend_from_slice(&WRAPPER_MAGIC.to_le_bytes());
    w.extend_from_slice(&1u32.to_le_bytes());
    w.extend_from_slice(&0x1234_5678u64.to_le_bytes());
    w.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(image_kind(&w), ImageKind::Wrapper);
    assert_eq!(image_len(&w), Some(24));
    let pw = parse_wrapper(&w).unwrap();
    assert_eq!((pw.version, pw.container), (1, 0x1234_5678));
    assert_eq!(
        parse_entries(&w),
        Err(FatbinError::IsWrapper {
            container_addr: 0x1234_5678
        })
    );

    let mut ptx = nul(PTX_A);
    ptx.extend_from_slice(b"trailing junk");
    assert_eq!(image_kind(&ptx), ImageKind::Ptx);
    assert_eq!(image_len(&ptx), Some(PTX_A.len() + 1));
    assert_eq!(extract_ptx(&ptx, 90).unwrap(), PTX_A);

    // ELF64: header, 2 section headers at 0x100; a PROGBITS section at
    // 0x40..0x90 and a NOBITS one claiming 0x1000 bytes at 0x200.
    let mut e = vec![0u8; 0x100 + 2 * 64];
    e[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
    e[0x28..0x30].copy_from_slice(&0x100u64.to_le_bytes());
    e[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    e[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
    e[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes());
    let sh = |e: &mut Vec<u8>, k: usize, ty: u32, off: u64, size: u64| {
        let s = 0x100 + k * 64;
        e[s + 4..s + 8].copy_from_slice(&ty.to_le_bytes());
        e[s + 24..s + 32].copy_from_slice(&off.to_le_bytes());
        e[s + 32..s + 40].copy_from_slice(&size.to_le_bytes());
    };
    sh(&mut e, 0, 1, 0x40, 0x50);
    sh(&mut e, 1, 8, 0x200, 0x1000);
    let len = e.len();
    e.extend_from_slice(&[0xEE; 64]);
    assert_eq!(image_kind(&e), ImageKind::Elf);
    assert_eq!(image_len(&e), Some(len));
    assert_eq!(extract_ptx(&e, 90), Err(FatbinError::NoPtx));
}

#[test]
fn real_nvcc_fatbin() {
    let fb = include_bytes!("cuda/kernels.fatbin");
    assert_eq!(image_len(fb), Some(fb.len()));
    let es = parse_entries(fb).unwrap();
    let ptx: Vec<_> = es.iter().filter(|e| e.is_ptx()).collect();
    let elf: Vec<_> = es.iter().filter(|e| !e.is_ptx()).collect();
    assert_eq!((ptx.len(), elf.len()), (1, 1));
    assert_eq!(ptx[0].arch, 90);
    assert_ne!(
        ptx[0].flags & FLAG_ZSTD,
        0,
        "nvcc 13 compresses PTX with ZSTD"
    );
    assert_eq!(elf[0].arch, 80);
    let elf_bytes = elf[0].data().unwrap();
    let n = image_len(&elf_bytes).unwrap();
    assert!(
        n <= elf_bytes.len() && n + 8 > elf_bytes.len(),
        "ELF length {n} vs payload {}",
        elf_bytes.len()
    );
    let text = extract_ptx(fb, 90).unwrap();
    assert!(text.contains(".target sm_90"));
    let m = Module::parse(&text).unwrap();
    for k in [
        "vadd",
        "matmul",
        "warp_reduce",
        "histogram",
        "by_value",
        "calls",
    ] {
        assert!(m.entry(k).is_some(), "{k}");
    }
}
