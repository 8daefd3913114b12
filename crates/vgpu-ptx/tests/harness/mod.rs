//! Runs a snippet of PTX per thread: each thread loads sixteen 32-bit words
//! into `%r0..%r15` from its slot of the input buffer, runs the snippet, and
//! stores `%r16..%r31` to its slot of the output buffer.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Mutex;

use vgpu_ptx::{launch_with, ArenaMemory, ExecError, LaunchConfig, LaunchOptions, Memory, Module};

/// Words per thread in and out.
pub const WORDS: usize = 16;

pub fn kernel(decls: &str, body: &str) -> String {
    format!(
        r#"
.version 8.0
.target sm_90
.address_size 64
{decls}
.visible .entry k(.param .u64 inp, .param .u64 outp)
{{
    .reg .b16 %h<16>;
    .reg .b32 %r<32>;
    .reg .b64 %rd<16>;
    .reg .f32 %f<16>;
    .reg .f64 %fd<8>;
    .reg .pred %p<8>;
    .reg .b32 %tid;
    .reg .b64 %slot, %in, %out;
    ld.param.u64 %in, [inp];
    ld.param.u64 %out, [outp];
    mov.u32 %tid, %tid.x;
    mul.wide.u32 %slot, %tid, 64;
    add.s64 %in, %in, %slot;
    add.s64 %out, %out, %slot;
    ld.global.v4.u32 {{%r0, %r1, %r2, %r3}}, [%in];
    ld.global.v4.u32 {{%r4, %r5, %r6, %r7}}, [%in+16];
    ld.global.v4.u32 {{%r8, %r9, %r10, %r11}}, [%in+32];
    ld.global.v4.u32 {{%r12, %r13, %r14, %r15}}, [%in+48];
{body}
    st.global.v4.u32 [%out], {{%r16, %r17, %r18, %r19}};
    st.global.v4.u32 [%out+16], {{%r20, %r21, %r22, %r23}};
    st.global.v4.u32 [%out+32], {{%r24, %r25, %r26, %r27}};
    st.global.v4.u32 [%out+48], {{%r28, %r29, %r30, %r31}};
    ret;
}}
"#
    )
}

/// What a run produced: each thread's output words and the device output.
pub struct Run {
    pub out: Vec<[u32; WORDS]>,
    pub text: String,
}

/// Runs `body` with `threads` threads in one block; `input[t]` are thread
/// `t`'s input words.
pub fn try_run(
    decls: &str,
    body: &str,
    input: &[[u32; WORDS]],
    dynamic_shared: u32,
) -> (Result<(), ExecError>, Run) {
    let m = Module::parse(&kernel(decls, body)).expect("parse");
    let unsupported = m.unsupported();
    assert!(unsupported.is_empty(), "unsupported: {unsupported:?}");
    let mem = ArenaMemory::new();
    let bytes: Vec<u8> = input
        .iter()
        .flat_map(|w| w.iter().flat_map(|x| x.to_le_bytes()))
        .collect();
    let inp = mem.alloc_init(&bytes);
    let outp = mem.alloc(bytes.len());
    let syms = globals(&m, &mem);
    let mut params = inp.to_le_bytes().to_vec();
    params.extend_from_slice(&outp.to_le_bytes());
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [input.len() as u32, 1, 1],
        dynamic_shared,
    };
    let text = Mutex::new(String::new());
    let sink = |s: &str| text.lock().unwrap().push_str(s);
    let opts = LaunchOptions {
        workers: 1,
        output: Some(&sink),
        ..Default::default()
    };
    let r = launch_with(&m, "k", &cfg, &params, &mem, &syms, &opts);
    let words = mem.read_u32s(outp, input.len() * WORDS);
    let out = words
        .chunks_exact(WORDS)
        .map(|c| c.try_into().unwrap())
        .collect();
    let text = text.into_inner().unwrap();
    (r, Run { out, text })
}

pub fn run(body: &str, input: &[[u32; WORDS]]) -> Vec<[u32; WORDS]> {
    let (r, run) = try_run("", body, input, 0);
    r.expect("launch");
    run.out
}

/// One thread.
pub fn run1(body: &str, input: [u32; WORDS]) -> [u32; WORDS] {
    run(body, &[input])[0]
}

/// Allocates and initialises the module's globals; name → address.
pub fn globals(m: &Module, mem: &ArenaMemory) -> HashMap<String, u64> {
    let mut syms = HashMap::new();
    for g in m.globals() {
        let mut init = g.init.clone();
        init.resize(g.size as usize, 0);
        syms.insert(g.name.clone(), mem.alloc_init(&init));
    }
    for g in m.globals() {
        for (off, sym) in &g.relocs {
            mem.write(syms[&g.name] + off, &syms[sym].to_le_bytes())
                .unwrap();
        }
    }
    syms
}

/// Deterministic pseudo-random numbers (xorshift).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn u32(&mut self) -> u32 {
        self.next() as u32
    }

    pub fn words(&mut self) -> [u32; WORDS] {
        std::array::from_fn(|_| self.u32())
    }

    /// A float in [-range, range) with a few significant bits, so sums and
    /// products of a handful stay exact in f64.
    pub fn small(&mut self, range: f64) -> f64 {
        let k = (self.next() % 2048) as f64 - 1024.0;
        k / 1024.0 * range
    }
}

/// Memory for kernels that need device-side allocation.
pub fn arena() -> ArenaMemory {
    ArenaMemory::new()
}

pub fn read_u32(mem: &ArenaMemory, a: u64) -> u32 {
    let mut b = [0u8; 4];
    mem.read(a, &mut b).unwrap();
    u32::from_le_bytes(b)
}
