//! Kernels compiled by real nvcc 13.5 (tests/cuda/kernels.cu → kernels_sm80.ptx).

mod common;
use common::*;
use vgpu_ptx::{ArenaMemory, ExecError};

#[test]
fn vadd_1m() {
    let m = nvcc_module();
    let mem = ArenaMemory::new();
    let n = 1 << 20;
    let mut r = Rng(7);
    let a: Vec<f32> = (0..n).map(|_| r.f32()).collect();
    let b: Vec<f32> = (0..n).map(|_| r.f32() * 10.0).collect();
    let da = mem.alloc_init(&f32s_bytes(&a));
    let db = mem.alloc_init(&f32s_bytes(&b));
    let dc = mem.alloc(n * 4);
    let t = std::time::Instant::now();
    run(
        &m,
        &mem,
        "vadd",
        [(n as u32).div_ceil(256), 1, 1],
        [256, 1, 1],
        0,
        &[
            &da.to_le_bytes(),
            &db.to_le_bytes(),
            &dc.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
    )
    .unwrap();
    eprintln!("vadd 1M: {:?}", t.elapsed());
    let c = mem.read_f32s(dc, n);
    for i in 0..n {
        assert_eq!(c[i], a[i] + b[i], "element {i}");
    }
}

#[test]
fn matmul_256_tiled() {
    let m = nvcc_module();
    let mem = ArenaMemory::new();
    let n = 256usize;
    let mut r = Rng(3);
    let a: Vec<f32> = (0..n * n).map(|_| r.f32() - 0.5).collect();
    let b: Vec<f32> = (0..n * n).map(|_| r.f32() - 0.5).collect();
    let da = mem.alloc_init(&f32s_bytes(&a));
    let db = mem.alloc_init(&f32s_bytes(&b));
    let dc = mem.alloc(n * n * 4);
    let t = std::time::Instant::now();
    run(
        &m,
        &mem,
        "matmul",
        [16, 16, 1],
        [16, 16, 1],
        0,
        &[
            &da.to_le_bytes(),
            &db.to_le_bytes(),
            &dc.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
    )
    .unwrap();
    eprintln!("matmul 256: {:?}", t.elapsed());
    let c = mem.read_f32s(dc, n * n);
    for i in 0..n {
        for j in 0..n {
            let want: f32 = (0..n).map(|k| a[i * n + k] * b[k * n + j]).sum();
            assert!(
                close(c[i * n + j], want, 1e-3),
                "C[{i}][{j}] = {} want {want}",
                c[i * n + j]
            );
        }
    }
}

#[test]
fn warp_shuffle_reduction() {
    let m = nvcc_module();
    let mem = ArenaMemory::new();
    let n = 10_000usize;
    let v: Vec<i32> = (0..n as i32).map(|i| i * 3 - 7).collect();
    let din = mem.alloc_init(&i32s_bytes(&v));
    let dout = mem.alloc(4);
    run(
        &m,
        &mem,
        "warp_reduce",
        [(n as u32).div_ceil(128), 1, 1],
        [128, 1, 1],
        0,
        &[
            &din.to_le_bytes(),
            &dout.to_le_bytes(),
            &(n as i32).to_le_bytes(),
        ],
    )
    .unwrap();
    let got = mem.read_u32s(dout, 1)[0] as i32;
    assert_eq!(got, v.iter().sum::<i32>());
}

#[test]
fn warp_collectives() {
    let m = nvcc_module();
    let mem = ArenaMemory::new();
    let nt = 64usize;
    let v: Vec<i32> = (0..nt as i32).map(|i| (i * 37 + 11) % 101).collect();
    let din = mem.alloc_init(&i32s_bytes(&v));
    let dout = mem.alloc(nt * 8 * 4);
    run(
        &m,
        &mem,
        "warp_ops",
        [1, 1, 1],
        [nt as u32, 1, 1],
        0,
        &[&din.to_le_bytes(), &dout.to_le_bytes()],
    )
    .unwrap();
    let o = mem.read_u32s(dout, nt * 8);
    let odd_count = v.iter().filter(|&&x| x & 1 != 0).count() as u32;
    for t in 0..nt {
        let w = t / 32 * 32;
        let lane = t % 32;
        let lanev = |l: usize| v[w + l] as u32;
        let up = if lane >= 3 {
            lanev(lane - 3)
        } else {
            lanev(lane)
        };
        assert_eq!(o[t * 8], up, "shfl_up t{t}");
        assert_eq!(o[t * 8 + 1], lanev(lane ^ 5), "shfl_xor t{t}");
        assert_eq!(o[t * 8 + 2], lanev(7), "shfl_idx t{t}");
        let seg = lane / 8 * 8;
        assert_eq!(
            o[t * 8 + 3],
            lanev(seg + ((lane ^ 1) % 8)),
            "shfl width 8 t{t}"
        );
        let ballot = (0..32)
            .filter(|&l| lanev(l) & 1 != 0)
            .fold(0u32, |a, l| a | 1 << l);
        assert_eq!(o[t * 8 + 4], ballot, "ballot t{t}");
        assert_eq!(o[t * 8 + 5], 1, "all/any t{t}");
        let am = if lane < 20 { 0x000f_ffff } else { u32::MAX };
        assert_eq!(o[t * 8 + 6], am, "activemask t{t}");
        assert_eq!(o[t * 8 + 7], odd_count, "syncthreads_count t{t}");
    }
}

#[test]
fn atomic_histogram_global_and_shared() {
    let m = nvcc_module();
    let mem = ArenaMemory::new();
    let n = 100_000usize;
    let mut r = Rng(99);
    let data: Vec<u8> = (0..n).map(|_| (r.next_u64() % 251) as u8).collect();
    let dd = mem.alloc_init(&data);
    let hg = mem.alloc(256 * 4);
    let hd = mem.alloc(256 * 4);
    run(
        &m,
        &mem,
        "histogram",
        [8, 1, 1],
        [128, 1, 1],
        0,
        &[
            &dd.to_le_bytes(),
            &(n as i32).to_le_bytes(),
            &hg.to_le_bytes(),
            &hd.to_le_bytes(),
        ],
    )
    .unwrap();
    let mut want = [0u32; 256];
    for &b in &data {
        want[b as usize] += 1;
    }
    assert_eq!(mem.read_u32s(hg, 256), want.to_vec());
    assert_eq!(mem.read_u32s(hd, 256), want.to_vec());
}

#[test]
fn struct_by_value_layout_and_values() {
    let m = nvcc_module();
    let k = m.entry("by_value").unwrap();
    // the layout docs/call-path.md "Parameter layout from PTX" describes.
    let layout: Vec<(u32, u32)> = k.params.iter().map(|p| (p.offset, p.size)).collect();
    assert_eq!(
        layout,
        vec![(0, 24), (24, 1), (32, 32), (64, 2), (72, 8), (80, 8)]
    );
    assert_eq!(k.param_size, 88);
    let mem = ArenaMemory::new();
    let out = mem.alloc(32 * 4);
    let mut p = vec![0u8; 24];
    p[0..4].copy_from_slice(&1.5f32.to_le_bytes());
    p[8..16].copy_from_slice(&100.25f64.to_le_bytes());
    p[16..19].copy_from_slice(&[3, 5, 7]);
    let mut big = vec![0u8; 32];
    for (j, v) in [10i32, 20, 30, 40, 50].iter().enumerate() {
        big[j * 4..j * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    run(
        &m,
        &mem,
        "by_value",
        [1, 1, 1],
        [32, 1, 1],
        0,
        &[
            &p,
            &[9u8],
            &big,
            &(-4i16).to_le_bytes(),
            &out.to_le_bytes(),
            &0.5f64.to_le_bytes(),
        ],
    )
    .unwrap();
    let got = mem.read_f32s(out, 32);
    for i in 0..32 {
        let tag = [3, 5, 7][i % 3] as f32;
        let want =
            1.5 * i as f32 + 100.25 + tag + 9.0 + [10., 20., 30., 40., 50.][i % 5] - 4.0 + 0.5;
        assert!(
            close(got[i], want, 1e-6),
            "out[{i}] = {} want {want}",
            got[i]
        );
    }
}

#[test]
fn dynamic_shared_reverse() {
    let m = nvcc_module();
    let mem = ArenaMemory::new();
    let (blocks, bs) = (4usize, 96usize);
    let v: Vec<f32> = (0..blocks * bs).map(|i| i as f32).collect();
    let d = mem.alloc_init(&f32s_bytes(&v));
    run(
        &m,
        &mem,
        "reverse_dyn",
        [blocks as u32, 1, 1],
        [bs as u32, 1, 1],
        (bs * 4) as u32,
        &[&d.to_le_bytes()],
    )
    .unwrap();
    let got = mem.read_f32s(d, blocks * bs);
    for b in 0..blocks {
        for t in 0..bs {
            assert_eq!(got[b * bs + t], v[b * bs + bs - 1 - t]);
        }
    }
    // Without the dynamic shared memory the kernel's accesses are out of bounds.
    let err = run(
        &m,
        &mem,
        "reverse_dyn",
        [1, 1, 1],
        [bs as u32, 1, 1],
        0,
        &[&d.to_le_bytes()],
    )
    .unwrap_err();
    assert!(matches!(err, ExecError::IllegalAddress { .. }), "{err}");
}

#[test]
fn device_function_calls_and_recursion() {
    let m = nvcc_module();
    let mem = ArenaMemory::new();
    let nt = 32usize;
    let out = mem.alloc(nt * 8);
    let fibs = mem.alloc(nt * 4);
    run(
        &m,
        &mem,
        "calls",
        [1, 1, 1],
        [nt as u32, 1, 1],
        0,
        &[&out.to_le_bytes(), &fibs.to_le_bytes()],
    )
    .unwrap();
    let o = mem.read_f32s(out, nt * 2);
    let f = mem.read_u32s(fibs, nt);
    fn fib(n: u32) -> u32 {
        if n < 2 {
            n
        } else {
            fib(n - 1) + fib(n - 2)
        }
    }
    for i in 0..nt {
        let x = i as f32;
        assert_eq!(o[2 * i], x * x * (i as f32 + 1.0) + 1.0, "poly {i}");
        assert_eq!(o[2 * i + 1], x * 2.0, "side {i}");
        assert_eq!(f[i], fib(i as u32 % 16), "fib {i}");
    }
}

#[test]
fn integer_math() {
    let m = nvcc_module();
    let mem = ArenaMemory::new();
    let a: Vec<i32> = vec![
        100,
        -100,
        7,
        -7,
        i32::MAX,
        i32::MIN + 1,
        123456,
        -1,
        0x0f0f_0f0f,
        5,
        1 << 30,
        -99999,
    ];
    let b: Vec<i32> = vec![7, 7, -3, -3, 2, 3, -1000, 1, 0x1234, 13, 12345, 31];
    let nt = a.len();
    let da = mem.alloc_init(&i32s_bytes(&a));
    let db = mem.alloc_init(&i32s_bytes(&b));
    let out = mem.alloc(nt * 12 * 4);
    run(
        &m,
        &mem,
        "int_math",
        [1, 1, 1],
        [nt as u32, 1, 1],
        0,
        &[&da.to_le_bytes(), &db.to_le_bytes(), &out.to_le_bytes()],
    )
    .unwrap();
    let o = mem.read_u32s(out, nt * 12);
    for i in 0..nt {
        let (x, y) = (a[i], b[i]);
        let (ux, uy) = (x as u32, y as u32);
        let want: [i32; 12] = [
            x.wrapping_div(y),
            x.wrapping_rem(y),
            (ux / uy) as i32,
            (ux % uy) as i32,
            x.min(y).wrapping_add(x.max(y).wrapping_mul(3)),
            x.wrapping_abs(),
            ux.count_ones() as i32,
            x.leading_zeros() as i32,
            ux.reverse_bits() as i32,
            ((x as i64 * y as i64) >> 32) as i32,
            ((x as i64 * y as i64) >> 7) as i32,
            (x << (y & 7)) ^ (ux >> (uy & 15)) as i32,
        ];
        for k in 0..12 {
            assert_eq!(
                o[i * 12 + k] as i32,
                want[k],
                "int_math thread {i} result {k} (x={x}, y={y})"
            );
        }
    }
}

#[test]
fn float_math() {
    let m = nvcc_module();
    let mem = ArenaMemory::new();
    let a: Vec<f32> = vec![
        0.0, 0.5, 1.0, 2.25, 3.7, 10.0, 42.5, 100.0, 1234.5, 7.77, 0.001, 55.0,
    ];
    let nt = a.len();
    let da = mem.alloc_init(&f32s_bytes(&a));
    let out = mem.alloc(nt * 12 * 4);
    let dout = mem.alloc(nt * 2 * 8);
    run(
        &m,
        &mem,
        "float_math",
        [1, 1, 1],
        [nt as u32, 1, 1],
        0,
        &[&da.to_le_bytes(), &out.to_le_bytes(), &dout.to_le_bytes()],
    )
    .unwrap();
    let o = mem.read_f32s(out, nt * 12);
    let d: Vec<f64> = mem
        .read_vec(dout, nt * 16)
        .unwrap()
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    for i in 0..nt {
        let x = a[i];
        let want = [
            x.sqrt(),
            (x * 0.1).exp(),
            x.sin(),
            x.cos(),
            (x + 1.0).ln(),
            x / 3.0,
            x / 7.0,
            1.0 / (x + 1.0).sqrt(),
            (x * 0.3).floor() + (x * 0.7).round(),
            x.min(5.0) + x.max(2.0),
            (x * 0.05).tanh(),
            ((x * 1.7) as i32) as f32 + (x * 0.5).round_ties_even(),
        ];
        for k in 0..12 {
            assert!(
                close(o[i * 12 + k], want[k], 2e-6),
                "float_math x={x} result {k}: {} want {}",
                o[i * 12 + k],
                want[k]
            );
        }
        let dx = x as f64;
        assert!(
            (d[2 * i] - dx.sqrt() * (dx * 0.01).exp()).abs() <= 1e-12 * d[2 * i].abs().max(1.0)
        );
        assert_eq!(d[2 * i + 1], dx / 3.0);
    }
}

#[test]
fn out_of_bounds_write_is_illegal_address() {
    let m = nvcc_module();
    let mem = ArenaMemory::new();
    let n = 256usize;
    let out = mem.alloc(n * 4);
    let err = run(
        &m,
        &mem,
        "oob_write",
        [2, 1, 1],
        [128, 1, 1],
        0,
        &[&out.to_le_bytes(), &(n as i32).to_le_bytes()],
    )
    .unwrap_err();
    match err {
        ExecError::IllegalAddress { addr, .. } => assert!(addr >= out + n as u64 * 4, "{addr:#x}"),
        e => panic!("expected IllegalAddress, got {e}"),
    }
    // Writing within bounds (n = 0 offset, 256 threads) succeeds.
    run(
        &m,
        &mem,
        "oob_write",
        [2, 1, 1],
        [128, 1, 1],
        0,
        &[&out.to_le_bytes(), &0i32.to_le_bytes()],
    )
    .unwrap();
}
