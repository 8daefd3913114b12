//! Integer carry chains and dot products, bit manipulation, and warp
//! collectives, against straightforward CPU computations.

mod harness;

use harness::{run, run1, Rng, WORDS};

#[test]
fn carry_chains_add_and_subtract_128_bit_numbers() {
    let mut rng = Rng(99);
    let inputs: Vec<[u32; WORDS]> = (0..64).map(|_| rng.words()).collect();
    let out = run(
        "add.cc.u32 %r16, %r0, %r4;
         addc.cc.u32 %r17, %r1, %r5;
         addc.cc.u32 %r18, %r2, %r6;
         addc.u32 %r19, %r3, %r7;
         sub.cc.u32 %r20, %r0, %r4;
         subc.cc.u32 %r21, %r1, %r5;
         subc.cc.u32 %r22, %r2, %r6;
         subc.u32 %r23, %r3, %r7;
         mul.lo.u32 %r24, %r8, %r9;
         mul.hi.u32 %r25, %r8, %r9;
         mad.lo.cc.u32 %r25, %r10, %r9, %r25;
         madc.hi.u32 %r26, %r10, %r9, 0;
         mov.b64 %rd0, {%r0, %r1};
         mov.b64 %rd1, {%r4, %r5};
         add.cc.u64 %rd2, %rd0, %rd1;
         addc.u64 %rd3, 0, 0;
         mov.b64 {%r27, %r28}, %rd2;
         cvt.u32.u64 %r29, %rd3;",
        &inputs,
    );
    let u128_of = |w: &[u32]| {
        w.iter()
            .enumerate()
            .fold(0u128, |acc, (k, &x)| acc | (x as u128) << (32 * k))
    };
    for (w, o) in inputs.iter().zip(&out) {
        let (a, b) = (u128_of(&w[0..4]), u128_of(&w[4..8]));
        assert_eq!(u128_of(&o[0..4]), a.wrapping_add(b));
        assert_eq!(u128_of(&o[4..8]), a.wrapping_sub(b));
        // [r8] * [r10:r9] as a 96-bit product... here: r9 * (r10:r8) low
        // words — mirror the PTX: lo = r8*r9, mid = hi(r8*r9) + lo(r10*r9),
        // top = hi(r10*r9) + carry.
        let p1 = w[8] as u64 * w[9] as u64;
        let p2 = w[10] as u64 * w[9] as u64;
        let mid = (p1 >> 32) + (p2 & 0xffff_ffff);
        assert_eq!(o[8], p1 as u32);
        assert_eq!(o[9], mid as u32);
        assert_eq!(o[10], ((p2 >> 32) + (mid >> 32)) as u32);
        let s = (w[0] as u64 | (w[1] as u64) << 32) as u128
            + (w[4] as u64 | (w[5] as u64) << 32) as u128;
        assert_eq!(o[11] as u64 | (o[12] as u64) << 32, s as u64);
        assert_eq!(o[13] as u128, s >> 64);
    }
}

fn dot4(a: u32, b: u32, sa: bool, sb: bool) -> i64 {
    (0..4)
        .map(|k| {
            let x = (a >> (8 * k)) as u8;
            let y = (b >> (8 * k)) as u8;
            let x = if sa { x as i8 as i64 } else { x as i64 };
            let y = if sb { y as i8 as i64 } else { y as i64 };
            x * y
        })
        .sum()
}

fn dot2(a: u32, b: u32, sa: bool, sb: bool, hi: bool) -> i64 {
    (0..2)
        .map(|k| {
            let x = (a >> (16 * k)) as u16;
            let y = (b >> (8 * (k + if hi { 2 } else { 0 }))) as u8;
            let x = if sa { x as i16 as i64 } else { x as i64 };
            let y = if sb { y as i8 as i64 } else { y as i64 };
            x * y
        })
        .sum()
}

#[test]
fn dp4a_and_dp2a_in_every_signedness() {
    let mut rng = Rng(5);
    let inputs: Vec<[u32; WORDS]> = (0..32).map(|_| rng.words()).collect();
    let types = [
        ("u32", "u32"),
        ("u32", "s32"),
        ("s32", "u32"),
        ("s32", "s32"),
    ];
    let mut body = String::new();
    for (k, (ta, tb)) in types.iter().enumerate() {
        body += &format!(
            "dp4a.{ta}.{tb} %r{}, %r0, %r1, %r2;
             dp2a.lo.{ta}.{tb} %r{}, %r0, %r1, %r2;
             dp2a.hi.{ta}.{tb} %r{}, %r0, %r1, %r2;\n",
            16 + k,
            20 + k,
            24 + k
        );
    }
    let out = run(&body, &inputs);
    for (w, o) in inputs.iter().zip(&out) {
        for (k, (ta, tb)) in types.iter().enumerate() {
            let (sa, sb) = (*ta == "s32", *tb == "s32");
            let c = w[2] as i32 as i64;
            assert_eq!(
                o[k],
                (c + dot4(w[0], w[1], sa, sb)) as u32,
                "dp4a {ta} {tb}"
            );
            assert_eq!(o[4 + k], (c + dot2(w[0], w[1], sa, sb, false)) as u32);
            assert_eq!(o[8 + k], (c + dot2(w[0], w[1], sa, sb, true)) as u32);
        }
    }
}

/// prmt as the PTX ISA's byte-selection tables describe each mode.
fn prmt_ref(a: u32, b: u32, c: u32, mode: &str) -> u32 {
    let bytes = (b as u64) << 32 | a as u64;
    let byte = |i: u32| ((bytes >> (8 * (i & 7))) & 0xff) as u32;
    let sel: [u32; 4] = match mode {
        "" => {
            return (0..4).fold(0, |acc, k| {
                let s = (c >> (4 * k)) & 0xf;
                let v = byte(s & 7);
                let v = if s & 8 != 0 {
                    if v & 0x80 != 0 {
                        0xff
                    } else {
                        0
                    }
                } else {
                    v
                };
                acc | v << (8 * k)
            })
        }
        ".f4e" => std::array::from_fn(|k| (c & 3) + k as u32),
        ".b4e" => std::array::from_fn(|k| (c & 3).wrapping_sub(k as u32) & 7),
        ".rc8" => [c & 3; 4],
        ".ecl" => std::array::from_fn(|k| (k as u32).max(c & 3)),
        ".ecr" => std::array::from_fn(|k| (k as u32).min(c & 3)),
        _ => {
            let h = (c & 1) * 2;
            [h, h + 1, h, h + 1]
        }
    };
    (0..4).fold(0, |acc, k| acc | byte(sel[k]) << (8 * k))
}

#[test]
fn prmt_lop3_and_bit_fields() {
    let mut rng = Rng(77);
    let modes = ["", ".f4e", ".b4e", ".rc8", ".ecl", ".ecr", ".rc16"];
    let inputs: Vec<[u32; WORDS]> = (0..32).map(|_| rng.words()).collect();
    let mut body = String::new();
    for (k, m) in modes.iter().enumerate() {
        body += &format!("prmt.b32{m} %r{}, %r0, %r1, %r2;\n", 16 + k);
    }
    body += "lop3.b32 %r23, %r0, %r1, %r2, 0x96;
             lop3.b32 %r24, %r0, %r1, %r2, 0xE8;
             and.b32 %r30, %r3, 31;
             and.b32 %r31, %r4, 15;
             bfe.u32 %r25, %r0, %r30, %r31;
             bfe.s32 %r26, %r0, %r30, %r31;
             bfi.b32 %r27, %r1, %r0, %r30, %r31;
             brev.b32 %r28, %r0;
             bfind.u32 %r29, %r1;
             fns.b32 %r30, %r0, %r30, 3;
             bmsk.clamp.b32 %r31, %r30, %r31;";
    let out = run(&body, &inputs);
    for (w, o) in inputs.iter().zip(&out) {
        let (a, b, c) = (w[0], w[1], w[2]);
        for (k, m) in modes.iter().enumerate() {
            assert_eq!(o[k], prmt_ref(a, b, c, m), "prmt{m} {a:#x} {b:#x} {c:#x}");
        }
        assert_eq!(o[7], a ^ b ^ c);
        // 0xE8 is the majority function.
        assert_eq!(o[8], (a & b) | (a & c) | (b & c));
        let (pos, len) = (w[3] & 31, w[4] & 15);
        let field = (0..len)
            .filter(|i| pos + i < 32)
            .fold(0u32, |acc, i| acc | ((a >> (pos + i)) & 1) << i);
        assert_eq!(o[9], field);
        let top = (pos + len).min(32) - pos;
        let sfield = if len == 0 {
            0
        } else {
            ((field << (32 - top)) as i32 >> (32 - top)) as u32
        };
        assert_eq!(o[10], sfield, "bfe.s32 {a:#x} {pos} {len}");
        let mask = if len == 0 {
            0
        } else {
            (((1u64 << len) - 1) << pos) as u32
        };
        assert_eq!(o[11], (a & !mask) | ((b << pos) & mask));
        assert_eq!(o[12], a.reverse_bits());
        assert_eq!(
            o[13],
            if b == 0 {
                u32::MAX
            } else {
                31 - b.leading_zeros()
            }
        );
        // The third set bit at or above `pos`.
        let third = (pos..32).filter(|i| (a >> i) & 1 == 1).nth(2);
        assert_eq!(o[14], third.unwrap_or(u32::MAX));
        let start = o[14];
        let bm = if start >= 32 {
            0
        } else {
            let end = (start + len).min(32);
            ((1u64 << end) - (1u64 << start)) as u32
        };
        assert_eq!(o[15], bm, "bmsk {start} {len}");
    }
}

/// Runs a 32-lane warp where lane `l` holds `vals[l]` in `%r0`.
fn warp(body: &str, vals: &[u32; 32]) -> Vec<[u32; WORDS]> {
    let inputs: Vec<[u32; WORDS]> = (0..32)
        .map(|l| {
            let mut w = [0u32; WORDS];
            w[0] = vals[l];
            w[1] = l as u32;
            w
        })
        .collect();
    run(body, &inputs)
}

#[test]
fn shuffles_with_clamps_and_segments() {
    let vals: [u32; 32] = std::array::from_fn(|l| 1000 + l as u32 * 7);
    let out = warp(
        "shfl.sync.up.b32 %r16|%p0, %r0, 3, 0, -1;
         selp.u32 %r17, 1, 0, %p0;
         shfl.sync.down.b32 %r18|%p1, %r0, 5, 0x1f, -1;
         selp.u32 %r19, 1, 0, %p1;
         shfl.sync.bfly.b32 %r20, %r0, 6, 0x1f, -1;
         shfl.sync.idx.b32 %r21, %r0, 2, 0x181f, -1;
         shfl.sync.down.b32 %r22|%p2, %r0, 2, 0x181f, -1;
         selp.u32 %r23, 1, 0, %p2;",
        &vals,
    );
    for (l, o) in out.iter().enumerate() {
        let (up_ok, dn_ok) = (l >= 3, l + 5 <= 31);
        assert_eq!(o[0], vals[if up_ok { l - 3 } else { l }]);
        assert_eq!(o[1], up_ok as u32);
        assert_eq!(o[2], vals[if dn_ok { l + 5 } else { l }]);
        assert_eq!(o[3], dn_ok as u32);
        assert_eq!(o[4], vals[l ^ 6]);
        // c = 0x181f: segments of 8 lanes (segmask 0x18).
        let seg = l & 0x18;
        assert_eq!(o[5], vals[seg | 2]);
        let d_ok = l + 2 <= (seg | 7);
        assert_eq!(o[6], vals[if d_ok { l + 2 } else { l }]);
        assert_eq!(o[7], d_ok as u32);
    }
}

#[test]
fn votes_matches_and_reductions() {
    let vals: [u32; 32] =
        std::array::from_fn(|l| [5u32, 9, 5, 0xffff_fff0][l % 4] + (l as u32 / 16));
    let out = warp(
        "setp.gt.u32 %p0, %r0, 6;
         vote.sync.ballot.b32 %r16, %p0, -1;
         vote.sync.any.pred %p1, %p0, 0x0000ffff;
         selp.u32 %r17, 1, 0, %p1;
         vote.sync.all.pred %p2, %p0, 0x22222222;
         selp.u32 %r18, 1, 0, %p2;
         match.any.sync.b32 %r19, %r0, -1;
         match.all.sync.b32 %r20|%p3, %r0, 0x00050005;
         selp.u32 %r21, 1, 0, %p3;
         redux.sync.add.u32 %r22, %r0, -1;
         redux.sync.min.s32 %r23, %r0, -1;
         redux.sync.max.u32 %r24, %r0, -1;
         redux.sync.xor.b32 %r25, %r0, 0xf0f0f0f0;
         activemask.b32 %r26;
         elect.sync %r27|%p4, 0xfffffff0;
         selp.u32 %r28, 1, 0, %p4;",
        &vals,
    );
    let ballot = (0..32)
        .filter(|&l| vals[l] > 6)
        .fold(0u32, |a, l| a | 1 << l);
    let sum = vals.iter().fold(0u32, |a, &v| a.wrapping_add(v));
    let min = vals.iter().map(|&v| v as i32).min().unwrap() as u32;
    let max = *vals.iter().max().unwrap();
    let xor = (0..32)
        .filter(|l| 0xf0f0_f0f0u32 >> l & 1 == 1)
        .fold(0, |a, l| a ^ vals[l]);
    for (l, o) in out.iter().enumerate() {
        assert_eq!(o[0], ballot);
        assert_eq!(o[1], (ballot & 0xffff != 0) as u32);
        assert_eq!(o[2], (ballot & 0x2222_2222 == 0x2222_2222) as u32);
        let same = (0..32)
            .filter(|&k| vals[k] == vals[l])
            .fold(0u32, |a, k| a | 1 << k);
        assert_eq!(o[3], same);
        // Lanes 0, 2, 16 and 18 hold 5, 5, 6, 6: not all equal.
        assert_eq!((o[4], o[5]), (0, 0));
        assert_eq!(o[6], sum);
        assert_eq!(o[7], min);
        assert_eq!(o[8], max);
        assert_eq!(o[9], xor);
        assert_eq!(o[10], u32::MAX);
        assert_eq!(o[11], 4);
        assert_eq!(o[12], (l == 4) as u32);
    }
}

#[test]
fn special_registers_of_the_environment() {
    let o = run1(
        "mov.u32 %r16, %envreg2;
         mov.u32 %r17, %envreg31;
         mov.u32 %r18, %reserved_smem_offset_begin;
         mov.u32 %r19, %reserved_smem_offset_end;
         mov.u32 %r20, %reserved_smem_offset_cap;
         mov.u32 %r21, %cluster_nctarank;
         mov.u32 %r22, %clusterid.x;
         griddepcontrol.wait;
         griddepcontrol.launch_dependents;",
        [0; WORDS],
    );
    // No cooperative launch: no grid workspace.
    assert_eq!((o[0], o[1]), (0, 0));
    // The harness kernel has no shared memory of its own: the reserved
    // region starts at 0 and is 1 KiB.
    assert_eq!((o[2], o[3], o[4]), (0, 1024, 1024));
    assert_eq!((o[5], o[6]), (1, 0));
}

#[test]
fn converged_lanes_see_each_others_shared_stores_without_a_barrier() {
    // Warp-synchronous code (ggml's mul_mat_f with one warp): each lane
    // stores, then reads what its neighbour stored, with no barrier.
    let vals: [u32; 32] = std::array::from_fn(|l| 100 + l as u32);
    let out = warp(
        ".shared .align 4 .b32 buf[32];
         mov.u32 %r2, buf;
         shl.b32 %r3, %r1, 2;
         add.u32 %r4, %r2, %r3;
         st.shared.u32 [%r4], %r0;
         add.u32 %r5, %r1, 1;
         and.b32 %r5, %r5, 31;
         shl.b32 %r5, %r5, 2;
         add.u32 %r5, %r2, %r5;
         ld.shared.u32 %r16, [%r5];",
        &vals,
    );
    for (l, o) in out.iter().enumerate() {
        assert_eq!(o[0], vals[(l + 1) % 32], "lane {l}");
    }
}
