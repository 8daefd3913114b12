use super::*;

fn container(payload: usize) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&CONTAINER_MAGIC.to_le_bytes());
    c.extend_from_slice(&1u16.to_le_bytes());
    c.extend_from_slice(&16u16.to_le_bytes());
    c.extend_from_slice(&(payload as u64).to_le_bytes());
    c.extend(std::iter::repeat_n(0xabu8, payload));
    // Whatever follows in .nv_fatbin must not count.
    c.extend_from_slice(&[0x11; 32]);
    c
}

/// A 64-bit ELF: header, 1 program header, 3 sections, one of them
/// NOBITS reaching far past the file, the section table last, then 16
/// bytes that are not the file's.
fn elf() -> Vec<u8> {
    let mut e = vec![0u8; 64];
    e[..4].copy_from_slice(&ELF_MAGIC);
    e[4] = 2;
    e[5] = 1;
    let phoff = 64u64;
    let data_off = phoff + 56;
    let data_len = 100u64;
    let shoff = data_off + data_len + 4;
    e[32..40].copy_from_slice(&phoff.to_le_bytes());
    e[40..48].copy_from_slice(&shoff.to_le_bytes());
    e[52..54].copy_from_slice(&64u16.to_le_bytes());
    e[54..56].copy_from_slice(&56u16.to_le_bytes());
    e[56..58].copy_from_slice(&1u16.to_le_bytes());
    e[58..60].copy_from_slice(&64u16.to_le_bytes());
    e[60..62].copy_from_slice(&3u16.to_le_bytes());
    let mut ph = vec![0u8; 56];
    ph[8..16].copy_from_slice(&data_off.to_le_bytes());
    ph[32..40].copy_from_slice(&data_len.to_le_bytes());
    e.extend_from_slice(&ph);
    e.extend(std::iter::repeat_n(0x5au8, (data_len + 4) as usize));
    let section = |ty: u32, off: u64, size: u64| {
        let mut s = vec![0u8; 64];
        s[4..8].copy_from_slice(&ty.to_le_bytes());
        s[24..32].copy_from_slice(&off.to_le_bytes());
        s[32..40].copy_from_slice(&size.to_le_bytes());
        s
    };
    e.extend(section(0, 0, 0));
    e.extend(section(1, data_off, data_len + 4));
    e.extend(section(SHT_NOBITS, data_off, 1 << 20));
    assert_eq!(e.len() as u64, shoff + 3 * 64);
    e.extend_from_slice(&[0x77; 16]);
    e
}

/// Measures through both readers, which must agree.
fn measure_both(bytes: &[u8]) -> Result<Measured, ImageError> {
    let by_slice = measure(bytes, MAX_IMAGE);
    // SAFETY: a live buffer, capped at its length.
    let raw = unsafe { RawImage::new(bytes.as_ptr(), bytes.len()) };
    assert_eq!(measure(&raw, MAX_IMAGE), by_slice);
    by_slice
}

fn sized(kind: ImageKind, len: usize) -> Result<Measured, ImageError> {
    Ok(Measured::Image { kind, len })
}

#[test]
fn container_is_header_plus_fat_size() {
    let c = container(40);
    assert_eq!(measure_both(&c), sized(ImageKind::Container, 56));
    // The header alone says it: the entries need not be at hand.
    assert_eq!(container_len(&c[..16], MAX_IMAGE), Ok(56));
    let mut small = c.clone();
    small[6] = 8;
    assert!(matches!(
        container_len(&small[..], MAX_IMAGE),
        Err(ImageError::NotContainer { header: 8, .. })
    ));
    let mut huge = c;
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        measure_both(&huge),
        Err(ImageError::Implausible { .. })
    ));
}

#[test]
fn wrapper_fields() {
    let mut w = Vec::new();
    w.extend_from_slice(&WRAPPER_MAGIC.to_le_bytes());
    w.extend_from_slice(&2u32.to_le_bytes());
    w.extend_from_slice(&0x1234u64.to_le_bytes());
    w.extend_from_slice(&0x5678u64.to_le_bytes());
    let want = Wrapper {
        version: 2,
        container: 0x1234,
        prelinked: 0x5678,
    };
    assert_eq!(measure_both(&w), Ok(Measured::Wrapper(want)));
    assert_eq!(kind(&w[..4]), ImageKind::Wrapper);
    assert_eq!(measure(&w[..20], MAX_IMAGE), Err(ImageError::Truncated));
}

#[test]
fn elf_ignores_nobits_and_trailing_bytes() {
    let e = elf();
    assert_eq!(measure_both(&e), sized(ImageKind::Elf, e.len() - 16));
}

#[test]
fn elf_section_past_the_tables_counts() {
    let mut e = elf();
    // The data section now ends after the section table.
    let shoff = u64::from_le_bytes(e[40..48].try_into().unwrap()) as usize;
    let s1 = shoff + 64;
    let off = u64::from_le_bytes(e[s1 + 24..s1 + 32].try_into().unwrap());
    let new_size = (e.len() as u64 - off) + 8;
    e[s1 + 32..s1 + 40].copy_from_slice(&new_size.to_le_bytes());
    e.extend_from_slice(&[0; 8]);
    let want = (off + new_size) as usize;
    assert_eq!(measure_both(&e), sized(ImageKind::Elf, want));
}

#[test]
fn elf_garbage_is_refused() {
    let mut e = elf();
    e[4] = 1;
    assert_eq!(
        measure_both(&e),
        Err(ImageError::ElfClass { class: 1, data: 1 })
    );
    let mut e = elf();
    e[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(measure_both(&e), Err(ImageError::ElfTables));
    let mut e = elf();
    e[54] = 8;
    assert!(matches!(
        measure_both(&e),
        Err(ImageError::ElfEntrySizes { ph: 8, .. })
    ));
    // A table past the bytes at hand: the slice says so, the cap too.
    let e = elf();
    assert_eq!(elf_len(&e[..200], MAX_IMAGE), Err(ImageError::Truncated));
}

#[test]
fn elf_header_fields() {
    let e = elf();
    let h = ElfHeader::read(&e[..]).unwrap();
    assert!(h.is_cubin());
    assert_eq!((h.phnum, h.shnum, h.ehsize), (1, 3, 64));
    assert_eq!(h.ph_end(), 64 + 56);
    assert_eq!(h.sh_end(), e.len() as u64 - 16);
    assert_eq!(ElfHeader::read(&e[..61]), None);
}

#[test]
fn ptx_is_strlen_plus_one() {
    let ptx = b".version 8.0\n.target sm_80\n.address_size 64\n\0junk";
    assert_eq!(measure_both(ptx), sized(ImageKind::Ptx, 45));
    assert_eq!(measure_both(b"x\0"), sized(ImageKind::Ptx, 2));
    // Text that the bytes at hand do not terminate.
    assert_eq!(measure(&b"abcdefgh"[..], MAX_IMAGE), Err(ImageError::NoNul));
    assert_eq!(kind(&b"ab"[..]), ImageKind::Ptx);
}

#[test]
fn garbage_is_refused() {
    assert_eq!(measure_both(b"\0"), Err(ImageError::Empty));
    assert_eq!(
        measure_both(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\0"),
        Err(ImageError::NotText { byte: 1, at: 0 })
    );
    assert_eq!(
        measure_both(b"\x01\0"),
        Err(ImageError::NotText { byte: 1, at: 0 })
    );
    assert_eq!(measure_both(b"!<arch>\nabc\0"), Err(ImageError::Archive));
    assert_eq!(kind(&b"!<arch>\nabc"[..]), ImageKind::Archive);
    assert_eq!(kind(&b"\x01\x02\x03\x04\x05"[..]), ImageKind::Unknown);
    assert_eq!(kind(&b""[..]), ImageKind::Unknown);
}

#[test]
fn raw_reader_stops_at_its_cap() {
    let c = container(40);
    // SAFETY: a live buffer; the cap is below its length.
    let raw = unsafe { RawImage::new(c.as_ptr(), 8) };
    assert_eq!(raw.get(0, 8).map(<[u8]>::len), Some(8));
    assert_eq!(raw.get(4, 8), None);
    assert_eq!(raw.get(usize::MAX, 2), None);
    assert_eq!(measure(&raw, MAX_IMAGE), Err(ImageError::Truncated));
    let text = b"abc";
    // SAFETY: as above; no NUL within the cap.
    let raw = unsafe { RawImage::new(text.as_ptr(), 3) };
    assert_eq!(raw.nul_at(0, usize::MAX), None);
}

#[test]
fn entry_header_fields() {
    let mut e = [0u8; 64];
    e[0..2].copy_from_slice(&KIND_PTX.to_le_bytes());
    e[4..8].copy_from_slice(&64u32.to_le_bytes());
    e[8..16].copy_from_slice(&400u64.to_le_bytes());
    e[16..20].copy_from_slice(&397u32.to_le_bytes());
    e[24..26].copy_from_slice(&5u16.to_le_bytes());
    e[26..28].copy_from_slice(&9u16.to_le_bytes());
    e[28..32].copy_from_slice(&90u32.to_le_bytes());
    e[40..48].copy_from_slice(&(FLAG_ZSTD | 0x11).to_le_bytes());
    e[56..64].copy_from_slice(&975u64.to_le_bytes());
    let h = EntryHeader::read(&e[..]).unwrap();
    assert_eq!(
        h,
        EntryHeader {
            kind: KIND_PTX,
            header_size: 64,
            payload_size: 400,
            compressed_size: 397,
            minor: 5,
            major: 9,
            arch: 90,
            flags: FLAG_ZSTD | 0x11,
            uncompressed_size: 975,
        }
    );
    assert!(h.is_compressed());
    assert_eq!(EntryHeader::read(&e[..63]), None);
}

/// A container of entries (kind, flags, compressed size, uncompressed size,
/// payload), each payload padded to 8 as nvcc pads them.
fn fatbin(entries: &[(u16, u64, u32, u64, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for &(kind, flags, csize, usize_, payload) in entries {
        let padded = payload.len().next_multiple_of(8);
        let mut h = [0u8; 64];
        h[0..2].copy_from_slice(&kind.to_le_bytes());
        h[4..8].copy_from_slice(&64u32.to_le_bytes());
        h[8..16].copy_from_slice(&(padded as u64).to_le_bytes());
        h[16..20].copy_from_slice(&csize.to_le_bytes());
        h[28..32].copy_from_slice(&90u32.to_le_bytes());
        h[40..48].copy_from_slice(&flags.to_le_bytes());
        h[56..64].copy_from_slice(&usize_.to_le_bytes());
        body.extend_from_slice(&h);
        body.extend_from_slice(payload);
        body.resize(body.len() + padded - payload.len(), 0);
    }
    let mut c = container(0);
    c.truncate(16);
    c[8..16].copy_from_slice(&(body.len() as u64).to_le_bytes());
    c.extend(body);
    c
}

#[test]
fn container_entries_in_order_with_exact_compressed_payloads() {
    let c = fatbin(&[
        (KIND_ELF, 0x11, 0, 0, b"\x7fELF-ish"),
        (KIND_PTX, FLAG_ZSTD | 0x11, 5, 99, b"zstd!"),
    ]);
    let mut trailing = c.clone();
    trailing.extend_from_slice(&[0xee; 40]);
    let e = container_entries(&trailing).unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(
        (e[0].header.kind, e[0].payload),
        (KIND_ELF, &b"\x7fELF-ish"[..])
    );
    // Padded to 8 on disk; the compressed size is exact.
    assert_eq!((e[1].header.kind, e[1].payload), (KIND_PTX, &b"zstd!"[..]));
    assert_eq!(e[0].decompressed().unwrap(), &b"\x7fELF-ish"[..]);
}

#[test]
fn container_entries_refuse_what_does_not_fit() {
    let c = fatbin(&[(KIND_PTX, 0x11, 0, 0, b".version 8.0\n")]);
    for len in 0..c.len() {
        assert_eq!(
            container_entries(&c[..len]),
            Err(ImageError::Truncated),
            "cut at {len}"
        );
    }
    let mut small = c.clone();
    small[16 + 4..16 + 8].copy_from_slice(&32u32.to_le_bytes());
    assert_eq!(
        container_entries(&small),
        Err(ImageError::Implausible {
            what: "fatbin entry header",
            len: 32
        })
    );
    let over = fatbin(&[(KIND_PTX, FLAG_LZ4, 17, 40, b"0123456789abcdef")]);
    assert_eq!(
        container_entries(&over),
        Err(ImageError::Implausible {
            what: "compressed fatbin entry",
            len: 17
        })
    );
    let mut magic = c.clone();
    magic[0] ^= 1;
    assert!(matches!(
        container_entries(&magic),
        Err(ImageError::NotContainer { .. })
    ));
}

#[cfg(feature = "decompress")]
#[test]
fn decompression_must_give_the_announced_size() {
    let text = b"the same words, the same words, the same words".repeat(8);
    let lz4 = lz4_flex::block::compress(&text);
    let n = text.len() as u64;
    let entry =
        |size: u64| fatbin(&[(KIND_PTX, FLAG_LZ4 | 0x11, lz4.len() as u32, size, &lz4[..])]);
    let good = entry(n);
    let e = container_entries(&good).unwrap();
    assert_eq!(e[0].decompressed().unwrap(), &text[..]);
    for wrong in [n - 1, n + 1] {
        let bad = entry(wrong);
        let e = container_entries(&bad).unwrap();
        assert_eq!(
            e[0].decompressed(),
            Err(ImageError::Decompress { codec: "LZ4" }),
            "announced {wrong}"
        );
    }
    let huge = entry(MAX_IMAGE + 1);
    let e = container_entries(&huge).unwrap();
    assert!(matches!(
        e[0].decompressed(),
        Err(ImageError::Implausible { .. })
    ));
}
