//! Hand-written PTX: parser checks, instruction semantics, and error paths.

use std::collections::HashMap;

use vgpu_ptx::{launch, ArenaMemory, ExecError, GlobalSpace, LaunchConfig, Memory, Module};

const BITS: &str = r#"
//
// A comment, then the usual header.
//
.version 7.0
.target sm_80
.address_size 64

.global .align 4 .u32 tbl[4] = {10, 20, 30, 40};
.const .align 4 .f32 kf = 0f40400000;
.global .align 8 .u64 tblp = generic(tbl);

.visible .entry bits(
    .param .u64 out_p,
    .param .u64 scratch_p
)
.reqntid 1, 1, 1
{
    .reg .b32 %r<40>;
    .reg .b64 %rd<20>;
    .reg .pred %p<8>;
    .reg .f32 %f<10>;
    .reg .b16 %h<4>;
    .shared .align 16 .b8 sm[64];
    .local .align 8 .b8 loc[16];

    ld.param.u64 %rd1, [out_p];
    cvta.to.global.u64 %rd1, %rd1;
    ld.param.u64 %rd2, [scratch_p];
    mov.b32 %r1, 0x44332211;
    mov.b32 %r2, 0x88776655;
    prmt.b32 %r3, %r1, %r2, 0x7531;
    st.global.u32 [%rd1+0], %r3;
    lop3.b32 %r4, %r1, %r2, 0x0F0F0F0F, 0xEA;
    st.global.u32 [%rd1+4], %r4;
    bfe.s32 %r5, %r2, 28, 8;
    st.global.u32 [%rd1+8], %r5;
    bfe.u32 %r6, %r2, 4, 8;
    st.global.u32 [%rd1+12], %r6;
    bfi.b32 %r7, 0xAB, %r1, 8, 8;
    st.global.u32 [%rd1+16], %r7;
    shf.l.wrap.b32 %r8, %r1, %r2, 8;
    st.global.u32 [%rd1+20], %r8;
    shf.r.wrap.b32 %r9, %r1, %r2, 8;
    st.global.u32 [%rd1+24], %r9;
    popc.b32 %r10, %r2;
    st.global.u32 [%rd1+28], %r10;
    mov.u32 %r11, 0x00F00000;
    clz.b32 %r12, %r11;
    st.global.u32 [%rd1+32], %r12;
    mov.u32 %r13, 1;
    brev.b32 %r14, %r13;
    st.global.u32 [%rd1+36], %r14;
    bfind.u32 %r15, %r11;
    st.global.u32 [%rd1+40], %r15;
    mov.u32 %r16, -1;
    bfind.s32 %r17, %r16;
    st.global.u32 [%rd1+44], %r17;

    // Generic store into shared, vector load back.
    mov.u64 %rd4, sm;
    cvta.shared.u64 %rd3, %rd4;
    st.v4.u32 [%rd3], {%r1, %r2, %r3, %r4};
    ld.shared.v2.u32 {%r18, %r19}, [sm+8];
    st.global.v2.u32 [%rd1+48], {%r18, %r19};
    // Local memory through a generic pointer.
    mov.u64 %rd5, loc;
    st.local.u32 [%rd5+4], 77;
    cvta.local.u64 %rd6, %rd5;
    ld.u32 %r20, [%rd6+4];
    st.global.u32 [%rd1+60], %r20;
    // Pack and unpack.
    mov.b64 %rd7, {%r1, %r2};
    mov.b64 {%r21, %r22}, %rd7;
    st.global.u32 [%rd1+64], %r22;
    // Globals and constants.
    mov.u64 %rd8, tbl;
    ld.global.u32 %r23, [%rd8+8];
    st.global.u32 [%rd1+68], %r23;
    ld.const.f32 %f1, [kf];
    st.global.f32 [%rd1+72], %f1;
    // Atomics.
    atom.global.cas.b32 %r24, [%rd2], 0, 5;
    st.global.u32 [%rd1+76], %r24;
    atom.global.exch.b32 %r25, [%rd2], 9;
    st.global.u32 [%rd1+80], %r25;
    atom.global.max.s32 %r26, [%rd2+4], -3;
    atom.global.min.s32 %r26, [%rd2+4], -3;
    atom.global.inc.u32 %r27, [%rd2+8], 2;
    atom.global.inc.u32 %r27, [%rd2+8], 2;
    atom.global.inc.u32 %r27, [%rd2+8], 2;
    atom.global.dec.u32 %r28, [%rd2+12], 3;
    red.global.add.u32 [%rd2+16], 7;
    atom.global.add.u64 %rd9, [%rd2+24], 0x100000000;
    atom.global.add.f32 %f2, [%rd2+32], 0f3FC00000;
    atom.shared.add.u32 %r29, [sm], 1;
    st.global.u32 [%rd1+84], %r29;
    // Conversions.
    mov.f32 %f3, 0fC02CCCCD;
    cvt.rzi.s32.f32 %r30, %f3;
    st.global.u32 [%rd1+88], %r30;
    cvt.rmi.s32.f32 %r31, %f3;
    st.global.u32 [%rd1+92], %r31;
    cvt.rni.s32.f32 %r32, %f3;
    st.global.u32 [%rd1+96], %r32;
    mov.u32 %r33, 100000;
    cvt.sat.s16.s32 %h1, %r33;
    cvt.u32.u16 %r34, %h1;
    st.global.u32 [%rd1+100], %r34;
    mov.u32 %r35, 0x1F0;
    cvt.s32.s8 %r36, %r35;
    st.global.u32 [%rd1+104], %r36;
    mov.f32 %f4, 0f3F802000;
    cvt.rn.f16.f32 %h2, %f4;
    cvt.f32.f16 %f5, %h2;
    st.global.f32 [%rd1+108], %f5;
    // Predicates.
    setp.lt.s32 %p1, %r30, 0;
    setp.gt.or.u32 %p2|%p3, %r30, 5, %p1;
    setp.eq.and.f32 %p4, %f3, %f3, !%p1;
    selp.u32 %r37, 1, 0, %p2;
    selp.u32 %r38, 2, 0, %p3;
    selp.u32 %r39, 4, 0, %p4;
    add.s32 %r37, %r37, %r38;
    add.s32 %r37, %r37, %r39;
    st.global.u32 [%rd1+112], %r37;
    // Wide multiplies.
    mul.wide.u32 %rd10, %r16, %r16;
    st.global.u64 [%rd1+120], %rd10;
    mov.u32 %r1, -2;
    mov.u64 %rd12, 100;
    mad.wide.s32 %rd11, %r1, 3, %rd12;
    st.global.u64 [%rd1+128], %rd11;
    // Directed rounding.
    mov.f32 %f7, 0f3F800000;
    add.rp.f32 %f6, %f7, 0f33800000;
    st.global.f32 [%rd1+136], %f6;
    add.rn.f32 %f6, %f7, 0f33800000;
    st.global.f32 [%rd1+140], %f6;
    copysign.f32 %f8, 0fBF800000, 0f40000000;
    st.global.f32 [%rd1+144], %f8;
    // A pointer stored in a global initializer (relocated by the caller).
    ld.global.u64 %rd13, [tblp];
    ld.global.u32 %r2, [%rd13+12];
    st.global.u32 [%rd1+148], %r2;
    ret;
}
"#;

fn setup_globals(m: &Module, mem: &ArenaMemory) -> HashMap<String, u64> {
    let mut syms = HashMap::new();
    for g in m.globals() {
        let a = mem.alloc(g.size as usize);
        if !g.init.is_empty() {
            mem.write(a, &g.init).unwrap();
        }
        syms.insert(g.name.clone(), a);
    }
    for g in m.globals() {
        for (off, s) in &g.relocs {
            mem.write(syms[&g.name] + off, &syms[s].to_le_bytes())
                .unwrap();
        }
    }
    syms
}

fn cfg1() -> LaunchConfig {
    LaunchConfig {
        grid: [1, 1, 1],
        block: [1, 1, 1],
        dynamic_shared: 0,
    }
}

/// `.ptr .global .align N` qualifies the pointee: the parameter itself is an
/// 8-byte-aligned u64 (cuRAND's kernels declare `.ptr .align 1` pointers
/// after a u32).
#[test]
fn pointer_parameter_alignment_is_the_pointers_own() {
    let ptx = r#"
.version 7.0
.target sm_80
.address_size 64
.visible .entry k(.param .u32 n, .param .u64 .ptr .align 1 p, .param .u64 .ptr .global .align 16 q)
{
    ret;
}
"#;
    let m = Module::parse(ptx).unwrap();
    let k = m.entry("k").unwrap();
    assert_eq!(
        k.params
            .iter()
            .map(|p| (p.offset, p.size))
            .collect::<Vec<_>>(),
        vec![(0, 4), (8, 8), (16, 8)]
    );
    assert_eq!(k.param_size, 24);
}

#[test]
fn parser_reports_module_structure() {
    let m = Module::parse(BITS).unwrap();
    assert_eq!(m.version, "7.0");
    assert_eq!(m.target, "sm_80");
    assert_eq!(m.kernel_names().collect::<Vec<_>>(), vec!["bits"]);
    let k = m.entry("bits").unwrap();
    assert_eq!(
        k.params
            .iter()
            .map(|p| (p.offset, p.size))
            .collect::<Vec<_>>(),
        vec![(0, 8), (8, 8)]
    );
    assert_eq!(k.param_size, 16);
    assert_eq!(k.static_shared, 64);
    assert_eq!(k.local_bytes, 16);
    assert_eq!(k.reqntid, Some([1, 1, 1]));
    let g = m.globals();
    assert_eq!(g.len(), 3);
    assert_eq!(
        (g[0].name.as_str(), g[0].size, g[0].space),
        ("tbl", 16, GlobalSpace::Global)
    );
    assert_eq!(
        g[0].init,
        [10u32, 20, 30, 40]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<_>>()
    );
    assert_eq!((g[1].name.as_str(), g[1].space), ("kf", GlobalSpace::Const));
    assert_eq!(g[1].init, 3.0f32.to_le_bytes());
    assert_eq!(g[2].relocs, vec![(0, "tbl".to_string())]);
    assert!(m.unsupported().is_empty());
    assert!(m.entry("nope").is_none());
}

#[test]
fn parser_errors_carry_line_numbers() {
    let e = Module::parse(
        ".version 7.0\n.target sm_80\n.visible .entry k()\n{\n  add.s32 %r1, %r2;\n ret;\n}\n",
    )
    .unwrap_err();
    assert_eq!(e.line, 5, "{e}");
    let e =
        Module::parse(".version 7.0\n.entry k()\n{\n  .reg .b32 %r<2>;\n  bra $L_nowhere;\n}\n")
            .unwrap_err();
    assert!(e.msg.contains("L_nowhere"), "{e}");
    assert!(Module::parse(".version 7.0\n.entry k(\n").is_err());
}

#[test]
fn bit_ops_memory_spaces_atomics_conversions() {
    let m = Module::parse(BITS).unwrap();
    let mem = ArenaMemory::new();
    let syms = setup_globals(&m, &mem);
    let out = mem.alloc(160);
    let scratch = mem.alloc(40);
    let mut params = out.to_le_bytes().to_vec();
    params.extend_from_slice(&scratch.to_le_bytes());
    launch(&m, "bits", &cfg1(), &params, &mem, &syms).unwrap();
    let o = mem.read_u32s(out, 40);
    let want: [(usize, u32); 30] = [
        (0, 0x8866_4422),
        (1, 0x0F3F_2F1F),
        (2, 0xFFFF_FFF8),
        (3, 0x65),
        (4, 0x4433_AB11),
        (5, 0x7766_5544),
        (6, 0x5544_3322),
        (7, 16),
        (8, 8),
        (9, 0x8000_0000),
        (10, 23),
        (11, 0xFFFF_FFFF),
        (12, 0x8866_4422),
        (13, 0x0F3F_2F1F),
        (15, 77),
        (16, 0x8877_6655),
        (17, 30),
        (18, 3.0f32.to_bits()),
        (19, 0),
        (20, 5),
        (21, 0x4433_2211),
        (22, -2i32 as u32),
        (23, -3i32 as u32),
        (24, -3i32 as u32),
        (25, 32767),
        (26, -16i32 as u32),
        (27, 0x3F80_2000),
        (28, 3),
        (34, 0x3F80_0001),
        (35, 0x3F80_0000),
    ];
    for (k, v) in want {
        assert_eq!(o[k], v, "out[{k}] = {:#x}, want {v:#x}", o[k]);
    }
    assert_eq!(o[36], (-2.0f32).to_bits());
    assert_eq!(o[37], 40);
    assert_eq!(
        u64::from(o[30]) | u64::from(o[31]) << 32,
        0xFFFF_FFFE_0000_0001
    );
    assert_eq!(u64::from(o[32]) | u64::from(o[33]) << 32, 94);
    let s = mem.read_u32s(scratch, 10);
    assert_eq!(&s[..5], &[9, -3i32 as u32, 0, 3, 7]);
    assert_eq!(u64::from(s[6]) | u64::from(s[7]) << 32, 1 << 32);
    assert_eq!(f32::from_bits(s[8]), 1.5);
}

#[test]
fn missing_global_symbol_is_an_error() {
    let m = Module::parse(BITS).unwrap();
    let mem = ArenaMemory::new();
    let err = launch(&m, "bits", &cfg1(), &[0u8; 16], &mem, &HashMap::new()).unwrap_err();
    assert!(matches!(err, ExecError::MissingSymbol(_)), "{err}");
    let err = launch(&m, "bits", &cfg1(), &[0u8; 8], &mem, &HashMap::new()).unwrap_err();
    assert_eq!(
        err,
        ExecError::BadParams {
            expected: 16,
            got: 8
        }
    );
    let err = launch(&m, "nope", &cfg1(), &[], &mem, &HashMap::new()).unwrap_err();
    assert_eq!(err, ExecError::UnknownKernel("nope".into()));
}

const ERRORS: &str = r#"
.version 8.0
.target sm_90
.address_size 64

.visible .entry unsupported(.param .u64 p)
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [p];
    vadd.s32.s32.s32 %r1, %r2, %r3;
    ret;
}

.visible .entry trapper()
{
    trap;
}

.visible .entry misaligned(.param .u64 p)
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    ld.param.u64 %rd1, [p];
    ld.global.u32 %r1, [%rd1+2];
    ret;
}

.visible .entry shared_oob()
{
    .reg .b32 %r<4>;
    .shared .align 4 .b8 s[16];
    mov.u32 %r1, s;
    st.shared.u32 [%r1+16], %r1;
    ret;
}

.visible .entry f16_add()
{
    .reg .b32 %r<4>;
    vabsdiff.s32.s32.s32 %r1, %r2, %r3;
    ret;
}

.visible .entry null_deref()
{
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    mov.u64 %rd1, 0;
    ld.u32 %r1, [%rd1];
    ret;
}

.visible .entry spin_then_guarded(.param .u64 p)
{
    .reg .pred %p<2>;
    .reg .b32 %r<4>;
    .reg .b64 %rd<4>;
    mov.u32 %r1, %tid.x;
    setp.ne.s32 %p1, %r1, 0;
    @%p1 bra $L_end;
    vadd.s32.s32.s32 %r1, %r2, %r3;
$L_end:
    ret;
}
"#;

#[test]
fn error_paths_name_the_problem() {
    let m = Module::parse(ERRORS).unwrap();
    let un = m.unsupported();
    assert_eq!(un.len(), 3);
    assert_eq!(un[0].inst, "vadd.s32.s32.s32");
    assert_eq!(un[0].line, 11);
    let mem = ArenaMemory::new();
    let buf = mem.alloc(16);
    let nosyms = HashMap::new();
    let p = buf.to_le_bytes();
    let err = launch(&m, "unsupported", &cfg1(), &p, &mem, &nosyms).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported PTX instruction `vadd.s32.s32.s32` at line 11"
    );
    assert_eq!(
        launch(&m, "trapper", &cfg1(), &[], &mem, &nosyms).unwrap_err(),
        ExecError::Trap { line: 17 }
    );
    assert_eq!(
        launch(&m, "misaligned", &cfg1(), &p, &mem, &nosyms).unwrap_err(),
        ExecError::MisalignedAddress {
            addr: buf + 2,
            line: 25
        }
    );
    assert!(matches!(
        launch(&m, "shared_oob", &cfg1(), &[], &mem, &nosyms).unwrap_err(),
        ExecError::IllegalAddress { line: 34, .. }
    ));
    let err = launch(&m, "f16_add", &cfg1(), &[], &mem, &nosyms).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported PTX instruction `vabsdiff.s32.s32.s32` at line 41"
    );
    assert!(matches!(
        launch(&m, "null_deref", &cfg1(), &[], &mem, &nosyms).unwrap_err(),
        ExecError::IllegalAddress { addr: 0, .. }
    ));
    // Thread 0 reaches the unsupported instruction; the launch fails
    // although the other 63 threads skip it.
    let cfg = LaunchConfig {
        grid: [2, 1, 1],
        block: [64, 1, 1],
        dynamic_shared: 0,
    };
    assert!(matches!(
        launch(&m, "spin_then_guarded", &cfg, &p, &mem, &nosyms).unwrap_err(),
        ExecError::Unsupported { .. }
    ));
    let bad = LaunchConfig {
        grid: [1, 1, 1],
        block: [2048, 1, 1],
        dynamic_shared: 0,
    };
    assert!(matches!(
        launch(&m, "trapper", &bad, &[], &mem, &nosyms).unwrap_err(),
        ExecError::InvalidConfig(_)
    ));
}

/// What numba-cuda emits: `.func` device functions returning through
/// `func_retval0`, called via `call.uni` with callseq params; PTX 8.x.
const NUMBA_STYLE: &str = r#"
.version 8.4
.target sm_80
.address_size 64

.visible .func  (.param .b32 func_retval0) _ZN8__main__3addB2v1Eii(
	.param .b32 _ZN8__main__3addB2v1Eii_param_0,
	.param .b32 _ZN8__main__3addB2v1Eii_param_1
)
{
	.reg .b32 	%r<4>;
	ld.param.u32 	%r1, [_ZN8__main__3addB2v1Eii_param_0];
	ld.param.u32 	%r2, [_ZN8__main__3addB2v1Eii_param_1];
	add.s32 	%r3, %r2, %r1;
	st.param.b32 	[func_retval0+0], %r3;
	ret;
}

.visible .entry _Z6kernelPii(
	.param .u64 _Z6kernelPii_param_0,
	.param .u32 _Z6kernelPii_param_1
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<8>;
	.reg .b64 	%rd<5>;

	ld.param.u64 	%rd1, [_Z6kernelPii_param_0];
	ld.param.u32 	%r2, [_Z6kernelPii_param_1];
	mov.u32 	%r3, %ctaid.x;
	mov.u32 	%r4, %ntid.x;
	mov.u32 	%r5, %tid.x;
	mad.lo.s32 	%r1, %r3, %r4, %r5;
	setp.ge.s32 	%p1, %r1, %r2;
	@%p1 bra 	$L__BB0_2;
	{ // callseq 0, 0
	.reg .b32 temp_param_reg;
	.param .b32 param0;
	st.param.b32 	[param0+0], %r1;
	.param .b32 param1;
	st.param.b32 	[param1+0], %r1;
	.param .b32 retval0;
	call.uni (retval0), _ZN8__main__3addB2v1Eii, (param0, param1);
	ld.param.b32 	%r6, [retval0+0];
	}
	cvta.to.global.u64 	%rd2, %rd1;
	mul.wide.s32 	%rd3, %r1, 4;
	add.s64 	%rd4, %rd2, %rd3;
	st.global.u32 	[%rd4], %r6;
$L__BB0_2:
	ret;
}
"#;

#[test]
fn numba_style_call_sequence() {
    let m = Module::parse(NUMBA_STYLE).unwrap();
    let mem = ArenaMemory::new();
    let n = 1000usize;
    let out = mem.alloc(n * 4);
    let mut p = out.to_le_bytes().to_vec();
    p.extend_from_slice(&(n as u32).to_le_bytes());
    let cfg = LaunchConfig {
        grid: [4, 1, 1],
        block: [256, 1, 1],
        dynamic_shared: 0,
    };
    launch(&m, "_Z6kernelPii", &cfg, &p, &mem, &HashMap::new()).unwrap();
    let got = mem.read_u32s(out, n);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(*g, 2 * i as u32);
    }
}

const SPIN: &str = r#"
.version 8.0
.target sm_80
.address_size 64
.visible .entry spin()
{
    .reg .b32 %r<2>;
$L_top:
    add.s32 %r1, %r1, 1;
    bra.uni $L_top;
}
.visible .entry texture_user(.param .u64 t)
{
    .reg .f32 %f<5>;
    .reg .b32 %r<2>;
    .reg .b64 %rd<2>;
    tex.1d.v4.f32.s32 {%f1, %f2, %f3, %f4}, [%rd1, {%r1}];
    ret;
}
"#;

#[test]
fn spinning_kernel_can_be_cancelled() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let m = Module::parse(SPIN).unwrap();
    assert_eq!(m.unsupported()[0].inst, "tex.1d.v4.f32.s32");
    let mem = ArenaMemory::new();
    let cancel = AtomicBool::new(false);
    let cfg = LaunchConfig {
        grid: [4, 1, 1],
        block: [32, 1, 1],
        dynamic_shared: 0,
    };
    let opts = vgpu_ptx::LaunchOptions {
        workers: 2,
        cancel: Some(&cancel),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let r = std::thread::scope(|s| {
        let h =
            s.spawn(|| vgpu_ptx::launch_with(&m, "spin", &cfg, &[], &mem, &HashMap::new(), &opts));
        std::thread::sleep(std::time::Duration::from_millis(100));
        cancel.store(true, Ordering::Relaxed);
        h.join().unwrap()
    });
    assert_eq!(r, Err(ExecError::Cancelled));
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}
