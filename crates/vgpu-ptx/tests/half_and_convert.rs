//! f16 / bf16 arithmetic and comparisons, and `cvt` in every rounding mode.
//! Expected values come from exhaustive tables of the 16-bit formats (the
//! two representable neighbours of the exact result) and from f32 bit
//! neighbours — not from the interpreter's own rounding code.

mod harness;

use harness::{run, run1, Rng, WORDS};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Rn,
    Rz,
    Rm,
    Rp,
}

const MODES: [(Mode, &str); 4] = [
    (Mode::Rn, "rn"),
    (Mode::Rz, "rz"),
    (Mode::Rm, "rm"),
    (Mode::Rp, "rp"),
];

#[derive(Clone, Copy, PartialEq)]
enum H {
    F16,
    Bf16,
}

fn value(h: H, bits: u16) -> f64 {
    match h {
        H::F16 => half::f16::from_bits(bits).to_f64(),
        H::Bf16 => half::bf16::from_bits(bits).to_f64(),
    }
}

/// Every finite value of the format, sorted, with its bits.
fn table(h: H) -> Vec<(f64, u16)> {
    let mut v: Vec<(f64, u16)> = (0..=u16::MAX)
        .map(|b| (value(h, b), b))
        .filter(|(x, b)| x.is_finite() && !(*x == 0.0 && *b != 0 && *b != 0x8000))
        .collect();
    v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap().then(a.1.cmp(&b.1)));
    v
}

/// Rounds exact `x` to a 16-bit format by picking between its two
/// representable neighbours.
fn round16(tab: &[(f64, u16)], h: H, x: f64, mode: Mode) -> u16 {
    let inf = match h {
        H::F16 => 0x7c00,
        H::Bf16 => 0x7f80,
    };
    // Beyond the largest finite value the next "value" is 2^(emax+1): inf.
    let over = match h {
        H::F16 => 65536.0,
        H::Bf16 => 2f64.powi(128),
    };
    if x == 0.0 {
        return if x.is_sign_negative() { 0x8000 } else { 0 };
    }
    let i = tab.partition_point(|e| e.0 < x);
    if i < tab.len() && tab[i].0 == x {
        // -0.0 and +0.0 compare equal; zero was handled above.
        return tab[i].1;
    }
    let (lo, lob) = if i == 0 {
        (-over, inf | 0x8000)
    } else {
        tab[i - 1]
    };
    let (hi, hib) = if i == tab.len() { (over, inf) } else { tab[i] };
    let pick_lo = match mode {
        Mode::Rm => true,
        Mode::Rp => false,
        Mode::Rz => x > 0.0,
        Mode::Rn => {
            let (dl, dh) = (x - lo, hi - x);
            if dl != dh {
                dl < dh
            } else {
                lob & 1 == 0
            }
        }
    };
    let (r, rb) = if pick_lo { (lo, lob) } else { (hi, hib) };
    // A result that rounded to zero keeps the sign of x.
    if r == 0.0 {
        return if x < 0.0 { 0x8000 } else { 0 };
    }
    rb
}

/// Random 16-bit patterns of moderate magnitude (sums and products of a
/// few of them are exact in f64).
fn moderate(rng: &mut Rng, h: H) -> u16 {
    let (lo, span, mant_bits) = match h {
        H::F16 => (10u64, 10u64, 10),
        H::Bf16 => (120, 14, 7),
    };
    let e = lo + rng.next() % span;
    let m = rng.next() & ((1 << mant_bits) - 1);
    let s = rng.next() & 1;
    ((s << 15) | (e << mant_bits) | m) as u16
}

fn pack(lo: u16, hi: u16) -> u32 {
    lo as u32 | (hi as u32) << 16
}

#[test]
fn packed_and_scalar_half_arithmetic_is_exactly_rounded() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for (h, ty) in [(H::F16, "f16"), (H::Bf16, "bf16")] {
        let tab = table(h);
        let body = format!(
            "add.rn.{ty}x2 %r16, %r0, %r1;
             sub.rn.{ty}x2 %r17, %r0, %r1;
             mul.rn.{ty}x2 %r18, %r0, %r1;
             fma.rn.{ty}x2 %r19, %r0, %r1, %r2;
             mov.b32 {{%h0, %h1}}, %r0;
             mov.b32 {{%h2, %h3}}, %r1;
             mov.b32 {{%h4, %h5}}, %r2;
             fma.rn.{ty} %h6, %h0, %h2, %h4;
             add.{ty} %h7, %h1, %h3;
             mov.b32 %r20, {{%h6, %h7}};"
        );
        let inputs: Vec<[u32; WORDS]> = (0..64)
            .map(|_| {
                let mut w = [0u32; WORDS];
                for x in w.iter_mut().take(3) {
                    *x = pack(moderate(&mut rng, h), moderate(&mut rng, h));
                }
                w
            })
            .collect();
        let out = run(&body, &inputs);
        for (w, o) in inputs.iter().zip(&out) {
            for lane in 0..2 {
                let get = |x: u32| value(h, (x >> (16 * lane)) as u16);
                let (a, b, c) = (get(w[0]), get(w[1]), get(w[2]));
                let r = |x: f64| round16(&tab, h, x, Mode::Rn) as u32;
                let lanes = |x: u32| (x >> (16 * lane)) & 0xffff;
                assert_eq!(lanes(o[0]), r(a + b), "{ty} add {a} {b}");
                assert_eq!(lanes(o[1]), r(a - b), "{ty} sub {a} {b}");
                assert_eq!(lanes(o[2]), r(a * b), "{ty} mul {a} {b}");
                assert_eq!(lanes(o[3]), r(a * b + c), "{ty} fma {a} {b} {c}");
            }
            let lo = |x: u32| value(h, x as u16);
            let hi = |x: u32| value(h, (x >> 16) as u16);
            let r = |x: f64| round16(&tab, h, x, Mode::Rn) as u32;
            assert_eq!(o[4] & 0xffff, r(lo(w[0]) * lo(w[1]) + lo(w[2])));
            assert_eq!(o[4] >> 16, r(hi(w[0]) + hi(w[1])));
        }
    }
}

#[test]
fn half_relu_sat_min_max_abs_neg() {
    let f = |x: f32| half::f16::from_f32(x).to_bits();
    let b = |x: f32| half::bf16::from_f32(x).to_bits();
    let nan16 = 0x7e00u16;
    let w = [
        pack(f(-1.5), f(0.75)),
        pack(f(0.5), f(2.0)),
        pack(f(0.25), f(-3.0)),
        pack(nan16, f(1.0)),
        pack(b(-2.5), b(0.5)),
        pack(b(1.0), b(1.0)),
        pack(0x7fc0, b(-0.25)),
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    let o = run1(
        "fma.rn.relu.f16x2 %r16, %r0, %r1, %r2;
         add.sat.f16x2 %r17, %r0, %r1;
         max.f16x2 %r18, %r3, %r0;
         max.NaN.f16x2 %r19, %r3, %r0;
         min.bf16x2 %r20, %r4, %r6;
         max.NaN.bf16x2 %r21, %r6, %r5;
         abs.bf16x2 %r22, %r4;
         neg.f16x2 %r23, %r0;
         mov.b32 {%h0, %h1}, %r0;
         abs.f16 %h2, %h0;
         mov.b32 %r24, {%h2, %h2};
         fma.rn.relu.bf16x2 %r25, %r4, %r5, %r5;
         mov.b32 {%h4, %h5}, %r4;
         mov.b32 {%h6, %h7}, %r5;
         fma.rn.bf16 %h8, %h4, %h6, %h7;
         mov.b32 %r26, {%h8, %h8};",
        w,
    );
    // relu(-1.5*0.5+0.25) = relu(-0.5) = 0; relu(0.75*2-3) = relu(-1.5) = 0.
    assert_eq!(o[0], 0);
    // sat(-1.5+0.5) = 0, sat(0.75+2) = 1.
    assert_eq!(o[1], pack(0, f(1.0)));
    // max(NaN, -1.5) = -1.5; max(1.0, 0.75) = 1.0.
    assert_eq!(o[2], pack(f(-1.5), f(1.0)));
    // .NaN propagates a canonical NaN.
    assert_eq!(o[3], pack(0x7fff, f(1.0)));
    // min(-2.5, NaN) = -2.5; min(0.5, -0.25) = -0.25.
    assert_eq!(o[4], pack(b(-2.5), b(-0.25)));
    assert_eq!(o[5], pack(0x7fff, b(1.0)));
    assert_eq!(o[6], pack(b(2.5), b(0.5)));
    assert_eq!(o[7], pack(f(1.5), f(-0.75)));
    assert_eq!(o[8], pack(f(1.5), f(1.5)));
    // relu(-2.5*1+1) = 0; relu(0.5*1+1) = 1.5.
    assert_eq!(o[9], pack(0, b(1.5)));
    assert_eq!(o[10] & 0xffff, b(-1.5) as u32);
}

#[test]
fn half_comparisons_set_both_halves() {
    let f = |x: f32| half::f16::from_f32(x).to_bits();
    let b = |x: f32| half::bf16::from_f32(x).to_bits();
    let mut w = [0u32; WORDS];
    w[0] = pack(f(1.0), f(5.0));
    w[1] = pack(f(2.0), f(3.0));
    w[2] = pack(b(-1.0), b(7.0));
    w[3] = pack(b(-1.0), 0x7fc0);
    let o = run1(
        "setp.lt.f16x2 %p0|%p1, %r0, %r1;
         selp.u32 %r16, 1, 0, %p0;
         selp.u32 %r17, 1, 0, %p1;
         set.gt.f16x2.f16x2 %r18, %r0, %r1;
         setp.eq.bf16x2 %p2|%p3, %r2, %r3;
         selp.u32 %r19, 1, 0, %p2;
         selp.u32 %r20, 1, 0, %p3;
         mov.b32 {%h0, %h1}, %r2;
         mov.b32 {%h2, %h3}, %r3;
         setp.neu.bf16 %p4, %h1, %h3;
         selp.u32 %r21, 1, 0, %p4;
         set.lt.u32.f16x2 %r22, %r0, %r1;",
        w,
    );
    // Low halves: 1 < 2; high halves: 5 < 3 is false.
    assert_eq!((o[0], o[1]), (1, 0));
    assert_eq!(o[2], pack(0, f(1.0)));
    assert_eq!((o[3], o[4]), (1, 0));
    // NaN is unordered: neu holds.
    assert_eq!(o[5], 1);
    assert_eq!(o[6], 0x0000_ffff);
}

/// f32 patterns whose values cover f16's and bf16's normal, subnormal and
/// overflow ranges.
fn f32_sample(rng: &mut Rng) -> f32 {
    let e = 95 + rng.next() % 60;
    let m = rng.next() & 0x7f_ffff;
    let s = rng.next() & 1;
    f32::from_bits(((s << 31) | (e << 23) | m) as u32)
}

#[test]
fn cvt_f32_to_half_in_every_rounding_mode() {
    let mut rng = Rng(42);
    let tabs = [
        (H::F16, "f16", table(H::F16)),
        (H::Bf16, "bf16", table(H::Bf16)),
    ];
    let inputs: Vec<[u32; WORDS]> = (0..128)
        .map(|_| std::array::from_fn(|_| f32_sample(&mut rng).to_bits()))
        .collect();
    for (h, ty, tab) in &tabs {
        let mut body = String::new();
        for (k, (_, m)) in MODES.iter().enumerate() {
            body += &format!(
                "cvt.{m}.{ty}.f32 %h{k}, %f0;\n cvt.u32.u16 %r{}, %h{k};\n",
                16 + k
            );
        }
        let body = format!("mov.b32 %f0, %r0;\n{body}");
        let out = run(&body, &inputs);
        for (w, o) in inputs.iter().zip(&out) {
            let x = f32::from_bits(w[0]) as f64;
            for (k, (mode, m)) in MODES.iter().enumerate() {
                assert_eq!(
                    o[k] as u16,
                    round16(tab, *h, x, *mode),
                    "cvt.{m}.{ty}.f32 of {x:e}"
                );
            }
        }
    }
}

#[test]
fn cvt_pairs_pack_a_high_and_b_low() {
    let mut w = [0u32; WORDS];
    w[0] = 1.5f32.to_bits();
    w[1] = (-2.0f32).to_bits();
    let o = run1(
        "mov.b32 %f0, %r0;
         mov.b32 %f1, %r1;
         cvt.rn.f16x2.f32 %r16, %f0, %f1;
         cvt.rn.bf16x2.f32 %r17, %f0, %f1;
         cvt.rn.relu.f16x2.f32 %r18, %f0, %f1;",
        w,
    );
    let f = |x: f32| half::f16::from_f32(x).to_bits();
    let b = |x: f32| half::bf16::from_f32(x).to_bits();
    assert_eq!(o[0], pack(f(-2.0), f(1.5)));
    assert_eq!(o[1], pack(b(-2.0), b(1.5)));
    assert_eq!(o[2], pack(0, f(1.5)));
}

#[test]
fn cvt_round_to_integral_in_each_format() {
    // numba's trunc/ceil/floor on bf16 use cvt.rzi/rpi/rmi.bf16.bf16.
    let vals = [2.5f32, -2.5, 3.75, -0.75, 0.5, 1.5, -1.25, 100.5];
    let b = |x: f32| half::bf16::from_f32(x).to_bits();
    let f = |x: f32| half::f16::from_f32(x).to_bits();
    let mut body = String::new();
    for (k, m) in ["rzi", "rpi", "rmi", "rni"].iter().enumerate() {
        body += &format!(
            "cvt.{m}.bf16.bf16 %h{a}, %h0;
             cvt.{m}.f16.f16 %h{c}, %h1;
             cvt.{m}.f32.f32 %f{f}, %f0;
             mov.b32 %r{o1}, {{%h{a}, %h{c}}};
             mov.b32 %r{o2}, %f{f};\n",
            f = k + 1,
            a = 2 + 2 * k,
            c = 3 + 2 * k,
            o1 = 16 + 2 * k,
            o2 = 17 + 2 * k
        );
    }
    let body = format!("mov.b32 {{%h0, %h1}}, %r0;\nmov.b32 %f0, %r1;\n{body}");
    for v in vals {
        let mut w = [0u32; WORDS];
        w[0] = pack(b(v), f(v));
        w[1] = v.to_bits();
        let o = run1(&body, w);
        let x = v as f64;
        let exp = [x.trunc(), x.ceil(), x.floor(), x.round_ties_even()];
        for (k, e) in exp.iter().enumerate() {
            let e = *e as f32;
            assert_eq!(o[2 * k], pack(b(e), f(e)), "mode {k} of {v}");
            assert_eq!(o[2 * k + 1], e.to_bits(), "f32 mode {k} of {v}");
        }
    }
}

/// The f32 neighbours of exact `x` picked by `mode`.
fn round_f32_ref(x: f64, mode: Mode) -> u32 {
    let n = x as f32;
    if n as f64 == x {
        return n.to_bits();
    }
    let up = |f: f32| {
        if f >= 0.0 {
            f32::from_bits(f.to_bits() + 1)
        } else {
            f32::from_bits(f.to_bits() - 1)
        }
    };
    let down = |f: f32| -up(-f);
    let (lo, hi) = if (n as f64) < x {
        (n, up(n))
    } else {
        (down(n), n)
    };
    let r = match mode {
        Mode::Rn => n,
        Mode::Rm => lo,
        Mode::Rp => hi,
        Mode::Rz => {
            if x > 0.0 {
                lo
            } else {
                hi
            }
        }
    };
    r.to_bits()
}

#[test]
fn f32_directed_rounding_of_arithmetic_and_conversions() {
    let mut rng = Rng(7);
    let sample = |rng: &mut Rng| {
        let e = 110 + rng.next() % 30;
        let m = rng.next() & 0x7f_ffff;
        f32::from_bits(((rng.next() & 1) << 31 | e << 23 | m) as u32)
    };
    let inputs: Vec<[u32; WORDS]> = (0..64)
        .map(|_| {
            let mut w = [0u32; WORDS];
            for x in w.iter_mut().take(3) {
                *x = sample(&mut rng).to_bits();
            }
            let d = (sample(&mut rng) as f64) * (1.0 + 2f64.powi(-40));
            w[3] = d.to_bits() as u32;
            w[4] = (d.to_bits() >> 32) as u32;
            w[5] = rng.u32() | 0x0100_0001;
            w
        })
        .collect();
    let mut body = "mov.b32 %f0, %r0; mov.b32 %f1, %r1; mov.b32 %f2, %r2;
                    mov.b64 %fd0, {%r3, %r4};\n"
        .to_string();
    for (k, (_, m)) in MODES.iter().enumerate() {
        body += &format!(
            "add.{m}.f32 %f3, %f0, %f1; mov.b32 %r{a}, %f3;
             mul.{m}.f32 %f4, %f0, %f1; mov.b32 %r{b}, %f4;
             fma.{m}.f32 %f5, %f0, %f1, %f2; mov.b32 %r{c}, %f5;
             cvt.{m}.f32.f64 %f6, %fd0; mov.b32 %r{d}, %f6;\n",
            a = 16 + k,
            b = 20 + k,
            c = 24 + k,
            d = 28 + k
        );
    }
    let out = run(&body, &inputs);
    for (w, o) in inputs.iter().zip(&out) {
        let (a, b, c) = (
            f32::from_bits(w[0]) as f64,
            f32::from_bits(w[1]) as f64,
            f32::from_bits(w[2]) as f64,
        );
        let d = f64::from_bits(w[3] as u64 | (w[4] as u64) << 32);
        for (k, (mode, m)) in MODES.iter().enumerate() {
            // The inputs' exponents are close: these are exact in f64.
            assert_eq!(o[k], round_f32_ref(a + b, *mode), "add.{m} {a} {b}");
            assert_eq!(o[4 + k], round_f32_ref(a * b, *mode), "mul.{m}");
            assert_eq!(o[8 + k], round_f32_ref(a * b + c, *mode), "fma.{m}");
            assert_eq!(o[12 + k], round_f32_ref(d, *mode), "cvt.{m}.f32.f64 {d}");
        }
    }
}

#[test]
fn cvt_between_integers_and_floats() {
    let mut w = [0u32; WORDS];
    w[0] = (1 << 24) + 1;
    w[1] = (-2.5f32).to_bits();
    w[2] = 3e9f32.to_bits();
    w[3] = f32::NAN.to_bits();
    let o = run1(
        "cvt.rz.f32.u32 %f0, %r0; mov.b32 %r16, %f0;
         cvt.rp.f32.u32 %f1, %r0; mov.b32 %r17, %f1;
         cvt.rn.f32.u32 %f2, %r0; mov.b32 %r18, %f2;
         mov.b32 %f3, %r1;
         cvt.rni.s32.f32 %r19, %f3;
         cvt.rmi.s32.f32 %r20, %f3;
         cvt.rpi.s32.f32 %r21, %f3;
         cvt.rzi.s32.f32 %r22, %f3;
         mov.b32 %f4, %r2;
         cvt.rzi.s32.f32 %r23, %f4;
         mov.b32 %f5, %r3;
         cvt.rzi.u32.f32 %r24, %f5;
         cvt.rn.f16.s32 %h0, %r0;
         cvt.u32.u16 %r25, %h0;
         mov.b32 {%h1, %h2}, 0x3e00c100;
         cvt.rzi.s32.f16 %r26, %h1;
         cvt.rn.bf16.s32 %h3, %r0;
         cvt.u32.u16 %r27, %h3;
         cvt.sat.s8.s32 %r28, %r0;
         cvt.s8.s32 %r29, %r0;",
        w,
    );
    let two24 = 16_777_216f32;
    assert_eq!(o[0], two24.to_bits());
    assert_eq!(o[1], (two24 + 2.0).to_bits());
    // A tie: 2^24 + 1 rounds to the even 2^24.
    assert_eq!(o[2], two24.to_bits());
    assert_eq!(o[3] as i32, -2);
    assert_eq!(o[4] as i32, -3);
    assert_eq!(o[5] as i32, -2);
    assert_eq!(o[6] as i32, -2);
    // Saturation, and NaN → 0.
    assert_eq!(o[7] as i32, i32::MAX);
    assert_eq!(o[8], 0);
    // 2^24+1 overflows f16 to +inf.
    assert_eq!(o[9], 0x7c00);
    // 0xc100 is -2.5 in f16: truncates to -2.
    assert_eq!(o[10] as i32, -2);
    assert_eq!(o[11], half::bf16::from_f32(two24).to_bits() as u32);
    assert_eq!(o[12], 127);
    assert_eq!(o[13], 1);
}

#[test]
fn cvt_to_and_from_fp8_pairs() {
    // E4M3: bias 7, 3 mantissa bits, no infinities, S.1111.111 is NaN.
    let e4m3 = |b: u8| -> f64 {
        let s = if b & 0x80 != 0 { -1.0 } else { 1.0 };
        let (e, m) = ((b >> 3) & 15, (b & 7) as f64);
        match e {
            15 if m == 7.0 => f64::NAN,
            0 => s * m / 8.0 / 64.0,
            e => s * (1.0 + m / 8.0) * 2f64.powi(e as i32 - 7),
        }
    };
    let inputs: Vec<[u32; WORDS]> = (0..128u32)
        .map(|k| {
            let mut w = [0u32; WORDS];
            w[0] = (2 * k) | (2 * k + 1) << 8;
            w
        })
        .collect();
    let out = run(
        "mov.b32 {%h0, %h1}, %r0;
         cvt.rn.f16x2.e4m3x2 %r16, %h0;
         cvt.rn.f16x2.e5m2x2 %r17, %h0;",
        &inputs,
    );
    for (w, o) in inputs.iter().zip(&out) {
        for half in 0..2 {
            let code = (w[0] >> (8 * half)) as u8;
            let got = half::f16::from_bits((o[0] >> (16 * half)) as u16).to_f64();
            let want = e4m3(code);
            assert!(
                got == want || (got.is_nan() && want.is_nan()),
                "e4m3 {code:#x}: {got} vs {want}"
            );
            // E5M2 is the top byte of an f16 (NaNs may be canonicalised).
            let got = (o[1] >> (16 * half)) as u16;
            let want = (code as u16) << 8;
            if half::f16::from_bits(want).is_nan() {
                assert!(half::f16::from_bits(got).is_nan(), "e5m2 {code:#x}");
            } else {
                assert_eq!(got, want, "e5m2 {code:#x}");
            }
        }
    }
    let mut w = [0u32; WORDS];
    w[0] = 1000f32.to_bits();
    w[1] = (-0.5f32).to_bits();
    w[2] = f32::NAN.to_bits();
    w[3] = 1.0f32.to_bits();
    w[4] = 0.3f32.to_bits();
    let o = run1(
        "mov.b32 %f0, %r0; mov.b32 %f1, %r1; mov.b32 %f2, %r2; mov.b32 %f3, %r3; mov.b32 %f4, %r4;
         cvt.rn.satfinite.e4m3x2.f32 %h0, %f0, %f1;
         cvt.u32.u16 %r16, %h0;
         cvt.rn.satfinite.e4m3x2.f32 %h1, %f2, %f3;
         cvt.u32.u16 %r17, %h1;
         cvt.rn.satfinite.relu.e5m2x2.f32 %h2, %f1, %f4;
         cvt.u32.u16 %r18, %h2;",
        w,
    );
    // 1000 saturates to 448 (0x7e); -0.5 is 0xb0.
    assert_eq!(o[0], 0x7eb0);
    // NaN is 0x7f; 1.0 is 0x38.
    assert_eq!(o[1], 0x7f38);
    // relu(-0.5) = 0; 0.3 rounds to 0.3125 = 0x35 in E5M2.
    assert_eq!(o[2], 0x0035);
}

#[test]
fn f64_directed_rounding() {
    let one_up = f64::from_bits(1.0f64.to_bits() + 1);
    let tiny = 2f64.powi(-60);
    let eps = f64::EPSILON;
    let mut w = [0u32; WORDS];
    let put = |w: &mut [u32; WORDS], k: usize, v: f64| {
        w[k] = v.to_bits() as u32;
        w[k + 1] = (v.to_bits() >> 32) as u32;
    };
    put(&mut w, 0, 1.0);
    put(&mut w, 2, tiny);
    put(&mut w, 4, 1.0 + eps);
    put(&mut w, 6, 3.0);
    let mut body = "mov.b64 %fd0, {%r0, %r1}; mov.b64 %fd1, {%r2, %r3};
                    mov.b64 %fd2, {%r4, %r5}; mov.b64 %fd3, {%r6, %r7};\n"
        .to_string();
    let ops = [
        "add.rz.f64 %fd4, %fd0, %fd1;",
        "add.rp.f64 %fd4, %fd0, %fd1;",
        "sub.rm.f64 %fd4, %fd0, %fd1;",
        "mul.rm.f64 %fd4, %fd2, %fd2;",
        "mul.rp.f64 %fd4, %fd2, %fd2;",
        "div.rz.f64 %fd4, %fd0, %fd3;",
        "div.rp.f64 %fd4, %fd0, %fd3;",
        "fma.rp.f64 %fd4, %fd0, %fd0, %fd1;",
    ];
    for (k, op) in ops.iter().enumerate() {
        body += &format!(
            "{op}\n mov.b64 {{%r{}, %r{}}}, %fd4;\n",
            16 + 2 * k,
            17 + 2 * k
        );
    }
    let o = run1(&body, w);
    let got = |k: usize| f64::from_bits(o[2 * k] as u64 | (o[2 * k + 1] as u64) << 32);
    let below = |x: f64| f64::from_bits(x.to_bits() - 1);
    assert_eq!(got(0), 1.0);
    assert_eq!(got(1), one_up);
    // 1 - 2^-60 lies just below 1.
    assert_eq!(got(2), below(1.0));
    // (1 + eps)^2 = 1 + 2 eps + eps^2.
    assert_eq!(got(3), 1.0 + 2.0 * eps);
    assert_eq!(got(4), 1.0 + 3.0 * eps);
    // 1/3 in binary is 0.0101...: the truncated and the next value up.
    // 1/3 lies in [0.25, 0.5): f64 values there are m * 2^-54 with
    // m < 2^53; the truncated one has m = floor(2^54 / 3).
    let lo = (((1u128 << 54) / 3) as f64) * 2f64.powi(-54);
    let hi = f64::from_bits(lo.to_bits() + 1);
    assert_eq!(got(5), lo);
    assert_eq!(got(6), hi);
    assert_eq!(got(7), one_up);
}

#[test]
fn approximate_functions_in_half_and_single_precision() {
    let f = |x: f32| half::f16::from_f32(x).to_bits();
    let b = |x: f32| half::bf16::from_f32(x).to_bits();
    let mut w = [0u32; WORDS];
    w[0] = pack(f(1.0), f(-2.0));
    w[1] = pack(b(0.5), b(-3.0));
    w[2] = 0.5f32.to_bits();
    let o = run1(
        "ex2.approx.f16x2 %r16, %r0;
         tanh.approx.bf16x2 %r17, %r1;
         mov.b32 %f0, %r2;
         tanh.approx.f32 %f1, %f0;
         mov.b32 %r18, %f1;
         ex2.approx.ftz.f32 %f2, %f0;
         mov.b32 %r19, %f2;
         mov.b32 {%h0, %h1}, %r0;
         ex2.approx.f16 %h2, %h1;
         mov.b32 %r20, {%h2, %h2};",
        w,
    );
    let close = |got: f64, want: f64, tol: f64| (got - want).abs() <= tol * want.abs();
    let h = |x: u32| half::f16::from_bits(x as u16).to_f64();
    let bv = |x: u32| half::bf16::from_bits(x as u16).to_f64();
    assert_eq!(h(o[0]), 2.0);
    assert_eq!(h(o[0] >> 16), 0.25);
    assert!(close(bv(o[1]), 0.5f64.tanh(), 1e-2));
    assert!(close(bv(o[1] >> 16), (-3.0f64).tanh(), 1e-2));
    assert!(close(f32::from_bits(o[2]) as f64, 0.5f64.tanh(), 1e-6));
    assert!(close(f32::from_bits(o[3]) as f64, 2f64.sqrt(), 1e-6));
    assert_eq!(h(o[4]), 0.25);
}
