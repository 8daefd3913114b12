//! The device runtime (`vprintf`, `__assertfail`, `malloc`/`free`, grid
//! synchronisation), indirect calls, `cp.async`, and half-precision atomics.

mod harness;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use harness::{globals, run, run1, try_run, WORDS};
use vgpu_ptx::{launch_with, ArenaMemory, ExecError, LaunchConfig, LaunchOptions, Module};

/// A `.global` byte array holding `s` and its NUL.
fn cstr(name: &str, s: &str) -> String {
    let bytes: Vec<String> = s.bytes().chain([0]).map(|b| b.to_string()).collect();
    format!(
        ".global .align 1 .b8 {name}[{}] = {{{}}};\n",
        bytes.len(),
        bytes.join(", ")
    )
}

const VPRINTF: &str =
    ".extern .func (.param .b32 func_retval0) vprintf (.param .b64 vprintf_param_0, .param .b64 vprintf_param_1);\n";

#[test]
fn vprintf_formats_like_cuda_printf() {
    let fmt = "x=%d u=%u hex=%08x %-5s| %5.2f %e %g %c %lld %% t%d\n";
    let decls = format!("{VPRINTF}{}{}", cstr("fmt", fmt), cstr("word", "ab"));
    // nvcc's packing: each argument at the next multiple of its size.
    let body = "
        .local .align 8 .b8 depot[64];
        .reg .b64 %SP, %SPL;
        mov.u64 %SPL, depot;
        cvta.local.u64 %SP, %SPL;
        st.local.u32 [%SPL], -42;
        st.local.u32 [%SPL+4], -1294967296;
        st.local.u32 [%SPL+8], 0xbeef;
        mov.u64 %rd0, word;
        cvta.global.u64 %rd0, %rd0;
        st.local.u64 [%SPL+16], %rd0;
        st.local.f64 [%SPL+24], 0d400921F9F01B866E;
        st.local.f64 [%SPL+32], 0d40C81CD6C8B43958;
        st.local.f64 [%SPL+40], 0d3F202C9DEDBC309D;
        st.local.u32 [%SPL+48], 90;
        st.local.u64 [%SPL+56], -1234567890123;
        st.local.u32 [%SPL+64], %tid;
        mov.u64 %rd1, fmt;
        cvta.global.u64 %rd1, %rd1;
        {
        .param .b64 param0;
        st.param.b64 [param0], %rd1;
        .param .b64 param1;
        st.param.b64 [param1], %SP;
        .param .b32 retval0;
        call.uni (retval0), vprintf, (param0, param1);
        ld.param.b32 %r16, [retval0];
        }";
    // The thread id goes past the depot: give it room.
    let body = body.replace("depot[64]", "depot[72]");
    let (r, out) = try_run(&decls, &body, &[[0; WORDS]; 2], 0);
    r.unwrap();
    let line = |t: u32| {
        format!(
            "x=-42 u=3000000000 hex=0000beef ab   |  3.14 1.234568e+04 0.0001234 Z -1234567890123 % t{t}\n"
        )
    };
    assert_eq!(out.text, line(0) + &line(1));
    // vprintf returns the number of arguments.
    assert_eq!(out.out[0][0], 10);
}

#[test]
fn failed_assert_stops_the_launch_with_cudas_message() {
    let decls = format!(
        ".extern .func __assertfail (.param .b64 a, .param .b64 b, .param .b32 c, .param .b64 d, .param .b64 e);\n{}{}{}",
        cstr("msg", "x == 1"),
        cstr("file", "kernel.cu"),
        cstr("func", "void k(int *)")
    );
    let body = "
        setp.ne.u32 %p0, %tid, 3;
        @%p0 bra $L_ok;
        mov.u64 %rd0, msg;
        cvta.global.u64 %rd0, %rd0;
        mov.u64 %rd1, file;
        cvta.global.u64 %rd1, %rd1;
        mov.u64 %rd2, func;
        cvta.global.u64 %rd2, %rd2;
        {
        .param .b64 param0;
        st.param.b64 [param0], %rd0;
        .param .b64 param1;
        st.param.b64 [param1], %rd1;
        .param .b32 param2;
        st.param.b32 [param2], 17;
        .param .b64 param3;
        st.param.b64 [param3], %rd2;
        .param .b64 param4;
        st.param.b64 [param4], 1;
        call.uni __assertfail, (param0, param1, param2, param3, param4);
        }
    $L_ok:";
    let (r, out) = try_run(&decls, body, &[[0; WORDS]; 4], 0);
    assert_eq!(
        r,
        Err(ExecError::Assert {
            message: "x == 1".into(),
            file: "kernel.cu".into(),
            line: 17,
            function: "void k(int *)".into()
        })
    );
    assert_eq!(
        out.text,
        "kernel.cu:17: void k(int *): block: [0,0,0], thread: [3,0,0] Assertion `x == 1` failed.\n"
    );
}

#[test]
fn device_malloc_and_free() {
    let decls = ".extern .func (.param .b64 func_retval0) malloc (.param .b64 malloc_param_0);
                 .extern .func free (.param .b64 free_param_0);";
    let body = "
        {
        .param .b64 param0;
        st.param.b64 [param0], 24;
        .param .b64 retval0;
        call.uni (retval0), malloc, (param0);
        ld.param.b64 %rd0, [retval0];
        }
        st.u32 [%rd0+20], %tid;
        ld.u32 %r16, [%rd0+20];
        and.b64 %rd1, %rd0, 15;
        cvt.u32.u64 %r17, %rd1;
        setp.ne.u64 %p0, %rd0, 0;
        selp.u32 %r18, 1, 0, %p0;
        {
        .param .b64 param0;
        st.param.b64 [param0], %rd0;
        call.uni free, (param0);
        }";
    let (r, out) = try_run(decls, body, &[[0; WORDS]; 3], 0);
    r.unwrap();
    for (t, o) in out.out.iter().enumerate() {
        assert_eq!((o[0], o[1], o[2]), (t as u32, 0, 1));
    }
}

#[test]
fn indirect_calls_through_a_prototype() {
    let decls = "
.func (.param .b32 rv) twice(.param .b32 a)
{
    .reg .b32 %x;
    ld.param.u32 %x, [a];
    shl.b32 %x, %x, 1;
    st.param.b32 [rv], %x;
    ret;
}
.func (.param .b32 rv) plus1(.param .b32 a)
{
    .reg .b32 %x;
    ld.param.u32 %x, [a];
    add.u32 %x, %x, 1;
    st.param.b32 [rv], %x;
    ret;
}";
    let body = "
        mov.u64 %rd0, twice;
        mov.u64 %rd1, plus1;
        setp.eq.u32 %p0, %r1, 0;
        selp.b64 %rd2, %rd0, %rd1, %p0;
        proto: .callprototype (.param .b32 _) _ (.param .b32 _);
        {
        .param .b32 p0;
        st.param.b32 [p0], %r0;
        .param .b32 rv;
        call (rv), %rd2, (p0), proto;
        ld.param.b32 %r16, [rv];
        }";
    let input = |sel: u32| {
        let mut w = [0; WORDS];
        w[0] = 21;
        w[1] = sel;
        w
    };
    let (r, out) = try_run(decls, body, &[input(0), input(1)], 0);
    r.unwrap();
    assert_eq!(out.out[0][0], 42);
    assert_eq!(out.out[1][0], 22);
    // A value that is no function address faults.
    let (r, _) = try_run(
        decls,
        &body.replace("selp.b64 %rd2, %rd0, %rd1, %p0;", "mov.u64 %rd2, 64;"),
        &[[0; WORDS]],
        0,
    );
    assert!(matches!(r, Err(ExecError::IllegalAddress { addr: 64, .. })));
}

#[test]
fn cp_async_copies_and_zero_fills() {
    let mut w = [0u32; WORDS];
    for (k, x) in w.iter_mut().enumerate() {
        *x = 0x0101_0101u32.wrapping_mul(k as u32 + 1);
    }
    let o = run1(
        "
        .shared .align 16 .b8 sm[64];
        mov.u32 %r16, sm;
        cp.async.ca.shared.global [%r16], [%in], 4;
        cp.async.ca.shared.global [%r16+8], [%in+8], 8, 4;
        cp.async.cg.shared.global.L2::128B [%r16+16], [%in+16], 16;
        cp.async.cg.shared.global [%r16+32], [%in+32], 16, 0;
        setp.ne.u32 %p0, %tid, 0;
        cp.async.ca.shared.global [%r16+48], [%in+48], 16, %p0;
        cp.async.commit_group;
        cp.async.wait_group 0;
        cp.async.wait_all;
        ld.shared.v4.u32 {%r16, %r17, %r18, %r19}, [sm];
        ld.shared.v4.u32 {%r20, %r21, %r22, %r23}, [sm+16];
        ld.shared.v4.u32 {%r24, %r25, %r26, %r27}, [sm+32];
        ld.shared.v4.u32 {%r28, %r29, %r30, %r31}, [sm+48];",
        w,
    );
    // 4 bytes; 8 with src-size 4 (upper 4 zero-filled); 16; 16 with
    // src-size 0; 16 with ignore-src false.
    let want = [
        w[0], 0, w[2], 0, w[4], w[5], w[6], w[7], 0, 0, 0, 0, w[12], w[13], w[14], w[15],
    ];
    assert_eq!(o, want);
}

#[test]
fn half_precision_atomics() {
    let f = |x: f32| half::f16::from_f32(x).to_bits() as u32;
    let b = |x: f32| half::bf16::from_f32(x).to_bits() as u32;
    let body = "
        .shared .align 4 .b32 acc[2];
        setp.ne.u32 %p0, %tid, 0;
        @%p0 bra $L_go;
        st.shared.u32 [acc], 0;
        st.shared.u32 [acc+4], 0;
    $L_go:
        bar.sync 0;
        atom.shared.add.noftz.f16x2 %r16, [acc], %r0;
        red.shared.add.noftz.bf16x2 [acc+4], %r1;
        bar.sync 0;
        ld.shared.u32 %r17, [acc];
        ld.shared.u32 %r18, [acc+4];
        atom.global.add.noftz.f16x2 %r19, [%out+60], %r0;";
    let inputs: Vec<[u32; WORDS]> = (0..32)
        .map(|_| {
            let mut w = [0u32; WORDS];
            w[0] = f(1.0) | f(0.5) << 16;
            w[1] = b(2.0) | b(-1.0) << 16;
            w
        })
        .collect();
    let out = run(body, &inputs);
    assert_eq!(out[0][1], f(32.0) | f(16.0) << 16);
    assert_eq!(out[0][2], b(64.0) | b(-32.0) << 16);
}

const GRID_SYNC: &str = r#"
.version 8.0
.target sm_90
.address_size 64
.extern .func (.param .b64 func_retval0) cudaCGGetIntrinsicHandle (.param .b32 p0);
.extern .func (.param .b32 func_retval0) cudaCGSynchronize (.param .b64 p0, .param .b32 p1);

// Each block writes its id, then all blocks synchronise the way CUDA's
// cooperative groups do (the workspace in %envreg1:%envreg2, a barrier word
// at +4), then each reads its neighbour's id.
.visible .entry inline_sync(.param .u64 outp)
{
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<16>;
    ld.param.u64 %rd1, [outp];
    mov.u32 %r1, %ctaid.x;
    mov.u32 %r2, %nctaid.x;
    mov.u32 %r3, %tid.x;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    setp.ne.u32 %p1, %r3, 0;
    @%p1 bra $L_w;
    st.global.u32 [%rd3], %r1;
$L_w:
    mov.u32 %r4, %envreg2;
    mov.u32 %r5, %envreg1;
    cvt.u64.u32 %rd4, %r4;
    cvt.u64.u32 %rd5, %r5;
    bfi.b64 %rd6, %rd5, %rd4, 32, 32;
    add.s64 %rd7, %rd6, 4;
    setp.eq.u32 %p2, %r1, 0;
    mov.u32 %r6, -2147483647;
    sub.s32 %r7, %r6, %r2;
    selp.b32 %r8, %r7, 1, %p2;
    barrier.sync 0;
    @%p1 bra $L_done;
    atom.add.release.gpu.u32 %r9, [%rd7], %r8;
$L_spin:
    ld.acquire.gpu.u32 %r10, [%rd7];
    xor.b32 %r11, %r10, %r9;
    setp.gt.s32 %p3, %r11, -1;
    @%p3 bra $L_spin;
$L_done:
    barrier.sync 0;
    @%p1 bra $L_end;
    add.u32 %r12, %r1, 1;
    rem.u32 %r12, %r12, %r2;
    mul.wide.u32 %rd8, %r12, 4;
    add.s64 %rd9, %rd1, %rd8;
    ld.global.u32 %r13, [%rd9];
    add.s64 %rd10, %rd3, 256;
    st.global.u32 [%rd10], %r13;
$L_end:
    ret;
}

// The same through cudadevrt's cudaCGSynchronize (what numba emits).
.visible .entry devrt_sync(.param .u64 outp)
{
    .reg .pred %p<4>;
    .reg .b32 %r<16>;
    .reg .b64 %rd<16>;
    ld.param.u64 %rd1, [outp];
    mov.u32 %r1, %ctaid.x;
    mov.u32 %r2, %nctaid.x;
    mov.u32 %r3, %tid.x;
    mul.wide.u32 %rd2, %r1, 4;
    add.s64 %rd3, %rd1, %rd2;
    setp.ne.u32 %p1, %r3, 0;
    @%p1 bra $L_w;
    st.global.u32 [%rd3], %r1;
$L_w:
    {
    .param .b32 param0;
    st.param.b32 [param0], 1;
    .param .b64 retval0;
    call.uni (retval0), cudaCGGetIntrinsicHandle, (param0);
    ld.param.b64 %rd4, [retval0];
    }
    {
    .param .b64 param0;
    st.param.b64 [param0], %rd4;
    .param .b32 param1;
    st.param.b32 [param1], 0;
    .param .b32 retval0;
    call.uni (retval0), cudaCGSynchronize, (param0, param1);
    }
    @%p1 bra $L_end;
    add.u32 %r12, %r1, 1;
    rem.u32 %r12, %r12, %r2;
    mul.wide.u32 %rd8, %r12, 4;
    add.s64 %rd9, %rd1, %rd8;
    ld.global.u32 %r13, [%rd9];
    add.s64 %rd10, %rd3, 256;
    st.global.u32 [%rd10], %r13;
$L_end:
    ret;
}
"#;

#[test]
fn cooperative_launches_synchronise_the_grid() {
    let m = Module::parse(GRID_SYNC).unwrap();
    for kernel in ["inline_sync", "devrt_sync"] {
        let mem = ArenaMemory::new();
        let syms = globals(&m, &mem);
        let blocks = 6u32;
        let out = mem.alloc(512);
        let cfg = LaunchConfig {
            grid: [blocks, 1, 1],
            block: [64, 1, 1],
            dynamic_shared: 0,
        };
        // A broken barrier spins forever: cancel after a while instead.
        let cancel = AtomicBool::new(false);
        let opts = LaunchOptions {
            cooperative: true,
            cancel: Some(&cancel),
            ..Default::default()
        };
        let (done, wait) = mpsc::channel::<()>();
        let r = std::thread::scope(|s| {
            let cancel = &cancel;
            s.spawn(move || {
                if wait.recv_timeout(Duration::from_secs(30)).is_err() {
                    cancel.store(true, Ordering::Relaxed);
                }
            });
            let r = launch_with(&m, kernel, &cfg, &out.to_le_bytes(), &mem, &syms, &opts);
            let _ = done.send(());
            r
        });
        r.unwrap_or_else(|e| panic!("{kernel}: {e}"));
        let v = mem.read_u32s(out + 256, blocks as usize);
        let want: Vec<u32> = (0..blocks).map(|b| (b + 1) % blocks).collect();
        assert_eq!(v, want, "{kernel}");
    }
    // Without a cooperative launch there is no grid to synchronise.
    let mem = ArenaMemory::new();
    let out = mem.alloc(512);
    let cfg = LaunchConfig {
        grid: [2, 1, 1],
        block: [32, 1, 1],
        dynamic_shared: 0,
    };
    let r = launch_with(
        &m,
        "devrt_sync",
        &cfg,
        &out.to_le_bytes(),
        &mem,
        &Default::default(),
        &LaunchOptions::default(),
    );
    assert!(matches!(r, Err(ExecError::InvalidConfig(_))), "{r:?}");
}

#[test]
fn throughput_benchmark_counts_every_instruction() {
    let two = vgpu_ptx::bench::interpreter_throughput(2, 1).unwrap();
    let four = vgpu_ptx::bench::interpreter_throughput(4, 2).unwrap();
    // Every block executes the same instructions.
    assert!(two.instructions > 2 * 256 * 64 * 9);
    assert_eq!(four.instructions, 2 * two.instructions);
    assert!(four.per_second() > 0.0);
}

#[test]
fn vprintf_flags_widths_and_float_forms() {
    let fmt = "%5d|%-5d|%05d|%+d|% d|%#x|%#o|%.3s|%10.4f|%-10.2e|%g|%g|%g|%G|%f|%f\n";
    let decls = format!("{VPRINTF}{}{}", cstr("fmt", fmt), cstr("word", "hello"));
    let body = "
        .local .align 8 .b8 depot[104];
        .reg .b64 %SP, %SPL;
        mov.u64 %SPL, depot;
        cvta.local.u64 %SP, %SPL;
        st.local.u32 [%SPL], 42;
        st.local.u32 [%SPL+4], 42;
        st.local.u32 [%SPL+8], 42;
        st.local.u32 [%SPL+12], 42;
        st.local.u32 [%SPL+16], 42;
        st.local.u32 [%SPL+20], 255;
        st.local.u32 [%SPL+24], 8;
        mov.u64 %rd0, word;
        cvta.global.u64 %rd0, %rd0;
        st.local.u64 [%SPL+32], %rd0;
        st.local.f64 [%SPL+40], 0d400921FB53C8D4F1;
        st.local.f64 [%SPL+48], 0d4097700000000000;
        st.local.f64 [%SPL+56], 0d3EE4F8B588E368F1;
        st.local.f64 [%SPL+64], 0d40F86A0000000000;
        st.local.f64 [%SPL+72], 0d412E848000000000;
        st.local.f64 [%SPL+80], 0d3FF8000000000000;
        st.local.f64 [%SPL+88], 0d8000000000000000;
        st.local.f64 [%SPL+96], 0d7FF0000000000000;
        mov.u64 %rd1, fmt;
        cvta.global.u64 %rd1, %rd1;
        {
        .param .b64 param0;
        st.param.b64 [param0], %rd1;
        .param .b64 param1;
        st.param.b64 [param1], %SP;
        .param .b32 retval0;
        call.uni (retval0), vprintf, (param0, param1);
        }";
    let (r, out) = try_run(&decls, body, &[[0; WORDS]], 0);
    r.unwrap();
    assert_eq!(
        out.text,
        "   42|42   |00042|+42| 42|0xff|010|hel|    3.1416|1.50e+03  |1e-05|100000|1e+06|1.5|-0.000000|inf\n"
    );
}
